//! `mend.toml`: the operator's checks and policies, as written.
//!
//! Parsing is strict: unknown keys are rejected (with a "did you mean"),
//! and every error names the file, the line:column and the key path.
//! Problems in different tables are reported together: each `[[check]]`,
//! `[[policy]]`, `[connections.*]`... is read on its own, so one bad table
//! does not hide the next. Durations are written `"30s"`; `${VAR}` and
//! `${VAR:-default}` pull values from the environment ([`env`]). [`load`]
//! checks what needs nothing but the file; `crate::plan` checks the rest
//! (plugins, grants against needs, plugin configs) and is the one
//! validation `mend run`, reload and `mend check-config` share.

pub mod api;
pub mod env;
pub mod error;
pub mod fleet;
pub mod suggest;
mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub use self::api::ApiConfig;
use self::error::Reporter;
pub use self::error::{ConfigError, ConfigErrors};
pub(crate) use self::validate::dependency_graph;
use crate::capabilities::exec::CommandDef;
use crate::capabilities::{ConnectionDef, Grants};
use crate::contract::Status;
use crate::policy::backoff::Backoff;
use crate::policy::breaker::BreakerConfig;
use crate::policy::flap::FlapConfig;
use crate::policy::health::HealthConfig;
use crate::policy::maintenance::MaintenanceWindow;
use crate::policy::trigger::Trigger;
use crate::runtime::Limits;
use crate::values::{Bytes, Dur};

/// A parsed and validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    pub engine: EngineConfig,
    /// `[connections.NAME]`: databases and caches plugins may be granted.
    pub connections: BTreeMap<String, ConnectionDef>,
    /// `[commands.NAME]`: commands plugins may be granted.
    pub commands: BTreeMap<String, CommandDef>,
    /// `[plugins.NAME]`: which file may carry a plugin name, and the
    /// plugin's own limits.
    pub plugins: BTreeMap<String, PluginSettings>,
    pub checks: Vec<CheckConfig>,
    pub policies: Vec<PolicyConfig>,
    pub api: ApiConfig,
    /// `[fleet]`: off (None) unless configured.
    pub fleet: Option<fleet::FleetConfig>,
    /// `[escalate.SEVERITY]`: how incidents of checks of that severity
    /// are escalated, for policies without their own `[policy.escalate]`.
    pub escalate: BTreeMap<Severity, StepConfig>,
    /// The text it was read from, for positions in later errors.
    pub source: Arc<Source>,
    /// Each check name's first index in `checks`: policies, rules and
    /// escalations look their check up by name, and a scan per lookup
    /// made 20,000 checks with a policy each take seconds to load.
    check_index: HashMap<String, usize>,
}

/// The top-level tables of `mend.toml`.
const SECTIONS: &[&str] = &[
    "engine",
    "api",
    "connections",
    "commands",
    "plugins",
    "check",
    "policy",
    "fleet",
    "escalate",
];

/// `[plugins.NAME]`: settings of one plugin, wherever it is used.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// Pins the plugin name to one file's content (the sha256 of the
    /// `.wasm`, as `mend plugin inspect` prints it), so no other `.wasm` in
    /// the plugins directory can claim it.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Limits for every call of this plugin, over `[engine.limits]` and
    /// under a check's or step's own `limits`: a Python plugin may get
    /// 64 MiB without every Rust plugin getting it.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// Where a config came from: the file's text, its `${VAR}` expansion, and
/// the span of every key, so any stage can say where a problem is.
#[derive(Debug, Default)]
pub struct Source {
    pub file: PathBuf,
    text: String,
    lines: error::LineIndex,
    expanded: env::Expanded,
    /// Key path (`check[2].config`, `engine.plugins_dir`) → span of its
    /// value in the expanded text.
    keys: BTreeMap<String, Range<usize>>,
}

impl Source {
    /// 1-based line and column in the file of a span of the expanded text.
    pub fn position(&self, span: &Range<usize>) -> (usize, usize) {
        self.lines
            .line_col(&self.text, self.expanded.original(span.start))
    }

    /// Where a key's value is, or its closest enclosing table's.
    pub fn span_of(&self, key: &str) -> Option<Range<usize>> {
        let mut k = key;
        loop {
            if let Some(s) = self.keys.get(k) {
                return Some(s.clone());
            }
            let cut = k.rfind(['.', '['])?;
            k = &k[..cut];
        }
    }

    /// An error at `key`, positioned.
    pub fn error(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let key = key.into();
        ConfigError {
            file: self.file.clone(),
            position: self.span_of(&key).map(|s| self.position(&s)),
            key,
            message: message.into(),
        }
    }

    /// An error at an exact span.
    pub fn error_at(
        &self,
        span: &Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            position: Some(self.position(span)),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Records the span of `value` at `prefix` and of everything in it.
    fn record(&mut self, prefix: &str, span: Range<usize>, value: &DeValue<'_>) {
        self.keys.insert(prefix.to_string(), span);
        match value {
            DeValue::Table(t) => self.record_table(prefix, t),
            DeValue::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    self.record(&format!("{prefix}[{i}]"), v.span(), v.get_ref());
                }
            }
            _ => {}
        }
    }

    fn record_table(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (k, v) in table.iter() {
            let path = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            self.record(&path, v.span(), v.get_ref());
        }
    }
}

/// `[engine]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Where the `.wasm` plugins are (relative to the config file).
    #[serde(default = "default_plugins_dir")]
    pub plugins_dir: PathBuf,
    /// Where mend keeps its incident store, compile cache and plugin state
    /// (relative to the config file). Default: `$MEND_STATE_DIR`, else
    /// `$XDG_STATE_HOME/mend`, else `~/.local/state/mend`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Default check interval.
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// Plugin calls that may run at once (a bulkhead).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u32,
    /// Plan only: actions report what they would do and change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Default sandbox limits for every plugin call.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// How long check results are kept.
    #[serde(default = "default_retention")]
    pub history_retention: Dur,
    /// Run calls granted directories on the async worker (saves a thread
    /// hop per call) instead of a pool thread of their own (where a call
    /// blocked on a FIFO or hung mount still meets its deadline).
    #[serde(default)]
    pub inline_file_io: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            plugins_dir: default_plugins_dir(),
            state_dir: None,
            interval: default_interval(),
            max_concurrent: default_max_concurrent(),
            dry_run: false,
            limits: LimitsConfig::default(),
            history_retention: default_retention(),
            inline_file_io: false,
        }
    }
}

fn default_plugins_dir() -> PathBuf {
    PathBuf::from("plugins")
}
fn default_interval() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_max_concurrent() -> u32 {
    8
}
fn default_retention() -> Dur {
    Dur(Duration::from_secs(7 * 24 * 3600))
}

/// Sandbox limits; unset fields inherit.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub fuel: Option<u64>,
    pub deadline: Option<Dur>,
    pub memory: Option<Bytes>,
}

impl LimitsConfig {
    /// [`LimitsConfig::over`], with a deadline that, unless set here, is
    /// long enough for the slowest granted command or connection to run
    /// out its own timeout (plus a margin for the plugin's own work).
    pub fn over_for(&self, base: Limits, grants: &crate::capabilities::ResolvedGrants) -> Limits {
        let mut limits = self.over(base);
        if self.deadline.is_none()
            && let Some(longest) = grants.longest_wait()
        {
            limits.deadline = limits.deadline.max(longest + Duration::from_secs(2));
        }
        limits
    }

    /// These limits over `base`.
    pub fn over(&self, base: Limits) -> Limits {
        Limits {
            fuel: self.fuel.unwrap_or(base.fuel),
            deadline: self.deadline.map(|d| d.0).unwrap_or(base.deadline),
            memory: self.memory.map(|m| m.as_usize()).unwrap_or(base.memory),
            ..base
        }
    }
}

pub use crate::contract::Severity;

/// `[[check]]`: a detector run on a schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub name: Spanned<String>,
    /// The detector plugin, by the name in its manifest.
    pub plugin: Spanned<String>,
    #[serde(default)]
    pub interval: Option<Dur>,
    /// Random delay added to each interval, to spread load. Default: 10%
    /// of the interval.
    #[serde(default)]
    pub jitter: Option<Dur>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub grants: Grants,
    /// The plugin's own config table.
    #[serde(default)]
    pub config: toml::Table,
    /// Checks this one depends on: when they fail too, they are the root
    /// cause, and this check's policies hold.
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Failed results in a row before the check counts as unavailable.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Good results in a row before a failing check counts as healthy
    /// again. One passing probe is not enough.
    #[serde(default = "default_success_threshold")]
    pub success_threshold: u32,
    /// Flap detection thresholds (percent state change over 21 results).
    #[serde(default)]
    pub flap: FlapConfig,
    /// What mend learns (success per finding code and step, for
    /// `adaptive` ladders and `/api/v1/stats`) is kept per check; checks
    /// of one kind (e.g. every disk) may share it under one key.
    #[serde(default)]
    pub stats_key: Option<String>,
}

fn default_failure_threshold() -> u32 {
    3
}
fn default_success_threshold() -> u32 {
    2
}

impl CheckConfig {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }
    pub fn interval(&self, engine: &EngineConfig) -> Duration {
        self.interval.unwrap_or(engine.interval).0
    }
    pub fn jitter(&self, engine: &EngineConfig) -> Duration {
        self.jitter
            .map(|j| j.0)
            .unwrap_or_else(|| self.interval(engine) / 10)
    }
    pub fn health(&self) -> HealthConfig {
        HealthConfig {
            failure_threshold: self.failure_threshold,
            success_threshold: self.success_threshold,
        }
    }
}

/// When a policy fires: `{ consecutive = 3 }` or `{ n = 3, of = 5 }`;
/// with `anomaly = { .. }`, what counts as bad is a metric departing from
/// its own baseline (and the window says how many such results it takes).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    pub consecutive: Option<u32>,
    pub n: Option<u32>,
    pub of: Option<u32>,
    #[serde(default)]
    pub anomaly: Option<AnomalyConfig>,
}

/// `trigger = { anomaly = { metric = "latency_ms", sigma = 4 } }`: a
/// finding's metric against its own baseline (`policy/baseline.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// The finding metric (findings without it are no data, not bad).
    pub metric: String,
    /// How many deviations from the mean count as anomalous.
    #[serde(default = "default_sigma")]
    pub sigma: f64,
    /// `up` (default), `down` or `both`.
    #[serde(default)]
    pub direction: crate::policy::baseline::Direction,
    /// No verdict before this much history...
    #[serde(default = "default_min_history")]
    pub min_history: Dur,
    /// ...and this many samples.
    #[serde(default = "default_min_samples")]
    pub min_samples: u32,
    /// How fast the baseline forgets.
    #[serde(default = "default_half_life")]
    pub half_life: Dur,
    /// The smallest deviation, in the metric's unit (a flat series does
    /// not page on noise); at least 5% of the mean anyway.
    #[serde(default)]
    pub min_deviation: f64,
    /// Seasonal-naive (e.g. `"1d"`): one baseline per time-of-day bucket,
    /// once a full season is seen.
    #[serde(default)]
    pub season: Option<Dur>,
    /// Buckets per season.
    #[serde(default = "default_buckets")]
    pub buckets: u32,
}

/// The longest warm-up, half-life or season an anomaly trigger may ask for.
const MAX_ANOMALY_SPAN: Duration = Duration::from_secs(90 * 86_400);

impl AnomalyConfig {
    /// Problems as (field, message), for a check run every `interval`.
    pub fn problems(&self, interval: Duration) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.metric.trim().is_empty() {
            out.push((
                "metric",
                "is empty: name the finding metric to watch".into(),
            ));
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0 && self.sigma <= 100.0) {
            out.push(("sigma", format!("{} is not in (0, 100]", self.sigma)));
        }
        if self.min_samples == 0 {
            out.push(("min_samples", "must be at least 1".into()));
        }
        if !(self.min_deviation.is_finite() && self.min_deviation >= 0.0) {
            out.push((
                "min_deviation",
                format!("{} is not >= 0", self.min_deviation),
            ));
        }
        for (field, d) in [
            ("min_history", self.min_history.0),
            ("half_life", self.half_life.0),
        ] {
            if d > MAX_ANOMALY_SPAN {
                out.push((field, format!("{} exceeds 90d", Dur(d))));
            }
        }
        if self.half_life.0.is_zero() {
            out.push(("half_life", "must be more than 0s".into()));
        }
        if self.buckets == 0 || self.buckets > 10_080 {
            out.push(("buckets", format!("{} is not in 1..=10080", self.buckets)));
        }
        if let Some(season) = self.season {
            if season.0 > MAX_ANOMALY_SPAN {
                out.push(("season", format!("{season} exceeds 90d")));
            } else if self.buckets > 0 && season.0 / self.buckets < interval {
                out.push((
                    "season",
                    format!(
                        "{season} in {} buckets is less than the check's interval ({}) per bucket",
                        self.buckets,
                        Dur(interval)
                    ),
                ));
            }
        }
        out
    }

    /// The rule for a check run every `interval`.
    pub fn rule(&self, interval: Duration) -> crate::policy::baseline::AnomalyRule {
        crate::policy::baseline::AnomalyRule::new(
            self.metric.trim(),
            self.sigma,
            self.direction,
            self.min_history.0,
            u64::from(self.min_samples),
            self.half_life.0,
            self.min_deviation,
            self.season.map(|s| (s.0, self.buckets)),
            interval,
        )
    }
}

fn default_sigma() -> f64 {
    4.0
}
fn default_min_history() -> Dur {
    Dur(Duration::from_secs(3600))
}
fn default_min_samples() -> u32 {
    30
}
fn default_half_life() -> Dur {
    Dur(Duration::from_secs(3600))
}
fn default_buckets() -> u32 {
    24
}

impl TriggerConfig {
    pub fn trigger(&self) -> Result<Trigger, String> {
        let t = match (self.consecutive, self.n, self.of) {
            (Some(c), None, None) => Trigger::Consecutive(c),
            (None, Some(n), Some(m)) => Trigger::NOfM { n, m },
            (None, None, None) => Trigger::Consecutive(3),
            _ => return Err("write either `consecutive = N` or `n = N, of = M`".into()),
        };
        t.validate()?;
        Ok(t)
    }
}

/// A step of an escalation ladder, or the escalation itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// The step's name, for stats, breakers and the incident record.
    /// Default: the action's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The action plugin, by the name in its manifest.
    pub action: Spanned<String>,
    #[serde(default)]
    pub config: toml::Table,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// How long to wait after the action before verifying.
    #[serde(default = "default_settle")]
    pub settle: Dur,
    /// The fleet budget (`[fleet.budget.NAME]`) whose slot the step holds.
    #[serde(default)]
    pub budget: Option<Spanned<String>>,
}

impl StepConfig {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.action.get_ref())
    }
}

fn default_settle() -> Dur {
    Dur(Duration::from_secs(10))
}

/// `[policy.backoff]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(default = "d_backoff_base")]
    pub base: Dur,
    #[serde(default = "d_backoff_max")]
    pub max: Dur,
    #[serde(default = "d_backoff_factor")]
    pub factor: f64,
    /// Fraction of each delay that is randomised away (0 to 1).
    #[serde(default = "d_backoff_jitter")]
    pub jitter: f64,
}

fn d_backoff_base() -> Dur {
    Dur(Backoff::default().base)
}
fn d_backoff_max() -> Dur {
    Dur(Backoff::default().max)
}
fn d_backoff_factor() -> f64 {
    Backoff::default().factor
}
fn d_backoff_jitter() -> f64 {
    Backoff::default().jitter
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: d_backoff_base(),
            max: d_backoff_max(),
            factor: d_backoff_factor(),
            jitter: d_backoff_jitter(),
        }
    }
}

impl BackoffConfig {
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: self.base.0,
            max: self.max.0,
            factor: self.factor,
            jitter: self.jitter,
        }
    }
}

/// `[policy.breaker]`: per (check, action).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfigToml {
    /// Failed attempts in a row that open the breaker.
    #[serde(default = "d_breaker_failures")]
    pub failures: u32,
    /// How long it stays open before one half-open probe.
    #[serde(default = "d_breaker_open_for")]
    pub open_for: Dur,
    /// Cap on the open time, which doubles with each repeated trip.
    #[serde(default = "d_breaker_max_open_for")]
    pub max_open_for: Dur,
}

fn d_breaker_failures() -> u32 {
    BreakerConfig::default().failure_threshold
}
fn d_breaker_open_for() -> Dur {
    Dur(BreakerConfig::default().open_for)
}
fn d_breaker_max_open_for() -> Dur {
    Dur(BreakerConfig::default().max_open_for)
}

impl Default for BreakerConfigToml {
    fn default() -> Self {
        BreakerConfigToml {
            failures: d_breaker_failures(),
            open_for: d_breaker_open_for(),
            max_open_for: d_breaker_max_open_for(),
        }
    }
}

impl BreakerConfigToml {
    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: self.failures,
            open_for: self.open_for.0,
            max_open_for: self.max_open_for.0,
        }
    }
}

/// `[[policy]]`: what to do when a check goes bad.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: Spanned<String>,
    /// The check it watches.
    pub check: Spanned<String>,
    /// Finding codes it matches (globs, e.g. `disk.*`). Default: any.
    #[serde(default = "default_codes")]
    pub codes: Vec<String>,
    /// Statuses it matches. Default: `["fail"]`; with an anomaly
    /// trigger, `["ok", "warn", "fail"]` (a slow answer may still be ok).
    #[serde(default)]
    pub status: Option<Vec<Status>>,
    #[serde(default)]
    pub trigger: TriggerConfig,
    /// The escalation ladder, tried in order (or by past success with
    /// `adaptive`).
    #[serde(rename = "step", default)]
    pub steps: Vec<StepConfig>,
    /// Quiet time after an incident closes before another may open.
    #[serde(default = "default_cooldown")]
    pub cooldown: Dur,
    /// At most this many action attempts per `window`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_window")]
    pub window: Dur,
    /// Delay between ladder steps.
    #[serde(default)]
    pub backoff: BackoffConfig,
    #[serde(default)]
    pub breaker: BreakerConfigToml,
    /// Try first the steps that healed these codes most often.
    #[serde(default)]
    pub adaptive: bool,
    /// Plan only, for this policy.
    #[serde(default)]
    pub dry_run: bool,
    /// Recurring windows (UTC) in which no action runs.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceWindow>,
    /// Detect and record, but take no action (maintenance without an end).
    #[serde(default)]
    pub paused: bool,
    /// Run once when the ladder is exhausted or the check flaps (e.g. a
    /// notification). Without it, escalation is logged and recorded.
    #[serde(default)]
    pub escalate: Option<StepConfig>,
    /// After escalating, exit so the supervisor (systemd) restarts mend:
    /// the "heavy heal". An operator's heal never does.
    #[serde(default)]
    pub exit_on_exhausted: bool,
    /// Escalate an incident still open this long after it opened (the
    /// ladder goes on). Default: only when the ladder is exhausted.
    #[serde(default)]
    pub escalate_after: Option<Dur>,
    /// `[policy.verify]`: how many passing probes, over how long, make a
    /// step healed.
    #[serde(default)]
    pub verify: VerifyConfig,
    /// A check that goes bad again this soon after a heal reopens the same
    /// incident (a relapse), and the heal is not counted as a success.
    #[serde(default = "default_relapse_window")]
    pub relapse_window: Dur,
}

/// `[policy.verify]`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// Passing probes in a row. Default: 3.
    #[serde(default)]
    pub probes: Option<u32>,
    /// From the first probe (right after the settle) to the last.
    /// Default: 3 × the check's interval, at most 30 s.
    #[serde(default)]
    pub window: Option<Dur>,
    /// The first look after an action; looks back off up to the step's
    /// `settle`, which so is a limit. `"0s"`: wait the whole settle.
    #[serde(default)]
    pub poll: Option<Dur>,
}

fn default_relapse_window() -> Dur {
    Dur(crate::policy::verify::DEFAULT_RELAPSE_WINDOW)
}

fn default_codes() -> Vec<String> {
    vec!["*".into()]
}
fn default_cooldown() -> Dur {
    Dur(Duration::from_secs(600))
}
fn default_max_attempts() -> u32 {
    5
}
fn default_window() -> Dur {
    Dur(Duration::from_secs(3600))
}

impl PolicyConfig {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }
    /// The statuses it matches: as written, else `fail` (any status but
    /// unknown with an anomaly trigger: the metric is what is judged).
    pub fn statuses(&self) -> Vec<Status> {
        match &self.status {
            Some(s) => s.clone(),
            None if self.trigger.anomaly.is_some() => vec![Status::Ok, Status::Warn, Status::Fail],
            None => vec![Status::Fail],
        }
    }
    /// The verification, for a check run every `interval`.
    pub fn verify(&self, interval: Duration) -> crate::policy::verify::Verify {
        use crate::policy::verify::{DEFAULT_PROBES, Verify};
        Verify {
            probes: self.verify.probes.unwrap_or(DEFAULT_PROBES),
            window: self
                .verify
                .window
                .map(|w| w.0)
                .unwrap_or_else(|| Verify::default_window(interval)),
            relapse_window: self.relapse_window.0,
            poll: self
                .verify
                .poll
                .map_or(crate::policy::verify::DEFAULT_POLL, |p| p.0),
        }
    }
}

impl Config {
    /// The plugins directory, resolved against the config file's folder.
    pub fn plugins_dir(&self) -> PathBuf {
        self.relative(&self.engine.plugins_dir)
    }

    /// The state directory, resolved against the config file's folder.
    pub fn state_dir(&self) -> Option<PathBuf> {
        match &self.engine.state_dir {
            Some(d) => Some(self.relative(d)),
            None => default_state_dir(),
        }
    }

    /// Makes relative directory grants (and command working directories)
    /// relative to the config file, like every other path in it.
    fn anchor_grants(&mut self) {
        let base = self.file.parent().unwrap_or(Path::new(".")).to_path_buf();
        for c in self.commands.values_mut() {
            if let Some(cwd) = &mut c.cwd
                && cwd.is_relative()
            {
                *cwd = base.join(&*cwd);
            }
        }
        let anchor = |g: &mut Grants| {
            for d in &mut g.dirs {
                if d.host.is_relative() {
                    d.host = base.join(&d.host);
                }
            }
        };
        for c in &mut self.checks {
            anchor(&mut c.grants);
        }
        for p in &mut self.policies {
            for s in p.steps.iter_mut().chain(p.escalate.as_mut()) {
                anchor(&mut s.grants);
            }
        }
        for s in self.escalate.values_mut() {
            anchor(&mut s.grants);
        }
    }

    fn relative(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    pub fn check(&self, name: &str) -> Option<&CheckConfig> {
        self.check_position(name).map(|i| &self.checks[i])
    }

    /// The index in `checks` of the (first) check called `name`.
    pub fn check_position(&self, name: &str) -> Option<usize> {
        self.check_index.get(name).copied()
    }

    /// Policy `p`'s escalation: its own `[policy.escalate]`, else the
    /// `[escalate.SEVERITY]` of its check's severity; with the key it is
    /// written under.
    pub fn escalation_of<'a>(&'a self, p: &'a PolicyConfig) -> Option<(String, &'a StepConfig)> {
        if let Some(s) = &p.escalate {
            return Some(("policy.escalate".into(), s));
        }
        let severity = self.check(p.check.get_ref())?.severity;
        self.escalate
            .get(&severity)
            .map(|s| (format!("escalate.{}", severity.as_str()), s))
    }

    /// Default limits for plugin calls.
    pub fn limits(&self) -> Limits {
        self.engine.limits.over(Limits::default())
    }

    /// Limits for calls of one plugin: its `[plugins.NAME].limits` over
    /// the defaults (a check's or step's own `limits` go over these).
    pub fn plugin_limits(&self, plugin: &str) -> Limits {
        let base = self.limits();
        match self.plugins.get(plugin) {
            Some(p) => p.limits.over(base),
            None => base,
        }
    }
}

/// mend's state directory when the config names none: `$MEND_STATE_DIR`,
/// else `$XDG_STATE_HOME/mend`, else `~/.local/state/mend`.
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("MEND_STATE_DIR") {
        return Some(d.into());
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return Some(PathBuf::from(d).join("mend"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/mend"))
}

/// A config as far as it could be read, and every problem found.
#[derive(Debug)]
pub struct Parsed {
    /// Present whenever the file is TOML; tables that did not parse are
    /// left out (and reported).
    pub config: Option<Config>,
    pub errors: Vec<ConfigError>,
}

impl Parsed {
    /// The config, if there was no problem at all.
    pub fn strict(self) -> Result<Config, ConfigErrors> {
        match self.config {
            Some(c) if self.errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors(self.errors)),
        }
    }
}

/// Reads and parses a config file (see [`parse`]).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_partial(path).strict()
}

/// Reads and parses a config file, keeping what parsed beside the errors.
pub fn load_partial(path: &Path) -> Parsed {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_partial(&text, path, |k| std::env::var(k).ok()),
        Err(e) => Parsed {
            config: None,
            errors: vec![ConfigError {
                file: path.to_path_buf(),
                position: None,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }],
        },
    }
}

/// Parses config text and checks what the file alone can tell (names,
/// references, cycles, values). `env` resolves `${VAR}`.
pub fn parse(
    text: &str,
    file: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    parse_partial(text, file, env).strict()
}

/// [`parse`], keeping what parsed beside the errors.
/// TOML reports a key or table name of too many dotted parts (its
/// recursion limit, 80) without a span (found by the `config` fuzz
/// target): point at the line with the most dots, where such a name is,
/// and say what the limit is about.
fn unplaced(text: &str, message: &str) -> (Range<usize>, String) {
    let mut best = (0, 0);
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let dots = line.bytes().filter(|&b| b == b'.').count();
        if dots > best.1 {
            best = (start, dots);
        }
        start += line.len();
    }
    let message = match message {
        "recursion limit" => {
            "recursion limit: a key or table name of 80 or more dotted parts".to_string()
        }
        m => m.to_string(),
    };
    (best.0..best.0, message)
}

pub fn parse_partial(text: &str, file: &Path, env: impl Fn(&str) -> Option<String>) -> Parsed {
    let fail = |errors| Parsed {
        config: None,
        errors,
    };
    let mut source = Source {
        file: file.to_path_buf(),
        text: text.to_string(),
        lines: error::LineIndex::new(text),
        ..Source::default()
    };
    match env::expand(text, env) {
        Ok(e) => source.expanded = e,
        Err(missing) => {
            let errors = missing
                .into_iter()
                .map(|m| ConfigError {
                    file: file.to_path_buf(),
                    position: Some(source.lines.line_col(text, m.offset)),
                    key: m.key,
                    message: m.message,
                })
                .collect();
            return fail(errors);
        }
    }
    let expanded = source.expanded.text.clone();
    let (root, syntax) = DeTable::parse_recoverable(&expanded);
    if !syntax.is_empty() {
        let errors = syntax
            .iter()
            .map(|e| {
                let (span, message) = match e.span() {
                    Some(s) => (s, e.message().to_string()),
                    None => unplaced(&expanded, e.message()),
                };
                ConfigError {
                    file: file.to_path_buf(),
                    position: Some(source.position(&span)),
                    key: String::new(),
                    message,
                }
            })
            .collect();
        return fail(errors);
    }
    // From the parsed tree itself: a copy of it was half the peak memory
    // of loading a large config.
    source.keys.insert(String::new(), root.span());
    source.record_table("", root.get_ref());

    let mut sections = Sections::default();
    for (key, value) in root.into_inner() {
        sections.read(&source, key.get_ref(), value);
    }
    let Sections {
        mut errors,
        engine,
        api,
        fleet,
        connections,
        commands,
        plugins,
        checks,
        policies,
        escalate,
        unparsed,
    } = sections;
    let source = Arc::new(source);
    let mut check_index = HashMap::with_capacity(checks.len());
    for (i, c) in checks.iter().enumerate() {
        check_index.entry(c.name().to_string()).or_insert(i);
    }
    let mut config = Config {
        file: file.to_path_buf(),
        engine: engine.unwrap_or_default(),
        connections,
        commands,
        plugins,
        checks,
        policies,
        api: api.unwrap_or_default(),
        fleet,
        escalate,
        source: source.clone(),
        check_index,
    };
    config.anchor_grants();
    let mut report = Reporter::new(&source);
    validate::validate(&config, &unparsed, &mut report);
    api::validate(&config, &mut report);
    fleet::validate(&config, &mut report);
    errors.extend(report.errors);
    errors.sort_by_key(|e| e.position);
    Parsed {
        config: Some(config),
        errors,
    }
}

/// Names of tables that did not parse, so that what refers to them is not
/// reported twice.
#[derive(Debug, Default)]
pub(crate) struct Unparsed {
    pub checks: BTreeSet<String>,
    pub policies: usize,
}

/// The top-level tables, each read on its own.
#[derive(Default)]
struct Sections {
    errors: Vec<ConfigError>,
    engine: Option<EngineConfig>,
    api: Option<ApiConfig>,
    fleet: Option<fleet::FleetConfig>,
    connections: BTreeMap<String, ConnectionDef>,
    commands: BTreeMap<String, CommandDef>,
    plugins: BTreeMap<String, PluginSettings>,
    checks: Vec<CheckConfig>,
    policies: Vec<PolicyConfig>,
    escalate: BTreeMap<Severity, StepConfig>,
    unparsed: Unparsed,
}

impl Sections {
    fn read(&mut self, source: &Source, key: &str, value: Spanned<DeValue<'_>>) {
        match key {
            "engine" => self.engine = self.one(source, "engine", value),
            "api" => self.api = self.one(source, "api", value),
            "fleet" => self.fleet = self.one(source, "fleet", value),
            "connections" => {
                for (name, v) in self.entries(source, key, value) {
                    if let Some(d) = self.one(source, &format!("connections.{name}"), v) {
                        self.connections.insert(name, d);
                    }
                }
            }
            "commands" => {
                for (name, v) in self.entries(source, key, value) {
                    if let Some(d) = self.one(source, &format!("commands.{name}"), v) {
                        self.commands.insert(name, d);
                    }
                }
            }
            "escalate" => {
                for (name, v) in self.entries(source, key, value) {
                    let severity = [Severity::Critical, Severity::Warning, Severity::Info]
                        .into_iter()
                        .find(|s| s.as_str() == name);
                    let Some(severity) = severity else {
                        self.errors.push(source.error(
                            format!("escalate.{name}"),
                            format!(
                                "`{name}` is not a severity: write [escalate.critical], [escalate.warning] or [escalate.info]{}",
                                suggest::hint(&name, ["critical", "warning", "info"].into_iter())
                            ),
                        ));
                        continue;
                    };
                    if let Some(d) = self.one(source, &format!("escalate.{name}"), v) {
                        self.escalate.insert(severity, d);
                    }
                }
            }
            "plugins" => {
                for (name, v) in self.entries(source, key, value) {
                    if let Some(d) = self.one(source, &format!("plugins.{name}"), v) {
                        self.plugins.insert(name, d);
                    }
                }
            }
            "check" => {
                for (i, v) in self.elements(source, key, value).into_iter().enumerate() {
                    let name = name_of(&v);
                    match self.one::<CheckConfig>(source, &format!("check[{i}]"), v) {
                        Some(c) => self.checks.push(c),
                        None => {
                            self.unparsed.checks.extend(name);
                        }
                    }
                }
            }
            "policy" => {
                for (i, v) in self.elements(source, key, value).into_iter().enumerate() {
                    match self.one::<PolicyConfig>(source, &format!("policy[{i}]"), v) {
                        Some(p) => self.policies.push(p),
                        None => self.unparsed.policies += 1,
                    }
                }
            }
            other => self.errors.push(source.error(
                other,
                format!(
                    "unknown table `{other}`; mend.toml has {}{}",
                    SECTIONS
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    suggest::hint(other, SECTIONS.iter().copied())
                ),
            )),
        }
    }

    /// Deserializes one table, recording its first error.
    fn one<T: serde::de::DeserializeOwned>(
        &mut self,
        source: &Source,
        key: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Option<T> {
        let span = value.span();
        match serde_path_to_error::deserialize::<_, T>(value.into_deserializer()) {
            Ok(v) => Some(v),
            Err(e) => {
                let path = e.path().to_string();
                let full = if path == "." || path.is_empty() {
                    key.to_string()
                } else {
                    format!("{key}.{path}")
                };
                let at = e.inner().span().unwrap_or(span);
                let message = suggest::with_field_hint(e.inner().message());
                self.errors.push(source.error_at(&at, full, message));
                None
            }
        }
    }

    fn entries<'a>(
        &mut self,
        source: &Source,
        key: &str,
        value: Spanned<DeValue<'a>>,
    ) -> Vec<(String, Spanned<DeValue<'a>>)> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Table(t) => t
                .into_iter()
                .map(|(k, v)| (k.into_inner().into_owned(), v))
                .collect(),
            _ => {
                self.errors.push(source.error_at(
                    &span,
                    key,
                    format!("must be a table of named entries, e.g. [{key}.NAME]"),
                ));
                Vec::new()
            }
        }
    }

    fn elements<'a>(
        &mut self,
        source: &Source,
        key: &str,
        value: Spanned<DeValue<'a>>,
    ) -> Vec<Spanned<DeValue<'a>>> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(a) => a.iter().cloned().collect(),
            _ => {
                self.errors.push(source.error_at(
                    &span,
                    key,
                    format!("must be an array of tables: write [[{key}]]"),
                ));
                Vec::new()
            }
        }
    }
}

/// The `name` of a raw table, if it has a string one.
fn name_of(v: &Spanned<DeValue<'_>>) -> Option<String> {
    v.get_ref()
        .as_table()?
        .get("name")?
        .get_ref()
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests;
