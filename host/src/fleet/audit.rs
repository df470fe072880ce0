//! The audit trail of budget slots: one log line per acquire, renewal,
//! release, loss and denial, with wall-clock times, under the target
//! `mend::fleet::audit`. Merged across agents (`--log-format json`), it
//! shows how many held a budget at any instant: a hold runs from
//! `acquired` to `released` or `lost`, and a holder that died holds until
//! `sent_ms + ttl_ms` of its last `acquired` or `renewed` line, when the
//! store expires its key.

use std::time::Duration;

use super::now_ms;

pub(crate) struct Audit<'a> {
    event: &'a str,
    budget: &'a str,
    slot: &'a str,
    incident: i64,
    step: &'a str,
    sent_ms: u64,
    deadline_ms: u64,
    ttl_ms: u64,
    note: &'a str,
}

impl<'a> Audit<'a> {
    pub(crate) fn new(event: &'a str, budget: &'a str) -> Self {
        Audit {
            event,
            budget,
            slot: "",
            incident: 0,
            step: "",
            sent_ms: 0,
            deadline_ms: 0,
            ttl_ms: 0,
            note: "",
        }
    }

    pub(crate) fn slot(mut self, slot: &'a str) -> Self {
        self.slot = slot;
        self
    }

    pub(crate) fn incident(mut self, incident: i64) -> Self {
        self.incident = incident;
        self
    }

    pub(crate) fn step(mut self, step: &'a str) -> Self {
        self.step = step;
        self
    }

    /// When the write that started or renewed the lease was sent.
    pub(crate) fn sent(mut self, ms: u64) -> Self {
        self.sent_ms = ms;
        self
    }

    pub(crate) fn deadline(mut self, ms: u64) -> Self {
        self.deadline_ms = ms;
        self
    }

    pub(crate) fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl_ms = ttl.as_millis() as u64;
        self
    }

    pub(crate) fn note(mut self, note: &'a str) -> Self {
        self.note = note;
        self
    }

    pub(crate) fn emit(self, agent: &str) {
        tracing::info!(
            target: "mend::fleet::audit",
            event = self.event,
            agent,
            budget = self.budget,
            slot = self.slot,
            incident = self.incident,
            step = self.step,
            at_ms = now_ms(),
            sent_ms = self.sent_ms,
            deadline_ms = self.deadline_ms,
            ttl_ms = self.ttl_ms,
            note = self.note,
            "fleet slot {}: {} {}",
            self.event,
            self.budget,
            self.slot
        );
    }
}
