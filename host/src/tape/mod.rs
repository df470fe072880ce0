//! The record/replay tape of one plugin call.
//!
//! Every mend host import of the newest contract goes through
//! [`Tape::sync`] or [`Tape::run`] (`wit/since_v0_2.rs`), and so do the
//! WASI wall and monotonic clocks and outgoing HTTP (`capabilities/http.rs`).
//! Off (the engine), a call goes straight to its capability. Recording, the
//! call runs and its name, arguments and result are kept. Replaying, the
//! capability is never asked: the next recorded call answers, if the plugin
//! asked the same thing; otherwise the call traps with the divergence.
//!
//! `transcript.rs` is the file these recordings live in, `tree.rs` the
//! granted directories a recording snapshots (WASI filesystem calls are not
//! host calls, so the files themselves are recorded instead).

pub mod transcript;
pub mod tree;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Host calls one recording may hold.
pub const MAX_CALLS: usize = 10_000;
/// Bytes (as JSON) the recorded calls may take.
pub const MAX_RECORDED_BYTES: usize = 4 << 20;
/// Bytes of WASI randomness a recording draws from (cycled).
const SEED_BYTES: usize = 256;
/// Clock readings one recording keeps per clock.
pub const MAX_CLOCK_READINGS: usize = 100_000;

/// One host call as recorded: `sql.query`, its arguments, its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCall {
    pub call: String,
    pub args: Value,
    pub result: Value,
}

/// What a tape holds: the calls in order and each clock's readings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    pub calls: Vec<HostCall>,
    /// Nanoseconds since the Unix epoch, per read of WASI's wall clock.
    #[serde(default)]
    pub wall_clock_ns: Vec<u64>,
    /// Nanoseconds since the call began, per read of WASI's monotonic clock.
    #[serde(default)]
    pub monotonic_ns: Vec<u64>,
    /// The bytes (hex) WASI's random interfaces cycle through, so that a
    /// replay draws what the recording drew.
    #[serde(default)]
    pub random_seed: String,
}

/// Bytes as a tape keeps them: text when they are UTF-8, else hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Blob {
    Text(String),
    Hex(String),
}

impl Blob {
    pub fn of(bytes: &[u8]) -> Blob {
        match std::str::from_utf8(bytes) {
            Ok(t) => Blob::Text(t.to_string()),
            Err(_) => Blob::Hex(hex::encode(bytes)),
        }
    }

    /// The bytes (a hex blob that does not decode is empty).
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Blob::Text(t) => t.as_bytes().to_vec(),
            Blob::Hex(h) => hex::decode(h).unwrap_or_default(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Blob::Text(t) => t.len(),
            Blob::Hex(h) => h.len() / 2,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a replayed call could not be answered.
#[derive(Debug, thiserror::Error)]
#[error("replay: {0}")]
pub struct Diverged(pub String);

/// Why a recording stopped.
#[derive(Debug, thiserror::Error)]
#[error("recording: {0}")]
pub struct TooMuch(pub String);

#[derive(Debug)]
enum Mode {
    Record {
        bytes: usize,
    },
    Replay {
        next: usize,
        wall: usize,
        mono: usize,
    },
}

#[derive(Debug)]
struct Reel {
    mode: Mode,
    tape: Recording,
    /// The first divergence (the trap's message), kept for the report.
    diverged: Option<String>,
    started: std::time::Instant,
}

/// A call's tape: off, recording or replaying. Cheap to clone; the clones
/// share one reel (the WASI clocks and the HTTP hooks hold one each).
#[derive(Debug, Clone, Default)]
pub struct Tape(Option<Arc<Mutex<Reel>>>);

impl Tape {
    /// Calls go straight to the capabilities (the engine).
    pub fn off() -> Tape {
        Tape(None)
    }

    /// Records; WASI randomness cycles through fresh random bytes (kept,
    /// so the replay draws the same), which is not secure randomness.
    pub fn record() -> Tape {
        let seed: Vec<u8> = std::iter::repeat_with(|| fastrand::u8(..))
            .take(SEED_BYTES)
            .collect();
        Tape::with(
            Mode::Record { bytes: 0 },
            Recording {
                random_seed: hex::encode(seed),
                ..Recording::default()
            },
        )
    }

    /// The bytes WASI randomness cycles through (`None`: tape off, or a
    /// transcript without them).
    pub fn random_seed(&self) -> Option<Vec<u8>> {
        let reel = self.reel()?;
        hex::decode(&reel.tape.random_seed)
            .ok()
            .filter(|s| !s.is_empty())
    }

    pub fn replay(recording: Recording) -> Tape {
        Tape::with(
            Mode::Replay {
                next: 0,
                wall: 0,
                mono: 0,
            },
            recording,
        )
    }

    fn with(mode: Mode, tape: Recording) -> Tape {
        Tape(Some(Arc::new(Mutex::new(Reel {
            mode,
            tape,
            diverged: None,
            started: std::time::Instant::now(),
        }))))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    pub fn is_replay(&self) -> bool {
        self.reel()
            .is_some_and(|r| matches!(r.mode, Mode::Replay { .. }))
    }

    fn reel(&self) -> Option<MutexGuard<'_, Reel>> {
        self.0
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The arguments of a call as the tape keeps them (`None`: tape off,
    /// nothing is serialized).
    pub fn args<A: Serialize + ?Sized>(&self, args: &A) -> Option<Value> {
        self.0
            .as_ref()
            .map(|_| serde_json::to_value(args).unwrap_or(Value::Null))
    }

    /// A host call that does not wait: `live` runs unless replaying.
    pub fn sync<R: Serialize + DeserializeOwned>(
        &self,
        call: &str,
        args: Option<Value>,
        live: impl FnOnce() -> R,
    ) -> wasmtime::Result<R> {
        let Some(args) = args else {
            return Ok(live());
        };
        if self.is_replay() {
            return self.answer(call, args);
        }
        let result = live();
        self.keep(call, args, &result)?;
        Ok(result)
    }

    /// A host call that waits: `live` is awaited unless replaying.
    pub async fn run<R: Serialize + DeserializeOwned>(
        &self,
        call: &str,
        args: Option<Value>,
        live: impl Future<Output = R>,
    ) -> wasmtime::Result<R> {
        let Some(args) = args else {
            return Ok(live.await);
        };
        if self.is_replay() {
            return self.answer(call, args);
        }
        let result = live.await;
        self.keep(call, args, &result)?;
        Ok(result)
    }

    fn keep<R: Serialize>(&self, call: &str, args: Value, result: &R) -> wasmtime::Result<()> {
        let result = serde_json::to_value(result).unwrap_or(Value::Null);
        let Some(mut reel) = self.reel() else {
            return Ok(());
        };
        let size = call.len() + json_len(&args) + json_len(&result);
        let Mode::Record { bytes } = &mut reel.mode else {
            return Ok(());
        };
        *bytes += size;
        let over = *bytes > MAX_RECORDED_BYTES;
        if over || reel.tape.calls.len() >= MAX_CALLS {
            return Err(wasmtime::Error::new(TooMuch(format!(
                "the call made more than {MAX_CALLS} host calls or {} MiB of them; \
                 a transcript holds no more",
                MAX_RECORDED_BYTES >> 20
            ))));
        }
        reel.tape.calls.push(HostCall {
            call: call.to_string(),
            args,
            result,
        });
        Ok(())
    }

    fn answer<R: DeserializeOwned>(&self, call: &str, args: Value) -> wasmtime::Result<R> {
        let Some(mut reel) = self.reel() else {
            return Err(wasmtime::format_err!("replay: no tape"));
        };
        let Mode::Replay { next, .. } = &mut reel.mode else {
            return Err(wasmtime::format_err!("replay: the tape is recording"));
        };
        let i = *next;
        *next += 1;
        let asked = HostCall {
            call: call.to_string(),
            args,
            result: Value::Null,
        };
        let failure = match reel.tape.calls.get(i) {
            None => Some(format!(
                "call {}: plugin asked {} but the transcript ends after {} calls",
                i + 1,
                show(&asked),
                reel.tape.calls.len()
            )),
            Some(rec) if rec.call != asked.call || rec.args != asked.args => Some(format!(
                "call {}: plugin asked {} but the transcript has {}",
                i + 1,
                show(&asked),
                show(rec)
            )),
            Some(rec) => match serde_json::from_value::<R>(rec.result.clone()) {
                Ok(r) => return Ok(r),
                Err(e) => Some(format!(
                    "call {}: the transcript's result of {} does not fit: {e}",
                    i + 1,
                    rec.call
                )),
            },
        };
        let message = failure.unwrap_or_default();
        reel.diverged.get_or_insert(message.clone());
        Err(wasmtime::Error::new(Diverged(message)))
    }

    /// The first divergence a replay hit, or the recorded calls the plugin
    /// did not make.
    pub fn replay_problem(&self) -> Option<String> {
        let reel = self.reel()?;
        if let Some(d) = &reel.diverged {
            return Some(d.clone());
        }
        match reel.mode {
            Mode::Replay { next, .. } if next < reel.tape.calls.len() => Some(format!(
                "the plugin made {next} of the {} recorded host calls; the next was {}",
                reel.tape.calls.len(),
                show(&reel.tape.calls[next])
            )),
            _ => None,
        }
    }

    /// What was recorded (empty unless recording).
    pub fn recording(&self) -> Recording {
        match self.reel() {
            Some(r) if matches!(r.mode, Mode::Record { .. }) => r.tape.clone(),
            _ => Recording::default(),
        }
    }

    /// WASI's wall clock through this tape (`live` when recording).
    pub fn wall_clock(&self, live: crate::clock::Clock) -> TapedWallClock {
        TapedWallClock {
            tape: self.clone(),
            live,
        }
    }

    pub fn monotonic_clock(&self) -> TapedMonotonicClock {
        TapedMonotonicClock { tape: self.clone() }
    }

    /// One clock reading: recorded (from `live`), or replayed. Past the
    /// recorded readings a replayed clock moves 1 ms per read, so a plugin
    /// waiting for time to pass still gets there.
    fn reading(&self, wall: bool, live: impl FnOnce(&Reel) -> u64) -> u64 {
        let Some(mut reel) = self.reel() else {
            return 0;
        };
        let reel = &mut *reel;
        match &mut reel.mode {
            Mode::Record { .. } => {
                let now = live(reel);
                let list = if wall {
                    &mut reel.tape.wall_clock_ns
                } else {
                    &mut reel.tape.monotonic_ns
                };
                if list.len() < MAX_CLOCK_READINGS {
                    list.push(now);
                }
                now
            }
            Mode::Replay {
                wall: w, mono: m, ..
            } => {
                let (list, at) = if wall {
                    (&reel.tape.wall_clock_ns, w)
                } else {
                    (&reel.tape.monotonic_ns, m)
                };
                let i = *at;
                *at += 1;
                match list.get(i) {
                    Some(v) => *v,
                    None => {
                        let last = list.last().copied().unwrap_or(0);
                        let past = (i + 1 - list.len()) as u64;
                        last.saturating_add(past * 1_000_000)
                    }
                }
            }
        }
    }
}

fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map(|v| v.len()).unwrap_or(0)
}

/// `sql.query(["db","select 1",[],…])`, cut short for a message.
fn show(c: &HostCall) -> String {
    const MAX: usize = 300;
    let args = c.args.to_string();
    let args = crate::text::truncate(&args, MAX);
    format!("{}({})", c.call, args)
}

/// WASI's wall clock, recorded or replayed.
pub struct TapedWallClock {
    tape: Tape,
    live: crate::clock::Clock,
}

impl wasmtime_wasi::HostWallClock for TapedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        let live = self.live;
        let ns = self.tape.reading(true, |_| {
            wasmtime_wasi::HostWallClock::now(&live).as_nanos() as u64
        });
        Duration::from_nanos(ns)
    }
}

/// WASI's monotonic clock, recorded (nanoseconds since the call began) or
/// replayed.
pub struct TapedMonotonicClock {
    tape: Tape,
}

impl wasmtime_wasi::HostMonotonicClock for TapedMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.tape
            .reading(false, |reel| reel.started.elapsed().as_nanos() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_replays_and_a_different_question_is_named() {
        let rec = Tape::record();
        let a = rec.args(&("db", "select 1"));
        let r: Result<u64, String> = rec.sync("sql.execute", a, || Ok(3)).unwrap();
        assert_eq!(r, Ok(3));
        let tape = rec.recording();
        assert_eq!(tape.calls.len(), 1);

        let play = Tape::replay(tape.clone());
        let a = play.args(&("db", "select 1"));
        let r: Result<u64, String> = play
            .sync("sql.execute", a, || panic!("replay must not run the call"))
            .unwrap();
        assert_eq!(r, Ok(3));
        assert_eq!(play.replay_problem(), None);

        let play = Tape::replay(tape.clone());
        let a = play.args(&("cache", "GET"));
        let e = play
            .sync::<u64>("redis.command", a, || unreachable!())
            .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("call 1: plugin asked redis.command"), "{m}");
        assert!(m.contains("the transcript has sql.execute"), "{m}");

        let play = Tape::replay(tape);
        assert!(
            play.replay_problem()
                .unwrap()
                .contains("made 0 of the 1 recorded")
        );
    }

    #[test]
    fn replayed_clocks_answer_the_readings_then_move_on() {
        let play = Tape::replay(Recording {
            wall_clock_ns: vec![5_000_000],
            ..Default::default()
        });
        let c = play.wall_clock(crate::clock::Clock::system());
        use wasmtime_wasi::HostWallClock;
        assert_eq!(c.now(), Duration::from_millis(5));
        assert_eq!(c.now(), Duration::from_millis(6));
    }
}
