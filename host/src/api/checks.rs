//! Checks: their state and history, running one now, healing one by hand.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::engine::Engine;

use super::auth::{Read, Write};
use super::error::ErrorBody;
#[allow(unused_imports)] // StatusView: named by the OpenAPI document
use super::views::{CheckDetail, CheckView, HealView, LagView, PauseView, ResultView, StatusView};
use super::{ApiError, AppState};

/// How long `run` and `heal` wait for the check's task (it may be busy
/// with a remediation) before answering 504; the command stays queued.
const WAIT: Duration = Duration::from_secs(60);

/// A page of the checks, in config order.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// Skip this many checks (default 0).
    #[serde(default)]
    #[param(minimum = 0)]
    offset: i64,
    /// At most this many checks (default: all of them).
    #[serde(default)]
    #[param(minimum = 0)]
    limit: Option<i64>,
}

impl PageQuery {
    /// The indices asked for, within `total`; a negative value is a bad
    /// request (the schema says `minimum: 0`, and 0 to `i64::MAX` is what
    /// parses).
    fn range(&self, total: usize) -> Result<Range<usize>, ApiError> {
        let count = |v: i64, name: &str| {
            usize::try_from(v).or_else(|_| {
                if v < 0 {
                    Err(ApiError::bad_request(format!("{name}: must be 0 or more")))
                } else {
                    Ok(usize::MAX)
                }
            })
        };
        let start = count(self.offset, "offset")?.min(total);
        let len = match self.limit {
            Some(l) => count(l, "limit")?,
            None => usize::MAX,
        };
        Ok(start..start.saturating_add(len).min(total))
    }
}

/// The header that says how many checks there are in all.
const TOTAL: &str = "x-total-count";

/// Everything `mend status` shows.
#[utoipa::path(get, path = "/api/v1/status", tag = "checks",
    params(PageQuery),
    responses(
        (status = 200, description = "Version, pause, open incident count, schedule lag and the checks (all, or a page)", body = StatusView,
            headers(("x-total-count" = u64, description = "How many checks there are in all"))),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 401, description = "Reads need the token here", body = ErrorBody),
    ))]
pub(super) async fn status(
    _: Read,
    State(s): AppState,
    Query(page): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let engine = s.current.get();
    let open = s.reader().open_incident_count()?;
    let (p50, p99, runs) = engine.schedule_lag();
    let total = engine.plan().checks.len();
    let head = StatusHead {
        version: env!("CARGO_PKG_VERSION"),
        now: engine.clock().now(),
        paused: engine.paused().as_ref().map(Into::into),
        open_incidents: open as u64,
        schedule_lag: LagView {
            p50_ms: p50.as_secs_f64() * 1e3,
            p99_ms: p99.as_secs_f64() * 1e3,
            runs: runs as u64,
        },
        total_checks: total as u64,
    };
    // The head's fields, then the checks as its last field.
    let mut open_json = serde_json::to_vec(&head)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    debug_assert_eq!(open_json.last(), Some(&b'}'));
    open_json.pop();
    open_json.extend_from_slice(b",\"checks\":[");
    let range = page.range(total)?;
    Ok(stream_checks(engine, range, total, open_json, b"]}"))
}

/// `StatusView` but its checks, which are streamed after it.
#[derive(Serialize)]
struct StatusHead {
    version: &'static str,
    now: u64,
    paused: Option<PauseView>,
    open_incidents: u64,
    schedule_lag: LagView,
    total_checks: u64,
}

/// The checks: state and last result (all, or a page).
#[utoipa::path(get, path = "/api/v1/checks", tag = "checks",
    params(PageQuery),
    responses(
        (status = 200, description = "The checks in config order: all, or the page asked for", body = Vec<CheckView>,
            headers(("x-total-count" = u64, description = "How many checks there are in all"))),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 401, description = "Reads need the token here", body = ErrorBody),
    ))]
pub(super) async fn list(
    _: Read,
    State(s): AppState,
    Query(page): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let engine = s.current.get();
    let total = engine.plan().checks.len();
    let range = page.range(total)?;
    Ok(stream_checks(engine, range, total, b"[".to_vec(), b"]"))
}

/// Bytes of JSON per streamed chunk.
const CHUNK: usize = 32 * 1024;

/// A JSON answer of `open`, the checks in `range` separated by commas,
/// and `close`, streamed: each check is copied under its own lock and
/// serialised on its own, a chunk at a time, so reading 50,000 checks
/// never holds all their views (or all their JSON) at once.
fn stream_checks(
    engine: Arc<Engine>,
    range: Range<usize>,
    total: usize,
    open: Vec<u8>,
    close: &'static [u8],
) -> Response {
    let first = range.start;
    let chunks = futures_util::stream::unfold(
        (Some(open), range, false),
        move |(open, mut range, done)| {
            let engine = engine.clone();
            async move {
                if done {
                    return None;
                }
                let mut out = open.unwrap_or_else(|| Vec::with_capacity(CHUNK + 1024));
                while out.len() < CHUNK
                    && let Some(idx) = range.next()
                {
                    if idx != first {
                        out.push(b',');
                    }
                    // A view of plain strings and numbers always serialises.
                    let _ = serde_json::to_writer(&mut out, &CheckView::at(&engine, idx));
                }
                let done = range.is_empty();
                if done {
                    out.extend_from_slice(close);
                }
                let chunk = Ok::<_, std::convert::Infallible>(Bytes::from(out));
                Some((chunk, (None, range, done)))
            }
        },
    );
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                HeaderName::from_static(TOTAL),
                HeaderValue::from(total as u64),
            ),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
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
    let idx = engine
        .check_index(&name)
        .ok_or_else(|| ApiError::not_found(format!("no check named `{name}`")))?;
    let check = CheckView::at(&engine, idx);
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
