//! Reading a plugin file without trusting the plugins directory: one path
//! for `mend run`, hot reload, `check-config`, `plugin inspect` and `plugin
//! call`.
//!
//! Only regular files are plugins (a symlink to one is fine: packagers use
//! them). The file is opened without blocking (a FIFO named `x.wasm` would
//! otherwise wait forever for a writer), its type is checked on the opened
//! descriptor (not by a path that can change in between), and it is read
//! with the size bound enforced while reading (a symlink to `/dev/zero`
//! reports size 0 and never ends). Reading runs on the blocking pool with a
//! timeout, so a file on a hung mount is reported, not waited for.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest plugin file mend will read.
pub const MAX_WASM_BYTES: u64 = 64 << 20;

/// How long reading one file may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a plugin file, or says why it is not one.
pub(crate) async fn read(path: &Path) -> Result<Vec<u8>, String> {
    if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
        return Err("only `.wasm` files are loaded".into());
    }
    let owned = path.to_path_buf();
    match tokio::time::timeout(
        READ_TIMEOUT,
        tokio::task::spawn_blocking(move || read_blocking(&owned)),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("reading failed: {e}")),
        Err(_) => Err(format!(
            "reading did not finish within {}s (a hung mount?)",
            READ_TIMEOUT.as_secs()
        )),
    }
}

/// [`read`] without the extension check or the timeout, for a caller
/// already on a blocking thread (the hot reload's fingerprint).
pub(crate) fn read_blocking(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "not a regular file (it is {}); only regular files are plugins",
            kind(&meta.file_type())
        ));
    }
    if meta.len() > MAX_WASM_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The bound holds even if the file grows while it is read.
    file.take(MAX_WASM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_WASM_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn too_large(n: u64) -> String {
    format!("{n} bytes or more is larger than the {MAX_WASM_BYTES}-byte limit")
}

fn kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The `.wasm` entries of a plugins directory, in name order.
pub(crate) fn entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("wasm"))
        .collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_regular_files_are_read_and_never_past_the_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("x.wasm");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(read(&fifo).await.unwrap_err().contains("a FIFO"));
        let zero = tmp.path().join("zero.wasm");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read(&zero).await.unwrap_err().contains("character device"));
        let dir = tmp.path().join("d.wasm");
        std::fs::create_dir(&dir).unwrap();
        assert!(read(&dir).await.unwrap_err().contains("directory"));
        let real = tmp.path().join("real.bin");
        std::fs::write(&real, b"\0asm").unwrap();
        let link = tmp.path().join("link.wasm");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(read(&link).await.unwrap(), b"\0asm");
        assert!(read(&real).await.unwrap_err().contains(".wasm"));
    }
}
