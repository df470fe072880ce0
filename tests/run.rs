//! `mend run` as a user runs it: the real binary, real plugins, real time.
//! A kill -9 in the middle of an action loses nothing, and many of them
//! page no one for a fix that completed; Ctrl-C stops cleanly; a policy can
//! ask for a restart ("heavy heal").

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::process::{self, wait_for};
use mend::store::{AttemptOutcome, Incident, IncidentState};
use mend_test_artifacts as artifacts;

struct Setup {
    ctl: tempfile::TempDir,
    state: tempfile::TempDir,
    config: std::path::PathBuf,
}

fn setup(policy_extra: &str, steps: &str) -> Setup {
    let ctl = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let plugins = state.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for p in [
        artifacts::SCRIPTED,
        artifacts::FIXER,
        artifacts::SERVICE_RESTART,
    ] {
        std::fs::copy(p, plugins.join(Path::new(p).file_name().unwrap())).unwrap();
    }
    let config = state.path().join("mend.toml");
    let ctl_dir = ctl.path().display();
    std::fs::write(
        &config,
        format!(
            r#"
[engine]
plugins_dir = "plugins"
state_dir = "."
interval = "500ms"

[api]
listen = "off"

[[check]]
name = "app"
plugin = "fixture-scripted"
jitter = "0s"
grants = {{ dirs = [{{ host = "{ctl_dir}", guest = "/ctl" }}] }}
config = {{ file = "/ctl/app" }}

[[policy]]
name = "fix-app"
check = "app"
trigger = {{ consecutive = 2 }}
backoff = {{ base = "100ms", jitter = 0.0 }}
{policy_extra}
{steps}
"#
        )
        .replace("{ctl}", &ctl_dir.to_string()),
    )
    .unwrap();
    Setup { ctl, state, config }
}

fn step(name: &str, config_extra: &str) -> String {
    format!(
        r#"
[[policy.step]]
name = "{name}"
action = "fixture-fixer"
settle = "200ms"
grants = {{ dirs = [{{ host = "{{ctl}}", guest = "/ctl", mode = "rw" }}] }}
config = {{ file = "/ctl/app", log = "/ctl/actions.log" {config_extra} }}
"#
    )
}

fn start(s: &Setup) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(["run", "--config"])
        .arg(&s.config)
        .env("MEND_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting mend run")
}

/// The store of a (possibly running) mend, read-only.
fn incidents(s: &Setup) -> Vec<Incident> {
    process::incidents(&s.state.path().join("mend.db"))
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "mend did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn detects_acts_verifies_and_closes_then_stops_on_ctrl_c() {
    let s = setup("", &step("fix", ""));
    std::fs::write(s.ctl.path().join("app"), "fail").unwrap();
    let mut mend = start(&s);
    wait_for("a healed incident", Duration::from_secs(60), || {
        incidents(&s)
            .first()
            .is_some_and(|i| i.state == IncidentState::Healed)
    });
    let inc = &incidents(&s)[0];
    assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Healed);
    assert_eq!(
        std::fs::read_to_string(s.ctl.path().join("app")).unwrap(),
        "ok"
    );
    signal(&mend, "-INT");
    let status = wait_exit(&mut mend, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_kill_9_mid_action_loses_nothing_and_the_incident_resumes() {
    let slow = ", slow_flag = \"/ctl/slow\", slow_secs = 60";
    let steps = [
        step("slow-fix", &format!("{slow}, write = \"fail\"")),
        step("fix", ""),
    ]
    .concat();
    let s = setup("", &steps);
    std::fs::write(s.ctl.path().join("app"), "fail").unwrap();
    std::fs::write(s.ctl.path().join("slow"), "").unwrap();
    let mut mend = start(&s);
    wait_for("an attempt in flight", Duration::from_secs(60), || {
        incidents(&s).first().is_some_and(|i| {
            i.attempts
                .iter()
                .any(|a| a.outcome == AttemptOutcome::Running)
        })
    });
    mend.kill().unwrap(); // SIGKILL: no chance to clean up
    mend.wait().unwrap();

    let before = incidents(&s);
    assert_eq!(before.len(), 1);
    assert_eq!(
        before[0].state,
        IncidentState::Remediating,
        "the incident was recorded before acting, and says a step runs"
    );
    assert_eq!(before[0].attempts[0].outcome, AttemptOutcome::Running);

    // Restart: the interrupted attempt is marked, the incident resumes at
    // the next step and heals.
    std::fs::remove_file(s.ctl.path().join("slow")).unwrap();
    let mut mend = start(&s);
    wait_for(
        "the resumed incident to heal",
        Duration::from_secs(60),
        || {
            incidents(&s)
                .first()
                .is_some_and(|i| i.state == IncidentState::Healed)
        },
    );
    let after = incidents(&s);
    assert_eq!(after.len(), 1, "same incident, nothing lost: {after:#?}");
    assert_eq!(after[0].id, before[0].id);
    let outcomes: Vec<(&str, AttemptOutcome)> = after[0]
        .attempts
        .iter()
        .map(|a| (a.action.as_str(), a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("slow-fix", AttemptOutcome::Interrupted),
            ("fix", AttemptOutcome::Healed)
        ]
    );
    signal(&mend, "-TERM");
    assert!(wait_exit(&mut mend, Duration::from_secs(20)).success());
}

#[test]
fn exit_on_exhausted_asks_the_supervisor_for_a_restart() {
    let s = setup("exit_on_exhausted = true", &step("fix", ", fail = true"));
    std::fs::write(s.ctl.path().join("app"), "fail").unwrap();
    let mut mend = start(&s);
    let status = wait_exit(&mut mend, Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(75),
        "EX_TEMPFAIL for Restart=on-failure"
    );
    let inc = &incidents(&s)[0];
    assert_eq!(inc.state, IncidentState::Escalated);
    assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Failed);
}

#[test]
fn a_broken_config_is_refused_with_its_position() {
    let s = setup("", &step("fix", ""));
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace("check = \"app\"", "check = \"ap\"")
            .replace("interval = \"500ms\"", "interval = \"fast\""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(["run", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "a config error is EX_CONFIG");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mend.toml:5:12: engine.interval: invalid duration \"fast\""),
        "{err}"
    );
    assert!(
        err.contains("policy[0].check: unknown check `ap`; did you mean `app`?"),
        "every problem at once: {err}"
    );
}

/// The issue-11 crash: a 2 s restart command, mend killed (-9) at a random
/// point while it runs, again and again. The command goes on as an orphan
/// and fixes the target; each restart must wait for it, verify, and credit
/// the interrupted attempt, never escalating a fix that completed.
#[test]
fn kill_9_mid_command_at_random_offsets_never_pages_for_a_fix_that_completed() {
    const CYCLES: usize = 12;
    let extra = r#"cooldown = "0s"
relapse_window = "0s"
max_attempts = 1000
verify = { probes = 2, window = "1s" }"#;
    let step = r#"
[[policy.step]]
name = "restart"
action = "service-restart"
settle = "200ms"
grants = { commands = ["restart-app"], state = true }
config = { command = "restart-app", start_limit_burst = 0 }

[policy.escalate]
action = "fixture-fixer"
grants = { dirs = [{ host = "{ctl}", guest = "/ctl", mode = "rw" }] }
config = { file = "/ctl/escalated", write = "yes", log = "/ctl/escalations.log" }

[commands.restart-app]
argv = ["/bin/sh", "-c", "sleep 2; echo ok > {ctl}/app"]
timeout = "20s"
"#;
    let s = setup(extra, step);
    let mut offsets = Vec::new();
    for cycle in 0..CYCLES {
        std::fs::write(s.ctl.path().join("app"), "fail").unwrap();
        let mut mend = start(&s);
        wait_for(
            "the restart command to be recorded",
            Duration::from_secs(60),
            || {
                let incs = incidents(&s);
                incs.len() == cycle + 1
                    && incs[0].attempts.first().is_some_and(|a| {
                        a.outcome == AttemptOutcome::Running
                            && a.detail["processes"][0]["pid"].is_u64()
                    })
            },
        );
        // Somewhere in the command's 2 s (it was recorded up to 100 ms ago).
        let offset = Duration::from_millis(fastrand::u64(0..1700));
        offsets.push(offset.as_millis());
        std::thread::sleep(offset);
        mend.kill().unwrap();
        mend.wait().unwrap();
        assert_eq!(
            incidents(&s)[0].attempts[0].outcome,
            AttemptOutcome::Running,
            "cycle {cycle}: killed mid-command (offset {offset:?})"
        );
        let mut mend = start(&s);
        wait_for(
            "the interrupted incident to close",
            Duration::from_secs(60),
            || incidents(&s)[0].closed_at.is_some(),
        );
        signal(&mend, "-TERM");
        assert!(wait_exit(&mut mend, Duration::from_secs(20)).success());
    }
    let incs = incidents(&s);
    assert_eq!(incs.len(), CYCLES, "offsets {offsets:?}");
    for inc in &incs {
        assert_eq!(
            (inc.state, inc.escalated_at),
            (IncidentState::Healed, None),
            "offsets {offsets:?}: {inc:#?}"
        );
        assert_eq!(inc.attempts.len(), 1, "{inc:#?}");
        let a = &inc.attempts[0];
        assert_eq!(a.outcome, AttemptOutcome::Healed, "credited: {a:#?}");
        assert_eq!(a.detail["after_restart"]["waited_for"], 1, "{a:#?}");
        assert!(
            inc.note.contains("interrupted, then verified"),
            "{}",
            inc.note
        );
    }
    assert!(
        !s.ctl.path().join("escalations.log").exists(),
        "no one was paged (offsets {offsets:?})"
    );
}
