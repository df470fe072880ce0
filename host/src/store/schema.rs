//! Schema and migrations, by `PRAGMA user_version`.

use rusqlite::Connection;

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE incidents (
        id           INTEGER PRIMARY KEY,
        policy       TEXT NOT NULL,
        check_name   TEXT NOT NULL,
        opened_at    INTEGER NOT NULL,
        closed_at    INTEGER,
        state        TEXT NOT NULL,
        root_cause   TEXT NOT NULL,
        diagnosis    TEXT NOT NULL,
        dry_run      INTEGER NOT NULL DEFAULT 0,
        escalated_at INTEGER,
        note         TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX incidents_open ON incidents (policy) WHERE closed_at IS NULL;
    CREATE INDEX incidents_policy_closed ON incidents (policy, closed_at);
    CREATE TABLE attempts (
        id          INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        step        INTEGER NOT NULL,
        action      TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER,
        outcome     TEXT NOT NULL,
        dry_run     INTEGER NOT NULL DEFAULT 0,
        detail      TEXT NOT NULL DEFAULT '{}',
        duration_ms INTEGER,
        fuel_used   INTEGER
    );
    CREATE INDEX attempts_incident ON attempts (incident_id);
    CREATE INDEX attempts_started ON attempts (started_at);
    CREATE TABLE check_results (
        id         INTEGER PRIMARY KEY,
        check_name TEXT NOT NULL,
        at         INTEGER NOT NULL,
        health     TEXT NOT NULL,
        status     TEXT NOT NULL,
        findings   TEXT NOT NULL
    );
    CREATE INDEX check_results_check ON check_results (check_name, at);
    CREATE TABLE action_stats (
        code        TEXT NOT NULL,
        action      TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        healed      INTEGER NOT NULL DEFAULT 0,
        heal_ms_sum INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (code, action)
    );
    CREATE TABLE breakers (
        check_name TEXT NOT NULL,
        action     TEXT NOT NULL,
        state      TEXT NOT NULL,
        PRIMARY KEY (check_name, action)
    );
    CREATE TABLE watchdog (
        id         INTEGER PRIMARY KEY,
        check_name TEXT NOT NULL,
        at         INTEGER NOT NULL,
        late_ms    INTEGER NOT NULL
    );",
    // 2: operator flags (the pause), kept across restarts.
    "CREATE TABLE flags (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 3: the escalation step is marked as such, not by a step number of
    // u32::MAX.
    "ALTER TABLE attempts ADD COLUMN escalation INTEGER NOT NULL DEFAULT 0;
    UPDATE attempts SET escalation = 1, step = 0 WHERE step = 4294967295;",
    // 4: fleet mode (issue 12). Budget slots are recorded before acting,
    // so a restart resumes or releases its own; the outbox is filled by
    // triggers in the same transaction as each incident or attempt write,
    // and only while fleet mode sets the flag.
    "CREATE TABLE fleet_slots (
        id          INTEGER PRIMARY KEY,
        budget      TEXT NOT NULL,
        slot_key    TEXT NOT NULL DEFAULT '',
        value       TEXT NOT NULL,
        revision    INTEGER,
        state       TEXT NOT NULL,
        policy      TEXT NOT NULL,
        check_name  TEXT NOT NULL,
        incident    INTEGER NOT NULL,
        step        TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        deadline    INTEGER,
        ended_at    INTEGER,
        note        TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX fleet_slots_open ON fleet_slots (id) WHERE ended_at IS NULL;
    CREATE TABLE fleet_outbox (
        id           INTEGER PRIMARY KEY,
        kind         TEXT NOT NULL,
        at           INTEGER NOT NULL,
        body         TEXT NOT NULL,
        published_at INTEGER
    );
    CREATE INDEX fleet_outbox_pending ON fleet_outbox (id) WHERE published_at IS NULL;
    CREATE TRIGGER fleet_outbox_incident_insert AFTER INSERT ON incidents
    WHEN (SELECT value FROM flags WHERE name = 'fleet.outbox') = 'on'
    BEGIN
        INSERT INTO fleet_outbox (kind, at, body) VALUES ('incident', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), json_object(
            'id', NEW.id, 'policy', NEW.policy, 'check', NEW.check_name, 'state', NEW.state,
            'opened_at', NEW.opened_at, 'closed_at', NEW.closed_at,
            'escalated_at', NEW.escalated_at, 'root_cause', NEW.root_cause,
            'note', NEW.note, 'dry_run', NEW.dry_run));
    END;
    CREATE TRIGGER fleet_outbox_incident_update AFTER UPDATE ON incidents
    WHEN (SELECT value FROM flags WHERE name = 'fleet.outbox') = 'on'
    BEGIN
        INSERT INTO fleet_outbox (kind, at, body) VALUES ('incident', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), json_object(
            'id', NEW.id, 'policy', NEW.policy, 'check', NEW.check_name, 'state', NEW.state,
            'opened_at', NEW.opened_at, 'closed_at', NEW.closed_at,
            'escalated_at', NEW.escalated_at, 'root_cause', NEW.root_cause,
            'note', NEW.note, 'dry_run', NEW.dry_run));
    END;
    CREATE TRIGGER fleet_outbox_attempt_insert AFTER INSERT ON attempts
    WHEN (SELECT value FROM flags WHERE name = 'fleet.outbox') = 'on'
    BEGIN
        INSERT INTO fleet_outbox (kind, at, body) VALUES ('attempt', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), json_object(
            'id', NEW.id, 'incident', NEW.incident_id, 'step', NEW.step, 'escalation', NEW.escalation, 'action', NEW.action,
            'outcome', NEW.outcome, 'started_at', NEW.started_at,
            'finished_at', NEW.finished_at, 'duration_ms', NEW.duration_ms,
            'dry_run', NEW.dry_run));
    END;
    CREATE TRIGGER fleet_outbox_attempt_update AFTER UPDATE ON attempts
    WHEN (SELECT value FROM flags WHERE name = 'fleet.outbox') = 'on'
    BEGIN
        INSERT INTO fleet_outbox (kind, at, body) VALUES ('attempt', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), json_object(
            'id', NEW.id, 'incident', NEW.incident_id, 'step', NEW.step, 'escalation', NEW.escalation, 'action', NEW.action,
            'outcome', NEW.outcome, 'started_at', NEW.started_at,
            'finished_at', NEW.finished_at, 'duration_ms', NEW.duration_ms,
            'dry_run', NEW.dry_run));
    END;
",
    // 5: the incident lifecycle (issue 11): severity on every incident,
    // who acknowledged it, and its timeline of events (acknowledged,
    // resolved, a retry and why, a dependency hold, an operator's heal,
    // an alert's resolution). Old rows keep their state; their severity is
    // the default.
    "ALTER TABLE incidents ADD COLUMN severity TEXT NOT NULL DEFAULT 'warning';
    ALTER TABLE incidents ADD COLUMN acked_at INTEGER;
    ALTER TABLE incidents ADD COLUMN acked_by TEXT;
    CREATE TABLE incident_events (
        id          INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        at          INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        by_whom     TEXT NOT NULL DEFAULT '',
        reason      TEXT NOT NULL DEFAULT '',
        detail      TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX incident_events_incident ON incident_events (incident_id);",
    // 6: what mend learns is keyed by (check, code, step), or by a
    // `stats_key` checks of one kind share; a step's name no longer
    // counts across unrelated checks. Earlier rows are kept under the key
    // `*` (every check), which adaptive ordering falls back to.
    "CREATE TABLE action_stats_keyed (
        stats_key   TEXT NOT NULL,
        code        TEXT NOT NULL,
        action      TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        healed      INTEGER NOT NULL DEFAULT 0,
        heal_ms_sum INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (stats_key, code, action)
    );
    INSERT INTO action_stats_keyed (stats_key, code, action, attempts, healed, heal_ms_sum)
        SELECT '*', code, action, attempts, healed, heal_ms_sum FROM action_stats;
    DROP TABLE action_stats;
    ALTER TABLE action_stats_keyed RENAME TO action_stats;",
    // 7: anomaly baselines (issue 14), one per (policy, metric), written
    // every few minutes and when mend stops, so a restart does not warm
    // up again. `state` is `policy::baseline::Baseline` as JSON.
    "CREATE TABLE baselines (
        policy     TEXT NOT NULL,
        metric     TEXT NOT NULL,
        check_name TEXT NOT NULL,
        state      TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (policy, metric)
    );",
];

pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}
