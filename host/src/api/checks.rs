//! Checks: their state and history, running one now, healing one by hand.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::engine::{CheckSnapshot, Engine};

/// How long `run` and `heal` wait for the check's task (it may be busy
/// with a remediation) before answering 504; the command stays queued.
const WAIT: Duration = Duration::from_secs(60);

/// A check as the API shows it: config, live state, and why its plugin is
/// unusable if it is.
fn view(engine: &Engine, snap: CheckSnapshot) -> Value {
    let config = engine.config();
    let c = config.check(&snap.name);
    let plugin = c.map(|c| c.plugin.get_ref().clone()).unwrap_or_default();
    let policies: Vec<&str> = config
        .policies
        .iter()
        .filter(|p| p.check.get_ref() == &snap.name)
        .map(|p| p.name())
        .collect();
    let plugin_error = engine.plugin_set().error(&plugin);
    let mut v = serde_json::to_value(&snap).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("status".into(), json!(snap.last.as_ref().map(|l| l.status)));
        m.insert("plugin".into(), json!(plugin));
        m.insert(
            "interval_ms".into(),
            json!(c.map(|c| c.interval(&config.engine).as_millis() as u64)),
        );
        m.insert("policies".into(), json!(policies));
        m.insert("plugin_error".into(), json!(plugin_error));
    }
    v
}

fn views(engine: &Engine) -> Vec<Value> {
    engine
        .snapshot()
        .into_iter()
        .map(|s| view(engine, s))
        .collect()
}

/// `GET /api/v1/status`: everything `mend status` shows.
pub(super) async fn status(State(s): AppState) -> Result<Json<Value>, ApiError> {
    let engine = s.current.get();
    let open = s.reader().open_incident_count()?;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now": engine.clock().now(),
        "paused": engine.paused(),
        "open_incidents": open,
        "checks": views(&engine),
    })))
}

/// `GET /api/v1/checks`.
pub(super) async fn list(State(s): AppState) -> Json<Vec<Value>> {
    Json(views(&s.current.get()))
}

/// `GET /api/v1/checks/{name}`: state, last findings, history (newest
/// first) and recent incidents.
pub(super) async fn one(
    State(s): AppState,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let engine = s.current.get();
    let snap = engine
        .snapshot()
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no check named `{name}`")))?;
    let mut v = view(&engine, snap);
    let history = s.reader().history(&name, 50)?;
    let incidents: Vec<_> = s
        .reader()
        .incidents(false, 200)?
        .into_iter()
        .filter(|i| i.check == name)
        .take(20)
        .collect();
    if let Value::Object(m) = &mut v {
        m.insert("history".into(), json!(history));
        m.insert("incidents".into(), json!(incidents));
    }
    Ok(Json(v))
}

/// `POST /api/v1/checks/{name}/run`: detect now; answers the result.
pub(super) async fn run(
    State(s): AppState,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let rx = s.current.get().request_run(&name)?;
    match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(result)) => Ok(Json(result).into_response()),
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

#[derive(Deserialize)]
pub(super) struct HealQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/checks/{name}/heal[?dry_run=true]`: a manual heal
/// through the policy ladder. 202 when a ladder started, 409 when none
/// did (each policy says why).
pub(super) async fn heal(
    State(s): AppState,
    Path(name): Path<String>,
    Query(q): Query<HealQuery>,
) -> Result<Response, ApiError> {
    let rx = s.current.get().request_heal(&name, q.dry_run, "api")?;
    match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(outcome)) => {
            let code = if outcome.started() {
                StatusCode::ACCEPTED
            } else {
                StatusCode::CONFLICT
            };
            Ok((code, Json(outcome)).into_response())
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
