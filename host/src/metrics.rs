//! Prometheus metrics (prometheus-client), served at `/metrics`.
//!
//! One registry for the life of the process: a config reload builds a new
//! engine but keeps counting into the same families, so counters never go
//! backwards while mend runs. The engine records events here; nothing here
//! knows the engine.
//!
//! Conventions: every family has HELP and TYPE; states are labels (the
//! enum convention: `mend_check_status{check="db",status="fail"} 1` and 0
//! for the other states), never magic numbers; counters for label sets
//! known from the config start at 0, so `rate()` and `absent()` work from
//! the first scrape. `/metrics` serves OpenMetrics when asked and the
//! classic text format otherwise (see [`format`]).

mod checks;
pub mod format;
mod process;

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use self::checks::CheckHandle;
pub use self::format::Format;

use self::checks::CheckStates;
use crate::config::Config;
use crate::contract::Status;
use crate::policy::breaker::BreakerState;
use crate::policy::health::Health;

/// Every `kind` a plugin call error can have (`PluginError::kind`, and
/// `not-loaded` for a plugin that could not be called at all).
pub const PLUGIN_ERROR_KINDS: &[&str] = &[
    "not-loaded",
    "out-of-fuel",
    "deadline-exceeded",
    "memory-limit",
    "trap",
    "invalid-component",
    "unsupported-version",
    "missing-grant",
    "wrong-role",
    "bad-config",
    "denied",
    "failed",
    "result-too-large",
    "host",
];

/// Every attempt outcome (`AttemptOutcome::as_str`) but `running`.
pub const ATTEMPT_OUTCOMES: &[&str] = &[
    "healed",
    "relapsed",
    "not-healed",
    "failed",
    "interrupted",
    "planned",
    "skipped",
    "escalation",
];

/// Every incident state (`IncidentState::as_str`).
pub const INCIDENT_STATES: &[&str] = &[
    "open",
    "remediating",
    "held",
    "healed",
    "escalated",
    "acknowledged",
    "resolved",
    "recovered",
    "planned",
];

const BREAKER_STATES: &[&str] = &["closed", "half-open", "open"];
const ALERT_OUTCOMES: &[&str] = &["heal", "recheck", "duplicate", "unmatched", "resolved"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginKind {
    plugin: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    policy: String,
    step: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    policy: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    policy: String,
}

/// A policy and its check's `severity`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicySeverity {
    policy: String,
    severity: String,
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
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
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

fn action_histogram() -> Histogram {
    // 1 ms to ~1 h: actions restart services and wait for them.
    Histogram::new(exponential_buckets(0.001, 3.0, 15))
}

fn label(s: &str) -> String {
    s.to_string()
}

/// One check's metric handles ([`Metrics::check_metrics`]).
#[derive(Debug, Clone)]
pub struct CheckMetrics {
    series: CheckHandle,
    detect: Histogram,
    fuel: Counter,
}

pub struct Metrics {
    registry: Registry,
    /// Status, health and last run per check, encoded as enum series on
    /// each scrape (10,000 checks keep one small entry each).
    checks: std::sync::Arc<CheckStates>,
    /// By plugin, not by check: 10,000 checks on one plugin are one
    /// series (each check's last duration is in the API).
    detect_seconds: Hist<PluginLabel>,
    fuel: Family<PluginLabel, Counter>,
    plugin_errors: Family<PluginKind, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    action_seconds: Hist<StepLabels>,
    open_incidents: Gauge,
    incidents: Family<StateLabel, Gauge>,
    opened: Family<PolicySeverity, Counter>,
    mttd: Hist<PolicyLabel>,
    mttr: Hist<RecoverLabels>,
    breaker: Family<BreakerLabels, Gauge>,
    escalations: Family<PolicySeverity, Counter>,
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

fn wall_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            checks: Default::default(),
            detect_seconds: Family::new_with_constructor(detect_histogram),
            fuel: Family::default(),
            plugin_errors: Family::default(),
            attempts: Family::default(),
            action_seconds: Family::new_with_constructor(action_histogram),
            open_incidents: Gauge::default(),
            incidents: Family::default(),
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
        // The standard process_* families carry no prefix.
        m.registry
            .register_collector(Box::new(process::ProcessCollector));
        let r = m.registry.sub_registry_with_prefix("mend");
        r.register(
            "build",
            "The running mend's version (always 1)",
            Info::new(BuildLabels {
                version: label(env!("CARGO_PKG_VERSION")),
            }),
        );
        r.register_collector(Box::new(m.checks.clone()));
        r.register(
            "detect_duration_seconds",
            "How long detector calls took, by plugin",
            m.detect_seconds.clone(),
        );
        r.register(
            "plugin_fuel_used",
            "Wasm fuel consumed by each plugin's calls",
            m.fuel.clone(),
        );
        r.register(
            "plugin_errors",
            "Plugin calls that failed, by plugin and kind of error",
            m.plugin_errors.clone(),
        );
        r.register(
            "action_attempts",
            "Remediation attempts by policy, step and outcome",
            m.attempts.clone(),
        );
        r.register(
            "action_duration_seconds",
            "How long action (remedy) calls took, by policy and step",
            m.action_seconds.clone(),
        );
        r.register(
            "open_incidents",
            "Incidents currently open",
            m.open_incidents.clone(),
        );
        r.register(
            "incidents",
            "Incidents in the store, by state",
            m.incidents.clone(),
        );
        r.register(
            "incidents_opened",
            "Incidents opened, by policy and severity",
            m.opened.clone(),
        );
        r.register(
            "time_to_detect_seconds",
            "From a check's first bad result to its incident opening (MTTD)",
            m.mttd.clone(),
        );
        r.register(
            "time_to_recover_seconds",
            "From an incident opening to its close, by how it closed (MTTR)",
            m.mttr.clone(),
        );
        r.register(
            "breaker_state",
            "1 for each circuit breaker's current state (closed, half-open, open), 0 for the others",
            m.breaker.clone(),
        );
        r.register(
            "escalations",
            "Incidents escalated to a human, by policy and severity",
            m.escalations.clone(),
        );
        r.register(
            "reloads",
            "Config and plugin reloads, by kind and result",
            m.reloads.clone(),
        );
        r.register(
            "paused",
            "1 while mend is paused for maintenance",
            m.paused.clone(),
        );
        r.register(
            "alerts_received",
            "Alertmanager alerts received, by what mend did with them",
            m.alerts.clone(),
        );
        m.fleet.register(r);
        for kind in ["config", "plugins"] {
            for ok in [true, false] {
                let _ = m.reloads.get_or_create(&reload_labels(kind, ok));
            }
        }
        for outcome in ALERT_OUTCOMES {
            let _ = m.alerts.get_or_create(&OutcomeLabel {
                outcome: label(outcome),
            });
        }
        for state in INCIDENT_STATES {
            let _ = m.incidents.get_or_create(&StateLabel {
                state: label(state),
            });
        }
        m
    }

    pub fn fleet(&self) -> &crate::fleet::FleetMetrics {
        &self.fleet
    }

    /// OpenMetrics text (`# EOF` at the end).
    pub fn encode(&self) -> String {
        let _g = self.encode.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }

    /// The exposition in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.encode(),
            Format::Text => format::to_classic_text(&self.encode()),
        }
    }

    /// Starts at 0 every counter and state series the config names: each
    /// policy's attempts by step and outcome, incidents opened and
    /// escalations, each step's breaker (closed), and each plugin's errors
    /// by kind. Call after building an engine from `config`.
    pub fn init_known(&self, config: &Config) {
        let mut plugins: Vec<&str> = config
            .checks
            .iter()
            .map(|c| c.plugin.get_ref().as_str())
            .collect();
        for p in &config.policies {
            let severity = config
                .check(p.check.get_ref())
                .map(|c| c.severity)
                .unwrap_or_default();
            let policy = PolicySeverity {
                policy: label(p.name()),
                severity: label(severity.as_str()),
            };
            let _ = self.opened.get_or_create(&policy);
            let _ = self.escalations.get_or_create(&policy);
            let steps = p
                .steps
                .iter()
                .chain(config.escalation_of(p).map(|(_, s)| s));
            for s in steps {
                plugins.push(s.action.get_ref());
                let _ = self.action_seconds.get_or_create(&StepLabels {
                    policy: label(p.name()),
                    step: label(s.name()),
                });
                for outcome in ATTEMPT_OUTCOMES {
                    let _ = self.attempts.get_or_create(&AttemptLabels {
                        policy: label(p.name()),
                        step: label(s.name()),
                        outcome: label(outcome),
                    });
                }
            }
            for s in &p.steps {
                let check = p.check.get_ref();
                let known = BREAKER_STATES.iter().any(|st| {
                    self.breaker
                        .get(&BreakerLabels {
                            check: check.clone(),
                            step: label(s.name()),
                            state: label(st),
                        })
                        .is_some()
                });
                if !known {
                    self.breaker(check, s.name(), &BreakerState::Closed { failures: 0 });
                }
            }
        }
        for plugin in plugins {
            for kind in PLUGIN_ERROR_KINDS {
                let _ = self.plugin_errors.get_or_create(&PluginKind {
                    plugin: label(plugin),
                    kind: label(kind),
                });
            }
            let _ = self.fuel.get_or_create(&PluginLabel {
                plugin: label(plugin),
            });
        }
    }

    /// A check's status and health after a run (now: its last run).
    /// The engine keeps a [`CheckMetrics`] per check instead.
    pub fn check(&self, check: &str, status: Status, health: Health) {
        let h = self.checks.handle(check);
        self.checks.set(&h, status, health, wall_seconds());
    }

    /// The handles a check's runs record into: its own series and its
    /// plugin's detect histogram and fuel counter (found once, not by
    /// label hash on every run).
    pub fn check_metrics(&self, check: &str, plugin: &str) -> CheckMetrics {
        let plugin = PluginLabel {
            plugin: label(plugin),
        };
        CheckMetrics {
            series: self.checks.handle(check),
            detect: self.detect_seconds.get_or_create(&plugin).clone(),
            fuel: self.fuel.get_or_create(&plugin).clone(),
        }
    }

    /// A check's status and health after a run, through its handles; a
    /// handle from before [`Metrics::forget_checks`] registers again.
    pub fn record_check(&self, h: &mut CheckMetrics, check: &str, status: Status, health: Health) {
        if !self.checks.is_current(&h.series) {
            h.series = self.checks.handle(check);
        }
        self.checks.set(&h.series, status, health, wall_seconds());
    }

    /// A detector call of the check that returned: its duration and fuel.
    pub fn record_detect(&self, h: &CheckMetrics, took: Duration, fuel: u64) {
        h.detect.observe(took.as_secs_f64());
        h.fuel.inc_by(fuel);
    }

    /// Forgets every check's status, health and last run (a reload may
    /// have removed checks; the new engine's first runs fill them again).
    pub fn forget_checks(&self) {
        self.checks.clear();
    }

    /// A detector call that returned (successfully or not).
    pub fn detect(&self, plugin: &str, took: Option<Duration>, fuel: Option<u64>) {
        if let Some(t) = took {
            self.detect_seconds
                .get_or_create(&PluginLabel {
                    plugin: label(plugin),
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
                plugin: label(plugin),
            })
            .inc_by(fuel);
    }

    /// A plugin call (detect, remedy or describe) that failed; `kind` is
    /// `PluginError::kind` (or `not-loaded`).
    pub fn plugin_error(&self, plugin: &str, kind: &str) {
        self.plugin_errors
            .get_or_create(&PluginKind {
                plugin: label(plugin),
                kind: label(kind),
            })
            .inc();
    }

    pub fn attempt(&self, policy: &str, step: &str, outcome: &str) {
        self.attempts
            .get_or_create(&AttemptLabels {
                policy: label(policy),
                step: label(step),
                outcome: label(outcome),
            })
            .inc();
    }

    /// An action (remedy) call of `policy`'s `step` that returned after
    /// `took`, whatever its outcome.
    pub fn action_duration(&self, policy: &str, step: &str, took: Duration) {
        self.action_seconds
            .get_or_create(&StepLabels {
                policy: label(policy),
                step: label(step),
            })
            .observe(took.as_secs_f64());
    }

    /// An incident opened, `detect_ms` after the check first went bad.
    pub fn opened(&self, policy: &str, severity: &str, detect_ms: Option<u64>) {
        self.opened
            .get_or_create(&PolicySeverity {
                policy: label(policy),
                severity: label(severity),
            })
            .inc();
        let label = PolicyLabel {
            policy: label(policy),
        };
        if let Some(ms) = detect_ms {
            self.mttd.get_or_create(&label).observe(ms as f64 / 1000.0);
        }
    }

    /// An incident closed `took_ms` after it opened.
    pub fn closed(&self, policy: &str, state: &str, took_ms: u64) {
        self.mttr
            .get_or_create(&RecoverLabels {
                policy: label(policy),
                state: label(state),
            })
            .observe(took_ms as f64 / 1000.0);
    }

    pub fn breaker(&self, check: &str, step: &str, state: &BreakerState) {
        let now = match state {
            BreakerState::Closed { .. } => "closed",
            BreakerState::HalfOpen { .. } => "half-open",
            BreakerState::Open { .. } => "open",
        };
        for st in BREAKER_STATES {
            self.breaker
                .get_or_create(&BreakerLabels {
                    check: label(check),
                    step: label(step),
                    state: label(st),
                })
                .set((*st == now) as i64);
        }
    }

    pub fn escalated(&self, policy: &str, severity: &str) {
        self.escalations
            .get_or_create(&PolicySeverity {
                policy: label(policy),
                severity: label(severity),
            })
            .inc();
    }

    /// `kind`: `config` or `plugins`; `ok`: whether it took effect.
    pub fn reload(&self, kind: &str, ok: bool) {
        self.reloads.get_or_create(&reload_labels(kind, ok)).inc();
    }

    pub fn set_open_incidents(&self, n: usize) {
        self.open_incidents.set(n as i64);
    }

    /// Incidents in the store by state (`IncidentState::as_str`); states
    /// not given are 0.
    pub fn set_incidents(&self, counts: &[(String, u64)]) {
        for state in INCIDENT_STATES {
            let n = counts
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            self.incidents
                .get_or_create(&StateLabel {
                    state: label(state),
                })
                .set(n as i64);
        }
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.set(paused as i64);
    }

    /// `outcome`: `heal`, `recheck`, `duplicate`, `unmatched` or
    /// `resolved`.
    pub fn alert(&self, outcome: &str) {
        self.alerts
            .get_or_create(&OutcomeLabel {
                outcome: label(outcome),
            })
            .inc();
    }
}

fn reload_labels(kind: &str, ok: bool) -> KindResult {
    KindResult {
        kind: label(kind),
        result: label(if ok { "ok" } else { "error" }),
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
        m.opened("p", "warning", Some(1500));
        m.closed("p", "healed", 2500);
        m.plugin_error("disk-cleanup", "out-of-fuel");
        m.action_duration("p", "clean", Duration::from_millis(250));
        m.set_incidents(&[("healed".into(), 3)]);
        let text = m.encode();
        for want in [
            "mend_check_status{check=\"disk\",status=\"fail\"} 1",
            "mend_check_status{check=\"disk\",status=\"ok\"} 0",
            "mend_check_health{check=\"disk\",health=\"degraded\"} 1",
            "mend_check_health{check=\"disk\",health=\"healthy\"} 0",
            "mend_action_attempts_total{policy=\"p\",step=\"clean\",outcome=\"healed\"} 1",
            "mend_time_to_detect_seconds_sum{policy=\"p\"} 1.5",
            "mend_time_to_recover_seconds_count{policy=\"p\",state=\"healed\"} 1",
            "mend_plugin_errors_total{plugin=\"disk-cleanup\",kind=\"out-of-fuel\"} 1",
            "mend_action_duration_seconds_sum{policy=\"p\",step=\"clean\"} 0.25",
            "mend_incidents{state=\"healed\"} 3",
            "mend_incidents{state=\"open\"} 0",
            "mend_reloads_total{kind=\"plugins\",result=\"ok\"} 0",
            "mend_alerts_received_total{outcome=\"duplicate\"} 0",
            "mend_build_info{version=\"",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_cpu_seconds_total ",
        ] {
            assert!(text.contains(want), "no `{want}` in\n{text}");
        }
        let last: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("mend_check_last_run_timestamp_seconds{check=\"disk\"} "))
            .unwrap_or_else(|| panic!("no last run in\n{text}"))
            .parse()
            .unwrap();
        assert!((last - wall_seconds()).abs() < 60.0, "{last}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn breakers_are_one_series_per_state() {
        let m = Metrics::new();
        m.breaker("db", "restart", &BreakerState::Closed { failures: 0 });
        m.breaker(
            "db",
            "restart",
            &BreakerState::Open {
                until: 10,
                trips: 1,
            },
        );
        let text = m.encode();
        assert!(
            text.contains("mend_breaker_state{check=\"db\",step=\"restart\",state=\"open\"} 1")
        );
        assert!(
            text.contains("mend_breaker_state{check=\"db\",step=\"restart\",state=\"closed\"} 0")
        );
    }

    #[test]
    fn check_handles_record_without_lookups_and_survive_a_forget() {
        let m = Metrics::new();
        let mut h = m.check_metrics("db", "pg");
        assert!(
            !m.encode().contains("check=\"db\""),
            "no series before a run"
        );
        m.record_check(&mut h, "db", Status::Warn, Health::Degraded);
        m.record_detect(&h, Duration::from_millis(3), 1234);
        m.record_detect(&h, Duration::from_millis(5), 1000);
        let text = m.encode();
        for want in [
            "mend_check_status{check=\"db\",status=\"warn\"} 1",
            "mend_check_status{check=\"db\",status=\"ok\"} 0",
            "mend_check_health{check=\"db\",health=\"degraded\"} 1",
            "mend_detect_duration_seconds_count{plugin=\"pg\"} 2",
            "mend_plugin_fuel_used_total{plugin=\"pg\"} 2234",
        ] {
            assert!(text.contains(want), "no `{want}` in\n{text}");
        }
        // A reload forgets every check; a handle made before registers again.
        m.forget_checks();
        assert!(!m.encode().contains("check=\"db\""));
        m.record_check(&mut h, "db", Status::Ok, Health::Healthy);
        let text = m.encode();
        assert!(
            text.contains("mend_check_status{check=\"db\",status=\"ok\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn a_forgotten_check_leaves_no_series() {
        let m = Metrics::new();
        m.check("gone", Status::Ok, Health::Healthy);
        m.forget_checks();
        assert!(!m.encode().contains("check=\"gone\""));
    }
}
