// {{name}}: {{roles}} for mend. The check fails when the filesystem
// holding `path` runs low on inodes or space; the action runs the cleanup
// command the operator granted (in a dry run it only shows it).
import { BadConfig, Needs, Outcome, exportPlugin } from './mend-sdk/index.js';
import { exec, fs } from './mend-sdk/host.js';
import { judge } from './judge.js';

class {{type}} {
  static manifest = {
    name: '{{name}}',
    version: '0.1.0',
    description: '{{roles}} for mend: a filesystem low on inodes or space',
  };

  // The operator's TOML table (unknown keys and wrong types are refused).
  static config = {
    // A directory inside the granted one, as the plugin sees it.
    path: 'string',
    min_free_inodes: { type: 'integer', default: 1000 },
    // 1048576 or "1MiB".
    min_free_bytes: { type: 'bytes', default: 0 },
    // The `[commands]` entry the action runs to free inodes or space.
    command: { type: 'string', default: '' },
  };

  // Whichever directory the operator grants.
  needs() {
    return new Needs().dir('*');
  }

  configNeeds(c) {
    if (!c.path.startsWith('/')) throw new BadConfig(`\`path\` must be absolute, not ${JSON.stringify(c.path)}`);
    return new Needs();
  }
// >>> detector

  detect(cx, c) {
    return [judge(c.path, fs.diskUsage(c.path), c)];
  }
// <<< detector
// >>> action

  remedyNeeds() {
    return new Needs().dir('*');
  }

  remedyConfigNeeds(c) {
    this.configNeeds(c);
    if (!c.command) throw new BadConfig('`command` is needed to act: the `[commands]` entry to run');
    return new Needs().command(c.command);
  }

  remedy(cx, c, findings, dryRun) {
    const out = new Outcome();
    const before = judge(c.path, fs.diskUsage(c.path), c);
    if (before.status === 'ok') return out.done(before.summary + ': nothing to do', false);
    out.step(`run ${exec.argv(c.command).join(' ')}`);
    if (dryRun) return out.done('dry run: nothing changed', false);
    const r = exec.run(c.command);
    if (r.exitCode !== 0) {
      throw new Error(`\`${c.command}\` exited ${r.exitCode ?? 'by a signal'}: ${r.stderr.trim().slice(0, 200)}`);
    }
    const after = judge(c.path, fs.diskUsage(c.path), c);
    return out.done(after.summary);
  }
// <<< action
}

// The component's exports (componentize-js looks these names up).
export const { meta, detection, remediation } = exportPlugin({{type}});
