//! The admin HTTP API (axum): checks, incidents, manual heals, pause and
//! resume, config reload, the Alertmanager receiver, `/metrics`, the
//! OpenAPI document and the dashboard. Reads go to a read-only store
//! connection, so a slow query never holds up the engine's writes;
//! commands go to the engine.
//!
//! Layers, outermost first: the `Host` allowlist (against DNS rebinding),
//! JSON errors for everything, the body limit; then routing (404, 405),
//! then each handler's [`auth`] extractor. On a non-loopback listener the
//! API is HTTPS (`[api] tls_cert`, `tls_key`) unless `insecure = true`,
//! and reads need the token unless `public_reads = true`.

pub(crate) mod alertmanager;
mod auth;
mod checks;
mod control;
mod dashboard;
pub mod error;
mod fleet;
pub mod host;
mod incidents;
pub mod openapi;
mod plugins;
mod tls;
pub mod views;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};

pub use self::error::ApiError;
use self::views::HealthzView;
use crate::config::ApiConfig;
use crate::metrics::Format;
use crate::service::Current;
use crate::store::Store;

/// Longest pause reason accepted (characters).
pub const MAX_REASON_CHARS: usize = 1000;

/// A config reload asked for through the API; the answer is what the
/// reload did (`Err`: refused, the running config stays).
pub type ReloadRequest = oneshot::Sender<Result<views::ReloadedView, String>>;

/// What every handler shares.
pub struct ApiState {
    current: Arc<Current>,
    /// A read-only connection to the incident store.
    reader: Store,
    alerts: Mutex<alertmanager::Dedup>,
    /// The address the listener is bound to.
    bound: SocketAddr,
    /// Where `POST /api/v1/reload` sends its request (`mend run`).
    reloads: Option<mpsc::Sender<ReloadRequest>>,
}

impl ApiState {
    fn reader(&self) -> &Store {
        &self.reader
    }

    fn api_config(&self) -> ApiConfig {
        self.current.get().config().api.clone()
    }

    /// Reads need the token on a listener other machines can reach,
    /// unless `public_reads`.
    fn reads_need_token(&self) -> bool {
        !self.bound.ip().is_loopback() && !self.current.get().config().api.public_reads
    }

    fn allowed_hosts(&self) -> Vec<String> {
        self.api_config()
            .hosts
            .unwrap_or_else(|| host::default_hosts(self.bound))
    }
}

type AppState = State<Arc<ApiState>>;

/// How to build the router.
pub struct Options {
    pub max_body: usize,
    /// The address served (for the `Host` defaults and whether reads
    /// need the token).
    pub bound: SocketAddr,
    pub reloads: Option<mpsc::Sender<ReloadRequest>>,
}

/// The router, for serving or for tests.
pub fn router(current: Arc<Current>, reader: Store, opts: Options) -> Router {
    let state = Arc::new(ApiState {
        current,
        reader,
        alerts: Mutex::new(alertmanager::Dedup::default()),
        bound: opts.bound,
        reloads: opts.reloads,
    });
    Router::new()
        .route("/", get(dashboard::page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/status", get(checks::status))
        .route("/api/v1/checks", get(checks::list))
        .route("/api/v1/checks/{name}", get(checks::one))
        .route("/api/v1/checks/{name}/run", post(checks::run))
        .route("/api/v1/checks/{name}/heal", post(checks::heal))
        .route("/api/v1/checks/{name}/pause", post(control::pause_check))
        .route("/api/v1/checks/{name}/resume", post(control::resume_check))
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::one))
        .route("/api/v1/incidents/{id}/ack", post(incidents::ack))
        .route("/api/v1/incidents/{id}/resolve", post(incidents::resolve))
        .route("/api/v1/stats", get(incidents::stats))
        .route("/api/v1/plugins", get(plugins::list))
        .route("/api/v1/fleet", get(fleet::status))
        .route("/api/v1/pause", post(control::pause))
        .route("/api/v1/resume", post(control::resume))
        .route("/api/v1/reload", post(control::reload))
        .route("/api/v1/alertmanager", post(alertmanager::receive))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(opts.max_body))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            host::require_allowed_host,
        ))
        .with_state(state)
}

/// Binds `[api] listen` and serves the API in a task (HTTPS when
/// `tls_cert` and `tls_key` are set); returns the address bound (port 0
/// picks a free one) and the task.
pub async fn serve(
    api: &ApiConfig,
    addr: SocketAddr,
    current: Arc<Current>,
    reader: Store,
    reloads: Option<mpsc::Sender<ReloadRequest>>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let app = router(
        current,
        reader,
        Options {
            max_body: api.max_body.as_usize(),
            bound: local,
            reloads,
        },
    );
    let task = if api.tls() {
        let (cert, key) = (api.tls_cert.as_ref(), api.tls_key.as_ref());
        let config = tls::server_config(cert.unwrap(), key.unwrap())?;
        tracing::info!(addr = %local, "API listening (HTTPS)");
        let server = axum_server::from_tcp_rustls(listener, config).context("serving HTTPS")?;
        tokio::spawn(async move {
            if let Err(e) = server.serve(app.into_make_service()).await {
                tracing::error!("API server stopped: {e}");
            }
        })
    } else {
        if !local.ip().is_loopback() {
            tracing::warn!(addr = %local, "API serving plain HTTP on a non-loopback address ([api] insecure = true)");
        }
        tracing::info!(addr = %local, "API listening");
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("API server stopped: {e}");
            }
        })
    };
    Ok((local, task))
}

/// The engine's heartbeat is older than this: unhealthy.
const STALE_HEARTBEAT_MS: u64 = 10_000;

/// 200 while the engine's heartbeat is fresh and the store writes, else
/// 503. Open to all (a load balancer's probe has no token); it says
/// nothing but that (and the store's error, which names its file).
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses(
        (status = 200, description = "The engine's heartbeat is fresh and the store writes", body = HealthzView),
        (status = 503, description = "The engine is stalled, or the store cannot write", body = HealthzView),
    ))]
async fn healthz(State(s): AppState) -> Response {
    let engine = s.current.get();
    let now = engine.clock().now();
    let last = engine.last_heartbeat();
    let age = now.saturating_sub(last);
    let beating = last != 0 && age < STALE_HEARTBEAT_MS;
    let store_error = engine.store().fault();
    let (status, error) = match (beating, &store_error) {
        (false, _) if last == 0 => ("stalled", Some("the engine has not beaten yet".to_string())),
        (false, _) => (
            "stalled",
            Some(format!(
                "the engine's last heartbeat was {age} ms ago (more than {STALE_HEARTBEAT_MS})"
            )),
        ),
        (true, Some(e)) => ("store-error", Some(format!("the store cannot write: {e}"))),
        (true, None) => ("ok", None),
    };
    let code = if error.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = HealthzView {
        status: status.into(),
        heartbeat_age_ms: (last != 0).then_some(age),
        paused: engine.paused().is_some(),
        store_error,
        error,
    };
    (code, axum::Json(body)).into_response()
}

/// Prometheus metrics: the classic text format, or OpenMetrics when the
/// `Accept` header prefers it.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses(
        (status = 200, description = "Metrics", content(
            (String = "text/plain"),
            (String = "application/openmetrics-text"),
        )),
        (status = 401, description = "Reads need the token here", body = error::ErrorBody),
    ))]
async fn metrics(_: auth::Read, State(s): AppState, headers: HeaderMap) -> Response {
    let engine = s.current.get();
    let metrics = engine.metrics();
    match s.reader().open_incident_count() {
        Ok(n) => metrics.set_open_incidents(n),
        Err(e) => tracing::error!("metrics: counting open incidents: {e:#}"),
    }
    match s.reader().incident_counts() {
        Ok(counts) => metrics.set_incidents(&counts),
        Err(e) => tracing::error!("metrics: counting incidents by state: {e:#}"),
    }
    metrics.set_paused(engine.paused().is_some());
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        metrics.encode_as(format),
    )
        .into_response()
}
