//! One plugin call: a fresh `Store` and instance with its limits, the
//! grants wired in, the export invoked, and every failure classified.
//!
//! Limits per call: a fuel budget (reported back), a wall-clock deadline
//! enforced twice (epoch interruption for wasm that computes, a tokio
//! timeout for wasm waiting in a host call), a memory cap across all
//! memories, the engine's wasm stack limit, and host-side budgets for what
//! the guest can make the host hold: resource-table entries (every open
//! descriptor, stream, pollable and HTTP object is one), and bytes per HTTP
//! header set and per buffered request body. The epoch callback also yields
//! to tokio on every tick, so a long call never stalls the executor.
//!
//! A call granted directories runs whole on a blocking-pool thread, its file
//! I/O inline there (a syscall each, no hop per operation), while the caller
//! waits for it with the deadline as a timeout: a plugin blocked in a
//! syscall (a FIFO, a hung mount) still ends at its deadline, and no async
//! worker is ever blocked. Such a stuck call keeps its thread and its slot
//! until the syscall returns; at most [`MAX_STUCK_CALLS`] per plugin, after
//! which its calls are refused at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::{InstancePre, ResourceTable, ResourceTableError};
use wasmtime::{Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::Runtime;
use super::error::PluginError;
use super::limits::{Limits, MemoryLimitExceeded, MemoryLimiter};
use crate::capabilities::net::ResolvedAddress;
use crate::capabilities::output::BoundedOutput;
use crate::capabilities::{self, CallSetup, HasCaps, HostCaps, ResolvedGrants};
use crate::clock::Clock;
use crate::text::truncate;
use crate::wit::{self, Call, Exports, Returned};

/// The data of one call's `Store`.
pub struct CallState {
    /// Built on the guest's first WASI import: a call that makes none
    /// (most detectors, and stale-file, which asks `mend:plugin/fs`)
    /// builds no context and opens no preopen.
    wasi: Option<WasiCtx>,
    wasi_setup: WasiSetup,
    http: WasiHttpCtx,
    table: ResourceTable,
    caps: HostCaps,
    limiter: MemoryLimiter,
}

/// What a call's WASI context is built from, besides the directories
/// (`caps.fs`) and the tape (`caps.tape`).
struct WasiSetup {
    /// File syscalls run on the calling thread (a call on its own pool
    /// thread, or `inline_file_io`).
    blocking: bool,
    clock: Clock,
    dry_run: bool,
    addresses: Vec<ResolvedAddress>,
    /// Captured stdout and stderr, and why the context could not be built
    /// as granted; the caller keeps clones, so they can be read even when
    /// the `Store` stays behind on a stuck thread.
    output: Output,
}

#[derive(Clone)]
struct Output {
    stdout: BoundedOutput,
    stderr: BoundedOutput,
    /// Set when a grant could not be wired into WASI (a granted directory
    /// gone since the config loaded): the call went on without it, and its
    /// answer is replaced by this error.
    wasi_failed: Arc<OnceLock<String>>,
}

impl WasiSetup {
    /// The context every call starts from: stdout and stderr captured,
    /// the engine's wall clock; no directories, no sockets, no env.
    fn builder(&self) -> WasiCtxBuilder {
        let mut wasi = WasiCtxBuilder::new();
        // Must precede the preopens: each captures the flag when added.
        wasi.allow_blocking_current_thread(self.blocking)
            .stdout(self.output.stdout.clone())
            .stderr(self.output.stderr.clone())
            .wall_clock(self.clock);
        wasi
    }

    /// The call's context: its directories preopened, its addresses
    /// allowed, on a tape its clocks and randomness. A grant that cannot be
    /// wired in leaves the context without any grant and is reported after
    /// the call (an import cannot fail here).
    fn build(&self, caps: &HostCaps) -> WasiCtx {
        let mut wasi = self.builder();
        let configured = capabilities::configure_wasi(
            &caps.fs.dirs,
            &self.addresses,
            self.dry_run,
            self.clock,
            &caps.tape,
            &mut wasi,
        );
        match configured {
            Ok(()) => wasi.build(),
            Err(e) => {
                let _ = self.output.wasi_failed.set(format!("{e:#}"));
                self.builder().build()
            }
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let Self {
            wasi,
            wasi_setup,
            caps,
            table,
            ..
        } = self;
        WasiCtxView {
            ctx: wasi.get_or_insert_with(|| wasi_setup.build(caps)),
            table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.caps.http,
        }
    }
}

impl HasCaps for CallState {
    fn caps(&mut self) -> &mut HostCaps {
        &mut self.caps
    }
}

/// The pieces of a plugin a call needs (a `Plugin` is not complete until
/// its own `describe()` call has returned).
pub(crate) struct Target<'a> {
    pub name: &'a str,
    pub pre: &'a InstancePre<CallState>,
    pub exports: &'a Exports,
}

/// Everything about one call but the plugin.
pub(crate) struct CallSpec<'a> {
    pub grants: &'a ResolvedGrants,
    pub limits: Limits,
    pub clock: Clock,
    pub dry_run: bool,
    /// Told of each process a command of the call starts.
    pub on_spawn: Option<crate::capabilities::exec::SpawnHook>,
    /// Records or replays the host calls (off in the engine).
    pub tape: crate::tape::Tape,
}

pub(crate) struct Invoked {
    pub returned: Returned,
    pub fuel_used: u64,
    pub duration: Duration,
}

/// Calls of one plugin that may be past their deadline, still blocked in a
/// syscall on their thread, before further calls are refused.
pub const MAX_STUCK_CALLS: usize = 2;

/// Per plugin name, its calls that passed their deadline while their thread
/// was still blocked (kept across reloads of the plugin).
#[derive(Default)]
pub(crate) struct StuckCalls(Mutex<HashMap<String, Arc<AtomicUsize>>>);

impl StuckCalls {
    fn of(&self, plugin: &str) -> Arc<AtomicUsize> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(plugin) {
            return n.clone();
        }
        map.entry(plugin.to_string()).or_default().clone()
    }
}

/// Raised by the epoch callback once the deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineHit;

impl Runtime {
    pub(crate) async fn invoke(
        &self,
        target: Target<'_>,
        call: Call,
        spec: CallSpec<'_>,
    ) -> Result<Invoked, PluginError> {
        let name = target.name;
        let limits = spec.limits;
        let host_err = |message: String| PluginError::Host {
            plugin: name.into(),
            message,
        };
        // Only a call granted directories can block in a file syscall.
        let on_thread = !self.inline_file_io && !spec.grants.dirs.is_empty();
        let stuck = match on_thread {
            true => Some(self.stuck.of(name)),
            false => None,
        };
        if stuck
            .as_ref()
            .is_some_and(|n| n.load(Ordering::SeqCst) >= MAX_STUCK_CALLS)
        {
            return Err(PluginError::Budget {
                plugin: name.into(),
                budget: "stuck calls",
                limit: MAX_STUCK_CALLS as u64,
                detail: "calls past their deadline still blocked in a file syscall (a FIFO, a hung mount); refused until one returns".into(),
            });
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| host_err("runtime is shutting down".into()))?;

        let output = Output {
            stdout: BoundedOutput::new(self.output_limit),
            stderr: BoundedOutput::new(self.output_limit),
            wasi_failed: Arc::default(),
        };
        let wasi_setup = WasiSetup {
            blocking: on_thread || self.inline_file_io,
            clock: spec.clock,
            dry_run: spec.dry_run,
            addresses: spec.grants.addresses.clone(),
            output: output.clone(),
        };
        let caps = HostCaps::prepare(
            spec.grants,
            CallSetup {
                plugin: Arc::from(name),
                dry_run: spec.dry_run,
                clock: spec.clock,
                state: self.state.as_ref(),
                on_spawn: spec.on_spawn,
                tape: spec.tape,
            },
        );
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.resources);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(limits.http_field_bytes);
        let state = CallState {
            wasi: None,
            wasi_setup,
            http,
            table,
            limiter: MemoryLimiter::new(limits.memory),
            caps,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| host_err(e.to_string()))?;
        let started = Instant::now();
        let deadline = started + limits.deadline;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(DeadlineHit))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let result = if let Some(stuck) = stuck {
            on_pool_thread(store, &target, call, limits.deadline, permit, stuck).await
        } else {
            let result = tokio::time::timeout(
                limits.deadline,
                run(&mut store, target.pre, target.exports, call),
            )
            .await;
            let fuel_left = store.get_fuel().unwrap_or(0);
            drop(store);
            drop(permit);
            result.map(|r| (r, fuel_left))
        };
        let duration = started.elapsed();
        log_output(name, "stdout", &output.stdout);
        let stderr_text = log_output(name, "stderr", &output.stderr);

        if let Some(why) = output.wasi_failed.get() {
            return Err(host_err(why.clone()));
        }
        match result {
            Err(_elapsed) => Err(PluginError::DeadlineExceeded {
                plugin: name.into(),
                deadline: limits.deadline,
            }),
            Ok((Err(e), _)) => Err(classify(name, e, &limits, &stderr_text)),
            Ok((Ok(returned), fuel_left)) => Ok(Invoked {
                returned,
                fuel_used: limits.fuel.saturating_sub(fuel_left),
                duration,
            }),
        }
    }
}

async fn run(
    store: &mut Store<CallState>,
    pre: &InstancePre<CallState>,
    exports: &Exports,
    call: Call,
) -> wasmtime::Result<Returned> {
    let instance = pre.instantiate_async(&mut *store).await?;
    wit::call(store, &instance, exports, call).await
}

/// What a call ended with, and the fuel it left.
type Ran = (wasmtime::Result<Returned>, u64);

/// Runs the call on a blocking-pool thread (driving it with the runtime's
/// handle, so timers and sockets still work) and waits for it at most
/// `deadline`. A call still blocked then is left to its thread, counted in
/// `stuck` until it returns; the thread holds the call's slot (`permit`)
/// and its `Store` till then, and the epoch deadline ends its wasm as soon
/// as the syscall returns.
async fn on_pool_thread(
    mut store: Store<CallState>,
    target: &Target<'_>,
    call: Call,
    deadline: Duration,
    permit: tokio::sync::OwnedSemaphorePermit,
    stuck: Arc<AtomicUsize>,
) -> Result<Ran, tokio::time::error::Elapsed> {
    let handle = tokio::runtime::Handle::current();
    let pre = target.pre.clone();
    let exports = target.exports.clone();
    // Set by whichever side is done first: the thread (finished) or the
    // caller (gave up at the deadline).
    let settled = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::oneshot::channel::<Ran>();
    let job = {
        let settled = settled.clone();
        let stuck = stuck.clone();
        move || {
            let result = handle.block_on(run(&mut store, &pre, &exports, call));
            let fuel_left = store.get_fuel().unwrap_or(0);
            drop(store);
            drop(permit);
            if settled.swap(true, Ordering::SeqCst) {
                stuck.fetch_sub(1, Ordering::SeqCst);
            }
            let _ = tx.send((result, fuel_left));
        }
    };
    tokio::task::spawn_blocking(job);
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(ran)) => Ok(ran),
        Ok(Err(_)) => Ok((
            Err(wasmtime::Error::msg(
                "the call's thread ended without an answer",
            )),
            0,
        )),
        Err(elapsed) => {
            // Counted before settling, so the thread's decrement can never
            // come first.
            stuck.fetch_add(1, Ordering::SeqCst);
            if settled.swap(true, Ordering::SeqCst) {
                stuck.fetch_sub(1, Ordering::SeqCst);
            }
            Err(elapsed)
        }
    }
}

/// Logs what the plugin printed, tagged with its name and escaped; returns
/// stderr's text for error messages.
fn log_output(plugin: &str, stream: &'static str, out: &BoundedOutput) -> String {
    const MAX_LINES: usize = 100;
    let (text, dropped) = out.take();
    let lines: Vec<&str> = text.lines().collect();
    for line in lines.iter().take(MAX_LINES) {
        let line = crate::text::escape(line);
        if stream == "stderr" {
            tracing::warn!(target: "mend::plugin", plugin, stream, "{line}");
        } else {
            tracing::info!(target: "mend::plugin", plugin, stream, "{line}");
        }
    }
    if lines.len() > MAX_LINES || dropped > 0 {
        tracing::warn!(
            target: "mend::plugin",
            plugin,
            stream,
            more_lines = lines.len().saturating_sub(MAX_LINES),
            dropped_bytes = dropped,
            "plugin output truncated"
        );
    }
    text
}

/// Bytes of a panic message or of stderr kept in an error.
const MAX_STDERR_IN_ERROR: usize = 2048;
/// Lines of stderr attached to a trap that is not a panic.
const STDERR_TAIL_LINES: usize = 20;

/// Turns a wasmtime error into the typed error the operator sees.
fn classify(plugin: &str, e: wasmtime::Error, limits: &Limits, stderr: &str) -> PluginError {
    let plugin = plugin.to_string();
    if e.downcast_ref::<DeadlineHit>().is_some() {
        return PluginError::DeadlineExceeded {
            plugin,
            deadline: limits.deadline,
        };
    }
    if e.downcast_ref::<MemoryLimitExceeded>().is_some() {
        return PluginError::MemoryLimit {
            plugin,
            limit: limits.memory,
        };
    }
    if let Some(d) = e.downcast_ref::<crate::tape::Diverged>() {
        return PluginError::Host {
            plugin,
            message: d.to_string(),
        };
    }
    if let Some(t) = e.downcast_ref::<crate::tape::TooMuch>() {
        return PluginError::Host {
            plugin,
            message: t.to_string(),
        };
    }
    if let Some(denied) = e.downcast_ref::<crate::capabilities::http::NotGranted>() {
        return PluginError::Denied {
            plugin,
            message: denied.to_string(),
        };
    }
    if let Some(ResourceTableError::Full) = e.downcast_ref::<ResourceTableError>() {
        return PluginError::Budget {
            plugin,
            budget: "resources",
            limit: limits.resources as u64,
            detail: "open descriptors, streams, pollables and HTTP objects held at once".into(),
        };
    }
    let backtrace = e.downcast_ref::<WasmBacktrace>().map(|b| b.to_string());
    if let Some(trap) = e.downcast_ref::<Trap>() {
        match trap {
            Trap::OutOfFuel => {
                return PluginError::OutOfFuel {
                    plugin,
                    budget: limits.fuel,
                };
            }
            Trap::Interrupt => {
                return PluginError::DeadlineExceeded {
                    plugin,
                    deadline: limits.deadline,
                };
            }
            _ => {}
        }
        let base = match trap {
            Trap::StackOverflow => "wasm stack overflow (call stack too deep)".to_string(),
            other => other.to_string(),
        };
        return PluginError::Trap {
            plugin,
            message: with_stderr(base, stderr),
            backtrace,
        };
    }
    PluginError::Host {
        plugin,
        message: format!("{:#}", anyhow::Error::from(e)),
    }
}

/// A trap's message with what the plugin said last: a Python exception's
/// traceback (componentize-py prints it, then its runtime panics), a Rust
/// panic's whole message (from `panicked at`), or the last lines of stderr
/// (where a JavaScript runtime prints its exception before trapping).
fn with_stderr(base: String, stderr: &str) -> String {
    const TRACEBACK: &str = "Traceback (most recent call last):";
    let stderr = stderr.trim_end();
    if stderr.is_empty() {
        return base;
    }
    if let Some(at) = stderr.rfind("panicked at") {
        let line_start = stderr[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
        // The exception the runtime panicked over says more than the panic.
        if let Some(tb) = stderr[..line_start].rfind(TRACEBACK) {
            let exception = tail(stderr[tb..line_start].trim_end(), MAX_STDERR_IN_ERROR);
            return format!("{base}: {}", crate::text::escape(exception));
        }
        let panic = truncate(&stderr[line_start..], MAX_STDERR_IN_ERROR);
        return format!("{base}: {}", crate::text::escape(panic));
    }
    let lines: Vec<&str> = stderr.lines().collect();
    let last = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
    format!(
        "{base} (stderr: {})",
        crate::text::escape(tail(&last, MAX_STDERR_IN_ERROR))
    )
}

/// The last `max` bytes of `s` (at a character boundary): the newest
/// frames and the exception itself are at the end of a traceback.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::with_stderr;

    #[test]
    fn a_panic_keeps_its_whole_message() {
        let stderr = "starting\nthread '<unnamed>' panicked at src/lib.rs:60:25:\nhostile plugin panicked on purpose\nnote: run with `RUST_BACKTRACE=1`\n";
        let m = with_stderr("wasm trap: unreachable".into(), stderr);
        assert!(m.contains("panicked at src/lib.rs:60:25"), "{m}");
        assert!(m.contains("hostile plugin panicked on purpose"), "{m}");
        assert!(!m.contains("starting"), "{m}");
    }

    #[test]
    fn other_traps_get_the_last_lines_of_stderr() {
        let stderr = "Traceback (most recent call last):\n  File \"app.py\", line 3, in detect\nZeroDivisionError: division by zero\n";
        let m = with_stderr("wasm trap: unreachable".into(), stderr);
        assert!(m.contains("ZeroDivisionError: division by zero"), "{m}");
        assert!(m.contains("app.py"), "{m}");
        assert_eq!(with_stderr("x".into(), ""), "x");
    }

    /// componentize-py prints the traceback, then its runtime panics: the
    /// exception is what the operator needs, not `runtime/src/lib.rs`.
    #[test]
    fn a_python_exception_wins_over_the_runtime_panic() {
        let stderr = "noise\nTraceback (most recent call last):\n  File \"app.py\", line 9, in detect\nZeroDivisionError: division by zero\n\nthread '<unnamed>' panicked at runtime/src/lib.rs:612:18:\nPython function call failed\n";
        let m = with_stderr("wasm trap: unreachable".into(), stderr);
        assert!(m.contains("ZeroDivisionError: division by zero"), "{m}");
        assert!(m.contains("app.py"), "{m}");
        assert!(
            !m.contains("runtime/src/lib.rs") && !m.contains("noise"),
            "{m}"
        );
        let long = format!(
            "Traceback (most recent call last):\n{}\nValueError: last\nthread 'x' panicked at y",
            "  frame\n".repeat(2000)
        );
        let m = with_stderr("t".into(), &long);
        assert!(
            m.len() < 2600 && m.ends_with("ValueError: last"),
            "{}",
            m.len()
        );
    }
}
