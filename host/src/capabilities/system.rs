//! `mend:plugin/system`: machine facts without a `/proc` grant.
//!
//! A plugin granted `/proc` sees every process's command line and mend's
//! own environment. This capability reads `/proc` in the host instead and
//! hands over numbers: CPU (sampled by the host over an interval), load,
//! memory, pressure stall information, filesystems, interface counters,
//! and the processes the grant names. Environments are never read; a
//! process the grant does not name is never described, nor is its command
//! line read. Every list and string is cut at a host limit.
//!
//! ```toml
//! grants.system = true                                   # machine facts
//! grants.system = { processes = ["postgres", "nginx*"] } # and these
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use procfs::prelude::*;
use serde::{Deserialize, Serialize};

use crate::contract::HostError;

/// Most processes described per call (`matched` still counts them all).
pub const MAX_PROCESSES: usize = 256;
/// Most filesystems and most interfaces per call.
pub const MAX_FILESYSTEMS: usize = 256;
pub const MAX_INTERFACES: usize = 256;
/// Most cores listed in `per-core`.
pub const MAX_CORES: usize = 4096;
/// Longest string handed over (names, mount points, each argument), bytes.
pub const MAX_TEXT: usize = 256;
/// Most arguments of a command line handed over.
pub const MAX_ARGS: usize = 32;
/// Open descriptors are counted up to this (a process holding millions
/// must not make the host list them all).
pub const MAX_FDS_COUNTED: u32 = 65_536;
/// Sampling intervals are held within these.
pub const MIN_SAMPLE: Duration = Duration::from_millis(100);
pub const MAX_SAMPLE: Duration = Duration::from_secs(10);

/// `grants.system`: `true`, or a table naming processes (which implies
/// the machine facts too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SystemGrant {
    On(bool),
    Table(SystemTable),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemTable {
    /// Process names (globs on the kernel's name, e.g. `postgres*`) that
    /// `processes` may describe.
    #[serde(default)]
    pub processes: Vec<String>,
}

// By hand rather than `untagged`, so a typo in the table keeps its own
// error message (and its line) instead of "did not match any variant".
impl<'de> Deserialize<'de> for SystemGrant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SystemGrant;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`true`, `false` or a table such as `{ processes = [\"nginx\"] }`")
            }
            fn visit_bool<E>(self, v: bool) -> Result<SystemGrant, E> {
                Ok(SystemGrant::On(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<SystemGrant, A::Error> {
                SystemTable::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(SystemGrant::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// A system grant, checked.
#[derive(Debug)]
pub struct ResolvedSystem {
    /// The granted process patterns, as written.
    pub processes: Vec<String>,
    set: GlobSet,
}

impl ResolvedSystem {
    fn names(&self, name: &str) -> bool {
        self.set.is_match(name)
    }
}

pub(super) fn resolve(g: Option<&SystemGrant>) -> anyhow::Result<Option<Arc<ResolvedSystem>>> {
    let processes = match g {
        None | Some(SystemGrant::On(false)) => return Ok(None),
        Some(SystemGrant::On(true)) => Vec::new(),
        Some(SystemGrant::Table(t)) => t.processes.clone(),
    };
    let mut b = GlobSetBuilder::new();
    for p in &processes {
        if p.is_empty() || p.len() > MAX_TEXT {
            anyhow::bail!("system grant: process name `{p}` must be 1 to {MAX_TEXT} bytes");
        }
        b.add(
            Glob::new(p)
                .map_err(|e| anyhow::anyhow!("system grant: process pattern `{p}`: {e}"))?,
        );
    }
    Ok(Some(Arc::new(ResolvedSystem {
        set: b.build()?,
        processes,
    })))
}

/// The first system need not covered by the grant.
pub(super) fn missing(
    system: bool,
    processes: &[String],
    granted: Option<&ResolvedSystem>,
) -> Option<String> {
    let Some(g) = granted else {
        if system || !processes.is_empty() {
            return Some("system facts (`system = true`)".into());
        }
        return None;
    };
    for p in processes {
        let ok = if p == "*" {
            !g.processes.is_empty()
        } else {
            g.names(p)
        };
        if !ok {
            return Some(format!(
                "process `{p}` (`system = {{ processes = [\"{p}\"] }}`)"
            ));
        }
    }
    None
}

/// CPU shares over an interval, in percent.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuUsage {
    pub busy: f64,
    pub user: f64,
    pub system: f64,
    pub iowait: f64,
    pub steal: f64,
    pub per_core: Vec<f64>,
    pub interval_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAverage {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
    pub cores: u32,
    pub runnable: u32,
    pub threads: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub free_bytes: u64,
    pub cached_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stall {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ResourcePressure {
    pub some: Stall,
    pub full: Stall,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Pressure {
    pub cpu: ResourcePressure,
    pub memory: ResourcePressure,
    pub io: ResourcePressure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    pub mount_point: String,
    pub fs_type: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub available_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetInterface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessQuery {
    pub name: String,
    pub cmdline: Option<String>,
    pub sample_ms: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub name: String,
    pub state: String,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
    pub cpu_percent: Option<f64>,
    pub age_ms: u64,
    pub open_fds: Option<u32>,
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Processes {
    pub matched: u32,
    pub processes: Vec<ProcessInfo>,
}

/// Per-call state of `mend:plugin/system`.
pub struct SystemCap {
    pub(crate) grant: Option<Arc<ResolvedSystem>>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> HostError {
    HostError::failed(format!("system: reading {what}: {e}"))
}

/// Runs a `/proc` read off the async threads (a scan of many processes
/// takes a while).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HostError> + Send + 'static,
) -> Result<T, HostError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HostError::failed(format!("system: {e}")))?
}

impl SystemCap {
    fn granted(&self) -> Result<&Arc<ResolvedSystem>, HostError> {
        self.grant
            .as_ref()
            .ok_or_else(|| HostError::denied("system facts are not granted (`system = true`)"))
    }

    pub async fn cpu(&self, interval_ms: u32) -> Result<CpuUsage, HostError> {
        self.granted()?;
        let interval = clamp_sample(interval_ms);
        let before = blocking(cpu_times).await?;
        tokio::time::sleep(interval).await;
        let after = blocking(cpu_times).await?;
        Ok(cpu_usage(&before, &after, interval))
    }

    pub fn load(&self) -> Result<LoadAverage, HostError> {
        self.granted()?;
        let l = procfs::LoadAverage::current().map_err(|e| failed("/proc/loadavg", e))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Ok(LoadAverage {
            one: l.one.into(),
            five: l.five.into(),
            fifteen: l.fifteen.into(),
            cores,
            runnable: l.cur,
            threads: l.max,
        })
    }

    pub fn memory(&self) -> Result<Memory, HostError> {
        self.granted()?;
        let m = procfs::Meminfo::current().map_err(|e| failed("/proc/meminfo", e))?;
        Ok(Memory {
            total_bytes: m.mem_total,
            // Kernels before 3.14 lack MemAvailable; free + cache is the
            // old estimate.
            available_bytes: m.mem_available.unwrap_or(m.mem_free + m.cached),
            free_bytes: m.mem_free,
            cached_bytes: m.cached,
            swap_total_bytes: m.swap_total,
            swap_free_bytes: m.swap_free,
        })
    }

    pub fn pressure(&self) -> Result<Pressure, HostError> {
        self.granted()?;
        let stall = |r: procfs::PressureRecord| Stall {
            avg10: r.avg10.into(),
            avg60: r.avg60.into(),
            avg300: r.avg300.into(),
            total_us: r.total,
        };
        let cpu = procfs::CpuPressure::current().map_err(|e| failed("/proc/pressure/cpu", e))?;
        let memory =
            procfs::MemoryPressure::current().map_err(|e| failed("/proc/pressure/memory", e))?;
        let io = procfs::IoPressure::current().map_err(|e| failed("/proc/pressure/io", e))?;
        Ok(Pressure {
            cpu: ResourcePressure {
                some: stall(cpu.some),
                full: stall(cpu.full),
            },
            memory: ResourcePressure {
                some: stall(memory.some),
                full: stall(memory.full),
            },
            io: ResourcePressure {
                some: stall(io.some),
                full: stall(io.full),
            },
        })
    }

    pub async fn filesystems(&self) -> Result<Vec<Filesystem>, HostError> {
        self.granted()?;
        blocking(filesystems).await
    }

    pub fn interfaces(&self) -> Result<Vec<NetInterface>, HostError> {
        self.granted()?;
        let devs = procfs::net::dev_status().map_err(|e| failed("/proc/net/dev", e))?;
        // By name, so the cut at the limit is the same on every call.
        let devs: BTreeMap<_, _> = devs.into_iter().collect();
        Ok(devs
            .into_values()
            .take(MAX_INTERFACES)
            .map(|d| NetInterface {
                name: cut(&d.name),
                rx_bytes: d.recv_bytes,
                rx_packets: d.recv_packets,
                rx_errors: d.recv_errs,
                rx_dropped: d.recv_drop,
                tx_bytes: d.sent_bytes,
                tx_packets: d.sent_packets,
                tx_errors: d.sent_errs,
                tx_dropped: d.sent_drop,
            })
            .collect())
    }

    pub async fn processes(&self, q: &ProcessQuery) -> Result<Processes, HostError> {
        let grant = self.granted()?.clone();
        if grant.processes.is_empty() {
            return Err(HostError::denied(
                "no processes are granted (`system = { processes = [\"NAME\"] }`)",
            ));
        }
        if q.name.is_empty() || q.name.len() > MAX_TEXT {
            return Err(HostError::failed(format!(
                "system: a process name is 1 to {MAX_TEXT} bytes"
            )));
        }
        let want = Glob::new(&q.name)
            .map_err(|e| HostError::failed(format!("system: process pattern `{}`: {e}", q.name)))?
            .compile_matcher();
        // Asking by name for a process the grant does not name is a
        // refusal, not an empty answer, so the operator sees why.
        let literal = !q.name.contains(['*', '?', '[', '{']);
        if literal && !grant.names(&q.name) {
            return Err(HostError::denied(format!(
                "process `{}` is not granted (granted: {})",
                q.name,
                grant.processes.join(", ")
            )));
        }
        let cmdline = q.cmdline.clone();
        let (matched, mut found) = blocking(move || {
            scan(
                |name| grant.names(name) && want.is_match(name),
                cmdline.as_deref(),
            )
        })
        .await?;
        if q.sample_ms > 0 && !found.is_empty() {
            let interval = clamp_sample(q.sample_ms);
            tokio::time::sleep(interval).await;
            let pids: Vec<(u32, f64)> = found.iter().map(|p| (p.pid, p.cpu_seconds)).collect();
            let after = blocking(move || Ok(cpu_seconds_of(&pids))).await?;
            for (p, later) in found.iter_mut().zip(after) {
                p.cpu_percent = later.map(|s| {
                    ((s - p.cpu_seconds).max(0.0) / interval.as_secs_f64() * 100.0).max(0.0)
                });
            }
        }
        Ok(Processes {
            matched,
            processes: found,
        })
    }
}

fn clamp_sample(ms: u32) -> Duration {
    Duration::from_millis(ms.into()).clamp(MIN_SAMPLE, MAX_SAMPLE)
}

/// Cuts `s` to [`MAX_TEXT`] bytes at a character boundary.
fn cut(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_string();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Busy and idle ticks of all cores (first) and of each core.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Ticks {
    user: u64,
    system: u64,
    iowait: u64,
    steal: u64,
    idle: u64,
    other: u64,
}

impl Ticks {
    fn total(&self) -> u64 {
        self.user + self.system + self.iowait + self.steal + self.idle + self.other
    }
}

fn ticks(c: &procfs::CpuTime) -> Ticks {
    Ticks {
        // Guest time is already counted in user time.
        user: c.user + c.nice,
        system: c.system + c.irq.unwrap_or(0) + c.softirq.unwrap_or(0),
        iowait: c.iowait.unwrap_or(0),
        steal: c.steal.unwrap_or(0),
        idle: c.idle,
        other: 0,
    }
}

fn cpu_times() -> Result<Vec<Ticks>, HostError> {
    let k = procfs::KernelStats::current().map_err(|e| failed("/proc/stat", e))?;
    let mut v = vec![ticks(&k.total)];
    v.extend(k.cpu_time.iter().take(MAX_CORES).map(ticks));
    Ok(v)
}

fn cpu_usage(before: &[Ticks], after: &[Ticks], interval: Duration) -> CpuUsage {
    let share = |b: &Ticks, a: &Ticks| {
        let total = a.total().saturating_sub(b.total()) as f64;
        let pct = |x: u64, y: u64| {
            if total == 0.0 {
                0.0
            } else {
                x.saturating_sub(y) as f64 * 100.0 / total
            }
        };
        (
            pct(a.user, b.user),
            pct(a.system, b.system),
            pct(a.iowait, b.iowait),
            pct(a.steal, b.steal),
            pct(a.idle, b.idle),
        )
    };
    let zero = Ticks::default();
    let (user, system, iowait, steal, idle) = share(
        before.first().unwrap_or(&zero),
        after.first().unwrap_or(&zero),
    );
    let busy_of = |idle: f64, iowait: f64, total_zero: bool| {
        if total_zero {
            0.0
        } else {
            (100.0 - idle - iowait).clamp(0.0, 100.0)
        }
    };
    let all_zero =
        after.first().unwrap_or(&zero).total() == before.first().unwrap_or(&zero).total();
    let per_core = before
        .iter()
        .zip(after)
        .skip(1)
        .map(|(b, a)| {
            let (_, _, io, _, idle) = share(b, a);
            busy_of(idle, io, a.total() == b.total())
        })
        .collect();
    CpuUsage {
        busy: busy_of(idle, iowait, all_zero),
        user,
        system,
        iowait,
        steal,
        per_core,
        interval_ms: interval.as_millis() as u32,
    }
}

/// Pseudo and network filesystems: no data of their own, or a server that
/// could hang `statvfs`.
const SKIPPED_FS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "nsfs",
    "efivarfs",
    "selinuxfs",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "9p",
    "afs",
    "sshfs",
    "fuse.sshfs",
    "davfs",
    "fuse.s3fs",
    "squashfs",
    "ramfs",
];

fn filesystems() -> Result<Vec<Filesystem>, HostError> {
    let mounts = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map_err(|e| failed("/proc/self/mountinfo", e))?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for m in mounts {
        if out.len() >= MAX_FILESYSTEMS {
            break;
        }
        if SKIPPED_FS.contains(&m.fs_type.as_str()) || m.fs_type.starts_with("fuse") {
            continue;
        }
        // A mount point shadowed by a later mount reports the later one.
        if !seen.insert(m.mount_point.clone()) {
            continue;
        }
        let Ok(s) = rustix::fs::statvfs(&m.mount_point) else {
            continue;
        };
        if s.f_blocks == 0 {
            continue;
        }
        out.push(Filesystem {
            mount_point: cut(&m.mount_point.to_string_lossy()),
            fs_type: cut(&m.fs_type),
            total_bytes: s.f_blocks * s.f_frsize,
            free_bytes: s.f_bfree * s.f_frsize,
            available_bytes: s.f_bavail * s.f_frsize,
            total_inodes: s.f_files,
            free_inodes: s.f_ffree,
        });
    }
    Ok(out)
}

/// Every process whose kernel name passes `named`, described up to
/// [`MAX_PROCESSES`] (by pid), and how many matched in all. Only a named
/// process's command line is read (to filter by `cmdline`, and to hand
/// over).
fn scan(
    named: impl Fn(&str) -> bool,
    cmdline: Option<&str>,
) -> Result<(u32, Vec<ProcessInfo>), HostError> {
    let tps = procfs::ticks_per_second() as f64;
    let page = procfs::page_size();
    let uptime = procfs::Uptime::current()
        .map_err(|e| failed("/proc/uptime", e))?
        .uptime;
    let all = procfs::process::all_processes().map_err(|e| failed("/proc", e))?;
    let mut matched = 0u32;
    let mut out = Vec::new();
    for p in all {
        // Processes come and go during the scan; a vanished one is skipped.
        let Ok(p) = p else { continue };
        let Ok(stat) = p.stat() else { continue };
        if !named(&stat.comm) {
            continue;
        }
        let argv = p.cmdline().unwrap_or_default();
        if let Some(want) = cmdline
            && !argv.join(" ").contains(want)
        {
            continue;
        }
        matched = matched.saturating_add(1);
        if out.len() >= MAX_PROCESSES {
            continue;
        }
        let started = stat.starttime as f64 / tps;
        out.push(ProcessInfo {
            pid: stat.pid as u32,
            name: cut(&stat.comm),
            state: stat.state.to_string(),
            rss_bytes: stat.rss * page,
            cpu_seconds: (stat.utime + stat.stime) as f64 / tps,
            cpu_percent: None,
            age_ms: ((uptime - started).max(0.0) * 1000.0) as u64,
            open_fds: count_fds(&Path::new("/proc").join(stat.pid.to_string()).join("fd")),
            argv: argv.iter().take(MAX_ARGS).map(|a| cut(a)).collect(),
        });
    }
    out.sort_by_key(|p| p.pid);
    Ok((matched, out))
}

/// CPU seconds of each pid now (None: it exited).
fn cpu_seconds_of(pids: &[(u32, f64)]) -> Vec<Option<f64>> {
    let tps = procfs::ticks_per_second() as f64;
    pids.iter()
        .map(|(pid, _)| {
            let s = procfs::process::Process::new(*pid as i32)
                .and_then(|p| p.stat())
                .ok()?;
            Some((s.utime + s.stime) as f64 / tps)
        })
        .collect()
}

fn count_fds(dir: &Path) -> Option<u32> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut n = 0u32;
    for _ in entries {
        n += 1;
        if n >= MAX_FDS_COUNTED {
            break;
        }
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(g: Option<SystemGrant>) -> SystemCap {
        SystemCap {
            grant: resolve(g.as_ref()).unwrap(),
        }
    }

    fn table(p: &[&str]) -> SystemGrant {
        SystemGrant::Table(SystemTable {
            processes: p.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn the_grant_parses_as_a_bool_or_a_table() {
        #[derive(Deserialize)]
        struct G {
            system: SystemGrant,
        }
        let g: G = toml::from_str("system = true").unwrap();
        assert_eq!(g.system, SystemGrant::On(true));
        let g: G = toml::from_str("system = { processes = [\"nginx\"] }").unwrap();
        assert_eq!(g.system, table(&["nginx"]));
        let e = toml::from_str::<G>("system = { process = [\"nginx\"] }")
            .err()
            .unwrap();
        assert!(e.to_string().contains("unknown field `process`"), "{e}");
        assert!(toml::from_str::<G>("system = 1").is_err());
        assert!(resolve(Some(&table(&["["]))).is_err());
        assert!(resolve(Some(&SystemGrant::On(false))).unwrap().is_none());
    }

    #[test]
    fn needs_are_matched_against_the_grant() {
        let none = resolve(None).unwrap();
        assert!(missing(false, &[], none.as_deref()).is_none());
        assert!(
            missing(true, &[], none.as_deref())
                .unwrap()
                .contains("system = true")
        );
        let on = resolve(Some(&SystemGrant::On(true))).unwrap();
        assert!(missing(true, &[], on.as_deref()).is_none());
        assert!(missing(true, &["*".into()], on.as_deref()).is_some());
        let t = resolve(Some(&table(&["nginx", "postgres*"]))).unwrap();
        assert!(missing(true, &["nginx".into(), "postgres".into()], t.as_deref()).is_none());
        assert!(missing(false, &["*".into()], t.as_deref()).is_none());
        assert_eq!(
            missing(false, &["sshd".into()], t.as_deref()).unwrap(),
            "process `sshd` (`system = { processes = [\"sshd\"] }`)"
        );
    }

    #[test]
    fn cpu_shares_come_from_tick_deltas() {
        let t = |user, system, idle, iowait| Ticks {
            user,
            system,
            idle,
            iowait,
            ..Default::default()
        };
        // All cores, then two cores: one busy, one idle.
        let before = [t(100, 0, 100, 0), t(50, 0, 50, 0), t(50, 0, 50, 0)];
        let after = [t(200, 0, 200, 0), t(150, 0, 50, 0), t(50, 0, 150, 0)];
        let u = cpu_usage(&before, &after, Duration::from_secs(1));
        assert_eq!(u.busy, 50.0);
        assert_eq!(u.user, 50.0);
        assert_eq!(u.per_core, vec![100.0, 0.0]);
        assert_eq!(u.interval_ms, 1000);
        // I/O wait is not busy; no ticks at all is 0, not NaN.
        let u = cpu_usage(
            &[t(0, 0, 0, 0)],
            &[t(0, 10, 40, 50)],
            Duration::from_secs(1),
        );
        assert_eq!((u.busy, u.iowait), (10.0, 50.0));
        let u = cpu_usage(&before, &before, Duration::from_secs(1));
        assert_eq!(u.busy, 0.0);
        assert!(u.per_core.iter().all(|c| *c == 0.0));
    }

    #[test]
    fn strings_are_cut_at_a_char_boundary() {
        let long = "é".repeat(MAX_TEXT);
        let c = cut(&long);
        assert!(c.len() <= MAX_TEXT && c.chars().all(|ch| ch == 'é'));
        assert_eq!(cut("nginx"), "nginx");
    }

    #[tokio::test]
    async fn nothing_without_the_grant() {
        let c = cap(None);
        assert!(matches!(c.load(), Err(HostError::Denied(_))));
        assert!(matches!(c.memory(), Err(HostError::Denied(_))));
        assert!(matches!(c.cpu(100).await, Err(HostError::Denied(_))));
        let q = ProcessQuery {
            name: "init".into(),
            ..Default::default()
        };
        assert!(matches!(c.processes(&q).await, Err(HostError::Denied(_))));
        // `true` alone names no process.
        let c = cap(Some(SystemGrant::On(true)));
        assert!(c.load().is_ok());
        assert!(matches!(c.processes(&q).await, Err(HostError::Denied(_))));
    }

    #[tokio::test]
    async fn machine_facts_are_read() {
        let c = cap(Some(SystemGrant::On(true)));
        let m = c.memory().unwrap();
        assert!(m.total_bytes > 0 && m.available_bytes <= m.total_bytes);
        let l = c.load().unwrap();
        assert!(l.cores >= 1 && l.threads >= 1);
        let u = c.cpu(100).await.unwrap();
        assert!((0.0..=100.0).contains(&u.busy), "{u:?}");
        assert!(!u.per_core.is_empty());
        let fs = c.filesystems().await.unwrap();
        assert!(
            fs.iter().all(|f| f.total_bytes > 0 && f.fs_type != "proc"),
            "{fs:?}"
        );
        let nics = c.interfaces().unwrap();
        assert!(nics.iter().any(|n| n.name == "lo"), "{nics:?}");
    }
}
