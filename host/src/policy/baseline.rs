//! A metric's own baseline, and whether a value departs from it.
//!
//! A fixed threshold ("latency above 500 ms") is wrong for most services:
//! 300 ms is an outage for one and a good day for another. An anomaly
//! trigger compares each value with what the same metric has been doing:
//! an exponentially weighted mean and mean absolute deviation (robust
//! where a variance is not: one 10× outlier moves a variance 100×), or,
//! with a season, the same per time-of-day bucket (seasonal-naive: 14:00
//! today is compared with 14:00 of the days before), falling back to the
//! plain one until a full season has been seen.
//!
//! A value is anomalous when it is more than `sigma` deviations from the
//! mean in the watched direction, with the deviation floored (at
//! `min_deviation`, and at 5% of the mean) so a flat series does not page
//! on noise. No verdict before the baseline is warm: `min_history` of time
//! AND `min_samples` samples.
//!
//! Outliers (beyond 3 deviations, or `sigma` if fewer) are folded in at a
//! quarter of the weight, clipped to that edge, and leave the deviation
//! alone. Folded at full weight, a sustained fault would become "normal"
//! within a few half-lives, before it is healed; never folded, a
//! legitimate lasting change (a slower release) would page forever.
//! Clipped and quartered, a shift of `m` deviations is learned after about
//! `(m − 4) / (α · 3 / 4)` samples (`sigma = 4`): for a 12-deviation step
//! and a one-hour half-life at one sample a minute, about 15 hours; a fault
//! healed within minutes moves the mean by a tenth of a deviation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Millis;

/// Deviation units: the mean absolute deviation of a normal distribution
/// is `σ·√(2/π)`, so `sigma = 4` means four standard deviations.
const MAD_TO_SIGMA: f64 = 1.253_314_137_315_500_3;
/// The deviation is at least this fraction of the mean's magnitude.
const RELATIVE_FLOOR: f64 = 0.05;
/// The weight an outlier is folded in with (see the module comment).
const OUTLIER_WEIGHT: f64 = 0.25;
/// For learning, an outlier is beyond this many deviations (or `sigma`, if
/// fewer), whatever pages: a fault of 6σ with noise has values under a
/// 4σ threshold which, learnt at full weight, would widen the band until
/// the fault looks normal.
const LEARN_SIGMA: f64 = 3.0;
/// A seasonal bucket remembers about this many seasons (its half-life).
const SEASON_HALF_LIVES: f64 = 7.0;
/// A seasonal bucket is trusted once it has this many samples (or
/// `min_samples`, if fewer).
const BUCKET_MIN_SAMPLES: u64 = 10;

/// Which departures count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Above the baseline (latency, error counts).
    #[default]
    Up,
    /// Below it (throughput, free space).
    Down,
    Both,
}

/// Seasonal-naive: one baseline per time-of-day (or of-week) bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Season {
    pub length: Duration,
    pub buckets: u32,
    /// Smoothing per sample within a bucket.
    pub alpha: f64,
}

/// An anomaly trigger, resolved for one check's interval.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyRule {
    /// The finding metric watched.
    pub metric: String,
    pub sigma: f64,
    pub direction: Direction,
    pub min_history: Duration,
    pub min_samples: u64,
    /// Smoothing per sample of the plain baseline.
    pub alpha: f64,
    pub min_deviation: f64,
    pub season: Option<Season>,
}

/// Per-sample smoothing for a half-life of `half_life` at one sample per
/// `interval`.
pub fn alpha(half_life: Duration, interval: Duration) -> f64 {
    let samples = half_life.as_secs_f64() / interval.as_secs_f64().max(1e-3);
    1.0 - 0.5f64.powf(1.0 / samples.max(1.0))
}

impl AnomalyRule {
    /// A rule sampled every `interval`; `season` is its length and bucket
    /// count.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        metric: &str,
        sigma: f64,
        direction: Direction,
        min_history: Duration,
        min_samples: u64,
        half_life: Duration,
        min_deviation: f64,
        season: Option<(Duration, u32)>,
        interval: Duration,
    ) -> AnomalyRule {
        AnomalyRule {
            metric: metric.to_string(),
            sigma,
            direction,
            min_history,
            min_samples: min_samples.max(1),
            alpha: alpha(half_life, interval),
            min_deviation,
            season: season.map(|(length, buckets)| {
                let buckets = buckets.max(1);
                let per_bucket = length / buckets;
                Season {
                    length,
                    buckets,
                    alpha: alpha(per_bucket.mul_f64(SEASON_HALF_LIVES), interval),
                }
            }),
        }
    }

    fn floor(&self, mean: f64) -> f64 {
        self.min_deviation.max(RELATIVE_FLOOR * mean.abs())
    }

    fn bucket_min(&self) -> u64 {
        self.min_samples.min(BUCKET_MIN_SAMPLES)
    }
}

/// Exponentially weighted mean and mean absolute deviation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Ewm {
    n: u64,
    mean: f64,
    mad: f64,
}

impl Ewm {
    fn deviation(&self, rule: &AnomalyRule) -> f64 {
        (MAD_TO_SIGMA * self.mad).max(rule.floor(self.mean))
    }

    /// Folds `x` in; once `trusted`, an outlier only at a quarter weight,
    /// clipped to the band, leaving the deviation as it was.
    fn fold(&mut self, x: f64, alpha: f64, trusted: bool, rule: &AnomalyRule) {
        if self.n == 0 {
            *self = Ewm {
                n: 1,
                mean: x,
                mad: 0.0,
            };
            return;
        }
        // While young, a plain average: the first value is not the baseline.
        let a = alpha.max(1.0 / (self.n as f64 + 1.0));
        let d = x - self.mean;
        let limit = rule.sigma.min(LEARN_SIGMA) * self.deviation(rule);
        if trusted && d.abs() > limit {
            self.mean += a * OUTLIER_WEIGHT * limit.copysign(d);
        } else {
            self.mad += a * (d.abs() - self.mad);
            self.mean += a * d;
        }
        self.n = self.n.saturating_add(1);
    }
}

/// What one value came to against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub metric: String,
    pub value: f64,
    pub mean: f64,
    /// One deviation (σ units), floored.
    pub deviation: f64,
    /// The threshold, in deviations.
    pub sigma: f64,
    /// The baseline is this time of day's (seasonal), not the plain one.
    pub seasonal: bool,
    pub anomalous: bool,
}

impl Verdict {
    /// How many deviations the value is from the mean (signed).
    pub fn score(&self) -> f64 {
        (self.value - self.mean) / self.deviation.max(f64::MIN_POSITIVE)
    }
}

impl std::fmt::Display for Verdict {
    /// `latency_ms 480, baseline 120 ± 30 (+12.0σ, threshold 4σ)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}, baseline {} ± {}{} ({:+.1}σ, threshold {}σ)",
            self.metric,
            num(self.value),
            num(self.mean),
            num(self.deviation),
            if self.seasonal {
                " for this time of day"
            } else {
                ""
            },
            self.score(),
            num(self.sigma)
        )
    }
}

/// Three significant digits, no trailing zeros: `480`, `120`, `0.0123`.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// One metric's baseline, as kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// When the first sample came (warm-up is measured from it).
    pub first_at: Option<Millis>,
    pub samples: u64,
    plain: Ewm,
    /// One per seasonal bucket; empty without a season.
    #[serde(default)]
    buckets: Vec<Ewm>,
    /// The season (ms) the buckets were kept for: another one discards them.
    #[serde(default)]
    season_ms: u64,
}

/// The current baseline, for display.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Band {
    pub metric: String,
    pub mean: f64,
    pub deviation: f64,
    pub samples: u64,
    pub warm: bool,
    pub seasonal: bool,
}

impl Baseline {
    /// Whether enough history has been seen to judge at `at`.
    pub fn warm(&self, at: Millis, rule: &AnomalyRule) -> bool {
        self.samples >= rule.min_samples
            && self
                .first_at
                .is_some_and(|f| at.saturating_sub(f) >= rule.min_history.as_millis() as u64)
    }

    fn bucket(&self, at: Millis, season: &Season) -> Option<usize> {
        let len = season.length.as_millis() as u64;
        if len == 0 || self.buckets.len() != season.buckets as usize {
            return None;
        }
        Some(((at % len) as u128 * season.buckets as u128 / len as u128) as usize)
    }

    /// The model that judges a value at `at`: this time of day's once a
    /// full season is seen and its bucket has enough samples, else the
    /// plain one.
    fn model(&self, at: Millis, rule: &AnomalyRule) -> (&Ewm, bool) {
        if let Some(season) = &rule.season
            && let Some(first) = self.first_at
            && at.saturating_sub(first) >= season.length.as_millis() as u64
            && let Some(b) = self.bucket(at, season)
            && self.buckets[b].n >= rule.bucket_min()
        {
            return (&self.buckets[b], true);
        }
        (&self.plain, false)
    }

    /// The baseline at `at`.
    pub fn band(&self, at: Millis, rule: &AnomalyRule) -> Band {
        let (m, seasonal) = self.model(at, rule);
        Band {
            metric: rule.metric.clone(),
            mean: m.mean,
            deviation: m.deviation(rule),
            samples: self.samples,
            warm: self.warm(at, rule),
            seasonal,
        }
    }

    /// Judges `x` without learning from it (None: not warm, or not a
    /// number).
    pub fn judge(&self, x: f64, at: Millis, rule: &AnomalyRule) -> Option<Verdict> {
        if !x.is_finite() || !self.warm(at, rule) {
            return None;
        }
        let (m, seasonal) = self.model(at, rule);
        let deviation = m.deviation(rule);
        let d = x - m.mean;
        let limit = rule.sigma * deviation;
        let anomalous = match rule.direction {
            Direction::Up => d > limit,
            Direction::Down => -d > limit,
            Direction::Both => d.abs() > limit,
        };
        Some(Verdict {
            metric: rule.metric.clone(),
            value: x,
            mean: m.mean,
            deviation,
            sigma: rule.sigma,
            seasonal,
            anomalous,
        })
    }

    /// Judges `x`, then learns from it. A value that is not a number
    /// changes nothing.
    pub fn observe(&mut self, x: f64, at: Millis, rule: &AnomalyRule) -> Option<Verdict> {
        if !x.is_finite() {
            return None;
        }
        let verdict = self.judge(x, at, rule);
        self.fit(rule);
        // Until warm, everything is learnt at full weight.
        let trusted = self.warm(at, rule);
        self.plain.fold(x, rule.alpha, trusted, rule);
        if let Some(season) = &rule.season
            && let Some(b) = self.bucket(at, season)
        {
            let trusted = trusted && self.buckets[b].n >= rule.bucket_min();
            self.buckets[b].fold(x, season.alpha, trusted, rule);
        }
        self.first_at.get_or_insert(at);
        self.samples = self.samples.saturating_add(1);
        verdict
    }

    /// Buckets shaped for the rule's season (a changed season starts them
    /// again; the plain baseline stays).
    fn fit(&mut self, rule: &AnomalyRule) {
        let (ms, n) = rule
            .season
            .map(|s| (s.length.as_millis() as u64, s.buckets as usize))
            .unwrap_or((0, 0));
        if self.season_ms != ms || self.buckets.len() != n {
            self.season_ms = ms;
            self.buckets = vec![Ewm::default(); n];
        }
    }
}

#[cfg(test)]
mod tests;
