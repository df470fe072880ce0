//! `GET /api/v1/fleet`: fleet mode's view (members, budgets and their
//! holders, fleet-wide incidents), or 404 when fleet mode is off.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiError, AppState};

pub(super) async fn status(
    State(s): AppState,
) -> Result<Json<crate::fleet::FleetStatus>, ApiError> {
    let engine = s.current.get();
    let fleet = engine.fleet().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "fleet mode is off: add [fleet] to the config",
        )
    })?;
    Ok(Json(fleet.status().await))
}
