//! `mend run`: the engine as a service, in the foreground. SIGTERM or
//! Ctrl-C stops it (no new action starts; work in flight finishes within a
//! grace period and is recorded either way); SIGHUP reloads the config
//! (validated first: a bad one is logged and the running one stays), and
//! so does `POST /api/v1/reload`, which also gets the answer.
//! Under systemd it speaks the notify protocol (see `service::systemd`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::exit::Exit;
use crate::api::ReloadRequest;
use crate::api::views::ReloadedView;
use crate::config::{self, Config};
use crate::engine::{Clock, Engine, shutdown};
use crate::metrics::Metrics;
use crate::runtime::{EngineSettings, Runtime, RuntimeConfig};
use crate::service::signals::{Signal, Signals};
use crate::service::systemd::{self, Notifier};
use crate::service::{Current, plugin_watch};
use crate::store::Store;

/// How long in-flight actions get to finish after a stop signal.
const GRACE: Duration = Duration::from_secs(30);

/// What `run` needs to build engines, again on each reload.
struct Parts {
    runtime: Arc<Runtime>,
    store: Arc<Store>,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl Parts {
    async fn engine(&self, config: Config) -> anyhow::Result<Arc<Engine>> {
        let engine = Engine::with_metrics(
            config,
            self.runtime.clone(),
            self.store.clone(),
            self.clock,
            self.metrics.clone(),
        )
        .await?;
        self.metrics.init_known(engine.config());
        Ok(engine)
    }
}

/// Why a reload did not happen, or what it loaded.
enum Reloaded {
    Refused(String),
    Done(Box<Config>),
}

pub async fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = match config::load(config_path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return Ok(Exit::Config.into());
        }
    };
    let mut signals = Signals::install().context("installing signal handlers")?;
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
    let db = state_dir.join("mend.db");
    let (store, recovery) = Store::open(&db, clock.now())?;
    if recovery.interrupted_attempts > 0 || recovery.open_incidents > 0 {
        tracing::warn!(
            interrupted_attempts = recovery.interrupted_attempts,
            open_incidents = recovery.open_incidents,
            "recovered from an unclean stop: interrupted attempts are marked, open incidents resume"
        );
    }
    let parts = Parts {
        runtime,
        store: Arc::new(store),
        clock,
        metrics: Arc::new(Metrics::new()),
    };
    let notifier = Notifier::from_env();
    let mut engine = parts.engine(config).await?;
    let current = Arc::new(Current::new(engine.clone()));

    // API reload requests; one at a time (a second waits its turn).
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<ReloadRequest>(1);
    let api_config = engine.config().api.clone();
    let api = match api_config.listen_addr() {
        Some(addr) => {
            let reader = Store::open_read_only(&db)?;
            let (_, server) =
                crate::api::serve(&api_config, addr, current.clone(), reader, Some(reload_tx))
                    .await
                    .with_context(|| format!("starting the API on {addr} ([api] listen)"))?;
            Some(server)
        }
        None => None,
    };
    if engine.config().api.token().is_none() && api.is_some() {
        if api_config.is_exposed() && !api_config.public_reads {
            tracing::warn!(
                "no API token ([api] token or $MEND_API_TOKEN): every endpoint but /healthz and the dashboard page refuses"
            );
        } else {
            tracing::warn!(
                "no API token ([api] token or $MEND_API_TOKEN): endpoints that change something refuse"
            );
        }
    }

    loop {
        tracing::info!(
            checks = engine.config().checks.len(),
            policies = engine.config().policies.len(),
            plugins = engine.plugins().len(),
            state_dir = %state_dir.display(),
            dry_run = engine.config().engine.dry_run,
            api = %engine.config().api.listen,
            "mend is running"
        );
        if let Some(every) = notifier.heartbeat_interval() {
            engine.set_heartbeat_interval(every);
        }
        let (trigger, shutdown) = shutdown::channel();
        let beats = tokio::spawn(systemd::forward_heartbeats(
            engine.clone(),
            engine.heartbeats(),
            notifier,
        ));
        let watcher = {
            let (current, dir) = (current.clone(), engine.config().plugins_dir());
            tokio::spawn(async move {
                if let Err(e) = plugin_watch::watch(current, dir).await {
                    tracing::error!("plugins will not be reloaded on change: {e:#}");
                }
            })
        };
        let mut task = {
            let e = engine.clone();
            tokio::spawn(async move { e.run(shutdown).await })
        };

        let next = loop {
            tokio::select! {
                _ = &mut task => break None, // a policy asked for a restart
                sig = signals.next() => match sig {
                    Signal::Stop => {
                        tracing::info!("stopping: no new actions; letting work in flight finish");
                        notifier.stopping();
                        trigger.fire();
                        if tokio::time::timeout(GRACE, &mut task).await.is_err() {
                            let n = parts.store.interrupt_running(clock.now()).unwrap_or(0);
                            tracing::error!(
                                attempts = n,
                                "work in flight did not finish within {GRACE:?}; exiting anyway (recorded as interrupted)"
                            );
                        }
                        break None;
                    }
                    Signal::Reload => match try_reload(config_path, &parts, &notifier, &trigger, &mut task).await {
                        Reloaded::Refused(_) => {}
                        Reloaded::Done(new) => break Some((*new, None)),
                    },
                },
                Some(reply) = reload_rx.recv() => {
                    match try_reload(config_path, &parts, &notifier, &trigger, &mut task).await {
                        Reloaded::Refused(why) => {
                            let _ = reply.send(Err(format!("config reload refused; the running config stays: {why}")));
                        }
                        Reloaded::Done(new) => break Some((*new, Some(reply))),
                    }
                },
            }
        };
        beats.abort();
        watcher.abort();
        let Some((new, reply)) = next else { break };
        // Built again now the old engine is stopped, so the new one reads
        // the policy state (cooldowns, attempts, breakers) as it left it.
        let old = engine.clone();
        let mut failed = None;
        engine = match parts.engine(new).await {
            Ok(e) => {
                parts.metrics.reload("config", true);
                tracing::info!("config reloaded");
                e
            }
            Err(e) => {
                parts.metrics.reload("config", false);
                tracing::error!("config reload failed; going on with the previous config: {e:#}");
                failed = Some(format!(
                    "config reload failed; going on with the previous config: {e:#}"
                ));
                parts.engine(old.config().clone()).await?
            }
        };
        engine.adopt_state(&old);
        parts.metrics.forget_checks();
        if let Some(reply) = reply {
            let _ = reply.send(match failed {
                Some(why) => Err(why),
                None => Ok(ReloadedView {
                    reloaded: true,
                    checks: engine.config().checks.len(),
                    policies: engine.config().policies.len(),
                    plugins: engine.plugins().len(),
                }),
            });
        }
        if engine.config().api.listen != old.config().api.listen {
            tracing::warn!("[api] listen changed: it takes effect when mend restarts");
        }
        current.set(engine.clone());
    }

    if let Some(api) = api {
        api.abort();
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

/// Validates the config file; if it is good, stops the running engine's
/// tasks (work in flight finishes) and hands the new config back.
async fn try_reload(
    path: &Path,
    parts: &Parts,
    notifier: &Notifier,
    trigger: &shutdown::Trigger,
    task: &mut tokio::task::JoinHandle<()>,
) -> Reloaded {
    match validate(path, parts).await {
        Err(e) => {
            parts.metrics.reload("config", false);
            tracing::error!("config reload refused; the running config stays: {e:#}");
            Reloaded::Refused(format!("{e:#}"))
        }
        Ok(new) => {
            tracing::info!("reloading: letting work in flight finish first");
            notifier.reloading();
            trigger.fire();
            // In-flight work is bounded by plugin deadlines.
            let _ = task.await;
            Reloaded::Done(Box::new(new))
        }
    }
}

/// Loads the config again and builds an engine from it (then drops it):
/// everything a reload could trip over, checked while the old engine runs.
async fn validate(path: &Path, parts: &Parts) -> anyhow::Result<Config> {
    let config = config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    parts.engine(config.clone()).await?;
    Ok(config)
}
