//! The error a plugin returns. mend adds the plugin's name when it reports it.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The operator's config for this plugin is wrong.
    BadConfig(String),
    /// The plugin was refused something it needs (not granted, or not
    /// allowed, e.g. a write in a dry run).
    Denied(String),
    /// Anything else.
    Failed(String),
    /// A host call ran past its timeout.
    TimedOut(String),
    /// A host-side limit was reached (reply size, rows, output).
    Limit(String),
}

impl Error {
    pub fn bad_config(message: impl Into<String>) -> Self {
        Error::BadConfig(message.into())
    }
    pub fn denied(message: impl Into<String>) -> Self {
        Error::Denied(message.into())
    }
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }

    /// The same kind of error, its message prefixed with what was being
    /// done: `e.context("PING on `cache`")`.
    pub fn context(self, what: impl fmt::Display) -> Self {
        let wrap = |m: String| format!("{what}: {m}");
        match self {
            Error::BadConfig(m) => Error::BadConfig(wrap(m)),
            Error::Denied(m) => Error::Denied(wrap(m)),
            Error::Failed(m) => Error::Failed(wrap(m)),
            Error::TimedOut(m) => Error::TimedOut(wrap(m)),
            Error::Limit(m) => Error::Limit(wrap(m)),
        }
    }

    /// Whether the host refused (not granted, not allowed).
    pub fn is_denied(&self) -> bool {
        matches!(self, Error::Denied(_))
    }

    /// The message without its kind.
    pub fn message(&self) -> &str {
        match self {
            Error::BadConfig(m)
            | Error::Denied(m)
            | Error::Failed(m)
            | Error::TimedOut(m)
            | Error::Limit(m) => m,
        }
    }

    /// Wraps an I/O error with what was being done, e.g. the path.
    pub fn io(context: impl fmt::Display, e: std::io::Error) -> Self {
        let message = format!("{context}: {e}");
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => Error::Denied(message),
            _ => Error::Failed(message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadConfig(m) => write!(f, "bad config: {m}"),
            Error::Denied(m) => write!(f, "denied: {m}"),
            Error::Failed(m) => f.write_str(m),
            Error::TimedOut(m) => write!(f, "timed out: {m}"),
            Error::Limit(m) => write!(f, "limit: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::io("i/o error", e)
    }
}

impl From<crate::bindings::mend::plugin::types::HostError> for Error {
    fn from(e: crate::bindings::mend::plugin::types::HostError) -> Self {
        use crate::bindings::mend::plugin::types::HostError as H;
        match e {
            H::Denied(m) => Error::Denied(m),
            H::Failed(m) => Error::Failed(m),
            H::TimedOut(m) => Error::TimedOut(m),
            H::Limit(m) => Error::Limit(m),
        }
    }
}
