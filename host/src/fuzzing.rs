//! The entry points of the fuzz targets (`host/fuzz`, issue 16): the real
//! functions behind each boundary that are not public otherwise. Not an
//! API; nothing but the fuzz targets calls these.

use std::collections::BTreeMap;

use crate::config::api::AlertRule;
use crate::contract::{Finding, Manifest, Outcome, Role};
pub use crate::runtime::bounds::{MAX_ENTRIES, MAX_FINDINGS, MAX_NAME, MAX_STEPS, MAX_TEXT};

/// What loading a plugin does with its `describe()` result;
/// `exported(role)`: whether the component exports that role's interface.
pub fn accept_manifest(m: &mut Manifest, exported: impl Fn(Role) -> bool) -> Result<(), String> {
    crate::runtime::accept_manifest(m, exported)
}

/// What a detect does with the findings a plugin returned.
pub fn bound_findings(findings: &mut [Finding]) -> Result<(), String> {
    crate::runtime::bounds::findings(findings)
}

/// What a remedy does with the outcome a plugin returned.
pub fn bound_outcome(outcome: &mut Outcome) -> Result<(), String> {
    crate::runtime::bounds::outcome(outcome)
}

/// One alert of an Alertmanager webhook body, as the receiver reads it.
#[derive(Debug, Clone)]
pub struct ReadAlert {
    pub firing: bool,
    pub labels: BTreeMap<String, String>,
    pub starts_at: String,
    pub fingerprint: String,
    /// The occurrence's dedup key.
    pub key: String,
    /// Which of `rules` it matches.
    pub matched: Vec<usize>,
}

/// Reads a webhook body as `POST /api/v1/alertmanager` does.
pub fn read_alertmanager(body: &[u8], rules: &[AlertRule]) -> Result<Vec<ReadAlert>, String> {
    use crate::api::alertmanager::{AlertStatus, parse};
    let hook = parse(body)?;
    Ok(hook
        .alerts
        .iter()
        .map(|a| ReadAlert {
            firing: a.status == AlertStatus::Firing,
            labels: a.labels.clone(),
            starts_at: a.starts_at.clone(),
            fingerprint: a.fingerprint.clone(),
            key: a.key(),
            matched: (0..rules.len())
                .filter(|&i| rules[i].matches(&a.labels))
                .collect(),
        })
        .collect())
}
