//! The healing engine: it runs a [`Plan`], detect → diagnose → recover →
//! verify, per check.
//!
//! Each check runs on its own schedule (its interval and jitter, no global
//! tick): one scheduler task keeps a due queue of every check
//! (`schedule.rs`) and starts each run in a task of its own, so a slow or
//! stuck plugin delays nothing else; a bulkhead bounds how many plugin
//! calls run at once. Data flows one way, one file
//! per stage:
//!
//! ```text
//! detect.rs     check ──► plugin ──► Detection (findings)
//! evaluate.rs   Detection ──► each policy's evidence ──► trigger
//! diagnose.rs   evidence + snapshot ──► Diagnosis (pure)
//! incident.rs   Diagnosis ──► IncidentRun: steps ──► verify ──► close | escalate
//!                                                  │
//!                                                store (every step, before and after)
//! ```
//!
//! The engine owns the live state (`state.rs`), the check tasks and their
//! supervision (`supervisor.rs`), operator commands (`control.rs`) and the
//! plugin set (`plugins.rs`); the policy logic itself (`crate::policy`)
//! and the diagnosis are pure.

mod anomaly;
mod control;
mod detect;
mod diagnose;
mod evaluate;
mod incident;
mod lifecycle;
mod plugins;
mod schedule;
pub mod shutdown;
mod state;
mod supervisor;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::sync::Semaphore;

pub use self::anomaly::{PolicyBaseline, SAVE_EVERY};
pub use self::control::{ControlError, HealOutcome, HealRequest, Pause, PolicyHeal};
pub use self::diagnose::{Cause, Decision, DiagnoseInput, Diagnosis, diagnose, held_off};
pub use self::incident::EXIT_HEAVY_HEAL;
pub use self::plugins::PluginReload;
pub use self::shutdown::Shutdown;
pub use self::state::{CheckSnapshot, Detection, worst};
pub use crate::clock::Clock;
pub use crate::plan::PluginSet;

use self::state::{CheckState, PolicyState};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::plan::Plan;
use crate::runtime::{Plugin, Runtime};
use crate::store::Store;
use crate::values::Millis;

/// A running engine, shared by its tasks.
pub struct Engine {
    plan: Plan,
    runtime: Arc<Runtime>,
    store: Arc<Store>,
    /// The plugins in use; swapped whole when the plugins directory
    /// changes (and the plan still compiles with the new set). Calls in
    /// flight keep the `Arc<Plugin>` they started with.
    plugins: RwLock<Arc<PluginSet>>,
    /// Live state, one slot per check and per policy of the plan.
    checks: Vec<CheckSlot>,
    policies: Vec<PolicySlot>,
    /// Check name → index.
    index: HashMap<String, usize>,
    /// What the last plugin reload did (refusals included).
    last_reload: Mutex<Option<PluginReload>>,
    /// Plugin calls of the engine at once (owned permits: a scheduled
    /// run's task holds the slot the scheduler waited for).
    bulkhead: Arc<Semaphore>,
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
    /// Fleet mode, when `[fleet]` is configured.
    fleet: std::sync::OnceLock<Arc<crate::fleet::Fleet>>,
    /// Every check waiting for its next scheduled run (`schedule.rs`).
    queue: Mutex<schedule::DueQueue>,
    /// Wakes the scheduler: an earlier entry, or commands to start.
    queue_changed: tokio::sync::Notify,
    /// Checks given commands, for the scheduler to start.
    commanded: Mutex<Vec<usize>>,
}

/// One check's live state and its turn.
struct CheckSlot {
    state: Mutex<CheckState>,
    /// Its next run, its operator commands, and whether a task acts for
    /// it now (one task alone ever does).
    turn: Mutex<schedule::Turn>,
    /// Its metric handles, found once.
    metrics: Mutex<crate::metrics::CheckMetrics>,
}

/// One policy's live state.
struct PolicySlot {
    state: Mutex<PolicyState>,
}

/// Locks a mutex even if a panicking check task poisoned it: the state is
/// plain data and every update leaves it consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// Builds an engine for `plan`, restoring policy state (cooldowns,
    /// attempt windows, breakers, anomaly baselines) and the operator's pause from the store.
    pub fn new(
        plan: Plan,
        runtime: Arc<Runtime>,
        store: Arc<Store>,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Engine>> {
        let now = clock.now();
        let mut policies = Vec::with_capacity(plan.policies.len());
        for p in &plan.policies {
            let mut state = PolicyState {
                last_closed: store.last_closed(&p.name)?,
                baseline_saved: now,
                ..PolicyState::default()
            };
            if let Some(rule) = &p.anomaly {
                state.baseline = Engine::restore_baseline(&store, &p.name, &rule.metric);
            }
            for at in
                store.attempt_times(&p.name, now.saturating_sub(p.window.as_millis() as u64))?
            {
                state.attempts.record(at, p.window);
            }
            let check = &plan.checks[p.check].name;
            for s in &p.steps {
                if let Some(b) = store.breaker(check, &s.name)? {
                    state.breakers.insert(s.name.clone(), b);
                }
            }
            policies.push(PolicySlot {
                state: Mutex::new(state),
            });
        }
        let epoch = tokio::time::Instant::now();
        let checks = plan
            .checks
            .iter()
            .map(|c| CheckSlot {
                state: Mutex::new(CheckState::default()),
                turn: Mutex::new(schedule::Turn::new(epoch)),
                metrics: Mutex::new(metrics.check_metrics(&c.name, &c.plugin)),
            })
            .collect();
        let index = plan
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let pause = control::load_pause(&store);
        metrics.set_paused(pause.is_some());
        let engine = Arc::new(Engine {
            bulkhead: Arc::new(Semaphore::new(plan.config.engine.max_concurrent as usize)),
            queue: Mutex::new(schedule::DueQueue::new(epoch, plan.checks.len())),
            queue_changed: tokio::sync::Notify::new(),
            commanded: Mutex::new(Vec::new()),
            plugins: RwLock::new(plan.plugins.clone()),
            plan,
            runtime,
            store,
            checks,
            policies,
            index,
            last_reload: Mutex::new(None),
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
            fleet: std::sync::OnceLock::new(),
        });
        engine.restore_check_pauses();
        Ok(engine)
    }

    /// Takes over the live state (health, flapping, last result) of the
    /// checks `old` also had, by name and plugin: a config reload does not
    /// reset what mend knows about unchanged checks. Call before
    /// [`Engine::run`].
    pub fn adopt_state(&self, old: &Engine) {
        for (i, check) in self.plan.checks.iter().enumerate() {
            let Some(&j) = old.index.get(&check.name) else {
                continue;
            };
            if old.plan.checks[j].plugin != check.plugin {
                continue;
            }
            let mut st = std::mem::take(&mut *lock(&old.checks[j].state));
            st.remediating = false;
            st.reported_late = false;
            *lock(&self.checks[i].state) = st;
        }
        self.adopt_baselines(old);
    }

    /// Joins this engine to the fleet (call before [`Engine::run`]).
    pub fn set_fleet(&self, fleet: Arc<crate::fleet::Fleet>) {
        let _ = self.fleet.set(fleet);
    }

    /// The fleet, in fleet mode.
    pub fn fleet(&self) -> Option<&Arc<crate::fleet::Fleet>> {
        self.fleet.get()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The plan this engine runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The config as written.
    pub fn config(&self) -> &Config {
        &self.plan.config
    }

    /// The plugins in use now.
    pub fn plugin_set(&self) -> Arc<PluginSet> {
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What the last plugin reload changed or refused.
    pub fn last_plugin_reload(&self) -> Option<PluginReload> {
        lock(&self.last_reload).clone()
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.plugin_set().plugins.values().cloned().collect()
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
    pub fn last_heartbeat(&self) -> Millis {
        self.last_beat.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// A snapshot of every check's state.
    pub fn snapshot(&self) -> Vec<CheckSnapshot> {
        self.plan
            .checks
            .iter()
            .zip(&self.checks)
            .map(|(c, slot)| lock(&slot.state).snapshot(&c.name))
            .collect()
    }

    /// One check's state, copying only its own.
    pub fn check_snapshot(&self, name: &str) -> Option<CheckSnapshot> {
        self.index.get(name).map(|&i| self.check_snapshot_at(i))
    }

    /// The state of check `idx` (an index into the plan's checks).
    pub fn check_snapshot_at(&self, idx: usize) -> CheckSnapshot {
        lock(&self.checks[idx].state).snapshot(&self.plan.checks[idx].name)
    }

    /// Check `name`'s index in the plan.
    pub fn check_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// How many checks are in each health state, without copying their
    /// snapshots (the systemd status line asks every heartbeat).
    pub fn health_counts(&self) -> HashMap<crate::policy::health::Health, usize> {
        let mut counts = HashMap::new();
        for slot in &self.checks {
            *counts.entry(lock(&slot.state).health.state()).or_insert(0) += 1;
        }
        counts
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
        self.save_baselines();
    }
}
