//! Paths of mend's plugins and test fixtures, built for `wasm32-wasip2` by
//! this crate's build script. Tests and benchmarks use these constants.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
