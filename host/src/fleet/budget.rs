//! Budgets: taking a slot before a step acts.
//!
//! A budget of K slots is K keys, `slot-0` … `slot-(K-1)`, in a bucket
//! whose keys expire `lease_ttl` after their last write. A slot is taken
//! by *create if absent*, which the store grants to one writer only; a
//! rate of N per window is N keys in a second bucket that expire after the
//! window, each start taking one. Nothing rests on a read: reads only name
//! the holders in a denial. The slot is recorded in SQLite before
//! [`Fleet::acquire`] returns, so a restart finds it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use super::audit::Audit;
use super::lease::LeaseTerms;
use super::limit::RateWindow;
use super::slot::Slot;
use super::store::StoreError;
use super::{Fleet, lock, now_ms};
use crate::config::fleet::{BudgetConfig, WhenUnreachable};
use crate::store::SlotRecord;

/// A budget, resolved for use.
pub struct Budget {
    pub name: String,
    pub config: BudgetConfig,
    pub terms: LeaseTerms,
    /// What `when_unreachable = "local"` allows: holders and starts here.
    local: Mutex<LocalLimit>,
}

#[derive(Default)]
struct LocalLimit {
    held: u32,
    starts: RateWindow,
}

impl Budget {
    pub fn new(name: &str, config: &BudgetConfig) -> Budget {
        Budget {
            name: name.to_string(),
            terms: LeaseTerms {
                ttl: config.lease_ttl.get_ref().0,
                renew_every: config.renew_every(),
            },
            config: config.clone(),
            local: Mutex::new(LocalLimit::default()),
        }
    }

    /// Holders on this host under the local limit now.
    pub fn local_held(&self) -> u32 {
        lock(&self.local).held
    }

    pub(crate) fn local_released(&self) {
        let mut l = lock(&self.local);
        l.held = l.held.saturating_sub(1);
    }
}

/// Who wants a slot: recorded with it, and shown to other agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub policy: String,
    pub check: String,
    pub incident: i64,
    pub step: String,
}

/// The value a slot key holds: who holds it. The token makes it unique,
/// so an agent can tell its own write from another's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotValue {
    pub agent: String,
    pub token: String,
    #[serde(flatten)]
    pub holder: Holder,
    /// Wall-clock ms when the hold began.
    pub since: u64,
}

/// Why no slot was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialReason {
    /// Every slot is held.
    Full,
    /// The rate's window is used up.
    Rate,
    /// The store could not be reached and the budget fails closed.
    Unreachable,
    /// Unreachable, and the local limit is in use.
    LocalFull,
    /// No such budget (a reload removed it).
    UnknownBudget,
    /// This agent is leaving the fleet.
    Stopping,
    /// The local database refused the record.
    LocalStore,
}

impl DenialReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenialReason::Full => "denied",
            DenialReason::Rate => "rate",
            DenialReason::Unreachable => "unreachable",
            DenialReason::LocalFull => "local-full",
            DenialReason::UnknownBudget => "unknown",
            DenialReason::Stopping => "stopping",
            DenialReason::LocalStore => "local-store",
        }
    }
}

/// A denial, with the message recorded on the incident.
#[derive(Debug, Clone)]
pub struct Denial {
    pub budget: String,
    pub reason: DenialReason,
    pub message: String,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Denial {}

impl Denial {
    fn new(budget: &str, reason: DenialReason, message: String) -> Denial {
        Denial {
            budget: budget.to_string(),
            reason,
            message,
        }
    }
}

enum Try {
    Granted(Slot),
    Denied(Denial),
    Unreachable(String),
}

/// One attempt's bookkeeping: the record and the value to write.
struct Request {
    row: i64,
    value: Bytes,
}

impl Fleet {
    /// Takes a slot of `budget` for `holder`, waiting up to the budget's
    /// `wait`. The slot is recorded in SQLite before this returns; a
    /// denial is noted on the holder's incident and published.
    pub async fn acquire(self: &Arc<Self>, budget: &str, holder: &Holder) -> Result<Slot, Denial> {
        let Some(b) = self.budget(budget) else {
            return Err(Denial::new(
                budget,
                DenialReason::UnknownBudget,
                format!("fleet budget {budget}: not defined in [fleet.budget]"),
            ));
        };
        if let Some(slot) = self.take_adopted(&b.name, holder) {
            return Ok(slot);
        }
        let started = Instant::now();
        let until = started + b.config.wait.0;
        let mut pause = Duration::from_millis(25);
        let result = loop {
            if self.stopping() {
                break Err(Denial::new(
                    budget,
                    DenialReason::Stopping,
                    format!("fleet budget {budget}: mend is stopping"),
                ));
            }
            match self.try_acquire(&b, holder).await {
                Try::Granted(slot) => break Ok(slot),
                Try::Unreachable(why) => {
                    break match b.config.when_unreachable {
                        WhenUnreachable::Deny => Err(Denial::new(
                            budget,
                            DenialReason::Unreachable,
                            format!(
                                "fleet budget {budget}: the store is unreachable ({why}); denied (when_unreachable = \"deny\")"
                            ),
                        )),
                        WhenUnreachable::Local => self.acquire_local(&b, holder, &why),
                    };
                }
                Try::Denied(d) => {
                    let now = Instant::now();
                    if now + pause > until {
                        break Err(d);
                    }
                    let jittered = pause.mul_f64(0.5 + fastrand::f64());
                    tokio::time::sleep(jittered.min(until - now)).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        };
        let fm = self.metrics.fleet();
        fm.waited(budget, started.elapsed());
        match &result {
            Ok(slot) => {
                fm.slot(budget, if slot.is_local() { "local" } else { "granted" });
                fm.held(budget, 1);
            }
            Err(d) => {
                fm.slot(budget, d.reason.as_str());
                self.denied(holder, d);
            }
        }
        result
    }

    /// Records a denial: on the incident, in the log, for the fleet.
    fn denied(&self, holder: &Holder, d: &Denial) {
        tracing::warn!(
            incident = holder.incident,
            policy = %holder.policy,
            step = %holder.step,
            "{d}"
        );
        Audit::new("denied", &d.budget)
            .incident(holder.incident)
            .step(&holder.step)
            .note(d.reason.as_str())
            .emit(&self.agent);
        if let Err(e) = self.db.note_incident(holder.incident, &d.message) {
            tracing::error!(incident = holder.incident, "recording the denial: {e:#}");
        }
        self.publish(
            "denial",
            json!({
                "budget": d.budget,
                "reason": d.reason.as_str(),
                "message": d.message,
                "incident": holder.incident,
                "policy": holder.policy,
                "check": holder.check,
                "step": holder.step,
            }),
        );
    }

    /// Begins the record of a hold (before anything is asked of the store).
    fn begin(&self, b: &Budget, holder: &Holder, state: &str) -> anyhow::Result<Request> {
        let since = now_ms();
        let value = SlotValue {
            agent: self.agent.clone(),
            token: format!("{}-{:016x}", self.instance, fastrand::u64(..)),
            holder: holder.clone(),
            since,
        };
        let value = serde_json::to_string(&value)?;
        let row = self.db.fleet_slot_begin(&SlotRecord {
            id: 0,
            budget: b.name.clone(),
            key: String::new(),
            value: value.clone(),
            revision: None,
            state: state.to_string(),
            policy: holder.policy.clone(),
            check: holder.check.clone(),
            incident: holder.incident,
            step: holder.step.clone(),
            started_at: since,
            deadline: None,
        })?;
        Ok(Request {
            row,
            value: Bytes::from(value),
        })
    }

    async fn try_acquire(self: &Arc<Self>, b: &Arc<Budget>, holder: &Holder) -> Try {
        let limit = b.config.max_concurrent.get_ref().slots(self.live_members());
        let req = match self.begin(b, holder, "acquiring") {
            Ok(r) => r,
            Err(e) => {
                return Try::Denied(Denial::new(
                    &b.name,
                    DenialReason::LocalStore,
                    format!("fleet budget {}: cannot record the slot: {e:#}", b.name),
                ));
            }
        };
        let bucket = self.slots_bucket(&b.name);
        let first = fastrand::u32(..limit);
        for n in 0..limit {
            let key = format!("slot-{}", (first + n) % limit);
            let sent = Instant::now();
            let sent_ms = now_ms();
            let created = self
                .timed(
                    "create",
                    self.store.create(&bucket, &key, req.value.clone()),
                )
                .await;
            let revision = match created {
                Ok(rev) => rev,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => match self.own_write(&bucket, &key, &req.value).await {
                    Some(rev) => rev,
                    None => {
                        self.end_row(req.row, "unreachable", &e.to_string());
                        return Try::Unreachable(e.to_string());
                    }
                },
            };
            return self
                .granted(b, holder, req, key, revision, sent, sent_ms)
                .await;
        }
        self.end_row(req.row, "denied", "every slot is held");
        let holders = self.holders(&bucket, limit).await;
        Try::Denied(Denial::new(
            &b.name,
            DenialReason::Full,
            format!(
                "fleet budget {}: {} of {limit} held by {}",
                b.name, limit, holders
            ),
        ))
    }

    /// After an ambiguous write: whether the key now holds our value (the
    /// write did land), and at which revision.
    pub(crate) async fn own_write(&self, bucket: &str, key: &str, value: &Bytes) -> Option<u64> {
        match self.timed("get", self.store.get(bucket, key)).await {
            Ok(Some(e)) if e.value == value => Some(e.revision),
            _ => None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn granted(
        self: &Arc<Self>,
        b: &Arc<Budget>,
        holder: &Holder,
        req: Request,
        key: String,
        revision: u64,
        sent: Instant,
        sent_ms: u64,
    ) -> Try {
        let bucket = self.slots_bucket(&b.name);
        if let Some(rate) = b.config.rate {
            let rb = self.rate_bucket(&b.name);
            let first = fastrand::u32(..rate.count);
            let mut took = false;
            for n in 0..rate.count {
                let token = format!("start-{}", (first + n) % rate.count);
                match self
                    .timed("create", self.store.create(&rb, &token, req.value.clone()))
                    .await
                {
                    Ok(_) => took = true,
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => {
                        if self.own_write(&rb, &token, &req.value).await.is_some() {
                            took = true;
                        } else {
                            self.give_back(&bucket, &key, revision).await;
                            self.end_row(req.row, "unreachable", &e.to_string());
                            return Try::Unreachable(e.to_string());
                        }
                    }
                }
                break;
            }
            if !took {
                self.give_back(&bucket, &key, revision).await;
                self.end_row(req.row, "denied", "rate used up");
                let next = self.next_start(&rb, rate.per).await;
                return Try::Denied(Denial::new(
                    &b.name,
                    DenialReason::Rate,
                    format!(
                        "fleet budget {}: rate {}/{} used up{next}",
                        b.name,
                        rate.count,
                        humantime::format_duration(rate.per)
                    ),
                ));
            }
        }
        let deadline_ms = sent_ms + b.terms.deadline(sent).duration_since(sent).as_millis() as u64;
        // Durable before acting.
        if let Err(e) = self
            .db
            .fleet_slot_held(req.row, &key, revision, deadline_ms)
        {
            self.give_back(&bucket, &key, revision).await;
            self.end_row(req.row, "failed", &format!("{e:#}"));
            return Try::Denied(Denial::new(
                &b.name,
                DenialReason::LocalStore,
                format!("fleet budget {}: cannot record the slot: {e:#}", b.name),
            ));
        }
        Audit::new("acquired", &b.name)
            .slot(&key)
            .incident(holder.incident)
            .step(&holder.step)
            .sent(sent_ms)
            .deadline(deadline_ms)
            .ttl(b.terms.ttl)
            .emit(&self.agent);
        Try::Granted(Slot::held(
            self.clone(),
            b.clone(),
            holder.clone(),
            req.row,
            key,
            req.value,
            revision,
            sent,
        ))
    }

    /// Deletes a slot taken by mistake (its rate was used up); if that
    /// fails, the store expires it.
    async fn give_back(&self, bucket: &str, key: &str, revision: u64) {
        if let Err(e) = self
            .timed("delete", self.store.delete(bucket, key, revision))
            .await
        {
            tracing::debug!("fleet: giving back {bucket}/{key}: {e}");
        }
    }

    fn end_row(&self, row: i64, state: &str, note: &str) {
        if let Err(e) = self.db.fleet_slot_end(row, state, now_ms(), note) {
            tracing::error!("fleet: recording slot {row}: {e:#}");
        }
    }

    /// "host-a, host-c", from the slot keys (a read: for the message).
    async fn holders(&self, bucket: &str, limit: u32) -> String {
        let mut names = Vec::new();
        for i in 0..limit {
            match self
                .timed("get", self.store.get(bucket, &format!("slot-{i}")))
                .await
            {
                Ok(Some(e)) => match serde_json::from_slice::<SlotValue>(&e.value) {
                    Ok(v) => names.push(v.agent),
                    Err(_) => names.push("?".into()),
                },
                Ok(None) => {}
                Err(_) => return "(the store did not say)".into(),
            }
        }
        names.sort();
        if names.is_empty() {
            "(none left: try again)".into()
        } else {
            names.join(", ")
        }
    }

    /// " (next start in ~12m)", from the oldest start token.
    async fn next_start(&self, bucket: &str, per: Duration) -> String {
        let Ok(entries) = self.timed("list", self.store.entries(bucket)).await else {
            return String::new();
        };
        let Some(oldest) = entries.iter().map(|e| e.written).min() else {
            return String::new();
        };
        let age = std::time::SystemTime::now()
            .duration_since(oldest)
            .unwrap_or_default();
        let left = Duration::from_secs(per.saturating_sub(age).as_secs().max(1));
        format!(" (next start in ~{})", humantime::format_duration(left))
    }

    /// The store is unreachable and the budget allows local holders.
    fn acquire_local(
        self: &Arc<Self>,
        b: &Arc<Budget>,
        holder: &Holder,
        why: &str,
    ) -> Result<Slot, Denial> {
        let max = b.config.local_max();
        {
            let mut l = lock(&b.local);
            if l.held >= max {
                return Err(Denial::new(
                    &b.name,
                    DenialReason::LocalFull,
                    format!(
                        "fleet budget {}: the store is unreachable ({why}) and the local limit ({max}) is in use",
                        b.name
                    ),
                ));
            }
            if let Some(rate) = b.config.rate
                && let Err(wait) = l.starts.take(Instant::now(), rate)
            {
                return Err(Denial::new(
                    &b.name,
                    DenialReason::Rate,
                    format!(
                        "fleet budget {}: the store is unreachable and the local rate {}/{} is used up (next start in ~{})",
                        b.name,
                        rate.count,
                        humantime::format_duration(rate.per),
                        humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
                    ),
                ));
            }
            l.held += 1;
        }
        let req = match self.begin(b, holder, "local") {
            Ok(r) => r,
            Err(e) => {
                b.local_released();
                return Err(Denial::new(
                    &b.name,
                    DenialReason::LocalStore,
                    format!("fleet budget {}: cannot record the slot: {e:#}", b.name),
                ));
            }
        };
        tracing::warn!(
            budget = %b.name,
            incident = holder.incident,
            "fleet budget {}: the store is unreachable ({why}); acting under the local limit ({} of {max} on this host)",
            b.name,
            b.local_held()
        );
        Audit::new("acquired-local", &b.name)
            .incident(holder.incident)
            .step(&holder.step)
            .emit(&self.agent);
        Ok(Slot::local(
            self.clone(),
            b.clone(),
            holder.clone(),
            req.row,
        ))
    }
}
