//! Each check's status, health and last run, as enum-style series
//! (`status="fail"` is 1, the other statuses 0), encoded on each scrape
//! from one small entry per check rather than eight live gauges.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::contract::Status;
use crate::policy::health::Health;

const STATUSES: [(Status, &str); 4] = [
    (Status::Ok, "ok"),
    (Status::Warn, "warn"),
    (Status::Fail, "fail"),
    (Status::Unknown, "unknown"),
];

const HEALTHS: [(Health, &str); 4] = [
    (Health::Healthy, "healthy"),
    (Health::Degraded, "degraded"),
    (Health::Unavailable, "unavailable"),
    (Health::Unknown, "unknown"),
];

/// One check's series, updated in place through its [`CheckHandle`]
/// (no lookup, no lock, no allocation per run).
#[derive(Debug)]
struct Entry {
    /// Index into `STATUSES`.
    status: AtomicU8,
    /// Index into `HEALTHS`.
    health: AtomicU8,
    /// Seconds since the Unix epoch, as `f64` bits.
    last_run: AtomicU64,
}

impl Entry {
    fn new() -> Entry {
        Entry {
            status: AtomicU8::new(0),
            health: AtomicU8::new(0),
            last_run: AtomicU64::new(0),
        }
    }

    fn set(&self, status: Status, health: Health, at: f64) {
        let s = STATUSES.iter().position(|(x, _)| *x == status).unwrap_or(0);
        let h = HEALTHS.iter().position(|(x, _)| *x == health).unwrap_or(0);
        self.status.store(s as u8, Ordering::Relaxed);
        self.health.store(h as u8, Ordering::Relaxed);
        self.last_run.store(at.to_bits(), Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Map {
    entries: BTreeMap<String, Arc<Entry>>,
    /// Bumped by `clear`: handles from before it register again.
    generation: u64,
}

#[derive(Debug, Default)]
pub(super) struct CheckStates {
    map: Mutex<Map>,
    generation: AtomicU64,
}

/// A check's entry, held by the engine so a run updates its series
/// without finding it by name.
#[derive(Debug, Clone)]
pub struct CheckHandle {
    entry: Arc<Entry>,
    generation: u64,
}

impl CheckStates {
    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of `check`, made (unset: no series) if new.
    pub(super) fn handle(&self, check: &str) -> CheckHandle {
        let mut m = self.lock();
        let generation = m.generation;
        let entry = match m.entries.get(check) {
            Some(e) => e.clone(),
            None => {
                let e = Arc::new(Entry::new());
                m.entries.insert(check.to_string(), e.clone());
                e
            }
        };
        CheckHandle { entry, generation }
    }

    /// Whether `h` still belongs to the current map (no `clear` since).
    pub(super) fn is_current(&self, h: &CheckHandle) -> bool {
        self.generation.load(Ordering::Acquire) == h.generation
    }

    pub(super) fn set(&self, h: &CheckHandle, status: Status, health: Health, at: f64) {
        h.entry.set(status, health, at);
    }

    pub(super) fn clear(&self) {
        let mut m = self.lock();
        m.entries.clear();
        m.generation += 1;
        self.generation.store(m.generation, Ordering::Release);
    }
}

impl Collector for CheckStates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = self.lock();
        // Entries made but never set (last_run 0) have no series yet.
        let live = || {
            m.entries
                .iter()
                .filter(|(_, e)| e.last_run.load(Ordering::Relaxed) != 0)
        };
        {
            let mut fam = encoder.encode_descriptor(
                "check_status",
                "1 for each check's current status (ok, warn, fail, unknown), 0 for the others",
                None,
                MetricType::Gauge,
            )?;
            for (check, e) in live() {
                let now = e.status.load(Ordering::Relaxed) as usize;
                for (i, (_, name)) in STATUSES.iter().enumerate() {
                    let labels = [("check", check.as_str()), ("status", name)];
                    ConstGauge::new((now == i) as i64).encode(fam.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut fam = encoder.encode_descriptor(
                "check_health",
                "1 for each check's current health (healthy, degraded, unavailable, unknown), 0 for the others",
                None,
                MetricType::Gauge,
            )?;
            for (check, e) in live() {
                let now = e.health.load(Ordering::Relaxed) as usize;
                for (i, (_, name)) in HEALTHS.iter().enumerate() {
                    let labels = [("check", check.as_str()), ("health", name)];
                    ConstGauge::new((now == i) as i64).encode(fam.encode_family(&labels)?)?;
                }
            }
        }
        let mut fam = encoder.encode_descriptor(
            "check_last_run_timestamp_seconds",
            "When each check's detector last returned (Unix time)",
            None,
            MetricType::Gauge,
        )?;
        for (check, e) in live() {
            let labels = [("check", check.as_str())];
            let at = f64::from_bits(e.last_run.load(Ordering::Relaxed));
            ConstGauge::new(at).encode(fam.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
