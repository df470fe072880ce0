//! After a restart (a `kill -9` included): the slots SQLite says this
//! agent held or was taking. One whose lease still holds is renewed and
//! kept for its incident, which resumes and takes it back; one left
//! unclaimed for a lease ttl is released. One the store has expired (or
//! given to another) is recorded as expired. Local slots end with the
//! process that held them.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::audit::Audit;
use super::budget::{Holder, SlotValue};
use super::slot::Slot;
use super::store::StoreError;
use super::{Fleet, lock, now_ms};
use crate::store::SlotRecord;

impl Fleet {
    pub(super) async fn recover(self: &Arc<Self>) {
        let open = match self.db.fleet_open_slots() {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("fleet: reading the slots left from before: {e:#}");
                return;
            }
        };
        for rec in open {
            if let Err(e) = self.recover_one(&rec).await {
                tracing::warn!(
                    budget = %rec.budget,
                    incident = rec.incident,
                    "fleet: slot left from before not settled yet: {e}"
                );
            }
        }
    }

    async fn recover_one(self: &Arc<Self>, rec: &SlotRecord) -> Result<(), StoreError> {
        let end = |state: &str, note: &str| {
            if let Err(e) = self.db.fleet_slot_end(rec.id, state, now_ms(), note) {
                tracing::error!("fleet: recording slot {}: {e:#}", rec.id);
            }
        };
        if rec.state == "local" {
            end(
                "released",
                "mend restarted: local slots end with their process",
            );
            return Ok(());
        }
        let Some(budget) = self.budget(&rec.budget) else {
            end(
                "abandoned",
                "the budget is no longer configured; the store expires the slot",
            );
            return Ok(());
        };
        let bucket = self.slots_bucket(&budget.name);
        let value = Bytes::from(rec.value.clone());
        // The key and revision: as recorded, or, if mend died before the
        // store's answer was recorded, wherever our value is.
        let found = match (rec.state.as_str(), rec.revision) {
            ("held", Some(rev)) => Some((rec.key.clone(), rev)),
            _ => self
                .timed("list", self.store.entries(&bucket))
                .await?
                .into_iter()
                .find(|e| e.value == value)
                .map(|e| (e.key, e.revision)),
        };
        let Some((key, revision)) = found else {
            end("expired", "not held when mend restarted");
            return Ok(());
        };
        let sent = Instant::now();
        let sent_ms = now_ms();
        match self
            .timed(
                "update",
                self.store.update(&bucket, &key, value.clone(), revision),
            )
            .await
        {
            Ok(rev) => {
                let holder: Holder = serde_json::from_str::<SlotValue>(&rec.value)
                    .map(|v| v.holder)
                    .unwrap_or_else(|_| Holder {
                        policy: rec.policy.clone(),
                        check: rec.check.clone(),
                        incident: rec.incident,
                        step: rec.step.clone(),
                    });
                let deadline_ms =
                    sent_ms + budget.terms.deadline(sent).duration_since(sent).as_millis() as u64;
                if let Err(e) = self.db.fleet_slot_held(rec.id, &key, rev, deadline_ms) {
                    tracing::error!("fleet: recording slot {}: {e:#}", rec.id);
                }
                Audit::new("resumed", &budget.name)
                    .slot(&key)
                    .incident(holder.incident)
                    .sent(sent_ms)
                    .deadline(deadline_ms)
                    .ttl(budget.terms.ttl)
                    .emit(&self.agent);
                tracing::warn!(
                    budget = %budget.name,
                    slot = %key,
                    incident = holder.incident,
                    "fleet: kept a slot held before the restart for its incident (released in {} unless it resumes)",
                    humantime::format_duration(budget.terms.ttl)
                );
                self.metrics.fleet().held(&budget.name, 1);
                let slot = Slot::held(
                    self.clone(),
                    budget.clone(),
                    holder,
                    rec.id,
                    key,
                    value,
                    rev,
                    sent,
                );
                lock(&self.adopted).push(slot);
                let f = self.clone();
                let (name, row) = (budget.name.clone(), rec.id);
                let grace = budget.terms.ttl;
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    f.release_unclaimed(&name, row).await;
                });
                Ok(())
            }
            Err(StoreError::Conflict(_)) => {
                Audit::new("expired-while-down", &budget.name)
                    .slot(&key)
                    .incident(rec.incident)
                    .emit(&self.agent);
                end("expired", "expired (or taken) while mend was down");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The slot adopted for `holder`'s incident, if there is one.
    pub(super) fn take_adopted(&self, budget: &str, holder: &Holder) -> Option<Slot> {
        let mut adopted = lock(&self.adopted);
        let i = adopted.iter().position(|s| s.matches(budget, holder))?;
        let slot = adopted.swap_remove(i);
        Audit::new("readopted", budget)
            .slot(slot.key().unwrap_or(""))
            .incident(holder.incident)
            .emit(&self.agent);
        Some(slot)
    }

    async fn release_unclaimed(&self, budget: &str, row: i64) {
        let slot = {
            let mut adopted = lock(&self.adopted);
            adopted
                .iter()
                .position(|s| s.budget() == budget && s.row() == row)
                .map(|i| adopted.swap_remove(i))
        };
        if let Some(s) = slot {
            tracing::info!(
                budget,
                "fleet: releasing a slot kept from before the restart: its incident did not resume"
            );
            s.release().await;
        }
    }

    /// Slots kept from before a restart, not yet taken back.
    pub fn adopted_count(&self) -> usize {
        lock(&self.adopted).len()
    }
}
