"""{{name}}: {{roles}} for mend. The check fails when a file is larger
than `max_bytes`; the action truncates it (in a dry run it only says so)."""

import dataclasses
import os

import mend_sdk
from mend_sdk import Access, BadConfig, Bytes, Context, Finding, Needs


@dataclasses.dataclass
class Config:
    """The operator's TOML table (unknown keys and wrong types are refused)."""

    # The file, as the plugin sees it inside its granted directory.
    path: str
    # Larger than this fails the check: 1048576 or "1MiB".
    max_bytes: Bytes


def judge(path: str, size: int, limit: int) -> Finding:
    """The verdict on a file of `size` bytes: the logic worth unit-testing."""
    if size > limit:
        f = Finding.fail("file.too_big", f"{path} is {size} bytes, over {limit}")
    else:
        f = Finding.ok("file.size_ok", f"{path} is {size} bytes")
    return f.metric("bytes", size).label("path", path)


class {{type}}({{bases}}):
    name = "{{name}}"
    version = "0.1.0"
    description = "{{roles}} for mend: a file that grows past a size"
    Config = Config

    # Whichever directory the operator grants.
    def needs(self) -> Needs:
        return Needs().dir("*", Access.READ)

    def config_needs(self, c: Config) -> Needs:
        if not c.path.startswith("/"):
            raise BadConfig(f"`path` must be absolute, not {c.path!r}")
        return Needs()
# >>> detector

    def detect(self, cx: Context, c: Config):
        return [judge(c.path, os.stat(c.path).st_size, c.max_bytes)]
# <<< detector
# >>> action

    def remedy_needs(self) -> Needs:
        return Needs().dir("*", Access.READ_WRITE)

    def remedy_config_needs(self, c: Config) -> Needs:
        return self.config_needs(c)

    def remedy(self, cx: Context, c: Config, findings, dry_run: bool):
        size = os.stat(c.path).st_size
        out = mend_sdk.Outcome()
        if size <= c.max_bytes:
            return out.done(f"{c.path} is {size} bytes: nothing to do", changed=False)
        out.step(f"truncate {c.path} ({size} bytes)")
        if dry_run:
            return out.done("dry run: nothing changed", changed=False)
        with open(c.path, "w"):
            pass
        return out.done(f"freed {size} bytes")
# <<< action


# The component's exports (componentize-py looks these names up).
Meta, Detection, Remediation = mend_sdk.export({{type}})
