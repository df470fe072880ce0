//! What mend learns: per (check, finding code, step), how often the step
//! healed it and how long healing took. The check is its `stats_key`
//! when checks of one kind share what they learn; `*` holds what was
//! learnt before stats were kept per check. Adaptive ladders read this;
//! so do people (success rate, mean time to recover). Breaker states live
//! here too, so a restart does not forget an open breaker.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::Store;
use crate::policy::adaptive::StepStats;
use crate::policy::breaker::Breaker;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionStats {
    /// The check (or the `stats_key` it shares); `*`: every check, from
    /// before stats were kept per check.
    pub key: String,
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
    /// Records one verified attempt of step `action` against `code` on
    /// check (or shared key) `key`.
    pub fn record_step_result(
        &self,
        key: &str,
        code: &str,
        action: &str,
        healed: bool,
        heal_ms: u64,
    ) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO action_stats (stats_key, code, action, attempts, healed, heal_ms_sum) VALUES (?1, ?2, ?3, 1, ?4, ?5)
             ON CONFLICT (stats_key, code, action) DO UPDATE SET
                 attempts = attempts + 1,
                 healed = healed + excluded.healed,
                 heal_ms_sum = heal_ms_sum + excluded.heal_ms_sum",
            params![key, code, action, healed as i64, if healed { heal_ms as i64 } else { 0 }],
        )?;
        Ok(())
    }

    /// Takes back one heal of `action` against `code` on `key` that
    /// relapsed (the attempt stays counted): a fix that does not hold is
    /// no success.
    pub fn withdraw_step_success(
        &self,
        key: &str,
        code: &str,
        action: &str,
        heal_ms: u64,
    ) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE action_stats SET healed = MAX(healed - 1, 0),
                 heal_ms_sum = MAX(heal_ms_sum - ?4, 0)
             WHERE stats_key = ?1 AND code = ?2 AND action = ?3 AND healed > 0",
            params![key, code, action, heal_ms as i64],
        )?;
        Ok(())
    }

    /// What step `action` did against `code` on `key`; with nothing there
    /// yet, what was learnt before stats were kept per check (`*`).
    pub fn step_stats(&self, key: &str, code: &str, action: &str) -> anyhow::Result<StepStats> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT attempts, healed FROM action_stats WHERE stats_key = ?1 AND code = ?2 AND action = ?3",
        )?;
        for k in [key, "*"] {
            let row: Option<(u32, u32)> = stmt
                .query_row(params![k, code, action], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((attempts, healed)) = row.filter(|(a, _)| *a > 0) {
                return Ok(StepStats { attempts, healed });
            }
        }
        Ok(StepStats::default())
    }

    pub fn action_stats(&self) -> anyhow::Result<Vec<ActionStats>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT code, action, attempts, healed, heal_ms_sum, stats_key FROM action_stats
             ORDER BY stats_key, code, action",
        )?;
        let rows = stmt.query_map([], |r| {
            let attempts: u32 = r.get(2)?;
            let healed: u32 = r.get(3)?;
            let sum: i64 = r.get(4)?;
            Ok(ActionStats {
                key: r.get(5)?,
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
        s.record_step_result("root", "disk.full", "cleanup", true, 1000)
            .unwrap();
        s.record_step_result("root", "disk.full", "cleanup", false, 0)
            .unwrap();
        s.record_step_result("root", "disk.full", "cleanup", true, 3000)
            .unwrap();
        // Another disk's step of the same name learns on its own.
        s.record_step_result("data", "disk.full", "cleanup", false, 0)
            .unwrap();
        assert_eq!(
            s.step_stats("root", "disk.full", "cleanup").unwrap(),
            StepStats {
                attempts: 3,
                healed: 2
            }
        );
        assert_eq!(
            s.step_stats("data", "disk.full", "cleanup").unwrap(),
            StepStats {
                attempts: 1,
                healed: 0
            }
        );
        let all = s.action_stats().unwrap();
        let a = all.iter().find(|a| a.key == "root").unwrap();
        assert_eq!(a.mttr_ms, Some(2000));
        // The heal that took 3 s relapsed: withdrawn, the attempt stays.
        s.withdraw_step_success("root", "disk.full", "cleanup", 3000)
            .unwrap();
        let all = s.action_stats().unwrap();
        let a = all.iter().find(|a| a.key == "root").unwrap();
        assert_eq!((a.attempts, a.healed, a.mttr_ms), (3, 1, Some(1000)));
        // Only that check's: the other disk's record is untouched.
        let d = all.iter().find(|a| a.key == "data").unwrap();
        assert_eq!((d.attempts, d.healed), (1, 0));

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

    #[test]
    fn stats_from_before_per_check_keys_are_kept_under_star_and_used_as_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mend.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for sql in &super::super::schema::MIGRATIONS[..5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
            conn.execute(
                "INSERT INTO action_stats (code, action, attempts, healed, heal_ms_sum)
                 VALUES ('disk.full', 'cleanup', 4, 3, 900)",
                [],
            )
            .unwrap();
        }
        let (s, _) = Store::open(&path, 0).unwrap();
        let all = s.action_stats().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].key.as_str(), all[0].attempts), ("*", 4));
        assert_eq!(
            s.step_stats("root", "disk.full", "cleanup").unwrap(),
            StepStats {
                attempts: 4,
                healed: 3
            }
        );
        s.record_step_result("root", "disk.full", "cleanup", false, 0)
            .unwrap();
        assert_eq!(
            s.step_stats("root", "disk.full", "cleanup").unwrap(),
            StepStats {
                attempts: 1,
                healed: 0
            }
        );
    }
}
