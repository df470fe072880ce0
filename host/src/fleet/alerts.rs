//! Alert intake across agents: Alertmanager may send one alert to several
//! agents (HA pairs, or every agent a route names); exactly one remediates
//! it. Each occurrence (fingerprint and `startsAt`) is a key created once
//! in a bucket whose age is the dedupe window: the agent whose create
//! succeeds takes it, and its name is the key's value.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::store::StoreError;
use super::{Fleet, now_ms};

/// Who takes an alert occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertClaim {
    /// This agent: remediate it.
    Won,
    /// Another agent took it first.
    Taken { winner: String },
}

#[derive(Serialize, Deserialize)]
struct ClaimValue {
    agent: String,
    fingerprint: String,
    starts_at: String,
    at: u64,
}

/// The key of one occurrence (hashed: fingerprints and timestamps carry
/// characters keys may not).
pub fn alert_key(fingerprint: &str, starts_at: &str) -> String {
    let digest = Sha256::digest(format!("{fingerprint}\n{starts_at}").as_bytes());
    format!("a{}", hex::encode(&digest[..20]))
}

impl Fleet {
    /// Claims an alert occurrence for this agent. An unreachable store is
    /// an error: the caller should have Alertmanager deliver it again.
    pub async fn claim_alert(
        &self,
        fingerprint: &str,
        starts_at: &str,
    ) -> Result<AlertClaim, StoreError> {
        let bucket = self.alerts_bucket();
        let key = alert_key(fingerprint, starts_at);
        let value = Bytes::from(
            serde_json::to_vec(&ClaimValue {
                agent: self.agent.clone(),
                fingerprint: fingerprint.to_string(),
                starts_at: starts_at.to_string(),
                at: now_ms(),
            })
            .unwrap_or_default(),
        );
        let fm = self.metrics.fleet();
        let won = match self
            .timed("create", self.store.create(&bucket, &key, value.clone()))
            .await
        {
            Ok(_) => true,
            Err(StoreError::Conflict(_)) => false,
            Err(e) => {
                if self.own_write(&bucket, &key, &value).await.is_some() {
                    true
                } else {
                    fm.alert("unreachable");
                    return Err(e);
                }
            }
        };
        if won {
            fm.alert("won");
            tracing::info!(fingerprint, starts_at, agent = %self.agent, "fleet: this agent takes the alert");
            self.publish(
                "alert",
                json!({"fingerprint": fingerprint, "starts_at": starts_at, "winner": self.agent}),
            );
            return Ok(AlertClaim::Won);
        }
        fm.alert("taken");
        let winner = match self.timed("get", self.store.get(&bucket, &key)).await {
            Ok(Some(e)) => serde_json::from_slice::<ClaimValue>(&e.value)
                .map(|v| v.agent)
                .unwrap_or_else(|_| "another agent".into()),
            _ => "another agent".into(),
        };
        Ok(AlertClaim::Taken { winner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_occurrence_key_is_stable_and_distinct() {
        let a = alert_key("abc", "2026-11-22T10:00:00Z");
        assert_eq!(a, alert_key("abc", "2026-11-22T10:00:00Z"));
        assert_ne!(a, alert_key("abc", "2026-11-22T12:00:00Z"));
        assert_ne!(alert_key("ab", "c"), alert_key("a", "bc"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
