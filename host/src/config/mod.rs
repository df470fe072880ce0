//! `mend.toml`: the operator's checks and policies.
//!
//! Parsing is strict: unknown keys are rejected, and every error names the
//! file, the line:column and the key path. Durations are written `"30s"`;
//! `${VAR}` pulls secrets from the environment. [`load`] parses and then
//! validates everything that can be checked without running plugins, and
//! reports all problems at once; `mend check-config` adds the plugin checks.

pub mod api;
pub mod env;
pub mod error;
pub mod fleet;
mod validate;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use self::api::ApiConfig;
use self::error::Reporter;
pub use self::error::{ConfigError, ConfigErrors};
pub(crate) use self::validate::dependency_graph;
use self::values::{Bytes, Dur};
use crate::capabilities::exec::CommandDef;
use crate::capabilities::{Backends, ConnectionDef, Grants};
use crate::contract::Status;
use crate::policy::backoff::Backoff;
use crate::policy::breaker::BreakerConfig;
use crate::policy::flap::FlapConfig;
use crate::policy::health::HealthConfig;
use crate::policy::maintenance::MaintenanceWindow;
use crate::policy::trigger::Trigger;
use crate::runtime::Limits;

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
    pub checks: Vec<CheckConfig>,
    pub policies: Vec<PolicyConfig>,
    pub api: ApiConfig,
    /// `[fleet]`: off (None) unless configured.
    pub fleet: Option<fleet::FleetConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    engine: EngineConfig,
    #[serde(default)]
    connections: BTreeMap<String, ConnectionDef>,
    #[serde(default)]
    commands: BTreeMap<String, CommandDef>,
    #[serde(default, rename = "check")]
    checks: Vec<CheckConfig>,
    #[serde(default, rename = "policy")]
    policies: Vec<PolicyConfig>,
    #[serde(default)]
    api: ApiConfig,
    #[serde(default)]
    fleet: Option<fleet::FleetConfig>,
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
    /// Run plugins' file I/O inline (faster) instead of on a thread pool
    /// (where a call blocked on a FIFO or hung mount still meets its
    /// deadline).
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
            memory: self.memory.map(|m| m.0).unwrap_or(base.memory),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    #[default]
    Warning,
    Info,
}

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

/// When a policy fires: `{ consecutive = 3 }` or `{ n = 3, of = 5 }`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    pub consecutive: Option<u32>,
    pub n: Option<u32>,
    pub of: Option<u32>,
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
    /// Statuses it matches. Default: `["fail"]`.
    #[serde(default = "default_status")]
    pub status: Vec<Status>,
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
    /// the "heavy heal".
    #[serde(default)]
    pub exit_on_exhausted: bool,
}

fn default_codes() -> Vec<String> {
    vec!["*".into()]
}
fn default_status() -> Vec<Status> {
    vec![Status::Fail]
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
            None => crate::cli::default_state_dir(),
        }
    }

    /// The named connections and commands, checked (nothing is opened).
    pub fn backends(&self) -> anyhow::Result<Backends> {
        Backends::new(&self.connections, &self.commands)
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
    }

    fn relative(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    pub fn check(&self, name: &str) -> Option<&CheckConfig> {
        self.checks.iter().find(|c| c.name() == name)
    }

    /// Default limits for plugin calls.
    pub fn limits(&self) -> Limits {
        self.engine.limits.over(Limits::default())
    }
}

/// Reads, parses and validates a config file, reporting every problem.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            position: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse(&text, path, |k| std::env::var(k).ok())
}

/// Parses and validates config text. `env` resolves `${VAR}`.
pub fn parse(
    text: &str,
    file: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut report = Reporter::new(file, text);
    let expanded = match env::interpolate(text, env) {
        Ok(t) => t,
        Err(missing) => {
            for m in missing {
                report.at(
                    Some(m.offset..m.offset),
                    "",
                    format!("environment variable `{}` is not set", m.name),
                );
            }
            return Err(ConfigErrors(report.errors));
        }
    };
    // Positions from here on refer to the expanded text.
    let mut report = Reporter::new(file, &expanded);
    let raw: ConfigFile = match toml::de::Deserializer::parse(&expanded) {
        Err(e) => {
            report.at(e.span(), "", e.message().to_string());
            return Err(ConfigErrors(report.errors));
        }
        Ok(de) => match serde_path_to_error::deserialize(de) {
            Ok(raw) => raw,
            Err(e) => {
                let key = e.path().to_string();
                let key = if key == "." { String::new() } else { key };
                report.at(e.inner().span(), key, e.inner().message().to_string());
                return Err(ConfigErrors(report.errors));
            }
        },
    };
    let mut config = Config {
        file: file.to_path_buf(),
        engine: raw.engine,
        connections: raw.connections,
        commands: raw.commands,
        checks: raw.checks,
        policies: raw.policies,
        api: raw.api,
        fleet: raw.fleet,
    };
    config.anchor_grants();
    validate::validate(&config, &mut report);
    api::validate(&config, &mut report);
    fleet::validate(&config, &mut report);
    if report.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(report.errors))
    }
}

#[cfg(test)]
mod tests;
