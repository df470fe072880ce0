//! What mend learns: per (finding code, action), how often the action
//! healed it and how long healing took. Adaptive ladders read this; so
//! do people (success rate, mean time to recover). Breaker states live
//! here too, so a restart does not forget an open breaker.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::Store;
use crate::policy::adaptive::StepStats;
use crate::policy::breaker::Breaker;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionStats {
    pub code: String,
    pub action: String,
    pub attempts: u32,
    pub healed: u32,
    /// Healed / attempts.
    pub success_rate: f64,
    /// Mean time from incident open to verified heal, when it healed.
    pub mttr_ms: Option<u64>,
}

impl Store {
    /// Records one verified attempt of `action` against `code`.
    pub fn record_step_result(
        &self,
        code: &str,
        action: &str,
        healed: bool,
        heal_ms: u64,
    ) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO action_stats (code, action, attempts, healed, heal_ms_sum) VALUES (?1, ?2, 1, ?3, ?4)
             ON CONFLICT (code, action) DO UPDATE SET
                 attempts = attempts + 1,
                 healed = healed + excluded.healed,
                 heal_ms_sum = heal_ms_sum + excluded.heal_ms_sum",
            params![code, action, healed as i64, if healed { heal_ms as i64 } else { 0 }],
        )?;
        Ok(())
    }

    /// Takes back one heal of `action` against `code` that relapsed (the
    /// attempt stays counted): a fix that does not hold is no success.
    pub fn withdraw_step_success(
        &self,
        code: &str,
        action: &str,
        heal_ms: u64,
    ) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE action_stats SET healed = MAX(healed - 1, 0),
                 heal_ms_sum = MAX(heal_ms_sum - ?3, 0)
             WHERE code = ?1 AND action = ?2 AND healed > 0",
            params![code, action, heal_ms as i64],
        )?;
        Ok(())
    }

    pub fn step_stats(&self, code: &str, action: &str) -> anyhow::Result<StepStats> {
        let row: Option<(u32, u32)> = self
            .conn()
            .query_row(
                "SELECT attempts, healed FROM action_stats WHERE code = ?1 AND action = ?2",
                params![code, action],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (attempts, healed) = row.unwrap_or((0, 0));
        Ok(StepStats { attempts, healed })
    }

    pub fn action_stats(&self) -> anyhow::Result<Vec<ActionStats>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT code, action, attempts, healed, heal_ms_sum FROM action_stats ORDER BY code, action",
        )?;
        let rows = stmt.query_map([], |r| {
            let attempts: u32 = r.get(2)?;
            let healed: u32 = r.get(3)?;
            let sum: i64 = r.get(4)?;
            Ok(ActionStats {
                code: r.get(0)?,
                action: r.get(1)?,
                attempts,
                healed,
                success_rate: if attempts == 0 {
                    0.0
                } else {
                    healed as f64 / attempts as f64
                },
                mttr_ms: (healed > 0).then(|| sum as u64 / healed as u64),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn save_breaker(&self, check: &str, action: &str, b: &Breaker) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO breakers (check_name, action, state) VALUES (?1, ?2, ?3)
             ON CONFLICT (check_name, action) DO UPDATE SET state = excluded.state",
            params![check, action, serde_json::to_string(b)?],
        )?;
        Ok(())
    }

    pub fn breaker(&self, check: &str, action: &str) -> anyhow::Result<Option<Breaker>> {
        let s: Option<String> = self
            .conn()
            .query_row(
                "SELECT state FROM breakers WHERE check_name = ?1 AND action = ?2",
                params![check, action],
                |r| r.get(0),
            )
            .optional()?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::breaker::{BreakerConfig, BreakerState};

    #[test]
    fn stats_accumulate_and_breakers_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mend.db");
        let (s, _) = Store::open(&path, 0).unwrap();
        s.record_step_result("disk.full", "cleanup", true, 1000)
            .unwrap();
        s.record_step_result("disk.full", "cleanup", false, 0)
            .unwrap();
        s.record_step_result("disk.full", "cleanup", true, 3000)
            .unwrap();
        assert_eq!(
            s.step_stats("disk.full", "cleanup").unwrap(),
            StepStats {
                attempts: 3,
                healed: 2
            }
        );
        let a = &s.action_stats().unwrap()[0];
        assert_eq!(a.mttr_ms, Some(2000));
        // The heal that took 3 s relapsed: withdrawn, the attempt stays.
        s.withdraw_step_success("disk.full", "cleanup", 3000)
            .unwrap();
        let a = &s.action_stats().unwrap()[0];
        assert_eq!((a.attempts, a.healed, a.mttr_ms), (3, 1, Some(1000)));

        let mut b = Breaker::new();
        let cfg = BreakerConfig::default();
        for _ in 0..cfg.failure_threshold {
            b.record(false, 5, &cfg);
        }
        s.save_breaker("c", "cleanup", &b).unwrap();
        drop(s);
        let (s, _) = Store::open(&path, 0).unwrap();
        let back = s.breaker("c", "cleanup").unwrap().unwrap();
        assert!(matches!(back.state, BreakerState::Open { .. }));
    }
}
