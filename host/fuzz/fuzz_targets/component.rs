//! Arbitrary bytes as a plugin component, through the runtime's whole
//! load path (sniff, compile, contract version, link, `describe()` in
//! the sandbox, the manifest bounds). Property: it never panics and a
//! plugin it accepts has a valid name and a bounded, printable manifest.
#![no_main]

use std::sync::OnceLock;

use mend::runtime::{Runtime, RuntimeConfig};
use mend_fuzz::{assert_needs, assert_plain, assert_printable};

fn setup() -> &'static (tokio::runtime::Runtime, Runtime) {
    static SETUP: OnceLock<(tokio::runtime::Runtime, Runtime)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let runtime = rt.block_on(async { Runtime::new(RuntimeConfig::default()).unwrap() });
        (rt, runtime)
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (rt, runtime) = setup();
    let Ok(plugin) = rt.block_on(runtime.load_bytes("fuzz", data.to_vec(), None)) else {
        return;
    };
    let m = plugin.manifest();
    mend::runtime::valid_name(&m.name).unwrap();
    assert_plain("version", &m.version);
    assert_printable("description", &m.description);
    assert!(!m.roles.is_empty() && m.roles.len() <= 2);
    for r in &m.roles {
        assert_needs(&r.needs);
    }
});
