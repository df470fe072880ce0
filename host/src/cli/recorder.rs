//! `mend recorder`: a replica of the central incident view (see
//! `fleet::recorder`), until SIGTERM or Ctrl-C. Run as many as you like on
//! the same `[fleet.recorder] consumer`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::config;
use crate::service::signals::{Signal, Signals};

pub async fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = match config::load(config_path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let fleet = config.fleet.as_ref().with_context(|| {
        format!(
            "{}: `mend recorder` needs [fleet] and [fleet.recorder]",
            config_path.display()
        )
    })?;
    let mut signals = Signals::install().context("installing signal handlers")?;
    let stop = async move {
        while signals.next().await != Signal::Stop {
            tracing::info!("recorder: SIGHUP ignored (restart to change the config)");
        }
    };
    crate::fleet::recorder::run(fleet, stop).await?;
    Ok(ExitCode::SUCCESS)
}
