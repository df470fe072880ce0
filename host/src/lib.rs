//! mend: a self-healing engine for servers and services.
//!
//! Detectors and recovery actions are WebAssembly components (the WIT
//! contract lives in `wit/`), run in a sandbox with only the capabilities an
//! operator grants. This crate is the host:
//!
//! - [`contract`]: the host's plain-Rust view of what plugins return.
//! - [`runtime`]: the wasmtime engine, compile cache and per-call sandbox.
//! - [`capabilities`]: one module per grant kind, each linking its imports.
//! - [`cli`]: the `mend` command line.

pub mod capabilities;
pub mod cli;
pub mod contract;
pub mod runtime;
