//! A circuit breaker per (check, action), after resilience4j, Polly and
//! Failsafe.
//!
//! A recovery action that keeps failing (a restart that never fixes the
//! disk) is worse than none: it churns the service and buries the cause.
//! After `failure_threshold` failures the breaker opens and the action is
//! not tried; when the wait ends a single probe is let through, and each
//! repeated trip waits twice as long, capped.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Millis, add};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerConfig {
    /// Failures in a row, while closed, that open the breaker.
    pub failure_threshold: u32,
    /// How long the first trip stays open.
    pub open_for: Duration,
    /// Cap on the doubled open time of repeated trips.
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            open_for: Duration::from_secs(10 * 60),
            max_open_for: Duration::from_secs(60 * 60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum BreakerState {
    Closed {
        failures: u32,
    },
    /// Refusing until `until`; `trips` counts opens since it last closed.
    Open {
        until: Millis,
        trips: u32,
    },
    /// One probe is in flight since `since`. A probe whose outcome is never
    /// recorded (a crash, a lost write) does not wedge the breaker: after
    /// another `open_for`, a new probe is let through.
    HalfOpen {
        trips: u32,
        since: Millis,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    pub state: BreakerState,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new()
    }
}

impl Breaker {
    pub fn new() -> Self {
        Self {
            state: BreakerState::Closed { failures: 0 },
        }
    }

    /// Whether the action may run now. Past the open time this lets exactly
    /// one probe through and moves to half-open.
    pub fn allow(&mut self, now: Millis, cfg: &BreakerConfig) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until, .. } if now < until => false,
            BreakerState::Open { trips, .. } => {
                self.state = BreakerState::HalfOpen { trips, since: now };
                true
            }
            BreakerState::HalfOpen { trips, since } if now >= add(since, cfg.open_for) => {
                self.state = BreakerState::HalfOpen { trips, since: now };
                true
            }
            BreakerState::HalfOpen { .. } => false,
        }
    }

    /// Records the outcome of an action run.
    pub fn record(&mut self, success: bool, now: Millis, cfg: &BreakerConfig) {
        self.state = match (self.state, success) {
            (_, true) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, false) => {
                let failures = failures.saturating_add(1);
                if failures >= cfg.failure_threshold {
                    BreakerState::Open {
                        until: add(now, cfg.open_for),
                        trips: 1,
                    }
                } else {
                    BreakerState::Closed { failures }
                }
            }
            (BreakerState::HalfOpen { trips, .. }, false) => BreakerState::Open {
                until: add(now, open_time(trips, cfg)),
                trips: trips.saturating_add(1),
            },
            // A late failure while already open changes nothing.
            (open @ BreakerState::Open { .. }, false) => open,
        };
    }

    pub fn name(&self) -> &'static str {
        match self.state {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half-open",
        }
    }
}

/// min(max_open_for, open_for * 2^trips), without overflow.
fn open_time(trips: u32, cfg: &BreakerConfig) -> Duration {
    2u32.checked_pow(trips)
        .and_then(|scale| cfg.open_for.checked_mul(scale))
        .map_or(cfg.max_open_for, |d| d.min(cfg.max_open_for))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    fn tripped(now: Millis, cfg: &BreakerConfig) -> Breaker {
        let mut b = Breaker::new();
        for _ in 0..cfg.failure_threshold {
            assert!(b.allow(now, cfg));
            b.record(false, now, cfg);
        }
        assert_eq!(
            b.state,
            BreakerState::Open {
                until: now + 10 * MIN,
                trips: 1
            }
        );
        b
    }

    #[test]
    fn starts_closed_and_allows() {
        let cfg = BreakerConfig::default();
        let mut b = Breaker::new();
        assert_eq!(b, Breaker::default());
        assert_eq!(b.name(), "closed");
        assert!(b.allow(0, &cfg));
        assert!(b.allow(0, &cfg), "closed allows any number of calls");
    }

    #[test]
    fn success_resets_the_failure_count() {
        let cfg = BreakerConfig::default();
        let mut b = Breaker::new();
        b.record(false, 0, &cfg);
        b.record(false, 0, &cfg);
        b.record(true, 0, &cfg);
        b.record(false, 0, &cfg);
        b.record(false, 0, &cfg);
        assert_eq!(b.state, BreakerState::Closed { failures: 2 });
        b.record(false, 0, &cfg);
        assert_eq!(b.name(), "open");
    }

    #[test]
    fn open_refuses_until_the_wait_ends() {
        let cfg = BreakerConfig::default();
        let mut b = tripped(1_000, &cfg);
        assert!(!b.allow(1_000, &cfg));
        assert!(!b.allow(1_000 + 10 * MIN - 1, &cfg));
        assert_eq!(b.name(), "open");
        assert!(b.allow(1_000 + 10 * MIN, &cfg));
        assert_eq!(
            b.state,
            BreakerState::HalfOpen {
                trips: 1,
                since: 1_000 + 10 * MIN
            }
        );
        assert_eq!(b.name(), "half-open");
    }

    #[test]
    fn half_open_lets_only_one_probe_through() {
        let cfg = BreakerConfig::default();
        let mut b = tripped(0, &cfg);
        assert!(b.allow(10 * MIN, &cfg));
        assert!(!b.allow(10 * MIN, &cfg));
        assert!(!b.allow(20 * MIN - 1, &cfg), "one probe at a time");
        // A probe whose outcome never came back does not wedge it.
        assert!(b.allow(20 * MIN, &cfg));
        assert!(!b.allow(20 * MIN, &cfg));
    }

    #[test]
    fn successful_probe_closes() {
        let cfg = BreakerConfig::default();
        let mut b = tripped(0, &cfg);
        assert!(b.allow(10 * MIN, &cfg));
        b.record(true, 10 * MIN, &cfg);
        assert_eq!(b, Breaker::new());
        assert!(b.allow(10 * MIN, &cfg));
    }

    #[test]
    fn failed_probes_double_the_wait_up_to_the_cap() {
        let cfg = BreakerConfig::default();
        let mut b = tripped(0, &cfg);
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..5 {
            let BreakerState::Open { until, .. } = b.state else {
                panic!("expected open, got {:?}", b.state);
            };
            now = until;
            assert!(b.allow(now, &cfg));
            b.record(false, now, &cfg);
            let BreakerState::Open { until, .. } = b.state else {
                panic!("expected open, got {:?}", b.state);
            };
            waits.push((until - now) / MIN);
        }
        assert_eq!(waits, [20, 40, 60, 60, 60]);
        assert_eq!(
            b.state,
            BreakerState::Open {
                until: now + 60 * MIN,
                trips: 6
            }
        );
    }

    #[test]
    fn many_trips_do_not_overflow() {
        let cfg = BreakerConfig::default();
        let mut b = Breaker {
            state: BreakerState::HalfOpen {
                trips: u32::MAX,
                since: 0,
            },
        };
        b.record(false, Millis::MAX - 5, &cfg);
        assert_eq!(
            b.state,
            BreakerState::Open {
                until: Millis::MAX,
                trips: u32::MAX
            }
        );
    }

    #[test]
    fn late_results_while_open() {
        let cfg = BreakerConfig::default();
        let mut b = tripped(0, &cfg);
        let before = b;
        b.record(false, 5 * MIN, &cfg);
        assert_eq!(b, before, "a late failure keeps it open as it was");
        b.record(true, 5 * MIN, &cfg);
        assert_eq!(b, Breaker::new());
    }

    #[test]
    fn threshold_of_one_trips_on_the_first_failure() {
        let cfg = BreakerConfig {
            failure_threshold: 1,
            ..BreakerConfig::default()
        };
        let mut b = Breaker::new();
        b.record(false, 0, &cfg);
        assert_eq!(b.name(), "open");
    }

    #[test]
    fn serde_uses_a_kebab_case_state_tag() {
        let b = Breaker {
            state: BreakerState::HalfOpen { trips: 2, since: 0 },
        };
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(
            json,
            r#"{"state":{"state":"half-open","trips":2,"since":0}}"#
        );
        assert_eq!(serde_json::from_str::<Breaker>(&json).unwrap(), b);
        let open: BreakerState =
            serde_json::from_str(r#"{"state":"open","until":5,"trips":1}"#).unwrap();
        assert_eq!(open, BreakerState::Open { until: 5, trips: 1 });
    }
}
