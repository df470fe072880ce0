//! One plugin call: a fresh `Store` and instance with its limits, the
//! grants wired in, the export invoked, and every failure classified.
//!
//! Limits per call: a fuel budget (reported back), a wall-clock deadline
//! enforced twice (epoch interruption for wasm that computes, a tokio
//! timeout for wasm waiting in a host call), a memory cap across all
//! memories, and the engine's wasm stack limit. The epoch callback also
//! yields to tokio on every tick, so a long call never stalls the executor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::Runtime;
use super::bindings::v0_1::types;
use super::error::PluginError;
use super::limits::{Limits, MemoryLimitExceeded, MemoryLimiter};
use super::output::BoundedOutput;
use super::plugin::Exports;
use crate::capabilities::{self, HasCaps, HostCaps, ResolvedGrants};

/// The data of one call's `Store`.
pub struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: capabilities::http::HttpHooks,
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
            hooks: &mut self.http_hooks,
        }
    }
}

impl HasCaps for CallState {
    fn caps(&mut self) -> &mut HostCaps {
        &mut self.caps
    }
}

/// Which export to call.
pub(crate) enum Call {
    Describe,
    Detect(types::Invocation),
    Remedy(types::RemedyRequest, bool),
}

/// What the export returned.
pub(crate) enum Returned {
    Manifest(types::Manifest),
    Findings(Result<Vec<types::Finding>, types::PluginError>),
    Outcome(Result<types::Outcome, types::PluginError>),
}

/// The pieces of a plugin a call needs (a `Plugin` is not complete until
/// its own `describe()` call has returned).
pub(crate) struct Target<'a> {
    pub name: &'a str,
    pub pre: &'a wasmtime::component::InstancePre<CallState>,
    pub exports: &'a Exports,
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
        grants: &ResolvedGrants,
        limits: Limits,
    ) -> Result<Invoked, PluginError> {
        let name = target.name;
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
        capabilities::fs::preopen(&mut wasi, &grants.dirs)
            .map_err(|e| host_err(format!("{e:#}")))?;
        capabilities::net::configure(&mut wasi, &grants.addresses);

        let plugin: Arc<str> = name.into();
        let dry_run = matches!(call, Call::Remedy(_, true));
        let state = CallState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            http_hooks: capabilities::http::HttpHooks {
                plugin: plugin.clone(),
                grants: grants.urls.clone(),
            },
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits.memory),
            caps: HostCaps {
                log: capabilities::log::LogCap::new(plugin.clone()),
                clock: capabilities::clock::ClockCap {
                    clock: self.clock.clone(),
                },
                exec: capabilities::exec::ExecCap {
                    plugin: plugin.clone(),
                    commands: grants.commands.clone(),
                    dry_run,
                },
                sql: capabilities::sql::SqlCap {
                    connections: grants.postgres(),
                },
                redis: capabilities::redis::RedisCap {
                    connections: grants.redis(),
                },
                state: capabilities::state::StateCap {
                    plugin,
                    store: if grants.state {
                        self.state.clone()
                    } else {
                        None
                    },
                },
                fs: capabilities::fs::FsCap {
                    dirs: grants.dirs.clone(),
                },
            },
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
    Ok(match call {
        Call::Describe => {
            let meta = target.exports.meta.load(&mut *store, &instance)?;
            Returned::Manifest(meta.call_describe(&mut *store).await?)
        }
        Call::Detect(input) => {
            let idx = target.exports.detection.as_ref().ok_or_else(|| {
                wasmtime::format_err!("the component does not export mend:plugin/detection")
            })?;
            let detection = idx.load(&mut *store, &instance)?;
            Returned::Findings(detection.call_detect(&mut *store, &input).await?)
        }
        Call::Remedy(request, dry_run) => {
            let idx = target.exports.remediation.as_ref().ok_or_else(|| {
                wasmtime::format_err!("the component does not export mend:plugin/remediation")
            })?;
            let remediation = idx.load(&mut *store, &instance)?;
            Returned::Outcome(
                remediation
                    .call_remedy(&mut *store, &request, dry_run)
                    .await?,
            )
        }
    })
}

/// Logs what the plugin printed, tagged with its name; returns stderr's
/// text for error messages.
fn log_output(plugin: &str, stream: &'static str, out: &BoundedOutput) -> String {
    const MAX_LINES: usize = 100;
    let (text, dropped) = out.take();
    let lines: Vec<&str> = text.lines().collect();
    for line in lines.iter().take(MAX_LINES) {
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
        let mut message = match trap {
            Trap::StackOverflow => "wasm stack overflow (call stack too deep)".to_string(),
            other => other.to_string(),
        };
        // A Rust panic prints its message to stderr before trapping.
        if let Some(panic) = stderr.lines().rev().find(|l| l.contains("panicked")) {
            message = format!("{message}: {}", capabilities::log::truncate(panic, 1024));
        } else if let Some(last) = stderr.lines().rev().find(|l| !l.trim().is_empty()) {
            message = format!(
                "{message} (stderr: {})",
                capabilities::log::truncate(last, 1024)
            );
        }
        return PluginError::Trap {
            plugin,
            message,
            backtrace,
        };
    }
    PluginError::Host {
        plugin,
        message: format!("{:#}", anyhow::Error::from(e)),
    }
}
