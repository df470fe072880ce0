// Unit tests of the plugin's logic, natively: `node --test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BadConfig, parseConfig } from './mend-sdk/index.js';
import { judge } from './judge.js';

const config = { min_free_inodes: 100, min_free_bytes: 1024 };

test('few free inodes fail, enough pass', () => {
  const low = judge('/data', { freeInodes: 10n, availableBytes: 1n << 20n }, config);
  assert.equal(low.code, 'fs.inodes_low');
  assert.equal(low.status, 'fail');
  assert.equal(low.getMetric('free_inodes'), 10);
  assert.equal(judge('/data', { freeInodes: 500n, availableBytes: 1n << 20n }, config).code, 'fs.ok');
});

test('the config is typed', () => {
  const schema = { path: 'string', min_free_bytes: { type: 'bytes', default: 0 } };
  assert.equal(parseConfig(schema, '{"path": "/d", "min_free_bytes": "1KiB"}').min_free_bytes, 1024);
  assert.throws(() => parseConfig(schema, '{"path": "/d", "min_free_byte": 1}'), BadConfig);
});
