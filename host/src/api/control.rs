//! Maintenance: pause and resume every policy at once.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};

#[derive(Deserialize, Default)]
struct PauseBody {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/v1/pause` with an optional `{"reason": "..."}`.
pub(super) async fn pause(State(s): AppState, body: Bytes) -> Result<Json<Value>, ApiError> {
    let body: PauseBody = if body.is_empty() {
        PauseBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("body: {e}")))?
    };
    let reason = body
        .reason
        .unwrap_or_else(|| "paused through the API".into());
    let p = s.current.get().pause(&reason)?;
    Ok(Json(json!({ "paused": p })))
}

/// `POST /api/v1/resume`.
pub(super) async fn resume(State(s): AppState) -> Result<Json<Value>, ApiError> {
    let was = s.current.get().resume()?;
    Ok(Json(json!({ "resumed": was.is_some(), "was": was })))
}
