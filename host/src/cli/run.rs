//! `mend run`: the engine in the foreground, until Ctrl-C or SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config;
use crate::engine::{Clock, Engine, shutdown};
use crate::runtime::{EngineSettings, Runtime, RuntimeConfig};
use crate::store::Store;

/// How long in-flight actions get to finish after a stop signal.
const GRACE: Duration = Duration::from_secs(30);

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
    let state_dir = config
        .state_dir()
        .context("no state directory: set engine.state_dir or MEND_STATE_DIR")?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        state_dir: Some(state_dir.clone()),
        inline_file_io: config.engine.inline_file_io,
        engine: EngineSettings {
            max_concurrent_calls: config.engine.max_concurrent.max(1) + 4,
            ..EngineSettings::default()
        },
        ..RuntimeConfig::default()
    })?);
    let clock = Clock::system();
    let (store, recovery) = Store::open(&state_dir.join("mend.db"), clock.now())?;
    if recovery.interrupted_attempts > 0 || recovery.open_incidents > 0 {
        tracing::warn!(
            interrupted_attempts = recovery.interrupted_attempts,
            open_incidents = recovery.open_incidents,
            "recovered from an unclean stop: interrupted attempts are marked, open incidents resume"
        );
    }
    let engine = Engine::new(config, runtime, Arc::new(store), clock).await?;
    tracing::info!(
        checks = engine.config().checks.len(),
        policies = engine.config().policies.len(),
        plugins = engine.plugins().count(),
        state_dir = %state_dir.display(),
        dry_run = engine.config().engine.dry_run,
        "mend is running"
    );

    let (trigger, shutdown) = shutdown::channel();
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: no new actions; letting work in flight finish");
        trigger.fire();
    });
    tokio::select! {
        _ = engine.run(shutdown) => {}
        _ = async { stop.fired().await; tokio::time::sleep(GRACE).await } => {
            tracing::error!("work in flight did not finish within {GRACE:?}; exiting anyway (it is recorded as interrupted)");
        }
    }
    match engine.exit_code() {
        Some(code) => {
            tracing::error!(code, "exiting so the supervisor restarts mend");
            Ok(ExitCode::from(code as u8))
        }
        None => {
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
