//! An incident's timeline beside its attempts: what people and mend
//! decided about it (acknowledged, resolved, a retry after escalation and
//! why, a dependency hold, an operator's heal, an alert's resolution),
//! each with who and why. Attempts say what was *done*; events say why
//! the incident moved.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{IncidentState, Millis, Store};

/// What happened to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The ladder ran out, the check flapped, or `escalate_after` passed:
    /// a human was called (`detail.route`: which escalation, by severity).
    Escalated,
    /// A person took it (`mend incident ack`).
    Acknowledged,
    /// A person closed it (`mend incident resolve`).
    Resolved,
    /// After escalation the evidence changed, so the ladder runs again.
    Retry,
    /// An operator's heal (`detail.force`: past the attempt cap and
    /// cooldown).
    OperatorHeal,
    /// A dependency is failing: this check holds while the root is
    /// remediated (`detail.root_cause`).
    Held,
    /// The dependency is no longer failing: the hold ended.
    Released,
    /// Alertmanager said the alert behind this incident resolved.
    AlertResolved,
    /// A firing alert repeated after its incident closed: the target was
    /// checked again.
    AlertRepeat,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Escalated => "escalated",
            EventKind::Acknowledged => "acknowledged",
            EventKind::Resolved => "resolved",
            EventKind::Retry => "retry",
            EventKind::OperatorHeal => "operator-heal",
            EventKind::Held => "held",
            EventKind::Released => "released",
            EventKind::AlertResolved => "alert-resolved",
            EventKind::AlertRepeat => "alert-repeat",
        }
    }
    pub const ALL: &[EventKind] = &[
        EventKind::Escalated,
        EventKind::Acknowledged,
        EventKind::Resolved,
        EventKind::Retry,
        EventKind::OperatorHeal,
        EventKind::Held,
        EventKind::Released,
        EventKind::AlertResolved,
        EventKind::AlertRepeat,
    ];
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub incident_id: i64,
    pub at: Millis,
    pub kind: EventKind,
    /// Who: a person (`--by`), `mend`, or where a request came from.
    pub by: String,
    pub reason: String,
    pub detail: serde_json::Value,
}

/// Why an operator's change of an incident was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("no incident {0}")]
    NotFound(i64),
    #[error("incident {id} is {state}: {why}")]
    Conflict {
        id: i64,
        state: &'static str,
        why: &'static str,
    },
}

impl Store {
    /// Appends an event to incident `incident`'s timeline.
    pub fn add_event(
        &self,
        incident: i64,
        at: Millis,
        kind: EventKind,
        by: &str,
        reason: &str,
        detail: &serde_json::Value,
    ) -> anyhow::Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO incident_events (incident_id, at, kind, by_whom, reason, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                incident,
                at as i64,
                kind.as_str(),
                by,
                reason,
                detail.to_string()
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Incident `incident`'s timeline, oldest first.
    pub fn events(&self, incident: i64) -> anyhow::Result<Vec<Event>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, incident_id, at, kind, by_whom, reason, detail FROM incident_events
             WHERE incident_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([incident], |r| {
            let kind: String = r.get(3)?;
            let detail: String = r.get(6)?;
            Ok((
                kind,
                Event {
                    id: r.get(0)?,
                    incident_id: r.get(1)?,
                    at: r.get::<_, i64>(2)? as Millis,
                    kind: EventKind::Resolved,
                    by: r.get(4)?,
                    reason: r.get(5)?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                },
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, mut e) = row?;
            // A kind this version does not know (written by a newer one)
            // is skipped rather than shown as something else.
            let Some(k) = EventKind::parse(&kind) else {
                continue;
            };
            e.kind = k;
            out.push(e);
        }
        Ok(out)
    }

    /// Sets an incident's state while it is not closed; false if it was
    /// closed (or is not there).
    pub fn set_incident_state(&self, incident: i64, state: IncidentState) -> anyhow::Result<bool> {
        let n = self.conn().execute(
            "UPDATE incidents SET state = ?2 WHERE id = ?1 AND closed_at IS NULL",
            params![incident, state.as_str()],
        )?;
        Ok(n == 1)
    }

    /// After a walk that did not heal an incident already escalated: back
    /// to `escalated`, or `acknowledged` if a person took it, with `note`.
    pub fn back_to_escalated(&self, incident: i64, note: &str) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE incidents SET
                 state = CASE WHEN acked_at IS NULL THEN 'escalated' ELSE 'acknowledged' END,
                 note = ?2
             WHERE id = ?1 AND closed_at IS NULL",
            params![incident, note],
        )?;
        Ok(())
    }

    /// Records that `by` took an escalated incident.
    pub fn acknowledge_incident(
        &self,
        incident: i64,
        now: Millis,
        by: &str,
        reason: &str,
    ) -> anyhow::Result<Result<(), LifecycleError>> {
        let Some((state, closed)) = self.incident_phase(incident)? else {
            return Ok(Err(LifecycleError::NotFound(incident)));
        };
        if closed {
            return Ok(Err(LifecycleError::Conflict {
                id: incident,
                state: state.as_str(),
                why: "it is closed already",
            }));
        }
        if !matches!(
            state,
            IncidentState::Escalated | IncidentState::Remediating | IncidentState::Acknowledged
        ) {
            return Ok(Err(LifecycleError::Conflict {
                id: incident,
                state: state.as_str(),
                why: "only an escalated incident is acknowledged (mend is still working on it)",
            }));
        }
        {
            let conn = self.conn();
            conn.execute(
                "UPDATE incidents SET acked_at = COALESCE(acked_at, ?2), acked_by = ?3,
                     state = CASE WHEN state = 'escalated' THEN 'acknowledged' ELSE state END
                 WHERE id = ?1 AND closed_at IS NULL",
                params![incident, now as i64, by],
            )?;
        }
        self.add_event(
            incident,
            now,
            EventKind::Acknowledged,
            by,
            reason,
            &serde_json::json!({}),
        )?;
        Ok(Ok(()))
    }

    /// Closes an incident as `resolved` by a person.
    pub fn resolve_incident(
        &self,
        incident: i64,
        now: Millis,
        by: &str,
        reason: &str,
    ) -> anyhow::Result<Result<IncidentInfo, LifecycleError>> {
        let Some((state, closed)) = self.incident_phase(incident)? else {
            return Ok(Err(LifecycleError::NotFound(incident)));
        };
        if closed {
            return Ok(Err(LifecycleError::Conflict {
                id: incident,
                state: state.as_str(),
                why: "it is closed already",
            }));
        }
        let note = if reason.is_empty() {
            format!("resolved by {by}")
        } else {
            format!("resolved by {by}: {reason}")
        };
        self.close_incident(incident, IncidentState::Resolved, now, &note)?;
        self.add_event(
            incident,
            now,
            EventKind::Resolved,
            by,
            reason,
            &serde_json::json!({"was": state.as_str()}),
        )?;
        let info = self.conn().query_row(
            "SELECT policy, opened_at FROM incidents WHERE id = ?1",
            [incident],
            |r| {
                Ok(IncidentInfo {
                    policy: r.get(0)?,
                    opened_at: r.get::<_, i64>(1)? as Millis,
                })
            },
        )?;
        Ok(Ok(info))
    }

    /// An incident's state and whether it is closed.
    pub fn incident_phase(&self, incident: i64) -> anyhow::Result<Option<(IncidentState, bool)>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT state, closed_at IS NOT NULL FROM incidents WHERE id = ?1",
                [incident],
                |r| {
                    let s: String = r.get(0)?;
                    Ok((IncidentState::parse(&s), r.get::<_, bool>(1)?))
                },
            )
            .optional()?)
    }

    /// The newest open incident of check `check`.
    pub fn open_incident_for_check(&self, check: &str) -> anyhow::Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id FROM incidents WHERE check_name = ?1 AND closed_at IS NULL
                 ORDER BY id DESC LIMIT 1",
                [check],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// What the engine needs of an incident an operator closed.
#[derive(Debug, Clone)]
pub struct IncidentInfo {
    pub policy: String,
    pub opened_at: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Severity;
    use crate::store::NewIncident;
    use serde_json::json;

    #[test]
    fn escalated_acknowledged_resolved_with_who_and_why() {
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
                severity: Severity::Critical,
            })
            .unwrap();
        assert!(matches!(
            s.acknowledge_incident(id, 2, "ann", "").unwrap(),
            Err(LifecycleError::Conflict { .. })
        ));
        assert!(s.escalate_incident(id, 3, "ladder exhausted").unwrap());
        s.acknowledge_incident(id, 4, "ann", "looking")
            .unwrap()
            .unwrap();
        let inc = s.incident(id).unwrap().unwrap();
        assert_eq!(inc.state, IncidentState::Acknowledged);
        assert_eq!(inc.acked_by.as_deref(), Some("ann"));
        assert_eq!(inc.severity, Severity::Critical);
        // A retry that does not heal goes back to acknowledged, not
        // escalated: the person still has it.
        s.set_incident_state(id, IncidentState::Remediating)
            .unwrap();
        s.back_to_escalated(id, "retry exhausted").unwrap();
        assert_eq!(
            s.incident(id).unwrap().unwrap().state,
            IncidentState::Acknowledged
        );
        let info = s
            .resolve_incident(id, 5, "bob", "fixed the disk")
            .unwrap()
            .unwrap();
        assert_eq!(info.policy, "p");
        assert!(matches!(
            s.resolve_incident(id, 6, "bob", "").unwrap(),
            Err(LifecycleError::Conflict { .. })
        ));
        assert_eq!(
            s.resolve_incident(99, 6, "bob", "").unwrap().unwrap_err(),
            LifecycleError::NotFound(99)
        );
        let inc = s.incident(id).unwrap().unwrap();
        assert_eq!(inc.state, IncidentState::Resolved);
        assert_eq!(inc.closed_at, Some(5));
        assert_eq!(inc.note, "resolved by bob: fixed the disk");
        let kinds: Vec<_> = inc.events.iter().map(|e| (e.kind, e.by.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::Acknowledged, "ann"),
                (EventKind::Resolved, "bob")
            ]
        );
        assert_eq!(inc.events[1].reason, "fixed the disk");
    }

    #[test]
    fn a_version_4_store_migrates_without_losing_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mend.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for sql in &super::super::schema::MIGRATIONS[..4] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 4).unwrap();
            conn.execute(
                "INSERT INTO incidents (policy, check_name, opened_at, state, root_cause, diagnosis)
                 VALUES ('p', 'c', 1, 'escalated', 'c', '{}')",
                [],
            )
            .unwrap();
        }
        let (s, _) = Store::open(&path, 0).unwrap();
        let inc = s.incident(1).unwrap().unwrap();
        assert_eq!(inc.state, IncidentState::Escalated);
        assert_eq!(inc.severity, Severity::Warning);
        assert!(inc.events.is_empty());
    }
}
