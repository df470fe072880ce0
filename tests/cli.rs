//! The `mend` binary, as a plugin author uses it.

use std::process::{Command, Output};

use mend_test_artifacts as artifacts;

fn mend(args: &[&str], state: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(args)
        .env("MEND_STATE_DIR", state)
        .env("MEND_LOG", "warn")
        .output()
        .expect("running mend")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn inspect_prints_what_describe_says() {
    let state = tempfile::tempdir().unwrap();
    let o = mend(&["plugin", "inspect", artifacts::STALE_FILE], state.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.starts_with("stale-file 0.1.0"), "{out}");
    assert!(out.contains("roles:       detector"), "{out}");
    assert!(
        out.contains("detector needs:\n    directory  any granted directory (ro)"),
        "{out}"
    );

    let o = mend(
        &["plugin", "inspect", "--json", artifacts::STALE_FILE],
        state.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["manifest"]["name"], "stale-file");
    assert_eq!(v["wit_version"], "0.2.0");
}

#[test]
fn call_runs_a_detector_against_a_granted_directory() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("status.json");
    std::fs::write(&file, "{}").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        .unwrap();
    let grant = format!("{}:/data", data.path().display());
    let o = mend(
        &[
            "plugin",
            "call",
            artifacts::STALE_FILE,
            "detect",
            "--config",
            "path = \"/data/status.json\"\nmax_age = \"10m\"",
            "--grant-dir",
            &grant,
        ],
        state.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["findings"][0]["code"], "file.stale");
    assert_eq!(v["findings"][0]["status"], "fail");
    assert!(v["fuel_used"].as_u64().unwrap() > 0);
    assert!(v["duration_us"].as_u64().is_some());
}

#[test]
fn plugin_call_grants_system_facts_and_processes_by_flag() {
    let state = tempfile::tempdir().unwrap();
    let call = |extra: &[&str]| {
        let mut args = vec![
            "plugin",
            "call",
            artifacts::SYSTEM,
            "detect",
            "--config",
            r#"{"memory": {"warn": 100}, "process": [{"name": "mendnothere", "min": 0}]}"#,
        ];
        args.extend_from_slice(extra);
        mend(&args, state.path())
    };
    let o = call(&[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("system = true"), "{}", stderr(&o));
    let o = call(&["--grant-system"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no processes are granted"),
        "{}",
        stderr(&o)
    );
    let o = call(&["--grant-process", "mendnothere"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["findings"][0]["code"], "system.memory.ok");
    assert_eq!(v["findings"][1]["code"], "process.ok");
    assert_eq!(v["findings"][1]["metrics"]["count"], 0.0);
}

#[test]
fn a_failing_call_exits_non_zero_with_one_line() {
    let state = tempfile::tempdir().unwrap();
    let o = mend(
        &[
            "plugin",
            "call",
            artifacts::HOSTILE,
            "detect",
            "--config",
            r#"{"mode": "loop"}"#,
            "--fuel",
            "1000000",
        ],
        state.path(),
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("plugin fixture-hostile: ran out of fuel (budget 1000000)"),
        "{err}"
    );

    let o = mend(
        &[
            "plugin",
            "call",
            artifacts::HOSTILE,
            "detect",
            "--config",
            r#"{"mode": "loop"}"#,
            "--timeout",
            "100ms",
            // Fuel enough that the deadline, not the fuel, ends the loop
            // even on a fast machine (1e9 can run out within 100 ms).
            "--fuel",
            "1000000000000",
        ],
        state.path(),
    );
    assert!(
        stderr(&o).contains("deadline of 100ms exceeded"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn missing_grant_and_bad_config_are_explained() {
    let state = tempfile::tempdir().unwrap();
    let o = mend(
        &[
            "plugin",
            "call",
            artifacts::STALE_FILE,
            "detect",
            "--config",
            "max_age = \"1m\"\npath = \"/x\"",
        ],
        state.path(),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("needs a directory (read-only), which is not granted"),
        "{}",
        stderr(&o)
    );

    let o = mend(
        &[
            "plugin",
            "call",
            artifacts::STALE_FILE,
            "detect",
            "--config",
            "max_age = ",
        ],
        state.path(),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid TOML"), "{}", stderr(&o));
}

#[test]
fn a_broken_file_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.wasm");
    std::fs::write(&bad, b"\0asm garbage").unwrap();
    let o = mend(&["plugin", "inspect", bad.to_str().unwrap()], state.path());
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("plugin broken.wasm: invalid component"),
        "{}",
        stderr(&o)
    );
}

/// `mend plugin new` makes a project that builds, passes its own tests and
/// answers `mend plugin call` with no edits: as a detector, and as an
/// action that honours dry-run. The other roles build too.
#[test]
fn a_new_plugin_project_builds_and_runs_with_no_edits() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    // Shared between runs, so only the first builds the SDK's dependencies.
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-new");
    let cargo = |dir: &std::path::Path, args: &[&str]| {
        let out = Command::new(env!("CARGO"))
            .args(args)
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .output()
            .expect("running cargo");
        assert!(
            out.status.success(),
            "cargo {args:?} in {}: {}",
            dir.display(),
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let new = |name: &str, role: &str| {
        let dir = tmp.path().join(name);
        let out = mend(
            &[
                "plugin",
                "new",
                name,
                "--role",
                role,
                "--dir",
                dir.to_str().unwrap(),
            ],
            &state,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        dir
    };
    let refused = mend(&["plugin", "new", "Bad Name"], &state);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("cannot name a plugin project"));

    let dir = new("log-size", "both");
    let tests = cargo(&dir, &["test", "--quiet"]);
    assert!(tests.contains("1 passed"), "{tests}");
    cargo(
        &dir,
        &[
            "build",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "plugin",
        ],
    );
    let wasm = target.join("wasm32-wasip2/plugin/log_size.wasm");
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let log = data.join("app.log");
    std::fs::write(&log, vec![b'x'; 2048]).unwrap();
    let config = r#"{"path": "/data/app.log", "max_bytes": "1KiB"}"#;
    let ro = format!("{}:/data", data.display());
    let rw = format!("{}:/data:rw", data.display());
    let wasm = wasm.to_str().unwrap();

    let out = mend(
        &[
            "plugin",
            "call",
            wasm,
            "detect",
            "--grant-dir",
            &ro,
            "--config",
            config,
        ],
        &state,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plugin"], "log-size");
    assert_eq!(v["findings"][0]["code"], "file.too_big", "{v}");

    let out = mend(
        &[
            "plugin",
            "call",
            wasm,
            "remedy",
            "--dry-run",
            "--grant-dir",
            &rw,
            "--config",
            config,
        ],
        &state,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"]["changed"], false, "{v}");
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        2048,
        "a dry run changed the file"
    );

    let out = mend(
        &[
            "plugin",
            "call",
            wasm,
            "remedy",
            "--grant-dir",
            &rw,
            "--config",
            config,
        ],
        &state,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"]["changed"], true, "{v}");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);

    for (name, role) in [("only-detect", "detector"), ("only-act", "action")] {
        let dir = new(name, role);
        cargo(
            &dir,
            &[
                "build",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--profile",
                "plugin",
            ],
        );
        let wasm = target.join(format!(
            "wasm32-wasip2/plugin/{}.wasm",
            name.replace('-', "_")
        ));
        let out = mend(&["plugin", "inspect", wasm.to_str().unwrap()], &state);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("roles:       {role}")), "{text}");
    }
}
