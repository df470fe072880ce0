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
