//! The incident store: SQLite (WAL) in the state directory.
//!
//! Every fact is committed before mend acts on it: an incident is written
//! before its first action runs, and an attempt is written as `running`
//! before the action starts. So a crash or `kill -9` at any instant loses
//! nothing: on the next start, [`Store::open`] marks attempts left
//! `running` as `interrupted`, and the engine restores cooldowns, attempt
//! windows and breakers from what is here.
//!
//! The store knows nothing of the engine: it records and answers.

mod baselines;
mod events;
mod flags;
mod fleet;
mod history;
mod incidents;
mod schema;
mod stats;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use rusqlite::Connection;

pub use self::events::{Event, EventKind, IncidentInfo, LifecycleError};
pub use self::fleet::{OutboxEvent, SlotRecord};
pub use self::history::{CheckResult, WatchdogEvent};
pub use self::incidents::{Attempt, AttemptOutcome, Incident, IncidentState, NewIncident};
pub use self::stats::ActionStats;

pub use crate::values::Millis;

pub struct Store {
    conn: Mutex<Connection>,
    /// A second connection for check history: `synchronous = NORMAL`
    /// (durable across a crash or kill, not a power cut), so a burst of
    /// results does not cost an fsync each. Incidents use `conn` (FULL).
    history: Mutex<Connection>,
    path: PathBuf,
    /// The last write that failed (a full disk, an I/O error), until a
    /// write works again: `/healthz` reports it.
    fault: Mutex<Option<String>>,
}

/// What [`Store::open`] found left over from a previous run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Attempts that were running when mend stopped, now `interrupted`.
    pub interrupted_attempts: usize,
    /// Incidents still open.
    pub open_incidents: usize,
}

impl Store {
    /// Opens (creating if needed) the store at `path` and recovers from an
    /// unclean stop.
    pub fn open(path: &Path, now: Millis) -> anyhow::Result<(Store, Recovery)> {
        // The incident store is mend's alone: 0700 directory, 0600 files.
        crate::private_fs::file(path)?;
        let conn = Connection::open(path)
            .with_context(|| format!("opening incident store {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed incident survives power loss, not just a crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&conn).with_context(|| format!("migrating {}", path.display()))?;
        let history = Connection::open(path)?;
        history.pragma_update(None, "synchronous", "NORMAL")?;
        history.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Store {
            conn: Mutex::new(conn),
            history: Mutex::new(history),
            path: path.to_path_buf(),
            fault: Mutex::new(None),
        };
        let recovery = store.recover(now)?;
        Ok((store, recovery))
    }

    /// Opens an existing store read-only, without recovery: for looking
    /// at the store of a mend that may be running.
    pub fn open_read_only(path: &Path) -> anyhow::Result<Store> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening incident store {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let history =
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Ok(Store {
            conn: Mutex::new(conn),
            history: Mutex::new(history),
            path: path.to_path_buf(),
            fault: Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `e` as the store's fault if SQLite raised it (other errors
    /// are not the store's). Returns whether it did; logs the first.
    pub fn note_fault(&self, e: &anyhow::Error) -> bool {
        let Some(sqlite) = e.chain().find_map(|c| c.downcast_ref::<rusqlite::Error>()) else {
            return false;
        };
        let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        if fault.is_none() {
            tracing::error!(
                store = %self.path.display(),
                "the incident store cannot write: {sqlite}; what is committed stays, mend keeps running and retries"
            );
        }
        *fault = Some(format!("{}: {sqlite}", self.path.display()));
        true
    }

    /// The store's fault, while writes fail.
    pub fn fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// While a fault is recorded: tries a write that needs room (8 KiB
    /// written and removed in one commit); if it commits, the fault is
    /// over. Returns whether the store is writable.
    pub fn probe_fault(&self) -> bool {
        if self.fault().is_none() {
            return true;
        }
        let probe = || -> rusqlite::Result<()> {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO flags (name, value) VALUES ('store-probe', hex(zeroblob(4096)))
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [],
            )?;
            tx.execute("DELETE FROM flags WHERE name = 'store-probe'", [])?;
            tx.commit()
        };
        match probe() {
            Ok(()) => {
                *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::warn!(store = %self.path.display(), "the incident store writes again");
                true
            }
            Err(e) => {
                *self.fault.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("{}: {e}", self.path.display()));
                false
            }
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (every write is one transaction), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn history_conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recover(&self, now: Millis) -> anyhow::Result<Recovery> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let interrupted =
            incidents::interrupt(&tx, now, "mend stopped while this attempt was running")?;
        tx.commit()?;
        let open: i64 = conn.query_row(
            "SELECT COUNT(*) FROM incidents WHERE closed_at IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(Recovery {
            interrupted_attempts: interrupted,
            open_incidents: open as usize,
        })
    }
}
