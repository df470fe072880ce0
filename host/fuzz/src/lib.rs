//! What the fuzz targets share: arbitrary values of the WIT records a
//! plugin hands the host, and the properties the host promises of what
//! it accepts (checked here on their own, not by calling the code under
//! test again).

use arbitrary::Arbitrary;
use mend::contract as c;
use mend::fuzzing::{MAX_ENTRIES, MAX_FINDINGS, MAX_NAME};
use mend::wit::since_v0_2::mend::plugin::types;

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Unknown,
}

impl From<Status> for types::Status {
    fn from(s: Status) -> Self {
        match s {
            Status::Ok => types::Status::Ok,
            Status::Warn => types::Status::Warn,
            Status::Fail => types::Status::Fail,
            Status::Unknown => types::Status::Unknown,
        }
    }
}

/// `mend:plugin/types.finding`, as a guest may build it.
#[derive(Arbitrary, Debug, Clone)]
pub struct Finding {
    pub check: String,
    pub code: String,
    pub status: Status,
    pub summary: String,
    pub metrics: Vec<(String, f64)>,
    pub labels: Vec<(String, String)>,
}

impl From<Finding> for types::Finding {
    fn from(f: Finding) -> Self {
        types::Finding {
            check: f.check,
            code: f.code,
            status: f.status.into(),
            summary: f.summary,
            metrics: f.metrics,
            labels: f.labels,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct DirNeed {
    pub path: String,
    pub write: bool,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Needs {
    pub dirs: Vec<DirNeed>,
    pub addresses: Vec<String>,
    pub urls: Vec<String>,
    pub connections: Vec<String>,
    pub commands: Vec<String>,
    pub state: bool,
    pub system: bool,
    pub processes: Vec<String>,
}

impl From<Needs> for types::Needs {
    fn from(n: Needs) -> Self {
        types::Needs {
            dirs: n
                .dirs
                .into_iter()
                .map(|d| types::DirNeed {
                    path: d.path,
                    write: d.write,
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

/// `mend:plugin/types.manifest`: what `describe()` may return.
#[derive(Arbitrary, Debug, Clone)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    pub roles: Vec<(bool, Needs)>,
}

impl From<Manifest> for types::Manifest {
    fn from(m: Manifest) -> Self {
        types::Manifest {
            name: m.name,
            version: m.version,
            description: m.description,
            roles: m
                .roles
                .into_iter()
                .map(|(detector, needs)| types::RoleNeeds {
                    role: if detector {
                        types::Role::Detector
                    } else {
                        types::Role::Action
                    },
                    needs: needs.into(),
                })
                .collect(),
        }
    }
}

/// A name or code the host accepted: short, and nothing that drives a
/// terminal or splits a log line.
pub fn assert_plain(what: &str, s: &str) {
    assert!(s.len() <= MAX_NAME, "{what}: {} bytes accepted", s.len());
    assert!(
        !s.chars().any(char::is_control),
        "{what}: {s:?} accepted with control characters"
    );
}

/// Free text the host accepted: printable.
pub fn assert_printable(what: &str, s: &str) {
    assert!(
        !s.chars().any(char::is_control),
        "{what}: {s:?} kept control characters"
    );
}

/// What the host promises of needs it accepted.
pub fn assert_needs(n: &c::Needs) {
    let count = n.dirs.len()
        + n.addresses.len()
        + n.urls.len()
        + n.connections.len()
        + n.commands.len()
        + n.processes.len();
    assert!(count <= MAX_ENTRIES, "{count} needs accepted");
    for d in &n.dirs {
        assert_plain("dir need", &d.path);
    }
    for s in n
        .addresses
        .iter()
        .chain(&n.urls)
        .chain(&n.connections)
        .chain(&n.commands)
        .chain(&n.processes)
    {
        assert_plain("need", s);
    }
}

/// What the host promises of findings it accepted; also that they
/// survive the JSON the store keeps them in (a diagnosis's evidence).
pub fn assert_findings(fs: &[c::Finding]) {
    assert!(fs.len() <= MAX_FINDINGS);
    for f in fs {
        assert!(!f.code.is_empty());
        assert_plain("code", &f.code);
        assert_printable("summary", &f.summary);
        assert!(f.metrics.len() <= MAX_ENTRIES && f.labels.len() <= MAX_ENTRIES);
        for (k, v) in &f.metrics {
            assert_plain("metric", k);
            assert!(v.is_finite(), "metric {k} = {v} accepted");
        }
        for (k, v) in &f.labels {
            assert_plain("label key", k);
            assert_printable("label value", v);
        }
    }
    let json = serde_json::to_value(fs).unwrap();
    let back: Vec<c::Finding> = serde_json::from_value(json)
        .unwrap_or_else(|e| panic!("accepted findings do not read back from JSON: {e}"));
    assert_same_findings(&back, fs);
}

/// Equal, but metrics only to the last bits (serde_json parses floats
/// best-effort unless its `float_roundtrip` feature is on).
pub fn assert_same_findings(a: &[c::Finding], b: &[c::Finding]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        let (mut x, mut y) = (x.clone(), y.clone());
        let (mx, my) = (
            std::mem::take(&mut x.metrics),
            std::mem::take(&mut y.metrics),
        );
        assert_eq!(x, y);
        assert!(mx.keys().eq(my.keys()), "metric names differ");
        for (u, v) in mx.values().zip(my.values()) {
            let close = u == v
                || (u.is_nan() && v.is_nan())
                || (u - v).abs() <= u.abs().max(v.abs()) * 1e-15;
            assert!(close, "metric {u} came back as {v}");
        }
    }
}
