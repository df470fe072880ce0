//! The NATS JetStream `FleetStore`: one KV bucket per namespace, a stream
//! for events.
//!
//! Works against NATS 2.9 (Debian's 2.9.10): per-key TTL is ignored there,
//! so each namespace is its own bucket whose `max_age` is the ttl (an
//! update at the expected revision is a new message, so it restarts the
//! age). The client's `create_key_value` cannot parse 2.9's account info,
//! so buckets are made by creating their `KV_<bucket>` stream directly.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::TryStreamExt;
use tokio::sync::Mutex;

use super::store::{Entry, FleetStore, StoreError};

pub struct NatsStore {
    js: jetstream::Context,
    timeout: Duration,
    buckets: Mutex<HashMap<String, kv::Store>>,
    /// The event stream's name and the subjects it takes (`<prefix>.>`).
    events_stream: String,
    events_subjects: String,
    /// Replicas of each bucket and of the stream (a cluster: 3).
    replicas: usize,
}

impl NatsStore {
    /// Connects (in the background: mend starts while NATS is down, and
    /// every operation then reports `Unreachable` until it is up).
    pub async fn connect(
        servers: &[String],
        credentials: Option<&Path>,
        name: &str,
        timeout: Duration,
        events_stream: &str,
        events_prefix: &str,
    ) -> anyhow::Result<NatsStore> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("mend {name}"))
            .retry_on_initial_connect()
            .max_reconnects(None::<usize>)
            .connection_timeout(timeout.max(Duration::from_secs(1)))
            .request_timeout(Some(timeout))
            // A silently dropped link is noticed within two pings.
            .ping_interval(Duration::from_secs(5))
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis((100u64 << attempt.min(5)).min(2000))
            })
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("fleet: connected to NATS"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("fleet: disconnected from NATS")
                    }
                    other => tracing::debug!("fleet: NATS {other}"),
                }
            });
        if let Some(path) = credentials {
            opts = opts
                .credentials_file(path)
                .await
                .with_context(|| format!("reading NATS credentials {}", path.display()))?;
        }
        let addrs = servers
            .iter()
            .map(|s| {
                s.parse::<async_nats::ServerAddr>()
                    .with_context(|| format!("NATS server `{s}`"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let client = opts
            .connect(addrs)
            .await
            .with_context(|| format!("connecting to NATS {}", servers.join(", ")))?;
        let mut js = jetstream::new(client);
        js.set_timeout(timeout);
        Ok(NatsStore {
            js,
            timeout,
            buckets: Mutex::new(HashMap::new()),
            events_stream: events_stream.to_string(),
            events_subjects: format!("{events_prefix}.>"),
            replicas: 1,
        })
    }

    /// Makes buckets and the stream with `n` replicas (on a cluster).
    pub fn with_replicas(mut self, n: usize) -> Self {
        self.replicas = n.max(1);
        self
    }

    async fn bucket(&self, name: &str) -> Result<kv::Store, StoreError> {
        if let Some(b) = self.buckets.lock().await.get(name) {
            return Ok(b.clone());
        }
        let b = self
            .timed(self.js.get_key_value(name))
            .await?
            .map_err(|e| unreachable_or(format!("bucket {name}: {e}")))?;
        self.buckets
            .lock()
            .await
            .insert(name.to_string(), b.clone());
        Ok(b)
    }

    async fn timed<F: std::future::Future>(&self, f: F) -> Result<F::Output, StoreError> {
        tokio::time::timeout(self.timeout, f).await.map_err(|_| {
            StoreError::Unreachable(format!("no answer from NATS within {:?}", self.timeout))
        })
    }

    /// Creates `config`'s stream, or brings an existing one to its limits.
    async fn ensure_stream(&self, config: stream::Config) -> Result<(), StoreError> {
        let name = config.name.clone();
        match self.timed(self.js.get_stream(&name)).await? {
            Ok(s) => {
                let have = &s.cached_info().config;
                if have.max_age != config.max_age || have.num_replicas != config.num_replicas {
                    tracing::info!(stream = %name, max_age = ?config.max_age, replicas = config.num_replicas, "fleet: updating the stream");
                    self.timed(self.js.update_stream(config))
                        .await?
                        .map_err(|e| StoreError::Other(format!("updating stream {name}: {e}")))?;
                }
                Ok(())
            }
            Err(e)
                if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                self.timed(self.js.create_stream(config))
                    .await?
                    .map(|_| ())
                    .map_err(|e| unreachable_or(format!("creating stream {name}: {e}")))
            }
            Err(e) => Err(unreachable_or(format!("stream {name}: {e}"))),
        }
    }
}

/// Errors that are not a definite answer count as unreachable: the write
/// may or may not have happened, and nothing relies on either.
fn unreachable_or(msg: String) -> StoreError {
    StoreError::Unreachable(msg)
}

fn written(e: &kv::Entry) -> SystemTime {
    let nanos = e.created.unix_timestamp_nanos().max(0) as u64;
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// The settings of a bucket as the client's `create_key_value` would make
/// them (history 1), with `max_age` as the keys' ttl.
fn bucket_stream(bucket: &str, ttl: Duration) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: ttl,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    }
}

#[async_trait::async_trait]
impl FleetStore for NatsStore {
    async fn ensure_bucket(&self, bucket: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut config = bucket_stream(bucket, ttl);
        config.num_replicas = self.replicas;
        self.ensure_stream(config).await?;
        self.buckets.lock().await.remove(bucket);
        self.bucket(bucket).await.map(|_| ())
    }

    async fn create(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StoreError> {
        let b = self.bucket(bucket).await?;
        match self.timed(b.create(key, value)).await? {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(StoreError::Conflict(format!("{bucket}/{key} exists")))
            }
            Err(e) => Err(unreachable_or(format!("creating {bucket}/{key}: {e}"))),
        }
    }

    async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, StoreError> {
        let b = self.bucket(bucket).await?;
        match self.timed(b.update(key, value, revision)).await? {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(
                StoreError::Conflict(format!("{bucket}/{key} is not at revision {revision}")),
            ),
            Err(e) => Err(unreachable_or(format!("updating {bucket}/{key}: {e}"))),
        }
    }

    async fn put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StoreError> {
        let b = self.bucket(bucket).await?;
        self.timed(b.put(key, value))
            .await?
            .map_err(|e| unreachable_or(format!("writing {bucket}/{key}: {e}")))
    }

    async fn delete(&self, bucket: &str, key: &str, revision: u64) -> Result<(), StoreError> {
        let b = self.bucket(bucket).await?;
        match self
            .timed(b.delete_expect_revision(key, Some(revision)))
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(
                StoreError::Conflict(format!("{bucket}/{key} is not at revision {revision}")),
            ),
            Err(e) => Err(unreachable_or(format!("deleting {bucket}/{key}: {e}"))),
        }
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>, StoreError> {
        let b = self.bucket(bucket).await?;
        let e = self
            .timed(b.entry(key))
            .await?
            .map_err(|e| unreachable_or(format!("reading {bucket}/{key}: {e}")))?;
        Ok(e.filter(|e| e.operation == kv::Operation::Put)
            .map(|e| Entry {
                written: written(&e),
                key: e.key,
                value: e.value,
                revision: e.revision,
            }))
    }

    async fn entries(&self, bucket: &str) -> Result<Vec<Entry>, StoreError> {
        let b = self.bucket(bucket).await?;
        let mut keys: Vec<String> = self
            .timed(async {
                match b.keys().await {
                    Ok(k) => k.try_collect().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await?
            .map_err(|e| unreachable_or(format!("listing {bucket}: {e}")))?;
        // The listing is a live consumer: a key written while it runs (a
        // member's heartbeat) can come twice, and would count twice.
        keys.sort_unstable();
        keys.dedup();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(e) = self.get(bucket, &k).await? {
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn ensure_events(&self, max_age: Duration) -> Result<(), StoreError> {
        self.ensure_stream(stream::Config {
            name: self.events_stream.clone(),
            subjects: vec![self.events_subjects.clone()],
            max_age,
            storage: stream::StorageType::File,
            // The window in which a repeated Nats-Msg-Id is dropped.
            duplicate_window: Duration::from_secs(120).min(max_age),
            num_replicas: self.replicas,
            ..Default::default()
        })
        .await
    }

    async fn publish(&self, subject: &str, id: &str, payload: Bytes) -> Result<(), StoreError> {
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(id);
        let ack = self
            .timed(self.js.send_publish(subject.to_string(), msg))
            .await?
            .map_err(|e| unreachable_or(format!("publishing {subject}: {e}")))?;
        self.timed(std::future::IntoFuture::into_future(ack))
            .await?
            .map(|_| ())
            .map_err(|e| unreachable_or(format!("publishing {subject}: {e}")))
    }

    fn kind(&self) -> &'static str {
        "nats"
    }
}

impl NatsStore {
    /// The JetStream context, for the recorder's consumer.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn events_stream(&self) -> &str {
        &self.events_stream
    }

    /// Deletes a bucket (tests and benchmarks clean up after themselves).
    pub async fn delete_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        self.buckets.lock().await.remove(bucket);
        match self.js.delete_stream(format!("KV_{bucket}")).await {
            Ok(_) => Ok(()),
            Err(e) => Err(anyhow::anyhow!("deleting bucket {bucket}: {e}")),
        }
    }

    /// Deletes the event stream (tests clean up).
    pub async fn delete_events(&self) -> anyhow::Result<()> {
        self.js
            .delete_stream(&self.events_stream)
            .await
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("deleting stream {}: {e}", self.events_stream))
    }
}
