//! The conversions between WIT values and mend's types (0.2 and 0.1), and
//! the bounds on what a detect or remedy returns. Properties: accepted
//! findings and outcomes are within the bounds and printable, survive
//! JSON, and mend → WIT → mend is the identity.
#![no_main]

use arbitrary::Arbitrary;
use mend::contract as c;
use mend::wit::{since_v0_1, since_v0_2};
use mend_fuzz::{Finding, assert_findings, assert_printable, assert_same_findings};

#[derive(Arbitrary, Debug)]
struct Input {
    findings: Vec<Finding>,
    v0_1: bool,
    changed: bool,
    steps: Vec<String>,
    message: String,
}

fn v0_1(f: Finding) -> since_v0_1::mend::plugin::types::Finding {
    use since_v0_1::mend::plugin::types as t;
    t::Finding {
        check: f.check,
        code: f.code,
        status: match f.status {
            mend_fuzz::Status::Ok => t::Status::Ok,
            mend_fuzz::Status::Warn => t::Status::Warn,
            mend_fuzz::Status::Fail => t::Status::Fail,
            mend_fuzz::Status::Unknown => t::Status::Unknown,
        },
        summary: f.summary,
        metrics: f.metrics,
        labels: f.labels,
    }
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    let mut findings: Vec<c::Finding> = input
        .findings
        .into_iter()
        .map(|f| match input.v0_1 {
            true => v0_1(f).into(),
            false => since_v0_2::mend::plugin::types::Finding::from(f).into(),
        })
        .collect();
    // mend → WIT → mend: what the host hands a remedy comes back as it was.
    let there_and_back: Vec<c::Finding> = findings
        .iter()
        .cloned()
        .map(|f| match input.v0_1 {
            true => since_v0_1::mend::plugin::types::Finding::from(f).into(),
            false => since_v0_2::mend::plugin::types::Finding::from(f).into(),
        })
        .collect();
    assert_same_findings(&there_and_back, &findings);
    if mend::fuzzing::bound_findings(&mut findings).is_ok() {
        assert_findings(&findings);
    }

    let outcome = since_v0_2::mend::plugin::types::Outcome {
        changed: input.changed,
        steps: input.steps,
        message: input.message,
    };
    let mut outcome: c::Outcome = outcome.into();
    if mend::fuzzing::bound_outcome(&mut outcome).is_ok() {
        assert!(outcome.steps.len() <= mend::fuzzing::MAX_STEPS);
        for s in &outcome.steps {
            assert_printable("step", s);
        }
        assert_printable("message", &outcome.message);
    }
});
