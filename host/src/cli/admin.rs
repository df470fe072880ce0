//! `mend status`, `incidents`, `incident`, `heal`, `check run`, `pause`,
//! `resume`, `plugins`, `reload`: the running mend, through its API, as
//! readable tables (or `--json`). Each exits with the code for what
//! happened (see `exit`): `status` says whether every check is healthy.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::Client;
use super::exit::{Exit, Failure};
use crate::config;

/// Where the API is and how to authenticate.
#[derive(Args, Clone)]
pub struct ApiOpts {
    /// The API's base URL [default: from --config's [api] listen, else
    /// http://127.0.0.1:9770].
    #[arg(long, env = "MEND_API", value_name = "URL")]
    pub api: Option<String>,
    /// Bearer token: needed to change anything, and for reads where the
    /// API is reachable from other machines [default: from --config's
    /// [api] token].
    #[arg(
        long,
        env = "MEND_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Trust this PEM certificate for an https:// API (e.g. a self-signed
    /// [api] tls_cert).
    #[arg(long, env = "MEND_API_CA", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Take the API's address and token from this config file.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Every check's health, status and last finding; exits 3 if any check
    /// is not healthy.
    Status {
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// Incidents, newest first.
    Incidents {
        /// Only the open ones.
        #[arg(long)]
        open: bool,
        /// At most this many (up to 1000).
        #[arg(long, default_value_t = 50, value_name = "N",
              value_parser = clap::value_parser!(u32).range(0..=1000))]
        limit: u32,
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// One incident: its diagnosis, every attempt with its outcome
    /// message, whether it changed anything, and its plan, and its
    /// timeline; or `ack` / `resolve` it.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Incident {
        #[command(subcommand)]
        action: Option<IncidentCommand>,
        /// The incident's number (see `mend incidents`).
        #[arg(value_name = "ID", required = true)]
        id: Option<i64>,
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// Heal a check now, through its policies' ladders (on a check whose
    /// incident is escalated, its ladder runs again); exits 4 if no
    /// ladder started (with why). Never makes mend exit.
    Heal {
        /// The check to heal.
        #[arg(value_name = "CHECK")]
        check: String,
        /// Plan only: actions say what they would do, nothing changes.
        #[arg(long)]
        dry_run: bool,
        /// Past the automatic attempt cap and cooldown; on an incident
        /// mend is still working on, walks its ladder again now.
        #[arg(long)]
        force: bool,
        /// Who asks, recorded on the incident [default: $USER].
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// One check by hand.
    #[command(subcommand)]
    Check(CheckCommand),
    /// Pause every policy, or one check's (maintenance): checks run, no
    /// action starts. Pausing again replaces the reason.
    Pause {
        /// Pause only this check's policies.
        #[arg(value_name = "CHECK")]
        check: Option<String>,
        /// Why (shown in status and recorded; at most 1000 characters).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// End a pause (of every policy, or of one check).
    Resume {
        /// Resume only this check.
        #[arg(value_name = "CHECK")]
        check: Option<String>,
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// The plugins the running mend uses, and files that did not load.
    Plugins {
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// Reload the running mend's config (as SIGHUP does); exits 78 if the
    /// config is refused (the running one stays).
    Reload {
        #[command(flatten)]
        opts: ApiOpts,
    },
}

#[derive(Subcommand)]
pub enum IncidentCommand {
    /// Acknowledge an escalated incident: you have it (no second page;
    /// mend keeps evaluating it).
    Ack {
        /// The incident's number.
        #[arg(value_name = "ID")]
        id: i64,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// Close an open incident by hand as resolved (the policy's cooldown
    /// starts).
    Resolve {
        /// The incident's number.
        #[arg(value_name = "ID")]
        id: i64,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        opts: ApiOpts,
    },
}

/// Who does it, and why (recorded on the incident).
#[derive(Args, Clone)]
pub struct Who {
    /// Who, recorded on the incident [default: $USER].
    #[arg(long, value_name = "WHO")]
    by: Option<String>,
    /// Why (at most 1000 characters).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

/// `--by`, else the login name.
fn by_or_user(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "cli".into())
}

#[derive(Subcommand)]
pub enum CheckCommand {
    /// Run a check's detector now and print its findings.
    Run {
        /// The check to run.
        #[arg(value_name = "CHECK")]
        name: String,
        #[command(flatten)]
        opts: ApiOpts,
    },
}

/// `name` as one URL path segment.
fn segment(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCommand::Status { opts } => {
            let v = client(&opts)?.get("/api/v1/status")?;
            print(&opts, &v, status_table)?;
            let unhealthy = v["checks"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["health"] != "healthy"));
            Ok(if unhealthy { Exit::Unhealthy } else { Exit::Ok }.into())
        }
        AdminCommand::Incidents { open, limit, opts } => {
            let v = client(&opts)?.get(&format!("/api/v1/incidents?open={open}&limit={limit}"))?;
            print(&opts, &v, incidents_table)
        }
        AdminCommand::Incident {
            action: None,
            id,
            opts,
        } => {
            let id = id.unwrap_or_default();
            let v = client(&opts)?.get(&format!("/api/v1/incidents/{id}"))?;
            print(&opts, &v, incident_detail)
        }
        AdminCommand::Incident {
            action: Some(cmd), ..
        } => {
            let (verb, id, who, opts) = match cmd {
                IncidentCommand::Ack { id, who, opts } => ("ack", id, who, opts),
                IncidentCommand::Resolve { id, who, opts } => ("resolve", id, who, opts),
            };
            let body = json!({"by": by_or_user(who.by), "reason": who.reason});
            let a =
                client(&opts)?.post(&format!("/api/v1/incidents/{id}/{verb}"), Some(&body), &[])?;
            print(&opts, &a.body, |v| {
                format!(
                    "incident {} is {} (by {})\n",
                    s(&v["id"]),
                    s(&v["state"]),
                    body["by"].as_str().unwrap_or("")
                )
            })
        }
        AdminCommand::Heal {
            check,
            dry_run,
            force,
            by,
            opts,
        } => {
            let by = by_or_user(by);
            let a = client(&opts)?.post(
                &format!(
                    "/api/v1/checks/{}/heal?dry_run={dry_run}&force={force}&by={}",
                    segment(&check),
                    segment(&by)
                ),
                None,
                &[409],
            )?;
            print(&opts, &a.body, heal_report)?;
            Ok(if a.code == 409 {
                Exit::Refused
            } else {
                Exit::Ok
            }
            .into())
        }
        AdminCommand::Check(CheckCommand::Run { name, opts }) => {
            let path = format!("/api/v1/checks/{}/run", segment(&name));
            let a = client(&opts)?.post(&path, None, &[])?;
            print(&opts, &a.body, |v| run_report(&name, v))
        }
        AdminCommand::Pause {
            check,
            reason,
            opts,
        } => {
            let body = reason.map(|r| json!({ "reason": r }));
            let path = match &check {
                Some(c) => format!("/api/v1/checks/{}/pause", segment(c)),
                None => "/api/v1/pause".into(),
            };
            let a = client(&opts)?.post(&path, body.as_ref(), &[])?;
            print(&opts, &a.body, pause_report)
        }
        AdminCommand::Resume { check, opts } => {
            let path = match &check {
                Some(c) => format!("/api/v1/checks/{}/resume", segment(c)),
                None => "/api/v1/resume".into(),
            };
            let a = client(&opts)?.post(&path, None, &[])?;
            print(&opts, &a.body, |v| {
                let what = match v["check"].as_str() {
                    Some(c) => format!("check {}", esc(c)),
                    None => "mend".into(),
                };
                if v["resumed"].as_bool() == Some(true) {
                    format!("{what} resumed: actions may run again\n")
                } else {
                    format!("{what} was not paused\n")
                }
            })
        }
        AdminCommand::Plugins { opts } => {
            let v = client(&opts)?.get("/api/v1/plugins")?;
            print(&opts, &v, plugins_table)
        }
        AdminCommand::Reload { opts } => {
            let a = client(&opts)?.post("/api/v1/reload", None, &[])?;
            print(&opts, &a.body, |v| {
                format!(
                    "reloaded: {} checks, {} policies, {} plugins\n",
                    s(&v["checks"]),
                    s(&v["policies"]),
                    s(&v["plugins"])
                )
            })
        }
    }
}

/// The API's URL for a config's `[api]`: its listen address, as a client
/// reaches it.
fn url_of(api: &config::ApiConfig) -> Option<String> {
    api.base_url()
}

fn from_config(path: &Path) -> anyhow::Result<config::ApiConfig> {
    match config::load(path) {
        Ok(c) => Ok(c.api),
        Err(errors) => Err(Failure::new(Exit::Config, errors.to_string()).into()),
    }
}

pub(super) fn client(opts: &ApiOpts) -> anyhow::Result<Client> {
    let api = opts.config.as_deref().map(from_config).transpose()?;
    let url = opts
        .api
        .clone()
        .or_else(|| api.as_ref().and_then(url_of))
        .unwrap_or_else(|| "http://127.0.0.1:9770".into());
    let token = opts
        .token
        .clone()
        .or_else(|| api.as_ref().and_then(|a| a.token()));
    Client::new(&url, token, opts.ca_cert.as_deref())
}

pub(super) fn print(
    opts: &ApiOpts,
    v: &Value,
    table: impl Fn(&Value) -> String,
) -> anyhow::Result<ExitCode> {
    if opts.json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print!("{}", table(v));
    }
    Ok(ExitCode::SUCCESS)
}

/// Rows as aligned columns (the last column is not padded).
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// A value as text for the terminal. Strings are escaped: the API's text
/// comes from plugins, alerts and operators, and a newline or an ANSI
/// escape in it must not forge a line or drive the terminal.
fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => esc(s),
        other => other.to_string(),
    }
}

pub(super) fn esc(s: &str) -> String {
    crate::text::escape(s).into_owned()
}

/// Wall-clock milliseconds as RFC 3339, to the second.
pub(super) fn when(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        None => "-".into(),
    }
}

fn ago(now: u64, ms: Option<u64>) -> String {
    match ms {
        Some(ms) => {
            let secs = now.saturating_sub(ms) / 1000;
            format!(
                "{} ago",
                humantime::format_duration(Duration::from_secs(secs))
            )
        }
        None => "never".into(),
    }
}

fn cut(s: &str, n: usize) -> String {
    let s = s.replace('\n', " ");
    let s = esc(&s);
    if s.chars().count() <= n {
        s
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// The worst finding of a result, as `code: summary`.
fn worst_finding(last: &Value) -> Option<String> {
    last["findings"]
        .as_array()
        .and_then(|fs| {
            fs.iter().max_by_key(|f| match f["status"].as_str() {
                Some("fail") => 3,
                Some("unknown") => 2,
                Some("warn") => 1,
                _ => 0,
            })
        })
        .map(|f| format!("{}: {}", s(&f["code"]), s(&f["summary"])))
}

fn status_table(v: &Value) -> String {
    let now = v["now"].as_u64().unwrap_or(0);
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "mend {} · {} checks · {} open incident(s)",
        s(&v["version"]),
        checks.len(),
        s(&v["open_incidents"])
    );
    if !v["paused"].is_null() {
        out.push_str(&format!(" · PAUSED: {}", s(&v["paused"]["reason"])));
    }
    out.push_str("\n\n");
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            let finding = worst_finding(&c["last"])
                .or_else(|| c["plugin_error"].as_str().map(esc))
                .unwrap_or_else(|| "-".into());
            let mut health = s(&c["health"]);
            if let Some(r) = c["recovering"].as_object() {
                health = format!("recovering {}/{}", s(&r["passes"]), s(&r["needed"]));
            }
            if c["remediating"].as_bool() == Some(true) {
                health.push_str(" (healing)");
            }
            if !c["paused"].is_null() {
                health.push_str(" (paused)");
            }
            vec![
                s(&c["name"]),
                health,
                s(&c["status"]),
                ago(now, c["last"]["at"].as_u64()),
                cut(&finding, 70),
            ]
        })
        .collect();
    out + &table(&["CHECK", "HEALTH", "STATUS", "LAST RUN", "FINDING"], &rows)
}

fn duration(i: &Value) -> String {
    match (i["opened_at"].as_u64(), i["closed_at"].as_u64()) {
        (Some(a), Some(b)) => {
            humantime::format_duration(Duration::from_secs(b.saturating_sub(a) / 1000)).to_string()
        }
        _ => "-".into(),
    }
}

fn incidents_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| {
            vec![
                s(&i["id"]),
                s(&i["state"]),
                s(&i["check"]),
                s(&i["policy"]),
                when(i["opened_at"].as_u64()),
                duration(i),
                i["attempts"]
                    .as_array()
                    .map(|a| a.len())
                    .unwrap_or(0)
                    .to_string(),
                cut(i["note"].as_str().unwrap_or(""), 50),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no incidents\n".into();
    }
    table(
        &[
            "ID", "STATE", "CHECK", "POLICY", "OPENED", "TOOK", "ATTEMPTS", "NOTE",
        ],
        &rows,
    )
}

/// A plugin error as one line (it may be a string or a tagged object).
fn error_text(e: &Value) -> String {
    match e {
        Value::String(s) => esc(s),
        Value::Object(m) => m
            .values()
            .find_map(|v| {
                v.get("reason")
                    .or_else(|| v.get("message"))
                    .and_then(Value::as_str)
            })
            .map(esc)
            .unwrap_or_else(|| e.to_string()),
        other => other.to_string(),
    }
}

/// What one attempt did, as indented lines under its row.
fn attempt_lines(a: &Value) -> String {
    let d = &a["detail"];
    let mut out = String::new();
    let o = &d["outcome"];
    if let Some(msg) = o["message"].as_str().filter(|m| !m.is_empty()) {
        out.push_str(&format!("      message  {}\n", esc(msg)));
    }
    if let Some(steps) = o["steps"].as_array().filter(|s| !s.is_empty()) {
        let label = if a["dry_run"].as_bool() == Some(true) {
            "plan"
        } else {
            "did"
        };
        for (i, st) in steps.iter().enumerate() {
            let head = if i == 0 { label } else { "" };
            out.push_str(&format!("      {head:<8} {}\n", s(st)));
        }
    }
    if !d["error"].is_null() {
        out.push_str(&format!("      error    {}\n", error_text(&d["error"])));
    }
    for key in ["reason", "note"] {
        if let Some(t) = d[key].as_str() {
            out.push_str(&format!("      {key:<8} {}\n", esc(t)));
        }
    }
    if let Some(v) = d["verification"].as_array().filter(|v| !v.is_empty()) {
        let after: Vec<String> = v
            .iter()
            .map(|f| format!("{} {}", s(&f["status"]), s(&f["code"])))
            .collect();
        out.push_str(&format!("      verified {}\n", after.join(", ")));
    }
    out
}

fn incident_detail(i: &Value) -> String {
    let d = &i["diagnosis"];
    let mut out = format!(
        "incident {} · {} · check {} · policy {}{}\n\
         opened   {}\nclosed   {} (took {})\n",
        s(&i["id"]),
        s(&i["state"]),
        s(&i["check"]),
        s(&i["policy"]),
        if i["dry_run"].as_bool() == Some(true) {
            " · dry run"
        } else {
            ""
        },
        when(i["opened_at"].as_u64()),
        when(i["closed_at"].as_u64()),
        duration(i),
    );
    if let Some(at) = i["escalated_at"].as_u64() {
        out.push_str(&format!("escalated {}\n", when(Some(at))));
    }
    if let Some(at) = i["acked_at"].as_u64() {
        out.push_str(&format!(
            "acked    {} by {}\n",
            when(Some(at)),
            s(&i["acked_by"])
        ));
    }
    if let Some(sev) = i["severity"].as_str() {
        out.push_str(&format!("severity {sev}\n"));
    }
    if let Some(n) = i["relapses"].as_u64().filter(|n| *n > 0) {
        out.push_str(&format!(
            "relapses {n} (a heal that did not hold reopened it)\n"
        ));
    }
    out.push_str(&format!(
        "cause    {}\ndecision {}: {}\n",
        s(&i["root_cause"]),
        s(&d["decision"]),
        s(&d["reason"]),
    ));
    if let Some(plan) = d["plan"].as_array().filter(|p| !p.is_empty()) {
        let steps: Vec<String> = plan.iter().map(s).collect();
        out.push_str(&format!("ladder   {}\n", steps.join(" → ")));
    }
    if let Some(note) = i["note"].as_str().filter(|n| !n.is_empty()) {
        out.push_str(&format!("note     {}\n", esc(note)));
    }
    if let Some(ev) = d["evidence"].as_array() {
        out.push_str("\nevidence\n");
        for f in ev {
            out.push_str(&format!(
                "  {} {}: {}\n",
                s(&f["status"]),
                s(&f["code"]),
                s(&f["summary"])
            ));
        }
    }
    if let Some(events) = i["events"].as_array().filter(|e| !e.is_empty()) {
        out.push_str("\ntimeline\n");
        for e in events {
            let by = match e["by"].as_str() {
                Some("") | Some("mend") | None => String::new(),
                Some(b) => format!(" by {b}"),
            };
            out.push_str(&format!(
                "  {} {}{by}: {}\n",
                when(e["at"].as_u64()),
                s(&e["kind"]),
                s(&e["reason"])
            ));
        }
    }
    let attempts = i["attempts"].as_array().cloned().unwrap_or_default();
    out.push_str("\nattempts\n");
    if attempts.is_empty() {
        out.push_str("  none\n");
        return out;
    }
    let header = ["STEP", "ACTION", "OUTCOME", "CHANGED", "STARTED", "TOOK"];
    let rows: Vec<Vec<String>> = attempts
        .iter()
        .map(|a| {
            let step = match (a["escalation"].as_bool(), a["step"].as_u64()) {
                (Some(true), _) => "escalate".to_string(),
                (_, Some(n)) => (n + 1).to_string(),
                _ => "-".into(),
            };
            let changed = match a["detail"]["outcome"]["changed"].as_bool() {
                Some(true) if a["dry_run"].as_bool() == Some(true) => "would".into(),
                Some(true) => "yes".into(),
                Some(false) => "no".into(),
                None => "-".into(),
            };
            vec![
                step,
                s(&a["action"]),
                s(&a["outcome"]),
                changed,
                when(a["started_at"].as_u64()),
                a["duration_ms"]
                    .as_u64()
                    .map(|d| format!("{d} ms"))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    // The table's lines, each attempt's details under its row.
    let t = table(&header, &rows);
    let mut lines = t.lines();
    if let Some(h) = lines.next() {
        out.push_str(h);
        out.push('\n');
    }
    for (line, a) in lines.zip(&attempts) {
        out.push_str(line);
        out.push('\n');
        out.push_str(&attempt_lines(a));
    }
    out
}

fn heal_report(v: &Value) -> String {
    let policies = v["policies"].as_array().cloned().unwrap_or_default();
    let mut out = format!("check {}: {}\n", s(&v["check"]), s(&v["result"]["status"]));
    if policies.is_empty() {
        out.push_str("no policy watches this check: nothing to run\n");
    }
    for p in policies {
        let dry = if p["dry_run"].as_bool() == Some(true) {
            " (dry run)"
        } else {
            ""
        };
        if p["started"].as_bool() == Some(true) {
            out.push_str(&format!(
                "policy {}: healing{dry}, incident {} — follow with `mend incident {}`\n",
                s(&p["policy"]),
                s(&p["incident"]),
                s(&p["incident"])
            ));
        } else {
            out.push_str(&format!(
                "policy {}: not started: {}\n",
                s(&p["policy"]),
                s(&p["reason"])
            ));
        }
    }
    out
}

fn run_report(name: &str, v: &Value) -> String {
    let mut out = format!("check {name}: {}\n", s(&v["status"]));
    for f in v["findings"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "  {} {}: {}\n",
            s(&f["status"]),
            s(&f["code"]),
            s(&f["summary"])
        ));
    }
    out
}

fn pause_report(v: &Value) -> String {
    let what = match v["check"].as_str() {
        Some(c) => format!("check {}", esc(c)),
        None => "mend".into(),
    };
    let since = when(v["paused"]["since"].as_u64());
    let reason = esc(v["paused"]["reason"].as_str().unwrap_or(""));
    if v["updated"].as_bool() == Some(true) {
        format!("{what} was already paused (since {since}); the reason is now: {reason}\n")
    } else {
        format!("{what} paused since {since}: {reason}\n")
    }
}

fn plugins_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["plugins"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let roles: Vec<&str> = [("detector", "detector"), ("action", "action")]
                .iter()
                .filter(|(k, _)| p[*k].as_bool() == Some(true))
                .map(|(_, n)| *n)
                .collect();
            vec![
                s(&p["name"]),
                s(&p["version"]),
                roles.join(", "),
                p["sha256"].as_str().map(|h| cut(h, 13)).unwrap_or_default(),
                s(&p["file"]),
            ]
        })
        .collect();
    let mut out = if rows.is_empty() {
        "no plugins loaded\n".to_string()
    } else {
        table(&["PLUGIN", "VERSION", "ROLES", "SHA256", "FILE"], &rows)
    };
    if let Some(unused) = v["unused"].as_array().filter(|u| !u.is_empty()) {
        out.push_str("\nnot loaded (the config does not use them)\n");
        for u in unused {
            out.push_str(&format!("  {}  {}\n", s(&u["name"]), s(&u["file"])));
        }
    }
    if let Some(errors) = v["errors"].as_object().filter(|e| !e.is_empty()) {
        out.push_str("\nunusable\n");
        for (k, why) in errors {
            out.push_str(&format!("  {}: {}\n", esc(k), s(why)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB", "C"],
            &[vec!["xxx".into(), "y".into(), "z z".into()]],
        );
        assert_eq!(t, "A    BB  C\nxxx  y   z z\n");
    }

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(segment("app-logs_1.x"), "app-logs_1.x");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn text_from_the_api_is_printed_escaped() {
        // As an older store or another agent may hold it: raw.
        let raw = "x\n\u{1b}[2Jforged";
        let v = json!({
            "version": "1", "now": 0, "open_incidents": 0,
            "paused": { "reason": raw },
            "checks": [{ "name": raw, "health": "healthy", "status": "fail",
                "last": { "at": 0, "findings": [{ "status": "fail", "code": "c", "summary": raw }] } }],
        });
        let out = status_table(&v);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert!(out.contains("PAUSED: x\\n\\u{1b}[2Jforged"), "{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("forged")).count(), 0);
    }

    #[test]
    fn an_incident_shows_what_each_attempt_did() {
        let i = json!({
            "id": 7, "state": "planned", "check": "app", "policy": "fix-app",
            "opened_at": 1_000, "closed_at": 2_000, "dry_run": true,
            "root_cause": "app", "note": "",
            "diagnosis": {"decision": "act", "reason": "manual heal", "plan": ["fix", "restart"], "evidence": []},
            "attempts": [{
                "step": 0, "action": "fix", "outcome": "planned", "dry_run": true,
                "started_at": 1_000, "duration_ms": 3,
                "detail": {"outcome": {"changed": true, "steps": ["write /ctl/app"], "message": "would restore the file"}},
            }],
        });
        let text = incident_detail(&i);
        assert!(text.contains("ladder   fix → restart"), "{text}");
        assert!(text.contains("message  would restore the file"), "{text}");
        assert!(text.contains("plan     write /ctl/app"), "{text}");
        assert!(text.contains("would"), "{text}");
        assert!(!text.contains("relapses"), "none, none shown: {text}");
        let mut i = i;
        i["relapses"] = json!(2);
        assert!(
            incident_detail(&i).contains("relapses 2 (a heal that did not hold reopened it)"),
            "{text}"
        );
    }
}
