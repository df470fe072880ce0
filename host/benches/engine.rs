//! The engine benchmark: `cargo bench -p mend --bench engine`.
//!
//! 10,000 checks running a trivial detector every second, on this machine,
//! for `MEND_BENCH_SECS` seconds (default 30) after a warm-up. Reports the
//! CPU used, schedule lag p50/p99 (how late each check started) and RSS.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mend::engine::{Clock, Engine, shutdown};
use mend::runtime::{EngineSettings, Runtime, RuntimeConfig};
use mend::store::Store;
use mend_test_artifacts as artifacts;

fn cpu_seconds() -> f64 {
    // utime + stime from /proc/self/stat, in clock ticks (100/s on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024.0
}

fn main() {
    // SAFETY: single-threaded at this point.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let checks: usize = std::env::var("MEND_BENCH_CHECKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let secs: u64 = std::env::var("MEND_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let state = tempfile::tempdir().unwrap();
        let plugins = state.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        std::fs::copy(artifacts::TRIVIAL, plugins.join("trivial.wasm")).unwrap();
        let mut toml = format!(
            "[engine]\nplugins_dir = {:?}\nstate_dir = {:?}\ninterval = \"1s\"\nmax_concurrent = 8\n",
            plugins.display().to_string(),
            state.path().display().to_string()
        );
        for i in 0..checks {
            toml.push_str(&format!("\n[[check]]\nname = \"c{i}\"\nplugin = \"fixture-trivial\"\n"));
        }
        let t = Instant::now();
        let config = mend::config::parse(&toml, Path::new("bench.toml"), |_| None).unwrap();
        let parse = t.elapsed();
        let runtime: Arc<Runtime> = Arc::new(
            Runtime::new(RuntimeConfig {
                state_dir: Some(state.path().to_path_buf()),
                engine: EngineSettings { max_concurrent_calls: 16, ..EngineSettings::default() },
                ..RuntimeConfig::default()
            })
            .unwrap(),
        );
        let clock = Clock::system();
        let (store, _) = Store::open(&state.path().join("mend.db"), clock.now()).unwrap();
        let t = Instant::now();
        let set = mend::plan::load_plugins(&config, &runtime).await;
        let plan = mend::plan::Plan::compile(config, set, &runtime)
            .await
            .unwrap_or_else(|p| panic!("{p}"));
        let compile = t.elapsed();
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

        // Warm up: every check has started and run a few times.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let cpu0 = cpu_seconds();
        let wall0 = Instant::now();
        let (_, _, n0) = engine.schedule_lag();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu = cpu_seconds() - cpu0;
        let wall = wall0.elapsed().as_secs_f64();
        let (p50, p99, n) = engine.schedule_lag();
        let rss = rss_mb();
        stop.fire();
        task.await.unwrap();

        println!(
            "checks: {checks}, interval 1s, {secs}s measured, config parsed in {parse:?}, plan compiled in {compile:?}"
        );
        println!();
        println!("| measurement | value | target |");
        println!("|---|---|---|");
        println!("| CPU used | {:.1}% of one core | ≤ 25% |", cpu / wall * 100.0);
        println!("| check runs per second | {:.0} | {checks} |", n.saturating_sub(n0) as f64 / wall);
        println!("| schedule lag p50 | {:.2} ms | |", p50.as_secs_f64() * 1e3);
        println!("| schedule lag p99 | {:.2} ms | ≤ 50 ms |", p99.as_secs_f64() * 1e3);
        println!("| RSS | {rss:.0} MB | ≤ 100 MB |");
    });
}
