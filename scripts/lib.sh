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

# Installs Debian packages that are missing (as root, or with sudo).
apt_install() {
    local missing=()
    local p
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

# PostgreSQL (127.0.0.1:5432, trust auth for local connections) and Redis
# (127.0.0.1:6379) for the tests of the database and cache plugins. Tests
# use their own database or key prefix; outage tests start disposable
# servers from the same binaries.
ensure_services() {
    local installed_pg=""
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        apt_install postgresql postgresql-client
        installed_pg=1
    fi
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
    if [ -z "$version" ]; then
        version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
        pg_createcluster "$version" main
        installed_pg=1
    fi
    if [ -n "$installed_pg" ]; then
        # A server installed here for the tests: password-less local access.
        sed -i '1i # mend-tests\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust' \
            "/etc/postgresql/$version/main/pg_hba.conf"
        pg_ctlcluster --skip-systemctl-redirect "$version" main restart 2>/dev/null || true
    fi
    if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        echo "==> starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
    fi
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        echo "==> starting Redis"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" \
            --appendonly no --dir /var/lib/redis --logfile /var/log/redis/mend-tests.log
    fi
    ensure_nats
}

# NATS with JetStream (127.0.0.1:4222) for fleet mode's tests, which use
# their own bucket and stream names; the multi-host tests start their own
# server inside a network namespace.
ensure_nats() {
    if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
        apt_install nats-server
    fi
    local nats
    nats=$(command -v nats-server || echo /usr/sbin/nats-server)
    if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
        echo "==> starting NATS (JetStream)"
        mkdir -p /var/lib/nats-mend-tests
        "$nats" -js -a 127.0.0.1 -p 4222 -sd /var/lib/nats-mend-tests \
            -l /var/log/nats-mend-tests.log >/dev/null 2>&1 &
        disown || true
        local i
        for i in $(seq 1 50); do
            (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break
            sleep 0.1
        done
    fi
}

# Tools the multi-host fleet tests use (network namespaces, partitions by
# nftables). Not fatal: without them those tests skip and say why.
ensure_netns_tools() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt_install iproute2 nftables curl || echo "    could not install iproute2/nftables/curl; the multi-host fleet tests may skip" >&2
    fi
}

# Headless Chromium, for the dashboard's end-to-end test (tests/service.rs).
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

# Pinned tool versions (scripts/test and scripts/deb install these).
CARGO_DEB_VERSION=3.8.0
SCHEMATHESIS_VERSION=4.32.5

# promtool, for the metrics test (tests/service.rs). Debian ships it in
# the prometheus package; only the binary is taken (unpacked into
# target/tools, so no Prometheus server is installed or started). Not
# fatal: without it that test skips and says why.
ensure_promtool() {
    if command -v promtool >/dev/null 2>&1 || [ -x target/tools/usr/bin/promtool ]; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || { echo "    no apt-get: the promtool test will skip" >&2; return 0; }
    echo "==> fetching promtool (Debian's prometheus package, unpacked into target/tools)"
    mkdir -p target/tools/deb
    if ! (cd target/tools/deb && { apt-get download prometheus >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }; }); then
        echo "    could not download prometheus; the promtool test will skip" >&2
        return 0
    fi
    dpkg-deb -x target/tools/deb/prometheus_*.deb target/tools/root
    mkdir -p target/tools/usr/bin
    cp target/tools/root/usr/bin/promtool target/tools/usr/bin/promtool
    rm -rf target/tools/root target/tools/deb
}

# cargo-deb, pinned, for scripts/deb and the package test.
ensure_cargo_deb() {
    if cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
        return 0
    fi
    echo "==> installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
}

CARGO_DENY_VERSION=0.20.2

# cargo-deny, pinned, for the supply-chain gate in scripts/test.
ensure_cargo_deny() {
    if cargo deny --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
        return 0
    fi
    echo "==> installing cargo-deny $CARGO_DENY_VERSION"
    cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked
}

# cargo-fuzz, pinned, for scripts/fuzz (libFuzzer targets in host/fuzz;
# run with RUSTC_BOOTSTRAP=1, as only the stable toolchain is installed).
CARGO_FUZZ_VERSION=0.13.2
ensure_cargo_fuzz() {
    if cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
        return 0
    fi
    echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
}

# schemathesis, pinned, in its own virtualenv (target/tools/venv), for
# scripts/api-fuzz. Not fatal for scripts/test.
ensure_schemathesis() {
    local st=target/tools/venv/bin/schemathesis
    if [ -x "$st" ] && "$st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
        return 0
    fi
    echo "==> installing schemathesis $SCHEMATHESIS_VERSION (target/tools/venv)"
    python3 -m venv target/tools/venv &&
        target/tools/venv/bin/pip install -q "schemathesis==$SCHEMATHESIS_VERSION"
}

# Pinned guest toolchains for Python and JavaScript plugins (tests/polyglot.rs,
# `mend plugin new --lang python|js`).
COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0

# componentize-py, pinned, in its own virtualenv
# (target/tools/componentize-py/bin/componentize-py).
ensure_componentize_py() {
    local venv=target/tools/componentize-py
    if [ -x "$venv/bin/componentize-py" ] &&
        "$venv/bin/componentize-py" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY_VERSION"; then
        return 0
    fi
    echo "==> installing componentize-py $COMPONENTIZE_PY_VERSION ($venv)"
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY_VERSION"
}

# componentize-js, pinned, from npm into target/tools/componentize-js (never
# a committed node_modules).
ensure_componentize_js() {
    local dir=target/tools/componentize-js
    local pkg=$dir/node_modules/@bytecodealliance/componentize-js/package.json
    if [ -x "$dir/node_modules/.bin/componentize-js" ] &&
        grep -q "\"version\": \"$COMPONENTIZE_JS_VERSION\"" "$pkg" 2>/dev/null; then
        return 0
    fi
    echo "==> installing componentize-js $COMPONENTIZE_JS_VERSION ($dir)"
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error \
        "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION" >/dev/null
}
