//! Host capabilities, one module per grant kind.
//!
//! Each module owns one kind of grant end to end: it validates the
//! operator's grant once ([`Grants::resolve`]), prepares per-call state from
//! it, and links its WIT imports (or configures WASI). Nothing is granted by
//! default: a plugin sees only what [`Grants`] lists, and only if its
//! declared [`Needs`](crate::contract::Needs) fit within the grants.

pub mod clock;
pub mod fs;
pub mod log;
pub mod net;
pub mod state;

use serde::{Deserialize, Serialize};
use wasmtime::component::Linker;

use crate::contract::Needs;

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
    /// Named connections (defined under `[connections]`).
    #[serde(default)]
    pub connections: Vec<String>,
    /// Named commands (defined under `[commands]`).
    #[serde(default)]
    pub commands: Vec<String>,
    /// The plugin's persistent key/value state.
    #[serde(default)]
    pub state: bool,
}

/// Grants checked once and ready to hand to calls.
#[derive(Debug, Clone, Default)]
pub struct ResolvedGrants {
    pub dirs: Vec<fs::ResolvedDir>,
    pub addresses: Vec<net::ResolvedAddress>,
    pub connections: Vec<String>,
    pub commands: Vec<String>,
    pub state: bool,
}

impl Grants {
    /// No capabilities at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// Validates every grant: directories exist, guest paths are clean and
    /// distinct, addresses resolve.
    pub fn resolve(&self) -> anyhow::Result<ResolvedGrants> {
        Ok(ResolvedGrants {
            dirs: fs::resolve(&self.dirs)?,
            addresses: net::resolve(&self.addresses)?,
            connections: self.connections.clone(),
            commands: self.commands.clone(),
            state: self.state,
        })
    }
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
    for c in &needs.connections {
        if !named_granted(c, &grants.connections) {
            return Some(format!("connection `{c}`"));
        }
    }
    for c in &needs.commands {
        if !named_granted(c, &grants.commands) {
            return Some(format!("command `{c}`"));
        }
    }
    if needs.state && !grants.state {
        return Some("persistent state (`state = true`)".into());
    }
    None
}

fn named_granted(need: &str, granted: &[String]) -> bool {
    if need == "*" {
        !granted.is_empty()
    } else {
        granted.iter().any(|g| g == need)
    }
}

/// Per-call state of the host imports.
pub struct HostCaps {
    pub log: log::LogCap,
    pub clock: clock::ClockCap,
    pub state: state::StateCap,
    pub fs: fs::FsCap,
}

/// Gives the linker access to [`HostCaps`] inside the store's data.
pub trait HasCaps: Send + 'static {
    fn caps(&mut self) -> &mut HostCaps;
}

/// Links every mend host import (`mend:plugin/*`). WASI is linked by the
/// runtime; these are the imports mend adds on top.
pub fn add_to_linker<T: HasCaps>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    log::add_to_linker(linker)?;
    clock::add_to_linker(linker)?;
    state::add_to_linker(linker)?;
    fs::add_to_linker(linker)?;
    Ok(())
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
            commands: vec!["restart-poller".into()],
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
}
