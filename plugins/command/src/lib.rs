//! `command`: the generic action. Runs one command the operator defined
//! under `[commands.NAME]` (argv, environment, timeout are the host's; the
//! plugin cannot add an argument) and judges it by its exit code and,
//! optionally, a pattern its output must match. In a dry run it shows the
//! argv and runs nothing (the host refuses to run anything anyway).

use mend_sdk::host::exec;
use mend_sdk::{Action, Context, Error, Finding, Needs, Outcome, Plugin, Result};
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

pub struct CommandAction;

impl Plugin for CommandAction {}

impl Action for CommandAction {
    type Config = Config;

    fn config_needs(c: &Config) -> Result<Needs> {
        if c.command.is_empty() {
            return Err(Error::bad_config("`command` is empty"));
        }
        if c.success_codes.is_empty() {
            return Err(Error::bad_config(
                "`success_codes` is empty: nothing could succeed",
            ));
        }
        pattern(c)?;
        Ok(Needs::new().command(&c.command))
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
        let how = ran.describe();
        let code_ok = ran
            .exit_code
            .is_some_and(|code| !ran.timed_out && c.success_codes.contains(&code));
        if !code_ok {
            return Err(Error::failed(format!(
                "command `{}` {how} (success: exit {:?})",
                c.command, c.success_codes
            )));
        }
        if let Some(re) = &re
            && !re.is_match(&ran.stdout)
        {
            let seen: String = ran.stdout.trim().chars().take(200).collect();
            return Err(Error::failed(format!(
                "command `{}` exited {} but its output does not match `{}`: {seen:?}",
                c.command,
                ran.exit_code.unwrap_or_default(),
                re.as_str()
            )));
        }
        out.step(format!("ran `{}`: {} ({how})", c.command, shown(&argv)));
        Ok(out.changed().message(format!("`{}` succeeded", c.command)))
    }
}

mend_sdk::export!(CommandAction: Action);

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
}
