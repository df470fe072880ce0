//! Swapping plugins while the engine runs.
//!
//! The set is immutable and shared as an `Arc`: a call takes the
//! `Arc<Plugin>` it needs and keeps it to the end, so replacing the set
//! never disturbs a call in flight; the next call sees the new version. A
//! new set is used only if the running config still compiles with it (the
//! same [`Plan::compile`](crate::plan::Plan::compile) as at start): a file
//! that does not load, a plugin that went away, a new version that refuses
//! its config, or a different file claiming a loaded plugin's name leaves
//! the running plugins in place and is reported.

use std::sync::Arc;

use super::Engine;
use crate::plan::{self, Plan};

/// What a plugin reload changed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PluginReload {
    /// `name version` of plugins new or changed.
    pub loaded: Vec<String>,
    /// Plugins whose file went away (and nothing used).
    pub removed: Vec<String>,
    /// Why the new set was not taken (the running plugins stay).
    pub refused: Vec<String>,
}

impl PluginReload {
    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty() && self.removed.is_empty() && self.refused.is_empty()
    }
}

impl Engine {
    /// Loads the plugins directory again (compiling off the engine's
    /// tasks), checks the running config against it, and swaps the new set
    /// in at once when it fits.
    pub async fn reload_plugins(&self) -> PluginReload {
        let config = self.config();
        let new = plan::load_plugins(config, &self.runtime).await;
        let old = self.plugin_set();
        let mut report = PluginReload::default();
        // A name is tied to its file: another file may not take it over.
        for (name, p) in &new.plugins {
            if let Some(prev) = old.plugins.get(name)
                && prev.source() != p.source()
                && config
                    .plugins
                    .get(name)
                    .is_none_or(|pin| pin.sha256.as_deref() != Some(p.sha256()))
            {
                report.refused.push(format!(
                    "{} claims plugin `{name}`, which is loaded from {}: restart mend (or pin it in [plugins.{name}]) to change which file carries it",
                    p.source().map(|s| s.display().to_string()).unwrap_or_default(),
                    prev.source().map(|s| s.display().to_string()).unwrap_or_default(),
                ));
            }
        }
        for (name, p) in &new.plugins {
            match old.plugins.get(name) {
                Some(prev) if prev.sha256() == p.sha256() => {}
                _ => report
                    .loaded
                    .push(format!("{name} {}", p.manifest().version)),
            }
        }
        for name in old.plugins.keys() {
            if !new.plugins.contains_key(name) {
                report.removed.push(name.clone());
            }
        }
        if report.loaded.is_empty() && report.removed.is_empty() && report.refused.is_empty() {
            // Nothing to swap, but an earlier refusal no longer holds.
            *super::lock(&self.last_reload) = Some(report.clone());
            return report;
        }
        if report.refused.is_empty()
            && let Err(problems) = Plan::compile(config.clone(), new.clone(), &self.runtime).await
        {
            report
                .refused
                .extend(problems.errors.iter().map(|e| e.to_string()));
        }
        report.loaded.sort();
        report.removed.sort();
        if report.refused.is_empty() {
            *self.plugins.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        } else {
            report.loaded.clear();
            report.removed.clear();
        }
        *super::lock(&self.last_reload) = Some(report.clone());
        report
    }
}
