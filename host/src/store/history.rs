//! Check results over time, and the watchdog's record of late checks.
//!
//! The engine records a result when a check's status or health changes
//! (plus its first result), which is what an operator reads back; old rows
//! are pruned by the retention period.

use rusqlite::params;
use serde::Serialize;

use super::{Millis, Store};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub at: Millis,
    pub health: String,
    pub status: String,
    pub findings: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchdogEvent {
    pub check: String,
    pub at: Millis,
    pub late_ms: u64,
}

/// Watchdog events kept (the newest).
pub const MAX_WATCHDOG_EVENTS: i64 = 10_000;

impl Store {
    pub fn record_result(&self, r: &CheckResult) -> anyhow::Result<()> {
        self.history_conn().execute(
            "INSERT INTO check_results (check_name, at, health, status, findings) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![r.check, r.at as i64, r.health, r.status, r.findings.to_string()],
        )?;
        Ok(())
    }

    /// The newest results of a check, newest first.
    pub fn history(&self, check: &str, limit: usize) -> anyhow::Result<Vec<CheckResult>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT check_name, at, health, status, findings FROM check_results
             WHERE check_name = ?1 ORDER BY at DESC, id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![check, limit as i64], |r| {
            let findings: String = r.get(4)?;
            Ok(CheckResult {
                check: r.get(0)?,
                at: r.get::<_, i64>(1)? as Millis,
                health: r.get(2)?,
                status: r.get(3)?,
                findings: serde_json::from_str(&findings).unwrap_or(serde_json::Value::Null),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes results older than `before`; returns how many.
    pub fn prune_history(&self, before: Millis) -> anyhow::Result<usize> {
        let conn = self.conn();
        let n = conn.execute("DELETE FROM check_results WHERE at < ?1", [before as i64])?;
        conn.execute("DELETE FROM watchdog WHERE at < ?1", [before as i64])?;
        Ok(n)
    }

    /// Records a late check. On the history connection (no fsync each:
    /// an overloaded machine makes many), and only the newest
    /// [`MAX_WATCHDOG_EVENTS`] are kept: `scripts/soak` on a starved
    /// machine made 153,039 in 10 minutes, 2.7 MB of store between the
    /// hourly prunes.
    pub fn record_watchdog(&self, e: &WatchdogEvent) -> anyhow::Result<()> {
        let conn = self.history_conn();
        let id = conn.query_row(
            "INSERT INTO watchdog (check_name, at, late_ms) VALUES (?1, ?2, ?3) RETURNING id",
            params![e.check, e.at as i64, e.late_ms as i64],
            |r| r.get::<_, i64>(0),
        )?;
        conn.execute(
            "DELETE FROM watchdog WHERE id <= ?1",
            [id - MAX_WATCHDOG_EVENTS],
        )?;
        Ok(())
    }

    pub fn watchdog_events(&self, limit: usize) -> anyhow::Result<Vec<WatchdogEvent>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT check_name, at, late_ms FROM watchdog ORDER BY id DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(WatchdogEvent {
                check: r.get(0)?,
                at: r.get::<_, i64>(1)? as Millis,
                late_ms: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_newest_first_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(&dir.path().join("mend.db"), 0).unwrap();
        for at in [10, 20, 30] {
            s.record_result(&CheckResult {
                check: "c".into(),
                at,
                health: "healthy".into(),
                status: "ok".into(),
                findings: serde_json::json!([]),
            })
            .unwrap();
        }
        let h = s.history("c", 2).unwrap();
        assert_eq!(h.iter().map(|r| r.at).collect::<Vec<_>>(), vec![30, 20]);
        assert_eq!(s.prune_history(25).unwrap(), 2);
        assert_eq!(s.history("c", 10).unwrap().len(), 1);
    }

    #[test]
    fn only_the_newest_watchdog_events_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("mend.db"), 0).unwrap();
        let n = MAX_WATCHDOG_EVENTS as u64 + 5;
        for at in 0..n {
            store
                .record_watchdog(&WatchdogEvent {
                    check: "c".into(),
                    at,
                    late_ms: 1,
                })
                .unwrap();
        }
        let kept = store.watchdog_events(usize::MAX >> 1).unwrap();
        assert_eq!(kept.len() as i64, MAX_WATCHDOG_EVENTS);
        assert_eq!(kept.first().map(|e| e.at), Some(n - 1), "the newest first");
        assert_eq!(kept.last().map(|e| e.at), Some(5), "the oldest 5 went");
    }
}
