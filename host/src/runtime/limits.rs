//! Per-call resource limits, and the memory limiter that enforces the cap
//! across *all* linear memories of an instance (wasmtime's `StoreLimits`
//! caps each memory separately, and a component can have several).
//!
//! Memory the guest can make the *host* hold is bounded too: every open
//! descriptor, stream, pollable and HTTP object lives in the call's
//! resource table, capped at `resources` entries; HTTP header sets are
//! capped at `http_field_bytes` each and request bodies buffer at most
//! [`BODY_BUFFER`](crate::capabilities::http::BODY_BUFFER) each. So a call
//! holds at most about `resources × max(http_field_bytes, BODY_BUFFER)` of host memory in
//! resources (16 MiB with the defaults), and at most `resources` host file
//! descriptors.

use std::time::Duration;

use serde::Serialize;
use wasmtime::ResourceLimiter;

/// Limits for one plugin call. Every call gets a fresh instance with these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Fuel budget: roughly one unit per wasm instruction. 1e8 is about 10 ms
    /// of tight loop on a 2020s core.
    pub fuel: u64,
    /// Wall-clock deadline for the whole call, host calls included.
    #[serde(with = "humantime_serde_compat")]
    pub deadline: Duration,
    /// Total bytes of linear memory the instance may hold.
    pub memory: usize,
    /// Host resource-table entries the call may hold at once.
    pub resources: usize,
    /// Bytes of one HTTP header (or trailer) set.
    pub http_field_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 1_000_000_000,
            deadline: Duration::from_secs(5),
            memory: 64 << 20,
            resources: 256,
            http_field_bytes: 64 << 10,
        }
    }
}

mod humantime_serde_compat {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// Wasm instances, tables and memories one call may create. Rust guests need
/// a handful of each; hostile ones get no more.
const MAX_INSTANCES: usize = 32;
const MAX_TABLES: usize = 32;
const MAX_MEMORIES: usize = 8;
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Raised (as the error of a failed `memory.grow`) when a call would exceed
/// its memory cap. The runtime turns it into `PluginError::MemoryLimit`.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (asked for {requested} in total)")]
pub struct MemoryLimitExceeded {
    pub limit: usize,
    pub requested: usize,
}

/// Counts linear memory across every memory of one instance.
pub(crate) struct MemoryLimiter {
    limit: usize,
    used: usize,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: usize) -> Self {
        MemoryLimiter { limit, used: 0 }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let requested = self.used - current.min(self.used) + desired;
        if requested > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: self.limit,
                requested,
            }));
        }
        self.used = requested;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
    fn tables(&self) -> usize {
        MAX_TABLES
    }
    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_counted_across_memories() {
        let mut l = MemoryLimiter::new(100);
        assert!(l.memory_growing(0, 60, None).unwrap());
        // A second memory: 60 + 50 > 100 even though each is under the cap.
        let err = l.memory_growing(0, 50, None).unwrap_err();
        let e = err.downcast_ref::<MemoryLimitExceeded>().unwrap();
        assert_eq!(e.requested, 110);
        // Growing the first memory within the cap still works.
        assert!(l.memory_growing(60, 90, None).unwrap());
        assert!(l.memory_growing(0, 10, None).unwrap());
        assert!(l.memory_growing(0, 1, None).is_err());
    }

    #[test]
    fn tables_are_capped() {
        let mut l = MemoryLimiter::new(0);
        assert!(l.table_growing(0, MAX_TABLE_ELEMENTS, None).unwrap());
        assert!(!l.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap());
    }
}
