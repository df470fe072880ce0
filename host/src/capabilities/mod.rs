//! Host capabilities, one module per grant kind.
//!
//! Each module owns one kind of grant end to end: the TOML shape of the
//! grant, checking it once ([`Grants::resolve_with`]), matching a plugin's
//! declared needs against it ([`missing_grant`]), and the per-call state
//! and host functions, on mend's own version-neutral types. The versioned
//! WIT layer (`crate::wit`) links those functions for each contract
//! version. Nothing is granted by default: a plugin sees only what
//! [`Grants`] lists, and only if its declared
//! [`Needs`](crate::contract::Needs) fit within the grants.

pub mod clock;
pub mod exec;
pub mod fs;
pub mod http;
mod limited_stream;
pub mod log;
pub mod net;
pub mod output;
pub mod redis;
pub mod sql;
pub mod state;
pub mod system;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wasmtime_wasi::WasiCtxBuilder;

use crate::clock::Clock;
use crate::contract::Needs;

/// `[connections.NAME]`: a database or cache the operator lets plugins
/// reach by name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ConnectionDef {
    Postgres(sql::PostgresDef),
    Redis(redis::RedisDef),
}

/// A named connection, ready for calls (it keeps its live client).
#[derive(Debug, Clone)]
pub enum Connection {
    Postgres(Arc<sql::PgConnection>),
    Redis(Arc<redis::RedisConnection>),
}

impl Connection {
    pub fn name(&self) -> &str {
        match self {
            Connection::Postgres(c) => &c.name,
            Connection::Redis(c) => &c.name,
        }
    }
}

/// The named connections and commands of a config, checked once. Grants
/// refer to them by name; the live clients inside are shared by every
/// call that is granted them.
#[derive(Debug, Clone, Default)]
pub struct Backends {
    connections: BTreeMap<String, Connection>,
    commands: BTreeMap<String, Arc<exec::Command>>,
}

impl Backends {
    /// Checks every definition (no connection is opened here).
    pub fn new(
        connections: &BTreeMap<String, ConnectionDef>,
        commands: &BTreeMap<String, exec::CommandDef>,
    ) -> anyhow::Result<Backends> {
        let mut b = Backends::default();
        for (name, def) in connections {
            b.add_connection(name, def)?;
        }
        for (name, def) in commands {
            b.add_command(name, def)?;
        }
        Ok(b)
    }

    /// Checks one connection definition and adds it.
    pub fn add_connection(&mut self, name: &str, def: &ConnectionDef) -> anyhow::Result<()> {
        let c = match def {
            ConnectionDef::Postgres(d) => {
                Connection::Postgres(Arc::new(sql::PgConnection::new(name, d)?))
            }
            ConnectionDef::Redis(d) => {
                Connection::Redis(Arc::new(redis::RedisConnection::new(name, d)?))
            }
        };
        self.connections.insert(name.to_string(), c);
        Ok(())
    }

    /// The named PostgreSQL connections.
    pub fn postgres(&self) -> impl Iterator<Item = &Arc<sql::PgConnection>> {
        self.connections.values().filter_map(|c| match c {
            Connection::Postgres(p) => Some(p),
            Connection::Redis(_) => None,
        })
    }

    /// Checks one command definition and adds it.
    pub fn add_command(&mut self, name: &str, def: &exec::CommandDef) -> anyhow::Result<()> {
        self.commands
            .insert(name.to_string(), Arc::new(exec::Command::new(name, def)?));
        Ok(())
    }

    /// Backends from TOML holding `[connections.*]` and `[commands.*]`
    /// tables (for tests and tools; `mend.toml` goes through `config`).
    pub fn from_toml(text: &str) -> anyhow::Result<Backends> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Defs {
            #[serde(default)]
            connections: BTreeMap<String, ConnectionDef>,
            #[serde(default)]
            commands: BTreeMap<String, exec::CommandDef>,
        }
        let defs: Defs = toml::from_str(text)?;
        Backends::new(&defs.connections, &defs.commands)
    }
}

/// What the operator granted one plugin, for one check or ladder step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Directories, preopened read-only unless `write` is set.
    #[serde(default)]
    pub dirs: Vec<fs::DirGrant>,
    /// `host:port` addresses the plugin may connect to over TCP.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// URL prefixes (`scheme://host[:port][/path]`) the plugin may send
    /// HTTP requests to.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Named connections (defined under `[connections]`).
    #[serde(default)]
    pub connections: Vec<String>,
    /// Named commands (defined under `[commands]`).
    #[serde(default)]
    pub commands: Vec<String>,
    /// The plugin's persistent key/value state.
    #[serde(default)]
    pub state: bool,
    /// Machine facts, and the processes named (`true`, or
    /// `{ processes = ["nginx"] }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<system::SystemGrant>,
}

/// Grants checked once and ready to hand to calls.
#[derive(Debug, Clone, Default)]
pub struct ResolvedGrants {
    pub dirs: Vec<fs::ResolvedDir>,
    pub addresses: Vec<net::ResolvedAddress>,
    pub urls: Vec<http::UrlGrant>,
    pub connections: Vec<Connection>,
    pub commands: Vec<Arc<exec::Command>>,
    pub state: bool,
    pub system: Option<Arc<system::ResolvedSystem>>,
}

impl ResolvedGrants {
    /// The longest a single granted command or connection may take.
    pub fn longest_wait(&self) -> Option<std::time::Duration> {
        let commands = self.commands.iter().map(|c| c.def.timeout.0);
        let connections = self.connections.iter().map(|c| match c {
            Connection::Postgres(p) => p.timeout(),
            Connection::Redis(r) => r.timeout(),
        });
        commands.chain(connections).max()
    }

    pub(crate) fn postgres(&self) -> Vec<Arc<sql::PgConnection>> {
        self.connections
            .iter()
            .filter_map(|c| match c {
                Connection::Postgres(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }
    pub(crate) fn redis(&self) -> Vec<Arc<redis::RedisConnection>> {
        self.connections
            .iter()
            .filter_map(|c| match c {
                Connection::Redis(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Grants {
    /// No capabilities at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// [`Grants::resolve_with`] no named connections or commands.
    pub fn resolve(&self) -> anyhow::Result<ResolvedGrants> {
        self.resolve_with(&Backends::default())
    }

    /// Validates every grant: directories exist, guest paths are clean and
    /// distinct, addresses resolve, URLs parse, and named connections and
    /// commands are defined in `backends`.
    pub fn resolve_with(&self, backends: &Backends) -> anyhow::Result<ResolvedGrants> {
        let connections = defined(
            &self.connections,
            &backends.connections,
            "connection",
            "connections",
        )?;
        let commands = defined(&self.commands, &backends.commands, "command", "commands")?;
        Ok(ResolvedGrants {
            dirs: fs::resolve(&self.dirs)?,
            addresses: net::resolve(&self.addresses)?,
            urls: http::resolve(&self.urls)?,
            connections,
            commands,
            state: self.state,
            system: system::resolve(self.system.as_ref())?,
        })
    }
}

/// The definitions of the granted `names`; an undefined one is an error.
fn defined<T: Clone>(
    names: &[String],
    definitions: &BTreeMap<String, T>,
    what: &str,
    table: &str,
) -> anyhow::Result<Vec<T>> {
    names
        .iter()
        .map(|n| {
            definitions
                .get(n)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("{what} `{n}` is not defined under [{table}]"))
        })
        .collect()
}

/// Checks a plugin's declared needs against its grants. Returns the first
/// need that is not granted, described for the operator.
pub fn missing_grant(needs: &Needs, grants: &ResolvedGrants) -> Option<String> {
    if let Some(m) = fs::missing(&needs.dirs, &grants.dirs) {
        return Some(m);
    }
    if let Some(m) = net::missing(&needs.addresses, &grants.addresses) {
        return Some(m);
    }
    if let Some(m) = http::missing(&needs.urls, &grants.urls) {
        return Some(m);
    }
    let connections: Vec<&str> = grants.connections.iter().map(|c| c.name()).collect();
    for c in &needs.connections {
        if !named_granted(c, &connections) {
            return Some(format!("connection `{c}`"));
        }
    }
    let commands: Vec<&str> = grants.commands.iter().map(|c| c.name.as_str()).collect();
    for c in &needs.commands {
        if !named_granted(c, &commands) {
            return Some(format!("command `{c}`"));
        }
    }
    if needs.state && !grants.state {
        return Some("persistent state (`state = true`)".into());
    }
    system::missing(needs.system, &needs.processes, grants.system.as_deref())
}

fn named_granted(need: &str, granted: &[&str]) -> bool {
    if need == "*" {
        !granted.is_empty()
    } else {
        granted.contains(&need)
    }
}

/// What a call needs besides its grants to set up its capabilities.
pub struct CallSetup<'a> {
    pub plugin: Arc<str>,
    pub dry_run: bool,
    pub clock: Clock,
    /// The plugin state database, if the host has one.
    pub state: Option<&'a state::StateStore>,
    /// Told of each process the call's commands start.
    pub on_spawn: Option<exec::SpawnHook>,
    /// Records or replays the call's host calls (off in the engine).
    pub tape: crate::tape::Tape,
}

/// Per-call state of the host imports.
pub struct HostCaps {
    pub log: log::LogCap,
    pub clock: clock::ClockCap,
    pub state: state::StateCap,
    pub fs: fs::FsCap,
    pub exec: exec::ExecCap,
    pub sql: sql::SqlCap,
    pub redis: redis::RedisCap,
    pub http: http::HttpHooks,
    pub system: system::SystemCap,
    /// Every host call above goes through it (`wit/since_v0_2.rs`).
    pub tape: crate::tape::Tape,
}

impl HostCaps {
    /// Prepares every capability for one call from its grants (WASI's
    /// side is [`configure_wasi`]).
    pub fn prepare(grants: &ResolvedGrants, call: CallSetup<'_>) -> HostCaps {
        let CallSetup {
            plugin,
            dry_run,
            clock,
            state,
            on_spawn,
            tape,
        } = call;
        HostCaps {
            log: log::LogCap::new(plugin.clone()),
            clock: clock::ClockCap { clock },
            state: state::StateCap::new(
                plugin.clone(),
                state.filter(|_| grants.state).cloned(),
                dry_run,
            ),
            fs: fs::FsCap {
                dirs: grants.dirs.clone(),
            },
            exec: exec::ExecCap {
                plugin: plugin.clone(),
                commands: grants.commands.clone(),
                dry_run,
                on_spawn,
            },
            sql: sql::SqlCap {
                connections: grants.postgres(),
                dry_run,
            },
            redis: redis::RedisCap {
                connections: grants.redis(),
                dry_run,
            },
            http: http::HttpHooks {
                plugin,
                grants: grants.urls.clone(),
                dry_run,
                tape: tape.clone(),
            },
            system: system::SystemCap {
                grant: grants.system.clone(),
            },
            tape,
        }
    }
}

/// The WASI side of a call's grants: their directories preopened
/// (read-only in a dry run) and sockets to their addresses only. On a tape,
/// WASI's clocks and randomness are recorded or replayed, and a replay
/// opens no socket. Run on the guest's first WASI import.
pub fn configure_wasi(
    dirs: &[fs::ResolvedDir],
    addresses: &[net::ResolvedAddress],
    dry_run: bool,
    clock: crate::clock::Clock,
    tape: &crate::tape::Tape,
    wasi: &mut WasiCtxBuilder,
) -> anyhow::Result<()> {
    fs::preopen(wasi, dirs, dry_run)?;
    if !tape.is_replay() {
        net::configure(wasi, addresses);
    }
    if tape.is_on() {
        // After the default wall clock: the tape's replaces it.
        wasi.wall_clock(tape.wall_clock(clock))
            .monotonic_clock(tape.monotonic_clock());
        if let Some(seed) = tape.random_seed() {
            let mut first = [0u8; 16];
            for (b, s) in first.iter_mut().zip(&seed) {
                *b = *s;
            }
            wasi.secure_random(wasmtime_wasi::random::Deterministic::new(seed.clone()))
                .insecure_random(wasmtime_wasi::random::Deterministic::new(seed))
                .insecure_random_seed(u128::from_le_bytes(first));
        }
    }
    Ok(())
}

/// Gives the linker access to [`HostCaps`] inside the store's data.
pub trait HasCaps: Send + 'static {
    fn caps(&mut self) -> &mut HostCaps;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::DirNeed;

    fn grants(dirs: &[(&str, bool)], state: bool) -> ResolvedGrants {
        ResolvedGrants {
            dirs: dirs
                .iter()
                .map(|(g, w)| fs::ResolvedDir {
                    host: std::env::temp_dir(),
                    guest: g.to_string(),
                    write: *w,
                })
                .collect(),
            commands: vec![Arc::new(
                exec::Command::new(
                    "restart-poller",
                    &exec::CommandDef {
                        argv: vec!["/bin/true".into()],
                        cwd: None,
                        env: Default::default(),
                        timeout: crate::values::Dur::from_secs(1),
                    },
                )
                .unwrap(),
            )],
            state,
            ..Default::default()
        }
    }

    #[test]
    fn needs_within_grants_pass() {
        let needs = Needs {
            dirs: vec![DirNeed {
                path: "*".into(),
                write: false,
            }],
            commands: vec!["restart-poller".into()],
            ..Default::default()
        };
        assert_eq!(
            missing_grant(&needs, &grants(&[("/data", false)], false)),
            None
        );
    }

    #[test]
    fn each_missing_grant_is_named() {
        let g = grants(&[("/data", false)], false);
        let rw = Needs {
            dirs: vec![DirNeed {
                path: "/data".into(),
                write: true,
            }],
            ..Default::default()
        };
        assert_eq!(
            missing_grant(&rw, &g).unwrap(),
            "directory `/data` (read-write)"
        );
        let cmd = Needs {
            commands: vec!["reboot".into()],
            ..Default::default()
        };
        assert_eq!(missing_grant(&cmd, &g).unwrap(), "command `reboot`");
        let st = Needs {
            state: true,
            ..Default::default()
        };
        assert!(missing_grant(&st, &g).unwrap().contains("state"));
        let any = Needs {
            connections: vec!["*".into()],
            ..Default::default()
        };
        assert_eq!(missing_grant(&any, &g).unwrap(), "connection `*`");
    }

    #[test]
    fn a_parent_directory_grant_covers_a_child_need() {
        let needs = Needs {
            dirs: vec![DirNeed {
                path: "/var/log/app".into(),
                write: false,
            }],
            ..Default::default()
        };
        assert_eq!(
            missing_grant(&needs, &grants(&[("/var/log", false)], false)),
            None
        );
        assert!(missing_grant(&needs, &grants(&[("/var/lo", false)], false)).is_some());
    }

    #[test]
    fn named_grants_must_be_defined() {
        let b = Backends::from_toml(
            r#"
[connections.db]
kind = "postgres"
url = "host=127.0.0.1 user=postgres"
[connections.cache]
kind = "redis"
url = "redis://127.0.0.1:6379/"
[commands.restart]
argv = ["/bin/true"]
"#,
        )
        .unwrap();
        let ok = Grants {
            connections: vec!["db".into(), "cache".into()],
            commands: vec!["restart".into()],
            ..Grants::none()
        }
        .resolve_with(&b)
        .unwrap();
        assert_eq!(ok.postgres().len(), 1);
        assert_eq!(ok.redis().len(), 1);
        let unknown = Grants {
            connections: vec!["nope".into()],
            ..Grants::none()
        };
        assert!(
            unknown
                .resolve_with(&b)
                .unwrap_err()
                .to_string()
                .contains("connection `nope` is not defined")
        );
        let cmd = Grants {
            commands: vec!["restart".into()],
            ..Grants::none()
        };
        assert!(cmd.resolve().is_err(), "no backends, no commands");
    }

    #[test]
    fn bad_definitions_are_refused_by_name() {
        for (toml, want) in [
            (
                "[connections.db]\nkind = \"postgres\"\nurl = \"host=x port=notaport\"",
                "connection `db`",
            ),
            (
                "[connections.c]\nkind = \"redis\"\nurl = \"http://x\"",
                "connection `c`",
            ),
            ("[commands.x]\nargv = []", "command `x`"),
        ] {
            let e = Backends::from_toml(toml).unwrap_err();
            assert!(format!("{e:#}").contains(want), "{toml}: {e:#}");
        }
        assert!(Backends::from_toml("[connections.m]\nkind = \"mysql\"\nurl = \"x\"").is_err());
        assert!(
            Backends::from_toml(
                "[connections.m]\nkind = \"redis\"\nurl = \"redis://x/\"\nextra = 1"
            )
            .is_err()
        );
    }
}
