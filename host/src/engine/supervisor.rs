//! mend's own liveness, and the scheduler. The status-page incident was a
//! poller that died silently; mend must not. One scheduler task starts each
//! check's runs from the due queue (`schedule.rs`), each in a task of its
//! own; a run that panics is logged and the check runs again a second
//! later (the scheduler itself is restarted if it panics), and a watchdog
//! records any check that missed twice its interval. The same watchdog beats a heartbeat (systemd's `WATCHDOG=1`)
//! only while no check task is stalled, so a wedged engine is restarted
//! from outside. Housekeeping (history retention) runs here too.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::shutdown::{self, Shutdown};
use super::{Engine, lock};
use crate::store::WatchdogEvent;

/// Runs every check (each run in its own task, panics caught), the
/// watchdog and housekeeping until `external` fires or a policy asks mend
/// to exit; then lets work in flight finish.
pub(super) async fn run(engine: Arc<Engine>, mut external: Shutdown) {
    let (trigger, shutdown) = shutdown::channel();
    // The first run is at once: a check with `interval = "1h"` must not
    // say "never" for up to an hour. Jitter spreads the later runs (and
    // the bulkhead bounds a herd at start).
    let now = Instant::now();
    {
        let mut queue = lock(&engine.queue);
        for (idx, slot) in engine.checks.iter().enumerate() {
            let generation = lock(&slot.turn).release(now);
            queue.push(idx, generation, now);
        }
    }
    let runs = Arc::new(InFlight::default());
    let mut tasks = JoinSet::new();
    tasks.spawn(supervise_scheduler(
        engine.clone(),
        shutdown.clone(),
        runs.clone(),
    ));
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
    // The scheduler starts nothing after it has stopped; then the runs
    // and commands in flight finish their current step.
    while tasks.join_next().await.is_some() {}
    runs.idle().await;
    engine.drop_commands();
}

fn beat(engine: &Engine) {
    engine
        .last_beat
        .store(engine.clock.now(), Ordering::Relaxed);
    engine.heartbeat.send_modify(|n| *n += 1);
}

/// Tasks acting for checks (runs, commands), counted so that shutdown can
/// wait for them without keeping a handle per run.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    none_left: tokio::sync::Notify,
}

/// Counts one task in flight until dropped (a panic drops it too).
struct Counted(Arc<InFlight>);

impl InFlight {
    fn start(self: &Arc<Self>) -> Counted {
        self.count.fetch_add(1, Ordering::SeqCst);
        Counted(self.clone())
    }

    async fn idle(&self) {
        loop {
            let none_left = self.none_left.notified();
            tokio::pin!(none_left);
            none_left.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            none_left.await;
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

/// Keeps the scheduler running: a panic is logged and it starts again
/// after a second (the due queue lives in the engine, so nothing is lost
/// but that second).
async fn supervise_scheduler(engine: Arc<Engine>, mut shutdown: Shutdown, runs: Arc<InFlight>) {
    let mut restarts = 0u32;
    loop {
        let scheduler = std::pin::pin!(schedule(engine.clone(), shutdown.clone(), runs.clone()));
        match CatchPanic(scheduler).await {
            Ok(()) => return,
            Err(_) => {
                restarts += 1;
                tracing::error!(restarts, "the scheduler panicked; restarting it");
                if !shutdown.sleep(Duration::from_secs(1)).await {
                    return;
                }
                requeue_idle(&engine);
            }
        }
    }
}

/// Queues every check no task acts for again, at its due time: entries
/// the panicked scheduler had popped but not started are not lost (the
/// old entries become stale and are skipped).
fn requeue_idle(engine: &Engine) {
    let mut queue = lock(&engine.queue);
    for (idx, check) in engine.checks.iter().enumerate() {
        let mut turn = lock(&check.turn);
        if !turn.busy {
            let due = turn.due;
            let generation = turn.release(due);
            queue.push(idx, generation, due);
        }
    }
}

/// Due checks taken from the queue at a time, so that commands are started
/// between batches even when the engine is behind.
const BATCH: usize = 512;

/// The scheduler: pops the checks due in the current wake-up slot, waits
/// for a bulkhead slot for each (in due order) and starts its run in a
/// task of its own; starts a task for checks given commands; sleeps until
/// the next slot with a check due.
async fn schedule(engine: Arc<Engine>, mut shutdown: Shutdown, runs: Arc<InFlight>) {
    let mut due = Vec::with_capacity(BATCH);
    loop {
        if shutdown.is_fired() {
            return;
        }
        start_commanded(&engine, &shutdown, &runs);
        let next_wake = {
            let mut queue = lock(&engine.queue);
            queue.pop_due(Instant::now(), BATCH, &mut due);
            queue.next_wake()
        };
        if due.is_empty() {
            let sleep = async {
                match next_wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = engine.queue_changed.notified() => {}
                _ = shutdown.fired() => return,
            }
            continue;
        }
        for (idx, generation) in due.drain(..) {
            let Some(due_at) = lock(&engine.checks[idx].turn).take_scheduled(generation) else {
                continue; // stale: a command took the check, or it was queued again
            };
            // A free slot is taken at once; only a wait also listens for
            // shutdown (callgrind: the listener cost ~150 instructions a run).
            let permit = match engine.bulkhead.clone().try_acquire_owned() {
                Ok(p) => Ok(p),
                Err(_) => tokio::select! {
                    p = engine.bulkhead.clone().acquire_owned() => p,
                    _ = shutdown.fired() => return,
                },
            };
            // Lag as the call starts: the wait for a slot is in it.
            lock(&engine.lag).push(Instant::now().saturating_duration_since(due_at));
            let counted = runs.start();
            tokio::spawn(scheduled_run(
                engine.clone(),
                idx,
                due_at,
                permit,
                shutdown.clone(),
                counted,
            ));
        }
    }
}

/// Starts a task for each check given commands that no task acts for.
fn start_commanded(engine: &Arc<Engine>, shutdown: &Shutdown, runs: &Arc<InFlight>) {
    let commanded = std::mem::take(&mut *lock(&engine.commanded));
    for idx in commanded {
        if !lock(&engine.checks[idx].turn).take_for_commands() {
            continue; // a task acts for it and handles them when done
        }
        let counted = runs.start();
        tokio::spawn(commands(engine.clone(), idx, shutdown.clone(), counted));
    }
}

/// Check `idx`'s scheduled run (due at `due`, in the bulkhead slot
/// `permit`): detect, observe, evaluate; then its next run is queued.
async fn scheduled_run(
    engine: Arc<Engine>,
    idx: usize,
    due: Instant,
    permit: Permit,
    shutdown: Shutdown,
    _counted: Counted,
) {
    let slot = &engine.checks[idx];
    let check = &engine.plan.checks[idx];
    // The call and the evaluation boxed: the task spawned (and moved
    // into its cell) stays a few hundred bytes, not a whole plugin call's
    // state machine (callgrind: the copy was 10% of a run's instructions).
    let run = std::pin::pin!(async {
        let result = Arc::new(Box::pin(engine.detect_holding(idx, permit)).await);
        engine.observe(idx, result.clone());
        if shutdown.is_fired() {
            return; // no new incident while stopping
        }
        lock(&slot.state).remediating = true;
        Box::pin(engine.evaluate(idx, &result, &shutdown)).await;
        lock(&slot.state).remediating = false;
    });
    let next = match CatchPanic(run).await {
        // Stay on the grid unless a remediation made us fall behind.
        Ok(()) => (due + check.interval).max(Instant::now()) + spread(check.jitter),
        Err(_) => {
            tracing::error!(check = %check.name, "check run panicked; running it again in a second");
            lock(&slot.state).remediating = false;
            Instant::now() + Duration::from_secs(1)
        }
    };
    engine.end_turn(idx, next);
}

/// Handles check `idx`'s commands while it holds the check's turn; its
/// schedule is unchanged.
async fn commands(engine: Arc<Engine>, idx: usize, shutdown: Shutdown, _counted: Counted) {
    let handled = std::pin::pin!(async {
        while !shutdown.is_fired()
            && let Some(cmd) = engine.next_command(idx)
        {
            Box::pin(engine.handle(idx, cmd, &shutdown)).await;
        }
    });
    if CatchPanic(handled).await.is_err() {
        let name = &engine.plan.checks[idx].name;
        tracing::error!(check = %name, "check command panicked");
        lock(&engine.checks[idx].state).remediating = false;
    }
    let due = lock(&engine.checks[idx].turn).due;
    engine.end_turn(idx, due);
}

/// A bulkhead slot the scheduler waited for (the semaphore is never
/// closed).
type Permit = Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>;

fn spread(jitter: Duration) -> Duration {
    jitter.mul_f64(fastrand::f64())
}

impl Engine {
    /// Gives check `idx`'s turn back and queues its next run at `due`;
    /// commands that came meanwhile are started next.
    fn end_turn(&self, idx: usize, due: Instant) {
        let (generation, commanded) = {
            let mut turn = lock(&self.checks[idx].turn);
            (turn.release(due), !turn.commands.is_empty())
        };
        let earliest = lock(&self.queue).push(idx, generation, due);
        if commanded {
            lock(&self.commanded).push(idx);
        }
        if earliest || commanded {
            self.queue_changed.notify_one();
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
