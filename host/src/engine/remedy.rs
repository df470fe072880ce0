//! Recover and verify: open the incident, walk the ladder, verify after each
//! step, and escalate exactly once when the ladder is exhausted.
//!
//! Every step is written to the store *before* it runs (as `running`) and
//! after it ends, so a kill at any instant loses nothing. Limits wrap every
//! step: the policy's attempt window, the breaker of (check, action), and
//! backoff with jitter between steps.

use std::collections::BTreeSet;

use serde_json::json;

use tokio::sync::oneshot;

use super::check::LastResult;
use super::control::{HealOutcome, PolicyHeal};
use super::diagnose::{Decision, Diagnosis};
use super::shutdown::Shutdown;
use super::{Engine, PolicySlot, lock};
use crate::contract::{Finding, Status};
use crate::policy::adaptive;
use crate::policy::health::Health;
use crate::runtime::Request;
use crate::store::{AttemptOutcome, IncidentState, NewIncident};

/// Exit code for the "heavy heal": EX_TEMPFAIL, so systemd's
/// `Restart=on-failure` starts mend afresh.
pub const EXIT_HEAVY_HEAL: i32 = 75;

/// The step number recorded for the escalation action.
pub const ESCALATION_STEP: u32 = u32::MAX;

/// One walk of a policy's ladder for one incident.
struct Ladder {
    incident: i64,
    opened_at: u64,
    dry_run: bool,
    /// Steps (by index) already tried for this incident.
    done: BTreeSet<usize>,
}

impl Engine {
    /// After a detect: every policy of check `idx` looks at the result.
    pub(super) async fn evaluate(&self, idx: usize, result: &LastResult, shutdown: &Shutdown) {
        for &pi in &self.checks[idx].policies {
            let policy = &self.policies[pi];
            if let Err(e) = self.evaluate_policy(policy, result, shutdown).await {
                tracing::error!(policy = policy.config.name(), "{e:#}");
            }
        }
    }

    async fn evaluate_policy(
        &self,
        policy: &PolicySlot,
        result: &LastResult,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        let evidence = self.matching(policy, &result.findings);
        let bad = !evidence.is_empty();
        let fires = lock(&policy.state).trigger.record(bad, &policy.trigger);
        let check = &self.checks[policy.check];
        let health = lock(&check.state).health.state();

        // An incident already open: escalated ones wait for the check to
        // recover; others (left open by a restart) resume.
        if let Some(inc) = self.store.open_incident_for(policy.config.name())? {
            if inc.state == IncidentState::Escalated || !bad {
                if health == Health::Healthy {
                    self.close(
                        policy,
                        inc.id,
                        inc.opened_at,
                        IncidentState::Recovered,
                        "the check is healthy again",
                    )?;
                }
                return Ok(());
            }
            // Resuming goes through the same guards as opening (but not the
            // cooldown: this incident is the current one).
            let diagnosis = self.diagnose(policy, evidence.clone(), true);
            match diagnosis.decision {
                Decision::Remediate => {}
                Decision::Escalate => {
                    return self
                        .escalate(policy, inc.id, &evidence, &diagnosis.reason)
                        .await;
                }
                Decision::Hold | Decision::Suppress => {
                    tracing::info!(
                        policy = policy.config.name(),
                        incident = inc.id,
                        "not resuming yet: {}",
                        diagnosis.reason
                    );
                    return Ok(());
                }
            }
            // Steps already tried are not tried again, whatever the order.
            let done: BTreeSet<usize> = inc
                .attempts
                .iter()
                .filter(|a| a.step != ESCALATION_STEP)
                .map(|a| a.step as usize)
                .collect();
            tracing::warn!(
                policy = policy.config.name(),
                incident = inc.id,
                "resuming an incident left open"
            );
            let run = Ladder {
                incident: inc.id,
                opened_at: inc.opened_at,
                dry_run: inc.dry_run,
                done,
            };
            return self.run_ladder(policy, run, evidence, shutdown).await;
        }
        if !fires {
            return Ok(());
        }

        let diagnosis = self.diagnose(policy, evidence.clone(), false);
        lock(&check.state).held_by = match diagnosis.decision {
            Decision::Hold => vec![diagnosis.root_cause.clone()],
            _ => Vec::new(),
        };
        match diagnosis.decision {
            Decision::Suppress | Decision::Hold => {
                tracing::info!(
                    policy = policy.config.name(),
                    decision = ?diagnosis.decision,
                    "{}",
                    diagnosis.reason
                );
                Ok(())
            }
            Decision::Escalate => {
                let id = self.open(policy, &diagnosis, self.dry_run(policy))?;
                self.escalate(policy, id, &evidence, &diagnosis.reason)
                    .await
            }
            Decision::Remediate => {
                let id = self.open(policy, &diagnosis, self.dry_run(policy))?;
                let run = Ladder {
                    incident: id,
                    opened_at: self.clock.now(),
                    dry_run: self.dry_run(policy),
                    done: BTreeSet::new(),
                };
                self.run_ladder(policy, run, evidence, shutdown).await
            }
        }
    }

    /// A manual heal of check `idx` on `result` (a fresh detect): each of
    /// its policies opens an incident and walks its ladder now. The trigger
    /// and cooldown are skipped (an operator asked); pause, maintenance,
    /// flapping, root cause, breakers and attempt caps are not. `reply`
    /// learns the decisions before any action runs.
    pub(super) async fn heal_now(
        &self,
        idx: usize,
        result: &LastResult,
        dry_run: bool,
        source: &str,
        reply: oneshot::Sender<HealOutcome>,
        shutdown: &Shutdown,
    ) {
        let check = &self.checks[idx];
        let mut decisions = Vec::new();
        let mut ladders = Vec::new();
        for &pi in &check.policies {
            let policy = &self.policies[pi];
            let dry_run = dry_run || self.dry_run(policy);
            let mut heal = PolicyHeal {
                policy: policy.config.name().to_string(),
                started: false,
                incident: None,
                dry_run,
                reason: String::new(),
            };
            match self.start_manual(policy, result, dry_run, source) {
                Ok(Ok((run, evidence, reason))) => {
                    heal.started = true;
                    heal.incident = Some(run.incident);
                    heal.reason = reason;
                    ladders.push((policy, run, evidence));
                }
                Ok(Err((incident, reason))) => {
                    tracing::info!(
                        policy = policy.config.name(),
                        source,
                        "manual heal not started: {reason}"
                    );
                    heal.incident = incident;
                    heal.reason = reason;
                }
                Err(e) => {
                    tracing::error!(policy = policy.config.name(), "manual heal: {e:#}");
                    heal.reason = format!("{e:#}");
                }
            }
            decisions.push(heal);
        }
        let _ = reply.send(HealOutcome {
            check: check.config.name().to_string(),
            result: result.clone(),
            policies: decisions,
        });
        for (policy, run, evidence) in ladders {
            if let Err(e) = self.run_ladder(policy, run, evidence, shutdown).await {
                tracing::error!(policy = policy.config.name(), "{e:#}");
            }
        }
    }

    /// Opens the incident of a manual heal, or says why not (with the
    /// incident already open, if that is why).
    #[allow(clippy::type_complexity)]
    fn start_manual(
        &self,
        policy: &PolicySlot,
        result: &LastResult,
        dry_run: bool,
        source: &str,
    ) -> anyhow::Result<Result<(Ladder, Vec<Finding>, String), (Option<i64>, String)>> {
        if let Some(inc) = self.store.open_incident_for(policy.config.name())? {
            return Ok(Err((
                Some(inc.id),
                format!(
                    "incident {} is already open ({})",
                    inc.id,
                    inc.state.as_str()
                ),
            )));
        }
        let evidence = self.matching(policy, &result.findings);
        if evidence.is_empty() {
            return Ok(Err((
                None,
                format!(
                    "nothing to heal: no finding matches the policy (the check says {:?})",
                    result.status
                )
                .to_lowercase(),
            )));
        }
        let mut d = self.diagnose(policy, evidence.clone(), true);
        if d.decision != Decision::Remediate {
            return Ok(Err((None, d.reason)));
        }
        // The trigger did not fire: the evidence is the reason.
        let codes: BTreeSet<&str> = evidence.iter().map(|f| f.code.as_str()).collect();
        d.reason = format!(
            "manual heal requested by {source}: {}",
            codes.into_iter().collect::<Vec<_>>().join(", ")
        );
        let id = self.open(policy, &d, dry_run)?;
        let run = Ladder {
            incident: id,
            opened_at: self.clock.now(),
            dry_run,
            done: BTreeSet::new(),
        };
        Ok(Ok((run, evidence, d.reason)))
    }

    /// Counts an attempt's outcome in the metrics.
    fn count(&self, policy: &PolicySlot, step: &str, outcome: AttemptOutcome) {
        self.metrics
            .attempt(policy.config.name(), step, outcome.as_str());
    }

    /// Why no action may run for this policy right now (pause,
    /// maintenance), if so.
    pub(super) fn held_off(&self, policy: &PolicySlot) -> Option<String> {
        if policy.config.paused {
            return Some("the policy is paused".into());
        }
        if let Some(p) = self.paused() {
            return Some(format!("mend is paused: {}", p.reason));
        }
        if let Some(p) = self.check_paused(policy.check) {
            return Some(format!(
                "check {} is paused: {}",
                self.checks[policy.check].config.name(),
                p.reason
            ));
        }
        let now = self.clock.now();
        policy
            .config
            .maintenance
            .iter()
            .find(|w| w.contains(now))
            .map(|w| format!("inside maintenance window {}–{} UTC", w.start, w.end))
    }

    fn dry_run(&self, policy: &PolicySlot) -> bool {
        self.config.engine.dry_run || policy.config.dry_run
    }

    fn open(&self, policy: &PolicySlot, d: &Diagnosis, dry_run: bool) -> anyhow::Result<i64> {
        let now = self.clock.now();
        let id = self.store.open_incident(&NewIncident {
            policy: policy.config.name(),
            check: &d.check,
            opened_at: now,
            root_cause: &d.root_cause,
            diagnosis: &serde_json::to_value(d)?,
            dry_run,
        })?;
        let bad_since = lock(&self.checks[policy.check].state).bad_since;
        self.metrics.opened(
            policy.config.name(),
            bad_since.map(|b| now.saturating_sub(b)),
        );
        tracing::warn!(
            incident = id,
            check = %d.check,
            policy = %d.policy,
            decision = ?d.decision,
            "incident opened: {}",
            d.reason
        );
        Ok(id)
    }

    fn close(
        &self,
        policy: &PolicySlot,
        id: i64,
        opened_at: u64,
        state: IncidentState,
        note: &str,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        self.store.close_incident(id, state, now, note)?;
        self.metrics.closed(
            policy.config.name(),
            state.as_str(),
            now.saturating_sub(opened_at),
        );
        let mut st = lock(&policy.state);
        st.last_closed = Some(now);
        st.trigger.reset();
        tracing::info!(
            incident = id,
            policy = policy.config.name(),
            state = state.as_str(),
            "incident closed: {note}"
        );
        Ok(())
    }

    /// The ladder's order: as configured, or by past success with
    /// `adaptive`.
    pub(super) fn ladder_order(&self, policy: &PolicySlot, evidence: &[Finding]) -> Vec<usize> {
        if !policy.config.adaptive {
            return (0..policy.steps.len()).collect();
        }
        let code = evidence.first().map(|f| f.code.as_str()).unwrap_or("");
        adaptive::order(policy.steps.len(), |i| {
            self.store
                .step_stats(code, &policy.steps[i].name)
                .unwrap_or_default()
        })
    }

    /// Walks the ladder, skipping the steps already tried.
    async fn run_ladder(
        &self,
        policy: &PolicySlot,
        run: Ladder,
        evidence: Vec<Finding>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        let Ladder {
            incident,
            opened_at,
            dry_run,
            done,
        } = run;
        let mut shutdown = shutdown.clone();
        let check = &self.checks[policy.check];
        let check_name = check.config.name();
        let code = evidence.first().map(|f| f.code.clone()).unwrap_or_default();
        let order = self.ladder_order(policy, &evidence);
        let window = policy.config.window.0;
        let mut tried = 0u32;

        for (pos, &si) in order.iter().enumerate() {
            if done.contains(&si) {
                continue;
            }
            if shutdown.is_fired() {
                return Ok(()); // resumes on the next start
            }
            // A maintenance window (or a pause) that began mid-ladder: stop
            // here; the incident stays open and resumes afterwards.
            if let Some(why) = self.held_off(policy) {
                tracing::info!(incident, "pausing the ladder: {why}");
                return Ok(());
            }
            let step = &policy.steps[si];
            let now = self.clock.now();
            let allowed =
                lock(&policy.state)
                    .attempts
                    .allows(now, policy.config.max_attempts, window);
            // Skipping a step is recorded like any attempt.
            let skip = |outcome: AttemptOutcome, detail: serde_json::Value| {
                self.count(policy, &step.name, outcome);
                self.store
                    .note_attempt(incident, si as u32, &step.name, outcome, &detail, now)
            };
            if !allowed {
                let note = format!(
                    "attempt cap reached: {} attempts in {}",
                    policy.config.max_attempts,
                    humantime::format_duration(window)
                );
                skip(AttemptOutcome::Skipped, json!({"reason": note}))?;
                return self.escalate(policy, incident, &evidence, &note).await;
            }
            let Some(plugin) = self.plugin_set().plugins.get(&step.action).cloned() else {
                let note = format!("action plugin {} is not loaded", step.action);
                skip(AttemptOutcome::Failed, json!({"error": note}))?;
                continue;
            };
            // Asked last: letting a half-open probe through commits to it.
            // A dry run tests nothing, so it neither asks nor records.
            let breaker_allows = dry_run
                || lock(&policy.state)
                    .breakers
                    .entry(step.name.clone())
                    .or_default()
                    .allow(now, &policy.breaker);
            if !breaker_allows {
                let note = format!("circuit breaker for ({check_name}, {}) is open", step.name);
                tracing::warn!(incident, "{note}");
                skip(AttemptOutcome::Skipped, json!({"reason": note}))?;
                continue;
            }

            // Durable before acting.
            let attempt = self
                .store
                .start_attempt(incident, si as u32, &step.name, dry_run, now)?;
            lock(&policy.state).attempts.record(now, window);
            tracing::warn!(incident, step = %step.name, action = %step.action, dry_run, "running action");
            let req = Request {
                check: check_name,
                config: &step.config_json,
                grants: &step.grants,
                limits: step.limits,
            };
            let result = {
                let _permit = self.bulkhead.acquire().await;
                self.runtime.remedy(&plugin, &req, &evidence, dry_run).await
            };
            let report = match result {
                Err(e) => {
                    tracing::error!(incident, action = %step.action, kind = e.kind(), "{e}");
                    self.metrics.plugin_error(&step.action, e.kind());
                    self.count(policy, &step.name, AttemptOutcome::Failed);
                    self.store.finish_attempt(
                        attempt,
                        AttemptOutcome::Failed,
                        &json!({"error": e}),
                        0,
                        None,
                        self.clock.now(),
                    )?;
                    if !dry_run {
                        self.record_step(policy, &code, &step.name, false, opened_at)?;
                    }
                    tried += 1;
                    if !self
                        .backoff(policy, tried, pos, &order, &mut shutdown)
                        .await
                    {
                        return Ok(());
                    }
                    continue;
                }
                Ok(r) => r,
            };
            let duration_ms = report.duration.as_millis() as u64;
            self.metrics.fuel(&step.action, report.fuel_used);
            self.metrics
                .action_duration(policy.config.name(), &step.name, report.duration);
            if dry_run {
                self.count(policy, &step.name, AttemptOutcome::Planned);
                self.store.finish_attempt(
                    attempt,
                    AttemptOutcome::Planned,
                    &json!({"outcome": report.value}),
                    duration_ms,
                    Some(report.fuel_used),
                    self.clock.now(),
                )?;
                return self.close(
                    policy,
                    incident,
                    opened_at,
                    IncidentState::Planned,
                    "dry-run: plan recorded, nothing changed",
                );
            }

            // Verify after the settle delay.
            if !shutdown.sleep(step.settle).await {
                self.count(policy, &step.name, AttemptOutcome::Interrupted);
                self.store.finish_attempt(
                    attempt,
                    AttemptOutcome::Interrupted,
                    &json!({"outcome": report.value, "note": "shut down before verification"}),
                    duration_ms,
                    Some(report.fuel_used),
                    self.clock.now(),
                )?;
                return Ok(());
            }
            let verify = self.detect(policy.check).await;
            self.observe(policy.check, &verify);
            // Healed: nothing the policy matches any more, and not worse than
            // what triggered it (a fix that turns warn into fail is no heal).
            let healed = verify.status != Status::Unknown
                && self.matching(policy, &verify.findings).is_empty()
                && verify.status.severity()
                    <= evidence
                        .iter()
                        .map(|f| f.status.severity())
                        .min()
                        .unwrap_or(0);
            let outcome = if healed {
                AttemptOutcome::Healed
            } else {
                AttemptOutcome::NotHealed
            };
            self.count(policy, &step.name, outcome);
            self.store.finish_attempt(
                attempt,
                outcome,
                &json!({"outcome": report.value, "verification": verify.findings}),
                duration_ms,
                Some(report.fuel_used),
                self.clock.now(),
            )?;
            self.record_step(policy, &code, &step.name, healed, opened_at)?;
            if healed {
                return self.close(
                    policy,
                    incident,
                    opened_at,
                    IncidentState::Healed,
                    &format!("healed by {}", step.name),
                );
            }
            tried += 1;
            if !self
                .backoff(policy, tried, pos, &order, &mut shutdown)
                .await
            {
                return Ok(());
            }
        }
        let note = format!(
            "ladder exhausted after {} step(s) without a verified heal",
            order.len()
        );
        self.escalate(policy, incident, &evidence, &note).await
    }

    /// Waits the backoff before the next step (none after the last).
    /// Returns false if shutdown fired.
    async fn backoff(
        &self,
        policy: &PolicySlot,
        tried: u32,
        pos: usize,
        order: &[usize],
        shutdown: &mut Shutdown,
    ) -> bool {
        if pos + 1 >= order.len() {
            return true;
        }
        let delay = policy
            .config
            .backoff
            .backoff()
            .delay(tried.saturating_sub(1), fastrand::f64());
        tracing::info!(policy = policy.config.name(), delay = ?delay, "backing off before the next step");
        shutdown.sleep(delay).await
    }

    fn record_step(
        &self,
        policy: &PolicySlot,
        code: &str,
        step: &str,
        healed: bool,
        opened_at: u64,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        let check = self.checks[policy.check].config.name();
        let breaker = {
            let mut st = lock(&policy.state);
            let b = st.breakers.entry(step.to_string()).or_default();
            b.record(healed, now, &policy.breaker);
            *b
        };
        self.metrics.breaker(check, step, &breaker.state);
        self.store.save_breaker(check, step, &breaker)?;
        self.store
            .record_step_result(code, step, healed, now.saturating_sub(opened_at))
    }

    /// Escalates the incident exactly once, then stops acting on it until
    /// the check is healthy again.
    async fn escalate(
        &self,
        policy: &PolicySlot,
        incident: i64,
        evidence: &[Finding],
        note: &str,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        if !self.store.escalate_incident(incident, now, note)? {
            return Ok(());
        }
        self.metrics.escalated(policy.config.name());
        tracing::error!(
            incident,
            policy = policy.config.name(),
            "escalating: {note}"
        );
        if let Some(step) = &policy.escalate {
            // Durable before acting, like every step.
            let attempt = self.store.start_attempt(
                incident,
                ESCALATION_STEP,
                &step.name,
                self.dry_run(policy),
                now,
            )?;
            let plugin = self.plugin_set().plugins.get(&step.action).cloned();
            let detail = match plugin {
                None => {
                    json!({"error": format!("escalation plugin {} is not loaded", step.action)})
                }
                Some(plugin) => {
                    let req = Request {
                        check: self.checks[policy.check].config.name(),
                        config: &step.config_json,
                        grants: &step.grants,
                        limits: step.limits,
                    };
                    let _permit = self.bulkhead.acquire().await;
                    match self
                        .runtime
                        .remedy(&plugin, &req, evidence, self.dry_run(policy))
                        .await
                    {
                        Ok(r) => json!({"outcome": r.value, "note": note}),
                        Err(e) => {
                            tracing::error!(incident, "escalation action failed: {e}");
                            json!({"error": e, "note": note})
                        }
                    }
                }
            };
            let took = self.clock.now().saturating_sub(now);
            self.count(policy, &step.name, AttemptOutcome::Escalation);
            self.store.finish_attempt(
                attempt,
                AttemptOutcome::Escalation,
                &detail,
                took,
                None,
                self.clock.now(),
            )?;
        }
        if policy.config.exit_on_exhausted {
            tracing::error!(
                policy = policy.config.name(),
                "exit_on_exhausted: asking the supervisor to restart mend"
            );
            *lock(&self.exit_code) = Some(EXIT_HEAVY_HEAL);
            self.exit_requested.notify_one();
        }
        Ok(())
    }
}
