//! The plugins the engine calls, and swapping them while it runs.
//!
//! The set is immutable and shared as an `Arc`: a call takes the
//! `Arc<Plugin>` it needs and keeps it to the end, so replacing the set
//! never disturbs a call in flight; the next call sees the new version.
//! A file that does not load (half written, broken) never replaces a
//! working version: the old one stays and the error is reported.

use std::collections::HashMap;
use std::sync::Arc;

use super::Engine;
use crate::config::Config;
use crate::contract::Role;
use crate::runtime::{LoadedDir, Plugin};

/// The loaded plugins, and why others are unusable.
#[derive(Default)]
pub struct PluginSet {
    /// By the name in each plugin's manifest.
    pub plugins: HashMap<String, Arc<Plugin>>,
    /// By plugin name (a plugin the config names that is missing or has
    /// the wrong role) or by file name (a file that did not load).
    pub errors: HashMap<String, String>,
}

/// What a plugin reload changed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PluginReload {
    /// `name version` of plugins new or changed.
    pub loaded: Vec<String>,
    /// Plugins whose file went away.
    pub removed: Vec<String>,
    /// Files that did not load; the previous version (if any) is kept.
    pub failed: Vec<String>,
}

impl PluginReload {
    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty() && self.removed.is_empty() && self.failed.is_empty()
    }
}

impl PluginSet {
    /// The loaded plugins, with an error for each plugin a check names
    /// that is missing or is not a detector.
    pub(super) fn resolve(config: &Config, loaded: LoadedDir) -> PluginSet {
        let LoadedDir {
            plugins,
            mut errors,
        } = loaded;
        for c in &config.checks {
            let plugin = c.plugin.get_ref();
            match plugins.get(plugin) {
                Some(p) if !p.manifest().has_role(Role::Detector) => {
                    errors.insert(plugin.clone(), format!("plugin {plugin} is not a detector"));
                }
                Some(_) => {}
                None => {
                    errors.entry(plugin.clone()).or_insert_with(|| {
                        format!(
                            "plugin {plugin} is not loaded (no such plugin in the plugins directory)"
                        )
                    });
                }
            }
        }
        PluginSet { plugins, errors }
    }

    /// Why `plugin` cannot be called, if it cannot.
    pub fn error(&self, plugin: &str) -> Option<&str> {
        self.errors.get(plugin).map(String::as_str)
    }
}

fn file_of(p: &Plugin) -> Option<String> {
    p.source()
        .and_then(|s| s.file_name())
        .map(|f| f.to_string_lossy().into_owned())
}

impl Engine {
    /// Loads the plugins directory again (compiling off the engine's
    /// tasks) and swaps the new set in at once. Files that fail to load
    /// keep their previous version; plugins whose file is gone are
    /// removed, and their checks report `plugin.error` saying so.
    pub async fn reload_plugins(&self) -> std::io::Result<PluginReload> {
        let dir = self.config.plugins_dir();
        let mut loaded = self.runtime.load_dir(&dir).await?;
        let old = self.plugin_set();
        let mut report = PluginReload::default();

        for (file, why) in &loaded.errors {
            report.failed.push(format!("{file}: {why}"));
            // Keep the version that was working, if this file held one.
            if let Some(prev) = old
                .plugins
                .values()
                .find(|p| file_of(p).as_deref() == Some(file.as_str()))
                && !loaded.plugins.contains_key(prev.name())
            {
                tracing::warn!(plugin = prev.name(), file = %file, "keeping the previous version: {why}");
                loaded.plugins.insert(prev.name().to_string(), prev.clone());
            }
        }
        for (name, p) in &loaded.plugins {
            match old.plugins.get(name) {
                Some(prev) if prev.sha256() == p.sha256() => {}
                _ => report
                    .loaded
                    .push(format!("{name} {}", p.manifest().version)),
            }
        }
        let mut set = PluginSet::resolve(&self.config, loaded);
        for name in old.plugins.keys() {
            if !set.plugins.contains_key(name) {
                report.removed.push(name.clone());
                set.errors.insert(
                    name.clone(),
                    format!(
                        "plugin {name} was removed from the plugins directory {}",
                        dir.display()
                    ),
                );
            }
        }
        report.loaded.sort();
        report.removed.sort();
        report.failed.sort();
        *self.plugins.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(report)
    }
}
