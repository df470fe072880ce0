//! The test process's own memory, from `/proc/self/status`: how much a
//! call made the host hold at its peak.

/// A `VmXxx:` line of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
        * 1024
}

pub fn rss() -> u64 {
    status_bytes("VmRSS")
}

/// Peak RSS since start or the last [`reset_peak`].
pub fn hwm() -> u64 {
    status_bytes("VmHWM")
}

/// Resets VmHWM to the current RSS (Linux 4.0+: `5` > clear_refs).
pub fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", b"5").expect("resetting VmHWM");
}

/// Runs `f` and returns its value and how far the host's RSS peaked above
/// where it started.
pub async fn peak_growth<T>(f: impl AsyncFnOnce() -> T) -> (T, u64) {
    reset_peak();
    let before = rss();
    let v = f().await;
    let peak = hwm();
    (v, peak.saturating_sub(before))
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}
