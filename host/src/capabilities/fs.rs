//! Directory grants: WASI preopens, and `mend:plugin/fs` (disk usage).
//!
//! A plugin sees only the granted directories, at the guest path the
//! operator chose, read-only unless the grant says `rw`. WASI resolves every
//! path beneath a preopen (`..`, absolute paths and symlinks cannot escape).
//! Disk usage is answered through cap-std for the same reason: the lookup
//! happens beneath the granted directory's handle, never by ambient path.

use std::path::PathBuf;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
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

impl FsCap {
    /// Usage of the filesystem holding `path` (a guest path).
    pub fn disk_usage(&self, path: &str) -> Result<DiskUsage, HostError> {
        let want = guest_components(path).map_err(HostError::Denied)?;
        let grant = self
            .dirs
            .iter()
            .filter(|d| want.starts_with(&guest_components(&d.guest).unwrap_or_default()))
            .max_by_key(|d| d.guest.len())
            .ok_or_else(|| {
                HostError::denied(format!("`{path}` is not inside a granted directory"))
            })?;
        let depth = guest_components(&grant.guest).unwrap_or_default().len();
        let rest: PathBuf = want[depth..].iter().collect();
        let failed = |e: std::io::Error| HostError::failed(format!("`{path}`: {e}"));
        let root = Dir::open_ambient_dir(&grant.host, ambient_authority())
            .map_err(|e| HostError::failed(format!("{}: {e}", grant.guest)))?;
        // Nothing is ever opened but directories: opening a FIFO or a
        // device could block the host. A file's filesystem is its
        // directory's. cap-std resolves `rest` beneath `root`, so symlinks
        // that point outside fail instead of being followed.
        let stat = if rest.as_os_str().is_empty() {
            rustix::fs::fstatvfs(&root)
        } else {
            let meta = root.metadata(&rest).map_err(failed)?;
            let dir = if meta.is_dir() {
                root.open_dir(&rest)
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
}
