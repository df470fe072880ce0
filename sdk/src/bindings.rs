//! The generated WIT bindings. Private: plugin authors use the plain Rust
//! types re-exported from the crate root.
//!
//! `wit/plugin.wit` inside this crate is `mend:plugin@0.2.0`, a copy of the
//! repository's `wit/0.2.0/plugin.wit` (a test keeps the two identical), so
//! the crate builds from its package alone.

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
    pub_export_macro: true,
    default_bindings_module: "mend_sdk::__private::bindings",
    runtime_path: "mend_sdk::__private::wit_bindgen::rt",
});
