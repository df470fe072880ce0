//! Diagnose: given that a policy's trigger holds, decide what to do and
//! say why. The answer is a [`Diagnosis`], stored with the incident.
//!
//! The order of the guards is the safety argument: nothing acts inside a
//! maintenance window or a cooldown; a flapping check is escalated to a
//! human instead of being "fixed" over and over; and when a dependency is
//! failing too, the dependency is the root cause, so this check holds while
//! the root is remediated.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{Engine, PolicySlot, lock};
use crate::contract::Finding;
use crate::policy::budget::cooldown_remaining;
use crate::policy::root_cause::root_causes;
use crate::policy::trigger::Trigger;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Run the ladder.
    Remediate,
    /// A dependency is the root cause: do nothing here.
    Hold,
    /// Call a human; take no automatic action.
    Escalate,
    /// Not now (maintenance, cooldown).
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
    /// The ladder, in the order it will be tried (action names).
    pub plan: Vec<String>,
}

impl Engine {
    /// `resuming`: for an incident already open, where the cooldown does
    /// not apply.
    pub(super) fn diagnose(
        &self,
        policy: &PolicySlot,
        evidence: Vec<Finding>,
        resuming: bool,
    ) -> Diagnosis {
        let check = &self.checks[policy.check];
        let name = check.config.name().to_string();
        let now = self.clock.now();
        let plan = self
            .ladder_order(policy, &evidence)
            .into_iter()
            .map(|i| policy.steps[i].name.clone())
            .collect();
        let mut d = Diagnosis {
            check: name.clone(),
            policy: policy.config.name().to_string(),
            root_cause: name.clone(),
            decision: Decision::Remediate,
            reason: String::new(),
            evidence,
            plan,
        };
        let suppress = |d: &mut Diagnosis, reason: String| {
            d.decision = Decision::Suppress;
            d.reason = reason;
        };

        if let Some(why) = self.held_off(policy) {
            suppress(&mut d, why);
            return d;
        }
        let last_closed = lock(&policy.state).last_closed;
        if let Some(left) = cooldown_remaining(last_closed, now, policy.config.cooldown.0)
            && !resuming
        {
            suppress(
                &mut d,
                format!(
                    "cooling down for another {}s after the last incident",
                    left.as_secs()
                ),
            );
            return d;
        }
        {
            let st = lock(&check.state);
            if st.flap.is_flapping() {
                d.decision = Decision::Escalate;
                d.reason = format!(
                    "flapping ({:.0}% state change over the last 21 results): no automatic action",
                    st.flap.percent_change()
                );
                return d;
            }
        }
        let failing: BTreeSet<String> = self
            .checks
            .iter()
            .filter(|c| lock(&c.state).is_failing())
            .map(|c| c.config.name().to_string())
            .collect();
        let roots = root_causes(&name, &self.dependencies, &failing);
        if !roots.is_empty() {
            d.decision = Decision::Hold;
            d.root_cause = roots.join(", ");
            d.reason = format!(
                "dependency {} is failing too: remediating the root, holding this check",
                d.root_cause
            );
            return d;
        }
        let trigger = match policy.trigger {
            Trigger::Consecutive(n) => format!("{n} bad results in a row"),
            Trigger::NOfM { n, m } => format!("{n} bad results among the last {m}"),
        };
        d.reason = format!(
            "{trigger}: {}",
            d.evidence
                .iter()
                .map(|f| f.code.as_str())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        );
        d
    }
}
