//! URL grants: outbound HTTP through `wasi:http/outgoing-handler`.
//!
//! For a call granted no URL, every way into `wasi:http` traps (no HTTP
//! object can even be made, so the host holds none: [`without_http`]); for
//! one granted URLs, this module decides whether a request is sent. A request goes out only if its URL
//! falls under a granted prefix (`scheme://host[:port][/path]`): same
//! scheme, host and port, and a path under the granted one, segment by
//! segment. Paths with `..`/`.` segments (plain or percent-encoded) are
//! refused outright, so a prefix cannot be climbed out of. Redirects are
//! not followed. Everything else fails with `HTTP-request-denied`.

use http::Uri;
use http::uri::Scheme;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// One granted URL prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlGrant {
    pub spec: String,
    scheme: Scheme,
    host: String,
    port: u16,
    /// Ends with `/` unless it is exactly `/`-less root handled as `/`.
    path: String,
}

fn default_port(scheme: &Scheme) -> u16 {
    if *scheme == Scheme::HTTPS { 443 } else { 80 }
}

pub(super) fn resolve(specs: &[String]) -> anyhow::Result<Vec<UrlGrant>> {
    specs
        .iter()
        .map(|spec| {
            let bad = |why: &str| anyhow::anyhow!("URL grant `{spec}`: {why}");
            let uri: Uri = spec
                .parse()
                .map_err(|e| bad(&format!("{e} (expected scheme://host[:port][/path])")))?;
            let scheme = uri
                .scheme()
                .cloned()
                .ok_or_else(|| bad("needs a scheme, http:// or https://"))?;
            if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
                return Err(bad("only http and https are supported"));
            }
            let authority = uri.authority().ok_or_else(|| bad("needs a host"))?;
            if authority.as_str().contains('@') {
                return Err(bad("must not contain credentials"));
            }
            if uri.query().is_some() {
                return Err(bad("must not contain a query"));
            }
            if has_dot_segments(uri.path()) {
                return Err(bad("must not contain `.` or `..` segments"));
            }
            Ok(UrlGrant {
                spec: spec.clone(),
                host: authority.host().to_ascii_lowercase(),
                port: authority.port_u16().unwrap_or(default_port(&scheme)),
                path: uri.path().trim_end_matches('/').to_string(),
                scheme,
            })
        })
        .collect()
}

/// Paths some servers would read as climbing out of a prefix: `.`/`..`
/// segments (plain or percent-encoded), encoded slashes, backslashes
/// (IIS and others treat them as separators) and `;` path parameters
/// (`/api/..;/admin` is `..` to Tomcat and Spring).
fn has_dot_segments(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains(';')
        || lower.contains('\\')
        || ["%2f", "%5c", "%3b"].iter().any(|e| lower.contains(e))
        || lower.split('/').any(|seg| {
            let seg = seg.replace("%2e", ".");
            seg == "." || seg == ".."
        })
}

impl UrlGrant {
    /// Whether `uri` (absolute) falls under this grant.
    pub fn permits(&self, uri: &Uri) -> bool {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return false;
        };
        if *scheme != self.scheme
            || !authority.host().eq_ignore_ascii_case(&self.host)
            || authority.port_u16().unwrap_or(default_port(scheme)) != self.port
            || authority.as_str().contains('@')
        {
            return false;
        }
        let path = uri.path();
        if has_dot_segments(path) {
            return false;
        }
        // "/api" covers "/api", "/api/" and "/api/x", not "/apix".
        self.path.is_empty()
            || path == self.path
            || path
                .strip_prefix(&self.path)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The first URL need not covered by a grant.
pub(super) fn missing(needs: &[String], granted: &[UrlGrant]) -> Option<String> {
    for need in needs {
        let ok = if need == "*" {
            !granted.is_empty()
        } else {
            need.parse::<Uri>()
                .is_ok_and(|u| granted.iter().any(|g| g.permits(&u)))
        };
        if !ok {
            return Some(format!("URL `{need}`"));
        }
    }
    None
}

/// Bytes an outgoing HTTP body buffers in the host before the server
/// takes them (the guest's writes wait beyond that).
pub const BODY_BUFFER: usize = 64 << 10;

/// `wasi:http` hooks for one call: the allowlist, and in a dry run only
/// requests that change nothing (GET, HEAD).
pub struct HttpHooks {
    pub(crate) plugin: std::sync::Arc<str>,
    pub(crate) grants: Vec<UrlGrant>,
    pub(crate) dry_run: bool,
    /// Records each request and its response, or answers from a replay.
    pub(crate) tape: crate::tape::Tape,
}

impl WasiHttpHooks for HttpHooks {
    // An outgoing body buffers one chunk in flight and one queued.
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_BUFFER / 2
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        let uri = request.uri().clone();
        if !self.grants.iter().any(|g| g.permits(&uri)) {
            tracing::warn!(plugin = %self.plugin, %uri, "HTTP request denied: not in the plugin's `urls` grant");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        if self.dry_run && !matches!(*request.method(), http::Method::GET | http::Method::HEAD) {
            tracing::info!(plugin = %self.plugin, method = %request.method(), %uri, "HTTP request denied: dry run (only GET and HEAD)");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        tracing::debug!(plugin = %self.plugin, method = %request.method(), %uri, "HTTP request");
        drop(fut);
        if self.tape.is_on() {
            return Box::new(taped::send(self.tape.clone(), request, options));
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}

/// Outgoing HTTP on a tape: the request (method, URL, body) is the call's
/// arguments, the response (status, headers, body) or its error the
/// result. Bodies are buffered whole, up to [`taped::MAX_BODY`].
mod taped {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, Limited, StreamBody};
    use serde::{Deserialize, Serialize};
    use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

    use crate::tape::{Blob, Tape};

    /// Bytes of a request or response body a tape keeps.
    pub const MAX_BODY: usize = 1 << 20;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    enum Reply {
        Response {
            status: u16,
            headers: Vec<(String, String)>,
            body: Blob,
            /// The error that cut the body short, if one did.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            body_error: Option<String>,
        },
        Error(String),
    }

    type Sent = (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    );

    pub(super) async fn send(
        tape: Tape,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<Sent, HttpError> {
        let (parts, body) = request.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|_| HttpError::HttpRequestBodySize(None))?
            .to_bytes();
        let args = tape.args(&serde_json::json!({
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "body": Blob::of(&body),
        }));
        let live = async move {
            let body = Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync();
            let request = http::Request::from_parts(parts, body);
            match wasmtime_wasi_http::default_send_request(request, options).await {
                Err(e) => Reply::Error(error_name(&e)),
                Ok((response, io)) => {
                    let io = tokio::spawn(io);
                    let (head, body) = response.into_parts();
                    let mut data = Vec::new();
                    let mut body_error = None;
                    let mut body = std::pin::pin!(body);
                    while let Some(frame) = body.frame().await {
                        match frame {
                            Ok(f) => {
                                if let Ok(d) = f.into_data() {
                                    data.extend_from_slice(&d);
                                    if data.len() > MAX_BODY {
                                        body_error = Some(format!(
                                            "HttpResponseBodySize: a tape keeps {MAX_BODY} bytes"
                                        ));
                                        break;
                                    }
                                }
                            }
                            Err(e) => {
                                body_error = Some(error_name(&e));
                                break;
                            }
                        }
                    }
                    io.abort();
                    Reply::Response {
                        status: head.status.as_u16(),
                        headers: head
                            .headers
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                            })
                            .collect(),
                        body: Blob::of(&data),
                        body_error,
                    }
                }
            }
        };
        let reply = tape
            .run("http.send", args, live)
            .await
            .map_err(|e| HttpError::InternalError(Some(e.to_string())))?;
        match reply {
            Reply::Error(name) => Err(error_from_name(&name)),
            Reply::Response {
                status,
                headers,
                body,
                body_error,
            } => {
                let mut b = http::Response::builder().status(status);
                for (k, v) in headers {
                    b = b.header(k, v);
                }
                let mut frames = vec![Ok(http_body::Frame::data(Bytes::from(body.bytes())))];
                if let Some(e) = body_error {
                    frames.push(Err(error_from_name(&e)));
                }
                let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
                let response = b.body(body).map_err(|e| {
                    HttpError::InternalError(Some(format!("replayed response: {e}")))
                })?;
                let io: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                    Box::new(async { Ok(()) });
                Ok((response, io))
            }
        }
    }

    /// The error's variant, with its detail for those that carry one.
    fn error_name(e: &HttpError) -> String {
        format!("{e:?}")
    }

    /// The error a recorded name stands for: the variants without data as
    /// they were; any other as an internal error carrying the recorded text.
    fn error_from_name(name: &str) -> HttpError {
        use HttpError as E;
        match name {
            "DnsTimeout" => E::DnsTimeout,
            "DestinationNotFound" => E::DestinationNotFound,
            "DestinationUnavailable" => E::DestinationUnavailable,
            "DestinationIpProhibited" => E::DestinationIpProhibited,
            "DestinationIpUnroutable" => E::DestinationIpUnroutable,
            "ConnectionRefused" => E::ConnectionRefused,
            "ConnectionTerminated" => E::ConnectionTerminated,
            "ConnectionTimeout" => E::ConnectionTimeout,
            "ConnectionReadTimeout" => E::ConnectionReadTimeout,
            "ConnectionWriteTimeout" => E::ConnectionWriteTimeout,
            "ConnectionLimitReached" => E::ConnectionLimitReached,
            "TlsProtocolError" => E::TlsProtocolError,
            "TlsCertificateError" => E::TlsCertificateError,
            "HttpRequestDenied" => E::HttpRequestDenied,
            "HttpResponseIncomplete" => E::HttpResponseIncomplete,
            "HttpResponseTimeout" => E::HttpResponseTimeout,
            "HttpProtocolError" => E::HttpProtocolError,
            "LoopDetected" => E::LoopDetected,
            other => E::InternalError(Some(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(s: &str) -> UrlGrant {
        resolve(&[s.to_string()]).unwrap().remove(0)
    }
    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn a_grant_covers_its_origin_and_path_prefix_only() {
        let g = grant("https://hooks.example.com/services/");
        assert!(g.permits(&uri("https://hooks.example.com/services/T0/B1")));
        assert!(g.permits(&uri("https://HOOKS.example.com:443/services")));
        assert!(!g.permits(&uri("https://hooks.example.com/servicesx")));
        assert!(!g.permits(&uri("https://hooks.example.com/admin")));
        assert!(!g.permits(&uri("http://hooks.example.com/services/x")));
        assert!(!g.permits(&uri("https://hooks.example.com:8443/services/x")));
        assert!(!g.permits(&uri("https://evil.com/services/x")));
        assert!(!g.permits(&uri("https://hooks.example.com.evil.com/services/x")));
    }

    #[test]
    fn dot_segments_cannot_climb_out_of_a_prefix() {
        let g = grant("http://127.0.0.1:8080/api");
        assert!(g.permits(&uri("http://127.0.0.1:8080/api/health")));
        assert!(!g.permits(&uri("http://127.0.0.1:8080/api/../admin")));
        assert!(!g.permits(&uri("http://127.0.0.1:8080/api/%2e%2E/admin")));
        assert!(!g.permits(&uri("http://127.0.0.1:8080/api%2f..%2fadmin")));
        assert!(!g.permits(&uri("http://127.0.0.1:8080/api/..;/admin")));
        assert!(!g.permits(&uri("http://127.0.0.1:8080/api/..%5cadmin")));
        assert!(!g.permits(&uri("http://127.0.0.1:8080/api/x;jsessionid=1")));
    }

    #[test]
    fn a_bare_origin_covers_every_path() {
        let g = grant("http://127.0.0.1:9000");
        assert!(g.permits(&uri("http://127.0.0.1:9000/")));
        assert!(g.permits(&uri("http://127.0.0.1:9000/anything?q=1")));
        assert!(!g.permits(&uri("http://127.0.0.1:9001/")));
    }

    #[test]
    fn bad_grants_are_refused() {
        for s in [
            "ftp://x/",
            "//x/",
            "http://user:pw@x/",
            "http://x/?q",
            "http://x/a/../b",
            "no-scheme",
        ] {
            assert!(resolve(&[s.to_string()]).is_err(), "{s}");
        }
    }

    #[test]
    fn needs_are_matched_against_grants() {
        let g = vec![grant("http://127.0.0.1:8080/")];
        assert_eq!(missing(&["*".into()], &g), None);
        assert_eq!(missing(&["http://127.0.0.1:8080/x".into()], &g), None);
        assert!(missing(&["http://127.0.0.1:9/".into()], &g).is_some());
        assert!(missing(&["*".into()], &[]).is_some());
    }
}

/// The `wasi:http` version wasmtime-wasi-http 48 links (a test fails if a
/// newer one moves it).
const WASI_HTTP: &str = "0.2.12";

/// Why a call without a URL grant trapped in `wasi:http`.
#[derive(Debug, thiserror::Error)]
#[error("wasi:http is not granted to this plugin (no `urls` grant for this check or step)")]
pub struct NotGranted;

/// `linker` (which links `wasi:http`) with every function that creates an
/// HTTP object or sends a request replaced by a trap.
pub(crate) fn without_http<T: 'static>(
    linker: &wasmtime::component::Linker<T>,
) -> anyhow::Result<wasmtime::component::Linker<T>> {
    let mut bare = linker.clone();
    bare.allow_shadowing(true);
    let mut stub = |instance: &str, func: &str| -> anyhow::Result<()> {
        bare.instance(&format!("wasi:http/{instance}@{WASI_HTTP}"))
            .and_then(|mut i| i.func_new(func, |_, _, _, _| Err(wasmtime::Error::new(NotGranted))))
            .map_err(anyhow::Error::from)
    };
    for f in [
        "[constructor]fields",
        "[static]fields.from-list",
        "[constructor]request-options",
        "[constructor]outgoing-request",
        "[constructor]outgoing-response",
    ] {
        stub("types", f)?;
    }
    stub("outgoing-handler", "handle")?;
    bare.allow_shadowing(false);
    Ok(bare)
}
