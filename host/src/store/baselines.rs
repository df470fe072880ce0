//! Anomaly baselines, one row per (policy, metric), replaced in place.
//! Written on the history connection (`synchronous = NORMAL`): losing the
//! last few minutes of learning to a power cut costs nothing that matters.

use anyhow::Context;
use rusqlite::{OptionalExtension, params};

use super::{Millis, Store};
use crate::policy::baseline::Baseline;

impl Store {
    pub fn save_baseline(
        &self,
        policy: &str,
        metric: &str,
        check: &str,
        baseline: &Baseline,
        at: Millis,
    ) -> anyhow::Result<()> {
        let state = serde_json::to_string(baseline)?;
        self.history_conn().execute(
            "INSERT INTO baselines (policy, metric, check_name, state, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (policy, metric) DO UPDATE SET
                 check_name = excluded.check_name, state = excluded.state,
                 updated_at = excluded.updated_at",
            params![policy, metric, check, state, at as i64],
        )?;
        Ok(())
    }

    /// The baseline kept for (policy, metric); an error if the row does
    /// not parse.
    pub fn baseline(&self, policy: &str, metric: &str) -> anyhow::Result<Option<Baseline>> {
        let state: Option<String> = self
            .conn()
            .query_row(
                "SELECT state FROM baselines WHERE policy = ?1 AND metric = ?2",
                params![policy, metric],
                |r| r.get(0),
            )
            .optional()?;
        state
            .map(|s| {
                serde_json::from_str(&s)
                    .with_context(|| format!("baseline of policy {policy}, metric {metric}"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_baseline_is_replaced_in_place_and_a_bad_row_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("mend.db"), 0).unwrap();
        assert_eq!(store.baseline("p", "latency_ms").unwrap(), None);
        let rule = crate::policy::baseline::AnomalyRule::new(
            "latency_ms",
            4.0,
            Default::default(),
            std::time::Duration::ZERO,
            1,
            std::time::Duration::from_secs(60),
            0.0,
            None,
            std::time::Duration::from_secs(1),
        );
        let mut b = Baseline::default();
        b.observe(120.0, 1_000, &rule);
        store
            .save_baseline("p", "latency_ms", "web", &b, 1)
            .unwrap();
        b.observe(130.0, 2_000, &rule);
        store
            .save_baseline("p", "latency_ms", "web", &b, 2)
            .unwrap();
        let back = store.baseline("p", "latency_ms").unwrap().unwrap();
        assert_eq!(back.samples, 2);
        assert!((back.band(2_000, &rule).mean - b.band(2_000, &rule).mean).abs() < 1e-9);
        let n: i64 = store
            .conn()
            .query_row("SELECT COUNT(*) FROM baselines", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        store
            .conn()
            .execute("UPDATE baselines SET state = '{' WHERE policy = 'p'", [])
            .unwrap();
        let e = store.baseline("p", "latency_ms").unwrap_err();
        assert!(
            format!("{e:#}").contains("baseline of policy p, metric latency_ms"),
            "{e:#}"
        );
    }
}
