//! Incidents, each with its diagnosis and every attempt, and what mend
//! has learnt per action (success rate, mean time to recover).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::store::{ActionStats, Incident};

#[derive(Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    open: bool,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// `GET /api/v1/incidents[?open=true][&limit=N]`, newest first.
pub(super) async fn list(
    State(s): AppState,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Incident>>, ApiError> {
    Ok(Json(s.reader().incidents(q.open, q.limit.min(1000))?))
}

/// `GET /api/v1/incidents/{id}`.
pub(super) async fn one(
    State(s): AppState,
    Path(id): Path<i64>,
) -> Result<Json<Incident>, ApiError> {
    s.reader()
        .incident(id)?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no incident {id}")))
}

/// `GET /api/v1/stats`: per (finding code, action).
pub(super) async fn stats(State(s): AppState) -> Result<Json<Vec<ActionStats>>, ApiError> {
    Ok(Json(s.reader().action_stats()?))
}
