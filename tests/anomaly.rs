//! Anomaly triggers end to end (issue 14): a finding's metric against its
//! own baseline, learnt from the check's results under tokio's paused
//! clock, shown in the incident, kept across a restart.

mod common;

use std::time::Duration;

use common::config::{Conf, Policy, fixer, scripted};
use common::world::{World, wait};
use mend::store::IncidentState;
use toml::toml;

/// 100 and 140 ms in turn: a baseline of 120 ± 25 (a mean absolute
/// deviation of 20).
fn steady(i: usize) -> String {
    format!(
        "ok http.ok latency_ms={}",
        if i.is_multiple_of(2) { 100 } else { 140 }
    )
}

fn conf() -> Conf {
    Conf::new().check(scripted("web")).policy(
        Policy::new("slow-web", "web")
            .with(toml! {
                trigger = { consecutive = 3, anomaly = { metric = "latency_ms", sigma = 4, min_history = "5m", min_samples = 20, half_life = "10m" } }
                cooldown = "0s"
            })
            .step(fixer("web", "restart", "ok http.ok latency_ms=120")),
    )
}

/// `n` scheduled runs of the steady series.
async fn learn(w: &World, n: usize) {
    for i in 0..n {
        w.set("web", &steady(i));
        w.next_run("web").await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_jump_from_the_baseline_opens_an_incident_that_says_so_and_the_steady_state_none() {
    let w = World::start(&conf(), &[("web", &steady(1))]).await;
    // 10 minutes of steady latency, warm after 5: no incident.
    learn(&w, 60).await;
    assert!(w.incidents().is_empty(), "{:#?}", w.incidents());
    assert!(w.calls("actions.log").is_empty());
    let b = &w.engine.baselines("web")[0];
    assert!(b.band.warm, "{b:?}");
    assert!((b.band.mean - 120.0).abs() < 5.0, "{b:?}");
    assert!((b.band.deviation - 25.0).abs() < 5.0, "{b:?}");
    assert_eq!(b.last.as_ref().map(|v| v.anomalous), Some(false));

    // 480 ms: anomalous; the third in a row opens the incident.
    w.set("web", "ok http.ok latency_ms=480");
    w.runs("web", 2).await;
    assert!(
        w.incidents().is_empty(),
        "two anomalous results do not trigger"
    );
    w.next_run("web").await;
    wait(Duration::from_secs(8)).await; // settle, verify
    let inc = &w.incidents()[0];
    let reason = inc.diagnosis["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("3 anomalous results in a row: latency_ms 480, baseline 1"),
        "{reason}"
    );
    assert!(reason.contains("threshold 4σ): http.ok"), "{reason}");
    let a = &inc.diagnosis["anomaly"];
    assert_eq!(a["value"], 480.0);
    assert!((a["mean"].as_f64().unwrap() - 120.0).abs() < 5.0, "{a}");
    assert!((a["deviation"].as_f64().unwrap() - 25.0).abs() < 5.0, "{a}");
    // An ok finding is the evidence: the metric, not the status, is bad.
    assert_eq!(inc.diagnosis["evidence"][0]["status"], "ok");
    // The step brought it back to 120: verified within the baseline.
    assert_eq!(w.calls("actions.log").len(), 1);
    assert_eq!(inc.state, IncidentState::Healed, "{inc:#?}");
    // The fault moved the baseline little: 480 is still anomalous.
    let b = &w.engine.baselines("web")[0];
    assert!(b.band.mean < 140.0, "{b:?}");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_metric_missing_or_warming_up_is_no_data_not_bad() {
    let w = World::start(&conf(), &[("web", "ok http.ok")]).await;
    // No metric at all: never bad.
    w.runs("web", 30).await;
    assert!(w.engine.baselines("web")[0].last.is_none());
    // Wild values before the baseline is warm: learnt, never judged.
    for i in 0..10 {
        w.set(
            "web",
            &format!("ok http.ok latency_ms={}", if i < 5 { 100 } else { 5000 }),
        );
        w.next_run("web").await;
    }
    assert!(w.incidents().is_empty(), "{:#?}", w.incidents());
    assert!(!w.engine.baselines("web")[0].band.warm);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_baseline_is_kept_across_a_restart_and_written_at_a_bounded_rate() {
    let w = World::start(&conf(), &[("web", &steady(1))]).await;
    learn(&w, 10).await;
    // Not one write per result: the first waits for SAVE_EVERY.
    assert_eq!(
        w.engine.store().baseline("slow-web", "latency_ms").unwrap(),
        None
    );
    learn(&w, 30).await; // 400 s in: written once
    let saved = w
        .engine
        .store()
        .baseline("slow-web", "latency_ms")
        .unwrap()
        .expect("written after five minutes");
    assert!(saved.samples >= 30 && saved.samples <= 35, "{saved:?}");
    learn(&w, 20).await;
    let before = w.engine.baselines("web")[0].band.clone();

    // Stopping writes what was learnt since; the new engine starts from it.
    let w = w.restart().await;
    let after = &w.engine.baselines("web")[0].band;
    assert!(after.warm, "{after:?}");
    assert!(after.samples > before.samples, "{before:?} → {after:?}");
    assert!(
        (after.mean - before.mean).abs() < 20.0,
        "{before:?} → {after:?}"
    );
    // Not warming up again: a jump right after the restart is caught.
    w.set("web", "ok http.ok latency_ms=480");
    w.runs("web", 3).await;
    wait(Duration::from_secs(8)).await;
    let inc = &w.incidents()[0];
    assert!(
        inc.diagnosis["reason"]
            .as_str()
            .unwrap()
            .contains("latency_ms 480, baseline"),
        "{inc:#?}"
    );
    w.stop().await;
}
