//! `[api]`: the admin HTTP API, and `[[api.alert]]`, which maps
//! Alertmanager alerts to checks. Kept in its own file so the API's
//! settings evolve apart from the engine's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::Config;
use super::error::Reporter;
use crate::values::Bytes;

/// The environment variable read for the API token when `[api] token` is
/// not set.
pub const TOKEN_ENV: &str = "MEND_API_TOKEN";

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where the API listens; `"off"` disables it.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer token for the endpoints that change something. Default:
    /// `$MEND_API_TOKEN`. Without one, those endpoints refuse.
    #[serde(default)]
    pub token: Option<String>,
    /// Largest request body accepted.
    #[serde(default = "default_max_body")]
    pub max_body: Bytes,
    /// `Host` names served (against DNS rebinding). Default: localhost,
    /// 127.0.0.1, ::1 and the listen address when it is a specific IP.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// PEM certificate chain: serve HTTPS (with `tls_key`).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address anyway.
    #[serde(default)]
    pub insecure: bool,
    /// On a non-loopback address, serve reads without the token.
    #[serde(default)]
    pub public_reads: bool,
    /// Alertmanager alerts that ask for a heal.
    #[serde(default, rename = "alert")]
    pub alerts: Vec<AlertRule>,
    /// The dashboard's address as people reach it (e.g. behind a proxy),
    /// for the incident links in escalations. Default: from `listen`.
    #[serde(default)]
    pub url: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            token: None,
            max_body: default_max_body(),
            hosts: None,
            tls_cert: None,
            tls_key: None,
            insecure: false,
            public_reads: false,
            alerts: Vec::new(),
            url: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9770".into()
}
fn default_max_body() -> Bytes {
    Bytes(1 << 20)
}

/// `[[api.alert]]`: an alert whose `alertname` (and labels, if given)
/// match asks for a heal of `check`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub alertname: String,
    /// Labels the alert must carry, with these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub check: Spanned<String>,
    /// Plan only.
    #[serde(default)]
    pub dry_run: bool,
}

impl AlertRule {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.get("alertname") == Some(&self.alertname)
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl ApiConfig {
    /// The listen address, or `None` when the API is off.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        match self.listen.as_str() {
            "off" | "" => None,
            s => s.parse().ok(),
        }
    }

    /// Whether the API is reachable from other machines (it listens on
    /// an address that is not loopback).
    pub fn is_exposed(&self) -> bool {
        self.listen_addr().is_some_and(|a| !a.ip().is_loopback())
    }

    /// Where people reach the API and dashboard: `url`, else the listen
    /// address (an unspecified one as loopback); `None` when it is off.
    pub fn base_url(&self) -> Option<String> {
        if let Some(u) = &self.url {
            return Some(u.trim_end_matches('/').to_string());
        }
        let mut addr = self.listen_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let scheme = if self.tls() { "https" } else { "http" };
        Some(format!("{scheme}://{addr}"))
    }

    /// Whether HTTPS is configured.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// The token: `token` from the config, else `$MEND_API_TOKEN`.
    pub fn token(&self) -> Option<String> {
        self.token
            .clone()
            .or_else(|| std::env::var(TOKEN_ENV).ok())
            .filter(|t| !t.is_empty())
    }
}

pub(super) fn validate(c: &Config, r: &mut Reporter<'_>) {
    let api = &c.api;
    if !matches!(api.listen.as_str(), "off" | "") && api.listen.parse::<SocketAddr>().is_err() {
        r.at(
            None,
            "api.listen",
            format!(
                "`{}` is not an address: write e.g. \"127.0.0.1:9770\", or \"off\"",
                api.listen
            ),
        );
    }
    match (&api.tls_cert, &api.tls_key) {
        (Some(_), None) => r.at(None, "api.tls_key", "tls_cert is set: set tls_key too"),
        (None, Some(_)) => r.at(None, "api.tls_cert", "tls_key is set: set tls_cert too"),
        _ => {}
    }
    if api.is_exposed() && !api.tls() && !api.insecure {
        r.at(
            None,
            "api.listen",
            format!(
                "`{}` is reachable from other machines: set tls_cert and tls_key to serve HTTPS, \
                 or insecure = true to serve plain HTTP anyway",
                api.listen
            ),
        );
    }
    if let Some(hosts) = &api.hosts {
        for (i, h) in hosts.iter().enumerate() {
            if h.trim().is_empty() || h.contains(['/', ' ']) {
                r.at(
                    None,
                    format!("api.hosts[{i}]"),
                    format!(
                        "`{h}` is not a host name (write e.g. \"mend.example.com\" or \"10.0.0.5\")"
                    ),
                );
            }
        }
    }
    if api.max_body.0 == 0 {
        r.at(None, "api.max_body", "must be more than 0");
    }
    for (i, rule) in api.alerts.iter().enumerate() {
        if c.check(rule.check.get_ref()).is_none() {
            r.at(
                Some(rule.check.span()),
                format!("api.alert[{i}].check"),
                format!("no check named `{}`", rule.check.get_ref()),
            );
        }
        if rule.alertname.is_empty() {
            r.at(None, format!("api.alert[{i}].alertname"), "is empty");
        }
    }
}
