//! The healing engine end to end, with real plugins in the sandbox, a real
//! SQLite store, and tokio's paused clock driving time-driven policy
//! (the world and the config builder are in `tests/common`).

mod common;

use std::time::Duration;

use common::config::{Conf, Policy, TableExt, escalation, fixer, scripted};
use common::world::{START, World, wait};
use mend::policy::health::Health;
use mend::store::{AttemptOutcome, IncidentState};
use toml::toml;

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trigger_and_a_verified_heal_closes_the_incident() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { consecutive = 3 }
            })
            .step(fixer("app", "fix", "ok")),
    );
    let w = World::start(&conf, &[("app", "fail")]).await;
    w.runs("app", 1).await; // the first run was at start
    assert!(
        w.calls("actions.log").is_empty(),
        "two failures do not trigger"
    );
    assert!(w.incidents().is_empty());
    w.next_run("app").await; // third failure: detect → diagnose → act
    wait(Duration::from_secs(8)).await; // settle, verify
    assert_eq!(
        w.calls("actions.log"),
        vec!["app dry_run=false codes=scripted.fail"]
    );
    let inc = &w.incidents()[0];
    assert_eq!(inc.state, IncidentState::Healed, "{inc:#?}");
    assert_eq!(inc.root_cause, "app");
    assert_eq!(inc.diagnosis["decision"], "remediate");
    assert_eq!(inc.diagnosis["evidence"][0]["code"], "scripted.fail");
    assert_eq!(inc.attempts.len(), 1);
    assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Healed);
    assert_eq!(
        inc.attempts[0].detail["verification"][0]["code"],
        "scripted.ok"
    );
    assert!(inc.attempts[0].fuel_used.unwrap() > 0);
    assert_eq!(w.read("app"), "ok");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn n_of_m_trigger_counts_failures_that_are_not_consecutive() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { n = 2, of = 4 }
            })
            .step(fixer("app", "fix", "ok")),
    );
    let w = World::start(&conf, &[("app", "fail")]).await; // fail, at start
    w.set("app", "ok");
    w.next_run("app").await;
    assert!(w.calls("actions.log").is_empty(), "1 of 2 is not enough");
    w.set("app", "fail");
    w.next_run("app").await; // fail, ok, fail: 2 of the last 4
    wait(Duration::from_secs(8)).await;
    assert_eq!(w.calls("actions.log").len(), 1);
    assert_eq!(w.incidents()[0].state, IncidentState::Healed);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn one_passing_probe_does_not_make_a_failing_check_healthy() {
    let conf = Conf::new().check(scripted("app").with(toml! {
        failure_threshold = 3
        success_threshold = 3
    }));
    let w = World::start(&conf, &[("app", "ok")]).await;
    w.next_run("app").await;
    assert_eq!(w.health("app"), Health::Healthy);
    w.set("app", "fail");
    w.next_run("app").await;
    assert_eq!(w.health("app"), Health::Degraded);
    w.runs("app", 2).await;
    assert_eq!(w.health("app"), Health::Unavailable);
    w.set("app", "ok");
    w.runs("app", 2).await;
    assert_eq!(
        w.health("app"),
        Health::Unavailable,
        "2 of 3 good results are not enough"
    );
    w.next_run("app").await;
    assert_eq!(w.health("app"), Health::Healthy);
    let history = w.engine.store().history("app", 10).unwrap();
    let changes: Vec<(&str, &str)> = history
        .iter()
        .rev()
        .map(|r| (r.health.as_str(), r.status.as_str()))
        .collect();
    assert_eq!(
        changes,
        vec![
            ("healthy", "ok"),
            ("degraded", "fail"),
            ("unavailable", "fail"),
            ("unavailable", "ok"),
            ("healthy", "ok"),
        ],
        "changes are recorded"
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn cooldown_holds_off_the_next_incident() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { consecutive = 1 }
                cooldown = "2m"
                // Breaking again is a new problem here, not a relapse.
                relapse_window = "0s"
            })
            .step(fixer("app", "fix", "ok")),
    );
    let w = World::start(&conf, &[("app", "fail")]).await;
    w.next_run("app").await;
    wait(Duration::from_secs(8)).await;
    assert_eq!(w.incidents().len(), 1);
    let closed = w.incidents()[0].closed_at.unwrap();
    // It breaks again at once: no action inside the cooldown.
    w.set("app", "fail");
    w.runs("app", 5).await;
    assert_eq!(w.incidents().len(), 1, "cooling down");
    assert_eq!(w.calls("actions.log").len(), 1);
    // After the cooldown, the next failure opens a new incident.
    wait(Duration::from_secs(80)).await;
    w.next_run("app").await;
    wait(Duration::from_secs(8)).await;
    let incs = w.incidents();
    assert_eq!(incs.len(), 2);
    assert!(
        incs[1].opened_at >= closed + 120_000,
        "{} vs {}",
        incs[1].opened_at,
        closed
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_attempt_cap_per_window_stops_the_ladder_and_escalates() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { consecutive = 1 }
                max_attempts = 1
                window = "1h"
                backoff = { base = "1s", jitter = 0.0 }
            })
            .step(fixer("app", "first", "fail"))
            .step(fixer("app", "second", "ok"))
            .escalate(escalation()),
    );
    let w = World::start(&conf, &[("app", "fail")]).await;
    w.next_run("app").await;
    wait(Duration::from_secs(30)).await;
    let inc = &w.incidents()[0];
    let outcomes: Vec<(String, AttemptOutcome)> = inc
        .attempts
        .iter()
        .map(|a| (a.action.clone(), a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("first".to_string(), AttemptOutcome::NotHealed),
            ("second".to_string(), AttemptOutcome::Skipped),
            ("fixture-fixer".to_string(), AttemptOutcome::Escalation),
        ]
    );
    assert!(
        inc.attempts[1].detail["reason"]
            .as_str()
            .unwrap()
            .contains("attempt cap")
    );
    assert_eq!(inc.state, IncidentState::Escalated);
    assert_eq!(w.calls("actions.log").len(), 1, "only one attempt ran");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_spaces_out_ladder_steps() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { consecutive = 1 }
                backoff = { base = "30s", factor = 2.0, jitter = 0.0, max = "10m" }
            })
            .step(fixer("app", "a", "fail"))
            .step(fixer("app", "b", "fail"))
            .step(fixer("app", "c", "ok")),
    );
    let w = World::start(&conf, &[("app", "fail")]).await;
    w.next_run("app").await;
    wait(Duration::from_secs(200)).await;
    let inc = &w.incidents()[0];
    assert_eq!(inc.state, IncidentState::Healed);
    let starts: Vec<u64> = inc.attempts.iter().map(|a| a.started_at).collect();
    assert_eq!(starts.len(), 3);
    // settle (5s) + backoff: 30s after the first, 60s after the second.
    let gap1 = starts[1] - starts[0];
    let gap2 = starts[2] - starts[1];
    assert!((35_000..36_000).contains(&gap1), "{gap1}");
    assert!((65_000..66_000).contains(&gap2), "{gap2}");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_then_lets_one_probe_through() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { consecutive = 1 }
                cooldown = "1s"
                breaker = { failures = 1, open_for = "10m", max_open_for = "1h" }
            })
            .step(fixer("app", "fix", "fail")),
    );
    let w = World::start(&conf, &[("app", "fail")]).await;
    // Incident 1: the fix runs but does not heal → breaker opens → escalated.
    w.next_run("app").await;
    wait(Duration::from_secs(8)).await;
    let incs = w.incidents();
    assert_eq!(incs[0].attempts[0].outcome, AttemptOutcome::NotHealed);
    assert_eq!(incs[0].state, IncidentState::Escalated);
    let b = w.engine.store().breaker("app", "fix").unwrap().unwrap();
    assert_eq!(b.name(), "open");
    // It recovers by itself; the escalated incident closes.
    w.set("app", "ok");
    w.runs("app", 2).await;
    assert_eq!(w.incidents()[0].state, IncidentState::Recovered);
    // Incident 2 inside the open window: the step is skipped.
    w.set("app", "fail");
    w.next_run("app").await;
    wait(Duration::from_secs(1)).await;
    let inc2 = w.incidents()[1].clone();
    assert_eq!(
        inc2.attempts[0].outcome,
        AttemptOutcome::Skipped,
        "{inc2:#?}"
    );
    assert!(
        inc2.attempts[0].detail["reason"]
            .as_str()
            .unwrap()
            .contains("circuit breaker")
    );
    assert_eq!(w.calls("actions.log").len(), 1, "no call while open");
    w.set("app", "ok");
    w.runs("app", 2).await;
    // After open_for, one half-open probe runs; it heals, the breaker closes.
    wait(Duration::from_secs(600)).await;
    w.set("app", "fail");
    w.next_run("app").await;
    wait(Duration::from_millis(100)).await;
    // Make the probe heal: the next verification reads "ok".
    w.set("app", "ok");
    wait(Duration::from_secs(8)).await;
    let inc3 = w.incidents()[2].clone();
    assert_eq!(inc3.attempts[0].action, "fix");
    assert_eq!(w.calls("actions.log").len(), 2, "the probe ran: {inc3:#?}");
    assert_eq!(inc3.state, IncidentState::Healed, "{inc3:#?}");
    assert_eq!(
        w.engine
            .store()
            .breaker("app", "fix")
            .unwrap()
            .unwrap()
            .name(),
        "closed"
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_flapping_check_is_escalated_not_remediated() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { n = 6, of = 12 }
            })
            .step(fixer("app", "fix", "ok"))
            .escalate(escalation()),
    );
    let w = World::start(&conf, &[("app", "ok")]).await;
    for i in 0..14 {
        w.set("app", if i % 2 == 0 { "fail" } else { "ok" });
        w.next_run("app").await;
    }
    wait(Duration::from_secs(8)).await;
    assert!(
        w.calls("actions.log").is_empty(),
        "no automatic action on a flapping check"
    );
    let incs = w.incidents();
    assert_eq!(incs.len(), 1, "{incs:#?}");
    assert_eq!(incs[0].state, IncidentState::Escalated);
    assert_eq!(incs[0].diagnosis["decision"], "escalate");
    assert!(
        incs[0].diagnosis["reason"]
            .as_str()
            .unwrap()
            .contains("flapping")
    );
    assert_eq!(w.calls("escalations.log").len(), 1);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_root_cause_is_remediated_and_dependents_hold() {
    let conf = Conf::new()
        .check(scripted("db"))
        .check(scripted("app").with(toml! {
            depends_on = ["db"]
        }))
        .policy(
            Policy::new("fix-db", "db")
                .with(toml! {
                    trigger = { consecutive = 2 }
                })
                .step(fixer("db", "restart-db", "ok")),
        )
        .policy(
            Policy::new("fix-app", "app")
                .with(toml! {
                    trigger = { consecutive = 2 }
                })
                .step(fixer("app", "restart-app", "ok")),
        );
    let w = World::start(&conf, &[("db", "fail"), ("app", "fail")]).await;
    wait(Duration::from_secs(60)).await;
    let incs = w.incidents();
    let db = incs
        .iter()
        .find(|i| i.policy == "fix-db")
        .expect("db remediated");
    assert_eq!(db.state, IncidentState::Healed);
    // app was held while db failed (its incident says so); it acts only
    // after db healed.
    if let Some(app) = incs.iter().find(|i| i.policy == "fix-app")
        && let Some(first) = app.attempts.first()
    {
        assert!(
            first.started_at >= db.closed_at.unwrap(),
            "app acted while db was failing: {incs:#?}"
        );
    }
    let lines = w.calls("actions.log");
    assert!(lines[0].starts_with("db "), "{lines:?}");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn adaptive_ladders_try_what_healed_before_first() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { consecutive = 1 }
                cooldown = "1s"
                relapse_window = "0s"
                adaptive = true
                backoff = { base = "1s", jitter = 0.0 }
            })
            .step(fixer("app", "gentle", "fail"))
            .step(fixer("app", "firm", "ok")),
    );
    let w = World::start(&conf, &[("app", "fail")]).await;
    w.next_run("app").await;
    wait(Duration::from_secs(30)).await;
    let first = &w.incidents()[0];
    let order: Vec<&str> = first.attempts.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(order, vec!["gentle", "firm"]);
    w.set("app", "fail");
    w.next_run("app").await;
    wait(Duration::from_secs(30)).await;
    let second = &w.incidents()[1];
    assert_eq!(second.attempts[0].action, "firm", "{second:#?}");
    assert_eq!(
        second.diagnosis["plan"],
        serde_json::json!(["firm", "gentle"])
    );
    assert_eq!(second.state, IncidentState::Healed);
    let stats = w.engine.store().action_stats().unwrap();
    let firm = stats.iter().find(|s| s.action == "firm").unwrap();
    assert_eq!((firm.attempts, firm.healed), (2, 2));
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn dry_run_records_the_plan_and_changes_nothing() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { consecutive = 1 }
                dry_run = true
                cooldown = "1h"
                max_attempts = 1
            })
            .step(fixer("app", "fix", "ok"))
            .step(fixer("app", "harder", "really")),
    );
    let w = World::start(&conf, &[("app", "fail")]).await; // planned at start
    wait(Duration::from_secs(8)).await;
    assert_eq!(w.read("app"), "fail", "nothing changed");
    assert!(
        w.calls("actions.log").is_empty(),
        "a dry run writes nothing"
    );
    let inc = &w.incidents()[0];
    assert!(inc.dry_run);
    assert_eq!(inc.state, IncidentState::Planned);
    // The whole ladder is planned, each step in order with its own plan,
    // though one attempt is all the policy allows: a plan spends none.
    let plans: Vec<(AttemptOutcome, &str)> = inc
        .attempts
        .iter()
        .map(|a| (a.outcome, a.detail["outcome"]["steps"][0].as_str().unwrap()))
        .collect();
    assert_eq!(
        plans,
        vec![
            (AttemptOutcome::Planned, "would write \"ok\" to /ctl/app"),
            (
                AttemptOutcome::Planned,
                "would write \"really\" to /ctl/app"
            ),
        ]
    );
    // A plan starts no cooldown: the next bad result plans again.
    w.next_run("app").await;
    wait(Duration::from_secs(1)).await;
    assert_eq!(w.incidents().len(), 2, "{:#?}", w.incidents());
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_ladder_escalates_exactly_once_and_stops() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { consecutive = 2 }
                backoff = { base = "5s", jitter = 0.0 }
            })
            .step(fixer("app", "soft", "fail"))
            .step(fixer("app", "hard", "fail").with(toml! { config = { fail = true } }))
            .escalate(escalation()),
    );
    let w = World::start(&conf, &[("app", "fail")]).await;
    // Plenty of time for a restart loop to show itself.
    wait(Duration::from_secs(3600)).await;
    assert_eq!(w.calls("actions.log").len(), 2, "each step ran once");
    assert_eq!(
        w.calls("escalations.log").len(),
        1,
        "escalated exactly once"
    );
    let incs = w.incidents();
    assert_eq!(incs.len(), 1);
    let inc = &incs[0];
    assert_eq!(inc.state, IncidentState::Escalated);
    let outcomes: Vec<AttemptOutcome> = inc.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            AttemptOutcome::NotHealed,
            AttemptOutcome::Failed,
            AttemptOutcome::Escalation
        ]
    );
    assert!(
        inc.attempts[1].detail["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fixer told to fail")
    );
    assert!(inc.note.contains("ladder exhausted"));
    // It recovers: the escalated incident closes, and nothing more ran.
    w.set("app", "ok");
    w.runs("app", 2).await;
    assert_eq!(w.incidents()[0].state, IncidentState::Recovered);
    assert_eq!(w.calls("escalations.log").len(), 1);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_plugin_error_is_a_finding_not_a_crash() {
    let conf = Conf::new().check(scripted("app"));
    let w = World::start(&conf, &[("app", "error")]).await;
    w.next_run("app").await;
    let snap = w.engine.snapshot();
    let last = snap[0].last.as_ref().unwrap();
    assert_eq!(last.findings[0].code, "plugin.error");
    assert!(last.findings[0].summary.contains("scripted to fail"));
    assert_eq!(snap[0].health, Health::Unknown);
    w.set("app", "ok");
    w.next_run("app").await;
    assert_eq!(w.health("app"), Health::Healthy);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_misspelt_plugin_is_refused_with_its_position_and_a_suggestion() {
    let conf = Conf::new().check(scripted("app").set("plugin", "fixture-scriptd"));
    let Err(problems) = World::try_start(&conf, &[]).await else {
        panic!("a check naming no plugin must not start");
    };
    assert_eq!(problems.errors.len(), 1, "{problems}");
    let e = &problems.errors[0];
    assert_eq!(e.key, "check[0].plugin");
    assert!(e.position.is_some(), "{e}");
    assert!(
        e.message.contains("no plugin named `fixture-scriptd`")
            && e.message.contains("did you mean `fixture-scripted`?"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_records_a_check_stuck_past_twice_its_interval() {
    let conf = Conf::new().check(scripted("app").with(toml! {
        limits = { deadline = "10m" }
    }));
    let w = World::start(&conf, &[("app", "ok")]).await;
    w.next_run("app").await;
    w.set("app", "sleep 120 ok"); // the plugin blocks for 2 minutes
    wait(Duration::from_secs(60)).await;
    let events = w.engine.store().watchdog_events(10).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].check, "app");
    assert!(events[0].late_ms >= 10_000);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn maintenance_windows_and_pause_hold_actions() {
    // START is Sunday 00:00 UTC: inside the window until 01:00.
    let conf = Conf::new()
        .check(scripted("app"))
        .policy(
            Policy::new("fix-app", "app")
                .with(toml! {
                    trigger = { consecutive = 1 }
                    maintenance = [{ days = ["sun"], start = "00:00", end = "01:00" }]
                })
                .step(fixer("app", "fix", "ok")),
        )
        .check(scripted("other"))
        .policy(
            Policy::new("fix-other", "other")
                .with(toml! {
                    trigger = { consecutive = 1 }
                    paused = true
                })
                .step(fixer("other", "fix-other", "ok")),
        );
    let w = World::start(&conf, &[("app", "fail"), ("other", "fail")]).await;
    wait(Duration::from_secs(50 * 60)).await;
    assert!(
        w.calls("actions.log").is_empty(),
        "no action inside the window"
    );
    assert!(w.incidents().is_empty());
    wait(Duration::from_secs(11 * 60)).await;
    let lines = w.calls("actions.log");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("app "),
        "the paused policy never acts: {lines:?}"
    );
    assert_eq!(w.incidents()[0].policy, "fix-app");
    assert!(w.incidents()[0].opened_at >= START + 3_600_000);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_window_that_opens_mid_ladder_pauses_it_until_it_closes() {
    // The incident opens at once; the window 00:01–02:00 UTC starts during
    // the backoff before step two, which must wait until 02:00.
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { consecutive = 1 }
                backoff = { base = "2m", jitter = 0.0 }
                maintenance = [{ start = "00:01", end = "02:00" }]
            })
            .step(fixer("app", "first", "fail"))
            .step(fixer("app", "second", "ok")),
    );
    let w = World::start(&conf, &[("app", "fail")]).await;
    wait(Duration::from_secs(3 * 3600)).await;
    let inc = &w.incidents()[0];
    assert_eq!(inc.state, IncidentState::Healed, "{inc:#?}");
    let steps: Vec<(&str, u64)> = inc
        .attempts
        .iter()
        .map(|a| (a.action.as_str(), a.started_at))
        .collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(steps[0].1 < START + 60_000, "{steps:?}");
    assert!(
        steps[1].1 >= START + 2 * 3_600_000,
        "step two waited for the window to close: {steps:?}"
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_fix_that_makes_things_worse_is_not_a_heal() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { consecutive = 1 }
                status = ["warn"]
            })
            .step(fixer("app", "fix", "fail")),
    );
    let w = World::start(&conf, &[("app", "warn")]).await;
    w.next_run("app").await;
    wait(Duration::from_secs(8)).await;
    let inc = &w.incidents()[0];
    assert_eq!(
        inc.attempts[0].outcome,
        AttemptOutcome::NotHealed,
        "warn → fail is worse, not healed"
    );
    assert_eq!(inc.state, IncidentState::Escalated);
    w.stop().await;
}

/// What mend learns is keyed by (check, code, step): a step named the same
/// on two disks learns on each; checks sharing a `stats_key` share it.
#[tokio::test(start_paused = true)]
async fn stats_are_kept_per_check_or_shared_by_stats_key() {
    let adaptive = |check: &str| {
        Policy::new(&format!("fix-{check}"), check)
            .with(toml! {
                trigger = { consecutive = 1 }
                cooldown = "1s"
                adaptive = true
                backoff = { base = "1s", jitter = 0.0 }
            })
            .step(fixer(check, "delete-old-logs", "fail"))
            .step(fixer(check, "grow-volume", "ok"))
    };
    let conf = Conf::new()
        .check(scripted("root"))
        .check(scripted("data").with(toml! { stats_key = "disk" }))
        .check(scripted("logs").with(toml! { stats_key = "disk" }))
        .policy(adaptive("root"))
        .policy(adaptive("data"))
        .policy(adaptive("logs"));
    let w = World::start(
        &conf,
        &[("root", "ok"), ("data", "fail disk.full"), ("logs", "ok")],
    )
    .await;
    w.next_run("data").await;
    wait(Duration::from_secs(30)).await;
    // data learnt (under `disk`) that growing heals disk.full...
    w.set("logs", "fail disk.full");
    w.set("root", "fail disk.full");
    wait(Duration::from_secs(30)).await;
    let incs = w.incidents();
    let first_step = |check: &str| {
        incs.iter()
            .find(|i| i.check == check)
            .map(|i| i.attempts[0].action.clone())
            .unwrap_or_else(|| panic!("no incident for {check}: {incs:#?}"))
    };
    // ...so logs (same key) tries it first; root (its own key) does not.
    assert_eq!(first_step("data"), "delete-old-logs");
    assert_eq!(first_step("logs"), "grow-volume");
    assert_eq!(first_step("root"), "delete-old-logs");
    let stats = w.engine.store().action_stats().unwrap();
    let row = |key: &str, step: &str| {
        stats
            .iter()
            .find(|s| s.key == key && s.action == step && s.code == "disk.full")
            .map(|s| (s.attempts, s.healed))
    };
    assert_eq!(row("disk", "grow-volume"), Some((2, 2)));
    assert_eq!(row("disk", "delete-old-logs"), Some((1, 0)));
    assert_eq!(row("root", "delete-old-logs"), Some((1, 0)));
    assert_eq!(row("root", "grow-volume"), Some((1, 1)));
    // `/api/v1/stats` shows them so.
    let view = serde_json::to_value(
        stats
            .into_iter()
            .map(mend::api::views::StatsView::from)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(
        view.as_array()
            .unwrap()
            .iter()
            .any(|s| s["key"] == "root" && s["action"] == "grow-volume"),
        "{view}"
    );
    w.stop().await;
}
