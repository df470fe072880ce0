//! What a budget allows, as pure values: `max_concurrent` (a count, or a
//! percentage of the live members) and `rate` (`6/h`), with the local
//! sliding window used when the store cannot be reached.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tokio::time::Instant;

/// `max_concurrent = 2` or `max_concurrent = "10%"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxConcurrent {
    Count(u32),
    /// Percent of the live members, 0 < p ≤ 100.
    Percent(f64),
}

impl MaxConcurrent {
    /// Slots open to `live` members: the count, or the floor of the
    /// percentage, and never less than one (a budget that allows nothing
    /// would be an outage of its own).
    pub fn slots(self, live: usize) -> u32 {
        match self {
            MaxConcurrent::Count(n) => n.max(1),
            MaxConcurrent::Percent(p) => {
                // The small epsilon keeps 10% of 30 at 3 despite binary floats.
                let n = (p * live as f64 / 100.0 + 1e-9).floor();
                (n as u32).max(1)
            }
        }
    }

    /// Whether the slot count follows membership.
    pub fn is_percent(self) -> bool {
        matches!(self, MaxConcurrent::Percent(_))
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let Some(num) = s.strip_suffix('%') else {
            return match s.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(MaxConcurrent::Count(n)),
                _ => Err(format!(
                    "`{s}`: write a count (2) or a percentage of live members (\"10%\")"
                )),
            };
        };
        match num.trim().parse::<f64>() {
            Ok(p) if p > 0.0 && p <= 100.0 => Ok(MaxConcurrent::Percent(p)),
            _ => Err(format!(
                "`{s}`: a percentage must be more than 0% and at most 100%"
            )),
        }
    }
}

impl fmt::Display for MaxConcurrent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxConcurrent::Count(n) => write!(f, "{n}"),
            MaxConcurrent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl<'de> Deserialize<'de> for MaxConcurrent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) if n >= 1 && n <= u32::MAX as i64 => Ok(MaxConcurrent::Count(n as u32)),
            Raw::Int(n) => Err(serde::de::Error::custom(format!(
                "{n}: must be at least 1 (or a percentage such as \"10%\")"
            ))),
            Raw::Str(s) => MaxConcurrent::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// `rate = "6/h"`: at most `count` starts in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// `N/s`, `N/m`, `N/h`, `N/d`, or `N/<duration>` (`3/30m`).
    pub fn parse(s: &str) -> Result<Rate, String> {
        let bad = || format!("`{s}`: write a rate as \"6/h\", \"1/d\" or \"3/30m\"");
        let (n, per) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!("`{s}`: a rate of 0 allows nothing"));
        }
        let per = match per.trim() {
            "s" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            other => humantime::parse_duration(other).map_err(|_| bad())?,
        };
        if per < Duration::from_secs(1) {
            return Err(format!("`{s}`: the window must be at least 1s"));
        }
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Rate::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Starts in the last `rate.per`, for a limit kept in this process alone.
#[derive(Debug, Default)]
pub struct RateWindow {
    starts: VecDeque<Instant>,
}

impl RateWindow {
    fn expire(&mut self, now: Instant, rate: Rate) {
        while let Some(&t) = self.starts.front() {
            if now.duration_since(t) >= rate.per {
                self.starts.pop_front();
            } else {
                break;
            }
        }
    }

    /// Takes a start if the window has room; else how long until it has.
    pub fn take(&mut self, now: Instant, rate: Rate) -> Result<(), Duration> {
        self.expire(now, rate);
        if self.starts.len() < rate.count as usize {
            self.starts.push_back(now);
            return Ok(());
        }
        let oldest = self.starts.front().copied().unwrap_or(now);
        Err(rate.per.saturating_sub(now.duration_since(oldest)))
    }

    /// Starts counted now.
    pub fn used(&mut self, now: Instant, rate: Rate) -> usize {
        self.expire(now, rate);
        self.starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_floor_over_live_members_and_never_reach_zero() {
        let ten = MaxConcurrent::parse("10%").unwrap();
        assert_eq!(ten.slots(200), 20);
        assert_eq!(ten.slots(30), 3);
        assert_eq!(ten.slots(29), 2, "floor, not round");
        assert_eq!(ten.slots(5), 1, "at least one");
        assert_eq!(ten.slots(0), 1);
        assert_eq!(MaxConcurrent::parse("100%").unwrap().slots(7), 7);
        assert_eq!(MaxConcurrent::parse("33.3%").unwrap().slots(10), 3);
        assert_eq!(MaxConcurrent::Count(2).slots(1000), 2);
    }

    #[test]
    fn bad_limits_are_refused() {
        for bad in ["0", "0%", "101%", "-1", "ten", "%"] {
            assert!(MaxConcurrent::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_parse() {
        assert_eq!(
            Rate::parse("6/h").unwrap(),
            Rate {
                count: 6,
                per: Duration::from_secs(3600)
            }
        );
        assert_eq!(Rate::parse("3/30m").unwrap().per, Duration::from_secs(1800));
        assert_eq!(Rate::parse("1/d").unwrap().per, Duration::from_secs(86_400));
        for bad in ["6", "0/h", "6/parsec", "x/h", "6/100ms"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_local_window_slides() {
        let rate = Rate::parse("2/m").unwrap();
        let mut w = RateWindow::default();
        let t0 = Instant::now();
        assert!(w.take(t0, rate).is_ok());
        assert!(w.take(t0 + Duration::from_secs(10), rate).is_ok());
        let wait = w.take(t0 + Duration::from_secs(20), rate).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_secs(40),
            "the first start ages out at 60s"
        );
        assert_eq!(w.used(t0 + Duration::from_secs(59), rate), 2);
        assert!(w.take(t0 + Duration::from_secs(60), rate).is_ok());
        assert!(w.take(t0 + Duration::from_secs(61), rate).is_err());
        assert!(w.take(t0 + Duration::from_secs(70), rate).is_ok());
    }
}
