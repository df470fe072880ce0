//! One engine under tokio's paused clock, with real plugins in the sandbox
//! and a real SQLite store: the world the engine and control tests share.
//!
//! `fixture-scripted` reports whatever its control file says; the
//! `fixture-fixer` action writes into that file (or is told not to heal,
//! or to fail) and logs every call, so tests can count attempts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mend::engine::{Clock, Engine, shutdown};
use mend::metrics::Metrics;
use mend::plan::{self, Problems};
use mend::policy::health::Health;
use mend::runtime::{Runtime, RuntimeConfig};
use mend::store::{Incident, Store};

use super::artifacts;
use super::config::Conf;

/// 2026-11-22T00:00:00Z, a Sunday.
pub const START: u64 = 1_795_305_600_000;

/// A runtime for paused-clock tests, one per test binary.
pub fn paused_runtime() -> Arc<Runtime> {
    static RT: std::sync::OnceLock<Arc<Runtime>> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("mend-world-")
            .tempdir()
            .unwrap()
            .keep();
        Arc::new(
            Runtime::new(RuntimeConfig {
                state_dir: Some(dir),
                // Under tokio's paused clock, a call on a pool thread would
                // let virtual time jump to its deadline; inline, time
                // stands still while it runs.
                inline_file_io: true,
                ..RuntimeConfig::default()
            })
            .unwrap(),
        )
    })
    .clone()
}

pub struct World {
    pub ctl: tempfile::TempDir,
    pub state: tempfile::TempDir,
    pub plugins: tempfile::TempDir,
    pub engine: Arc<Engine>,
    trigger: Option<shutdown::Trigger>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl World {
    /// Starts an engine on `conf`, with `files` written into `{ctl}`. The
    /// plan must compile.
    pub async fn start(conf: &Conf, files: &[(&str, &str)]) -> World {
        match Self::try_start(conf, files).await {
            Ok(w) => w,
            Err(p) => panic!("the test config does not compile:\n{p}"),
        }
    }

    /// Like [`World::start`], returning the plan's problems.
    pub async fn try_start(conf: &Conf, files: &[(&str, &str)]) -> Result<World, Problems> {
        let ctl = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let plugins = tempfile::tempdir().unwrap();
        for p in [artifacts::SCRIPTED, artifacts::FIXER] {
            let name = Path::new(p).file_name().unwrap();
            std::fs::copy(p, plugins.path().join(name)).unwrap();
        }
        for (f, content) in files {
            std::fs::write(ctl.path().join(f), content).unwrap();
        }
        let file = state.path().join("mend.toml");
        let text = conf.render(&[
            ("ctl", ctl.path()),
            ("plugins", plugins.path()),
            ("state", state.path()),
        ]);
        std::fs::write(&file, text).unwrap();
        Self::boot(ctl, state, plugins, START).await
    }

    /// Stops this engine (as SIGTERM does) and starts a new one on the
    /// same config, store and directories, its clock going on from here.
    pub async fn restart(mut self) -> World {
        let now = self.engine.clock().now();
        self.trigger.take().unwrap().fire();
        self.task.take().unwrap().await.unwrap();
        let (ctl, state, plugins) = (
            std::mem::replace(&mut self.ctl, tempfile::tempdir().unwrap()),
            std::mem::replace(&mut self.state, tempfile::tempdir().unwrap()),
            std::mem::replace(&mut self.plugins, tempfile::tempdir().unwrap()),
        );
        match Self::boot(ctl, state, plugins, now).await {
            Ok(w) => w,
            Err(p) => panic!("the test config does not compile:\n{p}"),
        }
    }

    async fn boot(
        ctl: tempfile::TempDir,
        state: tempfile::TempDir,
        plugins: tempfile::TempDir,
        start: u64,
    ) -> Result<World, Problems> {
        let file = state.path().join("mend.toml");
        let plan = plan::load(&file, &paused_runtime()).await?;
        let clock = Clock::starting_at(start);
        let (store, _) = Store::open(&state.path().join("mend.db"), clock.now()).unwrap();
        let engine = Engine::new(
            plan,
            paused_runtime(),
            Arc::new(store),
            clock,
            Arc::new(Metrics::new()),
        )
        .unwrap();
        let (stop, shutdown) = shutdown::channel();
        let e = engine.clone();
        let task = tokio::spawn(async move { e.run(shutdown).await });
        // Let the check tasks start; each check's first run is at start.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let w = World {
            ctl,
            state,
            plugins,
            engine,
            trigger: Some(stop),
            task: Some(task),
        };
        // Deterministically past those first runs (a stuck one is not
        // waited for beyond a second).
        for _ in 0..100 {
            if w.engine.snapshot().iter().all(|c| c.last.is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(w)
    }

    pub fn set(&self, file: &str, content: &str) {
        std::fs::write(self.ctl.path().join(file), content).unwrap();
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.ctl.path().join(file)).unwrap_or_default()
    }

    /// Lines the fixer logged to `file`.
    pub fn calls(&self, file: &str) -> Vec<String> {
        self.read(file).lines().map(str::to_string).collect()
    }

    /// Every incident, oldest first.
    pub fn incidents(&self) -> Vec<Incident> {
        let mut v = self.engine.store().incidents(false, 100).unwrap();
        v.reverse();
        v
    }

    pub fn health(&self, check: &str) -> Health {
        self.engine
            .snapshot()
            .into_iter()
            .find(|c| c.name == check)
            .unwrap()
            .health
    }

    pub fn last_at(&self, check: &str) -> Option<u64> {
        self.engine
            .snapshot()
            .into_iter()
            .find(|c| c.name == check)
            .and_then(|c| c.last.map(|l| l.at))
    }

    /// Waits (in virtual time) for check `check` to finish its next run.
    pub async fn next_run(&self, check: &str) {
        let before = self.last_at(check);
        for _ in 0..100_000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if self.last_at(check) != before {
                return;
            }
        }
        panic!("check {check} did not run");
    }

    pub async fn runs(&self, check: &str, n: usize) {
        for _ in 0..n {
            self.next_run(check).await;
        }
    }

    pub async fn stop(mut self) {
        self.trigger.take().unwrap().fire();
        self.task.take().unwrap().await.unwrap();
    }
}

/// Sleeps in (virtual) time.
pub async fn wait(d: Duration) {
    tokio::time::sleep(d).await;
}
