//! `mend run` as a service, the way a new user meets it: the real binary
//! with its HTTP API on a real port, driven by the `mend` CLI and plain
//! HTTP calls. Shared by the service, API and dashboard tests.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mend::store::{Incident, Store};
use mend_test_artifacts as artifacts;
use serde_json::{Value, json};

pub const TOKEN: &str = "t0k3n-for-tests";

pub struct Mend {
    pub ctl: tempfile::TempDir,
    pub state: tempfile::TempDir,
    pub config: PathBuf,
    pub url: String,
    pub child: Option<Child>,
    /// The CA to trust for an https:// API.
    pub ca: Option<PathBuf>,
}

/// How to start mend beyond the defaults.
#[derive(Default)]
pub struct Opts<'a> {
    /// Lines for the policy table (default: never fires on its own).
    pub policy: Option<&'a str>,
    pub env: &'a [(&'a str, &'a str)],
    /// More keys for `[api]` (e.g. `hosts = [...]`).
    pub api: &'a str,
    /// More keys for the `app` check (e.g. `success_threshold = 5`).
    pub check: &'a str,
    /// More `[[check]]` tables after it; `{ctl}` is the control directory.
    pub extra_checks: &'a str,
    /// The listen address's IP (default 127.0.0.1).
    pub ip: Option<&'a str>,
    /// `[api] token` (default TOKEN; `Some("")` for none).
    pub token: Option<&'a str>,
    /// Serve HTTPS with this certificate and key (PEM files); the
    /// certificate is also the CA the helper trusts.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// More plugin files for the plugins directory.
    pub plugins: &'a [&'a str],
    /// `[engine] state_dir` (default: the config's own temporary directory).
    pub state_dir: Option<&'a Path>,
}

/// A free TCP port on 127.0.0.1 (free when asked; the test binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn config_text(ctl: &Path, port: u16, extra_checks: &str, policy: &str) -> String {
    config_with(
        ctl,
        &format!("127.0.0.1:{port}"),
        &format!("token = \"{TOKEN}\""),
        "",
        extra_checks,
        policy,
    )
}

pub fn config_with(
    ctl: &Path,
    listen: &str,
    api: &str,
    check: &str,
    extra_checks: &str,
    policy: &str,
) -> String {
    let ctl = ctl.display();
    format!(
        r#"
[engine]
plugins_dir = "plugins"
state_dir = "."
interval = "500ms"

[api]
listen = "{listen}"
{api}

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
{check}
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
    pub fn start(env: &[(&str, &str)]) -> Mend {
        Self::start_with("trigger = { consecutive = 1000 }", env)
    }

    pub fn start_with(policy: &str, env: &[(&str, &str)]) -> Mend {
        Self::start_opts(Opts {
            policy: Some(policy),
            env,
            ..Opts::default()
        })
    }

    pub fn start_opts(o: Opts<'_>) -> Mend {
        let policy = o.policy.unwrap_or("trigger = { consecutive = 1000 }");
        let env = o.env;
        let ctl = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let plugins = state.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        for p in [artifacts::SCRIPTED, artifacts::FIXER]
            .iter()
            .chain(o.plugins)
        {
            std::fs::copy(p, plugins.join(Path::new(p).file_name().unwrap())).unwrap();
        }
        std::fs::write(ctl.path().join("app"), "ok").unwrap();
        let port = free_port();
        let ip = o.ip.unwrap_or("127.0.0.1");
        let token = match o.token {
            None => format!("token = \"{TOKEN}\""),
            Some("") => String::new(),
            Some(t) => format!("token = \"{t}\""),
        };
        let config = state.path().join("mend.toml");
        let listen = format!("{ip}:{port}");
        let tls = o
            .tls
            .map(|(c, k)| {
                format!(
                    "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                    c.display(),
                    k.display()
                )
            })
            .unwrap_or_default();
        let api = format!("{token}\n{tls}{}", o.api);
        let extra = o
            .extra_checks
            .replace("{ctl}", &ctl.path().display().to_string());
        let mut text = config_with(ctl.path(), &listen, &api, o.check, &extra, policy);
        if let Some(dir) = o.state_dir {
            text = text.replacen(
                "state_dir = \".\"",
                &format!("state_dir = {:?}", dir.display().to_string()),
                1,
            );
        }
        std::fs::write(&config, text).unwrap();
        let scheme = if o.tls.is_some() { "https" } else { "http" };
        let host = if ip == "0.0.0.0" { "127.0.0.1" } else { ip };
        let mut m = Mend {
            ctl,
            state,
            config,
            url: format!("{scheme}://{host}:{port}"),
            child: None,
            ca: o.tls.map(|(c, _)| c.to_path_buf()),
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

    pub fn set(&self, file: &str, content: &str) {
        std::fs::write(self.ctl.path().join(file), content).unwrap();
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.ctl.path().join(file)).unwrap_or_default()
    }

    /// Actions that ran for real (the fixer logs every call).
    pub fn actions(&self) -> usize {
        self.read("actions.log")
            .lines()
            .filter(|l| l.contains("dry_run=false"))
            .count()
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.state.path().join("plugins")
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(90)))
            .build()
            .into()
    }

    /// GET: status and JSON body (None if mend does not answer).
    /// An agent for this mend (trusting its certificate, if it has one).
    pub fn client(&self) -> ureq::Agent {
        let mut b = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(90)));
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).unwrap();
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i.unwrap() {
                    ureq::tls::PemItem::Certificate(c) => Some(c),
                    _ => None,
                })
                .collect();
            b = b.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        b.build().into()
    }

    pub fn get(&self, path: &str) -> Option<(u16, Value)> {
        let mut resp = self
            .client()
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

    pub fn get_text(&self, path: &str) -> String {
        self.client()
            .get(format!("{}{path}", self.url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.client().post(format!("{}{path}", self.url));
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
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mend"));
        cmd.args(args)
            .args(["--api", &self.url])
            .env("MEND_API_TOKEN", TOKEN);
        if let Some(ca) = &self.ca {
            cmd.arg("--ca-cert").arg(ca);
        }
        cmd.output().unwrap()
    }

    pub fn incidents(&self) -> Vec<Incident> {
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

    pub fn check(&self, name: &str) -> Value {
        self.get(&format!("/api/v1/checks/{name}")).unwrap().1
    }

    pub fn wait_for(&self, what: &str, limit: Duration, mut f: impl FnMut(&Mend) -> bool) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}");
    }

    pub fn signal(&self, sig: &str) {
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
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
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

    pub fn stop(mut self) -> String {
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

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn alert(fingerprint: &str) -> Value {
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
