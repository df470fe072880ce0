//! Crash points for the chaos tests (`tests/chaos.rs`).
//!
//! `MEND_CRASH_AT=POINT[:N]` makes mend `SIGKILL` itself the Nth time
//! (default 1) it passes `POINT`: a `kill -9` at an exact, reproducible
//! instant rather than a timed guess. Unset (always, outside the tests),
//! each point costs one load of an initialised `OnceLock`. The points:
//!
//! | point | where |
//! |---|---|
//! | `before-incident` | a trigger fired, the incident is not written yet |
//! | `after-incident` | the incident is written, no attempt yet |
//! | `after-attempt` | the attempt is written `running`, the action has not started |
//! | `after-action` | the action returned, its outcome is not written |
//! | `mid-verify` | a verification probe ran, the verification is not over |
//! | `before-page` | the incident is escalated and its page attempt written, the page not sent |
//! | `after-page` | the page was sent, its attempt not finished |
//!
//! Setting it needs what setting any of mend's environment needs: it gives
//! no one a way in, only a way to stop mend, which that person has anyway.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

struct Spec {
    point: String,
    nth: u32,
    hits: AtomicU32,
}

fn spec() -> Option<&'static Spec> {
    static SPEC: OnceLock<Option<Spec>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let v = std::env::var("MEND_CRASH_AT").ok()?;
        let (point, nth) = match v.split_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some(Spec {
            point,
            nth,
            hits: AtomicU32::new(0),
        })
    })
    .as_ref()
}

/// Dies here, by `SIGKILL`, if `MEND_CRASH_AT` names this point and this
/// is its Nth pass.
pub fn point(name: &str) {
    let Some(s) = spec() else { return };
    if s.point != name || s.hits.fetch_add(1, Ordering::SeqCst) + 1 != s.nth {
        return;
    }
    eprintln!("mend: MEND_CRASH_AT={name}:{}: killing myself", s.nth);
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}
