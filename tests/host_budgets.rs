//! What a hostile plugin can make the *host* hold, outside its linear
//! memory: descriptors and wasi:http objects live in the call's resource
//! table, capped at `resources` entries. Each test asserts the typed error
//! and the host-side bound (descriptors from /proc/self/fd, peak RSS).
//! The tests share the process's RSS and fd table, so they run one at a
//! time.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::memory::{mib, peak_growth};
use common::*;
use mend::capabilities::Grants;
use mend::capabilities::fs::Mode;
use mend::runtime::{Limits, PluginError};
use serde_json::json;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Runs `f` while sampling the process's open descriptors every
/// millisecond; returns its value and the most descriptors seen.
async fn peak_fds<T>(f: impl AsyncFnOnce() -> T) -> (T, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(open_fds()));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(open_fds(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let v = f().await;
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    (v, peak.load(Ordering::Relaxed))
}

async fn hostile(config: serde_json::Value, grants: &Grants) -> PluginError {
    let p = load(artifacts::HOSTILE).await;
    let err = detect_with(&p, config.clone(), grants, tight())
        .await
        .expect_err(&format!("hostile call {config} must fail"));
    assert_eq!(err.plugin(), "fixture-hostile", "{err}");
    err
}

#[tokio::test]
async fn a_descriptor_flood_stops_at_the_resource_budget() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("f"), "x").unwrap();
    let grants = dir(tmp.path(), "/d", Mode::Ro);
    load(artifacts::HOSTILE).await;
    let before = open_fds();
    let (err, peak) = peak_fds(async || {
        hostile(
            json!({"mode": "open-files", "path": "/d/f", "count": 5000}),
            &grants,
        )
        .await
    })
    .await;
    let limit = Limits::default().resources;
    assert!(
        matches!(err, PluginError::Budget { budget: "resources", limit: l, .. } if l == limit as u64),
        "{err}"
    );
    // Each held file is one host descriptor: never more than the budget
    // (plus the sampler's own and the runtime's few).
    assert!(
        peak <= before + limit + 16,
        "host descriptors peaked at {peak} (from {before}, budget {limit})"
    );
    assert!(
        open_fds() <= before + 4,
        "descriptors are released after the call"
    );
    still_serving().await;
}

#[tokio::test]
async fn stat_many_across_many_directories_holds_one_parent_at_a_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for d in 0..200 {
        std::fs::create_dir(tmp.path().join(format!("d{d}"))).unwrap();
        std::fs::write(tmp.path().join(format!("d{d}/f")), "x").unwrap();
    }
    // Each path in another directory than the last, so none reuses the
    // parent opened for the one before; the plugin asks for them 50 times.
    for d in 0..200 {
        paths.push(format!("/g/d{}/f", d * 7 % 200));
    }
    let grants = dir(tmp.path(), "/g", Mode::Ro);
    let p = load(artifacts::HOSTILE).await;
    let before = open_fds();
    let (r, peak) = peak_fds(async || {
        detect_with(
            &p,
            json!({"mode": "stat-many", "args": paths, "count": 50}),
            &grants,
            Limits {
                deadline: Duration::from_secs(20),
                ..tight()
            },
        )
        .await
        .unwrap()
    })
    .await;
    assert_eq!(r.value[0].metrics["answers"], 10_000.0);
    assert!(
        r.value[0].summary.starts_with("File:1;File:1"),
        "{}",
        r.value[0].summary
    );
    // The grant's root and one parent: 200 parents kept open would show.
    assert!(
        peak <= before + 16,
        "host descriptors peaked at {peak} (from {before}) over 200 directories"
    );
    assert!(
        open_fds() <= before + 4,
        "descriptors are released after the call"
    );
    still_serving().await;
}

#[tokio::test]
async fn http_objects_without_a_url_grant_are_refused_and_hold_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    load(artifacts::HOSTILE).await;
    // 2,000 header sets of 60 KiB would be 117 MiB of host memory.
    let (err, growth) = peak_growth(async || {
        hostile(
            json!({"mode": "http-fields", "count": 2000}),
            &Grants::none(),
        )
        .await
    })
    .await;
    assert!(matches!(err, PluginError::Denied { .. }), "{err}");
    assert!(
        growth < 16 << 20,
        "host RSS grew by {} for a call with no HTTP grant",
        mib(growth)
    );
    still_serving().await;
}

#[tokio::test]
async fn http_objects_with_a_url_grant_stop_at_the_resource_budget() {
    let _one = ONE_AT_A_TIME.lock().await;
    load(artifacts::HOSTILE).await;
    let grants = Grants {
        urls: vec!["http://127.0.0.1:9/".into()],
        ..Grants::none()
    };
    let (err, growth) =
        peak_growth(async || hostile(json!({"mode": "http-fields", "count": 2000}), &grants).await)
            .await;
    assert!(
        matches!(
            err,
            PluginError::Budget {
                budget: "resources",
                ..
            }
        ),
        "{err}"
    );
    // At most `resources` sets of 60 KiB (15 MiB) instead of 117 MiB.
    let bound = Limits::default().resources as u64 * (64 << 10);
    assert!(
        growth < bound + (16 << 20),
        "host RSS grew by {} (bound {})",
        mib(growth),
        mib(bound)
    );
    still_serving().await;
}

#[tokio::test]
async fn an_action_that_ignores_dry_run_cannot_write() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("out");
    std::fs::write(&target, "before").unwrap();
    let fixer = load(artifacts::FIXER).await;
    let grants = dir(tmp.path(), "/d", Mode::Rw);
    let config =
        json!({"file": "/d/out", "log": "/d/log", "write": "after", "write_in_dry_run": true});
    let err = remedy(&fixer, config.clone(), &grants, true)
        .await
        .expect_err("a dry-run write through an rw grant must fail");
    assert!(err.to_string().contains("/d/out"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "before");
    // The same grant writes outside a dry run: the refusal came from the
    // dry run, not from the grant.
    remedy(&fixer, config, &grants, false)
        .await
        .expect("a real run writes");
    assert_ne!(std::fs::read_to_string(&target).unwrap(), "before");
}
