//! mend's exit codes: one per outcome a script may branch on (listed in
//! the README). A command fails with a [`Failure`] to choose its code;
//! any other error exits [`Exit::Error`].

use std::fmt;
use std::process::ExitCode;

/// What a command's exit code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done; for `status`: every check is healthy.
    Ok,
    /// Anything else went wrong (the message says what).
    Error,
    /// Bad usage: an unknown flag, a missing argument (clap's own code).
    Usage,
    /// `status`: some check is not healthy (degraded, unavailable or
    /// unknown).
    Unhealthy,
    /// mend refused: a heal no policy started (409).
    Refused,
    /// No such check, incident or endpoint (404).
    NotFound,
    /// The token is missing or wrong, or none is configured (401, 403).
    Unauthorized,
    /// mend's API does not answer at that address.
    Unreachable,
    /// The config is invalid (`run`, `check-config`, `reload`); EX_CONFIG.
    Config,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::Unhealthy => 3,
            Exit::Refused => 4,
            Exit::NotFound => 5,
            Exit::Unauthorized => 6,
            Exit::Unreachable => 7,
            Exit::Config => 78,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}

/// An error with the exit code it should end the command with.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code for an error: its [`Failure`]'s, else [`Exit::Error`].
pub fn of(e: &anyhow::Error) -> Exit {
    e.chain()
        .find_map(|c| c.downcast_ref::<Failure>())
        .map_or(Exit::Error, |f| f.exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        let all = [
            Exit::Ok,
            Exit::Error,
            Exit::Usage,
            Exit::Unhealthy,
            Exit::Refused,
            Exit::NotFound,
            Exit::Unauthorized,
            Exit::Unreachable,
            Exit::Config,
        ];
        let mut codes: Vec<u8> = all.iter().map(|e| e.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert_eq!(Exit::Usage.code(), 2, "clap exits 2 on bad usage");
    }

    #[test]
    fn a_failure_keeps_its_code_through_context() {
        let e = anyhow::Error::new(Failure::new(Exit::NotFound, "no incident 9"))
            .context("showing incident 9");
        assert_eq!(of(&e), Exit::NotFound);
        assert_eq!(of(&anyhow::anyhow!("boom")), Exit::Error);
    }
}
