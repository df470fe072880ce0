//! One check's live state, and the detect step: run the detector in the
//! sandbox, turn a plugin failure into a `plugin.error` finding (never a
//! crash), and feed the result to the health machine and flap detector.

use serde::Serialize;

use super::{Engine, lock};
use crate::contract::{Finding, Status};
use crate::policy::Millis;
use crate::policy::flap::FlapDetector;
use crate::policy::health::{Health, HealthMachine, Observation};
use crate::runtime::Request;
use crate::store::CheckResult;

#[derive(Debug, Default)]
pub(super) struct CheckState {
    pub health: HealthMachine,
    pub flap: FlapDetector,
    pub last: Option<LastResult>,
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

/// The most recent result of a check.
#[derive(Debug, Clone, Serialize)]
pub struct LastResult {
    pub at: Millis,
    pub status: Status,
    pub findings: Vec<Finding>,
    pub fuel_used: Option<u64>,
    pub duration_us: Option<u64>,
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
    pub last: Option<LastResult>,
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
            last: self.last.clone(),
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

fn observation(status: Status) -> Observation {
    match status {
        Status::Ok => Observation::Ok,
        Status::Warn => Observation::Warn,
        Status::Fail => Observation::Fail,
        Status::Unknown => Observation::Unknown,
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Warn => "warn",
        Status::Fail => "fail",
        Status::Unknown => "unknown",
    }
}

fn health_name(h: Health) -> &'static str {
    match h {
        Health::Healthy => "healthy",
        Health::Degraded => "degraded",
        Health::Unavailable => "unavailable",
        Health::Unknown => "unknown",
    }
}

impl Engine {
    /// Runs check `idx`'s detector once. Never fails: a plugin failure
    /// becomes a `plugin.error` finding with status `unknown`.
    pub(super) async fn detect(&self, idx: usize) -> LastResult {
        let slot = &self.checks[idx];
        let name = slot.config.name();
        let plugin_name = slot.config.plugin.get_ref();
        let at = self.clock.now();
        let error = |summary: String, kind: &str| LastResult {
            at,
            status: Status::Unknown,
            findings: vec![Finding {
                check: name.to_string(),
                code: "plugin.error".into(),
                status: Status::Unknown,
                summary,
                metrics: Default::default(),
                labels: [
                    ("plugin".to_string(), plugin_name.clone()),
                    ("kind".to_string(), kind.to_string()),
                ]
                .into(),
            }],
            fuel_used: None,
            duration_us: None,
        };
        let set = self.plugin_set();
        if let Some(why) = set.error(plugin_name) {
            return error(why.to_string(), "not-loaded");
        }
        let Some(plugin) = set.plugins.get(plugin_name).cloned() else {
            return error(format!("plugin {plugin_name} is not loaded"), "not-loaded");
        };
        drop(set);
        let _permit = self.bulkhead.acquire().await;
        let req = Request {
            check: name,
            config: &slot.config_json,
            grants: &slot.grants,
            limits: slot.limits,
        };
        match self.runtime.detect(&plugin, &req).await {
            Ok(report) => {
                self.metrics
                    .detect(plugin_name, Some(report.duration), Some(report.fuel_used));
                LastResult {
                    at,
                    status: super::worst(&report.value),
                    findings: report.value,
                    fuel_used: Some(report.fuel_used),
                    duration_us: Some(report.duration.as_micros() as u64),
                }
            }
            Err(e) => {
                tracing::warn!(check = name, plugin = plugin_name, kind = e.kind(), "{e}");
                self.metrics.plugin_error(plugin_name, e.kind());
                error(e.to_string(), e.kind())
            }
        }
    }

    /// Feeds a result to check `idx`'s health machine and flap detector,
    /// and records it when the status or health changed.
    pub(super) fn observe(&self, idx: usize, result: &LastResult) {
        let slot = &self.checks[idx];
        let (changed, health) = {
            let mut st = lock(&slot.state);
            let before = (st.health.state(), st.last.as_ref().map(|l| l.status));
            let obs = observation(result.status);
            let health = st.health.observe(obs, &slot.config.health());
            st.flap.record(obs, &slot.config.flap);
            st.bad_since = match result.status {
                Status::Warn | Status::Fail => st.bad_since.or(Some(result.at)),
                Status::Ok => None,
                Status::Unknown => st.bad_since,
            };
            st.last = Some(result.clone());
            st.last_run = Some(self.clock.now());
            st.reported_late = false;
            (before != (health, Some(result.status)), health)
        };
        self.metrics
            .check(slot.config.name(), result.status, health);
        if changed {
            tracing::info!(
                check = slot.config.name(),
                health = health_name(health),
                status = status_name(result.status),
                "check changed"
            );
            let row = CheckResult {
                check: slot.config.name().to_string(),
                at: result.at,
                health: health_name(health).into(),
                status: status_name(result.status).into(),
                findings: serde_json::to_value(&result.findings).unwrap_or_default(),
            };
            if let Err(e) = self.store.record_result(&row) {
                tracing::error!(check = slot.config.name(), "recording result: {e:#}");
            }
        }
    }
}
