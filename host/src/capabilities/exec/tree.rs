//! Every process a command starts, so that the whole tree dies at the
//! timeout.
//!
//! A process group is not enough: a grandchild that calls `setsid` leaves
//! it, and one whose parent exits is reparented out of the command's
//! subtree. Two holds, from strongest:
//!
//! - **A cgroup of its own** (cgroup v2, where mend may create one below
//!   its own cgroup): the child joins it before `exec`, every descendant
//!   is born in it and cannot leave, and `cgroup.kill` ends them all.
//! - **The command as a subreaper** (everywhere else): before `exec` the
//!   child sets `PR_SET_CHILD_SUBREAPER`, which survives `exec`. While it
//!   runs, every orphan in its tree is reparented to it instead of to
//!   init, so its tree in `/proc` holds all its descendants; the sweep
//!   kills them from the leaves' side before the command itself.
//!
//! A command that exits by itself keeps what it left running (a daemon it
//! started): its cgroup's processes move back to mend's own cgroup.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal};

/// Sweeps over `/proc` before giving up on a tree that keeps forking.
const MAX_PASSES: usize = 100;

/// How a running command's processes are held.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Hold {
    Cgroup,
    Subreaper,
}

/// The processes of one command.
pub(crate) struct Tree {
    cgroup: Option<Cgroup>,
    root: Option<Pid>,
}

impl Tree {
    /// A tree for a command about to start; with a cgroup of its own when
    /// `allow_cgroup` and the host lets mend make one.
    pub(crate) fn prepare(allow_cgroup: bool) -> Tree {
        Tree {
            cgroup: allow_cgroup.then(Cgroup::create).flatten(),
            root: None,
        }
    }

    /// `cgroup.procs` for the child to join before `exec` (see
    /// [`super::spawn`]); it also becomes a subreaper there.
    pub(crate) fn join(&self) -> Option<BorrowedFd<'_>> {
        self.cgroup.as_ref().map(|c| c.procs.as_fd())
    }

    /// The command started as `pid`.
    pub(crate) fn started(&mut self, pid: u32) {
        self.root = Pid::from_raw(pid as i32);
        let joined = match (&self.cgroup, self.root) {
            (Some(c), Some(pid)) => c.holds(pid),
            _ => false,
        };
        if !joined && let Some(c) = self.cgroup.take() {
            if !NO_CGROUPS.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    cgroup = %c.dir.display(),
                    "a command could not join the cgroup made for it; a timed-out command's processes are found through /proc instead"
                );
            }
            c.remove();
        }
    }

    pub fn hold(&self) -> Hold {
        if self.cgroup.is_some() {
            Hold::Cgroup
        } else {
            Hold::Subreaper
        }
    }

    /// Kills every process of the tree (the command last), now.
    pub(crate) fn kill(&mut self) {
        let Some(root) = self.root.take() else {
            return;
        };
        match &self.cgroup {
            Some(c) => c.kill(),
            None => sweep(root),
        }
        let _ = rustix::process::kill_process_group(root, Signal::KILL);
        let _ = rustix::process::kill_process(root, Signal::KILL);
    }

    /// After the command exited by itself: what it left running stays, in
    /// mend's own cgroup.
    pub(crate) fn release(mut self) {
        self.root = None;
        if let Some(c) = self.cgroup.take() {
            c.release();
        }
    }

    /// Once the killed processes are gone, removes the cgroup.
    pub(crate) async fn cleanup(mut self) {
        if let Some(c) = self.cgroup.take() {
            c.remove_when_empty().await;
        }
    }
}

impl Drop for Tree {
    /// Dropped while the command runs (the plugin's deadline): kill it all.
    fn drop(&mut self) {
        self.kill();
        if let Some(c) = self.cgroup.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(c.remove_when_empty());
                }
                Err(_) => c.remove(),
            }
        }
    }
}

/// A cgroup v2 directory made for one command.
struct Cgroup {
    dir: PathBuf,
    /// `cgroup.procs`, open for the child to join.
    procs: OwnedFd,
}

/// mend's own cgroup v2 directory, if there is a cgroup v2 hierarchy.
fn own_cgroup() -> Option<&'static Path> {
    static OWN: OnceLock<Option<PathBuf>> = OnceLock::new();
    OWN.get_or_init(|| {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        own_cgroup_dir(&cgroup, &mountinfo)
    })
    .as_deref()
}

/// Joins the cgroup v2 mount point with mend's path in the hierarchy.
fn own_cgroup_dir(cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = mount.split_whitespace();
        let root = fields.nth(3)?;
        let point = unescape(fields.next()?);
        let rel = Path::new(path).strip_prefix(unescape(root)).ok()?;
        Some(Path::new(&point).join(rel))
    })
}

/// Mount info escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        if b[i] == b'\\'
            && let Some(v) = octal
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Set once creating a cgroup failed: do not try for every command.
static NO_CGROUPS: AtomicBool = AtomicBool::new(false);

impl Cgroup {
    fn create() -> Option<Cgroup> {
        if NO_CGROUPS.load(Ordering::Relaxed) {
            return None;
        }
        static N: AtomicU64 = AtomicU64::new(0);
        static SWEPT: std::sync::Once = std::sync::Once::new();
        let own = own_cgroup()?;
        SWEPT.call_once(|| remove_stale(own));
        let dir = own.join(format!(
            "mend-cmd.{}.{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let made = std::fs::create_dir(&dir).and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
        });
        match made {
            Ok(f) => Some(Cgroup {
                dir,
                procs: f.into(),
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                if !NO_CGROUPS.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        cgroup = %own.display(),
                        "cannot create a cgroup for commands ({e}); a timed-out command's processes are found through /proc instead"
                    );
                }
                None
            }
        }
    }

    fn holds(&self, pid: Pid) -> bool {
        self.pids().contains(&pid)
    }

    fn pids(&self) -> Vec<Pid> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter_map(Pid::from_raw)
            .collect()
    }

    fn kill(&self) {
        // cgroup.kill (Linux 5.14+) is atomic against forks; before it,
        // kill what is listed until nothing is.
        if std::fs::write(self.dir.join("cgroup.kill"), b"1").is_ok() {
            return;
        }
        for _ in 0..MAX_PASSES {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for p in pids {
                let _ = rustix::process::kill_process(p, Signal::KILL);
            }
        }
    }

    /// Moves the processes left in the cgroup back to mend's, and removes
    /// it.
    fn release(self) {
        let Some(parent) = self.dir.parent().map(|p| p.join("cgroup.procs")) else {
            return;
        };
        for _ in 0..MAX_PASSES {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = std::fs::write(&parent, p.as_raw_nonzero().to_string());
            }
        }
        self.remove();
    }

    async fn remove_when_empty(self) {
        for _ in 0..500 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!(cgroup = %self.dir.display(), "a killed command's cgroup is still busy; left in place");
    }

    fn remove(self) {
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::warn!(cgroup = %self.dir.display(), "cannot remove a command's cgroup: {e}");
        }
    }
}

/// Removes the empty command cgroups of mends that no longer run (one
/// killed with `kill -9` mid-command cannot remove its own); a cgroup
/// still holding processes stays (`rmdir` refuses it).
fn remove_stale(parent: &Path) {
    let Ok(dir) = std::fs::read_dir(parent) else {
        return;
    };
    let me = std::process::id() as i32;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("mend-cmd."))
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if pid != me && stat(pid).is_none() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// One process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ppid: i32,
    /// `Z`ombie and `X` (dead) hold nothing.
    live: bool,
    /// Clock ticks after boot: with the pid, names one process.
    start: u64,
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name is in parentheses and may hold anything.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        live: !matches!(*fields.first()?, "Z" | "X" | "x"),
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process now, by pid.
fn processes() -> HashMap<i32, Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .collect()
}

/// The live descendants of `root` in `table`.
fn descendants(table: &HashMap<i32, Stat>, root: i32) -> Vec<(i32, Stat)> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, s) in table {
        children.entry(s.ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if c != root {
                todo.push(c);
                if table[&c].live {
                    out.push((c, table[&c]));
                }
            }
        }
    }
    out
}

/// Kills the live descendants of `root` (a subreaper, so orphans of its
/// tree come back to it) until none is left.
fn sweep(root: Pid) {
    let root = root.as_raw_nonzero().get();
    for _ in 0..MAX_PASSES {
        let found = descendants(&processes(), root);
        if found.is_empty() {
            return;
        }
        for (pid, seen) in found {
            kill_if_same(pid, seen);
        }
        std::thread::yield_now();
    }
    tracing::warn!(
        pid = root,
        "a timed-out command's processes kept appearing; gave up after {MAX_PASSES} sweeps"
    );
}

/// SIGKILLs `pid` if it is still the process seen (not a new one that
/// reused the pid): through a pidfd, checked after opening it.
fn kill_if_same(pid: i32, seen: Stat) {
    let Some(p) = Pid::from_raw(pid) else {
        return;
    };
    match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => {
            if stat(pid).is_some_and(|now| now.start == seen.start) {
                let _ = rustix::process::pidfd_send_signal(&fd, Signal::KILL);
            }
        }
        Err(_) => {
            if stat(pid).is_some_and(|now| now.start == seen.start) {
                let _ = rustix::process::kill_process(p, Signal::KILL);
            }
        }
    }
}

/// Where commands' cgroups are made (mend's own cgroup v2 directory),
/// if this host has one and mend could make one there so far.
pub fn cgroup_parent() -> Option<&'static Path> {
    own_cgroup().filter(|_| !NO_CGROUPS.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup_dir_is_found_from_proc() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let cgroup = "4:memory:/x\n0::/system.slice/mend.service\n";
        assert_eq!(
            own_cgroup_dir(cgroup, mountinfo),
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/system.slice/mend.service"
            ))
        );
        // A container that mounts only its own subtree.
        let mountinfo = "700 600 0:40 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_cgroup_dir("0::/docker/abc/app\n", mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/app"))
        );
        assert_eq!(own_cgroup_dir("4:memory:/x\n", mountinfo), None);
        assert_eq!(
            own_cgroup_dir("0::/\n", "1 0 0:1 / /with\\040space rw - cgroup2 c rw\n"),
            Some(PathBuf::from("/with space"))
        );
    }

    #[test]
    fn empty_cgroups_of_mends_gone_are_removed_and_others_kept() {
        let parent = tempfile::tempdir().unwrap();
        let mut gone = std::process::Command::new("/bin/true").spawn().unwrap();
        gone.wait().unwrap();
        let dead = parent.path().join(format!("mend-cmd.{}.3", gone.id()));
        let mine = parent
            .path()
            .join(format!("mend-cmd.{}.0", std::process::id()));
        let alive = parent.path().join("mend-cmd.1.0");
        let busy = parent.path().join(format!("mend-cmd.{}.4", gone.id()));
        let other = parent.path().join("system.slice");
        for d in [&dead, &mine, &alive, &busy, &other] {
            std::fs::create_dir(d).unwrap();
        }
        // In a real hierarchy a cgroup with processes cannot be removed;
        // a file makes a plain directory refuse `rmdir` the same way.
        std::fs::write(busy.join("cgroup.procs"), "4242\n").unwrap();
        remove_stale(parent.path());
        assert!(!dead.exists(), "an empty cgroup of a dead mend was kept");
        for d in [&mine, &alive, &busy, &other] {
            assert!(d.exists(), "{} was removed", d.display());
        }
    }

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let line = "4242 (we (ird) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 17,
                live: true,
                start: 987654
            })
        );
        let zombie = "5 (z) Z 1 5 5 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0";
        assert!(!parse_stat(zombie).unwrap().live);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn descendants_follow_parent_links_and_skip_the_dead() {
        let s = |ppid, live| Stat {
            ppid,
            live,
            start: 0,
        };
        let table = HashMap::from([
            (10, s(1, true)),
            (11, s(10, true)),
            (12, s(11, false)),
            (13, s(12, true)),
            (20, s(1, true)),
        ]);
        let mut found: Vec<i32> = descendants(&table, 10).into_iter().map(|d| d.0).collect();
        found.sort();
        assert_eq!(found, vec![11, 13]);
        assert!(descendants(&table, 20).is_empty());
    }
}
