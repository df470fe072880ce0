//! The admin API's request parsing: arbitrary methods, paths, queries,
//! `Host` and `Authorization` headers and bodies through the real router
//! of a real engine (no checks; one incident in its store). Properties:
//! no request makes a 500, and every error answer is `{"error": "..."}`.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use mend::engine::{Clock, Engine, shutdown};
use mend::runtime::{Runtime, RuntimeConfig};
use mend::service::Current;
use mend::store::{NewIncident, Store};
use tower::ServiceExt;

const TOKEN: &str = "fuzz-token";
const METHODS: [&str; 6] = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"];
const PATHS: [&str; 8] = [
    "/api/v1/checks/",
    "/api/v1/incidents/",
    "/api/v1/incidents",
    "/api/v1/alertmanager",
    "/api/v1/pause",
    "/api/v1/",
    "/",
    "",
];
const HOSTS: [&str; 4] = ["localhost", "127.0.0.1:9", "[::1]:80", "evil.example"];

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    /// A known prefix (or none), then fuzzed text.
    prefix: u8,
    path: String,
    host: Option<u8>,
    /// `None`: no header; `Some(None)`: the right token; else this text.
    auth: Option<Option<String>>,
    json: bool,
    body: Vec<u8>,
}

struct Setup {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
    _stop: shutdown::Trigger,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        let state = dir.path().join("state");
        std::fs::create_dir(&plugins).unwrap();
        let toml = format!(
            "[engine]\nplugins_dir = {:?}\nstate_dir = {:?}\n\n[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
            plugins.display().to_string(),
            state.display().to_string()
        );
        let (router, stop) = rt.block_on(async {
            let config = mend::config::parse(&toml, Path::new("fuzz.toml"), |_| None).unwrap();
            let runtime = Arc::new(
                Runtime::new(RuntimeConfig {
                    state_dir: Some(state.clone()),
                    ..RuntimeConfig::default()
                })
                .unwrap(),
            );
            let clock = Clock::system();
            let db = state.join("mend.db");
            let (store, _) = Store::open(&db, clock.now()).unwrap();
            store
                .open_incident(&NewIncident {
                    policy: "p",
                    check: "c",
                    opened_at: clock.now(),
                    root_cause: "c",
                    diagnosis: &serde_json::json!({}),
                    dry_run: false,
                    severity: mend::contract::Severity::Warning,
                })
                .unwrap();
            let set = mend::plan::load_plugins(&config, &runtime).await;
            let plan = mend::plan::Plan::compile(config, set, &runtime)
                .await
                .unwrap_or_else(|p| panic!("{p}"));
            let engine = Engine::new(
                plan,
                runtime,
                Arc::new(store),
                clock,
                Arc::new(mend::metrics::Metrics::new()),
            )
            .unwrap();
            let (stop, sd) = shutdown::channel();
            let e = engine.clone();
            tokio::spawn(async move { e.run(sd).await });
            let router = mend::api::router(
                Arc::new(Current::new(engine)),
                Store::open_read_only(&db).unwrap(),
                mend::api::Options {
                    max_body: 64 * 1024,
                    bound: "127.0.0.1:9".parse().unwrap(),
                    reloads: None,
                },
            );
            (router, stop)
        });
        Setup {
            rt,
            router,
            _dir: dir,
            _stop: stop,
        }
    })
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    let s = setup();
    let method = METHODS[input.method as usize % METHODS.len()];
    let uri = format!(
        "{}{}",
        PATHS[input.prefix as usize % PATHS.len()],
        input.path
    );
    let mut req = Request::builder().method(method).uri(&uri);
    if let Some(h) = input.host {
        req = req.header(header::HOST, HOSTS[h as usize % HOSTS.len()]);
    }
    match &input.auth {
        None => {}
        Some(None) => req = req.header(header::AUTHORIZATION, format!("Bearer {TOKEN}")),
        Some(Some(t)) => req = req.header(header::AUTHORIZATION, t.as_str()),
    }
    if input.json {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let Ok(req) = req.body(Body::from(input.body)) else {
        return; // not an HTTP request at all (a bad URI or header)
    };
    let (status, content_type, body) = s.rt.block_on(async {
        let resp = s.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ct, body)
    });
    assert_ne!(
        status.as_u16(),
        500,
        "{method} {uri}: {}",
        String::from_utf8_lossy(&body)
    );
    if (status.is_client_error() || status.is_server_error()) && method != "HEAD" {
        assert!(
            content_type.starts_with("application/json"),
            "{method} {uri}: {status} as {content_type}"
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("an error body is JSON");
        assert!(v["error"].is_string(), "{method} {uri}: {v}");
    }
});
