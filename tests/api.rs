//! The admin API as HTTP clients and browsers meet it: JSON errors for
//! every failure, 405 before any token, the `Host` allowlist, listeners
//! other machines can reach (TLS or an explicit `insecure`, reads behind
//! the token), the OpenAPI document, and `/metrics` as Prometheus reads it
//! (`promtool check metrics`). The real `mend run`, on a real port.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::service::*;
use serde_json::{Value, json};

/// A raw HTTP/1.1 request (for headers a client library would not send);
/// returns the status, headers and body.
fn raw(url: &str, request: &str) -> (u16, String, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

/// Status, content type and body of a request.
fn call(
    m: &Mend,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (u16, String, String) {
    let url = format!("{}{path}", m.url);
    let agent = m.client();
    let resp = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(&url);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        (_, b) => {
            let mut r = agent.post(&url);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            match b {
                Some(b) => r.header("Content-Type", "application/json").send(b),
                None => r.send_empty(),
            }
        }
    };
    let mut resp = resp.unwrap();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let code = resp.status().as_u16();
    (
        code,
        ct,
        resp.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn assert_json_error(what: &str, (code, ct, body): &(u16, String, String), want: u16) {
    assert_eq!(*code, want, "{what}: {body}");
    assert!(
        ct.starts_with("application/json"),
        "{what}: content type {ct}"
    );
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: {v}"
    );
}

#[test]
fn every_error_is_json_and_a_wrong_method_is_405_before_any_token() {
    let m = Mend::start(&[]);
    let bearer = format!("Bearer {TOKEN}");
    assert_json_error("unknown path", &call(&m, "GET", "/nope", None, None), 404);
    assert_json_error(
        "bad path value",
        &call(&m, "GET", "/api/v1/incidents/abc", None, None),
        400,
    );
    assert_json_error(
        "bad query value",
        &call(&m, "GET", "/api/v1/incidents?limit=-1", None, None),
        400,
    );
    assert_json_error(
        "bad query flag",
        &call(
            &m,
            "POST",
            "/api/v1/checks/app/heal?dry_run=maybe",
            Some(&bearer),
            None,
        ),
        400,
    );
    assert_json_error(
        "no such incident",
        &call(&m, "GET", "/api/v1/incidents/9", None, None),
        404,
    );

    // 405 (with Allow) whether or not a token is sent.
    let (code, head, body) = raw(
        &m.url,
        "GET /api/v1/pause HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 405, "{head}\n{body}");
    assert!(head.to_ascii_lowercase().contains("allow: post"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_json_error(
        "POST on a read",
        &call(&m, "POST", "/api/v1/status", None, None),
        405,
    );

    // The scheme is case-insensitive; the token is not.
    let (code, _, body) = call(
        &m,
        "POST",
        "/api/v1/pause",
        Some(&format!("bearer {TOKEN}")),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let (code, _, _) = call(
        &m,
        "POST",
        "/api/v1/resume",
        Some(&format!("BEARER {TOKEN}")),
        None,
    );
    assert_eq!(code, 200);
    assert_json_error(
        "wrong token",
        &call(
            &m,
            "POST",
            "/api/v1/pause",
            Some(&format!("Bearer {}", TOKEN.to_uppercase())),
            None,
        ),
        401,
    );

    // Text fields are bounded: a 900 KB reason is refused, not stored.
    let huge = json!({ "reason": "x".repeat(900_000) }).to_string();
    assert_json_error(
        "huge reason",
        &call(&m, "POST", "/api/v1/pause", Some(&bearer), Some(&huge)),
        400,
    );
    assert!(m.get("/api/v1/status").unwrap().1["paused"].is_null());
    let long = json!({ "reason": "y".repeat(1000) }).to_string();
    let (code, _, _) = call(&m, "POST", "/api/v1/pause", Some(&bearer), Some(&long));
    assert_eq!(code, 200, "1000 characters are allowed");
    call(&m, "POST", "/api/v1/resume", Some(&bearer), None);
    assert_json_error(
        "not JSON",
        &call(&m, "POST", "/api/v1/pause", Some(&bearer), Some("{reason")),
        400,
    );
    assert_json_error(
        "an unknown field",
        &call(
            &m,
            "POST",
            "/api/v1/pause",
            Some(&bearer),
            Some("{\"reasons\": \"x\"}"),
        ),
        400,
    );

    // Alertmanager: an empty body, and one that is not a webhook.
    assert_json_error(
        "empty webhook",
        &call(&m, "POST", "/api/v1/alertmanager", Some(&bearer), Some("")),
        400,
    );
    assert_json_error(
        "no alerts",
        &call(
            &m,
            "POST",
            "/api/v1/alertmanager",
            Some(&bearer),
            Some("{}"),
        ),
        400,
    );

    // Over max_body (1 MiB): 413 as JSON, or the connection closed under a
    // sender still sending.
    let big = format!("{{\"reason\": \"{}\"}}", "z".repeat(2 << 20));
    let (code, head, body) = raw(
        &m.url,
        &format!(
            "POST /api/v1/pause HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
            big.len()
        ),
    );
    if code != 0 {
        assert_eq!(code, 413, "{head}");
        assert!(
            head.to_ascii_lowercase().contains("application/json"),
            "{head}"
        );
        assert!(body.contains("\"error\""), "{body}");
    }
    assert_eq!(m.get("/healthz").unwrap().0, 200);
    m.stop();
}

#[test]
fn only_the_allowed_host_names_are_served() {
    let m = Mend::start(&[]);
    let get = |host: &str| {
        raw(
            &m.url,
            &format!("GET /api/v1/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    let port = m.url.rsplit(':').next().unwrap().to_string();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(get(&host).0, 200, "{host}");
    }
    // A DNS-rebinding page's name.
    let (code, head, body) = get(&format!("attacker.example:{port}"));
    assert_eq!(code, 421, "{head}");
    assert!(body.contains("[api] hosts"), "{body}");
    assert!(!body.contains("\"checks\""), "no data leaks: {body}");
    m.stop();

    let m = Mend::start_opts(Opts {
        api: "hosts = [\"mend.example.com\", \"127.0.0.1\"]",
        ..Opts::default()
    });
    let (code, _, _) = raw(
        &m.url,
        "GET /healthz HTTP/1.1\r\nHost: mend.example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200, "a configured name");
    let (code, _, _) = raw(
        &m.url,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 421, "the list replaces the defaults");
    drop(m);
}

fn write_config(dir: &Path, api: &str) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let port = free_port();
    let path = dir.join("mend.toml");
    std::fs::write(
        &path,
        format!(
            "[engine]\nplugins_dir = \"plugins\"\nstate_dir = \".\"\n\n[api]\nlisten = \"0.0.0.0:{port}\"\n{api}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_listener_other_machines_reach_needs_tls_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    for args in [&["check-config", "--config"][..], &["run", "--config"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_mend"))
            .args(args)
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{args:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("api.listen")
                && text.contains("tls_cert")
                && text.contains("insecure = true"),
            "{text}"
        );
    }
    let config = write_config(dir.path(), "tls_cert = \"/nonexistent.pem\"");
    let out = Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("set tls_key too"));
}

#[test]
fn on_an_exposed_plain_listener_reads_need_the_token_unless_public() {
    let m = Mend::start_opts(Opts {
        ip: Some("0.0.0.0"),
        api: "insecure = true",
        ..Opts::default()
    });
    let bearer = format!("Bearer {TOKEN}");
    assert_json_error(
        "a read without the token",
        &call(&m, "GET", "/api/v1/status", None, None),
        401,
    );
    assert_json_error(
        "metrics without the token",
        &call(&m, "GET", "/metrics", None, None),
        401,
    );
    let (code, _, _) = call(&m, "GET", "/api/v1/status", Some(&bearer), None);
    assert_eq!(code, 200);
    assert_eq!(
        call(&m, "GET", "/healthz", None, None).0,
        200,
        "probes need no token"
    );
    let (code, ct, _) = call(&m, "GET", "/", None, None);
    assert_eq!(
        (code, ct.starts_with("text/html")),
        (200, true),
        "the page holds no data"
    );
    let spec: Value =
        serde_json::from_str(&call(&m, "GET", "/api/v1/openapi.json", None, None).2).unwrap();
    assert_eq!(
        spec["paths"]["/api/v1/status"]["get"]["security"],
        json!([{"bearer": []}]),
        "the document says reads need the token here"
    );
    // The CLI sends the token for reads too.
    assert_eq!(m.cli(&["incidents"]).status.code(), Some(0));
    m.stop();

    let m = Mend::start_opts(Opts {
        ip: Some("0.0.0.0"),
        api: "insecure = true\npublic_reads = true",
        ..Opts::default()
    });
    assert_eq!(call(&m, "GET", "/api/v1/status", None, None).0, 200);
    assert_json_error(
        "changes still need it",
        &call(&m, "POST", "/api/v1/pause", None, None),
        401,
    );
    m.stop();
}

fn openssl() -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "command -v openssl"])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !p.is_empty()).then(|| PathBuf::from(p))
}

#[test]
fn https_serves_with_the_configured_certificate() {
    let Some(openssl) = openssl() else {
        println!("SKIPPED: openssl is not installed (it makes the test certificate)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        // A self-signed leaf (not a CA), as rustls accepts as its own root.
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let m = Mend::start_opts(Opts {
        ip: Some("0.0.0.0"),
        tls: Some((&cert, &key)),
        ..Opts::default()
    });
    assert!(m.url.starts_with("https://"));
    let (code, _) = m.get("/api/v1/status").unwrap();
    assert_eq!(code, 401, "an exposed listener: reads need the token");
    // The CLI reads the status over HTTPS with the token: healthy (0) or
    // "some check not healthy yet" (3, the check may not have run), never
    // unreachable or unauthorised.
    let out = m.cli(&["status"]);
    assert!(
        matches!(out.status.code(), Some(0 | 3)) && out.stdout.starts_with(b"mend "),
        "the CLI over HTTPS: {out:?}"
    );
    // Plain HTTP on the TLS port gets no answer.
    let plain = m.url.replace("https://", "http://");
    let (code, _, _) = raw(
        &plain,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_ne!(code, 200);
    m.stop();
}

#[test]
fn the_openapi_document_has_bodies_schemas_and_content_types() {
    let m = Mend::start(&[]);
    let spec = m.get("/api/v1/openapi.json").unwrap().1;
    assert_eq!(
        spec["openapi"].as_str().map(|v| v.starts_with("3.1")),
        Some(true),
        "{spec}"
    );
    let routes = [
        ("/", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/api/v1/status", "get"),
        ("/api/v1/checks", "get"),
        ("/api/v1/checks/{name}", "get"),
        ("/api/v1/checks/{name}/run", "post"),
        ("/api/v1/checks/{name}/heal", "post"),
        ("/api/v1/checks/{name}/pause", "post"),
        ("/api/v1/checks/{name}/resume", "post"),
        ("/api/v1/incidents", "get"),
        ("/api/v1/incidents/{id}", "get"),
        ("/api/v1/incidents/{id}/ack", "post"),
        ("/api/v1/incidents/{id}/resolve", "post"),
        ("/api/v1/stats", "get"),
        ("/api/v1/plugins", "get"),
        ("/api/v1/pause", "post"),
        ("/api/v1/resume", "post"),
        ("/api/v1/reload", "post"),
        ("/api/v1/alertmanager", "post"),
    ];
    for (path, method) in routes {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} is not described"
        );
    }
    let op = |p: &str, m: &str| spec["paths"][p][m].clone();
    let schema = |p: &str, m: &str, code: &str| {
        op(p, m)["responses"][code]["content"]["application/json"]["schema"]["$ref"].clone()
    };
    assert_eq!(
        schema("/api/v1/status", "get", "200"),
        "#/components/schemas/StatusView"
    );
    assert_eq!(
        schema("/api/v1/incidents/{id}", "get", "404"),
        "#/components/schemas/ErrorBody"
    );
    assert_eq!(
        schema("/api/v1/checks/{name}/heal", "post", "409"),
        "#/components/schemas/HealView"
    );
    assert!(op("/api/v1/pause", "post")["requestBody"]["content"]["application/json"].is_object());
    assert!(
        op("/api/v1/alertmanager", "post")["requestBody"]["content"]["application/json"]
            .is_object()
    );
    let metrics = &op("/metrics", "get")["responses"]["200"]["content"];
    assert!(
        metrics["text/plain"].is_object() && metrics["application/openmetrics-text"].is_object(),
        "{metrics}"
    );
    assert!(op("/", "get")["responses"]["200"]["content"]["text/html"].is_object());
    assert_eq!(
        op("/api/v1/pause", "post")["security"],
        json!([{"bearer": []}])
    );
    assert!(
        op("/api/v1/status", "get")["security"].is_null(),
        "loopback reads are open"
    );
    for name in [
        "CheckView",
        "IncidentView",
        "AttemptView",
        "FindingView",
        "PausedView",
        "ErrorBody",
        "Webhook",
    ] {
        assert!(spec["components"]["schemas"][name].is_object(), "{name}");
    }
    m.stop();
}

/// promtool, on PATH or where scripts/lib.sh unpacks it.
fn promtool() -> Option<PathBuf> {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/usr/bin/promtool");
    if local.exists() {
        return Some(local);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !p.is_empty()).then(|| PathBuf::from(p))
}

#[test]
fn metrics_are_classic_text_or_openmetrics_and_pass_promtool() {
    let m = Mend::start(&[]);
    m.wait_for("a first run", Duration::from_secs(30), |m| {
        !m.check("app")["last"].is_null()
    });
    let (code, ct, text) = call(&m, "GET", "/metrics", None, None);
    assert_eq!(code, 200);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(!text.contains("# EOF"), "classic text has no EOF");
    let mut req = m.client().get(format!("{}/metrics", m.url));
    req = req.header(
        "Accept",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    let mut resp = req.call().unwrap();
    let om_ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    let om = resp.body_mut().read_to_string().unwrap();
    assert!(om_ct.starts_with("application/openmetrics-text"), "{om_ct}");
    assert!(om.ends_with("# EOF\n"));

    // HELP and TYPE for every family a sample belongs to.
    let mut typed = std::collections::BTreeMap::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            typed.insert(name.to_string(), ty.to_string());
        }
    }
    let helped: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .map(|r| r.split(' ').next().unwrap())
        .collect();
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = l.split(['{', ' ']).next().unwrap();
        let family = typed
            .keys()
            .filter(|f| {
                name == f.as_str()
                    || (name.starts_with(f.as_str())
                        && ["_bucket", "_sum", "_count"].contains(&&name[f.len()..]))
            })
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("no TYPE for {name}"));
        assert!(helped.contains(&family.as_str()), "no HELP for {family}");
    }
    for want in [
        "mend_build_info{version=\"",
        "mend_check_status{check=\"app\",status=\"ok\"} 1",
        "mend_check_status{check=\"app\",status=\"fail\"} 0",
        "mend_check_health{check=\"app\",health=\"healthy\"} 1",
        "mend_check_last_run_timestamp_seconds{check=\"app\"} ",
        "mend_action_attempts_total{policy=\"fix-app\",step=\"fix\",outcome=\"healed\"} 0",
        "mend_plugin_errors_total{plugin=\"fixture-scripted\",kind=\"trap\"} 0",
        "mend_plugin_errors_total{plugin=\"fixture-fixer\",kind=\"deadline-exceeded\"} 0",
        "mend_incidents_opened_total{policy=\"fix-app\",severity=\"warning\"} 0",
        "mend_breaker_state{check=\"app\",step=\"fix\",state=\"closed\"} 1",
        "mend_incidents{state=\"open\"} 0",
        "mend_reloads_total{kind=\"config\",result=\"ok\"} 0",
        "# TYPE mend_action_duration_seconds histogram",
        "# TYPE mend_reloads_total counter",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_cpu_seconds_total ",
    ] {
        assert!(text.contains(want), "no `{want}` in\n{text}");
    }

    // An action's duration and outcome after a heal.
    m.set("app", "fail disk.full");
    m.wait_for("the check to fail", Duration::from_secs(30), |m| {
        m.check("app")["status"] == "fail"
    });
    let (code, v) = m.post("/api/v1/checks/app/heal", Some(TOKEN), &json!({}));
    assert_eq!(code, 202, "{v}");
    // The attempt is counted, then the incident closes.
    m.wait_for("the heal", Duration::from_secs(30), |m| {
        let t = m.get_text("/metrics");
        t.contains(
            "mend_action_attempts_total{policy=\"fix-app\",step=\"fix\",outcome=\"healed\"} 1",
        ) && t.contains("mend_incidents{state=\"healed\"} 1")
    });
    let text = m.get_text("/metrics");
    assert!(
        text.contains("mend_action_duration_seconds_count{policy=\"fix-app\",step=\"fix\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mend_incidents{state=\"healed\"} 1"),
        "{text}"
    );

    let Some(promtool) = promtool() else {
        println!(
            "SKIPPED promtool: not installed (scripts/test unpacks it from Debian's prometheus package)"
        );
        m.stop();
        return;
    };
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    m.stop();
}

/// The names of the checks in a list answer.
fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn checks_are_streamed_whole_and_paged_in_config_order() {
    // 300 more checks than `app`: their JSON spans many streamed chunks.
    let extra: String = (0..300)
        .map(|i| {
            format!(
                "[[check]]\nname = \"c{i:03}\"\nplugin = \"fixture-scripted\"\ninterval = \"1h\"\n\
                 grants = {{ dirs = [{{ host = \"{{ctl}}\", guest = \"/ctl\" }}] }}\n\
                 config = {{ file = \"/ctl/app\" }}\n"
            )
        })
        .collect();
    let m = Mend::start_opts(Opts {
        extra_checks: &extra,
        // 301 lines of warnings (grants under /tmp) and results would fill
        // the stderr pipe no one reads here.
        env: &[("MEND_LOG", "error")],
        ..Opts::default()
    });
    let want: Vec<String> = std::iter::once("app".to_string())
        .chain((0..300).map(|i| format!("c{i:03}")))
        .collect();
    m.wait_for("every check's first run", Duration::from_secs(60), |m| {
        m.get("/api/v1/checks")
            .unwrap()
            .1
            .as_array()
            .is_some_and(|v| v.len() == 301 && v.iter().all(|c| !c["last"].is_null()))
    });

    let total = |path: &str| {
        let resp = m.client().get(format!("{}{path}", m.url)).call().unwrap();
        resp.headers()["x-total-count"]
            .to_str()
            .unwrap()
            .to_string()
    };
    let (code, all) = m.get("/api/v1/checks").unwrap();
    assert_eq!(code, 200);
    assert_eq!(names(&all), want, "every check, in config order");
    assert_eq!(total("/api/v1/checks"), "301");
    assert_eq!(all[1]["policies"], json!([]));
    assert_eq!(all[0]["policies"], json!(["fix-app"]));
    assert_eq!(all[1]["interval_ms"], 3_600_000);
    assert_eq!(all[0]["interval_ms"], 500);

    let page = m.get("/api/v1/checks?offset=1&limit=2").unwrap().1;
    assert_eq!(names(&page), ["c000", "c001"]);
    assert_eq!(total("/api/v1/checks?offset=1&limit=2"), "301");
    assert_eq!(
        names(&m.get("/api/v1/checks?offset=299").unwrap().1),
        ["c298", "c299"]
    );
    assert!(names(&m.get("/api/v1/checks?offset=301").unwrap().1).is_empty());
    assert!(
        names(
            &m.get("/api/v1/checks?offset=99999999999&limit=5")
                .unwrap()
                .1
        )
        .is_empty()
    );
    assert!(names(&m.get("/api/v1/checks?limit=0").unwrap().1).is_empty());

    let (code, status) = m.get("/api/v1/status").unwrap();
    assert_eq!(code, 200);
    assert_eq!(names(&status["checks"]), want);
    assert_eq!(status["total_checks"], 301);
    assert_eq!(status["open_incidents"], 0);
    let lag = &status["schedule_lag"];
    assert!(lag["runs"].as_u64().unwrap() >= 301, "{lag}");
    assert!(
        lag["p99_ms"].as_f64().unwrap() >= lag["p50_ms"].as_f64().unwrap(),
        "{lag}"
    );
    let head = m.get("/api/v1/status?limit=0").unwrap().1;
    assert_eq!(head["checks"], json!([]));
    assert_eq!(head["total_checks"], 301);
    assert_eq!(head["version"], status["version"]);
    let page = m.get("/api/v1/status?offset=300&limit=10").unwrap().1;
    assert_eq!(names(&page["checks"]), ["c299"]);

    // One check is found by name, not by copying them all.
    assert_eq!(m.check("c150")["name"], "c150");
    for bad in [
        "offset=-1",
        "limit=x",
        "limit=-3",
        "offset=9223372036854775808",
    ] {
        assert_json_error(
            bad,
            &call(&m, "GET", &format!("/api/v1/checks?{bad}"), None, None),
            400,
        );
        assert_json_error(
            bad,
            &call(&m, "GET", &format!("/api/v1/status?{bad}"), None, None),
            400,
        );
    }
    m.stop();
}
