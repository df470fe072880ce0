//! systemd's notify protocol (`Type=notify`), through the sd-notify crate:
//! `READY=1` once every check is scheduled, `RELOADING=1`/`STOPPING=1`,
//! a `STATUS=` line, and `WATCHDOG=1` forwarded from the engine's own
//! heartbeat, so a stalled engine stops the pings and systemd restarts
//! it. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::engine::Engine;
use crate::policy::health::Health;

#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    /// `WATCHDOG_USEC`, when systemd expects pings.
    watchdog: Option<Duration>,
    /// `NOTIFY_SOCKET` is set: systemd listens.
    listening: bool,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let watchdog = watchdog_usec(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
        );
        if let Some(d) = watchdog {
            tracing::info!(watchdog = ?d, "systemd watchdog enabled");
        }
        Notifier {
            watchdog,
            listening: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.listening {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!("notifying systemd: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[
                NotifyState::Reloading,
                now,
                NotifyState::Status("reloading the config"),
            ]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: letting work in flight finish"),
        ]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// How often the engine should beat: half of `WatchdogSec`, as
    /// systemd recommends (the engine beats at least once a second).
    pub fn heartbeat_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    fn ping(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }
}

/// `WATCHDOG_USEC`, if it applies to this process: as
/// `sd_watchdog_enabled(3)`, `WATCHDOG_PID` (when set) must be ours.
fn watchdog_usec(usec: Option<&str>, pid: Option<&str>) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// One line on what mend is doing, for `systemctl status`.
pub fn status_line(engine: &Engine) -> String {
    let counts = engine.health_counts();
    let count = |h: Health| counts.get(&h).copied().unwrap_or(0);
    let open = engine.store().open_incident_count().unwrap_or(0);
    let mut s = format!(
        "{} checks: {} healthy, {} degraded, {} unavailable, {} unknown; {} open incident(s)",
        counts.values().sum::<usize>(),
        count(Health::Healthy),
        count(Health::Degraded),
        count(Health::Unavailable),
        count(Health::Unknown),
        open
    );
    if engine.paused().is_some() {
        s.push_str("; PAUSED");
    }
    s
}

/// Forwards `engine`'s heartbeats to systemd until the engine stops:
/// `READY=1` with the first (every check is scheduled), then `WATCHDOG=1`
/// with each, and `STATUS=` whenever the line changes.
pub async fn forward_heartbeats(
    engine: Arc<Engine>,
    mut beats: tokio::sync::watch::Receiver<u64>,
    notifier: Notifier,
) {
    // Outside systemd no one reads the status line: build none.
    if !notifier.listening {
        return;
    }
    let mut last = String::new();
    let mut first = true;
    while beats.changed().await.is_ok() {
        let status = status_line(&engine);
        if first {
            notifier.ready(&status);
            first = false;
        } else if status != last {
            notifier.status(&status);
        }
        notifier.ping();
        last = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_applies_to_this_process_only() {
        let me = std::process::id().to_string();
        assert_eq!(
            watchdog_usec(Some("3000000"), None),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            watchdog_usec(Some("3000000"), Some(&me)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(watchdog_usec(Some("3000000"), Some("1")), None);
        assert_eq!(watchdog_usec(Some("0"), None), None);
        assert_eq!(watchdog_usec(None, None), None);
    }
}
