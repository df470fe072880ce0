//! `service-restart`: restarts a service by running a command the operator
//! defined under `[commands]`, then leaves the verdict to verification (the
//! engine re-runs the check's detector).
//!
//! Why a start limit here when policies already cap attempts: a policy's
//! `max_attempts` counts one policy's incidents, but the same restart may be
//! reached from several policies, or from incidents that keep re-opening
//! after their cooldown. Like systemd's `StartLimitBurst=`, this plugin
//! counts the restarts themselves, in its persistent state (so a restart of
//! mend does not reset it), and refuses past `start_limit_burst` restarts in
//! `start_limit_interval`: a service that needs restarting every few minutes
//! needs a human, not another restart.
//!
//! Every attempt counts, failed ones too (as in systemd); the timestamp is
//! recorded *before* the command runs so that a mend killed mid-restart
//! still counts it. Dry-run runs nothing and records nothing: it says what
//! would run and whether the start limit would allow it.

use std::time::Duration;

use mend_sdk::host::{clock, exec, state};
use mend_sdk::{Action, Context, Error, Finding, Needs, Outcome, Plugin, Result};
use serde::Deserialize;

/// The action's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The name of a command under `[commands]` (granted to the step).
    pub command: String,
    /// Restarts allowed within `start_limit_interval`; 0 disables the limit.
    #[serde(default = "default_burst")]
    pub start_limit_burst: u32,
    #[serde(default = "default_interval")]
    pub start_limit_interval: mend_sdk::Duration,
}

fn default_burst() -> u32 {
    3
}

fn default_interval() -> mend_sdk::Duration {
    mend_sdk::Duration(Duration::from_secs(600))
}

/// Restart times (ms since the epoch) and the limit they are held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartLimit {
    pub burst: u32,
    pub interval: Duration,
}

/// What the limit says about one more restart at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; `recent` restarts (before this one) fall in the window.
    Allowed { recent: usize },
    /// Refused; the next restart is allowed after `wait`.
    Refused { recent: usize, wait: Duration },
}

impl StartLimit {
    /// The restarts in `stamps` that still count at `now`: those less than
    /// `interval` ago. Stamps in the future (the clock went back) still
    /// count, which errs on the side of not restarting.
    pub fn recent(&self, stamps: &[u64], now: u64) -> Vec<u64> {
        let cutoff = now.saturating_sub(self.interval.as_millis() as u64);
        let mut v: Vec<u64> = stamps.iter().copied().filter(|&t| t > cutoff).collect();
        v.sort_unstable();
        v
    }

    pub fn check(&self, stamps: &[u64], now: u64) -> Verdict {
        let recent = self.recent(stamps, now);
        if self.burst == 0 || recent.len() < self.burst as usize {
            return Verdict::Allowed {
                recent: recent.len(),
            };
        }
        // The window frees up when the oldest restart that still blocks
        // leaves it.
        let blocking = recent[recent.len() - self.burst as usize];
        let free_at = blocking + self.interval.as_millis() as u64;
        Verdict::Refused {
            recent: recent.len(),
            wait: Duration::from_millis(free_at.saturating_sub(now).max(1)),
        }
    }

    /// "3 restarts in 10m", as in the refusal.
    pub fn describe(&self) -> String {
        format!(
            "{} restart{} in {}",
            self.burst,
            if self.burst == 1 { "" } else { "s" },
            humantime::format_duration(self.interval)
        )
    }
}

/// Stamps are kept as decimal milliseconds, one per line.
pub fn parse_stamps(text: &str) -> Vec<u64> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

pub fn format_stamps(stamps: &[u64]) -> String {
    stamps
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Attempts at an atomic update before giving up.
const MAX_SWAPS: usize = 32;

/// Removes one stamp `at` from the history (best effort).
fn uncount(key: &str, at: u64) {
    for _ in 0..MAX_SWAPS {
        let Ok(raw) = state::get(key) else { return };
        let mut stamps = raw
            .as_deref()
            .map(|b| parse_stamps(&String::from_utf8_lossy(b)))
            .unwrap_or_default();
        let Some(i) = stamps.iter().position(|s| *s == at) else {
            return;
        };
        stamps.remove(i);
        if let Ok(true) =
            state::compare_and_swap(key, raw.as_deref(), format_stamps(&stamps).as_bytes())
        {
            return;
        }
    }
}

fn state_key(command: &str) -> String {
    format!("starts/{command}")
}

fn seconds(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

pub struct ServiceRestart;

impl Plugin for ServiceRestart {
    fn needs() -> Needs {
        Needs::new().command("*").state()
    }
}

impl Action for ServiceRestart {
    type Config = Config;

    /// The command it runs must be granted.
    fn config_needs(c: &Config) -> Result<Needs> {
        if c.command.trim().is_empty() {
            return Err(Error::bad_config("`command` is empty"));
        }
        Ok(Needs::new().command(&c.command))
    }

    fn remedy(_cx: &Context, c: Config, _findings: &[Finding], dry_run: bool) -> Result<Outcome> {
        if c.command.trim().is_empty() {
            return Err(Error::bad_config(
                "`command` is empty: name a command defined under [commands]",
            ));
        }
        if c.start_limit_burst > 0 && c.start_limit_interval.0.is_zero() {
            return Err(Error::bad_config(
                "`start_limit_interval` must be longer than 0 (or set start_limit_burst = 0 to disable the limit)",
            ));
        }
        let limit = StartLimit {
            burst: c.start_limit_burst,
            interval: c.start_limit_interval.0,
        };
        let key = state_key(&c.command);
        let now = clock::now_ms();
        let stored = state::get_string(&key)
            .map_err(|e| Error::failed(format!("reading restart history of `{}`: {e}", c.command)))?
            .map(|s| parse_stamps(&s))
            .unwrap_or_default();
        let recent = limit.recent(&stored, now);
        let verdict = limit.check(&recent, now);
        let usage = |n: usize| {
            if limit.burst == 0 {
                "start limit disabled".to_string()
            } else {
                format!(
                    "{n} of {} restarts in {} used",
                    limit.burst,
                    humantime::format_duration(limit.interval)
                )
            }
        };

        let mut out = Outcome::new();
        if dry_run {
            out.step(format!("would run command `{}`", c.command));
            return Ok(match verdict {
                Verdict::Allowed { recent } => {
                    out.step(format!("start limit allows it ({})", usage(recent)));
                    out.message(format!("would run `{}`", c.command))
                }
                Verdict::Refused { wait, .. } => {
                    out.step(format!(
                        "start limit would refuse it: {} (next allowed in {})",
                        limit.describe(),
                        seconds(wait)
                    ));
                    out.message(format!("would not run `{}`: start limit hit", c.command))
                }
            });
        }

        // Check and record in one atomic step, so concurrent calls (two
        // checks sharing a command) cannot both slip under the limit; and
        // record before running: a restart cut short by mend's own death
        // still counts.
        let mut recent = Vec::new();
        let mut recorded = false;
        for _ in 0..MAX_SWAPS {
            let raw = state::get(&key).map_err(|e| {
                Error::failed(format!("reading restart history of `{}`: {e}", c.command))
            })?;
            let stored = raw
                .as_deref()
                .map(|b| parse_stamps(&String::from_utf8_lossy(b)))
                .unwrap_or_default();
            recent = limit.recent(&stored, now);
            if let Verdict::Refused { wait, .. } = limit.check(&recent, now) {
                return Err(Error::failed(format!(
                    "start limit hit: {} (`{}` not run; next allowed in {})",
                    limit.describe(),
                    c.command,
                    seconds(wait)
                )));
            }
            recent.push(now);
            if state::compare_and_swap(&key, raw.as_deref(), format_stamps(&recent).as_bytes())
                .map_err(|e| Error::failed(format!("recording restart of `{}`: {e}", c.command)))?
            {
                recorded = true;
                break;
            }
        }
        if !recorded {
            return Err(Error::failed(format!(
                "recording restart of `{}`: the history kept changing under concurrent calls",
                c.command
            )));
        }
        let output = match exec::run(&c.command) {
            Ok(o) => o,
            Err(e) => {
                // It never started: not a restart. Best effort to un-count
                // it; the original error is what matters.
                uncount(&key, now);
                return Err(e.context(format!("running `{}`", c.command)));
            }
        };
        if !output.success() {
            return Err(Error::failed(format!(
                "command `{}` {}",
                c.command,
                output.describe()
            )));
        }
        out.step(format!("ran `{}`: {}", c.command, output.describe()));
        out.step(format!("start limit: {}", usage(recent.len())));
        Ok(out
            .changed()
            .message(format!("restarted with `{}`", c.command)))
    }
}

mend_sdk::export!(ServiceRestart: Action);

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn limit() -> StartLimit {
        StartLimit {
            burst: 3,
            interval: Duration::from_secs(600),
        }
    }

    #[test]
    fn allows_up_to_the_burst_then_refuses_until_the_oldest_leaves() {
        let l = limit();
        let now = 100 * MIN;
        assert_eq!(l.check(&[], now), Verdict::Allowed { recent: 0 });
        let stamps = [now - 9 * MIN, now - 5 * MIN];
        assert_eq!(l.check(&stamps, now), Verdict::Allowed { recent: 2 });
        let full = [now - 9 * MIN, now - 5 * MIN, now - MIN];
        assert_eq!(
            l.check(&full, now),
            Verdict::Refused {
                recent: 3,
                wait: Duration::from_secs(60)
            }
        );
        // A minute later the oldest is 10 minutes old and no longer counts.
        assert_eq!(l.check(&full, now + MIN), Verdict::Allowed { recent: 2 });
    }

    #[test]
    fn a_zero_burst_disables_the_limit() {
        let l = StartLimit {
            burst: 0,
            interval: Duration::from_secs(600),
        };
        assert_eq!(l.check(&[1, 2, 3, 4], 5), Verdict::Allowed { recent: 4 });
    }

    #[test]
    fn stamps_round_trip_and_garbage_is_ignored() {
        assert_eq!(
            parse_stamps(&format_stamps(&[1, 22, 333])),
            vec![1, 22, 333]
        );
        assert_eq!(parse_stamps("5\nnope\n\n7"), vec![5, 7]);
        assert_eq!(limit().describe(), "3 restarts in 10m");
    }
}
