//! Each check's status, health and last run, as enum-style series
//! (`status="fail"` is 1, the other statuses 0), encoded on each scrape
//! from one small entry per check rather than eight live gauges.

use std::collections::BTreeMap;
use std::sync::Mutex;

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

#[derive(Debug, Clone, Copy)]
struct Entry {
    status: Status,
    health: Health,
    /// Seconds since the Unix epoch.
    last_run: f64,
}

#[derive(Debug, Default)]
pub(super) struct CheckStates(Mutex<BTreeMap<String, Entry>>);

impl CheckStates {
    pub(super) fn set(&self, check: &str, status: Status, health: Health, at: f64) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = Entry {
            status,
            health,
            last_run: at,
        };
        match m.get_mut(check) {
            Some(old) => *old = e,
            None => {
                m.insert(check.to_string(), e);
            }
        }
    }

    pub(super) fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Collector for CheckStates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut fam = encoder.encode_descriptor(
                "check_status",
                "1 for each check's current status (ok, warn, fail, unknown), 0 for the others",
                None,
                MetricType::Gauge,
            )?;
            for (check, e) in m.iter() {
                for (s, name) in STATUSES {
                    let labels = [("check", check.as_str()), ("status", name)];
                    ConstGauge::new((e.status == s) as i64).encode(fam.encode_family(&labels)?)?;
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
            for (check, e) in m.iter() {
                for (h, name) in HEALTHS {
                    let labels = [("check", check.as_str()), ("health", name)];
                    ConstGauge::new((e.health == h) as i64).encode(fam.encode_family(&labels)?)?;
                }
            }
        }
        let mut fam = encoder.encode_descriptor(
            "check_last_run_timestamp_seconds",
            "When each check's detector last returned (Unix time)",
            None,
            MetricType::Gauge,
        )?;
        for (check, e) in m.iter() {
            let labels = [("check", check.as_str())];
            ConstGauge::new(e.last_run).encode(fam.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
