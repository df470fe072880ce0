//! Test configs built as TOML values, not `format!` strings: a check, a
//! policy and its steps are tables, merged with `toml::toml! { ... }`
//! extras. Strings may hold `{ctl}`, `{plugins}` and `{state}`, which the
//! world replaces with its directories when it renders the file.

use std::path::Path;

use toml::{Table, Value};

/// Merging and setting keys on a table.
pub trait TableExt {
    /// `self` with every key of `extra` (nested tables merged).
    fn with(self, extra: Table) -> Table;
    fn set(self, key: &str, value: impl Into<Value>) -> Table;
}

impl TableExt for Table {
    fn with(mut self, extra: Table) -> Table {
        merge(&mut self, extra);
        self
    }
    fn set(mut self, key: &str, value: impl Into<Value>) -> Table {
        self.insert(key.to_string(), value.into());
        self
    }
}

fn merge(into: &mut Table, extra: Table) {
    for (k, v) in extra {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// A `mend.toml`.
#[derive(Debug, Clone, Default)]
pub struct Conf {
    root: Table,
}

impl Conf {
    /// `[engine]` on the world's plugins and state directories, a 10 s
    /// interval, and no API listener.
    pub fn new() -> Conf {
        Conf::default()
            .engine(toml::toml! {
                plugins_dir = "{plugins}"
                state_dir = "{state}"
                interval = "10s"
                max_concurrent = 4
            })
            .table("api", toml::toml! { listen = "off" })
    }

    /// Merges keys into `[engine]`.
    pub fn engine(self, t: Table) -> Conf {
        self.table("engine", t)
    }

    /// Merges keys into the table at a dotted path (`commands.restart`).
    pub fn table(mut self, path: &str, t: Table) -> Conf {
        let mut at = &mut self.root;
        for part in path.split('.') {
            at = at
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .expect("a table");
        }
        merge(at, t);
        self
    }

    pub fn check(self, check: Table) -> Conf {
        self.push("check", check)
    }

    pub fn policy(self, policy: Policy) -> Conf {
        self.push("policy", policy.0)
    }

    fn push(mut self, key: &str, t: Table) -> Conf {
        self.root
            .entry(key.to_string())
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .expect("an array of tables")
            .push(Value::Table(t));
        self
    }

    /// The file's text, with the placeholders filled in.
    pub fn render(&self, dirs: &[(&str, &Path)]) -> String {
        let mut text = toml::to_string(&self.root).expect("a config serializes");
        for (name, dir) in dirs {
            text = text.replace(&format!("{{{name}}}"), &dir.display().to_string());
        }
        text
    }
}

/// A `[[policy]]` and its steps.
#[derive(Debug, Clone)]
pub struct Policy(Table);

impl Policy {
    /// Verifies with one probe: the verification window and relapses have
    /// their own tests (`tests/verify.rs`); elsewhere one probe keeps a
    /// test's timing about what it tests. Override with `verify = {...}`.
    pub fn new(name: &str, check: &str) -> Policy {
        Policy(
            Table::new()
                .set("name", name)
                .set("check", check)
                .set("verify", Table::new().set("probes", 1)),
        )
    }

    pub fn with(self, extra: Table) -> Policy {
        Policy(self.0.with(extra))
    }

    pub fn step(mut self, step: Table) -> Policy {
        self.0
            .entry("step".to_string())
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .expect("steps")
            .push(Value::Table(step));
        self
    }

    pub fn escalate(self, step: Table) -> Policy {
        Policy(self.0.set("escalate", step))
    }
}

/// A check on `fixture-scripted`, which reports what `{ctl}/NAME` says
/// (`ok`, `warn`, `fail`...).
pub fn scripted(name: &str) -> Table {
    Table::new()
        .set("name", name)
        .set("plugin", "fixture-scripted")
        .set("jitter", "0s")
        .with(toml::toml! { grants = { dirs = [{ host = "{ctl}", guest = "/ctl" }] } })
        .with(Table::new().set("config", Table::new().set("file", format!("/ctl/{name}"))))
}

/// A ladder step: `fixture-fixer` writing `write` into `{ctl}/CHECK` and
/// logging each call to `{ctl}/actions.log`.
pub fn fixer(check: &str, name: &str, write: &str) -> Table {
    Table::new()
        .set("name", name)
        .set("action", "fixture-fixer")
        .set("settle", "5s")
        .with(toml::toml! { grants = { dirs = [{ host = "{ctl}", guest = "/ctl", mode = "rw" }] } })
        .set(
            "config",
            Table::new()
                .set("file", format!("/ctl/{check}"))
                .set("write", write)
                .set("log", "/ctl/actions.log"),
        )
}

/// An escalation step: `fixture-fixer` writing `{ctl}/escalated` and
/// logging to `{ctl}/escalations.log`.
pub fn escalation() -> Table {
    Table::new()
        .set("action", "fixture-fixer")
        .with(toml::toml! {
            grants = { dirs = [{ host = "{ctl}", guest = "/ctl", mode = "rw" }] }
            config = { file = "/ctl/escalated", write = "yes", log = "/ctl/escalations.log" }
        })
}
