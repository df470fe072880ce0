//! `mend:plugin/state`: persistent key/value state private to each plugin,
//! kept in SQLite in the host's state directory so it survives restarts.
//! Needs the `state` grant; bounded in key size, value size and key count.
//! In a dry-run call, writes go to an overlay that lives for the call: the
//! plugin reads its own writes, the store is never touched.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};

use crate::contract::HostError;

pub const MAX_KEY: usize = 256;
pub const MAX_VALUE: usize = 64 * 1024;
pub const MAX_KEYS_PER_PLUGIN: i64 = 1024;

/// The database behind every plugin's state.
#[derive(Clone)]
pub struct StateStore {
    conn: Arc<Mutex<Connection>>,
}

impl StateStore {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        crate::private_fs::file(path)?;
        let conn = Connection::open(path)
            .with_context(|| format!("opening plugin state {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS plugin_state (
                plugin TEXT NOT NULL,
                key    TEXT NOT NULL,
                value  BLOB NOT NULL,
                PRIMARY KEY (plugin, key)
            )",
        )?;
        Ok(StateStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let conn = self.conn.lock().unwrap();
        conn.query_row(
            "SELECT value FROM plugin_state WHERE plugin = ?1 AND key = ?2",
            params![plugin, key],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| e.to_string())
    }

    pub fn set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<(), String> {
        let conn = self.conn.lock().unwrap();
        write(&conn, plugin, key, value)
    }

    /// Sets `key` to `value` if it holds `expected` (`None`: absent), in
    /// one critical section: the check and the write hold the connection.
    pub fn compare_and_swap(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, String> {
        let conn = self.conn.lock().unwrap();
        let current: Option<Vec<u8>> = conn
            .query_row(
                "SELECT value FROM plugin_state WHERE plugin = ?1 AND key = ?2",
                params![plugin, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| e.to_string())?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        write(&conn, plugin, key, value).map(|()| true)
    }

    pub fn delete(&self, plugin: &str, key: &str) -> Result<(), String> {
        let conn = self.conn.lock().unwrap();
        conn.execute(
            "DELETE FROM plugin_state WHERE plugin = ?1 AND key = ?2",
            params![plugin, key],
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }
}

fn check_sizes(key: &str, value: &[u8]) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(format!("key must be 1..={MAX_KEY} bytes"));
    }
    if value.len() > MAX_VALUE {
        return Err(format!(
            "value of {} bytes exceeds {MAX_VALUE}",
            value.len()
        ));
    }
    Ok(())
}

/// Writes one key, within the size and count bounds.
fn write(conn: &Connection, plugin: &str, key: &str, value: &[u8]) -> Result<(), String> {
    check_sizes(key, value)?;
    let exists: bool = conn
        .query_row(
            "SELECT 1 FROM plugin_state WHERE plugin = ?1 AND key = ?2",
            params![plugin, key],
            |_| Ok(()),
        )
        .optional()
        .map_err(|e| e.to_string())?
        .is_some();
    if !exists {
        let count: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM plugin_state WHERE plugin = ?1",
                params![plugin],
                |r| r.get(0),
            )
            .map_err(|e| e.to_string())?;
        if count >= MAX_KEYS_PER_PLUGIN {
            return Err(format!("plugin already holds {MAX_KEYS_PER_PLUGIN} keys"));
        }
    }
    conn.execute(
        "INSERT INTO plugin_state (plugin, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
        params![plugin, key, value],
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Per-call state of `mend:plugin/state`: the store, if granted.
pub struct StateCap {
    pub(crate) plugin: Arc<str>,
    pub(crate) store: Option<StateStore>,
    /// Dry run: writes land here (`None` marks a deletion), never in the
    /// store.
    pub(crate) overlay: Option<BTreeMap<String, Option<Vec<u8>>>>,
}

impl StateCap {
    pub(crate) fn new(plugin: Arc<str>, store: Option<StateStore>, dry_run: bool) -> Self {
        StateCap {
            plugin,
            store,
            overlay: dry_run.then(BTreeMap::new),
        }
    }

    fn store(&self) -> Result<&StateStore, HostError> {
        self.store
            .as_ref()
            .ok_or_else(|| HostError::denied("persistent state is not granted to this plugin"))
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        let store = self.store()?;
        if let Some(v) = self.overlay.as_ref().and_then(|o| o.get(key)) {
            return Ok(v.clone());
        }
        store.get(&self.plugin, key).map_err(HostError::Failed)
    }

    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<(), HostError> {
        let store = self.store()?.clone();
        match &mut self.overlay {
            Some(o) => {
                check_sizes(key, value).map_err(HostError::Limit)?;
                o.insert(key.to_string(), Some(value.to_vec()));
                Ok(())
            }
            None => store.set(&self.plugin, key, value).map_err(limit_or_failed),
        }
    }

    pub fn delete(&mut self, key: &str) -> Result<(), HostError> {
        let store = self.store()?.clone();
        match &mut self.overlay {
            Some(o) => {
                o.insert(key.to_string(), None);
                Ok(())
            }
            None => store.delete(&self.plugin, key).map_err(HostError::Failed),
        }
    }

    pub fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, HostError> {
        if self.overlay.is_some() {
            if self.get(key)?.as_deref() != expected {
                return Ok(false);
            }
            self.set(key, value)?;
            return Ok(true);
        }
        self.store()?
            .compare_and_swap(&self.plugin, key, expected, value)
            .map_err(limit_or_failed)
    }
}

/// The store's size and count refusals are limits; the rest failures.
fn limit_or_failed(m: String) -> HostError {
    if m.starts_with("key must") || m.starts_with("value of") || m.contains("already holds") {
        HostError::Limit(m)
    } else {
        HostError::Failed(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_private_bounded_and_persistent() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.db");
        let s = StateStore::open(&path).unwrap();
        s.set("a", "k", b"1").unwrap();
        assert_eq!(s.get("a", "k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            s.get("b", "k").unwrap(),
            None,
            "plugins do not see each other's state"
        );
        assert!(s.set("a", "", b"x").is_err());
        assert!(s.set("a", "big", &vec![0; MAX_VALUE + 1]).is_err());
        drop(s);
        let s = StateStore::open(&path).unwrap();
        assert_eq!(
            s.get("a", "k").unwrap(),
            Some(b"1".to_vec()),
            "survives reopening"
        );
        s.delete("a", "k").unwrap();
        assert_eq!(s.get("a", "k").unwrap(), None);
    }

    #[test]
    fn compare_and_swap_writes_only_over_the_expected_value() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateStore::open(&tmp.path().join("state.db")).unwrap();
        assert!(s.compare_and_swap("a", "k", None, b"1").unwrap());
        assert!(
            !s.compare_and_swap("a", "k", None, b"2").unwrap(),
            "no longer absent"
        );
        assert!(!s.compare_and_swap("a", "k", Some(b"0"), b"2").unwrap());
        assert_eq!(s.get("a", "k").unwrap(), Some(b"1".to_vec()));
        assert!(s.compare_and_swap("a", "k", Some(b"1"), b"2").unwrap());
        assert_eq!(s.get("a", "k").unwrap(), Some(b"2".to_vec()));
        // Each plugin's keys are its own.
        assert!(s.compare_and_swap("b", "k", None, b"x").unwrap());
    }

    #[test]
    fn a_dry_run_writes_to_an_overlay_only() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateStore::open(&tmp.path().join("state.db")).unwrap();
        s.set("a", "k", b"real").unwrap();
        let mut cap = StateCap::new("a".into(), Some(s.clone()), true);
        cap.set("k", b"planned").unwrap();
        assert_eq!(cap.get("k").unwrap(), Some(b"planned".to_vec()));
        assert!(cap.compare_and_swap("k", Some(b"planned"), b"2").unwrap());
        cap.delete("k").unwrap();
        assert_eq!(cap.get("k").unwrap(), None);
        assert_eq!(
            s.get("a", "k").unwrap(),
            Some(b"real".to_vec()),
            "store untouched"
        );
        assert!(matches!(cap.set("", b"x"), Err(HostError::Limit(_))));
        let denied = StateCap::new("a".into(), None, true);
        assert!(matches!(denied.get("k"), Err(HostError::Denied(_))));
    }

    #[test]
    fn key_count_is_capped() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateStore::open(&tmp.path().join("state.db")).unwrap();
        for i in 0..MAX_KEYS_PER_PLUGIN {
            s.set("a", &format!("k{i}"), b"").unwrap();
        }
        assert!(s.set("a", "one-more", b"").is_err());
        s.set("a", "k0", b"overwrite is fine").unwrap();
    }
}
