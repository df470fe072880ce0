//! The fleet benchmark: `cargo bench -p mend --bench fleet`, against the
//! NATS server on 127.0.0.1:4222 (its own bucket names, removed after).
//!
//! 1. Acquire and release latency of one agent: a fresh slot key, and a
//!    key released before (a delete marker to write over). Each acquire
//!    includes its two SQLite writes (FULL sync) and the store round trip;
//!    acquire + release is the delay fleet mode adds to a step.
//! 2. `MEND_BENCH_AGENTS` agents (default 50) in this process, each with
//!    its own SQLite store and NATS connection, contend for a budget of
//!    `"10%"` (5 slots at 50): each takes a slot `MEND_BENCH_ROUNDS` times
//!    (default 10), holds it 20 ms, releases it. Measured: the most holders
//!    at once (must not exceed the budget), waits p50/p99, throughput.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mend::fleet::nats::NatsStore;
use mend::fleet::{Fleet, Holder, events_stream, events_subject};
use mend::metrics::Metrics;
use mend::store::Store;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn show(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name:<34} n={:<5} p50 {:>8.3} ms  p99 {:>8.3} ms",
        v.len(),
        pct(&v, 0.5).as_secs_f64() * 1e3,
        pct(&v, 0.99).as_secs_f64() * 1e3
    );
}

struct Agent {
    fleet: Arc<Fleet>,
    _dir: tempfile::TempDir,
}

async fn agent(prefix: &str, name: &str, budgets: &str) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Store::open(&dir.path().join("mend.db"), 0).unwrap();
    let text = format!(
        "[fleet]\nagent_id = \"{name}\"\nprefix = \"{prefix}\"\nheartbeat = \"1s\"\n{budgets}\n"
    );
    let config = mend::config::parse(&text, Path::new("bench.toml"), |_| None)
        .unwrap_or_else(|e| panic!("{e}"))
        .fleet
        .unwrap();
    let store = NatsStore::connect(
        &["nats://127.0.0.1:4222".to_string()],
        None,
        name,
        Duration::from_secs(5),
        &events_stream(prefix),
        &events_subject(prefix),
    )
    .await
    .unwrap();
    let fleet = Fleet::with_store(
        &config,
        Arc::new(store),
        Arc::new(db),
        Arc::new(Metrics::new()),
    )
    .await
    .unwrap();
    assert!(fleet.is_ready(), "NATS on 127.0.0.1:4222 is needed");
    Agent { fleet, _dir: dir }
}

fn holder(i: usize) -> Holder {
    Holder {
        policy: "bench".into(),
        check: "bench".into(),
        incident: i as i64,
        step: "restart".into(),
    }
}

async fn cleanup(prefix: &str) {
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client);
    use futures_util::StreamExt;
    let mut names = js.stream_names();
    let mut mine = Vec::new();
    while let Some(Ok(n)) = names.next().await {
        if n == format!("{prefix}_events") || n.starts_with(&format!("KV_{prefix}_")) {
            mine.push(n);
        }
    }
    for n in mine {
        let _ = js.delete_stream(&n).await;
    }
}

async fn latency(prefix: &str, n: usize) {
    let a = agent(
        prefix,
        "bench-0",
        r#"
[fleet.budget.fresh]
max_concurrent = 100000
lease_ttl = "1m"

[fleet.budget.reused]
max_concurrent = 1
lease_ttl = "1m"
"#,
    )
    .await;
    // The store alone: create a fresh key, delete it at its revision.
    let store = a.fleet.store().clone();
    let bucket = a.fleet.slots_bucket("fresh");
    let (mut create, mut delete) = (Vec::new(), Vec::new());
    for i in 0..n {
        let key = format!("raw-{i}");
        let t0 = Instant::now();
        let rev = store
            .create(&bucket, &key, bytes::Bytes::from_static(b"x"))
            .await
            .unwrap();
        let t1 = Instant::now();
        store.delete(&bucket, &key, rev).await.unwrap();
        create.push(t1 - t0);
        delete.push(t1.elapsed());
    }
    show("store: create (fresh key)", create);
    show("store: delete at revision", delete);
    for budget in ["fresh", "reused"] {
        let (mut acq, mut rel, mut both) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let t0 = Instant::now();
            let slot = a.fleet.acquire(budget, &holder(i)).await.unwrap();
            let t1 = Instant::now();
            slot.release().await;
            let t2 = Instant::now();
            acq.push(t1 - t0);
            rel.push(t2 - t1);
            both.push(t2 - t0);
        }
        show(&format!("acquire ({budget} slot)"), acq);
        show(&format!("release ({budget} slot)"), rel);
        show(&format!("acquire + release ({budget})"), both);
    }
    a.fleet.shutdown().await;
}

async fn contention(prefix: &str, agents: usize, rounds: usize) {
    let budgets = r#"
[fleet.budget.restart]
max_concurrent = "10%"
lease_ttl = "1m"
wait = "10m"
"#;
    let mut all = Vec::new();
    for i in 0..agents {
        all.push(agent(prefix, &format!("bench-{i}"), budgets).await);
    }
    // Every agent has counted the others (the percentage's base).
    let start = Instant::now();
    while all.iter().any(|a| a.fleet.live_members() < agents) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "members not counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slots = (agents / 10).max(1);
    let holding = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, a) in all.iter().enumerate() {
        let (fleet, holding, most, waits) = (
            a.fleet.clone(),
            holding.clone(),
            most.clone(),
            waits.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for r in 0..rounds {
                let w = Instant::now();
                let slot = fleet
                    .acquire("restart", &holder(i * 1000 + r))
                    .await
                    .unwrap();
                waits.lock().unwrap().push(w.elapsed());
                let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                holding.fetch_sub(1, Ordering::SeqCst);
                slot.release().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = t0.elapsed();
    let most = most.load(Ordering::SeqCst);
    let holds = agents * rounds;
    println!(
        "{agents} agents × {rounds} holds of 20 ms, budget \"10%\" = {slots} slots: most holders at once {most}, {holds} holds in {:.2} s ({:.0} holds/s; {:.0}/s at full use)",
        took.as_secs_f64(),
        holds as f64 / took.as_secs_f64(),
        slots as f64 / 0.020
    );
    show("wait for a slot", waits.lock().unwrap().clone());
    assert!(most <= slots, "the budget was exceeded: {most} > {slots}");
    for a in &all {
        a.fleet.shutdown().await;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = env("MEND_BENCH_N", 2000);
    let agents = env("MEND_BENCH_AGENTS", 50);
    let rounds = env("MEND_BENCH_ROUNDS", 10);
    rt.block_on(async {
        let prefix = format!("bench{}", std::process::id());
        latency(&format!("{prefix}l"), n).await;
        contention(&format!("{prefix}c"), agents, rounds).await;
        cleanup(&format!("{prefix}l")).await;
        cleanup(&format!("{prefix}c")).await;
    });
}
