//! The one clock. Wall-clock milliseconds (which policies persist and
//! plugins read) derived from tokio's clock, so that under tokio's paused
//! clock in tests time-driven policy runs in virtual time, and plugins read
//! the same virtual time (`mend:plugin/clock` and WASI's wall clock).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::values::Millis;

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
        self.base + Duration::from_millis(wall.saturating_sub(self.base_wall))
    }
}

/// WASI's wall clock reads the engine's clock.
impl wasmtime_wasi::HostWallClock for Clock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        let elapsed = self.base.elapsed();
        Duration::from_millis(self.base_wall) + elapsed
    }
}
