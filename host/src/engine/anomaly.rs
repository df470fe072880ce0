//! An anomaly policy's evidence: a finding whose metric departs from its
//! own baseline (`policy/baseline.rs`). The baseline learns from each
//! scheduled result (not from verification probes, which come in bursts
//! during a remediation), and is kept in the store at a bounded rate
//! (every [`SAVE_EVERY`] of clock time per policy, and when the engine
//! stops), so a restart does not warm up again.

use serde::Serialize;

use super::{Engine, lock};
use crate::contract::Finding;
use crate::policy::baseline::{AnomalyRule, Band, Baseline, Direction, Verdict};
use crate::values::Millis;

/// How often a policy's baseline is written while it learns: a crash
/// loses at most this much learning, and 10,000 checks cost a few writes
/// a second, not one per result.
pub const SAVE_EVERY: Millis = 5 * 60 * 1000;

/// A policy's baseline, as the check view shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyBaseline {
    pub policy: String,
    #[serde(flatten)]
    pub band: Band,
    /// The last value judged, and whether it was anomalous.
    pub last: Option<Verdict>,
}

/// The finding the series follows: with several carrying the metric, the
/// one furthest out in the watched direction.
fn pick<'f>(
    rule: &AnomalyRule,
    mean: f64,
    candidates: impl Iterator<Item = (&'f Finding, f64)>,
) -> Option<(&'f Finding, f64)> {
    let out = |x: f64| match rule.direction {
        Direction::Up => x,
        Direction::Down => -x,
        Direction::Both => (x - mean).abs(),
    };
    candidates.max_by(|a, b| out(a.1).total_cmp(&out(b.1)))
}

impl Engine {
    /// The findings of policy `pi` that carry its metric, and the one the
    /// series follows.
    fn series_point<'f>(&self, pi: usize, findings: &'f [Finding]) -> Option<(&'f Finding, f64)> {
        let policy = &self.plan.policies[pi];
        let rule = policy.anomaly.as_ref()?;
        let mean = lock(&self.policies[pi].state)
            .baseline
            .band(self.clock.now(), rule)
            .mean;
        pick(
            rule,
            mean,
            findings
                .iter()
                .filter(|f| policy.matches(f))
                .filter_map(|f| {
                    let x = *f.metrics.get(&rule.metric)?;
                    x.is_finite().then_some((f, x))
                }),
        )
    }

    /// An anomaly policy's evidence in `findings`, judged against the
    /// baseline as it is (nothing learnt): the finding, if its metric is
    /// anomalous. No finding carrying the metric: no data, no evidence.
    pub(super) fn anomalous(&self, pi: usize, findings: &[Finding], at: Millis) -> Vec<Finding> {
        let Some(rule) = self.plan.policies[pi].anomaly.as_ref() else {
            return Vec::new();
        };
        let Some((f, x)) = self.series_point(pi, findings) else {
            return Vec::new();
        };
        let st = lock(&self.policies[pi].state);
        match st.baseline.judge(x, at, rule) {
            Some(v) if v.anomalous => vec![f.clone()],
            _ => Vec::new(),
        }
    }

    /// Whether a verification probe shows the metric back within its
    /// baseline (no data is no heal).
    pub(super) fn anomaly_healed(&self, pi: usize, findings: &[Finding], at: Millis) -> bool {
        let Some(rule) = self.plan.policies[pi].anomaly.as_ref() else {
            return true;
        };
        let Some((_, x)) = self.series_point(pi, findings) else {
            return false;
        };
        let st = lock(&self.policies[pi].state);
        st.baseline.judge(x, at, rule).is_some_and(|v| !v.anomalous)
    }

    /// A scheduled result: judged, then learnt from; the evidence is the
    /// finding if its metric was anomalous. Saves the baseline when due.
    pub(super) fn learn(&self, pi: usize, findings: &[Finding], at: Millis) -> Vec<Finding> {
        let policy = &self.plan.policies[pi];
        let Some(rule) = policy.anomaly.as_ref() else {
            return Vec::new();
        };
        let point = self.series_point(pi, findings);
        let now = self.clock.now();
        let save = {
            let mut st = lock(&self.policies[pi].state);
            let Some((f, x)) = point else {
                return Vec::new();
            };
            let verdict = st.baseline.observe(x, at, rule);
            let evidence = match &verdict {
                Some(v) if v.anomalous => vec![f.clone()],
                _ => Vec::new(),
            };
            st.verdict = verdict;
            st.baseline_dirty = true;
            let due = now.saturating_sub(st.baseline_saved) >= SAVE_EVERY;
            if due {
                st.baseline_dirty = false;
                st.baseline_saved = now;
            }
            (due.then(|| st.baseline.clone()), evidence)
        };
        if let (Some(b), _) = &save {
            self.save_baseline(pi, b);
        }
        save.1
    }

    fn save_baseline(&self, pi: usize, b: &Baseline) {
        let policy = &self.plan.policies[pi];
        let Some(rule) = policy.anomaly.as_ref() else {
            return;
        };
        let check = &self.plan.checks[policy.check].name;
        if let Err(e) =
            self.store
                .save_baseline(&policy.name, &rule.metric, check, b, self.clock.now())
        {
            tracing::warn!(policy = %policy.name, "saving the baseline of {}: {e:#}", rule.metric);
        }
    }

    /// Writes every baseline learnt since its last write (when the engine
    /// stops).
    pub(super) fn save_baselines(&self) {
        for pi in 0..self.plan.policies.len() {
            let b = {
                let mut st = lock(&self.policies[pi].state);
                if !st.baseline_dirty {
                    continue;
                }
                st.baseline_dirty = false;
                st.baseline_saved = self.clock.now();
                st.baseline.clone()
            };
            self.save_baseline(pi, &b);
        }
    }

    /// The baseline policy `pi` kept in the store (a row that does not
    /// parse is reported and starts afresh).
    pub(super) fn restore_baseline(
        store: &crate::store::Store,
        policy: &str,
        metric: &str,
    ) -> Baseline {
        match store.baseline(policy, metric) {
            Ok(Some(b)) => b,
            Ok(None) => Baseline::default(),
            Err(e) => {
                tracing::warn!(
                    policy,
                    "the stored baseline of {metric} is unusable, learning afresh: {e:#}"
                );
                Baseline::default()
            }
        }
    }

    /// The last anomalous verdict of policy `pi`, for its diagnosis.
    pub(super) fn anomaly_verdict(&self, pi: usize) -> Option<Verdict> {
        lock(&self.policies[pi].state)
            .verdict
            .clone()
            .filter(|v| v.anomalous)
    }

    /// The baselines of check `check`'s anomaly policies, now.
    pub fn baselines(&self, check: &str) -> Vec<PolicyBaseline> {
        let Some(&idx) = self.index.get(check) else {
            return Vec::new();
        };
        let now = self.clock.now();
        self.plan.checks[idx]
            .policies
            .iter()
            .filter_map(|&pi| {
                let policy = &self.plan.policies[pi];
                let rule = policy.anomaly.as_ref()?;
                let st = lock(&self.policies[pi].state);
                Some(PolicyBaseline {
                    policy: policy.name.clone(),
                    band: st.baseline.band(now, rule),
                    last: st.verdict.clone(),
                })
            })
            .collect()
    }

    /// Takes over the baselines of policies `old` also had, by name and
    /// metric (a config reload does not warm up again); the old engine no
    /// longer writes them.
    pub(super) fn adopt_baselines(&self, old: &Engine) {
        for (pi, policy) in self.plan.policies.iter().enumerate() {
            let Some(rule) = &policy.anomaly else {
                continue;
            };
            let Some(oj) = old.plan.policies.iter().position(|p| {
                p.name == policy.name && p.anomaly.as_ref().is_some_and(|r| r.metric == rule.metric)
            }) else {
                continue;
            };
            let (baseline, verdict, dirty) = {
                let mut o = lock(&old.policies[oj].state);
                let dirty = std::mem::take(&mut o.baseline_dirty);
                (o.baseline.clone(), o.verdict.clone(), dirty)
            };
            let mut st = lock(&self.policies[pi].state);
            st.baseline = baseline;
            st.verdict = verdict;
            st.baseline_dirty = dirty;
        }
    }
}
