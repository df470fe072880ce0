//! The host's view of the plugin contract: plain Rust types for what
//! plugins describe, are asked and return, independent of any WIT
//! version's generated bindings. Each supported contract version
//! (`crate::wit::since_v*`) converts to and from these; nothing else in the
//! host sees generated types.

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
    /// Machine facts through `mend:plugin/system`.
    #[serde(default)]
    pub system: bool,
    /// Process names asked about through `system` (`*`: any granted).
    #[serde(default)]
    pub processes: Vec<String>,
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

/// How much an incident matters (a check's `severity`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    #[default]
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One detect or remedy call: which check, and the operator's config table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    pub check: String,
    /// The config table as a JSON object.
    pub config: String,
    /// The check's labels.
    pub labels: BTreeMap<String, String>,
}

/// Which part of a policy an action call serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "index")]
pub enum StepRef {
    /// Step `n` (from 0) of the ladder, as configured.
    Ladder(u32),
    /// The policy's `escalate` step.
    Escalation,
}

impl std::fmt::Display for StepRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepRef::Ladder(i) => write!(f, "step {}", i + 1),
            StepRef::Escalation => f.write_str("escalation"),
        }
    }
}

/// Why an action is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemedyContext {
    /// 0 outside the engine (`mend plugin call`).
    pub incident: u64,
    pub policy: String,
    pub step: String,
    pub step_ref: StepRef,
    /// 1 the first time this step runs for this incident.
    pub attempt: u32,
    pub severity: Severity,
    pub dry_run: bool,
    /// For the escalation: how the incident got here, oldest first.
    pub trail: Vec<String>,
    /// For the escalation: the incident in the dashboard.
    pub link: Option<String>,
}

impl RemedyContext {
    /// The context of a call made by hand, outside any incident.
    pub fn manual(step: &str, dry_run: bool) -> Self {
        RemedyContext {
            incident: 0,
            policy: String::new(),
            step: step.to_string(),
            step_ref: StepRef::Ladder(0),
            attempt: 1,
            severity: Severity::default(),
            dry_run,
            trail: Vec::new(),
            link: None,
        }
    }
}

/// What an action is asked to fix.
#[derive(Debug, Clone, PartialEq)]
pub struct RemedyRequest {
    pub invocation: Invocation,
    pub context: RemedyContext,
    pub findings: Vec<Finding>,
}

/// Why a plugin said its call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    BadConfig(String),
    Denied(String),
    Failed(String),
}

/// Why a host call (state, exec, sql, redis, fs) failed, as the plugin
/// sees it. Contract 0.2 passes the kind through; 0.1 flattens it into a
/// string (`denied: ...` for refusals).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Not granted, or not allowed (allowlist, dry run, read-only).
    #[error("denied: {0}")]
    Denied(String),
    /// The backend or the system said no.
    #[error("{0}")]
    Failed(String),
    #[error("timed out: {0}")]
    TimedOut(String),
    /// A host-side limit was reached.
    #[error("limit: {0}")]
    Limit(String),
}

impl HostError {
    pub fn denied(m: impl Into<String>) -> Self {
        HostError::Denied(m.into())
    }
    pub fn failed(m: impl Into<String>) -> Self {
        HostError::Failed(m.into())
    }
    pub fn limit(m: impl Into<String>) -> Self {
        HostError::Limit(m.into())
    }
    pub fn timed_out(m: impl Into<String>) -> Self {
        HostError::TimedOut(m.into())
    }
    /// Prefixes the message with where it happened, keeping the kind.
    pub fn context(self, at: &str) -> Self {
        let wrap = |m: String| format!("{at}: {m}");
        match self {
            HostError::Denied(m) => HostError::Denied(wrap(m)),
            HostError::Failed(m) => HostError::Failed(wrap(m)),
            HostError::TimedOut(m) => HostError::TimedOut(wrap(m)),
            HostError::Limit(m) => HostError::Limit(wrap(m)),
        }
    }
}
