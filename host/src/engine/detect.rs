//! Stage 1, detect: run a check's detector in the sandbox and turn what it
//! says into a [`Detection`]; a plugin failure becomes a `plugin.error`
//! finding (never a crash). Then feed the result to the check's health
//! machine and flap detector, and record it when something changed.

use std::sync::Arc;

use super::state::{Detection, worst};
use super::{Engine, lock};
use crate::contract::{Finding, Status};
use crate::policy::health::{Health, Observation};
use crate::runtime::Request;
use crate::store::CheckResult;

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
    pub(super) async fn detect(&self, idx: usize) -> Detection {
        let permit = self.bulkhead.acquire().await;
        self.detect_holding(idx, permit).await
    }

    /// Runs check `idx`'s detector once, in the bulkhead slot `_permit`
    /// (the scheduler's owned one, or a borrowed one).
    pub(super) async fn detect_holding<P: Send>(&self, idx: usize, _permit: P) -> Detection {
        let check = &self.plan.checks[idx];
        let at = self.clock.now();
        let error = |summary: String, kind: &str| Detection {
            at,
            status: Status::Unknown,
            findings: vec![Finding {
                check: check.name.clone(),
                code: "plugin.error".into(),
                status: Status::Unknown,
                summary,
                metrics: Default::default(),
                labels: [
                    ("plugin".to_string(), check.plugin.clone()),
                    ("kind".to_string(), kind.to_string()),
                ]
                .into(),
            }],
            fuel_used: None,
            duration_us: None,
        };
        // The plan guarantees the plugin; a reload may only swap its version.
        let Some(plugin) = self.plugin_set().get(&check.plugin).cloned() else {
            return error(
                format!("plugin {} is not loaded", check.plugin),
                "not-loaded",
            );
        };
        let req = Request {
            check: &check.name,
            config: &check.config,
            labels: &check.labels,
            grants: &check.grants,
            limits: check.limits,
            clock: self.clock,
        };
        match self.runtime.detect(&plugin, &req).await {
            Ok(report) => {
                self.metrics.record_detect(
                    &lock(&self.checks[idx].metrics),
                    report.duration,
                    report.fuel_used,
                );
                Detection {
                    at,
                    status: worst(&report.value),
                    findings: report.value,
                    fuel_used: Some(report.fuel_used),
                    duration_us: Some(report.duration.as_micros() as u64),
                }
            }
            Err(e) => {
                tracing::warn!(check = %check.name, plugin = %check.plugin, kind = e.kind(), "{e}");
                self.metrics.plugin_error(&check.plugin, e.kind());
                error(e.to_string(), e.kind())
            }
        }
    }

    /// Feeds a result to check `idx`'s health machine and flap detector,
    /// and records it when the status or health changed.
    pub(super) fn observe(&self, idx: usize, result: Arc<Detection>) {
        let check = &self.plan.checks[idx];
        let slot = &self.checks[idx];
        let (changed, health) = {
            let mut st = lock(&slot.state);
            let before = (st.health.state(), st.last.as_ref().map(|l| l.status));
            let obs = observation(result.status);
            let health = st.health.observe(obs, &check.health);
            st.flap.record(obs, &check.flap);
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
            .record_check(&mut lock(&slot.metrics), &check.name, result.status, health);
        if changed {
            tracing::info!(
                check = %check.name,
                health = health_name(health),
                status = status_name(result.status),
                "check changed"
            );
            let row = CheckResult {
                check: check.name.clone(),
                at: result.at,
                health: health_name(health).into(),
                status: status_name(result.status).into(),
                findings: serde_json::to_value(&result.findings).unwrap_or_default(),
            };
            if let Err(e) = self.store.record_result(&row) {
                self.store.note_fault(&e);
                tracing::error!(check = %check.name, "recording result: {e:#}");
            }
        }
    }
}
