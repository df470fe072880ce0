//! An open-loop Alertmanager webhook load for `scripts/soak` (issue 16):
//! RATE webhooks a second for SECS seconds, each a new occurrence of one
//! of ALERTS alerts, over CONNECTIONS kept-alive connections.
//!
//!     cargo run --release -p mend --example webhook_load -- \
//!         --url http://127.0.0.1:8080 --token T --rate 200 --secs 600
//!
//! Open loop: request *i* is due at `start + i / rate` whatever happened to
//! the others, and connection *k* sends requests k, k + C, k + 2C, ... so
//! a slow answer on one connection delays only its own next request. A
//! request sent more than a connection's period (C / RATE) after it was
//! due is counted late: its connection was still waiting for an earlier
//! answer, so mend (or the client) was falling behind the offered rate.
//!
//! Every `--report` seconds it prints one JSON line (totals so far, and
//! latency percentiles of that interval), and a last line with
//! `"done": true`. The Python soak reads these lines.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// mend's API, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// The API token (sent as `Authorization: Bearer`).
    #[arg(long, default_value = "")]
    token: String,
    /// Webhooks a second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Kept-alive connections (one thread each).
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Distinct alerts; each pass over them is a new occurrence.
    #[arg(long, default_value_t = 2000)]
    alerts: u64,
    /// Checks the alerts name (`check = "c{n}"`), n < this.
    #[arg(long, default_value_t = 100)]
    checks: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10)]
    report: u64,
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    late: AtomicU64,
    /// Latencies (µs) since the last report.
    window: Mutex<Vec<u64>>,
}

fn body(seq: u64, alerts: u64, checks: u64) -> String {
    let alert = seq % alerts;
    // A new startsAt on each pass over the alerts: a new occurrence.
    let starts = 1_700_000_000 + seq / alerts;
    serde_json::json!({
        "version": "4",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "SoakDown", "check": format!("c{}", alert % checks)},
            "startsAt": humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(starts)).to_string(),
            "fingerprint": format!("f{alert}"),
        }],
    })
    .to_string()
}

fn connection(args: &Args, k: u64, start: Instant, totals: &Totals) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .max_idle_connections_per_host(1)
        .build()
        .into();
    let url = format!("{}/api/v1/alertmanager", args.url.trim_end_matches('/'));
    let gap = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let end = start + Duration::from_secs(args.secs);
    let c = u64::from(args.connections);
    let period = gap * args.connections;
    let mut seq = k;
    loop {
        let due = start + gap.mul_f64(seq as f64);
        if due >= end {
            return;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > period {
            totals.late.fetch_add(1, Ordering::Relaxed);
        }
        let sent_at = Instant::now();
        let answer = agent
            .post(&url)
            .header("Authorization", format!("Bearer {}", args.token))
            .content_type("application/json")
            .send(body(seq, args.alerts, args.checks));
        let ok = match answer {
            Ok(mut r) => {
                let _ = r.body_mut().read_to_vec();
                r.status().as_u16() == 200
            }
            Err(_) => false,
        };
        let took = sent_at.elapsed().as_micros() as u64;
        totals.sent.fetch_add(1, Ordering::Relaxed);
        if ok {
            totals.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            totals.errors.fetch_add(1, Ordering::Relaxed);
        }
        totals.window.lock().unwrap().push(took);
        seq += c;
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn report(totals: &Totals, start: Instant, done: bool) {
    let mut w = std::mem::take(&mut *totals.window.lock().unwrap());
    w.sort_unstable();
    let line = serde_json::json!({
        "secs": start.elapsed().as_secs_f64(),
        "sent": totals.sent.load(Ordering::Relaxed),
        "ok": totals.ok.load(Ordering::Relaxed),
        "errors": totals.errors.load(Ordering::Relaxed),
        "late": totals.late.load(Ordering::Relaxed),
        "p50_ms": percentile(&w, 0.5),
        "p99_ms": percentile(&w, 0.99),
        "max_ms": w.last().map_or(0.0, |m| *m as f64 / 1000.0),
        "unix": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "done": done,
    });
    println!("{line}");
}

fn main() {
    let args = Args::parse();
    assert!(args.rate > 0 && args.connections > 0 && args.alerts > 0 && args.checks > 0);
    let totals = Totals::default();
    let start = Instant::now();
    std::thread::scope(|s| {
        for k in 0..u64::from(args.connections) {
            let (args, totals) = (&args, &totals);
            s.spawn(move || connection(args, k, start, totals));
        }
        let end = start + Duration::from_secs(args.secs);
        let mut next = start + Duration::from_secs(args.report);
        while next < end {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            report(&totals, start, false);
            next += Duration::from_secs(args.report);
        }
    });
    report(&totals, start, true);
}
