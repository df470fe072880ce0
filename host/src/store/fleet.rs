//! Fleet mode's local records: budget slots, written before mend acts on
//! them (so a restart after `kill -9` finds and resumes or releases its
//! own), and the outbox of incident events waiting to be published.

use rusqlite::{OptionalExtension, params};

use super::{Millis, Store};

/// Turns the outbox triggers on or off.
const OUTBOX_FLAG: &str = "fleet.outbox";
/// This database's random id: event ids stay unique if it is recreated.
const INSTANCE_FLAG: &str = "fleet.instance";

/// A slot this agent took (or was taking), as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRecord {
    pub id: i64,
    pub budget: String,
    pub key: String,
    /// The value written to the store (it names this hold).
    pub value: String,
    /// None until the store confirmed the write.
    pub revision: Option<u64>,
    /// `acquiring`, `held` or `local` while open.
    pub state: String,
    pub policy: String,
    pub check: String,
    pub incident: i64,
    pub step: String,
    pub started_at: Millis,
    /// Wall-clock lease deadline (informative; the lease runs on the
    /// store's clock).
    pub deadline: Option<Millis>,
}

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: i64,
    pub kind: String,
    pub at: Millis,
    /// JSON text.
    pub body: String,
}

impl Store {
    /// While on, every incident and attempt write also queues an event.
    pub fn set_fleet_outbox(&self, on: bool) -> anyhow::Result<()> {
        self.set_flag(OUTBOX_FLAG, on.then_some("on"))
    }

    /// This database's fleet instance id, made on first use.
    pub fn fleet_instance(&self) -> anyhow::Result<String> {
        if let Some(id) = self.flag(INSTANCE_FLAG)? {
            return Ok(id);
        }
        let id = format!("{:016x}", fastrand::u64(..));
        let conn = self.conn();
        conn.execute(
            "INSERT INTO flags (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            params![INSTANCE_FLAG, id],
        )?;
        Ok(conn.query_row(
            "SELECT value FROM flags WHERE name = ?1",
            [INSTANCE_FLAG],
            |r| r.get(0),
        )?)
    }

    /// Records a slot about to be requested (state `acquiring`, or
    /// `local` for a local-only slot); its row id.
    pub fn fleet_slot_begin(&self, r: &SlotRecord) -> anyhow::Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO fleet_slots (budget, slot_key, value, revision, state, policy,
                 check_name, incident, step, started_at, deadline)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                r.budget,
                r.key,
                r.value,
                r.revision.map(|v| v as i64),
                r.state,
                r.policy,
                r.check,
                r.incident,
                r.step,
                r.started_at as i64,
                r.deadline.map(|v| v as i64),
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// The store granted the slot (or renewed it): key, revision, deadline.
    pub fn fleet_slot_held(
        &self,
        id: i64,
        key: &str,
        revision: u64,
        deadline: Millis,
    ) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE fleet_slots SET state = 'held', slot_key = ?2, revision = ?3, deadline = ?4
             WHERE id = ?1 AND ended_at IS NULL",
            params![id, key, revision as i64, deadline as i64],
        )?;
        Ok(())
    }

    /// The slot's hold is over: `state` says how (released, lost, ...).
    pub fn fleet_slot_end(
        &self,
        id: i64,
        state: &str,
        now: Millis,
        note: &str,
    ) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE fleet_slots SET state = ?2, ended_at = ?3, note = ?4
             WHERE id = ?1 AND ended_at IS NULL",
            params![id, state, now as i64, note],
        )?;
        Ok(())
    }

    /// Slots not ended: what a restart must resume or release.
    pub fn fleet_open_slots(&self) -> anyhow::Result<Vec<SlotRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, budget, slot_key, value, revision, state, policy, check_name,
                    incident, step, started_at, deadline
             FROM fleet_slots WHERE ended_at IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SlotRecord {
                id: r.get(0)?,
                budget: r.get(1)?,
                key: r.get(2)?,
                value: r.get(3)?,
                revision: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                state: r.get(5)?,
                policy: r.get(6)?,
                check: r.get(7)?,
                incident: r.get(8)?,
                step: r.get(9)?,
                started_at: r.get::<_, i64>(10)? as u64,
                deadline: r.get::<_, Option<i64>>(11)?.map(|v| v as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How slot `id` ended, if it did.
    pub fn fleet_slot_state(&self, id: i64) -> anyhow::Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT state FROM fleet_slots WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Queues an event of fleet mode's own (a denial, an alert claim).
    pub fn fleet_outbox_add(&self, kind: &str, at: Millis, body: &str) -> anyhow::Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO fleet_outbox (kind, at, body) VALUES (?1, ?2, ?3)",
            params![kind, at as i64, body],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// The oldest `limit` events not yet published.
    pub fn fleet_outbox_pending(&self, limit: usize) -> anyhow::Result<Vec<OutboxEvent>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, kind, at, body FROM fleet_outbox WHERE published_at IS NULL
             ORDER BY id LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(OutboxEvent {
                id: r.get(0)?,
                kind: r.get(1)?,
                at: r.get::<_, i64>(2)? as u64,
                body: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn fleet_outbox_pending_count(&self) -> anyhow::Result<usize> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM fleet_outbox WHERE published_at IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    pub fn fleet_outbox_published(&self, id: i64, now: Millis) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE fleet_outbox SET published_at = ?2 WHERE id = ?1",
            params![id, now as i64],
        )?;
        Ok(())
    }

    /// Forgets published events older than `before`.
    pub fn fleet_outbox_prune(&self, before: Millis) -> anyhow::Result<usize> {
        Ok(self.conn().execute(
            "DELETE FROM fleet_outbox WHERE published_at IS NOT NULL AND published_at < ?1",
            [before as i64],
        )?)
    }

    /// Sets an open incident's note (why it is waiting, e.g. a fleet
    /// budget denial); the close note replaces it.
    pub fn note_incident(&self, id: i64, note: &str) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE incidents SET note = ?2 WHERE id = ?1 AND closed_at IS NULL AND note <> ?2",
            params![id, note],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewIncident;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(&dir.path().join("mend.db"), 0).unwrap();
        (dir, s)
    }

    fn record(state: &str) -> SlotRecord {
        SlotRecord {
            id: 0,
            budget: "restart-db".into(),
            key: String::new(),
            value: "{}".into(),
            revision: None,
            state: state.into(),
            policy: "p".into(),
            check: "c".into(),
            incident: 1,
            step: "s".into(),
            started_at: 10,
            deadline: None,
        }
    }

    #[test]
    fn slots_are_recorded_before_and_found_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mend.db");
        let (s, _) = Store::open(&path, 0).unwrap();
        let a = s.fleet_slot_begin(&record("acquiring")).unwrap();
        let b = s.fleet_slot_begin(&record("acquiring")).unwrap();
        s.fleet_slot_held(a, "slot-1", 7, 99).unwrap();
        s.fleet_slot_end(b, "denied", 20, "full").unwrap();
        drop(s);
        let (s, _) = Store::open(&path, 0).unwrap();
        let open = s.fleet_open_slots().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].id, a);
        assert_eq!(open[0].state, "held");
        assert_eq!(open[0].key, "slot-1");
        assert_eq!(open[0].revision, Some(7));
        assert_eq!(open[0].deadline, Some(99));
        s.fleet_slot_end(a, "released", 30, "").unwrap();
        assert!(s.fleet_open_slots().unwrap().is_empty());
        assert_eq!(s.fleet_slot_state(a).unwrap().as_deref(), Some("released"));
    }

    #[test]
    fn the_outbox_fills_with_incident_writes_only_while_fleet_mode_is_on() {
        let (_d, s) = store();
        let new = NewIncident {
            policy: "p",
            check: "c",
            opened_at: 1,
            root_cause: "c",
            diagnosis: &serde_json::json!({}),
            dry_run: false,
            severity: crate::contract::Severity::Warning,
        };
        s.open_incident(&new).unwrap();
        assert_eq!(s.fleet_outbox_pending_count().unwrap(), 0);
        s.set_fleet_outbox(true).unwrap();
        let id = s.open_incident(&new).unwrap();
        let at = s
            .start_attempt(id, crate::contract::StepRef::Ladder(0), "fix", false, 2)
            .expect("attempt recorded");
        let _ = at;
        s.note_incident(id, "fleet budget b: 1 of 1 held by h")
            .unwrap();
        let pending = s.fleet_outbox_pending(10).unwrap();
        let kinds: Vec<&str> = pending.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["incident", "attempt", "incident"]);
        let last: serde_json::Value = serde_json::from_str(&pending[2].body).unwrap();
        assert_eq!(last["note"], "fleet budget b: 1 of 1 held by h");
        assert_eq!(last["id"], id);
        s.fleet_outbox_published(pending[0].id, 5).unwrap();
        assert_eq!(s.fleet_outbox_pending_count().unwrap(), 2);
        assert_eq!(s.fleet_outbox_prune(6).unwrap(), 1);
        s.set_fleet_outbox(false).unwrap();
        s.open_incident(&new).unwrap();
        assert_eq!(s.fleet_outbox_pending_count().unwrap(), 2);
    }

    #[test]
    fn the_instance_id_is_made_once() {
        let (_d, s) = store();
        let a = s.fleet_instance().unwrap();
        assert_eq!(a.len(), 16);
        assert_eq!(s.fleet_instance().unwrap(), a);
    }
}
