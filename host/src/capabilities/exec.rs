//! `mend:plugin/exec`: commands the operator defined by name.
//!
//! Restarting a service is the most common remedy, and a shell is the
//! most dangerous thing to hand a plugin. So the operator writes the whole
//! command in `[commands.NAME]` (argv, working directory, environment,
//! timeout) and a plugin can only ask for it by name: there is no way to
//! add an argument. The command runs without a shell, with an empty
//! environment but `PATH` and what the operator lists, in its own process
//! group, and its output is captured up to a limit. At the timeout every
//! process it started dies, wherever it went (see [`tree`]). A dry-run
//! remedy call runs nothing.

mod spawn;
mod tree;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use rustix::process::Pid;

use self::spawn::Spawn;
use self::tree::Tree;
pub use self::tree::{Hold, cgroup_parent};
use super::output::BoundedOutput;
use crate::contract::HostError;
use crate::values::Dur;

/// Bytes of stdout and of stderr kept per run.
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// `PATH` for commands that do not set their own.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `[commands.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandDef {
    /// The program and its arguments, run without a shell.
    pub argv: Vec<String>,
    /// Working directory (relative to the config file). Default: `/`.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// The environment, besides `PATH` (which may be overridden here).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Killed (with every process it started) after this long.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

/// A defined command, ready to run.
#[derive(Debug)]
pub struct Command {
    pub name: String,
    pub def: CommandDef,
}

impl Command {
    pub(super) fn new(name: &str, def: &CommandDef) -> anyhow::Result<Command> {
        let ctx = |m: &str| anyhow::anyhow!("command `{name}`: {m}");
        if def.argv.is_empty() || def.argv[0].is_empty() {
            return Err(ctx("`argv` needs at least the program"));
        }
        if def.timeout.0.is_zero() {
            return Err(ctx("`timeout` must be more than 0s"));
        }
        if let Some(cwd) = &def.cwd
            && !cwd.is_dir()
        {
            return Err(ctx(&format!("`cwd` {} is not a directory", cwd.display())));
        }
        Ok(Command {
            name: name.to_string(),
            def: def.clone(),
        })
    }

    /// Runs the command to completion (or its timeout).
    pub async fn run(&self) -> Result<CommandOutput, String> {
        self.run_held(true).await.map(|(out, _)| out)
    }

    /// [`Command::run`], saying how the command's processes were held;
    /// `allow_cgroup: false` forces the `/proc` fallback (for tests).
    pub async fn run_held(&self, allow_cgroup: bool) -> Result<(CommandOutput, Hold), String> {
        self.run_observed(allow_cgroup, None).await
    }

    /// [`Command::run_held`], telling `on_spawn` the process it started
    /// (before waiting for it), so that a mend killed meanwhile can find
    /// the orphan again.
    pub async fn run_observed(
        &self,
        allow_cgroup: bool,
        on_spawn: Option<&SpawnHook>,
    ) -> Result<(CommandOutput, Hold), String> {
        let def = &self.def;
        let cannot = |e: std::io::Error| {
            format!(
                "command `{}`: cannot start `{}`: {e}",
                self.name, def.argv[0]
            )
        };
        let mut env = BTreeMap::from([("PATH", DEFAULT_PATH)]);
        env.extend(def.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let cwd = def.cwd.as_deref().unwrap_or("/".as_ref());
        let spawn = Spawn::new(&def.argv, env, cwd).map_err(cannot)?;
        // Kills the whole tree if this future is dropped (the plugin's
        // deadline) or the command times out.
        let tree = Tree::prepare(allow_cgroup);
        let started = Instant::now();
        let mut child = spawn.spawn(tree.join()).map_err(cannot)?;
        // Rebound after `child` so it drops first: a dropped Child kills
        // the command, and a subreaper's orphans must be swept before.
        let mut tree = tree;
        let pid = child.id();
        tree.started(pid);
        if let Some(hook) = on_spawn {
            hook(&Spawned {
                command: self.name.clone(),
                pid,
                start_ticks: start_ticks(pid),
                timeout_ms: def.timeout.0.as_millis() as u64,
            });
        }
        let hold = tree.hold();
        let stdout = BoundedOutput::new(OUTPUT_LIMIT);
        let stderr = BoundedOutput::new(OUTPUT_LIMIT);
        let readers = [
            child.stdout.take().map(|s| drain(s, stdout.clone())),
            child.stderr.take().map(|s| drain(s, stderr.clone())),
        ];
        let readers: Vec<_> = readers.into_iter().flatten().collect();

        let status = match tokio::time::timeout(def.timeout.0, child.wait()).await {
            Ok(Ok(status)) => {
                // Exited: whatever it left running (a daemon it started)
                // is not ours to kill.
                tree.release();
                Some(status)
            }
            Ok(Err(e)) => return Err(format!("command `{}`: waiting: {e}", self.name)),
            Err(_elapsed) => {
                tree.kill();
                let _ = child.wait().await;
                tree.cleanup().await;
                None
            }
        };
        // A daemon started by the command may hold the pipes open; take
        // what arrived, briefly, then stop reading.
        let aborts: Vec<_> = readers.iter().map(|r| r.abort_handle()).collect();
        let _ = tokio::time::timeout(Duration::from_millis(200), join_all(readers)).await;
        for a in aborts {
            a.abort();
        }
        let (out, out_dropped) = stdout.take();
        let (err, err_dropped) = stderr.take();
        let output = CommandOutput {
            exit_code: status.and_then(|s| s.code()),
            timed_out: status.is_none(),
            stdout: out,
            stderr: err,
            truncated: out_dropped + err_dropped > 0,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        Ok((output, hold))
    }
}

async fn join_all(readers: Vec<tokio::task::JoinHandle<()>>) {
    for r in readers {
        let _ = r.await;
    }
}

fn drain(
    mut from: impl AsyncRead + Unpin + Send + 'static,
    into: BoundedOutput,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => into.push(&buf[..n]),
            }
        }
    })
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// None when it was killed (timeout, signal).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    /// Output was cut at the limit.
    pub truncated: bool,
    pub duration_ms: u64,
}

/// A process a command started: enough to tell, after a restart, whether
/// that very process (not a reuse of its pid) still runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Spawned {
    pub command: String,
    /// Also its process group (each command leads its own).
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat`).
    pub start_ticks: Option<u64>,
    /// The command's timeout: how long it may go on.
    pub timeout_ms: u64,
}

/// Told of every process an action's commands start.
pub type SpawnHook = Arc<dyn Fn(&Spawned) + Send + Sync>;

/// Field 22 of `/proc/PID/stat`: when the process started.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Spawned {
    /// Whether this process, or another of its process group, still runs
    /// (a zombie does not count).
    pub fn alive(&self) -> bool {
        let leader = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_string();
                let state = rest.split_whitespace().next()?.to_string();
                Some((state, start_ticks(self.pid)))
            })
            .is_some_and(|(state, start)| {
                !state.starts_with('Z')
                    && !state.starts_with('X')
                    && (self.start_ticks.is_none() || start == self.start_ticks)
            });
        leader || self.group_alive()
    }

    /// Whether a live (not zombie) process is in its process group.
    fn group_alive(&self) -> bool {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return false;
        };
        dir.flatten().any(|e| {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                return false;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut f = rest.split_whitespace();
            let state = f.next().unwrap_or("Z");
            // Fields 3 (state), 4 (ppid), 5 (pgrp).
            let pgrp = f.nth(1).and_then(|p| p.parse::<u32>().ok());
            pgrp == Some(self.pid) && !state.starts_with('Z') && !state.starts_with('X')
        })
    }

    /// Kills its whole process group (SIGKILL): an orphan past its
    /// timeout, which the mend that started it would have killed.
    pub fn kill_group(&self) {
        if let Some(pid) = Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Per-call state: the commands granted to this call.
pub struct ExecCap {
    pub(crate) plugin: Arc<str>,
    pub(crate) commands: Vec<Arc<Command>>,
    /// A dry-run remedy call: nothing runs.
    pub(crate) dry_run: bool,
    /// Told of each process started, when the caller records them.
    pub(crate) on_spawn: Option<SpawnHook>,
}

impl ExecCap {
    fn granted(&self, name: &str) -> Result<Arc<Command>, HostError> {
        self.commands
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| {
                HostError::denied(format!("command `{name}` is not granted to this plugin"))
            })
    }

    /// The argv of a granted command, for a dry run to show (the
    /// environment may hold secrets and is never handed over).
    pub fn argv(&self, name: &str) -> Result<Vec<String>, HostError> {
        Ok(self.granted(name)?.def.argv.clone())
    }

    /// Runs a granted command by name (never in a dry run).
    pub async fn run(&mut self, name: &str) -> Result<CommandOutput, HostError> {
        let cmd = self.granted(name)?;
        if self.dry_run {
            return Err(HostError::denied(format!(
                "dry run: command `{name}` was not run"
            )));
        }
        tracing::info!(plugin = %self.plugin, command = %name, argv = ?cmd.def.argv, "running command");
        let (out, _) = cmd
            .run_observed(true, self.on_spawn.as_ref())
            .await
            .map_err(HostError::Failed)?;
        tracing::info!(
            plugin = %self.plugin,
            command = %name,
            exit = ?out.exit_code,
            timed_out = out.timed_out,
            duration_ms = out.duration_ms,
            "command finished"
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(argv: &[&str], timeout: Duration) -> Command {
        Command::new(
            "t",
            &CommandDef {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                cwd: None,
                env: BTreeMap::from([("GREETING".into(), "hi".into())]),
                timeout: Dur(timeout),
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn runs_without_a_shell_with_only_the_given_environment() {
        let c = cmd(
            &[
                "/bin/sh",
                "-c",
                "echo $GREETING $HOME; echo oops >&2; exit 3",
            ],
            Duration::from_secs(10),
        );
        let o = c.run().await.unwrap();
        assert_eq!(o.exit_code, Some(3));
        assert_eq!(o.stdout.trim(), "hi");
        assert_eq!(o.stderr.trim(), "oops");
        assert!(!o.timed_out);
    }

    #[tokio::test]
    async fn the_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let c = cmd(&["/bin/sh", "-c", &script], Duration::from_millis(300));
        let o = c.run().await.unwrap();
        assert!(o.timed_out);
        assert_eq!(o.exit_code, None);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "a child of the command outlived the kill");
    }

    /// Pid in `file`, once the command wrote it.
    fn pid_in(file: &std::path::Path) -> i32 {
        std::fs::read_to_string(file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn runs(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            let state = s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start())
                .unwrap_or("");
            !state.starts_with('Z') && !state.starts_with('X')
        })
    }

    /// A setsid grandchild and a setsid orphan; the command times out
    /// after `timeout`, or the call is dropped after `drop_after`.
    async fn tree_dies(
        allow_cgroup: bool,
        timeout: Duration,
        drop_after: Duration,
    ) -> Option<Hold> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let script = format!(
            r#"setsid sh -c 'echo $$ > {d}/a; exec sleep 60' &
sh -c 'setsid sh -c "echo \$\$ > {d}/b; exec sleep 60" & exit 0'
while [ ! -s {d}/a ] || [ ! -s {d}/b ]; do sleep 0.02; done
sleep 60"#
        );
        let c = cmd(&["/bin/sh", "-c", &script], timeout);
        let hold = match tokio::time::timeout(drop_after, c.run_held(allow_cgroup)).await {
            Ok(r) => {
                let (o, hold) = r.unwrap();
                assert!(o.timed_out);
                Some(hold)
            }
            Err(_dropped) => None,
        };
        for f in ["a", "b"] {
            let pid = pid_in(&dir.path().join(f));
            let start = Instant::now();
            while runs(pid) && start.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(!runs(pid), "{f} (pid {pid}) survived, held by {hold:?}");
        }
        hold
    }

    const SHORT: Duration = Duration::from_secs(2);
    const NEVER: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn the_timeout_kills_setsid_and_orphaned_descendants_without_a_cgroup() {
        assert_eq!(tree_dies(false, SHORT, NEVER).await, Some(Hold::Subreaper));
    }

    #[tokio::test]
    async fn the_timeout_kills_setsid_and_orphaned_descendants_in_a_cgroup() {
        let hold = tree_dies(true, SHORT, NEVER).await;
        if cgroup_parent().is_some() {
            assert_eq!(hold, Some(Hold::Cgroup));
        } else {
            eprintln!("no cgroup v2 to create cgroups in here: checked the /proc sweep only");
        }
    }

    #[tokio::test]
    async fn dropping_the_call_kills_the_whole_tree_too() {
        for allow_cgroup in [false, true] {
            assert_eq!(tree_dies(allow_cgroup, NEVER, SHORT).await, None);
        }
    }

    #[tokio::test]
    async fn a_started_process_is_told_and_found_again_by_pid_and_start_time() {
        let seen: Arc<std::sync::Mutex<Vec<Spawned>>> = Arc::default();
        let hook: SpawnHook = {
            let seen = seen.clone();
            Arc::new(move |p: &Spawned| seen.lock().unwrap().push(p.clone()))
        };
        let c = cmd(
            &["/bin/sh", "-c", "sleep 1 & sleep 1"],
            Duration::from_secs(10),
        );
        let run = c.run_observed(false, Some(&hook));
        let check = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let p = seen.lock().unwrap()[0].clone();
            assert!(p.start_ticks.is_some());
            assert!(p.alive(), "running: {p:?}");
            let reused = Spawned {
                start_ticks: p.start_ticks.map(|t| t + 1),
                ..p.clone()
            };
            // Another process under the same pid is not it; its group is.
            assert!(reused.alive(), "its group still runs");
            p
        };
        let (out, p) = tokio::join!(run, check);
        assert_eq!(out.unwrap().0.exit_code, Some(0));
        assert_eq!(p.timeout_ms, 10_000);
        let start = Instant::now();
        while p.alive() && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!p.alive(), "gone once it and its children ended");
    }

    #[tokio::test]
    async fn an_orphan_past_its_timeout_is_killed_with_its_group() {
        // A process group left running (setsid: its own group, as a
        // command orphaned by a killed mend is), killed by its record.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!(
            "setsid sh -c 'echo $$ > {}; sleep 30 & exec sleep 30' &",
            pidfile.display()
        );
        let c = cmd(&["/bin/sh", "-c", &script], Duration::from_secs(5));
        c.run().await.unwrap();
        let start = Instant::now();
        while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let orphan = Spawned {
            command: "t".into(),
            pid,
            start_ticks: start_ticks(pid),
            timeout_ms: 0,
        };
        assert!(orphan.alive());
        orphan.kill_group();
        let start = Instant::now();
        while orphan.alive() && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!orphan.alive(), "the whole group is gone");
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let c = cmd(
            &["/bin/sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x"],
            Duration::from_secs(10),
        );
        let o = c.run().await.unwrap();
        assert_eq!(o.stdout.len(), OUTPUT_LIMIT);
        assert!(o.truncated);
    }

    #[tokio::test]
    async fn a_daemon_holding_the_pipes_does_not_hang_the_call() {
        let c = cmd(
            &["/bin/sh", "-c", "sleep 5 & echo started"],
            Duration::from_secs(10),
        );
        let o = c.run().await.unwrap();
        assert_eq!(o.exit_code, Some(0));
        assert_eq!(o.stdout.trim(), "started");
        assert!(o.duration_ms < 5000);
    }

    #[tokio::test]
    async fn only_granted_commands_run_and_never_in_dry_run() {
        let c = Arc::new(cmd(&["/bin/true"], Duration::from_secs(5)));
        let mut cap = ExecCap {
            plugin: "p".into(),
            commands: vec![c],
            dry_run: false,
            on_spawn: None,
        };
        assert!(matches!(cap.run("other").await, Err(HostError::Denied(_))));
        assert_eq!(cap.run("t").await.unwrap().exit_code, Some(0));
        cap.dry_run = true;
        assert!(
            cap.run("t")
                .await
                .unwrap_err()
                .to_string()
                .contains("dry run")
        );
    }

    #[test]
    fn definitions_are_checked() {
        let def = |argv: &[&str]| CommandDef {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: None,
            env: BTreeMap::new(),
            timeout: default_timeout(),
        };
        assert!(Command::new("x", &def(&[])).is_err());
        assert!(Command::new("x", &def(&["/bin/true"])).is_ok());
        let mut d = def(&["/bin/true"]);
        d.cwd = Some("/nonexistent-dir".into());
        assert!(
            Command::new("x", &d)
                .unwrap_err()
                .to_string()
                .contains("cwd")
        );
    }
}
