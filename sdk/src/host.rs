//! Safe wrappers over what the host offers: logging, the clock, persistent
//! state, disk usage and file metadata in bulk, named commands, named PostgreSQL and Redis
//! connections, and machine facts. A refusal is [`crate::Error::Denied`]; a host call that ran
//! out of time is [`crate::Error::TimedOut`], one that hit a host limit
//! [`crate::Error::Limit`]; the rest is [`crate::Error::Failed`].

use crate::bindings::mend::plugin as wit;

/// Structured logging into mend's log, tagged with the plugin's name.
pub mod log {
    use super::wit::log::{Level, log};

    pub fn trace(message: &str) {
        log(Level::Trace, message, &[]);
    }
    pub fn debug(message: &str) {
        log(Level::Debug, message, &[]);
    }
    pub fn info(message: &str) {
        log(Level::Info, message, &[]);
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message, &[]);
    }
    pub fn error(message: &str) {
        log(Level::Error, message, &[]);
    }
    /// A message with key/value fields.
    pub fn info_with(message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        log(Level::Info, message, &fields);
    }
}

/// The host's wall clock.
pub mod clock {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// Milliseconds since the Unix epoch.
    pub fn now_ms() -> u64 {
        super::wit::clock::now_ms()
    }

    pub fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(now_ms())
    }
}

/// Key/value state private to this plugin, kept across calls and restarts.
/// Needs [`crate::Needs::state`].
pub mod state {
    use crate::Error;

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        super::wit::state::get(key).map_err(Error::from)
    }
    pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
        super::wit::state::set(key, value).map_err(Error::from)
    }
    pub fn delete(key: &str) -> Result<(), Error> {
        super::wit::state::delete(key).map_err(Error::from)
    }
    /// Sets `key` to `value` only if it holds `expected` (`None`: absent),
    /// atomically; `false` means another call changed it first: read and
    /// try again. For counters and limits shared by concurrent calls.
    pub fn compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, Error> {
        super::wit::state::compare_and_swap(key, expected, value).map_err(Error::from)
    }
    /// `get` for UTF-8 text.
    pub fn get_string(key: &str) -> Result<Option<String>, Error> {
        Ok(get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}

/// Filesystem facts WASI does not offer.
pub mod fs {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::wit::fs as wit;
    use crate::Error;

    /// Usage of one filesystem.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct DiskUsage {
        pub total_bytes: u64,
        pub free_bytes: u64,
        /// Bytes available to unprivileged users.
        pub available_bytes: u64,
        pub total_inodes: u64,
        pub free_inodes: u64,
    }

    impl DiskUsage {
        /// Used share of the space available to users, in percent, the way
        /// `df` computes it.
        pub fn used_percent(&self) -> f64 {
            let used = self.total_bytes.saturating_sub(self.free_bytes);
            let denom = used + self.available_bytes;
            if denom == 0 {
                0.0
            } else {
                used as f64 * 100.0 / denom as f64
            }
        }
        /// Used share of inodes, in percent.
        pub fn inodes_used_percent(&self) -> f64 {
            if self.total_inodes == 0 {
                0.0
            } else {
                (self.total_inodes - self.free_inodes.min(self.total_inodes)) as f64 * 100.0
                    / self.total_inodes as f64
            }
        }
    }

    /// Usage of the filesystem holding `path`, a path inside a granted
    /// directory.
    pub fn disk_usage(path: &str) -> Result<DiskUsage, Error> {
        let u = wit::disk_usage(path).map_err(Error::from)?;
        Ok(DiskUsage {
            total_bytes: u.total_bytes,
            free_bytes: u.free_bytes,
            available_bytes: u.available_bytes,
            total_inodes: u.total_inodes,
            free_inodes: u.free_inodes,
        })
    }

    /// What a path names; a symlink is reported as one unless followed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum FileKind {
        File,
        Directory,
        Symlink,
        Fifo,
        Socket,
        BlockDevice,
        CharDevice,
        Unknown,
    }

    /// A path's metadata, as [`stat_many`] and [`walk`] report it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct FileStat {
        pub kind: FileKind,
        /// Bytes (of the link itself, for a symlink).
        pub size: u64,
        /// Last modification.
        pub modified: SystemTime,
        /// Permission bits (`st_mode & 0o7777`).
        pub mode: u32,
    }

    impl FileStat {
        pub fn is_file(&self) -> bool {
            self.kind == FileKind::File
        }
        pub fn is_dir(&self) -> bool {
            self.kind == FileKind::Directory
        }
        pub fn is_symlink(&self) -> bool {
            self.kind == FileKind::Symlink
        }
    }

    fn time_of(ms: i64) -> SystemTime {
        let d = Duration::from_millis(ms.unsigned_abs());
        if ms >= 0 {
            UNIX_EPOCH + d
        } else {
            UNIX_EPOCH - d
        }
    }

    impl From<wit::FileStat> for FileStat {
        fn from(s: wit::FileStat) -> Self {
            use wit::FileKind as K;
            FileStat {
                kind: match s.kind {
                    K::File => FileKind::File,
                    K::Directory => FileKind::Directory,
                    K::Symlink => FileKind::Symlink,
                    K::Fifo => FileKind::Fifo,
                    K::Socket => FileKind::Socket,
                    K::BlockDevice => FileKind::BlockDevice,
                    K::CharDevice => FileKind::CharDevice,
                    K::Unknown => FileKind::Unknown,
                },
                size: s.size,
                modified: time_of(s.modified_ms),
                mode: s.mode,
            }
        }
    }

    /// The metadata of many paths (inside granted directories) in one host
    /// call, in order: `Ok(None)` where nothing exists. Far cheaper than
    /// opening each file through WASI (one host call instead of three per
    /// file), and safe on FIFOs and devices: nothing is opened. Symlinks
    /// are reported as such unless `follow_symlinks`, and followed only
    /// while they stay inside their grant. At most 10,000 paths a call
    /// (more is [`Error::Limit`]).
    pub fn stat_many(
        paths: &[String],
        follow_symlinks: bool,
    ) -> Result<Vec<Result<Option<FileStat>, Error>>, Error> {
        let stats = wit::stat_many(paths, follow_symlinks).map_err(Error::from)?;
        Ok(stats
            .into_iter()
            .map(|r| r.map(|s| s.map(FileStat::from)).map_err(Error::from))
            .collect())
    }

    /// How far a [`walk`] may go. The host bounds these too (depth 64,
    /// 100,000 entries, 8 MiB of reply).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct WalkLimits {
        /// Directory levels below the start: its own entries are depth 1.
        pub max_depth: u32,
        /// Entries reported, at most.
        pub max_entries: u32,
    }

    impl Default for WalkLimits {
        /// The host's own bounds.
        fn default() -> Self {
            WalkLimits {
                max_depth: 64,
                max_entries: 100_000,
            }
        }
    }

    /// One entry a [`walk`] found.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct DirEntry {
        /// Relative to the walked directory, `/`-separated.
        pub path: String,
        pub stat: FileStat,
    }

    /// Every entry beneath `dir` (inside a granted directory), with its
    /// metadata, in one host call. Symlinks are reported, never followed
    /// or descended. Going past `limits` is [`Error::Limit`] naming what.
    pub fn walk(dir: &str, limits: WalkLimits) -> Result<Vec<DirEntry>, Error> {
        let entries = wit::walk(
            dir,
            wit::WalkLimits {
                max_depth: limits.max_depth,
                max_entries: limits.max_entries,
            },
        )
        .map_err(Error::from)?;
        Ok(entries
            .into_iter()
            .map(|e| DirEntry {
                path: e.path,
                stat: e.stat.into(),
            })
            .collect())
    }
}

/// Commands the operator defined under `[commands]`, run by name. Needs
/// [`crate::Needs::command`].
pub mod exec {
    use crate::Error;

    /// What a command did.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct CommandOutput {
        /// None when it was killed (timeout or signal).
        pub exit_code: Option<i32>,
        pub stdout: String,
        pub stderr: String,
        pub timed_out: bool,
        /// Output was cut at the host's limit.
        pub truncated: bool,
        pub duration_ms: u64,
    }

    impl CommandOutput {
        /// Exited with status 0.
        pub fn success(&self) -> bool {
            self.exit_code == Some(0)
        }
        /// One line for an outcome or error message.
        pub fn describe(&self) -> String {
            let how = match (self.exit_code, self.timed_out) {
                (_, true) => "timed out".to_string(),
                (Some(c), _) => format!("exited with {c}"),
                (None, _) => "was killed".to_string(),
            };
            let tail = self
                .stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| format!(": {}", l.trim()))
                .unwrap_or_default();
            format!("{how} after {} ms{tail}", self.duration_ms)
        }
    }

    /// Runs the named command and waits for it. An error means it could
    /// not run at all (not granted, not defined, dry run, spawn failed); a
    /// command that ran and failed is an `Ok` with a non-zero exit code.
    pub fn run(name: &str) -> Result<CommandOutput, Error> {
        let o = super::wit::exec::run(name).map_err(Error::from)?;
        Ok(CommandOutput {
            exit_code: o.exit_code,
            stdout: o.stdout,
            stderr: o.stderr,
            timed_out: o.timed_out,
            truncated: o.truncated,
            duration_ms: o.duration_ms,
        })
    }

    /// The program and arguments of a granted command (not its
    /// environment), for a dry run to show. Runs nothing.
    pub fn argv(name: &str) -> Result<Vec<String>, Error> {
        super::wit::exec::argv(name).map_err(Error::from)
    }
}

/// Machine facts read by the host: CPU, load, memory, pressure,
/// filesystems, interfaces, and the processes the grant names. Needs
/// [`crate::Needs::system`] (and [`crate::Needs::process`] for
/// [`system::processes`]).
pub mod system {
    pub use super::wit::system::{
        CpuUsage, Filesystem, LoadAverage, MemoryInfo as Memory, NetInterface,
        PressureInfo as Pressure, Process, ProcessList as Processes, ProcessQuery,
        ResourcePressure, Stall,
    };
    use crate::Error;

    /// CPU use over `interval_ms`, which the host waits (100 to 10000).
    pub fn cpu(interval_ms: u32) -> Result<CpuUsage, Error> {
        super::wit::system::cpu(interval_ms).map_err(Error::from)
    }
    pub fn load() -> Result<LoadAverage, Error> {
        super::wit::system::load().map_err(Error::from)
    }
    pub fn memory() -> Result<Memory, Error> {
        super::wit::system::memory().map_err(Error::from)
    }
    /// Pressure stall information; fails on a kernel without PSI.
    pub fn pressure() -> Result<Pressure, Error> {
        super::wit::system::pressure().map_err(Error::from)
    }
    pub fn filesystems() -> Result<Vec<Filesystem>, Error> {
        super::wit::system::filesystems().map_err(Error::from)
    }
    pub fn interfaces() -> Result<Vec<NetInterface>, Error> {
        super::wit::system::interfaces().map_err(Error::from)
    }
    /// Granted processes named `name` (a glob), whose command line
    /// contains `cmdline` if given; with `sample_ms` > 0 the host also
    /// measures their CPU use over that long.
    pub fn processes(
        name: &str,
        cmdline: Option<&str>,
        sample_ms: u32,
    ) -> Result<Processes, Error> {
        super::wit::system::processes(&ProcessQuery {
            name: name.to_string(),
            cmdline: cmdline.map(str::to_string),
            sample_ms,
        })
        .map_err(Error::from)
    }

    impl Memory {
        /// Share of memory not available, in percent.
        pub fn used_percent(&self) -> f64 {
            percent(
                self.total_bytes.saturating_sub(self.available_bytes),
                self.total_bytes,
            )
        }
        /// Share of swap in use, in percent (0 without swap).
        pub fn swap_used_percent(&self) -> f64 {
            percent(
                self.swap_total_bytes.saturating_sub(self.swap_free_bytes),
                self.swap_total_bytes,
            )
        }
    }

    fn percent(part: u64, whole: u64) -> f64 {
        if whole == 0 {
            0.0
        } else {
            part as f64 * 100.0 / whole as f64
        }
    }
}

/// Named PostgreSQL connections defined under `[connections]`. Needs
/// [`crate::Needs::connection`].
pub mod sql {
    pub use super::wit::sql::Value;
    use crate::Error;

    /// Options for one statement.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Options {
        /// Open a new connection rather than reuse the host's.
        pub fresh: bool,
        /// At most the connection's `timeout`.
        pub timeout: Option<std::time::Duration>,
    }

    impl Options {
        /// A fresh connection, to test connectivity for real.
        pub fn fresh() -> Self {
            Options {
                fresh: true,
                timeout: None,
            }
        }
        pub fn timeout(mut self, t: std::time::Duration) -> Self {
            self.timeout = Some(t);
            self
        }
    }

    /// The rows a query returned.
    #[derive(Debug, Clone)]
    pub struct Rows {
        pub columns: Vec<String>,
        pub rows: Vec<Vec<Value>>,
    }

    impl Rows {
        /// The value in `row` under `column`.
        pub fn get(&self, row: usize, column: &str) -> Option<&Value> {
            let i = self.columns.iter().position(|c| c == column)?;
            self.rows.get(row)?.get(i)
        }
        pub fn len(&self) -> usize {
            self.rows.len()
        }
        pub fn is_empty(&self) -> bool {
            self.rows.is_empty()
        }
    }

    impl Value {
        pub fn as_i64(&self) -> Option<i64> {
            match self {
                Value::Int(i) => Some(*i),
                Value::Float(f) => Some(*f as i64),
                _ => None,
            }
        }
        pub fn as_f64(&self) -> Option<f64> {
            match self {
                Value::Int(i) => Some(*i as f64),
                Value::Float(f) => Some(*f),
                _ => None,
            }
        }
        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::Text(s) => Some(s),
                _ => None,
            }
        }
        pub fn as_bool(&self) -> Option<bool> {
            match self {
                Value::Boolean(b) => Some(*b),
                _ => None,
            }
        }
    }

    impl From<&str> for Value {
        fn from(s: &str) -> Self {
            Value::Text(s.into())
        }
    }
    impl From<String> for Value {
        fn from(s: String) -> Self {
            Value::Text(s)
        }
    }
    impl From<i64> for Value {
        fn from(i: i64) -> Self {
            Value::Int(i)
        }
    }
    impl From<f64> for Value {
        fn from(f: f64) -> Self {
            Value::Float(f)
        }
    }
    impl From<bool> for Value {
        fn from(b: bool) -> Self {
            Value::Boolean(b)
        }
    }

    fn wit_options(o: Options) -> super::wit::sql::Options {
        super::wit::sql::Options {
            fresh: o.fresh,
            timeout_ms: o
                .timeout
                .map(|t| t.as_millis().min(u32::MAX as u128) as u32),
        }
    }

    /// Runs a statement that returns rows; parameters are `$1`, `$2`...
    pub fn query(
        connection: &str,
        statement: &str,
        params: &[Value],
        options: Options,
    ) -> Result<Rows, Error> {
        let r = super::wit::sql::query(connection, statement, params, wit_options(options))
            .map_err(Error::from)?;
        Ok(Rows {
            columns: r.columns,
            rows: r.rows,
        })
    }

    /// Runs a statement; returns how many rows it affected.
    pub fn execute(
        connection: &str,
        statement: &str,
        params: &[Value],
        options: Options,
    ) -> Result<u64, Error> {
        super::wit::sql::execute(connection, statement, params, wit_options(options))
            .map_err(Error::from)
    }
}

/// Named Redis connections defined under `[connections]`. Needs
/// [`crate::Needs::connection`].
pub mod redis {
    pub use super::wit::redis::Reply;
    use crate::Error;

    /// Runs one command, e.g. `command("cache", &["GET", "k"])`.
    pub fn command<A: AsRef<[u8]>>(connection: &str, args: &[A]) -> Result<Reply, Error> {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_ref().to_vec()).collect();
        super::wit::redis::command(connection, &args).map_err(Error::from)
    }

    /// One SCAN step: `(next_cursor, keys)`; the cursor is 0 when done.
    pub fn scan(
        connection: &str,
        cursor: u64,
        pattern: &str,
        count: u32,
    ) -> Result<(u64, Vec<String>), Error> {
        super::wit::redis::scan(connection, cursor, pattern, count).map_err(Error::from)
    }

    impl Reply {
        /// The reply as text, for bulk strings and statuses.
        pub fn as_text(&self) -> Option<String> {
            match self {
                Reply::Data(d) => Some(String::from_utf8_lossy(d).into_owned()),
                Reply::Int(i) => Some(i.to_string()),
                _ => None,
            }
        }
        pub fn as_int(&self) -> Option<i64> {
            match self {
                Reply::Int(i) => Some(*i),
                Reply::Data(d) => std::str::from_utf8(d).ok()?.trim().parse().ok(),
                _ => None,
            }
        }
        pub fn is_nil(&self) -> bool {
            matches!(self, Reply::Nil)
        }
    }
}
