//! Hostile plugins against the sandbox. Each attack must end in its typed
//! error, and the host must go on serving the next call.

mod common;

use std::time::Duration;

use common::*;
use mend::capabilities::Grants;
use mend::capabilities::fs::Mode;
use mend::runtime::{Limits, PluginError};
use serde_json::json;

async fn hostile(config: serde_json::Value, grants: &Grants, limits: Limits) -> PluginError {
    let p = load(artifacts::HOSTILE).await;
    let err = detect_with(&p, config.clone(), grants, limits)
        .await
        .expect_err(&format!("hostile call {config} must fail"));
    assert_eq!(
        err.plugin(),
        "fixture-hostile",
        "the error names the plugin: {err}"
    );
    err
}

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel() {
    let limits = Limits {
        fuel: 50_000_000,
        ..tight()
    };
    let err = hostile(json!({"mode": "loop"}), &Grants::none(), limits).await;
    assert!(
        matches!(
            err,
            PluginError::OutOfFuel {
                budget: 50_000_000,
                ..
            }
        ),
        "{err}"
    );
    still_serving().await;
}

#[tokio::test]
async fn infinite_loop_hits_the_deadline() {
    let limits = Limits {
        fuel: u64::MAX / 4,
        deadline: Duration::from_millis(200),
        ..tight()
    };
    let err = hostile(json!({"mode": "loop"}), &Grants::none(), limits).await;
    assert!(matches!(err, PluginError::DeadlineExceeded { .. }), "{err}");
    still_serving().await;
}

#[tokio::test]
async fn waiting_in_a_host_call_hits_the_deadline() {
    // Sleeping blocks in WASI's poll, where epochs cannot interrupt: the
    // tokio timeout must.
    let limits = Limits {
        deadline: Duration::from_millis(300),
        ..tight()
    };
    let err = hostile(json!({"mode": "sleep"}), &Grants::none(), limits).await;
    assert!(matches!(err, PluginError::DeadlineExceeded { .. }), "{err}");
    still_serving().await;
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_cap() {
    let err = hostile(json!({"mode": "memory-bomb"}), &Grants::none(), tight()).await;
    assert!(
        matches!(err, PluginError::MemoryLimit { limit, .. } if limit == 32 << 20),
        "{err}"
    );
    still_serving().await;
}

#[tokio::test]
async fn deep_recursion_overflows_the_wasm_stack() {
    let err = hostile(json!({"mode": "recurse"}), &Grants::none(), tight()).await;
    match &err {
        PluginError::Trap { message, .. } => assert!(message.contains("stack overflow"), "{err}"),
        other => panic!("expected a trap, got {other}"),
    }
    // Large frames overrun the guest's own stack in linear memory first:
    // still contained, as a memory trap.
    let err = hostile(
        json!({"mode": "recurse-big-frames"}),
        &Grants::none(),
        tight(),
    )
    .await;
    assert!(matches!(err, PluginError::Trap { .. }), "{err}");
    still_serving().await;
}

#[tokio::test]
async fn panic_is_a_trap_with_the_panic_message_and_a_backtrace() {
    let err = hostile(json!({"mode": "panic"}), &Grants::none(), tight()).await;
    match &err {
        PluginError::Trap {
            message, backtrace, ..
        } => {
            assert!(
                message.contains("hostile plugin panicked on purpose"),
                "{err}"
            );
            assert!(backtrace.is_some(), "a wasm backtrace is captured");
        }
        other => panic!("expected a trap, got {other}"),
    }
    still_serving().await;
}

#[tokio::test]
async fn oversized_results_are_rejected() {
    for mode in ["huge-findings", "huge-summary"] {
        let err = hostile(json!({"mode": mode}), &Grants::none(), tight()).await;
        assert!(
            matches!(err, PluginError::ResultTooLarge { .. }),
            "{mode}: {err}"
        );
    }
    still_serving().await;
}

#[tokio::test]
async fn flooding_stdout_is_bounded_and_harmless() {
    let p = load(artifacts::HOSTILE).await;
    let r = detect_with(
        &p,
        json!({"mode": "flood-stdout"}),
        &Grants::none(),
        tight(),
    )
    .await
    .expect("a chatty plugin still completes");
    assert_eq!(r.value[0].code, "flood.done");
}

#[tokio::test]
async fn no_environment_no_arguments() {
    let p = load(artifacts::HOSTILE).await;
    let r = detect(&p, json!({"mode": "env"}), &Grants::none())
        .await
        .unwrap();
    assert_eq!(r.value[0].summary, "vars=0 args=0");
}

/// A granted directory with an escape hatch in it: symlinks to
/// `/etc/passwd`, to `/etc`, and a relative one climbing out.
fn trap_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("ok.txt"), "inside").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", d.join("passwd-link")).unwrap();
    std::os::unix::fs::symlink("/etc", d.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc/passwd", d.join("relative-link")).unwrap();
    std::os::unix::fs::symlink("ok.txt", d.join("inner-link")).unwrap();
    tmp
}

#[tokio::test]
async fn reads_cannot_escape_the_preopen() {
    let tmp = trap_dir();
    let grants = dir(tmp.path(), "/data", Mode::Ro);
    let p = load(artifacts::HOSTILE).await;

    // Control: inside the grant, reads work, and a symlink that stays inside
    // is followed.
    for ok in ["/data/ok.txt", "/data/inner-link"] {
        let r = detect(&p, json!({"mode": "read", "path": ok}), &grants)
            .await
            .unwrap();
        assert_eq!(r.value[0].summary, "inside", "{ok}");
    }

    for escape in [
        "/etc/passwd",
        "/data/../etc/passwd",
        "../etc/passwd",
        "/data/passwd-link",
        "/data/etc-link/passwd",
        "/data/relative-link",
        "/data/passwd-link/",
        "/proc/self/environ",
    ] {
        let err = detect(&p, json!({"mode": "read", "path": escape}), &grants)
            .await
            .expect_err(escape);
        assert!(
            matches!(err, PluginError::Failed { .. } | PluginError::Denied { .. }),
            "{escape}: {err}"
        );
        assert!(!err.to_string().contains("root:"), "{escape} leaked: {err}");
    }
    still_serving().await;
}

#[tokio::test]
async fn listing_outside_the_preopen_is_refused() {
    let tmp = trap_dir();
    let grants = dir(tmp.path(), "/data", Mode::Ro);
    let p = load(artifacts::HOSTILE).await;
    let r = detect(&p, json!({"mode": "list", "path": "/data"}), &grants)
        .await
        .unwrap();
    assert!(r.value[0].summary.contains("ok.txt"));
    for escape in ["/", "/etc", "/data/..", "/data/etc-link"] {
        assert!(
            detect(&p, json!({"mode": "list", "path": escape}), &grants)
                .await
                .is_err(),
            "listing {escape} must fail"
        );
    }
}

#[tokio::test]
async fn writes_to_a_read_only_grant_are_refused() {
    let tmp = trap_dir();
    let ro = dir(tmp.path(), "/data", Mode::Ro);
    let p = load(artifacts::HOSTILE).await;
    for target in ["/data/new.txt", "/data/ok.txt"] {
        let err = detect(&p, json!({"mode": "write", "path": target}), &ro)
            .await
            .expect_err(target);
        assert!(
            matches!(err, PluginError::Failed { .. } | PluginError::Denied { .. }),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("ok.txt")).unwrap(),
        "inside"
    );
    assert!(!tmp.path().join("new.txt").exists());

    // Control: the same write through a read-write grant succeeds.
    let rw = dir(tmp.path(), "/data", Mode::Rw);
    detect(&p, json!({"mode": "write", "path": "/data/new.txt"}), &rw)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("new.txt")).unwrap(),
        "pwned"
    );
    // ...and a read-write grant still cannot write through a symlink out.
    assert!(
        detect(
            &p,
            json!({"mode": "write", "path": "/data/etc-link/mend-pwned"}),
            &rw
        )
        .await
        .is_err()
    );
    assert!(!std::path::Path::new("/etc/mend-pwned").exists());
    still_serving().await;
}

#[tokio::test]
async fn disk_usage_cannot_escape_the_grant() {
    let tmp = trap_dir();
    let grants = dir(tmp.path(), "/data", Mode::Ro);
    let p = load(artifacts::HOSTILE).await;
    let r = detect(&p, json!({"mode": "disk-usage", "path": "/data"}), &grants)
        .await
        .unwrap();
    assert!(r.value[0].metrics["total"] > 0.0);
    for escape in ["/", "/etc", "/data/..", "/data/../..", "/data/etc-link"] {
        let err = detect(&p, json!({"mode": "disk-usage", "path": escape}), &grants)
            .await
            .expect_err(escape);
        assert!(
            matches!(err, PluginError::Failed { .. } | PluginError::Denied { .. }),
            "{escape}: {err}"
        );
    }
}

#[tokio::test]
async fn tcp_connects_only_to_granted_addresses() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let p = load(artifacts::HOSTILE).await;

    // Not granted at all: sockets are off.
    let err = detect(
        &p,
        json!({"mode": "connect", "address": addr}),
        &Grants::none(),
    )
    .await
    .expect_err("ungranted connect");
    assert!(
        matches!(err, PluginError::Failed { .. } | PluginError::Denied { .. }),
        "{err}"
    );

    // Another address granted: still refused.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let grants = Grants {
        addresses: vec![other.local_addr().unwrap().to_string()],
        ..Grants::none()
    };
    detect(&p, json!({"mode": "connect", "address": addr}), &grants)
        .await
        .expect_err("connect to an address that is not the granted one");

    // Control: granted, the same connect succeeds.
    let grants = Grants {
        addresses: vec![addr.clone()],
        ..Grants::none()
    };
    let r = detect(&p, json!({"mode": "connect", "address": addr}), &grants)
        .await
        .unwrap();
    assert_eq!(r.value[0].code, "connect.ok");
    still_serving().await;
}

#[tokio::test]
async fn state_needs_its_grant() {
    let p = load(artifacts::HOSTILE).await;
    let err = detect(&p, json!({"mode": "state"}), &Grants::none())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not granted"), "{err}");
    let granted = Grants {
        state: true,
        ..Grants::none()
    };
    detect(&p, json!({"mode": "state"}), &granted)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_plugin_needing_more_than_granted_is_refused() {
    let p = load(artifacts::GREEDY).await;
    let err = detect(&p, json!({}), &Grants::none()).await.unwrap_err();
    match &err {
        PluginError::MissingGrant { need, .. } => {
            assert_eq!(need, "directory `/etc` (read-write)", "{err}")
        }
        other => panic!("expected MissingGrant, got {other}"),
    }
    // A read-only grant of /etc is still not enough.
    let err = detect(
        &p,
        json!({}),
        &dir(std::path::Path::new("/etc"), "/etc", Mode::Ro),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PluginError::MissingGrant { .. }), "{err}");
}

#[tokio::test]
async fn bad_config_is_a_typed_error() {
    let p = load(artifacts::HOSTILE).await;
    let err = detect(&p, json!({"mode": 3}), &Grants::none())
        .await
        .unwrap_err();
    match &err {
        PluginError::BadConfig { message, .. } => assert!(message.contains("mode"), "{err}"),
        other => panic!("expected BadConfig, got {other}"),
    }
    let err = detect(&p, json!({"mode": "loop", "surprise": 1}), &Grants::none())
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::BadConfig { .. }), "{err}");
}

async fn load_err(name: &str, bytes: Vec<u8>) -> PluginError {
    match runtime().load_bytes(name, bytes, None).await {
        Ok(_) => panic!("{name} must not load"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn malformed_files_are_refused_by_name() {
    let err = load_err("garbage.wasm", b"this is not wasm at all".to_vec()).await;
    assert!(matches!(err, PluginError::InvalidComponent { .. }), "{err}");
    assert_eq!(err.plugin(), "garbage.wasm");

    // A truncated component: right header, broken body.
    let mut truncated = std::fs::read(artifacts::TRIVIAL).unwrap();
    truncated.truncate(truncated.len() / 2);
    let err = load_err("truncated.wasm", truncated).await;
    assert!(matches!(err, PluginError::InvalidComponent { .. }), "{err}");
    still_serving().await;
}

#[tokio::test]
async fn a_core_module_is_not_a_component() {
    // The smallest valid core module: magic + version 1.
    let err = load_err("core.wasm", b"\0asm\x01\0\0\0".to_vec()).await;
    match &err {
        PluginError::InvalidComponent { reason, .. } => {
            assert!(reason.contains("core WebAssembly module"), "{err}")
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_component_of_another_world_is_refused() {
    let err = runtime()
        .load_file(std::path::Path::new(artifacts::WRONG_WORLD))
        .await
        .err()
        .expect("wrong world must not load");
    match &err {
        PluginError::InvalidComponent { reason, .. } => {
            assert!(reason.contains("does not export mend:plugin/meta"), "{err}");
            assert!(reason.contains("greet"), "says what it does export: {err}");
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn an_unknown_contract_version_is_refused() {
    let err = runtime()
        .load_file(std::path::Path::new(artifacts::FUTURE_VERSION))
        .await
        .err()
        .expect("future version must not load");
    match &err {
        PluginError::UnsupportedVersion {
            found, supported, ..
        } => {
            assert_eq!(found, "9.0.0");
            assert_eq!(supported, "0.1.x, 0.2.x");
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn only_wasm_files_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let cwasm = tmp.path().join("evil.cwasm");
    std::fs::write(&cwasm, std::fs::read(artifacts::TRIVIAL).unwrap()).unwrap();
    let err = runtime().load_file(&cwasm).await.err().unwrap();
    assert!(err.to_string().contains("only `.wasm` files"), "{err}");
}

#[tokio::test]
async fn fuel_used_is_reported() {
    let trivial = load(artifacts::TRIVIAL).await;
    let r = detect(&trivial, json!({}), &Grants::none()).await.unwrap();
    assert!(
        r.fuel_used > 0 && r.fuel_used < Limits::default().fuel,
        "{}",
        r.fuel_used
    );
}

#[tokio::test]
async fn many_concurrent_hostile_calls_do_not_take_the_host_down() {
    let p = std::sync::Arc::new(load(artifacts::HOSTILE).await);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mode = ["loop", "memory-bomb", "panic", "recurse"][i % 4];
            let limits = Limits {
                fuel: 20_000_000,
                ..tight()
            };
            detect_with(&p, json!({"mode": mode}), &Grants::none(), limits).await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    still_serving().await;
}

#[tokio::test]
async fn a_plugin_blocked_on_a_fifo_still_meets_its_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("pipe");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let grants = dir(tmp.path(), "/data", Mode::Ro);
    let limits = Limits {
        deadline: Duration::from_millis(300),
        ..tight()
    };
    let err = hostile(
        json!({"mode": "read", "path": "/data/pipe"}),
        &grants,
        limits,
    )
    .await;
    assert!(matches!(err, PluginError::DeadlineExceeded { .. }), "{err}");
    still_serving().await;
    // Let the thread still blocked in open(2) go.
    let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
}

#[tokio::test]
async fn stuck_calls_are_capped_per_plugin_and_freed_when_their_syscall_returns() {
    use mend::runtime::{MAX_STUCK_CALLS, Runtime, RuntimeConfig};
    // A runtime of its own: the cap is per plugin and runtime, and other
    // tests call the same fixture concurrently.
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let p = rt
        .load_file(std::path::Path::new(artifacts::HOSTILE))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("pipe");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let grants = resolved(&dir(tmp.path(), "/data", Mode::Ro));
    let limits = Limits {
        deadline: Duration::from_millis(200),
        ..tight()
    };
    let read = mend::runtime::PluginConfig::from(json!({"mode": "read", "path": "/data/pipe"}));
    let call = async |config: &mend::runtime::PluginConfig| {
        rt.detect(&p, &request(config, &grants, limits)).await
    };
    for _ in 0..MAX_STUCK_CALLS {
        let err = call(&read).await.unwrap_err();
        assert!(matches!(err, PluginError::DeadlineExceeded { .. }), "{err}");
    }
    // Both threads are still in open(2): the next call is refused at once,
    // even one that would not block.
    let fine = mend::runtime::PluginConfig::from(json!({"mode": "list", "path": "/data"}));
    let err = call(&fine).await.unwrap_err();
    assert!(
        matches!(err, PluginError::Budget { budget: "stuck calls", limit, .. } if limit == MAX_STUCK_CALLS as u64),
        "{err}"
    );
    // A writer comes and goes: the reads see EOF, the epoch deadline ends
    // both calls, their threads and slots come back.
    drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
    let mut freed = false;
    for _ in 0..100 {
        if call(&fine).await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the stuck calls were never counted out");
}

/// WASI is wired up on the guest's first WASI import. A granted directory
/// gone by then fails the call naming it (the plugin went on with no
/// preopen at all, never with more than granted).
#[tokio::test]
async fn a_granted_directory_gone_fails_only_a_call_that_opens_it_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let grants = resolved(&dir(&data, "/data", Mode::Ro));
    std::fs::remove_dir(&data).unwrap();
    let p = load(artifacts::HOSTILE).await;
    let list = async || {
        detect_in_with(
            &p,
            json!({"mode": "list", "path": "/data"}),
            &grants,
            tight(),
        )
        .await
    };
    let err = list().await.unwrap_err();
    assert!(
        matches!(&err, PluginError::Host { message, .. }
            if message.contains("preopening") && message.contains("data")),
        "{err}"
    );
    // A call that makes no WASI import opens no preopen: stale-file asks
    // `mend:plugin/fs`, which answers per path.
    let r = detect_in_with(
        &p,
        json!({"mode": "stat-many", "args": ["/data/f"]}),
        &grants,
        tight(),
    )
    .await
    .unwrap();
    assert!(r.value[0].summary.contains("/data"), "{:?}", r.value);
    // Back again, it is preopened again: each call opens its grants.
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "x").unwrap();
    let r = list().await.unwrap();
    assert_eq!(r.value[0].summary, "f");
}

/// A data directory for the `mend:plugin/fs` tests: a file, a symlink in
/// and one out of the grant, a FIFO.
fn fs_tree() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.log"), b"12345").unwrap();
    std::os::unix::fs::symlink("a.log", tmp.path().join("in")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("out")).unwrap();
    std::os::unix::fs::symlink("/etc", tmp.path().join("etc")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        tmp.path().join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    tmp
}

#[tokio::test]
async fn stat_many_stays_beneath_the_grant_and_never_opens_a_fifo() {
    let tmp = fs_tree();
    let p = load(artifacts::HOSTILE).await;
    let g = dir(tmp.path(), "/data", Mode::Ro);
    let paths = [
        "/data/a.log",
        "/data/in",
        "/data/out",
        "/data/pipe",
        "/data/nope",
        "/data/../etc/passwd",
        "/etc/passwd",
        "/data/etc/passwd",
        "data/a.log",
    ];
    let limits = Limits {
        deadline: Duration::from_millis(2000),
        ..tight()
    };
    for follow in ["", "follow"] {
        let r = detect_with(
            &p,
            json!({"mode": "stat-many", "args": paths, "name": follow}),
            &g,
            limits,
        )
        .await
        .unwrap();
        let lines: Vec<&str> = r.value[0].summary.split(';').collect();
        assert_eq!(lines.len(), paths.len(), "{lines:?}");
        assert_eq!(lines[0], "File:5");
        assert_eq!(
            lines[1],
            if follow.is_empty() {
                "Symlink:5"
            } else {
                "File:5"
            }
        );
        if follow.is_empty() {
            assert_eq!(lines[2], "Symlink:11", "reported, not followed");
        } else {
            assert!(lines[2].starts_with("denied:"), "{}", lines[2]);
        }
        assert_eq!(lines[3], "Fifo:0", "a FIFO is looked at, never opened");
        assert_eq!(lines[4], "missing");
        for (i, line) in lines.iter().enumerate().skip(5) {
            assert!(
                line.starts_with("denied:") && !line.contains("root:"),
                "{}: {line}",
                paths[i]
            );
        }
    }
    still_serving().await;
}

#[tokio::test]
async fn a_huge_stat_many_list_is_refused_and_the_host_stays_small() {
    use mend::capabilities::fs::MAX_STAT_PATHS;
    let tmp = fs_tree();
    let p = load(artifacts::HOSTILE).await;
    let g = dir(tmp.path(), "/data", Mode::Ro);
    let r = detect(
        &p,
        json!({"mode": "stat-many", "args": ["/data/a.log"], "count": MAX_STAT_PATHS}),
        &g,
    )
    .await
    .unwrap();
    assert_eq!(r.value[0].metrics["answers"], MAX_STAT_PATHS as f64);
    let (err, growth) = common::memory::peak_growth(async || {
        detect(
            &p,
            json!({"mode": "stat-many", "args": ["/data/a.log"], "count": MAX_STAT_PATHS + 1}),
            &g,
        )
        .await
        .unwrap_err()
    })
    .await;
    assert!(
        err.to_string()
            .contains(&format!("at most {MAX_STAT_PATHS}")),
        "{err}"
    );
    assert!(
        growth < 16 << 20,
        "host grew {}",
        common::memory::mib(growth)
    );
    still_serving().await;
}

#[tokio::test]
async fn walk_reports_symlinks_and_fifos_without_following_and_keeps_its_bounds() {
    let tmp = fs_tree();
    let mut deep = tmp.path().join("deep");
    for _ in 0..70 {
        deep = deep.join("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom"), b"").unwrap();
    let p = load(artifacts::HOSTILE).await;
    let g = dir(tmp.path(), "/data", Mode::Ro);
    let walk = async |path: &str, depth: &str, count: usize| {
        detect(
            &p,
            json!({"mode": "walk", "path": path, "args": [depth], "count": count}),
            &g,
        )
        .await
    };
    // Depth 1: the top entries only, symlinks and the FIFO as themselves.
    let err = walk("/data", "1", 0).await.unwrap_err();
    assert!(err.to_string().contains("deeper than max-depth 1"), "{err}");
    let err = walk("/data", "64", 0).await.unwrap_err();
    assert!(
        err.to_string().contains("deeper than max-depth 64"),
        "{err}"
    );
    let err = walk("/data", "65", 0).await.unwrap_err();
    assert!(err.to_string().contains("host's bound of 64"), "{err}");
    std::fs::remove_dir_all(tmp.path().join("deep")).unwrap();
    let r = walk("/data", "8", 0).await.unwrap();
    let mut got: Vec<&str> = r.value[0].summary.split(';').collect();
    got.sort();
    assert_eq!(
        got,
        [
            "a.log:File",
            "etc:Symlink",
            "in:Symlink",
            "out:Symlink",
            "pipe:Fifo"
        ]
    );
    let err = walk("/data", "8", 4).await.unwrap_err();
    assert!(err.to_string().contains("more than max-entries 4"), "{err}");
    for outside in ["/data/../etc", "/etc", "/data/etc", "/data/out"] {
        let err = walk(outside, "8", 0).await.unwrap_err();
        assert!(
            !err.to_string().contains("passwd"),
            "{outside} must not be listed: {err}"
        );
    }
    still_serving().await;
}

#[tokio::test]
async fn a_huge_walk_stops_at_the_reply_budget_and_the_host_stays_small() {
    use mend::capabilities::fs::MAX_WALK_REPLY_BYTES;
    let tmp = tempfile::tempdir().unwrap();
    // Long names, so the reply budget is reached before the entry bound.
    let name = "n".repeat(240);
    let files = MAX_WALK_REPLY_BYTES / 240 + 100;
    for i in 0..files {
        std::fs::File::create(tmp.path().join(format!("{name}{i:06}"))).unwrap();
    }
    let p = load(artifacts::HOSTILE).await;
    let g = dir(tmp.path(), "/data", Mode::Ro);
    let (err, growth) = common::memory::peak_growth(async || {
        detect(&p, json!({"mode": "walk", "path": "/data"}), &g)
            .await
            .unwrap_err()
    })
    .await;
    assert!(
        err.to_string()
            .contains(&format!("host's bound of {MAX_WALK_REPLY_BYTES} bytes")),
        "{err}"
    );
    assert!(
        growth < 32 << 20,
        "host grew {}",
        common::memory::mib(growth)
    );
    still_serving().await;
}

/// Backends for the capability tests: one command that proves it ran, the
/// machine's Redis, and PostgreSQL.
fn backends(marker: &std::path::Path) -> mend::capabilities::Backends {
    mend::capabilities::Backends::from_toml(&format!(
        r#"
[commands.touch]
argv = ["/usr/bin/touch", "{}"]
[commands.other]
argv = ["/bin/echo", "other"]
[connections.cache]
kind = "redis"
url = "redis://127.0.0.1:6379/"
[connections.db]
kind = "postgres"
url = "host=127.0.0.1 user=postgres dbname=postgres"
"#,
        marker.display()
    ))
    .unwrap()
}

fn granted(
    b: &mend::capabilities::Backends,
    f: impl FnOnce(&mut Grants),
) -> mend::capabilities::ResolvedGrants {
    let mut g = Grants::none();
    f(&mut g);
    g.resolve_with(b).unwrap()
}

#[tokio::test]
async fn commands_run_only_by_granted_name_and_never_in_dry_run() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ran");
    let b = backends(&marker);
    let p = load(artifacts::HOSTILE).await;

    // Defined but not granted to this plugin.
    let only_other = granted(&b, |g| g.commands = vec!["other".into()]);
    let err = detect_in(&p, json!({"mode": "exec", "name": "touch"}), &only_other)
        .await
        .expect_err("ungranted command");
    assert!(matches!(err, PluginError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("touch"), "{err}");
    // Not defined at all.
    let err = detect_in(&p, json!({"mode": "exec", "name": "/bin/sh"}), &only_other)
        .await
        .expect_err("undefined command");
    assert!(matches!(err, PluginError::Denied { .. }), "{err}");
    assert!(!marker.exists());

    // Control: granted, it runs.
    let touch = granted(&b, |g| g.commands = vec!["touch".into()]);
    detect_in(&p, json!({"mode": "exec", "name": "touch"}), &touch)
        .await
        .unwrap();
    assert!(marker.exists(), "the granted command ran");

    // A plugin that ignores dry-run still cannot run a command in one.
    std::fs::remove_file(&marker).unwrap();
    let err = remedy_in(
        &p,
        json!({"mode": "exec", "name": "touch"}),
        &touch,
        &[],
        true,
    )
    .await
    .expect_err("exec in a dry run");
    assert!(err.to_string().contains("dry run"), "{err}");
    assert!(!marker.exists(), "a command ran in a dry run");
    // Control: the same remedy, not a dry run, runs it.
    remedy_in(
        &p,
        json!({"mode": "exec", "name": "touch"}),
        &touch,
        &[],
        false,
    )
    .await
    .unwrap();
    assert!(marker.exists());
    still_serving().await;
}

#[tokio::test]
async fn redis_connections_are_granted_by_name_and_dangerous_commands_refused() {
    let b = backends(std::path::Path::new("/nonexistent"));
    let p = load(artifacts::HOSTILE).await;
    let none = granted(&b, |_| {});
    let err = detect_in(
        &p,
        json!({"mode": "redis", "name": "cache", "args": ["PING"]}),
        &none,
    )
    .await
    .expect_err("ungranted connection");
    assert!(matches!(err, PluginError::Denied { .. }), "{err}");

    let cache = granted(&b, |g| g.connections = vec!["cache".into()]);
    for args in [
        vec!["FLUSHALL"],
        vec!["keys", "*"],
        vec!["CONFIG", "SET", "maxmemory", "1"],
        vec!["SHUTDOWN", "NOSAVE"],
        vec!["BLPOP", "q", "0"],
        vec!["EVAL", "return 1", "0"],
    ] {
        let err = detect_in(
            &p,
            json!({"mode": "redis", "name": "cache", "args": args}),
            &cache,
        )
        .await
        .expect_err("refused command");
        assert!(matches!(err, PluginError::Denied { .. }), "{args:?}: {err}");
    }
    // Control: a harmless command goes through to the real server.
    let r = detect_in(
        &p,
        json!({"mode": "redis", "name": "cache", "args": ["PING"]}),
        &cache,
    )
    .await
    .unwrap();
    assert!(
        r.value[0].summary.contains("PONG"),
        "{}",
        r.value[0].summary
    );
    still_serving().await;
}

#[tokio::test]
async fn sql_connections_are_granted_by_name() {
    let b = backends(std::path::Path::new("/nonexistent"));
    let p = load(artifacts::HOSTILE).await;
    let cfg = json!({"mode": "sql", "name": "db", "path": "SELECT 1 AS one"});
    let err = detect_in(&p, cfg.clone(), &granted(&b, |_| {}))
        .await
        .expect_err("ungranted connection");
    assert!(matches!(err, PluginError::Denied { .. }), "{err}");
    // A Redis grant does not open a PostgreSQL connection of the same name.
    let r = detect_in(&p, cfg, &granted(&b, |g| g.connections = vec!["db".into()]))
        .await
        .unwrap();
    assert_eq!(r.value[0].summary, "1");
    still_serving().await;
}

/// A real HTTP server that answers 200 "ok" to anything and counts hits.
async fn http_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (base, hits)
}

#[tokio::test]
async fn http_goes_only_to_granted_urls() {
    let (base, hits) = http_server().await;
    let p = load(artifacts::HOSTILE).await;
    let b = mend::capabilities::Backends::default();
    let api = granted(&b, |g| g.urls = vec![format!("{base}/api")]);
    for url in [
        format!("{base}/admin"),
        format!("{base}/apix"),
        format!("{base}/api/../admin"),
        format!("{base}/api/%2e%2e/admin"),
        "http://127.0.0.1:9/api".to_string(),
    ] {
        let err = detect_in(&p, json!({"mode": "http", "name": url}), &api)
            .await
            .expect_err("ungranted URL");
        assert!(matches!(err, PluginError::Denied { .. }), "{url}: {err}");
    }
    // A POST with a body is refused the same way (not a stream error).
    let err = detect_in(
        &p,
        json!({"mode": "http-post", "name": format!("{base}/admin")}),
        &api,
    )
    .await
    .expect_err("ungranted POST");
    assert!(matches!(err, PluginError::Denied { .. }), "{err}");
    let err = detect_in(
        &p,
        json!({"mode": "http", "name": format!("{base}/api/x")}),
        &granted(&b, |_| {}),
    )
    .await
    .expect_err("no URL grant at all");
    assert!(matches!(err, PluginError::Denied { .. }), "{err}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a denied request reached the server"
    );

    // Control: under the prefix, it goes out.
    let r = detect_in(
        &p,
        json!({"mode": "http", "name": format!("{base}/api/health")}),
        &api,
    )
    .await
    .unwrap();
    assert_eq!(r.value[0].summary, "200");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    still_serving().await;
}

#[tokio::test]
async fn a_slow_statement_is_cancelled_on_the_server_at_the_timeout() {
    // Read-only needs a role that cannot get past it; this one may see
    // other sessions' state.
    let reader = postgres::ScratchRole::new();
    postgres::psql(
        postgres::PORT,
        "postgres",
        &format!("GRANT pg_read_all_stats TO {}", reader.name),
    );
    let b = mend::capabilities::Backends::from_toml(&format!(
        r#"
[connections.db]
kind = "postgres"
url = "host=127.0.0.1 user=postgres dbname=postgres application_name=mend-sandbox-slow"
timeout = "400ms"
[connections.ro]
kind = "postgres"
url = "host=127.0.0.1 user={} dbname=postgres"
read_only = true
"#,
        reader.name
    ))
    .unwrap();
    let p = load(artifacts::HOSTILE).await;
    let g = granted(&b, |g| g.connections = vec!["db".into(), "ro".into()]);
    let err = detect_in(
        &p,
        json!({"mode": "sql", "name": "db", "path": "SELECT pg_sleep(30)"}),
        &g,
    )
    .await
    .expect_err("a 30 s statement under a 400 ms timeout");
    assert!(err.to_string().contains("after 400ms"), "{err}");
    // The server stops running it (cancelled, not merely abandoned).
    let mut still_running = true;
    for _ in 0..50 {
        let r = detect_in(
            &p,
            json!({"mode": "sql", "name": "ro", "path":
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'mend-sandbox-slow' AND state = 'active'"}),
            &g,
        )
        .await
        .unwrap();
        if r.value[0].summary == "0" {
            still_running = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!still_running, "pg_sleep kept running on the server");

    // A read-only connection cannot write.
    let err = detect_in(
        &p,
        json!({"mode": "sql", "name": "ro", "path": "CREATE TABLE mend_sandbox_should_not_exist (x int)"}),
        &g,
    )
    .await
    .expect_err("a write on a read-only connection");
    assert!(err.to_string().contains("read-only"), "{err}");
    still_serving().await;
}

#[tokio::test]
async fn sql_parameters_are_typed_by_the_server_and_results_bounded() {
    use mend::capabilities::Connection;
    use mend::capabilities::sql::{QueryOptions, Value};
    let b = backends(std::path::Path::new("/nonexistent"));
    let g = granted(&b, |g| g.connections = vec!["db".into()]);
    let Connection::Postgres(db) = &g.connections[0] else {
        panic!("db is PostgreSQL")
    };
    let opts = QueryOptions {
        fresh: true,
        ..Default::default()
    };
    let rows = db
        .query(
            "SELECT $1::int + 1 AS n, $2::text AS t, $3::float8 * 2 AS f, $4::bool AS b, NULL::int AS z",
            &[
                Value::Int(41),
                Value::Text("x".into()),
                Value::Float(1.5),
                Value::Boolean(true),
            ],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(rows.columns, ["n", "t", "f", "b", "z"]);
    assert!(matches!(rows.rows[0][0], Value::Int(42)));
    assert!(matches!(&rows.rows[0][1], Value::Text(t) if t == "x"));
    assert!(matches!(rows.rows[0][2], Value::Float(f) if f == 3.0));
    assert!(matches!(rows.rows[0][3], Value::Boolean(true)));
    assert!(matches!(rows.rows[0][4], Value::Null));
    // A value that does not fit its placeholder says which one.
    let err = db
        .query("SELECT $1::int", &[Value::Text("nope".into())], &opts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("$1"), "{err}");
    // A type plugins cannot read says how to cast it.
    let err = db
        .query("SELECT now() AS at", &[], &opts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at::text"), "{err}");
    // Too many rows is an error, not a memory bomb.
    let err = db
        .query("SELECT generate_series(1, 20000)", &[], &opts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
}

#[tokio::test]
async fn nothing_a_statement_sets_outlives_it_on_a_shared_connection() {
    // Read-only needs a role that cannot get past it.
    let reader = postgres::ScratchRole::new();
    let b = mend::capabilities::Backends::from_toml(&format!(
        r#"
[connections.ro]
kind = "postgres"
url = "host=127.0.0.1 user={} dbname=postgres"
read_only = true
[connections.rw]
kind = "postgres"
url = "host=127.0.0.1 user=postgres dbname=postgres"
"#,
        reader.name
    ))
    .unwrap();
    let p = load(artifacts::HOSTILE).await;
    let g = granted(&b, |g| g.connections = vec!["ro".into(), "rw".into()]);
    let sql = |conn: &str, stmt: &str| json!({"mode": "sql", "name": conn, "path": stmt});

    // Switching read-only off does not carry over to the next statement.
    detect_in(&p, sql("ro", "SET default_transaction_read_only = off"), &g)
        .await
        .unwrap();
    let err = detect_in(
        &p,
        sql("ro", "CREATE TABLE mend_sandbox_ro_escape (x int)"),
        &g,
    )
    .await
    .expect_err("a write after turning read-only off");
    assert!(err.to_string().contains("read-only"), "{err}");

    // A setting is gone by the next statement.
    detect_in(&p, sql("rw", "SET statement_timeout = 1234"), &g)
        .await
        .unwrap();
    let r = detect_in(
        &p,
        sql(
            "rw",
            "SELECT 1 WHERE current_setting('statement_timeout') = '0'",
        ),
        &g,
    )
    .await
    .unwrap();
    assert_eq!(
        r.value[0].summary, "1",
        "a SET leaked into the next statement"
    );

    // So is a transaction, and the locks it took.
    detect_in(&p, sql("rw", "BEGIN"), &g).await.unwrap();
    detect_in(&p, sql("rw", "SELECT pg_advisory_xact_lock(424242)"), &g)
        .await
        .unwrap();
    let fresh = mend::capabilities::Backends::from_toml(
        "[connections.other]\nkind = \"postgres\"\nurl = \"host=127.0.0.1 user=postgres dbname=postgres\"",
    )
    .unwrap();
    let other = granted(&fresh, |g| g.connections = vec!["other".into()]);
    let r = detect_in(
        &p,
        sql("other", "SELECT 1 WHERE pg_try_advisory_xact_lock(424242)"),
        &other,
    )
    .await
    .unwrap();
    assert_eq!(
        r.value[0].summary, "1",
        "a transaction outlived its statement and kept its lock"
    );
}

#[tokio::test]
async fn a_redis_value_over_the_reply_limit_is_refused_before_it_is_read() {
    let client = ::redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("mend-sandbox-{}:big", std::process::id());
    let _: () = ::redis::cmd("SET")
        .arg(&key)
        .arg(vec![b'x'; 5 << 20])
        .arg("EX")
        .arg(60)
        .query_async(&mut con)
        .await
        .unwrap();
    let b = backends(std::path::Path::new("/nonexistent"));
    let p = load(artifacts::HOSTILE).await;
    let g = granted(&b, |g| g.connections = vec!["cache".into()]);
    let err = detect_in(
        &p,
        json!({"mode": "redis", "name": "cache", "args": ["GET", key]}),
        &g,
    )
    .await
    .expect_err("a 5 MiB value");
    let _: () = ::redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    // A limit, as the plugin saw it (the SDK's `Error::Limit`).
    assert!(
        matches!(&err, PluginError::Failed { message, .. } if message.starts_with("limit: ")),
        "{err}"
    );
    assert!(err.to_string().contains("reply limit"), "{err}");
    still_serving().await;
}

/// Child processes killed when dropped.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `/bin/sleep` copied as `name`, so the kernel names its processes so.
fn sleeper(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::copy("/bin/sleep", &p).unwrap();
    p
}

fn system(processes: &[&str]) -> Grants {
    use mend::capabilities::system::{SystemGrant, SystemTable};
    Grants {
        system: Some(if processes.is_empty() {
            SystemGrant::On(true)
        } else {
            SystemGrant::Table(SystemTable {
                processes: processes.iter().map(|s| s.to_string()).collect(),
            })
        }),
        ..Grants::none()
    }
}

fn pids(findings: &[mend::contract::Finding]) -> Vec<u32> {
    findings
        .iter()
        .filter(|f| f.code == "system.process")
        .map(|f| f.metrics["pid"] as u32)
        .collect()
}

#[tokio::test]
async fn system_facts_need_the_system_grant() {
    let p = load(artifacts::HOSTILE).await;
    let err = detect(&p, json!({"mode": "system-load"}), &Grants::none())
        .await
        .expect_err("no system grant");
    assert!(matches!(err, PluginError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("system = true"), "{err}");
    let r = detect(&p, json!({"mode": "system-load"}), &system(&[]))
        .await
        .unwrap();
    assert!(r.value[0].metrics["cores"] >= 1.0);
    // `system = true` names no process.
    let err = detect(
        &p,
        json!({"mode": "system-processes", "name": "*"}),
        &system(&[]),
    )
    .await
    .expect_err("no process granted");
    assert!(matches!(err, PluginError::Denied { .. }), "{err}");
    still_serving().await;
}

#[tokio::test]
async fn a_process_grant_shows_only_the_processes_it_names() {
    let tmp = tempfile::tempdir().unwrap();
    let nginx = std::process::Command::new(sleeper(tmp.path(), "nginx"))
        .arg("300")
        .env("MEND_TEST_SECRET", "hunter2")
        .spawn()
        .unwrap();
    let other = std::process::Command::new(sleeper(tmp.path(), "mendsecretproc"))
        .args(["300", "0"])
        .spawn()
        .unwrap();
    let (nginx_pid, other_pid) = (nginx.id(), other.id());
    let _kids = Children(vec![nginx, other]);
    let p = load(artifacts::HOSTILE).await;
    let g = system(&["nginx"]);
    let ask = |name: &str, cmdline: &str| json!({"mode": "system-processes", "name": name, "path": cmdline});

    let r = detect(&p, ask("nginx", ""), &g).await.unwrap();
    assert!(pids(&r.value).contains(&nginx_pid), "{:?}", r.value);
    let mine = r
        .value
        .iter()
        .find(|f| f.metrics.get("pid") == Some(&(nginx_pid as f64)))
        .unwrap();
    assert!(
        mine.summary.ends_with("nginx 300"),
        "its argv: {}",
        mine.summary
    );
    assert!(
        mine.metrics["rss"] > 0.0 && mine.metrics["fds"] >= 3.0,
        "{mine:?}"
    );

    // Whatever the pattern, only granted processes are described; their
    // environment never is.
    for (name, cmdline) in [("*", ""), ("*", "300"), ("mend*", ""), ("?*", "0")] {
        let r = detect(&p, ask(name, cmdline), &g).await.unwrap();
        let seen = pids(&r.value);
        assert!(
            !seen.contains(&other_pid),
            "{name} {cmdline}: {:?}",
            r.value
        );
        for f in &r.value {
            assert!(
                f.code == "system.matched" || f.labels["name"] == "nginx",
                "{f:?}"
            );
            assert!(!format!("{f:?}").contains("hunter2"), "{f:?}");
        }
        if name.starts_with("mend") {
            assert_eq!(r.value[0].metrics["matched"], 0.0);
        }
    }
    // Asking for an ungranted process by name is a refusal.
    let err = detect(&p, ask("mendsecretproc", ""), &g)
        .await
        .expect_err("not granted");
    assert!(matches!(err, PluginError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("not granted"), "{err}");
    // A sample measures CPU; a sleeping process uses next to none.
    let r = detect(
        &p,
        json!({"mode": "system-processes", "name": "nginx", "count": 200}),
        &g,
    )
    .await
    .unwrap();
    let cpu = r
        .value
        .iter()
        .find(|f| f.metrics.get("pid") == Some(&(nginx_pid as f64)))
        .unwrap()
        .metrics["cpu"];
    assert!((0.0..5.0).contains(&cpu), "{cpu}");
    still_serving().await;
}

#[tokio::test]
async fn a_huge_process_count_is_bounded() {
    use mend::capabilities::system::MAX_PROCESSES;
    let tmp = tempfile::tempdir().unwrap();
    let exe = sleeper(tmp.path(), "mendflood");
    let n = MAX_PROCESSES * 3;
    let kids = Children(
        (0..n)
            .map(|_| {
                std::process::Command::new(&exe)
                    .arg("300")
                    .stdin(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let p = load(artifacts::HOSTILE).await;
    let g = system(&["mendflood"]);
    let (r, growth) = common::memory::peak_growth(async || {
        detect(
            &p,
            json!({"mode": "system-processes", "name": "mendflood"}),
            &g,
        )
        .await
        .unwrap()
    })
    .await;
    assert_eq!(
        r.value[0].metrics["matched"], n as f64,
        "every one is counted"
    );
    assert_eq!(r.value[0].metrics["listed"], MAX_PROCESSES as f64);
    assert_eq!(pids(&r.value).len(), MAX_PROCESSES);
    assert!(
        growth < 16 << 20,
        "host grew {}",
        common::memory::mib(growth)
    );
    drop(kids);
    still_serving().await;
}
