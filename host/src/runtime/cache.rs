//! The compile cache. Compiling a component takes ~100 ms; loading the
//! cached machine code takes well under a millisecond.
//!
//! Entries live in a directory the host owns, keyed by the engine's
//! compatibility hash (so a new wasmtime or other settings never load stale
//! code) and the sha256 of the wasm. Deserializing is `unsafe` because the
//! bytes are trusted machine code: that is why only files mend wrote itself,
//! in its own state directory, are ever deserialized, and never anything
//! from the plugins directory.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

pub(crate) struct CompileCache {
    dir: PathBuf,
}

/// Feeds `Hash` output into sha256, so the key is stable across runs
/// (std's `DefaultHasher` makes no such promise).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the digest is used")
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl CompileCache {
    /// A cache under `state_dir/cache/<engine compatibility hash>/`.
    pub(crate) fn open(engine: &Engine, state_dir: &Path) -> anyhow::Result<Self> {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let compat = hex::encode(&h.0.finalize()[..12]);
        let dir = state_dir.join("cache").join(compat);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating compile cache {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(
                state_dir.join("cache"),
                std::fs::Permissions::from_mode(0o700),
            );
        }
        Ok(CompileCache { dir })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The component for `wasm` (whose sha256 is `sha`), from the cache when
    /// present. Returns whether it came from the cache.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        sha: &str,
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self.dir.join(format!("{sha}.cwasm"));
        if path.exists() {
            // SAFETY: the file is in mend's own cache directory, named by the
            // sha256 of the wasm and the engine's compatibility hash, and was
            // written by `store` below. An incompatible or truncated file
            // fails cleanly and is recompiled.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable cache entry")
                }
            }
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.store(&component, &path) {
            tracing::warn!(path = %path.display(), error = %e, "could not write compile cache entry");
        }
        Ok((component, false))
    }

    /// Writes atomically: a temp file in the same directory, then rename.
    fn store(&self, component: &Component, path: &Path) -> anyhow::Result<()> {
        let bytes = component.serialize().map_err(anyhow::Error::from)?;
        let mut tmp = tempfile_in(&self.dir)?;
        tmp.1.write_all(&bytes)?;
        tmp.1.sync_all()?;
        std::fs::rename(&tmp.0, path)?;
        Ok(())
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    let path = dir.join(name.replace(['(', ')'], ""));
    let f = std::fs::File::create(&path)?;
    Ok((path, f))
}
