//! Errors as JSON, everywhere: `{"error": "..."}` with a status code.
//! Handlers return [`ApiError`]; whatever else answers an error with
//! plain text (axum's own rejections, 404 and 405 fallbacks, the body
//! limit's 413) is rewritten to the same shape by [`json_errors`].

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::ControlError;

/// Error bodies longer than this are cut (they are axum's short texts).
const MAX_ERROR_TEXT: usize = 4096;

/// Every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, and what to do about it where that is known.
    pub error: String,
}

/// An error as JSON with a status code.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub fn new(code: StatusCode, msg: impl Into<String>) -> Self {
        ApiError(code, msg.into())
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        use crate::store::LifecycleError;
        match e.downcast_ref::<LifecycleError>() {
            Some(le @ LifecycleError::NotFound(_)) => return ApiError::not_found(le.to_string()),
            Some(le @ LifecycleError::Conflict { .. }) => {
                return ApiError(StatusCode::CONFLICT, le.to_string());
            }
            None => {}
        }
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
            ControlError::Store(_) => {
                tracing::error!("api: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(code, e.to_string())
    }
}

/// The router's fallback: JSON 404.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no endpoint {} (see /api/v1/openapi.json)",
        req.uri().path()
    ))
}

/// The fallback for a known path with a method it does not serve: JSON
/// 405 (axum adds the `Allow` header), before any token is asked for.
pub async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not served on {}", req.method(), req.uri().path()),
    )
}

/// Rewrites error answers that are not JSON into `{"error": TEXT}`.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let head = req.method() == axum::http::Method::HEAD;
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json || head {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_TEXT).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).trim().to_string(),
        _ => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    };
    let body = serde_json::to_vec(&ErrorBody { error: text }).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
