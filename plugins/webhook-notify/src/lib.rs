//! `webhook-notify`: tells a human when mend could not heal something.
//!
//! Meant for `[policy.escalate]`: once the ladder is exhausted (or the
//! check flaps), mend calls it once with the findings that opened the
//! incident. It POSTs a JSON summary to one webhook. The body carries a
//! Slack-compatible `text` field, so a Slack (or Mattermost, Rocket.Chat,
//! Teams workflow) incoming webhook shows a readable message, plus the
//! structured findings for anything that parses JSON.
//!
//! A notification that never arrives is worse than none, so delivery is
//! retried inside the call: on connection errors and on 5xx/429 answers,
//! `retries` times, sleeping `backoff`, then twice that, and so on. Other
//! 4xx answers (a revoked token, a malformed URL) are not retried: they
//! will not get better. The call's deadline bounds everything; raise the
//! step's `limits.deadline` if you raise `retries`, `backoff` or `timeout`.
//!
//! Webhook URLs often carry their secret in the path, so outcomes and
//! errors show only `scheme://host/…`, and header values are never shown.
//!
//! In dry-run it sends nothing and returns the payload it would send.

use std::collections::BTreeMap;
use std::time::Duration;

use mend_sdk::host::clock;
use mend_sdk::{Action, Context, Error, Finding, Needs, Outcome, Plugin, Result, Status};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The webhook; it must lie inside a granted `urls` prefix.
    pub url: String,
    /// Extra request headers, e.g. `{ Authorization = "Bearer ${HOOK_TOKEN}" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Attempts after the first, on connection errors and 5xx/429.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Sleep before the first retry; doubled before each next one.
    #[serde(default = "default_backoff")]
    pub backoff: mend_sdk::Duration,
    /// Bounds connecting, the first byte and each gap between bytes, per
    /// attempt.
    #[serde(default = "default_timeout")]
    pub timeout: mend_sdk::Duration,
    /// Who is talking, first in the message: e.g. `"mend on web-1"`.
    #[serde(default = "default_title")]
    pub title: String,
}

// Defaults fit the default 5 s call deadline: 3 attempts of at most 1 s
// plus 1.5 s of sleep.
fn default_retries() -> u32 {
    2
}
fn default_backoff() -> mend_sdk::Duration {
    mend_sdk::Duration(Duration::from_millis(500))
}
fn default_timeout() -> mend_sdk::Duration {
    mend_sdk::Duration(Duration::from_secs(1))
}
fn default_title() -> String {
    "mend".into()
}

/// At most this many retries, whatever the config says.
const MAX_RETRIES: u32 = 10;
/// Findings listed in `text`; the JSON `findings` has them all.
const TEXT_FINDINGS: usize = 10;
/// Bytes of payload shown in a dry-run step (outcome texts are capped).
const SHOWN_PAYLOAD: usize = 3000;

/// What is POSTed.
#[derive(Debug, Serialize)]
pub struct Payload {
    /// Slack-compatible message text (mrkdwn).
    pub text: String,
    pub source: &'static str,
    pub check: String,
    /// The worst status among the findings.
    pub status: &'static str,
    pub findings: Vec<FindingJson>,
    /// When mend sent it, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// The incident (`mend incident ID`); absent outside the engine.
    pub incident: Option<u64>,
    pub policy: Option<String>,
    /// The check's `severity`: `critical`, `warning` or `info`.
    pub severity: Option<&'static str>,
    /// The check's `labels`.
    pub labels: BTreeMap<String, String>,
    /// How the incident got here, oldest first: the diagnosis, each
    /// attempt, each decision.
    pub trail: Vec<String>,
    /// The incident in mend's dashboard.
    pub link: Option<String>,
}

/// What the call is about: the check, its labels, and (from the engine)
/// the incident.
pub struct About<'a> {
    pub check: &'a str,
    pub labels: &'a [(String, String)],
    pub remedy: Option<&'a mend_sdk::Remedy>,
}

fn severity_name(s: mend_sdk::Severity) -> &'static str {
    match s {
        mend_sdk::Severity::Critical => "critical",
        mend_sdk::Severity::Warning => "warning",
        mend_sdk::Severity::Info => "info",
    }
}

#[derive(Debug, Serialize)]
pub struct FindingJson {
    pub check: String,
    pub code: String,
    pub status: &'static str,
    pub summary: String,
    pub labels: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, f64>,
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Warn => "warn",
        Status::Fail => "fail",
        Status::Unknown => "unknown",
    }
}

fn severity(s: Status) -> u8 {
    match s {
        Status::Ok => 0,
        Status::Unknown => 1,
        Status::Warn => 2,
        Status::Fail => 3,
    }
}

/// The payload for an incident: a pure function of its inputs.
pub fn payload(title: &str, about: &About<'_>, findings: &[Finding], now_ms: u64) -> Payload {
    let check = about.check;
    // Outside the engine (`mend plugin call`) there is no incident, and
    // the context's severity is only a default.
    let remedy = about.remedy.filter(|r| r.incident != 0);
    let worst = findings
        .iter()
        .map(|f| f.status)
        .max_by_key(|s| severity(*s))
        .unwrap_or(Status::Unknown);
    let sev = remedy
        .map(|r| format!("[{}] ", severity_name(r.severity).to_uppercase()))
        .unwrap_or_default();
    let mut text = format!(
        "*{title}*: {sev}check `{check}` needs a human ({}): mend could not heal it",
        status_name(worst)
    );
    if let Some(r) = remedy {
        text.push_str(&format!(
            " (incident {}, policy `{}`)",
            r.incident, r.policy
        ));
    }
    if findings.is_empty() {
        text.push_str("\n• no findings were passed on");
    }
    for f in findings.iter().take(TEXT_FINDINGS) {
        text.push_str(&format!(
            "\n• [{}] `{}`: {}",
            status_name(f.status),
            f.code,
            f.summary
        ));
    }
    if findings.len() > TEXT_FINDINGS {
        text.push_str(&format!(
            "\n• ... and {} more",
            findings.len() - TEXT_FINDINGS
        ));
    }
    if let Some((r, link)) = remedy.and_then(|r| r.link.as_ref().map(|l| (r, l))) {
        text.push_str(&format!("\n<{link}|incident {} in mend>", r.incident));
    }
    Payload {
        text,
        source: "mend",
        check: check.to_string(),
        status: status_name(worst),
        findings: findings
            .iter()
            .map(|f| FindingJson {
                check: if f.check.is_empty() {
                    check.to_string()
                } else {
                    f.check.clone()
                },
                code: f.code.clone(),
                status: status_name(f.status),
                summary: f.summary.clone(),
                labels: f.labels.iter().cloned().collect(),
                metrics: f.metrics.iter().cloned().collect(),
            })
            .collect(),
        sent_at_ms: now_ms,
        incident: remedy.map(|r| r.incident),
        policy: remedy.map(|r| r.policy.clone()).filter(|p| !p.is_empty()),
        severity: remedy.map(|r| severity_name(r.severity)),
        labels: about.labels.iter().cloned().collect(),
        trail: remedy.map(|r| r.trail.clone()).unwrap_or_default(),
        link: remedy.and_then(|r| r.link.clone()),
    }
}

/// `https://hooks.slack.com/services/T0/B0/secret` → `https://hooks.slack.com/…`
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}/…")
        }
        None => "(invalid URL)".into(),
    }
}

/// What to do after one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry,
    GiveUp,
}

/// Connection errors, 5xx and 429 may pass; other answers will not.
pub fn verdict(status: Option<u16>) -> Verdict {
    match status {
        Some(200..=299) => Verdict::Delivered,
        None | Some(429) | Some(500..=599) => Verdict::Retry,
        Some(_) => Verdict::GiveUp,
    }
}

impl Config {
    fn validate(&self) -> Result<()> {
        let lower = self.url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(Error::bad_config(format!(
                "`url`: {} is not an http:// or https:// URL",
                redact(&self.url)
            )));
        }
        if self.retries > MAX_RETRIES {
            return Err(Error::bad_config(format!(
                "`retries` is at most {MAX_RETRIES}"
            )));
        }
        if self.timeout.0.is_zero() {
            return Err(Error::bad_config("`timeout` must be more than 0"));
        }
        Ok(())
    }
}

pub struct WebhookNotify;

impl Plugin for WebhookNotify {
    fn needs() -> Needs {
        Needs::new().url("*")
    }
}

impl Action for WebhookNotify {
    type Config = Config;

    /// The URL it posts to must be granted.
    fn config_needs(c: &Config) -> Result<Needs> {
        c.validate()?;
        Ok(Needs::new().url(&c.url))
    }

    fn remedy(cx: &Context, c: Config, findings: &[Finding], dry_run: bool) -> Result<Outcome> {
        c.validate()?;
        let about = About {
            check: cx.check(),
            labels: cx.labels(),
            remedy: cx.remedy(),
        };
        let body = payload(&c.title, &about, findings, clock::now_ms());
        let json = serde_json::to_string(&body)
            .map_err(|e| Error::failed(format!("encoding the payload: {e}")))?;
        let shown = redact(&c.url);
        let mut out = Outcome::new();
        if dry_run {
            let names: Vec<&str> = c.headers.keys().map(String::as_str).collect();
            out.step(format!(
                "would POST {} bytes of JSON to {shown}{}, with up to {} retries",
                json.len(),
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" with headers {}", names.join(", "))
                },
                c.retries
            ));
            out.step(format!("payload: {}", cut(&json, SHOWN_PAYLOAD)));
            return Ok(out.message(format!("would notify {shown}: {}", first_line(&body.text))));
        }

        let mut last = String::new();
        let attempts = c.retries + 1;
        for attempt in 1..=attempts {
            if attempt > 1 {
                let wait = c.backoff.0.saturating_mul(1 << (attempt - 2).min(16));
                out.step(format!("waiting {} ms before retrying", wait.as_millis()));
                std::thread::sleep(wait);
            }
            let mut request = mend_sdk::http::post(&c.url).timeout(c.timeout.0);
            for (k, v) in &c.headers {
                request = request.header(k, v);
            }
            if !c
                .headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("content-type"))
            {
                request = request.header("content-type", "application/json");
            }
            let request = request.body(json.clone().into_bytes());
            let (status, detail) = match request.send() {
                Ok(r) => (Some(r.status), format!("HTTP {}", r.status)),
                // Not granted: retrying will not help.
                Err(Error::Denied(m)) => {
                    return Err(Error::Denied(m.replace(&c.url, &shown)));
                }
                Err(e) => {
                    // The SDK's errors start with the URL; say it once.
                    let m = e.to_string().replace(&c.url, &shown);
                    let m = m.strip_prefix(&format!("{shown}: ")).unwrap_or(&m);
                    (None, plain(m))
                }
            };
            out.step(format!("attempt {attempt}: POST {shown}: {detail}"));
            match verdict(status) {
                Verdict::Delivered => {
                    return Ok(out.message(format!(
                        "notified {shown} ({detail}, attempt {attempt} of {attempts})"
                    )));
                }
                Verdict::GiveUp => {
                    return Err(Error::failed(format!(
                        "POST {shown}: {detail}, not retried (only connection errors, 5xx and 429 are)"
                    )));
                }
                Verdict::Retry => last = detail,
            }
        }
        Err(Error::failed(format!(
            "POST {shown}: gave up after {attempts} attempt(s); last: {last}"
        )))
    }
}

/// `ErrorCode::ConnectionRefused` (wasi:http's name) → `connection refused`.
fn plain(error: &str) -> String {
    let Some(i) = error.find("ErrorCode::") else {
        return error.to_string();
    };
    let (head, code) = error.split_at(i);
    let mut words = String::new();
    for (n, c) in code["ErrorCode::".len()..].chars().enumerate() {
        if c.is_ascii_uppercase() && n > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    format!("{head}{words}")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &s[..end], s.len())
}

mend_sdk::export!(WebhookNotify: Action);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_only_what_may_pass() {
        assert_eq!(verdict(Some(204)), Verdict::Delivered);
        assert_eq!(verdict(None), Verdict::Retry);
        assert_eq!(verdict(Some(503)), Verdict::Retry);
        assert_eq!(verdict(Some(429)), Verdict::Retry);
        assert_eq!(verdict(Some(404)), Verdict::GiveUp);
        assert_eq!(verdict(Some(301)), Verdict::GiveUp);
    }

    #[test]
    fn hides_the_secret_in_the_url() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redact("http://u:p@h:8080?x=1"), "http://h:8080/…");
    }

    #[test]
    fn the_payload_has_slack_text_and_every_finding() {
        let f = Finding::fail("http.status", "GET /health answered 503")
            .metric("status", 503.0)
            .label("url", "http://x/health");
        let labels = vec![("team".to_string(), "web".to_string())];
        let remedy = mend_sdk::Remedy {
            incident: 4,
            policy: "web-down".into(),
            step: "page".into(),
            step_ref: mend_sdk::StepRef::Escalation,
            attempt: 1,
            severity: mend_sdk::Severity::Critical,
            dry_run: false,
            trail: vec!["opened: 3 failures in a row".into()],
            link: Some("http://mend:9770/#incident/4".into()),
        };
        let about = About {
            check: "web",
            labels: &labels,
            remedy: Some(&remedy),
        };
        let p = payload("mend on web-1", &about, &[f, Finding::warn("x", "y")], 7);
        assert_eq!(p.status, "fail");
        assert!(
            p.text
                .starts_with("*mend on web-1*: [CRITICAL] check `web`"),
            "{}",
            p.text
        );
        assert!(p.text.contains("(incident 4, policy `web-down`)"));
        assert!(
            p.text
                .ends_with("<http://mend:9770/#incident/4|incident 4 in mend>")
        );
        assert_eq!(p.incident, Some(4));
        assert_eq!(p.severity, Some("critical"));
        assert_eq!(p.labels["team"], "web");
        assert_eq!(p.trail.len(), 1);
        assert!(
            p.text
                .contains("[fail] `http.status`: GET /health answered 503")
        );
        assert_eq!(p.findings.len(), 2);
        assert_eq!(p.findings[0].metrics["status"], 503.0);
        assert_eq!(p.findings[0].labels["url"], "http://x/health");
        assert_eq!(p.findings[0].check, "web");
    }

    #[test]
    fn cuts_on_a_character_boundary() {
        assert_eq!(cut("ééé", 3), "é... (6 bytes in all)");
    }
}
