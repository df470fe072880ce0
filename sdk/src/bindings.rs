//! The generated WIT bindings. Private: plugin authors use the plain Rust
//! types re-exported from the crate root.

wit_bindgen::generate!({
    path: "../wit",
    world: "plugin",
    pub_export_macro: true,
    default_bindings_module: "mend_sdk::__private::bindings",
    runtime_path: "mend_sdk::__private::wit_bindgen::rt",
});
