//! `GET /api/v1/plugins`: the plugins in use (which version, which file,
//! which hash) and the files or names that are not usable, and why; the
//! way to see that a replaced plugin file was picked up.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;

pub(super) async fn list(State(s): AppState) -> Json<Value> {
    let engine = s.current.get();
    let set = engine.plugin_set();
    let mut plugins: Vec<Value> = set
        .plugins
        .values()
        .map(|p| {
            json!({
                "name": p.name(),
                "version": p.manifest().version,
                "sha256": p.sha256(),
                "file": p.source().map(|f| f.display().to_string()),
                "detector": p.is_detector(),
                "action": p.is_action(),
            })
        })
        .collect();
    plugins.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let mut errors = serde_json::Map::new();
    for (file, why) in &set.broken {
        errors.insert(file.display().to_string(), json!(why));
    }
    for name in set.conflicts.keys().chain(set.pin_mismatches.keys()) {
        errors.insert(name.clone(), json!(set.why_missing(name)));
    }
    Json(json!({
        "plugins": plugins,
        "errors": errors,
        "reload": engine.last_plugin_reload(),
    }))
}
