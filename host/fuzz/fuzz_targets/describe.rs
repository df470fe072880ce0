//! A plugin's `describe()` result, arbitrary, through the 0.2 contract's
//! conversion and what a load accepts. Property: whatever is accepted is
//! within the manifest bounds and printable.
#![no_main]

use mend::contract::Role;
use mend::wit::since_v0_2::mend::plugin::types;
use mend_fuzz::{Manifest, assert_needs, assert_plain, assert_printable};

libfuzzer_sys::fuzz_target!(|input: (Manifest, bool, bool)| {
    let (m, detection, remediation) = input;
    let mut m: mend::contract::Manifest = types::Manifest::from(m).into();
    let exported = |r: Role| match r {
        Role::Detector => detection,
        Role::Action => remediation,
    };
    if mend::fuzzing::accept_manifest(&mut m, exported).is_err() {
        return;
    }
    assert!(!m.name.is_empty() && m.name.len() <= 64);
    assert!(
        m.name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
    );
    assert_plain("version", &m.version);
    assert_printable("description", &m.description);
    assert!(!m.roles.is_empty() && m.roles.len() <= 2);
    if m.roles.len() == 2 {
        assert_ne!(m.roles[0].role, m.roles[1].role, "a role twice");
    }
    for r in &m.roles {
        assert!(exported(r.role), "{:?} accepted without its export", r.role);
        assert_needs(&r.needs);
    }
});
