//! The `system` detector on this machine, for real: a child that burns
//! CPU, one that holds memory, and a process that is started and killed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{MendRun, incidents, wait_for};
use common::*;
use mend::capabilities::system::{SystemGrant, SystemTable};
use mend::capabilities::{Grants, missing_grant};
use mend::contract::{Finding, Role, Status};
use serde_json::json;

/// A child killed when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `program` copied as `name`, so the kernel names its process so.
fn named(dir: &Path, program: &str, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(program, &p).unwrap();
    p
}

fn grants(processes: &[&str]) -> Grants {
    Grants {
        system: Some(SystemGrant::Table(SystemTable {
            processes: processes.iter().map(|s| s.to_string()).collect(),
        })),
        ..Grants::none()
    }
}

async fn findings(config: serde_json::Value, processes: &[&str]) -> Vec<Finding> {
    let p = load(artifacts::SYSTEM).await;
    detect(&p, config.clone(), &grants(processes))
        .await
        .unwrap_or_else(|e| panic!("{config}: {e}"))
        .value
}

fn one<'a>(fs: &'a [Finding], prefix: &str) -> &'a Finding {
    let mine: Vec<_> = fs.iter().filter(|f| f.code.starts_with(prefix)).collect();
    assert_eq!(mine.len(), 1, "one {prefix} finding in {fs:?}");
    mine[0]
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[tokio::test]
async fn a_killed_process_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = named(tmp.path(), "/bin/sleep", "mendcritical");
    let config = json!({"process": [{"name": "mendcritical", "max": 1}]});

    let f = findings(config.clone(), &["mendcritical"]).await;
    let p = one(&f, "process.");
    assert_eq!(
        (p.code.as_str(), p.status),
        ("process.missing", Status::Fail)
    );
    assert_eq!(p.metrics["count"], 0.0);
    assert_eq!(p.labels["process"], "mendcritical");

    let first = Kid(Command::new(&exe).arg("300").spawn().unwrap());
    let f = findings(config.clone(), &["mendcritical"]).await;
    let p = one(&f, "process.");
    assert_eq!(
        (p.code.as_str(), p.status),
        ("process.ok", Status::Ok),
        "{p:?}"
    );
    assert_eq!(p.metrics["count"], 1.0);
    assert!(p.summary.contains(&first.0.id().to_string()), "{p:?}");
    assert!(p.metrics["rss_bytes_max"] > 0.0 && p.metrics["open_fds_max"] >= 3.0);

    // Two where at most one belongs.
    let second = Kid(Command::new(&exe).arg("301").spawn().unwrap());
    let f = findings(config.clone(), &["mendcritical"]).await;
    assert_eq!(one(&f, "process.").code, "process.count.high");
    // The command-line filter counts only the one it names.
    let f = findings(
        json!({"process": [{"name": "mendcritical", "cmdline": "301", "max": 1}]}),
        &["mendcritical"],
    )
    .await;
    assert_eq!(one(&f, "process.").code, "process.ok");

    drop(first);
    drop(second);
    let f = findings(config, &["mendcritical"]).await;
    assert_eq!(one(&f, "process.").code, "process.missing");
}

#[tokio::test]
async fn a_cpu_burner_is_seen_by_the_machine_and_the_process() {
    let tmp = tempfile::tempdir().unwrap();
    let sh = named(tmp.path(), "/bin/sh", "mendburn");
    let cores = std::thread::available_parallelism().unwrap().get();
    let config = json!({
        "cpu": {"fail": 90, "sample": "1s"},
        // The machine is shared: a spinning shell gets at least a few percent
        // of a core, a sleeping one none.
        "process": [{"name": "mendburn", "cpu_warn": 5, "sample": "1s"}],
    });
    let before = findings(config.clone(), &["mendburn"]).await;
    assert_eq!(one(&before, "process.").code, "process.missing");

    // One burner per core keeps every core busy whatever else runs.
    let _burn: Vec<Kid> = (0..cores)
        .map(|_| {
            Kid(Command::new(&sh)
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap())
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let f = findings(config, &["mendburn"]).await;
    let cpu = one(&f, "system.cpu");
    assert_eq!(
        (cpu.code.as_str(), cpu.status),
        ("system.cpu.high", Status::Fail),
        "{cpu:?}"
    );
    assert!(cpu.metrics["busy_percent"] >= 90.0, "{cpu:?}");
    assert_eq!(cpu.metrics["cores"], cores as f64);
    let p = one(&f, "process.");
    assert_eq!(
        (p.code.as_str(), p.status),
        ("process.cpu.high", Status::Warn),
        "{p:?}"
    );
    assert_eq!(p.metrics["count"], cores as f64);
    assert!(p.metrics["cpu_percent_max"] >= 5.0, "{p:?}");
}

#[tokio::test]
async fn held_memory_is_seen_by_the_machine_and_the_process() {
    // Big enough that the machine's other work (builds come and go by a
    // GiB or so) cannot hide it: half of it must show.
    const HOG: u64 = 4 << 30;
    let tmp = tempfile::tempdir().unwrap();
    let dd = named(tmp.path(), "/bin/dd", "mendhog");
    let measure = json!({"memory": {"warn": 100}});
    let base = one(&findings(measure, &[]).await, "system.memory").metrics["used_percent"];
    let total = one(
        &findings(json!({"memory": {"warn": 100}}), &[]).await,
        "system.memory",
    )
    .metrics["total_bytes"];
    let share = HOG as f64 * 100.0 / total;

    // dd fills a 4 GiB buffer, then blocks writing it into a pipe nobody
    // reads: it holds the memory until killed.
    let hog = Kid(Command::new(&dd)
        .args(["if=/dev/zero", "bs=4G", "count=1", "iflag=fullblock"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let start = Instant::now();
    while rss_of(hog.0.id()) < HOG {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the hog never filled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let f = findings(
        json!({
            "memory": {"warn": base + share / 2.0},
            "process": [{"name": "mendhog", "rss_warn": "1GiB", "rss_fail": "3900MiB"}],
        }),
        &["mendhog"],
    )
    .await;
    let m = one(&f, "system.memory");
    assert_eq!(
        (m.code.as_str(), m.status),
        ("system.memory.high", Status::Warn),
        "{m:?}"
    );
    let p = one(&f, "process.");
    assert_eq!(
        (p.code.as_str(), p.status),
        ("process.rss.high", Status::Fail),
        "{p:?}"
    );
    assert!(p.metrics["rss_bytes_max"] >= HOG as f64, "{p:?}");
}

#[tokio::test]
async fn load_swap_and_pressure_carry_their_numbers() {
    let f = findings(
        json!({
            "load": {"warn": 1000000, "minutes": 5},
            "swap": {"fail": 100},
            "pressure": {"cpu": {"warn": 100}, "io": {"fail": 100, "stall": "full", "window": "avg60"}},
        }),
        &[],
    )
    .await;
    let l = one(&f, "system.load");
    assert_eq!(l.code, "system.load.ok");
    assert!(l.metrics["cores"] >= 1.0 && l.metrics["load5"] >= 0.0);
    let s = one(&f, "system.swap");
    assert!((0.0..=100.0).contains(&s.metrics["swap_used_percent"]));
    for r in ["cpu", "io"] {
        let p = one(&f, &format!("system.pressure.{r}"));
        assert!((0.0..=100.0).contains(&p.metrics["some_avg10"]), "{p:?}");
    }
    // A threshold every machine reaches: the finding says so.
    let f = findings(json!({"load": {"warn": 0, "per_core": false}}), &[]).await;
    assert_eq!(one(&f, "system.load").code, "system.load.high");
}

#[tokio::test]
async fn configs_are_checked_and_name_what_they_reach() {
    let p = load(artifacts::SYSTEM).await;
    let rt = runtime();
    for (bad, want) in [
        (json!({}), "nothing to watch"),
        (
            json!({"cpu": {"warn": 120}}),
            "`cpu.warn` must be between 0 and 100",
        ),
        (
            json!({"memory": {"warn": 90, "fail": 80}}),
            "above `memory.fail`",
        ),
        (json!({"load": {"warn": 1, "minutes": 2}}), "1, 5 or 15"),
        (
            json!({"process": [{"name": "x", "min": 2, "max": 1}]}),
            "below `min`",
        ),
        (json!({"cpu": {"wran": 1}}), "wran"),
        (
            json!({"cpu": {"warn": 1, "sample": "1m"}}),
            "`cpu.sample` must be between",
        ),
    ] {
        let e = rt
            .validate(
                &p,
                Role::Detector,
                &mend::runtime::PluginConfig::from(bad.clone()),
            )
            .await
            .expect_err(&bad.to_string());
        assert!(e.to_string().contains(want), "{bad}: {e}");
    }
    let needs = rt
        .validate(
            &p,
            Role::Detector,
            &mend::runtime::PluginConfig::from(json!({"process": [{"name": "postgres"}]})),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(needs.processes, vec!["postgres".to_string()]);
    assert!(needs.system);
    // The plan refuses the config where the grant does not name it.
    let only_nginx = grants(&["nginx"]).resolve().unwrap();
    assert_eq!(
        missing_grant(&needs, &only_nginx).unwrap(),
        "process `postgres` (`system = { processes = [\"postgres\"] }`)"
    );
    assert!(missing_grant(&needs, &grants(&["postgres"]).resolve().unwrap()).is_none());
    assert!(missing_grant(&needs, &Grants::none().resolve().unwrap()).is_some());
}

/// Pids of processes the kernel names `name`.
fn pids_named(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

#[tokio::test]
async fn mend_run_restarts_a_missing_process_after_n_samples() {
    use mend::store::{AttemptOutcome, IncidentState, Store};
    let state = tempfile::tempdir().unwrap();
    let plugins = state.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for p in [artifacts::SYSTEM, artifacts::COMMAND] {
        std::fs::copy(p, plugins.join(Path::new(p).file_name().unwrap())).unwrap();
    }
    let exe = named(state.path(), "/bin/sleep", "mendrevive");
    let config = state.path().join("mend.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[engine]
plugins_dir = "plugins"
state_dir = "."
interval = "300ms"

[api]
listen = "off"

# Starts the process and exits; the process stays.
[commands.start-it]
argv = ["/bin/sh", "-c", "{exe} 300 </dev/null >/dev/null 2>&1 &"]
timeout = "5s"

[[check]]
name = "critical"
plugin = "system"
jitter = "0s"
grants = {{ system = {{ processes = ["mendrevive"] }} }}
config = {{ process = [{{ name = "mendrevive" }}] }}

[[policy]]
name = "revive"
check = "critical"
codes = ["process.missing"]
trigger = {{ consecutive = 3 }}

[[policy.step]]
name = "start"
action = "command"
settle = "300ms"
grants = {{ commands = ["start-it"] }}
config = {{ command = "start-it" }}
"#,
            exe = exe.display()
        ),
    )
    .unwrap();
    let store = state.path().join("mend.db");
    let mend = MendRun::start(&config);
    let db = store.clone();
    let inc = tokio::task::spawn_blocking(move || {
        wait_for("a healed incident", Duration::from_secs(120), || {
            incidents(&db)
                .first()
                .is_some_and(|i| i.state == IncidentState::Healed)
        });
        incidents(&db).remove(0)
    })
    .await
    .unwrap();
    let revived = pids_named("mendrevive");
    mend.stop();
    for pid in &revived {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    assert_eq!(revived.len(), 1, "the command started it once: {revived:?}");
    assert_eq!(inc.attempts.len(), 1, "{inc:#?}");
    assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Healed);
    assert!(
        inc.attempts[0]
            .detail
            .to_string()
            .contains("ran `start-it`"),
        "{inc:#?}"
    );
    // The trigger, not the plugin, waited for 3 samples 300 ms apart: the
    // incident opened at least two intervals after the first failure.
    let history = Store::open_read_only(&store)
        .and_then(|s| s.history("critical", 100))
        .unwrap();
    let first_fail = history
        .iter()
        .filter(|r| r.status == "fail")
        .map(|r| r.at)
        .min()
        .expect("a failing result");
    assert!(
        inc.opened_at >= first_fail + 500,
        "opened at {} after a first failure at {first_fail}: {history:?}",
        inc.opened_at
    );
}
