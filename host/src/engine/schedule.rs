//! When each check runs next: one due queue for every check, keyed by a
//! 5 ms wake-up slot, and each check's turn (whether a task is acting for
//! it). The scheduler task (`supervisor.rs`) pops the checks due in the
//! current slot and starts their runs; a check waiting for its next run is
//! an entry of 16 bytes here, not a sleeping task with its own timer.
//!
//! An entry is stale once its check's turn has moved on (a command took
//! the check, or it was queued again): each entry carries the turn's
//! generation, and the scheduler skips entries whose generation is old
//! (lazy deletion; a heap cannot remove from its middle).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::control::Command;

/// Scheduled wake-ups are batched on a grid of this: the checks due within
/// one slot wake together, so the runtime's workers run them in a burst
/// and park once, not once per check (at 50,000 checks a second: 250 a
/// slot instead of one wake-up every 20 µs). Lag is still measured from
/// the true due time.
pub(super) const WAKE_GRID: Duration = Duration::from_millis(5);

/// One check's turn: who acts for it, and when it runs next.
pub(super) struct Turn {
    /// When its next scheduled run is due.
    pub due: Instant,
    /// Bumped whenever the check's queue entry is replaced or taken.
    pub generation: u32,
    /// A task is acting for the check (a scheduled run, or its commands):
    /// one task alone ever acts for a check.
    pub busy: bool,
    /// Operator commands (run now, heal), handled between runs.
    pub commands: VecDeque<Command>,
}

impl Turn {
    pub(super) fn new(due: Instant) -> Turn {
        Turn {
            due,
            generation: 0,
            busy: false,
            commands: VecDeque::new(),
        }
    }

    /// Takes the turn for the scheduled run an entry of `generation`
    /// stands for; `None` if the entry is stale or a task already acts.
    pub(super) fn take_scheduled(&mut self, generation: u32) -> Option<Instant> {
        if self.busy || self.generation != generation {
            return None;
        }
        self.busy = true;
        self.generation = self.generation.wrapping_add(1);
        Some(self.due)
    }

    /// Takes the turn to handle queued commands (the schedule is kept:
    /// `due` is unchanged); false if a task already acts or none is queued.
    pub(super) fn take_for_commands(&mut self) -> bool {
        if self.busy || self.commands.is_empty() {
            return false;
        }
        self.busy = true;
        self.generation = self.generation.wrapping_add(1);
        true
    }

    /// Gives the turn back, the next run due at `due`; returns the
    /// generation to queue it with.
    pub(super) fn release(&mut self, due: Instant) -> u32 {
        self.busy = false;
        self.due = due;
        self.generation = self.generation.wrapping_add(1);
        self.generation
    }
}

/// Ordered by slot first (then check and generation, which only break
/// ties).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    slot: u64,
    idx: u32,
    generation: u32,
}

/// Every check waiting for a scheduled run, earliest slot first.
pub(super) struct DueQueue {
    epoch: Instant,
    heap: BinaryHeap<Reverse<Entry>>,
}

impl DueQueue {
    /// A queue whose grid starts at `epoch`, with room for `checks`.
    pub(super) fn new(epoch: Instant, checks: usize) -> DueQueue {
        DueQueue {
            epoch,
            heap: BinaryHeap::with_capacity(checks),
        }
    }

    /// The slot `due` wakes in: rounded up to the grid, never down.
    fn slot_of(&self, due: Instant) -> u64 {
        let since = due.saturating_duration_since(self.epoch).as_nanos();
        since.div_ceil(WAKE_GRID.as_nanos()) as u64
    }

    /// When slot `slot` starts.
    fn start_of(&self, slot: u64) -> Instant {
        self.epoch + Duration::from_nanos(slot * WAKE_GRID.as_nanos() as u64)
    }

    /// Queues check `idx`'s run due at `due` (its turn's `generation`).
    /// True if it is now the earliest entry: a scheduler asleep until a
    /// later slot must look again.
    pub(super) fn push(&mut self, idx: usize, generation: u32, due: Instant) -> bool {
        let slot = self.slot_of(due);
        let earliest = self.heap.peek().is_none_or(|Reverse(e)| slot < e.slot);
        self.heap.push(Reverse(Entry {
            slot,
            idx: idx as u32,
            generation,
        }));
        earliest
    }

    /// Moves up to `max` entries whose slot has started by `now` into
    /// `out`, earliest first, as (check, generation).
    pub(super) fn pop_due(&mut self, now: Instant, max: usize, out: &mut Vec<(usize, u32)>) {
        while out.len() < max
            && let Some(Reverse(e)) = self.heap.peek()
            && self.start_of(e.slot) <= now
        {
            out.push((e.idx as usize, e.generation));
            self.heap.pop();
        }
    }

    /// When the earliest entry's slot starts.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| self.start_of(e.slot))
    }

    /// Entries queued, stale ones included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn wake_ups_round_up_to_the_grid_never_down() {
        let epoch = Instant::now();
        let q = DueQueue::new(epoch, 0);
        let wake = |due| q.start_of(q.slot_of(due));
        assert_eq!(wake(epoch), epoch);
        assert_eq!(wake(epoch + ms(5)), epoch + ms(5));
        assert_eq!(wake(epoch + ms(1000)), epoch + ms(1000), "a 1 s grid stays");
        assert_eq!(wake(epoch + Duration::from_micros(5001)), epoch + ms(10));
        assert_eq!(wake(epoch + Duration::from_micros(1)), epoch + ms(5));
    }

    #[test]
    fn checks_come_out_by_slot_and_only_once_their_slot_has_started() {
        let epoch = Instant::now();
        let mut q = DueQueue::new(epoch, 4);
        assert!(
            q.push(0, 0, epoch + ms(12)),
            "the first entry is the earliest"
        );
        assert!(q.push(1, 0, epoch + ms(3)), "an earlier slot");
        assert!(!q.push(2, 0, epoch + ms(4)), "the same slot as check 1");
        assert!(!q.push(3, 0, epoch + ms(100)));
        assert_eq!(q.next_wake(), Some(epoch + ms(5)));
        let mut out = Vec::new();
        q.pop_due(epoch + ms(4), 10, &mut out);
        assert!(out.is_empty(), "slot 1 starts at 5 ms: {out:?}");
        q.pop_due(epoch + ms(5), 10, &mut out);
        assert_eq!(out, [(1, 0), (2, 0)]);
        out.clear();
        q.pop_due(epoch + ms(200), 1, &mut out);
        assert_eq!(out, [(0, 0)], "at most `max` at a time");
        assert_eq!(q.next_wake(), Some(epoch + ms(100)));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn one_task_acts_for_a_check_and_a_replaced_entry_is_stale() {
        let epoch = Instant::now();
        let mut turn = Turn::new(epoch + ms(10));
        // A command takes the check before its scheduled run: the queued
        // entry (generation 0) no longer stands for a run.
        turn.commands
            .push_back(Command::Run(tokio::sync::oneshot::channel().0));
        assert!(turn.take_for_commands());
        assert!(!turn.take_for_commands(), "already busy");
        assert_eq!(turn.take_scheduled(0), None, "busy, and the entry is stale");
        turn.commands.clear();
        // The command is done: the schedule is unchanged.
        let generation = turn.release(turn.due);
        assert_eq!(turn.take_scheduled(0), None, "still stale");
        assert_eq!(turn.take_scheduled(generation), Some(epoch + ms(10)));
        assert_eq!(turn.take_scheduled(generation), None, "taken once");
        assert!(!turn.take_for_commands(), "no command queued (and busy)");
    }
}
