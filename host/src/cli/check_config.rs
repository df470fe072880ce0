//! `mend check-config [--config] FILE`: everything `mend run` would refuse or trip
//! over, all at once: syntax, references, cycles, and the plugins
//! themselves (they exist, load, have the right role, and their declared
//! needs fit their grants).

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use crate::capabilities::{Grants, missing_grant};
use crate::config::error::line_col;
use crate::config::{self, ConfigError};
use crate::contract::Role;
use crate::runtime::{Runtime, RuntimeConfig};

use super::exit::Exit;

pub async fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            println!("{}: {} problem(s)", path.display(), errors.0.len());
            return Ok(Exit::Config.into());
        }
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let runtime = Runtime::new(RuntimeConfig {
        state_dir: config.state_dir(),
        ..RuntimeConfig::default()
    })?;

    let mut problems: Vec<ConfigError> = Vec::new();
    let mut report = |span: std::ops::Range<usize>, key: String, message: String| {
        problems.push(ConfigError {
            file: path.to_path_buf(),
            position: Some(line_col(&text, span.start)),
            key,
            message,
        })
    };

    let backends = config.backends().unwrap_or_default();
    let dir = config.plugins_dir();
    let (plugins, broken): (HashMap<_, _>, Vec<String>) = match runtime.load_dir(&dir).await {
        Ok(loaded) => (loaded.plugins, loaded.errors.into_values().collect()),
        Err(e) => (
            HashMap::new(),
            vec![format!("plugins directory {}: {e}", dir.display())],
        ),
    };

    let mut check_plugin =
        |name: &toml::Spanned<String>, key: String, role: Role, grants: &Grants| {
            let Some(plugin) = plugins.get(name.get_ref()) else {
                report(
                    name.span(),
                    key,
                    format!("no plugin named `{}` in {}", name.get_ref(), dir.display()),
                );
                return;
            };
            if !plugin.manifest().has_role(role) {
                let role = if role == Role::Detector {
                    "a detector"
                } else {
                    "an action"
                };
                report(
                    name.span(),
                    key,
                    format!("plugin `{}` is not {role}", name.get_ref()),
                );
                return;
            }
            if let Ok(resolved) = grants.resolve_with(&backends)
                && let Some(need) = plugin
                    .manifest()
                    .needs(role)
                    .and_then(|n| missing_grant(n, &resolved))
            {
                report(
                    name.span(),
                    key,
                    format!(
                        "plugin `{}` needs {need}, which is not granted",
                        name.get_ref()
                    ),
                );
            }
        };
    for (i, c) in config.checks.iter().enumerate() {
        check_plugin(
            &c.plugin,
            format!("check[{i}].plugin"),
            Role::Detector,
            &c.grants,
        );
    }
    for (i, p) in config.policies.iter().enumerate() {
        for (j, s) in p.steps.iter().enumerate() {
            check_plugin(
                &s.action,
                format!("policy[{i}].step[{j}].action"),
                Role::Action,
                &s.grants,
            );
        }
        if let Some(s) = &p.escalate {
            check_plugin(
                &s.action,
                format!("policy[{i}].escalate.action"),
                Role::Action,
                &s.grants,
            );
        }
    }

    for b in &broken {
        println!("{}: {b}", path.display());
    }
    for p in &problems {
        println!("{p}");
    }
    let total = problems.len() + broken.len();
    if total > 0 {
        println!("{}: {total} problem(s)", path.display());
        return Ok(Exit::Config.into());
    }
    for w in private_tmp_warnings(&config) {
        println!("{}: warning: {w}", path.display());
    }
    println!(
        "{}: ok ({} checks, {} policies, {} plugins)",
        path.display(),
        config.checks.len(),
        config.policies.len(),
        plugins.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Grants under /tmp or /var/tmp: under the unit's `PrivateTmp=yes`, mend
/// sees a private directory there, not the one other services write.
fn private_tmp_warnings(config: &config::Config) -> Vec<String> {
    let mut grants: Vec<(String, &Grants)> = config
        .checks
        .iter()
        .map(|c| (format!("check {}", c.name()), &c.grants))
        .collect();
    for p in &config.policies {
        for s in p.steps.iter().chain(p.escalate.as_ref()) {
            grants.push((format!("policy {} step {}", p.name(), s.name()), &s.grants));
        }
    }
    let mut out = Vec::new();
    for (who, g) in grants {
        for d in &g.dirs {
            if d.host.starts_with("/tmp") || d.host.starts_with("/var/tmp") {
                out.push(format!(
                    "{who} grants {}: under systemd (PrivateTmp=yes in mend.service) mend sees its own \
                     private /tmp there, not the system's; grant a directory elsewhere",
                    d.host.display()
                ));
            }
        }
    }
    out
}
