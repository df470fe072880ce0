//! `mend:plugin/clock`: the host's wall clock. Always available: reading
//! the time grants nothing. The host may substitute a virtual clock.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::component::{HasSelf, Linker};

use super::HasCaps;
use crate::runtime::bindings::v0_1::mend::plugin::clock;

/// Where the time comes from.
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

pub fn system_clock() -> WallClock {
    Arc::new(SystemTime::now)
}

pub struct ClockCap {
    pub(crate) clock: WallClock,
}

impl clock::Host for ClockCap {
    fn now_ms(&mut self) -> u64 {
        (self.clock)()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

pub(super) fn add_to_linker<T: HasCaps>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    clock::add_to_linker::<T, HasSelf<ClockCap>>(linker, |t| &mut t.caps().clock)?;
    Ok(())
}
