//! A held slot: renewed in the background while the step runs, released
//! after verification. When a renewal cannot get through before the
//! lease's local deadline, or the store refuses it, the slot is lost: the
//! step runner sees it through [`Slot::lease_lost`] (and [`guarded`],
//! which cancels the action under `on_lease_lost = "abort"`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::audit::Audit;
use super::budget::{Budget, Holder};
use super::lease::{Lease, Lost};
use super::store::StoreError;
use super::{Fleet, lock, now_ms};
use crate::config::fleet::OnLeaseLost;

/// The action was cancelled: its lease ran out.
#[derive(Debug, Clone, thiserror::Error)]
#[error("fleet budget {budget}: lease {why} before the step finished (on_lease_lost = \"abort\")")]
pub struct LeaseLost {
    pub budget: String,
    pub why: &'static str,
}

/// A slot of a budget, held until [`Slot::release`] (or drop).
pub struct Slot {
    inner: Option<Inner>,
}

struct Inner {
    fleet: Arc<Fleet>,
    budget: Arc<Budget>,
    holder: Holder,
    row: i64,
    held: Held,
}

enum Held {
    Store {
        key: String,
        shared: Arc<Shared>,
        stop: Arc<Notify>,
        renewer: tokio::task::JoinHandle<()>,
    },
    /// Granted under the local limit while the store was unreachable.
    Local,
}

/// What the renewer and the holder share.
struct Shared {
    lease: std::sync::Mutex<Lease>,
    revision: AtomicU64,
    lost: watch::Sender<Option<Lost>>,
}

impl Slot {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn held(
        fleet: Arc<Fleet>,
        budget: Arc<Budget>,
        holder: Holder,
        row: i64,
        key: String,
        value: Bytes,
        revision: u64,
        sent: Instant,
    ) -> Slot {
        let shared = Arc::new(Shared {
            lease: std::sync::Mutex::new(Lease::new(budget.terms, sent)),
            revision: AtomicU64::new(revision),
            lost: watch::Sender::new(None),
        });
        let stop = Arc::new(Notify::new());
        let renewer = tokio::spawn(renew(
            fleet.clone(),
            budget.clone(),
            row,
            key.clone(),
            value,
            shared.clone(),
            stop.clone(),
        ));
        Slot {
            inner: Some(Inner {
                fleet,
                budget,
                holder,
                row,
                held: Held::Store {
                    key,
                    shared,
                    stop,
                    renewer,
                },
            }),
        }
    }

    pub(crate) fn local(fleet: Arc<Fleet>, budget: Arc<Budget>, holder: Holder, row: i64) -> Slot {
        Slot {
            inner: Some(Inner {
                fleet,
                budget,
                holder,
                row,
                held: Held::Local,
            }),
        }
    }

    fn inner(&self) -> &Inner {
        self.inner.as_ref().expect("a slot is used until released")
    }

    pub fn budget(&self) -> &str {
        &self.inner().budget.name
    }

    pub fn holder(&self) -> &Holder {
        &self.inner().holder
    }

    /// The store key (`slot-N`); none for a local slot.
    pub fn key(&self) -> Option<&str> {
        match &self.inner().held {
            Held::Store { key, .. } => Some(key),
            Held::Local => None,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.inner().held, Held::Local)
    }

    pub fn on_lease_lost(&self) -> OnLeaseLost {
        self.inner().budget.config.on_lease_lost
    }

    /// Whether (and why) the lease is over. A local slot has no lease.
    pub fn lost(&self) -> Option<Lost> {
        match &self.inner().held {
            Held::Store { shared, .. } => lock(&shared.lease).lost(Instant::now()),
            Held::Local => None,
        }
    }

    /// Resolves when the lease is lost (never, for a local slot).
    pub async fn lease_lost(&self) -> Lost {
        match &self.inner().held {
            Held::Store { shared, .. } => {
                let mut rx = shared.lost.subscribe();
                loop {
                    if let Some(l) = *rx.borrow_and_update() {
                        return l;
                    }
                    // The deadline rules even while a renewal is in flight.
                    let deadline = lock(&shared.lease).deadline();
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() {
                            tokio::time::sleep_until(deadline).await;
                            return Lost::Expired;
                        },
                        _ = tokio::time::sleep_until(deadline) => {
                            if let Some(l) = lock(&shared.lease).lost(Instant::now()) {
                                return l;
                            }
                        }
                    }
                }
            }
            Held::Local => std::future::pending().await,
        }
    }

    /// The SQLite record's id.
    pub(crate) fn row(&self) -> i64 {
        self.inner().row
    }

    pub(crate) fn matches(&self, budget: &str, holder: &Holder) -> bool {
        let i = self.inner();
        i.budget.name == budget
            && i.holder.policy == holder.policy
            && i.holder.incident == holder.incident
    }

    /// Gives the slot back (after verification). A lease already lost is
    /// just recorded; an unreachable store expires the key by itself.
    pub async fn release(mut self) {
        if let Some(inner) = self.inner.take() {
            release(inner).await;
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(i) => f
                .debug_struct("Slot")
                .field("budget", &i.budget.name)
                .field("key", &self.key())
                .field("incident", &i.holder.incident)
                .finish(),
            None => f.write_str("Slot(released)"),
        }
    }
}

impl Drop for Slot {
    /// A slot dropped without `release` (an error path) is released in
    /// the background.
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(release(inner));
        }
    }
}

async fn release(inner: Inner) {
    let Inner {
        fleet,
        budget,
        holder,
        row,
        held,
    } = inner;
    let fm = fleet.metrics.fleet();
    fm.held(&budget.name, -1);
    let (state, note) = match held {
        Held::Local => {
            budget.local_released();
            Audit::new("released-local", &budget.name)
                .incident(holder.incident)
                .emit(&fleet.agent);
            ("released", String::new())
        }
        Held::Store {
            key,
            shared,
            stop,
            renewer,
        } => {
            stop.notify_one();
            let _ = renewer.await;
            let lost = lock(&shared.lease).lost(Instant::now());
            if let Some(l) = lost {
                Audit::new("released", &budget.name)
                    .slot(&key)
                    .incident(holder.incident)
                    .note(l.as_str())
                    .emit(&fleet.agent);
                ("lost", format!("lease {} before the release", l.as_str()))
            } else {
                // Logged before the delete is sent: the hold ends here.
                Audit::new("released", &budget.name)
                    .slot(&key)
                    .incident(holder.incident)
                    .emit(&fleet.agent);
                let revision = shared.revision.load(Ordering::Acquire);
                let bucket = fleet.slots_bucket(&budget.name);
                match fleet
                    .timed("delete", fleet.store.delete(&bucket, &key, revision))
                    .await
                {
                    Ok(()) => {
                        fm.slot(&budget.name, "released");
                        ("released", String::new())
                    }
                    Err(StoreError::Conflict(_)) => {
                        fm.slot(&budget.name, "expired");
                        ("expired", "the store had expired it".to_string())
                    }
                    Err(e) => (
                        "abandoned",
                        format!("release not confirmed ({e}); the store expires it"),
                    ),
                }
            }
        }
    };
    if let Err(e) = fleet.db.fleet_slot_end(row, state, now_ms(), &note) {
        tracing::error!(budget = %budget.name, "fleet: recording the release: {e:#}");
    }
}

/// Keeps the lease alive until stopped or lost.
async fn renew(
    fleet: Arc<Fleet>,
    budget: Arc<Budget>,
    row: i64,
    key: String,
    value: Bytes,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
) {
    let bucket = fleet.slots_bucket(&budget.name);
    let fm = fleet.metrics.fleet();
    loop {
        let (next, deadline) = {
            let l = lock(&shared.lease);
            (l.next_renewal(), l.deadline())
        };
        tokio::select! {
            _ = stop.notified() => return,
            _ = tokio::time::sleep_until(deadline) => {}
            _ = tokio::time::sleep_until(next) => {}
        }
        let now = Instant::now();
        if let Some(l) = lock(&shared.lease).lost(now) {
            return lost(&fleet, &budget, &key, &shared, l);
        }
        let sent = Instant::now();
        let sent_ms = now_ms();
        let revision = shared.revision.load(Ordering::Acquire);
        let renewed = tokio::select! {
            _ = stop.notified() => return,
            _ = tokio::time::sleep_until(deadline) => {
                lock(&shared.lease).lost(Instant::now());
                return lost(&fleet, &budget, &key, &shared, Lost::Expired);
            }
            r = fleet.timed("update", fleet.store.update(&bucket, &key, value.clone(), revision)) => r,
        };
        match renewed {
            Ok(rev) => {
                shared.revision.store(rev, Ordering::Release);
                let deadline = {
                    let mut l = lock(&shared.lease);
                    l.renewed(sent);
                    l.deadline()
                };
                let deadline_ms = sent_ms + deadline.duration_since(sent).as_millis() as u64;
                if let Err(e) = fleet.db.fleet_slot_held(row, &key, rev, deadline_ms) {
                    tracing::error!(budget = %budget.name, "fleet: recording a renewal: {e:#}");
                }
                Audit::new("renewed", &budget.name)
                    .slot(&key)
                    .sent(sent_ms)
                    .deadline(deadline_ms)
                    .ttl(budget.terms.ttl)
                    .emit(&fleet.agent);
            }
            Err(StoreError::Conflict(_)) => {
                // An earlier renewal that timed out may have landed.
                match fleet.own_write(&bucket, &key, &value).await {
                    Some(rev) => {
                        shared.revision.store(rev, Ordering::Release);
                        lock(&shared.lease).unreachable(Instant::now());
                    }
                    None => {
                        fm.slot(&budget.name, "lost");
                        lock(&shared.lease).refused();
                        return lost(&fleet, &budget, &key, &shared, Lost::Refused);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(budget = %budget.name, slot = %key, "fleet: renewal failed, retrying until the lease's deadline: {e}");
                lock(&shared.lease).unreachable(Instant::now());
            }
        }
    }
}

fn lost(fleet: &Fleet, budget: &Budget, key: &str, shared: &Shared, why: Lost) {
    if why == Lost::Expired {
        fleet.metrics.fleet().slot(&budget.name, "expired");
    }
    Audit::new("lost", &budget.name)
        .slot(key)
        .note(why.as_str())
        .emit(&fleet.agent);
    tracing::error!(
        budget = %budget.name,
        slot = key,
        "fleet budget {}: lease {} (on_lease_lost = {})",
        budget.name,
        why.as_str(),
        budget.config.on_lease_lost.as_str()
    );
    shared.lost.send_replace(Some(why));
}

/// Runs a step's action under `slot`: with `on_lease_lost = "abort"`, a
/// lost lease cancels it; otherwise (or without a slot) it runs to its end.
pub async fn guarded<F: std::future::Future>(
    slot: Option<&Slot>,
    action: F,
) -> Result<F::Output, LeaseLost> {
    let Some(slot) = slot.filter(|s| s.on_lease_lost() == OnLeaseLost::Abort && !s.is_local())
    else {
        return Ok(action.await);
    };
    if let Some(l) = slot.lost() {
        return Err(LeaseLost {
            budget: slot.budget().to_string(),
            why: l.as_str(),
        });
    }
    tokio::select! {
        out = action => Ok(out),
        l = slot.lease_lost() => Err(LeaseLost {
            budget: slot.budget().to_string(),
            why: l.as_str(),
        }),
    }
}
