//! PostgreSQL for tests: a scratch database (and scratch roles) on the
//! machine's server at 127.0.0.1:5432, and disposable servers for tests
//! that stop one. Everything is removed on drop, even after a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where Debian puts the server binaries.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The machine's server (trust auth, superuser `postgres`).
pub const HOST: &str = "127.0.0.1";
pub const PORT: u16 = 5432;

/// Path to a server binary (`initdb`, `pg_ctl`...).
pub fn bin(name: &str) -> PathBuf {
    Path::new(BIN).join(name)
}

/// Why PostgreSQL tests cannot run here, if they cannot: `initdb` is
/// absent.
pub fn unavailable() -> Option<String> {
    if bin("initdb").exists() {
        None
    } else {
        Some(format!(
            "skipped: PostgreSQL server binaries not found ({} is absent)",
            bin("initdb").display()
        ))
    }
}

/// Prints why the test is skipped and returns true, when it must be.
pub fn skip() -> bool {
    match unavailable() {
        Some(why) => {
            eprintln!("{why}");
            true
        }
        None => false,
    }
}

/// A name unique to this process and call, safe as an SQL identifier.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `sql` with psql as `postgres` on `port`, database `db`; panics with
/// psql's stderr if it fails.
pub fn psql(port: u16, db: &str, sql: &str) -> String {
    try_psql(port, db, sql).unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
}

pub fn try_psql(port: u16, db: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args([
            "-h",
            HOST,
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .args(["-c", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// A database of its own on the machine's server, dropped (with its
/// sessions) on drop.
pub struct ScratchDb {
    pub name: String,
}

impl ScratchDb {
    pub fn new() -> ScratchDb {
        let name = unique("mend_test");
        psql(PORT, "postgres", &format!("CREATE DATABASE {name}"));
        ScratchDb { name }
    }

    /// A libpq keyword/value string for mend's `[connections]`.
    pub fn url(&self) -> String {
        format!("host={HOST} port={PORT} user=postgres dbname={}", self.name)
    }

    /// Connection settings for a test's own client.
    pub fn config(&self, user: &str, application_name: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(HOST)
            .port(PORT)
            .user(user)
            .dbname(&self.name)
            .application_name(application_name)
            .connect_timeout(Duration::from_secs(10));
        c
    }

    pub fn psql(&self, sql: &str) -> String {
        psql(PORT, &self.name, sql)
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let r = try_psql(
            PORT,
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        if let Err(e) = r {
            eprintln!("dropping scratch database {}: {e}", self.name);
        }
    }
}

/// A login role of its own on the machine's server, dropped on drop (after
/// its sessions are terminated).
pub struct ScratchRole {
    pub name: String,
}

impl ScratchRole {
    pub fn new() -> ScratchRole {
        let name = unique("mend_test_role");
        psql(PORT, "postgres", &format!("CREATE ROLE {name} LOGIN"));
        ScratchRole { name }
    }
}

impl Drop for ScratchRole {
    fn drop(&mut self) {
        let sql = format!(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = '{0}';
             DROP ROLE IF EXISTS {0}",
            self.name
        );
        if let Err(e) = try_psql(PORT, "postgres", &sql) {
            eprintln!("dropping scratch role {}: {e}", self.name);
        }
    }
}

/// Opens a session as `config` says and leaves it idle inside a
/// transaction. The session lives as long as the returned client (or
/// until the server terminates it).
pub async fn leak_idle_in_transaction(
    config: &tokio_postgres::Config,
) -> (tokio_postgres::Client, tokio::task::JoinHandle<()>) {
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connecting a leaking session");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    client
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect("opening a transaction");
    (client, task)
}

/// Pids of sessions to `db` with `application_name`, by user.
pub fn sessions(port: u16, db: &str, application_name: &str) -> Vec<(i64, String, String)> {
    psql(
        port,
        "postgres",
        &format!(
            "SELECT pid, usename, state FROM pg_stat_activity \
             WHERE datname = '{db}' AND application_name = '{application_name}' ORDER BY pid"
        ),
    )
    .lines()
    .filter(|l| !l.is_empty())
    .map(|l| {
        let mut p = l.split('|');
        (
            p.next().unwrap().parse().unwrap(),
            p.next().unwrap().to_string(),
            p.next().unwrap_or("").to_string(),
        )
    })
    .collect()
}

/// A free TCP port on 127.0.0.1 (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((HOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A disposable server of its own, initialised in a temporary directory and
/// run as the `postgres` OS user on a free port. Dropping it stops it
/// (immediate shutdown, then SIGKILL if needed) and removes its files.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Server {
    /// `initdb` and start. Panics with the server's log if it fails.
    pub fn start() -> Server {
        Server::start_with("")
    }

    /// [`Server::start`] with extra `postgresql.conf` lines (they win over
    /// the defaults above them, e.g. `max_connections = 5`).
    pub fn start_with(settings: &str) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("mend-test-pg-")
            .tempdir()
            .unwrap();
        run_ok(
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path()),
        );
        let server = Server {
            dir,
            port: free_port(),
        };
        run_ok(&mut as_postgres(&[
            bin("initdb").to_str().unwrap(),
            "-D",
            server.data().to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--no-instructions",
        ]));
        // Everything `pg_ctl start` needs is in the config file, so a plain
        // `pg_ctl -D DATA start` (what an operator's command runs) brings
        // it back on the same port.
        let conf = format!(
            "\nport = {}\nlisten_addresses = '{HOST}'\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 20\n{settings}\n",
            server.port,
            server.dir.path().display()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(server.data().join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
        server.pg_ctl("start");
        server
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn url(&self) -> String {
        format!(
            "host={HOST} port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// The argv that starts this server again, for a `[commands]` entry.
    pub fn start_argv(&self) -> Vec<String> {
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            bin("pg_ctl").to_str().unwrap(),
            "-D",
            self.data().to_str().unwrap(),
            "-l",
            self.log().to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "start",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `pg_ctl start` or `pg_ctl stop` (fast), waiting for it.
    pub fn pg_ctl(&self, what: &str) {
        let mut args = vec![
            bin("pg_ctl").to_str().unwrap().to_string(),
            "-D".into(),
            self.data().to_str().unwrap().into(),
            "-l".into(),
            self.log().to_str().unwrap().into(),
            "-w".into(),
            "-t".into(),
            "60".into(),
        ];
        if what == "stop" {
            args.extend(["-m".into(), "fast".into()]);
        }
        args.push(what.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = as_postgres(&args).output().unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {what}: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    /// Whether it accepts connections now.
    pub fn is_up(&self) -> bool {
        try_psql(self.port, "postgres", "SELECT 1").is_ok()
    }

    /// Waits until it accepts connections (or `limit` passes).
    pub fn wait_up(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.is_up() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.postmaster_pid();
        let stopped = as_postgres(&[
            bin("pg_ctl").to_str().unwrap(),
            "-D",
            self.data().to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "-t",
            "20",
            "stop",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
        // Not running, or would not stop: make sure.
        // Only a postmaster: the pid file may be stale.
        let postmaster = pid.filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "postgres")
        });
        if !stopped && let Some(pid) = postmaster {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn as_postgres(argv: &[&str]) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).args(argv);
    c.stdin(Stdio::null());
    c
}

fn run_ok(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
