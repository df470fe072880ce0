//! The HTTP plugins (`http-probe`, `webhook-notify`) and the `stale-file`
//! action, through the real sandbox, against a real HTTP server (axum on
//! 127.0.0.1) and real commands.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use common::*;
use mend::capabilities::fs::Mode;
use mend::capabilities::{Backends, Grants};
use mend::contract::{Finding, Status};
use mend::runtime::PluginError;
use serde_json::json;

/// What the server saw.
#[derive(Clone, Default)]
struct Seen {
    /// Every request, as `METHOD /path`.
    requests: Arc<Mutex<Vec<String>>>,
    /// Webhook deliveries: headers and body.
    hooks: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    /// Answer the next N webhook deliveries with 500.
    fail_next: Arc<AtomicU32>,
    /// A file the restart endpoint refreshes, like a restarted poller.
    touch: Arc<Mutex<Option<PathBuf>>>,
}

impl Seen {
    fn log(&self, r: &str) {
        self.requests.lock().unwrap().push(r.to_string());
    }
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
    fn hooks(&self) -> Vec<(HeaderMap, String)> {
        self.hooks.lock().unwrap().clone()
    }
}

struct Server {
    addr: SocketAddr,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn server() -> Server {
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/health",
            get(|State(s): State<Seen>| async move {
                s.log("GET /health");
                r#"{"status":"ok","db":"up"}"#
            }),
        )
        .route(
            "/down",
            get(|State(s): State<Seen>| async move {
                s.log("GET /down");
                (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
            }),
        )
        .route(
            "/slow",
            get(|State(s): State<Seen>| async move {
                s.log("GET /slow");
                tokio::time::sleep(Duration::from_millis(400)).await;
                r#"{"status":"ok"}"#
            }),
        )
        .route(
            "/hook/{token}",
            post(
                |State(s): State<Seen>,
                 Path(token): Path<String>,
                 headers: HeaderMap,
                 body: String| async move {
                    s.log(&format!("POST /hook/{token}"));
                    s.hooks.lock().unwrap().push((headers, body));
                    if token == "gone" {
                        return StatusCode::NOT_FOUND;
                    }
                    let failing = s
                        .fail_next
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if failing {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .route(
            "/admin/restart-poller",
            post(|State(s): State<Seen>| async move {
                s.log("POST /admin/restart-poller");
                let path = s.touch.lock().unwrap().clone();
                if let Some(p) = path {
                    std::fs::write(p, r#"{"fresh":true}"#).unwrap();
                }
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, seen, task }
}

fn urls(prefixes: &[String]) -> Grants {
    Grants {
        urls: prefixes.to_vec(),
        ..Grants::none()
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn codes(findings: &[Finding]) -> Vec<(&str, Status)> {
    findings
        .iter()
        .map(|f| (f.code.as_str(), f.status))
        .collect()
}

// --- http-probe -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_a_healthy_endpoint_is_ok() {
    let s = server().await;
    let p = load(artifacts::HTTP_PROBE).await;
    let r = detect(
        &p,
        json!({"url": s.url("/health"), "expect_body": "\"db\":\"up\"", "warn_latency": "2s"}),
        &urls(&[s.url("/")]),
    )
    .await
    .unwrap();
    assert_eq!(codes(&r.value), [("http.ok", Status::Ok)], "{:?}", r.value);
    assert_eq!(r.value[0].metrics["status"], 200.0);
    assert!(r.value[0].metrics.contains_key("latency_ms"));
    assert_eq!(r.value[0].labels["url"], s.url("/health"));
    assert_eq!(s.seen.requests(), ["GET /health"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_a_503_fails_and_quotes_the_body() {
    let s = server().await;
    let p = load(artifacts::HTTP_PROBE).await;
    let r = detect(&p, json!({"url": s.url("/down")}), &urls(&[s.url("/")]))
        .await
        .unwrap();
    assert_eq!(codes(&r.value), [("http.status", Status::Fail)]);
    assert_eq!(r.value[0].metrics["status"], 503.0);
    assert!(
        r.value[0].summary.contains("503") && r.value[0].summary.contains("database unavailable"),
        "{}",
        r.value[0].summary
    );
    // A 503 that the operator declared healthy (a maintenance page) is ok.
    let r = detect(
        &p,
        json!({"url": s.url("/down"), "expect_status": [200, 503]}),
        &urls(&[s.url("/")]),
    )
    .await
    .unwrap();
    assert_eq!(codes(&r.value), [("http.ok", Status::Ok)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_a_body_without_the_expected_text_fails() {
    let s = server().await;
    let p = load(artifacts::HTTP_PROBE).await;
    let r = detect(
        &p,
        json!({"url": s.url("/health"), "expect_body": "\"db\":\"down\""}),
        &urls(&[s.url("/health")]),
    )
    .await
    .unwrap();
    assert_eq!(codes(&r.value), [("http.body", Status::Fail)]);
    assert_eq!(r.value[0].metrics["status"], 200.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_a_slow_answer_warns_or_fails() {
    let s = server().await;
    let p = load(artifacts::HTTP_PROBE).await;
    let g = urls(&[s.url("/")]);
    // The server takes at least 400 ms.
    let warn = detect(
        &p,
        json!({"url": s.url("/slow"), "warn_latency": "100ms", "fail_latency": "30s"}),
        &g,
    )
    .await
    .unwrap();
    assert_eq!(codes(&warn.value), [("http.slow", Status::Warn)]);
    assert!(warn.value[0].metrics["latency_ms"] >= 400.0);
    let fail = detect(
        &p,
        json!({"url": s.url("/slow"), "warn_latency": "50ms", "fail_latency": "100ms"}),
        &g,
    )
    .await
    .unwrap();
    assert_eq!(codes(&fail.value), [("http.slow", Status::Fail)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_nothing_listening_is_unreachable() {
    let url = format!("http://127.0.0.1:{}/health", closed_port());
    let p = load(artifacts::HTTP_PROBE).await;
    let r = detect(&p, json!({"url": url}), &urls(std::slice::from_ref(&url)))
        .await
        .unwrap();
    assert_eq!(codes(&r.value), [("http.unreachable", Status::Fail)]);
    assert_eq!(r.value[0].labels["error"], "connection refused");
    assert!(
        r.value[0].summary.ends_with(": connection refused"),
        "{}",
        r.value[0].summary
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_an_ungranted_url_is_denied_and_never_sent() {
    let s = server().await;
    let p = load(artifacts::HTTP_PROBE).await;
    // Granted /health only; /down is outside it.
    let err = detect(
        &p,
        json!({"url": s.url("/down")}),
        &urls(&[s.url("/health")]),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PluginError::Denied { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("http-probe"), "{text}");
    assert!(text.contains("/down"), "{text}");
    assert!(!text.contains("denied: denied"), "{text}");
    // Without any URL grant it does not even start.
    let err = detect(&p, json!({"url": s.url("/health")}), &Grants::none())
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::MissingGrant { .. }), "{err:?}");
    assert!(s.seen.requests().is_empty(), "{:?}", s.seen.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_rejects_a_bad_config() {
    let p = load(artifacts::HTTP_PROBE).await;
    let g = urls(&["http://127.0.0.1:1/".to_string()]);
    for bad in [
        json!({"url": "http://127.0.0.1:1/", "expect_status": 42}),
        json!({"url": "http://127.0.0.1:1/", "warn_latency": "2s", "fail_latency": "1s"}),
        json!({"url": "http://127.0.0.1:1/", "expect_staus": 200}),
        json!({}),
    ] {
        let err = detect(&p, bad.clone(), &g).await.unwrap_err();
        assert!(matches!(err, PluginError::BadConfig { .. }), "{bad}: {err}");
    }
}

// --- webhook-notify -------------------------------------------------------

fn incident_findings() -> Vec<Finding> {
    vec![Finding {
        check: "web-health".into(),
        code: "http.status".into(),
        status: Status::Fail,
        summary: "GET http://127.0.0.1:8080/health answered 503".into(),
        metrics: [("status".to_string(), 503.0)].into(),
        labels: [(
            "url".to_string(),
            "http://127.0.0.1:8080/health".to_string(),
        )]
        .into(),
    }]
}

async fn notify(
    url: &str,
    grant: &str,
    extra: serde_json::Value,
    dry_run: bool,
) -> Result<mend::contract::Outcome, PluginError> {
    let p = load(artifacts::WEBHOOK_NOTIFY).await;
    let mut config = json!({"url": url, "backoff": "50ms"});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let g = resolved(&urls(&[grant.to_string()]));
    remedy_in(&p, config, &g, &incident_findings(), dry_run)
        .await
        .map(|r| r.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_delivers_a_json_summary_with_slack_text() {
    let s = server().await;
    let out = notify(
        &s.url("/hook/T0-SECRET"),
        &s.url("/hook/"),
        json!({"headers": {"Authorization": "Bearer from-env"}, "title": "mend on web-1"}),
        false,
    )
    .await
    .unwrap();
    let hooks = s.seen.hooks();
    assert_eq!(hooks.len(), 1);
    let (headers, body) = &hooks[0];
    assert_eq!(headers["authorization"], "Bearer from-env");
    assert_eq!(headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(text.starts_with("*mend on web-1*: check `test`"), "{text}");
    assert!(text.contains("[fail] `http.status`: GET"), "{text}");
    assert_eq!(v["check"], "test");
    assert_eq!(v["status"], "fail");
    let f = &v["findings"][0];
    assert_eq!(f["check"], "web-health");
    assert_eq!(f["code"], "http.status");
    assert_eq!(f["status"], "fail");
    assert_eq!(f["metrics"]["status"], 503.0);
    assert_eq!(f["labels"]["url"], "http://127.0.0.1:8080/health");
    // The secret in the URL stays out of the incident record.
    let shown = format!("{out:?}");
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(out.message.contains("attempt 1 of 3"), "{}", out.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_a_500_then_succeeds() {
    let s = server().await;
    s.seen.fail_next.store(1, Ordering::SeqCst);
    let out = notify(&s.url("/hook/x"), &s.url("/hook/"), json!({}), false)
        .await
        .unwrap();
    assert_eq!(s.seen.hooks().len(), 2, "one 500, then delivered");
    assert!(out.steps[0].contains("HTTP 500"), "{:?}", out.steps);
    assert!(out.steps.iter().any(|s| s.contains("waiting 50 ms")));
    assert!(out.message.contains("attempt 2 of 3"), "{}", out.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gives_up_after_its_retries_and_never_retries_a_404() {
    let s = server().await;
    s.seen.fail_next.store(100, Ordering::SeqCst);
    let err = notify(
        &s.url("/hook/x"),
        &s.url("/hook/"),
        json!({"retries": 2}),
        false,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PluginError::Failed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("gave up after 3 attempt(s)"),
        "{err}"
    );
    assert_eq!(s.seen.hooks().len(), 3);

    let err = notify(&s.url("/hook/gone"), &s.url("/hook/"), json!({}), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert_eq!(s.seen.hooks().len(), 4, "a 404 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_connection_errors() {
    let url = format!("http://127.0.0.1:{}/hook/x", closed_port());
    let err = notify(&url, &url, json!({"retries": 1}), false)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("gave up after 2 attempt(s)"), "{text}");
    assert!(text.contains("connection refused"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_dry_run_shows_the_payload_and_sends_nothing() {
    let s = server().await;
    let out = notify(
        &s.url("/hook/x"),
        &s.url("/hook/"),
        json!({"headers": {"Authorization": "Bearer hidden-value"}}),
        true,
    )
    .await
    .unwrap();
    assert!(s.seen.requests().is_empty(), "{:?}", s.seen.requests());
    assert!(!out.changed);
    let all = out.steps.join("\n");
    assert!(all.contains("would POST"), "{all}");
    assert!(all.contains("Authorization"), "{all}");
    assert!(
        !all.contains("hidden-value"),
        "header values stay hidden: {all}"
    );
    assert!(all.contains("\"text\":\"*mend*: check `test`"), "{all}");
    assert!(all.contains("\"code\":\"http.status\""), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_to_an_ungranted_url_is_denied() {
    let s = server().await;
    let err = notify(&s.url("/hook/x"), &s.url("/health"), json!({}), false)
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Denied { .. }), "{err:?}");
    assert!(err.to_string().contains("webhook-notify"), "{err}");
    assert!(s.seen.requests().is_empty());
}

// --- stale-file, the action side ------------------------------------------

fn stale_data() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("status.json");
    std::fs::write(&p, "{}").unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3 * 3600))
        .unwrap();
    tmp
}

const STALE: &str = r#"{"path": "/data/status.json", "max_age": "10m"}"#;

async fn stale_findings(p: &mend::runtime::Plugin, data: &std::path::Path) -> Vec<Finding> {
    let config: serde_json::Value = serde_json::from_str(STALE).unwrap();
    detect(p, config, &dir(data, "/data", Mode::Ro))
        .await
        .unwrap()
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_file_restarts_the_poller_by_command_and_the_file_is_fresh_again() {
    let data = stale_data();
    let scripts = tempfile::tempdir().unwrap();
    let poller = scripts.path().join("poller.sh");
    let file = data.path().join("status.json");
    std::fs::write(
        &poller,
        format!(
            "echo restarting >&2\nprintf '{{\"fresh\":true}}' > '{}'\n",
            file.display()
        ),
    )
    .unwrap();
    let backends = Backends::from_toml(&format!(
        r#"
[commands.restart-poller]
argv = ["/bin/sh", "{}"]
timeout = "20s"
"#,
        poller.display()
    ))
    .unwrap();
    let g = Grants {
        commands: vec!["restart-poller".into()],
        ..Grants::none()
    }
    .resolve_with(&backends)
    .unwrap();

    let p = load(artifacts::STALE_FILE).await;
    let before = stale_findings(&p, data.path()).await;
    assert_eq!(codes(&before), [("file.stale", Status::Fail)]);

    let config = json!({"command": "restart-poller"});
    let plan = remedy_in(&p, config.clone(), &g, &before, true)
        .await
        .unwrap()
        .value;
    assert!(!plan.changed);
    assert_eq!(
        plan.steps,
        ["would run command `restart-poller` (/data/status.json not refreshed)"]
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{}",
        "dry-run must run nothing"
    );

    let done = remedy_in(&p, config, &g, &before, false)
        .await
        .unwrap()
        .value;
    assert!(done.changed);
    assert!(
        done.steps[0].contains("ran command `restart-poller`"),
        "{:?}",
        done.steps
    );
    let after = stale_findings(&p, data.path()).await;
    assert_eq!(codes(&after), [("file.fresh", Status::Ok)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_file_reports_a_failing_or_ungranted_command() {
    let backends = Backends::from_toml(
        r#"
[commands.broken]
argv = ["/bin/sh", "-c", "echo 'poller.service not found' >&2; exit 5"]
[commands.other]
argv = ["/bin/true"]
"#,
    )
    .unwrap();
    let p = load(artifacts::STALE_FILE).await;
    let g = Grants {
        commands: vec!["broken".into()],
        ..Grants::none()
    }
    .resolve_with(&backends)
    .unwrap();
    let err = remedy_in(&p, json!({"command": "broken"}), &g, &[], false)
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Failed { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("exited with 5") && text.contains("poller.service not found"),
        "{text}"
    );
    let err = remedy_in(&p, json!({"command": "other"}), &g, &[], false)
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Denied { .. }), "{err:?}");
    assert!(err.to_string().contains("`other`"), "{err}");
    for bad in [
        json!({}),
        json!({"command": "broken", "restart_url": "http://127.0.0.1:1/"}),
    ] {
        let err = remedy_in(&p, bad.clone(), &g, &[], false)
            .await
            .unwrap_err();
        assert!(matches!(err, PluginError::BadConfig { .. }), "{bad}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_file_restarts_the_poller_through_a_restart_endpoint() {
    let s = server().await;
    let data = stale_data();
    *s.seen.touch.lock().unwrap() = Some(data.path().join("status.json"));
    let p = load(artifacts::STALE_FILE).await;
    let before = stale_findings(&p, data.path()).await;
    let url = s.url("/admin/restart-poller");
    let g = resolved(&urls(&[s.url("/admin/")]));
    let config = json!({"restart_url": url});

    let plan = remedy_in(&p, config.clone(), &g, &before, true)
        .await
        .unwrap()
        .value;
    assert_eq!(
        plan.steps,
        [format!(
            "would POST {url} (/data/status.json not refreshed)"
        )]
    );
    assert!(s.seen.requests().is_empty(), "dry-run sent a request");

    let done = remedy_in(&p, config, &g, &before, false)
        .await
        .unwrap()
        .value;
    assert!(done.changed);
    assert_eq!(s.seen.requests(), ["POST /admin/restart-poller"]);
    let after = stale_findings(&p, data.path()).await;
    assert_eq!(codes(&after), [("file.fresh", Status::Ok)]);
}

// --- Through `mend run`: a ladder that fails, then a human is told once ----

/// The real binary: the poller restart fails (the command exits 3), the
/// ladder is exhausted, and `webhook-notify` as `[policy.escalate]` posts
/// the incident to the webhook exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mend_run_escalates_a_failed_ladder_to_the_webhook_once() {
    use mend::store::{AttemptOutcome, IncidentState, Store};

    let s = server().await;
    let data = stale_data();
    let state = tempfile::tempdir().unwrap();
    let plugins = state.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for p in [artifacts::STALE_FILE, artifacts::WEBHOOK_NOTIFY] {
        std::fs::copy(
            p,
            plugins.join(std::path::Path::new(p).file_name().unwrap()),
        )
        .unwrap();
    }
    let config = state.path().join("mend.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[engine]
plugins_dir = "plugins"
state_dir = "."
interval = "500ms"

# Other tests run mend at the same time: no admin API on a fixed port.
[api]
listen = "off"

[commands.restart-poller]
argv = ["/bin/sh", "-c", "echo 'status-poller.service: unit not found' >&2; exit 3"]

[[check]]
name = "status-data"
plugin = "stale-file"
jitter = "0s"
grants = {{ dirs = [{{ host = "{data}", guest = "/data" }}] }}
config = {{ path = "/data/status.json", max_age = "10m" }}

[[policy]]
name = "restart-poller"
check = "status-data"
trigger = {{ consecutive = 2 }}
backoff = {{ base = "100ms", jitter = 0.0 }}

[[policy.step]]
name = "restart-poller"
action = "stale-file"
settle = "200ms"
grants = {{ commands = ["restart-poller"] }}
config = {{ command = "restart-poller" }}

[policy.escalate]
name = "notify-oncall"
action = "webhook-notify"
grants = {{ urls = ["{hooks}"] }}
config = {{ url = "{hook}", title = "mend on test", backoff = "100ms" }}
"#,
            data = data.path().display(),
            hooks = s.url("/hook/"),
            hook = s.url("/hook/T0-SECRET"),
        ),
    )
    .unwrap();
    let mut mend = std::process::Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(["run", "--config"])
        .arg(&config)
        .env("MEND_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let db = state.path().join("mend.db");
    let escalated = |db: &std::path::Path| {
        Store::open_read_only(db)
            .ok()?
            .incidents(false, 10)
            .ok()?
            .into_iter()
            .find(|i| {
                i.state == IncidentState::Escalated
                    && i.attempts
                        .iter()
                        .any(|a| a.outcome == AttemptOutcome::Escalation)
            })
    };
    let start = std::time::Instant::now();
    let incident = loop {
        if let Some(i) = escalated(&db) {
            break i;
        }
        if let Some(status) = mend.try_wait().unwrap() {
            panic!("mend exited early: {status:?}");
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = mend.kill();
            panic!("no escalated incident in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Several more check runs while the file stays stale: still one message.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &mend.id().to_string()])
        .status();
    assert!(mend.wait().unwrap().success());

    let outcomes: Vec<(&str, AttemptOutcome)> = incident
        .attempts
        .iter()
        .map(|a| (a.action.as_str(), a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("restart-poller", AttemptOutcome::Failed),
            ("notify-oncall", AttemptOutcome::Escalation)
        ]
    );
    let failed = incident.attempts[0].detail.to_string();
    assert!(failed.contains("unit not found"), "{failed}");
    let hooks = s.seen.hooks();
    assert_eq!(hooks.len(), 1, "a human is told exactly once");
    let v: serde_json::Value = serde_json::from_str(&hooks[0].1).unwrap();
    assert_eq!(v["check"], "status-data");
    assert_eq!(v["findings"][0]["code"], "file.stale");
    assert_eq!(v["findings"][0]["labels"]["path"], "/data/status.json");
    let text = v["text"].as_str().unwrap();
    assert!(
        text.starts_with("*mend on test*: [WARNING] check `status-data`"),
        "{text}"
    );
    assert_eq!(v["incident"], incident.id);
    assert_eq!(v["policy"], "restart-poller");
    let detail = incident.attempts[1].detail.to_string();
    assert!(detail.contains("notified"), "{detail}");
    assert!(!detail.contains("SECRET"), "{detail}");
}

/// Severity routes (issue 11): through the real binary, a critical
/// check's escalation goes to `[escalate.critical]` (the pager webhook), a
/// warning one's to `[escalate.warning]` (the chat webhook), each body
/// carrying the incident, policy, severity, labels, the decision trail and
/// the dashboard link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mend_run_routes_escalations_by_severity_to_real_webhooks() {
    use mend::store::{IncidentState, Store};

    let s = server().await;
    let data = stale_data();
    let state = tempfile::tempdir().unwrap();
    let plugins = state.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for p in [artifacts::STALE_FILE, artifacts::WEBHOOK_NOTIFY] {
        std::fs::copy(
            p,
            plugins.join(std::path::Path::new(p).file_name().unwrap()),
        )
        .unwrap();
    }
    let check = |name: &str, severity: &str| {
        format!(
            r#"
[[check]]
name = "{name}"
plugin = "stale-file"
jitter = "0s"
severity = "{severity}"
labels = {{ team = "{name}-team" }}
grants = {{ dirs = [{{ host = "{data}", guest = "/data" }}] }}
config = {{ path = "/data/status.json", max_age = "10m" }}

[[policy]]
name = "fix-{name}"
check = "{name}"
trigger = {{ consecutive = 2 }}

[[policy.step]]
name = "restart-poller"
action = "stale-file"
settle = "200ms"
grants = {{ commands = ["restart-poller"] }}
config = {{ command = "restart-poller" }}
"#,
            data = data.path().display()
        )
    };
    let route = |severity: &str, hook: &str| {
        format!(
            r#"
[escalate.{severity}]
name = "{hook}"
action = "webhook-notify"
grants = {{ urls = ["{hooks}"] }}
config = {{ url = "{url}", title = "{hook}", backoff = "100ms" }}
"#,
            hooks = s.url("/hook/"),
            url = s.url(&format!("/hook/{hook}")),
        )
    };
    let config = state.path().join("mend.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[engine]
plugins_dir = "plugins"
state_dir = "."
interval = "500ms"

[api]
listen = "off"
url = "https://mend.example.com"

[commands.restart-poller]
argv = ["/bin/sh", "-c", "exit 3"]
{}{}{}{}"#,
            check("db", "critical"),
            check("cache", "warning"),
            route("critical", "pager"),
            route("warning", "chat"),
        ),
    )
    .unwrap();
    let mut mend = std::process::Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(["run", "--config"])
        .arg(&config)
        .env("MEND_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while s.seen.hooks().len() < 2 {
        if let Some(status) = mend.try_wait().unwrap() {
            panic!("mend exited early: {status:?}");
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = mend.kill();
            panic!("not both escalations in time: {:?}", s.seen.requests());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &mend.id().to_string()])
        .status();
    assert!(mend.wait().unwrap().success());

    let mut requests = s.seen.requests();
    requests.sort();
    assert_eq!(
        requests,
        ["POST /hook/chat", "POST /hook/pager"],
        "one each"
    );
    let incidents = Store::open_read_only(&state.path().join("mend.db"))
        .unwrap()
        .incidents(false, 10)
        .unwrap();
    for (check, severity, title) in [("db", "critical", "pager"), ("cache", "warning", "chat")] {
        let body = s
            .seen
            .hooks()
            .into_iter()
            .map(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).unwrap())
            .find(|v| v["check"] == check)
            .unwrap_or_else(|| panic!("no escalation for {check}"));
        let inc = incidents.iter().find(|i| i.check == check).unwrap();
        assert_eq!(inc.state, IncidentState::Escalated);
        assert_eq!(body["severity"], severity, "{body}");
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .starts_with(&format!("*{title}*: [{}]", severity.to_uppercase())),
            "{body}"
        );
        assert_eq!(body["incident"], inc.id, "{body}");
        assert_eq!(body["policy"], format!("fix-{check}"), "{body}");
        assert_eq!(body["labels"]["team"], format!("{check}-team"), "{body}");
        assert_eq!(
            body["link"],
            format!("https://mend.example.com/#incident/{}", inc.id),
            "{body}"
        );
        let trail: Vec<&str> = body["trail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert!(
            trail[0].starts_with("opened: 2 bad results in a row"),
            "{trail:?}"
        );
        assert!(
            trail
                .iter()
                .any(|l| l.starts_with("step restart-poller: failed")),
            "{trail:?}"
        );
        assert!(
            trail
                .iter()
                .any(|l| l.starts_with("escalated: ladder exhausted")),
            "{trail:?}"
        );
    }
}
