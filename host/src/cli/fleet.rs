//! `mend fleet status`: fleet mode as the running agent sees it, through
//! its API: members, budgets with their holders, fleet-wide incidents.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use super::admin::{ApiOpts, esc, print, table, when};

#[derive(Subcommand)]
pub enum FleetCommand {
    /// Members, budgets and their holders, and fleet-wide incidents.
    Status {
        #[command(flatten)]
        opts: ApiOpts,
    },
}

pub fn run(cmd: FleetCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FleetCommand::Status { opts } => {
            let v = super::admin::client(&opts)?.get("/api/v1/fleet")?;
            print(&opts, &v, status_text)
        }
    }
}

/// A value as terminal text, escaped (it comes from other agents).
fn s(v: &Value) -> String {
    match v {
        Value::String(s) => esc(s),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn status_text(v: &Value) -> String {
    let mut out = format!(
        "agent {} ({} store, {})\n",
        s(&v["agent"]),
        s(&v["store"]),
        if v["reachable"].as_bool() == Some(true) {
            "reachable".to_string()
        } else {
            format!("unreachable: {}", s(&v["error"]))
        }
    );
    let empty = Vec::new();
    let members = v["members"].as_array().unwrap_or(&empty);
    out.push_str(&format!("\nmembers ({})\n", members.len()));
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                s(&m["agent"]),
                s(&m["version"]),
                when(m["since"].as_u64()),
                when(m["seen"].as_u64()),
            ]
        })
        .collect();
    out.push_str(&table(&["AGENT", "VERSION", "SINCE", "SEEN"], &rows));
    for b in v["budgets"].as_array().unwrap_or(&empty) {
        let holders = b["holders"].as_array().unwrap_or(&empty);
        let rate = match (b["rate"].as_str(), b["rate_used"].as_u64()) {
            (Some(r), Some(used)) => format!(", rate {} ({used} used)", esc(r)),
            (Some(r), None) => format!(", rate {}", esc(r)),
            _ => String::new(),
        };
        out.push_str(&format!(
            "\nbudget {}: {} of {} held (max_concurrent {}{rate}, when_unreachable {})\n",
            s(&b["name"]),
            holders.len(),
            s(&b["slots"]),
            s(&b["max_concurrent"]),
            s(&b["when_unreachable"]),
        ));
        let rows: Vec<Vec<String>> = holders
            .iter()
            .map(|h| {
                vec![
                    s(&h["slot"]),
                    s(&h["agent"]),
                    s(&h["policy"]),
                    s(&h["incident"]),
                    s(&h["step"]),
                    when(h["since"].as_u64()),
                ]
            })
            .collect();
        if !rows.is_empty() {
            out.push_str(&table(
                &["SLOT", "AGENT", "POLICY", "INCIDENT", "STEP", "SINCE"],
                &rows,
            ));
        }
    }
    if let Some(err) = v["incidents_error"].as_str() {
        out.push_str(&format!("\nfleet-wide incidents: {}\n", esc(err)));
    } else if let Some(incidents) = v["incidents"].as_array() {
        out.push_str(&format!("\nfleet-wide incidents ({})\n", incidents.len()));
        let rows: Vec<Vec<String>> = incidents
            .iter()
            .map(|i| {
                vec![
                    s(&i["agent"]),
                    s(&i["incident"]),
                    s(&i["policy"]),
                    s(&i["state"]),
                    when(i["opened_at"].as_u64()),
                    s(&i["note"]),
                ]
            })
            .collect();
        out.push_str(&table(
            &["AGENT", "ID", "POLICY", "STATE", "OPENED", "NOTE"],
            &rows,
        ));
    }
    out
}
