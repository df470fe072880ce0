//! Attempt budgets and post-incident cooldown.
//!
//! Without a cap over time, a healer whose fix holds for a few minutes
//! restarts a service forever (systemd's `StartLimitBurst` exists for this
//! reason). A sliding window of attempt timestamps caps actions per period;
//! the cooldown keeps a freshly closed incident from reopening at once.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Millis, add};

/// Timestamps of recent attempts, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptWindow {
    attempts: VecDeque<Millis>,
}

impl AttemptWindow {
    /// Whether fewer than `max` attempts fall in `(now - window, now]`.
    pub fn allows(&self, now: Millis, max: u32, window: Duration) -> bool {
        self.count(now, window) < max
    }

    /// Records an attempt at `now` and forgets those that left the window.
    pub fn record(&mut self, now: Millis, window: Duration) {
        // Kept sorted even if the wall clock stepped back.
        let at = self.attempts.partition_point(|&t| t <= now);
        self.attempts.insert(at, now);
        self.attempts.retain(|&t| counts(t, now, window));
    }

    /// Attempts in `(now - window, now]`, plus any stamped after `now`.
    pub fn count(&self, now: Millis, window: Duration) -> u32 {
        let n = self.counted(now, window).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// `None` if an attempt is allowed now, else when enough counted
    /// attempts will have left the window (`Millis::MAX` if `max` is 0).
    pub fn next_allowed(&self, now: Millis, max: u32, window: Duration) -> Option<Millis> {
        let counted: Vec<Millis> = self.counted(now, window).collect();
        let max = max as usize;
        if counted.len() < max {
            return None;
        }
        if max == 0 {
            return Some(Millis::MAX);
        }
        // Once the oldest `len - max + 1` have left, `max - 1` remain.
        Some(add(counted[counted.len() - max], window))
    }

    fn counted(&self, now: Millis, window: Duration) -> impl Iterator<Item = Millis> + '_ {
        self.attempts
            .iter()
            .copied()
            .filter(move |&t| counts(t, now, window))
    }
}

/// Whether an attempt at `t` still counts at `now`. Attempts stamped after
/// `now` (the wall clock stepped back) count, so a clock step cannot
/// refill the budget.
fn counts(t: Millis, now: Millis, window: Duration) -> bool {
    t > now || Duration::from_millis(now - t) < window
}

/// Time left before a new incident may open, `None` once cooled down.
pub fn cooldown_remaining(
    last_incident_closed: Option<Millis>,
    now: Millis,
    cooldown: Duration,
) -> Option<Duration> {
    let closed = last_incident_closed?;
    let elapsed = Duration::from_millis(now.saturating_sub(closed));
    cooldown.checked_sub(elapsed).filter(|left| !left.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);
    const W: Millis = 60_000;

    fn window_with(times: &[Millis]) -> AttemptWindow {
        let mut w = AttemptWindow::default();
        for &t in times {
            w.record(t, WINDOW);
        }
        w
    }

    #[test]
    fn empty_window_allows() {
        let w = AttemptWindow::default();
        assert!(w.allows(0, 1, WINDOW));
        assert_eq!(w.count(0, WINDOW), 0);
        assert_eq!(w.next_allowed(0, 1, WINDOW), None);
    }

    #[test]
    fn caps_attempts_within_the_window() {
        let w = window_with(&[1_000, 2_000, 3_000]);
        assert_eq!(w.count(3_000, WINDOW), 3);
        assert!(!w.allows(3_000, 3, WINDOW));
        assert!(w.allows(3_000, 4, WINDOW));
    }

    #[test]
    fn window_is_half_open_at_the_old_end() {
        let w = window_with(&[1_000]);
        assert_eq!(w.count(1_000, WINDOW), 1);
        assert_eq!(w.count(1_000 + W - 1, WINDOW), 1);
        assert_eq!(w.count(1_000 + W, WINDOW), 0);
        assert!(w.allows(1_000 + W, 1, WINDOW));
    }

    #[test]
    fn next_allowed_is_when_the_oldest_counted_attempt_leaves() {
        let w = window_with(&[1_000, 2_000, 3_000]);
        assert_eq!(w.next_allowed(3_000, 3, WINDOW), Some(1_000 + W));
        assert!(w.allows(1_000 + W, 3, WINDOW));
        assert!(!w.allows(1_000 + W - 1, 3, WINDOW));
        assert_eq!(w.next_allowed(3_000, 4, WINDOW), None);
    }

    #[test]
    fn next_allowed_when_over_budget_waits_for_enough_to_leave() {
        // The cap was lowered to 2 with 3 attempts counted: two must leave.
        let w = window_with(&[1_000, 2_000, 3_000]);
        let at = w.next_allowed(3_000, 2, WINDOW).unwrap();
        assert_eq!(at, 2_000 + W);
        assert!(w.allows(at, 2, WINDOW));
        assert!(!w.allows(at - 1, 2, WINDOW));
        // Down to 1: all three must leave.
        assert_eq!(w.next_allowed(3_000, 1, WINDOW), Some(3_000 + W));
    }

    #[test]
    fn next_allowed_ignores_attempts_already_out_of_the_window() {
        let mut w = window_with(&[0]);
        w.attempts.push_back(W + 5_000);
        assert_eq!(w.next_allowed(W + 5_000, 1, WINDOW), Some(W + 5_000 + W));
    }

    #[test]
    fn zero_budget_never_allows() {
        let w = AttemptWindow::default();
        assert!(!w.allows(0, 0, WINDOW));
        assert_eq!(w.next_allowed(0, 0, WINDOW), Some(Millis::MAX));
    }

    #[test]
    fn record_prunes_old_attempts() {
        let w = window_with(&[0, 10_000, W + 10_000]);
        assert_eq!(w.attempts, [W + 10_000]);
    }

    #[test]
    fn zero_window_counts_nothing() {
        let mut w = AttemptWindow::default();
        w.record(5, Duration::ZERO);
        assert_eq!(w.count(5, Duration::ZERO), 0);
        assert!(w.allows(5, 1, Duration::ZERO));
    }

    #[test]
    fn a_clock_step_back_does_not_refill_the_budget() {
        let mut w = window_with(&[10 * W, 10 * W + 1]);
        assert!(!w.allows(5 * W, 2, WINDOW));
        w.record(5 * W, WINDOW);
        assert_eq!(w.attempts, [5 * W, 10 * W, 10 * W + 1]);
        assert_eq!(w.count(5 * W, WINDOW), 3);
        // The earliest counted attempt frees the budget first.
        assert_eq!(w.next_allowed(5 * W, 3, WINDOW), Some(6 * W));
    }

    #[test]
    fn window_near_the_end_of_time_saturates() {
        let w = window_with(&[Millis::MAX - 10]);
        assert_eq!(w.count(Millis::MAX, WINDOW), 1);
        assert_eq!(w.next_allowed(Millis::MAX, 1, WINDOW), Some(Millis::MAX));
    }

    #[test]
    fn round_trips_through_serde() {
        let w = window_with(&[1, 2, 3]);
        let back: AttemptWindow =
            serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn cooldown_counts_down_from_the_close() {
        let cd = Duration::from_secs(300);
        assert_eq!(cooldown_remaining(None, 1_000, cd), None);
        assert_eq!(cooldown_remaining(Some(1_000), 1_000, cd), Some(cd));
        assert_eq!(
            cooldown_remaining(Some(1_000), 61_000, cd),
            Some(Duration::from_secs(240))
        );
        assert_eq!(
            cooldown_remaining(Some(1_000), 300_999, cd),
            Some(Duration::from_millis(1))
        );
        assert_eq!(cooldown_remaining(Some(1_000), 301_000, cd), None);
        assert_eq!(cooldown_remaining(Some(1_000), u64::MAX, cd), None);
    }

    #[test]
    fn cooldown_edge_cases() {
        assert_eq!(cooldown_remaining(Some(0), 0, Duration::ZERO), None);
        // Closed "in the future" (clock stepped back): the full cooldown remains.
        let cd = Duration::from_secs(5);
        assert_eq!(cooldown_remaining(Some(10_000), 1_000, cd), Some(cd));
    }
}
