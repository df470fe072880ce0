//! Incidents and the attempts made to heal them.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::{Event, Millis, Store};
use crate::contract::{Severity, StepRef};

/// Where an incident stands: open → remediating → (healed | escalated →
/// acknowledged → resolved | healed); also held (a dependency is the
/// root cause), recovered (it went away) and planned (dry run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentState {
    /// Opened; no step has started yet (or one is waiting: a pause, a
    /// fleet slot).
    Open,
    /// A step of the ladder is running (or verifying).
    Remediating,
    /// A dependency is failing: it holds while the root is remediated.
    Held,
    /// An action fixed it and verification confirmed.
    Healed,
    /// The ladder was exhausted (or the check flapped, or `escalate_after`
    /// passed): a human was called. mend keeps evaluating and may run the
    /// ladder again when the evidence changes.
    Escalated,
    /// A person took the escalated incident (`mend incident ack`).
    Acknowledged,
    /// A person closed it (`mend incident resolve`).
    Resolved,
    /// It went away on its own (or after escalation).
    Recovered,
    /// Dry-run: the plan was recorded, nothing was changed.
    Planned,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Remediating => "remediating",
            IncidentState::Held => "held",
            IncidentState::Healed => "healed",
            IncidentState::Escalated => "escalated",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
            IncidentState::Recovered => "recovered",
            IncidentState::Planned => "planned",
        }
    }
    pub(super) fn parse(s: &str) -> Self {
        match s {
            "remediating" => IncidentState::Remediating,
            "held" => IncidentState::Held,
            "healed" => IncidentState::Healed,
            "escalated" => IncidentState::Escalated,
            "acknowledged" => IncidentState::Acknowledged,
            "resolved" => IncidentState::Resolved,
            "recovered" => IncidentState::Recovered,
            "planned" => IncidentState::Planned,
            _ => IncidentState::Open,
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptOutcome {
    /// Recorded before the action starts; if mend dies now, it becomes
    /// `Interrupted`.
    Running,
    /// Verification showed the check healthy.
    Healed,
    /// Verification passed, then the check went bad again within the
    /// policy's `relapse_window`: not a success.
    Relapsed,
    /// The action ran but verification still failed.
    NotHealed,
    /// The action itself failed (plugin error).
    Failed,
    /// mend stopped while it ran.
    Interrupted,
    /// Dry-run: the plan was recorded.
    Planned,
    /// Not run: breaker open, attempt cap reached, or maintenance.
    Skipped,
    /// The escalation action.
    Escalation,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Healed => "healed",
            AttemptOutcome::Relapsed => "relapsed",
            AttemptOutcome::NotHealed => "not-healed",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Interrupted => "interrupted",
            AttemptOutcome::Planned => "planned",
            AttemptOutcome::Skipped => "skipped",
            AttemptOutcome::Escalation => "escalation",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "running" => AttemptOutcome::Running,
            "healed" => AttemptOutcome::Healed,
            "relapsed" => AttemptOutcome::Relapsed,
            "not-healed" => AttemptOutcome::NotHealed,
            "failed" => AttemptOutcome::Failed,
            "planned" => AttemptOutcome::Planned,
            "skipped" => AttemptOutcome::Skipped,
            "escalation" => AttemptOutcome::Escalation,
            _ => AttemptOutcome::Interrupted,
        }
    }
    /// Whether this attempt counts against the policy's attempt window.
    pub fn counts_as_attempt(self) -> bool {
        !matches!(
            self,
            AttemptOutcome::Skipped | AttemptOutcome::Escalation | AttemptOutcome::Planned
        )
    }
}

#[derive(Debug, Clone)]
pub struct NewIncident<'a> {
    pub policy: &'a str,
    pub check: &'a str,
    pub opened_at: Millis,
    pub root_cause: &'a str,
    pub diagnosis: &'a serde_json::Value,
    pub dry_run: bool,
    /// The check's `severity`.
    pub severity: Severity,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    pub id: i64,
    pub policy: String,
    pub check: String,
    pub opened_at: Millis,
    pub closed_at: Option<Millis>,
    pub state: IncidentState,
    pub root_cause: String,
    pub diagnosis: serde_json::Value,
    pub dry_run: bool,
    pub escalated_at: Option<Millis>,
    pub note: String,
    pub severity: Severity,
    /// When a person acknowledged it, and who.
    pub acked_at: Option<Millis>,
    pub acked_by: Option<String>,
    /// How often a heal of this incident relapsed (it was reopened).
    pub relapses: u32,
    pub attempts: Vec<Attempt>,
    /// Its timeline: acknowledged, resolved, retries and why, holds...
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub id: i64,
    pub incident_id: i64,
    pub step: StepRef,
    /// The step's name (historically the column is `action`).
    pub action: String,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    pub outcome: AttemptOutcome,
    pub dry_run: bool,
    pub detail: serde_json::Value,
    pub duration_ms: Option<u64>,
    pub fuel_used: Option<u64>,
}

const INCIDENT_COLS: &str = "id, policy, check_name, opened_at, closed_at, state, root_cause, diagnosis, dry_run, escalated_at, note, severity, acked_at, acked_by";
const ATTEMPT_COLS: &str = "id, incident_id, step, action, started_at, finished_at, outcome, dry_run, detail, duration_ms, fuel_used, escalation";

/// A step as its two columns.
fn step_cols(step: StepRef) -> (u32, bool) {
    match step {
        StepRef::Ladder(i) => (i, false),
        StepRef::Escalation => (0, true),
    }
}

fn incident_row(r: &Row<'_>) -> rusqlite::Result<Incident> {
    let state: String = r.get(5)?;
    let diagnosis: String = r.get(7)?;
    Ok(Incident {
        id: r.get(0)?,
        policy: r.get(1)?,
        check: r.get(2)?,
        opened_at: r.get::<_, i64>(3)? as Millis,
        closed_at: r.get::<_, Option<i64>>(4)?.map(|v| v as Millis),
        state: IncidentState::parse(&state),
        root_cause: r.get(6)?,
        diagnosis: serde_json::from_str(&diagnosis).unwrap_or(serde_json::Value::Null),
        dry_run: r.get(8)?,
        escalated_at: r.get::<_, Option<i64>>(9)?.map(|v| v as Millis),
        note: r.get(10)?,
        severity: match r.get::<_, String>(11)?.as_str() {
            "critical" => Severity::Critical,
            "info" => Severity::Info,
            _ => Severity::Warning,
        },
        acked_at: r.get::<_, Option<i64>>(12)?.map(|v| v as Millis),
        acked_by: r.get(13)?,
        relapses: 0,
        attempts: Vec::new(),
        events: Vec::new(),
    })
}

fn attempt_row(r: &Row<'_>) -> rusqlite::Result<Attempt> {
    let outcome: String = r.get(6)?;
    let detail: String = r.get(8)?;
    Ok(Attempt {
        id: r.get(0)?,
        incident_id: r.get(1)?,
        step: if r.get::<_, bool>(11)? {
            StepRef::Escalation
        } else {
            StepRef::Ladder(r.get(2)?)
        },
        action: r.get(3)?,
        started_at: r.get::<_, i64>(4)? as Millis,
        finished_at: r.get::<_, Option<i64>>(5)?.map(|v| v as Millis),
        outcome: AttemptOutcome::parse(&outcome),
        dry_run: r.get(7)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
        duration_ms: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        fuel_used: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
    })
}

impl Store {
    pub fn open_incident(&self, new: &NewIncident<'_>) -> anyhow::Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO incidents (policy, check_name, opened_at, state, root_cause, diagnosis, dry_run, severity)
             VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6, ?7)",
            params![
                new.policy,
                new.check,
                new.opened_at as i64,
                new.root_cause,
                new.diagnosis.to_string(),
                new.dry_run,
                new.severity.as_str()
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Records an attempt as `running`, before the action starts.
    pub fn start_attempt(
        &self,
        incident: i64,
        step: StepRef,
        action: &str,
        dry_run: bool,
        now: Millis,
    ) -> anyhow::Result<i64> {
        let conn = self.conn();
        let (index, escalation) = step_cols(step);
        conn.execute(
            "INSERT INTO attempts (incident_id, step, action, started_at, outcome, dry_run, escalation)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
            params![incident, index, action, now as i64, dry_run, escalation],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Records an attempt that was never started (skipped, escalation).
    pub fn note_attempt(
        &self,
        incident: i64,
        step: StepRef,
        action: &str,
        outcome: AttemptOutcome,
        detail: &serde_json::Value,
        now: Millis,
    ) -> anyhow::Result<i64> {
        let conn = self.conn();
        let (index, escalation) = step_cols(step);
        conn.execute(
            "INSERT INTO attempts (incident_id, step, action, started_at, finished_at, outcome, detail, escalation)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7)",
            params![incident, index, action, now as i64, outcome.as_str(), detail.to_string(), escalation],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn finish_attempt(
        &self,
        attempt: i64,
        outcome: AttemptOutcome,
        detail: &serde_json::Value,
        duration_ms: u64,
        fuel_used: Option<u64>,
        now: Millis,
    ) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // The processes recorded while it ran stay with it (what it
        // started is part of what it did).
        let mut detail = detail.clone();
        if let Some(stored) = read_detail(&tx, attempt)?
            && let Some(processes) = stored.get(PROCESSES)
            && let Some(d) = detail.as_object_mut()
        {
            d.entry(PROCESSES).or_insert_with(|| processes.clone());
        }
        tx.execute(
            "UPDATE attempts SET outcome = ?2, detail = ?3, duration_ms = ?4, fuel_used = ?5, finished_at = ?6
             WHERE id = ?1",
            params![
                attempt,
                outcome.as_str(),
                detail.to_string(),
                duration_ms as i64,
                fuel_used.map(|f| f as i64),
                now as i64
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Adds a process the running attempt started to its detail
    /// (`processes`), durably, so a restart can wait for the orphan.
    pub fn record_process(&self, attempt: i64, process: &serde_json::Value) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let detail = edited_detail(&tx, attempt, |d| {
            let list = d
                .entry(PROCESSES)
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            match list.as_array_mut() {
                Some(list) => list.push(process.clone()),
                None => *list = serde_json::Value::Array(vec![process.clone()]),
            }
        })?;
        if let Some(detail) = detail {
            tx.execute(
                "UPDATE attempts SET detail = ?2 WHERE id = ?1",
                params![attempt, detail],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks the incident escalated (once: a second call changes nothing
    /// and returns false).
    pub fn escalate_incident(
        &self,
        incident: i64,
        now: Millis,
        note: &str,
    ) -> anyhow::Result<bool> {
        let n = self.conn().execute(
            "UPDATE incidents SET state = 'escalated', escalated_at = ?2, note = ?3
             WHERE id = ?1 AND escalated_at IS NULL",
            params![incident, now as i64, note],
        )?;
        Ok(n == 1)
    }

    pub fn close_incident(
        &self,
        incident: i64,
        state: IncidentState,
        now: Millis,
        note: &str,
    ) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE incidents SET state = ?2, closed_at = ?3,
                 note = CASE WHEN ?4 = '' THEN note ELSE ?4 END
             WHERE id = ?1 AND closed_at IS NULL",
            params![incident, state.as_str(), now as i64, note],
        )?;
        Ok(())
    }

    /// The open incident of a policy, with its attempts.
    pub fn open_incident_for(&self, policy: &str) -> anyhow::Result<Option<Incident>> {
        let id: Option<i64> = self
            .conn()
            .query_row(
                "SELECT id FROM incidents WHERE policy = ?1 AND closed_at IS NULL ORDER BY id DESC LIMIT 1",
                [policy],
                |r| r.get(0),
            )
            .optional()?;
        match id {
            Some(id) => self.incident(id),
            None => Ok(None),
        }
    }

    /// The policy's last closed incident (a dry run's plan aside), if it
    /// closed healed: the heal a relapse would reopen.
    pub fn last_heal(&self, policy: &str) -> anyhow::Result<Option<Incident>> {
        let last: Option<(i64, String)> = self
            .conn()
            .query_row(
                "SELECT id, state FROM incidents WHERE policy = ?1 AND closed_at IS NOT NULL
                 AND state != 'planned' ORDER BY closed_at DESC, id DESC LIMIT 1",
                [policy],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match last {
            Some((id, state)) if IncidentState::parse(&state) == IncidentState::Healed => {
                self.incident(id)
            }
            _ => Ok(None),
        }
    }

    /// Reopens a healed incident whose check relapsed: the healing attempt
    /// becomes `relapsed` (with when), the incident is open again, in one
    /// transaction. False if it was not closed healed.
    pub fn reopen_relapsed(
        &self,
        incident: i64,
        attempt: i64,
        now: Millis,
        note: &str,
    ) -> anyhow::Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE incidents SET state = 'open', closed_at = NULL, note = ?2
             WHERE id = ?1 AND state = 'healed' AND closed_at IS NOT NULL",
            params![incident, note],
        )?;
        if n == 1 {
            let detail = edited_detail(&tx, attempt, |d| {
                d.insert("relapsed_at".into(), now.into());
            })?;
            tx.execute(
                "UPDATE attempts SET outcome = 'relapsed', detail = ?3
                 WHERE id = ?1 AND incident_id = ?2 AND outcome = 'healed'",
                params![attempt, incident, detail],
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// When the policy last escalated, if ever.
    pub fn last_escalated(&self, policy: &str) -> anyhow::Result<Option<Millis>> {
        let at: Option<i64> = self.conn().query_row(
            "SELECT MAX(escalated_at) FROM incidents WHERE policy = ?1",
            [policy],
            |r| r.get(0),
        )?;
        Ok(at.map(|v| v as Millis))
    }

    /// When the policy's last incident closed, for its cooldown (a dry
    /// run's plan starts none).
    pub fn last_closed(&self, policy: &str) -> anyhow::Result<Option<Millis>> {
        let at: Option<i64> = self.conn().query_row(
            "SELECT MAX(closed_at) FROM incidents WHERE policy = ?1 AND state != 'planned'",
            [policy],
            |r| r.get(0),
        )?;
        Ok(at.map(|v| v as Millis))
    }

    /// Start times of the policy's counted attempts since `since`, for its
    /// attempt window.
    pub fn attempt_times(&self, policy: &str, since: Millis) -> anyhow::Result<Vec<Millis>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT a.started_at, a.outcome FROM attempts a JOIN incidents i ON i.id = a.incident_id
             WHERE i.policy = ?1 AND a.started_at > ?2 AND a.escalation = 0 ORDER BY a.started_at",
        )?;
        let rows = stmt.query_map(params![policy, since as i64], |r| {
            Ok((r.get::<_, i64>(0)? as Millis, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (at, outcome) = row?;
            if AttemptOutcome::parse(&outcome).counts_as_attempt() {
                out.push(at);
            }
        }
        Ok(out)
    }

    pub fn incident(&self, id: i64) -> anyhow::Result<Option<Incident>> {
        let conn = self.conn();
        let inc = conn
            .query_row(
                &format!("SELECT {INCIDENT_COLS} FROM incidents WHERE id = ?1"),
                [id],
                incident_row,
            )
            .optional()?;
        let Some(mut inc) = inc else { return Ok(None) };
        let mut stmt = conn.prepare(&format!(
            "SELECT {ATTEMPT_COLS} FROM attempts WHERE incident_id = ?1 ORDER BY id"
        ))?;
        inc.attempts = stmt
            .query_map([id], attempt_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        drop(conn);
        inc.relapses = inc
            .attempts
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::Relapsed)
            .count() as u32;
        inc.events = self.events(id)?;
        Ok(Some(inc))
    }

    /// How many incidents are open.
    pub fn open_incident_count(&self) -> anyhow::Result<usize> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM incidents WHERE closed_at IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    /// How many incidents are in each state (`IncidentState::as_str`).
    pub fn incident_counts(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT state, COUNT(*) FROM incidents GROUP BY state")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks attempts still `running` as `interrupted` (mend is exiting
    /// before they finished); returns how many.
    pub fn interrupt_running(&self, now: Millis) -> anyhow::Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = interrupt(&tx, now, "mend stopped before this attempt finished")?;
        tx.commit()?;
        Ok(n)
    }

    /// Incidents, newest first, with their attempts.
    pub fn incidents(&self, open_only: bool, limit: usize) -> anyhow::Result<Vec<Incident>> {
        let ids: Vec<i64> = {
            let conn = self.conn();
            let sql = if open_only {
                "SELECT id FROM incidents WHERE closed_at IS NULL ORDER BY id DESC LIMIT ?1"
            } else {
                "SELECT id FROM incidents ORDER BY id DESC LIMIT ?1"
            };
            let mut stmt = conn.prepare(sql)?;
            stmt.query_map([limit as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        self.incidents_by_id(ids)
    }

    /// The newest `limit` incidents of one check, open or closed.
    pub fn incidents_of(&self, check: &str, limit: usize) -> anyhow::Result<Vec<Incident>> {
        let ids: Vec<i64> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT id FROM incidents WHERE check_name = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            stmt.query_map(rusqlite::params![check, limit as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        self.incidents_by_id(ids)
    }

    fn incidents_by_id(&self, ids: Vec<i64>) -> anyhow::Result<Vec<Incident>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(i) = self.incident(id)? {
                out.push(i);
            }
        }
        Ok(out)
    }
}

/// The key of an attempt's detail listing the processes it started.
const PROCESSES: &str = "processes";

/// An attempt's detail as stored (None if there is no such attempt).
fn read_detail(
    conn: &rusqlite::Connection,
    attempt: i64,
) -> anyhow::Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let text: Option<String> = conn
        .query_row(
            "SELECT detail FROM attempts WHERE id = ?1",
            [attempt],
            |r| r.get(0),
        )
        .optional()?;
    let Some(text) = text else {
        return Ok(None);
    };
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(m)) => Ok(Some(m)),
        // Only mend writes details; keep what is there rather than fail.
        Ok(other) => Ok(Some(serde_json::Map::from_iter([("was".into(), other)]))),
        Err(e) => anyhow::bail!("attempt {attempt}: its stored detail is not JSON: {e}"),
    }
}

/// An attempt's detail changed in Rust, as text to store (None if there is
/// no such attempt). Not SQLite's JSON paths: its path lookup takes a key
/// with an escaped NUL (`"note\u0000x"`) for the key before it (`$.note`),
/// so a detail holding one would have that value replaced, or fail as
/// malformed JSON (found by the `store` fuzz target). Callers store the
/// text in the same UPDATE as the rest, so the fleet outbox's trigger
/// sees one change.
fn edited_detail(
    conn: &rusqlite::Connection,
    attempt: i64,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> anyhow::Result<Option<String>> {
    let Some(mut detail) = read_detail(conn, attempt)? else {
        return Ok(None);
    };
    edit(&mut detail);
    Ok(Some(serde_json::Value::Object(detail).to_string()))
}

/// Marks every `running` attempt `interrupted`, with a note why.
pub(super) fn interrupt(
    conn: &rusqlite::Connection,
    now: Millis,
    note: &str,
) -> anyhow::Result<usize> {
    let running: Vec<i64> = conn
        .prepare("SELECT id FROM attempts WHERE outcome = 'running'")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for &id in &running {
        let detail = edited_detail(conn, id, |d| {
            d.insert("note".into(), note.into());
        })?;
        conn.execute(
            "UPDATE attempts SET outcome = 'interrupted', finished_at = ?2, detail = ?3 WHERE id = ?1",
            params![id, now as i64, detail],
        )?;
    }
    Ok(running.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(&dir.path().join("mend.db"), 0).unwrap();
        (dir, s)
    }

    #[test]
    fn incident_lifecycle() {
        let (_d, s) = store();
        let diag = json!({"reason": "3 failures"});
        let id = s
            .open_incident(&NewIncident {
                policy: "p",
                check: "c",
                opened_at: 1000,
                root_cause: "c",
                diagnosis: &diag,
                dry_run: false,
                severity: Severity::Warning,
            })
            .unwrap();
        let a = s
            .start_attempt(id, StepRef::Ladder(0), "fix", false, 1100)
            .unwrap();
        s.finish_attempt(a, AttemptOutcome::NotHealed, &json!({}), 5, Some(42), 1200)
            .unwrap();
        assert!(s.escalate_incident(id, 1300, "ladder exhausted").unwrap());
        assert!(
            !s.escalate_incident(id, 1400, "again").unwrap(),
            "escalates once"
        );
        let inc = s.open_incident_for("p").unwrap().unwrap();
        assert_eq!(inc.state, IncidentState::Escalated);
        assert_eq!(inc.escalated_at, Some(1300));
        assert_eq!(inc.attempts.len(), 1);
        assert_eq!(inc.attempts[0].fuel_used, Some(42));
        assert_eq!(s.attempt_times("p", 0).unwrap(), vec![1100]);
        s.close_incident(id, IncidentState::Recovered, 2000, "")
            .unwrap();
        assert!(s.open_incident_for("p").unwrap().is_none());
        assert_eq!(s.last_closed("p").unwrap(), Some(2000));
        assert_eq!(s.incident(id).unwrap().unwrap().note, "ladder exhausted");
    }

    #[test]
    fn a_checks_incidents_are_its_own_newest_first_however_many_others_have() {
        let (_d, s) = store();
        let diag = json!({});
        let open = |check: &str, at: u64| {
            let id = s
                .open_incident(&NewIncident {
                    policy: check,
                    check,
                    opened_at: at,
                    root_cause: check,
                    diagnosis: &diag,
                    dry_run: false,
                    severity: Severity::Warning,
                })
                .unwrap();
            s.close_incident(id, IncidentState::Healed, at + 1, "")
                .unwrap();
            id
        };
        let mine: Vec<i64> = (0..3).map(|i| open("disk", i)).collect();
        for i in 0..250 {
            open("other", 100 + i);
        }
        let got: Vec<i64> = s
            .incidents_of("disk", 20)
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(got, mine.iter().rev().copied().collect::<Vec<_>>());
        assert_eq!(s.incidents_of("other", 20).unwrap().len(), 20);
        assert!(s.incidents_of("none", 20).unwrap().is_empty());
    }

    /// A store in a fresh directory holding one open incident.
    fn with_incident() -> (tempfile::TempDir, Store, i64) {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(&dir.path().join("mend.db"), 0).unwrap();
        let id = s
            .open_incident(&NewIncident {
                policy: "p",
                check: "c",
                opened_at: 1,
                root_cause: "c",
                diagnosis: &json!({}),
                dry_run: false,
                severity: Severity::Warning,
            })
            .unwrap();
        (dir, s, id)
    }

    #[test]
    fn reopening_marks_running_attempts_interrupted() {
        let (dir, s, id) = with_incident();
        let path = dir.path().join("mend.db");
        let a = s
            .start_attempt(id, StepRef::Ladder(0), "fix", false, 2)
            .unwrap();
        for pid in [41, 42] {
            s.record_process(a, &json!({"command": "restart", "pid": pid}))
                .unwrap();
        }
        drop(s);
        let (s, rec) = Store::open(&path, 99).unwrap();
        assert_eq!(
            rec,
            super::super::Recovery {
                interrupted_attempts: 1,
                open_incidents: 1
            }
        );
        let inc = s.incident(id).unwrap().unwrap();
        assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Interrupted);
        assert_eq!(inc.attempts[0].finished_at, Some(99));
        assert_eq!(
            inc.attempts[0].detail["processes"],
            json!([{"command": "restart", "pid": 41}, {"command": "restart", "pid": 42}]),
            "the orphans it started are kept, to wait for them"
        );
        assert!(inc.attempts[0].detail["note"].is_string());
    }

    /// A detail key with an escaped NUL after `processes` or `note` (SQLite's
    /// JSON paths took it for that key): the processes are still appended,
    /// the note still set, and every other key kept as it was.
    #[test]
    fn details_with_nul_escaped_keys_are_edited_exactly() {
        let (dir, s, id) = with_incident();
        let path = dir.path().join("mend.db");
        let odd = json!({"processes\u{0}&": "", "note\u{0}x": 7, "relapsed_at\u{0}": true});
        let a = s
            .start_attempt(id, StepRef::Ladder(0), "fix", false, 2)
            .unwrap();
        s.finish_attempt(a, AttemptOutcome::Running, &odd, 1, None, 3)
            .unwrap();
        for pid in [41, 42] {
            s.record_process(a, &json!({"pid": pid})).unwrap();
        }
        let mut want = odd.clone();
        want["processes"] = json!([{"pid": 41}, {"pid": 42}]);
        assert_eq!(s.incident(id).unwrap().unwrap().attempts[0].detail, want);

        // Finishing keeps the processes recorded while it ran.
        s.finish_attempt(a, AttemptOutcome::Healed, &odd, 1, None, 4)
            .unwrap();
        assert_eq!(s.incident(id).unwrap().unwrap().attempts[0].detail, want);
        s.close_incident(id, IncidentState::Healed, 5, "healed")
            .unwrap();
        assert!(s.reopen_relapsed(id, a, 6, "back").unwrap());
        want["relapsed_at"] = json!(6);
        assert_eq!(s.incident(id).unwrap().unwrap().attempts[0].detail, want);

        // A restart's note lands on `note`, beside the odd key.
        let b = s
            .start_attempt(id, StepRef::Ladder(1), "fix", false, 7)
            .unwrap();
        s.finish_attempt(b, AttemptOutcome::Running, &odd, 1, None, 8)
            .unwrap();
        drop(s);
        let (s, rec) = Store::open(&path, 9).unwrap();
        assert_eq!(rec.interrupted_attempts, 1);
        let detail = &s.incident(id).unwrap().unwrap().attempts[1].detail;
        assert_eq!(detail["note\u{0}x"], json!(7), "{detail}");
        assert!(
            detail["note"].as_str().unwrap().contains("mend stopped"),
            "{detail}"
        );
    }
}
