//! Membership: each agent writes its own key in the members bucket every
//! heartbeat; the bucket expires a key three heartbeats after its last
//! write, so the live members are the keys present. Percentage budgets
//! count them (a read: during a change the count can lag by a heartbeat,
//! which moves a percentage's slot count, never a slot's exclusivity).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Fleet, now_ms};

#[derive(Default)]
pub struct Members {
    /// Live members at the last count (0: never counted).
    live: AtomicUsize,
    /// Revision of our own key, for leaving.
    revision: AtomicU64,
    since: AtomicU64,
}

/// What a member says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberInfo {
    pub agent: String,
    pub version: String,
    pub pid: u32,
    /// When this agent joined (wall-clock ms).
    pub since: u64,
    /// When the store last heard from it (its clock, ms).
    #[serde(default)]
    pub seen: u64,
}

impl Fleet {
    /// Live members, this one included (at least 1).
    pub fn live_members(&self) -> usize {
        self.members.live.load(Ordering::Acquire).max(1)
    }

    pub(super) async fn heartbeat_loop(&self) {
        loop {
            tokio::time::sleep(self.heartbeat).await;
            self.beat().await;
        }
    }

    /// Writes our key, then counts the keys.
    pub(super) async fn beat(&self) {
        let since = match self.members.since.load(Ordering::Acquire) {
            0 => {
                let now = now_ms();
                self.members.since.store(now, Ordering::Release);
                now
            }
            s => s,
        };
        let me = MemberInfo {
            agent: self.agent.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            since,
            seen: 0,
        };
        let bucket = self.members_bucket();
        let value = Bytes::from(serde_json::to_vec(&me).unwrap_or_default());
        match self
            .timed("put", self.store.put(&bucket, &self.agent, value))
            .await
        {
            Ok(rev) => self.members.revision.store(rev, Ordering::Release),
            Err(e) => {
                tracing::debug!("fleet: heartbeat: {e}");
                return;
            }
        }
        match self.timed("list", self.store.entries(&bucket)).await {
            Ok(entries) => {
                let n = entries.len().max(1);
                self.members.live.store(n, Ordering::Release);
                self.metrics.fleet().set_members(n);
            }
            Err(e) => tracing::debug!("fleet: counting members: {e}"),
        }
    }

    /// The live members and what they say (a read).
    pub async fn member_list(&self) -> Result<Vec<MemberInfo>, super::StoreError> {
        let entries = self
            .timed("list", self.store.entries(&self.members_bucket()))
            .await?;
        let mut out: Vec<MemberInfo> = entries
            .into_iter()
            .map(|e| {
                let mut m: MemberInfo =
                    serde_json::from_slice(&e.value).unwrap_or_else(|_| MemberInfo {
                        agent: e.key.clone(),
                        version: String::new(),
                        pid: 0,
                        since: 0,
                        seen: 0,
                    });
                m.seen = e
                    .written
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_millis() as u64;
                m
            })
            .collect();
        out.sort_by(|a, b| a.agent.cmp(&b.agent));
        Ok(out)
    }

    /// Removes our key (a clean stop), so percentages shrink at once.
    pub(super) async fn leave(&self) {
        let rev = self.members.revision.load(Ordering::Acquire);
        if rev == 0 {
            return;
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.store.delete(&self.members_bucket(), &self.agent, rev),
        )
        .await;
    }
}
