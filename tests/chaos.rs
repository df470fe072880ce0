//! Chaos: the real `mend run`, killed (`SIGKILL`) at every named point of a
//! remediation, again and again, then started again; nothing may be lost,
//! repeated or paged for wrongly.
//!
//! Each cycle breaks a check, starts mend with `MEND_CRASH_AT=POINT:N`
//! (`host/src/crash.rs`: mend kills itself there, so the instant is exact
//! and the run reproducible from its seed), sees it die by `SIGKILL`,
//! checks the store opens clean (`PRAGMA integrity_check`), starts mend
//! again and waits for the incident to end. Two checks: `app`, which one
//! step heals, and `esc`, whose step never heals it, so its ladder ends in
//! a page. Afterwards, against the store:
//!
//! - no incident lost: one per cycle, each closed as it should be;
//! - no completed action run again: the fixer logs each run with its
//!   incident, and each `app` incident was acted on exactly once;
//! - no false page: no `app` incident paged; each `esc` incident paged
//!   (at least once: a kill between sending a page and recording it sends
//!   it again after the restart, with the same incident id for the
//!   receiver to deduplicate; nothing else does).
//!
//! `MEND_CHAOS_CYCLES` (default 100) and `MEND_CHAOS_SEED` (default fixed)
//! choose the run; a failure names the seed and cycle.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::process::wait_for;
use mend::store::{AttemptOutcome, Incident, IncidentState, Store};
use mend_test_artifacts as artifacts;
use serde_json::json;

/// Where mend kills itself, and which check a cycle breaks for it.
const POINTS: &[(&str, &str)] = &[
    ("before-incident", "app"),
    ("after-incident", "app"),
    ("after-attempt", "app"),
    ("after-action", "app"),
    ("mid-verify", "app"),
    ("before-page", "esc"),
    ("after-page", "esc"),
];

struct Chaos {
    ctl: tempfile::TempDir,
    state: tempfile::TempDir,
    config: PathBuf,
}

impl Chaos {
    fn new() -> Chaos {
        let ctl = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let plugins = state.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        for p in [artifacts::SCRIPTED, artifacts::FIXER] {
            std::fs::copy(p, plugins.join(Path::new(p).file_name().unwrap())).unwrap();
        }
        for check in ["app", "esc"] {
            std::fs::write(ctl.path().join(check), "ok").unwrap();
        }
        let config = state.path().join("mend.toml");
        let check = |name: &str| {
            format!(
                r#"
[[check]]
name = "{name}"
plugin = "fixture-scripted"
jitter = "0s"
success_threshold = 1
flap = {{ high = 100.0, low = 99.0 }}
grants = {{ dirs = [{{ host = "{{ctl}}", guest = "/ctl" }}] }}
config = {{ file = "/ctl/{name}" }}
"#
            )
        };
        let policy = |check: &str, write: &str| {
            format!(
                r#"
[[policy]]
name = "fix-{check}"
check = "{check}"
trigger = {{ consecutive = 1 }}
cooldown = "0s"
relapse_window = "0s"
max_attempts = 100000
backoff = {{ base = "50ms", jitter = 0.0 }}
breaker = {{ failures = 100000 }}
verify = {{ probes = 2, window = "200ms", poll = "50ms" }}

[[policy.step]]
name = "fixer"
action = "fixture-fixer"
settle = "300ms"
grants = {{ dirs = [{{ host = "{{ctl}}", guest = "/ctl", mode = "rw" }}] }}
config = {{ file = "/ctl/{check}", write = "{write}", log = "/ctl/actions.log", context_log = "/ctl/{check}-actions.log" }}

[policy.escalate]
action = "fixture-fixer"
grants = {{ dirs = [{{ host = "{{ctl}}", guest = "/ctl", mode = "rw" }}] }}
config = {{ file = "/ctl/paged", write = "yes", log = "/ctl/pages.log", context_log = "/ctl/pages-context.log" }}
"#
            )
        };
        let text = format!(
            r#"
[engine]
plugins_dir = "plugins"
state_dir = "."
interval = "200ms"

[api]
listen = "off"
{}{}{}{}"#,
            check("app"),
            check("esc"),
            policy("app", "ok"),
            policy("esc", "fail"),
        )
        .replace("{ctl}", &ctl.path().display().to_string());
        std::fs::write(&config, text).unwrap();
        Chaos { ctl, state, config }
    }

    fn db(&self) -> PathBuf {
        self.state.path().join("mend.db")
    }

    fn start(&self, crash_at: Option<&str>) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mend"));
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("MEND_LOG", "warn")
            .env_remove("MEND_CRASH_AT")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(at) = crash_at {
            cmd.env("MEND_CRASH_AT", at);
        }
        cmd.spawn().expect("starting mend run")
    }

    fn incidents(&self) -> Vec<Incident> {
        if !self.db().exists() {
            return Vec::new();
        }
        Store::open_read_only(&self.db())
            .and_then(|s| s.incidents(false, 100_000))
            .unwrap_or_default()
    }

    fn of(&self, check: &str) -> Vec<Incident> {
        let mut v: Vec<Incident> = self
            .incidents()
            .into_iter()
            .filter(|i| i.check == check)
            .collect();
        v.sort_by_key(|i| i.id);
        v
    }

    /// Incident ids in a fixer's context log, with how often each appears.
    fn logged(&self, file: &str) -> BTreeMap<i64, usize> {
        let text = std::fs::read_to_string(self.ctl.path().join(file)).unwrap_or_default();
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let id = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("incident="))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a context line names its incident: {line:?}"));
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    }

    fn set(&self, check: &str, to: &str) {
        std::fs::write(self.ctl.path().join(check), to).unwrap();
    }

    /// The store opens clean: SQLite's own check of every page and index.
    fn integrity(&self, what: &str) {
        let conn = rusqlite::Connection::open_with_flags(
            self.db(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap_or_else(|e| panic!("{what}: opening the store: {e}"));
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{what}: integrity_check: {e}"));
        assert_eq!(ok, "ok", "{what}: integrity_check");
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn stop(mut child: Child, what: &str) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    match wait_exit(&mut child, Duration::from_secs(20)) {
        Some(status) => assert!(status.success(), "{what}: mend exited with {status}"),
        None => {
            let _ = child.kill();
            panic!("{what}: mend did not stop within 20 s of SIGTERM");
        }
    }
}

#[test]
fn kill_9_at_every_point_of_a_remediation_loses_repeats_and_misreports_nothing() {
    let cycles: usize = std::env::var("MEND_CHAOS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("MEND_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let mut rng = fastrand::Rng::with_seed(seed);
    let chaos = Chaos::new();
    let mut plan = Vec::new();
    let mut points: BTreeMap<&str, usize> = BTreeMap::new();
    // Incidents whose page may have gone out twice (killed after sending).
    let mut paged_twice_allowed = Vec::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        // Every point at least once, then at random.
        let (point, check) = POINTS
            .get(cycle)
            .copied()
            .unwrap_or_else(|| POINTS[rng.usize(0..POINTS.len())]);
        // The 2nd probe is mid-verify too: verification is two of them.
        let nth = if point == "mid-verify" {
            rng.u32(1..=2)
        } else {
            1
        };
        let what = format!("seed {seed}, cycle {cycle}, {point}:{nth}");
        *points.entry(point).or_default() += 1;
        plan.push(format!("{point}:{nth}"));
        let before = chaos.of(check).len();

        chaos.set(check, "fail");
        let mut mend = chaos.start(Some(&format!("{point}:{nth}")));
        let status = wait_exit(&mut mend, Duration::from_secs(60));
        let Some(status) = status else {
            let _ = mend.kill();
            panic!("{what}: mend never reached the crash point");
        };
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{what}: mend died at its crash point by SIGKILL, not {status}"
        );
        chaos.integrity(&what);

        let mend = chaos.start(None);
        if check == "app" {
            wait_for(
                &format!("{what}: the app incident to heal"),
                Duration::from_secs(60),
                || {
                    let incs = chaos.of("app");
                    incs.len() == before + 1 && incs.iter().all(|i| i.closed_at.is_some())
                },
            );
        } else {
            // The page went out for this cycle's incident, then the check
            // recovers and the escalated incident closes.
            wait_for(
                &format!("{what}: a page for the esc incident"),
                Duration::from_secs(60),
                || {
                    let incs = chaos.of("esc");
                    incs.len() == before + 1
                        && chaos
                            .logged("pages-context.log")
                            .contains_key(&incs[before].id)
                },
            );
            if point == "after-page" {
                paged_twice_allowed.push(chaos.of("esc")[before].id);
            }
            chaos.set("esc", "ok");
            wait_for(
                &format!("{what}: the esc incident to close"),
                Duration::from_secs(60),
                || chaos.of("esc").iter().all(|i| i.closed_at.is_some()),
            );
        }
        stop(mend, &what);
        chaos.integrity(&what);
    }
    eprintln!(
        "{cycles} cycles (seed {seed}) in {:.0?}: {points:?}",
        started.elapsed()
    );

    let app = chaos.of("app");
    let esc = chaos.of("esc");
    let app_cycles: usize = plan
        .iter()
        .filter(|p| POINTS.iter().any(|(n, c)| *c == "app" && p.starts_with(n)))
        .count();
    let ctx = format!("seed {seed}, plan {plan:?}");
    // Nothing lost: one incident per cycle.
    assert_eq!(app.len(), app_cycles, "{ctx}: app incidents");
    assert_eq!(esc.len(), cycles - app_cycles, "{ctx}: esc incidents");
    // No completed action run again, none missing: each app incident was
    // acted on exactly once and healed by it, and no attempt is left open.
    let acted = chaos.logged("app-actions.log");
    for inc in &app {
        assert_eq!(
            (inc.state, inc.escalated_at),
            (IncidentState::Healed, None),
            "{ctx}: {inc:#?}"
        );
        assert_eq!(acted.get(&inc.id), Some(&1), "{ctx}: actions of {inc:#?}");
        assert!(
            inc.attempts
                .iter()
                .any(|a| a.outcome == AttemptOutcome::Healed),
            "{ctx}: the heal is credited: {inc:#?}"
        );
    }
    assert_eq!(
        acted.len(),
        app.len(),
        "{ctx}: actions only for app incidents"
    );
    // No false page; every real one sent.
    let pages = chaos.logged("pages-context.log");
    for inc in &app {
        assert!(!pages.contains_key(&inc.id), "{ctx}: paged for {inc:#?}");
    }
    for inc in &esc {
        assert!(inc.escalated_at.is_some(), "{ctx}: {inc:#?}");
        assert_eq!(inc.state, IncidentState::Recovered, "{ctx}: {inc:#?}");
        let n = pages.get(&inc.id).copied().unwrap_or(0);
        let most = if paged_twice_allowed.contains(&inc.id) {
            2
        } else {
            1
        };
        assert!(
            (1..=most).contains(&n),
            "{ctx}: incident {} paged {n} times: {inc:#?}",
            inc.id
        );
        // The one step ran once per walk; the walk was not repeated.
        let acted = chaos.logged("esc-actions.log");
        assert_eq!(acted.get(&inc.id), Some(&1), "{ctx}: actions of {inc:#?}");
    }
    for inc in app.iter().chain(&esc) {
        assert!(
            inc.attempts
                .iter()
                .all(|a| a.outcome != AttemptOutcome::Running),
            "{ctx}: an attempt left running: {inc:#?}"
        );
    }
}

/// A tmpfs of its own, mounted on a fresh directory and unmounted on drop
/// (even after a panic).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// None (the test says why and skips) when this user cannot mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("mend-test-tmpfs-")
            .tempdir()
            .unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("running mount");
        if !out.status.success() {
            eprintln!(
                "skipping: cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk: a file grows until the write fails with ENOSPC.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 << 10];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // The last partial blocks too.
        let small = [0u8; 512];
        while f.write(&small).is_ok_and(|n| n > 0) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_state_disk_is_reported_loses_nothing_and_recovers_when_space_returns() {
    use common::service::{Mend, Opts};
    let Some(disk) = Tmpfs::mount("32m") else {
        return;
    };
    let m = Mend::start_opts(Opts {
        policy: Some("trigger = { consecutive = 1 }\nrelapse_window = \"0s\""),
        state_dir: Some(disk.path()),
        env: &[("MEND_LOG", "warn")],
        ..Opts::default()
    });
    let db = disk.path().join("mend.db");
    let incidents = || {
        Store::open_read_only(&db)
            .and_then(|s| s.incidents(false, 100))
            .unwrap_or_default()
    };
    let healed = |n: usize| {
        let incs = incidents();
        incs.len() == n
            && incs
                .iter()
                .all(|i| i.state == IncidentState::Healed && i.closed_at.is_some())
    };
    // One incident committed before the disk fills.
    m.set("app", "fail");
    m.wait_for("the first heal", Duration::from_secs(60), |_| healed(1));
    let before = incidents();

    let filler = disk.fill();
    m.set("app", "fail");
    m.wait_for(
        "/healthz to report the store's error",
        Duration::from_secs(60),
        |m| {
            m.get("/healthz").is_some_and(|(code, body)| {
                code == 503
                    && body["status"] == "store-error"
                    && body["store_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("mend.db"))
                    // as every error answer of the API
                    && body["error"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("the store cannot write") && e.contains("mend.db"))
            })
        },
    );
    // mend keeps running and serving: its heartbeat is fresh, reads work,
    // and what was committed is all there.
    let (_, health) = m.get("/healthz").unwrap();
    assert!(
        health["heartbeat_age_ms"]
            .as_u64()
            .is_some_and(|a| a < 5000),
        "{health}"
    );
    assert_eq!(m.get("/api/v1/status").map(|(c, _)| c), Some(200));
    assert_eq!(incidents(), before, "nothing committed is lost");
    assert_eq!(m.read("app"), "fail", "nothing acted without a record");

    // Space returns: the store writes again, and the failure that came
    // while it could not is remediated now.
    std::fs::remove_file(filler).unwrap();
    m.wait_for("/healthz to be 200 again", Duration::from_secs(30), |m| {
        m.get("/healthz")
            .is_some_and(|(code, body)| code == 200 && body["store_error"].is_null())
    });
    m.wait_for(
        "the failure during the full disk to heal",
        Duration::from_secs(60),
        |_| healed(2),
    );
    assert_eq!(incidents()[1..], before[..], "the first incident as it was");
    let log = m.stop();
    assert!(
        log.contains("the incident store cannot write"),
        "the log says so: {log}"
    );
    assert!(log.contains("the incident store writes again"), "{log}");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

/// mend's threads and open descriptors, from /proc.
fn threads_and_fds(pid: u32) -> (usize, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (threads, fds)
}

/// Waits (up to `limit`) for mend's threads and descriptors to come down
/// to `baseline` plus `slack`; returns what they were last.
fn settles_to(pid: u32, baseline: (usize, usize), slack: usize, limit: Duration) -> (usize, usize) {
    let start = Instant::now();
    loop {
        let now = threads_and_fds(pid);
        if (now.0 <= baseline.0 + slack && now.1 <= baseline.1 + slack) || start.elapsed() > limit {
            return now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn postgres_and_redis_stopped_and_restarted_under_load_are_reported_and_recovered() {
    use common::postgres;
    use common::redis::Disposable;
    use common::service::{Mend, Opts};
    if postgres::skip() {
        return;
    }
    let pg = postgres::Server::start();
    let mut redis = Disposable::start();
    let checks = format!(
        r#"
[connections.db]
kind = "postgres"
url = "{pg}"
timeout = "1s"

[connections.cache]
kind = "redis"
url = "{redis}"
timeout = "1s"

[[check]]
name = "db"
plugin = "fixture-hostile"
interval = "100ms"
jitter = "0s"
grants = {{ connections = ["db"] }}
config = {{ mode = "sql", name = "db", path = "SELECT 1" }}

[[check]]
name = "cache"
plugin = "fixture-hostile"
interval = "100ms"
jitter = "0s"
grants = {{ connections = ["cache"] }}
config = {{ mode = "redis", name = "cache", args = ["PING"] }}
"#,
        pg = pg.url(),
        redis = redis.url(),
    );
    let m = Mend::start_opts(Opts {
        extra_checks: &checks,
        plugins: &[artifacts::HOSTILE],
        env: &[("MEND_LOG", "error")],
        ..Opts::default()
    });
    let pid = m.child.as_ref().unwrap().id();
    let up = |m: &Mend, name: &str| {
        let c = m.check(name);
        c["status"] == "ok" && c["plugin_error"].is_null()
    };
    let down = |m: &Mend, name: &str| {
        let c = m.check(name);
        c["status"] != "ok" || !c["plugin_error"].is_null()
    };
    m.wait_for("both backends checked", Duration::from_secs(30), |m| {
        up(m, "db") && up(m, "cache")
    });
    // A first outage and recovery, so every pool and reconnect path has
    // run once before the baseline is taken.
    let mut outage = |m: &Mend, round: usize| {
        pg.stop();
        redis.kill();
        m.wait_for(
            &format!("round {round}: the outage reported"),
            Duration::from_secs(30),
            |m| down(m, "db") && down(m, "cache"),
        );
        // Under load: the checks keep failing for a while.
        std::thread::sleep(Duration::from_secs(2));
        assert!(down(m, "db") && down(m, "cache"), "round {round}");
        pg.pg_ctl("start");
        redis.restart();
        m.wait_for(
            &format!("round {round}: the recovery seen"),
            Duration::from_secs(30),
            |m| up(m, "db") && up(m, "cache"),
        );
    };
    outage(&m, 0);
    std::thread::sleep(Duration::from_secs(3));
    let baseline = threads_and_fds(pid);
    for round in 1..=3 {
        outage(&m, round);
    }
    // Idle blocking threads leave after their keep-alive; what a
    // reconnect opened is closed.
    let after = settles_to(pid, baseline, 1, Duration::from_secs(20));
    assert!(
        after.0 <= baseline.0 + 1 && after.1 <= baseline.1 + 1,
        "threads and descriptors back to baseline {baseline:?}: {after:?}"
    );
    assert_eq!(m.get("/healthz").map(|(c, _)| c), Some(200));
    m.stop();
}

#[test]
fn a_hostile_burst_leaves_no_threads_or_descriptors_behind() {
    use common::service::{Mend, Opts, TOKEN};
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("f"), "x").unwrap();
    let hostile = [
        (
            "h-fds",
            r#"{ mode = "open-files", path = "/d/f", count = 2000 }"#,
        ),
        ("h-loop", r#"{ mode = "loop" }"#),
        ("h-memory", r#"{ mode = "memory-bomb" }"#),
        ("h-panic", r#"{ mode = "panic" }"#),
        ("h-sleep", r#"{ mode = "sleep" }"#),
        ("h-read", r#"{ mode = "read", path = "/d/f" }"#),
    ];
    let mut checks = String::new();
    for (name, config) in hostile {
        checks.push_str(&format!(
            r#"
[[check]]
name = "{name}"
plugin = "fixture-hostile"
interval = "1h"
grants = {{ dirs = [{{ host = "{}", guest = "/d" }}] }}
limits = {{ deadline = "1s", memory = "64MiB", fuel = 500000000 }}
config = {config}
"#,
            data.path().display()
        ));
    }
    let m = Mend::start_opts(Opts {
        extra_checks: &checks,
        plugins: &[artifacts::HOSTILE],
        env: &[("MEND_LOG", "error")],
        ..Opts::default()
    });
    let pid = m.child.as_ref().unwrap().id();
    let burst = |rounds: usize| {
        let mut peak = (0, 0);
        std::thread::scope(|s| {
            let runs: Vec<_> = hostile
                .iter()
                .map(|(name, _)| {
                    let m = &m;
                    s.spawn(move || {
                        for _ in 0..rounds {
                            let (code, body) = m.post(
                                &format!("/api/v1/checks/{name}/run"),
                                Some(TOKEN),
                                &json!({}),
                            );
                            assert_eq!(code, 200, "{name}: {body}");
                        }
                    })
                })
                .collect();
            while runs.iter().any(|r| !r.is_finished()) {
                let now = threads_and_fds(pid);
                peak = (peak.0.max(now.0), peak.1.max(now.1));
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        peak
    };
    // Once, so every lazily started thread (pools, the epoch ticker) is
    // there; then the baseline, once idle threads have left.
    burst(1);
    std::thread::sleep(Duration::from_secs(4));
    let baseline = threads_and_fds(pid);
    let peak = burst(10);
    // 60 calls: a leak of one thread or descriptor in 20 calls shows.
    let after = settles_to(pid, baseline, 2, Duration::from_secs(15));
    eprintln!("threads, fds: baseline {baseline:?}, peak {peak:?}, after {after:?}");
    assert!(
        after.0 <= baseline.0 + 2 && after.1 <= baseline.1 + 2,
        "back to baseline {baseline:?} after the burst (peak {peak:?}): {after:?}"
    );
    assert_eq!(m.get("/healthz").map(|(c, _)| c), Some(200));
    m.stop();
}

/// The thread growth issue 16 measured: a detector that reads a FIFO in
/// its grant ends at its deadline, but the thread doing the `open` stays
/// stuck in the syscall (with a descriptor) until a writer comes. Before
/// calls with directory grants ran on a thread of their own, budgeted
/// (`runtime/call.rs`), each call added one of each: 10 → 32 threads and
/// 27 → 49 descriptors over 24 s of one such check every second. Now at
/// most `MAX_STUCK_CALLS` stay stuck per plugin and further calls are
/// refused, naming the budget, so ~35 calls leave the counts flat.
#[test]
fn a_fifo_in_a_grant_leaves_no_more_than_the_stuck_budget_of_threads() {
    use common::service::{Mend, Opts};
    let data = tempfile::tempdir().unwrap();
    let fifo = data.path().join("p");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let checks = format!(
        r#"
[[check]]
name = "fifo"
plugin = "fixture-hostile"
interval = "200ms"
jitter = "0s"
grants = {{ dirs = [{{ host = "{}", guest = "/d" }}] }}
limits = {{ deadline = "200ms" }}
config = {{ mode = "read", path = "/d/p" }}
"#,
        data.path().display()
    );
    let m = Mend::start_opts(Opts {
        extra_checks: &checks,
        plugins: &[artifacts::HOSTILE],
        env: &[("MEND_LOG", "error")],
        ..Opts::default()
    });
    let pid = m.child.as_ref().unwrap().id();
    let stuck = mend::runtime::MAX_STUCK_CALLS;
    // The budget is used up within a few calls; from then on each is
    // refused at once, naming it.
    m.wait_for(
        "the stuck-calls budget refusing",
        Duration::from_secs(20),
        |m| {
            m.check("fifo")["last"]["findings"]
                .to_string()
                .contains("stuck calls")
        },
    );
    let baseline = threads_and_fds(pid);
    let mut peak = baseline;
    // ~35 more calls, sampled.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(7) {
        let now = threads_and_fds(pid);
        peak = (peak.0.max(now.0), peak.1.max(now.1));
        std::thread::sleep(Duration::from_millis(100));
    }
    let check = m.check("fifo");
    assert!(
        check["last"]["findings"]
            .to_string()
            .contains("stuck calls"),
        "still refused by the budget: {check}"
    );
    // Slack of 2 for the runtime's own threads and descriptors (a
    // blocking-pool thread for the store, the API's sockets).
    assert!(
        peak.0 <= baseline.0 + 2 && peak.1 <= baseline.1 + 2,
        "~35 calls reading a FIFO, at most {stuck} stuck: threads and descriptors {baseline:?} -> peak {peak:?}"
    );
    m.stop();
}

/// A disposable `nats-server -js` on a port and store directory of its
/// own, so the test can kill it and start it again where it was.
struct DisposableNats {
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl DisposableNats {
    /// `None` (and why, on stderr) where nats-server is not installed.
    fn start() -> Option<DisposableNats> {
        let Some(bin) = common::netns::which("nats-server") else {
            eprintln!("skipped: nats-server is not installed (scripts/test installs it)");
            return None;
        };
        let mut n = DisposableNats {
            bin,
            port: common::service::free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        n.restart();
        Some(n)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and store.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "NATS is already running");
        let log = std::fs::File::create(self.dir.path().join("nats.log")).unwrap();
        let child = Command::new(&self.bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .args(["--server_name", "chaos"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        let log = self.dir.path().join("nats.log");
        wait_for("NATS to be ready", Duration::from_secs(20), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Server is ready"))
        });
    }

    /// `SIGKILL`: no goodbye to its clients.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for DisposableNats {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn nats_killed_and_restarted_under_load_leaves_fleet_mode_healing_and_reconnected() {
    use common::service::{Mend, Opts};
    let Some(mut nats) = DisposableNats::start() else {
        return;
    };
    let checks = format!(
        r#"
[fleet]
servers = ["{url}"]
agent_id = "chaos-agent"
prefix = "chaos"
heartbeat = "200ms"
request_timeout = "500ms"

[fleet.budget.restart]
max_concurrent = 1
lease_ttl = "30s"
when_unreachable = "local"
local_max = 1

[[check]]
name = "svc"
plugin = "fixture-scripted"
interval = "100ms"
jitter = "0s"
grants = {{ dirs = [{{ host = "{{ctl}}", guest = "/ctl" }}] }}
config = {{ file = "/ctl/svc" }}

[[policy]]
name = "fix-svc"
check = "svc"
trigger = {{ consecutive = 1 }}
cooldown = "0s"
relapse_window = "0s"
# A heal per round and phase: more than the default cap of 5 an hour.
max_attempts = 100
backoff = {{ base = "100ms", jitter = 0.0 }}

[[policy.step]]
name = "fix"
action = "fixture-fixer"
settle = "100ms"
budget = "restart"
grants = {{ dirs = [{{ host = "{{ctl}}", guest = "/ctl", mode = "rw" }}] }}
limits = {{ deadline = "5s" }}
# Slow enough (1 s) for the test to see the slot it holds.
config = {{ file = "/ctl/svc", log = "/ctl/svc-actions.log", slow_flag = "/ctl/slow", slow_secs = 1 }}
"#,
        url = nats.url(),
    );
    let m = Mend::start_opts(Opts {
        extra_checks: &checks,
        env: &[("MEND_LOG", "error")],
        ..Opts::default()
    });
    m.set("svc", "ok");
    m.set("slow", "");
    let pid = m.child.as_ref().unwrap().id();
    let fleet = |m: &Mend| m.get("/api/v1/fleet").map(|(_, v)| v).unwrap_or_default();
    let connected = |m: &Mend| {
        let f = fleet(m);
        f["reachable"] == true
            && f["members"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.to_string().contains("chaos-agent")))
    };
    let svc = |m: &Mend| -> Vec<Incident> {
        m.incidents()
            .into_iter()
            .filter(|i| i.policy == "fix-svc")
            .collect()
    };
    let healed = |m: &Mend| {
        svc(m)
            .iter()
            .filter(|i| i.state == IncidentState::Healed)
            .count()
    };
    // Breaks `svc` and waits until the fix is verified and the incident
    // closed healed; meanwhile sees the slot the fix holds: a lease in
    // NATS (`fleet`) or, while NATS is away, the local fallback (`local`).
    let heal = |m: &Mend, what: &str, slot: &str| {
        let before = healed(m);
        let mut seen = Vec::new();
        m.set("svc", "fail");
        m.wait_for(what, Duration::from_secs(20), |m| {
            let b = &fleet(m)["budgets"][0];
            if b["holders"]
                .as_array()
                .is_some_and(|h| h.iter().any(|h| h["agent"] == "chaos-agent"))
            {
                seen.push("fleet");
            }
            if b["local_held"].as_u64().is_some_and(|n| n > 0) {
                seen.push("local");
            }
            healed(m) > before && svc(m).iter().all(|i| i.closed_at.is_some())
        });
        seen.dedup();
        assert_eq!(seen, [slot], "{what}: the slots seen while it ran");
    };
    m.wait_for("fleet mode connected", Duration::from_secs(30), connected);
    heal(&m, "a first heal with NATS up", "fleet");
    let mut outage = |m: &Mend, round: usize| {
        nats.kill();
        m.wait_for(
            &format!("round {round}: NATS unreachable"),
            Duration::from_secs(20),
            |m| fleet(m)["reachable"] == false,
        );
        heal(
            m,
            &format!("round {round}: a local heal with NATS down"),
            "local",
        );
        nats.restart();
        m.wait_for(
            &format!("round {round}: fleet mode reconnected"),
            Duration::from_secs(20),
            connected,
        );
        heal(m, &format!("round {round}: a heal with NATS back"), "fleet");
    };
    outage(&m, 0);
    std::thread::sleep(Duration::from_secs(2));
    let baseline = threads_and_fds(pid);
    for round in 1..=3 {
        outage(&m, round);
    }
    let after = settles_to(pid, baseline, 1, Duration::from_secs(15));
    assert!(
        after.0 <= baseline.0 + 1 && after.1 <= baseline.1 + 1,
        "threads and descriptors back to baseline {baseline:?}: {after:?}"
    );
    let f = fleet(&m);
    assert_eq!(f["budgets"][0]["name"], "restart", "{f}");
    assert_eq!(m.get("/healthz").map(|(c, _)| c), Some(200));
    m.stop();
}
