//! The health state of one check, with hysteresis in both directions.
//!
//! Monit and Nomad reset their failure count on a single passing probe, so a
//! service that passes one probe in three is never "failed" long enough to
//! stop a restart loop, and is declared healthy the moment it limps once.
//! Here a bad check needs `success_threshold` passes in a row to recover,
//! and only a pass resets the failure count.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
    Unavailable,
    Unknown,
}

/// One detector result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Observation {
    Ok,
    Warn,
    Fail,
    /// The detector could not run; says nothing about the service.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// Failures (since the last pass) that make a check Unavailable.
    pub failure_threshold: u32,
    /// Passes in a row that make a non-healthy check Healthy again.
    pub success_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            success_threshold: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthMachine {
    state: Health,
    consecutive_bad: u32,
    consecutive_good: u32,
    /// Whether an Ok/Warn/Fail was ever seen (Unknown does not count).
    observed_any: bool,
}

impl Default for HealthMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthMachine {
    pub fn new() -> Self {
        Self {
            state: Health::Unknown,
            consecutive_bad: 0,
            consecutive_good: 0,
            observed_any: false,
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Applies one observation and returns the new state.
    pub fn observe(&mut self, obs: Observation, cfg: &HealthConfig) -> Health {
        match obs {
            Observation::Ok => {
                self.consecutive_good = self.consecutive_good.saturating_add(1);
                self.consecutive_bad = 0;
                let fresh_start = !self.observed_any;
                if fresh_start || self.consecutive_good >= cfg.success_threshold {
                    self.state = Health::Healthy;
                }
            }
            Observation::Warn => {
                self.consecutive_good = 0;
                if self.state != Health::Unavailable {
                    self.state = Health::Degraded;
                }
            }
            Observation::Fail => {
                self.consecutive_good = 0;
                self.consecutive_bad = self.consecutive_bad.saturating_add(1);
                // One interleaved pass must not soften Unavailable to Degraded.
                if self.consecutive_bad >= cfg.failure_threshold
                    || self.state == Health::Unavailable
                {
                    self.state = Health::Unavailable;
                } else {
                    self.state = Health::Degraded;
                }
            }
            Observation::Unknown => {
                self.consecutive_good = 0;
                self.state = Health::Unknown;
            }
        }
        if obs != Observation::Unknown {
            self.observed_any = true;
        }
        self.state
    }

    pub fn consecutive_bad(&self) -> u32 {
        self.consecutive_bad
    }

    pub fn consecutive_good(&self) -> u32 {
        self.consecutive_good
    }
}

#[cfg(test)]
mod tests {
    use super::Observation::{Fail, Ok, Unknown, Warn};
    use super::*;

    fn run(m: &mut HealthMachine, obs: &[Observation]) -> Vec<Health> {
        let cfg = HealthConfig::default();
        obs.iter().map(|&o| m.observe(o, &cfg)).collect()
    }

    fn unavailable() -> HealthMachine {
        let mut m = HealthMachine::new();
        run(&mut m, &[Fail, Fail, Fail]);
        assert_eq!(m.state(), Health::Unavailable);
        m
    }

    #[test]
    fn starts_unknown() {
        let m = HealthMachine::new();
        assert_eq!(m.state(), Health::Unknown);
        assert_eq!((m.consecutive_bad(), m.consecutive_good()), (0, 0));
        assert_eq!(m, HealthMachine::default());
    }

    #[test]
    fn first_ok_on_a_fresh_start_is_healthy_at_once() {
        let mut m = HealthMachine::new();
        assert_eq!(run(&mut m, &[Ok]), [Health::Healthy]);
    }

    #[test]
    fn unknown_before_any_result_keeps_the_fresh_start() {
        let mut m = HealthMachine::new();
        assert_eq!(
            run(&mut m, &[Unknown, Ok]),
            [Health::Unknown, Health::Healthy]
        );
    }

    #[test]
    fn failures_degrade_then_make_unavailable_at_the_threshold() {
        let mut m = HealthMachine::new();
        assert_eq!(
            run(&mut m, &[Ok, Fail, Fail, Fail, Fail]),
            [
                Health::Healthy,
                Health::Degraded,
                Health::Degraded,
                Health::Unavailable,
                Health::Unavailable
            ]
        );
        assert_eq!(m.consecutive_bad(), 4);
    }

    #[test]
    fn a_single_pass_does_not_heal_an_unavailable_check() {
        let mut m = unavailable();
        assert_eq!(run(&mut m, &[Ok]), [Health::Unavailable]);
        assert_eq!(m.consecutive_bad(), 0);
        assert_eq!(run(&mut m, &[Ok]), [Health::Healthy]);
    }

    #[test]
    fn pass_fail_pass_never_heals() {
        let mut m = unavailable();
        let states = run(&mut m, &[Ok, Fail, Ok, Fail, Ok, Fail]);
        assert!(
            states.iter().all(|&s| s == Health::Unavailable),
            "{states:?}"
        );
    }

    #[test]
    fn degraded_needs_the_success_threshold_too() {
        let mut m = HealthMachine::new();
        run(&mut m, &[Ok, Fail]);
        assert_eq!(run(&mut m, &[Ok, Ok]), [Health::Degraded, Health::Healthy]);
    }

    #[test]
    fn only_ok_resets_the_failure_count() {
        let mut m = HealthMachine::new();
        run(&mut m, &[Ok, Fail, Fail, Warn, Unknown]);
        assert_eq!(m.consecutive_bad(), 2);
        assert_eq!(run(&mut m, &[Fail]), [Health::Unavailable]);
        run(&mut m, &[Ok]);
        assert_eq!(m.consecutive_bad(), 0);
    }

    #[test]
    fn warn_degrades_but_never_softens_unavailable() {
        let mut m = HealthMachine::new();
        assert_eq!(
            run(&mut m, &[Ok, Warn]),
            [Health::Healthy, Health::Degraded]
        );
        let mut m = unavailable();
        assert_eq!(run(&mut m, &[Warn]), [Health::Unavailable]);
    }

    #[test]
    fn warn_and_unknown_break_a_run_of_passes() {
        let mut m = unavailable();
        assert_eq!(
            run(&mut m, &[Ok, Warn, Ok]),
            [
                Health::Unavailable,
                Health::Unavailable,
                Health::Unavailable
            ]
        );
        assert_eq!(m.consecutive_good(), 1);
        let mut m = unavailable();
        assert_eq!(
            run(&mut m, &[Ok, Unknown, Ok]),
            [Health::Unavailable, Health::Unknown, Health::Unknown]
        );
        assert_eq!(run(&mut m, &[Ok]), [Health::Healthy]);
    }

    #[test]
    fn unknown_keeps_the_failure_count() {
        let mut m = unavailable();
        assert_eq!(run(&mut m, &[Unknown]), [Health::Unknown]);
        assert_eq!(m.consecutive_bad(), 3);
        // Still past the threshold, so the next failure is Unavailable at once.
        assert_eq!(run(&mut m, &[Fail]), [Health::Unavailable]);
    }

    #[test]
    fn success_threshold_of_one_heals_on_one_pass() {
        let cfg = HealthConfig {
            failure_threshold: 1,
            success_threshold: 1,
        };
        let mut m = HealthMachine::new();
        m.observe(Ok, &cfg);
        assert_eq!(m.observe(Fail, &cfg), Health::Unavailable);
        assert_eq!(m.observe(Ok, &cfg), Health::Healthy);
    }

    #[test]
    fn counters_saturate() {
        let mut m = HealthMachine::new();
        m.consecutive_bad = u32::MAX;
        m.observe(Fail, &HealthConfig::default());
        assert_eq!(m.consecutive_bad(), u32::MAX);
    }

    #[test]
    fn serde_names_are_lowercase_and_state_round_trips() {
        assert_eq!(
            serde_json::to_string(&Health::Unavailable).unwrap(),
            "\"unavailable\""
        );
        assert_eq!(
            serde_json::from_str::<Observation>("\"warn\"").unwrap(),
            Warn
        );
        let m = unavailable();
        let back: HealthMachine =
            serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
