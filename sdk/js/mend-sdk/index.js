// mend-sdk for JavaScript: write a mend plugin (a detector, an action or
// both) as a plain class, built into a WebAssembly component by
// componentize-js. This file is plain ES2022 and runs under Node too (for
// unit tests); only `host.js` needs the component's imports.
//
// An uncaught exception never reaches the runtime (where it would be a trap
// saying `unreachable`): `exportPlugin` turns it into the contract's
// `failed` error, whose message is the exception and its last frames,
// bounded.

/** The longest message an uncaught exception turns into. */
export const TRACEBACK_LIMIT = 2000;
const TRACEBACK_FRAMES = 5;

/** Why a call failed: throw `BadConfig`, `Denied` or `Failed`. */
export class PluginError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
    // componentize-js reads a thrown value as the `result`'s error: the
    // `plugin-error` variant, `{ tag, val }`.
    this.tag = kind;
    this.val = message;
  }
}
/** The operator's config for this plugin is wrong. */
export class BadConfig extends PluginError {
  constructor(message) { super('bad-config', message); }
}
/** The plugin was refused something it needs. */
export class Denied extends PluginError {
  constructor(message) { super('denied', message); }
}
/** Anything else. */
export class Failed extends PluginError {
  constructor(message) { super('failed', message); }
}

/** `TypeError: x is undefined` and the last frames, bounded. */
export function describeException(e) {
  let head;
  let frames = [];
  if (e instanceof Error) {
    head = `${e.name}: ${e.message}`;
    const all = String(e.stack || '').split('\n').filter((l) => l.trim());
    // The plugin's frames, not the SDK's boundary or the generated glue.
    const own = all.filter((l) => !/mend-sdk\/index\.js|initializer\.js/.test(l));
    frames = (own.length ? own : all).slice(0, TRACEBACK_FRAMES);
  } else {
    head = `uncaught ${typeof e}: ${String(e)}`;
  }
  let text = [head, ...frames.map((f) => `  at ${f.trim()}`)].join('\n');
  if (text.length > TRACEBACK_LIMIT) text = text.slice(0, TRACEBACK_LIMIT - 3) + '...';
  return text;
}

// ---- values -------------------------------------------------------------------

const DUR_UNITS = { ms: 0.001, s: 1, m: 60, min: 60, h: 3600, d: 86400 };
const BYTE_UNITS = {
  '': 1, b: 1, k: 1e3, kb: 1e3, kib: 1024, m: 1e6, mb: 1e6, mib: 1024 ** 2,
  g: 1e9, gb: 1e9, gib: 1024 ** 3, t: 1e12, tb: 1e12, tib: 1024 ** 4,
};

/** Seconds, from `30`, `"30s"`, `"5m"`, `"1h 30m"` or `"250ms"`. */
export function parseDuration(v) {
  if (typeof v === 'number' && v >= 0) return v;
  if (typeof v === 'string') {
    const parts = [...v.toLowerCase().matchAll(/\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*/g)];
    if (parts.length && parts.map((p) => p[0]).join('') === v.toLowerCase()
        && parts.every((p) => p[2] in DUR_UNITS)) {
      return parts.reduce((t, p) => t + Number(p[1]) * DUR_UNITS[p[2]], 0);
    }
  }
  throw new Error(`expected a duration such as "30s" or "5m", not ${JSON.stringify(v)}`);
}

/** A size in bytes, from `1048576`, `"1MiB"` or `"10 MB"`. */
export function parseBytes(v) {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
  if (typeof v === 'string') {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
    if (m && m[2].toLowerCase() in BYTE_UNITS) {
      return Math.floor(Number(m[1]) * BYTE_UNITS[m[2].toLowerCase()]);
    }
  }
  throw new Error(`expected a size such as 1048576 or "1MiB", not ${JSON.stringify(v)}`);
}

// ---- config -------------------------------------------------------------------

const TYPES = {
  string: (v) => typeof v === 'string',
  number: (v) => typeof v === 'number',
  integer: (v) => Number.isInteger(v),
  boolean: (v) => typeof v === 'boolean',
  'string[]': (v) => Array.isArray(v) && v.every((x) => typeof x === 'string'),
  object: (v) => v !== null && typeof v === 'object' && !Array.isArray(v),
};

/**
 * The operator's config (a JSON object) checked against `schema`: each key
 * maps to a type (`'string'`, `'number'`, `'integer'`, `'boolean'`,
 * `'string[]'`, `'object'`, `'bytes'`, `'duration'`) or to
 * `{ type, default }` for an optional key. Unknown keys, missing keys and
 * wrong types are `BadConfig` naming the key.
 */
export function parseConfig(schema, text) {
  let table;
  try {
    table = JSON.parse(text || '{}');
  } catch (e) {
    throw new BadConfig(`config is not JSON: ${e.message}`);
  }
  if (!schema) return table;
  if (table === null || typeof table !== 'object' || Array.isArray(table)) {
    throw new BadConfig('config: expected a table');
  }
  const keys = Object.keys(schema);
  for (const k of Object.keys(table)) {
    if (!(k in schema)) {
      throw new BadConfig(`unknown key \`${k}\` (known keys: ${keys.map((x) => `\`${x}\``).join(', ') || 'none'})`);
    }
  }
  const out = {};
  for (const k of keys) {
    const spec = typeof schema[k] === 'string' ? { type: schema[k] } : schema[k];
    if (!(k in table)) {
      if (!('default' in spec)) throw new BadConfig(`missing key \`${k}\``);
      out[k] = spec.default;
      continue;
    }
    const v = table[k];
    if (spec.type === 'bytes' || spec.type === 'duration') {
      try {
        out[k] = spec.type === 'bytes' ? parseBytes(v) : parseDuration(v);
      } catch (e) {
        throw new BadConfig(`\`${k}\`: ${e.message}`);
      }
    } else if (TYPES[spec.type]) {
      if (!TYPES[spec.type](v)) {
        throw new BadConfig(`\`${k}\`: expected ${spec.type}, not ${JSON.stringify(v)}`);
      }
      out[k] = v;
    } else {
      throw new Failed(`the plugin's schema gives \`${k}\` the unknown type ${JSON.stringify(spec.type)}`);
    }
  }
  return out;
}

// ---- findings, outcomes, needs -----------------------------------------------

const STATUSES = ['ok', 'warn', 'fail', 'unknown'];

/** One observation: `Finding.fail('file.too_big', '...').metric('bytes', n)`. */
export class Finding {
  constructor(status, code, summary) {
    this.status = status;
    this.code = code;
    this.summary = summary;
    this.metrics = [];
    this.labels = [];
    this.check = '';
  }
  static ok(code, summary) { return new Finding('ok', code, summary); }
  static warn(code, summary) { return new Finding('warn', code, summary); }
  static fail(code, summary) { return new Finding('fail', code, summary); }
  static unknown(code, summary) { return new Finding('unknown', code, summary); }
  metric(name, value) { this.metrics.push([name, Number(value)]); return this; }
  label(key, value) { this.labels.push([key, String(value)]); return this; }
  getMetric(name) { const m = this.metrics.find(([k]) => k === name); return m ? m[1] : undefined; }
  getLabel(key) { const m = this.labels.find(([k]) => k === key); return m ? m[1] : undefined; }
}

/** What an action did (or, in a dry run, would do). */
export class Outcome {
  constructor() { this.changed = false; this.steps = []; this.message = ''; }
  step(s) { this.steps.push(s); return this; }
  done(message, changed = true) { this.message = message; this.changed = changed; return this; }
}

/** What a role (or a config) reaches; `'*'`: at least one granted. */
export class Needs {
  constructor() {
    this.dirs = []; this.addresses = []; this.urls = []; this.connections = [];
    this.commands = []; this.state = false; this.system = false; this.processes = [];
  }
  dir(path, write = false) { this.dirs.push({ path, write }); return this; }
  address(a) { this.addresses.push(a); return this; }
  url(u) { this.urls.push(u); return this; }
  connection(n) { this.connections.push(n); return this; }
  command(n) { this.commands.push(n); return this; }
  withState() { this.state = true; return this; }
  withSystem() { this.system = true; return this; }
  process(n) { this.system = true; this.processes.push(n); return this; }
}

// ---- the export boundary --------------------------------------------------------

function guard(call) {
  try {
    return call();
  } catch (e) {
    if (e instanceof PluginError) throw e;
    // A host call's error that the plugin did not catch.
    if (e && e.name === 'HostError') {
      if (e.kind === 'denied') throw new Denied(e.detail);
      throw new Failed(e.kind === 'failed' ? e.detail : e.message);
    }
    throw new Failed(describeException(e));
  }
}

function toFinding(f, check) {
  if (!STATUSES.includes(f.status)) {
    throw new Failed(`finding \`${f.code}\` has status ${JSON.stringify(f.status)}, not one of ${STATUSES.join(', ')}`);
  }
  return {
    check: f.check || check,
    code: String(f.code),
    status: f.status,
    summary: String(f.summary),
    metrics: f.metrics.map(([k, v]) => [k, Number(v)]),
    labels: f.labels.map(([k, v]) => [k, String(v)]),
  };
}

function fromFinding(f) {
  const x = new Finding(f.status, f.code, f.summary);
  x.metrics = f.metrics; x.labels = f.labels; x.check = f.check;
  return x;
}

/**
 * The WIT exports of a plugin class, for the app module:
 * `export const { meta, detection, remediation } = exportPlugin(MyPlugin);`
 *
 * The class carries `static manifest = { name, version, description }` and
 * `static config` (a schema for `parseConfig`). A `detect(cx, config)` method makes it a
 * detector, `remedy(cx, config, findings, dryRun)` an action; `needs()`,
 * `remedyNeeds()`, `configNeeds(config)` and `remedyConfigNeeds(config)`
 * are optional. A class lacking a role answers it with an error.
 */
export function exportPlugin(PluginClass) {
  const plugin = new PluginClass();
  const m = PluginClass.manifest || {};
  const name = m.name || PluginClass.name;
  const isDetector = typeof plugin.detect === 'function';
  const isAction = typeof plugin.remedy === 'function';
  const needs = (f, ...args) => (typeof f === 'function' ? f.apply(plugin, args) : new Needs());
  const notA = (role) => { throw new Failed(`${name} is not ${role}`); };

  const meta = {
    describe() {
      const roles = [];
      if (isDetector) roles.push({ role: 'detector', needs: needs(plugin.needs) });
      if (isAction) roles.push({ role: 'action', needs: needs(plugin.remedyNeeds) });
      return { name, version: m.version || '0.1.0', description: m.description || '', roles };
    },
    validate(role, config) {
      return guard(() => {
        if (role === 'detector') {
          if (!isDetector) notA('a detector');
          return needs(plugin.configNeeds, parseConfig(PluginClass.config, config));
        }
        if (!isAction) notA('an action');
        return needs(plugin.remedyConfigNeeds, parseConfig(PluginClass.config, config));
      });
    },
  };
  const detection = {
    detect(input) {
      return guard(() => {
        if (!isDetector) notA('a detector');
        const config = parseConfig(PluginClass.config, input.config);
        const cx = { check: input.check, labels: input.labels, remedy: null };
        return plugin.detect(cx, config).map((f) => toFinding(f, input.check));
      });
    },
  };
  const remediation = {
    remedy(request) {
      return guard(() => {
        if (!isAction) notA('an action');
        const { invocation: inv, context: c } = request;
        const config = parseConfig(PluginClass.config, inv.config);
        const cx = {
          check: inv.check,
          labels: inv.labels,
          remedy: {
            incident: Number(c.incident), policy: c.policy, step: c.step,
            ladderStep: c.stepRef.tag === 'ladder' ? c.stepRef.val : null,
            attempt: c.attempt, severity: c.severity, dryRun: c.dryRun,
            trail: c.trail, link: c.link ?? null,
          },
        };
        const out = plugin.remedy(cx, config, request.findings.map(fromFinding), c.dryRun);
        return { changed: Boolean(out.changed), steps: out.steps.map(String), message: String(out.message) };
      });
    },
  };
  return { meta, detection, remediation };
}
