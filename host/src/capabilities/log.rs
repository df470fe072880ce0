//! `mend:plugin/log`: structured logging into mend's tracing output, tagged
//! with the plugin's name. Always available, and bounded: a plugin gets a
//! fixed number of lines per call, each truncated.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::HasCaps;
use crate::runtime::bindings::v0_1::mend::plugin::log::{self, Level};

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

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl log::Host for LogCap {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        if self.remaining == 0 {
            return;
        }
        self.remaining -= 1;
        let plugin = &*self.plugin;
        if self.remaining == 0 {
            tracing::warn!(target: "mend::plugin", plugin, "log limit reached; dropping further lines from this call");
            return;
        }
        let message = truncate(&message, MAX_MESSAGE);
        let fields = fields
            .iter()
            .take(MAX_FIELDS)
            .map(|(k, v)| format!("{}={}", truncate(k, 64), truncate(v, 256)))
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

pub(super) fn add_to_linker<T: HasCaps>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    log::add_to_linker::<T, HasSelf<LogCap>>(linker, |t| &mut t.caps().log)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(super::truncate("héllo", 2), "h");
        assert_eq!(super::truncate("hello", 10), "hello");
    }
}
