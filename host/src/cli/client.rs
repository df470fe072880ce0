//! The HTTP side of the admin subcommands: a small blocking client
//! (ureq) for mend's API, with errors that say what to check.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(90)))
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            agent,
        }
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self.agent.get(&url).call();
        self.finish(&url, resp, &[200])
    }

    /// POSTs `body` (JSON) and accepts the given statuses besides 2xx
    /// errors, returning (status, body).
    pub fn post(&self, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.post(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.send_empty(),
        };
        let mut resp = resp.with_context(|| self.unreachable(&url))?;
        let code = resp.status().as_u16();
        let v = read(&mut resp, &url)?;
        match code {
            200..=299 | 409 => Ok((code, v)),
            401 => bail!("{url}: 401: wrong or missing token (set --token or $MEND_API_TOKEN)"),
            _ => bail!("{url}: {code}: {}", message(&v)),
        }
    }

    fn finish(
        &self,
        url: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        ok: &[u16],
    ) -> anyhow::Result<Value> {
        let mut resp = resp.with_context(|| self.unreachable(url))?;
        let code = resp.status().as_u16();
        let v = read(&mut resp, url)?;
        if !ok.contains(&code) {
            bail!("{url}: {code}: {}", message(&v));
        }
        Ok(v)
    }

    fn unreachable(&self, url: &str) -> String {
        format!(
            "cannot reach mend at {url} (is `mend run` running, with [api] listen at {}? set --api or $MEND_API)",
            self.base
        )
    }
}

fn read(resp: &mut ureq::http::Response<ureq::Body>, url: &str) -> anyhow::Result<Value> {
    let text = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the answer of {url}"))?;
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("{url} did not answer JSON: {text}"))
}

fn message(v: &Value) -> String {
    v.get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}
