//! The outbox and its publisher. Incident and attempt writes queue their
//! event in SQLite, in the same transaction (triggers), and fleet mode's
//! own events (denials, alert claims) are queued by [`Fleet::publish`]. One
//! task publishes them in order to the event stream, each with
//! `Nats-Msg-Id` = agent.instance.row, so a publish retried after a lost
//! ack is stored once; the recorder's writes are idempotent on the same id.
//! Nothing waits for this: remediation never depends on it.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Fleet, events_subject, now_ms};

/// Published events are kept this long in SQLite, then forgotten.
const KEEP_PUBLISHED: Duration = Duration::from_secs(24 * 3600);
const BATCH: usize = 200;

/// An event as published (and as the recorder reads it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// `agent.instance.seq`: unique across the fleet and restarts.
    pub id: String,
    pub agent: String,
    pub instance: String,
    /// The outbox row: orders one instance's events.
    pub seq: i64,
    /// `incident`, `attempt`, `denial`, `alert`.
    pub kind: String,
    /// Wall-clock ms when it was queued.
    pub at: u64,
    pub data: serde_json::Value,
}

impl Fleet {
    /// Queues an event of fleet mode's own for the central view.
    pub fn publish(&self, kind: &str, data: serde_json::Value) {
        match self.db.fleet_outbox_add(kind, now_ms(), &data.to_string()) {
            Ok(_) => self.outbox_wake.notify_one(),
            Err(e) => tracing::error!(kind, "fleet: queueing an event: {e:#}"),
        }
    }

    pub(super) async fn publish_loop(&self) {
        let mut pause = Duration::from_millis(200);
        let mut pruned = std::time::Instant::now();
        loop {
            match self.publish_pending().await {
                Ok(0) => {
                    pause = Duration::from_millis(200);
                    // Triggers do not wake us: look again every half second.
                    let _ = tokio::time::timeout(
                        Duration::from_millis(500),
                        self.outbox_wake.notified(),
                    )
                    .await;
                }
                Ok(_) => pause = Duration::from_millis(200),
                Err(e) => {
                    tracing::debug!("fleet: publishing events: {e}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
            if pruned.elapsed() > Duration::from_secs(600) {
                pruned = std::time::Instant::now();
                let before = now_ms().saturating_sub(KEEP_PUBLISHED.as_millis() as u64);
                if let Err(e) = self.db.fleet_outbox_prune(before) {
                    tracing::error!("fleet: pruning the outbox: {e:#}");
                }
            }
        }
    }

    /// Publishes what is pending, in order; how many went out.
    async fn publish_pending(&self) -> anyhow::Result<usize> {
        if !self.is_ready() {
            return Ok(0);
        }
        let pending = self.db.fleet_outbox_pending(BATCH)?;
        let subject = events_subject(&self.prefix);
        let mut sent = 0;
        for row in &pending {
            let event = Event {
                id: format!("{}.{}.{}", self.agent, self.instance, row.id),
                agent: self.agent.clone(),
                instance: self.instance.clone(),
                seq: row.id,
                kind: row.kind.clone(),
                at: row.at,
                data: serde_json::from_str(&row.body).unwrap_or(serde_json::Value::Null),
            };
            let payload = Bytes::from(serde_json::to_vec(&event)?);
            let subject = format!("{subject}.{}.{}", self.agent, row.kind);
            self.timed("publish", self.store.publish(&subject, &event.id, payload))
                .await?;
            self.db.fleet_outbox_published(row.id, now_ms())?;
            sent += 1;
        }
        let left = if pending.len() < BATCH {
            0
        } else {
            self.db.fleet_outbox_pending_count()?
        };
        self.metrics.fleet().set_outbox_pending(left);
        Ok(sent)
    }
}
