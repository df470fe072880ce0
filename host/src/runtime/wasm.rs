//! The one wasmtime `Engine` (the WebAssembly engine, not the healing
//! engine of `crate::engine`) and the epoch ticker.
//!
//! Every call runs with fuel metering (a deterministic budget, reported
//! back) and epoch interruption (the wall-clock deadline). The pooling
//! allocator makes a fresh instance per call cheap; where the address space
//! is too small for the pool, we fall back to on-demand allocation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Engine-wide settings. Per-call limits are in [`super::Limits`].
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Plugin calls that may run at once (instance pool size).
    pub max_concurrent_calls: u32,
    /// The largest single linear memory any plugin may have.
    pub max_memory_size: usize,
    /// Wasm stack limit for every call.
    pub wasm_stack: usize,
    /// How often the epoch advances; deadlines are this precise.
    pub epoch_tick: Duration,
    /// Use the pooling allocator (falls back to on-demand if it cannot).
    pub pooling: bool,
    /// Bytes of each pooled memory (and async stack) kept resident between
    /// calls and reset in place, instead of being handed back to the kernel
    /// and faulted in again by the next call. With Linux's `PAGEMAP_SCAN`
    /// (6.7+) only the pages a call touched are reset.
    pub keep_resident: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_concurrent_calls: 64,
            max_memory_size: 1 << 30,
            wasm_stack: 512 << 10,
            epoch_tick: Duration::from_millis(2),
            pooling: true,
            keep_resident: 2 << 20,
        }
    }
}

/// Which instance allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    Pooling,
    OnDemand,
}

fn config(s: &EngineSettings, pooling: bool) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(s.wasm_stack)
        .async_stack_size(s.wasm_stack + (1 << 20))
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    if pooling {
        let n = s.max_concurrent_calls;
        let mut p = PoolingAllocationConfig::default();
        p.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memory_size(s.max_memory_size)
            .linear_memory_keep_resident(s.keep_resident)
            .table_keep_resident(s.keep_resident.min(1 << 20))
            .async_stack_keep_resident(s.keep_resident.min(1 << 20))
            .pagemap_scan(wasmtime::Enabled::Auto);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

/// The configuration plugins are compiled with: the runtime's, without
/// the pooling allocator (which only shapes instances, not code), so a
/// throwaway engine of it costs no address-space reservation.
pub(crate) fn compiler_config(s: &EngineSettings) -> Config {
    config(s, false)
}

pub(crate) fn build(s: &EngineSettings) -> anyhow::Result<(Engine, Allocator)> {
    if s.pooling {
        match Engine::new(&config(s, true)) {
            Ok(e) => return Ok((e, Allocator::Pooling)),
            Err(e) => tracing::warn!(
                error = %e,
                "pooling allocator unavailable (address space too small?); using on-demand allocation"
            ),
        }
    }
    let engine = Engine::new(&config(s, false)).map_err(anyhow::Error::from)?;
    Ok((engine, Allocator::OnDemand))
}

/// Advances the engine's epoch every tick, on its own thread, until dropped.
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    pub(crate) fn start(engine: &Engine, tick: Duration) -> Self {
        let weak = engine.weak();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("mend-epoch".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning the epoch ticker thread");
        Ticker {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
