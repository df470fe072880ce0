//! Maintenance and reload: pause and resume every policy or one check's,
//! and reload the config.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use tokio::sync::oneshot;
use utoipa::ToSchema;

use super::auth::Write;
use super::error::ErrorBody;
use super::views::{PausedView, ReloadedView, ResumedView};
use super::{ApiError, AppState, MAX_REASON_CHARS};

/// How long a reload may take (validating builds an engine, compiling
/// changed plugins) before the API stops waiting.
const RELOAD_WAIT: Duration = Duration::from_secs(120);

/// The body of a pause (optional).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseBody {
    /// Why (shown in status and recorded); at most 1000 characters.
    #[serde(default)]
    #[schema(max_length = 1000)]
    reason: Option<String>,
}

fn reason(body: &Bytes, default: &str) -> Result<String, ApiError> {
    // No body, or `null`: no reason given. Only an object is a body
    // (serde would also take a struct from an array).
    let bad = |e: String| ApiError::bad_request(format!("body: {e}"));
    let body: PauseBody = if body.iter().all(u8::is_ascii_whitespace) {
        PauseBody::default()
    } else {
        match serde_json::from_slice::<serde_json::Value>(body).map_err(|e| bad(e.to_string()))? {
            serde_json::Value::Null => PauseBody::default(),
            v @ serde_json::Value::Object(_) => {
                serde_json::from_value(v).map_err(|e| bad(e.to_string()))?
            }
            _ => {
                return Err(bad(
                    "must be a JSON object, e.g. {\"reason\": \"...\"}".into()
                ));
            }
        }
    };
    let reason = body.reason.unwrap_or_else(|| default.into());
    let n = reason.chars().count();
    if n > MAX_REASON_CHARS {
        return Err(ApiError::bad_request(format!(
            "reason: {n} characters is more than the {MAX_REASON_CHARS} allowed"
        )));
    }
    Ok(reason)
}

/// Pause every policy (maintenance): checks run and record, no action
/// starts; kept across restarts. Pausing again replaces the reason.
#[utoipa::path(post, path = "/api/v1/pause", tag = "control",
    request_body(content = Option<PauseBody>, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Paused", body = PausedView),
        (status = 400, description = "A bad body or a reason too long", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No API token is configured", body = ErrorBody),
        (status = 413, description = "The body is over [api] max_body", body = ErrorBody),
    ))]
pub(super) async fn pause(
    _: Write,
    State(s): AppState,
    body: Bytes,
) -> Result<Json<PausedView>, ApiError> {
    let reason = reason(&body, "paused through the API")?;
    let engine = s.current.get();
    let updated = engine.paused().is_some();
    let p = engine.pause(&reason)?;
    Ok(Json(PausedView {
        paused: (&p).into(),
        updated,
        check: None,
    }))
}

/// End the pause of every policy.
#[utoipa::path(post, path = "/api/v1/resume", tag = "control",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Resumed (or was not paused)", body = ResumedView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No API token is configured", body = ErrorBody),
    ))]
pub(super) async fn resume(_: Write, State(s): AppState) -> Result<Json<ResumedView>, ApiError> {
    let was = s.current.get().resume()?;
    Ok(Json(ResumedView {
        resumed: was.is_some(),
        was: was.as_ref().map(Into::into),
        check: None,
    }))
}

/// Pause one check's policies: the check runs and records, none of its
/// actions starts; kept across restarts. Pausing again replaces the
/// reason.
#[utoipa::path(post, path = "/api/v1/checks/{name}/pause", tag = "control",
    params(("name" = String, Path, description = "The check's name")),
    request_body(content = Option<PauseBody>, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Paused", body = PausedView),
        (status = 400, description = "A bad body or a reason too long", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No API token is configured", body = ErrorBody),
        (status = 404, description = "No such check", body = ErrorBody),
        (status = 413, description = "The body is over [api] max_body", body = ErrorBody),
    ))]
pub(super) async fn pause_check(
    _: Write,
    State(s): AppState,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<PausedView>, ApiError> {
    let reason = reason(&body, "paused through the API")?;
    let (p, updated) = s.current.get().pause_check(&name, &reason)?;
    Ok(Json(PausedView {
        paused: (&p).into(),
        updated,
        check: Some(name),
    }))
}

/// End one check's pause.
#[utoipa::path(post, path = "/api/v1/checks/{name}/resume", tag = "control",
    params(("name" = String, Path, description = "The check's name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Resumed (or was not paused)", body = ResumedView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No API token is configured", body = ErrorBody),
        (status = 404, description = "No such check", body = ErrorBody),
    ))]
pub(super) async fn resume_check(
    _: Write,
    State(s): AppState,
    Path(name): Path<String>,
) -> Result<Json<ResumedView>, ApiError> {
    let was = s.current.get().resume_check(&name)?;
    Ok(Json(ResumedView {
        resumed: was.is_some(),
        was: was.as_ref().map(Into::into),
        check: Some(name),
    }))
}

/// Reload the config file, as SIGHUP does: validated first (a bad one is
/// refused with why, and the running config stays); work in flight
/// finishes; checks keep their live state.
#[utoipa::path(post, path = "/api/v1/reload", tag = "control",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Reloaded", body = ReloadedView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No API token is configured", body = ErrorBody),
        (status = 422, description = "The config is invalid; the running one stays", body = ErrorBody),
        (status = 503, description = "mend cannot reload now", body = ErrorBody),
        (status = 504, description = "The reload takes long; it goes on", body = ErrorBody),
    ))]
pub(super) async fn reload(_: Write, State(s): AppState) -> Result<Json<ReloadedView>, ApiError> {
    let unavailable = |why: &str| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot reload: {why}"),
        )
    };
    let Some(tx) = &s.reloads else {
        return Err(unavailable("this server takes no reload requests"));
    };
    let (reply, answer) = oneshot::channel();
    tx.try_send(reply)
        .map_err(|_| unavailable("a reload is already under way; try again"))?;
    match tokio::time::timeout(RELOAD_WAIT, answer).await {
        Ok(Ok(Ok(v))) => Ok(Json(v)),
        Ok(Ok(Err(why))) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why)),
        Ok(Err(_)) => Err(unavailable("mend stopped before reloading")),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the reload is taking long; see mend's log",
        )),
    }
}
