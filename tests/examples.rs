//! The bundled examples: each passes `mend check-config`, and the
//! quickstart (what `scripts/run` starts) really cleans its scratch
//! directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use mend::store::{AttemptOutcome, IncidentState, Store};
use mend_test_artifacts as artifacts;

/// A copy of `examples/` with the `../target/demo` tree the examples expect.
fn layout() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let examples = root.path().join("examples");
    std::fs::create_dir(&examples).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for e in std::fs::read_dir(repo).unwrap().flatten() {
        let to = examples.join(e.file_name());
        std::fs::copy(e.path(), &to).unwrap();
        // Tests run side by side: the admin API's fixed port stays free.
        if to.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&to).unwrap();
            std::fs::write(
                &to,
                text.replace("listen = \"127.0.0.1:9770\"", "listen = \"off\""),
            )
            .unwrap();
        }
    }
    let demo = root.path().join("target/demo");
    for d in [
        "plugins",
        "scratch",
        "state",
        "status",
        "webapp/logs",
        "webapp/run",
        "deploy/releases",
    ] {
        std::fs::create_dir_all(demo.join(d)).unwrap();
    }
    for p in artifacts::PLUGINS {
        std::fs::copy(
            p,
            demo.join("plugins").join(Path::new(p).file_name().unwrap()),
        )
        .unwrap();
    }
    (root, examples)
}

fn mend() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mend"));
    c.env("MEND_LOG", "warn");
    c
}

#[test]
fn every_example_passes_check_config() {
    let (_root, examples) = layout();
    let mut n = 0;
    for e in std::fs::read_dir(&examples).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "toml") {
            let out = mend().arg("check-config").arg(e.path()).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{}: {text}", e.path().display());
            assert!(text.contains(": ok ("), "{text}");
            n += 1;
        }
    }
    assert!(n >= 1, "no examples found");
}

#[test]
fn check_config_lists_every_problem() {
    let (_root, examples) = layout();
    let path = examples.join("quickstart.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("plugin = \"disk-cleanup\"", "plugin = \"disk-cleaner\"")
        .replace(
            "name = \"delete-old-logs\"\naction = \"disk-cleanup\"",
            "name = \"delete-old-logs\"\naction = \"http-probe\"",
        )
        .replace(
            "mode = \"rw\" }] }\nconfig = { path = \"/scratch\", patterns = [\"**/*.dat\"]",
            "mode = \"ro\" }] }\nconfig = { path = \"/scratch\", patterns = [\"**/*.dat\"]",
        );
    std::fs::write(&path, text).unwrap();
    let out = mend().arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("check[0].plugin: no plugin named `disk-cleaner`")
            && text.contains("did you mean `disk-cleanup`?"),
        "{text}"
    );
    assert!(
        text.contains("policy[0].step[0].action: plugin `http-probe` is a detector, not an action"),
        "{text}"
    );
    assert!(
        text.contains("policy[0].step[1].grants: plugin `disk-cleanup` needs a directory (read-write), which is not granted"),
        "{text}"
    );
    assert!(text.contains("3 problem(s)"), "{text}");
}

#[test]
fn the_system_example_needs_its_process_grant() {
    let (_root, examples) = layout();
    let path = examples.join("system.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    assert!(original.contains("plugin = \"system\""));
    // The nginx check's grant names no process, and the host check's none.
    let text = original
        .replace(
            "grants = { system = { processes = [\"nginx\"] } }",
            "grants = { system = true }",
        )
        .replace("grants = { system = true }\n# CPU", "grants = {}\n# CPU");
    std::fs::write(&path, text).unwrap();
    let out = mend().arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("check[0].grants: plugin `system` needs system facts (`system = true`)"),
        "{text}"
    );
    assert!(
        text.contains("check[1].config: with this config plugin `system` reaches process `nginx`"),
        "{text}"
    );
    assert!(text.contains("2 problem(s)"), "{text}");
}

#[test]
fn the_webapp_example_pages_on_latency_against_its_own_baseline() {
    let (_root, examples) = layout();
    let path = examples.join("webapp.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    let anomaly = "anomaly = { metric = \"latency_ms\", sigma = 4, min_history = \"1h\", season = \"1d\", min_deviation = 20 }";
    assert!(
        original.contains(anomaly),
        "the example lost its anomaly trigger"
    );
    // Each bad value is named by its key, at its line and column.
    let text = original.replace(
        anomaly,
        "anomaly = { metric = \"latency_ms\", sigma = 0, min_history = \"1h\", season = \"1m\", buckets = 24 }",
    );
    std::fs::write(&path, &text).unwrap();
    let out = mend().arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().position(|l| l.contains("sigma = 0")).unwrap() + 1;
    assert!(
        stdout.contains(&format!(":{line}:"))
            && stdout.contains("policy[1].trigger.anomaly.sigma: 0 is not in (0, 100]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("policy[1].trigger.anomaly.season: 1m in 24 buckets is less than the check's interval (15s) per bucket"),
        "{stdout}"
    );
    assert!(stdout.contains("2 problem(s)"), "{stdout}");
}

#[test]
fn the_quickstart_cleans_its_scratch_directory() {
    let (root, examples) = layout();
    let scratch = root.path().join("target/demo/scratch");
    for i in 0..14 {
        let p = scratch.join(format!("app-{i:02}.log"));
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(3600 * (30 - i)))
            .unwrap();
    }
    std::fs::write(scratch.join("current.log"), vec![0u8; 1 << 19]).unwrap();

    let mut child = mend()
        .arg("run")
        .arg("--config")
        .arg(examples.join("quickstart.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = root.path().join("target/demo/state/mend.db");
    let start = Instant::now();
    let healed = loop {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no healed incident in time"
        );
        std::thread::sleep(Duration::from_millis(200));
        let Ok(store) = Store::open_read_only(&db) else {
            continue;
        };
        if let Some(i) = store
            .incidents(false, 10)
            .unwrap_or_default()
            .into_iter()
            .find(|i| i.state == IncidentState::Healed)
        {
            break i;
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    assert_eq!(healed.policy, "clean-scratch");
    assert_eq!(healed.attempts[0].action, "delete-old-logs");
    assert_eq!(healed.attempts[0].outcome, AttemptOutcome::Healed);
    let bytes: u64 = std::fs::read_dir(&scratch)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(bytes < 6 << 20, "{bytes} bytes left");
    assert!(scratch.join("current.log").exists(), "young files are kept");
    assert!(
        scratch.join("app-13.log").exists(),
        "only what was needed went"
    );
    assert!(!scratch.join("app-00.log").exists(), "oldest first");
}

/// The status-page incident, end to end through `mend run`: the data file
/// goes stale, mend runs the `restart-poller` command (the example's
/// stand-in poller, which rewrites the file), verifies the file is fresh,
/// and records the incident as healed.
#[test]
fn the_status_page_example_restarts_its_poller() {
    let (root, examples) = layout();
    let data = root.path().join("target/demo/status/status.json");
    std::fs::write(&data, "{\"services\":{}}").unwrap();
    let f = std::fs::File::options().write(true).open(&data).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3 * 3600))
        .unwrap();
    drop(f);

    // Other tests run mend at the same time: no admin API on a fixed port.
    let config = examples.join("status-page.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[api]\nlisten = \"off\"\n");
    std::fs::write(&config, text).unwrap();
    let mut child = mend()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = root.path().join("target/demo/state/mend.db");
    let start = Instant::now();
    let closed = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("mend exited early: {status:?}");
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("no closed incident in time");
        }
        std::thread::sleep(Duration::from_millis(200));
        let Ok(store) = Store::open_read_only(&db) else {
            continue;
        };
        if let Some(i) = store
            .incidents(false, 10)
            .unwrap_or_default()
            .into_iter()
            .find(|i| i.closed_at.is_some())
        {
            break i;
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    assert_eq!(closed.state, IncidentState::Healed, "{closed:#?}");
    assert_eq!(closed.policy, "restart-poller");
    assert_eq!(closed.attempts.len(), 1, "{closed:#?}");
    assert_eq!(closed.attempts[0].action, "restart-poller");
    assert_eq!(closed.attempts[0].outcome, AttemptOutcome::Healed);
    // The poller, not mend, rewrote the file.
    let text = std::fs::read_to_string(&data).unwrap();
    assert!(text.contains("\"api\":\"operational\""), "{text}");
    let age = SystemTime::now()
        .duration_since(std::fs::metadata(&data).unwrap().modified().unwrap())
        .unwrap_or_default();
    assert!(age < Duration::from_secs(600), "still stale: {age:?}");
}

/// `check-config` checks a plugin's needs against its grants, not its own
/// config table. So call every check's detector and every step's action
/// (in dry-run) with the example's own config and grants, and none may
/// answer bad-config: a key renamed in a plugin breaks this test, not a
/// user's first run. The connections keep their names but point at a port
/// nothing listens on, so no real server is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_config_table_is_accepted_by_its_plugin() {
    use mend::capabilities::{Backends, ConnectionDef};
    use mend::runtime::{Limits, PluginError, Request, Runtime, RuntimeConfig};

    let (root, examples) = layout();
    let runtime = Runtime::new(RuntimeConfig {
        state_dir: Some(root.path().join("runtime-state")),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let mut plugins = std::collections::BTreeMap::new();
    for p in artifacts::PLUGINS {
        let plugin = runtime.load_file(Path::new(p)).await.unwrap();
        plugins.insert(plugin.name().to_string(), plugin);
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let mut calls = 0;
    for e in std::fs::read_dir(&examples).unwrap().flatten() {
        if e.path().extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let config = mend::config::load(&e.path()).unwrap();
        let mut defs = String::new();
        for (name, def) in &config.connections {
            let url = match def {
                ConnectionDef::Postgres(_) => {
                    format!("postgres://postgres@127.0.0.1:{closed}/none")
                }
                ConnectionDef::Redis(_) => format!("redis://127.0.0.1:{closed}/0"),
            };
            let kind = match def {
                ConnectionDef::Postgres(_) => "postgres",
                ConnectionDef::Redis(_) => "redis",
            };
            defs.push_str(&format!(
                "[connections.{name}]\nkind = \"{kind}\"\nurl = \"{url}\"\ntimeout = \"1s\"\n"
            ));
        }
        // Dry-run never runs a command; these only have to exist.
        for name in config.commands.keys() {
            defs.push_str(&format!("[commands.{name}]\nargv = [\"/bin/false\"]\n"));
        }
        let backends = Backends::from_toml(&defs).unwrap();
        let file = e.path().display().to_string();

        let check = |what: String, r: Result<(), PluginError>| {
            if let Err(err @ PluginError::BadConfig { .. }) = r {
                panic!("{file}: {what}: {err}");
            }
        };
        for c in &config.checks {
            let plugin = &plugins[c.plugin.get_ref()];
            let grants = c.grants.resolve_with(&backends).unwrap();
            let json = mend::runtime::PluginConfig::from(serde_json::to_value(&c.config).unwrap());
            let r = runtime
                .detect(
                    plugin,
                    &Request {
                        check: c.name.get_ref(),
                        config: &json,
                        labels: &c.labels,
                        grants: &grants,
                        limits: Limits::default(),
                        clock: mend::clock::Clock::system(),
                    },
                )
                .await;
            check(format!("check {}", c.name.get_ref()), r.map(|_| ()));
            calls += 1;
        }
        for p in &config.policies {
            for s in p.steps.iter().chain(p.escalate.as_ref()) {
                let plugin = &plugins[s.action.get_ref()];
                let grants = s.grants.resolve_with(&backends).unwrap();
                let json =
                    mend::runtime::PluginConfig::from(serde_json::to_value(&s.config).unwrap());
                let r = runtime
                    .remedy(
                        plugin,
                        &Request {
                            check: p.check.get_ref(),
                            config: &json,
                            labels: &Default::default(),
                            grants: &grants,
                            limits: Limits::default(),
                            clock: mend::clock::Clock::system(),
                        },
                        &[],
                        mend::contract::RemedyContext::manual(s.name(), true),
                    )
                    .await;
                check(
                    format!("policy {} step {}", p.name.get_ref(), s.name()),
                    r.map(|_| ()),
                );
                calls += 1;
            }
        }
    }
    assert!(calls >= 20, "only {calls} plugin calls");
}
