//! mend's own files: the state directory, the compile cache and the
//! databases in them are the host's alone (0700 directories, 0600 files),
//! so neither another local user nor a plugin granted a neighbouring
//! directory can read or plant them.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// Creates `dir` (and missing parents) as 0700, or tightens it to 0700.
pub fn dir(dir: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", dir.display()))?;
    }
    Ok(())
}

/// Creates `file` as 0600 if it does not exist, or tightens it to 0600
/// (SQLite creates its `-wal` and `-shm` files with the database's mode).
pub fn file(file: &Path) -> anyhow::Result<()> {
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        dir(parent)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("creating {}", file.display()))?;
    for f in [
        file.to_path_buf(),
        suffixed(file, "-wal"),
        suffixed(file, "-shm"),
    ] {
        if let Ok(meta) = std::fs::metadata(&f)
            && meta.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} private (0600)", f.display()))?;
        }
    }
    Ok(())
}

fn suffixed(file: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_dirs_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("state/cache");
        dir(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let f = tmp.path().join("state/mend.db");
        std::fs::write(&f, b"").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        file(&f).unwrap();
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
