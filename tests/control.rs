//! Operator control of a running engine (run now, manual heal, pause,
//! plugin hot swap, the heartbeat), with real plugins in the sandbox, a
//! real SQLite store, and tokio's paused clock driving time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mend::engine::{Clock, Engine, shutdown};
use mend::runtime::{Runtime, RuntimeConfig};
use mend::store::{AttemptOutcome, Incident, IncidentState, Store};
use mend_test_artifacts as artifacts;

/// 2026-11-22T00:00:00Z.
const START: u64 = 1_795_305_600_000;

fn runtime() -> Arc<Runtime> {
    static RT: std::sync::OnceLock<Arc<Runtime>> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("mend-control-test-")
            .tempdir()
            .unwrap()
            .keep();
        Arc::new(
            Runtime::new(RuntimeConfig {
                state_dir: Some(dir),
                // Under the paused clock, file I/O must run inline.
                inline_file_io: true,
                ..RuntimeConfig::default()
            })
            .unwrap(),
        )
    })
    .clone()
}

struct World {
    ctl: tempfile::TempDir,
    state: tempfile::TempDir,
    plugins: tempfile::TempDir,
    engine: Arc<Engine>,
    trigger: shutdown::Trigger,
    task: tokio::task::JoinHandle<()>,
}

/// A check `app` on the scripted detector whose policy never fires on its
/// own, with one fixer step: every remediation here is one asked for.
fn config(ctl: &Path, plugins: &Path, state: &Path) -> String {
    let ctl = ctl.display();
    format!(
        r#"
[engine]
plugins_dir = "{plugins}"
state_dir = "{state}"
interval = "10s"

[[check]]
name = "app"
plugin = "fixture-scripted"
jitter = "0s"
grants = {{ dirs = [{{ host = "{ctl}", guest = "/ctl" }}] }}
config = {{ file = "/ctl/app" }}

[[policy]]
name = "fix-app"
check = "app"
trigger = {{ consecutive = 1000 }}

[[policy.step]]
name = "fix"
action = "fixture-fixer"
settle = "5s"
grants = {{ dirs = [{{ host = "{ctl}", guest = "/ctl", mode = "rw" }}] }}
config = {{ file = "/ctl/app", log = "/ctl/actions.log" }}
"#,
        plugins = plugins.display(),
        state = state.display(),
    )
}

impl World {
    async fn start(app: &str) -> World {
        let ctl = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let plugins = tempfile::tempdir().unwrap();
        for p in [artifacts::SCRIPTED, artifacts::FIXER] {
            let name = Path::new(p).file_name().unwrap();
            std::fs::copy(p, plugins.path().join(name)).unwrap();
        }
        std::fs::write(ctl.path().join("app"), app).unwrap();
        let text = config(ctl.path(), plugins.path(), state.path());
        let file = state.path().join("mend.toml");
        let config = mend::config::parse(&text, &file, |_| None).unwrap_or_else(|e| panic!("{e}"));
        let clock = Clock::starting_at(START);
        let (store, _) = Store::open(&state.path().join("mend.db"), clock.now()).unwrap();
        let engine = Engine::new(config, runtime(), Arc::new(store), clock)
            .await
            .unwrap();
        let (trigger, shutdown) = shutdown::channel();
        let e = engine.clone();
        let task = tokio::spawn(async move { e.run(shutdown).await });
        // Let the check tasks start.
        tokio::time::sleep(Duration::from_millis(10)).await;
        World {
            ctl,
            state,
            plugins,
            engine,
            trigger,
            task,
        }
    }

    fn actions(&self) -> Vec<String> {
        std::fs::read_to_string(self.ctl.path().join("actions.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn incidents(&self) -> Vec<Incident> {
        let mut v = self.engine.store().incidents(false, 100).unwrap();
        v.reverse();
        v
    }

    async fn stop(self) {
        self.trigger.fire();
        self.task.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn run_now_detects_between_scheduled_runs() {
    let w = World::start("warn disk.slow").await;
    let result = w.engine.request_run("app").unwrap().await.unwrap();
    assert_eq!(result.findings[0].code, "disk.slow");
    assert!(result.at >= START);
    let snap = &w.engine.snapshot()[0];
    assert_eq!(snap.last.as_ref().unwrap().at, result.at);
    assert!(matches!(
        w.engine.request_run("nope"),
        Err(mend::engine::ControlError::UnknownCheck(_))
    ));
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_manual_heal_walks_the_ladder_now_and_verifies() {
    let w = World::start("fail").await;
    let outcome = w
        .engine
        .request_heal("app", false, "test")
        .unwrap()
        .await
        .unwrap();
    assert!(outcome.started(), "{outcome:?}");
    assert_eq!(outcome.policies[0].incident, Some(1));
    tokio::time::sleep(Duration::from_secs(8)).await; // settle, verify
    let inc = &w.incidents()[0];
    assert_eq!(inc.state, IncidentState::Healed, "{inc:#?}");
    assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Healed);
    assert!(
        inc.diagnosis["reason"]
            .as_str()
            .unwrap()
            .starts_with("manual heal requested by test: "),
        "{inc:?}"
    );
    assert_eq!(w.actions(), vec!["app dry_run=false codes=scripted.fail"]);

    // Healed: nothing matches any more, so a second heal does nothing.
    let again = w
        .engine
        .request_heal("app", false, "test")
        .unwrap()
        .await
        .unwrap();
    assert!(!again.started());
    assert!(
        again.policies[0].reason.starts_with("nothing to heal"),
        "{again:?}"
    );
    assert_eq!(w.incidents().len(), 1);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn two_heals_at_once_run_one_after_the_other_and_heal_once() {
    let w = World::start("fail").await;
    let first = w.engine.request_heal("app", false, "a").unwrap();
    let second = w.engine.request_heal("app", false, "b").unwrap();
    let first = first.await.unwrap();
    assert!(first.started());
    // The second waits for the first ladder (one task per check), then
    // finds the check healed.
    let second = second.await.unwrap();
    assert!(!second.started(), "{second:?}");
    assert_eq!(w.incidents().len(), 1);
    assert_eq!(w.actions().len(), 1);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_pause_holds_every_policy_and_survives_a_restart() {
    let w = World::start("fail").await;
    let p = w.engine.pause("disk swap").unwrap();
    assert!(p.since >= START);
    let out = w
        .engine
        .request_heal("app", false, "test")
        .unwrap()
        .await
        .unwrap();
    assert!(!out.started());
    assert_eq!(out.policies[0].reason, "mend is paused: disk swap");
    assert!(w.incidents().is_empty());
    assert!(w.actions().is_empty());

    // A new engine on the same store (a restart, or a reload) is paused.
    let again = Engine::new(
        w.engine.config().clone(),
        runtime(),
        w.engine.store().clone(),
        Clock::starting_at(START + 60_000),
    )
    .await
    .unwrap();
    assert_eq!(again.paused(), Some(p));

    assert!(w.engine.resume().unwrap().is_some());
    let out = w
        .engine
        .request_heal("app", false, "test")
        .unwrap()
        .await
        .unwrap();
    assert!(out.started(), "{out:?}");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_heal_records_the_plan_and_changes_nothing() {
    let w = World::start("fail").await;
    let out = w
        .engine
        .request_heal("app", true, "test")
        .unwrap()
        .await
        .unwrap();
    assert!(out.started() && out.policies[0].dry_run);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let inc = &w.incidents()[0];
    assert_eq!(inc.state, IncidentState::Planned);
    assert!(inc.dry_run);
    assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Planned);
    assert_eq!(
        std::fs::read_to_string(w.ctl.path().join("app")).unwrap(),
        "fail"
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn plugins_swap_in_whole_broken_files_keep_the_old_version_removed_ones_say_so() {
    let w = World::start("ok").await;
    let file = w
        .plugins
        .path()
        .join(Path::new(artifacts::SCRIPTED).file_name().unwrap());
    let original = std::fs::read(&file).unwrap();
    let sha = |w: &World| {
        w.engine.plugin_set().plugins["fixture-scripted"]
            .sha256()
            .to_string()
    };
    let before = sha(&w);

    // Half written: refused, the old version stays and serves.
    std::fs::write(&file, &original[..original.len() / 3]).unwrap();
    let report = w.engine.reload_plugins().await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(sha(&w), before);
    let r = w.engine.request_run("app").unwrap().await.unwrap();
    assert_eq!(r.findings[0].code, "scripted.ok");

    // Removed: the check turns unknown, saying why.
    std::fs::remove_file(&file).unwrap();
    let report = w.engine.reload_plugins().await.unwrap();
    assert_eq!(report.removed, vec!["fixture-scripted".to_string()]);
    let r = w.engine.request_run("app").unwrap().await.unwrap();
    assert_eq!(r.findings[0].code, "plugin.error");
    assert!(
        r.findings[0]
            .summary
            .contains("fixture-scripted was removed from the plugins directory"),
        "{r:?}"
    );

    // Back: served again.
    std::fs::write(&file, &original).unwrap();
    let report = w.engine.reload_plugins().await.unwrap();
    assert_eq!(report.loaded.len(), 1, "{report:?}");
    let r = w.engine.request_run("app").unwrap().await.unwrap();
    assert_eq!(r.findings[0].code, "scripted.ok");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_engine_beats_a_heartbeat_while_its_checks_run() {
    let w = World::start("ok").await;
    let mut beats = w.engine.heartbeats();
    let first = *beats.borrow_and_update();
    assert!(first >= 1, "a beat once every check is scheduled");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = *beats.borrow_and_update();
    assert!(later >= first + 4, "{first} → {later}");
    assert!(w.engine.last_heartbeat() >= START + 4_000);
    let _ = &w.state;
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_follows_a_shorter_watchdog_interval() {
    let w = World::start("ok").await;
    // systemd's WatchdogSec=500ms: beat every 250 ms.
    w.engine.set_heartbeat_interval(Duration::from_millis(250));
    let mut beats = w.engine.heartbeats();
    tokio::time::sleep(Duration::from_secs(1)).await; // the current 1 s tick ends
    let first = *beats.borrow_and_update();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = *beats.borrow_and_update();
    assert!(later >= first + 7, "{first} → {later}");
    w.stop().await;
}
