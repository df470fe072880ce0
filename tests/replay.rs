//! The record/replay test bench through the real binary: every bundled
//! plugin's transcripts replay without the system they were recorded on,
//! a changed result fails with a diff, a plugin asking something else is
//! named at the call where it diverged, and hostile transcripts are bad
//! input (a clear error, a bounded host).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mend_test_artifacts as artifacts;
use serde_json::Value;

fn mend(args: &[&str], state: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(args)
        .env("MEND_STATE_DIR", state)
        .env("MEND_LOG", "warn")
        .output()
        .expect("running mend")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The built component of bundled plugin `name`.
fn plugin(name: &str) -> &'static str {
    let file = format!("/{}.wasm", name.replace('-', "_"));
    artifacts::PLUGINS
        .iter()
        .find(|p| p.ends_with(&file))
        .unwrap_or_else(|| panic!("no built plugin {name}"))
}

/// `plugins/NAME/transcripts/*.json`, by plugin.
fn bundled() -> Vec<(String, Vec<PathBuf>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root().join("plugins")).unwrap() {
        let dir = e.unwrap().path();
        let Ok(rd) = std::fs::read_dir(dir.join("transcripts")) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        out.push((name, files));
    }
    out.sort();
    out
}

fn transcript(plugin: &str, case: &str) -> PathBuf {
    root()
        .join("plugins")
        .join(plugin)
        .join("transcripts")
        .join(format!("{case}.json"))
}

fn load(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn save(p: &Path, v: &Value) {
    std::fs::write(p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

#[test]
fn every_bundled_transcript_replays() {
    let state = tempfile::tempdir().unwrap();
    let all = bundled();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "pg-reconnect",
        "cache-heal",
        "http-probe",
        "stale-file",
        "disk-cleanup",
        "service-restart",
        "command",
        "system",
    ] {
        assert!(
            names.contains(&want),
            "{want} ships no transcripts: {names:?}"
        );
    }
    for (name, files) in &all {
        assert!(!files.is_empty(), "{name}: an empty transcripts directory");
        let mut args = vec!["plugin", "test", plugin(name)];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        let o = mend(&args, state.path());
        let out = text(&o);
        assert!(o.status.success(), "{name}:\n{out}");
        assert_eq!(
            out.lines().filter(|l| l.starts_with("PASS ")).count(),
            files.len(),
            "{name}:\n{out}"
        );
    }
}

#[test]
fn the_postgres_transcripts_cover_down_full_and_healthy() {
    for (case, code) in [
        ("down", "db.unreachable"),
        ("too-many-clients", "db.connections.exhausted"),
        ("healthy", "db.ok"),
    ] {
        let t = load(&transcript("pg-reconnect", case));
        let codes: Vec<&str> = t["expected"]["findings"]
            .as_array()
            .unwrap_or_else(|| panic!("{case}: {}", t["expected"]))
            .iter()
            .map(|f| f["code"].as_str().unwrap())
            .collect();
        assert!(codes.contains(&code), "{case}: {codes:?}");
        assert!(
            t["tape"]["calls"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["call"] == "sql.query"),
            "{case}: recorded without a sql.query"
        );
    }
}

#[test]
fn a_changed_result_fails_with_a_diff_and_update_blesses_it() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("healthy.json");
    let mut t = load(&transcript("pg-reconnect", "healthy"));
    t["expected"]["findings"][0]["code"] = "db.was.fine".into();
    save(&file, &t);

    let o = mend(
        &[
            "plugin",
            "test",
            plugin("pg-reconnect"),
            file.to_str().unwrap(),
        ],
        state.path(),
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL "), "{out}");
    assert!(out.contains("-       \"code\": \"db.was.fine\""), "{out}");
    assert!(out.contains("+       \"code\": \"db.ok\""), "{out}");
    assert!(out.contains("0 passed, 1 failed"), "{out}");

    let o = mend(
        &[
            "plugin",
            "test",
            "--update",
            plugin("pg-reconnect"),
            file.to_str().unwrap(),
        ],
        state.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("UPDATED"), "{}", text(&o));
    assert_eq!(load(&file)["expected"]["findings"][0]["code"], "db.ok");
    let o = mend(
        &[
            "plugin",
            "test",
            plugin("pg-reconnect"),
            file.to_str().unwrap(),
        ],
        state.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_plugin_asking_something_else_is_named_at_that_call() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let original = load(&transcript("pg-reconnect", "healthy"));

    // The recorded statement differs from what the plugin asks.
    let mut t = original.clone();
    let calls = t["tape"]["calls"].as_array_mut().unwrap();
    let at = calls.iter().position(|c| c["call"] == "sql.query").unwrap();
    calls[at]["args"][1] = "select 'something else'".into();
    let changed = dir.path().join("changed.json");
    save(&changed, &t);

    // The transcript ends early.
    let mut t = original.clone();
    t["tape"]["calls"].as_array_mut().unwrap().truncate(at);
    let short = dir.path().join("short.json");
    save(&short, &t);

    // The plugin stops before the recorded calls run out.
    let mut t = original;
    let calls = t["tape"]["calls"].as_array_mut().unwrap();
    let extra = calls[at].clone();
    calls.push(extra);
    let long = dir.path().join("long.json");
    save(&long, &t);

    let o = mend(
        &[
            "plugin",
            "test",
            plugin("pg-reconnect"),
            changed.to_str().unwrap(),
            short.to_str().unwrap(),
            long.to_str().unwrap(),
        ],
        state.path(),
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let n = at + 1;
    assert!(
        out.contains(&format!("call {n}: plugin asked sql.query(")),
        "{out}"
    );
    assert!(out.contains("but the transcript has sql.query("), "{out}");
    assert!(out.contains("something else"), "{out}");
    assert!(
        out.contains(&format!("but the transcript ends after {at} calls")),
        "{out}"
    );
    assert!(
        out.contains("recorded host calls; the next was sql.query"),
        "{out}"
    );
    assert!(out.contains("0 passed, 3 failed"), "{out}");
}

#[test]
fn a_recording_replays_after_the_files_are_gone() {
    let state = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("heartbeat"), "x").unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("t.json");
    let grant = format!("{}:/data", data.path().display());
    let o = mend(
        &[
            "plugin",
            "call",
            artifacts::STALE_FILE,
            "detect",
            "--config",
            r#"{"path": "/data/heartbeat", "max_age": "1h"}"#,
            "--grant-dir",
            &grant,
            "--record",
            file.to_str().unwrap(),
        ],
        state.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let t = load(&file);
    assert_eq!(t["format"], 1);
    assert_eq!(t["plugin"]["name"], "stale-file");
    assert_eq!(t["expected"]["findings"][0]["code"], "file.fresh");
    assert_eq!(t["dirs"][0]["guest"], "/data");
    assert_eq!(t["dirs"][0]["entries"][0]["path"], "heartbeat");

    drop(data);
    let o = mend(
        &[
            "plugin",
            "test",
            artifacts::STALE_FILE,
            file.to_str().unwrap(),
        ],
        state.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn hostile_transcripts_are_refused_and_the_host_stays_bounded() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);

    std::fs::write(p("malformed.json"), "{\"format\": 1,\n \"plugin\": [").unwrap();
    let mut t = load(&transcript("stale-file", "stale"));
    t["tape"]["calls"] = Value::from(7);
    save(&p("wrong-type.json"), &t);
    let mut t = load(&transcript("stale-file", "stale"));
    t["format"] = 99.into();
    save(&p("future.json"), &t);

    // A path climbing out of the rebuilt directory, and one through a symlink.
    let outside = dir.path().join("escaped");
    let mut t = load(&transcript("stale-file", "stale"));
    let rel = format!("../../../../../../../..{}", outside.display());
    t["dirs"][0]["entries"][0]["path"] = rel.into();
    save(&p("escape.json"), &t);
    let mut t = load(&transcript("stale-file", "stale"));
    let entries = t["dirs"][0]["entries"].as_array_mut().unwrap();
    let mut link = entries[0].clone();
    link["path"] = "link".into();
    link["kind"] = "symlink".into();
    link["target"] = dir.path().to_str().unwrap().into();
    link.as_object_mut().unwrap().remove("content");
    let mut through = entries[0].clone();
    through["path"] = "link/escaped".into();
    entries.push(link);
    entries.push(through);
    save(&p("symlink.json"), &t);

    // A gigabyte (sparse): refused by its size, never read.
    let huge = std::fs::File::create(p("huge.json")).unwrap();
    huge.set_len(1 << 30).unwrap();

    let files = [
        "malformed.json",
        "wrong-type.json",
        "future.json",
        "escape.json",
        "symlink.json",
        "huge.json",
    ];
    let mut args = vec!["plugin", "test", artifacts::STALE_FILE];
    let paths: Vec<String> = files
        .iter()
        .map(|f| p(f).to_str().unwrap().to_string())
        .collect();
    args.extend(paths.iter().map(String::as_str));
    let o = mend(&args, state.path());
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("0 passed, 6 failed"), "{out}");
    assert!(out.contains("malformed.json: 2:"), "{out}");
    assert!(out.contains("at `tape.calls`"), "{out}");
    assert!(out.contains("format 99"), "{out}");
    assert!(out.contains("must be relative, plain"), "{out}");
    assert!(out.contains("lies beneath a symlink"), "{out}");
    assert!(out.contains("a transcript may hold at most"), "{out}");
    assert!(
        !outside.exists(),
        "a transcript wrote outside its directory"
    );
    assert!(!dir.path().join("escaped").exists());

    // The child read none of the gigabyte.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    let max_rss = usage.ru_maxrss as u64 * 1024;
    assert!(
        max_rss < 512 << 20,
        "a child's peak RSS was {max_rss} bytes"
    );
}
