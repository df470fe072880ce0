//! The granted directories of a recorded call, as the plugin could see
//! them: plugins read files through WASI preopens, not mend host calls, so
//! a recording snapshots each granted directory (names, kinds, sizes,
//! modes, mtimes, small files' contents) before the call, and a replay
//! rebuilds it in a temporary directory preopened at the same guest path.
//!
//! Limits: a snapshot keeps at most [`MAX_ENTRIES`] entries and the
//! contents of files up to [`MAX_KEPT_FILE`] bytes, [`MAX_KEPT_TOTAL`] in
//! all; bigger files come back as holes (sparse files) of their size.
//! Access times, owners and hard links are not kept. A symlink is kept as
//! its target text and rebuilt last, so no rebuilt path goes through one.

use std::fs::{self, File, FileTimes};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::Blob;

/// Entries one snapshot keeps (the rest are left out, with a note).
pub const MAX_ENTRIES: usize = 10_000;
/// The largest file whose contents a snapshot keeps.
pub const MAX_KEPT_FILE: u64 = 16 << 10;
/// Bytes of contents one transcript keeps in all.
pub const MAX_KEPT_TOTAL: u64 = 1 << 20;
/// The largest size a rebuilt (sparse) file may claim.
pub const MAX_FILE_SIZE: u64 = 1 << 40;
/// The longest relative path kept.
const MAX_PATH: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// One entry beneath a granted directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Relative to the granted directory, `/`-separated.
    pub path: String,
    pub kind: Kind,
    #[serde(default)]
    pub size: u64,
    /// Permission bits, e.g. 420 (0o644).
    pub mode: u32,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    /// The contents, for files up to [`MAX_KEPT_FILE`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Blob>,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A granted directory as the plugin saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirSnapshot {
    /// The path the plugin sees, e.g. `/data`.
    pub guest: String,
    pub write: bool,
    /// The directory's own mode and mtime.
    pub mode: u32,
    pub mtime_ns: u64,
    pub entries: Vec<Entry>,
}

fn mtime_ns(m: &fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Snapshots `host` (seen at `guest`); `kept` counts content bytes across
/// the transcript; what does not fit is said in `notes`.
pub fn snapshot(
    host: &Path,
    guest: &str,
    write: bool,
    kept: &mut u64,
    notes: &mut Vec<String>,
) -> anyhow::Result<DirSnapshot> {
    let meta = fs::metadata(host).with_context(|| format!("{}", host.display()))?;
    let mut snap = DirSnapshot {
        guest: guest.to_string(),
        write,
        mode: meta.permissions().mode() & 0o7777,
        mtime_ns: mtime_ns(&meta),
        entries: Vec::new(),
    };
    let mut stack = vec![String::new()];
    let mut skipped = 0usize;
    let mut holes = 0usize;
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            host.to_path_buf()
        } else {
            host.join(&rel)
        };
        let mut names: Vec<_> = match fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect(),
            Err(e) => {
                notes.push(format!("{guest}/{rel}: not listed ({e})"));
                continue;
            }
        };
        names.sort();
        for name in names {
            let Some(name) = name.to_str() else {
                skipped += 1;
                continue;
            };
            let path = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            if snap.entries.len() >= MAX_ENTRIES {
                skipped += 1;
                continue;
            }
            let full = host.join(&path);
            let Ok(m) = fs::symlink_metadata(&full) else {
                skipped += 1;
                continue;
            };
            let ft = m.file_type();
            let mut e = Entry {
                path: path.clone(),
                kind: Kind::File,
                size: 0,
                mode: m.permissions().mode() & 0o7777,
                mtime_ns: mtime_ns(&m),
                content: None,
                target: None,
            };
            if ft.is_symlink() {
                e.kind = Kind::Symlink;
                e.target = fs::read_link(&full)
                    .ok()
                    .and_then(|t| t.to_str().map(String::from));
            } else if ft.is_dir() {
                e.kind = Kind::Dir;
                stack.push(path);
            } else if ft.is_file() {
                e.size = m.len();
                if m.len() <= MAX_KEPT_FILE && *kept + m.len() <= MAX_KEPT_TOTAL {
                    if let Ok(bytes) = fs::read(&full) {
                        *kept += bytes.len() as u64;
                        e.content = Some(Blob::of(&bytes));
                    }
                } else if m.len() > 0 {
                    holes += 1;
                }
            } else {
                skipped += 1; // sockets, fifos, devices
                continue;
            }
            snap.entries.push(e);
        }
    }
    snap.entries.sort_by(|a, b| a.path.cmp(&b.path));
    if skipped > 0 {
        notes.push(format!(
            "{guest}: {skipped} entries left out (past {MAX_ENTRIES} entries, names not UTF-8, \
             or not files, directories or symlinks)"
        ));
    }
    if holes > 0 {
        notes.push(format!(
            "{guest}: {holes} files replay as holes of their size (contents kept only up to \
             {MAX_KEPT_FILE} bytes a file, {MAX_KEPT_TOTAL} in all)"
        ));
    }
    Ok(snap)
}

/// Checks a snapshot from a transcript: paths relative and plain, no path
/// beneath a symlink, sizes and counts within bounds.
pub fn check(snap: &DirSnapshot) -> anyhow::Result<()> {
    if !snap.guest.starts_with('/')
        || Path::new(&snap.guest)
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        bail!(
            "directory `{}`: the guest path must be absolute and plain",
            snap.guest
        );
    }
    if snap.entries.len() > MAX_ENTRIES {
        bail!(
            "directory `{}`: {} entries, more than {MAX_ENTRIES}",
            snap.guest,
            snap.entries.len()
        );
    }
    let links: std::collections::BTreeSet<&str> = snap
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Symlink)
        .map(|e| e.path.as_str())
        .collect();
    for e in &snap.entries {
        let bad =
            |why: &str| anyhow::anyhow!("directory `{}`: entry `{}`: {why}", snap.guest, e.path);
        let p = Path::new(&e.path);
        if e.path.is_empty()
            || e.path.len() > MAX_PATH
            || e.path.contains('\0')
            || !p.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(bad("the path must be relative, plain, without `..`"));
        }
        if p.ancestors()
            .skip(1)
            .any(|a| links.contains(a.to_str().unwrap_or("")))
        {
            return Err(bad("lies beneath a symlink"));
        }
        if e.size > MAX_FILE_SIZE {
            return Err(bad(&format!("size {} is over {MAX_FILE_SIZE}", e.size)));
        }
        if e.content
            .as_ref()
            .is_some_and(|c| c.len() as u64 > MAX_KEPT_FILE)
        {
            return Err(bad(&format!("contents over {MAX_KEPT_FILE} bytes")));
        }
        if e.kind == Kind::Symlink && e.target.as_deref().is_none_or(|t| t.contains('\0')) {
            return Err(bad("a symlink needs a target"));
        }
    }
    Ok(())
}

fn set_mtime(path: &Path, ns: u64) -> anyhow::Result<()> {
    let t: SystemTime = UNIX_EPOCH + Duration::from_nanos(ns);
    File::open(path)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(t).set_accessed(t)))
        .with_context(|| format!("setting the mtime of {}", path.display()))
}

/// Rebuilds a checked snapshot in `root` (an empty directory): contents
/// where kept, holes of the recorded size where not, recorded modes and
/// mtimes; symlinks last.
pub fn materialize(snap: &DirSnapshot, root: &Path) -> anyhow::Result<()> {
    check(snap)?;
    for e in snap.entries.iter().filter(|e| e.kind != Kind::Symlink) {
        let path = root.join(&e.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("{}", parent.display()))?;
        }
        match e.kind {
            Kind::Dir => {
                fs::create_dir_all(&path).with_context(|| format!("{}", path.display()))?
            }
            _ => {
                let f = File::create(&path).with_context(|| format!("{}", path.display()))?;
                match &e.content {
                    Some(c) => {
                        use std::io::Write;
                        (&f).write_all(&c.bytes())?;
                    }
                    None => f.set_len(e.size)?,
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(e.mode & 0o7777))?;
                set_mtime(&path, e.mtime_ns)?;
            }
        }
    }
    for e in snap.entries.iter().filter(|e| e.kind == Kind::Symlink) {
        let path = root.join(&e.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(e.target.as_deref().unwrap_or(""), &path)
            .with_context(|| format!("{}", path.display()))?;
    }
    // Directories last and deepest first: making their children touched them.
    let mut dirs: Vec<&Entry> = snap
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .collect();
    dirs.sort_by_key(|e| std::cmp::Reverse(e.path.len()));
    for e in dirs {
        let path = root.join(&e.path);
        set_mtime(&path, e.mtime_ns)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(e.mode & 0o7777))?;
    }
    set_mtime(root, snap.mtime_ns)?;
    fs::set_permissions(root, fs::Permissions::from_mode(snap.mode & 0o7777))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_comes_back_with_its_sizes_and_times() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("sub")).unwrap();
        fs::write(src.path().join("sub/small.txt"), "hello").unwrap();
        let big = File::create(src.path().join("big.log")).unwrap();
        big.set_len(MAX_KEPT_FILE + 1).unwrap();
        set_mtime(&src.path().join("big.log"), 1_600_000_000_123_456_789).unwrap();
        let (mut kept, mut notes) = (0, Vec::new());
        let snap = snapshot(src.path(), "/data", false, &mut kept, &mut notes).unwrap();
        assert_eq!(snap.entries.len(), 3, "{snap:?}");
        assert_eq!(kept, 5);
        assert!(
            notes.iter().any(|n| n.contains("1 files replay as holes")),
            "{notes:?}"
        );

        let dst = tempfile::tempdir().unwrap();
        materialize(&snap, dst.path()).unwrap();
        assert_eq!(
            fs::read_to_string(dst.path().join("sub/small.txt")).unwrap(),
            "hello"
        );
        let m = fs::metadata(dst.path().join("big.log")).unwrap();
        assert_eq!(m.len(), MAX_KEPT_FILE + 1);
        assert_eq!(mtime_ns(&m), 1_600_000_000_123_456_789);
    }

    #[test]
    fn hostile_paths_are_refused() {
        let entry = |path: &str, kind: Kind| Entry {
            path: path.into(),
            kind,
            size: 0,
            mode: 0o644,
            mtime_ns: 0,
            content: None,
            target: Some("/etc".into()),
        };
        for entries in [
            vec![entry("../escape", Kind::File)],
            vec![entry("/etc/passwd", Kind::File)],
            vec![entry("a/../../b", Kind::File)],
            vec![
                entry("link", Kind::Symlink),
                entry("link/passwd", Kind::File),
            ],
        ] {
            let snap = DirSnapshot {
                guest: "/data".into(),
                write: true,
                mode: 0o755,
                mtime_ns: 0,
                entries,
            };
            let dst = tempfile::tempdir().unwrap();
            assert!(materialize(&snap, dst.path()).is_err(), "{snap:?}");
        }
    }
}
