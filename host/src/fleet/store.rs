//! `FleetStore`: what fleet mode needs from a distributed store, so NATS
//! JetStream (today) and etcd (later) are interchangeable.
//!
//! Safety rests on the conditional writes alone (`create` if absent,
//! `update` and `delete` at an expected revision): reads (`entries`,
//! `get`) may be stale on a clustered store and only feed messages,
//! status and the member count.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// Why a store operation did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The condition failed: the key exists (create), or is at another
    /// revision (update, delete). A definite answer from the store.
    #[error("conflict: {0}")]
    Conflict(String),
    /// No answer in time, or no connection: the write may or may not have
    /// happened.
    #[error("store unreachable: {0}")]
    Unreachable(String),
    /// The store answered with an error.
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::Unreachable(_))
    }
}

/// One key's current value.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub value: Bytes,
    pub revision: u64,
    /// When the store wrote it (the store's clock).
    pub written: SystemTime,
}

/// A namespace of keys that expire `ttl` after their last write.
#[async_trait::async_trait]
pub trait FleetStore: Send + Sync {
    /// Creates the namespace (or checks it has this ttl). `ttl` zero:
    /// keys never expire.
    async fn ensure_bucket(&self, bucket: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Writes `key` only if it has no live value; the new revision.
    async fn create(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StoreError>;
    /// Writes `key` only if it is at `revision` (this also restarts its
    /// ttl); the new revision.
    async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, StoreError>;
    /// Writes `key` unconditionally (heartbeats).
    async fn put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, StoreError>;
    /// Deletes `key` only if it is at `revision`.
    async fn delete(&self, bucket: &str, key: &str, revision: u64) -> Result<(), StoreError>;
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>, StoreError>;
    /// Every live key with its value, each key once (a read: possibly
    /// stale).
    async fn entries(&self, bucket: &str) -> Result<Vec<Entry>, StoreError>;
    /// Makes sure the event stream exists (kept for `max_age`).
    async fn ensure_events(&self, max_age: Duration) -> Result<(), StoreError>;
    /// Publishes an event once: the store drops a repeat of `id`.
    async fn publish(&self, subject: &str, id: &str, payload: Bytes) -> Result<(), StoreError>;
    /// A short name for logs ("nats").
    fn kind(&self) -> &'static str;
}
