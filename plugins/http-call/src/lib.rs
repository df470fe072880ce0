//! `http-call`: the generic HTTP action. Sends one request to a granted
//! URL (a deploy hook, a load balancer's drain endpoint, a runbook
//! service) with a body filled in from the incident, and succeeds by the
//! answer's status. Not retried: the policy's ladder and backoff decide
//! what happens next. In a dry run it shows the request and sends
//! nothing.
//!
//! Placeholders in `body` and header values (double braces, so a JSON
//! body keeps its own): `{{check}}`, `{{incident}}`, `{{policy}}`,
//! `{{step}}`, `{{attempt}}`, `{{severity}}`, `{{findings}}` (how many),
//! and of the first finding `{{code}}`, `{{status}}`, `{{summary}}`,
//! `{{label.KEY}}`, `{{metric.NAME}}`. With `body_format = "json"` every
//! value is escaped as JSON string content.

use std::collections::BTreeMap;

use mend_sdk::{Action, Context, Error, Finding, Needs, Outcome, Plugin, Result, Status};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Must lie inside a granted `urls` prefix.
    pub url: String,
    #[serde(default = "post")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body template (none: an empty body).
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub body_format: BodyFormat,
    /// Statuses that count as success (default: any 2xx).
    #[serde(default)]
    pub success_status: Vec<u16>,
    #[serde(default = "default_timeout")]
    pub timeout: mend_sdk::Duration,
}

fn post() -> String {
    "POST".into()
}
fn default_timeout() -> mend_sdk::Duration {
    mend_sdk::Duration(std::time::Duration::from_secs(5))
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];
/// Bytes of a rendered body shown in a dry run.
const SHOWN_BODY: usize = 2000;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

fn known(var: &str) -> bool {
    matches!(
        var,
        "check"
            | "incident"
            | "policy"
            | "step"
            | "attempt"
            | "severity"
            | "findings"
            | "code"
            | "status"
            | "summary"
    ) || var.strip_prefix("label.").is_some_and(|k| !k.is_empty())
        || var.strip_prefix("metric.").is_some_and(|k| !k.is_empty())
}

fn parse(template: &str, what: &str) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push(Piece::Text(rest[..open].to_string()));
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(Error::bad_config(format!(
                "{what}: `{{{{` without its `}}}}`"
            )));
        };
        let var = after[..close].trim();
        if !known(var) {
            return Err(Error::bad_config(format!(
                "{what}: unknown placeholder `{{{{{var}}}}}` (known: check, incident, policy, step, attempt, severity, findings, code, status, summary, label.KEY, metric.NAME)"
            )));
        }
        out.push(Piece::Var(var.to_string()));
        rest = &after[close + 2..];
    }
    out.push(Piece::Text(rest.to_string()));
    Ok(out)
}

/// The values placeholders take, for one call.
pub struct Values<'a> {
    pub cx: &'a Context,
    pub findings: &'a [Finding],
}

impl Values<'_> {
    fn get(&self, var: &str) -> String {
        let r = self.cx.remedy();
        let first = self.findings.first();
        match var {
            "check" => self.cx.check().to_string(),
            "incident" => r.map(|r| r.incident.to_string()).unwrap_or_default(),
            "policy" => r.map(|r| r.policy.clone()).unwrap_or_default(),
            "step" => r.map(|r| r.step.clone()).unwrap_or_default(),
            "attempt" => r.map(|r| r.attempt.to_string()).unwrap_or_default(),
            "severity" => r
                .map(|r| format!("{:?}", r.severity).to_lowercase())
                .unwrap_or_default(),
            "findings" => self.findings.len().to_string(),
            "code" => first.map(|f| f.code.clone()).unwrap_or_default(),
            "status" => first
                .map(|f| match f.status {
                    Status::Ok => "ok",
                    Status::Warn => "warn",
                    Status::Fail => "fail",
                    Status::Unknown => "unknown",
                })
                .unwrap_or_default()
                .to_string(),
            "summary" => first.map(|f| f.summary.clone()).unwrap_or_default(),
            v => {
                if let Some(k) = v.strip_prefix("label.") {
                    first
                        .and_then(|f| f.labels.iter().find(|(n, _)| n == k))
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                } else if let Some(k) = v.strip_prefix("metric.") {
                    first
                        .and_then(|f| f.metrics.iter().find(|(n, _)| n == k))
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            }
        }
    }
}

fn render(pieces: &[Piece], values: &Values, format: BodyFormat) -> String {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(v) => {
                let value = values.get(v);
                match format {
                    BodyFormat::Text => out.push_str(&value),
                    BodyFormat::Json => {
                        let quoted = serde_json::to_string(&value).unwrap_or_default();
                        out.push_str(&quoted[1..quoted.len() - 1]);
                    }
                }
            }
        }
    }
    out
}

/// A parsed template.
type Template = Vec<Piece>;

/// Checks the config; returns the parsed templates (body, headers).
fn check(c: &Config) -> Result<(Template, Vec<(String, Template)>)> {
    if !METHODS.contains(&c.method.as_str()) {
        return Err(Error::bad_config(format!(
            "`method` must be one of {}",
            METHODS.join(", ")
        )));
    }
    if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
        return Err(Error::bad_config(
            "`url` must start with http:// or https://",
        ));
    }
    if c.url.contains("{{") {
        return Err(Error::bad_config(
            "`url` takes no placeholders: it must match a grant before the first call",
        ));
    }
    if let Some(s) = c.success_status.iter().find(|s| !(100..=599).contains(*s)) {
        return Err(Error::bad_config(format!(
            "`success_status` {s} is not an HTTP status"
        )));
    }
    let body = parse(c.body.as_deref().unwrap_or(""), "`body`")?;
    if c.body_format == BodyFormat::Json && c.body.is_some() {
        // The template must be JSON once filled in; a sample fill tells.
        let sample: String = body
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.as_str(),
                Piece::Var(_) => "0",
            })
            .collect();
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&sample) {
            return Err(Error::bad_config(format!(
                "`body` is not JSON with `body_format = \"json\"`: {e}"
            )));
        }
    }
    let headers = c
        .headers
        .iter()
        .map(|(k, v)| Ok((k.clone(), parse(v, &format!("header `{k}`"))?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((body, headers))
}

/// The URL without its query (which often carries a token).
pub fn shown_url(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

pub struct HttpCall;

impl Plugin for HttpCall {}

impl Action for HttpCall {
    type Config = Config;

    fn config_needs(c: &Config) -> Result<Needs> {
        check(c)?;
        Ok(Needs::new().url(&c.url))
    }

    fn remedy(cx: &Context, c: Config, findings: &[Finding], dry_run: bool) -> Result<Outcome> {
        let (body, headers) = check(&c)?;
        let values = Values { cx, findings };
        let body = render(&body, &values, c.body_format);
        let at = format!("{} {}", c.method, shown_url(&c.url));
        let mut out = Outcome::new();
        if dry_run {
            let shown: String = body.chars().take(SHOWN_BODY).collect();
            out.step(format!("would send {at}"));
            if !body.is_empty() {
                out.step(format!("body: {shown}"));
            }
            return Ok(out.message(format!("dry run: {at} not sent")));
        }
        let mut req = mend_sdk::http::Request::new(&c.method, &c.url)
            .timeout(c.timeout.0)
            .max_body(64 * 1024);
        if c.body_format == BodyFormat::Json {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in &headers {
            // Header values may hold tokens: sent, never shown.
            req = req.header(k, render(v, &values, BodyFormat::Text));
        }
        if !body.is_empty() {
            req = req.body(body.into_bytes());
        }
        // A refusal stays one: the grant, not the server, said no.
        let r = req.send().map_err(|e| match e {
            Error::Denied(m) => Error::Denied(format!("{at}: {m}")),
            other => Error::failed(format!("{at}: {other}")),
        })?;
        let ok = if c.success_status.is_empty() {
            (200..300).contains(&r.status)
        } else {
            c.success_status.contains(&r.status)
        };
        let answer: String = r.text().trim().chars().take(200).collect();
        if !ok {
            return Err(Error::failed(format!(
                "{at} answered {}: {answer:?}",
                r.status
            )));
        }
        out.step(format!("sent {at}: {}", r.status));
        Ok(out.changed().message(format!("{at} answered {}", r.status)))
    }
}

mend_sdk::export!(HttpCall: Action);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_refuse_unknown_placeholders() {
        assert_eq!(
            parse("{\"a\": {{check}}}", "t").unwrap(),
            vec![
                Piece::Text("{\"a\": ".into()),
                Piece::Var("check".into()),
                Piece::Text("}".into())
            ]
        );
        assert!(parse("{{nope}}", "t").is_err());
        assert!(parse("x {{check", "t").is_err());
        assert!(parse("{{label.}}", "t").is_err());
        assert!(parse("{{ label.path }}", "t").is_ok());
    }

    #[test]
    fn the_query_is_not_shown() {
        assert_eq!(shown_url("https://h/p?token=s"), "https://h/p");
    }
}
