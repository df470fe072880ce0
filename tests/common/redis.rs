//! Redis for tests: a key prefix of its own on the machine's server at
//! 127.0.0.1:6379, and disposable servers for tests that stop one. Both
//! clean up on drop, even after a panic: the prefix's keys are unlinked
//! (nothing else is touched, never FLUSH*), the server is killed.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The machine's server.
pub const URL: &str = "redis://127.0.0.1:6379/0";

/// Why Redis tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        None
    } else {
        Some("skipped: redis-server is not installed".into())
    }
}

/// A connection to `url`, panicking with the cause.
pub fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Runs one command, panicking with it and the cause.
pub fn run<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(con)
        .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
}

/// The keys under `prefix`, sorted (SCAN, so it is safe on a shared server).
pub fn keys(con: &mut redis::Connection, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(format!("{prefix}*"))
        .arg("COUNT")
        .arg(1000)
        .clone()
        .iter::<String>(con)
        .unwrap_or_else(|e| panic!("SCAN {prefix}*: {e}"))
        .filter_map(Result::ok)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A key prefix unique to this process and call, e.g.
/// `mend-test-1234-0:`, on the server at `url`. Its keys are unlinked on
/// drop.
pub struct Prefix {
    pub prefix: String,
    pub url: String,
    con: redis::Connection,
}

impl Prefix {
    pub fn new(url: &str) -> Prefix {
        static N: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "mend-test-{}-{}:",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Prefix {
            prefix,
            url: url.to_string(),
            con: connect(url),
        }
    }

    /// On the machine's server.
    pub fn shared() -> Prefix {
        Prefix::new(URL)
    }

    /// `prefix` + `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// SET `prefix+name` to `value`, with a TTL in seconds or none.
    pub fn set(&mut self, name: &str, value: &str, ttl: Option<u64>) {
        let key = self.key(name);
        match ttl {
            Some(s) => run::<()>(&mut self.con, &["SET", &key, value, "EX", &s.to_string()]),
            None => run::<()>(&mut self.con, &["SET", &key, value]),
        }
    }

    /// The names (without the prefix) of the keys under the prefix, sorted.
    pub fn names(&mut self) -> Vec<String> {
        keys(&mut self.con, &self.prefix)
            .into_iter()
            .map(|k| k[self.prefix.len()..].to_string())
            .collect()
    }

    pub fn con(&mut self) -> &mut redis::Connection {
        &mut self.con
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        // Only this prefix's keys; a fresh connection in case the test
        // broke this one.
        let Ok(mut con) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection())
        else {
            return;
        };
        for k in keys(&mut con, &self.prefix) {
            let _ = redis::cmd("UNLINK").arg(&k).query::<i64>(&mut con);
        }
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it
/// right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

/// A `redis-server` of the test's own on a free port, without persistence,
/// killed on drop.
pub struct Disposable {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl Disposable {
    pub fn start() -> Disposable {
        Disposable::start_with(&[])
    }

    /// With extra server options, e.g. `["--maxmemory", "32mb"]`.
    pub fn start_with(args: &[&str]) -> Disposable {
        let mut d = Disposable {
            port: free_port(),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        d.restart();
        d
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on the same port and waits until it
    /// answers PING (up to 30 s).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the disposable server is running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let up = redis::Client::open(self.url().as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if up.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "redis-server on port {} did not answer within 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown) and waits for
    /// it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Disposable {
    fn drop(&mut self) {
        self.kill();
    }
}
