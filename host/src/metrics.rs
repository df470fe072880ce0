//! Prometheus metrics (prometheus-client), served at `/metrics`.
//!
//! One registry for the life of the process: a config reload builds a new
//! engine but keeps counting into the same families, so counters never go
//! backwards while mend runs. The engine records events here; nothing here
//! knows the engine.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::contract::Status;
use crate::policy::breaker::BreakerState;
use crate::policy::health::Health;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    policy: String,
    step: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecoverLabels {
    policy: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    check: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindResult {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 1 ms to ~9 h.
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

fn detect_histogram() -> Histogram {
    // 100 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    check_status: Family<CheckLabel, Gauge>,
    check_health: Family<CheckLabel, Gauge>,
    /// By plugin, not by check: 10,000 checks on one plugin are one
    /// series (each check's last duration is in the API).
    detect_seconds: Hist<PluginLabel>,
    fuel: Family<PluginLabel, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    open_incidents: Gauge,
    opened: Family<PolicyLabel, Counter>,
    mttd: Hist<PolicyLabel>,
    mttr: Hist<RecoverLabels>,
    breaker: Family<BreakerLabels, Gauge>,
    escalations: Family<PolicyLabel, Counter>,
    reloads: Family<KindResult, Counter>,
    paused: Gauge,
    alerts: Family<OutcomeLabel, Counter>,
    /// Fleet mode's own families (issue 12).
    fleet: crate::fleet::FleetMetrics,
    /// Serialises encoding (the registry is read-only after construction;
    /// this only keeps two scrapes from interleaving their buffers).
    encode: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A status as a number: 0 ok, 1 warn, 2 fail, 3 unknown. One series
/// per check (not one per state) keeps 10,000 checks cheap.
fn status_value(s: Status) -> i64 {
    match s {
        Status::Ok => 0,
        Status::Warn => 1,
        Status::Fail => 2,
        Status::Unknown => 3,
    }
}

/// 0 healthy, 1 degraded, 2 unavailable, 3 unknown.
fn health_value(h: Health) -> i64 {
    match h {
        Health::Healthy => 0,
        Health::Degraded => 1,
        Health::Unavailable => 2,
        Health::Unknown => 3,
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mend");
        let m = Metrics {
            check_status: Family::default(),
            check_health: Family::default(),
            detect_seconds: Family::new_with_constructor(detect_histogram),
            fuel: Family::default(),
            attempts: Family::default(),
            open_incidents: Gauge::default(),
            opened: Family::default(),
            mttd: Family::new_with_constructor(seconds_histogram),
            mttr: Family::new_with_constructor(seconds_histogram),
            breaker: Family::default(),
            escalations: Family::default(),
            reloads: Family::default(),
            paused: Gauge::default(),
            alerts: Family::default(),
            fleet: crate::fleet::FleetMetrics::default(),
            encode: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "check_status",
            "Each check's current status: 0 ok, 1 warn, 2 fail, 3 unknown",
            m.check_status.clone(),
        );
        registry.register(
            "check_health",
            "Each check's current health: 0 healthy, 1 degraded, 2 unavailable, 3 unknown",
            m.check_health.clone(),
        );
        registry.register(
            "detect_duration_seconds",
            "How long detector calls took, by plugin",
            m.detect_seconds.clone(),
        );
        registry.register(
            "plugin_fuel_used",
            "Wasm fuel consumed by each plugin's calls",
            m.fuel.clone(),
        );
        registry.register(
            "action_attempts",
            "Remediation attempts by policy, step and outcome",
            m.attempts.clone(),
        );
        registry.register(
            "open_incidents",
            "Incidents currently open",
            m.open_incidents.clone(),
        );
        registry.register(
            "incidents_opened",
            "Incidents opened, by policy",
            m.opened.clone(),
        );
        registry.register(
            "time_to_detect_seconds",
            "From a check's first bad result to its incident opening (MTTD)",
            m.mttd.clone(),
        );
        registry.register(
            "time_to_recover_seconds",
            "From an incident opening to its close, by how it closed (MTTR)",
            m.mttr.clone(),
        );
        registry.register(
            "breaker_state",
            "Circuit breaker per (check, step): 0 closed, 1 half-open, 2 open",
            m.breaker.clone(),
        );
        registry.register(
            "escalations",
            "Incidents escalated to a human, by policy",
            m.escalations.clone(),
        );
        registry.register(
            "reloads",
            "Config and plugin reloads, by kind and result",
            m.reloads.clone(),
        );
        registry.register(
            "paused",
            "1 while mend is paused for maintenance",
            m.paused.clone(),
        );
        registry.register(
            "alerts_received",
            "Alertmanager alerts received, by what mend did with them",
            m.alerts.clone(),
        );
        m.fleet.register(&mut registry);
        Metrics { registry, ..m }
    }

    pub fn fleet(&self) -> &crate::fleet::FleetMetrics {
        &self.fleet
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let _g = self.encode.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }

    /// A check's status and health after a run.
    pub fn check(&self, check: &str, status: Status, health: Health) {
        let label = CheckLabel {
            check: check.to_string(),
        };
        self.check_status
            .get_or_create(&label)
            .set(status_value(status));
        self.check_health
            .get_or_create(&label)
            .set(health_value(health));
    }

    /// Forgets every check's status and health series (a reload may have
    /// removed checks; the new engine's first runs fill them again).
    pub fn forget_checks(&self) {
        self.check_status.clear();
        self.check_health.clear();
    }

    /// A detector call that returned (successfully or not).
    pub fn detect(&self, plugin: &str, took: Option<Duration>, fuel: Option<u64>) {
        if let Some(t) = took {
            self.detect_seconds
                .get_or_create(&PluginLabel {
                    plugin: plugin.to_string(),
                })
                .observe(t.as_secs_f64());
        }
        if let Some(f) = fuel {
            self.fuel(plugin, f);
        }
    }

    pub fn fuel(&self, plugin: &str, fuel: u64) {
        self.fuel
            .get_or_create(&PluginLabel {
                plugin: plugin.to_string(),
            })
            .inc_by(fuel);
    }

    pub fn attempt(&self, policy: &str, step: &str, outcome: &str) {
        self.attempts
            .get_or_create(&AttemptLabels {
                policy: policy.to_string(),
                step: step.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// An incident opened, `detect_ms` after the check first went bad.
    pub fn opened(&self, policy: &str, detect_ms: Option<u64>) {
        let label = PolicyLabel {
            policy: policy.to_string(),
        };
        self.opened.get_or_create(&label).inc();
        if let Some(ms) = detect_ms {
            self.mttd.get_or_create(&label).observe(ms as f64 / 1000.0);
        }
    }

    /// An incident closed `took_ms` after it opened.
    pub fn closed(&self, policy: &str, state: &str, took_ms: u64) {
        self.mttr
            .get_or_create(&RecoverLabels {
                policy: policy.to_string(),
                state: state.to_string(),
            })
            .observe(took_ms as f64 / 1000.0);
    }

    pub fn breaker(&self, check: &str, step: &str, state: &BreakerState) {
        let v = match state {
            BreakerState::Closed { .. } => 0,
            BreakerState::HalfOpen { .. } => 1,
            BreakerState::Open { .. } => 2,
        };
        self.breaker
            .get_or_create(&BreakerLabels {
                check: check.to_string(),
                step: step.to_string(),
            })
            .set(v);
    }

    pub fn escalated(&self, policy: &str) {
        self.escalations
            .get_or_create(&PolicyLabel {
                policy: policy.to_string(),
            })
            .inc();
    }

    /// `kind`: `config` or `plugins`; `ok`: whether it took effect.
    pub fn reload(&self, kind: &str, ok: bool) {
        self.reloads
            .get_or_create(&KindResult {
                kind: kind.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    pub fn set_open_incidents(&self, n: usize) {
        self.open_incidents.set(n as i64);
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.set(paused as i64);
    }

    /// `outcome`: `heal`, `duplicate`, `unmatched` or `resolved`.
    pub fn alert(&self, outcome: &str) {
        self.alerts
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed_with_the_mend_prefix() {
        let m = Metrics::new();
        m.check("disk", Status::Fail, Health::Degraded);
        m.attempt("p", "clean", "healed");
        m.opened("p", Some(1500));
        m.closed("p", "healed", 2500);
        let text = m.encode();
        assert!(
            text.contains("mend_check_status{check=\"disk\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("mend_check_health{check=\"disk\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "mend_action_attempts_total{policy=\"p\",step=\"clean\",outcome=\"healed\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("mend_time_to_detect_seconds_sum{policy=\"p\"} 1.5"));
        assert!(
            text.contains("mend_time_to_recover_seconds_count{policy=\"p\",state=\"healed\"} 1")
        );
    }
}
