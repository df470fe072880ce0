//! Incidents, each with its diagnosis and every attempt, and what mend
//! has learnt per action (success rate, mean time to recover).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Read;
use super::error::ErrorBody;
use super::views::{IncidentView, StatsView};
use super::{ApiError, AppState};

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

/// Per (finding code, action): attempts, heals, success rate, MTTR.
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
