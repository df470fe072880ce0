//! What the API answers, as types: the handlers return these, and the
//! OpenAPI document is generated from them (utoipa), so the document and
//! the answers cannot drift apart. Each is built from the engine's or the
//! store's own value; the JSON is the same shape those serialise to.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::contract;
use crate::engine::{self, CheckSnapshot, Engine};
use crate::policy::health::Health;
use crate::store;

/// A detector's status.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusName {
    Ok,
    Warn,
    Fail,
    Unknown,
}

impl From<contract::Status> for StatusName {
    fn from(s: contract::Status) -> Self {
        match s {
            contract::Status::Ok => StatusName::Ok,
            contract::Status::Warn => StatusName::Warn,
            contract::Status::Fail => StatusName::Fail,
            contract::Status::Unknown => StatusName::Unknown,
        }
    }
}

/// A check's health (with hysteresis: see `success_threshold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthName {
    Healthy,
    Degraded,
    Unavailable,
    Unknown,
}

impl From<Health> for HealthName {
    fn from(h: Health) -> Self {
        match h {
            Health::Healthy => HealthName::Healthy,
            Health::Degraded => HealthName::Degraded,
            Health::Unavailable => HealthName::Unavailable,
            Health::Unknown => HealthName::Unknown,
        }
    }
}

/// One observation made by a detector.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FindingView {
    pub check: String,
    pub code: String,
    pub status: StatusName,
    pub summary: String,
    pub metrics: BTreeMap<String, f64>,
    pub labels: BTreeMap<String, String>,
}

impl From<&contract::Finding> for FindingView {
    fn from(f: &contract::Finding) -> Self {
        FindingView {
            check: f.check.clone(),
            code: f.code.clone(),
            status: f.status.into(),
            summary: f.summary.clone(),
            // JSON has no NaN or infinity.
            metrics: f
                .metrics
                .iter()
                .filter(|(_, v)| v.is_finite())
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            labels: f.labels.clone(),
        }
    }
}

/// A check's most recent result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResultView {
    /// When it ran (Unix milliseconds).
    pub at: u64,
    pub status: StatusName,
    pub findings: Vec<FindingView>,
    pub fuel_used: Option<u64>,
    pub duration_us: Option<u64>,
}

impl From<&engine::Detection> for ResultView {
    fn from(r: &engine::Detection) -> Self {
        ResultView {
            at: r.at,
            status: r.status.into(),
            findings: r.findings.iter().map(Into::into).collect(),
            fuel_used: r.fuel_used,
            duration_us: r.duration_us,
        }
    }
}

/// A pause: of every policy (mend's), or of one check's policies.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PauseView {
    /// Since when (Unix milliseconds).
    pub since: u64,
    pub reason: String,
}

impl From<&engine::Pause> for PauseView {
    fn from(p: &engine::Pause) -> Self {
        PauseView {
            since: p.since,
            reason: p.reason.clone(),
        }
    }
}

/// A check whose results are good again but whose health still waits for
/// `needed` passes in a row.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Recovering {
    pub passes: u32,
    pub needed: u32,
}

/// A check: its config, live state, and why its plugin is unusable if it
/// is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckView {
    pub name: String,
    pub health: HealthName,
    /// The last result's status (none before the first run).
    pub status: Option<StatusName>,
    pub flapping: bool,
    pub flap_percent: f64,
    /// A remediation is running for it.
    pub remediating: bool,
    /// Dependencies whose failure holds this check's policies.
    pub held_by: Vec<String>,
    pub last: Option<ResultView>,
    pub plugin: String,
    pub interval_ms: Option<u64>,
    pub policies: Vec<String>,
    pub plugin_error: Option<String>,
    /// This check's policies are paused (`mend pause CHECK`).
    pub paused: Option<PauseView>,
    pub success_threshold: u32,
    /// Set while good results count up to `success_threshold`.
    pub recovering: Option<Recovering>,
    /// The baselines of its anomaly policies (none without one).
    pub baselines: Vec<BaselineView>,
}

/// An anomaly policy's baseline of one metric, now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BaselineView {
    pub policy: String,
    pub metric: String,
    pub mean: f64,
    /// One deviation (σ units), floored.
    pub deviation: f64,
    /// Samples learnt (across restarts).
    pub samples: u64,
    /// Enough history to judge (`min_history` and `min_samples`).
    pub warm: bool,
    /// The time-of-day baseline, not the plain one.
    pub seasonal: bool,
    /// The last value judged.
    pub last_value: Option<f64>,
    pub last_anomalous: bool,
    /// E.g. `latency_ms 480, baseline 120 ± 30 (+12.0σ, threshold 4σ)`.
    pub last_text: Option<String>,
}

impl From<engine::PolicyBaseline> for BaselineView {
    fn from(b: engine::PolicyBaseline) -> Self {
        BaselineView {
            policy: b.policy,
            metric: b.band.metric,
            mean: b.band.mean,
            deviation: b.band.deviation,
            samples: b.band.samples,
            warm: b.band.warm,
            seasonal: b.band.seasonal,
            last_value: b.last.as_ref().map(|v| v.value),
            last_anomalous: b.last.as_ref().is_some_and(|v| v.anomalous),
            last_text: b.last.as_ref().map(ToString::to_string),
        }
    }
}

impl CheckView {
    /// Check `idx` of the engine's plan: its state copied under its own
    /// lock, its config read from the plan (no search by name).
    pub fn at(engine: &Engine, idx: usize) -> CheckView {
        CheckView::new(engine, idx, engine.check_snapshot_at(idx))
    }

    fn new(engine: &Engine, idx: usize, snap: CheckSnapshot) -> CheckView {
        let plan = engine.plan();
        let c = &plan.checks[idx];
        let plugin = c.plugin.clone();
        let policies = c
            .policies
            .iter()
            .map(|&p| plan.policies[p].name.clone())
            .collect();
        let plugin_error = engine.plugin_set().error(&plugin);
        let needed = c.health.success_threshold;
        let health = HealthName::from(snap.health);
        let last_ok = snap
            .last
            .as_ref()
            .is_some_and(|l| l.status == contract::Status::Ok);
        let recovering = (health != HealthName::Healthy && last_ok).then_some(Recovering {
            passes: snap.consecutive_good.min(needed),
            needed,
        });
        CheckView {
            status: snap.last.as_ref().map(|l| l.status.into()),
            health,
            flapping: snap.flapping,
            flap_percent: if snap.flap_percent.is_finite() {
                snap.flap_percent
            } else {
                0.0
            },
            remediating: snap.remediating,
            held_by: snap.held_by,
            last: snap.last.as_ref().map(Into::into),
            plugin,
            interval_ms: Some(c.interval.as_millis() as u64),
            policies,
            plugin_error,
            paused: snap.paused.as_ref().map(Into::into),
            success_threshold: needed,
            recovering,
            baselines: engine
                .baselines(&snap.name)
                .into_iter()
                .map(Into::into)
                .collect(),
            name: snap.name,
        }
    }
}

/// `GET /api/v1/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusView {
    pub version: String,
    /// The engine's clock (Unix milliseconds).
    pub now: u64,
    /// mend is paused (every policy).
    pub paused: Option<PauseView>,
    pub open_incidents: u64,
    /// How late scheduled runs started, the wait for a bulkhead slot
    /// included, over the most recent runs.
    pub schedule_lag: LagView,
    /// How many checks there are (`checks` may be one page of them).
    pub total_checks: u64,
    /// The checks in config order: all, or the page `offset` and `limit`
    /// ask for.
    pub checks: Vec<CheckView>,
}

/// Schedule lag percentiles (milliseconds) over the most recent runs
/// (at most 100,000), and how many scheduled runs there were since start.
#[derive(Debug, Serialize, ToSchema)]
pub struct LagView {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub runs: u64,
}

/// A recorded result (kept when status or health changed).
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    pub check: String,
    pub at: u64,
    pub health: String,
    pub status: String,
    #[schema(value_type = Vec<Object>)]
    pub findings: serde_json::Value,
}

impl From<store::CheckResult> for HistoryView {
    fn from(r: store::CheckResult) -> Self {
        HistoryView {
            check: r.check,
            at: r.at,
            health: r.health,
            status: r.status,
            findings: r.findings,
        }
    }
}

/// `GET /api/v1/checks/{name}`: the check, its history (newest first) and
/// recent incidents.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckDetail {
    #[serde(flatten)]
    pub check: CheckView,
    pub history: Vec<HistoryView>,
    pub incidents: Vec<IncidentView>,
}

/// Where an incident stands.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentStateName {
    Open,
    Remediating,
    Held,
    Healed,
    Escalated,
    Acknowledged,
    Resolved,
    Recovered,
    Planned,
}

impl From<store::IncidentState> for IncidentStateName {
    fn from(s: store::IncidentState) -> Self {
        use store::IncidentState as S;
        match s {
            S::Open => IncidentStateName::Open,
            S::Remediating => IncidentStateName::Remediating,
            S::Held => IncidentStateName::Held,
            S::Healed => IncidentStateName::Healed,
            S::Escalated => IncidentStateName::Escalated,
            S::Acknowledged => IncidentStateName::Acknowledged,
            S::Resolved => IncidentStateName::Resolved,
            S::Recovered => IncidentStateName::Recovered,
            S::Planned => IncidentStateName::Planned,
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptOutcomeName {
    Running,
    Healed,
    Relapsed,
    NotHealed,
    Failed,
    Interrupted,
    Planned,
    Skipped,
    Escalation,
}

impl From<store::AttemptOutcome> for AttemptOutcomeName {
    fn from(o: store::AttemptOutcome) -> Self {
        use store::AttemptOutcome as O;
        match o {
            O::Running => AttemptOutcomeName::Running,
            O::Healed => AttemptOutcomeName::Healed,
            O::Relapsed => AttemptOutcomeName::Relapsed,
            O::NotHealed => AttemptOutcomeName::NotHealed,
            O::Failed => AttemptOutcomeName::Failed,
            O::Interrupted => AttemptOutcomeName::Interrupted,
            O::Planned => AttemptOutcomeName::Planned,
            O::Skipped => AttemptOutcomeName::Skipped,
            O::Escalation => AttemptOutcomeName::Escalation,
        }
    }
}

/// One step tried for an incident.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub id: i64,
    pub incident_id: i64,
    /// The ladder step (0-based), or null for the escalation.
    pub step: Option<u32>,
    /// Whether this is the policy's escalation step.
    pub escalation: bool,
    pub action: String,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    pub outcome: AttemptOutcomeName,
    pub dry_run: bool,
    /// What the action reported: `{"outcome": {"changed", "steps",
    /// "message"}}`, or `{"error": ...}`, `{"reason": ...}`, `{"note": ...}`.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub duration_ms: Option<u64>,
    pub fuel_used: Option<u64>,
}

impl From<store::Attempt> for AttemptView {
    fn from(a: store::Attempt) -> Self {
        AttemptView {
            id: a.id,
            incident_id: a.incident_id,
            step: match a.step {
                crate::contract::StepRef::Ladder(i) => Some(i),
                crate::contract::StepRef::Escalation => None,
            },
            escalation: a.step == crate::contract::StepRef::Escalation,
            action: a.action,
            started_at: a.started_at,
            finished_at: a.finished_at,
            outcome: a.outcome.into(),
            dry_run: a.dry_run,
            detail: a.detail,
            duration_ms: a.duration_ms,
            fuel_used: a.fuel_used,
        }
    }
}

/// What happened to an incident.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EventKindName {
    Escalated,
    Acknowledged,
    Resolved,
    Retry,
    OperatorHeal,
    Held,
    Released,
    AlertResolved,
    AlertRepeat,
}

impl From<store::EventKind> for EventKindName {
    fn from(k: store::EventKind) -> Self {
        use store::EventKind as K;
        match k {
            K::Escalated => EventKindName::Escalated,
            K::Acknowledged => EventKindName::Acknowledged,
            K::Resolved => EventKindName::Resolved,
            K::Retry => EventKindName::Retry,
            K::OperatorHeal => EventKindName::OperatorHeal,
            K::Held => EventKindName::Held,
            K::Released => EventKindName::Released,
            K::AlertResolved => EventKindName::AlertResolved,
            K::AlertRepeat => EventKindName::AlertRepeat,
        }
    }
}

/// One entry of an incident's timeline: who decided what, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentEventView {
    pub at: u64,
    pub kind: EventKindName,
    /// A person (`--by`), `mend`, or where the request came from.
    pub by: String,
    pub reason: String,
    /// e.g. `{"route", "severity"}` for `escalated`, `{"root_cause"}` for
    /// `held`, `{"force"}` for `operator-heal`.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<store::Event> for IncidentEventView {
    fn from(e: store::Event) -> Self {
        IncidentEventView {
            at: e.at,
            kind: e.kind.into(),
            by: e.by,
            reason: e.reason,
            detail: e.detail,
        }
    }
}

/// How much an incident matters (its check's `severity`).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeverityName {
    Critical,
    Warning,
    Info,
}

impl From<contract::Severity> for SeverityName {
    fn from(s: contract::Severity) -> Self {
        match s {
            contract::Severity::Critical => SeverityName::Critical,
            contract::Severity::Warning => SeverityName::Warning,
            contract::Severity::Info => SeverityName::Info,
        }
    }
}

/// An incident with its diagnosis and every attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentView {
    pub id: i64,
    pub policy: String,
    pub check: String,
    pub opened_at: u64,
    pub closed_at: Option<u64>,
    pub state: IncidentStateName,
    pub root_cause: String,
    /// `{check, policy, root_cause, decision, reason, evidence, plan}`.
    #[schema(value_type = Object)]
    pub diagnosis: serde_json::Value,
    pub dry_run: bool,
    pub escalated_at: Option<u64>,
    pub note: String,
    pub severity: SeverityName,
    /// When a person acknowledged it, and who.
    pub acked_at: Option<u64>,
    pub acked_by: Option<String>,
    /// How often a heal of this incident relapsed and reopened it.
    pub relapses: u32,
    pub attempts: Vec<AttemptView>,
    /// Its timeline, oldest first: escalations, acknowledgements,
    /// retries and why, holds, operators' heals, alerts.
    pub events: Vec<IncidentEventView>,
}

impl From<store::Incident> for IncidentView {
    fn from(i: store::Incident) -> Self {
        IncidentView {
            id: i.id,
            policy: i.policy,
            check: i.check,
            opened_at: i.opened_at,
            closed_at: i.closed_at,
            state: i.state.into(),
            root_cause: i.root_cause,
            diagnosis: i.diagnosis,
            dry_run: i.dry_run,
            escalated_at: i.escalated_at,
            note: i.note,
            severity: i.severity.into(),
            acked_at: i.acked_at,
            acked_by: i.acked_by,
            relapses: i.relapses,
            attempts: i.attempts.into_iter().map(Into::into).collect(),
            events: i.events.into_iter().map(Into::into).collect(),
        }
    }
}

/// What mend has learnt about one step against one finding code on one
/// check (or the checks sharing a `stats_key`).
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsView {
    /// The check, or the `stats_key` checks of one kind share; `*`: every
    /// check, learnt before stats were kept per check.
    pub key: String,
    pub code: String,
    /// The step's name.
    pub action: String,
    pub attempts: u32,
    pub healed: u32,
    pub success_rate: f64,
    pub mttr_ms: Option<u64>,
}

impl From<store::ActionStats> for StatsView {
    fn from(s: store::ActionStats) -> Self {
        StatsView {
            key: s.key,
            code: s.code,
            action: s.action,
            attempts: s.attempts,
            healed: s.healed,
            success_rate: if s.success_rate.is_finite() {
                s.success_rate
            } else {
                0.0
            },
            mttr_ms: s.mttr_ms,
        }
    }
}

/// A plugin in use.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginView {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub file: Option<String>,
    pub detector: bool,
    pub action: bool,
}

/// `GET /api/v1/plugins`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginsView {
    pub plugins: Vec<PluginView>,
    /// Plugin files the config does not use: found, hashed and named, but
    /// not loaded.
    pub unused: Vec<UnusedPluginView>,
    /// By plugin name or file name: why it cannot be used.
    pub errors: BTreeMap<String, String>,
    /// What the last plugin reload did: what it loaded or removed, or why
    /// it was refused (the running plugins then stay).
    pub reload: Option<PluginReloadView>,
}

/// A plugin file in the plugins directory that nothing in the config names.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnusedPluginView {
    pub name: String,
    pub sha256: String,
    pub file: String,
}

/// What a plugin reload did.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginReloadView {
    /// `name version` of plugins new or changed.
    pub loaded: Vec<String>,
    /// Plugins whose file went away.
    pub removed: Vec<String>,
    /// Why the new set was not taken.
    pub refused: Vec<String>,
}

/// What one policy did about a manual heal.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyHealView {
    pub policy: String,
    /// The ladder started (the incident is open and its first step runs).
    pub started: bool,
    /// The incident opened, or the one already open.
    pub incident: Option<i64>,
    pub dry_run: bool,
    /// Why it started or not.
    pub reason: String,
}

/// `POST /api/v1/checks/{name}/heal`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealView {
    pub check: String,
    /// The fresh detect the heal was decided on.
    pub result: ResultView,
    pub policies: Vec<PolicyHealView>,
}

impl From<&engine::HealOutcome> for HealView {
    fn from(h: &engine::HealOutcome) -> Self {
        HealView {
            check: h.check.clone(),
            result: (&h.result).into(),
            policies: h
                .policies
                .iter()
                .map(|p| PolicyHealView {
                    policy: p.policy.clone(),
                    started: p.started,
                    incident: p.incident,
                    dry_run: p.dry_run,
                    reason: p.reason.clone(),
                })
                .collect(),
        }
    }
}

/// `POST /api/v1/pause` and `POST /api/v1/checks/{name}/pause`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PausedView {
    pub paused: PauseView,
    /// It was already paused: the reason was replaced, `since` kept.
    pub updated: bool,
    /// The check paused, for a per-check pause.
    pub check: Option<String>,
}

/// `POST /api/v1/resume` and `POST /api/v1/checks/{name}/resume`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResumedView {
    /// A pause ended (false: there was none).
    pub resumed: bool,
    pub was: Option<PauseView>,
    pub check: Option<String>,
}

/// `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthzView {
    /// `ok`; `stalled` when the engine's heartbeat is old; `store-error`
    /// while the incident store cannot write (a full disk).
    pub status: String,
    pub heartbeat_age_ms: Option<u64>,
    /// mend is paused.
    pub paused: bool,
    /// Why the store cannot write, while it cannot.
    pub store_error: Option<String>,
    /// With a 503: why, in one line, as every other error answer of the
    /// API has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /api/v1/reload`: the config was reloaded.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadedView {
    pub reloaded: bool,
    pub checks: usize,
    pub policies: usize,
    pub plugins: usize,
}
