//! The `service-restart` action with real commands: its start limit blocks
//! the restart past the burst and allows it again once the window has
//! passed (on a host clock the test moves), and survives a new runtime on
//! the same state; a failing or hanging command is a failure naming it; a
//! dry run runs nothing and records nothing.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use mend::capabilities::{Backends, Grants, ResolvedGrants};
use mend::clock::Clock;
use mend::contract::{Outcome, RemedyContext};
use mend::runtime::{Limits, Plugin, PluginError, Report, Request, Runtime, RuntimeConfig};
use mend_test_artifacts as artifacts;
use serde_json::json;

/// A runtime whose clock runs `offset` ahead of the wall clock.
struct Host {
    runtime: Runtime,
    offset_ms: Arc<AtomicU64>,
}

impl Host {
    fn new(state_dir: &Path) -> Host {
        let offset_ms = Arc::new(AtomicU64::new(0));
        let runtime = Runtime::new(RuntimeConfig {
            state_dir: Some(state_dir.to_path_buf()),
            ..RuntimeConfig::default()
        })
        .expect("runtime");
        Host { runtime, offset_ms }
    }

    /// The host's clock: the real one, `offset` ahead.
    fn clock(&self) -> Clock {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        Clock::starting_at(now + self.offset_ms.load(Ordering::SeqCst))
    }

    fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    async fn load(&self) -> Plugin {
        self.runtime
            .load_file(Path::new(artifacts::SERVICE_RESTART))
            .await
            .expect("loading service-restart")
    }

    async fn restart(
        &self,
        plugin: &Plugin,
        config: serde_json::Value,
        grants: &ResolvedGrants,
        dry_run: bool,
    ) -> Result<Report<Outcome>, PluginError> {
        self.runtime
            .remedy(
                plugin,
                &Request {
                    check: "test",
                    config: &config.into(),
                    labels: &common::NO_LABELS,
                    grants,
                    limits: Limits {
                        deadline: Duration::from_secs(20),
                        ..Limits::default()
                    },
                    clock: self.clock(),
                },
                &[],
                RemedyContext::manual("restart", dry_run),
            )
            .await
    }
}

/// Commands `name = argv` and grants for all of them plus state.
fn grants(commands: &[(&str, Vec<String>, &str)]) -> ResolvedGrants {
    let mut toml = String::new();
    for (name, argv, timeout) in commands {
        toml += &format!(
            "[commands.{name}]\nargv = {}\ntimeout = \"{timeout}\"\n",
            serde_json::to_string(argv).unwrap()
        );
    }
    let backends = Backends::from_toml(&toml).expect("commands parse");
    Grants {
        commands: commands.iter().map(|(n, _, _)| n.to_string()).collect(),
        state: true,
        ..Grants::none()
    }
    .resolve_with(&backends)
    .expect("grants resolve")
}

/// A command that appends a line to `file` (so runs can be counted).
fn append_to(file: &Path) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("echo restarted >> '{}'", file.display()),
    ]
}

fn runs(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_start_limit_blocks_past_the_burst_and_allows_again_after_the_window() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let log = tmp.path().join("restarts.log");
    let g = grants(&[("restart-app", append_to(&log), "10s")]);
    let config = json!({
        "command": "restart-app",
        "start_limit_burst": 2,
        "start_limit_interval": "10m",
    });
    let host = Host::new(state.path());
    let p = host.load().await;

    for n in 1..=2 {
        let r = host.restart(&p, config.clone(), &g, false).await.unwrap();
        assert!(r.value.changed, "{:?}", r.value);
        assert_eq!(runs(&log), n, "restart {n} ran the command");
    }
    host.advance(Duration::from_secs(60));
    let err = host
        .restart(&p, config.clone(), &g, false)
        .await
        .unwrap_err();
    match &err {
        PluginError::Failed { message, .. } => assert!(
            message.contains("start limit hit: 2 restarts in 10m"),
            "{message}"
        ),
        other => panic!("expected a failure, got {other}"),
    }
    assert_eq!(runs(&log), 2, "the refused restart ran nothing");

    // The limit is kept in the plugin's persistent state: a new host on the
    // same state directory (mend restarted) still refuses.
    let again = Host::new(state.path());
    again.advance(Duration::from_secs(60));
    let p2 = again.load().await;
    let err = again
        .restart(&p2, config.clone(), &g, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("start limit hit"), "{err}");
    // A dry run says it would be refused.
    let dry = again.restart(&p2, config.clone(), &g, true).await.unwrap();
    assert!(
        dry.value.steps.iter().any(|s| s.contains("would refuse")),
        "{:?}",
        dry.value
    );
    assert_eq!(runs(&log), 2);

    // Ten minutes after the first two, both have left the window.
    host.advance(Duration::from_secs(9 * 60 + 1));
    for n in 3..=4 {
        let r = host.restart(&p, config.clone(), &g, false).await.unwrap();
        assert!(r.value.changed);
        assert_eq!(runs(&log), n);
    }
    let err = host.restart(&p, config, &g, false).await.unwrap_err();
    assert!(err.to_string().contains("start limit hit"), "{err}");
    assert_eq!(runs(&log), 4);
}

#[tokio::test]
async fn a_failing_or_hanging_command_is_reported_as_failed() {
    let state = tempfile::tempdir().unwrap();
    let g = grants(&[
        (
            "broken",
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo 'unit app.service not found' >&2; exit 3".into(),
            ],
            "10s",
        ),
        ("hangs", vec!["/bin/sleep".into(), "60".into()], "1s"),
    ]);
    let host = Host::new(state.path());
    let p = host.load().await;

    let err = host
        .restart(&p, json!({"command": "broken"}), &g, false)
        .await
        .unwrap_err();
    match &err {
        PluginError::Failed { message, .. } => {
            assert!(message.contains("`broken`"), "{message}");
            assert!(message.contains("exited with 3"), "{message}");
            assert!(message.contains("unit app.service not found"), "{message}");
        }
        other => panic!("expected a failure, got {other}"),
    }

    let err = host
        .restart(&p, json!({"command": "hangs"}), &g, false)
        .await
        .unwrap_err();
    match &err {
        PluginError::Failed { message, .. } => {
            assert!(message.contains("`hangs` timed out"), "{message}")
        }
        other => panic!("expected a failure, got {other}"),
    }

    // A command that is not granted is refused, not run.
    let err = host
        .restart(&p, json!({"command": "not-granted"}), &g, false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PluginError::Denied { .. } | PluginError::Failed { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("not-granted"), "{err}");
}

#[tokio::test]
async fn a_dry_run_runs_nothing_and_records_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let touched = tmp.path().join("touched");
    let g = grants(&[(
        "touch-it",
        vec!["/usr/bin/touch".into(), touched.display().to_string()],
        "10s",
    )]);
    let config =
        json!({"command": "touch-it", "start_limit_burst": 1, "start_limit_interval": "1h"});
    let host = Host::new(state.path());
    let p = host.load().await;

    for _ in 0..3 {
        let dry = host.restart(&p, config.clone(), &g, true).await.unwrap();
        assert!(!dry.value.changed, "{:?}", dry.value);
        assert!(
            dry.value.steps[0].contains("would run command `touch-it`"),
            "{:?}",
            dry.value
        );
        assert!(
            dry.value.steps[1].contains("start limit allows it"),
            "{:?}",
            dry.value
        );
    }
    assert!(!touched.exists(), "a dry run ran the command");

    // Nothing was recorded: the one restart the limit allows is still free.
    let r = host.restart(&p, config.clone(), &g, false).await.unwrap();
    assert!(r.value.changed);
    assert!(touched.exists());
    let err = host.restart(&p, config, &g, false).await.unwrap_err();
    assert!(
        err.to_string().contains("start limit hit: 1 restart in 1h"),
        "{err}"
    );
}

/// Two checks sharing a restart command can call at the same moment: the
/// start limit still holds, because the history is checked and recorded in
/// one atomic step (state compare-and-swap).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_restarts_cannot_slip_past_the_start_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let log = tmp.path().join("restarts.log");
    let g = grants(&[("restart-app", append_to(&log), "10s")]);
    let config = json!({
        "command": "restart-app",
        "start_limit_burst": 2,
        "start_limit_interval": "10m",
    });
    let host = Arc::new(Host::new(state.path()));
    let plugin = Arc::new(host.load().await);
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let (host, plugin, g, config) =
                (host.clone(), plugin.clone(), g.clone(), config.clone());
            tokio::spawn(async move { host.restart(&plugin, config, &g, false).await })
        })
        .collect();
    let mut ok = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(e.to_string().contains("start limit hit"), "{e}"),
        }
    }
    assert_eq!(ok, 2, "exactly the burst may restart");
    assert_eq!(runs(&log), 2, "the command ran exactly twice");
}
