//! The engine's clock. Wall-clock milliseconds (which policies persist)
//! derived from tokio's clock, so that under tokio's paused clock in tests
//! time-driven policy runs in virtual time.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::policy::Millis;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_wall: Millis,
    base: Instant,
}

impl Clock {
    /// Real time.
    pub fn system() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0);
        Self::starting_at(now)
    }

    /// A clock that reads `wall` now and advances with tokio's time.
    pub fn starting_at(wall: Millis) -> Self {
        Clock {
            base_wall: wall,
            base: Instant::now(),
        }
    }

    pub fn now(&self) -> Millis {
        self.base_wall + self.base.elapsed().as_millis() as Millis
    }

    /// tokio's instant for a wall-clock time of this clock.
    pub fn instant_at(&self, wall: Millis) -> Instant {
        self.base + std::time::Duration::from_millis(wall.saturating_sub(self.base_wall))
    }
}
