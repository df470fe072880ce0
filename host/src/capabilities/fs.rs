//! Directory grants: WASI preopens, and `mend:plugin/fs` (disk usage, the
//! metadata of many paths in one call, a bounded walk).
//!
//! A plugin sees only the granted directories, at the guest path the
//! operator chose, read-only unless the grant says `rw`. WASI resolves every
//! path beneath a preopen (`..`, absolute paths and symlinks cannot escape).
//! `mend:plugin/fs` answers through cap-std for the same reason: each lookup
//! happens beneath the granted directory's handle, never by ambient path.
//! Nothing but directories is ever opened (metadata comes from `fstatat` or
//! an `O_PATH` descriptor), so a FIFO or a device cannot block the host.
//! These calls are synchronous: a call granted directories runs on its own
//! pool thread (`runtime/call.rs`), where a hung mount blocks only that
//! thread and the deadline still ends the call.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata, MetadataExt};
use serde::{Deserialize, Serialize};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::contract::{DirNeed, HostError};

/// Read-only or read-write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Ro,
    Rw,
}

/// One directory grant as the operator writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the plugin sees it; defaults to the host path.
    #[serde(default)]
    pub guest: Option<String>,
    #[serde(default)]
    pub mode: Mode,
}

/// A checked directory grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDir {
    /// Canonical host path.
    pub host: PathBuf,
    /// Normalised guest path, e.g. `/data`.
    pub guest: String,
    pub write: bool,
}

/// Splits an absolute guest path into components, refusing `..`.
pub fn guest_components(path: &str) -> Result<Vec<&str>, String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` is not an absolute path"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("`{path}` contains `..`")),
            p => parts.push(p),
        }
    }
    Ok(parts)
}

pub(super) fn resolve(grants: &[DirGrant]) -> anyhow::Result<Vec<ResolvedDir>> {
    let mut out: Vec<ResolvedDir> = Vec::new();
    for g in grants {
        let host = g
            .host
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("directory grant `{}`: {e}", g.host.display()))?;
        if !host.is_dir() {
            anyhow::bail!("directory grant `{}`: not a directory", g.host.display());
        }
        let guest_raw = match &g.guest {
            Some(s) => s.clone(),
            None => g.host.to_string_lossy().into_owned(),
        };
        let parts = guest_components(&guest_raw).map_err(|e| {
            anyhow::anyhow!("directory grant `{}`: guest path {e}", g.host.display())
        })?;
        let guest = format!("/{}", parts.join("/"));
        if out.iter().any(|d| d.guest == guest) {
            anyhow::bail!(
                "directory grant `{}`: guest path `{guest}` is granted twice",
                g.host.display()
            );
        }
        out.push(ResolvedDir {
            host,
            guest,
            write: g.mode == Mode::Rw,
        });
    }
    Ok(out)
}

/// The first directory need the grants do not cover.
pub(super) fn missing(needs: &[DirNeed], dirs: &[ResolvedDir]) -> Option<String> {
    for need in needs {
        let ok = if need.path == "*" {
            dirs.iter().any(|d| d.write || !need.write)
        } else {
            match guest_components(&need.path) {
                Ok(want) => dirs.iter().any(|d| {
                    let have = guest_components(&d.guest).unwrap_or_default();
                    want.starts_with(&have) && (d.write || !need.write)
                }),
                Err(_) => false,
            }
        };
        if !ok {
            let mode = if need.write {
                "read-write"
            } else {
                "read-only"
            };
            let what = if need.path == "*" {
                "a directory".to_string()
            } else {
                format!("directory `{}`", need.path)
            };
            return Some(format!("{what} ({mode})"));
        }
    }
    None
}

/// Adds the granted directories as WASI preopens. In a dry run every
/// directory is read-only, whatever the grant: nothing can be written.
pub(crate) fn preopen(
    builder: &mut WasiCtxBuilder,
    dirs: &[ResolvedDir],
    dry_run: bool,
) -> anyhow::Result<()> {
    for d in dirs {
        let perms = if d.write && !dry_run {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&d.host, &d.guest, perms)
            .map_err(|e| anyhow::anyhow!("preopening {}: {e}", d.host.display()))?;
    }
    Ok(())
}

/// Usage of one filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
}

/// Per-call state of `mend:plugin/fs`.
pub struct FsCap {
    pub(crate) dirs: Vec<ResolvedDir>,
}

/// What a path names; a symlink is reported as one unless followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    BlockDevice,
    CharDevice,
    Unknown,
}

/// The metadata `stat_many` and `walk` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub kind: FileKind,
    /// Bytes (of the link itself, for a symlink).
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch.
    pub modified_ms: i64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

impl FileStat {
    fn of(m: &Metadata) -> FileStat {
        FileStat::from_stat(m.mode(), m.len(), m.mtime(), m.mtime_nsec())
    }

    /// From `stat`'s fields: the whole `st_mode` (type and permissions),
    /// the size, and the modification time.
    fn from_stat(st_mode: u32, size: u64, mtime: i64, mtime_nsec: i64) -> FileStat {
        use rustix::fs::FileType as T;
        let kind = match T::from_raw_mode(st_mode) {
            T::RegularFile => FileKind::File,
            T::Directory => FileKind::Directory,
            T::Symlink => FileKind::Symlink,
            T::Fifo => FileKind::Fifo,
            T::Socket => FileKind::Socket,
            T::CharacterDevice => FileKind::CharDevice,
            T::BlockDevice => FileKind::BlockDevice,
            T::Unknown => FileKind::Unknown,
        };
        FileStat {
            kind,
            size,
            modified_ms: mtime
                .saturating_mul(1000)
                .saturating_add(mtime_nsec / 1_000_000),
            mode: st_mode & 0o7777,
        }
    }
}

/// The metadata of `name` in `dir`, a symlink reported as itself: one
/// `fstatat(AT_SYMLINK_NOFOLLOW)`. Safe without cap-std's resolution because
/// `name` is one normal name (no `/`, not `.` or `..`, checked by the
/// caller), so nothing is traversed and nothing is opened; cap-std took the
/// same syscall through `Path` parsing and a full `Metadata`.
fn stat_name(dir: &Dir, name: &str) -> std::io::Result<FileStat> {
    debug_assert!(
        is_normal(name) && !name.contains('/'),
        "`{name}` is not one name"
    );
    let s = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(FileStat::from_stat(
        s.st_mode,
        s.st_size as u64,
        s.st_mtime as i64,
        s.st_mtime_nsec as i64,
    ))
}

/// How far a walk may go; each is capped by the host's own bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Directory levels below the start: its own entries are depth 1.
    pub max_depth: u32,
    /// Entries reported, at most.
    pub max_entries: u32,
}

/// One entry a walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkEntry {
    /// Relative to the walked directory, `/`-separated.
    pub path: String,
    pub stat: FileStat,
}

/// Paths one `stat_many` call may ask about.
pub const MAX_STAT_PATHS: usize = 10_000;
/// The host's bound on a walk's `max_entries`.
pub const MAX_WALK_ENTRIES: u32 = 100_000;
/// The host's bound on a walk's `max_depth`.
pub const MAX_WALK_DEPTH: u32 = 64;
/// Bytes of one walk's reply (paths plus a fixed cost per entry).
pub const MAX_WALK_REPLY_BYTES: usize = 8 << 20;
/// What one entry costs in a reply besides its path.
const ENTRY_BYTES: usize = 32;

fn io_error(path: &str, e: std::io::Error) -> HostError {
    // cap-std says PermissionDenied for a path that would lead outside the
    // directory handle, as the kernel does for a file mode that refuses.
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        HostError::denied(format!("`{path}`: {e}"))
    } else {
        HostError::failed(format!("`{path}`: {e}"))
    }
}

/// Handles one call opened, reused across its paths: each grant's root as
/// it is first needed, and the last parent directory looked in (paths come
/// grouped by directory), so a call holds at most grants + 1 descriptors.
#[derive(Default)]
struct Opened {
    roots: Vec<Option<Dir>>,
    parent: Option<(usize, String, Dir)>,
}

/// Whether `rest` (a path below a grant) is already `/`-separated normal
/// names: no empty name, no `.`, no `..`. One pass over the bytes: this
/// runs for every path of a `stat_many` call, where `str::split` cost
/// about 200 instructions a path.
fn is_normal(rest: &str) -> bool {
    fn is_name(len: usize, dots: usize) -> bool {
        len > 0 && !(dots == len && len <= 2)
    }
    let (mut len, mut dots) = (0, 0);
    for &b in rest.as_bytes() {
        if b == b'/' {
            if !is_name(len, dots) {
                return false;
            }
            (len, dots) = (0, 0);
        } else {
            len += 1;
            dots += usize::from(b == b'.');
        }
    }
    is_name(len, dots)
}

impl FsCap {
    /// The grant `path` lies in (the deepest one) and the rest of the path
    /// beneath it: `/`-separated normal names, empty for the grant itself.
    /// Borrowed from `path` when it is already normal (the usual case, no
    /// allocation per path); a path with `..` is refused either way.
    fn locate<'p>(&self, path: &'p str) -> Result<(usize, Cow<'p, str>), HostError> {
        let normal = path
            .strip_prefix('/')
            .is_some_and(|r| r.is_empty() || is_normal(r));
        if normal {
            let (index, rest) = self.locate_normal(path)?;
            return Ok((index, Cow::Borrowed(rest)));
        }
        let parts = guest_components(path).map_err(HostError::Denied)?;
        let rebuilt = format!("/{}", parts.join("/"));
        let (index, rest) = self.locate_normal(&rebuilt).map_err(|_| {
            HostError::denied(format!("`{path}` is not inside a granted directory"))
        })?;
        Ok((index, Cow::Owned(rest.to_string())))
    }

    /// [`FsCap::locate`] for a normal absolute path (`/` or `/a/b`); grant
    /// guest paths are normal too (`resolve`), so a prefix that ends at a
    /// `/` or at the end is a grant the path lies in.
    fn locate_normal<'p>(&self, path: &'p str) -> Result<(usize, &'p str), HostError> {
        let mut best: Option<(usize, &'p str)> = None;
        for (index, grant) in self.dirs.iter().enumerate() {
            let rest = if grant.guest == "/" {
                Some(&path[1..])
            } else {
                path.strip_prefix(grant.guest.as_str()).and_then(|r| {
                    if r.is_empty() {
                        Some(r)
                    } else {
                        r.strip_prefix('/')
                    }
                })
            };
            if let Some(rest) = rest
                && best.is_none_or(|(b, _)| self.dirs[b].guest.len() < grant.guest.len())
            {
                best = Some((index, rest));
            }
        }
        best.ok_or_else(|| HostError::denied(format!("`{path}` is not inside a granted directory")))
    }

    fn open_root(&self, index: usize) -> Result<Dir, HostError> {
        let grant = &self.dirs[index];
        Dir::open_ambient_dir(&grant.host, ambient_authority())
            .map_err(|e| HostError::failed(format!("{}: {e}", grant.guest)))
    }

    /// The metadata of each path (guest paths, each inside a granted
    /// directory), in order: `None` where nothing exists. A symlink is
    /// reported as itself unless `follow`, and followed only while it stays
    /// beneath its grant. At most [`MAX_STAT_PATHS`] paths.
    pub fn stat_many(
        &self,
        paths: &[String],
        follow: bool,
    ) -> Result<Vec<Result<Option<FileStat>, HostError>>, HostError> {
        if paths.len() > MAX_STAT_PATHS {
            return Err(HostError::limit(format!(
                "{} paths in one stat-many call; at most {MAX_STAT_PATHS}",
                paths.len()
            )));
        }
        let mut opened = Opened {
            roots: (0..self.dirs.len()).map(|_| None).collect(),
            parent: None,
        };
        Ok(paths
            .iter()
            .map(|p| self.stat_one(&mut opened, p, follow))
            .collect())
    }

    fn stat_one(
        &self,
        opened: &mut Opened,
        path: &str,
        follow: bool,
    ) -> Result<Option<FileStat>, HostError> {
        let (index, rest) = self.locate(path)?;
        let Opened {
            roots,
            parent: last,
        } = opened;
        if roots[index].is_none() {
            roots[index] = Some(self.open_root(index)?);
        }
        let root = roots[index].as_ref().expect("opened above");
        let found = |r: std::io::Result<Metadata>| match r {
            Ok(m) => Ok(Some(FileStat::of(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(path, e)),
        };
        if rest.is_empty() {
            return found(root.dir_metadata());
        }
        let (parent, name) = match rest.as_bytes().iter().rposition(|&b| b == b'/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => ("", &*rest),
        };
        let dir = if parent.is_empty() {
            root
        } else {
            let cached = matches!(last, Some((i, p, _)) if *i == index && p == parent);
            if !cached {
                // Beneath the root: a parent that is (or passes through) a
                // symlink out of the grant is refused here.
                match root.open_dir(parent) {
                    Ok(d) => *last = Some((index, parent.to_string(), d)),
                    Err(e) => return found(Err(e)),
                }
            }
            &last.as_ref().expect("cached above").2
        };
        match stat_name(dir, name) {
            Ok(s) if follow && s.kind == FileKind::Symlink => found(root.metadata(&*rest)),
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// Every entry beneath `dir` (a guest path inside a grant), never
    /// following a symlink (reported, not descended) and never opening
    /// anything but directories. Bounded by `limits` and the host's caps:
    /// going past any is a `Limit` error naming it.
    pub fn walk(&self, dir: &str, limits: WalkLimits) -> Result<Vec<WalkEntry>, HostError> {
        if limits.max_entries > MAX_WALK_ENTRIES {
            return Err(HostError::limit(format!(
                "walk `{dir}`: max-entries {} is above the host's bound of {MAX_WALK_ENTRIES}",
                limits.max_entries
            )));
        }
        if limits.max_depth > MAX_WALK_DEPTH {
            return Err(HostError::limit(format!(
                "walk `{dir}`: max-depth {} is above the host's bound of {MAX_WALK_DEPTH}",
                limits.max_depth
            )));
        }
        let (index, rest) = self.locate(dir)?;
        let root = self.open_root(index)?;
        let start = if rest.is_empty() {
            root
        } else {
            root.open_dir(&*rest).map_err(|e| io_error(dir, e))?
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        // Directories still to list: relative path and depth. Each is opened
        // beneath `start` when its turn comes, so a walk holds two
        // descriptors however wide the tree.
        let mut pending: Vec<(String, u32)> = vec![(String::new(), 0)];
        while let Some((rel, depth)) = pending.pop() {
            let shown = |rel: &str| format!("{}/{rel}", dir.trim_end_matches('/'));
            let listing = if rel.is_empty() {
                start.entries()
            } else {
                start.open_dir(&rel).and_then(|d| d.entries())
            }
            .map_err(|e| io_error(&shown(&rel), e))?;
            for entry in listing {
                let entry = entry.map_err(|e| io_error(&shown(&rel), e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                if depth + 1 > limits.max_depth {
                    return Err(HostError::limit(format!(
                        "walk `{dir}`: `{}` is deeper than max-depth {}",
                        shown(&path),
                        limits.max_depth
                    )));
                }
                if out.len() >= limits.max_entries as usize {
                    return Err(HostError::limit(format!(
                        "walk `{dir}`: more than max-entries {} entries",
                        limits.max_entries
                    )));
                }
                bytes += path.len() + ENTRY_BYTES;
                if bytes > MAX_WALK_REPLY_BYTES {
                    return Err(HostError::limit(format!(
                        "walk `{dir}`: the reply would pass the host's bound of {MAX_WALK_REPLY_BYTES} bytes"
                    )));
                }
                // `fstatat(AT_SYMLINK_NOFOLLOW)` in the listed directory.
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    // Gone since it was listed.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(&shown(&path), e)),
                };
                let stat = FileStat::of(&meta);
                if stat.kind == FileKind::Directory {
                    pending.push((path.clone(), depth + 1));
                }
                out.push(WalkEntry { path, stat });
            }
        }
        Ok(out)
    }

    /// Usage of the filesystem holding `path` (a guest path).
    pub fn disk_usage(&self, path: &str) -> Result<DiskUsage, HostError> {
        let (index, rest) = self.locate(path)?;
        let rest = Path::new(&*rest);
        let failed = |e: std::io::Error| HostError::failed(format!("`{path}`: {e}"));
        let root = self.open_root(index)?;
        // Nothing is ever opened but directories: opening a FIFO or a
        // device could block the host. A file's filesystem is its
        // directory's. cap-std resolves `rest` beneath `root`, so symlinks
        // that point outside fail instead of being followed.
        let stat = if rest.as_os_str().is_empty() {
            rustix::fs::fstatvfs(&root)
        } else {
            let meta = root.metadata(rest).map_err(failed)?;
            let dir = if meta.is_dir() {
                root.open_dir(rest)
            } else {
                match rest.parent().filter(|p| !p.as_os_str().is_empty()) {
                    Some(parent) => root.open_dir(parent),
                    None => root.try_clone(),
                }
            }
            .map_err(failed)?;
            rustix::fs::fstatvfs(&dir)
        }
        .map_err(|e| failed(e.into()))?;
        let frsize = stat.f_frsize;
        Ok(DiskUsage {
            total_bytes: stat.f_blocks * frsize,
            free_bytes: stat.f_bfree * frsize,
            available_bytes: stat.f_bavail * frsize,
            total_inodes: stat.f_files,
            free_inodes: stat.f_ffree,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_normal_accepts_only_slash_separated_normal_names() {
        for normal in ["a", "a/b.log", "a/.b/c..d/..."] {
            // Dots inside a name, or three of them, are a name.
            assert!(is_normal(normal), "`{normal}`");
        }
        for odd in [
            "", "/", "a/", "/a", "a//b", ".", "..", "a/./b", "a/../b", "a/..",
        ] {
            assert!(!is_normal(odd), "`{odd}`");
        }
    }

    #[test]
    fn guest_paths_refuse_dot_dot_and_relative() {
        assert_eq!(guest_components("/a//b/./c/").unwrap(), vec!["a", "b", "c"]);
        assert!(guest_components("/a/../etc").is_err());
        assert!(guest_components("a/b").is_err());
    }

    #[test]
    fn resolve_rejects_missing_and_duplicate_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let g = |host: PathBuf, guest: &str| DirGrant {
            host,
            guest: Some(guest.into()),
            mode: Mode::Ro,
        };
        assert!(resolve(&[g(tmp.path().join("nope"), "/x")]).is_err());
        assert!(resolve(&[g(tmp.path().into(), "/x"), g(tmp.path().into(), "/x/")]).is_err());
        assert!(resolve(&[g(tmp.path().into(), "/x/../y")]).is_err());
        let ok = resolve(&[g(tmp.path().into(), "/data/")]).unwrap();
        assert_eq!(ok[0].guest, "/data");
        assert!(!ok[0].write);
    }

    #[test]
    fn disk_usage_stays_inside_the_grant() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/", tmp.path().join("root-link")).unwrap();
        let cap = FsCap {
            dirs: vec![ResolvedDir {
                host: tmp.path().canonicalize().unwrap(),
                guest: "/data".into(),
                write: false,
            }],
        };
        let u = cap.disk_usage("/data").unwrap();
        assert!(u.total_bytes > 0 && u.total_bytes >= u.free_bytes);
        assert!(cap.disk_usage("/data/sub").is_ok());
        let denied = |p: &str| matches!(cap.disk_usage(p), Err(HostError::Denied(_)));
        assert!(denied("/etc"));
        assert!(denied("/data/../etc"));
        assert!(denied("/database"));
        // A symlink inside the grant that points out is not followed.
        assert!(cap.disk_usage("/data/root-link").is_err());
        // A FIFO is never opened (that would block until a writer came).
        rustix::fs::mknodat(
            rustix::fs::CWD,
            tmp.path().join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(cap.disk_usage("/data/fifo").is_ok());
    }

    fn cap_on(dir: &std::path::Path) -> FsCap {
        FsCap {
            dirs: vec![ResolvedDir {
                host: dir.canonicalize().unwrap(),
                guest: "/data".into(),
                write: false,
            }],
        }
    }

    fn fifo(path: &std::path::Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn stat_many_reports_each_path_beneath_its_grant() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        std::fs::write(tmp.path().join("sub/a"), b"hello").unwrap();
        std::fs::write(tmp.path().join("b"), b"").unwrap();
        std::os::unix::fs::symlink("sub/a", tmp.path().join("inside")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("outside")).unwrap();
        std::os::unix::fs::symlink("/etc", tmp.path().join("etc")).unwrap();
        fifo(&tmp.path().join("pipe"));
        let cap = cap_on(tmp.path());
        let paths: Vec<String> = [
            "/data/sub/a",
            "/data/b",
            "/data/nope",
            "/data/inside",
            "/data/outside",
            "/data/pipe",
            "/data/../etc/passwd",
            "/etc/passwd",
            "/data/etc/passwd",
            "/data",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let lstat = cap.stat_many(&paths, false).unwrap();
        let a = lstat[0].as_ref().unwrap().unwrap();
        assert_eq!((a.kind, a.size), (FileKind::File, 5));
        assert!(a.modified_ms > 1_600_000_000_000, "{a:?}");
        assert_eq!(lstat[1].as_ref().unwrap().unwrap().kind, FileKind::File);
        assert_eq!(lstat[2].as_ref().unwrap(), &None);
        assert_eq!(lstat[3].as_ref().unwrap().unwrap().kind, FileKind::Symlink);
        assert_eq!(lstat[4].as_ref().unwrap().unwrap().kind, FileKind::Symlink);
        // Reported from its inode: never opened, so nothing blocks.
        assert_eq!(lstat[5].as_ref().unwrap().unwrap().kind, FileKind::Fifo);
        assert!(
            matches!(lstat[6], Err(HostError::Denied(_))),
            "{:?}",
            lstat[6]
        );
        assert!(
            matches!(lstat[7], Err(HostError::Denied(_))),
            "{:?}",
            lstat[7]
        );
        // Through a symlinked directory that leads out: refused.
        assert!(lstat[8].is_err(), "{:?}", lstat[8]);
        assert_eq!(
            lstat[9].as_ref().unwrap().unwrap().kind,
            FileKind::Directory
        );

        let followed = cap.stat_many(&paths, true).unwrap();
        let inside = followed[3].as_ref().unwrap().unwrap();
        assert_eq!((inside.kind, inside.size), (FileKind::File, 5));
        // A symlink out of the grant is not followed.
        assert!(followed[4].is_err(), "{:?}", followed[4]);

        let many = vec!["/data/b".to_string(); MAX_STAT_PATHS + 1];
        assert!(matches!(
            cap.stat_many(&many, false),
            Err(HostError::Limit(_))
        ));
    }

    #[test]
    fn stat_many_spellings_resolve_beneath_the_deepest_grant() {
        let outer = tempfile::tempdir().unwrap();
        let inner = tempfile::tempdir().unwrap();
        std::fs::create_dir(outer.path().join("sub")).unwrap();
        std::fs::write(outer.path().join("sub/a"), b"outer").unwrap();
        std::fs::write(inner.path().join("a"), b"in").unwrap();
        // A parent directory that is a symlink: inside the grant is fine,
        // one leading out (even back into another grant) is refused.
        std::os::unix::fs::symlink("sub", outer.path().join("alias")).unwrap();
        std::os::unix::fs::symlink(inner.path(), outer.path().join("other")).unwrap();
        std::os::unix::fs::symlink("../..", outer.path().join("sub/up")).unwrap();
        let grant = |host: &Path, guest: &str| ResolvedDir {
            host: host.canonicalize().unwrap(),
            guest: guest.into(),
            write: false,
        };
        let cap = FsCap {
            dirs: vec![
                grant(outer.path(), "/data"),
                grant(inner.path(), "/data/sub/in"),
            ],
        };
        let size = |p: &str| match &cap.stat_many(&[p.to_string()], true).unwrap()[0] {
            Ok(Some(s)) => Ok(s.size),
            Ok(None) => Err("missing".to_string()),
            Err(e) => Err(format!("{e:?}")),
        };
        assert_eq!(size("/data/sub/a"), Ok(5));
        assert_eq!(size("/data//sub/./a"), Ok(5));
        assert_eq!(size("/data/sub/a/"), Ok(5));
        assert_eq!(size("/data/alias/a"), Ok(5));
        // The deepest grant answers for its own paths.
        assert_eq!(size("/data/sub/in/a"), Ok(2));
        assert_eq!(size("/data/sub//in/./a"), Ok(2));
        let denied = |p: &str| {
            let got = size(p);
            assert!(
                matches!(&got, Err(e) if e.starts_with("Denied")),
                "{p}: {got:?}"
            );
        };
        denied("/data/sub/../sub/a");
        denied("/data/..");
        denied("/database/sub/a");
        denied("/dat");
        denied("data/sub/a");
        denied("");
        denied("/");
        // Through symlinks that lead out of the grant: never an answer.
        for p in ["/data/other/a", "/data/sub/up/etc/passwd", "/data/sub/up"] {
            assert!(size(p).is_err(), "{p}: {:?}", size(p));
        }
        let root = FsCap {
            dirs: vec![grant(outer.path(), "/")],
        };
        let got = root
            .stat_many(&["/sub/a".into(), "/".into()], false)
            .unwrap();
        assert_eq!(got[0].as_ref().unwrap().unwrap().size, 5);
        assert_eq!(got[1].as_ref().unwrap().unwrap().kind, FileKind::Directory);
    }

    #[test]
    fn walk_reports_symlinks_without_following_and_keeps_its_bounds() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("logs/old")).unwrap();
        std::fs::write(tmp.path().join("logs/a.log"), b"12345").unwrap();
        std::fs::write(tmp.path().join("logs/old/b.log"), b"1").unwrap();
        std::os::unix::fs::symlink("/etc", tmp.path().join("logs/etc")).unwrap();
        std::os::unix::fs::symlink("..", tmp.path().join("logs/up")).unwrap();
        fifo(&tmp.path().join("logs/pipe"));
        let cap = cap_on(tmp.path());
        let all = WalkLimits {
            max_depth: 8,
            max_entries: 100,
        };
        let mut got: Vec<(String, FileKind)> = cap
            .walk("/data/logs", all)
            .unwrap()
            .into_iter()
            .map(|e| (e.path, e.stat.kind))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let want = [
            ("a.log", FileKind::File),
            ("etc", FileKind::Symlink),
            ("old", FileKind::Directory),
            ("old/b.log", FileKind::File),
            ("pipe", FileKind::Fifo),
            ("up", FileKind::Symlink),
        ];
        let want: Vec<(String, FileKind)> = want.iter().map(|(p, k)| (p.to_string(), *k)).collect();
        assert_eq!(got, want);

        let limit = |dir: &str, max_depth, max_entries| match cap.walk(
            dir,
            WalkLimits {
                max_depth,
                max_entries,
            },
        ) {
            Err(HostError::Limit(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(limit("/data/logs", 1, 100).contains("deeper than max-depth 1"));
        assert!(limit("/data/logs", 8, 3).contains("max-entries 3"));
        assert!(limit("/data/logs", 8, MAX_WALK_ENTRIES + 1).contains("host's bound"));
        assert!(limit("/data/logs", MAX_WALK_DEPTH + 1, 10).contains("host's bound"));
        assert!(matches!(
            cap.walk("/data/../etc", all),
            Err(HostError::Denied(_))
        ));
        assert!(matches!(cap.walk("/etc", all), Err(HostError::Denied(_))));
        assert!(cap.walk("/data/logs/etc", all).is_err());
    }
}
