//! `cache-heal`: keeps a cache trustworthy, and keeps the application
//! running when the cache is gone.
//!
//! A cache that answers slowly, fills up, or serves garbage (a half-written
//! JSON blob, a key someone set without a TTL that never goes away) hurts
//! more than no cache: the application trusts it. And when Redis is down,
//! an application that cannot tell keeps timing out on every request. This
//! plugin watches both a Redis key namespace and a cache directory, purges
//! what fails validation, and raises a flag file while Redis is unreachable
//! so the application can bypass the cache instead of waiting on it.
//!
//! Safety rules:
//! - Redis: only keys under the configured `prefix` are ever read or
//!   deleted (SCAN with MATCH, never KEYS or FLUSH*); deletion is UNLINK in
//!   batches, capped per call;
//! - files: only inside the granted directory, never following symlinks
//!   (they are neither judged, deleted nor descended), never judging a file
//!   younger than `min_age` (it may still be being written);
//! - dry-run lists every key, file and flag change it would make.
//!
//! | code | status | when |
//! |---|---|---|
//! | `cache.ok` | ok | nothing wrong |
//! | `cache.unreachable` | fail | Redis does not answer PING |
//! | `cache.probe.failed` | fail | it answers, but the SET/GET/DEL probe fails |
//! | `cache.latency.high` | warn/fail | the probe round trip is slower than `warn_latency`/`fail_latency` |
//! | `cache.memory.high` | warn/fail | `used_memory` is past `warn_memory_percent`/`fail_memory_percent` of `maxmemory` |
//! | `cache.keys.corrupt` | fail | sampled keys fail validation |
//! | `cache.degraded.stale` | warn | Redis answers again but the degraded flag is still set |
//! | `cache.files.corrupt` | fail | cache files fail validation |
//! | `cache.files.expired` | warn | cache files older than `max_age` |
//!
//! The same config table serves the detector and the action, so a check
//! and its policy steps can share it.
//!
//! The degraded flag takes two policies: one on `cache.unreachable` whose
//! step raises the flag (not a heal: Redis is still down, so it escalates),
//! one on `cache.degraded.stale` whose step removes it once Redis answers.
//! One policy for both would never remove it: an escalated incident waits
//! for a healthy check, and a set flag keeps the check unhealthy. README.md
//! has the full example.

pub mod files;
mod flag;
mod keys;
pub mod validate;

use mend_sdk::host::clock;
use mend_sdk::{Access, Action, Context, Detector, Error, Finding, Needs, Outcome, Plugin, Result};
use serde::Deserialize;

pub use validate::Validate;

/// What the action deletes from Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Keys under the prefix that fail validation.
    #[default]
    Corrupt,
    /// Every key under the prefix.
    Namespace,
}

/// The config of both roles.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Redis connection, by its name under `[connections]`.
    #[serde(default)]
    pub connection: Option<String>,
    /// The key namespace this plugin owns, e.g. `"app:"`. Required with
    /// `connection`: nothing outside it is read or deleted.
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub warn_latency: Option<mend_sdk::Duration>,
    #[serde(default)]
    pub fail_latency: Option<mend_sdk::Duration>,
    #[serde(default)]
    pub warn_memory_percent: Option<f64>,
    #[serde(default)]
    pub fail_memory_percent: Option<f64>,
    /// Keys the detector samples per call (0: no sampling).
    #[serde(default = "default_sample")]
    pub sample: usize,
    /// How values must parse.
    #[serde(default)]
    pub validate: Option<Validate>,
    /// Keys without a TTL are corrupt.
    #[serde(default)]
    pub require_ttl: bool,
    /// A file (in a granted directory) set while Redis is unreachable.
    #[serde(default)]
    pub degraded_flag: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    /// Keys per UNLINK.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// At most this many keys deleted per call.
    #[serde(default = "default_max_delete")]
    pub max_delete: usize,
    /// The action stops scanning after this long (then unlinks what it
    /// chose and verifies), so a huge prefix ends in a partial purge that
    /// says so, not a blown deadline. Keep it under the call's deadline.
    #[serde(default = "default_time_budget")]
    pub time_budget: mend_sdk::Duration,
    /// A cache directory to keep clean.
    #[serde(default)]
    pub file_cache: Option<files::FileCache>,
}

fn default_sample() -> usize {
    100
}
fn default_batch() -> usize {
    100
}
fn default_max_delete() -> usize {
    100_000
}
fn default_time_budget() -> mend_sdk::Duration {
    mend_sdk::Duration(std::time::Duration::from_secs(3))
}

/// The Redis part of a checked config.
pub(crate) struct RedisTarget<'a> {
    pub conn: &'a str,
    pub prefix: &'a str,
    /// The probe's key, never sampled or deleted by the action.
    pub probe_key: String,
}

impl Config {
    /// Checks what serde cannot.
    pub fn check(&self) -> Result<()> {
        if self.connection.is_none() && self.file_cache.is_none() {
            return Err(Error::bad_config(
                "set `connection` (a Redis connection) or `file_cache` (a cache directory), or both",
            ));
        }
        match (&self.connection, &self.prefix) {
            (Some(_), None) => {
                return Err(Error::bad_config(
                    "`prefix` is required with `connection`: only keys under it are read or deleted",
                ));
            }
            (Some(_), Some(p)) if p.is_empty() => {
                return Err(Error::bad_config(
                    "`prefix` must not be empty: it scopes every key this plugin reads or deletes",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::bad_config("`prefix` needs `connection`"));
            }
            _ => {}
        }
        if let Some(flag) = &self.degraded_flag {
            if self.connection.is_none() {
                return Err(Error::bad_config("`degraded_flag` needs `connection`"));
            }
            if !flag.starts_with('/') || flag.ends_with('/') {
                return Err(Error::bad_config(
                    "`degraded_flag` must be an absolute file path, e.g. \"/flags/cache-degraded\"",
                ));
            }
        }
        for (name, v) in [
            ("warn_memory_percent", self.warn_memory_percent),
            ("fail_memory_percent", self.fail_memory_percent),
        ] {
            if v.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
                return Err(Error::bad_config(format!(
                    "`{name}` must be between 0 and 100"
                )));
            }
        }
        if !(1..=1000).contains(&self.batch) {
            return Err(Error::bad_config("`batch` must be between 1 and 1000"));
        }
        if self.sample > 10_000 {
            return Err(Error::bad_config("`sample` must be at most 10000"));
        }
        if let Some(fc) = &self.file_cache {
            fc.check()?;
        }
        Ok(())
    }

    /// Whether keys can be judged at all.
    pub fn has_criteria(&self) -> bool {
        self.validate.is_some() || self.require_ttl
    }

    pub(crate) fn redis<'a>(&'a self, cx: &Context) -> Option<RedisTarget<'a>> {
        let conn = self.connection.as_deref()?;
        let prefix = self.prefix.as_deref()?;
        let check = if cx.check().is_empty() {
            "default"
        } else {
            cx.check()
        };
        Some(RedisTarget {
            conn,
            prefix,
            probe_key: format!("{prefix}mend-probe:{check}"),
        })
    }
}

pub struct CacheHeal;

impl Plugin for CacheHeal {
    /// Nothing fixed: a Redis-only config needs a connection, a file-cache
    /// one a directory, and the degraded flag a directory too. The host
    /// still denies whatever the operator did not grant, and the error
    /// names it.
    fn needs() -> Needs {
        Needs::new()
    }
}

impl Config {
    /// What this config reaches: its connection, its cache directory, the
    /// directory of its degraded flag.
    fn reaches(&self, write: bool) -> Result<Needs> {
        self.check()?;
        let access = if write {
            Access::ReadWrite
        } else {
            Access::Read
        };
        let mut n = Needs::new();
        if let Some(c) = &self.connection {
            n = n.connection(c);
        }
        if let Some(f) = &self.file_cache {
            n = n.dir(&f.path, access);
        }
        if let Some(flag) = &self.degraded_flag {
            n = n.dir(flag, access);
        }
        Ok(n)
    }
}

impl Detector for CacheHeal {
    type Config = Config;

    fn config_needs(c: &Config) -> Result<Needs> {
        c.reaches(false)
    }

    fn detect(cx: &Context, c: Config) -> Result<Vec<Finding>> {
        c.check()?;
        let mut problems = Vec::new();
        let mut ok_metrics: Vec<(&'static str, f64)> = Vec::new();
        let mut ok_parts = Vec::new();
        if let Some(target) = c.redis(cx) {
            let r = keys::inspect(&c, &target)?;
            if r.problems.is_empty() {
                ok_parts.push(r.summary);
            }
            problems.extend(r.problems);
            ok_metrics.extend(r.metrics);
        }
        if let Some(fc) = &c.file_cache {
            let scan = files::scan(fc, clock::now())?;
            if scan.corrupt == 0 && scan.expired == 0 {
                ok_parts.push(format!("{} holds {} clean file(s)", fc.path, scan.files));
            }
            ok_metrics.push(("files", scan.files as f64));
            problems.extend(files::findings(fc, &scan));
        }
        if !problems.is_empty() {
            return Ok(problems);
        }
        let mut ok = Finding::ok("cache.ok", ok_parts.join("; "));
        for (k, v) in ok_metrics {
            ok = ok.metric(k, v);
        }
        Ok(vec![ok])
    }
}

/// What the findings handed to the action ask it to do. With none (a
/// manual `mend plugin call`), everything the config enables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    pub keys: bool,
    pub files: bool,
}

impl Wants {
    pub fn from_findings(findings: &[Finding]) -> Self {
        if findings.is_empty() {
            return Wants {
                keys: true,
                files: true,
            };
        }
        Wants {
            keys: findings
                .iter()
                .any(|f| f.code == "cache.keys.corrupt" || f.code == "cache.memory.high"),
            files: findings.iter().any(|f| f.code.starts_with("cache.files.")),
        }
    }
}

impl Action for CacheHeal {
    type Config = Config;

    fn config_needs(c: &Config) -> Result<Needs> {
        c.reaches(true)
    }

    fn remedy(cx: &Context, c: Config, findings: &[Finding], dry_run: bool) -> Result<Outcome> {
        c.check()?;
        let wants = Wants::from_findings(findings);
        let mut out = Outcome::new();
        let mut changed = false;
        let mut said = Vec::new();
        if let Some(target) = c.redis(cx) {
            match keys::ping(target.conn)? {
                Err(why) => {
                    // Unreachable: nothing to purge; tell the application.
                    match &c.degraded_flag {
                        Some(path) => {
                            let did = flag::raise(path, target.conn, &why, dry_run, &mut out)?;
                            changed |= did;
                            said.push(format!(
                                "Redis `{}` is unreachable; degraded flag {path} {}",
                                target.conn,
                                match (did, dry_run) {
                                    (true, false) => "set",
                                    (true, true) => "would be set",
                                    (false, _) => "already set",
                                }
                            ));
                        }
                        None if wants.keys => {
                            return Err(Error::failed(format!(
                                "Redis connection `{}` is unreachable ({why}) and no `degraded_flag` is configured",
                                target.conn
                            )));
                        }
                        None => said.push(format!("Redis `{}` is unreachable", target.conn)),
                    }
                }
                Ok(()) => {
                    if let Some(path) = &c.degraded_flag
                        && flag::clear(path, dry_run, &mut out)?
                    {
                        changed |= !dry_run;
                        said.push(format!(
                            "Redis `{}` answers; degraded flag {path} {}",
                            target.conn,
                            if dry_run {
                                "would be removed"
                            } else {
                                "removed"
                            }
                        ));
                    }
                    if wants.keys {
                        if c.mode == Mode::Corrupt && !c.has_criteria() {
                            return Err(Error::bad_config(
                                "`mode = \"corrupt\"` needs `validate` or `require_ttl` to tell corrupt keys",
                            ));
                        }
                        let p = keys::purge(&c, &target, dry_run, &mut out)?;
                        changed |= p.unlinked > 0;
                        said.push(p.message);
                    }
                }
            }
        }
        if let Some(fc) = &c.file_cache
            && wants.files
        {
            let p = files::purge(fc, clock::now(), dry_run, &mut out)?;
            changed |= p.deleted > 0;
            said.push(p.message);
        }
        if said.is_empty() {
            let codes: Vec<&str> = findings.iter().map(|f| f.code.as_str()).collect();
            said.push(format!("nothing to do for {codes:?}"));
        }
        let out = if changed && !dry_run {
            out.changed()
        } else {
            out
        };
        Ok(out.message(said.join("; ")))
    }
}

/// Steps listed per call; the rest are counted.
pub(crate) const MAX_STEPS: usize = 500;

/// Examples named in a finding.
pub(crate) const EXAMPLES: usize = 5;

/// `a, b, c`, each cut to a readable length.
pub(crate) fn examples<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .take(EXAMPLES)
        .map(|s| {
            if s.chars().count() > 80 {
                format!("{}…", s.chars().take(80).collect::<String>())
            } else {
                s.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

mend_sdk::export!(CacheHeal: Detector, Action);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Config {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn findings_choose_what_the_action_purges() {
        let f = |code: &str| Finding::fail(code, "");
        let all = Wants {
            keys: true,
            files: true,
        };
        assert_eq!(Wants::from_findings(&[]), all);
        assert_eq!(
            Wants::from_findings(&[f("cache.degraded.stale")]),
            Wants {
                keys: false,
                files: false
            }
        );
        assert_eq!(
            Wants::from_findings(&[f("cache.memory.high"), f("cache.files.expired")]),
            all
        );
        assert!(!Wants::from_findings(&[f("cache.unreachable")]).keys);
    }

    #[test]
    fn a_prefix_is_required_and_never_empty() {
        assert!(
            config(r#"{"connection":"c","prefix":"a:"}"#)
                .check()
                .is_ok()
        );
        for bad in [
            r#"{}"#,
            r#"{"connection":"c"}"#,
            r#"{"connection":"c","prefix":""}"#,
            r#"{"prefix":"a:","file_cache":{"path":"/c","max_age":"1h"}}"#,
            r#"{"connection":"c","prefix":"a:","batch":0}"#,
            r#"{"connection":"c","prefix":"a:","degraded_flag":"/flags/"}"#,
            r#"{"connection":"c","prefix":"a:","fail_memory_percent":120}"#,
        ] {
            assert!(
                matches!(config(bad).check(), Err(Error::BadConfig(_))),
                "{bad}"
            );
        }
    }
}
