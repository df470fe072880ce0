//! `mend recorder`: the central incident view. Any number of replicas pull
//! from one durable consumer of the event stream (each event goes to one
//! of them, and comes back after `ack_wait` if that one died before its
//! ack) and write it to PostgreSQL idempotently: an event's id is its
//! primary key, and an incident or attempt row only moves forward (a
//! redelivered or reordered older event changes nothing). PostgreSQL is
//! never on the remediation path: agents do not wait for any of this.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{Client, NoTls};

use super::nats::NatsStore;
use super::outbox::Event;
use super::store::FleetStore;
use super::{events_stream, events_subject};
use crate::config::fleet::{FleetConfig, RecorderConfig};

/// How long a pulled event may go unacknowledged before another replica
/// gets it.
const ACK_WAIT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mend_events (
    id          TEXT PRIMARY KEY,
    agent       TEXT NOT NULL,
    instance    TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    data        JSONB NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS mend_incidents (
    agent       TEXT NOT NULL,
    instance    TEXT NOT NULL,
    incident    BIGINT NOT NULL,
    policy      TEXT NOT NULL,
    check_name  TEXT NOT NULL,
    state       TEXT NOT NULL,
    opened_at   BIGINT NOT NULL,
    closed_at   BIGINT,
    root_cause  TEXT NOT NULL DEFAULT '',
    note        TEXT NOT NULL DEFAULT '',
    dry_run     BOOLEAN NOT NULL DEFAULT false,
    seq         BIGINT NOT NULL,
    PRIMARY KEY (agent, instance, incident)
);
CREATE TABLE IF NOT EXISTS mend_attempts (
    agent       TEXT NOT NULL,
    instance    TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    incident    BIGINT NOT NULL,
    step        BIGINT NOT NULL,
    action      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    duration_ms BIGINT,
    seq         BIGINT NOT NULL,
    PRIMARY KEY (agent, instance, attempt)
);
CREATE INDEX IF NOT EXISTS mend_incidents_opened ON mend_incidents (opened_at DESC);
";

/// One fleet-wide incident, as `mend fleet status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentRow {
    pub agent: String,
    pub incident: i64,
    pub policy: String,
    pub check: String,
    pub state: String,
    pub opened_at: i64,
    pub closed_at: Option<i64>,
    pub note: String,
}

async fn connect(rec: &RecorderConfig) -> anyhow::Result<Client> {
    let mut cfg: tokio_postgres::Config =
        rec.postgres.parse().context("[fleet.recorder] postgres")?;
    cfg.connect_timeout(rec.timeout.0);
    let (client, conn) = tokio::time::timeout(rec.timeout.0, cfg.connect(NoTls))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {:?}", rec.timeout.0))?
        .context("connecting to PostgreSQL ([fleet.recorder] postgres)")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!("recorder: PostgreSQL connection closed: {e}");
        }
    });
    Ok(client)
}

/// Makes the tables (replicas starting together take turns).
async fn migrate(client: &mut Client) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7236120112)", &[])
        .await?;
    tx.batch_execute(SCHEMA).await?;
    tx.commit().await?;
    Ok(())
}

fn int(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}

fn text(v: &Value, k: &str) -> String {
    v.get(k)
        .map(|x| match x {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

/// Writes one event; false if it was already there (a redelivery).
pub async fn record(client: &mut Client, e: &Event) -> anyhow::Result<bool> {
    let tx = client.transaction().await?;
    let inserted = tx
        .execute(
            "INSERT INTO mend_events (id, agent, instance, seq, kind, at_ms, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb)
             ON CONFLICT (id) DO NOTHING",
            &[
                &e.id,
                &e.agent,
                &e.instance,
                &e.seq,
                &e.kind,
                &(e.at as i64),
                &e.data.to_string(),
            ],
        )
        .await?;
    if inserted == 1 {
        let d = &e.data;
        match e.kind.as_str() {
            "incident" => {
                tx.execute(
                    "INSERT INTO mend_incidents (agent, instance, incident, policy, check_name,
                         state, opened_at, closed_at, root_cause, note, dry_run, seq)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (agent, instance, incident) DO UPDATE SET
                         state = EXCLUDED.state, closed_at = EXCLUDED.closed_at,
                         note = EXCLUDED.note, seq = EXCLUDED.seq
                     WHERE mend_incidents.seq < EXCLUDED.seq",
                    &[
                        &e.agent,
                        &e.instance,
                        &int(d, "id").unwrap_or(0),
                        &text(d, "policy"),
                        &text(d, "check"),
                        &text(d, "state"),
                        &int(d, "opened_at").unwrap_or(0),
                        &int(d, "closed_at"),
                        &text(d, "root_cause"),
                        &text(d, "note"),
                        &(int(d, "dry_run").unwrap_or(0) != 0),
                        &e.seq,
                    ],
                )
                .await?;
            }
            "attempt" => {
                tx.execute(
                    "INSERT INTO mend_attempts (agent, instance, attempt, incident, step, action,
                         outcome, started_at, finished_at, duration_ms, seq)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (agent, instance, attempt) DO UPDATE SET
                         outcome = EXCLUDED.outcome, finished_at = EXCLUDED.finished_at,
                         duration_ms = EXCLUDED.duration_ms, seq = EXCLUDED.seq
                     WHERE mend_attempts.seq < EXCLUDED.seq",
                    &[
                        &e.agent,
                        &e.instance,
                        &int(d, "id").unwrap_or(0),
                        &int(d, "incident").unwrap_or(0),
                        &int(d, "step").unwrap_or(0),
                        &text(d, "action"),
                        &text(d, "outcome"),
                        &int(d, "started_at").unwrap_or(0),
                        &int(d, "finished_at"),
                        &int(d, "duration_ms"),
                        &e.seq,
                    ],
                )
                .await?;
            }
            _ => {}
        }
    }
    tx.commit().await?;
    Ok(inserted == 1)
}

/// The newest fleet-wide incidents.
pub async fn recent_incidents(
    rec: &RecorderConfig,
    limit: i64,
) -> anyhow::Result<Vec<IncidentRow>> {
    let client = connect(rec).await?;
    let rows = client
        .query(
            "SELECT agent, incident, policy, check_name, state, opened_at, closed_at, note
             FROM mend_incidents ORDER BY opened_at DESC LIMIT $1",
            &[&limit],
        )
        .await
        .context("reading mend_incidents (has `mend recorder` run?)")?;
    Ok(rows
        .iter()
        .map(|r| IncidentRow {
            agent: r.get(0),
            incident: r.get(1),
            policy: r.get(2),
            check: r.get(3),
            state: r.get(4),
            opened_at: r.get(5),
            closed_at: r.get(6),
            note: r.get(7),
        })
        .collect())
}

/// Runs a recorder replica until `stop` resolves.
pub async fn run(fleet: &FleetConfig, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let rec = fleet
        .recorder
        .as_ref()
        .context("`mend recorder` needs [fleet.recorder] with `postgres` in the config")?;
    let prefix = fleet.prefix.get_ref();
    let servers: Vec<String> = fleet.servers.iter().map(|s| s.get_ref().clone()).collect();
    let name = format!("{}-recorder", fleet.agent_id());
    let nats = NatsStore::connect(
        &servers,
        fleet.credentials.as_ref().map(|c| c.get_ref().as_path()),
        &name,
        fleet.request_timeout.0,
        &events_stream(prefix),
        &events_subject(prefix),
    )
    .await?
    .with_replicas(fleet.replicas as usize);
    tokio::pin!(stop);
    // Wait for NATS and PostgreSQL both; either may start after us.
    let mut pause = Duration::from_millis(200);
    let (consumer, mut client) = loop {
        let ready = async {
            nats.ensure_events(fleet.events_max_age.0)
                .await
                .map_err(|e| anyhow::anyhow!("the event stream: {e}"))?;
            let consumer = consumer(&nats, &rec.consumer).await?;
            let mut client = connect(rec).await?;
            migrate(&mut client)
                .await
                .context("making the recorder's tables")?;
            anyhow::Ok((consumer, client))
        };
        tokio::select! {
            _ = &mut stop => return Ok(()),
            r = ready => match r {
                Ok(v) => break v,
                Err(e) => {
                    tracing::warn!("recorder: not ready yet: {e:#}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            },
        }
    };
    tracing::info!(consumer = %rec.consumer, stream = %events_stream(prefix), "recorder running");
    loop {
        let batch = tokio::select! {
            _ = &mut stop => break,
            b = consumer.fetch().max_messages(64).expires(Duration::from_secs(1)).messages() => b,
        };
        let mut messages = match batch {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("recorder: fetching events: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(msg) = messages.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("recorder: {e}");
                    break;
                }
            };
            let event: Event = match serde_json::from_slice(&msg.payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(subject = %msg.subject, "recorder: dropping an event that is not one: {e}");
                    let _ = msg.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            match record(&mut client, &event).await {
                Ok(new) => {
                    tracing::debug!(id = %event.id, new, "recorded");
                    if let Err(e) = msg.ack().await {
                        tracing::warn!(id = %event.id, "recorder: ack: {e}");
                    }
                }
                Err(e) => {
                    tracing::error!(id = %event.id, "recorder: writing to PostgreSQL: {e:#}");
                    let _ = msg
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                        .await;
                    if client.is_closed() {
                        match connect(rec).await {
                            Ok(c) => client = c,
                            Err(e) => {
                                tracing::error!("recorder: reconnecting: {e:#}");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                    break;
                }
            }
        }
    }
    tracing::info!("recorder stopped");
    Ok(())
}

async fn consumer(
    nats: &NatsStore,
    name: &str,
) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
    let stream = nats
        .jetstream()
        .get_stream(nats.events_stream())
        .await
        .map_err(|e| anyhow::anyhow!("stream {}: {e}", nats.events_stream()))?;
    stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_string()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("consumer {name}: {e}"))
}
