// What the host offers a plugin, as plain JavaScript calls. Each call needs
// its grant (see `wit/plugin.wit`); a refused or failed call throws
// `HostError` (`kind`: denied, failed, timed-out, limit), which the export
// boundary turns into the plugin's `denied` or `failed` error if uncaught.
// u64 values (bytes, inodes, milliseconds) come as BigInt; `Number()` them.
//
// Only usable inside the component (componentize-js links these imports).

import { log as wlog } from 'mend:plugin/log@0.2.0';
import { nowMs } from 'mend:plugin/clock@0.2.0';
import * as wstate from 'mend:plugin/state@0.2.0';
import * as wfs from 'mend:plugin/fs@0.2.0';
import * as wexec from 'mend:plugin/exec@0.2.0';
import * as wsql from 'mend:plugin/sql@0.2.0';
import * as wredis from 'mend:plugin/redis@0.2.0';
import * as wsystem from 'mend:plugin/system@0.2.0';

/** A host call failed: `kind` is denied, failed, timed-out or limit. */
export class HostError extends Error {
  constructor(kind, message) {
    super(`${kind}: ${message}`);
    this.name = 'HostError';
    this.kind = kind;
    this.detail = message;
  }
}

function call(f, ...args) {
  try {
    return f(...args);
  } catch (e) {
    const p = e && e.payload !== undefined ? e.payload : e;
    if (p && typeof p.tag === 'string') throw new HostError(p.tag, String(p.val));
    throw e;
  }
}

const enc = new TextEncoder();
const bytes = (v) => (typeof v === 'string' ? enc.encode(v) : v);

/** Into mend's log, tagged with the plugin: level trace|debug|info|warn|error. */
export function log(level, message, fields = {}) {
  wlog(level, String(message), Object.entries(fields).map(([k, v]) => [k, String(v)]));
}

/** The engine's clock (virtual under a simulated clock), ms since the epoch. */
export function now() {
  return Number(nowMs());
}

/** Persistent key/value state private to the plugin (grant: `state`). */
export const state = {
  /** @returns {Uint8Array | undefined} */
  get: (key) => call(wstate.get, key),
  set: (key, value) => call(wstate.set, key, bytes(value)),
  delete: (key) => call(wstate.delete, key),
  compareAndSwap: (key, expected, value) =>
    call(wstate.compareAndSwap, key, expected === undefined ? undefined : bytes(expected), bytes(value)),
};

/** Filesystem facts WASI lacks (the path inside a granted directory). */
export const fs = {
  /** { totalBytes, freeBytes, availableBytes, totalInodes, freeInodes } as BigInt. */
  diskUsage: (path) => call(wfs.diskUsage, path),
};

/** Commands the operator defined under `[commands]` (grant: `commands`). */
export const exec = {
  /** { exitCode, stdout, stderr, timedOut, truncated, durationMs }. */
  run: (name) => call(wexec.run, name),
  argv: (name) => call(wexec.argv, name),
};

function toSql(v) {
  if (v === null || v === undefined) return { tag: 'null' };
  if (typeof v === 'boolean') return { tag: 'boolean', val: v };
  if (typeof v === 'bigint') return { tag: 'int', val: v };
  if (typeof v === 'number') return Number.isInteger(v) ? { tag: 'int', val: BigInt(v) } : { tag: 'float', val: v };
  return { tag: 'text', val: String(v) };
}
const fromSql = (v) => (v.tag === 'null' ? null : v.val);

/** Named PostgreSQL connections (grant: `connections`). Parameters are `$1`... */
export const sql = {
  /** @returns {{columns: string[], rows: any[][]}} with plain values (ints as BigInt). */
  query(connection, statement, params = [], { fresh = false, timeoutMs } = {}) {
    const r = call(wsql.query, connection, statement, params.map(toSql), { fresh, timeoutMs });
    return { columns: r.columns, rows: r.rows.map((row) => row.map(fromSql)) };
  },
  execute(connection, statement, params = [], { fresh = false, timeoutMs } = {}) {
    return Number(call(wsql.execute, connection, statement, params.map(toSql), { fresh, timeoutMs }));
  },
};

/** Named Redis connections (grant: `connections`); no blocking or admin commands. */
export const redis = {
  /** null (nil), a BigInt, a Uint8Array, or an array of Uint8Array|undefined. */
  command(connection, ...args) {
    const r = call(wredis.command, connection, args.map((a) => bytes(String(a))));
    return r.tag === 'nil' ? null : r.val;
  },
  scan: (connection, cursor, pattern, count = 100) =>
    call(wredis.scan, connection, BigInt(cursor), pattern, count),
};

/** Machine facts read by the host (grant: `system`). */
export const system = {
  cpu: (intervalMs = 1000) => call(wsystem.cpu, intervalMs),
  load: () => call(wsystem.load),
  memory: () => call(wsystem.memory),
  pressure: () => call(wsystem.pressure),
  filesystems: () => call(wsystem.filesystems),
  interfaces: () => call(wsystem.interfaces),
  processes: (name, { cmdline, sampleMs = 0 } = {}) => call(wsystem.processes, { name, cmdline, sampleMs }),
};
