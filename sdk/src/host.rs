//! Safe wrappers over what the host offers: logging, the clock, persistent
//! state and disk usage.

use crate::bindings::mend::plugin as wit;

/// Structured logging into mend's log, tagged with the plugin's name.
pub mod log {
    use super::wit::log::{Level, log};

    pub fn trace(message: &str) {
        log(Level::Trace, message, &[]);
    }
    pub fn debug(message: &str) {
        log(Level::Debug, message, &[]);
    }
    pub fn info(message: &str) {
        log(Level::Info, message, &[]);
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message, &[]);
    }
    pub fn error(message: &str) {
        log(Level::Error, message, &[]);
    }
    /// A message with key/value fields.
    pub fn info_with(message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        log(Level::Info, message, &fields);
    }
}

/// The host's wall clock.
pub mod clock {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// Milliseconds since the Unix epoch.
    pub fn now_ms() -> u64 {
        super::wit::clock::now_ms()
    }

    pub fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(now_ms())
    }
}

/// Key/value state private to this plugin, kept across calls and restarts.
/// Needs [`crate::Needs::state`].
pub mod state {
    use crate::Error;

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        super::wit::state::get(key).map_err(Error::Failed)
    }
    pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
        super::wit::state::set(key, value).map_err(Error::Failed)
    }
    pub fn delete(key: &str) -> Result<(), Error> {
        super::wit::state::delete(key).map_err(Error::Failed)
    }
    /// `get` for UTF-8 text.
    pub fn get_string(key: &str) -> Result<Option<String>, Error> {
        Ok(get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}

/// Filesystem facts WASI does not offer.
pub mod fs {
    use crate::Error;

    /// Usage of one filesystem.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct DiskUsage {
        pub total_bytes: u64,
        pub free_bytes: u64,
        /// Bytes available to unprivileged users.
        pub available_bytes: u64,
        pub total_inodes: u64,
        pub free_inodes: u64,
    }

    impl DiskUsage {
        /// Used share of the space available to users, in percent, the way
        /// `df` computes it.
        pub fn used_percent(&self) -> f64 {
            let used = self.total_bytes.saturating_sub(self.free_bytes);
            let denom = used + self.available_bytes;
            if denom == 0 {
                0.0
            } else {
                used as f64 * 100.0 / denom as f64
            }
        }
        /// Used share of inodes, in percent.
        pub fn inodes_used_percent(&self) -> f64 {
            if self.total_inodes == 0 {
                0.0
            } else {
                (self.total_inodes - self.free_inodes.min(self.total_inodes)) as f64 * 100.0
                    / self.total_inodes as f64
            }
        }
    }

    /// Usage of the filesystem holding `path`, a path inside a granted
    /// directory.
    pub fn disk_usage(path: &str) -> Result<DiskUsage, Error> {
        let u = super::wit::fs::disk_usage(path).map_err(|m| {
            if m.starts_with("denied") {
                Error::Denied(m)
            } else {
                Error::Failed(m)
            }
        })?;
        Ok(DiskUsage {
            total_bytes: u.total_bytes,
            free_bytes: u.free_bytes,
            available_bytes: u.available_bytes,
            total_inodes: u.total_inodes,
            free_inodes: u.free_inodes,
        })
    }
}
