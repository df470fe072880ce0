//! `mend run`: the engine as a service, in the foreground. It starts only
//! on a plan that compiles (the same check `mend check-config` makes),
//! and refuses with every problem listed. SIGTERM or Ctrl-C stops it (no
//! new action starts; work in flight finishes within a grace period and is
//! recorded either way); SIGHUP reloads the config (compiled first: a bad
//! one is logged, every problem, and the running one stays), and so does
//! `POST /api/v1/reload`, which also gets the answer. Under systemd it
//! speaks the notify protocol (see `service::systemd`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::exit::Exit;
use crate::api::ReloadRequest;
use crate::api::views::ReloadedView;
use crate::config;
use crate::engine::{Clock, Engine, shutdown};
use crate::metrics::Metrics;
use crate::plan::{self, Plan, Problems};
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
    /// Fleet mode, shared by every engine.
    fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl Parts {
    fn engine(&self, plan: Plan) -> anyhow::Result<Arc<Engine>> {
        let engine = Engine::new(
            plan,
            self.runtime.clone(),
            self.store.clone(),
            self.clock,
            self.metrics.clone(),
        )?;
        if let Some(f) = &self.fleet {
            engine.set_fleet(f.clone());
        }
        self.metrics.init_known(engine.config());
        // What parsing and compiling the config freed (much, with many
        // checks) goes back to the kernel rather than staying in glibc's
        // arenas.
        crate::runtime::release_freed_memory();
        Ok(engine)
    }
}

fn print_problems(p: &Problems) {
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
    for e in &p.errors {
        eprintln!("{e}");
    }
    eprintln!(
        "mend: not starting: {} problem(s) in the config (`mend check-config` lists the same)",
        p.errors.len()
    );
}

pub async fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    // The state directory comes from the config; the runtime (compile
    // cache, plugin state) lives there.
    let parsed = config::load_partial(config_path);
    let Some(state_dir) = parsed.config.as_ref().and_then(|c| c.state_dir()) else {
        if parsed.config.is_some() {
            eprintln!("mend: no state directory: set engine.state_dir or MEND_STATE_DIR");
        }
        print_problems(&Problems {
            errors: parsed.errors,
            warnings: Vec::new(),
        });
        return Ok(Exit::Config.into());
    };
    let inline_file_io = parsed
        .config
        .as_ref()
        .is_some_and(|c| c.engine.inline_file_io);
    let max_concurrent = parsed
        .config
        .as_ref()
        .map_or(8, |c| c.engine.max_concurrent);
    let mut signals = Signals::install().context("installing signal handlers")?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        state_dir: Some(state_dir.clone()),
        inline_file_io,
        engine: EngineSettings {
            max_concurrent_calls: max_concurrent.max(1) + 4,
            ..EngineSettings::default()
        },
        ..RuntimeConfig::default()
    })?);
    let plan = match plan::from_parsed(parsed, &runtime).await {
        Ok(plan) => plan,
        Err(problems) => {
            print_problems(&problems);
            return Ok(Exit::Config.into());
        }
    };
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
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
    let store = Arc::new(store);
    let metrics = Arc::new(Metrics::new());
    // Join the fleet when [fleet] is configured.
    let fleet = match &plan.config.fleet {
        Some(f) => Some(
            crate::fleet::Fleet::start(f, store.clone(), metrics.clone())
                .await
                .context("starting fleet mode ([fleet])")?,
        ),
        None => None,
    };
    let parts = Parts {
        runtime,
        store,
        clock,
        metrics,
        fleet,
    };
    let notifier = Notifier::from_env();
    let mut engine = parts.engine(plan)?;
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
            checks = engine.plan().checks.len(),
            policies = engine.plan().policies.len(),
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
                    Signal::Reload => match try_reload(config_path, &engine, &parts, &notifier, &trigger, &mut task).await {
                        Err(_) => {}
                        Ok(new) => break Some((new, None)),
                    },
                },
                Some(reply) = reload_rx.recv() => {
                    match try_reload(config_path, &engine, &parts, &notifier, &trigger, &mut task).await {
                        Err(why) => {
                            let _ = reply.send(Err(format!("config reload refused; the running config stays: {why}")));
                        }
                        Ok(new) => break Some((new, Some(reply))),
                    }
                },
            }
        };
        beats.abort();
        watcher.abort();
        let Some((new, reply)) = next else { break };
        // Built now the old engine is stopped, so the new one reads the
        // policy state (cooldowns, attempts, breakers) as it left it.
        let old = engine.clone();
        engine = parts.engine(new)?;
        parts.metrics.reload("config", true);
        tracing::info!("config reloaded");
        engine.adopt_state(&old);
        // Budgets reload; the connection does not.
        if let (Some(f), Some(new)) = (&parts.fleet, &engine.config().fleet) {
            f.set_budgets(new);
        }
        if engine.config().fleet.is_some() != parts.fleet.is_some() {
            tracing::warn!("[fleet] added or removed: it takes effect when mend restarts");
        }
        parts.metrics.forget_checks();
        parts.metrics.init_known(engine.config());
        if let Some(reply) = reply {
            let _ = reply.send(Ok(ReloadedView {
                reloaded: true,
                checks: engine.plan().checks.len(),
                policies: engine.plan().policies.len(),
                plugins: engine.plugins().len(),
            }));
        }
        if engine.config().api.listen != old.config().api.listen {
            tracing::warn!("[api] listen changed: it takes effect when mend restarts");
        }
        current.set(engine.clone());
    }

    if let Some(api) = api {
        api.abort();
    }
    if let Some(f) = &parts.fleet {
        f.shutdown().await;
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

/// Compiles the config file's plan while the running engine goes on (so
/// everything a reload could trip over is found before anything stops);
/// if it compiles, stops the running engine's tasks (work in flight
/// finishes) and hands the new plan back. Otherwise every problem is
/// logged and the running config stays.
async fn try_reload(
    path: &Path,
    engine: &Engine,
    parts: &Parts,
    notifier: &Notifier,
    trigger: &shutdown::Trigger,
    task: &mut tokio::task::JoinHandle<()>,
) -> Result<Plan, String> {
    match plan::load(path, &parts.runtime).await {
        Err(problems) => {
            parts.metrics.reload("config", false);
            for e in &problems.errors {
                tracing::error!("config reload refused: {e}");
            }
            tracing::error!(
                problems = problems.errors.len(),
                "config reload refused; the running config stays"
            );
            Err(problems.to_string())
        }
        Ok(new) => {
            for w in &new.warnings {
                tracing::warn!("{w}");
            }
            if new.config.state_dir() != engine.config().state_dir() {
                tracing::warn!("engine.state_dir changed: it takes effect when mend restarts");
            }
            tracing::info!("reloading: letting work in flight finish first");
            notifier.reloading();
            trigger.fire();
            // In-flight work is bounded by plugin deadlines.
            let _ = task.await;
            Ok(new)
        }
    }
}
