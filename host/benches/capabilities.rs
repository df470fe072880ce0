//! What a plugin pays to reach the world through its grants:
//! `cargo bench -p mend --bench capabilities`.
//!
//! Each row is a whole `detect` call (fresh instance, one host call inside)
//! on the hostile fixture, against the machine's PostgreSQL and Redis and a
//! local HTTP server, next to the same operation done natively by the host.
//! Needs PostgreSQL on 127.0.0.1:5432 (trust) and Redis on :6379.
//!
//! Prints a markdown table (the one in BENCHMARKS.md).

use std::path::Path;
use std::time::{Duration, Instant};

use mend::capabilities::{Backends, Grants};
use mend::runtime::{Limits, Request, Runtime, RuntimeConfig};
use mend_test_artifacts as artifacts;
use serde_json::json;

const N: usize = 300;

fn pct(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn time<F: AsyncFnMut()>(mut f: F) -> (Duration, Duration) {
    for _ in 0..20 {
        f().await;
    }
    let mut v = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        f().await;
        v.push(t.elapsed());
    }
    pct(v)
}

fn main() {
    // SAFETY: single-threaded at this point.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        state_dir: Some(state.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let p = runtime
        .load_file(Path::new(artifacts::HOSTILE))
        .await
        .unwrap();

    // A local HTTP server answering 200.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });

    // A read-only connection needs a role that cannot get past it.
    let (admin, conn) = tokio_postgres::connect(
        "host=127.0.0.1 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let reader = format!("mend_bench_ro_{}", std::process::id());
    admin
        .batch_execute(&format!("CREATE ROLE {reader} LOGIN"))
        .await
        .unwrap();

    let backends = Backends::from_toml(&format!(
        r#"
[commands.true]
argv = ["/bin/true"]
[connections.db]
kind = "postgres"
url = "host=127.0.0.1 user=postgres dbname=postgres"
[connections.ro]
kind = "postgres"
url = "host=127.0.0.1 user={reader} dbname=postgres"
read_only = true
[connections.cache]
kind = "redis"
url = "redis://127.0.0.1:6379/"
"#
    ))
    .unwrap();
    let grants = Grants {
        commands: vec!["true".into()],
        connections: vec!["db".into(), "ro".into(), "cache".into()],
        urls: vec![base.clone()],
        ..Grants::none()
    }
    .resolve_with(&backends)
    .unwrap();

    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("exec `/bin/true`", json!({"mode": "exec", "name": "true"})),
        (
            "sql `SELECT 1`, shared connection",
            json!({"mode": "sql", "name": "db", "path": "SELECT 1"}),
        ),
        (
            "sql `SELECT 1`, shared read-only connection",
            json!({"mode": "sql", "name": "ro", "path": "SELECT 1"}),
        ),
        (
            "redis `PING`",
            json!({"mode": "redis", "name": "cache", "args": ["PING"]}),
        ),
        (
            "http GET, new connection",
            json!({"mode": "http", "name": format!("{base}/health")}),
        ),
    ];
    let cases: Vec<(&str, mend::runtime::PluginConfig)> =
        cases.into_iter().map(|(n, c)| (n, c.into())).collect();

    println!("| operation | plugin call p50 | p99 | native p50 | p99 |");
    println!("|---|---|---|---|---|");
    for (name, config) in &cases {
        let labels = Default::default();
        let req = Request {
            check: "bench",
            config,
            labels: &labels,
            grants: &grants,
            limits: Limits::default(),
            clock: mend::clock::Clock::system(),
        };
        let (p50, p99) = time(async || {
            runtime.detect(&p, &req).await.unwrap();
        })
        .await;
        let native = native(name, &base).await;
        println!(
            "| {name} | {} | {} | {} | {} |",
            us(p50),
            us(p99),
            native.map(|n| us(n.0)).unwrap_or_default(),
            native.map(|n| us(n.1)).unwrap_or_default()
        );
    }
    drop(grants);
    drop(backends);
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = '{reader}'; \
             DROP ROLE {reader}"
        ))
        .await
        .unwrap();
}

/// The same operation done directly by the host, for comparison.
async fn native(name: &str, base: &str) -> Option<(Duration, Duration)> {
    if name.starts_with("exec") {
        return Some(
            time(async || {
                tokio::process::Command::new("/bin/true")
                    .status()
                    .await
                    .unwrap();
            })
            .await,
        );
    }
    if name.starts_with("sql") && !name.contains("read-only") {
        let (client, conn) = tokio_postgres::connect(
            "host=127.0.0.1 user=postgres dbname=postgres",
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        return Some(
            time(async || {
                client.query("SELECT 1", &[]).await.unwrap();
            })
            .await,
        );
    }
    if name.starts_with("redis") {
        let c = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
        let mut con = c.get_multiplexed_async_connection().await.unwrap();
        return Some(
            time(async || {
                let _: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
            })
            .await,
        );
    }
    if name.starts_with("http") {
        let url = format!("{}/health", base.trim_start_matches("http://"));
        return Some(
            time(async || {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let (host, path) = url.split_once('/').unwrap();
                let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
                s.write_all(format!("GET /{path} HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
            })
            .await,
        );
    }
    None
}
