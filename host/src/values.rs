//! Value types written in config (`"30s"`, `"64MiB"`) and the wall-clock
//! `Millis`. The SDK owns the file so plugins and the host read values the
//! same way; the host includes it here.

#[path = "../../sdk/src/values.rs"]
mod shared;

pub use shared::{Bytes, Dur, Millis, parse_bytes, parse_duration};
