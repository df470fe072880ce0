//! mend: a self-healing engine for servers and services.
//!
//! Detectors and recovery actions are WebAssembly components (the WIT
//! contract lives in `wit/`), run in a sandbox with only the capabilities an
//! operator grants. This crate is the host:
//!
//! Data flows one way:
//!
//! - [`values`], [`clock`], [`text`], [`private_fs`]: leaf helpers.
//! - [`contract`]: the host's plain-Rust view of what plugins are asked and
//!   return.
//! - [`capabilities`]: one module per grant kind, version-neutral.
//! - [`wit`]: the WIT boundary, one module per contract version.
//! - [`runtime`]: the wasmtime engine, compile cache and per-call sandbox.
//! - [`config`]: `mend.toml`, parsed and validated with positions.
//! - [`policy`]: pure policy logic (triggers, health, flapping, breakers...).
//! - [`engine`]: the detect → diagnose → recover → verify loop.
//! - [`store`]: the crash-safe incident store (SQLite).
//! - [`fleet`]: fleet mode: budgets, alert intake and events shared through NATS.
//! - [`metrics`]: Prometheus metrics the engine records.
//! - [`service`]: systemd notify, signals, plugin hot reload.
//! - [`api`]: the admin HTTP API, metrics endpoint and dashboard.
//! - [`cli`]: the `mend` command line.
//! - [`crash`]: crash points the chaos tests set (`MEND_CRASH_AT`), inert otherwise.

pub mod api;
pub mod capabilities;
pub mod cli;
pub mod clock;
pub mod config;
pub mod contract;
pub mod crash;
pub mod engine;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod private_fs;
pub mod runtime;
pub mod service;
pub mod store;
pub mod tape;
pub mod text;
pub mod values;
pub mod wit;
