//! Shared helpers for the integration tests: one runtime per test binary
//! (with its own compile cache), and short ways to load and call plugins.
#![allow(dead_code)]

pub mod config;
pub mod memory;
pub mod nats;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod service;
pub mod world;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use mend::capabilities::fs::{DirGrant, Mode};
use mend::capabilities::{Grants, ResolvedGrants};
use mend::clock::Clock;
use mend::contract::{Finding, RemedyContext};
use mend::runtime::{Limits, Plugin, PluginError, Report, Request, Runtime, RuntimeConfig};

/// No labels.
pub static NO_LABELS: std::sync::LazyLock<std::collections::BTreeMap<String, String>> =
    std::sync::LazyLock::new(Default::default);

/// A call for check `test` with these grants and limits, on the real clock.
pub fn request<'a>(
    config: &'a mend::runtime::PluginConfig,
    grants: &'a ResolvedGrants,
    limits: Limits,
) -> Request<'a> {
    Request {
        check: "test",
        config,
        labels: &NO_LABELS,
        grants,
        limits,
        clock: Clock::system(),
    }
}

pub use mend_test_artifacts as artifacts;

/// A runtime shared by every test in the binary. Its state directory lives
/// under the target dir so the compile cache survives between runs.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("mend-test-state-")
            .tempdir()
            .unwrap()
            .keep();
        Runtime::new(RuntimeConfig {
            state_dir: Some(dir),
            ..RuntimeConfig::default()
        })
        .expect("runtime")
    })
}

pub async fn load(path: &str) -> Plugin {
    runtime()
        .load_file(Path::new(path))
        .await
        .unwrap_or_else(|e| panic!("loading {path}: {e}"))
}

/// Grants one host directory at a guest path.
pub fn dir(host: &Path, guest: &str, mode: Mode) -> Grants {
    Grants {
        dirs: vec![DirGrant {
            host: host.to_path_buf(),
            guest: Some(guest.into()),
            mode,
        }],
        ..Grants::none()
    }
}

pub fn resolved(g: &Grants) -> ResolvedGrants {
    g.resolve().expect("grants resolve")
}

pub async fn detect_with(
    plugin: &Plugin,
    config: serde_json::Value,
    grants: &Grants,
    limits: Limits,
) -> Result<Report<Vec<Finding>>, PluginError> {
    let grants = resolved(grants);
    runtime()
        .detect(plugin, &request(&config.into(), &grants, limits))
        .await
}

pub async fn detect(
    plugin: &Plugin,
    config: serde_json::Value,
    grants: &Grants,
) -> Result<Report<Vec<Finding>>, PluginError> {
    detect_with(plugin, config, grants, Limits::default()).await
}

pub async fn remedy(
    plugin: &Plugin,
    config: serde_json::Value,
    grants: &Grants,
    dry_run: bool,
) -> Result<Report<mend::contract::Outcome>, PluginError> {
    let grants = resolved(grants);
    runtime()
        .remedy(
            plugin,
            &request(&config.into(), &grants, Limits::default()),
            &[],
            RemedyContext::manual("test", dry_run),
        )
        .await
}

/// Limits for hostile calls: small and quick.
pub fn tight() -> Limits {
    Limits {
        fuel: 2_000_000_000,
        deadline: Duration::from_secs(10),
        memory: 32 << 20,
        ..Limits::default()
    }
}

/// The host still serves after whatever came before: a trivial detector
/// answers normally.
pub async fn still_serving() {
    let trivial = load(artifacts::TRIVIAL).await;
    let r = detect(&trivial, serde_json::json!({}), &Grants::none())
        .await
        .expect("the host keeps serving after a hostile call");
    assert_eq!(r.value.len(), 1);
    assert_eq!(r.value[0].code, "trivial.ok");
}

/// Detects with grants already resolved (e.g. against [`mend::capabilities::Backends`]).
pub async fn detect_in(
    plugin: &Plugin,
    config: serde_json::Value,
    grants: &ResolvedGrants,
) -> Result<Report<Vec<Finding>>, PluginError> {
    runtime()
        .detect(plugin, &request(&config.into(), grants, Limits::default()))
        .await
}

/// [`detect_in`] with explicit limits.
pub async fn detect_in_with(
    plugin: &Plugin,
    config: serde_json::Value,
    grants: &ResolvedGrants,
    limits: Limits,
) -> Result<Report<Vec<Finding>>, PluginError> {
    runtime()
        .detect(plugin, &request(&config.into(), grants, limits))
        .await
}

/// Remedies with grants already resolved, for `findings`.
pub async fn remedy_in(
    plugin: &Plugin,
    config: serde_json::Value,
    grants: &ResolvedGrants,
    findings: &[Finding],
    dry_run: bool,
) -> Result<Report<mend::contract::Outcome>, PluginError> {
    runtime()
        .remedy(
            plugin,
            &request(&config.into(), grants, Limits::default()),
            findings,
            RemedyContext::manual("test", dry_run),
        )
        .await
}
