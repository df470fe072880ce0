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

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{InstancePre, ResourceTable, ResourceTableError};
use wasmtime::{Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::Runtime;
use super::error::PluginError;
use super::limits::{Limits, MemoryLimitExceeded, MemoryLimiter};
use crate::capabilities::output::BoundedOutput;
use crate::capabilities::{CallSetup, HasCaps, HostCaps, ResolvedGrants};
use crate::clock::Clock;
use crate::text::truncate;
use crate::wit::{self, Call, Exports, Returned};

/// The data of one call's `Store`.
pub struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    caps: HostCaps,
    limiter: MemoryLimiter,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
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
}

pub(crate) struct Invoked {
    pub returned: Returned,
    pub fuel_used: u64,
    pub duration: Duration,
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
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| host_err("runtime is shutting down".into()))?;

        let stdout = BoundedOutput::new(self.output_limit);
        let stderr = BoundedOutput::new(self.output_limit);
        let mut wasi = WasiCtxBuilder::new();
        // Must precede the preopens: each captures the flag when added.
        wasi.allow_blocking_current_thread(self.inline_file_io)
            .stdout(stdout.clone())
            .stderr(stderr.clone());
        let caps = HostCaps::prepare(
            spec.grants,
            CallSetup {
                plugin: Arc::from(name),
                dry_run: spec.dry_run,
                clock: spec.clock,
                state: self.state.as_ref(),
                on_spawn: spec.on_spawn,
            },
            &mut wasi,
        )
        .map_err(|e| host_err(format!("{e:#}")))?;
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.resources);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(limits.http_field_bytes);
        let state = CallState {
            wasi: wasi.build(),
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

        let result = tokio::time::timeout(limits.deadline, run(&mut store, &target, call)).await;
        let duration = started.elapsed();
        let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        drop(store);
        log_output(name, "stdout", &stdout);
        let stderr_text = log_output(name, "stderr", &stderr);

        match result {
            Err(_elapsed) => Err(PluginError::DeadlineExceeded {
                plugin: name.into(),
                deadline: limits.deadline,
            }),
            Ok(Err(e)) => Err(classify(name, e, &limits, &stderr_text)),
            Ok(Ok(returned)) => Ok(Invoked {
                returned,
                fuel_used,
                duration,
            }),
        }
    }
}

async fn run(
    store: &mut Store<CallState>,
    target: &Target<'_>,
    call: Call,
) -> wasmtime::Result<Returned> {
    let instance = target.pre.instantiate_async(&mut *store).await?;
    wit::call(store, &instance, target.exports, call).await
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
