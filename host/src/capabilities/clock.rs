//! `mend:plugin/clock`: the engine's clock. Always available: reading the
//! time grants nothing. Under a virtual clock (tests, simulations) plugins
//! read the same virtual time as the policies.

use crate::clock::Clock;

pub struct ClockCap {
    pub(crate) clock: Clock,
}

impl ClockCap {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.clock.now()
    }
}
