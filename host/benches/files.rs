//! The file-path benchmark (issue 17): `cargo bench -p mend --bench files`,
//! or `scripts/bench-files` for the same with callgrind instruction counts.
//!
//! Over 1,000 files in a directory grant:
//! (f1) stale-file's logic as native Rust: `stat` per file (its logic now)
//!      and open + `fstat` per file (its logic before `stat-many`);
//! (f2) the stale-file plugin (one `fs.stat-many` call), by default (the
//!      call on a pool thread, file I/O inline) and with `inline_file_io`;
//! (f3) the old logic through WASI (open + stat + drop per file, the
//!      hostile fixture's `open-stat`), the same two ways;
//! (f4) what running a call on a pool thread costs: a call granted a
//!      directory that touches no file;
//! (f5) a call blocked on a FIFO, ended at its 300 ms deadline.
//!
//! `MEND_BENCH_ONLY=native|plugin|wasi` with `MEND_BENCH_ITERS=N` runs just
//! that loop N times after its setup (what `scripts/bench-files` measures
//! under callgrind, N and 0, to count the instructions of one iteration).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mend::capabilities::fs::{DirGrant, Mode};
use mend::capabilities::{Grants, ResolvedGrants};
use mend::runtime::{Limits, Plugin, PluginConfig, Request, Runtime, RuntimeConfig};
use mend_sdk::host::fs::{FileKind, FileStat};
use mend_test_artifacts as artifacts;
use serde_json::json;

const FILES: usize = 1000;

struct Stats {
    p50: Duration,
    p99: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    // SAFETY: single-threaded at this point.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

/// What native Rust gets from `stat(2)`, as the SDK's record.
fn native_stat(path: &str) -> mend_sdk::Result<Option<FileStat>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(FileStat {
            kind: if m.is_file() {
                FileKind::File
            } else if m.is_dir() {
                FileKind::Directory
            } else {
                FileKind::Unknown
            },
            size: m.len(),
            modified: m.modified().unwrap_or(UNIX_EPOCH),
            mode: m.mode() & 0o7777,
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(mend_sdk::Error::failed(e.to_string())),
    }
}

/// The logic before `stat-many`: open, then `fstat` the descriptor.
fn native_open_stat(path: &str) -> mend_sdk::Result<Option<FileStat>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Ok(m) => Ok(Some(FileStat {
            kind: if m.is_file() {
                FileKind::File
            } else {
                FileKind::Unknown
            },
            size: m.len(),
            modified: m.modified().unwrap_or(UNIX_EPOCH),
            mode: m.mode() & 0o7777,
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(mend_sdk::Error::failed(e.to_string())),
    }
}

fn native_run(
    paths: &[String],
    cfg: &stale_file::Config,
    stat: fn(&str) -> mend_sdk::Result<Option<FileStat>>,
) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut tally = stale_file::Tally::new(cfg, now, paths.len());
    for p in paths {
        tally.add(p, stat(p));
    }
    let summary = tally.finish();
    assert_eq!(summary[0].get_metric("files"), Some(FILES as f64));
}

async fn call(rt: &Runtime, plugin: &Plugin, cfg: &PluginConfig, grants: &ResolvedGrants) {
    let req = Request {
        check: "bench",
        config: cfg,
        labels: &Default::default(),
        clock: mend::clock::Clock::system(),
        grants,
        limits: Limits::default(),
    };
    rt.detect(plugin, &req).await.unwrap();
}

async fn sample(n: usize, mut f: impl AsyncFnMut()) -> Stats {
    for _ in 0..5 {
        f().await;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await;
        v.push(t.elapsed());
    }
    stats(v)
}

async fn run() {
    let only = std::env::var("MEND_BENCH_ONLY").ok();
    let iters: usize = std::env::var("MEND_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);

    let data = tempfile::tempdir().unwrap();
    let mut host_paths = Vec::new();
    let mut guest_paths = Vec::new();
    for i in 0..FILES {
        let name = format!("f{i:04}.json");
        std::fs::write(data.path().join(&name), "{}").unwrap();
        host_paths.push(data.path().join(&name).to_string_lossy().into_owned());
        guest_paths.push(format!("/data/{name}"));
    }
    let native_cfg: stale_file::Config =
        serde_json::from_value(json!({"paths": host_paths, "max_age": "10m"})).unwrap();
    let grants = Grants {
        dirs: vec![DirGrant {
            host: data.path().to_path_buf(),
            guest: Some("/data".into()),
            mode: Mode::Ro,
        }],
        ..Grants::none()
    }
    .resolve()
    .unwrap();
    let stale_cfg = PluginConfig::from(json!({"paths": guest_paths, "max_age": "10m"}));
    let open_cfg = PluginConfig::from(json!({"mode": "open-stat", "args": guest_paths}));
    let idle_cfg = PluginConfig::from(json!({"mode": "clock"}));

    // `MEND_BENCH_STATE_DIR` keeps the compile cache between runs (the
    // callgrind runs would otherwise each compile the plugins).
    let state = tempfile::tempdir().unwrap();
    let state_dir = std::env::var_os("MEND_BENCH_STATE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| state.path().to_path_buf());
    let runtime = |inline_file_io| {
        Runtime::new(RuntimeConfig {
            state_dir: Some(state_dir.clone()),
            inline_file_io,
            ..RuntimeConfig::default()
        })
        .unwrap()
    };
    let default = runtime(false);
    let inline = runtime(true);
    let load = async |rt: &Runtime, file: &str| rt.load_file(Path::new(file)).await.unwrap();
    let stale = load(&default, artifacts::STALE_FILE).await;
    let stale_inline = load(&inline, artifacts::STALE_FILE).await;
    let hostile = load(&default, artifacts::HOSTILE).await;
    let hostile_inline = load(&inline, artifacts::HOSTILE).await;

    if let Some(only) = only.as_deref() {
        // One loop, no warm-up, for instruction counts.
        for _ in 0..iters {
            match only {
                "native" => native_run(&host_paths, &native_cfg, native_stat),
                "plugin" => call(&default, &stale, &stale_cfg, &grants).await,
                "wasi" => call(&default, &hostile, &open_cfg, &grants).await,
                other => panic!("MEND_BENCH_ONLY={other}: native, plugin or wasi"),
            }
        }
        return;
    }

    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    let native = sample(iters, async || {
        native_run(&host_paths, &native_cfg, native_stat)
    })
    .await;
    let native_open = sample(iters, async || {
        native_run(&host_paths, &native_cfg, native_open_stat)
    })
    .await;
    let ratio = |s: &Stats, to: &Stats| {
        format!(
            "{:.2}× native stat",
            s.p50.as_secs_f64() / to.p50.as_secs_f64()
        )
    };
    rows.push((
        "(f1) native Rust, `stat` per file (stale-file's logic)".into(),
        ms(native.p50),
        ms(native.p99),
        String::new(),
    ));
    rows.push((
        "(f1) native Rust, open + `fstat` per file (its logic before)".into(),
        ms(native_open.p50),
        ms(native_open.p99),
        ratio(&native_open, &native),
    ));
    for (label, rt, plugin, cfg, base) in [
        (
            "(f2) stale-file plugin (`fs.stat-many`), default",
            &default,
            &stale,
            &stale_cfg,
            &native,
        ),
        (
            "(f2) stale-file plugin, `inline_file_io`",
            &inline,
            &stale_inline,
            &stale_cfg,
            &native,
        ),
        (
            "(f3) open + stat + drop per file through WASI, default",
            &default,
            &hostile,
            &open_cfg,
            &native_open,
        ),
        (
            "(f3) the same, `inline_file_io`",
            &inline,
            &hostile_inline,
            &open_cfg,
            &native_open,
        ),
    ] {
        let s = sample(iters, async || call(rt, plugin, cfg, &grants).await).await;
        let note = if std::ptr::eq(base, &native) {
            ratio(&s, &native)
        } else {
            format!(
                "{:.2}× native open + fstat",
                s.p50.as_secs_f64() / native_open.p50.as_secs_f64()
            )
        };
        rows.push((label.into(), ms(s.p50), ms(s.p99), note));
    }
    for (label, rt, plugin) in [
        (
            "(f4) a call granted a directory, touching no file, default",
            &default,
            &hostile,
        ),
        ("(f4) the same, `inline_file_io`", &inline, &hostile_inline),
    ] {
        let s = sample(iters * 20, async || {
            call(rt, plugin, &idle_cfg, &grants).await
        })
        .await;
        rows.push((label.into(), us(s.p50), us(s.p99), String::new()));
    }

    // (f5) blocked on a FIFO: the default still ends at the deadline.
    let pipe = data.path().join("pipe");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &pipe,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let fifo_cfg = PluginConfig::from(json!({"mode": "read", "path": "/data/pipe"}));
    let deadline = Duration::from_millis(300);
    let mut v = Vec::new();
    for _ in 0..10 {
        let req = Request {
            check: "bench",
            config: &fifo_cfg,
            labels: &Default::default(),
            clock: mend::clock::Clock::system(),
            grants: &grants,
            limits: Limits {
                deadline,
                ..Limits::default()
            },
        };
        let t = Instant::now();
        let err = default.detect(&hostile, &req).await.unwrap_err();
        v.push(t.elapsed());
        assert_eq!(err.kind(), "deadline-exceeded", "{err}");
        // Free the thread still in open(2) before the next (stuck calls
        // are capped per plugin).
        drop(std::fs::OpenOptions::new().write(true).open(&pipe).unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fifo = stats(v);
    rows.push((
        "(f5) a call blocked on a FIFO, 300 ms deadline, default".into(),
        ms(fifo.p50),
        ms(fifo.p99),
        "ends at its deadline".into(),
    ));

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    println!("| measurement | p50 | p99 | note |");
    println!("|---|---|---|---|");
    for (what, p50, p99, note) in rows {
        println!("| {what} | {p50} | {p99} | {note} |");
    }
}
