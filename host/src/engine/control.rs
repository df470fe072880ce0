//! Operator control: run a check now, heal it by hand, pause and resume.
//!
//! Commands wait in the check's turn (`schedule.rs`) and are handled
//! between runs, by a task that holds the turn: one task alone ever acts
//! for a check, so a manual heal can never race
//! the schedule into two ladders for one policy. A pause is kept in the
//! store, so it survives a restart or reload: maintenance that silently
//! ends when mend restarts would be a trap.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::shutdown::Shutdown;
use super::state::Detection;
use super::{Engine, lock};
use crate::store::Store;
use crate::values::Millis;

/// Commands queued per check beyond this are refused.
const MAX_QUEUED: usize = 64;

const PAUSE_FLAG: &str = "pause";

/// The store flag holding check `name`'s pause.
fn check_pause_flag(name: &str) -> String {
    format!("pause:check:{name}")
}

pub(super) enum Command {
    Run(oneshot::Sender<Detection>),
    Heal {
        how: HealRequest,
        reply: oneshot::Sender<HealOutcome>,
    },
}

/// A manual heal, as asked for.
#[derive(Debug, Clone, Default)]
pub struct HealRequest {
    /// Plan only.
    pub dry_run: bool,
    /// Past the automatic attempt cap and cooldown (an operator knows).
    pub force: bool,
    /// Who asked (recorded on the incident); `source` when not given.
    pub by: Option<String>,
    /// Where it came from, e.g. `api`, `alertmanager (...)`.
    pub source: String,
}

/// What a manual heal did.
#[derive(Debug, Clone, Serialize)]
pub struct HealOutcome {
    pub check: String,
    /// The fresh detect the heal was decided on.
    pub result: Detection,
    /// One entry per policy of the check.
    pub policies: Vec<PolicyHeal>,
}

impl HealOutcome {
    /// Whether any policy started its ladder.
    pub fn started(&self) -> bool {
        self.policies.iter().any(|p| p.started)
    }
}

/// What one policy did about a manual heal.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyHeal {
    pub policy: String,
    /// The ladder started (the incident is open and its first step runs).
    pub started: bool,
    /// The incident opened, or the one already open.
    pub incident: Option<i64>,
    pub dry_run: bool,
    /// Why it started or not.
    pub reason: String,
}

/// mend is paused: checks run, no action starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub since: Millis,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no check named `{0}`")]
    UnknownCheck(String),
    #[error("mend is stopping or reloading; try again")]
    NotRunning,
    #[error("check `{0}` has {MAX_QUEUED} commands waiting; try again later")]
    Busy(String),
    #[error("{0:#}")]
    Store(anyhow::Error),
}

pub(super) fn load_pause(store: &Store) -> Option<Pause> {
    match store.flag(PAUSE_FLAG) {
        Ok(v) => v.and_then(|s| serde_json::from_str(&s).ok()),
        Err(e) => {
            tracing::error!("reading the pause flag: {e:#}");
            None
        }
    }
}

impl Engine {
    /// Asks check `check` to run its detector now (between scheduled runs;
    /// the schedule is unchanged). The receiver gets the result.
    pub fn request_run(&self, check: &str) -> Result<oneshot::Receiver<Detection>, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(check, Command::Run(tx))?;
        Ok(rx)
    }

    /// Asks for a manual heal of `check`: a fresh detect, then each of its
    /// policies runs its ladder (with its breakers, attempt caps, pause and
    /// maintenance; not its trigger or cooldown). The receiver gets the
    /// decision as soon as the ladders start; they go on in the check's
    /// task. `source` is recorded in the diagnosis (e.g. `api`).
    pub fn request_heal(
        &self,
        check: &str,
        dry_run: bool,
        source: &str,
    ) -> Result<oneshot::Receiver<HealOutcome>, ControlError> {
        self.request_heal_as(
            check,
            HealRequest {
                dry_run,
                source: source.to_string(),
                ..HealRequest::default()
            },
        )
    }

    /// [`Engine::request_heal`] with who asked and `force`. On a check
    /// whose incident is escalated, the ladder runs again on that incident.
    pub fn request_heal_as(
        &self,
        check: &str,
        how: HealRequest,
    ) -> Result<oneshot::Receiver<HealOutcome>, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(check, Command::Heal { how, reply: tx })?;
        Ok(rx)
    }

    fn enqueue(&self, check: &str, cmd: Command) -> Result<(), ControlError> {
        let idx = *self
            .index
            .get(check)
            .ok_or_else(|| ControlError::UnknownCheck(check.to_string()))?;
        let slot = &self.checks[idx];
        if !self.accepting.load(Ordering::Acquire) {
            return Err(ControlError::NotRunning);
        }
        {
            let mut turn = lock(&slot.turn);
            if turn.commands.len() >= MAX_QUEUED {
                return Err(ControlError::Busy(check.to_string()));
            }
            turn.commands.push_back(cmd);
        }
        // The scheduler starts a task for them, unless one acts for the
        // check already (it looks for commands when it is done).
        lock(&self.commanded).push(idx);
        self.queue_changed.notify_one();
        Ok(())
    }

    /// The next command for check `idx`, if any.
    pub(super) fn next_command(&self, idx: usize) -> Option<Command> {
        lock(&self.checks[idx].turn).commands.pop_front()
    }

    /// Drops every queued command (their senders close, so callers learn
    /// mend stopped).
    pub(super) fn drop_commands(&self) {
        for slot in &self.checks {
            lock(&slot.turn).commands.clear();
        }
    }

    /// The current pause, if any.
    pub fn paused(&self) -> Option<Pause> {
        lock(&self.pause).clone()
    }

    /// Pauses every policy: checks keep running and recording, no action
    /// starts (a ladder in progress stops before its next step). Kept in
    /// the store until [`Engine::resume`]. Pausing again replaces the
    /// reason and keeps `since`.
    pub fn pause(&self, reason: &str) -> anyhow::Result<Pause> {
        let mut cur = lock(&self.pause);
        let p = Pause {
            since: cur.as_ref().map_or_else(|| self.clock.now(), |p| p.since),
            reason: reason.to_string(),
        };
        self.store
            .set_flag(PAUSE_FLAG, Some(&serde_json::to_string(&p)?))?;
        let again = cur.replace(p.clone()).is_some();
        self.metrics.set_paused(true);
        if again {
            tracing::warn!(reason, "still paused; the reason is now: {reason}");
        } else {
            tracing::warn!(reason, "paused: no action will start until resumed");
        }
        Ok(p)
    }

    fn slot(&self, check: &str) -> Result<&super::CheckSlot, ControlError> {
        self.index
            .get(check)
            .map(|&i| &self.checks[i])
            .ok_or_else(|| ControlError::UnknownCheck(check.to_string()))
    }

    /// Pauses the policies of one check (checks keep running; no action
    /// starts for it), kept in the store until [`Engine::resume_check`].
    /// Returns the pause and whether one was already in place (then only
    /// the reason changed).
    pub fn pause_check(&self, check: &str, reason: &str) -> Result<(Pause, bool), ControlError> {
        let slot = self.slot(check)?;
        let mut st = lock(&slot.state);
        let p = Pause {
            since: st
                .paused
                .as_ref()
                .map_or_else(|| self.clock.now(), |p| p.since),
            reason: reason.to_string(),
        };
        let json = serde_json::to_string(&p).map_err(|e| ControlError::Store(e.into()))?;
        self.store
            .set_flag(&check_pause_flag(check), Some(&json))
            .map_err(ControlError::Store)?;
        let again = st.paused.replace(p.clone()).is_some();
        tracing::warn!(
            check,
            reason,
            again,
            "check paused: none of its actions will start until resumed"
        );
        Ok((p, again))
    }

    /// Ends one check's pause; returns it, if there was one.
    pub fn resume_check(&self, check: &str) -> Result<Option<Pause>, ControlError> {
        let slot = self.slot(check)?;
        let mut st = lock(&slot.state);
        self.store
            .set_flag(&check_pause_flag(check), None)
            .map_err(ControlError::Store)?;
        let was = st.paused.take();
        if was.is_some() {
            tracing::warn!(check, "check resumed: its actions may run again");
        }
        Ok(was)
    }

    /// Check `idx`'s pause, if any.
    pub(super) fn check_paused(&self, idx: usize) -> Option<Pause> {
        lock(&self.checks[idx].state).paused.clone()
    }

    /// Reads each check's pause from the store (at build).
    pub(super) fn restore_check_pauses(&self) {
        for (check, slot) in self.plan.checks.iter().zip(&self.checks) {
            match self.store.flag(&check_pause_flag(&check.name)) {
                Ok(v) => {
                    lock(&slot.state).paused = v.and_then(|s| serde_json::from_str(&s).ok());
                }
                Err(e) => {
                    tracing::error!(check = %check.name, "reading the check's pause: {e:#}")
                }
            }
        }
    }

    /// Ends a pause; returns the pause that ended, if there was one.
    /// Incidents left open resume on their check's next run.
    pub fn resume(&self) -> anyhow::Result<Option<Pause>> {
        let mut cur = lock(&self.pause);
        self.store.set_flag(PAUSE_FLAG, None)?;
        let was = cur.take();
        self.metrics.set_paused(false);
        if was.is_some() {
            tracing::warn!("resumed: actions may run again");
        }
        Ok(was)
    }
}

impl Engine {
    /// Handles one command in check `idx`'s task.
    pub(super) async fn handle(&self, idx: usize, cmd: Command, shutdown: &Shutdown) {
        let slot = &self.checks[idx];
        let result = std::sync::Arc::new(Box::pin(self.detect(idx)).await);
        self.observe(idx, result.clone());
        lock(&slot.state).remediating = true;
        match cmd {
            Command::Run(reply) => {
                let _ = reply.send((*result).clone());
                // A run is a run: its policies see the result.
                if !shutdown.is_fired() {
                    Box::pin(self.evaluate(idx, &result, shutdown)).await;
                }
            }
            Command::Heal { how, reply } => {
                Box::pin(self.heal_now(idx, &result, &how, reply, shutdown)).await;
            }
        }
        lock(&slot.state).remediating = false;
    }
}
