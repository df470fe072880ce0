//! A loaded plugin: its compiled component, pre-linked (`InstancePre`) so
//! each call only instantiates, plus what its `describe()` said.
//!
//! Loading is where bad files are turned away with a clear reason: not wasm,
//! a core module instead of a component, a component of another world, a
//! contract version this host does not speak, or imports mend does not
//! provide.

use std::path::PathBuf;

use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre};

use super::bindings::v0_1;
use super::call::CallState;
use super::error::PluginError;
use crate::contract::{Manifest, Role};

/// Largest plugin file mend will read.
pub const MAX_WASM_BYTES: u64 = 64 << 20;

/// A plugin ready to be called. Cheap to share behind an `Arc`.
pub struct Plugin {
    pub(crate) manifest: Manifest,
    pub(crate) sha256: String,
    pub(crate) source: Option<PathBuf>,
    pub(crate) wit_version: String,
    pub(crate) from_cache: bool,
    pub(crate) pre: InstancePre<CallState>,
    pub(crate) exports: Exports,
}

/// Where each exported interface sits in the component.
pub(crate) struct Exports {
    pub(crate) meta: v0_1::meta::GuestIndices,
    pub(crate) detection: Option<v0_1::detection::GuestIndices>,
    pub(crate) remediation: Option<v0_1::remediation::GuestIndices>,
}

impl Plugin {
    /// The name from the plugin's manifest; checks refer to it.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// sha256 of the `.wasm`, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// The file it was loaded from, if any.
    pub fn source(&self) -> Option<&std::path::Path> {
        self.source.as_deref()
    }
    /// The `mend:plugin` version it was built against.
    pub fn wit_version(&self) -> &str {
        &self.wit_version
    }
    /// Whether its compiled code came from the compile cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }
    pub fn is_detector(&self) -> bool {
        self.manifest.has_role(Role::Detector) && self.exports.detection.is_some()
    }
    pub fn is_action(&self) -> bool {
        self.manifest.has_role(Role::Action) && self.exports.remediation.is_some()
    }
}

/// Rejects anything that is not a component before compiling it.
pub(crate) fn sniff(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly file".into());
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(
            "a core WebAssembly module, not a component: build it for the wasm32-wasip2 target"
                .into(),
        ),
        _ => Err("an unknown WebAssembly encoding".into()),
    }
}

/// The `mend:plugin` version a component was built against, from the name
/// of its `meta` export, e.g. `mend:plugin/meta@0.1.0`.
pub(crate) fn contract_version(
    name: &str,
    engine: &Engine,
    component: &Component,
) -> Result<String, PluginError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let Some(meta) = exports.iter().find(|n| n.starts_with("mend:plugin/meta")) else {
        return Err(PluginError::InvalidComponent {
            plugin: name.into(),
            reason: format!(
                "not a mend plugin: it does not export mend:plugin/meta (it exports: {})",
                if exports.is_empty() {
                    "nothing".into()
                } else {
                    exports.join(", ")
                }
            ),
        });
    };
    let version = meta
        .split_once('@')
        .map(|(_, v)| v)
        .unwrap_or("")
        .to_string();
    if !supported(&version) {
        return Err(unsupported(name, &version));
    }
    // An import from another contract version is just as unsupported.
    for (import, _) in ty.imports(engine) {
        if let Some(rest) = import.strip_prefix("mend:plugin/") {
            let v = rest.split_once('@').map(|(_, v)| v).unwrap_or("");
            if !supported(v) {
                return Err(unsupported(name, v));
            }
        }
    }
    Ok(version)
}

fn supported(version: &str) -> bool {
    version
        .strip_prefix(v0_1::VERSION)
        .is_some_and(|rest| rest.starts_with('.'))
}

fn unsupported(name: &str, found: &str) -> PluginError {
    PluginError::UnsupportedVersion {
        plugin: name.into(),
        found: if found.is_empty() {
            "(unversioned)".into()
        } else {
            found.into()
        },
        supported: format!("{}.x", v0_1::VERSION),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_modules_from_components() {
        assert!(
            sniff(b"hello world")
                .unwrap_err()
                .contains("not a WebAssembly")
        );
        assert!(
            sniff(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(sniff(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn versions() {
        assert!(supported("0.1.0"));
        assert!(supported("0.1.7"));
        assert!(!supported("0.10.0"));
        assert!(!supported("0.2.0"));
        assert!(!supported(""));
    }
}
