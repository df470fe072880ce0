//! Checks: their state and history, running one now, healing one by hand.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::{Read, Write};
use super::error::ErrorBody;
use super::views::{CheckDetail, CheckView, HealView, ResultView, StatusView};
use super::{ApiError, AppState};

/// How long `run` and `heal` wait for the check's task (it may be busy
/// with a remediation) before answering 504; the command stays queued.
const WAIT: Duration = Duration::from_secs(60);

/// Everything `mend status` shows.
#[utoipa::path(get, path = "/api/v1/status", tag = "checks",
    responses(
        (status = 200, description = "Version, pause, open incident count and every check", body = StatusView),
        (status = 401, description = "Reads need the token here", body = ErrorBody),
    ))]
pub(super) async fn status(_: Read, State(s): AppState) -> Result<Json<StatusView>, ApiError> {
    let engine = s.current.get();
    let open = s.reader().open_incident_count()?;
    Ok(Json(StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        now: engine.clock().now(),
        paused: engine.paused().as_ref().map(Into::into),
        open_incidents: open as u64,
        checks: CheckView::all(&engine),
    }))
}

/// Every check: state and last result.
#[utoipa::path(get, path = "/api/v1/checks", tag = "checks",
    responses(
        (status = 200, description = "Every check", body = Vec<CheckView>),
        (status = 401, description = "Reads need the token here", body = ErrorBody),
    ))]
pub(super) async fn list(_: Read, State(s): AppState) -> Json<Vec<CheckView>> {
    Json(CheckView::all(&s.current.get()))
}

/// One check: state, last findings, history (newest first) and recent
/// incidents.
#[utoipa::path(get, path = "/api/v1/checks/{name}", tag = "checks",
    params(("name" = String, Path, description = "The check's name")),
    responses(
        (status = 200, description = "The check", body = CheckDetail),
        (status = 401, description = "Reads need the token here", body = ErrorBody),
        (status = 404, description = "No such check", body = ErrorBody),
    ))]
pub(super) async fn one(
    _: Read,
    State(s): AppState,
    Path(name): Path<String>,
) -> Result<Json<CheckDetail>, ApiError> {
    let engine = s.current.get();
    let snap = engine
        .check_snapshot(&name)
        .ok_or_else(|| ApiError::not_found(format!("no check named `{name}`")))?;
    let check = CheckView::new(&engine, snap);
    let history = s.reader().history(&name, 50)?;
    let incidents = s
        .reader()
        .incidents_of(&name, 20)?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(CheckDetail {
        check,
        history: history.into_iter().map(Into::into).collect(),
        incidents,
    }))
}

/// Run the check's detector now; answers the result (its policies see it,
/// like any run).
#[utoipa::path(post, path = "/api/v1/checks/{name}/run", tag = "checks",
    params(("name" = String, Path, description = "The check's name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The result", body = ResultView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No API token is configured", body = ErrorBody),
        (status = 404, description = "No such check", body = ErrorBody),
        (status = 429, description = "Too many commands queued for the check", body = ErrorBody),
        (status = 503, description = "mend is stopping or reloading", body = ErrorBody),
        (status = 504, description = "The check is busy; the run stays queued", body = ErrorBody),
    ))]
pub(super) async fn run(
    _: Write,
    State(s): AppState,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let rx = s.current.get().request_run(&name)?;
    match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(result)) => Ok(Json(ResultView::from(&result)).into_response()),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "mend stopped or reloaded before running the check; try again",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("check `{name}` is busy (a remediation is running); the run stays queued"),
        )),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HealQuery {
    /// Plan only: actions say what they would do, nothing changes.
    #[serde(default)]
    dry_run: bool,
    /// Past the automatic attempt cap and cooldown (an operator knows);
    /// on a check whose incident is open, walks its ladder again now.
    #[serde(default)]
    force: bool,
    /// Who asks (recorded on the incident); at most 200 characters.
    #[serde(default)]
    #[param(max_length = 200)]
    by: Option<String>,
}

/// A manual heal through the policy ladder: 202 when a ladder started,
/// 409 when none did (each policy says why). On a check whose incident
/// is escalated, the ladder runs again on that incident. It never makes
/// mend exit (`exit_on_exhausted`).
#[utoipa::path(post, path = "/api/v1/checks/{name}/heal", tag = "checks",
    params(("name" = String, Path, description = "The check's name"), HealQuery),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "A ladder started", body = HealView),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No API token is configured", body = ErrorBody),
        (status = 404, description = "No such check", body = ErrorBody),
        (status = 409, description = "No ladder started; each policy says why", body = HealView),
        (status = 429, description = "Too many commands queued for the check", body = ErrorBody),
        (status = 503, description = "mend is stopping or reloading", body = ErrorBody),
        (status = 504, description = "The check is busy; the heal stays queued", body = ErrorBody),
    ))]
pub(super) async fn heal(
    _: Write,
    State(s): AppState,
    Path(name): Path<String>,
    Query(q): Query<HealQuery>,
) -> Result<Response, ApiError> {
    if let Some(by) = &q.by
        && by.chars().count() > 200
    {
        return Err(ApiError::bad_request(
            "by: more than the 200 characters allowed",
        ));
    }
    let how = crate::engine::HealRequest {
        dry_run: q.dry_run,
        force: q.force,
        source: match &q.by {
            Some(by) => format!("api (by {by})"),
            None => "api".into(),
        },
        by: q.by.clone().filter(|b| !b.trim().is_empty()),
    };
    let rx = s.current.get().request_heal_as(&name, how)?;
    match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(outcome)) => {
            let code = if outcome.started() {
                StatusCode::ACCEPTED
            } else {
                StatusCode::CONFLICT
            };
            Ok((code, Json(HealView::from(&outcome))).into_response())
        }
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "mend stopped or reloaded before the heal started; try again",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("check `{name}` is busy (a remediation is running); the heal stays queued"),
        )),
    }
}
