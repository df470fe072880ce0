//! A transcript: one recorded plugin call in a JSON file, what
//! `mend plugin call --record` writes and `mend plugin test` replays.
//!
//! It names the plugin (name, version, sha256, contract), the call
//! (detect or remedy, check, config, labels, grants, and for a remedy its
//! findings and dry run), the granted directories as the plugin saw them,
//! the tape (every host call, each clock reading, the random bytes), and
//! what the call returned: its findings, its outcome, or its error.
//! Loading is bounded: a file over [`MAX_FILE`] bytes, or holding more
//! than the tape's limits, is refused with what is too big.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tree::{self, DirSnapshot};
use super::{MAX_CALLS, MAX_CLOCK_READINGS, Recording};
use crate::capabilities::system::SystemGrant;
use crate::contract::{Finding, Outcome};

/// The transcript format this host writes and reads.
pub const FORMAT: u32 = 1;
/// The largest transcript file read.
pub const MAX_FILE: u64 = 8 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginId {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// The contract version, e.g. `0.2`.
    pub contract: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallKind {
    Detect,
    Remedy,
}

/// The grants of the recorded call, but directories (in `dirs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapeGrants {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub connections: Vec<String>,
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default)]
    pub state: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemGrant>,
}

/// What the call returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Expected {
    Findings(Vec<Finding>),
    Outcome(Outcome),
    /// The error's message, as `mend plugin call` prints it.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transcript {
    pub format: u32,
    pub plugin: PluginId,
    pub call: CallKind,
    pub check: String,
    pub config: Value,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub grants: TapeGrants,
    /// For a remedy: the findings it was given, and whether it was a dry run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    #[serde(default)]
    pub dry_run: bool,
    /// The engine clock when the call began (milliseconds since the epoch).
    pub started_ms: u64,
    pub expected: Expected,
    /// What the recording could not keep (see `tree.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(default)]
    pub dirs: Vec<DirSnapshot>,
    pub tape: Recording,
}

impl Transcript {
    /// Reads and checks a transcript file.
    pub fn load(path: &Path) -> anyhow::Result<Transcript> {
        let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > MAX_FILE {
            bail!(
                "{}: {len} bytes; a transcript may hold at most {MAX_FILE}",
                path.display()
            );
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_FILE {
            bail!(
                "{}: more than {MAX_FILE} bytes; a transcript may hold no more",
                path.display()
            );
        }
        Transcript::parse(&bytes).with_context(|| format!("{}", path.display()))
    }

    /// Parses and checks a transcript (`:line:col` and the key on error).
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Transcript> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let t: Transcript = serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = e.inner();
            anyhow::anyhow!(
                "{}:{}: at `{}`: {}",
                inner.line(),
                inner.column(),
                e.path(),
                inner
            )
        })?;
        t.check()?;
        Ok(t)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.format != FORMAT {
            bail!(
                "format {}: this mend reads transcript format {FORMAT}",
                self.format
            );
        }
        if self.tape.calls.len() > MAX_CALLS {
            bail!(
                "tape.calls: {} calls, more than {MAX_CALLS}",
                self.tape.calls.len()
            );
        }
        for (what, n) in [
            ("tape.wall_clock_ns", self.tape.wall_clock_ns.len()),
            ("tape.monotonic_ns", self.tape.monotonic_ns.len()),
        ] {
            if n > MAX_CLOCK_READINGS {
                bail!("{what}: {n} readings, more than {MAX_CLOCK_READINGS}");
            }
        }
        let mut kept = 0u64;
        for d in &self.dirs {
            tree::check(d)?;
            kept += d
                .entries
                .iter()
                .filter_map(|e| e.content.as_ref())
                .map(|c| c.len() as u64)
                .sum::<u64>();
        }
        if kept > tree::MAX_KEPT_TOTAL {
            bail!(
                "dirs: {kept} bytes of contents, more than {}",
                tree::MAX_KEPT_TOTAL
            );
        }
        if !self.config.is_object() {
            bail!("config: must be an object");
        }
        Ok(())
    }

    /// The transcript as JSON, lists of numbers kept on one line.
    pub fn to_json(&self) -> String {
        let pretty = serde_json::to_string_pretty(self).unwrap_or_default();
        compact_number_lists(&pretty) + "\n"
    }
}

/// Collapses pretty-printed lists holding only numbers (bytes, clock
/// readings) onto one line; strings are left alone.
fn compact_number_lists(json: &str) -> String {
    let b = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut i = 0;
    let mut in_string = false;
    let mut start = 0;
    while i < b.len() {
        let c = b[i];
        if in_string {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if c == b'[' {
            let mut j = i + 1;
            while j < b.len() && b"0123456789-+.eE, \n".contains(&b[j]) {
                j += 1;
            }
            if j < b.len() && b[j] == b']' && b[i + 1..j].iter().any(|c| c.is_ascii_digit()) {
                out.push_str(&json[start..i]);
                out.push('[');
                let inner: String = json[i + 1..j]
                    .split(',')
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(",");
                out.push_str(&inner);
                out.push(']');
                i = j + 1;
                start = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&json[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_lists_go_on_one_line_and_strings_are_untouched() {
        let v = serde_json::json!({"a": [1, 2, 3], "s": "[1,\n 2]", "n": [[1], ["x"]]});
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        let c = compact_number_lists(&pretty);
        assert!(c.contains("\"a\": [1,2,3]"), "{c}");
        let back: Value = serde_json::from_str(&c).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn bad_transcripts_say_where() {
        let e = Transcript::parse(b"{\"format\": 1, \"plugin\": 3}").unwrap_err();
        assert!(format!("{e:#}").contains("plugin"), "{e:#}");
        let e = Transcript::parse(b"[").unwrap_err();
        assert!(format!("{e:#}").contains("1:1"), "{e:#}");
    }
}
