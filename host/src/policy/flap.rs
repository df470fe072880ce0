//! Flap detection, after Nagios's `flapping.c`.
//!
//! A check that keeps changing state makes a healer fire, stand down and fire
//! again, each time hiding the real problem behind a fresh incident. Nagios
//! detects this from how often the last 21 results changed, weighting recent
//! changes more, with separate start/stop thresholds so the flag itself does
//! not flap.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::health::Observation;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlapConfig {
    /// Start flapping at or above this percent of weighted state change.
    pub high: f64,
    /// Stop flapping at or below this percent.
    pub low: f64,
}

impl Default for FlapConfig {
    fn default() -> Self {
        Self {
            high: 50.0,
            low: 25.0,
        }
    }
}

impl FlapConfig {
    pub fn validate(&self) -> Result<(), String> {
        // Written so NaN fails every comparison and is rejected.
        if 0.0 <= self.low && self.low < self.high && self.high <= 100.0 {
            Ok(())
        } else {
            Err(format!(
                "flap thresholds need 0 <= low < high <= 100 (low = {}, high = {})",
                self.low, self.high
            ))
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlapDetector {
    /// Oldest first, at most `HISTORY` entries.
    history: VecDeque<Observation>,
    flapping: bool,
    /// Flapping episodes begun so far (one per start of flapping).
    #[serde(default)]
    episodes: u64,
}

impl FlapDetector {
    pub const HISTORY: usize = 21;
    const TRANSITIONS: usize = Self::HISTORY - 1;

    /// Records one result and returns whether the check is flapping after it.
    pub fn record(&mut self, obs: Observation, cfg: &FlapConfig) -> bool {
        self.history.push_back(obs);
        while self.history.len() > Self::HISTORY {
            self.history.pop_front();
        }
        let percent = self.percent_change();
        if !self.flapping && percent >= cfg.high {
            self.flapping = true;
            self.episodes += 1;
        } else if self.flapping && percent <= cfg.low {
            self.flapping = false;
        }
        self.flapping
    }

    /// Weighted share of the last 20 possible transitions that were changes.
    pub fn percent_change(&self) -> f64 {
        let observed = self.history.len().saturating_sub(1);
        // A short history fills the newest transition slots.
        let first_slot = Self::TRANSITIONS - observed.min(Self::TRANSITIONS);
        let changes: f64 = self
            .history
            .iter()
            .zip(self.history.iter().skip(1))
            .enumerate()
            .filter(|(_, (older, newer))| older != newer)
            .map(|(j, _)| transition_weight(first_slot + j))
            // Not `sum()`: an empty f64 sum is -0.0, shown as `-0`.
            .fold(0.0, |total, w| total + w);
        changes * 100.0 / Self::TRANSITIONS as f64
    }

    pub fn is_flapping(&self) -> bool {
        self.flapping
    }

    /// The current flapping episode, if flapping: one escalation per
    /// episode, however many evaluations it lasts.
    pub fn episode(&self) -> Option<u64> {
        self.flapping.then_some(self.episodes)
    }
}

/// 0.75 for the oldest transition slot up to 1.25 for the newest.
fn transition_weight(slot: usize) -> f64 {
    0.75 + slot as f64 * (0.5 / (FlapDetector::TRANSITIONS - 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::Observation::{Fail, Ok, Unknown, Warn};
    use super::*;

    fn feed(d: &mut FlapDetector, obs: impl IntoIterator<Item = Observation>) -> bool {
        let cfg = FlapConfig::default();
        let mut flapping = d.is_flapping();
        for o in obs {
            flapping = d.record(o, &cfg);
        }
        flapping
    }

    fn alternating(n: usize) -> impl Iterator<Item = Observation> {
        (0..n).map(|i| if i % 2 == 0 { Ok } else { Fail })
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn weights_run_from_075_to_125() {
        assert!(close(transition_weight(0), 0.75));
        assert!(close(transition_weight(19), 1.25));
        let total: f64 = (0..20).map(transition_weight).sum();
        assert!(close(total, 20.0), "all 20 changes must be 100%: {total}");
    }

    #[test]
    fn validate_checks_the_ordering() {
        assert!(FlapConfig::default().validate().is_ok());
        assert!(
            FlapConfig {
                high: 100.0,
                low: 0.0
            }
            .validate()
            .is_ok()
        );
        assert!(
            FlapConfig {
                high: 25.0,
                low: 25.0
            }
            .validate()
            .is_err()
        );
        assert!(
            FlapConfig {
                high: 20.0,
                low: 30.0
            }
            .validate()
            .is_err()
        );
        assert!(
            FlapConfig {
                high: 101.0,
                low: 0.0
            }
            .validate()
            .is_err()
        );
        assert!(
            FlapConfig {
                high: 50.0,
                low: -1.0
            }
            .validate()
            .is_err()
        );
        assert!(
            FlapConfig {
                high: f64::NAN,
                low: 0.0
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn empty_and_single_entry_histories_have_no_change() {
        let mut d = FlapDetector::default();
        assert_eq!(d.percent_change(), 0.0);
        assert!(!feed(&mut d, [Fail]));
        assert_eq!(d.percent_change(), 0.0);
        // Positive zero: the API and the dashboard show `-0` otherwise.
        assert!(d.percent_change().is_sign_positive());
        assert!(!feed(&mut d, [Fail, Fail]));
        assert!(d.percent_change().is_sign_positive());
    }

    #[test]
    fn alternating_results_flap() {
        let mut d = FlapDetector::default();
        assert!(feed(&mut d, alternating(21)));
        assert!(close(d.percent_change(), 100.0));
    }

    #[test]
    fn steady_results_never_flap() {
        for obs in [Ok, Warn, Fail, Unknown] {
            let mut d = FlapDetector::default();
            let cfg = FlapConfig::default();
            for _ in 0..100 {
                assert!(!d.record(obs, &cfg));
            }
            assert_eq!(d.percent_change(), 0.0);
        }
    }

    #[test]
    fn a_single_change_does_not_flap() {
        let mut d = FlapDetector::default();
        let flapping = feed(&mut d, std::iter::repeat_n(Ok, 20).chain([Fail]));
        assert!(!flapping);
        // The newest transition weighs 1.25: 1.25 * 100 / 20.
        assert!(close(d.percent_change(), 6.25));
    }

    #[test]
    fn older_changes_weigh_less() {
        let mut d = FlapDetector::default();
        feed(
            &mut d,
            [Fail].into_iter().chain(std::iter::repeat_n(Ok, 20)),
        );
        assert!(close(d.percent_change(), 0.75 * 5.0));
        // One more result pushes that change out of the history.
        feed(&mut d, [Ok]);
        assert_eq!(d.percent_change(), 0.0);
    }

    #[test]
    fn short_histories_align_to_the_newest_end() {
        let mut d = FlapDetector::default();
        feed(&mut d, [Ok, Fail]);
        assert!(close(d.percent_change(), 6.25));
        feed(&mut d, [Fail]);
        // That change is now the second-newest transition.
        assert!(close(d.percent_change(), transition_weight(18) * 5.0));
    }

    #[test]
    fn a_short_burst_of_changes_can_flap_before_history_fills() {
        let mut d = FlapDetector::default();
        // 10 changes in slots 10..=19: (7.5 + 145 * 0.5 / 19) * 5 = 56.6%.
        assert!(feed(&mut d, alternating(11)));
    }

    #[test]
    fn hysteresis_keeps_the_flag_between_thresholds() {
        let cfg = FlapConfig::default();
        let mut d = FlapDetector::default();
        feed(&mut d, alternating(21));
        assert!(d.is_flapping());
        let mut saw_between = false;
        while d.is_flapping() {
            d.record(Ok, &cfg);
            let p = d.percent_change();
            if p > cfg.low && p < cfg.high {
                saw_between = true;
                assert!(d.is_flapping(), "dropped at {p}%");
            }
        }
        assert!(saw_between);
        assert!(d.percent_change() <= cfg.low);

        // And rising from quiet, the flag stays off until `high`.
        let mut d = FlapDetector::default();
        feed(&mut d, std::iter::repeat_n(Ok, 21));
        let mut obs = Ok;
        loop {
            obs = if obs == Ok { Fail } else { Ok };
            let flapping = d.record(obs, &cfg);
            let p = d.percent_change();
            assert_eq!(flapping, p >= cfg.high, "at {p}%");
            if flapping {
                break;
            }
        }
    }

    #[test]
    fn twenty_one_steady_results_stop_flapping() {
        let mut d = FlapDetector::default();
        assert!(feed(&mut d, alternating(21)));
        assert!(!feed(&mut d, std::iter::repeat_n(Ok, 21)));
        assert_eq!(d.percent_change(), 0.0);
    }

    #[test]
    fn history_is_bounded() {
        let mut d = FlapDetector::default();
        feed(&mut d, alternating(500));
        assert_eq!(d.history.len(), FlapDetector::HISTORY);
    }

    #[test]
    fn state_round_trips_through_serde() {
        let mut d = FlapDetector::default();
        feed(&mut d, alternating(21));
        let back: FlapDetector = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        assert!(back.is_flapping());
    }
}
