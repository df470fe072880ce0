//! A loaded plugin: its compiled component, pre-linked (`InstancePre`) so
//! each call only instantiates, plus what its `describe()` said.
//!
//! Loading is where bad files are turned away with a clear reason: not wasm,
//! a core module instead of a component, a component of another world, a
//! contract version this host does not speak, imports mend does not
//! provide, or a name that is not an identifier.

use std::path::PathBuf;

use wasmtime::component::InstancePre;

use super::call::CallState;
use crate::contract::{Manifest, Role};
use crate::wit::{Exports, Version};

/// A plugin ready to be called. Cheap to share behind an `Arc`.
pub struct Plugin {
    pub(crate) manifest: Manifest,
    pub(crate) sha256: String,
    pub(crate) source: Option<PathBuf>,
    pub(crate) version: Version,
    /// The version as the component spells it, e.g. `0.2.0`.
    pub(crate) wit_version: String,
    pub(crate) from_cache: bool,
    /// Pre-linked without `wasi:http` (its imports trap): for calls not
    /// granted any URL.
    pub(crate) pre: InstancePre<CallState>,
    /// Pre-linked with `wasi:http`, if the component imports it.
    pub(crate) pre_http: Option<InstancePre<CallState>>,
    pub(crate) exports: Exports,
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
    /// The `mend:plugin` version it was built against, e.g. `0.2.0`.
    pub fn wit_version(&self) -> &str {
        &self.wit_version
    }
    pub fn contract(&self) -> Version {
        self.version
    }
    /// Whether its compiled code came from the compile cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }
    /// Whether it plays `role` (and exports what that takes).
    pub fn plays(&self, role: Role) -> bool {
        self.manifest.has_role(role) && self.exports.has(role)
    }
    pub fn is_detector(&self) -> bool {
        self.plays(Role::Detector)
    }
    pub fn is_action(&self) -> bool {
        self.plays(Role::Action)
    }
    /// Whether it imports `wasi:http` (and so can be granted URLs).
    pub fn uses_http(&self) -> bool {
        self.pre_http.is_some()
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

/// A plugin's name is an identifier: it names state, metrics, logs and
/// files, so `../../x`, newlines or escapes have no place in it.
pub fn valid_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(format!(
            "the name {:?} is not a plugin name: use 1 to 64 of a-z, 0-9, `.`, `_` and `-`, starting with a letter or digit",
            crate::text::truncate(name, 80)
        ))
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
    fn names_are_identifiers() {
        for ok in ["stale-file", "pg_reconnect", "a", "x.y-2", "0day"] {
            assert!(valid_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../../x",
            "Stale",
            "a b",
            "-x",
            ".x",
            "a\nINFO forged",
            "a\x1b[31m",
            &"x".repeat(65),
        ] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
    }
}
