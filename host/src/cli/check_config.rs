//! `mend check-config [--config] FILE`: exactly what `mend run` would refuse, all at
//! once, by compiling the same plan: syntax and schema, references and
//! cycles, grants, the plugins themselves (they exist, load, play the
//! role, their declared needs fit their grants) and each plugin's own
//! check of its config. Exit 0 means `mend run` starts.

use std::path::Path;
use std::process::ExitCode;

use super::exit::Exit;
use crate::config;
use crate::plan;
use crate::runtime::{Runtime, RuntimeConfig};

pub async fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    let parsed = config::load_partial(path);
    let runtime = Runtime::new(RuntimeConfig {
        state_dir: parsed.config.as_ref().and_then(|c| c.state_dir()),
        ..RuntimeConfig::default()
    })?;
    match plan::from_parsed(parsed, &runtime).await {
        Ok(plan) => {
            for w in &plan.warnings {
                println!("warning: {w}");
            }
            println!(
                "{}: ok ({} checks, {} policies, {} plugins)",
                path.display(),
                plan.checks.len(),
                plan.policies.len(),
                plan.plugins.plugins.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            for w in &problems.warnings {
                println!("warning: {w}");
            }
            for e in &problems.errors {
                println!("{e}");
            }
            println!("{}: {} problem(s)", path.display(), problems.errors.len());
            Ok(Exit::Config.into())
        }
    }
}
