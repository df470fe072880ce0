//! `disk-cleanup`: notices a filling disk (or an over-budget directory) and
//! frees space the way an SRE would by hand: delete, or gzip, old files
//! that match globs, oldest (or largest) first, until usage is back under a
//! target.
//!
//! Safety rules, enforced here and by the sandbox:
//! - only inside the granted directory (the sandbox makes anything else
//!   unreachable);
//! - never follows a symlink: symlinks are neither deleted nor descended;
//! - finds files with the host's bounded walk (`fs.walk`, one call for the
//!   tree, up to 100,000 entries and 64 levels: past that it fails with a
//!   `limit` error rather than clean part of a tree it cannot see whole);
//! - never touches a file younger than `min_age`;
//! - in dry-run, lists what it would remove and the bytes it would free.
//!
//! Detector codes: `disk.usage.high` (warn/fail, filesystem percent),
//! `disk.inodes.high`, `dir.size.high` (bytes under `path`), and
//! `disk.usage.ok`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use globset::{Glob, GlobSet, GlobSetBuilder};
use mend_sdk::host::fs::{FileStat, WalkLimits};
use mend_sdk::host::{clock, fs};
use mend_sdk::{
    Access, Action, Bytes, Context, Detector, Error, Finding, Needs, Outcome, Plugin, Result,
};
use serde::Deserialize;

/// The detector's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// The directory to watch, as the plugin sees it.
    pub path: String,
    /// Filesystem usage (df's "Use%") for `warn` and `fail`.
    #[serde(default)]
    pub warn_percent: Option<f64>,
    #[serde(default)]
    pub fail_percent: Option<f64>,
    #[serde(default)]
    pub warn_inodes_percent: Option<f64>,
    #[serde(default)]
    pub fail_inodes_percent: Option<f64>,
    /// A budget for the bytes under `path` itself.
    #[serde(default)]
    pub warn_bytes: Option<Bytes>,
    #[serde(default)]
    pub max_bytes: Option<Bytes>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Delete,
    Gzip,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Oldest,
    Largest,
}

/// The action's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupConfig {
    pub path: String,
    /// Globs relative to `path`, e.g. `"**/*.log"`.
    pub patterns: Vec<String>,
    /// Files younger than this are never touched.
    pub min_age: mend_sdk::Duration,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub order: Order,
    /// Stop once filesystem usage is below this percent...
    #[serde(default)]
    pub target_percent: Option<f64>,
    /// ...or once the bytes under `path` are below this...
    #[serde(default)]
    pub target_bytes: Option<Bytes>,
    /// ...or once inode usage is below this percent (only deleting frees
    /// an inode: compressing replaces one file by another). Without a
    /// target, every matching file old enough is cleaned.
    #[serde(default)]
    pub target_inodes_percent: Option<f64>,
    /// In `gzip` mode, delete a file that cannot be compressed (a full
    /// disk has no room for the `.gz`) instead of failing.
    #[serde(default)]
    pub fallback_delete: bool,
    /// At most this many files per call.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
}

fn default_max_files() -> usize {
    10_000
}

pub struct DiskCleanup;

impl Plugin for DiskCleanup {
    /// Detecting reads; cleaning (below) writes.
    fn needs() -> Needs {
        Needs::new().dir("*", Access::Read)
    }
}

fn percent(name: &str, v: Option<f64>) -> Result<Option<f64>> {
    match v {
        Some(p) if !(0.0..=100.0).contains(&p) => Err(Error::bad_config(format!(
            "`{name}` must be between 0 and 100"
        ))),
        other => Ok(other),
    }
}

fn level(value: f64, warn: Option<f64>, fail: Option<f64>) -> Option<bool> {
    if fail.is_some_and(|f| value >= f) {
        Some(true)
    } else if warn.is_some_and(|w| value >= w) {
        Some(false)
    } else {
        None
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

impl Detector for DiskCleanup {
    type Config = DetectConfig;

    /// The directory it measures must be granted.
    fn config_needs(c: &DetectConfig) -> Result<Needs> {
        Ok(Needs::new().dir(&c.path, Access::Read))
    }

    fn detect(_cx: &Context, c: DetectConfig) -> Result<Vec<Finding>> {
        let warn = percent("warn_percent", c.warn_percent)?;
        let fail = percent("fail_percent", c.fail_percent)?;
        let iwarn = percent("warn_inodes_percent", c.warn_inodes_percent)?;
        let ifail = percent("fail_inodes_percent", c.fail_inodes_percent)?;
        if warn.is_none()
            && fail.is_none()
            && iwarn.is_none()
            && ifail.is_none()
            && c.warn_bytes.is_none()
            && c.max_bytes.is_none()
        {
            return Err(Error::bad_config(
                "set at least one threshold: fail_percent, warn_percent, (warn|fail)_inodes_percent, max_bytes or warn_bytes",
            ));
        }
        let usage = fs::disk_usage(&c.path)?;
        let used = usage.used_percent();
        let with_usage = |f: Finding| {
            f.metric("used_percent", used)
                .metric("total_bytes", usage.total_bytes as f64)
                .metric("available_bytes", usage.available_bytes as f64)
                .label("path", &c.path)
        };
        let mut findings = Vec::new();
        if let Some(is_fail) = level(used, warn, fail) {
            let summary = format!(
                "{} is on a filesystem {used:.1}% full ({} available)",
                c.path,
                mib(usage.available_bytes)
            );
            let f = if is_fail {
                Finding::fail("disk.usage.high", summary)
            } else {
                Finding::warn("disk.usage.high", summary)
            };
            findings.push(with_usage(f));
        }
        let inodes = usage.inodes_used_percent();
        if let Some(is_fail) = level(inodes, iwarn, ifail) {
            let summary = format!(
                "{} is on a filesystem with {inodes:.1}% of inodes used",
                c.path
            );
            let f = if is_fail {
                Finding::fail("disk.inodes.high", summary)
            } else {
                Finding::warn("disk.inodes.high", summary)
            };
            findings.push(
                f.metric("inodes_used_percent", inodes)
                    .label("path", &c.path),
            );
        }
        if c.warn_bytes.is_some() || c.max_bytes.is_some() {
            let size = tree_size(Path::new(&c.path))?;
            let over_max = c.max_bytes.is_some_and(|m| size > m.0);
            let over_warn = c.warn_bytes.is_some_and(|w| size > w.0);
            if over_max || over_warn {
                let limit = if over_max { c.max_bytes } else { c.warn_bytes }
                    .map(|b| b.0)
                    .unwrap_or(0);
                let summary = format!("{} holds {} (limit {})", c.path, mib(size), mib(limit));
                let f = if over_max {
                    Finding::fail("dir.size.high", summary)
                } else {
                    Finding::warn("dir.size.high", summary)
                };
                findings.push(f.metric("bytes", size as f64).label("path", &c.path));
            }
        }
        if findings.is_empty() {
            findings.push(with_usage(Finding::ok(
                "disk.usage.ok",
                format!("{} is fine: filesystem {used:.1}% full", c.path),
            )));
        }
        Ok(findings)
    }
}

/// A file that may be cleaned.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
}

/// Total bytes of regular files under `root`, not following symlinks.
pub fn tree_size(root: &Path) -> Result<u64> {
    let mut total = 0;
    walk(root, &mut |_, stat| total += stat.size)?;
    Ok(total)
}

/// Visits every regular file under `root`, with its metadata from one host
/// call for the whole tree. Symlinks are skipped, never followed, whether
/// they point at files or directories.
fn walk(root: &Path, f: &mut dyn FnMut(&Path, &FileStat)) -> Result<()> {
    let root_str = root.to_string_lossy();
    for entry in fs::walk(&root_str, WalkLimits::default())? {
        if entry.stat.is_file() {
            f(&root.join(&entry.path), &entry.stat);
        }
    }
    Ok(())
}

/// The files `c` allows cleaning, in the order they should go.
pub fn candidates(c: &CleanupConfig, globs: &GlobSet, now: SystemTime) -> Result<Vec<Candidate>> {
    let root = Path::new(&c.path);
    let cutoff = now
        .checked_sub(c.min_age.0)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut found = Vec::new();
    walk(root, &mut |path, meta| {
        let rel = path.strip_prefix(root).unwrap_or(path);
        let modified = meta.modified;
        let already = c.mode == Mode::Gzip && path.extension().is_some_and(|e| e == "gz");
        if globs.is_match(rel) && modified <= cutoff && !already {
            found.push(Candidate {
                path: path.to_path_buf(),
                size: meta.size,
                modified,
            });
        }
    })?;
    match c.order {
        Order::Oldest => {
            found.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.path.cmp(&b.path)))
        }
        Order::Largest => found.sort_by(|a, b| b.size.cmp(&a.size).then(a.path.cmp(&b.path))),
    }
    Ok(found)
}

fn globs(patterns: &[String]) -> Result<GlobSet> {
    if patterns.is_empty() {
        return Err(Error::bad_config(
            "`patterns` is empty: name the files that may be cleaned",
        ));
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| Error::bad_config(format!("pattern `{p}`: {e}")))?);
    }
    b.build().map_err(|e| Error::bad_config(e.to_string()))
}

/// Compresses `path` to `path.gz` and removes the original; returns the
/// bytes freed. On failure (typically ENOSPC on a nearly full disk) the
/// partial `.gz.tmp` is removed, so a failed attempt never eats the space
/// it was meant to free.
fn gzip(path: &Path, size: u64) -> Result<u64> {
    let tmp = PathBuf::from(format!("{}.gz.tmp", path.display()));
    let r = gzip_via(path, &tmp, size);
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

fn gzip_via(path: &Path, tmp: &Path, size: u64) -> Result<u64> {
    use std::io::Write;
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    let mut src = std::fs::File::open(path).map_err(|e| Error::io(path.display(), e))?;
    let dst = std::fs::File::create(tmp).map_err(|e| Error::io(tmp.display(), e))?;
    let mut enc =
        flate2::write::GzEncoder::new(std::io::BufWriter::new(dst), flate2::Compression::default());
    std::io::copy(&mut src, &mut enc).map_err(|e| Error::io(tmp.display(), e))?;
    let file = enc
        .finish()
        .and_then(|mut w| {
            w.flush()?;
            w.into_inner().map_err(|e| e.into_error())
        })
        .map_err(|e| Error::io(tmp.display(), e))?;
    // Space is only really taken once the data reaches the disk.
    file.sync_all().map_err(|e| Error::io(tmp.display(), e))?;
    let written = file
        .metadata()
        .map_err(|e| Error::io(tmp.display(), e))?
        .len();
    std::fs::rename(tmp, &gz).map_err(|e| Error::io(gz.display(), e))?;
    std::fs::remove_file(path).map_err(|e| Error::io(path.display(), e))?;
    Ok(size.saturating_sub(written))
}

/// WASI reports a full disk as a plain I/O error: say how much room was
/// left, so the operator sees why.
fn with_space(e: Error, path: &str) -> Error {
    match fs::disk_usage(path) {
        Ok(u) => Error::failed(format!(
            "{} (the filesystem has {} available; set `fallback_delete = true` to delete what cannot be compressed)",
            e.message(),
            mib(u.available_bytes)
        )),
        Err(_) => e,
    }
}

const MAX_STEPS: usize = 500;

impl Action for DiskCleanup {
    type Config = CleanupConfig;

    fn remedy_needs() -> Needs {
        Needs::new().dir("*", Access::ReadWrite)
    }

    /// The directory it cleans must be granted read-write.
    fn config_needs(c: &CleanupConfig) -> Result<Needs> {
        Ok(Needs::new().dir(&c.path, Access::ReadWrite))
    }

    fn remedy(
        _cx: &Context,
        c: CleanupConfig,
        _findings: &[Finding],
        dry_run: bool,
    ) -> Result<Outcome> {
        let target_percent = percent("target_percent", c.target_percent)?;
        let target_inodes = percent("target_inodes_percent", c.target_inodes_percent)?;
        let globs = globs(&c.patterns)?;
        let now = clock::now();
        let found = candidates(&c, &globs, now)?;

        // Where we stand, to know when to stop.
        let usage = match (target_percent, target_inodes) {
            (None, None) => None,
            _ => Some(fs::disk_usage(&c.path)?),
        };
        let mut dir_bytes = match c.target_bytes {
            Some(_) => Some(tree_size(Path::new(&c.path))?),
            None => None,
        };
        let mut freed_total = 0u64;
        let mut inodes_freed = 0u64;
        let reached = |freed: u64, inodes_freed: u64, dir_bytes: Option<u64>| -> bool {
            let pct_ok = match (target_percent, usage) {
                (Some(t), Some(u)) => {
                    let used = u
                        .total_bytes
                        .saturating_sub(u.free_bytes)
                        .saturating_sub(freed);
                    let avail = u.available_bytes + freed;
                    let denom = used + avail;
                    denom == 0 || (used as f64 * 100.0 / denom as f64) < t
                }
                _ => true,
            };
            let bytes_ok = match (c.target_bytes, dir_bytes) {
                (Some(t), Some(b)) => b < t.0,
                _ => true,
            };
            let inodes_ok = match (target_inodes, usage) {
                (Some(t), Some(u)) if u.total_inodes > 0 => {
                    let used = u
                        .total_inodes
                        .saturating_sub(u.free_inodes)
                        .saturating_sub(inodes_freed);
                    (used as f64 * 100.0 / u.total_inodes as f64) < t
                }
                _ => true,
            };
            (target_percent.is_some() || c.target_bytes.is_some() || target_inodes.is_some())
                && pct_ok
                && bytes_ok
                && inodes_ok
        };

        let mut out = Outcome::new();
        let mut files = 0usize;
        let verb = match (c.mode, dry_run) {
            (Mode::Delete, false) => "deleted",
            (Mode::Delete, true) => "would delete",
            (Mode::Gzip, false) => "compressed",
            (Mode::Gzip, true) => "would compress",
        };
        for cand in found.iter().take(c.max_files) {
            if reached(freed_total, inodes_freed, dir_bytes) {
                break;
            }
            let delete =
                |path: &Path| std::fs::remove_file(path).map_err(|e| Error::io(path.display(), e));
            let mut fell_back = None;
            let (freed, inodes) = if dry_run {
                (cand.size, u64::from(c.mode == Mode::Delete))
            } else {
                match c.mode {
                    Mode::Delete => {
                        delete(&cand.path)?;
                        (cand.size, 1)
                    }
                    Mode::Gzip => match gzip(&cand.path, cand.size) {
                        Ok(freed) => (freed, 0),
                        Err(e) if c.fallback_delete => {
                            delete(&cand.path)?;
                            fell_back = Some(e);
                            (cand.size, 1)
                        }
                        Err(e) => return Err(with_space(e, &c.path)),
                    },
                }
            };
            freed_total += freed;
            inodes_freed += inodes;
            if let Some(b) = dir_bytes.as_mut() {
                *b = b.saturating_sub(freed);
            }
            files += 1;
            if out.steps.len() < MAX_STEPS {
                let age = now.duration_since(cand.modified).unwrap_or(Duration::ZERO);
                let verb = match &fell_back {
                    Some(e) => format!("could not compress ({e}), deleted"),
                    None => verb.to_string(),
                };
                out.step(format!(
                    "{verb} {} ({}, {}h old)",
                    cand.path.display(),
                    mib(cand.size),
                    age.as_secs() / 3600
                ));
            }
        }
        if files > out.steps.len() {
            out.step(format!("... and {} more", files - out.steps.len()));
        }
        let summary = format!(
            "{verb} {files} file(s), {} {}",
            mib(freed_total),
            if dry_run { "would be freed" } else { "freed" }
        );
        let out = if files > 0 && !dry_run {
            out.changed()
        } else {
            out
        };
        Ok(out.message(if files == 0 {
            format!(
                "nothing to clean: no file matches {:?} older than {:?}",
                c.patterns, c.min_age.0
            )
        } else {
            summary
        }))
    }
}

mend_sdk::export!(DiskCleanup: Detector, Action);
