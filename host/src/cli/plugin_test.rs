//! `mend plugin call --record FILE` and `mend plugin test PLUGIN FILE...`:
//! record one call's host calls into a transcript (`tape/transcript.rs`),
//! and replay transcripts without the real system, comparing what the
//! plugin returns now with what it returned then.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::capabilities::exec::CommandDef;
use crate::capabilities::fs::{DirGrant, Mode};
use crate::capabilities::sql::PostgresDef;
use crate::capabilities::{Backends, ConnectionDef, Grants, ResolvedGrants};
use crate::clock::Clock;
use crate::contract::{Finding, Outcome, RemedyContext};
use crate::runtime::{Limits, Plugin, PluginError, Report, Request, Runtime, RuntimeConfig};
use crate::tape::Tape;
use crate::tape::transcript::{CallKind, Expected, FORMAT, PluginId, TapeGrants, Transcript};
use crate::tape::tree;

#[derive(clap::Args)]
pub struct TestArgs {
    /// The plugin (a `.wasm` component).
    #[arg(value_name = "PLUGIN")]
    plugin: PathBuf,
    /// Transcripts written by `mend plugin call --record`.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Rewrite each transcript's expected result with what the plugin
    /// returns now (when the replay itself went through).
    #[arg(long, alias = "bless")]
    update: bool,
    /// Where the compile cache lives.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// What one recorded or replayed call returned, as a transcript keeps it.
fn expected<T>(r: &Result<Report<T>, PluginError>, wrap: impl Fn(&T) -> Expected) -> Expected {
    match r {
        Ok(report) => wrap(&report.value),
        Err(e) => Expected::Error(e.to_string()),
    }
}

/// The pieces of `mend plugin call` a recording keeps.
pub(super) struct Recorded<'a> {
    pub file: &'a Path,
    pub plugin: &'a Plugin,
    pub call: CallKind,
    pub check: &'a str,
    pub config: &'a Value,
    pub grants: &'a Grants,
    pub resolved: &'a ResolvedGrants,
    pub findings: &'a [Finding],
    pub dry_run: bool,
}

/// Snapshots the granted directories and makes the call's tape (before
/// the call: the files as the plugin will see them).
pub(super) fn start_recording(
    plugin: &Plugin,
    resolved: &ResolvedGrants,
) -> anyhow::Result<(Tape, Vec<tree::DirSnapshot>, Vec<String>)> {
    let newest = crate::wit::since_v0_2::VERSION;
    if !plugin
        .wit_version()
        .split('.')
        .take(2)
        .eq(newest.split('.'))
    {
        bail!(
            "plugin {}: built for mend:plugin@{}; recording needs the newest contract ({}), \
             whose every host call goes through the tape",
            plugin.name(),
            plugin.wit_version(),
            newest
        );
    }
    let (mut kept, mut notes, mut dirs) = (0, Vec::new(), Vec::new());
    for d in &resolved.dirs {
        dirs.push(
            tree::snapshot(&d.host, &d.guest, d.write, &mut kept, &mut notes)
                .with_context(|| format!("snapshotting the granted directory {}", d.guest))?,
        );
    }
    Ok((Tape::record(), dirs, notes))
}

/// Writes the transcript of a finished call (unless the recording itself
/// ran out of room).
pub(super) fn finish_recording<T>(
    rec: Recorded<'_>,
    started_ms: u64,
    tape: &Tape,
    dirs: Vec<tree::DirSnapshot>,
    notes: Vec<String>,
    result: &Result<Report<T>, PluginError>,
    wrap: impl Fn(&T) -> Expected,
) -> anyhow::Result<()> {
    if let Err(PluginError::Host { message, .. }) = result
        && message.starts_with("recording:")
    {
        bail!("{message}; nothing written to {}", rec.file.display());
    }
    let g = rec.grants;
    let t = Transcript {
        format: FORMAT,
        plugin: PluginId {
            name: rec.plugin.name().to_string(),
            version: rec.plugin.manifest().version.clone(),
            sha256: rec.plugin.sha256().to_string(),
            contract: rec.plugin.wit_version().to_string(),
        },
        call: rec.call,
        check: rec.check.to_string(),
        config: rec.config.clone(),
        labels: Default::default(),
        grants: TapeGrants {
            addresses: g.addresses.clone(),
            urls: g.urls.clone(),
            connections: rec
                .resolved
                .connections
                .iter()
                .map(|c| c.name().to_string())
                .collect(),
            commands: g.commands.clone(),
            state: g.state,
            system: g.system.clone(),
        },
        findings: rec.findings.to_vec(),
        dry_run: rec.dry_run,
        started_ms,
        expected: expected(result, wrap),
        notes: notes.clone(),
        dirs,
        tape: tape.recording(),
    };
    std::fs::write(rec.file, t.to_json())
        .with_context(|| format!("writing the transcript {}", rec.file.display()))?;
    for n in &notes {
        eprintln!("note: {n}");
    }
    eprintln!(
        "recorded {} host calls into {}",
        t.tape.calls.len(),
        rec.file.display()
    );
    Ok(())
}

pub async fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let rt = Runtime::new(RuntimeConfig {
        state_dir: args.state_dir.clone().or_else(super::default_state_dir),
        ..RuntimeConfig::default()
    })?;
    let plugin = rt.load_file(&args.plugin).await?;
    let mut failed = 0;
    for file in &args.files {
        match replay_file(&rt, &plugin, file, args.update).await {
            Ok(Verdict::Pass(n)) => println!("PASS {} ({n} host calls)", file.display()),
            Ok(Verdict::Updated) => println!("UPDATED {}", file.display()),
            Ok(Verdict::Fail(why)) => {
                failed += 1;
                println!("FAIL {}: {why}", file.display());
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {}: {e:#}", file.display());
            }
        }
    }
    println!(
        "{} transcripts: {} passed, {failed} failed",
        args.files.len(),
        args.files.len() - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

enum Verdict {
    Pass(usize),
    Updated,
    Fail(String),
}

/// A private directory for one replay's files, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let p = base.join(format!(
                "mend-replay-{}-{:016x}",
                std::process::id(),
                fastrand::u64(..)
            ));
            if std::fs::DirBuilder::new().mode(0o700).create(&p).is_ok() {
                return Ok(Scratch(p));
            }
        }
        bail!("cannot make a directory under {}", base.display())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Rebuilt directories may be read-only as recorded.
        fn writable(p: &Path) {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::symlink_metadata(p)
                && m.is_dir()
            {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                if let Ok(rd) = std::fs::read_dir(p) {
                    for e in rd.flatten() {
                        writable(&e.path());
                    }
                }
            }
        }
        writable(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Backends that only carry the recorded names: a replay never reaches
/// them (the tape answers), and if it did they lead nowhere.
fn placeholders(t: &TapeGrants) -> anyhow::Result<Backends> {
    let mut b = Backends::default();
    for name in &t.connections {
        b.add_connection(
            name,
            &ConnectionDef::Postgres(PostgresDef {
                url: "host=127.0.0.1 port=9 user=mend-replay".into(),
                timeout: crate::values::Dur::from_secs(1),
                read_only: true,
            }),
        )?;
    }
    for name in &t.commands {
        b.add_command(
            name,
            &CommandDef {
                argv: vec!["/bin/false".into()],
                cwd: None,
                env: Default::default(),
                timeout: crate::values::Dur::from_secs(1),
            },
        )?;
    }
    Ok(b)
}

async fn replay_file(
    rt: &Runtime,
    plugin: &Plugin,
    file: &Path,
    update: bool,
) -> anyhow::Result<Verdict> {
    let mut t = Transcript::load(file)?;
    if t.plugin.name != plugin.name() {
        return Ok(Verdict::Fail(format!(
            "recorded for plugin `{}`, not `{}`",
            t.plugin.name,
            plugin.name()
        )));
    }
    if t.plugin.contract != plugin.wit_version() {
        return Ok(Verdict::Fail(format!(
            "recorded under contract {}; this build is {}: record it again",
            t.plugin.contract,
            plugin.wit_version()
        )));
    }
    let actual = replay(rt, plugin, &t).await?;
    if let Some(problem) = actual.problem {
        return Ok(Verdict::Fail(problem));
    }
    let want = serde_json::to_value(&t.expected)?;
    let got = serde_json::to_value(&actual.result)?;
    if want == got {
        return Ok(Verdict::Pass(t.tape.calls.len()));
    }
    if update {
        t.expected = actual.result;
        std::fs::write(file, t.to_json())
            .with_context(|| format!("rewriting {}", file.display()))?;
        return Ok(Verdict::Updated);
    }
    let want = serde_json::to_string_pretty(&want)?;
    let got = serde_json::to_string_pretty(&got)?;
    Ok(Verdict::Fail(format!(
        "the {} differs from the transcript's (- expected, + actual):\n{}",
        match t.call {
            CallKind::Detect => "result",
            CallKind::Remedy => "outcome",
        },
        diff(&want, &got)
    )))
}

struct Replayed {
    result: Expected,
    /// A divergence, or recorded calls left unasked.
    problem: Option<String>,
}

/// Runs the transcript's call on its tape, in its rebuilt directories.
async fn replay(rt: &Runtime, plugin: &Plugin, t: &Transcript) -> anyhow::Result<Replayed> {
    let scratch = Scratch::new()?;
    let mut dirs = Vec::new();
    for (i, d) in t.dirs.iter().enumerate() {
        let root = scratch.0.join(i.to_string());
        std::fs::create_dir(&root)?;
        tree::materialize(d, &root)
            .with_context(|| format!("rebuilding the directory {}", d.guest))?;
        dirs.push(DirGrant {
            host: root,
            guest: Some(d.guest.clone()),
            mode: if d.write { Mode::Rw } else { Mode::Ro },
        });
    }
    let g = &t.grants;
    let grants = Grants {
        dirs,
        addresses: g.addresses.clone(),
        urls: g.urls.clone(),
        connections: g.connections.clone(),
        commands: g.commands.clone(),
        state: g.state,
        system: g.system.clone(),
    }
    .resolve_with(&placeholders(g)?)?;
    let config = crate::runtime::PluginConfig::new(t.config.clone());
    let req = Request {
        check: &t.check,
        config: &config,
        labels: &t.labels,
        grants: &grants,
        limits: Limits::default(),
        clock: Clock::starting_at(t.started_ms),
    };
    let tape = Tape::replay(t.tape.clone());
    let result = match t.call {
        CallKind::Detect => {
            let r = rt.detect_taped(plugin, &req, tape.clone()).await;
            expected(&r, |f: &Vec<Finding>| Expected::Findings(f.clone()))
        }
        CallKind::Remedy => {
            let context = RemedyContext::manual(&t.check, t.dry_run);
            let r = rt
                .remedy_taped(plugin, &req, &t.findings, context, None, tape.clone())
                .await;
            expected(&r, |o: &Outcome| Expected::Outcome(o.clone()))
        }
    };
    drop(scratch);
    Ok(Replayed {
        result,
        problem: tape.replay_problem(),
    })
}

/// A line diff (longest common subsequence): ` ` same, `-` only in
/// `want`, `+` only in `got`.
fn diff(want: &str, got: &str) -> String {
    let a: Vec<&str> = want.lines().collect();
    let b: Vec<&str> = got.lines().collect();
    if a.len() * b.len() > 4_000_000 {
        return format!("expected:\n{want}\nactual:\n{got}");
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out += &format!("  {}\n", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out += &format!("- {}\n", a[i]);
            i += 1;
        } else {
            out += &format!("+ {}\n", b[j]);
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn the_diff_marks_what_changed() {
        let d = diff("a\nb\nc", "a\nx\nc");
        assert_eq!(d, "  a\n- b\n+ x\n  c\n");
    }
}
