//! The real `mend run` binary as a test's child process, and ways to wait
//! on what it records.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mend::store::{Incident, Store};

/// Polls `f` every 100 ms until it holds; past `limit`, fails naming
/// `what`. A hang guard, not a timing goal.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// The incidents in the store at `db` (none until mend has created it).
pub fn incidents(db: &Path) -> Vec<Incident> {
    if !db.exists() {
        return Vec::new();
    }
    Store::open_read_only(db)
        .and_then(|s| s.incidents(false, 100))
        .unwrap_or_default()
}

/// `mend run --config FILE`, killed on drop.
pub struct MendRun(pub Child);

impl MendRun {
    pub fn start(config: &Path) -> MendRun {
        let child = Command::new(env!("CARGO_BIN_EXE_mend"))
            .args(["run", "--config"])
            .arg(config)
            .env("MEND_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mend run");
        MendRun(child)
    }

    /// Like [`MendRun::start`], with its log (stderr) written to `log`.
    pub fn start_logged(config: &Path, log: &Path) -> MendRun {
        let child = Command::new(env!("CARGO_BIN_EXE_mend"))
            .args(["run", "--config"])
            .arg(config)
            .env("MEND_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("creating the log file"))
            .spawn()
            .expect("starting mend run");
        MendRun(child)
    }

    /// Sends a signal (`HUP`, `TERM`...).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.0.id().to_string()])
            .status();
    }

    /// SIGTERM, then a clean exit within 20 s.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.0.try_wait() {
                assert!(status.success(), "mend exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mend did not stop within 20 s of SIGTERM");
    }
}

impl Drop for MendRun {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
