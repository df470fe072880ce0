//! Between detect and recover: what each policy of a check makes of a
//! [`Detection`]. Its evidence (the findings it matches) feeds its trigger;
//! an open incident resumes or closes; a fired trigger, or an operator's
//! heal, is diagnosed from a snapshot and, when the diagnosis says so,
//! opens an incident whose ladder runs ([`IncidentRun`]).

use std::collections::BTreeSet;

use tokio::sync::oneshot;

use super::control::{HealOutcome, HealRequest, PolicyHeal};
use super::diagnose::{Cause, Decision, DiagnoseInput, Diagnosis, diagnose};
use super::incident::IncidentRun;
use super::lifecycle::Operator;
use super::shutdown::Shutdown;
use super::state::Detection;
use super::{Engine, lock};
use crate::contract::Finding;
use crate::policy::health::Health;
use crate::store::{Attempt, EventKind, Incident, IncidentState};

impl Engine {
    /// After a detect: every policy of check `idx` looks at the result.
    pub(super) async fn evaluate(&self, idx: usize, result: &Detection, shutdown: &Shutdown) {
        for &pi in &self.plan.checks[idx].policies {
            if let Err(e) = self.evaluate_policy(pi, result, shutdown).await {
                self.store.note_fault(&e);
                tracing::error!(policy = %self.plan.policies[pi].name, "{e:#}");
            }
        }
    }

    /// The findings policy `pi` matches (an anomaly policy: the one whose
    /// metric departs from its baseline now).
    fn evidence(&self, pi: usize, findings: &[Finding]) -> Vec<Finding> {
        let policy = &self.plan.policies[pi];
        if policy.anomaly.is_some() {
            return self.anomalous(pi, findings, self.clock.now());
        }
        findings
            .iter()
            .filter(|f| policy.matches(f))
            .cloned()
            .collect()
    }

    async fn evaluate_policy(
        &self,
        pi: usize,
        result: &Detection,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        let policy = &self.plan.policies[pi];
        let evidence = if policy.anomaly.is_some() {
            self.learn(pi, &result.findings, result.at)
        } else {
            self.evidence(pi, &result.findings)
        };
        let bad = !evidence.is_empty();
        let fires = lock(&self.policies[pi].state)
            .trigger
            .record(bad, &policy.trigger);
        let (health, flapping) = {
            let st = lock(&self.checks[policy.check].state);
            (st.health.state(), st.flap.episode())
        };

        // An incident already open: it closes when the check is healthy;
        // an escalated one is reconsidered (`lifecycle.rs`); others (left
        // open by a restart, a pause, a dependency hold) resume.
        if let Some(inc) = self.store.open_incident_for(&policy.name)? {
            // A restart cut a step short: it may have done its work.
            if let Some(attempt) = IncidentRun::interrupted(&inc).cloned() {
                return self
                    .after_interruption(pi, &inc, &attempt, evidence, shutdown)
                    .await;
            }
            // A stop cut its page short: a human is still owed one.
            let run = IncidentRun::resume(self, pi, &inc, evidence.clone());
            if run.page_lost(&inc) {
                run.resend_page(&inc).await?;
            }
            let escalated = matches!(
                inc.state,
                IncidentState::Escalated | IncidentState::Acknowledged
            );
            // (An anomaly policy's check is healthy while its metric is
            // out: only the metric ends its incident.)
            let over = escalated && health == Health::Healthy && policy.anomaly.is_none();
            if !bad || over {
                // Not while flapping: healthy for a moment is not over.
                if health == Health::Healthy && flapping.is_none() {
                    let note = if inc.state == IncidentState::Held {
                        "the check is healthy again: its root cause's remedy fixed it"
                    } else {
                        "the check is healthy again"
                    };
                    self.close_incident(pi, inc.id, inc.opened_at, IncidentState::Recovered, note)?;
                }
                return Ok(());
            }
            if escalated {
                return self.reconsider(pi, &inc, evidence, shutdown).await;
            }
            return self
                .go_on(pi, &inc, evidence, Cause::Resuming, shutdown)
                .await;
        }
        if !fires {
            return Ok(());
        }
        // Bad again soon after a heal: a relapse of the same incident, not
        // a new one (and the heal is no success).
        if let Some(heal) = self.store.last_heal(&policy.name)?
            && heal
                .closed_at
                .is_some_and(|at| policy.verify.is_relapse(at, self.clock.now()))
            && let Some(inc) = IncidentRun::relapse(self, pi, &heal)?
        {
            return self
                .go_on(pi, &inc, evidence, Cause::Relapsed, shutdown)
                .await;
        }

        let diagnosis = self.diagnosis(pi, evidence, Cause::Triggered(policy.trigger));
        lock(&self.checks[policy.check].state).held_by = match diagnosis.decision {
            Decision::Hold => vec![diagnosis.root_cause.clone()],
            _ => Vec::new(),
        };
        match diagnosis.decision {
            Decision::Suppress => {
                tracing::info!(policy = %policy.name, decision = ?diagnosis.decision, "{}", diagnosis.reason);
                Ok(())
            }
            // The hold is recorded: an incident of this check, held while
            // the root is remediated; it resumes or recovers afterwards.
            Decision::Hold => {
                tracing::info!(policy = %policy.name, decision = ?diagnosis.decision, "{}", diagnosis.reason);
                let run = IncidentRun::open(self, pi, &diagnosis, policy.dry_run)?;
                let inc = self.store.incident(run.id())?;
                if let Some(inc) = inc {
                    self.note_hold(policy.check, &inc, &diagnosis)?;
                }
                Ok(())
            }
            Decision::Escalate => {
                // Once per flapping episode, not per evaluation: the
                // detector's episode, and any escalation of this policy
                // within `relapse_window` (extended while it goes on).
                let now = self.clock.now();
                let last = self.store.last_escalated(&policy.name)?;
                {
                    let mut st = lock(&self.policies[pi].state);
                    let quiet_until = st
                        .flap_quiet_until
                        .max(last.map(|at| crate::policy::add(at, policy.verify.relapse_window)));
                    st.flap_quiet_until =
                        Some(crate::policy::add(now, policy.verify.relapse_window));
                    let same_episode = flapping.is_some() && st.flap_escalated == flapping;
                    if same_episode || quiet_until.is_some_and(|t| now <= t) {
                        tracing::info!(policy = %policy.name, "still flapping; this episode was escalated already");
                        return Ok(());
                    }
                    st.flap_escalated = flapping;
                }
                let run = IncidentRun::open(self, pi, &diagnosis, policy.dry_run)?;
                run.escalate(&diagnosis.reason).await
            }
            Decision::Remediate => {
                IncidentRun::open(self, pi, &diagnosis, policy.dry_run)?
                    .run(shutdown)
                    .await
            }
        }
    }

    /// Records a dependency hold on the incident (and its end), once per
    /// change: the incident says `held` while the root is remediated.
    fn note_hold(
        &self,
        check: usize,
        inc: &crate::store::Incident,
        diagnosis: &Diagnosis,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        let held = diagnosis.decision == Decision::Hold;
        lock(&self.checks[check].state).held_by = if held {
            vec![diagnosis.root_cause.clone()]
        } else {
            Vec::new()
        };
        if held && inc.state != IncidentState::Held {
            self.store.set_incident_state(inc.id, IncidentState::Held)?;
            self.store.add_event(
                inc.id,
                now,
                EventKind::Held,
                "mend",
                &diagnosis.reason,
                &serde_json::json!({"root_cause": diagnosis.root_cause}),
            )?;
        } else if !held && inc.state == IncidentState::Held {
            self.store.set_incident_state(inc.id, IncidentState::Open)?;
            self.store.add_event(
                inc.id,
                now,
                EventKind::Released,
                "mend",
                "the dependency is no longer failing: this check's own ladder may run",
                &serde_json::json!({}),
            )?;
        }
        Ok(())
    }

    /// Goes on with an open incident (left open by a restart, a pause or a
    /// hold; reopened by a relapse; or past an interrupted
    /// step) as its diagnosis says.
    async fn go_on(
        &self,
        pi: usize,
        inc: &Incident,
        evidence: Vec<Finding>,
        cause: Cause<'_>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        let policy = &self.plan.policies[pi];
        let diagnosis = self.diagnosis(pi, evidence.clone(), cause);
        self.note_hold(policy.check, inc, &diagnosis)?;
        let run = IncidentRun::resume(self, pi, inc, evidence);
        match diagnosis.decision {
            Decision::Remediate => {
                tracing::warn!(policy = %policy.name, incident = inc.id, "going on with an open incident");
                run.run(shutdown).await
            }
            Decision::Escalate => run.escalate(&diagnosis.reason).await,
            // Left open: it resumes once it may.
            Decision::Hold | Decision::Suppress => {
                tracing::info!(policy = %policy.name, incident = inc.id, "not going on yet: {}", diagnosis.reason);
                Ok(())
            }
        }
    }

    /// An open incident whose last step a restart interrupted: verified
    /// first (after its orphans and settle), credited if it healed, else
    /// the ladder goes on from the last probe.
    async fn after_interruption(
        &self,
        pi: usize,
        inc: &Incident,
        attempt: &Attempt,
        evidence: Vec<Finding>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        // What opened the incident: the finding code its stats are kept
        // under, and the bar verification holds the step to.
        let opened: Vec<Finding> =
            serde_json::from_value(inc.diagnosis["evidence"].clone()).unwrap_or_default();
        let code = opened.first().map(|f| f.code.clone()).unwrap_or_default();
        let bar = if opened.is_empty() { evidence } else { opened };
        let run = IncidentRun::resume(self, pi, inc, bar);
        let Some((healed, last)) = run.settle_interrupted(attempt, &code, shutdown).await? else {
            return Ok(());
        };
        let evidence = self.evidence(pi, &last.findings);
        if healed || evidence.is_empty() {
            return Ok(());
        }
        let Some(inc) = self.store.incident(inc.id)? else {
            return Ok(());
        };
        self.go_on(pi, &inc, evidence, Cause::Resuming, shutdown)
            .await
    }

    /// Diagnoses policy `pi` from a snapshot of what it depends on.
    pub(super) fn diagnosis(
        &self,
        pi: usize,
        evidence: Vec<Finding>,
        cause: Cause<'_>,
    ) -> Diagnosis {
        let policy = &self.plan.policies[pi];
        let check = &self.plan.checks[policy.check];
        let flapping = {
            let st = lock(&self.checks[policy.check].state);
            st.flap.is_flapping().then(|| st.flap.percent_change())
        };
        let failing = self.failing_dependencies(&check.name);
        let pause = self.paused();
        let check_pause = self.check_paused(policy.check);
        let last_closed = lock(&self.policies[pi].state).last_closed;
        let plan = self
            .ladder_order(pi, &evidence)
            .into_iter()
            .map(|i| policy.steps[i].name.clone())
            .collect();
        diagnose(&DiagnoseInput {
            check: &check.name,
            policy: &policy.name,
            cause,
            evidence,
            now: self.clock.now(),
            pause: pause.as_ref(),
            check_pause: check_pause.as_ref(),
            policy_paused: policy.paused,
            maintenance: &policy.maintenance,
            last_closed,
            cooldown: policy.cooldown,
            flapping,
            dependencies: &self.plan.dependencies,
            failing: &failing,
            plan,
            anomaly: self.anomaly_verdict(pi),
        })
    }

    /// The checks `check` depends on, directly or not, that are failing.
    fn failing_dependencies(&self, check: &str) -> BTreeSet<String> {
        let mut failing = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = vec![check];
        while let Some(c) = todo.pop() {
            for dep in self.plan.dependencies.get(c).into_iter().flatten() {
                if !seen.insert(dep.as_str()) {
                    continue;
                }
                if let Some(&i) = self.index.get(dep)
                    && lock(&self.checks[i].state).is_failing()
                {
                    failing.insert(dep.clone());
                }
                todo.push(dep);
            }
        }
        failing
    }

    /// A manual heal of check `idx` on `result` (a fresh detect): each of
    /// its policies opens an incident (or takes up its escalated one) and
    /// walks its ladder now. The trigger and cooldown are skipped (an
    /// operator asked); pause, maintenance, flapping, root cause and
    /// breakers are not; the attempt cap is not either, unless `force`.
    /// It never triggers `exit_on_exhausted`. `reply` learns the decisions
    /// before any action runs.
    pub(super) async fn heal_now(
        &self,
        idx: usize,
        result: &Detection,
        how: &HealRequest,
        reply: oneshot::Sender<HealOutcome>,
        shutdown: &Shutdown,
    ) {
        let source = how.source.as_str();
        let check = &self.plan.checks[idx];
        let mut decisions = Vec::new();
        let mut runs = Vec::new();
        for &pi in &check.policies {
            let policy = &self.plan.policies[pi];
            let dry_run = how.dry_run || policy.dry_run;
            let mut heal = PolicyHeal {
                policy: policy.name.clone(),
                started: false,
                incident: None,
                dry_run,
                reason: String::new(),
            };
            match self.start_manual(pi, result, dry_run, how) {
                Ok(ManualHeal::Started(run, reason)) => {
                    heal.started = true;
                    heal.incident = Some(run.id());
                    heal.reason = reason;
                    runs.push(run);
                }
                Ok(ManualHeal::Refused { incident, reason }) => {
                    tracing::info!(policy = %policy.name, source, "manual heal not started: {reason}");
                    heal.incident = incident;
                    heal.reason = reason;
                }
                Err(e) => {
                    tracing::error!(policy = %policy.name, "manual heal: {e:#}");
                    heal.reason = format!("{e:#}");
                }
            }
            decisions.push(heal);
        }
        let _ = reply.send(HealOutcome {
            check: check.name.clone(),
            result: result.clone(),
            policies: decisions,
        });
        let ran = !runs.is_empty();
        for run in runs {
            if let Err(e) = run.run(shutdown).await {
                tracing::error!(check = %check.name, "{e:#}");
            }
        }
        // An operator's heal refreshes the check at once: with `interval =
        // "1h"`, its health must not wait an hour to show the heal.
        if ran && !how.dry_run && !shutdown.is_fired() {
            let fresh = self.detect(idx).await;
            self.observe(idx, std::sync::Arc::new(fresh));
        }
    }

    /// Opens the incident of a manual heal (or takes up the escalated one),
    /// or says why not.
    fn start_manual(
        &self,
        pi: usize,
        result: &Detection,
        dry_run: bool,
        how: &HealRequest,
    ) -> anyhow::Result<ManualHeal<'_>> {
        let policy = &self.plan.policies[pi];
        let source = how.source.as_str();
        let operator = Operator {
            by: how.by.clone().unwrap_or_else(|| source.to_string()),
            force: how.force,
        };
        let evidence = self.evidence(pi, &result.findings);
        let now = self.clock.now();
        let capped = !dry_run
            && !how.force
            && !lock(&self.policies[pi].state).attempts.allows(
                now,
                policy.max_attempts,
                policy.window,
            );
        let cap_note = || {
            format!(
                "the attempt cap is reached ({} attempts in {}); `mend heal {} --force` runs the ladder anyway",
                policy.max_attempts,
                humantime::format_duration(policy.window),
                self.plan.checks[policy.check].name
            )
        };
        if let Some(inc) = self.store.open_incident_for(&policy.name)? {
            let escalated = matches!(
                inc.state,
                IncidentState::Escalated | IncidentState::Acknowledged
            );
            if !escalated && !how.force {
                return Ok(ManualHeal::Refused {
                    incident: Some(inc.id),
                    reason: format!(
                        "incident {} is already open ({}): mend is working on it (`--force` walks its ladder again now)",
                        inc.id,
                        inc.state.as_str()
                    ),
                });
            }
            if evidence.is_empty() {
                return Ok(ManualHeal::Refused {
                    incident: Some(inc.id),
                    reason: format!(
                        "nothing to heal: no finding matches the policy (the check says {:?})",
                        result.status
                    )
                    .to_lowercase(),
                });
            }
            if capped {
                return Ok(ManualHeal::Refused {
                    incident: Some(inc.id),
                    reason: format!(
                        "incident {} is {}: {}",
                        inc.id,
                        inc.state.as_str(),
                        cap_note()
                    ),
                });
            }
            let d = self.diagnosis(pi, evidence.clone(), Cause::Manual(source));
            if d.decision != Decision::Remediate {
                return Ok(ManualHeal::Refused {
                    incident: Some(inc.id),
                    reason: d.reason,
                });
            }
            let reason = format!(
                "walking the ladder again on incident {} ({}), asked by {}{}",
                inc.id,
                inc.state.as_str(),
                operator.by,
                if how.force { ", forced" } else { "" }
            );
            self.store.add_event(
                inc.id,
                now,
                EventKind::OperatorHeal,
                &operator.by,
                &reason,
                &serde_json::json!({"force": how.force, "source": source}),
            )?;
            let run = IncidentRun::again(self, pi, &inc, evidence).by_operator(operator);
            return Ok(ManualHeal::Started(run, reason));
        }
        if evidence.is_empty() {
            return Ok(ManualHeal::Refused {
                incident: None,
                reason: format!(
                    "nothing to heal: no finding matches the policy (the check says {:?})",
                    result.status
                )
                .to_lowercase(),
            });
        }
        if capped {
            return Ok(ManualHeal::Refused {
                incident: None,
                reason: cap_note(),
            });
        }
        let d = self.diagnosis(pi, evidence, Cause::Manual(source));
        if d.decision != Decision::Remediate {
            return Ok(ManualHeal::Refused {
                incident: None,
                reason: d.reason,
            });
        }
        let run = IncidentRun::open(self, pi, &d, dry_run)?;
        self.store.add_event(
            run.id(),
            now,
            EventKind::OperatorHeal,
            &operator.by,
            &d.reason,
            &serde_json::json!({"force": how.force, "source": source}),
        )?;
        Ok(ManualHeal::Started(run.by_operator(operator), d.reason))
    }
}

/// What a manual heal of one policy came to.
enum ManualHeal<'e> {
    /// The incident is open; its ladder runs once the caller is answered.
    Started(IncidentRun<'e>, String),
    /// Not started, and why (with the incident already open, if that is
    /// why).
    Refused {
        incident: Option<i64>,
        reason: String,
    },
}
