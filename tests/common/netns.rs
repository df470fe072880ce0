//! A lab of hosts on one machine: network namespaces this test creates,
//! each with a veth into a bridge that lives in a namespace of its own, so
//! every address exists only inside the lab (10.254.N.0/24). Processes
//! run inside with `ip netns exec`. Everything is torn down on drop, even
//! after a panic; a lab left by a killed test run is removed by the next.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the lab cannot be built here, if it cannot.
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok();
    if uid.is_none_or(|o| String::from_utf8_lossy(&o.stdout).trim() != "0") {
        return Some("skipped: network namespaces need root".into());
    }
    for tool in ["ip", "nats-server"] {
        if which(tool).is_none() {
            return Some(format!(
                "skipped: `{tool}` is not installed (scripts/test installs iproute2 and nats-server)"
            ));
        }
    }
    None
}

pub fn skip() -> bool {
    match unavailable() {
        Some(why) => {
            eprintln!("{why}");
            true
        }
        None => false,
    }
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(which(args[0]).unwrap_or_else(|| args[0].into()))
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    run(args).unwrap_or_else(|e| panic!("{e}"));
}

const PREFIX: &str = "mendlab";

/// Removes labs of test processes that are gone.
fn sweep_stale() {
    let Ok(out) = Command::new(which("ip").unwrap())
        .args(["netns", "list"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

/// The lab: a bridge and hosts `h0`, `h1`, ... at 10.254.N.(i+1).
pub struct Lab {
    id: String,
    pub subnet: u8,
    hosts: usize,
    children: Vec<Child>,
    /// nftables is available (else partitions take the link down).
    pub nft: bool,
}

impl Lab {
    pub fn new(hosts: usize) -> Lab {
        sweep_stale();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{PREFIX}-{}-{n}", std::process::id());
        let subnet = ((std::process::id() + n * 7) % 200 + 20) as u8;
        let mut lab = Lab {
            id,
            subnet,
            hosts: 0,
            children: Vec::new(),
            nft: which("nft").is_some(),
        };
        let br = lab.bridge_ns();
        must(&["ip", "netns", "add", &br]);
        must(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &br, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            let ns = lab.ns(i);
            must(&["ip", "netns", "add", &ns]);
            lab.hosts = i + 1;
            let port = format!("p{i}");
            must(&[
                "ip", "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            must(&["ip", "-n", &br, "link", "set", &port, "master", "br0", "up"]);
            let addr = format!("{}/24", lab.addr(i));
            must(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn bridge_ns(&self) -> String {
        format!("{}-br", self.id)
    }

    /// Host `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-h{i}", self.id)
    }

    pub fn addr(&self, i: usize) -> String {
        format!("10.254.{}.{}", self.subnet, i + 1)
    }

    /// A command run inside host `i`.
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut c = Command::new(which("ip").unwrap());
        c.args(["netns", "exec", &self.ns(i)]).arg(program);
        c
    }

    /// Starts a process in host `i`, killed when the lab goes.
    pub fn spawn(&mut self, i: usize, program: &Path, args: &[&str], log: &Path) -> usize {
        let log = std::fs::File::create(log).unwrap();
        let child = self
            .command(i, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} in {}: {e}", program.display(), self.ns(i)));
        self.children.push(child);
        self.children.len() - 1
    }

    pub fn spawn_env(
        &mut self,
        i: usize,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> usize {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut c = self.command(i, program);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} in {}: {e}", program.display(), self.ns(i)));
        self.children.push(child);
        self.children.len() - 1
    }

    /// SIGKILL to process `p` (the index `spawn` returned).
    pub fn kill9(&mut self, p: usize) {
        let c = &mut self.children[p];
        let _ = c.kill();
        let _ = c.wait();
    }

    /// SIGTERM, then waits up to 20 s.
    pub fn stop(&mut self, p: usize) -> bool {
        let c = &mut self.children[p];
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        false
    }

    pub fn alive(&mut self, p: usize) -> bool {
        matches!(self.children[p].try_wait(), Ok(None))
    }

    /// Cuts host `i` off the network: nftables drops everything but
    /// loopback, or (without nft) its link goes down.
    pub fn partition(&self, i: usize) {
        let ns = self.ns(i);
        if self.nft {
            let rules = "table inet mendlab {\n\
                 chain in { type filter hook input priority 0; policy drop; iif lo accept; }\n\
                 chain out { type filter hook output priority 0; policy drop; oif lo accept; }\n\
                 }\n";
            let path = std::env::temp_dir().join(format!("{ns}.nft"));
            std::fs::write(&path, rules).unwrap();
            must(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "nft",
                "-f",
                path.to_str().unwrap(),
            ]);
        } else {
            must(&["ip", "-n", &ns, "link", "set", "eth0", "down"]);
        }
    }

    pub fn heal(&self, i: usize) {
        let ns = self.ns(i);
        if self.nft {
            must(&[
                "ip", "netns", "exec", &ns, "nft", "delete", "table", "inet", "mendlab",
            ]);
        } else {
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 0..self.hosts {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = run(&["ip", "netns", "del", &self.bridge_ns()]);
    }
}
