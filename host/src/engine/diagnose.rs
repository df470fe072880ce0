//! Stage 2, diagnose: given a policy's evidence, decide what to do and say
//! why. A pure function of a snapshot ([`DiagnoseInput`]) to a
//! [`Diagnosis`], which is stored with the incident.
//!
//! The order of the guards is the safety argument: nothing acts while mend
//! is paused, inside a maintenance window or a cooldown; a flapping check
//! is escalated to a human instead of being "fixed" over and over; and
//! when a dependency is failing too, the dependency is the root cause, so
//! this check holds while the root is remediated.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use super::control::Pause;
use crate::contract::Finding;
use crate::policy::baseline::Verdict;
use crate::policy::budget::cooldown_remaining;
use crate::policy::maintenance::MaintenanceWindow;
use crate::policy::root_cause::root_causes;
use crate::policy::trigger::Trigger;
use crate::values::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Run the ladder.
    Remediate,
    /// A dependency is the root cause: do nothing here.
    Hold,
    /// Call a human; take no automatic action.
    Escalate,
    /// Not now (pause, maintenance, cooldown).
    Suppress,
}

/// Why mend does what it does about one triggered policy.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub check: String,
    pub policy: String,
    /// The check whose failure is the cause (this one, or a dependency).
    pub root_cause: String,
    pub decision: Decision,
    pub reason: String,
    /// The findings that triggered the policy.
    pub evidence: Vec<Finding>,
    /// The ladder, in the order it will be tried (step names).
    pub plan: Vec<String>,
    /// An anomaly trigger's verdict: the value against its baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<Verdict>,
}

/// Why the engine is looking: the policy's trigger fired, an incident is
/// open already, or an operator asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause<'a> {
    Triggered(Trigger),
    /// An incident left open (by a restart, a pause) is being resumed.
    Resuming,
    /// A healed incident's check went bad again within the relapse
    /// window: the same incident is reopened.
    Relapsed,
    /// An operator's heal, from `source` (e.g. `api`).
    Manual(&'a str),
}

/// Everything a diagnosis looks at, taken by the engine at one instant.
#[derive(Debug, Clone)]
pub struct DiagnoseInput<'a> {
    pub check: &'a str,
    pub policy: &'a str,
    pub cause: Cause<'a>,
    pub evidence: Vec<Finding>,
    pub now: Millis,
    pub pause: Option<&'a Pause>,
    /// An operator's pause of this check.
    pub check_pause: Option<&'a Pause>,
    /// The policy's own `paused`.
    pub policy_paused: bool,
    pub maintenance: &'a [MaintenanceWindow],
    pub last_closed: Option<Millis>,
    pub cooldown: Duration,
    /// The check's percent state change, when it is flapping.
    pub flapping: Option<f64>,
    /// Check name → the checks it depends on.
    pub dependencies: &'a BTreeMap<String, Vec<String>>,
    /// Checks failing now (at least those this one depends on).
    pub failing: &'a BTreeSet<String>,
    /// The ladder in the order it would be tried (step names).
    pub plan: Vec<String>,
    /// The anomalous value and its baseline, for an anomaly policy.
    pub anomaly: Option<Verdict>,
}

/// Why no action may run right now (pause of mend or of the check, the
/// policy's own `paused`, a maintenance window).
pub fn held_off(
    pause: Option<&Pause>,
    check_pause: Option<&Pause>,
    policy_paused: bool,
    maintenance: &[MaintenanceWindow],
    now: Millis,
) -> Option<String> {
    if policy_paused {
        return Some("the policy is paused (`paused = true`)".into());
    }
    if let Some(p) = pause {
        return Some(format!("mend is paused: {}", p.reason));
    }
    if let Some(p) = check_pause {
        return Some(format!("the check is paused: {}", p.reason));
    }
    maintenance
        .iter()
        .find(|w| w.contains(now))
        .map(|w| format!("inside maintenance window {}–{} UTC", w.start, w.end))
}

pub fn diagnose(input: &DiagnoseInput<'_>) -> Diagnosis {
    let mut d = Diagnosis {
        check: input.check.to_string(),
        policy: input.policy.to_string(),
        root_cause: input.check.to_string(),
        decision: Decision::Remediate,
        reason: String::new(),
        evidence: input.evidence.clone(),
        plan: input.plan.clone(),
        anomaly: input.anomaly.clone(),
    };
    let decide = |d: &mut Diagnosis, decision: Decision, reason: String| {
        d.decision = decision;
        d.reason = reason;
    };

    if let Some(why) = held_off(
        input.pause,
        input.check_pause,
        input.policy_paused,
        input.maintenance,
        input.now,
    ) {
        decide(&mut d, Decision::Suppress, why);
        return d;
    }
    if let Cause::Triggered(_) = input.cause
        && let Some(left) = cooldown_remaining(input.last_closed, input.now, input.cooldown)
    {
        let reason = format!(
            "cooling down for another {}s after the last incident",
            left.as_secs()
        );
        decide(&mut d, Decision::Suppress, reason);
        return d;
    }
    if let Some(percent) = input.flapping {
        let reason = format!(
            "flapping ({percent:.0}% state change over the last 21 results): no automatic action"
        );
        decide(&mut d, Decision::Escalate, reason);
        return d;
    }
    let roots = root_causes(input.check, input.dependencies, input.failing);
    if !roots.is_empty() {
        d.root_cause = roots.join(", ");
        let reason = format!(
            "dependency {} is failing too: remediating the root, holding this check",
            d.root_cause
        );
        decide(&mut d, Decision::Hold, reason);
        return d;
    }
    let codes = input
        .evidence
        .iter()
        .map(|f| f.code.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(", ");
    // An anomaly says what departed from what: `latency_ms 480, baseline
    // 120 ± 30 (+12.0σ, threshold 4σ): http.ok`.
    let (bad, codes) = match &input.anomaly {
        Some(v) => ("anomalous", format!("{v}: {codes}")),
        None => ("bad", codes),
    };
    d.reason = match input.cause {
        Cause::Triggered(Trigger::Consecutive(n)) => {
            format!("{n} {bad} results in a row: {codes}")
        }
        Cause::Triggered(Trigger::NOfM { n, m }) => {
            format!("{n} {bad} results among the last {m}: {codes}")
        }
        Cause::Resuming => format!("resuming the incident left open: {codes}"),
        Cause::Relapsed => format!("the heal did not hold; reopened: {codes}"),
        Cause::Manual(source) => format!("manual heal requested by {source}: {codes}"),
    };
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Status;

    fn finding(code: &str) -> Finding {
        Finding {
            check: "web".into(),
            code: code.into(),
            status: Status::Fail,
            summary: String::new(),
            metrics: Default::default(),
            labels: Default::default(),
        }
    }

    struct Fixture {
        deps: BTreeMap<String, Vec<String>>,
        failing: BTreeSet<String>,
        windows: Vec<MaintenanceWindow>,
    }

    fn fixture() -> Fixture {
        Fixture {
            deps: [("web".to_string(), vec!["db".to_string()])].into(),
            failing: BTreeSet::new(),
            windows: Vec::new(),
        }
    }

    fn input(f: &Fixture) -> DiagnoseInput<'_> {
        DiagnoseInput {
            check: "web",
            policy: "restart-web",
            cause: Cause::Triggered(Trigger::Consecutive(3)),
            evidence: vec![finding("http.down")],
            now: 1_000_000,
            pause: None,
            check_pause: None,
            policy_paused: false,
            maintenance: &f.windows,
            last_closed: None,
            cooldown: Duration::from_secs(600),
            flapping: None,
            dependencies: &f.deps,
            failing: &f.failing,
            plan: vec!["restart".into()],
            anomaly: None,
        }
    }

    #[test]
    fn an_anomaly_says_the_value_and_its_baseline() {
        let f = fixture();
        let mut i = input(&f);
        i.evidence = vec![finding("http.ok")];
        i.anomaly = Some(Verdict {
            metric: "latency_ms".into(),
            value: 480.0,
            mean: 120.0,
            deviation: 30.0,
            sigma: 4.0,
            seasonal: false,
            anomalous: true,
        });
        let d = diagnose(&i);
        assert_eq!(d.decision, Decision::Remediate);
        assert_eq!(
            d.reason,
            "3 anomalous results in a row: latency_ms 480, baseline 120 ± 30 (+12.0σ, threshold 4σ): http.ok"
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["anomaly"]["mean"], 120.0);
        i.cause = Cause::Resuming;
        assert!(diagnose(&i).reason.contains("baseline 120 ± 30"));
    }

    #[test]
    fn a_plain_trigger_remediates_and_says_why() {
        let f = fixture();
        let d = diagnose(&input(&f));
        assert_eq!(d.decision, Decision::Remediate);
        assert_eq!(d.reason, "3 bad results in a row: http.down");
        assert_eq!(d.plan, vec!["restart".to_string()]);
    }

    #[test]
    fn guards_apply_in_order() {
        let mut f = fixture();
        f.failing.insert("db".into());
        let pause = Pause {
            since: 0,
            reason: "deploy".into(),
        };
        let mut i = input(&f);
        i.flapping = Some(60.0);
        i.last_closed = Some(999_000);
        i.pause = Some(&pause);
        assert_eq!(diagnose(&i).decision, Decision::Suppress, "pause first");
        i.pause = None;
        let d = diagnose(&i);
        assert_eq!(d.decision, Decision::Suppress);
        assert!(d.reason.contains("cooling down"), "{}", d.reason);
        i.cause = Cause::Manual("api");
        assert_eq!(
            diagnose(&i).decision,
            Decision::Escalate,
            "an operator's heal skips the cooldown, not flapping"
        );
        i.flapping = None;
        let d = diagnose(&i);
        assert_eq!(d.decision, Decision::Hold);
        assert_eq!(d.root_cause, "db");
        f.failing.clear();
        let mut i = input(&f);
        i.cause = Cause::Manual("api");
        assert!(
            diagnose(&i)
                .reason
                .starts_with("manual heal requested by api")
        );
    }
}
