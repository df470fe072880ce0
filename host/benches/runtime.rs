//! The runtime benchmark: `cargo bench -p mend --bench runtime`.
//!
//! (a) a fresh-instance `detect` on a trivial detector;
//! (b) the same check by fork/exec of a tiny native program, as Monit,
//!     Nagios and node-problem-detector run checks;
//! (c) moved to `benches/files.rs` (the file path, issue 17);
//! (d) compiling a component vs loading it from the compile cache;
//! (e) how long after its deadline a runaway plugin is stopped.
//!
//! Prints a markdown table (the one in BENCHMARKS.md).

use std::path::Path;
use std::time::{Duration, Instant};

use mend::capabilities::Grants;
use mend::runtime::{Limits, Request, Runtime, RuntimeConfig};
use mend_test_artifacts as artifacts;
use serde_json::json;

struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        max: *v.last().unwrap(),
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Set in the environment of the small forking process (b) starts.
const FORKER: &str = "MEND_BENCH_FORKER";

/// The small forking process: 1,000 fork + exec of /bin/true, one
/// duration in nanoseconds per line on stdout, then its RSS in kB.
fn forker() {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let mut out = std::io::stdout().lock();
    for _ in 0..1000 {
        let t = Instant::now();
        let mut cmd = std::process::Command::new("/bin/true");
        // SAFETY: the hook does nothing; it only makes std fork + exec.
        unsafe { cmd.pre_exec(|| Ok(())) };
        assert!(cmd.status().unwrap().success());
        writeln!(out, "{}", t.elapsed().as_nanos()).unwrap();
    }
    writeln!(out, "rss {}", rss_kb(std::process::id())).unwrap();
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::var_os(FORKER).is_some() {
        return forker();
    }
    // Backtrace capture makes every wasmtime error slow; not what we measure.
    // SAFETY: single-threaded at this point.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        state_dir: Some(state.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let none = Grants::none().resolve().unwrap();
    let empty = mend::runtime::PluginConfig::from(json!({}));
    let mut rows: Vec<(String, String, String, String)> = Vec::new();

    // (a) fresh instance per call.
    let trivial = runtime
        .load_file(Path::new(artifacts::TRIVIAL))
        .await
        .unwrap();
    let req = Request {
        check: "bench",
        config: &empty,
        labels: &Default::default(),
        clock: mend::clock::Clock::system(),
        grants: &none,
        limits: Limits::default(),
    };
    for _ in 0..500 {
        runtime.detect(&trivial, &req).await.unwrap();
    }
    let mut samples = Vec::new();
    for _ in 0..10_000 {
        let t = Instant::now();
        runtime.detect(&trivial, &req).await.unwrap();
        samples.push(t.elapsed());
    }
    let a = stats(samples);
    rows.push((
        "(a) fresh-instance detect, trivial detector".into(),
        us(a.p50),
        us(a.p99),
        "p50 ≤ 25 µs".into(),
    ));

    // (a') the same detector without the SDK (raw bindings, no serde): the
    // per-call floor.
    let minimal = runtime
        .load_file(Path::new(artifacts::MINIMAL))
        .await
        .unwrap();
    for _ in 0..500 {
        runtime.detect(&minimal, &req).await.unwrap();
    }
    let mut samples = Vec::new();
    for _ in 0..10_000 {
        let t = Instant::now();
        runtime.detect(&minimal, &req).await.unwrap();
        samples.push(t.elapsed());
    }
    let am = stats(samples);
    rows.push((
        format!(
            "(a') the same, minimal guest without the SDK ({} KB vs {} KB)",
            std::fs::metadata(artifacts::MINIMAL).unwrap().len() / 1024,
            std::fs::metadata(artifacts::TRIVIAL).unwrap().len() / 1024
        ),
        us(am.p50),
        us(am.p99),
        String::new(),
    ));

    // (b) fork/exec of a tiny native program.
    let mut samples = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let s = std::process::Command::new("/bin/true").status().unwrap();
        assert!(s.success());
        samples.push(t.elapsed());
    }
    let b = stats(samples);
    let ratio = b.p50.as_secs_f64() / a.p50.as_secs_f64();
    rows.push((
        "(b) spawn of /bin/true (posix_spawn, Rust's std)".into(),
        us(b.p50),
        us(b.p99),
        format!("{ratio:.0}× the cost of (a)"),
    ));
    // Monit and Nagios fork() their daemon, then exec: forcing std's fork
    // path (a pre_exec hook) measures that. Forking copies the page tables,
    // so the cost grows with the forking process: this bench holds a
    // runtime and tens of MB, a Monit a few. The fair row is the one from
    // a small process: this binary started afresh, doing nothing else.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(FORKER, "1")
        .output()
        .unwrap();
    assert!(child.status.success(), "{child:?}");
    let text = String::from_utf8_lossy(&child.stdout);
    let mut forker_rss = 0;
    let mut samples = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("rss ") {
            Some(kb) => forker_rss = kb.parse().unwrap_or(0),
            None => samples.push(Duration::from_nanos(line.parse().unwrap())),
        }
    }
    let small = stats(samples);
    rows.push((
        format!(
            "(b) fork + exec of /bin/true from a small process ({:.1} MB RSS)",
            forker_rss as f64 / 1024.0
        ),
        us(small.p50),
        us(small.p99),
        format!(
            "{:.0}× the cost of (a): the comparison with Monit (target ≥ 50×)",
            small.p50.as_secs_f64() / a.p50.as_secs_f64()
        ),
    ));
    let mut samples = Vec::new();
    for _ in 0..1000 {
        use std::os::unix::process::CommandExt;
        let t = Instant::now();
        let mut cmd = std::process::Command::new("/bin/true");
        // SAFETY: the hook does nothing; it only makes std fork + exec.
        unsafe { cmd.pre_exec(|| Ok(())) };
        assert!(cmd.status().unwrap().success());
        samples.push(t.elapsed());
    }
    let bf = stats(samples);
    rows.push((
        format!(
            "(b) fork + exec of /bin/true from this process ({:.0} MB RSS)",
            rss_kb(std::process::id()) as f64 / 1024.0
        ),
        us(bf.p50),
        us(bf.p99),
        format!(
            "{:.0}× the cost of (a)",
            bf.p50.as_secs_f64() / a.p50.as_secs_f64()
        ),
    ));

    // (d) compile vs cached load (load = read + compile-or-deserialize +
    // link + describe()).
    let uncached = Runtime::new(RuntimeConfig::default()).unwrap();
    let mut samples = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        uncached
            .load_file(Path::new(artifacts::STALE_FILE))
            .await
            .unwrap();
        samples.push(t.elapsed());
    }
    let compile = stats(samples);
    // The first load through `runtime` compiles and fills its cache.
    runtime
        .load_file(Path::new(artifacts::STALE_FILE))
        .await
        .unwrap();
    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let p = runtime
            .load_file(Path::new(artifacts::STALE_FILE))
            .await
            .unwrap();
        samples.push(t.elapsed());
        assert!(p.from_cache());
    }
    let cached = stats(samples);
    let size = std::fs::metadata(artifacts::STALE_FILE).unwrap().len();
    rows.push((
        format!("(d) load stale-file ({} KB), compiling", size / 1024),
        ms(compile.p50),
        ms(compile.p99),
        String::new(),
    ));
    rows.push((
        "(d) load stale-file, from the compile cache".into(),
        ms(cached.p50),
        ms(cached.p99),
        format!(
            "{:.0}× faster (target ≤ 2 ms)",
            compile.p50.as_secs_f64() / cached.p50.as_secs_f64()
        ),
    ));

    // (e) runaway stopped after its deadline.
    let hostile = runtime
        .load_file(Path::new(artifacts::HOSTILE))
        .await
        .unwrap();
    let cfg = mend::runtime::PluginConfig::from(json!({"mode": "loop"}));
    let deadline = Duration::from_millis(50);
    let req = Request {
        check: "bench",
        config: &cfg,
        labels: &Default::default(),
        clock: mend::clock::Clock::system(),
        grants: &none,
        limits: Limits {
            fuel: u64::MAX / 4,
            deadline,
            ..Limits::default()
        },
    };
    let mut samples = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        let err = runtime.detect(&hostile, &req).await.unwrap_err();
        assert_eq!(err.kind(), "deadline-exceeded");
        samples.push(t.elapsed().saturating_sub(deadline));
    }
    let e = stats(samples);
    rows.push((
        "(e) runaway plugin stopped after its 50 ms deadline (overshoot)".into(),
        ms(e.p50),
        ms(e.p99),
        format!("max {} (target ≤ 10 ms)", ms(e.max)),
    ));

    println!(
        "allocator: {:?}, cpus: {}",
        runtime.allocator(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    println!("| measurement | p50 | p99 | note |");
    println!("|---|---|---|---|");
    for (what, p50, p99, note) in rows {
        println!("| {what} | {p50} | {p99} | {note} |");
    }
}
