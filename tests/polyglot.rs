//! Python and JavaScript plugins, as `mend plugin new --lang python|js`
//! writes them, built with the pinned componentize-py and componentize-js
//! (scripts/lib.sh installs both into target/tools): their own unit tests
//! pass, `mend plugin call` runs both roles, an uncaught exception comes
//! back as a readable `failed` error (never the runtime's `unreachable`),
//! per-plugin limits apply, the SDKs' `http` reaches a granted URL on a
//! real server (and is denied any other), and the real `mend run` detects
//! and heals with them.
//!
//! Each component is built once per source (cached by hash under
//! target/tmp/polyglot) and compiled once per test (one state directory,
//! so one compile cache, for every call and run of that language). Without
//! the tools the tests fail under `CI=true` and skip loudly elsewhere.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

mod common;

use common::process::{self, MendRun, wait_for};
use mend::store::{AttemptOutcome, IncidentState};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The pinned componentize-py, as [`tool`] finds it.
fn componentize_py() -> Option<PathBuf> {
    tool("componentize-py", "componentize-py/bin/componentize-py")
}

/// The pinned componentize-js, as [`tool`] finds it.
fn componentize_js() -> Option<PathBuf> {
    tool(
        "componentize-js",
        "componentize-js/node_modules/.bin/componentize-js",
    )
}

/// A pinned tool from target/tools, else from PATH; None (and a loud
/// message, or a failure under CI) when neither has it.
fn tool(name: &str, installed: &str) -> Option<PathBuf> {
    let local = root().join("target/tools").join(installed);
    let found = if local.is_file() {
        Some(local)
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    if found.is_none() {
        let msg = format!(
            "{name} is not installed: scripts/test installs it (scripts/lib.sh ensure_{})",
            name.replace('-', "_")
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}; under CI this test must run");
        }
        eprintln!("\n!!! SKIPPED: {msg}\n");
    }
    found
}

fn mend(args: &[&str], state: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(args)
        .env("MEND_STATE_DIR", state)
        .env("MEND_LOG", "warn")
        .output()
        .expect("running mend")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout) + &text(&out.stderr)
}

/// `mend plugin new NAME --lang LANG` in `dir`.
fn new_project(lang: &str, name: &str, dir: &Path, state: &Path) -> PathBuf {
    let project = dir.join(name);
    let out = mend(
        &[
            "plugin",
            "new",
            name,
            "--lang",
            lang,
            "--dir",
            project.to_str().unwrap(),
        ],
        state,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    project
}

/// The project's component: `make build` once per source and tool.
fn build(project: &Path, name: &str, make_var: &str, tool: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![project.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let skip = ["build", "__pycache__", "node_modules"];
            if p.is_dir() {
                if !skip.iter().any(|s| p.ends_with(s)) {
                    stack.push(p);
                }
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    h.update(tool.to_string_lossy().as_bytes());
    for f in &files {
        h.update(
            f.strip_prefix(project)
                .unwrap()
                .to_string_lossy()
                .as_bytes(),
        );
        h.update(std::fs::read(f).unwrap());
    }
    let hash: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("polyglot");
    let wasm = cache.join(format!("{name}-{hash}.wasm"));
    if !wasm.is_file() {
        run_ok(
            Command::new("make")
                .arg("build")
                .arg(format!("{make_var}={}", tool.display()))
                .current_dir(project),
            "make build",
        );
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::copy(project.join("build").join(format!("{name}.wasm")), &wasm).unwrap();
    }
    wasm
}

fn call(wasm: &Path, state: &Path, args: &[&str]) -> Output {
    let mut all = vec!["plugin", "call", wasm.to_str().unwrap()];
    all.extend_from_slice(args);
    mend(&all, state)
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `[engine]` and `[api]` for a `mend run` in `state`.
fn engine(state: &Path, plugins: &Path) -> String {
    format!(
        r#"
[engine]
plugins_dir = "{}"
state_dir = "{}"
interval = "1s"

[api]
listen = "off"
"#,
        plugins.display(),
        state.display()
    )
}

#[test]
fn a_python_plugin_from_the_template_detects_heals_and_fails_readably() {
    let Some(cpy) = componentize_py() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let project = new_project("python", "log-size", tmp.path(), &state);
    let tests = run_ok(
        Command::new("python3")
            .args(["-m", "unittest", "-v"])
            .current_dir(&project),
        "python3 -m unittest",
    );
    assert!(
        tests.contains("Ran 2 tests") && tests.contains("OK"),
        "{tests}"
    );
    let wasm = build(&project, "log-size", "COMPONENTIZE_PY", &cpy);

    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let log = data.join("app.log");
    std::fs::write(&log, vec![b'x'; 2048]).unwrap();
    let ro = format!("{}:/data", data.display());
    let rw = format!("{}:/data:rw", data.display());
    let config = r#"{"path": "/data/app.log", "max_bytes": "1KiB"}"#;

    // Within the default limits (64 MiB, 1e9 fuel, 5 s).
    let v = json(&call(
        &wasm,
        &state,
        &["detect", "--grant-dir", &ro, "--config", config],
    ));
    assert_eq!(v["plugin"], "log-size");
    assert_eq!(v["findings"][0]["code"], "file.too_big", "{v}");
    assert_eq!(v["findings"][0]["metrics"]["bytes"], 2048.0, "{v}");

    let v = json(&call(
        &wasm,
        &state,
        &[
            "remedy",
            "--dry-run",
            "--grant-dir",
            &rw,
            "--config",
            config,
        ],
    ));
    assert_eq!(v["outcome"]["changed"], false, "{v}");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 2048);

    // A typo is the SDK's typed `bad-config`, naming the key.
    let out = call(
        &wasm,
        &state,
        &[
            "detect",
            "--grant-dir",
            &ro,
            "--config",
            r#"{"path": "/data/app.log", "max_byte": 1}"#,
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("bad config: unknown key `max_byte`"), "{err}");

    // An uncaught exception: the exception and its frames, not a trap.
    let out = call(
        &wasm,
        &state,
        &[
            "detect",
            "--grant-dir",
            &ro,
            "--config",
            r#"{"path": "/data/missing.log", "max_bytes": 1}"#,
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("failed: FileNotFoundError")
            && err.contains("/data/missing.log")
            && err.contains("app.py:"),
        "{err}"
    );
    assert!(!err.contains("unreachable"), "{err}");

    // Too little memory for CPython: the host's typed limit.
    let out = call(
        &wasm,
        &state,
        &[
            "detect",
            "--memory",
            "8MiB",
            "--grant-dir",
            &ro,
            "--config",
            config,
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("memory limit of 8388608 bytes exceeded"),
        "{}",
        text(&out.stderr)
    );

    // The real `mend run`: a check and a policy with the plugin in both
    // roles, its own limits in `[plugins.log-size]`, and the file healed.
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(&wasm, plugins.join("log-size.wasm")).unwrap();
    let conf = tmp.path().join("mend.toml");
    let dir = data.display();
    let write_conf = |plugin_limits: &str| {
        std::fs::write(
            &conf,
            engine(&state, &plugins)
                + &format!(
                    r#"
[plugins.log-size]
limits = {plugin_limits}

[[check]]
name = "app-log"
plugin = "log-size"
jitter = "0s"
grants = {{ dirs = [{{ host = "{dir}", guest = "/data" }}] }}
config = {{ path = "/data/app.log", max_bytes = "1KiB" }}

[[policy]]
name = "trim"
check = "app-log"
trigger = {{ consecutive = 1 }}

[[policy.step]]
action = "log-size"
grants = {{ dirs = [{{ host = "{dir}", guest = "/data", mode = "rw" }}] }}
config = {{ path = "/data/app.log", max_bytes = "1KiB" }}
"#
                ),
        )
        .unwrap();
    };
    // Limits are validated with the key and its position.
    write_conf(r#"{ memory = "2GiB" }"#);
    let out = mend(
        &["check-config", "--config", conf.to_str().unwrap()],
        &state,
    );
    assert!(!out.status.success());
    let err = text(&out.stdout) + &text(&out.stderr);
    assert!(
        err.contains(
            "mend.toml:11:21: plugins.log-size.limits.memory: 2147483648 bytes is more than"
        ),
        "{err}"
    );

    write_conf(r#"{ memory = "48MiB", fuel = 3000000000, deadline = "20s" }"#);
    let out = mend(
        &["check-config", "--config", conf.to_str().unwrap()],
        &state,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = MendRun::start_logged(&conf, &tmp.path().join("mend.log"));
    let db = state.join("mend.db");
    wait_for(
        "the python action to heal app.log",
        Duration::from_secs(120),
        || {
            process::incidents(&db)
                .first()
                .is_some_and(|i| i.state == IncidentState::Healed)
        },
    );
    run.stop();
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
    let inc = &process::incidents(&db)[0];
    assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Healed, "{inc:?}");
}

/// statvfs of `path`: (free inodes for unprivileged users, total).
fn free_inodes(path: &Path) -> (u64, u64) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    (s.f_favail, s.f_files)
}

#[test]
fn a_javascript_plugin_from_the_template_detects_acts_and_fails_readably() {
    let Some(cjs) = componentize_js() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let project = new_project("js", "inodes", tmp.path(), &state);
    let tests = run_ok(
        Command::new("node").arg("--test").current_dir(&project),
        "node --test",
    );
    assert!(
        tests.contains("# pass 2") && tests.contains("# fail 0"),
        "{tests}"
    );
    let wasm = build(&project, "inodes", "COMPONENTIZE_JS", &cjs);

    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let ro = format!("{}:/data", data.display());

    // A real reading of the filesystem: fs.disk-usage through the host.
    let (_, total) = free_inodes(&data);
    let low = format!(r#"{{"path": "/data", "min_free_inodes": {}}}"#, total + 1);
    let v = json(&call(
        &wasm,
        &state,
        &["detect", "--grant-dir", &ro, "--config", &low],
    ));
    assert_eq!(v["plugin"], "inodes");
    let f = &v["findings"][0];
    assert_eq!(f["code"], "fs.inodes_low", "{v}");
    let seen = f["metrics"]["free_inodes"].as_f64().unwrap();
    let (now, _) = free_inodes(&data);
    // Others create and delete files meanwhile: close, not equal.
    assert!(
        (seen - now as f64).abs() < 100_000.0 && seen > 0.0,
        "{seen} vs {now}"
    );
    let v = json(&call(
        &wasm,
        &state,
        &[
            "detect",
            "--grant-dir",
            &ro,
            "--config",
            r#"{"path": "/data", "min_free_inodes": 1}"#,
        ],
    ));
    assert_eq!(v["findings"][0]["code"], "fs.ok", "{v}");

    // A thrown Error is `failed` with its message and frames; a refused
    // host call is `denied`.
    let defs = tmp.path().join("defs.toml");
    std::fs::write(
        &defs,
        "[commands.broken]\nargv = [\"/bin/sh\", \"-c\", \"echo cannot clean >&2; exit 3\"]\n",
    )
    .unwrap();
    let act = |extra: &[&str]| {
        let conf = format!(
            r#"{{"path": "/data", "min_free_inodes": {}, "command": "broken"}}"#,
            total + 1
        );
        let mut args = vec!["remedy", "--grant-dir", &ro, "--config", &conf];
        args.extend_from_slice(extra);
        call(&wasm, &state, &args)
    };
    let out = act(&[
        "--defs",
        defs.to_str().unwrap(),
        "--grant-command",
        "broken",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("failed: Error: `broken` exited 3: cannot clean") && err.contains("app.js"),
        "{err}"
    );
    assert!(!err.contains("unreachable"), "{err}");
    let out = act(&[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("broken"), "{err}");

    // The real `mend run`: the JS detector finds the filesystem low, the
    // JS action runs the granted command (which leaves a mark).
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(&wasm, plugins.join("inodes.wasm")).unwrap();
    let mark = tmp.path().join("cleaned");
    let conf = tmp.path().join("mend.toml");
    std::fs::write(
        &conf,
        engine(&state, &plugins)
            + &format!(
                r#"
[commands.clean]
argv = ["/usr/bin/touch", "{mark}"]

[plugins.inodes]
limits = {{ fuel = 4000000000 }}

[[check]]
name = "data-inodes"
plugin = "inodes"
jitter = "0s"
grants = {{ dirs = [{{ host = "{dir}", guest = "/data" }}] }}
config = {{ path = "/data", min_free_inodes = {min} }}

[[policy]]
name = "clean"
check = "data-inodes"
trigger = {{ consecutive = 1 }}

[[policy.step]]
action = "inodes"
grants = {{ dirs = [{{ host = "{dir}", guest = "/data" }}], commands = ["clean"] }}
config = {{ path = "/data", min_free_inodes = {min}, command = "clean" }}
"#,
                mark = mark.display(),
                dir = data.display(),
                min = total + 1,
            ),
    )
    .unwrap();
    let run = MendRun::start_logged(&conf, &tmp.path().join("mend.log"));
    let db = state.join("mend.db");
    wait_for("the js action to run", Duration::from_secs(120), || {
        process::incidents(&db)
            .first()
            .is_some_and(|i| !i.attempts.is_empty() && i.attempts[0].finished_at.is_some())
    });
    run.stop();
    assert!(mark.exists(), "the granted command did not run");
    let inc = &process::incidents(&db)[0];
    assert_eq!(inc.check, "data-inodes");
    assert!(
        inc.diagnosis.to_string().contains("fs.inodes_low"),
        "{:?}",
        inc.diagnosis
    );
}

/// A real HTTP server on a free port: one fixed response to every request,
/// and the request heads it saw.
fn http_server(status: &str, body: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let heads = seen.clone();
    let status = status.to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            heads.lock().unwrap().push(text(&head));
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, seen)
}

/// A detector over the SDK's `http`: the status and body of `url` (or of
/// `sneak`, a URL it does not declare) in its finding, reading at most
/// `max_body` bytes.
const PY_HTTP_APP: &str = r#"
import dataclasses
from typing import Optional

import mend_sdk
from mend_sdk import Finding, Needs
from mend_sdk.host import http


@dataclasses.dataclass
class Config:
    url: str
    sneak: Optional[str] = None
    max_body: Optional[int] = None


class HttpCheck(mend_sdk.Detector):
    name = "http-check"
    Config = Config

    def config_needs(self, c):
        return Needs().url(c.url)

    def detect(self, cx, c):
        r = http.request("GET", c.sneak or c.url, headers=[("x-probe", "py")], timeout_ms=5000,
                         max_body=c.max_body)
        return [Finding.fail("http.status", f"answered {r.status}")
                .metric("status", r.status).label("body", r.text())
                .label("type", r.header("content-type").decode())]


Meta, Detection, Remediation = mend_sdk.export(HttpCheck)
"#;

const JS_HTTP_APP: &str = r#"
import { Finding, Needs, exportPlugin } from './mend-sdk/index.js';
import { http } from './mend-sdk/host.js';

class HttpCheck {
  static manifest = { name: 'http-check', version: '0.1.0', description: 'an HTTP status' };
  static config = {
    url: 'string',
    sneak: { type: 'string', default: '' },
    max_body: { type: 'integer', default: 1048576 },
  };
  needs() { return new Needs(); }
  configNeeds(c) { return new Needs().url(c.url); }
  detect(cx, c) {
    const r = http.request('GET', c.sneak || c.url, {
      headers: { 'x-probe': 'js' },
      timeoutMs: 5000,
      maxBody: c.max_body,
    });
    return [Finding.fail('http.status', `answered ${r.status}`)
      .metric('status', r.status).label('body', r.text()).label('type', r.header('content-type'))];
  }
}

export const { meta, detection, remediation } = exportPlugin(HttpCheck);
"#;

#[test]
fn python_and_javascript_plugins_reach_a_granted_url_and_only_that() {
    let (Some(cpy), Some(cjs)) = (componentize_py(), componentize_js()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (base, seen) = http_server("503 Service Unavailable", "disk is on fire");
    let (other, other_seen) = http_server("200 OK", "never asked");
    let url = format!("{base}/health?deep=1");
    let config = format!(r#"{{"url": "{url}"}}"#);
    let granted = format!("{base}/");

    for (lang, app, make_var, tool, probe) in [
        (
            "python",
            ("app.py", PY_HTTP_APP),
            "COMPONENTIZE_PY",
            &cpy,
            "py",
        ),
        ("js", ("app.js", JS_HTTP_APP), "COMPONENTIZE_JS", &cjs, "js"),
    ] {
        let name = format!("{probe}-http");
        let project = new_project(lang, &name, tmp.path(), &state);
        std::fs::write(project.join(app.0), app.1).unwrap();
        let wasm = build(&project, &name, make_var, tool);

        let v = json(&call(
            &wasm,
            &state,
            &["detect", "--grant-url", &granted, "--config", &config],
        ));
        let f = &v["findings"][0];
        assert_eq!(f["metrics"]["status"], 503.0, "{lang}: {v}");
        assert_eq!(f["labels"]["body"], "disk is on fire", "{lang}: {v}");
        assert_eq!(f["labels"]["type"], "text/plain", "{lang}: {v}");
        let head = seen
            .lock()
            .unwrap()
            .pop()
            .expect("the request reached the server");
        assert!(
            head.starts_with("GET /health?deep=1 HTTP/1.1\r\n")
                && head.to_lowercase().contains(&format!("x-probe: {probe}")),
            "{lang}: {head}"
        );

        // A URL outside the grant: the SDK's typed denial, naming it, and
        // nothing sent.
        let sneak = format!("{other}/secret");
        let out = call(
            &wasm,
            &state,
            &[
                "detect",
                "--grant-url",
                &granted,
                "--config",
                &format!(r#"{{"url": "{url}", "sneak": "{sneak}"}}"#),
            ],
        );
        assert!(!out.status.success(), "{lang}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("denied: GET {sneak}: not granted to this plugin")),
            "{lang}: {err}"
        );
        assert!(other_seen.lock().unwrap().is_empty(), "{lang}");

        // A body over the plugin's bound: the typed `limit`, not a partial body.
        let out = call(
            &wasm,
            &state,
            &[
                "detect",
                "--grant-url",
                &granted,
                "--config",
                &format!(r#"{{"url": "{url}", "max_body": 4}}"#),
            ],
        );
        assert!(!out.status.success(), "{lang}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "limit: GET {url}: the response body is over 4 bytes"
            )),
            "{lang}: {err}"
        );
    }
}
