//! The incident lifecycle beyond one walk of the ladder: what a person
//! does to an incident (acknowledge, resolve, heal by hand), and what mend
//! does with one it escalated. An escalated incident is not a dead end:
//! mend keeps evaluating it, and when the evidence changes (a finding code
//! it has not seen on this incident, or a step that changed nothing
//! before now has a plan: its guard passes) it walks the ladder again,
//! within the attempt cap, and records why.

use std::collections::BTreeSet;

use serde_json::json;

use super::diagnose::{Cause, Decision};
use super::incident::IncidentRun;
use super::shutdown::Shutdown;
use super::{Engine, lock};
use crate::contract::{Finding, RemedyContext, StepRef};
use crate::store::{AttemptOutcome, EventKind, Incident, IncidentState, LifecycleError};

/// Who asked for a heal by hand, and whether past the automatic limits.
#[derive(Debug, Clone)]
pub(super) struct Operator {
    pub by: String,
    /// Not held by the attempt cap or cooldown.
    pub force: bool,
}

impl Engine {
    /// Acknowledges escalated incident `id` for `by`.
    pub fn acknowledge(&self, id: i64, by: &str, reason: &str) -> anyhow::Result<Incident> {
        let now = self.clock.now();
        self.store
            .acknowledge_incident(id, now, by, reason)?
            .map_err(anyhow::Error::from)?;
        tracing::warn!(incident = id, by, "incident acknowledged: {reason}");
        self.incident_now(id)
    }

    /// Closes incident `id` as resolved by `by`; its policy's cooldown
    /// starts, as after any close.
    pub fn resolve(&self, id: i64, by: &str, reason: &str) -> anyhow::Result<Incident> {
        let now = self.clock.now();
        let info = self
            .store
            .resolve_incident(id, now, by, reason)?
            .map_err(anyhow::Error::from)?;
        if let Some(pi) = self
            .plan
            .policies
            .iter()
            .position(|p| p.name == info.policy)
        {
            self.metrics.closed(
                &info.policy,
                IncidentState::Resolved.as_str(),
                now.saturating_sub(info.opened_at),
            );
            let mut st = lock(&self.policies[pi].state);
            st.last_closed = Some(now);
            st.trigger.reset();
        }
        tracing::warn!(incident = id, by, "incident resolved: {reason}");
        self.incident_now(id)
    }

    fn incident_now(&self, id: i64) -> anyhow::Result<Incident> {
        self.store
            .incident(id)?
            .ok_or_else(|| LifecycleError::NotFound(id).into())
    }

    /// An escalated (or acknowledged) incident whose check is still bad:
    /// walks the ladder again if the evidence changed and the policy may
    /// act (not paused, not flapping, not held, within the attempt cap).
    pub(super) async fn reconsider(
        &self,
        pi: usize,
        inc: &Incident,
        evidence: Vec<Finding>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        let policy = &self.plan.policies[pi];
        if inc.dry_run {
            return Ok(());
        }
        let d = self.diagnosis(pi, evidence.clone(), Cause::Resuming);
        if d.decision != Decision::Remediate {
            return Ok(());
        }
        let now = self.clock.now();
        let allowed =
            lock(&self.policies[pi].state)
                .attempts
                .allows(now, policy.max_attempts, policy.window);
        if !allowed {
            return Ok(());
        }
        let Some(why) = self.evidence_changed(pi, inc, &evidence).await else {
            return Ok(());
        };
        let codes: BTreeSet<&str> = evidence.iter().map(|f| f.code.as_str()).collect();
        self.store.add_event(
            inc.id,
            now,
            EventKind::Retry,
            "mend",
            &why,
            &json!({"codes": codes}),
        )?;
        tracing::warn!(incident = inc.id, policy = %policy.name, "after escalation: {why}");
        IncidentRun::again(self, pi, inc, evidence)
            .run(shutdown)
            .await
    }

    /// Why the evidence of escalated incident `inc` changed, if it did: a
    /// finding code it has not seen, or a step that ran and changed
    /// nothing now has a plan (its dry run lists steps: its guard passes).
    async fn evidence_changed(
        &self,
        pi: usize,
        inc: &Incident,
        evidence: &[Finding],
    ) -> Option<String> {
        let mut known: BTreeSet<String> = inc.diagnosis["evidence"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["code"].as_str().map(str::to_string))
            .collect();
        for e in inc.events.iter().filter(|e| e.kind == EventKind::Retry) {
            for c in e.detail["codes"].as_array().into_iter().flatten() {
                known.extend(c.as_str().map(str::to_string));
            }
        }
        let new: BTreeSet<&str> = evidence
            .iter()
            .map(|f| f.code.as_str())
            .filter(|c| !known.contains(*c))
            .collect();
        if !new.is_empty() {
            let new: Vec<&str> = new.into_iter().collect();
            return Some(format!(
                "new finding code {}: running the ladder again",
                new.join(", ")
            ));
        }
        let policy = &self.plan.policies[pi];
        for (i, step) in policy.steps.iter().enumerate() {
            let Some(last) = inc
                .attempts
                .iter()
                .rev()
                .find(|a| a.step == StepRef::Ladder(i as u32) && !a.dry_run)
            else {
                continue;
            };
            let idle = last.outcome == AttemptOutcome::NotHealed
                && last.detail["outcome"]["changed"].as_bool() == Some(false);
            if !idle {
                continue;
            }
            let context = RemedyContext {
                incident: inc.id as u64,
                policy: policy.name.clone(),
                step_ref: StepRef::Ladder(i as u32),
                severity: self.plan.checks[policy.check].severity,
                ..RemedyContext::manual(&step.name, true)
            };
            match self.run_action(policy, step, evidence, context, None).await {
                Ok(r) if !r.value.steps.is_empty() => {
                    return Some(format!(
                        "step {} changed nothing before and now would act ({}): running the ladder again",
                        step.name,
                        r.value.steps.join("; ")
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(incident = inc.id, step = %step.name, "dry run to re-check its guard: {e}");
                }
            }
        }
        None
    }

    /// The incident's decision trail, oldest first, for the escalation.
    pub(super) fn trail(&self, id: i64) -> anyhow::Result<Vec<String>> {
        let Some(inc) = self.store.incident(id)? else {
            return Ok(Vec::new());
        };
        let mut out = vec![format!(
            "opened: {} ({})",
            inc.diagnosis["reason"].as_str().unwrap_or(""),
            inc.diagnosis["decision"].as_str().unwrap_or("")
        )];
        // Attempts and events, in time order.
        let mut lines: Vec<(u64, i64, String)> = Vec::new();
        for a in inc
            .attempts
            .iter()
            .filter(|a| a.outcome != AttemptOutcome::Running)
        {
            let what = a.detail["outcome"]["message"]
                .as_str()
                .or_else(|| a.detail["reason"].as_str())
                .or_else(|| a.detail["note"].as_str())
                .map(|m| format!(": {m}"))
                .or_else(|| a.detail.get("error").map(|e| format!(": error {e}")))
                .unwrap_or_default();
            lines.push((
                a.started_at,
                a.id,
                format!("step {}: {}{what}", a.action, a.outcome.as_str()),
            ));
        }
        for e in &inc.events {
            let by = if e.by.is_empty() || e.by == "mend" {
                String::new()
            } else {
                format!(" by {}", e.by)
            };
            lines.push((e.at, e.id, format!("{}{by}: {}", e.kind.as_str(), e.reason)));
        }
        lines.sort_by_key(|(at, id, _)| (*at, *id));
        out.extend(lines.into_iter().map(|(_, _, l)| l));
        Ok(out)
    }

    /// Incident `id` in the dashboard (`[api] url`, or the listen address).
    pub(super) fn incident_link(&self, id: i64) -> Option<String> {
        let base = self.plan.config.api.base_url()?;
        Some(format!("{}/#incident/{id}", base.trim_end_matches('/')))
    }
}
