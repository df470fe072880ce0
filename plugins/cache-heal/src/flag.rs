//! The degraded flag: a file that exists exactly while the application
//! should bypass Redis. The application only tests whether it exists; the
//! content (when, why) is for the humans reading it.

use std::path::Path;

use mend_sdk::host::clock;
use mend_sdk::{Error, Outcome, Result};

/// Whether the flag is set. A flag whose directory is not readable is an
/// error, not "unset": a detector without the grant must not report a
/// healthy cache while the application is still degraded.
pub fn is_set(path: &str) -> Result<bool> {
    let p = Path::new(path);
    let dir = p.parent().unwrap_or(Path::new("/"));
    std::fs::metadata(dir).map_err(|e| {
        Error::io(
            format!("degraded_flag directory {} (is it granted?)", dir.display()),
            e,
        )
    })?;
    match std::fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("degraded_flag {path}"), e)),
    }
}

/// Sets the flag unless it is set; returns whether it was (or in dry-run
/// would be) written.
pub fn raise(path: &str, conn: &str, why: &str, dry_run: bool, out: &mut Outcome) -> Result<bool> {
    if is_set(path)? {
        out.step(format!("degraded flag {path} is already set"));
        return Ok(false);
    }
    if dry_run {
        out.step(format!(
            "would write degraded flag {path}: Redis `{conn}` is unreachable"
        ));
        return Ok(true);
    }
    let body = serde_json::json!({
        "since_ms": clock::now_ms(),
        "connection": conn,
        "reason": why,
        "set_by": "mend cache-heal",
    });
    // Write then rename, so the application never reads half a flag.
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, format!("{body}\n"))
        .map_err(|e| Error::io(format!("writing degraded flag {tmp}"), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("renaming {tmp} to degraded flag {path}"), e))?;
    out.step(format!(
        "wrote degraded flag {path}: Redis `{conn}` is unreachable"
    ));
    Ok(true)
}

/// Removes the flag if it is set; returns whether it was (or in dry-run
/// would be) removed.
pub fn clear(path: &str, dry_run: bool, out: &mut Outcome) -> Result<bool> {
    if !is_set(path)? {
        return Ok(false);
    }
    if dry_run {
        out.step(format!("would remove degraded flag {path}"));
        return Ok(true);
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("removing degraded flag {path}"), e)),
    }
    out.step(format!("removed degraded flag {path}: Redis answers again"));
    Ok(true)
}
