//! The incident lifecycle an on-call person expects (issue 11): open →
//! remediating → (healed | escalated → acknowledged → resolved | healed).
//! Escalation is not a dead end: when the evidence changes mend walks the
//! ladder again; an operator's heal passes the cap with `--force` and
//! never makes mend exit; `escalate_after` pages an incident open too
//! long; a dependency hold is recorded on the dependent's incident.
//! Engine tests run under tokio's paused clock (`tests/common/world.rs`);
//! the CLI test drives the real binary.

mod common;

use std::time::Duration;

use common::config::{Conf, Policy, TableExt, escalation, fixer, scripted};
use common::world::{World, wait};
use mend::engine::HealRequest;
use mend::store::{AttemptOutcome, EventKind, IncidentState};
use toml::toml;

fn kinds(inc: &mend::store::Incident) -> Vec<EventKind> {
    inc.events.iter().map(|e| e.kind).collect()
}

/// The leaked-sessions story: the only step changes nothing while its
/// guard does not pass (sessions too young), so the ladder runs out and a
/// human is called; once the guard passes, mend sees it, walks the ladder
/// again on the same incident, and heals it. One page in all.
#[tokio::test(start_paused = true)]
async fn an_escalated_incident_heals_once_its_steps_guard_passes() {
    let conf = Conf::new().check(scripted("db")).policy(
        Policy::new("fix-db", "db")
            .with(toml! { trigger = { consecutive = 2 } })
            .step(
                fixer("db", "terminate-old", "ok")
                    .with(toml! { config = { guard = "/ctl/old-enough" } }),
            )
            .escalate(escalation()),
    );
    let w = World::start(&conf, &[("db", "fail pg.leaked")]).await;
    wait(Duration::from_secs(120)).await;
    let incs = w.incidents();
    assert_eq!(incs.len(), 1, "{incs:#?}");
    assert_eq!(incs[0].state, IncidentState::Escalated, "{:#?}", incs[0]);
    assert_eq!(w.calls("actions.log").len(), 1, "nothing changed: no retry");
    assert_eq!(w.calls("escalations.log").len(), 1);

    // The sessions are old enough now.
    w.set("old-enough", "");
    wait(Duration::from_secs(60)).await;
    let incs = w.incidents();
    assert_eq!(incs.len(), 1, "the same incident: {incs:#?}");
    let inc = &incs[0];
    assert_eq!(inc.state, IncidentState::Healed, "{inc:#?}");
    assert_eq!(w.calls("actions.log").len(), 2);
    assert_eq!(w.calls("escalations.log").len(), 1, "paged once");
    assert_eq!(kinds(inc), vec![EventKind::Escalated, EventKind::Retry]);
    let why = &inc.events[1].reason;
    assert!(
        why.contains("terminate-old") && why.contains("now would act"),
        "{why}"
    );
    assert_eq!(
        inc.attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        vec![
            AttemptOutcome::NotHealed,
            AttemptOutcome::Escalation,
            AttemptOutcome::Healed
        ]
    );
    w.stop().await;
}

/// A finding code the incident has not seen is new evidence: the ladder
/// runs again (within the cap); when it fails again, the incident goes
/// back to escalated without a second page.
#[tokio::test(start_paused = true)]
async fn a_new_finding_code_after_escalation_runs_the_ladder_again_without_a_second_page() {
    let conf = Conf::new().check(scripted("disk")).policy(
        Policy::new("fix-disk", "disk")
            .with(toml! { trigger = { consecutive = 2 } })
            .step(fixer("disk", "clean", "fail").with(toml! { config = { fail = true } }))
            .escalate(escalation()),
    );
    let w = World::start(&conf, &[("disk", "fail disk.full")]).await;
    wait(Duration::from_secs(120)).await;
    assert_eq!(w.calls("actions.log").len(), 1);
    assert_eq!(w.incidents()[0].state, IncidentState::Escalated);
    // The same code again and again: nothing new, nothing runs.
    wait(Duration::from_secs(120)).await;
    assert_eq!(w.calls("actions.log").len(), 1);

    w.set("disk", "fail disk.inodes");
    wait(Duration::from_secs(60)).await;
    let inc = &w.incidents()[0];
    assert_eq!(w.incidents().len(), 1);
    assert_eq!(w.calls("actions.log").len(), 2, "{inc:#?}");
    assert_eq!(w.calls("escalations.log").len(), 1, "no second page");
    assert_eq!(inc.state, IncidentState::Escalated);
    assert_eq!(kinds(inc), vec![EventKind::Escalated, EventKind::Retry]);
    assert!(inc.events[1].reason.contains("disk.inodes"), "{inc:#?}");
    // disk.inodes is known now: no third walk.
    wait(Duration::from_secs(120)).await;
    assert_eq!(w.calls("actions.log").len(), 2);
    w.stop().await;
}

/// An operator's heal: on an escalated incident past the attempt cap a
/// plain heal says how to `--force`; a forced one walks the ladder again
/// on the same incident. Neither ever triggers `exit_on_exhausted`.
#[tokio::test(start_paused = true)]
async fn an_operators_heal_passes_the_cap_with_force_and_never_exits() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { consecutive = 1000 }
                max_attempts = 1
                exit_on_exhausted = true
            })
            .step(fixer("app", "fix", "ok").with(toml! { config = { guard = "/ctl/fixable" } }))
            .escalate(escalation()),
    );
    let w = World::start(&conf, &[("app", "fail")]).await;
    let heal = |force: bool| {
        w.engine
            .request_heal_as(
                "app",
                HealRequest {
                    force,
                    by: Some("ann".into()),
                    source: "test".into(),
                    ..HealRequest::default()
                },
            )
            .unwrap()
    };
    let first = heal(false).await.unwrap();
    assert!(first.started(), "{first:?}");
    wait(Duration::from_secs(30)).await;
    let inc = &w.incidents()[0];
    assert_eq!(inc.state, IncidentState::Escalated, "{inc:#?}");
    assert_eq!(w.calls("escalations.log").len(), 1);
    assert_eq!(w.engine.exit_code(), None, "an operator's heal never exits");

    // The cap (1 per hour) is spent: a plain heal says what to do.
    let second = heal(false).await.unwrap();
    assert!(!second.started());
    let why = &second.policies[0].reason;
    assert!(
        why.contains("attempt cap") && why.contains("--force"),
        "{why}"
    );
    assert_eq!(second.policies[0].incident, Some(inc.id));

    // Forced, once the fix can work: the same incident heals.
    w.set("fixable", "");
    let third = heal(true).await.unwrap();
    assert!(third.started(), "{third:?}");
    assert_eq!(third.policies[0].incident, Some(inc.id));
    wait(Duration::from_secs(30)).await;
    let incs = w.incidents();
    assert_eq!(incs.len(), 1);
    let inc = &incs[0];
    assert_eq!(inc.state, IncidentState::Healed, "{inc:#?}");
    assert_eq!(
        kinds(inc),
        vec![
            EventKind::OperatorHeal,
            EventKind::Escalated,
            EventKind::OperatorHeal
        ]
    );
    assert_eq!(inc.events[2].by, "ann");
    assert_eq!(inc.events[2].detail["force"], true);
    assert_eq!(w.engine.exit_code(), None);
    w.stop().await;
}

/// Acknowledge and resolve, with who and why; resolving starts the
/// cooldown like any close.
#[tokio::test(start_paused = true)]
async fn acknowledge_then_resolve_records_who_and_why() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { consecutive = 2 }
                cooldown = "10m"
            })
            .step(fixer("app", "fix", "fail").with(toml! { config = { fail = true } })),
    );
    let w = World::start(&conf, &[("app", "fail")]).await;
    wait(Duration::from_secs(60)).await;
    let id = w.incidents()[0].id;
    assert_eq!(w.incidents()[0].state, IncidentState::Escalated);
    let inc = w.engine.acknowledge(id, "ann", "looking at it").unwrap();
    assert_eq!(inc.state, IncidentState::Acknowledged);
    assert_eq!(inc.acked_by.as_deref(), Some("ann"));
    // Still bad, still acknowledged: mend does not reopen or page.
    wait(Duration::from_secs(60)).await;
    assert_eq!(w.incidents()[0].state, IncidentState::Acknowledged);

    let inc = w.engine.resolve(id, "ann", "restarted the box").unwrap();
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!(inc.note, "resolved by ann: restarted the box");
    assert!(w.engine.resolve(id, "bob", "").is_err(), "closed already");
    // The cooldown holds the next incident off although the check fails.
    wait(Duration::from_secs(300)).await;
    assert_eq!(w.incidents().len(), 1, "{:#?}", w.incidents());
    wait(Duration::from_secs(400)).await;
    assert_eq!(w.incidents().len(), 2);
    w.stop().await;
}

/// `escalate_after`: an incident still open that long pages once, and
/// the ladder goes on.
#[tokio::test(start_paused = true)]
async fn escalate_after_pages_an_incident_open_too_long_and_the_ladder_goes_on() {
    let conf = Conf::new().check(scripted("app")).policy(
        Policy::new("fix-app", "app")
            .with(toml! {
                trigger = { consecutive = 2 }
                escalate_after = "90s"
                backoff = { base = "60s", factor = 2.0, max = "10m", jitter = 0.0 }
            })
            .step(fixer("app", "one", "fail"))
            .step(fixer("app", "two", "fail"))
            .step(fixer("app", "three", "ok"))
            .escalate(escalation()),
    );
    let w = World::start(&conf, &[("app", "fail")]).await;
    // Opened within the first interval (the first run is at start, the
    // second bad one opens it); step one at once, step two after 60 s,
    // then a 120 s backoff during which 90 s pass.
    wait(Duration::from_secs(80)).await;
    assert_eq!(w.calls("escalations.log").len(), 0, "not yet");
    wait(Duration::from_secs(80)).await;
    assert_eq!(w.calls("escalations.log").len(), 1, "paged after 90 s");
    assert_eq!(w.calls("actions.log").len(), 2, "during the backoff");
    let inc = &w.incidents()[0];
    assert!(inc.closed_at.is_none());
    assert!(inc.events[0].reason.contains("escalate_after"), "{inc:#?}");
    // The third step heals it.
    wait(Duration::from_secs(140)).await;
    let inc = &w.incidents()[0];
    assert_eq!(inc.state, IncidentState::Healed, "{inc:#?}");
    assert_eq!(w.calls("escalations.log").len(), 1);
    w.stop().await;
}

/// The check's severity routes its escalation (`[escalate.SEVERITY]`),
/// is on the incident, in the escalation's context and on the metrics.
#[tokio::test(start_paused = true)]
async fn severity_picks_the_escalation_route_and_labels_the_metrics() {
    let route = |name: &str| {
        toml::Table::new()
            .set("name", name)
            .set("action", "fixture-fixer")
            .with(toml! { grants = { dirs = [{ host = "{ctl}", guest = "/ctl", mode = "rw" }] } })
            .set(
                "config",
                toml::Table::new()
                    .set("file", format!("/ctl/{name}.done"))
                    .set("log", format!("/ctl/{name}.log"))
                    .set("context_log", format!("/ctl/{name}.context")),
            )
    };
    let failing = |check: &str| {
        Policy::new(&format!("fix-{check}"), check)
            .with(toml! { trigger = { consecutive = 2 } })
            .step(fixer(check, "fix", "fail").with(toml! { config = { fail = true } }))
    };
    let conf = Conf::new()
        .check(scripted("db").set("severity", "critical"))
        .check(scripted("cache"))
        .table("escalate.critical", route("page"))
        .table("escalate.warning", route("chat"))
        .policy(failing("db"))
        .policy(failing("cache"));
    let w = World::start(&conf, &[("db", "fail"), ("cache", "fail")]).await;
    wait(Duration::from_secs(60)).await;
    assert_eq!(w.calls("page.log").len(), 1, "critical → page");
    assert_eq!(w.calls("chat.log").len(), 1, "warning → chat");
    let context = w.read("page.context");
    assert!(context.contains("severity=Critical"), "{context}");
    assert!(context.contains("policy=fix-db"), "{context}");
    let incs = w.incidents();
    let db = incs.iter().find(|i| i.check == "db").unwrap();
    assert_eq!(db.severity, mend::contract::Severity::Critical);
    assert_eq!(db.events[0].detail["route"], "escalate.critical");
    let metrics = w.engine.metrics().encode();
    for want in [
        "mend_escalations_total{policy=\"fix-db\",severity=\"critical\"} 1",
        "mend_escalations_total{policy=\"fix-cache\",severity=\"warning\"} 1",
        "mend_incidents_opened_total{policy=\"fix-db\",severity=\"critical\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} in\n{metrics}");
    }
    w.stop().await;
}

/// A dependency hold is recorded: the dependent's incident is `held`
/// (with its root cause) while the root is remediated, then released and
/// remediated on its own.
#[tokio::test(start_paused = true)]
async fn a_dependency_hold_is_recorded_on_the_dependents_incident() {
    let conf = Conf::new()
        .check(scripted("db"))
        .check(scripted("app").with(toml! { depends_on = ["db"] }))
        .policy(
            Policy::new("fix-db", "db")
                .with(toml! { trigger = { consecutive = 2 } })
                .step(fixer("db", "restart-db", "ok").set("settle", "30s")),
        )
        .policy(
            Policy::new("fix-app", "app")
                .with(toml! { trigger = { consecutive = 2 } })
                .step(fixer("app", "restart-app", "ok")),
        );
    let w = World::start(&conf, &[("db", "fail"), ("app", "fail")]).await;
    let held = async {
        for _ in 0..600 {
            wait(Duration::from_secs(1)).await;
            if let Some(i) = w.incidents().into_iter().find(|i| i.policy == "fix-app")
                && i.state == IncidentState::Held
            {
                return i;
            }
        }
        panic!("no held incident: {:#?}", w.incidents());
    };
    let app = held.await;
    assert_eq!(app.events[0].kind, EventKind::Held);
    assert_eq!(app.events[0].detail["root_cause"], "db");
    assert!(app.attempts.is_empty(), "held: nothing ran");
    // The API shows it so.
    let view = serde_json::to_value(mend::api::views::IncidentView::from(app.clone())).unwrap();
    assert_eq!(view["state"], "held");
    assert_eq!(view["events"][0]["kind"], "held");
    let snap = w.engine.snapshot();
    let app_snap = snap.iter().find(|c| c.name == "app").unwrap();
    assert_eq!(app_snap.held_by, vec!["db".to_string()]);

    wait(Duration::from_secs(120)).await;
    let incs = w.incidents();
    let db = incs.iter().find(|i| i.policy == "fix-db").unwrap();
    let app = incs.iter().find(|i| i.id == app.id).unwrap();
    assert_eq!(db.state, IncidentState::Healed);
    assert_eq!(app.state, IncidentState::Healed, "{app:#?}");
    assert_eq!(kinds(app), vec![EventKind::Held, EventKind::Released]);
    assert!(app.attempts[0].started_at >= db.closed_at.unwrap());
    w.stop().await;
}
