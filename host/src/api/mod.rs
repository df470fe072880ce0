//! The admin HTTP API (axum): checks, incidents, manual heals, pause and
//! resume, the Alertmanager receiver, `/metrics`, the OpenAPI document and
//! the dashboard. Reads go to a read-only store connection, so a slow
//! query never holds up the engine's writes; commands go to the engine.
//!
//! Endpoints that change something require `Authorization: Bearer TOKEN`
//! (see `auth`); the rest are open, for the listener is local by default.

mod alertmanager;
mod auth;
mod checks;
mod control;
mod dashboard;
mod fleet;
mod incidents;
mod openapi;
mod plugins;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::engine::ControlError;
use crate::service::Current;
use crate::store::Store;

/// What every handler shares.
pub struct ApiState {
    current: Arc<Current>,
    /// A read-only connection to the incident store.
    reader: Store,
    alerts: Mutex<alertmanager::Dedup>,
}

impl ApiState {
    fn reader(&self) -> &Store {
        &self.reader
    }
}

type AppState = State<Arc<ApiState>>;

/// An error as JSON: `{"error": "..."}` with a status code.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn new(code: StatusCode, msg: impl Into<String>) -> Self {
        ApiError(code, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!("api: {e:#}");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let code = match e {
            ControlError::UnknownCheck(_) => StatusCode::NOT_FOUND,
            ControlError::NotRunning => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        ApiError(code, e.to_string())
    }
}

/// The router, for serving or for tests.
pub fn router(current: Arc<Current>, reader: Store, max_body: usize) -> Router {
    let state = Arc::new(ApiState {
        current,
        reader,
        alerts: Mutex::new(alertmanager::Dedup::default()),
    });
    let mutating = Router::new()
        .route("/api/v1/checks/{name}/run", post(checks::run))
        .route("/api/v1/checks/{name}/heal", post(checks::heal))
        .route("/api/v1/pause", post(control::pause))
        .route("/api/v1/resume", post(control::resume))
        .route("/api/v1/alertmanager", post(alertmanager::receive))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/", get(dashboard::page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/status", get(checks::status))
        .route("/api/v1/checks", get(checks::list))
        .route("/api/v1/checks/{name}", get(checks::one))
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::one))
        .route("/api/v1/stats", get(incidents::stats))
        .route("/api/v1/plugins", get(plugins::list))
        .route("/api/v1/fleet", get(fleet::status))
        .merge(mutating)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Binds `addr` and serves the API in a task; returns the address bound
/// (port 0 picks a free one) and the task.
pub async fn serve(
    addr: SocketAddr,
    current: Arc<Current>,
    reader: Store,
    max_body: usize,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "API listening");
    let app = router(current, reader, max_body);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("API server stopped: {e}");
        }
    });
    Ok((local, task))
}

/// The engine's heartbeat is older than this: unhealthy.
const STALE_HEARTBEAT_MS: u64 = 10_000;

/// 200 while the engine's heartbeat is fresh, else 503.
async fn healthz(State(s): AppState) -> Response {
    let engine = s.current.get();
    let now = engine.clock().now();
    let last = engine.last_heartbeat();
    let age = now.saturating_sub(last);
    let ok = last != 0 && age < STALE_HEARTBEAT_MS;
    let body = json!({
        "status": if ok { "ok" } else { "stalled" },
        "heartbeat_age_ms": if last == 0 { None } else { Some(age) },
        "paused": engine.paused(),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(s): AppState) -> Response {
    let engine = s.current.get();
    let metrics = engine.metrics();
    match s.reader().open_incident_count() {
        Ok(n) => metrics.set_open_incidents(n),
        Err(e) => tracing::error!("metrics: counting open incidents: {e:#}"),
    }
    metrics.set_paused(engine.paused().is_some());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}
