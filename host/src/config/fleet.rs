//! `[fleet]`: many mend agents sharing remediation budgets and alert
//! intake through a distributed store, and `[fleet.budget.NAME]`, the
//! budgets that ladder steps name with `budget = "NAME"`. Absent, mend is
//! a single host exactly as before.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Config;
use super::error::Reporter;
use crate::fleet::limit::{MaxConcurrent, Rate};
use crate::values::Dur;

/// `[fleet]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The distributed store: `"nats"` (JetStream).
    #[serde(default)]
    pub store: StoreKind,
    /// Server URLs, e.g. `["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]`.
    #[serde(default = "default_servers")]
    pub servers: Vec<Spanned<String>>,
    /// A NATS credentials (`.creds`) file.
    #[serde(default)]
    pub credentials: Option<Spanned<PathBuf>>,
    /// This agent's name in the fleet. Default: the hostname.
    #[serde(default)]
    pub agent_id: Option<Spanned<String>>,
    /// Bounds every store round trip.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// Names the buckets and the event stream (one fleet per prefix).
    #[serde(default = "default_prefix")]
    pub prefix: Spanned<String>,
    /// How often a member says it is alive; it counts as live for three.
    #[serde(default = "default_heartbeat")]
    pub heartbeat: Dur,
    /// How long an alert occurrence is remembered fleet-wide.
    #[serde(default = "default_alert_window")]
    pub alert_window: Dur,
    /// How long the event stream keeps incident events.
    #[serde(default = "default_events_max_age")]
    pub events_max_age: Dur,
    /// Replicas of the buckets and the stream mend makes (3 on a 3-node
    /// cluster).
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    #[serde(default, rename = "budget")]
    pub budgets: BTreeMap<String, BudgetConfig>,
    /// `[fleet.recorder]`: for `mend recorder` (and the fleet-wide
    /// incidents in `mend fleet status`).
    #[serde(default)]
    pub recorder: Option<RecorderConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Nats,
}

/// `[fleet.budget.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Holders at once: `2`, or `"10%"` of the live members (floor, at
    /// least 1).
    pub max_concurrent: Spanned<MaxConcurrent>,
    /// At most this many starts per window, fleet-wide: `"6/h"`.
    #[serde(default)]
    pub rate: Option<Rate>,
    /// How long a slot lives without renewal. At least the step's deadline
    /// plus its settle time plus the verification (the check's deadline).
    pub lease_ttl: Spanned<Dur>,
    /// How often a holder renews. Default: a third of `lease_ttl`.
    #[serde(default)]
    pub renew_every: Option<Dur>,
    /// How long a step waits for a slot before it gives up for now (the
    /// incident stays open and asks again on the next detection).
    #[serde(default = "default_wait")]
    pub wait: Dur,
    /// The store cannot be reached: `"deny"` (fail closed) or `"local"`
    /// (at most `local_max` holders on this host, logged).
    #[serde(default)]
    pub when_unreachable: WhenUnreachable,
    /// Holders on this host while the store is unreachable (`local`).
    #[serde(default)]
    pub local_max: Option<Spanned<u32>>,
    /// A holder whose lease runs out mid-step: `"abort"` cancels the
    /// action at once; `"finish"` lets it and its verification finish
    /// (no exclusivity past the deadline).
    #[serde(default)]
    pub on_lease_lost: OnLeaseLost,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenUnreachable {
    #[default]
    Deny,
    Local,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLeaseLost {
    #[default]
    Abort,
    Finish,
}

impl OnLeaseLost {
    pub fn as_str(self) -> &'static str {
        match self {
            OnLeaseLost::Abort => "abort",
            OnLeaseLost::Finish => "finish",
        }
    }
}

/// `[fleet.recorder]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderConfig {
    /// PostgreSQL: `host=... user=... dbname=...` or a `postgresql://` URL.
    pub postgres: String,
    /// The durable consumer every replica shares.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// Bounds connecting and each statement.
    #[serde(default = "default_pg_timeout")]
    pub timeout: Dur,
}

impl BudgetConfig {
    pub fn renew_every(&self) -> Duration {
        self.renew_every
            .map(|d| d.0)
            .unwrap_or(self.lease_ttl.get_ref().0 / 3)
    }
    pub fn local_max(&self) -> u32 {
        self.local_max.as_ref().map(|m| *m.get_ref()).unwrap_or(1)
    }
}

impl FleetConfig {
    /// The agent id: as configured, else the hostname.
    pub fn agent_id(&self) -> String {
        match &self.agent_id {
            Some(id) => id.get_ref().clone(),
            None => hostname(),
        }
    }
}

/// The host's name (`uname -n`), made safe for a store key.
pub fn hostname() -> String {
    let raw = rustix::system::uname();
    let name = raw.nodename().to_string_lossy();
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.is_empty() {
        "mend".into()
    } else {
        clean
    }
}

fn default_servers() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "nats://127.0.0.1:4222".into())]
}
fn default_request_timeout() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_prefix() -> Spanned<String> {
    Spanned::new(0..0, "mend".into())
}
fn default_heartbeat() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_alert_window() -> Dur {
    Dur(Duration::from_secs(24 * 3600))
}
fn default_events_max_age() -> Dur {
    Dur(Duration::from_secs(7 * 24 * 3600))
}
fn default_replicas() -> u32 {
    1
}
fn default_wait() -> Dur {
    Dur(Duration::ZERO)
}
fn default_consumer() -> String {
    "mend-recorder".into()
}
fn default_pg_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}

/// Store names: letters, digits, `-` and `_` (NATS bucket names).
fn store_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

fn span<T>(s: &Spanned<T>) -> Option<std::ops::Range<usize>> {
    let r = s.span();
    (r.end > 0).then_some(r)
}

pub(super) fn validate(c: &Config, r: &mut Reporter<'_>) {
    let Some(f) = &c.fleet else {
        for (i, p) in c.policies.iter().enumerate() {
            for (j, s) in p.steps.iter().enumerate() {
                if let Some(b) = &s.budget {
                    r.at(
                        Some(b.span()),
                        format!("policy[{i}].step[{j}].budget"),
                        format!(
                            "budget `{}` needs fleet mode: add [fleet] and [fleet.budget.{}]",
                            b.get_ref(),
                            b.get_ref()
                        ),
                    );
                }
            }
        }
        return;
    };
    if f.servers.is_empty() {
        r.at(None, "fleet.servers", "name at least one server");
    }
    for (i, s) in f.servers.iter().enumerate() {
        if let Err(e) = s.get_ref().parse::<async_nats::ServerAddr>() {
            r.at(
                span(s),
                format!("fleet.servers[{i}]"),
                format!(
                    "`{}` is not a server address ({e}): write e.g. \"nats://10.0.0.1:4222\"",
                    s.get_ref()
                ),
            );
        }
    }
    if let Some(creds) = &f.credentials
        && let Err(e) = std::fs::metadata(creds.get_ref())
    {
        r.at(
            span(creds),
            "fleet.credentials",
            format!("cannot read {}: {e}", creds.get_ref().display()),
        );
    }
    if let Some(id) = &f.agent_id
        && !store_name(id.get_ref())
    {
        r.at(
            span(id),
            "fleet.agent_id",
            format!(
                "`{}`: use letters, digits, `-` and `_` (at most 64)",
                id.get_ref()
            ),
        );
    }
    if !store_name(f.prefix.get_ref()) {
        r.at(
            span(&f.prefix),
            "fleet.prefix",
            format!(
                "`{}`: use letters, digits, `-` and `_` (at most 64)",
                f.prefix.get_ref()
            ),
        );
    }
    let t = f.request_timeout.0;
    if t.is_zero() || t > Duration::from_secs(60) {
        r.at(
            None,
            "fleet.request_timeout",
            "must be more than 0s and at most 60s",
        );
    }
    if f.heartbeat.0 < Duration::from_millis(100) {
        r.at(None, "fleet.heartbeat", "must be at least 100ms");
    }
    if f.alert_window.0 < Duration::from_secs(1) {
        r.at(None, "fleet.alert_window", "must be at least 1s");
    }
    if f.events_max_age.0 < Duration::from_secs(60) {
        r.at(None, "fleet.events_max_age", "must be at least 1m");
    }
    if !(1..=5).contains(&f.replicas) {
        r.at(None, "fleet.replicas", "must be 1 to 5");
    }
    if let Some(rec) = &f.recorder {
        if rec.postgres.trim().is_empty() {
            r.at(None, "fleet.recorder.postgres", "is empty");
        } else if let Err(e) = rec.postgres.parse::<tokio_postgres::Config>() {
            r.at(None, "fleet.recorder.postgres", format!("{e}"));
        }
        if !store_name(&rec.consumer) {
            r.at(
                None,
                "fleet.recorder.consumer",
                "use letters, digits, `-` and `_`",
            );
        }
    }
    for (name, b) in &f.budgets {
        budget(r, name, b);
    }
    steps(c, f, r);
}

fn budget(r: &mut Reporter<'_>, name: &str, b: &BudgetConfig) {
    let key = |k: &str| format!("fleet.budget.{name}.{k}");
    if !store_name(name) {
        r.at(
            span(&b.lease_ttl),
            format!("fleet.budget.{name}"),
            "budget names use letters, digits, `-` and `_` (at most 64)",
        );
    }
    let ttl = b.lease_ttl.get_ref().0;
    if ttl < Duration::from_secs(1) {
        r.at(span(&b.lease_ttl), key("lease_ttl"), "must be at least 1s");
    }
    let renew = b.renew_every();
    if renew.is_zero() || renew > ttl / 2 {
        r.at(
            span(&b.lease_ttl),
            key("renew_every"),
            format!(
                "must be more than 0s and at most half of lease_ttl ({}), so a renewal can be retried before the lease runs out",
                humantime::format_duration(ttl / 2)
            ),
        );
    }
    match (b.when_unreachable, &b.local_max) {
        (WhenUnreachable::Deny, Some(m)) => r.at(
            span(m),
            key("local_max"),
            "only applies with when_unreachable = \"local\"",
        ),
        (WhenUnreachable::Local, Some(m)) if *m.get_ref() == 0 => r.at(
            span(m),
            key("local_max"),
            "must be at least 1 (or use when_unreachable = \"deny\")",
        ),
        _ => {}
    }
}

/// Steps name budgets that exist, and each lease outlasts its step.
fn steps(c: &Config, f: &FleetConfig, r: &mut Reporter<'_>) {
    for (i, p) in c.policies.iter().enumerate() {
        let verify = c
            .check(p.check.get_ref())
            .map(|ch| {
                ch.limits
                    .over(c.plugin_limits(ch.plugin.get_ref()))
                    .deadline
            })
            .unwrap_or(c.limits().deadline);
        for (j, s) in p.steps.iter().enumerate() {
            let Some(name) = &s.budget else { continue };
            let key = format!("policy[{i}].step[{j}].budget");
            let Some(b) = f.budgets.get(name.get_ref()) else {
                let known: Vec<&str> = f.budgets.keys().map(String::as_str).collect();
                r.at(
                    Some(name.span()),
                    key,
                    format!(
                        "no budget `{}` (defined: {})",
                        name.get_ref(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                continue;
            };
            let need =
                s.limits.over(c.plugin_limits(s.action.get_ref())).deadline + s.settle.0 + verify;
            let ttl = b.lease_ttl.get_ref().0;
            if ttl < need {
                r.at(
                    Some(name.span()),
                    key,
                    format!(
                        "budget `{}` has lease_ttl {} but this step may hold it {} (deadline + settle + the check's deadline for verification): raise lease_ttl",
                        name.get_ref(),
                        humantime::format_duration(ttl),
                        humantime::format_duration(need)
                    ),
                );
            }
        }
        if let Some(e) = &p.escalate
            && let Some(b) = &e.budget
        {
            r.at(
                Some(b.span()),
                format!("policy[{i}].escalate.budget"),
                "an escalation takes no budget (it must always be able to run)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{ConfigErrors, parse};
    use super::*;

    const BASE: &str = r#"
[[check]]
name = "db"
plugin = "pg-probe"

[[policy]]
name = "restart-db"
check = "db"

[[policy.step]]
action = "service-restart"
settle = "20s"
budget = "restart-db"
"#;

    fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
        parse(text, Path::new("mend.toml"), |_| None)
    }

    fn errors(text: &str) -> Vec<String> {
        parse_str(text)
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn fleet_is_off_by_default() {
        let c = parse_str("[[check]]\nname = \"a\"\nplugin = \"p\"\n").unwrap();
        assert!(c.fleet.is_none());
    }

    #[test]
    fn a_fleet_with_budgets_parses_with_defaults() {
        let text = format!(
            r#"{BASE}
[fleet]
servers = ["nats://10.0.0.1:4222", "10.0.0.2:4222"]
agent_id = "host-a"

[fleet.budget.restart-db]
max_concurrent = "10%"
rate = "6/h"
lease_ttl = "2m"
when_unreachable = "local"
local_max = 2
on_lease_lost = "finish"
"#
        );
        let c = parse_str(&text).unwrap();
        let f = c.fleet.as_ref().unwrap();
        assert_eq!(f.store, StoreKind::Nats);
        assert_eq!(f.agent_id(), "host-a");
        assert_eq!(f.request_timeout.0, Duration::from_secs(2));
        let b = &f.budgets["restart-db"];
        assert_eq!(*b.max_concurrent.get_ref(), MaxConcurrent::Percent(10.0));
        assert_eq!(b.rate.unwrap().count, 6);
        assert_eq!(b.renew_every(), Duration::from_secs(40));
        assert_eq!(b.local_max(), 2);
        assert_eq!(b.on_lease_lost, OnLeaseLost::Finish);
        assert_eq!(
            c.policies[0].steps[0].budget.as_ref().unwrap().get_ref(),
            "restart-db"
        );
    }

    #[test]
    fn a_budget_without_fleet_mode_is_refused_with_its_position() {
        let e = errors(BASE);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "mend.toml:13:10: policy[0].step[0].budget: budget `restart-db` needs fleet mode"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn every_fleet_problem_is_reported_with_where() {
        let text = format!(
            r#"{BASE}
[fleet]
servers = ["ftp://10.0.0.1:4222"]
agent_id = "host a"
prefix = "my.fleet"
request_timeout = "0s"

[fleet.budget.restart-db]
max_concurrent = 1
lease_ttl = "28s"
renew_every = "20s"
local_max = 1

[fleet.budget.other]
max_concurrent = "0%"
lease_ttl = "1m"
"#
        );
        let e = errors(&text).join("\n");
        // One parse error stops the rest: fix the percentage first.
        assert!(e.contains("fleet.budget.other.max_concurrent"), "{e}");
        assert!(e.contains("more than 0%"), "{e}");
        let e = errors(&text.replace("\"0%\"", "\"5%\"")).join("\n");
        for want in [
            "mend.toml:16:12: fleet.servers[0]: `ftp://10.0.0.1:4222` is not a server address",
            "mend.toml:17:12: fleet.agent_id: `host a`",
            "mend.toml:18:10: fleet.prefix: `my.fleet`",
            "fleet.request_timeout: must be more than 0s",
            "fleet.budget.restart-db.renew_every: must be more than 0s and at most half of lease_ttl (14s)",
            "fleet.budget.restart-db.local_max: only applies with when_unreachable = \"local\"",
            "mend.toml:13:10: policy[0].step[0].budget: budget `restart-db` has lease_ttl 28s but this step may hold it 30s",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn a_step_naming_an_unknown_budget_is_refused() {
        let text = format!(
            "{BASE}\n[fleet]\n[fleet.budget.restart-web]\nmax_concurrent = 1\nlease_ttl = \"5m\"\n"
        );
        let e = errors(&text);
        assert_eq!(
            e,
            vec![
                "mend.toml:13:10: policy[0].step[0].budget: no budget `restart-db` (defined: restart-web)"
            ]
        );
    }
}
