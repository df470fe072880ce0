//! Pure policy logic: every function here is a function of (history, now).
//! No I/O, no clocks, no randomness: the engine passes those in, which is
//! what makes policies testable under a paused clock.

use std::time::Duration;

pub mod adaptive;
pub mod backoff;
pub mod baseline;
pub mod breaker;
pub mod budget;
pub mod flap;
pub mod health;
pub mod maintenance;
pub mod root_cause;
pub mod trigger;
pub mod verify;

pub use crate::values::Millis;

/// `t + d`, saturating at `Millis::MAX` instead of overflowing.
pub fn add(t: Millis, d: Duration) -> Millis {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    t.saturating_add(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_adds_whole_milliseconds() {
        assert_eq!(add(1_000, Duration::from_secs(2)), 3_000);
        assert_eq!(add(0, Duration::ZERO), 0);
        // Sub-millisecond parts are truncated.
        assert_eq!(add(5, Duration::from_micros(1_999)), 6);
    }

    #[test]
    fn add_saturates() {
        assert_eq!(add(u64::MAX - 1, Duration::from_millis(5)), u64::MAX);
        assert_eq!(add(1, Duration::MAX), u64::MAX);
    }
}
