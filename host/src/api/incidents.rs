//! Incidents, each with its diagnosis and every attempt, and what mend
//! has learnt per action (success rate, mean time to recover).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Read, Write};
use super::error::ErrorBody;
use super::views::{IncidentView, StatsView};
use super::{ApiError, AppState, MAX_REASON_CHARS};

/// Longest `by` accepted (characters).
const MAX_BY_CHARS: usize = 200;

/// The most incidents one list returns.
const MAX_LIMIT: u32 = 1000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only the open ones.
    #[serde(default)]
    open: bool,
    /// At most this many (default 100).
    #[serde(default = "default_limit")]
    #[param(maximum = 1000)]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

/// Incidents, newest first, with diagnosis and attempts.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents",
    params(ListQuery),
    responses(
        (status = 200, description = "Incidents, newest first", body = Vec<IncidentView>),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 401, description = "Reads need the token here", body = ErrorBody),
    ))]
pub(super) async fn list(
    _: Read,
    State(s): AppState,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<IncidentView>>, ApiError> {
    if q.limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit: {} is more than the {MAX_LIMIT} one list returns",
            q.limit
        )));
    }
    let incidents = s.reader().incidents(q.open, q.limit as usize)?;
    Ok(Json(incidents.into_iter().map(Into::into).collect()))
}

/// One incident with its diagnosis and every attempt.
#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents",
    params(("id" = i64, Path, description = "The incident's number")),
    responses(
        (status = 200, description = "The incident", body = IncidentView),
        (status = 400, description = "Not an incident number", body = ErrorBody),
        (status = 401, description = "Reads need the token here", body = ErrorBody),
        (status = 404, description = "No such incident", body = ErrorBody),
    ))]
pub(super) async fn one(
    _: Read,
    State(s): AppState,
    Path(id): Path<i64>,
) -> Result<Json<IncidentView>, ApiError> {
    s.reader()
        .incident(id)?
        .map(|i| Json(i.into()))
        .ok_or_else(|| ApiError::not_found(format!("no incident {id}")))
}

/// Per (check or `stats_key`, finding code, step): attempts, heals,
/// success rate, MTTR.
#[utoipa::path(get, path = "/api/v1/stats", tag = "incidents",
    responses(
        (status = 200, description = "What mend has learnt per action", body = Vec<StatsView>),
        (status = 401, description = "Reads need the token here", body = ErrorBody),
    ))]
pub(super) async fn stats(_: Read, State(s): AppState) -> Result<Json<Vec<StatsView>>, ApiError> {
    Ok(Json(
        s.reader()
            .action_stats()?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Who acknowledges or resolves an incident, and why (both optional).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LifecycleBody {
    /// Who (recorded on the incident); default `api`. At most 200
    /// characters.
    #[serde(default)]
    #[schema(max_length = 200)]
    by: Option<String>,
    /// Why; at most 1000 characters.
    #[serde(default)]
    #[schema(max_length = 1000)]
    reason: Option<String>,
}

/// The body as (by, reason): none, `null`, or an object.
fn who_why(body: &Bytes) -> Result<(String, String), ApiError> {
    let bad = |e: String| ApiError::bad_request(format!("body: {e}"));
    let body: LifecycleBody = if body.iter().all(u8::is_ascii_whitespace) {
        LifecycleBody::default()
    } else {
        match serde_json::from_slice::<serde_json::Value>(body).map_err(|e| bad(e.to_string()))? {
            serde_json::Value::Null => LifecycleBody::default(),
            v @ serde_json::Value::Object(_) => {
                serde_json::from_value(v).map_err(|e| bad(e.to_string()))?
            }
            _ => {
                return Err(bad(
                    "must be a JSON object, e.g. {\"by\": \"ann\", \"reason\": \"...\"}".into(),
                ));
            }
        }
    };
    let by = body
        .by
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "api".into());
    let reason = body.reason.unwrap_or_default();
    for (key, v, max) in [
        ("by", &by, MAX_BY_CHARS),
        ("reason", &reason, MAX_REASON_CHARS),
    ] {
        let n = v.chars().count();
        if n > max {
            return Err(ApiError::bad_request(format!(
                "{key}: {n} characters is more than the {max} allowed"
            )));
        }
    }
    Ok((by, reason))
}

/// Acknowledge an escalated incident: a person has it. mend keeps
/// evaluating it (and may still walk its ladder again when the evidence
/// changes); no second page goes out.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/ack", tag = "incidents",
    params(("id" = i64, Path, description = "The incident's number")),
    request_body(content = Option<LifecycleBody>, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Acknowledged", body = IncidentView),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No API token is configured", body = ErrorBody),
        (status = 404, description = "No such incident", body = ErrorBody),
        (status = 409, description = "Not escalated (or closed already)", body = ErrorBody),
        (status = 413, description = "The body is over [api] max_body", body = ErrorBody),
    ))]
pub(super) async fn ack(
    _: Write,
    State(s): AppState,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Json<IncidentView>, ApiError> {
    let (by, reason) = who_why(&body)?;
    let inc = s.current.get().acknowledge(id, &by, &reason)?;
    Ok(Json(inc.into()))
}

/// Resolve an open incident by hand: it closes as `resolved`, with who
/// and why; the policy's cooldown starts.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/resolve", tag = "incidents",
    params(("id" = i64, Path, description = "The incident's number")),
    request_body(content = Option<LifecycleBody>, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Resolved", body = IncidentView),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No API token is configured", body = ErrorBody),
        (status = 404, description = "No such incident", body = ErrorBody),
        (status = 409, description = "Closed already", body = ErrorBody),
        (status = 413, description = "The body is over [api] max_body", body = ErrorBody),
    ))]
pub(super) async fn resolve(
    _: Write,
    State(s): AppState,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Json<IncidentView>, ApiError> {
    let (by, reason) = who_why(&body)?;
    let inc = s.current.get().resolve(id, &by, &reason)?;
    Ok(Json(inc.into()))
}
