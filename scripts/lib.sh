# Shared by scripts/run and scripts/test: install what this machine lacks.

# The wasm target the plugins are built for.
ensure_wasm_target() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install Rust with rustup first (https://rustup.rs)" >&2
        exit 1
    fi
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        echo "==> installing the wasm32-wasip2 target"
        rustup target add wasm32-wasip2
    fi
}

# Every guest crate (bundled plugins and test fixtures), as `-p NAME` args.
guest_packages() {
    local manifest
    for manifest in plugins/*/Cargo.toml "$@"; do
        [ -f "$manifest" ] || continue
        printf -- '-p %s ' "$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n1)"
    done
}

# Headless Chromium, for the dashboard's end-to-end test (tests/dashboard.rs).
# Not fatal: without it that test skips and says why.
ensure_chromium() {
    if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing chromium (for the dashboard test)"
        if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 ||
            { apt-get update >/dev/null 2>&1 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }; }; then
            echo "    could not install chromium; the dashboard test will skip" >&2
        fi
    else
        echo "    chromium missing and not root with apt-get; the dashboard test will skip" >&2
    fi
}
