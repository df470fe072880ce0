"""Unit tests of the plugin's logic, natively: `python3 -m unittest`."""

import unittest

import mend_sdk
from app import Config, judge


class JudgeTest(unittest.TestCase):
    def test_a_file_over_the_limit_fails_and_one_under_passes(self):
        over = judge("/data/app.log", 2048, 1024)
        self.assertEqual(over.code, "file.too_big")
        self.assertEqual(over.status, "fail")
        self.assertEqual(over.get_metric("bytes"), 2048.0)
        self.assertEqual(judge("/data/app.log", 10, 1024).code, "file.size_ok")

    def test_the_config_is_typed(self):
        c = mend_sdk.parse_config(Config, '{"path": "/data/a", "max_bytes": "1KiB"}')
        self.assertEqual(c.max_bytes, 1024)
        with self.assertRaisesRegex(mend_sdk.BadConfig, "unknown key `max_byte`"):
            mend_sdk.parse_config(Config, '{"path": "/data/a", "max_byte": 1}')


if __name__ == "__main__":
    unittest.main()
