//! When a step counts as healed, and when a heal did not hold.
//!
//! One passing probe right after an action says little: a service that was
//! just restarted often answers once, then falls over again. So a step is
//! healed only after `probes` passes spread over `window` (the first right
//! after the step's settle, the last at settle + window), and a heal whose
//! check goes bad again within `relapse_window` was a relapse, not a
//! success.

use std::time::Duration;

use serde::Serialize;

use super::Millis;

/// The longest default verification window.
pub const DEFAULT_WINDOW_CAP: Duration = Duration::from_secs(30);
/// Default `probes`.
pub const DEFAULT_PROBES: u32 = 3;
/// Default `verify.poll`: the first look after an action.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// Default `relapse_window`.
pub const DEFAULT_RELAPSE_WINDOW: Duration = Duration::from_secs(600);

/// A policy's verification, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verify {
    /// Passing probes in a row a heal needs (at least 1).
    pub probes: u32,
    /// From the first probe to the last.
    pub window: Duration,
    /// A relapse this soon after a heal reopens its incident.
    pub relapse_window: Duration,
    /// The first look after the action; the looks back off (doubling)
    /// up to the step's settle. Zero: wait the whole settle.
    pub poll: Duration,
}

impl Verify {
    /// The default window for a check run every `interval`: three
    /// intervals, at most 30 s. Probing a little faster than the schedule
    /// is fine for a few probes; past 30 s a fix that has not fallen over
    /// is the relapse window's to watch.
    pub fn default_window(interval: Duration) -> Duration {
        (interval * 3).min(DEFAULT_WINDOW_CAP)
    }

    /// How long to wait before probe `i` (0-based; probe 0 comes right
    /// after the settle): the probes are evenly spread over the window.
    pub fn gap_before(&self, i: u32) -> Duration {
        if i == 0 || self.probes <= 1 {
            return Duration::ZERO;
        }
        self.window / (self.probes - 1)
    }

    /// When to look for the first passing probe, as offsets from the end
    /// of the action: `poll`, then doubling gaps, the last at `settle`
    /// (which is so a limit, not a fixed wait). Probe 0 is the first that
    /// passes.
    pub fn settle_polls(&self, settle: Duration) -> Vec<Duration> {
        let mut at = Vec::new();
        let mut gap = self.poll;
        let mut t = Duration::ZERO;
        while !gap.is_zero() && t + gap < settle {
            t += gap;
            at.push(t);
            gap *= 2;
        }
        at.push(settle);
        at
    }

    /// Whether a check that went bad at `now` relapsed from a heal at
    /// `healed_at`.
    pub fn is_relapse(&self, healed_at: Millis, now: Millis) -> bool {
        now >= healed_at && now - healed_at <= self.relapse_window.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(probes: u32, window: u64) -> Verify {
        Verify {
            probes,
            window: Duration::from_secs(window),
            relapse_window: DEFAULT_RELAPSE_WINDOW,
            poll: DEFAULT_POLL,
        }
    }

    #[test]
    fn looks_back_off_from_poll_up_to_the_settle() {
        let secs = |v: Vec<Duration>| v.iter().map(|d| d.as_secs()).collect::<Vec<_>>();
        let v = v(3, 30);
        assert_eq!(
            secs(v.settle_polls(Duration::from_secs(10))),
            vec![1, 3, 7, 10]
        );
        assert_eq!(secs(v.settle_polls(Duration::from_secs(1))), vec![1]);
        assert_eq!(secs(v.settle_polls(Duration::ZERO)), vec![0]);
        let fixed = Verify {
            poll: Duration::ZERO,
            ..v
        };
        assert_eq!(secs(fixed.settle_polls(Duration::from_secs(10))), vec![10]);
    }

    #[test]
    fn the_default_window_is_three_intervals_at_most_30s() {
        assert_eq!(
            Verify::default_window(Duration::from_secs(2)),
            Duration::from_secs(6)
        );
        assert_eq!(
            Verify::default_window(Duration::from_secs(3600)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn probes_are_spread_evenly_over_the_window() {
        let three = v(3, 30);
        let gaps: Vec<u64> = (0..3).map(|i| three.gap_before(i).as_secs()).collect();
        assert_eq!(gaps, vec![0, 15, 15], "first at once, last at the window");
        assert_eq!(v(1, 30).gap_before(0), Duration::ZERO);
        assert_eq!(v(4, 0).gap_before(3), Duration::ZERO);
    }

    #[test]
    fn a_relapse_is_bad_again_within_the_window() {
        let v = v(3, 30);
        assert!(v.is_relapse(1_000, 1_000 + 600_000));
        assert!(!v.is_relapse(1_000, 1_000 + 600_001));
        assert!(
            !v.is_relapse(2_000, 1_000),
            "before the heal: not a relapse"
        );
    }
}
