//! The plugins a plan may use: the loaded directory with its identity
//! rules applied. A name belongs to one file: two files claiming it are
//! both refused unless a `[plugins.NAME] sha256` pin says which one may.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::PluginSettings;
use crate::runtime::{LoadedDir, Plugin, Unused};

/// The plugins in use, and what is wrong with the others.
#[derive(Default, Clone)]
pub struct PluginSet {
    /// By the name in each plugin's manifest.
    pub plugins: HashMap<String, Arc<Plugin>>,
    /// Files of plugins the config does not name: read and hashed, not
    /// loaded (nothing of them is resident).
    pub unused: Vec<Unused>,
    /// Files that did not load, and why.
    pub broken: BTreeMap<PathBuf, String>,
    /// Names claimed by several files (none of which is in `plugins`).
    pub conflicts: BTreeMap<String, Vec<PathBuf>>,
    /// Pins the loaded file does not match: name → (pinned, found).
    pub pin_mismatches: BTreeMap<String, (String, String)>,
    /// The directory they came from.
    pub dir: PathBuf,
}

impl PluginSet {
    /// Applies the pins to a loaded directory.
    pub fn new(
        dir: PathBuf,
        loaded: LoadedDir,
        settings: &BTreeMap<String, PluginSettings>,
    ) -> PluginSet {
        let pins: BTreeMap<&String, &str> = settings
            .iter()
            .filter_map(|(name, s)| Some((name, s.sha256.as_deref()?)))
            .collect();
        let LoadedDir {
            mut plugins,
            unused,
            errors,
            conflicts,
        } = loaded;
        let mut set = PluginSet {
            unused,
            broken: errors,
            dir,
            ..PluginSet::default()
        };
        // A pin settles a conflict: the file with the pinned content wins.
        for (name, claims) in conflicts {
            match pins
                .get(&name)
                .and_then(|pin| claims.iter().find(|p| p.sha256() == *pin))
            {
                Some(p) => {
                    plugins.insert(name, p.clone());
                }
                None => {
                    set.conflicts.insert(
                        name,
                        claims
                            .iter()
                            .filter_map(|p| p.source().map(|s| s.to_path_buf()))
                            .collect(),
                    );
                }
            }
        }
        for (name, pin) in pins {
            if let Some(p) = plugins.get(name)
                && p.sha256() != pin
            {
                set.pin_mismatches
                    .insert(name.clone(), (pin.to_string(), p.sha256().to_string()));
                plugins.remove(name);
            }
        }
        set.plugins = plugins;
        set
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    /// Why `name` cannot be called, if it cannot.
    pub fn error(&self, name: &str) -> Option<String> {
        (!self.plugins.contains_key(name)).then(|| self.why_missing(name))
    }

    /// Why `name` is not usable, for an error message.
    pub fn why_missing(&self, name: &str) -> String {
        if let Some(files) = self.conflicts.get(name) {
            return format!(
                "{} files claim the plugin name `{name}` ({}); none is loaded: remove all but one, or pin one with [plugins.{name}] sha256 = \"...\" (see `mend plugin inspect`)",
                files.len(),
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some((pinned, found)) = self.pin_mismatches.get(name) {
            return format!(
                "plugin `{name}` in {} has sha256 {found}, but [plugins.{name}] pins {pinned}: it is not loaded",
                self.dir.display()
            );
        }
        let mut m = format!("no plugin named `{name}` in {}", self.dir.display());
        m.push_str(&crate::config::suggest::hint(
            name,
            self.plugins
                .keys()
                .map(String::as_str)
                .chain(self.unused.iter().map(|u| u.name.as_str())),
        ));
        if !self.broken.is_empty() {
            m.push_str(&format!(
                " ({} file(s) there did not load: {})",
                self.broken.len(),
                self.broken
                    .keys()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        m
    }
}
