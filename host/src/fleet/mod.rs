//! Fleet mode: many mend agents share remediation budgets and alert
//! intake through an existing distributed store (NATS JetStream), with no
//! leader and no consensus of their own. See docs/fleet.md for the model.
//!
//! The engine calls a narrow API and nothing here knows the engine:
//!
//! - [`Fleet::acquire`] a budget's slot before a step acts (recorded in
//!   SQLite before it returns); [`Slot::release`] after verification;
//!   [`guarded`] runs the action so `on_lease_lost = "abort"` cancels it
//!   when the lease runs out.
//! - [`Fleet::claim_alert`]: one agent of the fleet takes each alert
//!   occurrence.
//! - [`Fleet::publish`]: an event into the outbox (incident and attempt
//!   writes queue theirs by themselves, through SQLite triggers).
//! - [`Fleet::status`]: members, budgets and holders.
//!
//! `mend recorder` ([`recorder`]) writes the events to PostgreSQL, which is
//! never on the remediation path.

pub mod alerts;
mod audit;
pub mod budget;
pub mod lease;
pub mod limit;
pub mod members;
pub mod metrics;
pub mod nats;
pub mod outbox;
pub mod recorder;
mod recover;
pub mod slot;
pub mod status;
pub mod store;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

pub use self::alerts::AlertClaim;
pub use self::budget::{Budget, Denial, DenialReason, Holder};
pub use self::metrics::FleetMetrics;
pub use self::slot::{LeaseLost, Slot, guarded};
pub use self::status::FleetStatus;
pub use self::store::{FleetStore, StoreError};
use crate::config::fleet::{FleetConfig, RecorderConfig};
use crate::metrics::Metrics;
use crate::store::Store;

/// Time given to setting up buckets before `mend run` goes on without
/// them (they are then made in the background).
const SETUP_WAIT: Duration = Duration::from_secs(5);

/// This agent's membership of the fleet.
pub struct Fleet {
    agent: String,
    /// The local database's id: with the outbox row id it names events.
    instance: String,
    prefix: String,
    heartbeat: Duration,
    alert_window: Duration,
    events_max_age: Duration,
    store: Arc<dyn FleetStore>,
    db: Arc<Store>,
    metrics: Arc<Metrics>,
    budgets: RwLock<BTreeMap<String, Arc<Budget>>>,
    members: members::Members,
    /// Slots found held after a restart, waiting for their incident.
    adopted: Mutex<Vec<Slot>>,
    outbox_wake: tokio::sync::Notify,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    recorder: Option<RecorderConfig>,
    ready: AtomicBool,
    stopping: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wall-clock milliseconds (for records and logs; leases use durations).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Fleet {
    /// Joins the fleet `config` describes over NATS. NATS being down is
    /// not an error: mend runs, and budgets answer as `when_unreachable`
    /// says until it is back.
    pub async fn start(
        config: &FleetConfig,
        db: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Fleet>> {
        let agent = config.agent_id();
        let servers: Vec<String> = config.servers.iter().map(|s| s.get_ref().clone()).collect();
        let prefix = config.prefix.get_ref();
        let store = nats::NatsStore::connect(
            &servers,
            config.credentials.as_ref().map(|c| c.get_ref().as_path()),
            &agent,
            config.request_timeout.0,
            &events_stream(prefix),
            &events_subject(prefix),
        )
        .await?
        .with_replicas(config.replicas as usize);
        Self::with_store(config, Arc::new(store), db, metrics).await
    }

    /// Joins through any store (tests use this with their own names).
    pub async fn with_store(
        config: &FleetConfig,
        store: Arc<dyn FleetStore>,
        db: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Fleet>> {
        db.set_fleet_outbox(true)
            .context("turning on the fleet outbox")?;
        let instance = db.fleet_instance()?;
        let fleet = Arc::new(Fleet {
            agent: config.agent_id(),
            instance,
            prefix: config.prefix.get_ref().clone(),
            heartbeat: config.heartbeat.0,
            alert_window: config.alert_window.0,
            events_max_age: config.events_max_age.0,
            store,
            db,
            metrics,
            budgets: RwLock::new(BTreeMap::new()),
            members: members::Members::default(),
            adopted: Mutex::new(Vec::new()),
            outbox_wake: tokio::sync::Notify::new(),
            tasks: Mutex::new(Vec::new()),
            recorder: config.recorder.clone(),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        });
        fleet.set_budgets(config);
        // Buckets, the member count and the slots left from before a
        // restart come first, so the first step sees them; if the store
        // is down, that goes on in the background.
        let setup = {
            let f = fleet.clone();
            tokio::spawn(async move { f.setup_until_done().await })
        };
        if tokio::time::timeout(SETUP_WAIT, fleet.wait_ready())
            .await
            .is_err()
        {
            tracing::warn!(
                agent = %fleet.agent,
                "fleet: the store is not reachable yet; budgets answer as `when_unreachable` says until it is"
            );
        }
        let beats = {
            let f = fleet.clone();
            tokio::spawn(async move { f.heartbeat_loop().await })
        };
        let publisher = {
            let f = fleet.clone();
            tokio::spawn(async move { f.publish_loop().await })
        };
        lock(&fleet.tasks).extend([setup, beats, publisher]);
        tracing::info!(
            agent = %fleet.agent,
            store = fleet.store.kind(),
            prefix = %fleet.prefix,
            budgets = lock_read(&fleet.budgets).len(),
            "fleet mode on"
        );
        Ok(fleet)
    }

    /// Takes the budgets of a (reloaded) config. Slots held keep the
    /// budget they were granted under.
    pub fn set_budgets(self: &Arc<Self>, config: &FleetConfig) {
        let budgets: BTreeMap<String, Arc<Budget>> = config
            .budgets
            .iter()
            .map(|(name, b)| (name.clone(), Arc::new(Budget::new(name, b))))
            .collect();
        let added: Vec<Arc<Budget>> = {
            let old = lock_read(&self.budgets);
            budgets
                .values()
                .filter(|b| {
                    old.get(&b.name)
                        .is_none_or(|o| o.config.lease_ttl != b.config.lease_ttl)
                })
                .cloned()
                .collect()
        };
        *self.budgets.write().unwrap_or_else(|p| p.into_inner()) = budgets;
        if self.ready.load(Ordering::Acquire) && !added.is_empty() {
            let f = self.clone();
            tokio::spawn(async move {
                for b in added {
                    if let Err(e) = f.ensure_budget(&b).await {
                        tracing::error!(budget = %b.name, "fleet: {e}");
                    }
                }
            });
        }
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    pub fn store(&self) -> &Arc<dyn FleetStore> {
        &self.store
    }

    pub(crate) fn budget(&self, name: &str) -> Option<Arc<Budget>> {
        lock_read(&self.budgets).get(name).cloned()
    }

    pub(crate) fn budget_list(&self) -> Vec<Arc<Budget>> {
        lock_read(&self.budgets).values().cloned().collect()
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn slots_bucket(&self, budget: &str) -> String {
        format!("{}_slots_{budget}", self.prefix)
    }

    pub fn rate_bucket(&self, budget: &str) -> String {
        format!("{}_rate_{budget}", self.prefix)
    }

    pub fn members_bucket(&self) -> String {
        format!("{}_members", self.prefix)
    }

    pub fn alerts_bucket(&self) -> String {
        format!("{}_alerts", self.prefix)
    }

    /// A store round trip, timed into the metrics.
    pub(crate) async fn timed<T>(
        &self,
        op: &str,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = std::time::Instant::now();
        let r = f.await;
        // A conflict is a definite answer: the round trip went fine.
        let ok = !matches!(r, Err(StoreError::Unreachable(_) | StoreError::Other(_)));
        self.metrics.fleet().store(op, ok, start.elapsed());
        r
    }

    async fn ensure_budget(&self, b: &Budget) -> Result<(), StoreError> {
        let ttl = b.config.lease_ttl.get_ref().0;
        self.store
            .ensure_bucket(&self.slots_bucket(&b.name), ttl)
            .await?;
        if let Some(rate) = b.config.rate {
            self.store
                .ensure_bucket(&self.rate_bucket(&b.name), rate.per)
                .await?;
        }
        Ok(())
    }

    async fn setup(self: &Arc<Self>) -> Result<(), StoreError> {
        self.store
            .ensure_bucket(&self.members_bucket(), self.heartbeat * 3)
            .await?;
        self.store
            .ensure_bucket(&self.alerts_bucket(), self.alert_window)
            .await?;
        self.store.ensure_events(self.events_max_age).await?;
        for b in self.budget_list() {
            self.ensure_budget(&b).await?;
        }
        self.beat().await;
        self.recover().await;
        Ok(())
    }

    async fn setup_until_done(self: Arc<Self>) {
        let mut pause = Duration::from_millis(200);
        let mut warned: Option<std::time::Instant> = None;
        loop {
            match self.setup().await {
                Ok(()) => {
                    self.ready.store(true, Ordering::Release);
                    self.outbox_wake.notify_one();
                    return;
                }
                Err(e) => {
                    // Said at most every 30 s while it lasts.
                    if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(30)) {
                        tracing::warn!("fleet: cannot set up the buckets yet (retrying): {e}");
                        warned = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn wait_ready(&self) {
        while !self.ready.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the buckets are set up (the store was reached once).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Leaves the fleet: releases slots still adopted, publishes what the
    /// outbox holds (briefly), and removes this member.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        let adopted: Vec<Slot> = std::mem::take(&mut *lock(&self.adopted));
        for s in adopted {
            s.release().await;
        }
        let flush = async {
            while self.db.fleet_outbox_pending_count().unwrap_or(0) > 0 && self.is_ready() {
                self.outbox_wake.notify_one();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        self.leave().await;
        tracing::info!(agent = %self.agent, "left the fleet");
    }
}

fn lock_read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// The event stream of the fleet named by `prefix`.
pub fn events_stream(prefix: &str) -> String {
    format!("{prefix}_events")
}

/// The subjects its events go to: `<prefix>.events.<agent>.<kind>`.
pub fn events_subject(prefix: &str) -> String {
    format!("{prefix}.events")
}

/// Releases a step's slot, if it took one (after verification).
pub async fn release(slot: Option<Slot>) {
    if let Some(s) = slot {
        s.release().await;
    }
}
