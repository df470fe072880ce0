//! The Alertmanager benchmark: `cargo bench -p mend --bench alertmanager`.
//!
//! A real engine and the real API on a loopback port. Webhooks arrive at
//! `MEND_BENCH_RATE` per second (default 200) for `MEND_BENCH_SECS`
//! seconds (default 5). Each new alert fires for its own failing check;
//! with `MEND_BENCH_REPEATS=K` every alert is delivered K more times
//! (Alertmanager's at-least-once delivery), so 1 in K+1 requests starts a
//! remediation. Measured: from just before a new alert's request is sent
//! to the moment the engine starts the remediation action ("running
//! action", after the fresh detect, the incident and the attempt are
//! committed), p50/p99.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mend::engine::{Clock, Engine, shutdown};
use mend::runtime::{EngineSettings, Runtime, RuntimeConfig};
use mend::service::Current;
use mend::store::Store;
use mend_test_artifacts as artifacts;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// When each incident's first action started.
#[derive(Default, Clone)]
struct Started(Arc<Mutex<HashMap<i64, Instant>>>);

struct Fields {
    incident: Option<i64>,
    running: bool,
}

impl Visit for Fields {
    fn record_i64(&mut self, field: &Field, v: i64) {
        if field.name() == "incident" {
            self.incident = Some(v);
        }
    }
    fn record_debug(&mut self, field: &Field, v: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{v:?}") == "running action" {
            self.running = true;
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Started {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let now = Instant::now();
        let mut f = Fields {
            incident: None,
            running: false,
        };
        event.record(&mut f);
        if let (true, Some(id)) = (f.running, f.incident) {
            self.0.lock().unwrap().entry(id).or_insert(now);
        }
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // SAFETY: single-threaded at this point.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let rate = env("MEND_BENCH_RATE", 200);
    let secs = env("MEND_BENCH_SECS", 5);
    let repeats = env("MEND_BENCH_REPEATS", 0) as usize;
    let requests_n = (rate * secs) as usize;
    let n = requests_n.div_ceil(repeats + 1);
    let started = Started::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::WARN)
        .with(started.clone());
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(256)
        .build()
        .unwrap();
    rt.block_on(async move {
        // MEND_BENCH_DIR=/dev/shm shows what the disk's fsyncs cost.
        let state = match std::env::var_os("MEND_BENCH_DIR") {
            Some(d) => tempfile::tempdir_in(d).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let ctl = state.path().join("ctl");
        let plugins = state.path().join("plugins");
        // mend's own state apart from what plugins are granted.
        let own = state.path().join("state");
        std::fs::create_dir(&plugins).unwrap();
        std::fs::create_dir(&ctl).unwrap();
        for p in [artifacts::SCRIPTED, artifacts::FIXER] {
            std::fs::copy(p, plugins.join(Path::new(p).file_name().unwrap())).unwrap();
        }
        // One failing check per request, each mapped from its own alert;
        // the policies never fire on their own (the schedule is hourly).
        let mut toml = format!(
            "[engine]\nplugins_dir = {:?}\nstate_dir = {:?}\ninterval = \"1h\"\nmax_concurrent = 16\n\n[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"bench\"\n",
            plugins.display().to_string(),
            own.display().to_string()
        );
        for i in 0..n {
            std::fs::write(ctl.join(format!("c{i}")), "fail").unwrap();
            toml.push_str(&format!(
                "\n[[api.alert]]\nalertname = \"Down\"\nlabels = {{ check = \"c{i}\" }}\ncheck = \"c{i}\"\n"
            ));
        }
        let ctl_s = ctl.display().to_string();
        for i in 0..n {
            toml.push_str(&format!(
                r#"
[[check]]
name = "c{i}"
plugin = "fixture-scripted"
grants = {{ dirs = [{{ host = "{ctl_s}", guest = "/ctl" }}] }}
config = {{ file = "/ctl/c{i}" }}

[[policy]]
name = "p{i}"
check = "c{i}"
trigger = {{ consecutive = 1000 }}

[[policy.step]]
name = "fix"
action = "fixture-fixer"
settle = "1s"
grants = {{ dirs = [{{ host = "{ctl_s}", guest = "/ctl", mode = "rw" }}] }}
config = {{ file = "/ctl/c{i}", log = "/ctl/actions.log" }}
"#
            ));
        }
        let config = mend::config::parse(&toml, Path::new("bench.toml"), |_| None).unwrap();
        let runtime: Arc<Runtime> = Arc::new(
            Runtime::new(RuntimeConfig {
                state_dir: Some(own.clone()),
                engine: EngineSettings {
                    max_concurrent_calls: 20,
                    ..EngineSettings::default()
                },
                ..RuntimeConfig::default()
            })
            .unwrap(),
        );
        let clock = Clock::system();
        let db = own.join("mend.db");
        let (store, _) = Store::open(&db, clock.now()).unwrap();
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
        let task = tokio::spawn(async move { e.run(sd).await });
        let current = Arc::new(Current::new(engine.clone()));
        let api_config = engine.config().api.clone();
        let (addr, api) = mend::api::serve(
            &api_config,
            "127.0.0.1:0".parse().unwrap(),
            current,
            Store::open_read_only(&db).unwrap(),
            None,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;

        let url = format!("http://{addr}/api/v1/alertmanager");
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let t0 = Instant::now();
        let mut requests = Vec::new();
        // One client with a connection pool, as Alertmanager keeps its
        // connections alive.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        for r in 0..requests_n {
            let i = r / (repeats + 1);
            let first = r % (repeats + 1) == 0;
            tick.tick().await;
            let (url, sent, agent) = (url.clone(), sent.clone(), agent.clone());
            requests.push(tokio::task::spawn_blocking(move || {
                let body = serde_json::json!({
                    "version": "4", "status": "firing",
                    "alerts": [{
                        "status": "firing",
                        "labels": {"alertname": "Down", "check": format!("c{i}")},
                        "startsAt": "2026-11-22T10:00:00Z",
                        "fingerprint": format!("f{i}"),
                    }],
                });
                if first {
                    sent.lock().unwrap().insert(format!("c{i}"), Instant::now());
                }
                let resp = agent
                    .post(&url)
                    .header("Authorization", "Bearer bench")
                    .send_json(&body)
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 200);
            }));
        }
        for r in requests {
            r.await.unwrap();
        }
        let offered = t0.elapsed();
        // Let the last heals start.
        tokio::time::sleep(Duration::from_secs(3)).await;

        let incidents = engine.store().incidents(false, n + 10).unwrap();
        let started = started.0.lock().unwrap().clone();
        let sent = sent.lock().unwrap().clone();
        let mut lat: Vec<Duration> = incidents
            .iter()
            .filter_map(|i| {
                let s = sent.get(&i.check)?;
                let a = started.get(&i.id)?;
                Some(a.saturating_duration_since(*s))
            })
            .collect();
        lat.sort();
        let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
        println!(
            "alertmanager webhook → action started: {requests_n} requests at {rate}/s (offered over {:.2}s), {n} new alerts, {} actions started",
            offered.as_secs_f64(),
            lat.len()
        );
        println!(
            "  p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            lat.last().unwrap().as_secs_f64() * 1e3
        );
        stop.fire();
        let _ = task.await;
        api.abort();
    });
}
