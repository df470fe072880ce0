//! `system`: host health from thresholds, the way Monit's `check system`
//! reads, without a `/proc` grant: CPU, load, memory, swap, pressure
//! stalls (PSI) and critical processes, all through `mend:plugin/system`.
//!
//! Each configured dimension gives one finding per call, `*.ok` or
//! `*.high` (warn/fail), with its numbers as metrics. "For N samples" is
//! the policy's trigger (`{ consecutive = 3 }`), not this plugin's.

use mend_sdk::host::system;
use mend_sdk::{Bytes, Context, Detector, Error, Finding, Needs, Plugin, Result, Status};
use serde::Deserialize;

/// A warn and a fail threshold; a value at or above one reaches it.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Levels {
    #[serde(default)]
    pub warn: Option<f64>,
    #[serde(default)]
    pub fail: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuConfig {
    #[serde(default)]
    pub warn: Option<f64>,
    #[serde(default)]
    pub fail: Option<f64>,
    /// How long the host samples the CPU counters.
    #[serde(default = "default_sample")]
    pub sample: mend_sdk::Duration,
}

fn default_sample() -> mend_sdk::Duration {
    mend_sdk::Duration(std::time::Duration::from_secs(1))
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadConfig {
    #[serde(default)]
    pub warn: Option<f64>,
    #[serde(default)]
    pub fail: Option<f64>,
    /// Which average: 1, 5 or 15 (minutes).
    #[serde(default = "default_minutes")]
    pub minutes: u32,
    /// Compare the average divided by the number of cores.
    #[serde(default = "yes")]
    pub per_core: bool,
}

fn default_minutes() -> u32 {
    1
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StallKind {
    #[default]
    Some,
    Full,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    #[default]
    Avg10,
    Avg60,
    Avg300,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PressureLevels {
    #[serde(default)]
    pub warn: Option<f64>,
    #[serde(default)]
    pub fail: Option<f64>,
    #[serde(default)]
    pub stall: StallKind,
    #[serde(default)]
    pub window: Window,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PressureConfig {
    #[serde(default)]
    pub cpu: Option<PressureLevels>,
    #[serde(default)]
    pub memory: Option<PressureLevels>,
    #[serde(default)]
    pub io: Option<PressureLevels>,
}

/// A process that must be running (and within bounds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// The kernel's process name (at most 15 characters) or a glob.
    pub name: String,
    /// Count only processes whose command line contains this.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Fewer running is a failure (default 1: "must be running").
    #[serde(default = "one")]
    pub min: u32,
    /// More running is a warning.
    #[serde(default)]
    pub max: Option<u32>,
    /// Resident memory of any one of them.
    #[serde(default)]
    pub rss_warn: Option<Bytes>,
    #[serde(default)]
    pub rss_fail: Option<Bytes>,
    /// CPU use of any one of them, in percent of one core (sampled over
    /// `sample`).
    #[serde(default)]
    pub cpu_warn: Option<f64>,
    #[serde(default)]
    pub cpu_fail: Option<f64>,
    #[serde(default = "default_sample")]
    pub sample: mend_sdk::Duration,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Busy share of all cores, in percent.
    #[serde(default)]
    pub cpu: Option<CpuConfig>,
    #[serde(default)]
    pub load: Option<LoadConfig>,
    /// Memory not available (MemAvailable), in percent.
    #[serde(default)]
    pub memory: Option<Levels>,
    /// Swap in use, in percent.
    #[serde(default)]
    pub swap: Option<Levels>,
    #[serde(default)]
    pub pressure: Option<PressureConfig>,
    #[serde(default, rename = "process")]
    pub processes: Vec<ProcessConfig>,
}

pub struct System;

impl Plugin for System {
    fn needs() -> Needs {
        Needs::new().system()
    }
}

fn check_levels(key: &str, warn: Option<f64>, fail: Option<f64>, max: f64) -> Result<()> {
    for (k, v) in [("warn", warn), ("fail", fail)] {
        if let Some(v) = v
            && !(v.is_finite() && (0.0..=max).contains(&v))
        {
            return Err(Error::bad_config(format!(
                "`{key}.{k}` must be between 0 and {max}"
            )));
        }
    }
    if let (Some(w), Some(f)) = (warn, fail)
        && w > f
    {
        return Err(Error::bad_config(format!(
            "`{key}.warn` ({w}) is above `{key}.fail` ({f})"
        )));
    }
    if warn.is_none() && fail.is_none() {
        return Err(Error::bad_config(format!("`{key}` needs `warn` or `fail`")));
    }
    Ok(())
}

/// The host samples for 100 ms to 10 s; the call's deadline (5 s by
/// default) must leave room for it.
fn check_sample(key: &str, d: &mend_sdk::Duration) -> Result<()> {
    let ms = d.0.as_millis();
    if !(100..=10_000).contains(&ms) {
        return Err(Error::bad_config(format!(
            "`{key}` must be between 100ms and 10s"
        )));
    }
    Ok(())
}

/// Rejects what serde cannot: ranges, order, an empty config.
pub fn check(c: &Config) -> Result<()> {
    if c.cpu.is_none()
        && c.load.is_none()
        && c.memory.is_none()
        && c.swap.is_none()
        && c.pressure.is_none()
        && c.processes.is_empty()
    {
        return Err(Error::bad_config(
            "nothing to watch: set `cpu`, `load`, `memory`, `swap`, `pressure` or a `process`",
        ));
    }
    if let Some(x) = &c.cpu {
        check_levels("cpu", x.warn, x.fail, 100.0)?;
        check_sample("cpu.sample", &x.sample)?;
    }
    if let Some(x) = &c.load {
        check_levels("load", x.warn, x.fail, 1e6)?;
        if ![1, 5, 15].contains(&x.minutes) {
            return Err(Error::bad_config("`load.minutes` must be 1, 5 or 15"));
        }
    }
    if let Some(x) = &c.memory {
        check_levels("memory", x.warn, x.fail, 100.0)?;
    }
    if let Some(x) = &c.swap {
        check_levels("swap", x.warn, x.fail, 100.0)?;
    }
    if let Some(p) = &c.pressure {
        let all = [
            ("pressure.cpu", p.cpu),
            ("pressure.memory", p.memory),
            ("pressure.io", p.io),
        ];
        if all.iter().all(|(_, l)| l.is_none()) {
            return Err(Error::bad_config(
                "`pressure` needs `cpu`, `memory` or `io`",
            ));
        }
        for (k, l) in all {
            if let Some(l) = l {
                check_levels(k, l.warn, l.fail, 100.0)?;
            }
        }
    }
    for (i, p) in c.processes.iter().enumerate() {
        let key = format!("process[{i}]");
        if p.name.is_empty() {
            return Err(Error::bad_config(format!("`{key}.name` is empty")));
        }
        if let Some(max) = p.max
            && max < p.min
        {
            return Err(Error::bad_config(format!(
                "`{key}.max` ({max}) is below `min` ({})",
                p.min
            )));
        }
        if p.cpu_warn.is_some() || p.cpu_fail.is_some() {
            check_levels(&format!("{key}.cpu"), p.cpu_warn, p.cpu_fail, 1e5)?;
            check_sample(&format!("{key}.sample"), &p.sample)?;
        }
    }
    Ok(())
}

/// The worst level `value` reaches.
fn level(value: f64, warn: Option<f64>, fail: Option<f64>) -> Status {
    if fail.is_some_and(|f| value >= f) {
        Status::Fail
    } else if warn.is_some_and(|w| value >= w) {
        Status::Warn
    } else {
        Status::Ok
    }
}

fn worse(a: Status, b: Status) -> Status {
    let rank = |s: Status| match s {
        Status::Ok => 0,
        Status::Unknown => 1,
        Status::Warn => 2,
        Status::Fail => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// `PREFIX.high` at warn or fail, `PREFIX.ok` otherwise.
fn finding(prefix: &str, status: Status, summary: String) -> Finding {
    match status {
        Status::Ok => Finding::ok(format!("{prefix}.ok"), summary),
        s => Finding::new(s, format!("{prefix}.high"), summary),
    }
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
}

fn sample_ms(d: &mend_sdk::Duration) -> u32 {
    d.0.as_millis().min(u32::MAX as u128) as u32
}

pub fn cpu_finding(c: &CpuConfig, u: &system::CpuUsage) -> Finding {
    let status = level(u.busy, c.warn, c.fail);
    let hottest = u.per_core.iter().copied().fold(0.0, f64::max);
    finding(
        "system.cpu",
        status,
        format!(
            "CPU {:.0}% busy over {} ms (user {:.0}%, system {:.0}%, iowait {:.0}%)",
            u.busy, u.interval_ms, u.user, u.system, u.iowait
        ),
    )
    .metric("busy_percent", u.busy)
    .metric("user_percent", u.user)
    .metric("system_percent", u.system)
    .metric("iowait_percent", u.iowait)
    .metric("steal_percent", u.steal)
    .metric("hottest_core_percent", hottest)
    .metric("cores", u.per_core.len() as f64)
}

pub fn load_finding(c: &LoadConfig, l: &system::LoadAverage) -> Finding {
    let avg = match c.minutes {
        5 => l.five,
        15 => l.fifteen,
        _ => l.one,
    };
    let cores = l.cores.max(1) as f64;
    let value = if c.per_core { avg / cores } else { avg };
    let status = level(value, c.warn, c.fail);
    finding(
        "system.load",
        status,
        format!(
            "load {:.2} {:.2} {:.2} on {} cores",
            l.one, l.five, l.fifteen, l.cores
        ),
    )
    .metric("load1", l.one)
    .metric("load5", l.five)
    .metric("load15", l.fifteen)
    .metric("load_per_core", avg / cores)
    .metric("cores", cores)
}

pub fn memory_findings(
    mem: Option<&Levels>,
    swap: Option<&Levels>,
    m: &system::Memory,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(c) = mem {
        let used = m.used_percent();
        out.push(
            finding(
                "system.memory",
                level(used, c.warn, c.fail),
                format!(
                    "memory {used:.0}% used ({} of {} available)",
                    mib(m.available_bytes),
                    mib(m.total_bytes)
                ),
            )
            .metric("used_percent", used)
            .metric("available_bytes", m.available_bytes as f64)
            .metric("total_bytes", m.total_bytes as f64),
        );
    }
    if let Some(c) = swap {
        let used = m.swap_used_percent();
        out.push(
            finding(
                "system.swap",
                level(used, c.warn, c.fail),
                format!("swap {used:.0}% used (of {})", mib(m.swap_total_bytes)),
            )
            .metric("swap_used_percent", used)
            .metric("swap_total_bytes", m.swap_total_bytes as f64),
        );
    }
    out
}

pub fn pressure_findings(c: &PressureConfig, p: &system::Pressure) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, levels, r) in [
        ("cpu", c.cpu, &p.cpu),
        ("memory", c.memory, &p.memory),
        ("io", c.io, &p.io),
    ] {
        let Some(l) = levels else { continue };
        let s = match l.stall {
            StallKind::Some => &r.some,
            StallKind::Full => &r.full,
        };
        let (value, window) = match l.window {
            Window::Avg10 => (s.avg10, "10s"),
            Window::Avg60 => (s.avg60, "60s"),
            Window::Avg300 => (s.avg300, "300s"),
        };
        let kind = match l.stall {
            StallKind::Some => "some",
            StallKind::Full => "full",
        };
        out.push(
            finding(
                &format!("system.pressure.{name}"),
                level(value, l.warn, l.fail),
                format!("{name} pressure ({kind}) {value:.1}% over {window}"),
            )
            .metric("some_avg10", r.some.avg10)
            .metric("some_avg60", r.some.avg60)
            .metric("some_avg300", r.some.avg300)
            .metric("full_avg10", r.full.avg10)
            .metric("full_avg60", r.full.avg60)
            .metric("full_avg300", r.full.avg300),
        );
    }
    out
}

pub fn process_finding(c: &ProcessConfig, p: &system::Processes) -> Finding {
    let count = p.matched;
    let mut worst_rss = 0u64;
    let mut worst_cpu: f64 = 0.0;
    for x in &p.processes {
        worst_rss = worst_rss.max(x.rss_bytes);
        worst_cpu = worst_cpu.max(x.cpu_percent.unwrap_or(0.0));
    }
    let pids: Vec<String> = p
        .processes
        .iter()
        .take(8)
        .map(|x| x.pid.to_string())
        .collect();
    let (code, status, summary) = if count < c.min {
        (
            "process.missing",
            Status::Fail,
            format!("{}: {count} running, at least {} expected", c.name, c.min),
        )
    } else if c.max.is_some_and(|m| count > m) {
        (
            "process.count.high",
            Status::Warn,
            format!(
                "{}: {count} running, at most {} expected",
                c.name,
                c.max.unwrap_or_default()
            ),
        )
    } else {
        let rss = level(
            worst_rss as f64,
            c.rss_warn.map(|b| b.0 as f64),
            c.rss_fail.map(|b| b.0 as f64),
        );
        let cpu = level(worst_cpu, c.cpu_warn, c.cpu_fail);
        if rss != Status::Ok && worse(rss, cpu) == rss {
            (
                "process.rss.high",
                rss,
                format!("{}: {} resident", c.name, mib(worst_rss)),
            )
        } else if cpu != Status::Ok {
            (
                "process.cpu.high",
                cpu,
                format!("{}: {worst_cpu:.0}% of a core", c.name),
            )
        } else {
            (
                "process.ok",
                Status::Ok,
                format!("{}: {count} running (pid {})", c.name, pids.join(", ")),
            )
        }
    };
    let mut f = Finding::new(status, code, summary)
        .metric("count", count as f64)
        .metric("rss_bytes_max", worst_rss as f64)
        .label("process", &c.name);
    if c.cpu_warn.is_some() || c.cpu_fail.is_some() {
        f = f.metric("cpu_percent_max", worst_cpu);
    }
    if let Some(oldest) = p.processes.iter().map(|x| x.age_ms).max() {
        f = f.metric("age_seconds_max", oldest as f64 / 1000.0);
    }
    if let Some(fds) = p.processes.iter().filter_map(|x| x.open_fds).max() {
        f = f.metric("open_fds_max", fds as f64);
    }
    f
}

impl Detector for System {
    type Config = Config;

    fn config_needs(c: &Config) -> Result<Needs> {
        check(c)?;
        Ok(c.processes
            .iter()
            .fold(Needs::new().system(), |n, p| n.process(&p.name)))
    }

    fn detect(_cx: &Context, c: Config) -> Result<Vec<Finding>> {
        check(&c)?;
        let mut out = Vec::new();
        if let Some(cpu) = &c.cpu {
            out.push(cpu_finding(cpu, &system::cpu(sample_ms(&cpu.sample))?));
        }
        if let Some(load) = &c.load {
            out.push(load_finding(load, &system::load()?));
        }
        if c.memory.is_some() || c.swap.is_some() {
            out.extend(memory_findings(
                c.memory.as_ref(),
                c.swap.as_ref(),
                &system::memory()?,
            ));
        }
        if let Some(p) = &c.pressure {
            out.extend(pressure_findings(p, &system::pressure()?));
        }
        for p in &c.processes {
            let sample = if p.cpu_warn.is_some() || p.cpu_fail.is_some() {
                sample_ms(&p.sample)
            } else {
                0
            };
            let found = system::processes(&p.name, p.cmdline.as_deref(), sample)?;
            out.push(process_finding(p, &found));
        }
        Ok(out)
    }
}

mend_sdk::export!(System: Detector);

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(rss: u64, cpu: Option<f64>) -> system::Process {
        system::Process {
            pid: 7,
            name: "nginx".into(),
            state: "S".into(),
            rss_bytes: rss,
            cpu_seconds: 1.0,
            cpu_percent: cpu,
            age_ms: 5000,
            open_fds: Some(9),
            argv: vec!["nginx".into()],
        }
    }

    fn config(json: serde_json::Value) -> ProcessConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_process_is_judged_by_count_then_rss_then_cpu() {
        let c = config(serde_json::json!({"name": "nginx", "min": 2, "max": 3,
            "rss_warn": "1MiB", "rss_fail": "2MiB", "cpu_warn": 50}));
        let list = |ps: Vec<system::Process>| system::Processes {
            matched: ps.len() as u32,
            processes: ps,
        };
        let f = process_finding(&c, &list(vec![proc(10, None)]));
        assert_eq!(
            (f.code.as_str(), f.status),
            ("process.missing", Status::Fail)
        );
        let f = process_finding(&c, &list(vec![proc(10, None); 4]));
        assert_eq!(
            (f.code.as_str(), f.status),
            ("process.count.high", Status::Warn)
        );
        let f = process_finding(&c, &list(vec![proc(3 << 20, Some(90.0)), proc(10, None)]));
        assert_eq!(
            (f.code.as_str(), f.status),
            ("process.rss.high", Status::Fail)
        );
        let f = process_finding(&c, &list(vec![proc(10, Some(90.0)), proc(10, None)]));
        assert_eq!(
            (f.code.as_str(), f.status),
            ("process.cpu.high", Status::Warn)
        );
        let f = process_finding(&c, &list(vec![proc(10, Some(1.0)), proc(10, None)]));
        assert_eq!((f.code.as_str(), f.status), ("process.ok", Status::Ok));
        assert!(f.metrics.contains(&("open_fds_max".into(), 9.0)));
        // `matched` counts past the host's list.
        let f = process_finding(
            &c,
            &system::Processes {
                matched: 300,
                processes: vec![proc(10, None)],
            },
        );
        assert_eq!(f.code, "process.count.high");
    }

    #[test]
    fn load_is_per_core_unless_told_otherwise() {
        let l = system::LoadAverage {
            one: 4.0,
            five: 2.0,
            fifteen: 1.0,
            cores: 4,
            runnable: 1,
            threads: 100,
        };
        let c: LoadConfig = serde_json::from_value(serde_json::json!({"warn": 0.9})).unwrap();
        assert_eq!(load_finding(&c, &l).code, "system.load.high");
        let c: LoadConfig =
            serde_json::from_value(serde_json::json!({"warn": 0.9, "minutes": 15})).unwrap();
        assert_eq!(load_finding(&c, &l).code, "system.load.ok");
        let c: LoadConfig =
            serde_json::from_value(serde_json::json!({"fail": 3, "per_core": false})).unwrap();
        assert_eq!(load_finding(&c, &l).status, Status::Fail);
    }
}
