//! The healing engine: detect → diagnose → recover → verify, per check.
//!
//! Each check runs in its own supervised task on its own schedule (no
//! global tick), so a slow or stuck plugin delays nothing else; a bulkhead
//! bounds how many plugin calls run at once. Data flows one way:
//!
//! ```text
//! config ──► check task: detect ──► Finding ──► diagnose ──► Diagnosis
//!                                                   │
//!                        store ◄── verify ◄── Remedy (ladder step)
//! ```
//!
//! The engine is the only place that does I/O around policies; the policy
//! logic itself (`crate::policy`) is pure.

mod check;
pub mod clock;
mod control;
mod diagnose;
mod plugins;
mod remedy;
pub mod shutdown;
mod supervisor;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use globset::{Glob, GlobSet, GlobSetBuilder};
use tokio::sync::Semaphore;

pub use self::check::{CheckSnapshot, LastResult};
pub use self::clock::Clock;
pub use self::control::{ControlError, HealOutcome, Pause, PolicyHeal};
pub use self::diagnose::{Decision, Diagnosis};
pub use self::plugins::{PluginReload, PluginSet};
pub use self::remedy::EXIT_HEAVY_HEAL;
pub use self::shutdown::Shutdown;

use self::check::CheckState;
use crate::capabilities::ResolvedGrants;
use crate::config::{CheckConfig, Config, PolicyConfig, StepConfig};
use crate::contract::{Finding, Status};
use crate::metrics::Metrics;
use crate::policy::Millis;
use crate::policy::breaker::{Breaker, BreakerConfig};
use crate::policy::budget::AttemptWindow;
use crate::policy::trigger::{Trigger, TriggerWindow};
use crate::runtime::{Limits, Plugin, Runtime};
use crate::store::Store;

/// A running engine, shared by its tasks.
pub struct Engine {
    config: Config,
    runtime: Arc<Runtime>,
    store: Arc<Store>,
    /// The loaded plugins and why others are not usable; swapped whole
    /// when the plugins directory changes (calls in flight keep the
    /// `Arc<Plugin>` they started with).
    plugins: RwLock<Arc<PluginSet>>,
    checks: Vec<CheckSlot>,
    policies: Vec<PolicySlot>,
    /// Check name → the checks it depends on.
    dependencies: BTreeMap<String, Vec<String>>,
    bulkhead: Semaphore,
    clock: Clock,
    /// Set when a policy asks for mend to exit (the "heavy heal").
    exit_code: Mutex<Option<i32>>,
    exit_requested: tokio::sync::Notify,
    /// Recent schedule lag samples, for the benchmark and metrics.
    lag: Mutex<supervisor::LagSamples>,
    metrics: Arc<Metrics>,
    /// Operator pause (maintenance for every policy); kept in the store.
    pause: Mutex<Option<Pause>>,
    /// Whether check tasks are running and take commands.
    accepting: AtomicBool,
    /// Bumped by the engine's own watchdog each second while no check task
    /// is stalled: the source of systemd's `WATCHDOG=1`.
    heartbeat: tokio::sync::watch::Sender<u64>,
    /// Clock time of the last heartbeat.
    last_beat: AtomicU64,
    /// How often the watchdog looks and beats (milliseconds).
    beat_every_ms: AtomicU64,
}

/// One check: its config, resolved grants, and live state.
struct CheckSlot {
    config: CheckConfig,
    grants: ResolvedGrants,
    config_json: serde_json::Value,
    limits: Limits,
    /// Indices of the policies that watch this check.
    policies: Vec<usize>,
    state: Mutex<CheckState>,
    /// Operator commands (run now, heal), handled by the check's own task
    /// between runs, so one task alone ever acts for a check.
    commands: Mutex<VecDeque<control::Command>>,
    wake: tokio::sync::Notify,
}

/// One policy, resolved for use.
struct PolicySlot {
    config: PolicyConfig,
    check: usize,
    trigger: Trigger,
    codes: GlobSet,
    breaker: BreakerConfig,
    steps: Vec<Step>,
    escalate: Option<Step>,
    state: Mutex<PolicyState>,
}

/// A ladder step (or the escalation), resolved.
struct Step {
    /// Names the step in stats, breakers and incidents.
    name: String,
    /// The action plugin.
    action: String,
    config_json: serde_json::Value,
    grants: ResolvedGrants,
    limits: Limits,
    settle: std::time::Duration,
}

/// What a policy remembers between results; restored from the store on
/// start.
#[derive(Default)]
struct PolicyState {
    trigger: TriggerWindow,
    attempts: AttemptWindow,
    breakers: BTreeMap<String, Breaker>,
    last_closed: Option<Millis>,
}

/// Locks a mutex even if a panicking check task poisoned it: the state is
/// plain data and every update leaves it consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn to_json(t: &toml::Table) -> serde_json::Value {
    serde_json::to_value(t).unwrap_or(serde_json::Value::Null)
}

impl Engine {
    /// Builds an engine: loads every `.wasm` in the plugins directory,
    /// resolves checks and policies, and restores policy state from the
    /// store. Plugins that fail to load are reported by name and their
    /// checks report `plugin.error`; the engine still starts.
    pub async fn new(
        config: Config,
        runtime: Arc<Runtime>,
        store: Arc<Store>,
        clock: Clock,
    ) -> anyhow::Result<Arc<Engine>> {
        Self::with_metrics(config, runtime, store, clock, Arc::new(Metrics::new())).await
    }

    /// Like [`Engine::new`], recording into `metrics` (which outlive a
    /// config reload).
    pub async fn with_metrics(
        config: Config,
        runtime: Arc<Runtime>,
        store: Arc<Store>,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Engine>> {
        let dir = config.plugins_dir();
        let loaded = match runtime.load_dir(&dir).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(dir = %dir.display(), "cannot read the plugins directory: {e}");
                Default::default()
            }
        };
        let plugin_set = PluginSet::resolve(&config, loaded);
        let base_limits = config.limits();
        let backends = config.backends()?;

        let mut checks = Vec::new();
        for c in &config.checks {
            let grants = c
                .grants
                .resolve_with(&backends)
                .map_err(|e| anyhow::anyhow!("check {}: {e:#}", c.name()))?;
            let limits = c.limits.over_for(base_limits, &grants);
            checks.push(CheckSlot {
                config: c.clone(),
                grants,
                config_json: to_json(&c.config),
                limits,
                policies: Vec::new(),
                state: Mutex::new(CheckState::default()),
                commands: Mutex::new(VecDeque::new()),
                wake: tokio::sync::Notify::new(),
            });
        }

        let mut policies = Vec::new();
        for (pi, p) in config.policies.iter().enumerate() {
            let check = config
                .checks
                .iter()
                .position(|c| c.name() == p.check.get_ref())
                .ok_or_else(|| anyhow::anyhow!("policy {}: unknown check", p.name()))?;
            checks[check].policies.push(pi);
            let mut codes = GlobSetBuilder::new();
            for code in &p.codes {
                codes.add(Glob::new(code)?);
            }
            let step = |s: &StepConfig| -> anyhow::Result<Step> {
                let grants = s.grants.resolve_with(&backends)?;
                Ok(Step {
                    name: s.name().to_string(),
                    action: s.action.get_ref().clone(),
                    config_json: to_json(&s.config),
                    limits: s.limits.over_for(base_limits, &grants),
                    grants,
                    settle: s.settle.0,
                })
            };
            let now = clock.now();
            let mut state = PolicyState {
                last_closed: store.last_closed(p.name())?,
                ..PolicyState::default()
            };
            for at in
                store.attempt_times(p.name(), now.saturating_sub(p.window.0.as_millis() as u64))?
            {
                state.attempts.record(at, p.window.0);
            }
            for s in &p.steps {
                if let Some(b) = store.breaker(p.check.get_ref(), s.name())? {
                    state.breakers.insert(s.name().to_string(), b);
                }
            }
            policies.push(PolicySlot {
                trigger: p
                    .trigger
                    .trigger()
                    .map_err(|e| anyhow::anyhow!("policy {}: {e}", p.name()))?,
                codes: codes.build()?,
                breaker: p.breaker.breaker(),
                steps: p.steps.iter().map(step).collect::<anyhow::Result<_>>()?,
                escalate: p.escalate.as_ref().map(step).transpose()?,
                check,
                config: p.clone(),
                state: Mutex::new(state),
            });
        }

        let pause = control::load_pause(&store);
        metrics.set_paused(pause.is_some());
        let engine = Engine {
            dependencies: crate::config::dependency_graph(&config.checks),
            bulkhead: Semaphore::new(config.engine.max_concurrent as usize),
            config,
            runtime,
            store,
            plugins: RwLock::new(Arc::new(plugin_set)),
            checks,
            policies,
            clock,
            exit_code: Mutex::new(None),
            exit_requested: tokio::sync::Notify::new(),
            lag: Mutex::new(supervisor::LagSamples::default()),
            metrics,
            pause: Mutex::new(pause),
            accepting: AtomicBool::new(false),
            heartbeat: tokio::sync::watch::Sender::new(0),
            last_beat: AtomicU64::new(0),
            beat_every_ms: AtomicU64::new(1000),
        };
        engine.restore_check_pauses();
        for (name, why) in &engine.plugin_set().errors {
            tracing::error!(plugin = %name, "{why}");
        }
        Ok(Arc::new(engine))
    }

    /// Takes over the live state (health, flapping, last result) of the
    /// checks `old` also had, by name: a config reload does not reset what
    /// mend knows about unchanged checks. Call before [`Engine::run`].
    pub fn adopt_state(&self, old: &Engine) {
        for slot in &self.checks {
            if let Some(prev) = old.checks.iter().find(|c| {
                c.config.name() == slot.config.name() && c.config.plugin == slot.config.plugin
            }) {
                let mut st = std::mem::take(&mut *lock(&prev.state));
                st.remediating = false;
                st.reported_late = false;
                *lock(&slot.state) = st;
            }
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The plugins in use now, and why others are not usable.
    pub fn plugin_set(&self) -> Arc<PluginSet> {
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Heartbeats of the engine's own watchdog: the value changes about
    /// once a second while no check task is stalled.
    pub fn heartbeats(&self) -> tokio::sync::watch::Receiver<u64> {
        self.heartbeat.subscribe()
    }

    /// Beats (and watchdog looks) every `every`, at most once a second,
    /// at least every 10 ms: under systemd, half of `WatchdogSec`.
    pub fn set_heartbeat_interval(&self, every: std::time::Duration) {
        let ms = every.as_millis().clamp(10, 1000) as u64;
        self.beat_every_ms.store(ms, Ordering::Relaxed);
    }

    /// Clock time of the last heartbeat (0: none yet).
    pub fn last_heartbeat(&self) -> crate::policy::Millis {
        self.last_beat.load(Ordering::Relaxed)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.plugin_set().plugins.values().cloned().collect()
    }

    /// Plugins that are named in the config but cannot be used, and why.
    pub fn plugin_errors(&self) -> HashMap<String, String> {
        self.plugin_set().errors.clone()
    }

    /// A snapshot of every check's state.
    pub fn snapshot(&self) -> Vec<CheckSnapshot> {
        self.checks
            .iter()
            .map(|c| lock(&c.state).snapshot(c.config.name()))
            .collect()
    }

    /// Schedule lag (how late checks started) over recent runs: p50, p99,
    /// and the number of check runs since start.
    pub fn schedule_lag(&self) -> (std::time::Duration, std::time::Duration, usize) {
        lock(&self.lag).percentiles()
    }

    /// The exit code a policy asked for, if any.
    pub fn exit_code(&self) -> Option<i32> {
        *lock(&self.exit_code)
    }

    /// Runs every check until `shutdown` fires, then waits for work in
    /// flight (each task finishes its current step).
    pub async fn run(self: &Arc<Self>, shutdown: Shutdown) {
        supervisor::run(self.clone(), shutdown).await;
    }

    /// The policy's evidence: findings matching its codes and statuses.
    fn matching(&self, policy: &PolicySlot, findings: &[Finding]) -> Vec<Finding> {
        findings
            .iter()
            .filter(|f| policy.config.status.contains(&f.status) && policy.codes.is_match(&f.code))
            .cloned()
            .collect()
    }
}

/// The worst status among findings (no findings: ok).
pub fn worst(findings: &[Finding]) -> Status {
    findings
        .iter()
        .map(|f| f.status)
        .max_by_key(|s| s.severity())
        .unwrap_or(Status::Ok)
}
