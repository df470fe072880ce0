//! `mend run` as a service, the way a new user meets it: the real binary
//! with its HTTP API on a real port, driven by the `mend` CLI, curl-like
//! HTTP calls, signals and systemd's notify socket. Real plugins, a real
//! SQLite store, real time.

mod common;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::service::*;
use mend::store::{AttemptOutcome, IncidentState};
use mend_test_artifacts as artifacts;
use serde_json::{Value, json};

#[test]
fn cli_shows_status_heals_a_check_and_pauses() {
    let m = Mend::start(&[]);
    m.set("app", "fail disk.full");
    m.wait_for("the check to fail", Duration::from_secs(30), |m| {
        m.check("app")["status"] == "fail"
    });

    // A failing check: `status` says so in its exit code.
    let out = m.cli(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("CHECK") && text.contains("app"), "{text}");
    assert!(
        text.contains("fail") && text.contains("disk.full"),
        "{text}"
    );

    // A dry run plans and changes nothing.
    let out = m.cli(&["heal", "app", "--dry-run"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("healing (dry run), incident 1"),
        "{}",
        stdout(&out)
    );
    m.wait_for("the plan", Duration::from_secs(30), |m| {
        m.incidents()
            .first()
            .is_some_and(|i| i.state == IncidentState::Planned)
    });
    assert_eq!(m.read("app"), "fail disk.full");

    // The real heal goes through the ladder and is verified.
    let out = m.cli(&["heal", "app"]);
    assert!(out.status.success(), "{out:?}");
    m.wait_for("the heal", Duration::from_secs(30), |m| {
        m.incidents()
            .get(1)
            .is_some_and(|i| i.state == IncidentState::Healed)
    });
    assert_eq!(m.read("app"), "ok");
    assert_eq!(m.actions(), 1);

    let out = m.cli(&["incidents"]);
    let text = stdout(&out);
    assert!(
        text.contains("healed") && text.contains("planned"),
        "{text}"
    );
    let out = m.cli(&["incident", "2"]);
    let text = stdout(&out);
    assert!(text.contains("manual heal requested by api"), "{text}");
    assert!(text.contains("fix") && text.contains("healed"), "{text}");
    // What each attempt did: its message, whether it changed anything,
    // and (for the dry run) the plan.
    assert!(text.contains("message  fixed"), "{text}");
    assert!(text.contains("did      wrote \"ok\" to /ctl/app"), "{text}");
    assert!(text.contains(" yes "), "changed: {text}");
    let text = stdout(&m.cli(&["incident", "1"]));
    assert!(text.contains("message  dry-run"), "{text}");
    assert!(
        text.contains("plan     would write \"ok\" to /ctl/app"),
        "{text}"
    );
    let out = m.cli(&["incident", "99"]);
    assert_eq!(out.status.code(), Some(5), "not found: {out:?}");
    let out = m.cli(&["incident", "2", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["attempts"][0]["outcome"], "healed");

    // Paused: nothing starts, and the CLI says why.
    let out = m.cli(&["pause", "--reason", "disk swap"]);
    assert!(out.status.success(), "{out:?}");
    m.set("app", "fail disk.full");
    let out = m.cli(&["heal", "app"]);
    assert_eq!(out.status.code(), Some(4), "refused: {out:?}");
    assert!(
        stdout(&out).contains("mend is paused: disk swap"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&m.cli(&["status"])).contains("PAUSED: disk swap"));
    let out = m.cli(&["resume"]);
    assert!(stdout(&out).contains("resumed"), "{out:?}");
    assert_eq!(m.incidents().len(), 2);
    m.stop();
}

#[test]
fn api_refuses_changes_without_the_token_and_serves_reads() {
    let m = Mend::start(&[]);
    let (code, _) = m.post("/api/v1/pause", None, &json!({}));
    assert_eq!(code, 401);
    let (code, _) = m.post("/api/v1/pause", Some("wrong"), &json!({}));
    assert_eq!(code, 401);
    let (code, _) = m.post("/api/v1/checks/app/heal", Some("t0k3n"), &json!({}));
    assert_eq!(code, 401, "a prefix of the token is not the token");
    let (code, _) = m.post("/api/v1/checks/nope/run", Some(TOKEN), &json!({}));
    assert_eq!(code, 404);

    let (code, v) = m.post("/api/v1/checks/app/run", Some(TOKEN), &json!({}));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["findings"][0]["code"], "scripted.ok");

    // Bodies are size-limited: 413, or (when mend answers before the
    // client has sent it all) the connection closed under the sender.
    let big = json!({ "alerts": [], "pad": "x".repeat(2 << 20) });
    let sent = Mend::agent()
        .post(format!("{}/api/v1/alertmanager", m.url))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send_json(&big);
    match sent {
        Ok(resp) => assert_eq!(resp.status().as_u16(), 413),
        Err(e) => assert!(matches!(e, ureq::Error::Io(_)), "{e}"),
    }
    assert_eq!(m.get("/healthz").unwrap().0, 200, "mend is still serving");

    let (code, spec) = m.get("/api/v1/openapi.json").unwrap();
    assert_eq!(code, 200);
    for path in [
        "/healthz",
        "/api/v1/checks/{name}/heal",
        "/api/v1/incidents/{id}",
        "/api/v1/alertmanager",
        "/metrics",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} not in the spec");
    }
    let metrics = m.get_text("/metrics");
    assert!(
        metrics.contains("mend_check_status{check=\"app\",status=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("mend_detect_duration_seconds_count{plugin=\"fixture-scripted\"}"));
    assert!(metrics.contains("mend_open_incidents 0"));
    let page = m.get_text("/");
    assert!(page.contains("<title>mend</title>"));
    m.stop();
}

#[test]
fn an_alert_delivered_twice_heals_once() {
    let m = Mend::start(&[]);
    m.set("app", "fail");
    m.wait_for("the check to fail", Duration::from_secs(30), |m| {
        m.check("app")["status"] == "fail"
    });
    let (code, first) = m.post("/api/v1/alertmanager", Some(TOKEN), &alert("4f2a9c"));
    assert_eq!(code, 200, "{first}");
    let (code, second) = m.post("/api/v1/alertmanager", Some(TOKEN), &alert("4f2a9c"));
    assert_eq!(code, 200, "{second}");
    assert_eq!(first["healing"][0]["check"], "app", "{first}");
    assert_eq!(second["duplicates"], 1, "{second}");
    assert_eq!(second["healing"], json!([]), "{second}");

    m.wait_for("the heal", Duration::from_secs(30), |m| {
        m.incidents()
            .first()
            .is_some_and(|i| i.state == IncidentState::Healed)
    });
    // Let any second remediation show itself, were there one.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(m.incidents().len(), 1);
    assert_eq!(m.actions(), 1, "one remediation");
    let inc = &m.incidents()[0];
    assert!(
        inc.diagnosis["reason"]
            .as_str()
            .unwrap()
            .contains("alertmanager (alert AppDown, fingerprint 4f2a9c)"),
        "{inc:?}"
    );

    // An alert no rule maps is acknowledged and ignored.
    let mut other = alert("77");
    other["alerts"][0]["labels"]["service"] = json!("db");
    let (code, v) = m.post("/api/v1/alertmanager", Some(TOKEN), &other);
    assert_eq!((code, v["unmatched"].clone()), (200, json!(1)));
    let metrics = m.get_text("/metrics");
    assert!(metrics.contains("mend_alerts_received_total{outcome=\"duplicate\"} 1"));
    m.stop();
}

/// A plugin file as another build of it: the same component with a custom
/// section appended (a different hash, the same behaviour).
fn rebuilt(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"mend-test-build";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section
    out.push(payload.len() as u8); // LEB128, < 128
    out.extend_from_slice(&payload);
    out
}

fn plugin_sha(m: &Mend, name: &str) -> Option<String> {
    let (_, v) = m.get("/api/v1/plugins")?;
    v["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["sha256"].as_str().map(str::to_string))
}

fn last_at(m: &Mend) -> u64 {
    m.check("app")["last"]["at"].as_u64().unwrap_or(0)
}

#[test]
fn a_replaced_plugin_file_serves_the_next_call_and_a_broken_one_is_refused() {
    let m = Mend::start(&[]);
    let file = m.plugins_dir().join("fixture_scripted.wasm");
    let file = if file.exists() {
        file
    } else {
        m.plugins_dir()
            .join(Path::new(artifacts::SCRIPTED).file_name().unwrap())
    };
    let original = std::fs::read(&file).unwrap();
    let before = plugin_sha(&m, "fixture-scripted").unwrap();

    // Replaced (written to a temporary name, then renamed into place, as
    // an installer does): the new build serves the next call.
    let v2 = rebuilt(&original, "v2");
    let tmp = m.plugins_dir().join("incoming.tmp");
    std::fs::write(&tmp, &v2).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    m.wait_for("the new build", Duration::from_secs(30), |m| {
        plugin_sha(m, "fixture-scripted").is_some_and(|s| s != before)
    });
    let swapped = last_at(&m);
    m.wait_for("a run on the new build", Duration::from_secs(30), |m| {
        last_at(m) > swapped
    });
    assert_eq!(m.check("app")["status"], "ok");
    let new_sha = plugin_sha(&m, "fixture-scripted").unwrap();

    // Half written: refused and reported; the working build stays.
    std::fs::write(&file, &original[..original.len() / 2]).unwrap();
    let refused = |m: &Mend, what: &str| {
        m.get("/api/v1/plugins").is_some_and(|(_, v)| {
            v["reload"]["refused"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x.as_str().unwrap_or("").contains(what)))
        })
    };
    m.wait_for(
        "the broken file to be reported",
        Duration::from_secs(30),
        |m| refused(m, "fixture_scripted.wasm") || refused(m, "not a WebAssembly"),
    );
    assert_eq!(plugin_sha(&m, "fixture-scripted"), Some(new_sha));
    let t = last_at(&m);
    m.wait_for("a run on the kept build", Duration::from_secs(30), |m| {
        last_at(m) > t
    });
    assert_eq!(m.check("app")["status"], "ok");

    // Removed while the config uses it: refused too (the plan would not
    // compile); the loaded build keeps serving.
    std::fs::remove_file(&file).unwrap();
    m.wait_for("the removal to be refused", Duration::from_secs(30), |m| {
        refused(m, "no plugin named `fixture-scripted`")
    });
    let t = last_at(&m);
    m.wait_for("a run on the kept build", Duration::from_secs(30), |m| {
        last_at(m) > t
    });
    assert_eq!(m.check("app")["status"], "ok");

    // Back again (the first build): taken.
    std::fs::write(&file, &original).unwrap();
    m.wait_for("the plugin to be back", Duration::from_secs(30), |m| {
        plugin_sha(m, "fixture-scripted").is_some_and(|s| s == before)
    });
    let metrics = m.get_text("/metrics");
    assert!(
        metrics.contains("mend_reloads_total{kind=\"plugins\",result=\"ok\"}"),
        "{metrics}"
    );
    m.stop();
}

#[test]
fn sigterm_lets_the_action_in_flight_finish_and_loses_nothing() {
    let m = Mend::start(&[]);
    m.set("app", "fail");
    m.set("slow", "");
    m.wait_for("the check to fail", Duration::from_secs(30), |m| {
        m.check("app")["status"] == "fail"
    });
    let (code, v) = m.post("/api/v1/checks/app/heal", Some(TOKEN), &json!({}));
    assert_eq!(code, 202, "{v}");
    m.wait_for("the action in flight", Duration::from_secs(30), |m| {
        m.incidents().first().is_some_and(|i| {
            i.attempts
                .iter()
                .any(|a| a.outcome == AttemptOutcome::Running)
        })
    });
    let mut m = m;
    m.signal("-TERM");
    let (status, log) = m.wait_exit(Duration::from_secs(40));
    assert!(status.success(), "{status:?}\n{log}");
    // The action finished (the fixer wrote the file after its sleep) and
    // was recorded; nothing is left `running`.
    assert_eq!(m.read("app"), "ok", "{log}");
    let inc = &m.incidents()[0];
    assert_eq!(inc.attempts.len(), 1);
    assert_ne!(inc.attempts[0].outcome, AttemptOutcome::Running, "{inc:?}");
    assert!(inc.attempts[0].finished_at.is_some());
    assert!(log.contains("stopping: no new actions"), "{log}");
}

/// systemd's side of the notify socket.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket {
            sock,
            path,
            _dir: dir,
        }
    }

    /// Messages until one contains `want`, or panics after `limit`.
    fn until(&self, want: &str, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.lines().any(|l| l == want);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
        }
        panic!("no {want} from mend within {limit:?}; got {seen:?}");
    }
}

#[test]
fn under_systemd_it_notifies_ready_pings_the_watchdog_and_reloads_on_sighup() {
    let notify = NotifySocket::new();
    let mut m = Mend::start(&[
        ("NOTIFY_SOCKET", notify.path.to_str().unwrap()),
        ("WATCHDOG_USEC", "3000000"),
    ]);
    let first = notify.until("READY=1", Duration::from_secs(30));
    assert!(
        first.iter().any(|s| s.contains("STATUS=1 checks")),
        "{first:?}"
    );
    notify.until("WATCHDOG=1", Duration::from_secs(5));
    notify.until("WATCHDOG=1", Duration::from_secs(5));

    // SIGHUP with a new check: reloaded, and the API serves the new config.
    let port = m.url.rsplit(':').next().unwrap().parse().unwrap();
    let extra = format!(
        r#"
[[check]]
name = "second"
plugin = "fixture-scripted"
grants = {{ dirs = [{{ host = "{}", guest = "/ctl" }}] }}
config = {{ file = "/ctl/app" }}
"#,
        m.ctl.path().display()
    );
    let good = config_text(
        m.ctl.path(),
        port,
        &extra,
        "trigger = { consecutive = 1000 }",
    );
    std::fs::write(&m.config, &good).unwrap();
    m.signal("-HUP");
    notify.until("RELOADING=1", Duration::from_secs(30));
    notify.until("READY=1", Duration::from_secs(30));
    m.wait_for("the new check", Duration::from_secs(10), |m| {
        m.get("/api/v1/checks")
            .is_some_and(|(_, v)| v.as_array().is_some_and(|a| a.len() == 2))
    });

    // SIGHUP with a broken config: refused, the running config stays.
    std::fs::write(
        &m.config,
        good.replace("interval = \"500ms\"", "interval = \"soon\""),
    )
    .unwrap();
    m.signal("-HUP");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(m.get("/healthz").unwrap().0, 200);
    let checks = m.get("/api/v1/checks").unwrap().1;
    assert_eq!(checks.as_array().unwrap().len(), 2);
    notify.until("WATCHDOG=1", Duration::from_secs(5));

    m.signal("-TERM");
    notify.until("STOPPING=1", Duration::from_secs(10));
    let (status, log) = m.wait_exit(Duration::from_secs(40));
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("config reload refused"), "{log}");
    assert!(
        log.contains("invalid duration \\\"soon\\\"") || log.contains("invalid duration"),
        "{log}"
    );
}

/// Chromium, if this machine has it (scripts/test installs it).
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()?;
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
    })
}

fn headless(chromium: &Path, profile: &Path) -> Command {
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

#[test]
fn the_dashboard_renders_live_data_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        println!("SKIPPED: chromium is not installed (scripts/test installs it with apt-get)");
        return;
    };
    let m = Mend::start(&[]);
    m.set("app", "fail disk.full");
    m.wait_for("the check to fail", Duration::from_secs(30), |m| {
        m.check("app")["status"] == "fail"
    });
    let (code, v) = m.post("/api/v1/checks/app/heal", Some(TOKEN), &json!({}));
    assert_eq!(code, 202, "{v}");
    m.wait_for("the heal", Duration::from_secs(30), |m| {
        m.incidents()
            .first()
            .is_some_and(|i| i.state == IncidentState::Healed)
    });
    m.set("app", "warn disk.slow");
    m.wait_for("the warning", Duration::from_secs(30), |m| {
        m.check("app")["status"] == "warn"
    });

    let profile = tempfile::tempdir().unwrap();
    let out = headless(&chromium, profile.path())
        .args(["--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("{}/", m.url))
        .output()
        .expect("running chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page's script did not finish: {}\n{dom}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The check's row: name, health, status and the last finding.
    let row = dom
        .split("<tr")
        .find(|r| r.contains("data-check=\"app\""))
        .unwrap_or_else(|| panic!("no row for app: {dom}"));
    assert!(row.contains(">warn<"), "{row}");
    assert!(row.contains("disk.slow: warn disk.slow"), "{row}");
    // The healed incident on the timeline, the charts per check and step.
    assert!(dom.contains("#1 app (healed)"), "{dom}");
    assert!(
        dom.contains(">app · fix<") && dom.contains(">100 %<"),
        "{dom}"
    );
    assert!(dom.contains("1 checks · 0 open incident(s)"), "{dom}");

    // A screenshot, for people (docs/dashboard.png is one of these).
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = headless(&chromium, profile.path())
        .args(["--virtual-time-budget=10000", "--window-size=1200,800"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("{}/", m.url))
        .output();
    println!("screenshot: {}", shot.display());
    m.stop();
}

fn plugin_files(m: &Mend) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(m.plugins_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    v.sort();
    v
}

fn reloads(m: &Mend, result: &str) -> u64 {
    let text = m.get_text("/metrics");
    let key = format!("mend_reloads_total{{kind=\"plugins\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn reading_every_plugin_file_a_hundred_times_reloads_nothing() {
    let m = Mend::start(&[]);
    m.wait_for("a first run", Duration::from_secs(30), |m| last_at(m) > 0);
    let files = plugin_files(&m);
    assert_eq!(files.len(), 2);

    // What an operator does: cat, inspect, check-config, chmod.
    for _ in 0..100 {
        for f in &files {
            std::fs::read(f).unwrap();
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(["plugin", "inspect"])
        .arg(&files[0])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(["check-config", "--config"])
        .arg(&m.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for f in &files {
        let mut perm = std::fs::metadata(f).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
        std::fs::set_permissions(f, perm).unwrap();
    }
    // The same bytes written again: closed after writing, same sha256.
    std::fs::write(&files[0], std::fs::read(&files[0]).unwrap()).unwrap();
    // Let a reload show itself, were there one (the quiet period is 300 ms).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(reloads(&m, "ok"), 0);
    assert_eq!(reloads(&m, "error"), 0);

    // A real change still reloads (the test can fail).
    let original = std::fs::read(&files[0]).unwrap();
    let tmp = m.plugins_dir().join("incoming.tmp");
    std::fs::write(&tmp, rebuilt(&original, "v2")).unwrap();
    std::fs::rename(&tmp, &files[0]).unwrap();
    m.wait_for("the reload", Duration::from_secs(30), |m| {
        reloads(m, "ok") == 1
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(reloads(&m, "ok"), 1, "one change, one reload");
    let log = m.stop();
    let loaded = log.lines().filter(|l| l.contains("loaded plugin")).count();
    // Each file at start, and each once more for the one reload.
    assert_eq!(loaded, 2 * files.len(), "{log}");
}

#[test]
fn a_check_pauses_alone_and_a_second_pause_replaces_the_reason() {
    let m = Mend::start(&[]);
    m.set("app", "fail disk.full");
    m.wait_for("the check to fail", Duration::from_secs(30), |m| {
        m.check("app")["status"] == "fail"
    });
    let out = m.cli(&["pause", "app", "--reason", "db migration"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("check app paused since"), "{out:?}");
    let out = m.cli(&["pause", "app", "--reason", "still migrating"]);
    assert!(
        stdout(&out).contains("check app was already paused")
            && stdout(&out).contains("the reason is now: still migrating"),
        "{out:?}"
    );
    assert_eq!(m.check("app")["paused"]["reason"], "still migrating");
    assert!(
        m.get("/api/v1/status").unwrap().1["paused"].is_null(),
        "mend itself is not paused"
    );
    let out = m.cli(&["heal", "app"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        stdout(&out).contains("not started: the check is paused: still migrating"),
        "{out:?}"
    );
    assert!(stdout(&m.cli(&["status"])).contains("(paused)"));

    // The pause of every policy: a second one replaces its reason too.
    m.cli(&["pause", "--reason", "first"]);
    let out = m.cli(&["pause", "--reason", "second"]);
    assert!(stdout(&out).contains("mend was already paused"), "{out:?}");
    assert_eq!(
        m.get("/api/v1/status").unwrap().1["paused"]["reason"],
        "second"
    );
    assert!(stdout(&m.cli(&["resume"])).contains("mend resumed"));

    let out = m.cli(&["resume", "app"]);
    assert!(stdout(&out).contains("check app resumed"), "{out:?}");
    let out = m.cli(&["heal", "app"]);
    assert!(out.status.success(), "{out:?}");
    m.wait_for("the heal", Duration::from_secs(30), |m| {
        m.incidents()
            .first()
            .is_some_and(|i| i.state == IncidentState::Healed)
    });
    let out = m.cli(&["pause", "nope"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    m.stop();
}

#[test]
fn the_cli_runs_checks_lists_plugins_reloads_and_exits_by_outcome() {
    let mut m = Mend::start(&[]);
    let out = m.cli(&["check", "run", "app"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("check app: ok") && stdout(&out).contains("scripted.ok"),
        "{out:?}"
    );
    let out = m.cli(&["plugins"]);
    assert!(
        stdout(&out).contains("fixture-scripted") && stdout(&out).contains("detector"),
        "{out:?}"
    );
    let out = m.cli(&["status"]);
    assert_eq!(out.status.code(), Some(0), "all healthy: {out:?}");

    // Reload: a new check; then a broken config, refused.
    let port: u16 = m.url.rsplit(':').next().unwrap().parse().unwrap();
    let extra = format!(
        "\n[[check]]\nname = \"second\"\nplugin = \"fixture-scripted\"\ngrants = {{ dirs = [{{ host = \"{}\", guest = \"/ctl\" }}] }}\nconfig = {{ file = \"/ctl/app\" }}\n",
        m.ctl.path().display()
    );
    let good = config_text(
        m.ctl.path(),
        port,
        &extra,
        "trigger = { consecutive = 1000 }",
    );
    std::fs::write(&m.config, &good).unwrap();
    let out = m.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("reloaded: 2 checks"), "{out:?}");
    std::fs::write(
        &m.config,
        good.replace("interval = \"500ms\"", "interval = \"soon\""),
    )
    .unwrap();
    let out = m.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid duration"),
        "{out:?}"
    );
    assert_eq!(
        m.get("/api/v1/checks").unwrap().1.as_array().unwrap().len(),
        2
    );

    let out = m.cli(&["pause", "--token", "wrong"]);
    assert_eq!(out.status.code(), Some(6), "unauthorised: {out:?}");
    let out = m.cli(&["heal"]);
    assert_eq!(out.status.code(), Some(2), "usage: {out:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(["status", "--api"])
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "unreachable: {out:?}");

    // A reader that goes away ends the command by SIGPIPE, not a panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(["incidents", "--api", &m.url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(13),
        "{status:?} {err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // Piped output carries no colour codes.
    let out = m.cli(&["status"]);
    assert!(!stdout(&out).contains('\u{1b}'));
    let (_, log) = {
        m.signal("-TERM");
        m.wait_exit(Duration::from_secs(40))
    };
    assert!(!log.contains('\u{1b}'), "colour in a piped log: {log}");
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line() {
    let mend = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mend"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = mend(&["completions", "bash"]);
    assert!(bash.contains("complete -F _mend"), "{bash}");
    assert!(bash.contains("check-config") && bash.contains("--dry-run"));
    assert!(mend(&["completions", "zsh"]).contains("#compdef mend"));
    assert!(mend(&["completions", "fish"]).contains("complete -c mend"));
    let man = mend(&["man"]);
    assert!(man.starts_with(".ie") || man.contains(".TH mend"), "{man}");
    assert!(man.contains("EXIT STATUS") && man.contains("78"), "{man}");
    let dir = tempfile::tempdir().unwrap();
    mend(&["man", "--dir", dir.path().to_str().unwrap()]);
    for page in [
        "mend.1",
        "mend-run.1",
        "mend-status.1",
        "mend-check-config.1",
    ] {
        assert!(dir.path().join(page).exists(), "{page}");
    }
}

/// The incident lifecycle from the command line (issue 11): an escalated
/// incident is acknowledged with who and why; a plain heal past the
/// attempt cap says how to `--force`; a forced heal walks the ladder again
/// on the same incident and heals it; `resolve` closes one by hand.
#[test]
fn cli_acknowledges_force_heals_and_resolves_incidents() {
    // One attempt an hour: the second incident hits the cap at once and
    // escalates (a new incident, not a relapse of the first).
    let m = Mend::start_with(
        "trigger = { consecutive = 2 }\nmax_attempts = 1\nrelapse_window = \"0s\"",
        &[],
    );
    m.set("app", "fail");
    m.wait_for("the first heal", Duration::from_secs(30), |m| {
        m.incidents()
            .first()
            .is_some_and(|i| i.state == IncidentState::Healed)
    });
    m.set("app", "fail");
    m.wait_for(
        "the capped incident to escalate",
        Duration::from_secs(30),
        |m| {
            m.incidents()
                .get(1)
                .is_some_and(|i| i.state == IncidentState::Escalated)
        },
    );
    let id = m.incidents()[1].id.to_string();

    let out = m.cli(&["incident", "ack", &id, "--by", "ann", "--reason", "on it"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("acknowledged"), "{out:?}");
    let out = m.cli(&["incident", "ack", "999"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    // Through the API: it changes something, so it needs the token; a
    // body must be an object.
    let ack = format!("/api/v1/incidents/{id}/ack");
    assert_eq!(m.post(&ack, None, &json!({})).0, 401);
    let (code, v) = m.post(&ack, Some(TOKEN), &json!([1]));
    assert_eq!(code, 400, "{v}");
    let (code, v) = m.post(&ack, Some(TOKEN), &json!({"by": "x".repeat(201)}));
    assert_eq!(code, 400, "{v}");
    let out = m.cli(&["incident", &id]);
    let text = stdout(&out);
    assert!(text.contains("acked") && text.contains("by ann"), "{text}");
    assert!(text.contains("acknowledged by ann: on it"), "{text}");

    // The cap is spent: a plain heal refuses and says what to do.
    let out = m.cli(&["heal", "app"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(stdout(&out).contains("--force"), "{out:?}");
    let out = m.cli(&["heal", "app", "--force", "--by", "ann"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains(&format!("incident {id}")), "{out:?}");
    m.wait_for("the forced heal", Duration::from_secs(30), |m| {
        m.incidents()[1].state == IncidentState::Healed
    });
    let inc = &m.incidents()[1];
    let by: Vec<(&str, &str)> = inc
        .events
        .iter()
        .map(|e| (e.kind.as_str(), e.by.as_str()))
        .collect();
    assert_eq!(
        by,
        [
            ("escalated", "mend"),
            ("acknowledged", "ann"),
            ("operator-heal", "ann")
        ]
    );
    assert_eq!(m.incidents().len(), 2, "the same incident healed");

    // Another capped incident, resolved by hand through the API's CLI.
    m.set("app", "fail");
    m.wait_for("a third incident", Duration::from_secs(30), |m| {
        m.incidents()
            .get(2)
            .is_some_and(|i| i.state == IncidentState::Escalated)
    });
    let id = m.incidents()[2].id.to_string();
    let out = m.cli(&["incident", "resolve", &id, "--reason", "fixed by hand"]);
    assert!(out.status.success(), "{out:?}");
    let inc = &m.incidents()[2];
    assert_eq!(inc.state, IncidentState::Resolved);
    assert!(inc.note.contains("fixed by hand"), "{inc:?}");
    let out = m.cli(&["incident", "resolve", &id]);
    assert_eq!(out.status.code(), Some(4), "closed already: {out:?}");
    m.stop();
}

/// Alertmanager semantics: a repeat of a firing alert while its incident
/// is open is a duplicate; after that incident closed, mend checks the
/// target again and a still-bad target opens a new incident. A
/// `resolved` notification is recorded on the incident.
#[test]
fn an_alert_that_keeps_firing_after_its_incident_closed_rechecks_the_target() {
    let m = Mend::start(&[]);
    m.set("app", "fail");
    m.wait_for("the check to fail", Duration::from_secs(30), |m| {
        m.check("app")["status"] == "fail"
    });
    let (code, first) = m.post("/api/v1/alertmanager", Some(TOKEN), &alert("9d1e"));
    assert_eq!(code, 200, "{first}");
    m.wait_for("the heal", Duration::from_secs(30), |m| {
        m.incidents()
            .first()
            .is_some_and(|i| i.state == IncidentState::Healed)
    });
    // The problem comes back while Alertmanager keeps the same alert
    // firing (same fingerprint, same startsAt).
    m.set("app", "fail");
    m.wait_for("the check to fail again", Duration::from_secs(30), |m| {
        m.check("app")["status"] == "fail"
    });
    let (code, again) = m.post("/api/v1/alertmanager", Some(TOKEN), &alert("9d1e"));
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["rechecked"], 1, "{again}");
    assert_eq!(again["duplicates"], 0, "{again}");
    m.wait_for("a second incident, healed", Duration::from_secs(30), |m| {
        m.incidents()
            .get(1)
            .is_some_and(|i| i.state == IncidentState::Healed)
    });
    let second = &m.incidents()[1];
    let repeat = second
        .events
        .iter()
        .find(|e| e.kind.as_str() == "alert-repeat")
        .unwrap_or_else(|| panic!("no alert-repeat event: {second:?}"));
    assert_eq!(repeat.detail["after_incident"], m.incidents()[0].id);

    // A repeat of a healthy target re-checks and finds nothing to heal.
    let (_, third) = m.post("/api/v1/alertmanager", Some(TOKEN), &alert("9d1e"));
    assert_eq!(third["rechecked"], 1, "{third}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(m.incidents().len(), 2);
    assert_eq!(m.actions(), 2);

    // Resolved: recorded on the incidents it opened.
    let mut resolved = alert("9d1e");
    resolved["alerts"][0]["status"] = json!("resolved");
    let (code, v) = m.post("/api/v1/alertmanager", Some(TOKEN), &resolved);
    assert_eq!((code, v["resolved"].clone()), (200, json!(1)), "{v}");
    let incs = m.incidents();
    for inc in &incs {
        assert!(
            inc.events
                .iter()
                .any(|e| e.kind.as_str() == "alert-resolved"),
            "{inc:?}"
        );
    }
    let (_, view) = m.get(&format!("/api/v1/incidents/{}", incs[1].id)).unwrap();
    assert!(
        view["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "alert-resolved" && e["by"] == "alertmanager"),
        "{view}"
    );
    m.stop();
}
