//! Stages 3 and 4, recover and verify: one incident's walk of its policy's
//! ladder. An [`IncidentRun`] opens the incident (or resumes one left
//! open), runs each step, verifies after it, and ends healed, planned (dry
//! run), escalated exactly once, or paused until it can go on.
//!
//! Every step is written to the store *before* it runs (as `running`) and
//! after it ends, so a kill at any instant loses nothing. Limits wrap every
//! step: the policy's attempt window, the breaker of (check, step), and
//! backoff with jitter between steps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::diagnose::{Diagnosis, held_off};
use super::shutdown::Shutdown;
use super::state::Detection;
use super::{Engine, lock};
use crate::capabilities::exec::{SpawnHook, Spawned};
use crate::contract::{Finding, RemedyContext, Status, StepRef};
use crate::plan::{PolicyPlan, StepPlan};
use crate::policy::adaptive;
use crate::runtime::Request;
use crate::store::{Attempt, AttemptOutcome, EventKind, Incident, IncidentState, NewIncident};
use crate::values::Millis;

/// Exit code for the "heavy heal": EX_TEMPFAIL, so systemd's
/// `Restart=on-failure` starts mend afresh.
pub const EXIT_HEAVY_HEAL: i32 = 75;

/// One walk of a policy's ladder for one incident.
pub(super) struct IncidentRun<'e> {
    engine: &'e Engine,
    /// The policy, by index in the plan.
    pi: usize,
    incident: i64,
    opened_at: Millis,
    dry_run: bool,
    evidence: Vec<Finding>,
    /// Steps (by index) already tried for this incident.
    done: BTreeSet<usize>,
    /// Of `done`, steps a stop cut short before anything of them was
    /// recorded: run once more before the ladder is called exhausted.
    cut_short: BTreeSet<usize>,
    /// How many times each step ran for this incident.
    tries: BTreeMap<usize, u32>,
    /// Set for an operator's heal: never triggers `exit_on_exhausted`;
    /// with `force`, not held by the attempt cap.
    operator: Option<super::lifecycle::Operator>,
}

/// How one step ended.
enum StepOutcome {
    /// Not run: its breaker is open.
    Skipped,
    /// The action itself failed.
    Failed,
    /// Dry run: its plan is recorded.
    Planned,
    /// The action ran; verification said whether it healed.
    Verified { healed: bool },
}

/// What a step's verification came to.
struct Verified {
    /// Every probe passed.
    held: bool,
    /// Probes that passed.
    passed: u32,
    /// The last probe.
    last: Detection,
}

/// Why a walk stopped before its end.
enum Stop {
    /// Shutting down: the incident resumes on the next start.
    Shutdown,
    /// The step's fleet budget has no free slot (the denial is noted on
    /// the incident), or the slot's lease was lost mid-action: the incident
    /// stays open and asks again on its check's next run.
    Fleet,
    /// Paused, in maintenance: the incident resumes afterwards.
    HeldOff(String),
    /// The attempt cap is reached: escalate.
    Capped(String),
    /// A person resolved the incident meanwhile.
    Closed,
}

impl<'e> IncidentRun<'e> {
    /// Opens an incident for `diagnosis` (durable before anything acts).
    pub(super) fn open(
        engine: &'e Engine,
        pi: usize,
        diagnosis: &Diagnosis,
        dry_run: bool,
    ) -> anyhow::Result<IncidentRun<'e>> {
        let policy = &engine.plan.policies[pi];
        let now = engine.clock.now();
        crate::crash::point("before-incident");
        let id = engine.store.open_incident(&NewIncident {
            policy: &policy.name,
            check: &diagnosis.check,
            opened_at: now,
            root_cause: &diagnosis.root_cause,
            diagnosis: &serde_json::to_value(diagnosis)?,
            dry_run,
            severity: engine.plan.checks[policy.check].severity,
        })?;
        crate::crash::point("after-incident");
        let bad_since = lock(&engine.checks[policy.check].state).bad_since;
        engine.metrics.opened(
            &policy.name,
            engine.plan.checks[policy.check].severity.as_str(),
            bad_since.map(|b| now.saturating_sub(b)),
        );
        tracing::warn!(
            incident = id,
            check = %diagnosis.check,
            policy = %diagnosis.policy,
            decision = ?diagnosis.decision,
            "incident opened: {}",
            diagnosis.reason
        );
        Ok(IncidentRun {
            engine,
            pi,
            incident: id,
            opened_at: now,
            dry_run,
            evidence: diagnosis.evidence.clone(),
            done: BTreeSet::new(),
            cut_short: BTreeSet::new(),
            tries: BTreeMap::new(),
            operator: None,
        })
    }

    /// Takes up an incident left open, skipping the steps it tried.
    pub(super) fn resume(
        engine: &'e Engine,
        pi: usize,
        inc: &Incident,
        evidence: Vec<Finding>,
    ) -> IncidentRun<'e> {
        let mut tries = BTreeMap::new();
        let mut cut = BTreeSet::new();
        for a in &inc.attempts {
            if let StepRef::Ladder(i) = a.step {
                *tries.entry(i as usize).or_insert(0) += 1;
                // The last attempt of the step decides.
                if cut_short(a) {
                    cut.insert(i as usize);
                } else {
                    cut.remove(&(i as usize));
                }
            }
        }
        IncidentRun {
            engine,
            pi,
            incident: inc.id,
            opened_at: inc.opened_at,
            dry_run: inc.dry_run,
            evidence,
            done: tries.keys().copied().collect(),
            cut_short: cut,
            tries,
            operator: None,
        }
    }

    /// Walks the whole ladder again for an incident already worked on
    /// (after escalation, when the evidence changed, or an operator's
    /// heal); attempt numbers go on from the earlier walks.
    pub(super) fn again(
        engine: &'e Engine,
        pi: usize,
        inc: &Incident,
        evidence: Vec<Finding>,
    ) -> IncidentRun<'e> {
        let mut run = Self::resume(engine, pi, inc, evidence);
        run.done.clear();
        run.cut_short.clear();
        run
    }

    /// Marks this walk as an operator's.
    pub(super) fn by_operator(mut self, operator: super::lifecycle::Operator) -> Self {
        self.operator = Some(operator);
        self
    }

    /// The check of `inc` went bad again within `relapse_window` of its
    /// heal: reopens the same incident, marks the healing attempt
    /// `relapsed`, and takes its success back from the stats and the
    /// breaker. Returns the reopened incident (None: `inc` had no heal).
    pub(super) fn relapse(
        engine: &'e Engine,
        pi: usize,
        inc: &Incident,
    ) -> anyhow::Result<Option<Incident>> {
        let Some(heal) = inc
            .attempts
            .iter()
            .rev()
            .find(|a| a.outcome == AttemptOutcome::Healed)
        else {
            return Ok(None);
        };
        let now = engine.clock.now();
        let after = now.saturating_sub(inc.closed_at.unwrap_or(now));
        let note = format!(
            "relapsed {} after {} healed it (relapse {})",
            humantime::format_duration(Duration::from_secs(after / 1000)),
            heal.action,
            inc.relapses + 1
        );
        if !engine.store.reopen_relapsed(inc.id, heal.id, now, &note)? {
            return Ok(None);
        }
        let code = heal.detail["code"].as_str().unwrap_or_default();
        let heal_ms = heal.detail["heal_ms"].as_u64().unwrap_or(0);
        engine.withdraw_step(pi, code, &heal.action, heal_ms)?;
        tracing::warn!(incident = inc.id, policy = %inc.policy, step = %heal.action, "{note}: incident reopened");
        engine.store.incident(inc.id)
    }

    /// The last ladder attempt of `inc`, if a stop interrupted it and no
    /// verification after the restart has looked at it yet.
    pub(super) fn interrupted(inc: &Incident) -> Option<&Attempt> {
        // Open, or `remediating` as the stop left it.
        if !matches!(inc.state, IncidentState::Open | IncidentState::Remediating) || inc.dry_run {
            return None;
        }
        let last = inc
            .attempts
            .iter()
            .rev()
            .find(|a| matches!(a.step, StepRef::Ladder(_)))?;
        (last.outcome == AttemptOutcome::Interrupted && last.detail.get("after_restart").is_none())
            .then_some(last)
    }

    /// After a restart, an attempt the stop interrupted may have done its
    /// work (its command went on as an orphan, or only the verification
    /// was cut short). So: wait for the processes it recorded to be gone
    /// (killing them past their command's timeout, as the mend that
    /// started them would have), give the step its settle, and verify. A
    /// heal is credited to that attempt and closes the incident. Returns
    /// the last probe and whether it healed; None if shutting down.
    pub(super) async fn settle_interrupted(
        &self,
        attempt: &Attempt,
        code: &str,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Option<(bool, Detection)>> {
        let engine = self.engine;
        let policy = self.policy();
        let step = match attempt.step {
            StepRef::Ladder(i) => policy
                .steps
                .get(i as usize)
                .filter(|s| s.name == attempt.action),
            StepRef::Escalation => None,
        };
        let settle = step.map_or(Duration::ZERO, |s| s.settle);
        let processes: Vec<(Spawned, Millis)> = attempt.detail["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let started = p["started_at"].as_u64()?;
                Some((serde_json::from_value(p.clone()).ok()?, started))
            })
            .collect();
        tracing::warn!(
            incident = self.incident,
            step = %attempt.action,
            processes = processes.len(),
            "this step was interrupted: waiting for what it started, then verifying"
        );
        let mut shutdown = shutdown.clone();
        let mut killed = Vec::new();
        loop {
            let now = engine.clock.now();
            let mut waiting = false;
            for (p, started) in &processes {
                if !p.alive() {
                    continue;
                }
                if now >= started.saturating_add(p.timeout_ms) {
                    tracing::warn!(incident = self.incident, command = %p.command, pid = p.pid, "an orphaned command outlived its timeout: killing it");
                    p.kill_group();
                    killed.push(p.pid);
                } else {
                    waiting = true;
                }
            }
            if !waiting {
                break;
            }
            if !shutdown.sleep(Duration::from_millis(200)).await {
                return Ok(None);
            }
        }
        let Some(verified) = self.verify_after(settle, &mut shutdown).await else {
            return Ok(None);
        };
        let now = engine.clock.now();
        let heal_ms = now.saturating_sub(self.opened_at);
        let mut detail = attempt.detail.clone();
        if !detail.is_object() {
            detail = json!({});
        }
        detail["after_restart"] = json!({
            "verification": verified.last.findings,
            "probes": verified.passed,
            "probes_needed": policy.verify.probes,
            "waited_for": processes.len(),
            "killed": killed,
        });
        let (outcome, healed) = match step {
            Some(_) if verified.held => (AttemptOutcome::Healed, true),
            _ => (AttemptOutcome::Interrupted, false),
        };
        if healed {
            detail["code"] = json!(code);
            detail["heal_ms"] = json!(heal_ms);
        }
        engine.store.finish_attempt(
            attempt.id,
            outcome,
            &detail,
            attempt.duration_ms.unwrap_or(0),
            attempt.fuel_used,
            now,
        )?;
        if healed {
            engine.count(policy, &attempt.action, AttemptOutcome::Healed);
            engine.record_step(self.pi, code, &attempt.action, true, heal_ms)?;
            self.close(
                IncidentState::Healed,
                &format!(
                    "healed by {} (interrupted, then verified: credited to it)",
                    attempt.action
                ),
            )?;
        }
        Ok(Some((healed, verified.last)))
    }

    pub(super) fn id(&self) -> i64 {
        self.incident
    }

    fn policy(&self) -> &'e PolicyPlan {
        &self.engine.plan.policies[self.pi]
    }

    /// Walks the ladder, skipping the steps already tried.
    pub(super) async fn run(mut self, shutdown: &Shutdown) -> anyhow::Result<()> {
        let mut shutdown = shutdown.clone();
        let order = self.engine.ladder_order(self.pi, &self.evidence);
        let (mut tried, mut skipped) = (0u32, Vec::new());
        // Steps a stop cut short before they recorded anything go again,
        // once, if nothing else is left: a human is not called for a step
        // that may never have acted.
        if !self.dry_run && order.iter().all(|si| self.done.contains(si)) {
            for si in std::mem::take(&mut self.cut_short) {
                self.done.remove(&si);
            }
        }
        for (pos, &si) in order.iter().enumerate() {
            if self.done.contains(&si) {
                continue;
            }
            match self.step(si, &shutdown).await? {
                Err(Stop::Shutdown | Stop::Fleet | Stop::Closed) => return Ok(()),
                Err(Stop::HeldOff(why)) => {
                    tracing::info!(incident = self.incident, "pausing the ladder: {why}");
                    return Ok(());
                }
                Err(Stop::Capped(note)) => return self.escalate(&note).await,
                Ok(StepOutcome::Verified { healed: true }) => {
                    let step = &self.policy().steps[si].name;
                    return self.close(IncidentState::Healed, &format!("healed by {step}"));
                }
                Ok(StepOutcome::Planned) => continue,
                Ok(StepOutcome::Skipped) => skipped.push(self.policy().steps[si].name.clone()),
                Ok(StepOutcome::Failed | StepOutcome::Verified { healed: false }) => {
                    tried += 1;
                    if pos + 1 < order.len() && !self.backoff(tried, &mut shutdown).await? {
                        return Ok(());
                    }
                }
            }
        }
        if self.dry_run {
            return self.close(
                IncidentState::Planned,
                "dry-run: the whole ladder's plan is recorded, nothing changed",
            );
        }
        let note = match (tried, skipped.is_empty()) {
            // Resumed (after a relapse) with nothing left to try.
            (0, true) => "ladder exhausted: every step was already tried for this incident".into(),
            (0, false) => format!(
                "no step could run: the circuit breaker is open for {}",
                skipped.join(", ")
            ),
            (n, true) => format!("ladder exhausted after {n} step(s) without a verified heal"),
            (n, false) => format!(
                "ladder exhausted after {n} step(s) without a verified heal ({} skipped: circuit breaker open)",
                skipped.join(", ")
            ),
        };
        self.escalate(&note).await
    }

    /// Runs step `si`: the guards, the action, and its verification.
    async fn step(
        &mut self,
        si: usize,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Result<StepOutcome, Stop>> {
        let engine = self.engine;
        let policy = self.policy();
        let step = &policy.steps[si];
        let step_ref = StepRef::Ladder(si as u32);
        if shutdown.is_fired() {
            return Ok(Err(Stop::Shutdown));
        }
        // A person may have resolved it meanwhile.
        if engine
            .store
            .incident_phase(self.incident)?
            .is_none_or(|(_, closed)| closed)
        {
            return Ok(Err(Stop::Closed));
        }
        // A maintenance window (or a pause) that began mid-ladder stops it
        // here; the incident stays open and resumes afterwards.
        let now = engine.clock.now();
        let pause = engine.paused();
        let check_pause = engine.check_paused(policy.check);
        if let Some(why) = held_off(
            pause.as_ref(),
            check_pause.as_ref(),
            policy.paused,
            &policy.maintenance,
            now,
        ) {
            return Ok(Err(Stop::HeldOff(why)));
        }
        // Open too long (`escalate_after`): call a human; the ladder goes
        // on. Not while paused: the operator knows.
        self.page_if_overdue().await?;
        // A dry run changes nothing, so it spends no attempt and asks no
        // breaker; an operator's forced heal is not held by the cap.
        let forced = self.operator.as_ref().is_some_and(|o| o.force);
        if !self.dry_run && !forced {
            let allowed = lock(&engine.policies[self.pi].state).attempts.allows(
                now,
                policy.max_attempts,
                policy.window,
            );
            if !allowed {
                let note = format!(
                    "attempt cap reached: {} attempts in {}",
                    policy.max_attempts,
                    humantime::format_duration(policy.window)
                );
                self.note(
                    step_ref,
                    &step.name,
                    AttemptOutcome::Skipped,
                    json!({"reason": note}),
                )?;
                return Ok(Err(Stop::Capped(note)));
            }
        }
        // A budgeted step takes its fleet slot before it acts (a dry run
        // takes none).
        let slot = match (&step.budget, engine.fleet(), self.dry_run) {
            (Some(budget), Some(fleet), false) => {
                let holder = crate::fleet::Holder {
                    policy: policy.name.clone(),
                    check: engine.plan.checks[policy.check].name.clone(),
                    incident: self.incident,
                    step: step.name.clone(),
                };
                let mut shutdown = shutdown.clone();
                tokio::select! {
                    r = fleet.acquire(budget, &holder) => match r {
                        Ok(slot) => Some(slot),
                        Err(_) => return Ok(Err(Stop::Fleet)),
                    },
                    _ = shutdown.fired() => return Ok(Err(Stop::Shutdown)),
                }
            }
            _ => None,
        };
        if !self.dry_run {
            // Asked last: letting a half-open probe through commits to it.
            let breaker_allows = lock(&engine.policies[self.pi].state)
                .breakers
                .entry(step.name.clone())
                .or_default()
                .allow(now, &policy.breaker);
            if !breaker_allows {
                let check = &engine.plan.checks[policy.check].name;
                let note = format!("circuit breaker for ({check}, {}) is open", step.name);
                tracing::warn!(incident = self.incident, "{note}");
                self.note(
                    step_ref,
                    &step.name,
                    AttemptOutcome::Skipped,
                    json!({"reason": note}),
                )?;
                crate::fleet::release(slot).await;
                return Ok(Ok(StepOutcome::Skipped));
            }
        }

        // Durable before acting.
        let attempt =
            engine
                .store
                .start_attempt(self.incident, step_ref, &step.name, self.dry_run, now)?;
        engine
            .store
            .set_incident_state(self.incident, IncidentState::Remediating)?;
        crate::crash::point("after-attempt");
        if !self.dry_run {
            lock(&engine.policies[self.pi].state)
                .attempts
                .record(now, policy.window);
        }
        let n = self.tries.entry(si).or_insert(0);
        *n += 1;
        let context = RemedyContext {
            incident: self.incident as u64,
            policy: policy.name.clone(),
            step: step.name.clone(),
            step_ref,
            attempt: *n,
            severity: engine.plan.checks[policy.check].severity,
            dry_run: self.dry_run,
            trail: Vec::new(),
            link: None,
        };
        tracing::warn!(incident = self.incident, step = %step.name, action = %step.action, dry_run = self.dry_run, "running action");
        // `on_lease_lost = "abort"` cancels the action when its lease runs
        // out.
        // Each process a command starts is recorded before it is waited
        // for: after a crash, the restart waits for the orphan.
        let on_spawn: Option<SpawnHook> = (!self.dry_run).then(|| {
            let store = engine.store.clone();
            let clock = engine.clock;
            Arc::new(move |p: &Spawned| {
                let mut v = serde_json::to_value(p).unwrap_or_default();
                v["started_at"] = json!(clock.now());
                if let Err(e) = store.record_process(attempt, &v) {
                    tracing::error!(attempt, command = %p.command, "recording the process: {e:#}");
                }
            }) as SpawnHook
        });
        let call = engine.run_action(policy, step, &self.evidence, context, on_spawn);
        let result = match crate::fleet::guarded(slot.as_ref(), call).await {
            Ok(r) => r,
            Err(lost) => {
                tracing::error!(incident = self.incident, step = %step.name, "{lost}");
                engine.count(policy, &step.name, AttemptOutcome::Interrupted);
                engine.store.finish_attempt(
                    attempt,
                    AttemptOutcome::Interrupted,
                    &json!({"note": lost.to_string()}),
                    0,
                    None,
                    engine.clock.now(),
                )?;
                crate::fleet::release(slot).await;
                return Ok(Err(Stop::Fleet));
            }
        };
        crate::crash::point("after-action");
        let code = self
            .evidence
            .first()
            .map(|f| f.code.clone())
            .unwrap_or_default();
        let finish = |outcome, detail, ms, fuel| {
            engine.count(policy, &step.name, outcome);
            engine
                .store
                .finish_attempt(attempt, outcome, &detail, ms, fuel, engine.clock.now())
        };
        let report = match result {
            Err(e) => {
                tracing::error!(incident = self.incident, action = %step.action, kind = e.kind(), "{e}");
                engine.metrics.plugin_error(&step.action, e.kind());
                finish(AttemptOutcome::Failed, json!({"error": e}), 0, None)?;
                if !self.dry_run {
                    engine.record_step(self.pi, &code, &step.name, false, 0)?;
                }
                crate::fleet::release(slot).await;
                return Ok(Ok(StepOutcome::Failed));
            }
            Ok(r) => r,
        };
        let ms = report.duration.as_millis() as u64;
        engine.metrics.fuel(&step.action, report.fuel_used);
        engine
            .metrics
            .action_duration(&policy.name, &step.name, report.duration);
        if self.dry_run {
            finish(
                AttemptOutcome::Planned,
                json!({"outcome": report.value}),
                ms,
                Some(report.fuel_used),
            )?;
            return Ok(Ok(StepOutcome::Planned));
        }

        // Verify soon after the action, looking again (backing off) up to
        // the settle; then over the verification window.
        let mut shutdown = shutdown.clone();
        let verified = self.verify_after(step.settle, &mut shutdown).await;
        let Some(verified) = verified else {
            finish(
                AttemptOutcome::Interrupted,
                json!({"outcome": report.value, "note": "shut down before verification ended"}),
                ms,
                Some(report.fuel_used),
            )?;
            crate::fleet::release(slot).await;
            return Ok(Err(Stop::Shutdown));
        };
        let healed = verified.held;
        let outcome = if healed {
            AttemptOutcome::Healed
        } else {
            AttemptOutcome::NotHealed
        };
        let heal_ms = engine.clock.now().saturating_sub(self.opened_at);
        finish(
            outcome,
            json!({
                "outcome": report.value,
                "verification": verified.last.findings,
                "probes": verified.passed,
                "probes_needed": policy.verify.probes,
                "code": code,
                "heal_ms": heal_ms,
            }),
            ms,
            Some(report.fuel_used),
        )?;
        // The slot is held through verification, then handed back.
        crate::fleet::release(slot).await;
        engine.record_step(self.pi, &code, &step.name, healed, heal_ms)?;
        Ok(Ok(StepOutcome::Verified { healed }))
    }

    /// Verifies a step that just acted: looks at `verify.poll`, then
    /// backing off up to `settle`, for a first passing probe; from it,
    /// [`Self::verify_holds`]. Not passing by `settle`: not healed. None:
    /// shutting down.
    async fn verify_after(&self, settle: Duration, shutdown: &mut Shutdown) -> Option<Verified> {
        let mut waited = Duration::ZERO;
        let polls = self.policy().verify.settle_polls(settle);
        let last_poll = polls.len() - 1;
        for (i, at) in polls.into_iter().enumerate() {
            if !shutdown.sleep(at.saturating_sub(waited)).await {
                return None;
            }
            waited = at;
            let first = self.verify().await;
            if self.heals(&first) {
                return self.verify_holds(first, shutdown).await;
            }
            if i == last_poll {
                return Some(Verified {
                    held: false,
                    passed: 0,
                    last: first,
                });
            }
        }
        None
    }

    /// From a first passing probe, probes the check until `verify.probes`
    /// pass, spread over `verify.window`; the first failing probe ends it.
    /// None: shutting down.
    async fn verify_holds(&self, first: Detection, shutdown: &mut Shutdown) -> Option<Verified> {
        let v = self.policy().verify;
        let mut passed = 1;
        let mut last = first;
        loop {
            if passed >= v.probes.max(1) {
                return Some(Verified {
                    held: true,
                    passed,
                    last,
                });
            }
            if !shutdown.sleep(v.gap_before(passed)).await {
                return None;
            }
            last = self.verify().await;
            if !self.heals(&last) {
                return Some(Verified {
                    held: false,
                    passed,
                    last,
                });
            }
            passed += 1;
        }
    }

    /// A fresh detect of the check, which also feeds its health.
    async fn verify(&self) -> Detection {
        let idx = self.policy().check;
        let verification = std::sync::Arc::new(self.engine.detect(idx).await);
        self.engine.observe(idx, verification.clone());
        crate::crash::point("mid-verify");
        std::sync::Arc::unwrap_or_clone(verification)
    }

    /// Healed: nothing the policy matches any more (its metric back within
    /// the baseline, for an anomaly policy), and not worse than what
    /// triggered it (a fix that turns warn into fail is no heal).
    fn heals(&self, verification: &Detection) -> bool {
        let policy = self.policy();
        let gone = if policy.anomaly.is_some() {
            self.engine
                .anomaly_healed(self.pi, &verification.findings, verification.at)
        } else {
            !verification.findings.iter().any(|f| policy.matches(f))
        };
        verification.status != Status::Unknown
            && gone
            && verification.status.severity()
                <= self
                    .evidence
                    .iter()
                    .map(|f| f.status.severity())
                    .min()
                    .unwrap_or(0)
    }

    /// Records a step that did not run.
    fn note(
        &self,
        step_ref: StepRef,
        step: &str,
        outcome: AttemptOutcome,
        detail: serde_json::Value,
    ) -> anyhow::Result<()> {
        self.engine.count(self.policy(), step, outcome);
        self.engine.store.note_attempt(
            self.incident,
            step_ref,
            step,
            outcome,
            &detail,
            self.engine.clock.now(),
        )?;
        Ok(())
    }

    /// Waits the backoff before the next step (paging on the way if
    /// `escalate_after` passes meanwhile). Returns false if shutdown
    /// fired.
    async fn backoff(&self, tried: u32, shutdown: &mut Shutdown) -> anyhow::Result<bool> {
        let policy = self.policy();
        let delay = policy
            .backoff
            .delay(tried.saturating_sub(1), fastrand::f64());
        tracing::info!(policy = %policy.name, delay = ?delay, "backing off before the next step");
        if let Some(left) = self.until_overdue()
            && left < delay
        {
            if !shutdown.sleep(left).await {
                return Ok(false);
            }
            self.page_if_overdue().await?;
            return Ok(shutdown.sleep(delay - left).await);
        }
        Ok(shutdown.sleep(delay).await)
    }

    /// How long until `escalate_after` passes for this incident, if it is
    /// set and has not passed (and nobody was called yet).
    fn until_overdue(&self) -> Option<std::time::Duration> {
        let after = self.policy().escalate_after?;
        if self.dry_run {
            return None;
        }
        let age = self.engine.clock.now().saturating_sub(self.opened_at);
        let after_ms = after.as_millis() as u64;
        (age < after_ms).then(|| std::time::Duration::from_millis(after_ms - age))
    }

    /// Calls a human once the incident has been open `escalate_after`
    /// without a heal; the ladder goes on.
    async fn page_if_overdue(&self) -> anyhow::Result<()> {
        let Some(after) = self.policy().escalate_after else {
            return Ok(());
        };
        if self.dry_run || self.until_overdue().is_some() {
            return Ok(());
        }
        let note = format!(
            "open for {} without a verified heal (escalate_after); the ladder goes on",
            humantime::format_duration(after)
        );
        if self.page(&note).await? {
            // Still being worked on.
            self.engine
                .store
                .set_incident_state(self.incident, IncidentState::Remediating)?;
        }
        Ok(())
    }

    fn close(&self, state: IncidentState, note: &str) -> anyhow::Result<()> {
        self.engine
            .close_incident(self.pi, self.incident, self.opened_at, state, note)
    }

    /// Escalates the incident: a human is called exactly once per
    /// incident; a later walk that does not heal (a retry after the
    /// evidence changed) puts it back to escalated (or acknowledged)
    /// without a second call. mend keeps evaluating it (see
    /// `lifecycle.rs`).
    pub(super) async fn escalate(&self, note: &str) -> anyhow::Result<()> {
        if !self.page(note).await? {
            self.engine.store.back_to_escalated(self.incident, note)?;
            return Ok(());
        }
        let policy = self.policy();
        // An operator's heal never restarts mend under them.
        if policy.exit_on_exhausted && self.operator.is_none() {
            tracing::error!(policy = %policy.name, "exit_on_exhausted: asking the supervisor to restart mend");
            *lock(&self.engine.exit_code) = Some(EXIT_HEAVY_HEAL);
            self.engine.exit_requested.notify_one();
        }
        Ok(())
    }

    /// Calls a human about this incident, by its severity's route, unless
    /// one was called already (then false).
    async fn page(&self, note: &str) -> anyhow::Result<bool> {
        let engine = self.engine;
        let policy = self.policy();
        let now = engine.clock.now();
        if !engine.store.escalate_incident(self.incident, now, note)? {
            return Ok(false);
        }
        let severity = engine.plan.checks[policy.check].severity;
        engine.metrics.escalated(&policy.name, severity.as_str());
        tracing::error!(incident = self.incident, policy = %policy.name, severity = severity.as_str(), "escalating: {note}");
        engine.store.add_event(
            self.incident,
            now,
            EventKind::Escalated,
            "mend",
            note,
            &json!({
                "severity": severity.as_str(),
                "route": policy.escalate_route,
                "step": policy.escalate.as_ref().map(|s| s.name.clone()),
            }),
        )?;
        self.send_page(note, now).await?;
        Ok(true)
    }

    /// An escalated incident whose page a stop may have cut short: its
    /// escalation step was written but never finished (or never written).
    pub(super) fn page_lost(&self, inc: &Incident) -> bool {
        if inc.escalated_at.is_none() || inc.dry_run || self.policy().escalate.is_none() {
            return false;
        }
        let last = inc
            .attempts
            .iter()
            .rev()
            .find(|a| a.step == StepRef::Escalation);
        last.is_none_or(|a| a.outcome == AttemptOutcome::Interrupted && cut_short(a))
    }

    /// Sends the page [`Self::page_lost`] found cut short, again: at least
    /// once, so perhaps twice when the kill came between sending and
    /// recording it (the receiver has the incident id to deduplicate).
    pub(super) async fn resend_page(&self, inc: &Incident) -> anyhow::Result<()> {
        let engine = self.engine;
        let now = engine.clock.now();
        let lost = inc
            .attempts
            .iter()
            .rev()
            .find(|a| a.step == StepRef::Escalation);
        if let Some(a) = lost {
            let mut detail = a.detail.clone();
            if !detail.is_object() {
                detail = json!({});
            }
            detail["after_restart"] = json!({"resent": true});
            engine.store.finish_attempt(
                a.id,
                AttemptOutcome::Interrupted,
                &detail,
                a.duration_ms.unwrap_or(0),
                a.fuel_used,
                now,
            )?;
        }
        tracing::error!(
            incident = self.incident,
            "a stop cut this incident's page short: sending it again"
        );
        self.send_page(&format!("(sent again after a restart) {}", inc.note), now)
            .await
    }

    /// Runs the escalation step, if the policy has one.
    async fn send_page(&self, note: &str, now: Millis) -> anyhow::Result<()> {
        let engine = self.engine;
        let policy = self.policy();
        let severity = engine.plan.checks[policy.check].severity;
        if let Some(step) = &policy.escalate {
            // Durable before acting, like every step.
            let attempt = engine.store.start_attempt(
                self.incident,
                StepRef::Escalation,
                &step.name,
                self.dry_run,
                now,
            )?;
            let context = RemedyContext {
                incident: self.incident as u64,
                policy: policy.name.clone(),
                step: step.name.clone(),
                step_ref: StepRef::Escalation,
                attempt: 1,
                severity,
                dry_run: self.dry_run,
                trail: engine.trail(self.incident)?,
                link: engine.incident_link(self.incident),
            };
            crate::crash::point("before-page");
            let result = engine
                .run_action(policy, step, &self.evidence, context, None)
                .await;
            crate::crash::point("after-page");
            let detail = match result {
                Ok(r) => json!({"outcome": r.value, "note": note}),
                Err(e) => {
                    tracing::error!(incident = self.incident, "escalation action failed: {e}");
                    json!({"error": e, "note": note})
                }
            };
            let took = engine.clock.now().saturating_sub(now);
            engine.count(policy, &step.name, AttemptOutcome::Escalation);
            engine.store.finish_attempt(
                attempt,
                AttemptOutcome::Escalation,
                &detail,
                took,
                None,
                engine.clock.now(),
            )?;
        }
        Ok(())
    }
}

/// An interrupted attempt with no sign its action did anything: no result
/// and no process recorded (a kill before it acted or before its result
/// was written). Such a step may run again; one that acted is tried.
fn cut_short(a: &Attempt) -> bool {
    a.outcome == AttemptOutcome::Interrupted
        && a.detail.get("outcome").is_none()
        && a.detail["processes"]
            .as_array()
            .is_none_or(|p| p.is_empty())
}

impl Engine {
    /// Runs an action step in the sandbox, within the bulkhead.
    pub(super) async fn run_action(
        &self,
        policy: &PolicyPlan,
        step: &StepPlan,
        evidence: &[Finding],
        context: RemedyContext,
        on_spawn: Option<SpawnHook>,
    ) -> Result<crate::runtime::Report<crate::contract::Outcome>, crate::runtime::PluginError> {
        let check = &self.plan.checks[policy.check];
        let Some(plugin) = self.plugin_set().get(&step.action).cloned() else {
            return Err(crate::runtime::PluginError::Host {
                plugin: step.action.clone(),
                message: format!("action plugin {} is not loaded", step.action),
            });
        };
        let req = Request {
            check: &check.name,
            config: &step.config,
            labels: &check.labels,
            grants: &step.grants,
            limits: step.limits,
            clock: self.clock,
        };
        let _permit = self.bulkhead.acquire().await;
        self.runtime
            .remedy_observed(&plugin, &req, evidence, context, on_spawn)
            .await
    }

    /// Counts an attempt's outcome in the metrics.
    fn count(&self, policy: &PolicyPlan, step: &str, outcome: AttemptOutcome) {
        self.metrics.attempt(&policy.name, step, outcome.as_str());
    }

    /// Closes an incident; anything but a dry run starts the cooldown.
    pub(super) fn close_incident(
        &self,
        pi: usize,
        id: i64,
        opened_at: Millis,
        state: IncidentState,
        note: &str,
    ) -> anyhow::Result<()> {
        let policy = &self.plan.policies[pi];
        let now = self.clock.now();
        self.store.close_incident(id, state, now, note)?;
        self.metrics
            .closed(&policy.name, state.as_str(), now.saturating_sub(opened_at));
        let mut st = lock(&self.policies[pi].state);
        if state != IncidentState::Planned {
            st.last_closed = Some(now);
        }
        st.trigger.reset();
        tracing::info!(incident = id, policy = %policy.name, state = state.as_str(), "incident closed: {note}");
        Ok(())
    }

    /// The ladder's order: as configured, or by past success with
    /// `adaptive`.
    pub(super) fn ladder_order(&self, pi: usize, evidence: &[Finding]) -> Vec<usize> {
        let policy = &self.plan.policies[pi];
        if !policy.adaptive {
            return (0..policy.steps.len()).collect();
        }
        let code = evidence.first().map(|f| f.code.as_str()).unwrap_or("");
        let key = &self.plan.checks[policy.check].stats_key;
        adaptive::order(policy.steps.len(), |i| {
            self.store
                .step_stats(key, code, &policy.steps[i].name)
                .unwrap_or_default()
        })
    }

    /// A heal that relapsed: its success is taken back from the stats
    /// (the attempt stays counted) and the breaker counts a failure.
    fn withdraw_step(&self, pi: usize, code: &str, step: &str, heal_ms: u64) -> anyhow::Result<()> {
        let policy = &self.plan.policies[pi];
        self.record_breaker(pi, step, false)?;
        self.count(policy, step, AttemptOutcome::Relapsed);
        let key = &self.plan.checks[policy.check].stats_key;
        self.store.withdraw_step_success(key, code, step, heal_ms)
    }

    fn record_step(
        &self,
        pi: usize,
        code: &str,
        step: &str,
        healed: bool,
        heal_ms: u64,
    ) -> anyhow::Result<()> {
        self.record_breaker(pi, step, healed)?;
        let key = &self.plan.checks[self.plan.policies[pi].check].stats_key;
        self.store
            .record_step_result(key, code, step, healed, heal_ms)
    }

    /// Feeds one result to the step's breaker, and keeps its state.
    fn record_breaker(&self, pi: usize, step: &str, healed: bool) -> anyhow::Result<()> {
        let policy = &self.plan.policies[pi];
        let check = &self.plan.checks[policy.check].name;
        let breaker = {
            let mut st = lock(&self.policies[pi].state);
            let b = st.breakers.entry(step.to_string()).or_default();
            b.record(healed, self.clock.now(), &policy.breaker);
            *b
        };
        self.metrics.breaker(check, step, &breaker.state);
        self.store.save_breaker(check, step, &breaker)
    }
}
