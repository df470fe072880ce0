//! mend's own liveness. The status-page incident was a poller that died
//! silently; mend must not. Every check task is supervised and restarted if
//! it panics, and a watchdog records any check that missed twice its
//! interval. The same watchdog beats a heartbeat (systemd's `WATCHDOG=1`)
//! only while no check task is stalled, so a wedged engine is restarted
//! from outside. Housekeeping (history retention) runs here too.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::shutdown::{self, Shutdown};
use super::{Engine, lock};
use crate::store::WatchdogEvent;

/// Runs every check (supervised), the watchdog and housekeeping until
/// `external` fires or a policy asks mend to exit; then lets work in flight
/// finish.
pub(super) async fn run(engine: Arc<Engine>, mut external: Shutdown) {
    let (trigger, shutdown) = shutdown::channel();
    let mut tasks = JoinSet::new();
    for idx in 0..engine.checks.len() {
        tasks.spawn(supervise(engine.clone(), idx, shutdown.clone()));
    }
    tasks.spawn(watchdog(engine.clone(), shutdown.clone()));
    tasks.spawn(housekeeping(engine.clone(), shutdown.clone()));
    engine.accepting.store(true, Ordering::Release);
    // Every check is scheduled: the first heartbeat says so.
    beat(&engine);
    tokio::select! {
        _ = external.fired() => {}
        _ = engine.exit_requested.notified() => {}
    }
    engine.accepting.store(false, Ordering::Release);
    trigger.fire();
    // Sleeping check tasks wait on their own `wake`, not on `shutdown`.
    for slot in &engine.checks {
        slot.wake.notify_one();
    }
    while tasks.join_next().await.is_some() {}
    engine.drop_commands();
}

fn beat(engine: &Engine) {
    engine
        .last_beat
        .store(engine.clock.now(), Ordering::Relaxed);
    engine.heartbeat.send_modify(|n| *n += 1);
}

/// Keeps check `idx` running: a panic is logged and its loop restarted,
/// in the same task (one task per check, not a supervisor task and a
/// check task).
async fn supervise(engine: Arc<Engine>, idx: usize, mut shutdown: Shutdown) {
    let mut restarts = 0u32;
    loop {
        let run = Box::pin(check_loop(engine.clone(), idx, shutdown.clone()));
        match CatchPanic(run).await {
            Ok(()) => return,
            Err(_) => {
                restarts += 1;
                let name = &engine.plan.checks[idx].name;
                tracing::error!(check = %name, restarts, "check task panicked; restarting it");
                lock(&engine.checks[idx].state).remediating = false;
                if !shutdown.sleep(Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    }
}

/// A future whose panic becomes `Err`, as a task's would.
struct CatchPanic<F>(F);

impl<F: Future + Unpin> Future for CatchPanic<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(p) => p.map(Ok),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// One check's schedule: its own interval plus jitter, no global tick.
async fn check_loop(engine: Arc<Engine>, idx: usize, shutdown: Shutdown) {
    let slot = &engine.checks[idx];
    let interval = engine.plan.checks[idx].interval;
    let jitter = engine.plan.checks[idx].jitter;
    let spread = |j: Duration| j.mul_f64(fastrand::f64());
    // The first run is at once: a check with `interval = "1h"` must not
    // say "never" for up to an hour. Jitter spreads the later runs (and
    // the bulkhead bounds a herd at start).
    let mut due = Instant::now();
    loop {
        // Two waits per sleep, both this check's own: its timer and its
        // `wake` (commands; shutdown wakes every check through it too), not
        // a waiter on the shared shutdown channel each time round.
        tokio::select! {
            _ = tokio::time::sleep_until(on_grid(engine.wake_epoch, due)) => {}
            _ = slot.wake.notified() => {
                // Operator commands, between scheduled runs.
                while !shutdown.is_fired()
                    && let Some(cmd) = engine.next_command(idx)
                {
                    Box::pin(engine.handle(idx, cmd, &shutdown)).await;
                }
                if shutdown.is_fired() {
                    return;
                }
                continue;
            }
        }
        if shutdown.is_fired() {
            return;
        }
        // The slot first, then the call boxed: a check sleeping or waiting
        // for a slot then holds a few bytes, not the whole (large) state
        // machine of a plugin call. It matters with thousands of checks.
        let slot_permit = engine.scheduled_slot(due).await;
        let result = Arc::new(Box::pin(engine.detect_holding(idx, slot_permit)).await);
        engine.observe(idx, result.clone());
        if shutdown.is_fired() {
            return; // no new incident while stopping
        }
        lock(&slot.state).remediating = true;
        Box::pin(engine.evaluate(idx, &result, &shutdown)).await;
        lock(&slot.state).remediating = false;
        // Stay on the grid unless a remediation made us fall behind.
        due = (due + interval).max(Instant::now()) + spread(jitter);
    }
}

/// Scheduled wake-ups are batched on a grid of this: the checks due within
/// one slot wake together, so the runtime's workers run them in a burst
/// and park once, not once per check (at 50,000 checks a second: 250 a
/// slot instead of one wake-up every 20 µs). Lag is still measured from
/// the true due time.
const WAKE_GRID: Duration = Duration::from_millis(5);

/// `due`, rounded up to the wake-up grid that starts at `epoch`.
fn on_grid(epoch: Instant, due: Instant) -> Instant {
    let grid = WAKE_GRID.as_nanos();
    let since = due.saturating_duration_since(epoch).as_nanos();
    let slots = since.div_ceil(grid);
    epoch + Duration::from_nanos((slots * grid) as u64)
}

/// Records checks that missed twice their interval (a stuck plugin call
/// past its deadline, a starved runtime, a bug).
async fn watchdog(engine: Arc<Engine>, mut shutdown: Shutdown) {
    let started = engine.clock.now();
    let mut stalled_before = false;
    loop {
        let tick = Duration::from_millis(engine.beat_every_ms.load(Ordering::Relaxed));
        if !shutdown.sleep(tick).await {
            break;
        }
        // A store that could not write: is there room again?
        engine.store.probe_fault();
        let now = engine.clock.now();
        let mut stalled = None;
        for (check, slot) in engine.plan.checks.iter().zip(&engine.checks) {
            let interval = check.interval;
            let allowed = 2 * interval + check.jitter;
            let mut st = lock(&slot.state);
            let since = now.saturating_sub(st.last_run.unwrap_or(started));
            if !st.remediating && is_stalled(since, allowed, check.limits.deadline) {
                stalled = Some(check.name.as_str());
            }
            if st.remediating || st.reported_late {
                continue;
            }
            if since > allowed.as_millis() as u64 {
                st.reported_late = true;
                drop(st);
                let late_ms = since - interval.as_millis() as u64;
                tracing::warn!(
                    check = %check.name,
                    late_ms,
                    "watchdog: check missed twice its interval"
                );
                let event = WatchdogEvent {
                    check: check.name.clone(),
                    at: now,
                    late_ms,
                };
                if let Err(e) = engine.store.record_watchdog(&event) {
                    engine.store.note_fault(&e);
                    tracing::error!("recording watchdog event: {e:#}");
                }
            }
        }
        match stalled {
            None => beat(&engine),
            Some(check) if !stalled_before => tracing::error!(
                check,
                "watchdog: check task stalled; withholding the heartbeat so the supervisor restarts mend"
            ),
            Some(_) => {}
        }
        stalled_before = stalled.is_some();
    }
}

/// How far past twice its interval plus its deadline a check task may be
/// before it counts as stalled.
const STALL_GRACE: Duration = Duration::from_secs(10);

/// Whether a check task that last finished a run `since_ms` ago is
/// stalled: later than anything a run may legitimately take (twice the
/// interval plus jitter, `allowed`; one plugin deadline; a grace).
/// Remediations are not counted: their settle and backoff are on purpose.
fn is_stalled(since_ms: u64, allowed: Duration, deadline: Duration) -> bool {
    since_ms > (allowed + deadline + STALL_GRACE).as_millis() as u64
}

/// Prunes history past the retention period, hourly.
async fn housekeeping(engine: Arc<Engine>, mut shutdown: Shutdown) {
    let retention = engine.plan.config.engine.history_retention.0;
    loop {
        let cutoff = engine
            .clock
            .now()
            .saturating_sub(retention.as_millis() as u64);
        match engine.store.prune_history(cutoff) {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned check history"),
            Err(e) => tracing::error!("pruning history: {e:#}"),
        }
        if !shutdown.sleep(Duration::from_secs(3600)).await {
            return;
        }
    }
}

/// The last samples of schedule lag.
#[derive(Default)]
pub(super) struct LagSamples {
    samples: VecDeque<Duration>,
    total: usize,
}

impl LagSamples {
    const KEEP: usize = 100_000;

    pub(super) fn push(&mut self, lag: Duration) {
        self.total += 1;
        if self.samples.len() == Self::KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back(lag);
    }

    /// p50 and p99 of the retained samples, and how many runs there were
    /// in all.
    pub(super) fn percentiles(&self) -> (Duration, Duration, usize) {
        if self.samples.is_empty() {
            return (Duration::ZERO, Duration::ZERO, self.total);
        }
        let mut v: Vec<Duration> = self.samples.iter().copied().collect();
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        (at(0.5), at(0.99), self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_ups_round_up_to_the_grid_never_down() {
        let epoch = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(on_grid(epoch, epoch), epoch);
        assert_eq!(on_grid(epoch, epoch + ms(5)), epoch + ms(5));
        assert_eq!(
            on_grid(epoch, epoch + ms(1000)),
            epoch + ms(1000),
            "a 1 s grid stays"
        );
        assert_eq!(
            on_grid(epoch, epoch + Duration::from_micros(5001)),
            epoch + ms(10)
        );
        assert_eq!(
            on_grid(epoch, epoch + Duration::from_micros(1)),
            epoch + ms(5)
        );
    }

    #[tokio::test]
    async fn a_panic_in_a_check_loop_is_an_error_not_a_dead_task() {
        let boom: Pin<Box<dyn Future<Output = u32> + Send>> =
            Box::pin(async { panic!("a check loop panicking on purpose") });
        assert!(CatchPanic(boom).await.is_err());
        let fine: Pin<Box<dyn Future<Output = u32> + Send>> = Box::pin(async {
            tokio::task::yield_now().await;
            7
        });
        assert_eq!(CatchPanic(fine).await.unwrap(), 7);
    }

    #[test]
    fn a_check_is_stalled_only_past_twice_its_interval_its_deadline_and_a_grace() {
        let allowed = Duration::from_secs(60); // 2 × 30 s
        let deadline = Duration::from_secs(5);
        assert!(!is_stalled(60_000, allowed, deadline), "merely late");
        assert!(!is_stalled(75_000, allowed, deadline), "within the grace");
        assert!(is_stalled(75_001, allowed, deadline));
    }
}
