//! The file-cache variant: entries in a granted directory that are expired
//! (older than `max_age`) or corrupt (fail `validate`). Symlinks are never
//! followed, judged or deleted; files younger than `min_age` are never
//! judged corrupt, since they may still be being written.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use globset::{Glob, GlobSet, GlobSetBuilder};
use mend_sdk::{Error, Finding, Outcome, Result};
use serde::Deserialize;

use crate::validate::Validate;
use crate::{MAX_STEPS, examples};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCache {
    /// The cache directory, as the plugin sees it.
    pub path: String,
    /// Globs relative to `path` naming cache entries; default every file.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Entries older than this are expired.
    #[serde(default)]
    pub max_age: Option<mend_sdk::Duration>,
    /// How entries must parse.
    #[serde(default)]
    pub validate: Option<Validate>,
    /// Entries younger than this are never judged corrupt.
    #[serde(default = "default_min_age")]
    pub min_age: mend_sdk::Duration,
    /// At most this many entries deleted per call.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
}

fn default_min_age() -> mend_sdk::Duration {
    mend_sdk::Duration(Duration::from_secs(10))
}
fn default_max_files() -> usize {
    100_000
}

impl FileCache {
    pub fn check(&self) -> Result<()> {
        if self.max_age.is_none() && self.validate.is_none() {
            return Err(Error::bad_config(
                "`file_cache` needs `max_age` or `validate`: otherwise no entry is ever bad",
            ));
        }
        self.globs().map(|_| ())
    }

    fn globs(&self) -> Result<Option<GlobSet>> {
        if self.patterns.is_empty() {
            return Ok(None);
        }
        let mut b = GlobSetBuilder::new();
        for p in &self.patterns {
            b.add(
                Glob::new(p)
                    .map_err(|e| Error::bad_config(format!("`file_cache.patterns` `{p}`: {e}")))?,
            );
        }
        b.build()
            .map(Some)
            .map_err(|e| Error::bad_config(format!("`file_cache.patterns`: {e}")))
    }
}

/// Why an entry is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    Expired(Duration),
    Corrupt(&'static str),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
    pub bad: Bad,
}

/// The bad entries of a cache directory, in path order.
#[derive(Debug, Default)]
pub struct Scan {
    /// Entries looked at.
    pub files: usize,
    pub expired: usize,
    pub corrupt: usize,
    pub bad: Vec<Entry>,
}

/// Judges one entry, from its metadata and (for `validate`) its content.
fn judge(fc: &FileCache, path: &Path, meta: &std::fs::Metadata, now: SystemTime) -> Option<Bad> {
    let modified = meta.modified().unwrap_or(now);
    let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
    if let Some(max) = fc.max_age
        && age > max.0
    {
        return Some(Bad::Expired(age));
    }
    let v = fc.validate?;
    if age < fc.min_age.0 {
        return None;
    }
    // An entry that cannot be read is not proven corrupt: leave it alone.
    let f = std::fs::File::open(path).ok()?;
    v.check_reader(f).ok().flatten().map(Bad::Corrupt)
}

pub fn scan(fc: &FileCache, now: SystemTime) -> Result<Scan> {
    let globs = fc.globs()?;
    let root = Path::new(&fc.path);
    let mut s = Scan::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("file_cache: reading {}", dir.display()), e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_symlink() {
                continue;
            } else if ft.is_dir() {
                stack.push(path);
                continue;
            } else if !ft.is_file() {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path);
            if globs.as_ref().is_some_and(|g| !g.is_match(rel)) {
                continue;
            }
            s.files += 1;
            if let Some(bad) = judge(fc, &path, &meta, now) {
                match bad {
                    Bad::Expired(_) => s.expired += 1,
                    Bad::Corrupt(_) => s.corrupt += 1,
                }
                s.bad.push(Entry {
                    size: meta.len(),
                    modified: meta.modified().unwrap_or(now),
                    path,
                    bad,
                });
            }
        }
    }
    s.bad.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(s)
}

/// The detector's findings for a scan: one per kind of bad entry.
pub fn findings(fc: &FileCache, s: &Scan) -> Vec<Finding> {
    let mut out = Vec::new();
    let names = |corrupt: bool| {
        let v: Vec<String> = s
            .bad
            .iter()
            .filter(|e| matches!(e.bad, Bad::Corrupt(_)) == corrupt)
            .map(|e| e.path.display().to_string())
            .collect();
        examples(v.iter().map(String::as_str))
    };
    if s.corrupt > 0 {
        out.push(
            Finding::fail(
                "cache.files.corrupt",
                format!(
                    "{} of {} cache file(s) in {} fail validation, e.g. {}",
                    s.corrupt,
                    s.files,
                    fc.path,
                    names(true)
                ),
            )
            .metric("corrupt", s.corrupt as f64)
            .metric("files", s.files as f64)
            .label("path", &fc.path)
            .label("examples", names(true)),
        );
    }
    if s.expired > 0 {
        let oldest = s
            .bad
            .iter()
            .filter_map(|e| match e.bad {
                Bad::Expired(age) => Some(age.as_secs_f64()),
                Bad::Corrupt(_) => None,
            })
            .fold(0.0, f64::max);
        out.push(
            Finding::warn(
                "cache.files.expired",
                format!(
                    "{} of {} cache file(s) in {} are older than {:?}, e.g. {}",
                    s.expired,
                    s.files,
                    fc.path,
                    fc.max_age.map(|d| d.0).unwrap_or_default(),
                    names(false)
                ),
            )
            .metric("expired", s.expired as f64)
            .metric("files", s.files as f64)
            .metric("oldest_age_seconds", oldest)
            .label("path", &fc.path)
            .label("examples", names(false)),
        );
    }
    out
}

/// What a purge did.
pub struct Purge {
    pub deleted: usize,
    pub message: String,
}

/// Deletes the bad entries. Each is looked at again just before: one that
/// became a symlink, or was rewritten since the scan, is left alone.
pub fn purge(fc: &FileCache, now: SystemTime, dry_run: bool, out: &mut Outcome) -> Result<Purge> {
    let s = scan(fc, now)?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut deleted = 0;
    let mut bytes = 0u64;
    let mut listed = 0;
    for e in s.bad.iter().take(fc.max_files) {
        if !dry_run {
            match std::fs::symlink_metadata(&e.path) {
                Ok(m) if m.file_type().is_file() && m.modified().ok() == Some(e.modified) => {}
                _ => continue,
            }
            std::fs::remove_file(&e.path)
                .map_err(|err| Error::io(format!("deleting {}", e.path.display()), err))?;
        }
        deleted += 1;
        bytes += e.size;
        if listed < MAX_STEPS {
            listed += 1;
            let why = match &e.bad {
                Bad::Expired(age) => format!("expired, {}s old", age.as_secs()),
                Bad::Corrupt(why) => why.to_string(),
            };
            out.step(format!(
                "{verb} {} ({why}, {} bytes)",
                e.path.display(),
                e.size
            ));
        }
    }
    if deleted > listed {
        out.step(format!("... and {} more", deleted - listed));
    }
    let message = if deleted == 0 {
        format!("no expired or corrupt file in {}", fc.path)
    } else {
        format!(
            "{verb} {deleted} cache file(s) in {} ({} corrupt, {} expired, {bytes} bytes){}",
            fc.path,
            s.bad
                .iter()
                .take(fc.max_files)
                .filter(|e| matches!(e.bad, Bad::Corrupt(_)))
                .count(),
            s.bad
                .iter()
                .take(fc.max_files)
                .filter(|e| matches!(e.bad, Bad::Expired(_)))
                .count(),
            if s.bad.len() > fc.max_files {
                format!(" (stopped at max_files = {})", fc.max_files)
            } else {
                String::new()
            }
        )
    };
    Ok(Purge { deleted, message })
}
