//! Synthetic series (seeded, deterministic): how soon a fault is caught
//! and how often normal behaviour pages. `cargo test -p mend --lib
//! baseline -- --nocapture` prints the table recorded in BENCHMARKS.md.

use super::*;
use crate::policy::trigger::{Trigger, TriggerWindow};

const MINUTE: u64 = 60_000;
const DAY: usize = 1440;
/// 2026-11-22T00:00:00Z: bucket 0 is midnight UTC.
const T0: Millis = 1_795_305_600_000;

fn rule(season: Option<(Duration, u32)>) -> AnomalyRule {
    AnomalyRule::new(
        "latency_ms",
        4.0,
        Direction::Up,
        Duration::from_secs(3600),
        30,
        Duration::from_secs(3600),
        0.0,
        season,
        Duration::from_secs(60),
    )
}

fn daily() -> Option<(Duration, u32)> {
    Some((Duration::from_secs(86_400), 24))
}

/// Standard normal noise from a seeded generator (Box–Muller).
struct Noise(fastrand::Rng);

impl Noise {
    fn new(seed: u64) -> Noise {
        Noise(fastrand::Rng::with_seed(seed))
    }
    fn next(&mut self) -> f64 {
        let u1 = 1.0 - self.0.f64();
        let u2 = self.0.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A series, one sample a minute, and where its fault is (if any).
struct Series {
    name: &'static str,
    values: Vec<f64>,
    fault: Option<std::ops::Range<usize>>,
    /// Single-sample spikes: to be flagged, never to page.
    spikes: Vec<usize>,
}

/// 120 ± 30 ms for a week; at day 3 noon, `to` for two hours.
fn step(to: f64, seed: u64) -> Series {
    let mut noise = Noise::new(seed);
    let onset = 3 * DAY + DAY / 2;
    let values = (0..7 * DAY)
        .map(|i| {
            let level = if (onset..onset + 120).contains(&i) {
                to
            } else {
                120.0
            };
            (level + 30.0 * noise.next()).max(1.0)
        })
        .collect();
    Series {
        name: if to > 400.0 {
            "step 120→480 ms"
        } else {
            "step 120→300 ms"
        },
        values,
        fault: Some(onset..onset + 120),
        spikes: Vec::new(),
    }
}

/// 120 ± 30 ms with a single 480 ms sample every six hours.
fn spike(seed: u64) -> Series {
    let mut noise = Noise::new(seed);
    let values = (0..7 * DAY)
        .map(|i| {
            let v = (120.0 + 30.0 * noise.next()).max(1.0);
            if i > DAY && i.is_multiple_of(360) {
                480.0
            } else {
                v
            }
        })
        .collect();
    Series {
        name: "spike (1 sample ×4)",
        values,
        fault: None,
        spikes: (DAY + 1..7 * DAY)
            .filter(|i| i.is_multiple_of(360))
            .collect(),
    }
}

/// 120 → 240 ms over the week (noise grows with it): a slow drift.
fn drift(seed: u64) -> Series {
    let mut noise = Noise::new(seed);
    let n = 7 * DAY;
    let values = (0..n)
        .map(|i| {
            let level = 120.0 * (1.0 + i as f64 / n as f64);
            (level * (1.0 + 0.25 * noise.next())).max(1.0)
        })
        .collect();
    Series {
        name: "drift 120→240 ms / week",
        values,
        fault: None,
        spikes: Vec::new(),
    }
}

/// Business hours: 100 ms at night, 300 ms 09:00–17:00 UTC with
/// half-hour ramps, ± 10%; optionally a 2 h step by `factor` at day 5,
/// `hour` o'clock.
fn daily_cycle(seed: u64, step: Option<(usize, f64)>) -> Series {
    let mut noise = Noise::new(seed);
    let (hour, factor) = step.unwrap_or((0, 1.0));
    let with_step = step.is_some();
    let onset = 5 * DAY + hour * 60;
    let values = (0..7 * DAY)
        .map(|i| {
            let minute = (i % DAY) as f64;
            let ramp = |from: f64, len: f64| ((minute - from) / len).clamp(0.0, 1.0);
            let up = ramp(9.0 * 60.0, 30.0) - ramp(17.0 * 60.0, 30.0);
            let mut level = 100.0 + 200.0 * up;
            if with_step && (onset..onset + 120).contains(&i) {
                level *= factor;
            }
            (level * (1.0 + 0.1 * noise.next())).max(1.0)
        })
        .collect();
    Series {
        name: match step {
            None => "daily cycle (9–17h ×3)",
            Some((h, _)) if h < 9 => "daily cycle + 03:00 step ×3",
            Some(_) => "daily cycle + 14:00 step ×2",
        },
        values,
        fault: with_step.then_some(onset..onset + 120),
        spikes: Vec::new(),
    }
}

#[derive(Debug)]
struct Row {
    series: &'static str,
    mode: &'static str,
    /// Samples from the fault's first to the first flagged / paging one.
    flag_delay: Option<usize>,
    page_delay: Option<usize>,
    /// Flagged share of the fault's samples (a sustained fault must stay
    /// anomalous, not become the baseline), or of the spikes.
    fault_flagged: f64,
    /// Flagged share of the normal samples judged.
    false_flags: f64,
    /// Pages (the trigger starting to hold) outside the fault.
    false_pages: usize,
}

/// Runs `s` through a baseline and a 3-in-a-row trigger, judging only
/// after `skip` samples (e.g. the first season).
fn measure(s: &Series, rule: &AnomalyRule, mode: &'static str, skip: usize) -> Row {
    let trigger = Trigger::Consecutive(3);
    let mut window = TriggerWindow::default();
    let mut b = Baseline::default();
    let mut held = false;
    let (mut flag_delay, mut page_delay) = (None, None);
    let (mut fault_n, mut fault_flagged, mut normal_n, mut false_flags, mut false_pages) =
        (0, 0, 0, 0, 0);
    for (i, &x) in s.values.iter().enumerate() {
        let at = T0 + i as u64 * MINUTE;
        let flagged = b.observe(x, at, rule).is_some_and(|v| v.anomalous);
        let fires = window.record(flagged, &trigger);
        let page = fires && !held;
        held = fires;
        if i < skip {
            continue;
        }
        let in_fault = s.fault.as_ref().is_some_and(|f| f.contains(&i));
        // A page within the trigger's span after the fault ends is the
        // fault's own.
        let fault_tail = s
            .fault
            .as_ref()
            .is_some_and(|f| i >= f.start && i < f.end + 3);
        if s.spikes.contains(&i) {
            fault_n += 1;
            fault_flagged += flagged as usize;
            false_pages += page as usize;
        } else if in_fault {
            let since = i - s.fault.as_ref().unwrap().start;
            fault_n += 1;
            if flagged {
                fault_flagged += 1;
                flag_delay.get_or_insert(since);
            }
            if fires {
                page_delay.get_or_insert(since);
            }
        } else if !fault_tail {
            normal_n += 1;
            false_flags += flagged as usize;
            false_pages += page as usize;
        }
    }
    Row {
        series: s.name,
        mode,
        flag_delay,
        page_delay,
        fault_flagged: if fault_n > 0 {
            fault_flagged as f64 / fault_n as f64
        } else {
            f64::NAN
        },
        false_flags: false_flags as f64 / normal_n.max(1) as f64,
        false_pages,
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| series | baseline | first flagged (samples) | paged after (samples) | fault flagged | false flags | false pages |\n|---|---|---|---|---|---|---|\n",
    );
    let opt = |d: Option<usize>| d.map_or("–".to_string(), |d| d.to_string());
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.3}% | {} |\n",
            r.series,
            r.mode,
            opt(r.flag_delay),
            opt(r.page_delay),
            if r.fault_flagged.is_nan() {
                "–".to_string()
            } else {
                format!("{:.0}%", 100.0 * r.fault_flagged)
            },
            100.0 * r.false_flags,
            r.false_pages
        ));
    }
    out
}

#[test]
fn synthetic_series_detection_delay_and_false_positives() {
    let ewma = rule(None);
    let seasonal = rule(daily());
    let mut rows = Vec::new();
    for seed in [1, 2, 3] {
        let big = measure(&step(480.0, seed), &ewma, "ewma", 0);
        let small = measure(&step(300.0, seed), &ewma, "ewma", 0);
        let spikes = measure(&spike(seed), &ewma, "ewma", 0);
        let drifting = measure(&drift(seed), &ewma, "ewma", 0);
        // The first day is the seasonal baseline's warm-up.
        let cycle_ewma = measure(&daily_cycle(seed, None), &ewma, "ewma", DAY);
        let cycle = daily_cycle(seed, None);
        let cycle_seasonal = measure(&cycle, &seasonal, "seasonal 1d/24", DAY);
        let night = daily_cycle(seed, Some((3, 3.0)));
        let night_step = measure(&night, &seasonal, "seasonal 1d/24", DAY);
        // At the peak, 600 ms against this hour's 300 ± 30.
        let peak = daily_cycle(seed, Some((14, 2.0)));
        let peak_step = measure(&peak, &seasonal, "seasonal 1d/24", DAY);

        for r in [&big, &night_step, &peak_step] {
            assert_eq!(r.flag_delay, Some(0), "{r:?}");
            // Three in a row: the third anomalous sample pages.
            assert_eq!(r.page_delay, Some(2), "{r:?}");
            // Two hours of fault stay anomalous: it does not become normal.
            assert!(r.fault_flagged > 0.99, "{r:?}");
        }
        // 6σ with ±1σ noise: about 1 in 40 samples is under the threshold,
        // and by design the baseline creeps towards a lasting shift (a 6σ
        // one is learnt in about 4 hours), so fewer are flagged by the
        // fault's second hour.
        assert!(small.flag_delay.is_some_and(|d| d <= 2), "{small:?}");
        assert!(small.page_delay.is_some_and(|d| d <= 8), "{small:?}");
        assert!(small.fault_flagged > 0.8, "{small:?}");
        for r in [
            &big,
            &small,
            &spikes,
            &drifting,
            &cycle_seasonal,
            &night_step,
            &peak_step,
        ] {
            assert_eq!(r.false_pages, 0, "{r:?}");
            assert!(r.false_flags < 0.002, "{r:?}");
        }
        // Every spike is flagged, none pages.
        assert_eq!(spikes.fault_flagged, 1.0, "{spikes:?}");
        // The plain baseline pages at the daily peak, every day; the
        // seasonal one never does.
        assert!(cycle_ewma.false_pages >= 6, "{cycle_ewma:?}");
        if seed == 1 {
            rows.extend([
                big,
                small,
                spikes,
                drifting,
                cycle_ewma,
                cycle_seasonal,
                night_step,
                peak_step,
            ]);
        }
    }
    eprintln!(
        "sigma = 4, min_history = 1h, min_samples = 30, half_life = 1h, 1 sample/min, 3 in a row to page, seed 1:\n{}",
        table(&rows)
    );
}

#[test]
fn no_verdict_until_warm_by_time_and_by_samples() {
    let r = rule(None);
    let mut b = Baseline::default();
    // 30 samples in 30 s: enough samples, not enough history.
    for i in 0..30 {
        assert_eq!(b.observe(100.0, T0 + i * 1000, &r), None);
    }
    assert!(!b.warm(T0 + 30_000, &r));
    assert!(b.judge(1e6, T0 + 30_000, &r).is_none());
    // An hour later: warm.
    assert!(b.judge(1e6, T0 + 3_600_000, &r).unwrap().anomalous);
    // An hour of history but 2 samples: not warm.
    let mut few = Baseline::default();
    few.observe(100.0, T0, &r);
    few.observe(100.0, T0 + 3_600_000, &r);
    assert!(few.judge(1e6, T0 + 3_600_000, &r).is_none());
}

#[test]
fn a_flat_series_has_a_floor() {
    let r = rule(None);
    let mut b = Baseline::default();
    for i in 0..120 {
        b.observe(100.0, T0 + i * MINUTE, &r);
    }
    let at = T0 + 120 * MINUTE;
    // Deviation 0, floored at 5% of the mean: 4σ = 20.
    assert!((b.band(at, &r).deviation - 5.0).abs() < 1e-9);
    assert!(!b.judge(119.0, at, &r).unwrap().anomalous);
    assert!(b.judge(121.0, at, &r).unwrap().anomalous);
    let floored = AnomalyRule {
        min_deviation: 10.0,
        ..r.clone()
    };
    assert!(!b.judge(139.0, at, &floored).unwrap().anomalous);
}

#[test]
fn direction_decides_which_departures_count() {
    let mut b = Baseline::default();
    let up = rule(None);
    for i in 0..120 {
        b.observe(100.0 + (i % 2) as f64 * 10.0, T0 + i * MINUTE, &up);
    }
    let at = T0 + 120 * MINUTE;
    let down = AnomalyRule {
        direction: Direction::Down,
        ..up.clone()
    };
    let both = AnomalyRule {
        direction: Direction::Both,
        ..up.clone()
    };
    assert!(b.judge(500.0, at, &up).unwrap().anomalous);
    assert!(!b.judge(1.0, at, &up).unwrap().anomalous);
    assert!(!b.judge(500.0, at, &down).unwrap().anomalous);
    assert!(b.judge(1.0, at, &down).unwrap().anomalous);
    assert!(b.judge(500.0, at, &both).unwrap().anomalous);
    assert!(b.judge(1.0, at, &both).unwrap().anomalous);
}

#[test]
fn outliers_move_the_baseline_a_little_a_normal_value_fully() {
    let r = rule(None);
    let mut b = Baseline::default();
    let mut noise = Noise::new(7);
    for i in 0..600 {
        b.observe(120.0 + 30.0 * noise.next(), T0 + i * MINUTE, &r);
    }
    let at = T0 + 600 * MINUTE;
    let before = b.band(at, &r);
    let mut faulty = b.clone();
    for i in 0..30 {
        faulty.observe(480.0, at + i * MINUTE, &r);
    }
    let after = faulty.band(at + 30 * MINUTE, &r);
    // Half an hour of a 12σ fault moves the mean by well under one σ,
    // and the deviation not at all.
    assert!(
        after.mean - before.mean < before.deviation,
        "{before:?} → {after:?}"
    );
    assert_eq!(after.deviation, before.deviation);
    // Folded at full weight (no verdicts while cold), the same half hour
    // would have moved it by more than half the step.
    let mut cold = Baseline::default();
    for i in 0..600 {
        cold.observe(120.0, T0 + i * 1000, &r);
    }
    for i in 0..30 {
        cold.observe(480.0, T0 + 600_000 + i * 1000, &r);
    }
    assert!(cold.band(T0, &r).mean > 120.0 + 10.0);
}

#[test]
fn not_a_number_changes_nothing() {
    let r = rule(None);
    let mut b = Baseline::default();
    for i in 0..60 {
        b.observe(100.0, T0 + i * MINUTE, &r);
    }
    let before = b.clone();
    assert_eq!(b.observe(f64::NAN, T0 + 61 * MINUTE, &r), None);
    assert_eq!(b.observe(f64::INFINITY, T0 + 62 * MINUTE, &r), None);
    assert_eq!(b, before);
}

#[test]
fn seasonal_falls_back_to_the_plain_baseline_until_a_season_is_seen() {
    let r = rule(daily());
    let mut b = Baseline::default();
    for i in 0..DAY as u64 - 1 {
        b.observe(100.0, T0 + i * MINUTE, &r);
    }
    assert!(!b.band(T0 + (DAY as u64 - 1) * MINUTE, &r).seasonal);
    b.observe(100.0, T0 + (DAY as u64 - 1) * MINUTE, &r);
    let band = b.band(T0 + DAY as u64 * MINUTE, &r);
    assert!(band.seasonal && band.warm, "{band:?}");
    // A changed season (or none) drops the buckets, keeps the plain one.
    let weekly = rule(Some((Duration::from_secs(7 * 86_400), 7)));
    b.observe(100.0, T0 + DAY as u64 * MINUTE, &weekly);
    let band = b.band(T0 + (DAY as u64 + 1) * MINUTE, &weekly);
    assert!(!band.seasonal && band.warm, "{band:?}");
}

#[test]
fn baseline_round_trips_through_serde() {
    let r = rule(daily());
    let mut b = Baseline::default();
    let mut noise = Noise::new(3);
    for i in 0..100 {
        b.observe(120.0 + 30.0 * noise.next(), T0 + i * MINUTE, &r);
    }
    let json = serde_json::to_string(&b).unwrap();
    let back: Baseline = serde_json::from_str(&json).unwrap();
    // (JSON may round the last bit of a float.)
    let at = T0 + 100 * MINUTE;
    let (x, y) = (b.band(at, &r), back.band(at, &r));
    assert_eq!(
        (x.samples, x.warm, x.seasonal),
        (y.samples, y.warm, y.seasonal)
    );
    assert!((x.mean - y.mean).abs() < 1e-9 && (x.deviation - y.deviation).abs() < 1e-9);
    assert_eq!(back.first_at, b.first_at);
    assert_eq!(back.buckets.len(), 24);
}

#[test]
fn verdict_reads_like_a_person_wrote_it() {
    let v = Verdict {
        metric: "latency_ms".into(),
        value: 480.0,
        mean: 120.4,
        deviation: 30.0,
        sigma: 4.0,
        seasonal: false,
        anomalous: true,
    };
    assert_eq!(
        v.to_string(),
        "latency_ms 480, baseline 120 ± 30 (+12.0σ, threshold 4σ)"
    );
    assert_eq!(num(0.012345), "0.0123");
    assert_eq!(num(1234.7), "1235");
    assert_eq!(num(2.5), "2.5");
}

#[test]
fn alpha_follows_the_half_life() {
    let a = alpha(Duration::from_secs(3600), Duration::from_secs(60));
    // After 60 samples, half the weight is on older ones.
    assert!(((1.0 - a).powi(60) - 0.5).abs() < 1e-9);
    // A half-life shorter than the interval: every sample counts half.
    assert_eq!(alpha(Duration::from_secs(1), Duration::from_secs(60)), 0.5);
}
