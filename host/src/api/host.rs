//! The `Host` allowlist, against DNS rebinding: a web page on any site
//! could otherwise point its own name at 127.0.0.1 and read the API from
//! the visitor's browser. Only names in `[api] hosts` are served
//! (default: the loopback names, and the listen address itself when it
//! is a specific IP).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;

/// The host part of a `Host` header value (no port, no brackets),
/// lowercased.
pub fn host_name(value: &str) -> String {
    let v = value.trim();
    let name = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if v.matches(':').count() > 1 {
        v // a bare IPv6 address
    } else {
        v.rsplit_once(':').map_or(v, |(h, _)| h)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The names served by default for a listener on `bound`.
pub fn default_hosts(bound: SocketAddr) -> Vec<String> {
    let mut v: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ip = bound.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        v.push(ip.to_string());
    }
    v
}

/// Whether `name` (from [`host_name`]) is in `allowed`. `*` allows all.
pub fn allowed(name: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| {
        let a = host_name(a);
        a == "*"
            || a == name
            || a.parse::<IpAddr>()
                .ok()
                .zip(name.parse::<IpAddr>().ok())
                .is_some_and(|(x, y)| x == y)
    })
}

pub(super) async fn require_allowed_host(
    State(s): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    let hosts = s.allowed_hosts();
    let given = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().host().map(str::to_string));
    match given {
        Some(h) if allowed(&host_name(&h), &hosts) => next.run(req).await,
        Some(h) => ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host `{}` is not served here; add it to [api] hosts (now: {})",
                host_name(&h),
                hosts.join(", ")
            ),
        )
        .into_response(),
        None => ApiError::bad_request("no Host header").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port_and_brackets() {
        assert_eq!(host_name("127.0.0.1:9770"), "127.0.0.1");
        assert_eq!(host_name("LocalHost:80"), "localhost");
        assert_eq!(host_name("[::1]:9770"), "::1");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("mend.example.com."), "mend.example.com");
    }

    #[test]
    fn only_listed_names_are_served() {
        let loopback = default_hosts("127.0.0.1:9770".parse().unwrap());
        assert!(allowed("localhost", &loopback));
        assert!(allowed("127.0.0.1", &loopback));
        assert!(allowed("::1", &loopback));
        assert!(!allowed("evil.example", &loopback), "a rebinding name");
        assert!(!allowed("localhost.evil.example", &loopback));
        let lan = default_hosts("10.1.2.3:9770".parse().unwrap());
        assert!(allowed("10.1.2.3", &lan));
        let any = default_hosts("0.0.0.0:9770".parse().unwrap());
        assert!(!allowed("0.0.0.0", &any));
        assert!(allowed("anything", &["*".to_string()]));
        assert!(allowed(
            "mend.example.com",
            &["Mend.Example.com".to_string()]
        ));
    }
}
