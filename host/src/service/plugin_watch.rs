//! Hot reload of plugins: the plugins directory is watched (the notify
//! crate: inotify on Linux); when a `.wasm` file appears, changes or goes,
//! the engine reloads the directory after a short quiet period, so a file
//! still being copied is read once, whole. Compiling happens in this
//! task, off the check tasks; the swap itself is one pointer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};

use super::Current;

/// How long the directory must be quiet before reloading.
const QUIET: Duration = Duration::from_millis(300);

fn is_wasm(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()) == Some("wasm")
}

/// Watches `dir` and reloads the current engine's plugins on changes,
/// until the task is dropped.
pub async fn watch(current: Arc<Current>, dir: PathBuf) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
            Ok(ev) if ev.paths.iter().any(|p| is_wasm(p)) => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("watching the plugins directory: {e}"),
        })
        .context("starting the plugins directory watcher")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching plugins directory {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), "watching the plugins directory for changes");
    while rx.recv().await.is_some() {
        // Debounce: wait until nothing changed for QUIET.
        while let Ok(Some(())) = tokio::time::timeout(QUIET, rx.recv()).await {}
        let engine = current.get();
        let report = engine.reload_plugins().await;
        if report.is_empty() {
            continue;
        }
        for p in &report.loaded {
            tracing::info!(plugin = %p, "plugin loaded; the next call uses it");
        }
        for p in &report.removed {
            tracing::warn!(plugin = %p, "plugin removed from the plugins directory");
        }
        for why in &report.refused {
            tracing::error!(dir = %dir.display(), "plugin reload refused, the running plugins stay: {why}");
        }
        engine
            .metrics()
            .reload("plugins", report.refused.is_empty());
    }
    drop(watcher);
    Ok(())
}
