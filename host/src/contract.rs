//! The host's view of the plugin contract: plain Rust types for what
//! plugins describe and return, independent of any WIT version's generated
//! bindings (each supported version converts into these).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Unknown,
}

impl Status {
    /// Orders statuses from good (0) to bad (3).
    pub fn severity(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Unknown => 1,
            Status::Warn => 2,
            Status::Fail => 3,
        }
    }
}

/// One observation made by a detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub check: String,
    pub code: String,
    pub status: Status,
    pub summary: String,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// What an action did, or in dry-run would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub changed: bool,
    pub steps: Vec<String>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Detector,
    Action,
}

/// A directory a plugin needs, by the path it sees (`*`: any granted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirNeed {
    pub path: String,
    pub write: bool,
}

/// The capabilities a plugin declares it needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needs {
    pub dirs: Vec<DirNeed>,
    pub addresses: Vec<String>,
    /// `scheme://host[:port][/path]` prefixes for outbound HTTP.
    #[serde(default)]
    pub urls: Vec<String>,
    pub connections: Vec<String>,
    pub commands: Vec<String>,
    pub state: bool,
}

/// A role a plugin plays and what it needs for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleNeeds {
    pub role: Role,
    pub needs: Needs,
}

/// What a plugin's `describe()` says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    pub roles: Vec<RoleNeeds>,
}

impl Manifest {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.iter().any(|r| r.role == role)
    }

    /// What the plugin needs to play `role` (None: it does not play it).
    pub fn needs(&self, role: Role) -> Option<&Needs> {
        self.roles.iter().find(|r| r.role == role).map(|r| &r.needs)
    }
}
