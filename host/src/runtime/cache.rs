//! The compile cache. Compiling a component takes ~100 ms; loading the
//! cached machine code takes well under a millisecond.
//!
//! Entries live in a directory the host owns (0700), keyed by the engine's
//! compatibility hash (so a new wasmtime or other settings never load stale
//! code) and the sha256 of the wasm. Deserializing is `unsafe` because the
//! bytes are trusted machine code, so an entry is loaded only if its
//! authentication tag checks out: HMAC-SHA256, under a key kept 0600 in the
//! state directory, over the wasm's sha256 and the compiled bytes. A file
//! planted or swapped in the cache (by anything but this host) is
//! recompiled, never run. Nothing from the plugins directory is ever
//! deserialized.
//!
//! Beside each entry, `<sha256>.name` remembers the name the plugin's
//! `describe()` gave, under its own tag: a later start can tell which
//! plugin a file is without compiling or loading it, so files the plan does
//! not reference cost a read and a hash, not memory. A forged name file
//! fails its tag and the file is loaded to find out.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const TAG_LEN: usize = 32;
const KEY_FILE: &str = "cache.key";

pub(crate) struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
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

/// Why a cache entry was not used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Too short to hold a tag, or the tag does not match.
    BadTag,
}

impl CompileCache {
    /// A cache under `state_dir/cache/<engine compatibility hash>/`.
    pub(crate) fn open(engine: &Engine, state_dir: &Path) -> anyhow::Result<Self> {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let compat = hex::encode(&h.0.finalize()[..12]);
        let dir = state_dir.join("cache").join(compat);
        crate::private_fs::dir(&state_dir.join("cache"))?;
        crate::private_fs::dir(&dir)?;
        let key = load_or_create_key(&state_dir.join(KEY_FILE))?;
        Ok(CompileCache { dir, key })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// HMAC under this host's key over `parts`, in order.
    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("any key size");
        for p in parts {
            mac.update(p);
        }
        mac
    }

    fn tag(&self, sha: &str, artifact: &[u8]) -> [u8; TAG_LEN] {
        self.mac(&[sha.as_bytes(), artifact])
            .finalize()
            .into_bytes()
            .into()
    }

    /// The tag of a name file: a different domain from compiled entries,
    /// so neither can pass for the other.
    fn name_mac(&self, sha: &str, name: &str) -> Hmac<Sha256> {
        self.mac(&[b"name\0", sha.as_bytes(), name.as_bytes()])
    }

    /// The plugin name this host recorded for the wasm with sha256 `sha`,
    /// if it recorded one and the record is authentic.
    pub(crate) fn name_of(&self, sha: &str) -> Option<String> {
        let entry = read_entry(&self.name_entry(sha), (TAG_LEN + 256) as u64).ok()?;
        if entry.len() < TAG_LEN {
            return None;
        }
        let (name, tag) = entry.split_at(entry.len() - TAG_LEN);
        let name = std::str::from_utf8(name).ok()?;
        if self.name_mac(sha, name).verify_slice(tag).is_err() {
            tracing::warn!(sha256 = %sha, "plugin name record failed authentication; loading the file to find out");
            return None;
        }
        Some(name.to_string())
    }

    /// Records the name `describe()` gave the wasm with sha256 `sha`.
    pub(crate) fn remember_name(&self, sha: &str, name: &str) {
        if self.name_of(sha).as_deref() == Some(name) {
            return;
        }
        let mut bytes = name.as_bytes().to_vec();
        bytes.extend_from_slice(&self.name_mac(sha, name).finalize().into_bytes());
        if let Err(e) = self.write_atomically(&self.name_entry(sha), &bytes) {
            tracing::warn!(sha256 = %sha, error = %e, "could not record the plugin's name in the compile cache");
        }
    }

    fn name_entry(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}.name"))
    }

    /// The compiled bytes of an entry, if its tag is right.
    pub(crate) fn verify<'a>(&self, sha: &str, entry: &'a [u8]) -> Result<&'a [u8], Rejected> {
        if entry.len() < TAG_LEN {
            return Err(Rejected::BadTag);
        }
        let (artifact, tag) = entry.split_at(entry.len() - TAG_LEN);
        self.mac(&[sha.as_bytes(), artifact])
            .verify_slice(tag)
            .map_err(|_| Rejected::BadTag)?;
        Ok(artifact)
    }

    /// The component for `wasm` (whose sha256 is `sha`), from the cache when
    /// present and authentic. Returns whether it came from the cache.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        sha: &str,
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self.entry(sha);
        let entry = match read_entry(&path, MAX_ENTRY_BYTES) {
            Ok(entry) => Some(entry),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compile cache entry unreadable; recompiling");
                None
            }
        };
        if let Some(entry) = entry {
            match self.verify(sha, &entry) {
                // SAFETY: the bytes carry a tag only this host can make (its
                // key is 0600 in its own state directory), over this wasm's
                // sha256: they are what `store` below wrote for this wasm.
                // An incompatible entry (another wasmtime) fails cleanly.
                Ok(artifact) => match unsafe { Component::deserialize(engine, artifact) } {
                    Ok(c) => return Ok((c, true)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "discarding unusable cache entry")
                    }
                },
                Err(Rejected::BadTag) => tracing::warn!(
                    path = %path.display(),
                    "compile cache entry failed authentication; recompiling (was it tampered with?)"
                ),
            }
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.store(&component, sha, &path) {
            tracing::warn!(path = %path.display(), error = %e, "could not write compile cache entry");
        }
        Ok((component, false))
    }

    pub(crate) fn entry(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}.cwasm"))
    }

    /// Writes atomically: a private temp file in the same directory, then
    /// rename.
    fn store(&self, component: &Component, sha: &str, path: &Path) -> anyhow::Result<()> {
        let mut bytes = component.serialize().map_err(anyhow::Error::from)?;
        let tag = self.tag(sha, &bytes);
        bytes.extend_from_slice(&tag);
        self.write_atomically(path, &bytes)
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{}", std::process::id(), fastrand::u64(..)));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Largest cache entry read (compiled code is a few times its wasm).
const MAX_ENTRY_BYTES: u64 = 1 << 30;

/// Reads an entry as the loader reads a plugin: not following a symlink,
/// without blocking (a FIFO planted here would wait forever), a regular
/// file only, bounded while reading (a device never ends).
fn read_entry(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW).bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(Error::new(ErrorKind::InvalidData, "not a regular file"));
    }
    let mut bytes = Vec::with_capacity(meta.len().min(max) as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// The cache's key: 32 random bytes, created once, readable by mend alone.
fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    if let Ok(bytes) = std::fs::read(path)
        && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        crate::private_fs::file(path)?;
        return Ok(key);
    }
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom for the compile cache key")?;
    let tmp = path.with_extension("key.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&key)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("creating {}", path.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_entries_this_host_tagged_for_this_wasm_verify() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompileCache::open(&engine, tmp.path()).unwrap();
        let artifact = b"machine code".to_vec();
        let mut entry = artifact.clone();
        entry.extend_from_slice(&cache.tag("aaaa", &artifact));
        assert_eq!(cache.verify("aaaa", &entry), Ok(&artifact[..]));
        // Another plugin's entry copied over this one's name.
        assert_eq!(cache.verify("bbbb", &entry), Err(Rejected::BadTag));
        // A flipped byte.
        let mut bad = entry.clone();
        bad[0] ^= 1;
        assert_eq!(cache.verify("aaaa", &bad), Err(Rejected::BadTag));
        assert_eq!(cache.verify("aaaa", b"short"), Err(Rejected::BadTag));
        // The key persists and is private.
        let again = CompileCache::open(&engine, tmp.path()).unwrap();
        assert_eq!(again.verify("aaaa", &entry), Ok(&artifact[..]));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn name_records_hold_only_for_the_wasm_they_were_made_for() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompileCache::open(&engine, tmp.path()).unwrap();
        assert_eq!(cache.name_of("aaaa"), None);
        cache.remember_name("aaaa", "disk-cleanup");
        assert_eq!(cache.name_of("aaaa").as_deref(), Some("disk-cleanup"));
        // Copied to another wasm's name: not believed.
        std::fs::copy(cache.name_entry("aaaa"), cache.name_entry("bbbb")).unwrap();
        assert_eq!(cache.name_of("bbbb"), None);
        // A compiled entry's tag does not pass for a name record.
        let mut entry = b"x".to_vec();
        entry.extend_from_slice(&cache.tag("aaaa", b"x"));
        std::fs::write(cache.name_entry("aaaa"), &entry).unwrap();
        assert_eq!(cache.name_of("aaaa"), None);
        // Rewritten with another name by hand: not believed.
        let mut forged = std::fs::read(cache.name_entry("bbbb")).unwrap();
        forged[0] ^= 1;
        std::fs::write(cache.name_entry("aaaa"), &forged).unwrap();
        assert_eq!(cache.name_of("aaaa"), None);
    }
}
