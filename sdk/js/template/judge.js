// The verdict on a filesystem's free inodes and bytes: the logic worth
// unit-testing, with no host calls (so `node --test` runs it natively).
import { Finding } from './mend-sdk/index.js';

export function judge(path, usage, config) {
  const freeInodes = Number(usage.freeInodes);
  const freeBytes = Number(usage.availableBytes);
  let f;
  if (freeInodes < config.min_free_inodes) {
    f = Finding.fail('fs.inodes_low', `${path}: ${freeInodes} inodes free, under ${config.min_free_inodes}`);
  } else if (freeBytes < config.min_free_bytes) {
    f = Finding.fail('fs.space_low', `${path}: ${freeBytes} bytes free, under ${config.min_free_bytes}`);
  } else {
    f = Finding.ok('fs.ok', `${path}: ${freeInodes} inodes and ${freeBytes} bytes free`);
  }
  return f.metric('free_inodes', freeInodes).metric('free_bytes', freeBytes).label('path', path);
}
