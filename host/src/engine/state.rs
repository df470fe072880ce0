//! What the engine remembers between runs: each check's live state and
//! each policy's counters. Plain data, updated under a lock per slot.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::contract::{Finding, Status};
use crate::policy::breaker::Breaker;
use crate::policy::budget::AttemptWindow;
use crate::policy::flap::FlapDetector;
use crate::policy::health::{Health, HealthMachine};
use crate::policy::trigger::TriggerWindow;
use crate::values::Millis;

/// The result of one detect: what the check saw, and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    pub at: Millis,
    /// The worst status among the findings.
    pub status: Status,
    pub findings: Vec<Finding>,
    pub fuel_used: Option<u64>,
    pub duration_us: Option<u64>,
}

#[derive(Debug, Default)]
pub(super) struct CheckState {
    pub health: HealthMachine,
    pub flap: FlapDetector,
    /// Shared with the run that made it (not copied per run).
    pub last: Option<Arc<Detection>>,
    /// When the check last finished a run (for the watchdog).
    pub last_run: Option<Millis>,
    /// While a remediation runs, the schedule pauses on purpose.
    pub remediating: bool,
    /// The watchdog already reported the current lateness.
    pub reported_late: bool,
    /// Why this check's policies are held (a dependency is the root cause).
    pub held_by: Vec<String>,
    /// When the check's current run of warn/fail results began (for the
    /// time-to-detect metric).
    pub bad_since: Option<Millis>,
    /// An operator paused this check's policies (kept in the store).
    pub paused: Option<super::Pause>,
}

/// A check as the outside world sees it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckSnapshot {
    pub name: String,
    pub health: Health,
    pub flapping: bool,
    pub flap_percent: f64,
    pub remediating: bool,
    pub held_by: Vec<String>,
    pub last: Option<Detection>,
    /// Passes in a row (towards `success_threshold`).
    pub consecutive_good: u32,
    pub paused: Option<super::Pause>,
}

impl CheckState {
    pub(super) fn snapshot(&self, name: &str) -> CheckSnapshot {
        CheckSnapshot {
            name: name.to_string(),
            health: self.health.state(),
            flapping: self.flap.is_flapping(),
            flap_percent: self.flap.percent_change(),
            remediating: self.remediating,
            held_by: self.held_by.clone(),
            last: self.last.as_deref().cloned(),
            consecutive_good: self.health.consecutive_good(),
            paused: self.paused.clone(),
        }
    }

    /// Whether this check counts as failing for root-cause analysis.
    pub(super) fn is_failing(&self) -> bool {
        matches!(self.health.state(), Health::Degraded | Health::Unavailable)
            || self
                .last
                .as_ref()
                .is_some_and(|l| matches!(l.status, Status::Fail | Status::Warn))
    }
}

/// What a policy remembers between results; restored from the store on
/// start.
#[derive(Default)]
pub(super) struct PolicyState {
    pub trigger: TriggerWindow,
    pub attempts: AttemptWindow,
    pub breakers: BTreeMap<String, Breaker>,
    pub last_closed: Option<Millis>,
    /// The check's flapping episode this policy escalated already.
    pub flap_escalated: Option<u64>,
    /// Until when a flapping diagnosis belongs to the episode already
    /// escalated (pushed on by each one).
    pub flap_quiet_until: Option<Millis>,
    /// An anomaly policy's baseline (`anomaly.rs`), its last verdict, when
    /// it was last written, and whether it learnt since.
    pub baseline: crate::policy::baseline::Baseline,
    pub verdict: Option<crate::policy::baseline::Verdict>,
    pub baseline_saved: Millis,
    pub baseline_dirty: bool,
}

/// The worst status among findings (no findings: ok).
pub fn worst(findings: &[Finding]) -> Status {
    findings
        .iter()
        .map(|f| f.status)
        .max_by_key(|s| s.severity())
        .unwrap_or(Status::Ok)
}
