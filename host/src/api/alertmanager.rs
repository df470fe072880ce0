//! The Alertmanager webhook receiver. `[[api.alert]]` rules map an alert
//! (its `alertname` and labels) to a check; a firing alert asks for a
//! manual heal of that check, which mend confirms with the check's own
//! detector before acting. Alertmanager delivers at least once (it
//! retries, and HA pairs both send), so each alert occurrence (its
//! fingerprint and `startsAt`) is acted on once; repeats are counted and
//! dropped. The record is kept in memory for a day: after a restart a
//! re-delivery is still harmless, because a heal never opens a second
//! incident beside an open one and a healed check has nothing to heal.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Write;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::engine::ControlError;

/// How long an alert occurrence is remembered.
const REMEMBER: Duration = Duration::from_secs(24 * 3600);
/// At most this many remembered (the oldest go first).
const MAX_REMEMBERED: usize = 100_000;

/// The webhook body (version 4); fields mend does not use are ignored.
#[derive(Deserialize, ToSchema)]
pub(super) struct Webhook {
    alerts: Vec<Alert>,
}

/// One alert of the webhook body.
#[derive(Deserialize, ToSchema)]
struct Alert {
    status: AlertStatus,
    labels: BTreeMap<String, String>,
    #[serde(default, rename = "startsAt")]
    starts_at: String,
    #[serde(default)]
    fingerprint: String,
}

#[derive(Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum AlertStatus {
    Firing,
    Resolved,
}

/// A firing alert mend is healing for.
#[derive(Serialize, ToSchema)]
pub(super) struct Healing {
    alert: String,
    check: String,
}

/// What mend did with a webhook's alerts.
#[derive(Serialize, ToSchema)]
pub(super) struct AlertsView {
    received: usize,
    healing: Vec<Healing>,
    duplicates: usize,
    unmatched: usize,
    resolved: usize,
    /// Alerts mend could not take now (it answers 503 so they come again).
    retry: Vec<String>,
}

impl Alert {
    /// One occurrence of one alert: its fingerprint (or, without one, its
    /// labels) and when it started firing.
    fn key(&self) -> String {
        let id = if self.fingerprint.is_empty() {
            serde_json::to_string(&self.labels).unwrap_or_default()
        } else {
            self.fingerprint.clone()
        };
        format!("{id}@{}", self.starts_at)
    }
}

/// Alert occurrences already acted on.
#[derive(Default)]
pub(super) struct Dedup {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl Dedup {
    /// Records `key`; false if it was already there.
    fn first(&mut self, key: &str, now: Instant) -> bool {
        while let Some((at, k)) = self.order.front() {
            if now.duration_since(*at) < REMEMBER && self.order.len() < MAX_REMEMBERED {
                break;
            }
            self.seen.remove(k);
            self.order.pop_front();
        }
        if self.seen.contains_key(key) {
            return false;
        }
        self.seen.insert(key.to_string(), now);
        self.order.push_back((now, key.to_string()));
        true
    }

    fn forget(&mut self, key: &str) {
        self.seen.remove(key);
    }
}

/// The body as a [`Webhook`]: an object whose `alerts` are objects (serde
/// alone would also take a struct from an array).
fn parse(body: &[u8]) -> Result<Webhook, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let objects = v.is_object()
        && v["alerts"]
            .as_array()
            .is_none_or(|a| a.iter().all(|x| x.is_object() && x["labels"].is_object()));
    if !objects {
        return Err("expected {\"alerts\": [{\"status\", \"labels\": {...}, ...}]}".into());
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// The Alertmanager webhook receiver: a firing alert a rule maps asks for
/// a manual heal of its check; each occurrence is acted on once.
#[utoipa::path(post, path = "/api/v1/alertmanager", tag = "alertmanager",
    request_body(content = Webhook, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Taken", body = AlertsView),
        (status = 400, description = "Not an Alertmanager webhook body", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No API token is configured", body = ErrorBody),
        (status = 413, description = "The body is over [api] max_body", body = ErrorBody),
        (status = 503, description = "Some alerts could not be taken now: deliver again", body = AlertsView),
    ))]
pub(super) async fn receive(
    _: Write,
    State(s): AppState,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let hook = parse(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("not an Alertmanager webhook body: {e}"),
        )
    })?;
    let engine = s.current.get();
    let metrics = engine.metrics();
    let rules = &engine.config().api.alerts;
    let mut healing = Vec::new();
    let (mut duplicates, mut unmatched, mut resolved) = (0, 0, 0);
    let mut retry = Vec::new();
    for alert in &hook.alerts {
        let name = alert.labels.get("alertname").cloned().unwrap_or_default();
        if alert.status != AlertStatus::Firing {
            resolved += 1;
            metrics.alert("resolved");
            continue;
        }
        let matched: Vec<_> = rules.iter().filter(|r| r.matches(&alert.labels)).collect();
        if matched.is_empty() {
            unmatched += 1;
            metrics.alert("unmatched");
            continue;
        }
        let key = alert.key();
        let first = s
            .alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first(&key, Instant::now());
        if !first {
            duplicates += 1;
            metrics.alert("duplicate");
            continue;
        }
        let mut source = format!(
            "alertmanager (alert {name}, fingerprint {})",
            alert.fingerprint
        );
        // In fleet mode, one agent of the fleet takes each alert
        // occurrence; to the others it is a duplicate.
        if let Some(fleet) = engine.fleet() {
            let id = if alert.fingerprint.is_empty() {
                key.as_str()
            } else {
                alert.fingerprint.as_str()
            };
            match fleet.claim_alert(id, &alert.starts_at).await {
                Ok(crate::fleet::AlertClaim::Won) => {
                    source.push_str(&format!(", taken by fleet agent {}", fleet.agent()));
                }
                Ok(crate::fleet::AlertClaim::Taken { winner }) => {
                    tracing::info!(alert = %name, %winner, "alert taken by another fleet agent");
                    duplicates += 1;
                    metrics.alert("duplicate");
                    continue;
                }
                Err(e) => {
                    s.alerts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .forget(&key);
                    retry.push(format!("{name}: the fleet store: {e}"));
                    continue;
                }
            }
        }
        for rule in matched {
            let check = rule.check.get_ref();
            match engine.request_heal(check, rule.dry_run, &source) {
                Ok(rx) => {
                    metrics.alert("heal");
                    healing.push(Healing {
                        alert: name.clone(),
                        check: check.clone(),
                    });
                    let check = check.clone();
                    tokio::spawn(async move {
                        if let Ok(outcome) = rx.await
                            && !outcome.started()
                        {
                            for p in &outcome.policies {
                                tracing::info!(check, policy = %p.policy, "alert: no heal: {}", p.reason);
                            }
                        }
                    });
                }
                Err(e @ ControlError::UnknownCheck(_)) => {
                    tracing::error!(alert = %name, "alert rule: {e}");
                }
                Err(e) => {
                    // Not taken: let Alertmanager deliver it again.
                    s.alerts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .forget(&key);
                    retry.push(format!("{name} → {check}: {e}"));
                }
            }
        }
    }
    // 503 makes Alertmanager retry the ones mend could not take now.
    let code = if retry.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = AlertsView {
        received: hook.alerts.len(),
        healing,
        duplicates,
        unmatched,
        resolved,
        retry,
    };
    Ok((code, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_occurrence_is_acted_on_once_and_forgotten_after_a_day() {
        let mut d = Dedup::default();
        let t0 = Instant::now();
        assert!(d.first("abc@2026-11-22T10:00:00Z", t0));
        assert!(!d.first("abc@2026-11-22T10:00:00Z", t0 + Duration::from_secs(60)));
        assert!(d.first("abc@2026-11-22T12:00:00Z", t0), "a new firing");
        assert!(d.first(
            "abc@2026-11-22T10:00:00Z",
            t0 + REMEMBER + Duration::from_secs(1)
        ));
    }
}
