//! `rollback`: the failed-deployment action. Releases live in
//! `DIR/releases/<id>` (ids sort in deploy order, e.g. timestamps) and
//! `DIR/current` is a symlink to one of them. The action points `current`
//! at the newest release older than the current one that is not marked
//! bad, atomically (a new symlink renamed over the old), marks the release
//! it left bad (`.mend-bad` in it, with why), and optionally runs a named
//! restart command. It refuses to go past the oldest release or onto a bad
//! one. The policy's verification (the check) says whether it helped.

use mend_sdk::host::exec;
use mend_sdk::{Access, Action, Context, Error, Finding, Needs, Outcome, Plugin, Result};
use serde::Deserialize;

/// The marker that makes a release bad; its content says why.
pub const BAD_MARKER: &str = ".mend-bad";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The deployment directory, as the plugin sees it.
    pub dir: String,
    /// Where the releases are, under `dir`.
    #[serde(default = "default_releases")]
    pub releases: String,
    /// The symlink the application runs from, under `dir`.
    #[serde(default = "default_current")]
    pub current: String,
    /// A `[commands.NAME]` to run after switching (e.g. a restart).
    #[serde(default)]
    pub restart_command: Option<String>,
    /// Mark the release rolled back from as bad (default), so no later
    /// rollback returns to it.
    #[serde(default = "yes")]
    pub mark_bad: bool,
}

fn default_releases() -> String {
    "releases".into()
}
fn default_current() -> String {
    "current".into()
}
fn yes() -> bool {
    true
}

/// What a rollback would do: from which release to which.
#[derive(Debug, PartialEq, Eq)]
pub struct Switch {
    pub from: String,
    pub to: String,
}

/// Picks the release to go back to: the newest id older than `current`
/// that is not bad. `ids` in any order.
pub fn choose(
    current: &str,
    ids: &[String],
    bad: &[String],
) -> std::result::Result<Switch, String> {
    let mut older: Vec<&String> = ids.iter().filter(|id| id.as_str() < current).collect();
    if older.is_empty() {
        return Err(format!(
            "`{current}` is the oldest release: there is nothing to roll back to"
        ));
    }
    older.sort();
    match older.iter().rev().find(|id| !bad.contains(id)) {
        Some(to) => Ok(Switch {
            from: current.to_string(),
            to: (*to).clone(),
        }),
        None => Err(format!(
            "every release older than `{current}` is marked bad ({}): refusing to roll back onto one",
            older
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

struct Rollback;

impl Plugin for Rollback {
    fn needs() -> Needs {
        Needs::new().dir("*", Access::ReadWrite)
    }
}

fn join(a: &str, b: &str) -> String {
    format!("{}/{}", a.trim_end_matches('/'), b)
}

/// The release `current` points at: the last part of its target, which
/// must be in the releases directory.
fn current_release(c: &Config) -> Result<String> {
    let link = join(&c.dir, &c.current);
    let target = std::fs::read_link(&link).map_err(|e| Error::io(&link, e))?;
    let parent = target.parent().map(|p| p.to_string_lossy().into_owned());
    let id = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let releases = c.releases.trim_end_matches('/');
    let inside = parent.as_deref().is_some_and(|p| {
        p.trim_end_matches('/') == releases || p.trim_end_matches('/') == join(&c.dir, releases)
    });
    if id.is_empty() || !inside {
        return Err(Error::failed(format!(
            "{link} points at {}, not at a release in `{}`",
            target.display(),
            c.releases
        )));
    }
    Ok(id)
}

fn releases(c: &Config) -> Result<(Vec<String>, Vec<String>)> {
    let dir = join(&c.dir, &c.releases);
    let mut ids = Vec::new();
    let mut bad = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let id = entry.file_name().to_string_lossy().into_owned();
        if std::fs::metadata(join(&join(&dir, &id), BAD_MARKER)).is_ok() {
            bad.push(id.clone());
        }
        ids.push(id);
    }
    Ok((ids, bad))
}

impl Action for Rollback {
    type Config = Config;

    fn config_needs(c: &Config) -> Result<Needs> {
        for (key, v) in [("releases", &c.releases), ("current", &c.current)] {
            if v.is_empty() || v.starts_with('/') || v.split('/').any(|p| p == "..") {
                return Err(Error::bad_config(format!(
                    "`{key}` must be a relative path under `dir`"
                )));
            }
        }
        let mut needs = Needs::new().dir(c.dir.clone(), Access::ReadWrite);
        if let Some(cmd) = &c.restart_command {
            needs = needs.command(cmd.clone());
        }
        Ok(needs)
    }

    fn remedy(cx: &Context, c: Config, _findings: &[Finding], dry_run: bool) -> Result<Outcome> {
        let current = current_release(&c)?;
        let (ids, bad) = releases(&c)?;
        let switch = choose(&current, &ids, &bad).map_err(Error::failed)?;
        let mut out = Outcome::new();
        out.step(format!(
            "point {} at {}/{} (was {})",
            c.current, c.releases, switch.to, switch.from
        ));
        if c.mark_bad {
            out.step(format!("mark {} bad", switch.from));
        }
        if let Some(cmd) = &c.restart_command {
            out.step(format!("run `{cmd}`"));
        }
        if dry_run {
            return Ok(out.message(format!(
                "dry run: would roll back from {} to {}",
                switch.from, switch.to
            )));
        }
        // A new symlink renamed over the old: `current` always points at
        // a whole release.
        let link = join(&c.dir, &c.current);
        let tmp = join(&c.dir, ".mend-current.tmp");
        let _ = std::fs::remove_file(&tmp);
        #[allow(deprecated)] // std::os::wasi::fs::symlink_path is unstable
        std::fs::soft_link(join(&c.releases, &switch.to), &tmp).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| Error::io(&link, e))?;
        if c.mark_bad {
            let why = match cx.remedy() {
                Some(r) if r.incident > 0 => format!(
                    "rolled back by mend (incident {}, policy {}, step {})\n",
                    r.incident, r.policy, r.step
                ),
                _ => "rolled back by mend\n".to_string(),
            };
            let marker = join(&join(&join(&c.dir, &c.releases), &switch.from), BAD_MARKER);
            std::fs::write(&marker, why).map_err(|e| Error::io(&marker, e))?;
        }
        let mut message = format!("rolled back from {} to {}", switch.from, switch.to);
        if let Some(cmd) = &c.restart_command {
            let ran = exec::run(cmd)?;
            if !ran.success() {
                return Err(Error::failed(format!(
                    "{message}, but `{cmd}` failed: {}",
                    ran.describe()
                )));
            }
            message.push_str(&format!("; `{cmd}` ran"));
        }
        Ok(out.changed().message(message))
    }
}

mend_sdk::export!(Rollback: Action);

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn goes_back_to_the_newest_good_older_release() {
        let all = ids(&["r1", "r2", "r3", "r4"]);
        assert_eq!(
            choose("r4", &all, &[]),
            Ok(Switch {
                from: "r4".into(),
                to: "r3".into()
            })
        );
        assert_eq!(choose("r4", &all, &ids(&["r3"])).unwrap().to, "r2");
        // Newer releases than the current one are never a rollback.
        assert_eq!(choose("r2", &all, &[]).unwrap().to, "r1");
        assert!(choose("r1", &all, &[]).unwrap_err().contains("oldest"));
        assert!(
            choose("r3", &all, &ids(&["r1", "r2"]))
                .unwrap_err()
                .contains("marked bad")
        );
    }
}
