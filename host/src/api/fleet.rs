//! `GET /api/v1/fleet`: fleet mode's view (members, budgets and their
//! holders, fleet-wide incidents), or 404 when fleet mode is off.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::auth::Read;
use super::error::ErrorBody;
use super::{ApiError, AppState};

/// Members, budgets with their holders, fleet-wide incidents.
#[utoipa::path(get, path = "/api/v1/fleet", tag = "fleet",
    responses(
        (status = 200, description = "Fleet mode as this agent sees it", body = Object),
        (status = 401, description = "Reads need the token here", body = ErrorBody),
        (status = 404, description = "Fleet mode is off", body = ErrorBody),
    ))]
pub(super) async fn status(
    _: Read,
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
