//! The store decodes what it wrote: incidents (with a diagnosis holding
//! accepted findings as evidence), attempts and the processes recorded in
//! them, timeline events, check history and breakers, written through the
//! store's own functions and read back through its own queries. Property:
//! every field comes back as written.
#![no_main]

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use mend::contract::{self as c, Severity, StepRef};
use mend::policy::breaker::{Breaker, BreakerState};
use mend::store::{AttemptOutcome, CheckResult, EventKind, NewIncident, Store};
use mend_fuzz::{Finding, assert_same_findings};
use serde_json::{Value, json};

/// JSON as mend writes it: nested at most 32 deep (serde_json reads up
/// to 128), floats exactly representable in short decimal.
#[derive(Debug, Clone)]
struct Json(Value);

fn json_value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let kind = if depth >= 32 {
        u.int_in_range(0..=5)?
    } else {
        u.int_in_range(0..=7)?
    };
    Ok(match kind {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(u.arbitrary::<i64>()?),
        3 => json!(u.arbitrary::<u64>()?),
        4 => json!(u.arbitrary::<i32>()? as f64 / 1024.0),
        5 => Value::String(u.arbitrary()?),
        6 => {
            let n = u.arbitrary_len::<u8>()?.min(8);
            Value::Array(
                (0..n)
                    .map(|_| json_value(u, depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => {
            let n = u.arbitrary_len::<u8>()?.min(8);
            let mut m = serde_json::Map::new();
            for _ in 0..n {
                m.insert(u.arbitrary()?, json_value(u, depth + 1)?);
            }
            Value::Object(m)
        }
    })
}

impl<'a> Arbitrary<'a> for Json {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Json(json_value(u, 0)?))
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    policy: String,
    check: String,
    opened_at: u64,
    root_cause: String,
    evidence: Vec<Finding>,
    why: Json,
    dry_run: bool,
    severity: u8,
    step: Option<u32>,
    action: String,
    outcome: u8,
    /// An attempt's detail is an object (processes are added to it).
    detail: Vec<(String, Json)>,
    duration_ms: u64,
    fuel_used: Option<u64>,
    finished_at: u64,
    processes: Vec<Json>,
    event_at: u64,
    event_kind: u8,
    by: String,
    reason: String,
    event_detail: Json,
    health: String,
    status: String,
    result_findings: Json,
    breaker: (u8, u32, u64),
}

fn store() -> &'static Store {
    static STORE: OnceLock<(tempfile::TempDir, Store)> = OnceLock::new();
    &STORE
        .get_or_init(|| {
            let base = PathBuf::from("/dev/shm");
            let dir = match base.is_dir() {
                true => tempfile::tempdir_in(base),
                false => tempfile::tempdir(),
            }
            .unwrap();
            let (store, _) = Store::open(&dir.path().join("mend.db"), 0).unwrap();
            (dir, store)
        })
        .1
}

thread_local! {
    static RUN: Cell<u64> = const { Cell::new(0) };
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    let store = store();
    let run = RUN.with(|r| {
        r.set(r.get() + 1);
        r.get()
    });
    // Evidence is what the bounds accepted (as the engine keeps it).
    let mut evidence: Vec<c::Finding> = input
        .evidence
        .into_iter()
        .map(|f| mend::wit::since_v0_2::mend::plugin::types::Finding::from(f).into())
        .collect();
    if mend::fuzzing::bound_findings(&mut evidence).is_err() {
        evidence.clear();
    }
    let diagnosis = json!({ "evidence": evidence, "why": input.why.0 });
    let severity =
        [Severity::Critical, Severity::Warning, Severity::Info][input.severity as usize % 3];
    let id = store
        .open_incident(&NewIncident {
            policy: &input.policy,
            check: &input.check,
            opened_at: input.opened_at,
            root_cause: &input.root_cause,
            diagnosis: &diagnosis,
            dry_run: input.dry_run,
            severity,
        })
        .unwrap();

    let step = match input.step {
        Some(i) => StepRef::Ladder(i),
        None => StepRef::Escalation,
    };
    let attempt = store
        .start_attempt(id, step, &input.action, input.dry_run, input.opened_at)
        .unwrap();
    let outcomes = [
        AttemptOutcome::Running,
        AttemptOutcome::Healed,
        AttemptOutcome::Relapsed,
        AttemptOutcome::NotHealed,
        AttemptOutcome::Failed,
        AttemptOutcome::Interrupted,
        AttemptOutcome::Planned,
        AttemptOutcome::Skipped,
        AttemptOutcome::Escalation,
    ];
    let outcome = outcomes[input.outcome as usize % outcomes.len()];
    let mut detail: serde_json::Map<String, Value> =
        input.detail.into_iter().map(|(k, v)| (k, v.0)).collect();
    detail.remove("processes");
    let detail = Value::Object(detail);
    store
        .finish_attempt(
            attempt,
            outcome,
            &detail,
            input.duration_ms,
            input.fuel_used,
            input.finished_at,
        )
        .unwrap();
    for p in &input.processes {
        store.record_process(attempt, &p.0).unwrap();
    }

    let kind = EventKind::ALL[input.event_kind as usize % EventKind::ALL.len()];
    store
        .add_event(
            id,
            input.event_at,
            kind,
            &input.by,
            &input.reason,
            &input.event_detail.0,
        )
        .unwrap();

    let inc = store
        .incident(id)
        .unwrap()
        .expect("the incident just written");
    assert_eq!(inc.id, id);
    assert_eq!(inc.policy, input.policy);
    assert_eq!(inc.check, input.check);
    assert_eq!(inc.opened_at, input.opened_at);
    assert_eq!(inc.closed_at, None);
    assert_eq!(inc.root_cause, input.root_cause);
    assert_eq!(inc.dry_run, input.dry_run);
    assert_eq!(inc.severity, severity);
    assert_eq!(inc.diagnosis["why"], diagnosis["why"]);
    let back: Vec<c::Finding> = serde_json::from_value(inc.diagnosis["evidence"].clone())
        .unwrap_or_else(|e| panic!("the evidence does not read back: {e}"));
    assert_same_findings(&back, &evidence);

    assert_eq!(inc.attempts.len(), 1);
    let a = &inc.attempts[0];
    assert_eq!((a.id, a.incident_id, a.step), (attempt, id, step));
    assert_eq!(a.action, input.action);
    assert_eq!(a.started_at, input.opened_at);
    assert_eq!(a.finished_at, Some(input.finished_at));
    assert_eq!(a.outcome, outcome);
    assert_eq!(a.dry_run, input.dry_run);
    assert_eq!(a.duration_ms, Some(input.duration_ms));
    assert_eq!(a.fuel_used, input.fuel_used);
    let mut want = detail.clone();
    if !input.processes.is_empty() {
        want["processes"] = Value::Array(input.processes.iter().map(|p| p.0.clone()).collect());
    }
    assert_eq!(a.detail, want, "the attempt's detail");

    assert_eq!(inc.events.len(), 1);
    let e = &inc.events[0];
    assert_eq!((e.incident_id, e.at, e.kind), (id, input.event_at, kind));
    assert_eq!(e.by, input.by);
    assert_eq!(e.reason, input.reason);
    assert_eq!(e.detail, input.event_detail.0);

    // Check history and breakers are keyed by name: one of this run's own.
    let check = format!("{run}:{}", input.check);
    let result = CheckResult {
        check: check.clone(),
        at: input.event_at,
        health: input.health,
        status: input.status,
        findings: input.result_findings.0,
    };
    store.record_result(&result).unwrap();
    assert_eq!(store.history(&check, 10).unwrap(), vec![result]);

    let (k, n, t) = input.breaker;
    let b = Breaker {
        state: match k % 3 {
            0 => BreakerState::Closed { failures: n },
            1 => BreakerState::Open { until: t, trips: n },
            _ => BreakerState::HalfOpen { trips: n, since: t },
        },
    };
    store.save_breaker(&check, &input.action, &b).unwrap();
    assert_eq!(store.breaker(&check, &input.action).unwrap(), Some(b));
});
