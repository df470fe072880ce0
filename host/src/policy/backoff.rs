//! Exponential backoff with jitter between retries of a recovery action.
//!
//! Fixed retry intervals (a plain `RestartSec`, Monit's poll cycle) hammer a
//! struggling dependency at full rate, and hosts that failed together retry
//! together. Growing the delay relieves the dependency; jitter spreads the
//! herd. The delay is capped and computed without overflow for any attempt.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay before the first retry (attempt 0), before jitter.
    pub base: Duration,
    /// Upper bound on any delay.
    pub max: Duration,
    /// Growth per attempt; 1.0 is a fixed delay.
    pub factor: f64,
    /// Fraction in [0, 1] the delay may be shortened by at random.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            max: Duration::from_secs(5 * 60),
            factor: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// Delay before retry `attempt` (0 = first retry); `rand01` in [0, 1).
    pub fn delay(&self, attempt: u32, rand01: f64) -> Duration {
        let raw = self.raw_delay(attempt);
        // NaN inputs fall back to "no jitter".
        let jitter = clamp01(self.jitter);
        let rand01 = clamp01(rand01);
        let scale = 1.0 - jitter * rand01;
        if scale >= 1.0 {
            return raw;
        }
        raw.mul_f64(scale).min(self.max)
    }

    /// min(max, base * factor^attempt), saturating instead of overflowing.
    fn raw_delay(&self, attempt: u32) -> Duration {
        let factor = if self.factor.is_finite() {
            self.factor.max(1.0)
        } else {
            1.0
        };
        let secs = self.base.as_secs_f64() * factor.powf(f64::from(attempt));
        if secs < self.max.as_secs_f64() {
            Duration::try_from_secs_f64(secs).map_or(self.max, |d| d.min(self.max))
        } else {
            self.max
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.base.is_zero() {
            return Err("backoff base must be greater than zero".into());
        }
        if self.max < self.base {
            return Err(format!(
                "backoff max ({:?}) must be at least base ({:?})",
                self.max, self.base
            ));
        }
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(format!("backoff factor must be >= 1 (got {})", self.factor));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!(
                "backoff jitter must be within 0..=1 (got {})",
                self.jitter
            ));
        }
        Ok(())
    }
}

fn clamp01(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> Backoff {
        Backoff {
            jitter: 0.0,
            ..Backoff::default()
        }
    }

    #[test]
    fn default_is_valid() {
        let b = Backoff::default();
        assert!(b.validate().is_ok());
        assert_eq!(b.base, Duration::from_secs(10));
        assert_eq!(b.max, Duration::from_secs(300));
    }

    #[test]
    fn grows_exponentially_then_caps() {
        let b = no_jitter();
        let secs: Vec<u64> = (0..7).map(|a| b.delay(a, 0.5).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn huge_attempts_saturate_to_max() {
        let b = Backoff::default();
        for attempt in [64, 1_000, 1_000_000, u32::MAX] {
            assert_eq!(b.delay(attempt, 0.0), b.max);
        }
        let b = Backoff {
            max: Duration::MAX,
            ..no_jitter()
        };
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::MAX);
    }

    #[test]
    fn jitter_only_shortens_within_bounds() {
        let b = Backoff::default();
        for attempt in [0, 3, 10] {
            let raw = no_jitter().delay(attempt, 0.0);
            let floor = raw.mul_f64(1.0 - b.jitter);
            for i in 0..100 {
                let d = b.delay(attempt, f64::from(i) / 100.0);
                assert!(d <= raw && d <= b.max, "{d:?} > {raw:?}");
                assert!(d >= floor, "{d:?} < {floor:?}");
            }
        }
        assert_eq!(b.delay(0, 0.0), Duration::from_secs(10));
        assert_eq!(b.delay(0, 0.5), Duration::from_secs(9));
    }

    #[test]
    fn factor_one_is_a_fixed_delay() {
        let b = Backoff {
            factor: 1.0,
            ..no_jitter()
        };
        assert_eq!(b.delay(0, 0.0), b.delay(1_000, 0.0));
    }

    #[test]
    fn out_of_range_inputs_stay_bounded() {
        let b = Backoff {
            jitter: 5.0,
            factor: f64::NAN,
            ..Backoff::default()
        };
        // Jitter clamps to 1, factor falls back to 1.
        assert_eq!(b.delay(7, 0.0), Duration::from_secs(10));
        assert_eq!(b.delay(7, 2.0), Duration::ZERO);
        assert_eq!(b.delay(7, f64::NAN), Duration::from_secs(10));
        assert_eq!(b.delay(7, -1.0), Duration::from_secs(10));
        // base above max still never exceeds max.
        let b = Backoff {
            base: Duration::from_secs(600),
            ..Backoff::default()
        };
        assert_eq!(b.delay(0, 0.0), b.max);
        assert!(b.delay(0, 0.9) <= b.max);
    }

    #[test]
    fn validate_rejects_bad_settings() {
        let ok = Backoff::default();
        let bad = [
            Backoff {
                base: Duration::ZERO,
                ..ok
            },
            Backoff {
                max: Duration::from_secs(1),
                ..ok
            },
            Backoff { factor: 0.5, ..ok },
            Backoff {
                factor: f64::INFINITY,
                ..ok
            },
            Backoff {
                factor: f64::NAN,
                ..ok
            },
            Backoff { jitter: -0.1, ..ok },
            Backoff { jitter: 1.1, ..ok },
            Backoff {
                jitter: f64::NAN,
                ..ok
            },
        ];
        for b in bad {
            assert!(b.validate().is_err(), "{b:?}");
        }
        let edges = [
            Backoff { max: ok.base, ..ok },
            Backoff { factor: 1.0, ..ok },
            Backoff { jitter: 0.0, ..ok },
            Backoff { jitter: 1.0, ..ok },
        ];
        for b in edges {
            assert!(b.validate().is_ok(), "{b:?}");
        }
    }
}
