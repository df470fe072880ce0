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
// wasi:http directly, not `fetch`: fetch is a Promise, and a mend export is
// synchronous (it cannot wait for one); these block, like the Rust SDK's.
import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, OutgoingBody, OutgoingRequest, RequestOptions } from 'wasi:http/types@0.2.12';

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

/** The longest response body `http.request` reads (the host bounds it again). */
export const HTTP_MAX_BODY = 1 << 20;

const METHODS = ['get', 'head', 'post', 'put', 'delete', 'connect', 'options', 'trace', 'patch'];
const dec = new TextDecoder();

function httpError(code, method, url) {
  const tag = code && code.tag ? code.tag : String(code);
  if (tag === 'HTTP-request-denied') {
    return new HostError('denied', `${method} ${url}: not granted to this plugin (grant: \`urls\`)`);
  }
  const detail = code && code.val !== undefined ? ` (${JSON.stringify(code.val, (_, v) => (typeof v === 'bigint' ? Number(v) : v))})` : '';
  return new HostError(/timeout/i.test(tag) ? 'timed-out' : 'failed', `${method} ${url}: ${tag}${detail}`);
}

function payload(e) {
  return e && e.payload !== undefined ? e.payload : e;
}

/**
 * Outgoing HTTP through wasi:http, to URLs the operator granted (grant:
 * `urls`; declare them with `Needs.url`). A refused URL throws
 * `HostError('denied')`, any other failure `HostError('failed'|'timed-out'|'limit')`.
 */
export const http = {
  /**
   * @param {string} method `GET`, `POST`, ...
   * @param {string} url
   * @param {{headers?: Record<string,string>|[string,string][], body?: string|Uint8Array, timeoutMs?: number, maxBody?: number}} [opts]
   * @returns {{status: number, headers: [string, Uint8Array][], body: Uint8Array, text(): string, header(name: string): string|null}}
   */
  request(method, url, { headers = [], body, timeoutMs, maxBody = HTTP_MAX_BODY } = {}) {
    const m = String(method).toUpperCase();
    let u;
    try {
      u = new URL(url);
    } catch {
      throw new HostError('failed', `${m} ${JSON.stringify(url)}: not a URL`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new HostError('failed', `${m} ${url}: not an http:// or https:// URL`);
    }
    const pairs = Array.isArray(headers) ? headers : Object.entries(headers);
    const req = new OutgoingRequest(Fields.fromList(pairs.map(([k, v]) => [k, bytes(String(v))])));
    const lower = m.toLowerCase();
    req.setMethod(METHODS.includes(lower) ? { tag: lower } : { tag: 'other', val: m });
    req.setScheme({ tag: u.protocol === 'https:' ? 'HTTPS' : 'HTTP' });
    req.setAuthority(u.host);
    req.setPathWithQuery((u.pathname || '/') + u.search);
    let options;
    if (timeoutMs !== undefined) {
      options = new RequestOptions();
      const ns = BigInt(Math.round(timeoutMs)) * 1000000n;
      for (const set of ['setConnectTimeout', 'setFirstByteTimeout', 'setBetweenBytesTimeout']) {
        try {
          options[set](ns);
        } catch {
          // the host keeps its own deadline
        }
      }
    }
    const out = req.body();
    if (body !== undefined && body !== null) {
      const data = bytes(body);
      const stream = out.write();
      try {
        for (let i = 0; i < data.length; i += 4096) stream.blockingWriteAndFlush(data.subarray(i, i + 4096));
      } catch (e) {
        throw new HostError('failed', `${m} ${url}: writing the request body: ${JSON.stringify(payload(e))}`);
      }
      // The stream must be gone before the body is finished.
      stream[Symbol.dispose]?.();
    }
    let future;
    try {
      future = handle(req, options);
    } catch (e) {
      throw httpError(payload(e), m, url);
    } finally {
      try {
        OutgoingBody.finish(out, undefined);
      } catch {
        // a body the host refused with the request
      }
    }
    future.subscribe().block();
    const got = future.get();
    if (!got || got.tag === 'err') throw new HostError('failed', `${m} ${url}: no response`);
    if (got.val.tag === 'err') throw httpError(got.val.val, m, url);
    const resp = got.val.val;
    const status = resp.status();
    const respHeaders = resp.headers().entries();
    const stream = resp.consume().stream();
    const chunks = [];
    let total = 0;
    for (;;) {
      let chunk;
      try {
        chunk = stream.blockingRead(BigInt(Math.min(65536, maxBody + 1 - total)));
      } catch (e) {
        if (payload(e) && payload(e).tag === 'closed') break;
        throw new HostError('failed', `${m} ${url}: reading the response body: ${JSON.stringify(payload(e))}`);
      }
      total += chunk.length;
      if (total > maxBody) throw new HostError('limit', `${m} ${url}: the response body is over ${maxBody} bytes`);
      chunks.push(chunk);
    }
    const all = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.length;
    }
    return {
      status,
      headers: respHeaders,
      body: all,
      text: () => dec.decode(all),
      header(name) {
        const n = name.toLowerCase();
        const h = respHeaders.find(([k]) => k.toLowerCase() === n);
        return h ? dec.decode(h[1]) : null;
      },
    };
  },
  get: (url, opts) => http.request('GET', url, opts),
};
