//! `stale-file`: notices a data file that stopped being refreshed.
//!
//! Born of the status-page incident: a poller died silently and the page
//! served hours-old data. The detector compares each file's mtime with
//! `max_age`.
//!
//! | code | status | when |
//! |---|---|---|
//! | `file.fresh` | ok | younger than `warn_age` (or `max_age`) |
//! | `file.stale` | warn | older than `warn_age` |
//! | `file.stale` | fail | older than `max_age` |
//! | `file.missing` | fail | the file does not exist |
//! | `file.unreadable` | fail | it exists but cannot be read, or is not a file |
//!
//! With several files, each problem file gets its own finding and the
//! fresh ones are folded into one `file.fresh` finding (when all are fresh).

use std::time::{Duration, UNIX_EPOCH};

use mend_sdk::host::clock;
use mend_sdk::{Access, Context, Detector, Error, Finding, Needs, Plugin, Result, Status};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// One file to watch...
    #[serde(default)]
    pub path: Option<String>,
    /// ...or several.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Older than this is `fail`.
    pub max_age: mend_sdk::Duration,
    /// Older than this (but not `max_age`) is `warn`.
    #[serde(default)]
    pub warn_age: Option<mend_sdk::Duration>,
}

pub struct StaleFile;

impl Plugin for StaleFile {
    fn needs() -> Needs {
        Needs::new().dir("*", Access::Read)
    }
}

impl Detector for StaleFile {
    type Config = Config;

    fn detect(_cx: &Context, config: Config) -> Result<Vec<Finding>> {
        let paths: Vec<&str> = config
            .path
            .iter()
            .chain(config.paths.iter())
            .map(String::as_str)
            .collect();
        if paths.is_empty() {
            return Err(Error::bad_config("set `path` or `paths`"));
        }
        if let Some(warn) = config.warn_age
            && warn >= config.max_age
        {
            return Err(Error::bad_config("`warn_age` must be less than `max_age`"));
        }
        let now = Duration::from_millis(clock::now_ms());
        let findings: Vec<Finding> = paths.iter().map(|p| check(p, now, &config)).collect();
        Ok(summarize(findings))
    }
}

/// One finding per problem file; healthy files are folded into a single
/// `file.fresh` finding, so a check over many files reports what matters.
pub fn summarize(findings: Vec<Finding>) -> Vec<Finding> {
    if findings.len() == 1 {
        return findings;
    }
    let (ok, problems): (Vec<Finding>, Vec<Finding>) =
        findings.into_iter().partition(|f| f.status == Status::Ok);
    if !problems.is_empty() {
        return problems;
    }
    let oldest = ok
        .iter()
        .filter_map(|f| f.get_metric("age_seconds"))
        .fold(0.0, f64::max);
    vec![
        Finding::ok(
            "file.fresh",
            format!(
                "all {} files are fresh (oldest {})",
                ok.len(),
                humanize(Duration::from_secs_f64(oldest))
            ),
        )
        .metric("files", ok.len() as f64)
        .metric("age_seconds", oldest),
    ]
}

/// The check for one file: a pure function of the file's metadata and now.
/// Opening first and asking the open file for its metadata resolves the
/// path once, and proves the file is readable.
pub fn check(path: &str, now: Duration, config: &Config) -> Finding {
    let meta = match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Finding::fail("file.missing", format!("{path} does not exist"))
                .label("path", path);
        }
        Err(e) => {
            return Finding::fail("file.unreadable", format!("{path}: {e}")).label("path", path);
        }
    };
    if !meta.is_file() {
        return Finding::fail("file.unreadable", format!("{path} is not a regular file"))
            .label("path", path);
    }
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    let age = now.saturating_sub(mtime);
    let max_age = config.max_age.0;
    let shown = humanize(age);
    let finding = if age > max_age {
        Finding::fail(
            "file.stale",
            format!("{path} is {shown} old (max {})", humanize(max_age)),
        )
    } else if config.warn_age.is_some_and(|w| age > w.0) {
        Finding::warn(
            "file.stale",
            format!("{path} is {shown} old (max {})", humanize(max_age)),
        )
    } else {
        Finding::ok("file.fresh", format!("{path} is {shown} old"))
    };
    finding
        .metric("age_seconds", age.as_secs_f64())
        .metric("max_age_seconds", max_age.as_secs_f64())
        .label("path", path)
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3600, (secs % 3600) / 60),
    }
}

mend_sdk::export!(StaleFile: Detector);
