//! `mend run` as a service, the way a new user meets it: the real binary
//! with its HTTP API on a real port, driven by the `mend` CLI, curl-like
//! HTTP calls, signals and systemd's notify socket. Real plugins, a real
//! SQLite store, real time.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mend::store::{AttemptOutcome, Incident, IncidentState, Store};
use mend_test_artifacts as artifacts;
use serde_json::{Value, json};

const TOKEN: &str = "t0k3n-for-tests";

struct Mend {
    ctl: tempfile::TempDir,
    state: tempfile::TempDir,
    config: PathBuf,
    url: String,
    child: Option<Child>,
}

/// A free TCP port on 127.0.0.1 (free when asked; the test binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config_text(ctl: &Path, port: u16, extra_checks: &str, policy: &str) -> String {
    let ctl = ctl.display();
    format!(
        r#"
[engine]
plugins_dir = "plugins"
state_dir = "."
interval = "500ms"

[api]
listen = "127.0.0.1:{port}"
token = "{TOKEN}"

[[api.alert]]
alertname = "AppDown"
labels = {{ service = "app" }}
check = "app"

[[check]]
name = "app"
plugin = "fixture-scripted"
jitter = "0s"
grants = {{ dirs = [{{ host = "{ctl}", guest = "/ctl" }}] }}
config = {{ file = "/ctl/app" }}
{extra_checks}

[[policy]]
name = "fix-app"
check = "app"
cooldown = "0s"
backoff = {{ base = "100ms", jitter = 0.0 }}
{policy}

[[policy.step]]
name = "fix"
action = "fixture-fixer"
settle = "200ms"
grants = {{ dirs = [{{ host = "{ctl}", guest = "/ctl", mode = "rw" }}] }}
config = {{ file = "/ctl/app", log = "/ctl/actions.log", slow_flag = "/ctl/slow", slow_secs = 3 }}
"#
    )
}

impl Mend {
    /// Writes a config whose policy never fires on its own (so every
    /// remediation in these tests is one a person or an alert asked for)
    /// and starts `mend run` with `env`.
    fn start(env: &[(&str, &str)]) -> Mend {
        Self::start_with("trigger = { consecutive = 1000 }", env)
    }

    fn start_with(policy: &str, env: &[(&str, &str)]) -> Mend {
        let ctl = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let plugins = state.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        for p in [artifacts::SCRIPTED, artifacts::FIXER] {
            std::fs::copy(p, plugins.join(Path::new(p).file_name().unwrap())).unwrap();
        }
        std::fs::write(ctl.path().join("app"), "ok").unwrap();
        let port = free_port();
        let config = state.path().join("mend.toml");
        std::fs::write(&config, config_text(ctl.path(), port, "", policy)).unwrap();
        let mut m = Mend {
            ctl,
            state,
            config,
            url: format!("http://127.0.0.1:{port}"),
            child: None,
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mend"));
        cmd.args(["run", "--config"])
            .arg(&m.config)
            .env("MEND_LOG", "info")
            .env_remove("MEND_API_TOKEN")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        m.child = Some(cmd.spawn().expect("starting mend run"));
        m.wait_for("the API to answer", Duration::from_secs(60), |m| {
            m.get("/healthz").is_some_and(|(code, _)| code == 200)
        });
        m
    }

    fn set(&self, file: &str, content: &str) {
        std::fs::write(self.ctl.path().join(file), content).unwrap();
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.ctl.path().join(file)).unwrap_or_default()
    }

    /// Actions that ran for real (the fixer logs every call).
    fn actions(&self) -> usize {
        self.read("actions.log")
            .lines()
            .filter(|l| l.contains("dry_run=false"))
            .count()
    }

    fn plugins_dir(&self) -> PathBuf {
        self.state.path().join("plugins")
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(90)))
            .build()
            .into()
    }

    /// GET: status and JSON body (None if mend does not answer).
    fn get(&self, path: &str) -> Option<(u16, Value)> {
        let mut resp = Self::agent()
            .get(format!("{}{path}", self.url))
            .call()
            .ok()?;
        let code = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().ok()?;
        Some((
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    fn get_text(&self, path: &str) -> String {
        Self::agent()
            .get(format!("{}{path}", self.url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = Self::agent().post(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.send_json(body).unwrap();
        let code = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Runs `mend ARGS --api URL` with the token in the environment.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mend"))
            .args(args)
            .args(["--api", &self.url])
            .env("MEND_API_TOKEN", TOKEN)
            .output()
            .unwrap()
    }

    fn incidents(&self) -> Vec<Incident> {
        let path = self.state.path().join("mend.db");
        match Store::open_read_only(&path) {
            Ok(store) => {
                let mut v = store.incidents(false, 100).unwrap_or_default();
                v.reverse();
                v
            }
            Err(_) => Vec::new(),
        }
    }

    fn check(&self, name: &str) -> Value {
        self.get(&format!("/api/v1/checks/{name}")).unwrap().1
    }

    fn wait_for(&self, what: &str, limit: Duration, mut f: impl FnMut(&Mend) -> bool) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits for mend to exit; returns its status and stderr.
    fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status, err);
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                panic!("mend did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) -> String {
        self.signal("-TERM");
        let (status, err) = self.wait_exit(Duration::from_secs(40));
        assert!(status.success(), "{status:?}\n{err}");
        err
    }
}

impl Drop for Mend {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn alert(fingerprint: &str) -> Value {
    json!({
        "version": "4",
        "status": "firing",
        "receiver": "mend",
        "groupKey": "{}:{alertname=\"AppDown\"}",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "AppDown", "service": "app", "severity": "page"},
            "annotations": {"summary": "app is down"},
            "startsAt": "2026-11-22T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": fingerprint,
        }],
    })
}

#[test]
fn cli_shows_status_heals_a_check_and_pauses() {
    let m = Mend::start(&[]);
    m.set("app", "fail disk.full");
    m.wait_for("the check to fail", Duration::from_secs(30), |m| {
        m.check("app")["status"] == "fail"
    });

    let out = m.cli(&["status"]);
    assert!(out.status.success(), "{out:?}");
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
    let out = m.cli(&["incident", "2", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["attempts"][0]["outcome"], "healed");

    // Paused: nothing starts, and the CLI says why.
    let out = m.cli(&["pause", "--reason", "disk swap"]);
    assert!(out.status.success(), "{out:?}");
    m.set("app", "fail disk.full");
    let out = m.cli(&["heal", "app"]);
    assert!(!out.status.success());
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
        metrics.contains("mend_check_status{check=\"app\"} 0"),
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
    // The healed incident on the timeline, the charts per action.
    assert!(dom.contains("#1 app (healed)"), "{dom}");
    assert!(dom.contains(">fix<") && dom.contains(">100 %<"), "{dom}");
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
