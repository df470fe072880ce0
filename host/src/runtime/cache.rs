//! The compile cache. Compiling a component takes ~100 ms; loading the
//! cached machine code takes well under a millisecond.
//!
//! Entries live in a directory the host owns (0700), keyed by the engine's
//! compatibility hash (so a new wasmtime or other settings never load stale
//! code) and the sha256 of the wasm. Deserializing is `unsafe` because the
//! bytes are trusted machine code, so an entry is loaded only if its
//! authentication tag (`<sha256>.tag` beside `<sha256>.cwasm`) checks out:
//! HMAC-SHA256, under a key kept 0600 in the state directory, over the
//! wasm's sha256 and the compiled bytes. A file planted or swapped in the
//! cache (by anything but this host) is recompiled, never run. Nothing from
//! the plugins directory is ever deserialized.
//!
//! An entry is mapped, not read into the heap: the descriptor whose bytes
//! were authenticated is the one wasmtime maps (through `/proc/self/fd`, so
//! a rename in between cannot swap the file), and its machine code is
//! file-backed, paged in as it runs and shared with other mend processes.
//! A freshly compiled component is written, then mapped the same way, so a
//! first start ends up holding what a cached start holds.
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
    /// A configuration whose engines make code the runtime's engine loads
    /// (same compatibility hash). Each new plugin is compiled by a fresh
    /// engine of it, dropped after: an engine keeps its compiler's
    /// scratch buffers (~100 MiB for a Python component) for its lifetime.
    compiler: Option<wasmtime::Config>,
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
    pub(crate) fn open(
        engine: &Engine,
        compiler: Option<wasmtime::Config>,
        state_dir: &Path,
    ) -> anyhow::Result<Self> {
        let compat_of = |engine: &Engine| {
            let mut h = ShaHasher(Sha256::new());
            engine.precompile_compatibility_hash().hash(&mut h);
            hex::encode(&h.0.finalize()[..12])
        };
        let compat = compat_of(engine);
        let compiler = compiler.filter(|c| {
            Engine::new(c)
                .map(|e| compat_of(&e) == compat)
                .unwrap_or(false)
        });
        let dir = state_dir.join("cache").join(compat);
        crate::private_fs::dir(&state_dir.join("cache"))?;
        crate::private_fs::dir(&dir)?;
        let key = load_or_create_key(&state_dir.join(KEY_FILE))?;
        Ok(CompileCache { dir, key, compiler })
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

    /// The component for `wasm` (whose sha256 is `sha`), from the cache when
    /// present and authentic. Returns whether it came from the cache.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        sha: &str,
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self.entry(sha);
        if let Some(component) = self.load(engine, sha, &path) {
            return Ok((component, true));
        }
        let bytes = match &self.compiler {
            Some(config) => Engine::new(config)?.precompile_component(wasm)?,
            None => engine.precompile_component(wasm)?,
        };
        match self.store(&bytes, sha, &path) {
            // Mapped from the entry just written (file-backed, like a
            // cached start's), not copied into anonymous memory.
            Ok(()) => {
                drop(bytes);
                if let Some(component) = self.load(engine, sha, &path) {
                    return Ok((component, false));
                }
                Ok((Component::new(engine, wasm)?, false))
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not write compile cache entry");
                // SAFETY: these bytes were compiled just now, in this
                // process, for this engine's configuration.
                Ok((unsafe { Component::deserialize(engine, &bytes)? }, false))
            }
        }
    }

    /// The entry at `path`, mapped, if it is a regular file whose tag is
    /// right; `None` (logged, unless absent) to recompile.
    fn load(&self, engine: &Engine, sha: &str, path: &Path) -> Option<Component> {
        let file = match open_entry(path, MAX_ENTRY_BYTES) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compile cache entry unreadable; recompiling");
                return None;
            }
        };
        match self.authenticate(sha, &file) {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    path = %path.display(),
                    "compile cache entry failed authentication; recompiling (was it tampered with?)"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compile cache entry unreadable; recompiling");
                return None;
            }
        }
        use std::os::fd::AsRawFd;
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let mapped = if by_fd.exists() {
            by_fd
        } else {
            path.to_path_buf()
        };
        // SAFETY: the bytes carry a tag only this host can make (its key is
        // 0600 in its own state directory), over this wasm's sha256: they
        // are what `store` wrote for this wasm, and `mapped` names the very
        // file they were read from. An incompatible entry (another
        // wasmtime) fails cleanly.
        match unsafe { Component::deserialize_file(engine, &mapped) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unusable cache entry");
                None
            }
        }
    }

    /// Whether the entry open as `file` carries this host's tag for `sha`
    /// (streamed: the entry is never copied into the heap). No tag file,
    /// or one of the wrong size, is a bad tag.
    fn authenticate(&self, sha: &str, mut file: &std::fs::File) -> std::io::Result<bool> {
        let tag = match read_entry(&self.tag_entry(sha), TAG_LEN as u64) {
            Ok(tag) => tag,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut mac = self.mac(&[sha.as_bytes()]);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            mac.update(&buf[..n]);
        }
        Ok(mac.verify_slice(&tag).is_ok())
    }

    pub(crate) fn entry(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}.cwasm"))
    }

    /// Writes atomically: a private temp file in the same directory, then
    /// rename.
    /// The entry is written before its tag: a reader in between finds the
    /// old tag (or none) and recompiles.
    fn store(&self, bytes: &[u8], sha: &str, path: &Path) -> anyhow::Result<()> {
        let tag = self.tag(sha, bytes);
        self.write_atomically(path, bytes)?;
        self.write_atomically(&self.tag_entry(sha), &tag)
    }

    fn tag_entry(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}.tag"))
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

/// Opens an entry as the loader opens a plugin: not following a symlink,
/// without blocking (a FIFO planted here would wait forever), a regular
/// file only, of at most `max` bytes.
fn open_entry(path: &Path, max: u64) -> std::io::Result<std::fs::File> {
    use std::io::{Error, ErrorKind};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW).bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(Error::new(ErrorKind::InvalidData, "not a regular file"));
    }
    if meta.len() > max {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(file)
}

/// Largest cache entry read (compiled code is a few times its wasm).
const MAX_ENTRY_BYTES: u64 = 1 << 30;

/// Reads an entry as the loader reads a plugin: not following a symlink,
/// without blocking (a FIFO planted here would wait forever), a regular
/// file only, bounded while reading (a device never ends).
fn read_entry(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    let file = open_entry(path, max)?;
    let len = file.metadata()?.len();
    let mut bytes = Vec::with_capacity(len.min(max) as usize);
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
        let cache = CompileCache::open(&engine, None, tmp.path()).unwrap();
        let artifact = b"machine code".to_vec();
        let entry = tmp.path().join("entry");
        let verify = |cache: &CompileCache, sha: &str, bytes: &[u8]| {
            std::fs::write(&entry, bytes).unwrap();
            cache
                .authenticate(sha, &std::fs::File::open(&entry).unwrap())
                .unwrap()
        };
        // No tag at all.
        assert!(!verify(&cache, "aaaa", &artifact));
        std::fs::write(cache.tag_entry("aaaa"), cache.tag("aaaa", &artifact)).unwrap();
        assert!(verify(&cache, "aaaa", &artifact));
        // Another plugin's entry copied over this one's name.
        assert!(!verify(&cache, "bbbb", &artifact));
        // A flipped byte, a short entry.
        let mut bad = artifact.clone();
        bad[0] ^= 1;
        assert!(!verify(&cache, "aaaa", &bad));
        assert!(!verify(&cache, "aaaa", b"short"));
        // The key persists and is private.
        let again = CompileCache::open(&engine, None, tmp.path()).unwrap();
        assert!(verify(&again, "aaaa", &artifact));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// Whether this process maps `path` (its compiled code is file-backed).
    fn mapped(path: &Path) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .any(|l| l.ends_with(&*path.display().to_string()))
    }

    #[test]
    fn a_component_is_mapped_from_its_entry_when_compiled_and_when_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompileCache::open(&engine, Some(wasmtime::Config::new()), tmp.path()).unwrap();
        assert!(cache.compiler.is_some(), "a same-hash config compiles");
        // The empty component, in binary (no `wat` feature here).
        let wasm = b"\0asm\x0d\x00\x01\x00";
        let (first, cached) = cache.load_or_compile(&engine, wasm, "aaaa").unwrap();
        assert!(!cached);
        let entry = cache.entry("aaaa");
        assert!(mapped(&entry), "a fresh compile maps the entry it wrote");
        let (second, cached) = cache.load_or_compile(&engine, wasm, "aaaa").unwrap();
        assert!(cached);
        drop((first, second));
        assert!(!mapped(&entry), "dropping the components unmaps it");
        // A config whose code this engine cannot load is not used to compile.
        let mut other = wasmtime::Config::new();
        other.consume_fuel(true);
        let cache = CompileCache::open(&engine, Some(other), tmp.path()).unwrap();
        assert!(cache.compiler.is_none());
    }

    #[test]
    fn name_records_hold_only_for_the_wasm_they_were_made_for() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompileCache::open(&engine, None, tmp.path()).unwrap();
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
