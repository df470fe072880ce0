//! Bearer tokens for the endpoints that change something. The token comes
//! from `[api] token` or `$MEND_API_TOKEN`; without one those endpoints
//! refuse (403), so a fresh install is never open to whoever can reach the
//! port. Tokens are compared in constant time (on their SHA-256, so even
//! the length does not leak).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, ApiState};

/// Whether `given` is the expected token, in constant time.
pub(super) fn token_matches(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

pub(super) async fn require_token(
    State(s): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(expected) = s.current.get().config().api.token() else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "no API token is configured ([api] token or $MEND_API_TOKEN): this endpoint is disabled",
        )
        .into_response();
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if token_matches(t.trim(), &expected) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({"error": "missing or wrong bearer token"})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole() {
        assert!(super::token_matches("s3cret", "s3cret"));
        assert!(!super::token_matches("s3cre", "s3cret"));
        assert!(!super::token_matches("s3cret!", "s3cret"));
        assert!(!super::token_matches("", "s3cret"));
    }
}
