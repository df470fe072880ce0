//! Bearer tokens. Endpoints that change something take a [`Write`]
//! extractor: the token comes from `[api] token` or `$MEND_API_TOKEN`, and
//! without one those endpoints refuse (403), so a fresh install is never
//! open to whoever can reach the port. Reads take a [`Read`] extractor:
//! open on a loopback listener (or with `[api] public_reads = true`),
//! behind the same token otherwise. Being extractors, they run after
//! routing, so a wrong method is 405 before any token is asked for.
//!
//! The scheme is matched case-insensitively (RFC 9110: `bearer` is
//! `Bearer`); tokens are compared in constant time (on their SHA-256, so
//! even the length does not leak).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiState;
use super::error::{ApiError, ErrorBody};

/// Whether `given` is the expected token, in constant time.
pub(super) fn token_matches(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// The token of an `Authorization: Bearer TOKEN` header, any case of the
/// scheme.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Why a request is refused.
pub enum Refused {
    /// No token is configured: the endpoint is disabled (403).
    NoToken,
    /// The token is missing or wrong (401).
    WrongToken,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::NoToken => ApiError::new(
                StatusCode::FORBIDDEN,
                "no API token is configured ([api] token or $MEND_API_TOKEN): this endpoint is disabled",
            )
            .into_response(),
            Refused::WrongToken => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(ErrorBody {
                    error: "missing or wrong bearer token (Authorization: Bearer TOKEN)".into(),
                }),
            )
                .into_response(),
        }
    }
}

fn check(s: &ApiState, headers: &HeaderMap) -> Result<(), Refused> {
    let Some(expected) = s.current.get().config().api.token() else {
        return Err(Refused::NoToken);
    };
    match bearer(headers) {
        Some(t) if token_matches(t, &expected) => Ok(()),
        _ => Err(Refused::WrongToken),
    }
}

/// The request carries the API token.
pub struct Write;

impl FromRequestParts<Arc<ApiState>> for Write {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<ApiState>) -> Result<Self, Refused> {
        check(s, &parts.headers).map(|()| Write)
    }
}

/// Reads are open here, or the request carries the API token.
pub struct Read;

impl FromRequestParts<Arc<ApiState>> for Read {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<ApiState>) -> Result<Self, Refused> {
        if !s.reads_need_token() {
            return Ok(Read);
        }
        check(s, &parts.headers).map(|()| Read)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3cret!", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let mut h = HeaderMap::new();
        for (value, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearerabc", None),
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&h), want, "{value:?}");
        }
    }
}
