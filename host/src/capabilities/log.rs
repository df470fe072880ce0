//! `mend:plugin/log`: structured logging into mend's tracing output, tagged
//! with the plugin's name. Always available, and bounded: a plugin gets a
//! fixed number of lines per call, each truncated.

use std::sync::Arc;

use crate::text::{escape, truncate};

/// A log line's level, as the plugin gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Lines one call may log; further lines are dropped with one warning.
pub const MAX_LINES_PER_CALL: u32 = 1000;
/// Bytes kept of each message.
pub const MAX_MESSAGE: usize = 4096;
const MAX_FIELDS: usize = 32;

pub struct LogCap {
    plugin: Arc<str>,
    remaining: u32,
}

impl LogCap {
    pub fn new(plugin: Arc<str>) -> Self {
        LogCap {
            plugin,
            remaining: MAX_LINES_PER_CALL,
        }
    }
}

impl LogCap {
    /// One line from the plugin, tagged with its name, escaped and bounded.
    pub fn log(&mut self, level: Level, message: &str, fields: &[(String, String)]) {
        if self.remaining == 0 {
            return;
        }
        self.remaining -= 1;
        let plugin = &*self.plugin;
        if self.remaining == 0 {
            tracing::warn!(target: "mend::plugin", plugin, "log limit reached; dropping further lines from this call");
            return;
        }
        let message = escape(truncate(message, MAX_MESSAGE));
        let fields = fields
            .iter()
            .take(MAX_FIELDS)
            .map(|(k, v)| format!("{}={}", escape(truncate(k, 64)), escape(truncate(v, 256))))
            .collect::<Vec<_>>()
            .join(" ");
        match level {
            Level::Trace => tracing::trace!(target: "mend::plugin", plugin, fields, "{message}"),
            Level::Debug => tracing::debug!(target: "mend::plugin", plugin, fields, "{message}"),
            Level::Info => tracing::info!(target: "mend::plugin", plugin, fields, "{message}"),
            Level::Warn => tracing::warn!(target: "mend::plugin", plugin, fields, "{message}"),
            Level::Error => tracing::error!(target: "mend::plugin", plugin, fields, "{message}"),
        }
    }
}
