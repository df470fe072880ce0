//! Fleet metrics, registered in mend's one registry (`crate::metrics`):
//! slots held, granted, denied, expired and lost per budget; store round
//! trips; how long steps waited for a slot; live members; the outbox.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabel {
    budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabels {
    budget: String,
    /// granted, local, denied, unreachable, released, expired, lost.
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

fn store_histogram() -> Histogram {
    // 50 µs to ~3 s.
    Histogram::new(exponential_buckets(0.00005, 3.0, 11))
}

fn wait_histogram() -> Histogram {
    // 1 ms to ~18 min.
    Histogram::new(exponential_buckets(0.001, 4.0, 11))
}

pub struct FleetMetrics {
    held: Family<BudgetLabel, Gauge>,
    slots: Family<SlotLabels, Counter>,
    store_seconds: Hist<OpLabels>,
    wait_seconds: Hist<BudgetLabel>,
    members: Gauge,
    outbox_pending: Gauge,
    alerts: Family<ResultLabel, Counter>,
}

impl Default for FleetMetrics {
    fn default() -> Self {
        FleetMetrics {
            held: Family::default(),
            slots: Family::default(),
            store_seconds: Family::new_with_constructor(store_histogram),
            wait_seconds: Family::new_with_constructor(wait_histogram),
            members: Gauge::default(),
            outbox_pending: Gauge::default(),
            alerts: Family::default(),
        }
    }
}

impl FleetMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "fleet_slots_held",
            "Fleet budget slots this agent holds now",
            self.held.clone(),
        );
        r.register(
            "fleet_slots",
            "Fleet budget slot events by result (granted, local, denied, unreachable, released, expired, lost)",
            self.slots.clone(),
        );
        r.register(
            "fleet_store_seconds",
            "Round trips to the fleet store, by operation and result",
            self.store_seconds.clone(),
        );
        r.register(
            "fleet_slot_wait_seconds",
            "How long a step waited for its fleet slot (granted or not)",
            self.wait_seconds.clone(),
        );
        r.register(
            "fleet_members",
            "Live fleet members as last counted",
            self.members.clone(),
        );
        r.register(
            "fleet_outbox_pending",
            "Incident events not yet published to the fleet",
            self.outbox_pending.clone(),
        );
        r.register(
            "fleet_alerts",
            "Alert occurrences offered to the fleet, by result (won, claimed, unreachable)",
            self.alerts.clone(),
        );
    }

    pub fn slot(&self, budget: &str, result: &str) {
        self.slots
            .get_or_create(&SlotLabels {
                budget: budget.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn held(&self, budget: &str, delta: i64) {
        self.held
            .get_or_create(&BudgetLabel {
                budget: budget.into(),
            })
            .inc_by(delta);
    }

    pub fn store(&self, op: &str, ok: bool, took: Duration) {
        self.store_seconds
            .get_or_create(&OpLabels {
                op: op.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn waited(&self, budget: &str, took: Duration) {
        self.wait_seconds
            .get_or_create(&BudgetLabel {
                budget: budget.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn set_members(&self, n: usize) {
        self.members.set(n as i64);
    }

    pub fn set_outbox_pending(&self, n: usize) {
        self.outbox_pending.set(n as i64);
    }

    pub fn alert(&self, result: &str) {
        self.alerts
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }
}
