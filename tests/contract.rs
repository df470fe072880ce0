//! The WIT boundary as a versioned layer: released contracts are frozen
//! and keep working, forever; the newest one carries typed host errors,
//! the remedy context, config validation and the engine's clock.

mod common;

use std::path::Path;
use std::time::Duration;

use common::config::{Conf, Policy, TableExt, fixer, scripted};
use common::world::{START, World, wait};
use common::*;
use mend::capabilities::Backends;
use mend::capabilities::fs::Mode;
use mend::clock::Clock;
use mend::contract::{Finding, RemedyContext, Role, Status};
use mend::runtime::{Limits, PluginError};
use serde_json::json;
use sha2::Digest;
use toml::toml;

/// `wit/0.1.0/plugin.wit` as wave 1 released it (commit 8eff26b).
const V0_1_SHA256: &str = "8f7c110689eee6ec51d1f2330fe4cf6e6d89e574fa75ae2cafb2458a1c17e4b2";

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn released_wit_is_frozen_and_the_sdk_carries_the_newest() {
    let v01 = std::fs::read(repo("wit/0.1.0/plugin.wit")).unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&v01)),
        V0_1_SHA256,
        "wit/0.1.0 was released: never edit it, add a new version"
    );
    assert_eq!(
        std::fs::read(repo("sdk/wit/plugin.wit")).unwrap(),
        std::fs::read(repo("wit/0.2.0/plugin.wit")).unwrap(),
        "sdk/wit/plugin.wit must be a copy of wit/0.2.0/plugin.wit"
    );
}

#[tokio::test]
async fn a_plugin_built_by_the_released_sdk_still_detects_and_remedies() {
    let p = load(
        repo("tests/released/stale-file-0.1.0.wasm")
            .to_str()
            .unwrap(),
    )
    .await;
    assert_eq!(p.wit_version(), "0.1.0");
    assert!(p.is_detector() && p.is_action());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("status.json"), "{}").unwrap();
    let g = common::dir(dir.path(), "/data", Mode::Ro);
    let r = detect(
        &p,
        json!({"path": "/data/status.json", "max_age": "1h"}),
        &g,
    )
    .await
    .unwrap();
    assert_eq!(r.value[0].status, Status::Ok, "{:?}", r.value);
    let r = detect(
        &p,
        json!({"path": "/data/status.json", "max_age": "0s"}),
        &g,
    )
    .await
    .unwrap();
    assert_eq!(r.value[0].code, "file.stale", "{:?}", r.value);

    // Its action, through a command grant, real and dry.
    let marker = dir.path().join("restarted");
    let backends = Backends::from_toml(&format!(
        "[commands.restart]\nargv = [\"/bin/touch\", \"{}\"]\n",
        marker.display()
    ))
    .unwrap();
    let grants = mend::capabilities::Grants {
        commands: vec!["restart".into()],
        ..Default::default()
    }
    .resolve_with(&backends)
    .unwrap();
    let cfg = json!({"command": "restart"});
    let plan = remedy_in(&p, cfg.clone(), &grants, &r.value, true)
        .await
        .unwrap();
    assert!(!plan.value.changed && !marker.exists(), "{:?}", plan.value);
    let done = remedy_in(&p, cfg, &grants, &r.value, false).await.unwrap();
    assert!(done.value.changed && marker.exists(), "{:?}", done.value);
    // 0.1 cannot check a config before it runs.
    assert_eq!(
        runtime()
            .validate(
                &p,
                Role::Detector,
                &mend::runtime::PluginConfig::from(json!({"path": "/x"}))
            )
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn every_0_1_import_answers_the_way_0_1_spells_it() {
    let p = load(artifacts::CONTRACT_V0_1).await;
    assert_eq!(p.wit_version(), "0.1.0");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), "").unwrap();
    let mut grants = resolved(&common::dir(dir.path(), "/data", Mode::Ro));
    grants.state = true;
    let clock = Clock::starting_at(START);
    let config = mend::runtime::PluginConfig::from(json!({"dir": "/data"}));
    let req = mend::runtime::Request {
        clock,
        ..request(&config, &grants, Limits::default())
    };
    let r = runtime().detect(&p, &req).await.unwrap();
    let l = &r.value[0].labels;
    let now: u64 = l["now_ms"].parse().unwrap();
    assert!(
        (START..START + 60_000).contains(&now),
        "the engine's clock: {now}"
    );
    assert_eq!(l["state_get"], "ok None");
    assert_eq!(l["disk_usage"], "ok true");
    assert_eq!(l["listing"], "1");
    // Refusals are the strings 0.1 plugins parse: `denied: ...`.
    for k in ["exec", "sql", "redis"] {
        assert!(l[k].starts_with("err denied: "), "{k}: {}", l[k]);
    }
    // Remedy: a real run writes state; a dry run's write goes nowhere.
    let f = r.value.clone();
    let out = runtime()
        .remedy(&p, &req, &f, RemedyContext::manual("fix", true))
        .await
        .unwrap();
    assert_eq!(out.value.message, "0.1 remedy, dry_run=true");
    let out = runtime()
        .remedy(&p, &req, &f, RemedyContext::manual("fix", false))
        .await
        .unwrap();
    assert!(out.value.changed, "{:?}", out.value);
    assert!(out.value.steps[1].contains("ok ()"), "{:?}", out.value);
    assert!(
        out.value.steps[2].contains("err denied: "),
        "{:?}",
        out.value
    );
    let r = runtime().detect(&p, &req).await.unwrap();
    assert_eq!(r.value[0].labels["state_get"], "ok Some([121, 101, 115])");
}

#[tokio::test]
async fn host_errors_reach_a_0_2_plugin_typed() {
    let p = load(artifacts::HOSTILE).await;
    assert_eq!(p.wit_version(), "0.2.0");
    let r = detect(
        &p,
        json!({"mode": "host-error", "name": "nope"}),
        &mend::capabilities::Grants::none(),
    )
    .await
    .unwrap();
    assert_eq!(
        r.value[0].summary,
        "Denied(\"command `nope` is not granted to this plugin\")"
    );
}

#[tokio::test]
async fn validate_checks_a_config_and_reports_what_it_reaches() {
    let probe = load(artifacts::HTTP_PROBE).await;
    let needs = runtime()
        .validate(
            &probe,
            Role::Detector,
            &mend::runtime::PluginConfig::from(json!({"url": "http://127.0.0.1:9/health"})),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(needs.urls, vec!["http://127.0.0.1:9/health".to_string()]);
    let err = runtime()
        .validate(
            &probe,
            Role::Detector,
            &mend::runtime::PluginConfig::from(json!({"url": "x", "tiemout": "1s"})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PluginError::BadConfig { message, .. } if message.contains("tiemout")),
        "{err}"
    );
    // A role the plugin does not play is refused.
    assert!(
        runtime()
            .validate(
                &probe,
                Role::Action,
                &mend::runtime::PluginConfig::from(json!({}))
            )
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn an_action_is_told_its_incident_policy_step_and_attempt_and_reads_the_engines_clock() {
    let conf = Conf::new()
        .check(scripted("app").with(toml! { severity = "critical" }))
        .policy(
            Policy::new("fix-app", "app")
                .with(toml! {
                    trigger = { consecutive = 1 }
                    backoff = { base = "1s", jitter = 0.0 }
                })
                .step(
                    fixer("app", "gentle", "fail")
                        .with(toml! { config = { context_log = "/ctl/context.log" } }),
                )
                .step(
                    fixer("app", "firm", "ok")
                        .with(toml! { config = { context_log = "/ctl/context.log" } }),
                ),
        );
    let w = World::start(&conf, &[("app", "fail")]).await;
    w.next_run("app").await;
    wait(Duration::from_secs(30)).await;
    assert_eq!(
        w.calls("context.log"),
        vec![
            "incident=1 policy=fix-app step=gentle ref=Ladder(0) attempt=1 severity=Critical",
            "incident=1 policy=fix-app step=firm ref=Ladder(1) attempt=1 severity=Critical",
        ]
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn plugins_read_the_engines_clock_through_mend_and_wasi() {
    let p = load(artifacts::HOSTILE).await;
    let none = resolved(&mend::capabilities::Grants::none());
    let config = mend::runtime::PluginConfig::from(json!({"mode": "clock"}));
    // A virtual clock a year from now: both clocks the plugin can read
    // say so.
    let year = 365 * 24 * 3600 * 1000;
    let clock = Clock::starting_at(START + year);
    let req = mend::runtime::Request {
        clock,
        ..request(&config, &none, Limits::default())
    };
    let r = runtime().detect(&p, &req).await.unwrap();
    let f: &Finding = &r.value[0];
    for m in ["mend_ms", "wasi_ms"] {
        let at = f.metrics[m] as u64;
        assert!(
            (START + year..START + year + 60_000).contains(&at),
            "{m}: {at}"
        );
    }
}
