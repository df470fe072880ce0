//! mend as a long-running service: systemd's notify protocol, signals
//! (SIGTERM stops, SIGHUP reloads), watching the plugins directory, and
//! which engine is serving now. `mend run` ties these together; the engine
//! knows nothing of them.

pub mod plugin_watch;
pub mod signals;
pub mod systemd;

use std::sync::{Arc, RwLock};

use crate::engine::Engine;

/// The engine serving now. A config reload replaces it; the API and the
/// plugin watcher always ask here rather than keep an engine of their own.
pub struct Current(RwLock<Arc<Engine>>);

impl Current {
    pub fn new(engine: Arc<Engine>) -> Self {
        Current(RwLock::new(engine))
    }

    pub fn get(&self) -> Arc<Engine> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, engine: Arc<Engine>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = engine;
    }
}
