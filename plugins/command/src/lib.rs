//! `command`: runs one command the operator defined under `[commands.NAME]`
//! (argv, environment, timeout are the host's; the plugin cannot add an
//! argument) and judges it by its exit code and, optionally, a pattern its
//! output must match. As a detector it is Monit's `check program` (and,
//! with `warn_codes = [1]`, a Nagios plugin's OK/WARNING/CRITICAL); as an
//! action it is the generic remedy. In a dry run the action shows the argv
//! and runs nothing (the host refuses to run anything anyway).

use mend_sdk::host::exec::{self, CommandOutput};
use mend_sdk::{Action, Context, Detector, Error, Finding, Needs, Outcome, Plugin, Result};
use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The name under `[commands]`.
    pub command: String,
    /// Exit codes that count as success.
    #[serde(default = "zero")]
    pub success_codes: Vec<i32>,
    /// A regex stdout must match for success (e.g. `"^active$"`).
    #[serde(default)]
    pub output_pattern: Option<String>,
    /// Exit codes a check reports as a warning rather than a failure
    /// (Nagios: `[1]`). Checks only.
    #[serde(default)]
    pub warn_codes: Vec<i32>,
}

fn zero() -> Vec<i32> {
    vec![0]
}

/// Longest pattern accepted (the regex crate bounds matching time; this
/// bounds compiling).
const MAX_PATTERN: usize = 1024;

fn pattern(c: &Config) -> Result<Option<Regex>> {
    let Some(p) = &c.output_pattern else {
        return Ok(None);
    };
    if p.len() > MAX_PATTERN {
        return Err(Error::bad_config(format!(
            "`output_pattern` is longer than {MAX_PATTERN} bytes"
        )));
    }
    regex::RegexBuilder::new(p)
        .multi_line(true)
        .size_limit(1 << 20)
        .build()
        .map(Some)
        .map_err(|e| Error::bad_config(format!("`output_pattern`: {e}")))
}

/// What both roles refuse before the first call; the needs are the command.
fn validated(c: &Config) -> Result<Needs> {
    if c.command.is_empty() {
        return Err(Error::bad_config("`command` is empty"));
    }
    if c.success_codes.is_empty() {
        return Err(Error::bad_config(
            "`success_codes` is empty: nothing could succeed",
        ));
    }
    if let Some(code) = c.warn_codes.iter().find(|w| c.success_codes.contains(w)) {
        return Err(Error::bad_config(format!(
            "exit {code} is in both `success_codes` and `warn_codes`"
        )));
    }
    pattern(c)?;
    Ok(Needs::new().command(&c.command))
}

/// How a run ended, judged by the config: a pure function of the two.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Success,
    /// An exit code in `warn_codes`.
    Warning(String),
    /// A stable code (`command.status`, `command.output`,
    /// `command.timeout`) and why.
    Failure(&'static str, String),
}

pub fn judge(c: &Config, re: Option<&Regex>, ran: &CommandOutput) -> Verdict {
    let name = &c.command;
    // Only a run that went wrong is described here (a success's caller
    // says it its own way).
    let how = || ran.describe();
    if ran.timed_out {
        return Verdict::Failure("command.timeout", format!("`{name}` {}", how()));
    }
    let Some(code) = ran.exit_code else {
        return Verdict::Failure("command.status", format!("`{name}` {}", how()));
    };
    if c.warn_codes.contains(&code) {
        return Verdict::Warning(format!("`{name}` {}{}", how(), first_line(&ran.stdout)));
    }
    if !c.success_codes.contains(&code) {
        return Verdict::Failure(
            "command.status",
            format!(
                "`{name}` {}{} (success: exit {:?})",
                how(),
                first_line(&ran.stdout),
                c.success_codes
            ),
        );
    }
    if let Some(re) = re
        && !re.is_match(&ran.stdout)
    {
        let seen: String = ran.stdout.trim().chars().take(200).collect();
        return Verdict::Failure(
            "command.output",
            format!(
                "`{name}` exited {code} but its output does not match `{}`: {seen:?}",
                re.as_str()
            ),
        );
    }
    Verdict::Success
}

/// `, output "first line of stdout"` (bounded), or nothing: a check program's
/// first line is its message (Nagios, Monit).
fn first_line(stdout: &str) -> String {
    match stdout.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(l) => format!(", output {:?}", l.chars().take(200).collect::<String>()),
        None => String::new(),
    }
}

/// Shell-like quoting, for showing an argv (never run through a shell).
pub fn shown(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub struct Command;

impl Plugin for Command {}

impl Detector for Command {
    type Config = Config;

    fn config_needs(c: &Config) -> Result<Needs> {
        validated(c)
    }

    fn detect(_cx: &Context, c: Config) -> Result<Vec<Finding>> {
        let re = pattern(&c)?;
        let ran = exec::run(&c.command)?;
        let finding = match judge(&c, re.as_ref(), &ran) {
            Verdict::Success => Finding::ok(
                "command.ok",
                format!(
                    "`{}` {}{}",
                    c.command,
                    ran.describe(),
                    first_line(&ran.stdout)
                ),
            ),
            Verdict::Warning(why) => Finding::warn("command.status", why),
            Verdict::Failure(code, why) => Finding::fail(code, why),
        };
        let mut finding = finding
            .metric("duration_ms", ran.duration_ms as f64)
            .label("command", &c.command);
        if let Some(code) = ran.exit_code {
            finding = finding.metric("exit_code", code as f64);
        }
        Ok(vec![finding])
    }
}

impl Action for Command {
    type Config = Config;

    fn config_needs(c: &Config) -> Result<Needs> {
        if !c.warn_codes.is_empty() {
            return Err(Error::bad_config(
                "`warn_codes` is for checks: a remedy either succeeds or fails",
            ));
        }
        validated(c)
    }

    fn remedy(_cx: &Context, c: Config, _findings: &[Finding], dry_run: bool) -> Result<Outcome> {
        let re = pattern(&c)?;
        let argv = exec::argv(&c.command)?;
        let mut out = Outcome::new();
        if dry_run {
            out.step(format!("would run `{}`: {}", c.command, shown(&argv)));
            return Ok(out.message(format!("dry run: `{}` not run", c.command)));
        }
        let ran = exec::run(&c.command)?;
        match judge(&c, re.as_ref(), &ran) {
            Verdict::Success => {}
            Verdict::Warning(why) | Verdict::Failure(_, why) => {
                return Err(Error::failed(format!("command {why}")));
            }
        }
        let how = ran.describe();
        out.step(format!("ran `{}`: {} ({how})", c.command, shown(&argv)));
        Ok(out.changed().message(format!("`{}` succeeded", c.command)))
    }
}

mend_sdk::export!(Command: Detector, Action);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_shown_quoted() {
        let a = |v: &[&str]| shown(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            a(&["systemctl", "restart", "app.service"]),
            "systemctl restart app.service"
        );
        assert_eq!(a(&["sh", "-c", "echo it's"]), "sh -c 'echo it'\\''s'");
        assert_eq!(a(&[""]), "''");
    }

    fn ran(exit_code: Option<i32>, timed_out: bool, stdout: &str) -> CommandOutput {
        CommandOutput {
            exit_code,
            stdout: stdout.into(),
            stderr: String::new(),
            timed_out,
            truncated: false,
            duration_ms: 5,
        }
    }

    #[test]
    fn runs_are_judged_by_code_then_output() {
        let c = Config {
            command: "probe".into(),
            success_codes: vec![0],
            output_pattern: Some("^up$".into()),
            warn_codes: vec![1],
        };
        let re = pattern(&c).unwrap();
        let judge = |r: &CommandOutput| judge(&c, re.as_ref(), r);
        assert_eq!(judge(&ran(Some(0), false, "up\n")), Verdict::Success);
        assert!(
            matches!(judge(&ran(Some(1), false, "slow")), Verdict::Warning(w) if w.contains("\"slow\""))
        );
        assert!(matches!(
            judge(&ran(Some(2), false, "")),
            Verdict::Failure("command.status", _)
        ));
        assert!(matches!(
            judge(&ran(Some(0), false, "down")),
            Verdict::Failure("command.output", _)
        ));
        // Killed by a signal, or at its timeout: never a success.
        assert!(matches!(
            judge(&ran(None, false, "up")),
            Verdict::Failure("command.status", _)
        ));
        assert!(matches!(
            judge(&ran(Some(0), true, "up")),
            Verdict::Failure("command.timeout", _)
        ));
    }
}
