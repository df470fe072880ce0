//! The plugin contract at the boundary, one module per released version of
//! `mend:plugin` (after Zed's `wasm_host/wit/since_v*.rs`). Each module owns
//! its generated bindings and the conversions to mend's own types
//! ([`crate::contract`]); each links its host imports to the same
//! version-neutral capability functions, so an old plugin is served by
//! exactly the code that serves a new one. Nothing outside this module sees
//! a generated type.
//!
//! To add a version: freeze the released WIT under `wit/X.Y.Z/`, add
//! `since_vX_Y.rs` for the new one, point [`latest`] at it, and give the
//! previous module whatever conversions changed.

pub mod since_v0_1;
pub mod since_v0_2;

pub use since_v0_2 as latest;

use wasmtime::component::{Component, Instance, InstancePre, Linker};
use wasmtime::{Engine, Store};

use crate::capabilities::HasCaps;
use crate::contract::{
    Finding, GuestError, Invocation, Manifest, Needs, Outcome, RemedyRequest, Role,
};

/// A contract version this host speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V0_1,
    V0_2,
}

impl Version {
    /// Every version this host loads, oldest first.
    pub const ALL: [Version; 2] = [Version::V0_1, Version::V0_2];

    /// The `major.minor` it serves.
    pub fn series(self) -> &'static str {
        match self {
            Version::V0_1 => since_v0_1::VERSION,
            Version::V0_2 => since_v0_2::VERSION,
        }
    }

    /// The version a `mend:plugin` interface name carries, e.g.
    /// `mend:plugin/meta@0.1.0` (None: one this host does not speak).
    fn of(version: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| {
            version
                .strip_prefix(v.series())
                .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// What to tell the author of a plugin built for another version.
    pub fn supported() -> String {
        Version::ALL
            .iter()
            .map(|v| format!("{}.x", v.series()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a component is not a plugin this host can load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionError {
    /// It does not export `mend:plugin/meta` at all (its exports listed).
    NotAPlugin(String),
    /// It speaks a version this host does not (as found in the component).
    Unsupported(String),
}

/// Which contract version a component speaks, from its `meta` export and
/// its `mend:plugin` imports (which must all be of the same version).
pub(crate) fn version(
    engine: &Engine,
    component: &Component,
) -> Result<(Version, String), VersionError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let Some(meta) = exports.iter().find(|n| n.starts_with("mend:plugin/meta")) else {
        return Err(VersionError::NotAPlugin(if exports.is_empty() {
            "nothing".into()
        } else {
            exports.join(", ")
        }));
    };
    let found = meta
        .split_once('@')
        .map(|(_, v)| v)
        .unwrap_or("")
        .to_string();
    let version = Version::of(&found).ok_or_else(|| VersionError::Unsupported(found.clone()))?;
    for (import, _) in ty.imports(engine) {
        if let Some(rest) = import.strip_prefix("mend:plugin/") {
            let v = rest.split_once('@').map(|(_, v)| v).unwrap_or("");
            if Version::of(v) != Some(version) {
                return Err(VersionError::Unsupported(v.to_string()));
            }
        }
    }
    Ok((version, found))
}

/// Links every version's host imports.
pub(crate) fn add_to_linker<T: HasCaps>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    since_v0_1::add_to_linker(linker)?;
    since_v0_2::add_to_linker(linker)?;
    Ok(())
}

/// A plugin's exports, in its version's bindings.
#[derive(Clone)]
pub(crate) enum Exports {
    V0_1(since_v0_1::Exports),
    V0_2(since_v0_2::Exports),
}

impl Exports {
    pub(crate) fn new<T>(version: Version, pre: &InstancePre<T>) -> wasmtime::Result<Exports> {
        Ok(match version {
            Version::V0_1 => Exports::V0_1(since_v0_1::Exports::new(pre)?),
            Version::V0_2 => Exports::V0_2(since_v0_2::Exports::new(pre)?),
        })
    }

    pub(crate) fn has(&self, role: Role) -> bool {
        match (self, role) {
            (Exports::V0_1(e), Role::Detector) => e.has_detection(),
            (Exports::V0_1(e), Role::Action) => e.has_remediation(),
            (Exports::V0_2(e), Role::Detector) => e.has_detection(),
            (Exports::V0_2(e), Role::Action) => e.has_remediation(),
        }
    }
}

/// Which export to call, in mend's own terms.
pub(crate) enum Call {
    Describe,
    Validate(Role, String),
    Detect(Invocation),
    Remedy(RemedyRequest),
}

/// What the export returned, in mend's own terms.
pub(crate) enum Returned {
    Manifest(Manifest),
    /// None: the plugin's contract cannot validate a config.
    Validated(Option<Result<Needs, GuestError>>),
    Findings(Result<Vec<Finding>, GuestError>),
    Outcome(Result<Outcome, GuestError>),
}

/// Makes one call through the plugin's version of the contract.
pub(crate) async fn call<T: Send>(
    store: &mut Store<T>,
    instance: &Instance,
    exports: &Exports,
    call: Call,
) -> wasmtime::Result<Returned> {
    match exports {
        Exports::V0_1(e) => since_v0_1::call(store, instance, e, call).await,
        Exports::V0_2(e) => since_v0_2::call(store, instance, e, call).await,
    }
}

#[cfg(test)]
mod tests {
    use super::Version;

    #[test]
    fn versions_are_matched_by_series() {
        assert_eq!(Version::of("0.1.0"), Some(Version::V0_1));
        assert_eq!(Version::of("0.1.7"), Some(Version::V0_1));
        assert_eq!(Version::of("0.2.0"), Some(Version::V0_2));
        assert_eq!(Version::of("0.10.0"), None);
        assert_eq!(Version::of("0.3.0"), None);
        assert_eq!(Version::of(""), None);
        assert_eq!(Version::supported(), "0.1.x, 0.2.x");
    }
}
