//! NATS for fleet tests: the machine's server at 127.0.0.1:4222 (with
//! JetStream), a prefix of each test's own so its buckets and stream are
//! its own, removed on drop (even after a panic).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mend::config::fleet::FleetConfig;
use mend::fleet::nats::NatsStore;
use mend::fleet::store::{Entry, FleetStore, StoreError};
use mend::fleet::{Fleet, events_stream, events_subject};
use mend::metrics::Metrics;
use mend::store::Store;

pub const URL: &str = "nats://127.0.0.1:4222";

/// Why NATS tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    match std::net::TcpStream::connect_timeout(
        &"127.0.0.1:4222".parse().unwrap(),
        Duration::from_secs(1),
    ) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "skipped: no NATS server on 127.0.0.1:4222 ({e}); scripts/test starts one"
        )),
    }
}

pub fn skip() -> bool {
    match unavailable() {
        Some(why) => {
            eprintln!("{why}");
            true
        }
        None => false,
    }
}

/// A prefix unique to this process and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `[fleet]` config parsed from TOML, as mend.toml would hold it.
pub fn config(prefix: &str, agent: &str, extra: &str) -> FleetConfig {
    let text = format!(
        "[fleet]\nservers = [\"{URL}\"]\nagent_id = \"{agent}\"\nprefix = \"{prefix}\"\nheartbeat = \"200ms\"\n{extra}\n"
    );
    mend::config::parse(&text, Path::new("mend.toml"), |_| None)
        .unwrap_or_else(|e| panic!("{e}"))
        .fleet
        .expect("a [fleet] table")
}

pub async fn connect(prefix: &str, agent: &str) -> NatsStore {
    NatsStore::connect(
        &[URL.to_string()],
        None,
        agent,
        Duration::from_secs(2),
        &events_stream(prefix),
        &events_subject(prefix),
    )
    .await
    .expect("connecting to NATS")
}

/// Deletes every stream of `prefix` when dropped.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        // Drop may run inside a runtime: clean up from a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = match async_nats::connect(URL).await {
                    Ok(c) => c,
                    Err(_) => return,
                };
                let js = async_nats::jetstream::new(client);
                let mut names = js.stream_names();
                let mut mine = Vec::new();
                use futures_util::StreamExt;
                while let Some(Ok(name)) = names.next().await {
                    if name == format!("{prefix}_events")
                        || name.starts_with(&format!("KV_{prefix}_"))
                    {
                        mine.push(name);
                    }
                }
                for name in mine {
                    let _ = js.delete_stream(&name).await;
                }
            });
        })
        .join();
    }
}

/// One in-process agent: its own SQLite store and its fleet membership.
pub struct Agent {
    pub fleet: Arc<Fleet>,
    pub db: Arc<Store>,
    pub store: Arc<Flaky>,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub async fn join(prefix: &str, name: &str, budgets: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Store::open(&dir.path().join("mend.db"), 0).unwrap();
        let db = Arc::new(db);
        let store = Arc::new(Flaky::new(connect(prefix, name).await));
        let fleet = Fleet::with_store(
            &config(prefix, name, budgets),
            store.clone(),
            db.clone(),
            Arc::new(Metrics::new()),
        )
        .await
        .expect("joining the fleet");
        assert!(fleet.is_ready(), "the buckets are set up");
        Agent {
            fleet,
            db,
            store,
            _dir: dir,
        }
    }
}

/// The real NATS store behind a switch: while `down`, every operation
/// answers as an unreachable store does (a partition, without root).
pub struct Flaky {
    inner: NatsStore,
    down: AtomicBool,
}

impl Flaky {
    pub fn new(inner: NatsStore) -> Flaky {
        Flaky {
            inner,
            down: AtomicBool::new(false),
        }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unreachable("partitioned by the test".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl FleetStore for Flaky {
    async fn ensure_bucket(&self, bucket: &str, ttl: Duration) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ensure_bucket(bucket, ttl).await
    }
    async fn create(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.create(bucket, key, value).await
    }
    async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.update(bucket, key, value, revision).await
    }
    async fn put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.put(bucket, key, value).await
    }
    async fn delete(&self, bucket: &str, key: &str, revision: u64) -> Result<(), StoreError> {
        self.check()?;
        self.inner.delete(bucket, key, revision).await
    }
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>, StoreError> {
        self.check()?;
        self.inner.get(bucket, key).await
    }
    async fn entries(&self, bucket: &str) -> Result<Vec<Entry>, StoreError> {
        self.check()?;
        self.inner.entries(bucket).await
    }
    async fn ensure_events(&self, max_age: Duration) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ensure_events(max_age).await
    }
    async fn publish(&self, subject: &str, id: &str, payload: Bytes) -> Result<(), StoreError> {
        self.check()?;
        self.inner.publish(subject, id, payload).await
    }
    fn kind(&self) -> &'static str {
        "nats"
    }
}
