//! The Alertmanager webhook receiver. `[[api.alert]]` rules map an alert
//! (its `alertname` and labels) to a check; a firing alert asks for a
//! manual heal of that check, which mend confirms with the check's own
//! detector before acting. Alertmanager delivers at least once (it
//! retries, and HA pairs both send), so each alert occurrence (its
//! fingerprint and `startsAt`) is acted on once; repeats are counted and
//! dropped while the incident it started is open. A repeat after that
//! incident closed (the alert still fires: the problem came back, or the
//! heal did not hold) checks the target again, and a still-bad target
//! opens a new incident. A `resolved` notification is recorded on the
//! incident. The record is kept in memory for a day: after a restart a
//! re-delivery is still harmless, because a heal never opens a second
//! incident beside an open one and a healed check has nothing to heal.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
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
use crate::engine::{ControlError, HealRequest};
use crate::store::EventKind;

/// How long an alert occurrence is remembered.
const REMEMBER: Duration = Duration::from_secs(24 * 3600);
/// At most this many remembered (the oldest go first).
const MAX_REMEMBERED: usize = 100_000;

/// The webhook body (version 4); fields mend does not use are ignored.
#[derive(Deserialize, ToSchema)]
pub(crate) struct Webhook {
    pub(crate) alerts: Vec<Alert>,
}

/// One alert of the webhook body.
#[derive(Deserialize, ToSchema)]
pub(crate) struct Alert {
    pub(crate) status: AlertStatus,
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default, rename = "startsAt")]
    pub(crate) starts_at: String,
    #[serde(default)]
    pub(crate) fingerprint: String,
}

#[derive(Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AlertStatus {
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
    /// Repeats of a firing alert whose incident had closed: the target
    /// is checked again (a still-bad one opens a new incident; they are
    /// also in `healing`).
    rechecked: usize,
    duplicates: usize,
    unmatched: usize,
    resolved: usize,
    /// Alerts mend could not take now (it answers 503 so they come again).
    retry: Vec<String>,
}

impl Alert {
    /// One occurrence of one alert: its fingerprint (or, without one, its
    /// labels) and when it started firing, as a JSON pair, so no two
    /// (fingerprint, start) pairs share a key whatever characters they hold.
    pub(crate) fn key(&self) -> String {
        let id = if self.fingerprint.is_empty() {
            serde_json::json!({ "labels": self.labels })
        } else {
            serde_json::json!({ "fingerprint": self.fingerprint })
        };
        serde_json::json!([id, self.starts_at]).to_string()
    }
}

/// Alert occurrences already acted on, with the incidents they opened.
/// An occurrence is kept as a 128-bit digest of its key, so the most it
/// holds (`MAX_REMEMBERED`) is a few MB whatever the sender's labels are.
#[derive(Default)]
pub(super) struct Dedup {
    seen: HashMap<Digest, Vec<i64>>,
    order: VecDeque<(Instant, Digest)>,
}

type Digest = [u8; 16];

fn digest(key: &str) -> Digest {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(key.as_bytes());
    let mut out = [0; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// What an occurrence is to [`Dedup`].
#[derive(Debug, PartialEq, Eq)]
enum Occurrence {
    First,
    /// Seen before; these incidents were opened for it.
    Repeat(Vec<i64>),
}

impl Dedup {
    /// Records `key`, or says it was there and what it opened.
    fn first(&mut self, key: &str, now: Instant) -> Occurrence {
        while let Some((at, k)) = self.order.front() {
            if now.duration_since(*at) < REMEMBER && self.order.len() < MAX_REMEMBERED {
                break;
            }
            self.seen.remove(k);
            self.order.pop_front();
        }
        let d = digest(key);
        if let Some(ids) = self.seen.get(&d) {
            return Occurrence::Repeat(ids.clone());
        }
        self.seen.insert(d, Vec::new());
        self.order.push_back((now, d));
        Occurrence::First
    }

    /// Incident `id` was opened (or taken up) for occurrence `key`.
    fn opened(&mut self, key: &str, id: i64) {
        if let Some(ids) = self.seen.get_mut(&digest(key))
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }

    /// The incidents opened for `key`.
    fn incidents(&self, key: &str) -> Vec<i64> {
        self.seen.get(&digest(key)).cloned().unwrap_or_default()
    }

    /// Lets `key` be acted on again (taking it failed). Its place in the
    /// order goes too: left there, it would expire a later occurrence of
    /// the same key early. Rare (a failure path), so a scan is fine.
    fn forget(&mut self, key: &str) {
        let d = digest(key);
        if self.seen.remove(&d).is_some() {
            self.order.retain(|(_, k)| *k != d);
        }
    }
}

fn dedup(s: &super::ApiState) -> std::sync::MutexGuard<'_, Dedup> {
    s.alerts.lock().unwrap_or_else(|p| p.into_inner())
}

/// The body as a [`Webhook`]: an object whose `alerts` are objects (serde
/// alone would also take a struct from an array).
pub(crate) fn parse(body: &[u8]) -> Result<Webhook, String> {
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
    let (mut duplicates, mut unmatched, mut resolved, mut rechecked) = (0, 0, 0, 0);
    let mut retry = Vec::new();
    for alert in &hook.alerts {
        // Sender-controlled text goes into incident records, logs and
        // terminals: bounded and with control characters written out.
        let name = alert.labels.get("alertname").map_or(String::new(), |n| {
            crate::text::escape(crate::text::truncate(n, 200)).into_owned()
        });
        let fingerprint = crate::text::escape(crate::text::truncate(&alert.fingerprint, 200));
        let matched: Vec<_> = rules.iter().filter(|r| r.matches(&alert.labels)).collect();
        let key = alert.key();
        if alert.status != AlertStatus::Firing {
            resolved += 1;
            metrics.alert("resolved");
            record_resolved(&s, &engine, &key, &name, &matched);
            continue;
        }
        if matched.is_empty() {
            unmatched += 1;
            metrics.alert("unmatched");
            continue;
        }
        let occurrence = dedup(&s).first(&key, Instant::now());
        // A repeat while its incident is open (or before it opened one) is
        // a duplicate; after the incident closed, the target is checked
        // again.
        let mut after = None;
        if let Occurrence::Repeat(ids) = occurrence {
            let closed = |id: &i64| {
                s.reader()
                    .incident_phase(*id)
                    .ok()
                    .flatten()
                    .is_some_and(|(_, closed)| closed)
            };
            match ids.iter().max() {
                Some(&last) if ids.iter().all(closed) => after = Some(last),
                _ => {
                    duplicates += 1;
                    metrics.alert("duplicate");
                    continue;
                }
            }
        }
        let mut source = match after {
            None => format!("alertmanager (alert {name}, fingerprint {fingerprint})"),
            Some(last) => format!(
                "alertmanager (alert {name}, fingerprint {fingerprint}, still firing after incident {last} closed)"
            ),
        };
        // In fleet mode, one agent of the fleet takes each alert
        // occurrence; to the others it is a duplicate.
        if let Some(fleet) = engine.fleet() {
            let id = if alert.fingerprint.is_empty() {
                key.as_str()
            } else {
                alert.fingerprint.as_str()
            };
            // A re-check is its own occurrence: one agent takes it.
            let starts_at = match after {
                None => alert.starts_at.clone(),
                Some(last) => format!("{}#after-incident-{last}", alert.starts_at),
            };
            match fleet.claim_alert(id, &starts_at).await {
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
                    if after.is_none() {
                        dedup(&s).forget(&key);
                    }
                    retry.push(format!("{name}: the fleet store: {e}"));
                    continue;
                }
            }
        }
        if after.is_some() {
            rechecked += 1;
            metrics.alert("recheck");
        }
        for rule in matched {
            let check = rule.check.get_ref();
            let how = HealRequest {
                dry_run: rule.dry_run,
                source: source.clone(),
                by: Some("alertmanager".into()),
                ..HealRequest::default()
            };
            match engine.request_heal_as(check, how) {
                Ok(rx) => {
                    metrics.alert("heal");
                    healing.push(Healing {
                        alert: name.clone(),
                        check: check.clone(),
                    });
                    let check = check.clone();
                    let (state, engine, key, name) =
                        (s.clone(), engine.clone(), key.clone(), name.clone());
                    tokio::spawn(async move {
                        let Ok(outcome) = rx.await else { return };
                        for p in &outcome.policies {
                            if !p.started {
                                tracing::info!(check, policy = %p.policy, "alert: no heal: {}", p.reason);
                                continue;
                            }
                            let Some(id) = p.incident else { continue };
                            dedup(&state).opened(&key, id);
                            if let Some(last) = after {
                                let reason = format!(
                                    "alert {name} still fires after incident {last} closed, and the check confirms it: a new incident"
                                );
                                let at = engine.clock().now();
                                let detail = serde_json::json!({"after_incident": last});
                                if let Err(e) = engine.store().add_event(
                                    id,
                                    at,
                                    EventKind::AlertRepeat,
                                    "alertmanager",
                                    &reason,
                                    &detail,
                                ) {
                                    tracing::error!(
                                        incident = id,
                                        "recording the alert's repeat: {e:#}"
                                    );
                                }
                            }
                        }
                    });
                }
                Err(e @ ControlError::UnknownCheck(_)) => {
                    tracing::error!(alert = %name, "alert rule: {e}");
                }
                Err(e) => {
                    // Not taken: let Alertmanager deliver it again.
                    if after.is_none() {
                        dedup(&s).forget(&key);
                    }
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
        rechecked,
        duplicates,
        unmatched,
        resolved,
        retry,
    };
    Ok((code, Json(body)).into_response())
}

/// A `resolved` notification, on the incidents its occurrence opened (or,
/// after a restart, the open incident of each check its rules name).
fn record_resolved(
    s: &Arc<super::ApiState>,
    engine: &crate::engine::Engine,
    key: &str,
    name: &str,
    rules: &[&crate::config::api::AlertRule],
) {
    let mut ids = dedup(s).incidents(key);
    if ids.is_empty() {
        for r in rules {
            if let Ok(Some(inc)) = engine.store().open_incident_for_check(r.check.get_ref()) {
                ids.push(inc);
            }
        }
    }
    let at = engine.clock().now();
    for id in ids {
        let reason = format!("Alertmanager says alert {name} resolved");
        if let Err(e) = engine.store().add_event(
            id,
            at,
            EventKind::AlertResolved,
            "alertmanager",
            &reason,
            &serde_json::json!({}),
        ) {
            tracing::error!(incident = id, "recording the alert's resolution: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_occurrence_is_acted_on_once_and_forgotten_after_a_day() {
        let mut d = Dedup::default();
        let t0 = Instant::now();
        let key = "abc@2026-11-22T10:00:00Z";
        assert_eq!(d.first(key, t0), Occurrence::First);
        d.opened(key, 7);
        assert_eq!(
            d.first(key, t0 + Duration::from_secs(60)),
            Occurrence::Repeat(vec![7])
        );
        assert_eq!(
            d.first("abc@2026-11-22T12:00:00Z", t0),
            Occurrence::First,
            "a new firing"
        );
        assert_eq!(
            d.first(key, t0 + REMEMBER + Duration::from_secs(1)),
            Occurrence::First
        );
    }

    #[test]
    fn a_forgotten_occurrence_taken_again_is_remembered_for_its_own_day() {
        let mut d = Dedup::default();
        let t0 = Instant::now();
        let key = "abc@2026-11-22T10:00:00Z";
        assert_eq!(d.first(key, t0), Occurrence::First);
        d.forget(key);
        let later = t0 + REMEMBER / 2;
        assert_eq!(d.first(key, later), Occurrence::First, "delivered again");
        d.opened(key, 9);
        // Past the first delivery's day, within the second's.
        assert_eq!(
            d.first(key, t0 + REMEMBER + Duration::from_secs(1)),
            Occurrence::Repeat(vec![9])
        );
        assert_eq!(d.order.len(), 1);
    }

    #[test]
    fn at_most_max_remembered_occurrences_are_held_the_oldest_going_first() {
        let mut d = Dedup::default();
        let t0 = Instant::now();
        for i in 0..MAX_REMEMBERED + 10 {
            assert_eq!(d.first(&format!("k{i}"), t0), Occurrence::First);
        }
        assert!(d.seen.len() <= MAX_REMEMBERED && d.order.len() <= MAX_REMEMBERED);
        assert_eq!(
            d.first("k0", t0),
            Occurrence::First,
            "the oldest was let go"
        );
        let last = format!("k{}", MAX_REMEMBERED + 9);
        assert_eq!(d.first(&last, t0), Occurrence::Repeat(vec![]));
    }

    fn alert(fingerprint: &str, starts_at: &str, labels: &[(&str, &str)]) -> Alert {
        serde_json::from_value(serde_json::json!({
            "status": "firing",
            "fingerprint": fingerprint,
            "startsAt": starts_at,
            "labels": labels.iter().copied().collect::<BTreeMap<_, _>>(),
        }))
        .unwrap()
    }

    #[test]
    fn no_two_occurrences_share_a_dedup_key() {
        // A separator inside a fingerprint or a start once made these equal.
        let a = alert("a@b", "c", &[]);
        let b = alert("a", "b@c", &[]);
        assert_ne!(a.key(), b.key());
        // A fingerprint spelled like the labels of an alert without one.
        let labels = alert("", "t", &[("alertname", "X")]);
        let spelled = alert(r#"{"alertname":"X"}"#, "t", &[]);
        assert_ne!(labels.key(), spelled.key());
        assert_eq!(
            a.key(),
            alert("a@b", "c", &[("x", "y")]).key(),
            "labels do not matter with a fingerprint"
        );
    }
}
