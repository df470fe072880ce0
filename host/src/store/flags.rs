//! Operator flags that must outlive a restart (the pause), as name → JSON
//! text. The store does not interpret them.

use rusqlite::{OptionalExtension, params};

use super::Store;

impl Store {
    /// Sets (`Some`) or clears (`None`) a flag.
    pub fn set_flag(&self, name: &str, value: Option<&str>) -> anyhow::Result<()> {
        let conn = self.conn();
        match value {
            Some(v) => conn.execute(
                "INSERT INTO flags (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, v],
            )?,
            None => conn.execute("DELETE FROM flags WHERE name = ?1", [name])?,
        };
        Ok(())
    }

    pub fn flag(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM flags WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_persist_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mend.db");
        let (s, _) = Store::open(&path, 0).unwrap();
        assert_eq!(s.flag("pause").unwrap(), None);
        s.set_flag("pause", Some("{\"since\":1}")).unwrap();
        drop(s);
        let (s, _) = Store::open(&path, 0).unwrap();
        assert_eq!(s.flag("pause").unwrap().as_deref(), Some("{\"since\":1}"));
        s.set_flag("pause", None).unwrap();
        assert_eq!(s.flag("pause").unwrap(), None);
    }
}
