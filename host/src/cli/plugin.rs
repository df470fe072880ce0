//! `mend plugin inspect` and `mend plugin call`: run one plugin by hand,
//! in the same sandbox the engine uses (`mend plugin new` is `new.rs`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use serde_json::json;

use crate::capabilities::Grants;
use crate::capabilities::fs::{DirGrant, Mode};
use crate::capabilities::system::{SystemGrant, SystemTable};
use crate::contract::{Finding, Needs, RemedyContext, Role};
use crate::runtime::{Limits, Request, Runtime, RuntimeConfig};
use crate::tape::Tape;
use crate::tape::transcript::{CallKind, Expected};
use crate::values::parse_bytes;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Print what a plugin's describe() says.
    Inspect {
        /// The plugin (a `.wasm` component).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Where the compile cache lives [default: $MEND_STATE_DIR, else
        /// $XDG_STATE_HOME/mend, else ~/.local/state/mend].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Run one sandboxed call and print the result as JSON.
    Call(Box<CallArgs>),
    /// Create a plugin project that builds and runs with no edits.
    New(super::new::NewArgs),
    /// Replay transcripts (`mend plugin call --record`) without the real
    /// system: PASS or FAIL each, with a diff of expected and actual.
    Test(super::plugin_test::TestArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Export {
    Detect,
    Remedy,
    /// Check a config without running (what `mend check-config` asks).
    Validate,
}

#[derive(clap::Args)]
pub struct CallArgs {
    /// The plugin (a `.wasm` component).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Which export to call.
    #[arg(value_enum)]
    export: Export,
    /// The plugin's config: JSON, TOML, or @FILE holding either.
    #[arg(long)]
    config: Option<String>,
    /// The check name passed to the plugin.
    #[arg(long, default_value = "cli")]
    check: String,
    /// Grant a directory: HOST:GUEST[:rw] (read-only unless `:rw`).
    #[arg(long = "grant-dir", value_name = "HOST:GUEST[:rw]")]
    grant_dirs: Vec<String>,
    /// Grant TCP connections to HOST:PORT.
    #[arg(long = "grant-addr", value_name = "HOST:PORT")]
    grant_addrs: Vec<String>,
    /// Grant HTTP requests under a URL prefix.
    #[arg(long = "grant-url", value_name = "URL")]
    grant_urls: Vec<String>,
    /// Grant a named connection (defined in --defs).
    #[arg(long = "grant-connection", value_name = "NAME")]
    grant_connections: Vec<String>,
    /// Grant a named command (defined in --defs).
    #[arg(long = "grant-command", value_name = "NAME")]
    grant_commands: Vec<String>,
    /// A mend.toml whose `[connections]` and `[commands]` define the names.
    #[arg(long, value_name = "FILE")]
    defs: Option<PathBuf>,
    /// Grant the plugin its persistent state.
    #[arg(long)]
    grant_state: bool,
    /// Grant machine facts (CPU, load, memory, pressure, filesystems,
    /// interfaces).
    #[arg(long)]
    grant_system: bool,
    /// Grant facts about processes of this name or glob (implies
    /// --grant-system).
    #[arg(long = "grant-process", value_name = "NAME")]
    grant_processes: Vec<String>,
    /// Fuel budget.
    #[arg(long)]
    fuel: Option<u64>,
    /// Wall-clock deadline, e.g. `5s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Memory cap in bytes (suffixes K, M, G, KiB, MiB, GiB accepted).
    #[arg(long, value_parser = parse_bytes)]
    memory: Option<u64>,
    /// For remedy: report the plan, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// For remedy: the findings (a JSON list) that led to it.
    #[arg(long)]
    findings: Option<String>,
    /// Where the compile cache and plugin state live.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Record every host call (arguments and results), the clocks, and the
    /// granted directories into this transcript, for `mend plugin test`.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

pub async fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Inspect {
            file,
            json,
            state_dir,
        } => inspect(file, json, state_dir).await,
        PluginCommand::Call(args) => call(*args).await,
        PluginCommand::New(args) => super::new::run(args).map(|()| ExitCode::SUCCESS),
        PluginCommand::Test(args) => super::plugin_test::run(args).await,
    }
}

fn runtime(state_dir: Option<PathBuf>) -> anyhow::Result<Runtime> {
    Runtime::new(RuntimeConfig {
        state_dir: state_dir.or_else(super::default_state_dir),
        ..RuntimeConfig::default()
    })
}

async fn inspect(
    file: PathBuf,
    as_json: bool,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let rt = runtime(state_dir)?;
    let plugin = rt.load_file(&file).await?;
    let m = plugin.manifest();
    if as_json {
        let out = json!({
            "manifest": m,
            "wit_version": plugin.wit_version(),
            "sha256": plugin.sha256(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} {}", m.name, m.version);
    if !m.description.is_empty() {
        println!("  {}", m.description);
    }
    let roles: Vec<String> = m
        .roles
        .iter()
        .map(|r| role_name(r.role).to_string())
        .collect();
    println!("  roles:       {}", roles.join(", "));
    println!("  contract:    mend:plugin@{}", plugin.wit_version());
    println!("  sha256:      {}", plugin.sha256());
    println!("  pin it in mend.toml, so no other file can claim its name:");
    println!("    [plugins.{}]", m.name);
    println!("    sha256 = \"{}\"", plugin.sha256());
    for r in &m.roles {
        print_needs(role_name(r.role), &r.needs);
    }
    Ok(ExitCode::SUCCESS)
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Detector => "detector",
        Role::Action => "action",
    }
}

fn print_needs(role: &str, n: &Needs) {
    if n == &Needs::default() {
        println!("  {role} needs: nothing");
        return;
    }
    println!("  {role} needs:");
    for d in &n.dirs {
        let mode = if d.write { "rw" } else { "ro" };
        let path = if d.path == "*" {
            "any granted directory"
        } else {
            &d.path
        };
        println!("    directory  {path} ({mode})");
    }
    for a in &n.addresses {
        println!("    address    {a}");
    }
    for u in &n.urls {
        println!("    url        {u}");
    }
    for c in &n.connections {
        println!("    connection {c}");
    }
    for c in &n.commands {
        println!("    command    {c}");
    }
    if n.state {
        println!("    state");
    }
    if n.system {
        println!("    system facts");
    }
    for p in &n.processes {
        println!("    process    {p}");
    }
}

async fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
    let config = crate::runtime::PluginConfig::new(match &args.config {
        Some(text) => parse_config(text)?,
        None => serde_json::json!({}),
    });
    let asked = Grants {
        dirs: args
            .grant_dirs
            .iter()
            .map(|s| parse_grant_dir(s))
            .collect::<anyhow::Result<_>>()?,
        addresses: args.grant_addrs.clone(),
        urls: args.grant_urls.clone(),
        connections: args.grant_connections.clone(),
        commands: args.grant_commands.clone(),
        state: args.grant_state,
        system: system_grant(args.grant_system, &args.grant_processes),
    };
    let grants = asked.resolve_with(&match &args.defs {
        Some(file) => {
            let c = crate::config::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
            crate::capabilities::Backends::new(&c.connections, &c.commands)?
        }
        None => Default::default(),
    })?;
    let defaults = Limits::default();
    let limits = Limits {
        fuel: args.fuel.unwrap_or(defaults.fuel),
        deadline: args.timeout.unwrap_or(defaults.deadline),
        memory: args
            .memory
            .map(|m| usize::try_from(m).unwrap_or(usize::MAX))
            .unwrap_or(defaults.memory),
        ..defaults
    };
    let rt = runtime(args.state_dir.clone())?;
    let plugin = rt.load_file(&args.file).await?;
    let labels = Default::default();
    let clock = crate::clock::Clock::system();
    let req = Request {
        check: &args.check,
        config: &config,
        labels: &labels,
        grants: &grants,
        limits,
        clock,
    };
    let recording = match (&args.record, args.export) {
        (None, _) => None,
        (Some(_), Export::Validate) => bail!("--record records detect or remedy, not validate"),
        (Some(_), _) => Some(super::plugin_test::start_recording(&plugin, &grants)?),
    };
    let (tape, started_ms) = match &recording {
        Some((tape, _, _)) => (tape.clone(), clock.now()),
        None => (Tape::off(), 0),
    };
    let findings: Vec<Finding> = match &args.findings {
        Some(text) => {
            serde_json::from_str(text).context("--findings must be a JSON list of findings")?
        }
        None => Vec::new(),
    };
    let recorded = |call| super::plugin_test::Recorded {
        file: args.record.as_deref().unwrap_or(Path::new("")),
        plugin: &plugin,
        call,
        check: &args.check,
        config: &config,
        grants: &asked,
        resolved: &grants,
        findings: &findings,
        dry_run: args.dry_run,
    };
    let out = match args.export {
        Export::Validate => {
            let mut v = json!({
                "plugin": plugin.name(),
                "version": plugin.manifest().version,
                "call": "validate",
            });
            for role in [Role::Detector, Role::Action] {
                if !plugin.plays(role) {
                    continue;
                }
                let key = role_name(role);
                v[key] = match rt.validate(&plugin, role, &config).await {
                    Ok(Some(needs)) => json!({"ok": true, "needs": needs}),
                    Ok(None) => {
                        json!({"ok": null, "note": "this contract version cannot validate a config"})
                    }
                    Err(e) => json!({"ok": false, "error": e.to_string()}),
                };
            }
            v
        }
        Export::Detect => {
            let r = rt.detect_taped(&plugin, &req, tape.clone()).await;
            if let Some((tape, dirs, notes)) = recording {
                super::plugin_test::finish_recording(
                    recorded(CallKind::Detect),
                    started_ms,
                    &tape,
                    dirs,
                    notes,
                    &r,
                    |f: &Vec<Finding>| Expected::Findings(f.clone()),
                )?;
            }
            let r = r?;
            json!({
                "plugin": plugin.name(),
                "version": plugin.manifest().version,
                "call": "detect",
                "findings": r.value,
                "fuel_used": r.fuel_used,
                "duration_us": r.duration.as_micros() as u64,
            })
        }
        Export::Remedy => {
            let context = RemedyContext::manual(&args.check, args.dry_run);
            let r = rt
                .remedy_taped(&plugin, &req, &findings, context, None, tape.clone())
                .await;
            if let Some((tape, dirs, notes)) = recording {
                super::plugin_test::finish_recording(
                    recorded(CallKind::Remedy),
                    started_ms,
                    &tape,
                    dirs,
                    notes,
                    &r,
                    |o: &crate::contract::Outcome| Expected::Outcome(o.clone()),
                )?;
            }
            let r = r?;
            json!({
                "plugin": plugin.name(),
                "version": plugin.manifest().version,
                "call": "remedy",
                "dry_run": args.dry_run,
                "outcome": r.value,
                "fuel_used": r.fuel_used,
                "duration_us": r.duration.as_micros() as u64,
            })
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// JSON, TOML, or `@file` containing either; must be a table.
fn parse_config(text: &str) -> anyhow::Result<serde_json::Value> {
    let (text, origin) = match text.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| format!("reading config {path}"))?,
            path.to_string(),
        ),
        None => (text.to_string(), "--config".to_string()),
    };
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).with_context(|| format!("{origin}: invalid JSON"))?
    } else {
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{origin}: invalid TOML: {}", e.message()))?;
        serde_json::to_value(table)?
    };
    if !value.is_object() {
        bail!("{origin}: the config must be a table/object");
    }
    Ok(value)
}

/// `HOST:GUEST[:rw|:ro]`, or just `PATH` for the same path inside.
fn system_grant(on: bool, processes: &[String]) -> Option<SystemGrant> {
    if !processes.is_empty() {
        Some(SystemGrant::Table(SystemTable {
            processes: processes.to_vec(),
        }))
    } else {
        on.then_some(SystemGrant::On(true))
    }
}

fn parse_grant_dir(s: &str) -> anyhow::Result<DirGrant> {
    let (rest, mode) = if let Some(r) = s.strip_suffix(":rw") {
        (r, Mode::Rw)
    } else if let Some(r) = s.strip_suffix(":ro") {
        (r, Mode::Ro)
    } else {
        (s, Mode::Ro)
    };
    let (host, guest) = match rest.rsplit_once(':') {
        Some((h, g)) => (h, Some(g.to_string())),
        None => (rest, None),
    };
    if host.is_empty() {
        bail!("--grant-dir {s}: empty host path");
    }
    Ok(DirGrant {
        host: host.into(),
        guest,
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_dir_forms() {
        let g = parse_grant_dir("/srv/data:/data:rw").unwrap();
        assert_eq!(
            (g.host.to_str().unwrap(), g.guest.as_deref(), g.mode),
            ("/srv/data", Some("/data"), Mode::Rw)
        );
        let g = parse_grant_dir("/srv/data:/data").unwrap();
        assert_eq!(g.mode, Mode::Ro);
        let g = parse_grant_dir("/srv/data").unwrap();
        assert_eq!(g.guest, None);
    }

    #[test]
    fn config_accepts_json_and_toml_tables_only() {
        assert_eq!(parse_config(r#"{"a": 1}"#).unwrap()["a"], 1);
        assert_eq!(parse_config("max_age = \"10m\"").unwrap()["max_age"], "10m");
        assert!(parse_config("[1, 2]").is_err());
        assert!(
            parse_config("a = ")
                .unwrap_err()
                .to_string()
                .contains("invalid TOML")
        );
    }
}
