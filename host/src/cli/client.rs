//! The HTTP side of the admin subcommands: a small blocking client
//! (ureq) for mend's API, with errors that say what to check and carry
//! the exit code for what happened (see `exit`).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::exit::{Exit, Failure};

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// An answer the caller looks at: its status and JSON body.
pub struct Answer {
    pub code: u16,
    pub body: Value,
}

fn certificates(path: &Path) -> anyhow::Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading --ca-cert {}", path.display()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()
        .with_context(|| format!("--ca-cert {}: not PEM", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("--ca-cert {}: no certificate in it", path.display());
    }
    Ok(certs)
}

impl Client {
    /// `ca_cert`: trust this PEM certificate (e.g. mend's self-signed
    /// one) for an `https://` API instead of the usual roots.
    pub fn new(
        base: &str,
        token: Option<String>,
        ca_cert: Option<&Path>,
    ) -> anyhow::Result<Client> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = ca_cert {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certificates(path)?));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(90)))
            .tls_config(tls.build())
            .build()
            .into();
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            agent,
        })
    }

    /// GETs `path`; any answer but 200 is an error.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let a = self.finish(&url, req.call())?;
        match a.code {
            200 => Ok(a.body),
            code => Err(self.failure(&url, code, &a.body).into()),
        }
    }

    /// POSTs `body` (JSON); 2xx and the statuses in `also` are answers,
    /// anything else an error.
    pub fn post(&self, path: &str, body: Option<&Value>, also: &[u16]) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.post(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.send_empty(),
        };
        let a = self.finish(&url, resp)?;
        if (200..300).contains(&a.code) || also.contains(&a.code) {
            Ok(a)
        } else {
            Err(self.failure(&url, a.code, &a.body).into())
        }
    }

    fn finish(
        &self,
        url: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Answer> {
        let mut resp = resp.map_err(|e| self.unreachable(url, &e))?;
        let code = resp.status().as_u16();
        let body = read(&mut resp, url)?;
        Ok(Answer { code, body })
    }

    fn failure(&self, url: &str, code: u16, body: &Value) -> Failure {
        let msg = message(body);
        match code {
            401 => Failure::new(
                Exit::Unauthorized,
                format!("{url}: 401: wrong or missing token (set --token or $MEND_API_TOKEN)"),
            ),
            403 => Failure::new(Exit::Unauthorized, format!("{url}: 403: {msg}")),
            404 => Failure::new(Exit::NotFound, format!("{url}: 404: {msg}")),
            409 => Failure::new(Exit::Refused, format!("{url}: 409: {msg}")),
            422 => Failure::new(Exit::Config, format!("{url}: 422: {msg}")),
            _ => Failure::new(Exit::Error, format!("{url}: {code}: {msg}")),
        }
    }

    fn unreachable(&self, url: &str, e: &ureq::Error) -> Failure {
        Failure::new(
            Exit::Unreachable,
            format!(
                "cannot reach mend at {url}: {e} (is `mend run` running, with [api] listen at {}? set --api or $MEND_API)",
                self.base
            ),
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
