//! Every way a plugin call can fail, as one typed error that names the
//! plugin. The host never dies because of a plugin: everything a plugin can
//! do wrong ends up as one of these.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PluginError {
    #[error("plugin {plugin}: ran out of fuel (budget {budget})")]
    OutOfFuel { plugin: String, budget: u64 },

    #[error("plugin {plugin}: deadline of {deadline:?} exceeded")]
    DeadlineExceeded {
        plugin: String,
        #[serde(serialize_with = "ser_duration")]
        deadline: Duration,
    },

    #[error("plugin {plugin}: memory limit of {limit} bytes exceeded")]
    MemoryLimit { plugin: String, limit: usize },

    #[error("plugin {plugin}: trapped: {message}")]
    Trap {
        plugin: String,
        message: String,
        /// The wasm backtrace, when wasmtime captured one.
        backtrace: Option<String>,
    },

    #[error("plugin {plugin}: invalid component: {reason}")]
    InvalidComponent { plugin: String, reason: String },

    #[error("plugin {plugin}: built for mend:plugin@{found}; this host supports {supported}")]
    UnsupportedVersion {
        plugin: String,
        found: String,
        supported: String,
    },

    #[error("plugin {plugin}: needs {need}, which is not granted")]
    MissingGrant { plugin: String, need: String },

    #[error("plugin {plugin}: is not {role}")]
    WrongRole { plugin: String, role: &'static str },

    #[error("plugin {plugin}: bad config: {message}")]
    BadConfig { plugin: String, message: String },

    #[error("plugin {plugin}: denied: {message}")]
    Denied { plugin: String, message: String },

    #[error("plugin {plugin}: failed: {message}")]
    Failed { plugin: String, message: String },

    #[error("plugin {plugin}: result too large: {what}")]
    ResultTooLarge { plugin: String, what: String },

    /// A host-side budget ran out (resources the guest made the host hold).
    #[error("plugin {plugin}: {budget} budget of {limit} exceeded ({detail})")]
    Budget {
        plugin: String,
        budget: &'static str,
        limit: u64,
        detail: String,
    },

    /// A failure on the host's side (I/O, an exhausted instance pool...).
    #[error("plugin {plugin}: host error: {message}")]
    Host { plugin: String, message: String },
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

impl PluginError {
    /// The plugin this error is about.
    pub fn plugin(&self) -> &str {
        use PluginError::*;
        match self {
            OutOfFuel { plugin, .. }
            | DeadlineExceeded { plugin, .. }
            | MemoryLimit { plugin, .. }
            | Trap { plugin, .. }
            | InvalidComponent { plugin, .. }
            | UnsupportedVersion { plugin, .. }
            | MissingGrant { plugin, .. }
            | WrongRole { plugin, .. }
            | BadConfig { plugin, .. }
            | Denied { plugin, .. }
            | Failed { plugin, .. }
            | ResultTooLarge { plugin, .. }
            | Budget { plugin, .. }
            | Host { plugin, .. } => plugin,
        }
    }

    /// A short, stable name for the kind of failure (for logs and metrics).
    pub fn kind(&self) -> &'static str {
        use PluginError::*;
        match self {
            OutOfFuel { .. } => "out-of-fuel",
            DeadlineExceeded { .. } => "deadline-exceeded",
            MemoryLimit { .. } => "memory-limit",
            Trap { .. } => "trap",
            InvalidComponent { .. } => "invalid-component",
            UnsupportedVersion { .. } => "unsupported-version",
            MissingGrant { .. } => "missing-grant",
            WrongRole { .. } => "wrong-role",
            BadConfig { .. } => "bad-config",
            Denied { .. } => "denied",
            Failed { .. } => "failed",
            ResultTooLarge { .. } => "result-too-large",
            Budget { .. } => "budget",
            Host { .. } => "host",
        }
    }
}
