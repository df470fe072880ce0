//! Starting a command without copying mend.
//!
//! `fork` copies the page tables of mend (60 MB and more, with wasmtime's
//! mappings) for every command, only for the child to throw them away at
//! `exec`: measured, 3.3 ms a run against 1.0 ms for `posix_spawn`
//! (BENCHMARKS.md). But `posix_spawn` cannot join a cgroup or become a
//! subreaper before `exec` (glibc 2.36), and Rust's `Command` forks as
//! soon as `pre_exec` is set. So this does what `posix_spawn` does inside:
//! `clone(CLONE_VM | CLONE_VFORK)` on a stack of its own. The child shares
//! mend's memory and makes only system calls (nothing allocates, nothing
//! locks) until `execve`; the calling thread sleeps until then, so the
//! child leaves its error where the parent reads it. `CLONE_PIDFD` gives
//! a pidfd in the same step: waiting, killing and reaping go through it,
//! never through a pid that could be reused.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::process::{WaitId, WaitIdOptions, WaitIdStatus};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe::Receiver;

/// The child's stack: it makes a few system calls, nothing deep.
const STACK: usize = 128 * 1024;
const PAGE: usize = 4096;
/// Signals are numbered 1 to 64 on Linux.
const SIGNALS: i32 = 65;

/// A program, its argv and environment, ready for `execve`.
pub(crate) struct Spawn {
    /// Where the program may be: itself if it names a path, else each
    /// directory of the command's `PATH` (as `execvp` tries them).
    candidates: Vec<CString>,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
}

/// What failed in the child, before `exec` or at it.
#[derive(Clone, Copy)]
#[repr(i32)]
enum Step {
    Exec = 1,
    ProcessGroup,
    Subreaper,
    Stdio,
    Chdir,
}

impl Step {
    fn from_raw(raw: i32) -> Option<Step> {
        [
            Step::Exec,
            Step::ProcessGroup,
            Step::Subreaper,
            Step::Stdio,
            Step::Chdir,
        ]
        .into_iter()
        .find(|s| *s as i32 == raw)
    }
}

/// Everything the child reads, prepared by the parent: pointers into
/// [`Spawn`] and descriptors, plus where the child reports a failure.
struct ChildArgs {
    candidates: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    env: Vec<*const libc::c_char>,
    cwd: *const libc::c_char,
    /// stdin, stdout, stderr.
    stdio: [RawFd; 3],
    /// `cgroup.procs` to join, or -1.
    cgroup_procs: RawFd,
    errno: AtomicI32,
    step: AtomicI32,
}

impl Spawn {
    /// `env` is the whole environment; its `PATH` finds a bare program.
    pub(crate) fn new<'a>(
        argv: &[String],
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
        cwd: &Path,
    ) -> io::Result<Spawn> {
        let c = |s: &[u8]| {
            CString::new(s).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an argument, variable or path holds a NUL byte",
                )
            })
        };
        let program = argv
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no program"))?;
        let mut path = None;
        let mut vars = Vec::new();
        for (k, v) in env {
            if k == "PATH" {
                path = Some(v);
            }
            vars.push(c(format!("{k}={v}").as_bytes())?);
        }
        let candidates = if program.contains('/') {
            vec![c(program.as_bytes())?]
        } else {
            path.unwrap_or_default()
                .split(':')
                .map(|dir| {
                    let dir = if dir.is_empty() { "." } else { dir };
                    c(format!("{dir}/{program}").as_bytes())
                })
                .collect::<io::Result<_>>()?
        };
        Ok(Spawn {
            candidates,
            argv: argv
                .iter()
                .map(|a| c(a.as_bytes()))
                .collect::<io::Result<_>>()?,
            env: vars,
            cwd: c(OsStr::as_bytes(cwd.as_os_str()))?,
        })
    }

    /// Starts the program in a process group of its own, as a subreaper,
    /// in the cgroup whose `cgroup.procs` is given (best effort: the
    /// caller checks), stdin from `/dev/null`, stdout and stderr piped.
    pub(crate) fn spawn(&self, cgroup_procs: Option<BorrowedFd<'_>>) -> io::Result<Child> {
        let null = std::fs::File::open("/dev/null")?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        // Before the child exists, so that nothing fails between its start
        // and its `Child` (which kills it if dropped).
        let stdout = Receiver::from_owned_fd(out_r)?;
        let stderr = Receiver::from_owned_fd(err_r)?;
        let nul_terminated = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain([std::ptr::null()])
                .collect::<Vec<_>>()
        };
        let args = ChildArgs {
            candidates: self.candidates.iter().map(|s| s.as_ptr()).collect(),
            argv: nul_terminated(&self.argv),
            env: nul_terminated(&self.env),
            cwd: self.cwd.as_ptr(),
            stdio: [null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
            cgroup_procs: cgroup_procs.map_or(-1, |fd| fd.as_raw_fd()),
            errno: AtomicI32::new(0),
            step: AtomicI32::new(0),
        };
        let stack = Stack::new()?;
        let mut pidfd: libc::c_int = -1;
        // SAFETY: every signal is blocked around the clone so that none of
        // mend's handlers runs in the child before it resets them. The
        // child runs `run_child` on its own stack with `args`, which lives
        // until clone returns: CLONE_VFORK suspends this thread until the
        // child has exec'd or exited.
        let pid = unsafe {
            let mut old: u64 = 0;
            set_signal_mask(u64::MAX, &mut old);
            let pid = libc::clone(
                run_child,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                (&args as *const ChildArgs).cast_mut().cast(),
                &mut pidfd as *mut libc::c_int,
            );
            let clone_error = io::Error::last_os_error();
            set_signal_mask(old, std::ptr::null_mut());
            if pid < 0 {
                return Err(clone_error);
            }
            pid
        };
        drop(stack);
        // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        drop((null, out_w, err_w));
        let errno = args.errno.load(Ordering::Acquire);
        if errno != 0 {
            // The child exited: reap it before saying why.
            reap_blocking(&pidfd);
            let e = io::Error::from_raw_os_error(errno);
            return Err(match Step::from_raw(args.step.load(Ordering::Acquire)) {
                Some(Step::Exec) | None => e,
                Some(Step::ProcessGroup) => io::Error::new(e.kind(), format!("setpgid: {e}")),
                Some(Step::Subreaper) => io::Error::new(e.kind(), format!("subreaper: {e}")),
                Some(Step::Stdio) => io::Error::new(e.kind(), format!("stdio: {e}")),
                Some(Step::Chdir) => {
                    io::Error::new(e.kind(), format!("cwd {}: {e}", self.cwd.to_string_lossy()))
                }
            });
        }
        let pidfd = match watch(pidfd) {
            Ok(fd) => fd,
            Err((fd, e)) => {
                kill(&fd);
                reap_blocking(&fd);
                return Err(e);
            }
        };
        Ok(Child {
            pid: pid as u32,
            pidfd: Some(pidfd),
            stdout: Some(stdout),
            stderr: Some(stderr),
        })
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors, owned from here on.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// The child's stack, with a guard page below it.
struct Stack(*mut libc::c_void);

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: a fresh anonymous mapping, unmapped on drop.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = Stack(base);
            if libc::mprotect(base, PAGE, libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    /// Stacks grow down: the child starts at the end.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, 16-byte aligned.
        unsafe { self.0.cast::<u8>().add(STACK).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used.
        unsafe {
            libc::munmap(self.0, STACK);
        }
    }
}

/// The child, between clone and exec: system calls only, no allocation,
/// no lock, no unwinding. Errors go to `args` and end the child.
extern "C" fn run_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive while the parent
    // waits for this child to exec or exit; every pointer in it points
    // into NUL-terminated strings the parent keeps.
    unsafe {
        let args = &*(arg as *const ChildArgs);
        let fail = |step: Step| -> ! {
            args.step.store(step as i32, Ordering::Release);
            args.errno.store(errno().max(1), Ordering::Release);
            libc::_exit(127)
        };
        // mend's handlers (and its ignored SIGPIPE) are not the
        // command's: every signal back to its default, by the system call
        // (glibc refuses its own signals 32 and 33, which may be ignored).
        let dfl = KernelSigaction::default();
        for sig in 1..SIGNALS {
            let mut old = KernelSigaction::default();
            if sigaction(sig, std::ptr::null(), &mut old) == 0 && old.handler != libc::SIG_DFL {
                sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(Step::ProcessGroup);
        }
        if args.cgroup_procs >= 0 {
            // Best effort: the parent checks where the child ended up.
            libc::write(args.cgroup_procs, b"0".as_ptr().cast(), 1);
        }
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
            fail(Step::Subreaper);
        }
        for (target, &fd) in (0..).zip(args.stdio.iter()) {
            let done = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, target) == target
            };
            if !done {
                fail(Step::Stdio);
            }
        }
        // Whatever else mend holds open without CLOEXEC (a library's
        // slip, an inherited descriptor) is not the command's.
        if libc::syscall(libc::SYS_close_range, 3, u32::MAX, 0) != 0 {
            // Refused (an old kernel, a seccomp filter): one by one.
            let mut limit: libc::rlimit = std::mem::zeroed();
            let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur.min(1 << 20) as i32
            } else {
                1024
            };
            for fd in 3..top {
                libc::close(fd);
            }
        }
        if libc::chdir(args.cwd) != 0 {
            fail(Step::Chdir);
        }
        set_signal_mask(0, std::ptr::null_mut());
        // As execvp: the first directory that has it, and EACCES over
        // ENOENT if one had it but not executable.
        let mut err = libc::ENOENT;
        for &path in &args.candidates {
            libc::execve(path, args.argv.as_ptr(), args.env.as_ptr());
            match errno() {
                // As glibc's execvpe: a stale or hung entry in PATH is
                // passed over too.
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                libc::EACCES => err = libc::EACCES,
                e => {
                    err = e;
                    break;
                }
            }
        }
        *libc::__errno_location() = err;
        fail(Step::Exec)
    }
}

/// `struct sigaction` as the kernel takes it (x86-64, aarch64).
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// `rt_sigaction`, past glibc's filter.
///
/// # Safety
/// `new` and `old` are null or valid.
unsafe fn sigaction(sig: i32, new: *const KernelSigaction, old: *mut KernelSigaction) -> i64 {
    // SAFETY: upheld by the caller; the kernel's sigset is 8 bytes.
    unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, new, old, 8usize) }
}

/// The calling thread's signal mask, by the system call: glibc's
/// wrappers keep its internal signals (32, 33) out of a mask, both ways.
///
/// # Safety
/// `old` is null or points to a u64.
unsafe fn set_signal_mask(mask: u64, old: *mut u64) {
    // SAFETY: the kernel's sigset is 8 bytes on Linux.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask as *const u64,
            old,
            8usize,
        );
    }
}

fn errno() -> i32 {
    // SAFETY: the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

/// A started command, killed and reaped when dropped before it exited.
pub(crate) struct Child {
    pid: u32,
    /// None once reaped.
    pidfd: Option<AsyncFd<OwnedFd>>,
    pub(crate) stdout: Option<Receiver>,
    pub(crate) stderr: Option<Receiver>,
}

impl Child {
    pub(crate) fn id(&self) -> u32 {
        self.pid
    }

    /// Waits for the command to exit and reaps it. Cancel-safe: a timeout
    /// around it may end the wait and a later call waits again.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        let Some(fd) = &self.pidfd else {
            return Err(io::Error::other("already reaped"));
        };
        loop {
            let mut ready = fd.readable().await?;
            if let Some(status) = try_reap(fd.get_ref().as_fd())? {
                self.pidfd = None;
                return Ok(status);
            }
            ready.clear_ready();
        }
    }
}

/// A pidfd, readable once its process has exited; given back if it
/// cannot be watched.
fn watch(pidfd: OwnedFd) -> Result<AsyncFd<OwnedFd>, (OwnedFd, io::Error)> {
    // SAFETY: the AsyncFd owns the descriptor: it stays open and the same
    // until the AsyncFd is dropped or unwrapped.
    unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts())
}

fn kill(pidfd: &OwnedFd) {
    let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
}

/// Waits for the process to end and reaps it, blocking: for a process
/// that has ended or been killed, when nothing async is left to wait with.
fn reap_blocking(pidfd: &OwnedFd) {
    let _ = rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED);
}

/// The exit status if the process exited, reaping it.
fn try_reap(pidfd: BorrowedFd<'_>) -> io::Result<Option<ExitStatus>> {
    let status = rustix::process::waitid(
        WaitId::PidFd(pidfd),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    )?;
    Ok(status.map(exit_status))
}

fn exit_status(s: WaitIdStatus) -> ExitStatus {
    // The encoding of wait(2): the code in the second byte, or the
    // signal in the first (with 0x80 if it dumped core).
    match (s.exit_status(), s.terminating_signal()) {
        (Some(code), _) => ExitStatus::from_raw((code & 0xff) << 8),
        (None, Some(sig)) => ExitStatus::from_raw(sig | if s.dumped() { 0x80 } else { 0 }),
        (None, None) => ExitStatus::from_raw(0x7f),
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(fd) = self.pidfd.take() else {
            return;
        };
        let fd = fd.into_inner();
        kill(&fd);
        // Reaped once the kernel has ended it, without blocking a worker
        // on a process stuck in an uninterruptible sleep.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    match watch(fd) {
                        Ok(fd) => {
                            let _ = fd.readable().await;
                            let _ = try_reap(fd.get_ref().as_fd());
                        }
                        Err((fd, _)) => reap_blocking(&fd),
                    }
                });
            }
            Err(_) => reap_blocking(&fd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn run(argv: &[&str], env: &[(&str, &str)], cwd: &str) -> io::Result<(i32, String)> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let mut child = Spawn::new(&argv, env.iter().copied(), Path::new(cwd))?.spawn(None)?;
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await?;
        let status = child.wait().await?;
        Ok((status.code().unwrap_or(-1), out))
    }

    #[tokio::test]
    async fn a_bare_program_is_found_on_the_commands_path() {
        let (code, out) = run(&["pwd"], &[("PATH", "/nonexistent::/usr/bin:/bin")], "/tmp")
            .await
            .unwrap();
        assert_eq!((code, out.trim()), (0, "/tmp"));
        let e = run(&["pwd"], &[("PATH", "/nonexistent")], "/")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = run(&["/bin/pwd"], &[], "/nonexistent").await.unwrap_err();
        assert!(e.to_string().contains("cwd /nonexistent"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("not-executable");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let e = run(
            &["not-executable"],
            &[("PATH", &dir.path().to_string_lossy())],
            "/",
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    }

    #[tokio::test]
    async fn the_child_gets_exactly_its_environment_stdio_and_a_clean_signal_state() {
        let (code, out) = run(&["/usr/bin/env"], &[("A", "1"), ("B", "two words")], "/")
            .await
            .unwrap();
        assert_eq!((code, out.as_str()), (0, "A=1\nB=two words\n"));
        // Rust's runtime ignores SIGPIPE (in this test binary too, made
        // sure here): the child must not inherit that, nor a blocked mask.
        // SAFETY: changes nothing Rust's runtime has not already set.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let (_, status) = run(&["/bin/cat", "/proc/self/status"], &[], "/")
            .await
            .unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        assert_eq!(field("SigIgn:").as_deref(), Some("0000000000000000"));
        assert_eq!(field("SigBlk:").as_deref(), Some("0000000000000000"));
        // Only stdin, stdout and stderr are open (plus ls's own).
        let (_, fds) = run(&["/bin/ls", "/proc/self/fd"], &[], "/").await.unwrap();
        let fds: Vec<&str> = fds.split_whitespace().collect();
        assert_eq!(
            fds,
            ["0", "1", "2", "3"],
            "descriptors leaked into the child"
        );
    }

    #[tokio::test]
    async fn exit_codes_and_signals_come_back_and_a_dropped_child_is_killed_and_reaped() {
        assert_eq!(
            run(&["/bin/sh", "-c", "exit 7"], &[], "/").await.unwrap().0,
            7
        );
        let argv = ["/bin/sh".to_string(), "-c".into(), "kill -9 $$".into()];
        let mut child = Spawn::new(&argv, [], Path::new("/"))
            .unwrap()
            .spawn(None)
            .unwrap();
        assert_eq!(child.wait().await.unwrap().signal(), Some(9));
        let argv = ["/bin/sleep".to_string(), "30".into()];
        let child = Spawn::new(&argv, [], Path::new("/"))
            .unwrap()
            .spawn(None)
            .unwrap();
        let pid = child.id();
        drop(child);
        // Killed, then reaped by the task the drop started: no zombie.
        for _ in 0..500 {
            if std::fs::metadata(format!("/proc/{pid}")).is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the dropped child {pid} was not reaped");
    }
}
