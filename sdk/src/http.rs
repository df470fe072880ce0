//! Outbound HTTP through `wasi:http/outgoing-handler`.
//!
//! The host sends a request only if its URL starts with one the operator
//! granted (`urls = ["https://hooks.example.com/services/"]`); anything
//! else fails with [`Error::Denied`]. Declare what you call with
//! [`crate::Needs::url`].
//!
//! ```ignore
//! let r = mend_sdk::http::get("http://127.0.0.1:8080/health")
//!     .timeout(Duration::from_secs(2))
//!     .send()?;
//! if r.status != 200 { /* ... */ }
//! ```

use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

use crate::Error;

/// Bytes of a response body kept by default; the rest is dropped and
/// [`Response::truncated`] is set.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// A request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
    max_body: usize,
}

/// What the server answered.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body was longer than the limit and was cut.
    pub truncated: bool,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A GET request.
pub fn get(url: impl Into<String>) -> Request {
    Request::new("GET", url)
}

/// A POST request.
pub fn post(url: impl Into<String>) -> Request {
    Request::new("POST", url)
}

impl Request {
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Request {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
            max_body: DEFAULT_MAX_BODY,
        }
    }
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    /// A JSON body, with its content type.
    pub fn json<T: serde::Serialize>(self, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value).map_err(|e| Error::Failed(e.to_string()))?;
        Ok(self.header("content-type", "application/json").body(body))
    }
    /// Limits connecting, the wait for the first byte, and each gap
    /// between bytes. The plugin's own deadline bounds the whole call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// Bytes of the response body to keep.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    pub fn send(self) -> Result<Response, Error> {
        let target = Target::parse(&self.url)?;
        let mut fields: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        // The whole body is known: say how long it is, so it is not sent
        // chunked (a server that answers before reading a chunked body
        // can cut the request off mid-way).
        let has_body = !self.body.is_empty()
            || !matches!(
                self.method.to_ascii_uppercase().as_str(),
                "GET" | "HEAD" | "DELETE" | "OPTIONS"
            );
        if has_body
            && !fields
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            fields.push((
                "content-length".into(),
                self.body.len().to_string().into_bytes(),
            ));
        }
        let headers = Fields::from_list(&fields)
            .map_err(|e| Error::Failed(format!("{}: bad header: {e:?}", self.url)))?;
        let request = OutgoingRequest::new(headers);
        let method = match self.method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        let bad = |what: &str| Error::Failed(format!("{}: invalid {what}", self.url));
        request.set_method(&method).map_err(|_| bad("method"))?;
        request
            .set_scheme(Some(&target.scheme))
            .map_err(|_| bad("scheme"))?;
        request
            .set_authority(Some(&target.authority))
            .map_err(|_| bad("host"))?;
        request
            .set_path_with_query(Some(&target.path))
            .map_err(|_| bad("path"))?;
        let options = self.timeout.map(|t| {
            let ns = t.as_nanos().min(u64::MAX as u128) as u64;
            let o = RequestOptions::new();
            let _ = o.set_connect_timeout(Some(ns));
            let _ = o.set_first_byte_timeout(Some(ns));
            let _ = o.set_between_bytes_timeout(Some(ns));
            o
        });
        let body = request.body().map_err(|_| bad("body"))?;
        let pending =
            outgoing_handler::handle(request, options).map_err(|e| http_error(&self.url, e))?;
        // A denied request closes the body stream: finish writing (or
        // fail), then let the response say why.
        let sent = self.write_body(body);
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(e))) => return Err(http_error(&self.url, e)),
            _ => return Err(Error::Failed(format!("{}: no response", self.url))),
        };
        sent?;
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response.consume().map_err(|_| bad("response body"))?;
        let mut out = Vec::new();
        let mut truncated = false;
        {
            let stream = incoming.stream().map_err(|_| bad("response body"))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => {
                        let room = self.max_body.saturating_sub(out.len());
                        if chunk.len() > room {
                            out.extend_from_slice(&chunk[..room]);
                            truncated = true;
                            break;
                        }
                        out.extend_from_slice(&chunk);
                    }
                    Err(StreamError::Closed) => break,
                    Err(e) => {
                        return Err(Error::Failed(format!(
                            "{}: reading response: {e:?}",
                            self.url
                        )));
                    }
                }
            }
        }
        drop(IncomingBody::finish(incoming));
        Ok(Response {
            status,
            headers,
            body: out,
            truncated,
        })
    }
}

impl Request {
    fn write_body(&self, body: OutgoingBody) -> Result<(), Error> {
        {
            let stream = body
                .write()
                .map_err(|_| Error::Failed(format!("{}: invalid body", self.url)))?;
            for chunk in self.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| Error::Failed(format!("{}: sending body: {e:?}", self.url)))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(|e| http_error(&self.url, e))
    }
}

fn http_error(url: &str, e: ErrorCode) -> Error {
    match e {
        ErrorCode::HttpRequestDenied => {
            Error::Denied(format!("{url} is not in this plugin's `urls` grant"))
        }
        other => Error::Failed(format!("{url}: {other:?}")),
    }
}

/// A URL split the way `wasi:http` wants it.
struct Target {
    scheme: Scheme,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Error> {
        let bad = |why: &str| Error::Failed(format!("`{url}`: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host/path"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(bad("only http and https are supported")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("expected a host (and no user info)"));
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Target {
            scheme,
            authority: authority.to_string(),
            path,
        })
    }
}
