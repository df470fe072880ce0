//! The `stale-file` plugin, through the real sandbox, on real files.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use mend::capabilities::Grants;
use mend::capabilities::fs::Mode;
use mend::contract::{Role, Status};
use mend::runtime::PluginError;
use serde_json::json;

fn age(path: &std::path::Path, by: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

fn data_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("status.json"), "{}").unwrap();
    tmp
}

#[tokio::test]
async fn describes_itself() {
    let p = load(artifacts::STALE_FILE).await;
    let m = p.manifest();
    assert_eq!(m.name, "stale-file");
    assert!(m.has_role(Role::Detector) && m.has_role(Role::Action));
    let needs = m.needs(Role::Detector).unwrap();
    assert_eq!(needs.dirs.len(), 1);
    assert_eq!(needs.dirs[0].path, "*");
    assert!(!needs.dirs[0].write, "a detector only reads");
}

#[tokio::test]
async fn a_fresh_file_is_ok() {
    let tmp = data_dir();
    let p = load(artifacts::STALE_FILE).await;
    let r = detect(
        &p,
        json!({"path": "/data/status.json", "max_age": "10m"}),
        &dir(tmp.path(), "/data", Mode::Ro),
    )
    .await
    .unwrap();
    let f = &r.value[0];
    assert_eq!(
        (f.code.as_str(), f.status),
        ("file.fresh", Status::Ok),
        "{f:?}"
    );
    assert_eq!(f.check, "test");
    assert!(f.metrics["age_seconds"] < 60.0);
    assert_eq!(f.metrics["max_age_seconds"], 600.0);
    assert_eq!(f.labels["path"], "/data/status.json");
}

#[tokio::test]
async fn an_old_file_is_stale() {
    let tmp = data_dir();
    age(&tmp.path().join("status.json"), Duration::from_secs(3600));
    let p = load(artifacts::STALE_FILE).await;
    let r = detect(
        &p,
        json!({"path": "/data/status.json", "max_age": "10m"}),
        &dir(tmp.path(), "/data", Mode::Ro),
    )
    .await
    .unwrap();
    let f = &r.value[0];
    assert_eq!(
        (f.code.as_str(), f.status),
        ("file.stale", Status::Fail),
        "{f:?}"
    );
    assert!((f.metrics["age_seconds"] - 3600.0).abs() < 60.0);
    assert!(f.summary.contains("1h0m old"), "{}", f.summary);
}

#[tokio::test]
async fn warn_age_gives_a_warning_first() {
    let tmp = data_dir();
    age(&tmp.path().join("status.json"), Duration::from_secs(400));
    let p = load(artifacts::STALE_FILE).await;
    let r = detect(
        &p,
        json!({"path": "/data/status.json", "max_age": "10m", "warn_age": "5m"}),
        &dir(tmp.path(), "/data", Mode::Ro),
    )
    .await
    .unwrap();
    assert_eq!(
        (r.value[0].code.as_str(), r.value[0].status),
        ("file.stale", Status::Warn)
    );
}

#[tokio::test]
async fn missing_and_unreadable_have_their_own_codes() {
    let tmp = data_dir();
    std::fs::create_dir(tmp.path().join("a-directory")).unwrap();
    let p = load(artifacts::STALE_FILE).await;
    let r = detect(
        &p,
        json!({"paths": ["/data/gone.json", "/data/a-directory", "/data/status.json"], "max_age": "10m"}),
        &dir(tmp.path(), "/data", Mode::Ro),
    )
    .await
    .unwrap();
    let codes: Vec<(&str, Status)> = r
        .value
        .iter()
        .map(|f| (f.code.as_str(), f.status))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("file.missing", Status::Fail),
            ("file.unreadable", Status::Fail)
        ],
        "problems are reported one by one; the fresh file adds no noise"
    );
}

#[tokio::test]
async fn many_fresh_files_fold_into_one_finding() {
    let tmp = data_dir();
    for i in 0..20 {
        std::fs::write(tmp.path().join(format!("f{i}.json")), "{}").unwrap();
    }
    age(&tmp.path().join("f7.json"), Duration::from_secs(300));
    let paths: Vec<String> = (0..20).map(|i| format!("/data/f{i}.json")).collect();
    let p = load(artifacts::STALE_FILE).await;
    let r = detect(
        &p,
        json!({"paths": paths, "max_age": "10m"}),
        &dir(tmp.path(), "/data", Mode::Ro),
    )
    .await
    .unwrap();
    assert_eq!(r.value.len(), 1);
    assert_eq!(r.value[0].code, "file.fresh");
    assert_eq!(r.value[0].metrics["files"], 20.0);
    assert!(
        (r.value[0].metrics["age_seconds"] - 300.0).abs() < 30.0,
        "the oldest age is kept"
    );
}

#[tokio::test]
async fn a_path_outside_the_grant_is_never_fresh() {
    let tmp = data_dir();
    let p = load(artifacts::STALE_FILE).await;
    let r = detect(
        &p,
        json!({"path": "/etc/hostname", "max_age": "100000d"}),
        &dir(tmp.path(), "/data", Mode::Ro),
    )
    .await
    .unwrap();
    assert_eq!(r.value[0].status, Status::Fail, "{:?}", r.value[0]);
}

#[tokio::test]
async fn without_a_directory_grant_it_does_not_run() {
    let p = load(artifacts::STALE_FILE).await;
    let err = detect(
        &p,
        json!({"path": "/data/x", "max_age": "1m"}),
        &Grants::none(),
    )
    .await
    .unwrap_err();
    match &err {
        PluginError::MissingGrant { need, .. } => assert_eq!(need, "a directory (read-only)"),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn bad_config_names_the_key() {
    let tmp = data_dir();
    let grants = dir(tmp.path(), "/data", Mode::Ro);
    let p = load(artifacts::STALE_FILE).await;
    for (config, needle) in [
        (json!({"path": "/data/status.json"}), "max_age"),
        (
            json!({"path": "/data/status.json", "max_age": "10 parsecs"}),
            "max_age",
        ),
        (
            json!({"path": "/data/status.json", "max_age": "1m", "maxage": "1m"}),
            "maxage",
        ),
        (json!({"max_age": "1m"}), "path"),
        (
            json!({"path": "/data/status.json", "max_age": "1m", "warn_age": "2m"}),
            "warn_age",
        ),
    ] {
        let err = detect(&p, config.clone(), &grants).await.unwrap_err();
        match &err {
            PluginError::BadConfig { message, .. } => {
                assert!(message.contains(needle), "{config}: {err}")
            }
            other => panic!("{config}: expected BadConfig, got {other}"),
        }
    }
}

#[tokio::test]
async fn the_file_turns_fresh_again_when_rewritten() {
    let tmp = data_dir();
    let path = tmp.path().join("status.json");
    age(&path, Duration::from_secs(7200));
    let p = load(artifacts::STALE_FILE).await;
    let grants = dir(tmp.path(), "/data", Mode::Ro);
    let config = json!({"path": "/data/status.json", "max_age": "10m"});
    let before = detect(&p, config.clone(), &grants).await.unwrap();
    assert_eq!(before.value[0].code, "file.stale");
    std::fs::write(&path, "{\"fresh\": true}").unwrap();
    let after = detect(&p, config, &grants).await.unwrap();
    assert_eq!(after.value[0].code, "file.fresh");
}
