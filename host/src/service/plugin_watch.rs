//! Hot reload of plugins: the plugins directory is watched (the notify
//! crate: inotify on Linux). Only events that can change a file's content
//! count: created, closed after writing, renamed, deleted. Opening or
//! reading a file (`cat`, `mend plugin inspect`, `mend check-config`, the
//! reload itself) is ignored, and after a quiet period the `.wasm` files
//! are hashed: the engine reloads only when a hash, or the set of files,
//! differs from the last reload. Compiling happens in this task, off the
//! check tasks; the swap itself is one pointer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use super::Current;

/// How long the directory must be quiet before looking.
const QUIET: Duration = Duration::from_millis(300);

fn is_wasm(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()) == Some("wasm")
}

/// Whether an event can have changed what a file holds (or which files
/// there are). Opens, reads, closes without writing and attribute
/// changes cannot.
pub fn changes_content(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// The sha256 of every `.wasm` file in `dir`, by path. A file that cannot
/// be read gets no hash: it may be mid-rename, and the reload reports it.
/// Read as the loader reads (non-blocking, regular files only, bounded):
/// a FIFO would hang the watcher, a symlink to `/dev/zero` exhaust memory.
pub fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, Option<String>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_wasm(p))
        .map(|p| {
            let sha = crate::runtime::read_plugin_file(&p)
                .ok()
                .map(|b| hex::encode(Sha256::digest(&b)));
            (p, sha)
        })
        .collect()
}

async fn fingerprint_off_thread(dir: &Path) -> BTreeMap<PathBuf, Option<String>> {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || fingerprint(&d))
        .await
        .unwrap_or_default()
}

/// Watches `dir` and reloads the current engine's plugins when a `.wasm`
/// file's content changes, until the task is dropped.
pub async fn watch(current: Arc<Current>, dir: PathBuf) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
            // A rescan flag means events were lost: look again.
            Ok(ev)
                if ev.need_rescan()
                    || (changes_content(&ev.kind) && ev.paths.iter().any(|p| is_wasm(p))) =>
            {
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
    let mut last = fingerprint_off_thread(&dir).await;
    while rx.recv().await.is_some() {
        // Debounce: wait until nothing changed for QUIET.
        while let Ok(Some(())) = tokio::time::timeout(QUIET, rx.recv()).await {}
        let now = fingerprint_off_thread(&dir).await;
        if now == last {
            tracing::debug!(dir = %dir.display(), "plugin files rewritten with the same content; not reloading");
            continue;
        }
        last = now;
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

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};

    #[test]
    fn only_content_changes_count() {
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
        assert!(changes_content(&EventKind::Remove(RemoveKind::File)));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        // What reading a file or the reload itself causes.
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            // Each write; the close after it is what counts.
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
        ] {
            assert!(!changes_content(&kind), "{kind:?}");
        }
    }

    #[test]
    fn the_fingerprint_sees_content_not_reads() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.wasm");
        std::fs::write(&f, b"one").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        let before = fingerprint(dir.path());
        assert_eq!(before.len(), 1);
        let _ = std::fs::read(&f).unwrap();
        assert_eq!(fingerprint(dir.path()), before);
        std::fs::write(&f, b"one").unwrap();
        assert_eq!(fingerprint(dir.path()), before, "same bytes rewritten");
        std::fs::write(&f, b"two").unwrap();
        assert_ne!(fingerprint(dir.path()), before);
        // Not plugins, and never waited on or read without end.
        let fifo = dir.path().join("x.wasm");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let zero = dir.path().join("y.wasm");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let now = fingerprint(dir.path());
        assert_eq!((now[&fifo].as_ref(), now[&zero].as_ref()), (None, None));
        assert!(now[&f].is_some());
    }
}
