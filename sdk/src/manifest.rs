//! What a plugin needs, declared in [`crate::Plugin::needs`].

use crate::bindings::mend::plugin::types as wit;

/// Read-only or read-write access to a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// The capabilities a plugin needs. Everything is denied unless declared
/// here *and* granted by the operator.
///
/// ```ignore
/// Needs::new().dir("*", Access::Read).state()
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    dirs: Vec<(String, Access)>,
    addresses: Vec<String>,
    urls: Vec<String>,
    connections: Vec<String>,
    commands: Vec<String>,
    state: bool,
    system: bool,
    processes: Vec<String>,
}

impl Needs {
    pub fn new() -> Self {
        Self::default()
    }
    /// A directory, by the path the plugin sees. `"*"` means "whichever
    /// directory the operator grants", for plugins configured with a path.
    pub fn dir(mut self, path: impl Into<String>, access: Access) -> Self {
        self.dirs.push((path.into(), access));
        self
    }
    /// A `host:port` the plugin connects to; `"*"` for "any granted".
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.addresses.push(address.into());
        self
    }
    /// A URL prefix (`scheme://host[:port][/path]`) the plugin sends HTTP
    /// requests to with [`crate::http`]; `"*"` for "any granted".
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }
    /// A named connection defined by the operator; `"*"` for "any granted".
    pub fn connection(mut self, name: impl Into<String>) -> Self {
        self.connections.push(name.into());
        self
    }
    /// A named command defined by the operator; `"*"` for "any granted".
    pub fn command(mut self, name: impl Into<String>) -> Self {
        self.commands.push(name.into());
        self
    }
    /// The persistent key/value state in [`crate::host::state`].
    pub fn state(mut self) -> Self {
        self.state = true;
        self
    }
    /// Machine facts through [`crate::host::system`].
    pub fn system(mut self) -> Self {
        self.system = true;
        self
    }
    /// A process (by name) asked about through
    /// [`crate::host::system::processes`]; `"*"` for "any granted".
    pub fn process(mut self, name: impl Into<String>) -> Self {
        self.system = true;
        self.processes.push(name.into());
        self
    }
}

impl From<Needs> for wit::Needs {
    fn from(n: Needs) -> Self {
        wit::Needs {
            dirs: n
                .dirs
                .into_iter()
                .map(|(path, access)| wit::DirNeed {
                    path,
                    write: access == Access::ReadWrite,
                })
                .collect(),
            addresses: n.addresses,
            urls: n.urls,
            connections: n.connections,
            commands: n.commands,
            state: n.state,
            system: n.system,
            processes: n.processes,
        }
    }
}
