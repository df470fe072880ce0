//! `GET /api/v1/plugins`: the plugins in use (which version, which file,
//! which hash) and the files or names that are not usable, and why; the
//! way to see that a replaced plugin file was picked up.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::auth::Read;
use super::error::ErrorBody;
use super::views::{PluginReloadView, PluginView, PluginsView, UnusedPluginView};

/// Plugins in use and files or names that are unusable, with why.
#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses(
        (status = 200, description = "Plugins", body = PluginsView),
        (status = 401, description = "Reads need the token here", body = ErrorBody),
    ))]
pub(super) async fn list(_: Read, State(s): AppState) -> Json<PluginsView> {
    let engine = s.current.get();
    let set = engine.plugin_set();
    let mut plugins: Vec<PluginView> = set
        .plugins
        .values()
        .map(|p| PluginView {
            name: p.name().to_string(),
            version: p.manifest().version.clone(),
            sha256: p.sha256().to_string(),
            file: p.source().map(|f| f.display().to_string()),
            detector: p.is_detector(),
            action: p.is_action(),
        })
        .collect();
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    let mut errors: std::collections::BTreeMap<String, String> = set
        .broken
        .iter()
        .map(|(file, why)| (file.display().to_string(), why.clone()))
        .collect();
    for name in set.conflicts.keys().chain(set.pin_mismatches.keys()) {
        errors.insert(name.clone(), set.why_missing(name));
    }
    let unused = set
        .unused
        .iter()
        .map(|u| UnusedPluginView {
            name: u.name.clone(),
            sha256: u.sha256.clone(),
            file: u.source.display().to_string(),
        })
        .collect();
    Json(PluginsView {
        plugins,
        unused,
        errors,
        reload: engine.last_plugin_reload().map(|r| PluginReloadView {
            loaded: r.loaded,
            removed: r.removed,
            refused: r.refused,
        }),
    })
}
