//! The error a plugin returns. mend adds the plugin's name when it reports it.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The operator's config for this plugin is wrong.
    BadConfig(String),
    /// The plugin was refused something it needs.
    Denied(String),
    /// Anything else.
    Failed(String),
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
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::io("i/o error", e)
    }
}
