//! Try the recovery steps that have actually healed this check first.
//!
//! A fixed escalation ladder pays for every step that never works here
//! before reaching one that does, on every incident. Ordering by past heal
//! rate learns which step fixes this check. Laplace smoothing keeps one
//! lucky or unlucky run from dominating and gives untried steps a fair 0.5,
//! so they still get their turn.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// How often one step was tried and how often the check healed after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStats {
    pub attempts: u32,
    pub healed: u32,
}

impl StepStats {
    /// healed / attempts, or `None` if never tried.
    pub fn success_rate(&self) -> Option<f64> {
        (self.attempts > 0).then(|| f64::from(self.healed) / f64::from(self.attempts))
    }

    /// Compares smoothed rates (healed+1)/(attempts+2) exactly, by
    /// cross-multiplying, so equal rates tie instead of differing by rounding.
    fn cmp_smoothed(&self, other: &Self) -> Ordering {
        let lhs = (u128::from(self.healed) + 1) * (u128::from(other.attempts) + 2);
        let rhs = (u128::from(other.healed) + 1) * (u128::from(self.attempts) + 2);
        lhs.cmp(&rhs)
    }
}

/// Step indices, best smoothed heal rate first; ties keep config order.
pub fn order(step_count: usize, stats: impl Fn(usize) -> StepStats) -> Vec<usize> {
    let scored: Vec<StepStats> = (0..step_count).map(&stats).collect();
    let mut steps: Vec<usize> = (0..step_count).collect();
    // Stable sort: equal rates stay in config order.
    steps.sort_by(|&a, &b| scored[b].cmp_smoothed(&scored[a]));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(attempts: u32, healed: u32) -> StepStats {
        StepStats { attempts, healed }
    }

    fn order_of(table: &[StepStats]) -> Vec<usize> {
        order(table.len(), |i| table[i])
    }

    #[test]
    fn success_rate() {
        assert_eq!(stats(0, 0).success_rate(), None);
        assert_eq!(stats(4, 1).success_rate(), Some(0.25));
        assert_eq!(stats(3, 3).success_rate(), Some(1.0));
        assert_eq!(stats(5, 0).success_rate(), Some(0.0));
    }

    #[test]
    fn no_stats_keeps_config_order() {
        assert_eq!(order(5, |_| StepStats::default()), [0, 1, 2, 3, 4]);
        assert!(order(0, |_| StepStats::default()).is_empty());
    }

    #[test]
    fn the_step_that_heals_comes_first() {
        let table = [stats(5, 0), stats(5, 1), stats(5, 5)];
        assert_eq!(order_of(&table), [2, 1, 0]);
    }

    #[test]
    fn untried_steps_score_one_half() {
        // 0 of 2 scores 0.25, below an untried step; 3 of 4 scores 0.67, above.
        let table = [stats(2, 0), StepStats::default(), stats(4, 3)];
        assert_eq!(order_of(&table), [2, 1, 0]);
    }

    #[test]
    fn smoothing_prefers_evidence_over_one_lucky_run() {
        // 1/1 -> 2/3; 9/10 -> 10/12.
        let table = [stats(1, 1), stats(10, 9)];
        assert_eq!(order_of(&table), [1, 0]);
    }

    #[test]
    fn equal_smoothed_rates_tie_in_config_order() {
        // 1 of 2 and untried both score exactly 0.5; so do 2 of 4.
        let table = [stats(0, 0), stats(4, 2), stats(2, 1), stats(1, 0)];
        assert_eq!(order_of(&table), [0, 1, 2, 3]);
        let table = [stats(1, 0), stats(2, 1), stats(0, 0)];
        assert_eq!(order_of(&table), [1, 2, 0]);
    }

    #[test]
    fn extreme_counts_do_not_overflow() {
        let table = [stats(u32::MAX, 0), stats(u32::MAX, u32::MAX), stats(0, 0)];
        assert_eq!(order_of(&table), [1, 2, 0]);
    }

    #[test]
    fn stats_are_asked_once_per_step() {
        let calls = std::cell::Cell::new(0);
        let result = order(4, |i| {
            calls.set(calls.get() + 1);
            stats(4, i as u32)
        });
        assert_eq!(result, [3, 2, 1, 0]);
        assert_eq!(calls.get(), 4);
    }
}
