//! The sandbox at the host boundary, through the real binary: what a
//! hostile plugins directory, a file claiming another plugin's name, a
//! tampered compile cache or a plugin's text can do to `mend run`, `mend
//! check-config`, `mend plugin` and the CLI's output (issue 10). Each test
//! samples the child's peak RSS (VmHWM) and descriptors from `/proc`, and
//! every wait is a hang guard, not a timing goal.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::process::wait_for;
use mend_test_artifacts as artifacts;
use serde_json::Value;

/// The most a mend process may hold while facing any attack here.
const RSS_BOUND: u64 = 128 << 20;
/// Past this a sampled child is killed at once, so a regression fails the
/// test instead of taking the shared machine down.
const KILL_AT: u64 = 1 << 30;
/// How long any one command may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(30);
const TOKEN: &str = "t0k3n-for-hostile-tests";

/// A `VmXxx:` line of `/proc/PID/status`, in bytes.
fn vm(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

fn fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// The peaks a sampler saw: RSS high-water mark and open descriptors.
#[derive(Clone, Default)]
struct Peaks {
    hwm: Arc<AtomicU64>,
    fds: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Peaks {
    /// Samples `pid` every 10 ms until told to stop (or it is gone).
    fn watch(pid: u32) -> Peaks {
        let p = Peaks::default();
        let q = p.clone();
        std::thread::spawn(move || {
            while !q.stop.load(Ordering::Relaxed) {
                let Some(hwm) = vm(pid, "VmHWM") else { break };
                q.hwm.fetch_max(hwm, Ordering::Relaxed);
                if let Some(n) = fds(pid) {
                    q.fds.fetch_max(n, Ordering::Relaxed);
                }
                if hwm > KILL_AT {
                    // SAFETY: a plain kill(2) of our own child.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        p
    }

    fn hwm(&self) -> u64 {
        self.hwm.load(Ordering::Relaxed)
    }

    fn fds(&self) -> u64 {
        self.fds.load(Ordering::Relaxed)
    }

    /// Fails unless the child stayed under [`RSS_BOUND`].
    fn assert_bounded(&self, what: &str) {
        let hwm = self.hwm();
        assert!(hwm > 0, "{what}: never sampled");
        assert!(
            hwm < RSS_BOUND,
            "{what}: peak RSS {} (bound {})",
            common::memory::mib(hwm),
            common::memory::mib(RSS_BOUND)
        );
    }
}

/// What a finished command printed, how it ended and what it held.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    raw: Vec<u8>,
    peaks: Peaks,
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `mend ARGS` to its end, sampling it; killed and failed if it runs
/// past [`HANG`].
fn mend(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let out = tempfile::tempdir().unwrap();
    let (o, e) = (out.path().join("out"), out.path().join("err"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mend"));
    cmd.args(args)
        .env("MEND_LOG", "warn")
        .env("MEND_STATE_DIR", out.path().join("state"))
        .env_remove("MEND_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("starting mend");
    let peaks = Peaks::watch(child.id());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`mend {}` did not end within {HANG:?}; stderr: {}",
                args.join(" "),
                std::fs::read_to_string(&e).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    peaks.stop.store(true, Ordering::Relaxed);
    let mut raw = std::fs::read(&o).unwrap();
    let err = std::fs::read(&e).unwrap();
    let ran = Ran {
        code: status.code(),
        stdout: String::from_utf8_lossy(&raw).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        raw: {
            raw.extend_from_slice(&err);
            raw
        },
        peaks,
    };
    assert!(
        ran.peaks.hwm() < KILL_AT,
        "`mend {}` passed {} and was killed",
        args.join(" "),
        common::memory::mib(KILL_AT)
    );
    ran
}

/// A plugins directory, a state directory and a control directory kept
/// apart (a grant over mend's own directories is refused), and a config.
struct Setup {
    ctl: tempfile::TempDir,
    plugins: tempfile::TempDir,
    state: tempfile::TempDir,
    etc: tempfile::TempDir,
    port: u16,
}

impl Setup {
    /// The scripted detector and the fixer in the plugins directory; the
    /// `app` check says "ok".
    fn new() -> Setup {
        let s = Setup {
            ctl: tempfile::tempdir().unwrap(),
            plugins: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
            etc: tempfile::tempdir().unwrap(),
            port: common::service::free_port(),
        };
        for p in [artifacts::SCRIPTED, artifacts::FIXER] {
            std::fs::copy(p, s.plugin_file(p)).unwrap();
        }
        s.set("app", "ok");
        s
    }

    /// Where a built artifact sits in the plugins directory.
    fn plugin_file(&self, artifact: &str) -> PathBuf {
        self.plugins
            .path()
            .join(Path::new(artifact).file_name().unwrap())
    }

    fn set(&self, file: &str, content: &str) {
        std::fs::write(self.ctl.path().join(file), content).unwrap();
    }

    /// A config with the `app` check on the scripted detector, the API on
    /// a loopback port, and `extra` (policies, pins) appended.
    fn config(&self, extra: &str) -> PathBuf {
        let text = format!(
            r#"
[engine]
plugins_dir = "{plugins}"
state_dir = "{state}"
interval = "300ms"

[api]
listen = "127.0.0.1:{port}"
token = "{TOKEN}"

[[check]]
name = "app"
plugin = "fixture-scripted"
jitter = "0s"
grants = {{ dirs = [{{ host = "{ctl}", guest = "/ctl" }}] }}
config = {{ file = "/ctl/app" }}
{extra}
"#,
            plugins = self.plugins.path().display(),
            state = self.state.path().display(),
            ctl = self.ctl.path().display(),
            port = self.port,
        );
        let path = self.etc.path().join("mend.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `mend ARGS --api URL` with the token.
    fn cli(&self, args: &[&str]) -> Ran {
        let mut all = args.to_vec();
        let url = self.url();
        all.extend(["--api", url.as_str()]);
        mend(&all, &[("MEND_API_TOKEN", TOKEN)])
    }

    fn get(&self, path: &str) -> Option<Value> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut resp = agent.get(format!("{}{path}", self.url())).call().ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
    }

    /// When the `app` check last ran (0: never).
    fn last_run(&self) -> u64 {
        self.get("/api/v1/checks/app")
            .and_then(|v| v["last"]["at"].as_u64())
            .unwrap_or(0)
    }

    /// Waits until `app` ran again after now, with this status.
    fn runs_again(&self, status: &str) {
        let t = self.last_run();
        wait_for("the check to run again", HANG, || self.last_run() > t);
        wait_for("the check's status", HANG, || {
            self.get("/api/v1/checks/app")
                .is_some_and(|v| v["status"] == status)
        });
    }

    /// The loaded plugin `name`'s sha256, as the API reports it.
    fn plugin_sha(&self, name: &str) -> Option<String> {
        self.get("/api/v1/plugins")?["plugins"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["sha256"].as_str().map(str::to_string))
    }

    /// Why the last plugin reload was refused (empty: it was not).
    fn refused(&self) -> Vec<String> {
        self.get("/api/v1/plugins")
            .and_then(|v| {
                v["reload"]["refused"].as_array().map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default()
    }
}

/// `mend run` as a child, its log in a file, sampled while it runs.
struct Running {
    child: Child,
    log: PathBuf,
    peaks: Peaks,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(config: &Path) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mend.log");
        let child = Command::new(env!("CARGO_BIN_EXE_mend"))
            .args(["run", "--config"])
            .arg(config)
            .env("MEND_LOG", "info")
            .env_remove("MEND_API_TOKEN")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting mend run");
        let peaks = Peaks::watch(child.id());
        Running {
            child,
            log,
            peaks,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn raw_log(&self) -> Vec<u8> {
        std::fs::read(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, what: &str, needle: &str) {
        wait_for(what, HANG, || self.log().contains(needle));
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then a clean exit within 20 s; returns the log.
    fn stop(mut self) -> String {
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "mend exited {status}: {}", self.log());
                return self.log();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "mend did not stop within 20 s of SIGTERM: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for mend to exit on its own; its exit code and log.
    fn exit(mut self) -> (Option<i32>, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.log());
            }
            assert!(start.elapsed() < HANG, "mend did not exit: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// A FIFO `x.wasm` and a symlink `y.wasm -> /dev/zero` in `dir`.
fn plant_non_files(dir: &Path) -> (PathBuf, PathBuf) {
    let fifo = dir.join("x.wasm");
    mkfifo(&fifo);
    let zero = dir.join("y.wasm");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    (fifo, zero)
}

/// A component as another build of it: a custom section appended (another
/// sha256, the same behaviour and name).
fn rebuilt(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"mend-test-build";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section
    out.push(payload.len() as u8); // LEB128, < 128
    out.extend_from_slice(&payload);
    out
}

/// The same component claiming another name in `describe()`: every
/// occurrence of `from` replaced by `to` (of the same length).
fn renamed(wasm: &[u8], from: &str, to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let from = from.as_bytes();
    let mut out = wasm.to_vec();
    let mut found = 0;
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            found += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(found > 0, "the name is not in the component");
    out
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// No raw control byte but newline (no ESC, no CR, no BEL...).
fn assert_printable(what: &str, bytes: &[u8]) {
    if let Some(at) = bytes
        .iter()
        .position(|b| (*b < 0x20 && *b != b'\n') || *b == 0x7f)
    {
        let from = at.saturating_sub(80);
        panic!(
            "{what}: raw control byte {:#04x} at {at}: {:?}",
            bytes[at],
            String::from_utf8_lossy(&bytes[from..(at + 40).min(bytes.len())])
        );
    }
}

/// No line of `text` begins with what a forger put after its newline.
fn assert_no_forged_line(what: &str, text: &str, forged: &str) {
    for line in text.lines() {
        assert!(
            !line.trim_start().starts_with(forged),
            "{what}: a forged line: {line:?}\n{text}"
        );
    }
}

// ---------------------------------------------------------------------
// 1. Entries of the plugins directory that are not regular files.

#[test]
fn mend_run_skips_a_fifo_and_a_dev_zero_symlink_names_them_and_stops_on_sigterm() {
    let s = Setup::new();
    let (fifo, zero) = plant_non_files(s.plugins.path());
    let run = Running::start(&s.config(""));
    // It starts and serves: the check runs on the real plugin.
    wait_for("the check to run", HANG, || {
        s.get("/api/v1/checks/app")
            .is_some_and(|v| v["status"] == "ok")
    });
    run.wait_log("the FIFO to be named", "x.wasm");
    let log = run.log();
    let line = |file: &Path| {
        log.lines()
            .find(|l| l.contains(&*file.display().to_string()))
            .unwrap_or_else(|| panic!("{} is not named in the log:\n{log}", file.display()))
            .to_string()
    };
    assert!(line(&fifo).contains("a FIFO"), "{log}");
    assert!(line(&zero).contains("a character device"), "{log}");
    // The hot-reload watcher reads the directory too: a new build of the
    // real plugin is taken, past both entries.
    let real = s.plugin_file(artifacts::SCRIPTED);
    let before = s.plugin_sha("fixture-scripted").unwrap();
    let tmp = s.plugins.path().join("incoming.tmp");
    std::fs::write(&tmp, rebuilt(&std::fs::read(&real).unwrap(), "v2")).unwrap();
    std::fs::rename(&tmp, &real).unwrap();
    wait_for("the new build to load", HANG, || {
        s.plugin_sha("fixture-scripted")
            .is_some_and(|sha| sha != before)
    });
    s.runs_again("ok");
    let now = fds(run.pid()).unwrap();
    let most = run.peaks.fds();
    assert!(most < 256, "{most} descriptors held at most ({now} now)");
    run.peaks.assert_bounded("mend run");
    let peak = run.peaks.hwm();
    let log = run.stop();
    assert!(log.contains("stopping"), "{log}");
    eprintln!(
        "mend run with a FIFO and /dev/zero in plugins_dir: peak RSS {}, at most {most} fds",
        common::memory::mib(peak)
    );
}

#[test]
fn check_config_and_the_plugin_commands_name_a_fifo_or_dev_zero_and_end() {
    let s = Setup::new();
    let (fifo, zero) = plant_non_files(s.plugins.path());
    let config = s.config("");

    // Nothing uses them: check-config passes with a warning naming each.
    let r = mend(&["check-config", &config.display().to_string()], &[]);
    assert_eq!(r.code, Some(0), "{r:?}");
    for (file, kind) in [(&fifo, "a FIFO"), (&zero, "a character device")] {
        let warned = r
            .stdout
            .lines()
            .find(|l| l.starts_with("warning:") && l.contains(&*file.display().to_string()))
            .unwrap_or_else(|| panic!("{} not named: {r:?}", file.display()));
        assert!(warned.contains(kind), "{r:?}");
    }
    r.peaks.assert_bounded("check-config");

    // Asked for by a check: refused, the files named.
    let bad = s.config("[[check]]\nname = \"bad\"\nplugin = \"x\"\n");
    let r = mend(&["check-config", &bad.display().to_string()], &[]);
    assert_eq!(r.code, Some(78), "{r:?}");
    assert!(
        r.stdout.contains("no plugin named `x`")
            && r.stdout.contains(&*fifo.display().to_string())
            && r.stdout.contains(&*zero.display().to_string()),
        "{r:?}"
    );
    r.peaks.assert_bounded("check-config (refused)");

    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().display().to_string();
    for (file, kind) in [(&fifo, "a FIFO"), (&zero, "a character device")] {
        let f = file.display().to_string();
        for args in [
            vec![
                "plugin",
                "inspect",
                f.as_str(),
                "--state-dir",
                state_arg.as_str(),
            ],
            vec![
                "plugin",
                "call",
                f.as_str(),
                "detect",
                "--state-dir",
                state_arg.as_str(),
            ],
        ] {
            let r = mend(&args, &[]);
            assert_ne!(r.code, Some(0), "{r:?}");
            assert!(r.stderr.contains(&f) && r.stderr.contains(kind), "{r:?}");
            assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {r:?}");
            r.peaks.assert_bounded(&args.join(" "));
        }
    }
}

// ---------------------------------------------------------------------
// 2. Plugin identity.

#[test]
fn names_that_are_not_identifiers_are_refused_at_load_and_logged_escaped() {
    let s = Setup::new();
    let trivial = std::fs::read(artifacts::TRIVIAL).unwrap();
    let bad: [(&str, &[u8]); 4] = [
        ("dots", b"../../x/trivial"),
        ("upper", b"Fixture-Trivial"),
        ("esc", b"fix\x1b[31mtrivial"),
        ("newline", b"fixture\ntrivial"),
    ];
    for (file, name) in bad {
        std::fs::write(
            s.plugins.path().join(format!("bad-{file}.wasm")),
            renamed(&trivial, "fixture-trivial", name),
        )
        .unwrap();
    }
    let r = mend(&["check-config", &s.config("").display().to_string()], &[]);
    assert_eq!(r.code, Some(0), "{r:?}");
    for (file, _) in bad {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.contains(&format!("bad-{file}.wasm"))
                    && l.contains("is not a plugin name")),
            "{file}: {r:?}"
        );
    }
    assert_printable("check-config", &r.raw);
    assert_no_forged_line("check-config", &r.stdout, "trivial");

    let run = Running::start(&s.config(""));
    wait_for("the check to run", HANG, || s.last_run() > 0);
    for (file, _) in bad {
        run.wait_log("the bad name to be refused", &format!("bad-{file}.wasm"));
    }
    let log = run.log();
    for (file, _) in bad {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("bad-{file}.wasm"))
                    && l.contains("is not a plugin name")),
            "{file}: {log}"
        );
    }
    assert_printable("mend run's log", &run.raw_log());
    assert_no_forged_line("mend run's log", &log, "trivial");
    let plugins = s.get("/api/v1/plugins").unwrap();
    // Loaded (the config uses it) or listed unused: the real ones only.
    let names: Vec<&str> = ["plugins", "unused"]
        .iter()
        .flat_map(|k| plugins[*k].as_array().unwrap())
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "only the two real plugins: {plugins}");
    run.stop();

    // The CLI says the same of one file, on one escaped line.
    let f = s.plugins.path().join("bad-esc.wasm").display().to_string();
    let r = mend(&["plugin", "inspect", &f], &[]);
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("is not a plugin name"), "{r:?}");
    assert_printable("plugin inspect", &r.raw);
}

#[test]
fn two_files_claiming_one_name_are_refused_naming_both_unless_a_pin_picks_one() {
    let s = Setup::new();
    let original = std::fs::read(artifacts::SCRIPTED).unwrap();
    let real = s.plugin_file(artifacts::SCRIPTED);
    let impostor = s.plugins.path().join("aa-impostor.wasm");
    let copy = rebuilt(&original, "impostor");
    std::fs::write(&impostor, &copy).unwrap();

    let (code, log) = Running::start(&s.config("")).exit();
    assert_eq!(code, Some(78), "{log}");
    assert!(
        log.contains(&*real.display().to_string())
            && log.contains(&*impostor.display().to_string())
            && log.contains("2 files claim the plugin name `fixture-scripted`"),
        "{log}"
    );
    let r = mend(&["check-config", &s.config("").display().to_string()], &[]);
    assert_eq!(r.code, Some(78), "{r:?}");
    assert!(r.stdout.contains(&*impostor.display().to_string()), "{r:?}");

    // A pin names the file that may carry the name: it runs, the real one.
    let pin = |sha: &str| format!("[plugins.fixture-scripted]\nsha256 = \"{sha}\"\n");
    let run = Running::start(&s.config(&pin(&sha256(&original))));
    wait_for("the check to run", HANG, || s.last_run() > 0);
    assert_eq!(s.plugin_sha("fixture-scripted"), Some(sha256(&original)));
    run.stop();
}

#[test]
fn a_pin_that_does_not_match_is_refused_and_one_that_matches_runs() {
    let s = Setup::new();
    let original = std::fs::read(artifacts::SCRIPTED).unwrap();
    let pin = |sha: &str| format!("[plugins.fixture-scripted]\nsha256 = \"{sha}\"\n");
    let wrong = sha256(b"another file");
    let (code, log) = Running::start(&s.config(&pin(&wrong))).exit();
    assert_eq!(code, Some(78), "{log}");
    assert!(
        log.contains(&format!("[plugins.fixture-scripted] pins {wrong}"))
            && log.contains(&sha256(&original)),
        "{log}"
    );
    let r = mend(
        &[
            "check-config",
            &s.config(&pin(&wrong)).display().to_string(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(78), "{r:?}");

    // `mend plugin inspect` prints the line to paste, and it works.
    let inspect = mend(
        &[
            "plugin",
            "inspect",
            &s.plugin_file(artifacts::SCRIPTED).display().to_string(),
        ],
        &[],
    );
    let line = inspect
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("sha256 = "))
        .unwrap_or_else(|| panic!("{inspect:?}"))
        .trim()
        .to_string();
    let config = s.config(&format!("[plugins.fixture-scripted]\n{line}\n"));
    let run = Running::start(&config);
    wait_for("the check to run", HANG, || s.last_run() > 0);
    run.stop();
}

#[test]
fn hot_reload_never_moves_a_name_to_another_file_or_past_its_pin() {
    let s = Setup::new();
    let original = std::fs::read(artifacts::SCRIPTED).unwrap();
    let real = s.plugin_file(artifacts::SCRIPTED);
    let pinned = sha256(&original);
    let run = Running::start(&s.config(&format!(
        "[plugins.fixture-scripted]\nsha256 = \"{pinned}\"\n"
    )));
    wait_for("the check to run", HANG, || s.last_run() > 0);

    // The pinned file replaced by another build: fails its pin, refused;
    // the loaded code keeps serving.
    let tmp = s.plugins.path().join("incoming.tmp");
    std::fs::write(&tmp, rebuilt(&original, "v2")).unwrap();
    std::fs::rename(&tmp, &real).unwrap();
    wait_for("the reload to be refused", HANG, || {
        s.refused()
            .iter()
            .any(|r| r.contains(&format!("pins {pinned}")))
    });
    run.wait_log("the refusal to be logged", "plugin reload refused");
    assert_eq!(s.plugin_sha("fixture-scripted"), Some(pinned.clone()));
    s.runs_again("ok");

    // Back to the pinned bytes, then another file with the same name and
    // other bytes: the pin keeps the real one loaded.
    std::fs::write(&real, &original).unwrap();
    wait_for("the pinned file to load again", HANG, || {
        s.refused().is_empty()
    });
    let impostor = s.plugins.path().join("aa-impostor.wasm");
    std::fs::write(&impostor, rebuilt(&original, "impostor")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.plugin_sha("fixture-scripted"), Some(pinned.clone()));
    s.runs_again("ok");
    run.peaks.assert_bounded("mend run (pinned)");
    run.stop();

    // Without a pin: another file claiming the name is refused, both
    // while the real file is there and after it goes.
    std::fs::remove_file(&impostor).unwrap();
    let s = Setup::new();
    let real = s.plugin_file(artifacts::SCRIPTED);
    let run = Running::start(&s.config(""));
    wait_for("the check to run", HANG, || s.last_run() > 0);
    let impostor = s.plugins.path().join("aa-impostor.wasm");
    std::fs::write(&impostor, rebuilt(&original, "impostor")).unwrap();
    wait_for("the second claim to be refused", HANG, || {
        s.refused().iter().any(|r| {
            r.contains("2 files claim the plugin name `fixture-scripted`")
                && r.contains(&*impostor.display().to_string())
                && r.contains(&*real.display().to_string())
        })
    });
    s.runs_again("ok");
    std::fs::remove_file(&real).unwrap();
    wait_for("the takeover to be refused", HANG, || {
        s.refused()
            .iter()
            .any(|r| r.contains("claims plugin `fixture-scripted`, which is loaded from"))
    });
    run.wait_log(
        "the takeover to be logged",
        "claims plugin `fixture-scripted`, which is loaded from",
    );
    assert_eq!(s.plugin_sha("fixture-scripted"), Some(pinned));
    s.runs_again("ok");
    run.stop();
}

// ---------------------------------------------------------------------
// 3. The compile cache.

/// The cache entry for the wasm file at `artifact`, under `state`.
fn cache_entry(state: &Path, artifact: &str) -> PathBuf {
    let sha = sha256(&std::fs::read(artifact).unwrap());
    let cache = state.join("cache");
    let compat = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .expect("a compile cache directory")
        .path();
    compat.join(format!("{sha}.cwasm"))
}

#[test]
fn a_tampered_or_planted_cache_entry_is_recompiled_never_run() {
    let state = tempfile::tempdir().unwrap();
    let st = state.path().display().to_string();
    let call = |artifact: &str, config: &str| {
        mend(
            &[
                "plugin",
                "call",
                artifact,
                "detect",
                "--config",
                config,
                "--state-dir",
                &st,
            ],
            &[],
        )
    };
    let recompiled = "compile cache entry failed authentication; recompiling";
    let trivial = |r: &Ran| {
        let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{r:?}"));
        assert_eq!(v["findings"][0]["code"], "trivial.ok", "{r:?}");
    };

    // First calls compile and store both entries.
    let r = call(artifacts::TRIVIAL, "{}");
    trivial(&r);
    assert!(!r.stderr.contains(recompiled), "{r:?}");
    let r = call(artifacts::HOSTILE, r#"{"mode": "clock"}"#);
    assert_eq!(r.code, Some(0), "{r:?}");
    let entry = cache_entry(state.path(), artifacts::TRIVIAL);
    let hostile = cache_entry(state.path(), artifacts::HOSTILE);
    assert!(entry.exists() && hostile.exists());

    // Bytes flipped in the machine code and in the tag.
    for at in [0.5, 1.0] {
        let mut bytes = std::fs::read(&entry).unwrap();
        let i = ((bytes.len() as f64 * at) as usize).min(bytes.len() - 1);
        bytes[i] ^= 0x5a;
        std::fs::write(&entry, &bytes).unwrap();
        let r = call(artifacts::TRIVIAL, "{}");
        trivial(&r);
        assert!(r.stderr.contains(recompiled), "{r:?}");
        // Recompiled and stored again: the next load is from the cache.
        let r = call(artifacts::TRIVIAL, "{}");
        trivial(&r);
        assert!(!r.stderr.contains(recompiled), "{r:?}");
    }

    // Another module's valid entry planted under this one's key: it would
    // answer a bad config (no `mode`), the real one answers trivial.ok.
    std::fs::copy(&hostile, &entry).unwrap();
    let r = call(artifacts::TRIVIAL, "{}");
    trivial(&r);
    assert!(r.stderr.contains(recompiled), "{r:?}");
    r.peaks.assert_bounded("plugin call");

    // Not a file at all: a FIFO (would block a read) and a symlink to
    // /dev/zero (would never end) in the entry's place.
    let unreadable = "compile cache entry unreadable; recompiling";
    std::fs::remove_file(&entry).unwrap();
    mkfifo(&entry);
    let r = call(artifacts::TRIVIAL, "{}");
    trivial(&r);
    assert!(r.stderr.contains(unreadable), "{r:?}");
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &entry).unwrap();
    let r = call(artifacts::TRIVIAL, "{}");
    trivial(&r);
    assert!(r.stderr.contains(unreadable), "{r:?}");
    r.peaks
        .assert_bounded("plugin call (cache entry -> /dev/zero)");

    // And the engine: `mend run` on a planted entry runs its own file.
    let s = Setup::new();
    let r = mend(&["check-config", &s.config("").display().to_string()], &[]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let scripted = cache_entry(s.state.path(), artifacts::SCRIPTED);
    let fixer = cache_entry(s.state.path(), artifacts::FIXER);
    std::fs::copy(&fixer, &scripted).unwrap();
    s.set("app", "warn planted.check");
    let run = Running::start(&s.config(""));
    wait_for("the check to run", HANG, || {
        s.get("/api/v1/checks/app")
            .is_some_and(|v| v["last"]["findings"][0]["code"] == "planted.check")
    });
    assert!(run.log().contains(recompiled), "{}", run.log());
    run.stop();
}

// ---------------------------------------------------------------------
// 4. Plugin text reaching an operator.

#[test]
fn plugin_call_output_has_forged_lines_and_escapes_written_out() {
    for (export, mode) in [
        ("detect", "forge-log"),
        ("detect", "forge-stderr"),
        ("remedy", "forge-outcome"),
    ] {
        let state = tempfile::tempdir().unwrap();
        let config = format!(r#"{{"mode": "{mode}"}}"#);
        let r = mend(
            &[
                "plugin",
                "call",
                artifacts::HOSTILE,
                export,
                "--config",
                &config,
                "--state-dir",
                &state.path().display().to_string(),
            ],
            &[("MEND_LOG", "info")],
        );
        assert_printable(mode, &r.raw);
        for forged in ["ERROR mend: forged", "2026-12-01T00:00:00Z", "cleared"] {
            assert_no_forged_line(mode, &r.stdout, forged);
            assert_no_forged_line(mode, &r.stderr, forged);
        }
        match mode {
            "forge-stderr" => {
                assert_ne!(r.code, Some(0), "{r:?}");
                let last = r.stderr.lines().last().unwrap_or_default();
                assert!(
                    last.starts_with("mend: ") && last.contains("\\u{1b}[31mred"),
                    "the trap's error, with stderr escaped: {r:?}"
                );
            }
            _ => {
                assert_eq!(r.code, Some(0), "{r:?}");
                assert!(r.stdout.contains("\\\\u{1b}"), "{r:?}");
            }
        }
    }
}

/// Every string in a JSON value, with where it is.
fn strings<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((at, s)),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                strings(x, format!("{at}[{i}]"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                strings(x, format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn assert_json_printable(what: &str, v: &Value) {
    let mut all = Vec::new();
    strings(v, String::new(), &mut all);
    for (at, s) in all {
        assert!(
            !s.chars().any(char::is_control),
            "{what}{at}: control characters in {s:?}"
        );
    }
}

#[test]
fn status_and_incidents_show_plugin_text_escaped_in_the_cli_and_the_api() {
    let s = Setup::new();
    std::fs::copy(artifacts::HOSTILE, s.plugin_file(artifacts::HOSTILE)).unwrap();
    s.set(
        "app",
        "fail disk.full \x1b[31mred\x1b[0m\n2026-12-01T00:00:00Z ERROR mend: forged\r\x07",
    );
    let config = s.config(
        r#"
[[policy]]
name = "fix-app"
check = "app"
trigger = { consecutive = 1 }
cooldown = "1h"
max_attempts = 1

[[policy.step]]
name = "forge"
action = "fixture-hostile"
settle = "100ms"
config = { mode = "forge-outcome" }
"#,
    );
    let run = Running::start(&config);
    let db = s.state.path().join("mend.db");
    wait_for("an attempt", HANG, || {
        common::process::incidents(&db)
            .first()
            .is_some_and(|i| !i.attempts.is_empty() && i.attempts[0].finished_at.is_some())
    });

    let status = s.cli(&["status"]);
    assert_eq!(status.code, Some(3), "{status:?}");
    assert!(status.stdout.contains("disk.full"), "{status:?}");
    assert!(status.stdout.contains("\\u{1b}[31mred"), "{status:?}");
    let incident = s.cli(&["incident", "1"]);
    assert_eq!(incident.code, Some(0), "{incident:?}");
    assert!(
        incident.stdout.contains("forged message") && incident.stdout.contains("forged step"),
        "{incident:?}"
    );
    let incidents = s.cli(&["incidents"]);
    assert_eq!(incidents.code, Some(0), "{incidents:?}");

    // A pause reason is text from the API too.
    let pause = s.cli(&["pause", "--reason", "swap\n\x1b[2Jforged reason"]);
    assert_eq!(pause.code, Some(0), "{pause:?}");
    let paused = s.cli(&["status"]);
    assert!(
        paused.stdout.contains("PAUSED: swap\\n\\u{1b}[2J"),
        "{paused:?}"
    );

    for (what, r) in [
        ("status", &status),
        ("incident", &incident),
        ("incidents", &incidents),
        ("pause", &pause),
        ("status (paused)", &paused),
    ] {
        assert_printable(what, &r.raw);
        for forged in [
            "2026-12-01T00:00:00Z",
            "ERROR mend: forged",
            "forged",
            "\x1b",
        ] {
            assert_no_forged_line(what, &r.stdout, forged);
        }
    }
    for path in [
        "/api/v1/status",
        "/api/v1/checks/app",
        "/api/v1/incidents/1",
        "/api/v1/incidents",
    ] {
        let v = s.get(path).unwrap_or_else(|| panic!("GET {path}"));
        // The pause reason came from the operator; everything else here is
        // the plugin's.
        if path != "/api/v1/status" {
            assert_json_printable(path, &v);
        }
    }
    let json = s.cli(&["incident", "1", "--json"]);
    assert_printable("incident --json", &json.raw);
    assert_json_printable(
        "incident --json",
        &serde_json::from_str(&json.stdout).unwrap(),
    );
    assert_printable("mend run's log", &run.raw_log());
    assert_no_forged_line("mend run's log", &run.log(), "2026-12-01T00:00:00Z");
    run.stop();
}
