//! Operator control of a running engine (run now, manual heal, pause,
//! plugin hot swap, the heartbeat), with real plugins in the sandbox, a
//! real SQLite store, and tokio's paused clock driving time (the world is
//! `tests/common/world.rs`).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::artifacts;
use common::config::{Conf, Policy, TableExt, fixer, scripted};
use common::world::{START, World, paused_runtime};
use mend::engine::{Clock, Engine};
use mend::store::{AttemptOutcome, IncidentState};
use toml::toml;

/// A check `app` on the scripted detector whose policy never fires on its
/// own, with one fixer step: every remediation here is one asked for.
async fn start(app: &str) -> World {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! { trigger = { consecutive = 1000 } })
            .step(fixer("app", "fix", "ok")),
    );
    World::start(&conf, &[("app", app)]).await
}

fn actions(w: &World) -> Vec<String> {
    w.calls("actions.log")
}

/// The same component, with a custom section appended: a new file
/// version (another sha256) that behaves the same.
fn new_version(wasm: &[u8]) -> Vec<u8> {
    let name = b"mend-test-version";
    let payload = b"2";
    let mut out = wasm.to_vec();
    out.push(0); // custom section
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
    out
}

#[tokio::test(start_paused = true)]
async fn run_now_detects_between_scheduled_runs() {
    let w = start("warn disk.slow").await;
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

/// The scheduler (one due queue, a task per run): each check keeps its own
/// interval, every scheduled run is counted with its lag (here only the
/// 5 ms wake-up grid), and a manual run between scheduled runs leaves the
/// schedule as it was.
#[tokio::test(start_paused = true)]
async fn each_check_keeps_its_interval_and_a_manual_run_moves_no_scheduled_one() {
    let conf = Conf::new()
        .check(scripted("fast").set("interval", "1s"))
        .check(scripted("slow").set("interval", "10s"));
    let w = World::start(&conf, &[("fast", "ok"), ("slow", "ok")]).await;
    let scheduled = |w: &World| w.engine.schedule_lag().2;
    for _ in 0..1000 {
        if scheduled(&w) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(scheduled(&w), 2, "both ran at start");
    let first = w.last_at("fast").unwrap();
    assert_eq!(w.last_at("slow"), Some(first));

    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(
        scheduled(&w),
        2 + 10 + 1,
        "fast ran at 1..=10 s, slow at 10 s"
    );
    let last = w.last_at("fast").unwrap();
    assert!((last - first).abs_diff(10_000) <= 5, "{}", last - first);
    let (_, p99, _) = w.engine.schedule_lag();
    assert!(p99 <= Duration::from_millis(5), "only the grid: {p99:?}");

    // At 10.5 s: a manual run now, and the next scheduled one still at 11 s.
    let manual = w.engine.request_run("fast").unwrap().await.unwrap();
    assert!(manual.at >= first + 10_500, "{}", manual.at - first);
    assert_eq!(scheduled(&w), 13, "a manual run is not a scheduled one");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(scheduled(&w), 14);
    let next = w.last_at("fast").unwrap();
    assert!((next - first).abs_diff(11_000) <= 5, "{}", next - first);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_manual_heal_walks_the_ladder_now_and_verifies() {
    let w = start("fail").await;
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
    assert_eq!(actions(&w), vec!["app dry_run=false codes=scripted.fail"]);

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
    let w = start("fail").await;
    let first = w.engine.request_heal("app", false, "a").unwrap();
    let second = w.engine.request_heal("app", false, "b").unwrap();
    let first = first.await.unwrap();
    assert!(first.started());
    // The second waits for the first ladder (one task per check), then
    // finds the check healed.
    let second = second.await.unwrap();
    assert!(!second.started(), "{second:?}");
    assert_eq!(w.incidents().len(), 1);
    assert_eq!(actions(&w).len(), 1);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_pause_holds_every_policy_and_survives_a_restart() {
    let w = start("fail").await;
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
    assert!(actions(&w).is_empty());

    // A new engine on the same store (a restart, or a reload) is paused.
    let plan = mend::plan::load(&w.state.path().join("mend.toml"), &paused_runtime())
        .await
        .unwrap();
    let again = Engine::new(
        plan,
        paused_runtime(),
        w.engine.store().clone(),
        Clock::starting_at(START + 60_000),
        Arc::new(mend::metrics::Metrics::new()),
    )
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
    let w = start("fail").await;
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
async fn plugins_swap_in_whole_and_only_when_the_plan_still_compiles() {
    let w = start("ok").await;
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
    let still_serves = async |w: &World| {
        let r = w.engine.request_run("app").unwrap().await.unwrap();
        assert_eq!(r.findings[0].code, "scripted.ok", "{r:?}");
    };

    // Half written: refused, the old version stays and serves.
    std::fs::write(&file, &original[..original.len() / 3]).unwrap();
    let report = w.engine.reload_plugins().await;
    assert!(!report.refused.is_empty(), "{report:?}");
    assert!(
        report.loaded.is_empty() && report.removed.is_empty(),
        "{report:?}"
    );
    assert_eq!(sha(&w), before);
    still_serves(&w).await;

    // Removed while a check uses it: refused too; the loaded code serves.
    std::fs::remove_file(&file).unwrap();
    let report = w.engine.reload_plugins().await;
    assert!(
        report
            .refused
            .iter()
            .any(|r| r.contains("no plugin named `fixture-scripted`")),
        "{report:?}"
    );
    still_serves(&w).await;

    // A new version of the same file: taken.
    std::fs::write(&file, new_version(&original)).unwrap();
    let report = w.engine.reload_plugins().await;
    assert_eq!(
        report.loaded,
        vec!["fixture-scripted 0.1.0".to_string()],
        "{report:?}"
    );
    assert_ne!(sha(&w), before);
    still_serves(&w).await;

    // Another file claiming its name: never replaces the loaded one.
    let impostor = w.plugins.path().join("zz-impostor.wasm");
    std::fs::write(&impostor, &original).unwrap();
    let report = w.engine.reload_plugins().await;
    assert!(
        report.refused.iter().any(|r| r.contains("2 files claim")),
        "{report:?}"
    );
    std::fs::remove_file(&file).unwrap();
    let report = w.engine.reload_plugins().await;
    assert!(
        report
            .refused
            .iter()
            .any(|r| r.contains("claims plugin `fixture-scripted`, which is loaded from")),
        "{report:?}"
    );
    assert_eq!(
        w.engine.plugin_set().plugins["fixture-scripted"].source(),
        Some(file.as_path())
    );
    still_serves(&w).await;
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_engine_beats_a_heartbeat_while_its_checks_run() {
    let w = start("ok").await;
    let mut beats = w.engine.heartbeats();
    let first = *beats.borrow_and_update();
    assert!(first >= 1, "a beat once every check is scheduled");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = *beats.borrow_and_update();
    assert!(later >= first + 4, "{first} → {later}");
    assert!(w.engine.last_heartbeat() >= START + 4_000);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_follows_a_shorter_watchdog_interval() {
    let w = start("ok").await;
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
