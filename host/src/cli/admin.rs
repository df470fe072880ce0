//! `mend status`, `incidents`, `incident`, `heal`, `pause`, `resume`: the
//! running mend, through its API, as readable tables (or `--json`).

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::Client;

/// Where the API is and how to authenticate.
#[derive(Args, Clone)]
pub struct ApiOpts {
    /// The API's base URL.
    #[arg(long, env = "MEND_API", default_value = "http://127.0.0.1:9770")]
    pub api: String,
    /// Bearer token for heal, pause and resume.
    #[arg(long, env = "MEND_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Every check's health, status and last finding.
    Status {
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// Incidents, newest first.
    Incidents {
        /// Only the open ones.
        #[arg(long)]
        open: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// One incident: its diagnosis and every attempt.
    Incident {
        id: i64,
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// Heal a check now, through its policies' ladders.
    Heal {
        check: String,
        /// Plan only: actions say what they would do.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// Pause every policy (maintenance): checks run, no action starts.
    Pause {
        /// Why (shown in status and recorded).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// End a pause.
    Resume {
        #[command(flatten)]
        opts: ApiOpts,
    },
}

pub fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCommand::Status { opts } => {
            let v = client(&opts).get("/api/v1/status")?;
            print(&opts, &v, status_table)
        }
        AdminCommand::Incidents { open, limit, opts } => {
            let v = client(&opts).get(&format!("/api/v1/incidents?open={open}&limit={limit}"))?;
            print(&opts, &v, incidents_table)
        }
        AdminCommand::Incident { id, opts } => {
            let v = client(&opts).get(&format!("/api/v1/incidents/{id}"))?;
            print(&opts, &v, incident_detail)
        }
        AdminCommand::Heal {
            check,
            dry_run,
            opts,
        } => {
            let (code, v) = client(&opts).post(
                &format!("/api/v1/checks/{check}/heal?dry_run={dry_run}"),
                None,
            )?;
            print(&opts, &v, heal_report)?;
            Ok(if code == 409 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        AdminCommand::Pause { reason, opts } => {
            let body = reason.map(|r| json!({ "reason": r }));
            let (_, v) = client(&opts).post("/api/v1/pause", body.as_ref())?;
            print(&opts, &v, |v| {
                format!(
                    "paused since {}: {}\n",
                    when(v["paused"]["since"].as_u64()),
                    v["paused"]["reason"].as_str().unwrap_or("")
                )
            })
        }
        AdminCommand::Resume { opts } => {
            let (_, v) = client(&opts).post("/api/v1/resume", None)?;
            print(&opts, &v, |v| {
                if v["resumed"].as_bool() == Some(true) {
                    "resumed: actions may run again\n".into()
                } else {
                    "was not paused\n".into()
                }
            })
        }
    }
}

fn client(opts: &ApiOpts) -> Client {
    Client::new(&opts.api, opts.token.clone())
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

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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
    if s.chars().count() <= n {
        s
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
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
            let last = &c["last"];
            // The worst finding speaks for the check.
            let finding = last["findings"]
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
                .or_else(|| c["plugin_error"].as_str().map(str::to_string))
                .unwrap_or_else(|| "-".into());
            let mut health = s(&c["health"]);
            if c["remediating"].as_bool() == Some(true) {
                health.push_str(" (healing)");
            }
            vec![
                s(&c["name"]),
                health,
                s(&c["status"]),
                ago(now, last["at"].as_u64()),
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

fn incident_detail(i: &Value) -> String {
    let d = &i["diagnosis"];
    let mut out = format!(
        "incident {} · {} · check {} · policy {}{}\n\
         opened   {}\nclosed   {} (took {})\n\
         cause    {}\ndecision {}: {}\n",
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
        s(&i["root_cause"]),
        s(&d["decision"]),
        s(&d["reason"]),
    );
    if let Some(note) = i["note"].as_str().filter(|n| !n.is_empty()) {
        out.push_str(&format!("note     {note}\n"));
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
    let rows: Vec<Vec<String>> = i["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let step = match a["step"].as_u64() {
                Some(n) if n == u32::MAX as u64 => "escalate".to_string(),
                Some(n) => (n + 1).to_string(),
                None => "-".into(),
            };
            let detail = a["detail"]
                .get("error")
                .or_else(|| a["detail"].get("reason"))
                .or_else(|| a["detail"].get("note"))
                .map(s)
                .unwrap_or_default();
            vec![
                step,
                s(&a["action"]),
                s(&a["outcome"]),
                when(a["started_at"].as_u64()),
                a["duration_ms"]
                    .as_u64()
                    .map(|d| format!("{d} ms"))
                    .unwrap_or_else(|| "-".into()),
                cut(&detail, 60),
            ]
        })
        .collect();
    out.push_str("\nattempts\n");
    if rows.is_empty() {
        out.push_str("  none\n");
    } else {
        out.push_str(&table(
            &["STEP", "ACTION", "OUTCOME", "STARTED", "TOOK", "DETAIL"],
            &rows,
        ));
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

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns() {
        let t = super::table(
            &["A", "BB", "C"],
            &[vec!["xxx".into(), "y".into(), "z z".into()]],
        );
        assert_eq!(t, "A    BB  C\nxxx  y   z z\n");
    }
}
