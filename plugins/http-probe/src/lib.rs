//! `http-probe`: asks an HTTP endpoint whether the service behind it works.
//!
//! A process can be up, its port open, and the service still broken: the
//! `/health` endpoint answers 503 because the database is gone, or 200 with
//! an error page, or answers in eight seconds. This detector does what a
//! person with `curl` would: GET the URL, then judge the status, the body
//! and the latency separately, so a policy can react to each.
//!
//! | code | status | when |
//! |---|---|---|
//! | `http.ok` | ok | expected status, body and latency |
//! | `http.status` | fail | the status is not one of `expect_status` |
//! | `http.body` | fail | the body lacks `expect_body` |
//! | `http.slow` | warn / fail | slower than `warn_latency` / `fail_latency` |
//! | `http.unreachable` | fail | no answer: refused, reset, timed out |
//!
//! A URL outside the `urls` grant is not a finding but an error: the
//! operator has to fix the grant, the service is not at fault.

use std::collections::BTreeMap;
use std::time::Instant;

use mend_sdk::{Context, Detector, Error, Finding, Needs, Plugin, Result};
use serde::Deserialize;

/// One expected status or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Statuses {
    One(u16),
    Many(Vec<u16>),
}

impl Statuses {
    fn list(&self) -> Vec<u16> {
        match self {
            Statuses::One(s) => vec![*s],
            Statuses::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The URL to GET; it must lie inside a granted `urls` prefix.
    pub url: String,
    /// The status (or statuses) that mean healthy. Default 200.
    #[serde(default)]
    pub expect_status: Option<Statuses>,
    /// A substring the body must contain, e.g. `"\"status\":\"ok\""`.
    #[serde(default)]
    pub expect_body: Option<String>,
    /// Slower than this is `warn`...
    #[serde(default)]
    pub warn_latency: Option<mend_sdk::Duration>,
    /// ...and slower than this is `fail`.
    #[serde(default)]
    pub fail_latency: Option<mend_sdk::Duration>,
    /// Bounds connecting, the first byte and each gap between bytes.
    /// Keep it under the check's deadline (5 s by default).
    #[serde(default = "default_timeout")]
    pub timeout: mend_sdk::Duration,
    /// Extra request headers, e.g. `{ Authorization = "Bearer ${TOKEN}" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_timeout() -> mend_sdk::Duration {
    mend_sdk::Duration(std::time::Duration::from_secs(3))
}

impl Config {
    /// Checks what serde cannot; returns the expected statuses.
    pub fn validate(&self) -> Result<Vec<u16>> {
        let lower = self.url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(Error::bad_config(format!(
                "`url`: `{}` is not an http:// or https:// URL",
                self.url
            )));
        }
        let statuses = self
            .expect_status
            .as_ref()
            .map(Statuses::list)
            .unwrap_or_else(|| vec![200]);
        if statuses.is_empty() {
            return Err(Error::bad_config("`expect_status` is empty"));
        }
        if let Some(s) = statuses.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(Error::bad_config(format!(
                "`expect_status`: {s} is not an HTTP status"
            )));
        }
        if let (Some(w), Some(f)) = (self.warn_latency, self.fail_latency)
            && w >= f
        {
            return Err(Error::bad_config(
                "`warn_latency` must be less than `fail_latency`",
            ));
        }
        if self.timeout.0.is_zero() {
            return Err(Error::bad_config("`timeout` must be more than 0"));
        }
        Ok(statuses)
    }
}

/// What one request saw.
#[derive(Debug, Clone)]
pub struct Probe {
    pub status: u16,
    pub latency: std::time::Duration,
    pub body: String,
    /// The body was cut at the SDK's limit.
    pub truncated: bool,
}

pub struct HttpProbe;

impl Plugin for HttpProbe {
    fn needs() -> Needs {
        Needs::new().url("*")
    }
}

impl Detector for HttpProbe {
    type Config = Config;

    /// The URL it probes must be granted.
    fn config_needs(c: &Config) -> Result<Needs> {
        c.validate()?;
        Ok(Needs::new().url(&c.url))
    }

    fn detect(_cx: &Context, c: Config) -> Result<Vec<Finding>> {
        let expected = c.validate()?;
        let mut request = mend_sdk::http::get(&c.url).timeout(c.timeout.0);
        for (k, v) in &c.headers {
            request = request.header(k, v);
        }
        let start = Instant::now();
        let probe = match request.send() {
            Ok(r) => Ok(Probe {
                status: r.status,
                latency: start.elapsed(),
                body: r.text(),
                truncated: r.truncated,
            }),
            // A refusal is the operator's to fix, not the service's fault.
            Err(e) if e.is_denied() => return Err(e),
            Err(e) => Err((plain(&e.to_string()), start.elapsed())),
        };
        Ok(judge(&c, &expected, probe))
    }
}

/// The findings for one probe: a pure function of the config and what the
/// request saw (or the transport error and how long it took to fail).
pub fn judge(
    c: &Config,
    expected: &[u16],
    probe: std::result::Result<Probe, (String, std::time::Duration)>,
) -> Vec<Finding> {
    let url = c.url.as_str();
    let p = match probe {
        Ok(p) => p,
        Err((error, took)) => {
            // The SDK's errors start with the URL; say it once.
            let error = error
                .strip_prefix(&format!("{url}: "))
                .unwrap_or(&error)
                .to_string();
            return vec![
                Finding::fail("http.unreachable", format!("GET {url}: {error}"))
                    .metric("latency_ms", ms(took))
                    .label("url", url)
                    .label("error", error),
            ];
        }
    };
    let with = |f: Finding| {
        f.metric("status", p.status as f64)
            .metric("latency_ms", ms(p.latency))
            .label("url", url)
    };
    let mut findings = Vec::new();
    let status_ok = expected.contains(&p.status);
    if !status_ok {
        findings.push(with(Finding::fail(
            "http.status",
            format!(
                "GET {url} answered {}{} (expected {})",
                p.status,
                excerpt(&p.body),
                list(expected)
            ),
        )));
    }
    // A body is only worth judging when the status is the expected one.
    if status_ok
        && let Some(want) = &c.expect_body
        && !p.body.contains(want.as_str())
    {
        let cut = if p.truncated {
            " (body cut at 1 MiB)"
        } else {
            ""
        };
        findings.push(with(Finding::fail(
            "http.body",
            format!("GET {url}: the body does not contain {want:?}{cut}"),
        )));
    }
    let slow_fail = c.fail_latency.is_some_and(|f| p.latency > f.0);
    let slow_warn = c.warn_latency.is_some_and(|w| p.latency > w.0);
    if slow_fail || slow_warn {
        let limit = if slow_fail {
            c.fail_latency
        } else {
            c.warn_latency
        }
        .map(|d| d.0)
        .unwrap_or_default();
        let summary = format!(
            "GET {url} took {:.0} ms (limit {:.0} ms)",
            ms(p.latency),
            ms(limit)
        );
        let f = if slow_fail {
            Finding::fail("http.slow", summary)
        } else {
            Finding::warn("http.slow", summary)
        };
        findings.push(with(f));
    }
    if findings.is_empty() {
        findings.push(with(Finding::ok(
            "http.ok",
            format!("GET {url} answered {} in {:.0} ms", p.status, ms(p.latency)),
        )));
    }
    findings
}

/// `ErrorCode::ConnectionRefused` (wasi:http's name) → `connection refused`.
pub fn plain(error: &str) -> String {
    let Some(i) = error.find("ErrorCode::") else {
        return error.to_string();
    };
    let (head, code) = error.split_at(i);
    let code = &code["ErrorCode::".len()..];
    let mut words = String::new();
    for (n, c) in code.chars().enumerate() {
        if c.is_ascii_uppercase() && n > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    format!("{head}{words}")
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn list(statuses: &[u16]) -> String {
    let s: Vec<String> = statuses.iter().map(u16::to_string).collect();
    s.join(" or ")
}

/// The start of a body, for a summary line: `: "database unavailable"`.
fn excerpt(body: &str) -> String {
    let line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return String::new();
    }
    let cut: String = line.chars().take(120).collect();
    let more = if cut.len() < line.len() { "..." } else { "" };
    format!(": {cut:?}{more}")
}

mend_sdk::export!(HttpProbe: Detector);

#[cfg(test)]
mod tests {
    use super::*;
    use mend_sdk::Status;
    use std::time::Duration;

    fn config(extra: &str) -> Config {
        let json = format!(r#"{{"url": "http://127.0.0.1:1/health"{extra}}}"#);
        serde_json::from_str(&json).unwrap()
    }

    fn probe(status: u16, ms: u64, body: &str) -> Probe {
        Probe {
            status,
            latency: Duration::from_millis(ms),
            body: body.into(),
            truncated: false,
        }
    }

    fn codes(f: &[Finding]) -> Vec<(&str, Status)> {
        f.iter().map(|f| (f.code.as_str(), f.status)).collect()
    }

    #[test]
    fn judges_status_body_and_latency_separately() {
        let c = config(
            r#", "expect_status": [200, 204], "expect_body": "ok", "warn_latency": "100ms", "fail_latency": "1s""#,
        );
        let exp = c.validate().unwrap();
        let j = |p| judge(&c, &exp, Ok(p));
        assert_eq!(codes(&j(probe(204, 5, "ok"))), [("http.ok", Status::Ok)]);
        assert_eq!(
            codes(&j(probe(503, 5, "down"))),
            [("http.status", Status::Fail)]
        );
        assert_eq!(
            codes(&j(probe(200, 5, "error"))),
            [("http.body", Status::Fail)]
        );
        assert_eq!(
            codes(&j(probe(200, 300, "ok"))),
            [("http.slow", Status::Warn)]
        );
        assert_eq!(
            codes(&j(probe(500, 2000, ""))),
            [("http.status", Status::Fail), ("http.slow", Status::Fail)]
        );
        let down = judge(&c, &exp, Err(("refused".into(), Duration::ZERO)));
        assert_eq!(codes(&down), [("http.unreachable", Status::Fail)]);
    }

    #[test]
    fn transport_errors_read_as_words() {
        assert_eq!(
            plain("http://x/: ErrorCode::ConnectionRefused"),
            "http://x/: connection refused"
        );
        assert_eq!(plain("no response"), "no response");
    }

    #[test]
    fn rejects_what_cannot_work() {
        assert!(config(r#", "expect_status": 42"#).validate().is_err());
        assert!(config(r#", "expect_status": []"#).validate().is_err());
        assert!(
            config(r#", "warn_latency": "2s", "fail_latency": "1s""#)
                .validate()
                .is_err()
        );
        let ftp: Config = serde_json::from_str(r#"{"url": "ftp://x/"}"#).unwrap();
        assert!(ftp.validate().is_err());
        assert_eq!(config("").validate().unwrap(), [200]);
    }
}
