//! When a run of probe results counts as "broken enough to act".
//!
//! Acting on one bad probe turns every transient timeout into a restart.
//! Counting only consecutive failures has the opposite flaw: a check that
//! fails 9 times in 10 never fires if every tenth probe passes. `NOfM`
//! catches that intermittent case; `Consecutive` covers the steady one.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Longest window a trigger may span, so history stays bounded.
const MAX_WINDOW: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// The last N results are all bad.
    Consecutive(u32),
    /// At least `n` bad among the last `m` results.
    NOfM { n: u32, m: u32 },
}

impl Trigger {
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Trigger::Consecutive(n) => {
                if n < 1 {
                    return Err("consecutive trigger needs at least 1 result".into());
                }
                if n > MAX_WINDOW {
                    return Err(format!("consecutive trigger {n} exceeds {MAX_WINDOW}"));
                }
            }
            Trigger::NOfM { n, m } => {
                if n < 1 {
                    return Err("n-of-m trigger needs n >= 1".into());
                }
                if m < n {
                    return Err(format!("n-of-m trigger needs m >= n (n = {n}, m = {m})"));
                }
                if m > MAX_WINDOW {
                    return Err(format!("n-of-m trigger m = {m} exceeds {MAX_WINDOW}"));
                }
            }
        }
        Ok(())
    }

    /// (bad results needed, results looked at), clamped into the valid range
    /// so an unvalidated trigger can neither fire on nothing nor grow unbounded.
    fn needed_and_span(&self) -> (usize, usize) {
        let (needed, span) = match *self {
            Trigger::Consecutive(n) => (n, n),
            Trigger::NOfM { n, m } => (n, m),
        };
        let needed = needed.clamp(1, MAX_WINDOW);
        let span = span.clamp(needed, MAX_WINDOW);
        (needed as usize, span as usize)
    }
}

/// Recent results, oldest first; `true` = bad.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerWindow {
    results: VecDeque<bool>,
}

impl TriggerWindow {
    /// Records one result and returns whether the trigger holds now.
    pub fn record(&mut self, bad: bool, trigger: &Trigger) -> bool {
        let (_, span) = trigger.needed_and_span();
        self.results.push_back(bad);
        while self.results.len() > span {
            self.results.pop_front();
        }
        self.holds(trigger)
    }

    pub fn holds(&self, trigger: &Trigger) -> bool {
        let (needed, span) = trigger.needed_and_span();
        let recent = self.results.iter().rev().take(span);
        match trigger {
            Trigger::Consecutive(_) => {
                self.results.len() >= needed && recent.take(needed).all(|&bad| bad)
            }
            Trigger::NOfM { .. } => recent.filter(|&&bad| bad).count() >= needed,
        }
    }

    pub fn reset(&mut self) {
        self.results.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(window: &mut TriggerWindow, trigger: &Trigger, results: &[bool]) -> Vec<bool> {
        results
            .iter()
            .map(|&bad| window.record(bad, trigger))
            .collect()
    }

    #[test]
    fn validate_accepts_sane_triggers() {
        assert!(Trigger::Consecutive(1).validate().is_ok());
        assert!(Trigger::Consecutive(1000).validate().is_ok());
        assert!(Trigger::NOfM { n: 1, m: 1 }.validate().is_ok());
        assert!(Trigger::NOfM { n: 3, m: 1000 }.validate().is_ok());
    }

    #[test]
    fn validate_rejects_bad_triggers() {
        assert!(Trigger::Consecutive(0).validate().is_err());
        assert!(Trigger::Consecutive(1001).validate().is_err());
        assert!(Trigger::NOfM { n: 0, m: 5 }.validate().is_err());
        assert!(Trigger::NOfM { n: 4, m: 3 }.validate().is_err());
        assert!(Trigger::NOfM { n: 1, m: 1001 }.validate().is_err());
    }

    #[test]
    fn consecutive_fires_only_on_an_unbroken_run() {
        let t = Trigger::Consecutive(3);
        let mut w = TriggerWindow::default();
        assert_eq!(
            feed(&mut w, &t, &[true, true, false, true, true, true, true]),
            [false, false, false, false, false, true, true]
        );
        assert!(!w.record(false, &t));
    }

    #[test]
    fn consecutive_needs_enough_history() {
        let t = Trigger::Consecutive(2);
        let mut w = TriggerWindow::default();
        assert!(!w.holds(&t));
        assert!(!w.record(true, &t));
        assert!(w.record(true, &t));
    }

    #[test]
    fn n_of_m_catches_intermittent_failures() {
        // A pass in between would reset a consecutive counter; 3-of-5 still fires.
        let t = Trigger::NOfM { n: 3, m: 5 };
        let mut w = TriggerWindow::default();
        assert_eq!(
            feed(&mut w, &t, &[true, false, true, false, true]),
            [false, false, false, false, true]
        );
    }

    #[test]
    fn n_of_m_fires_before_the_window_fills() {
        let t = Trigger::NOfM { n: 2, m: 10 };
        let mut w = TriggerWindow::default();
        assert!(!w.record(true, &t));
        assert!(w.record(true, &t));
    }

    #[test]
    fn n_of_m_forgets_results_that_slide_out() {
        let t = Trigger::NOfM { n: 2, m: 3 };
        let mut w = TriggerWindow::default();
        assert_eq!(
            feed(&mut w, &t, &[true, true, false, false, true]),
            [false, true, true, false, false]
        );
    }

    #[test]
    fn window_is_bounded_by_the_trigger_span() {
        let t = Trigger::NOfM { n: 1, m: 4 };
        let mut w = TriggerWindow::default();
        feed(&mut w, &t, &[true; 50]);
        assert_eq!(w.results.len(), 4);
        let t = Trigger::Consecutive(2);
        w.record(false, &t);
        assert_eq!(w.results.len(), 2);
    }

    #[test]
    fn holds_on_a_shorter_trigger_looks_only_at_the_newest_results() {
        let long = Trigger::NOfM { n: 1, m: 10 };
        let mut w = TriggerWindow::default();
        feed(&mut w, &long, &[true, false, false]);
        assert!(w.holds(&long));
        assert!(!w.holds(&Trigger::NOfM { n: 1, m: 2 }));
        assert!(!w.holds(&Trigger::Consecutive(1)));
    }

    #[test]
    fn reset_forgets_everything() {
        let t = Trigger::Consecutive(1);
        let mut w = TriggerWindow::default();
        assert!(w.record(true, &t));
        w.reset();
        assert!(!w.holds(&t));
        assert_eq!(w, TriggerWindow::default());
    }

    #[test]
    fn invalid_triggers_are_clamped_not_trusted() {
        let mut w = TriggerWindow::default();
        // Consecutive(0) would hold vacuously; it is treated as Consecutive(1).
        assert!(!w.holds(&Trigger::Consecutive(0)));
        assert!(!w.record(false, &Trigger::Consecutive(0)));
        assert!(w.record(true, &Trigger::Consecutive(0)));
        // A huge window is capped.
        let huge = Trigger::NOfM { n: 1, m: u32::MAX };
        feed(&mut w, &huge, &[false; 2000]);
        assert_eq!(w.results.len(), MAX_WINDOW as usize);
    }

    #[test]
    fn window_round_trips_through_serde() {
        let t = Trigger::NOfM { n: 2, m: 3 };
        let mut w = TriggerWindow::default();
        feed(&mut w, &t, &[true, false]);
        let json = serde_json::to_string(&w).unwrap();
        let back: TriggerWindow = serde_json::from_str(&json).unwrap();
        assert_eq!(back, w);
        let tj = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Trigger>(&tj).unwrap(), t);
    }
}
