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
//!
//! The action restarts whatever refreshes the file: an operator-defined
//! command (`command = "restart-poller"`, under `[commands]`) or a restart
//! endpoint (`restart_url`, POSTed). It does not touch the file itself:
//! touching would hide the fault, and only a working poller makes the data
//! fresh. mend then re-runs the detector to verify; a poller that restarted
//! but still writes nothing shows as not healed.

use std::time::{Duration, UNIX_EPOCH};

use mend_sdk::host::fs::FileStat;
use mend_sdk::host::{clock, exec, fs};
use mend_sdk::{
    Access, Action, Context, Detector, Error, Finding, Needs, Outcome, Plugin, Result, Status,
};
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

/// The action's config: exactly one of `command` and `restart_url`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// A command defined under `[commands]`, run by name.
    #[serde(default)]
    pub command: Option<String>,
    /// An endpoint that restarts the poller, POSTed with an empty body.
    #[serde(default)]
    pub restart_url: Option<String>,
    /// Bounds the POST (connecting, first byte, each gap). The command's
    /// own `timeout` is set under `[commands]`.
    #[serde(default = "default_timeout")]
    pub timeout: mend_sdk::Duration,
}

fn default_timeout() -> mend_sdk::Duration {
    mend_sdk::Duration(Duration::from_secs(3))
}

/// How the poller is restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    Command(String),
    Url(String),
}

impl RestartConfig {
    pub fn restart(&self) -> Result<Restart> {
        match (&self.command, &self.restart_url) {
            (Some(c), None) if !c.is_empty() => Ok(Restart::Command(c.clone())),
            (None, Some(u)) => {
                let lower = u.to_ascii_lowercase();
                if lower.starts_with("http://") || lower.starts_with("https://") {
                    Ok(Restart::Url(u.clone()))
                } else {
                    Err(Error::bad_config(format!(
                        "`restart_url`: `{u}` is not an http:// or https:// URL"
                    )))
                }
            }
            (Some(_), Some(_)) => Err(Error::bad_config(
                "set `command` or `restart_url`, not both",
            )),
            _ => Err(Error::bad_config(
                "set `command` (a name under [commands]) or `restart_url`",
            )),
        }
    }
}

pub struct StaleFile;

impl Plugin for StaleFile {
    fn needs() -> Needs {
        Needs::new().dir("*", Access::Read)
    }
}

impl Config {
    /// The files to look at, once the config is known to be sound.
    fn paths(&self) -> Result<Vec<&str>> {
        let paths: Vec<&str> = self
            .path
            .iter()
            .chain(self.paths.iter())
            .map(String::as_str)
            .collect();
        if paths.is_empty() {
            return Err(Error::bad_config("set `path` or `paths`"));
        }
        if let Some(warn) = self.warn_age
            && warn >= self.max_age
        {
            return Err(Error::bad_config("`warn_age` must be less than `max_age`"));
        }
        Ok(paths)
    }
}

impl Detector for StaleFile {
    type Config = Config;

    /// Each file must lie in a granted directory.
    fn config_needs(config: &Config) -> Result<Needs> {
        Ok(config
            .paths()?
            .into_iter()
            .fold(Needs::new(), |n, p| n.dir(p, Access::Read)))
    }

    /// One host call per 10,000 files for all their metadata (symlinks
    /// followed while inside the grant), rather than opening each file.
    fn detect(_cx: &Context, mut config: Config) -> Result<Vec<Finding>> {
        config.paths()?;
        // Moved out, not copied: they are what `stat_many` is given.
        let mut paths = std::mem::take(&mut config.paths);
        if let Some(path) = config.path.take() {
            paths.insert(0, path);
        }
        let now = Duration::from_millis(clock::now_ms());
        let mut tally = Tally::new(&config, now, paths.len());
        for chunk in paths.chunks(STAT_BATCH) {
            let stats = fs::stat_many(chunk, true)?;
            for (path, stat) in chunk.iter().zip(stats) {
                tally.add(path, stat);
            }
        }
        Ok(tally.finish())
    }
}

/// The findings of a check over many files, folded as each file's metadata
/// comes: one finding per problem file, and the fresh files counted into a
/// single `file.fresh` finding (given only when all are fresh), so a check
/// over many files reports what matters without building a finding for
/// every healthy file. A check of one file gets that file's own finding.
pub struct Tally<'c> {
    config: &'c Config,
    now: Duration,
    files: usize,
    fresh: usize,
    oldest: Duration,
    findings: Vec<Finding>,
}

impl<'c> Tally<'c> {
    /// For a check over `files` files, as of `now` (since the Unix epoch).
    pub fn new(config: &'c Config, now: Duration, files: usize) -> Tally<'c> {
        Tally {
            config,
            now,
            files,
            fresh: 0,
            oldest: Duration::ZERO,
            findings: Vec::new(),
        }
    }

    /// One file's metadata (`Ok(None)`: nothing there).
    pub fn add(&mut self, path: &str, stat: Result<Option<FileStat>>) {
        if self.files == 1 {
            self.findings.push(check(path, stat, self.now, self.config));
            return;
        }
        match age(path, stat, self.now) {
            Ok(age) if is_fresh(age, self.config) => {
                self.fresh += 1;
                self.oldest = self.oldest.max(age);
            }
            Ok(age) => self.findings.push(by_age(path, age, self.config)),
            Err(problem) => self.findings.push(*problem),
        }
    }

    pub fn finish(self) -> Vec<Finding> {
        if self.files == 1 || !self.findings.is_empty() {
            return self.findings;
        }
        let oldest = self.oldest.as_secs_f64();
        vec![
            Finding::ok(
                "file.fresh",
                format!(
                    "all {} files are fresh (oldest {})",
                    self.fresh,
                    humanize(Duration::from_secs_f64(oldest))
                ),
            )
            .metric("files", self.fresh as f64)
            .metric("age_seconds", oldest),
        ]
    }
}

/// Paths per `stat-many` call (the host's bound).
const STAT_BATCH: usize = 10_000;

/// The check for one file: a pure function of its metadata (`Ok(None)`:
/// nothing there) and now.
pub fn check(
    path: &str,
    stat: Result<Option<FileStat>>,
    now: Duration,
    config: &Config,
) -> Finding {
    match age(path, stat, now) {
        Ok(age) => by_age(path, age, config),
        Err(problem) => *problem,
    }
}

/// How old the regular file at `path` is, or the finding that says it is
/// missing, unreadable or not a regular file.
fn age(
    path: &str,
    stat: Result<Option<FileStat>>,
    now: Duration,
) -> std::result::Result<Duration, Box<Finding>> {
    let meta = match stat {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Err(Box::new(
                Finding::fail("file.missing", format!("{path} does not exist")).label("path", path),
            ));
        }
        Err(e) => {
            return Err(Box::new(
                Finding::fail("file.unreadable", e.message().to_string()).label("path", path),
            ));
        }
    };
    if !meta.is_file() {
        return Err(Box::new(
            Finding::fail("file.unreadable", format!("{path} is not a regular file"))
                .label("path", path),
        ));
    }
    let mtime = meta.modified.duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(now.saturating_sub(mtime))
}

fn is_fresh(age: Duration, config: &Config) -> bool {
    age <= config.max_age.0 && config.warn_age.is_none_or(|w| age <= w.0)
}

/// The finding for a regular file `age` old.
fn by_age(path: &str, age: Duration, config: &Config) -> Finding {
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

impl Action for StaleFile {
    type Config = RestartConfig;

    /// Either a command or a URL, chosen by the config, so neither can be
    /// required up front; the host still runs only what is granted.
    fn remedy_needs() -> Needs {
        Needs::new()
    }

    /// The command or URL this config restarts with must be granted.
    fn config_needs(c: &RestartConfig) -> Result<Needs> {
        Ok(match c.restart()? {
            Restart::Command(name) => Needs::new().command(name),
            Restart::Url(url) => Needs::new().url(url),
        })
    }

    fn remedy(
        _cx: &Context,
        c: RestartConfig,
        findings: &[Finding],
        dry_run: bool,
    ) -> Result<Outcome> {
        let restart = c.restart()?;
        let stale: Vec<&str> = findings
            .iter()
            .filter(|f| f.status != Status::Ok)
            .filter_map(|f| f.get_label("path"))
            .collect();
        let why = if stale.is_empty() {
            String::new()
        } else {
            format!(" ({} not refreshed)", stale.join(", "))
        };
        let mut out = Outcome::new();
        match restart {
            Restart::Command(name) if dry_run => {
                out.step(format!("would run command `{name}`{why}"));
                Ok(out.message(format!("would restart the poller with `{name}`")))
            }
            Restart::Url(url) if dry_run => {
                out.step(format!("would POST {url}{why}"));
                Ok(out.message(format!("would restart the poller via {url}")))
            }
            Restart::Command(name) => {
                // The host's errors name the command already.
                let o = exec::run(&name)?;
                if !o.success() {
                    return Err(Error::failed(format!("command `{name}` {}", o.describe())));
                }
                out.step(format!("ran command `{name}`{why}: {}", o.describe()));
                Ok(out
                    .changed()
                    .message(format!("restarted the poller with `{name}`")))
            }
            Restart::Url(url) => {
                let r = mend_sdk::http::post(&url)
                    .timeout(c.timeout.0)
                    .send()
                    .map_err(|e| {
                        if e.is_denied() {
                            return e;
                        }
                        let m = e.to_string();
                        let m = m.strip_prefix(&format!("{url}: ")).unwrap_or(&m);
                        Error::failed(format!("POST {url}: {m}"))
                    })?;
                if !r.is_success() {
                    return Err(Error::failed(format!(
                        "POST {url} answered {}: {}",
                        r.status,
                        r.text().chars().take(200).collect::<String>()
                    )));
                }
                out.step(format!("POST {url}{why}: HTTP {}", r.status));
                Ok(out
                    .changed()
                    .message(format!("restarted the poller via {url}")))
            }
        }
    }
}

mend_sdk::export!(StaleFile: Detector, Action);

#[cfg(test)]
mod tests {
    use super::*;

    fn restart(json: &str) -> Result<Restart> {
        serde_json::from_str::<RestartConfig>(json)
            .unwrap()
            .restart()
    }

    #[test]
    fn the_action_takes_exactly_one_way_to_restart() {
        assert_eq!(
            restart(r#"{"command": "restart-poller"}"#).unwrap(),
            Restart::Command("restart-poller".into())
        );
        assert_eq!(
            restart(r#"{"restart_url": "http://127.0.0.1:9100/admin/restart"}"#).unwrap(),
            Restart::Url("http://127.0.0.1:9100/admin/restart".into())
        );
        for bad in [
            "{}",
            r#"{"command": ""}"#,
            r#"{"command": "x", "restart_url": "http://h/"}"#,
            r#"{"restart_url": "ftp://h/"}"#,
        ] {
            assert!(matches!(restart(bad), Err(Error::BadConfig(_))), "{bad}");
        }
    }
}
