//! Schema and migrations, by `PRAGMA user_version`.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
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
