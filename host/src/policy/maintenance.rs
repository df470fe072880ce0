//! Maintenance windows: times when healing must stand down.
//!
//! A healer that "fixes" a service an operator stopped on purpose fights the
//! operator. Windows are weekly, in UTC, and may wrap past midnight; a
//! wrapping window belongs to the day it starts, so "sat 22:00-02:00"
//! covers early Sunday.

use serde::{Deserialize, Serialize};

use super::Millis;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MS_PER_MINUTE: u64 = 60_000;
const MINUTES_PER_DAY: u64 = 24 * 60;
const MS_PER_DAY: u64 = MINUTES_PER_DAY * MS_PER_MINUTE;
/// 1970-01-01 was a Thursday (index 3 in `DAY_NAMES`).
const EPOCH_WEEKDAY: u64 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// "mon".."sun", any case; empty means every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// "HH:MM" UTC, inclusive.
    pub start: String,
    /// "HH:MM" UTC, exclusive; before `start` means it ends the next day.
    pub end: String,
}

impl MaintenanceWindow {
    pub fn validate(&self) -> Result<(), String> {
        self.parse().map(|_| ())
    }

    /// Whether `now` falls in the window. An invalid window contains
    /// nothing, so a config mistake never silences healing.
    pub fn contains(&self, now: Millis) -> bool {
        let Ok(parsed) = self.parse() else {
            return false;
        };
        let minute = (now / MS_PER_MINUTE) % MINUTES_PER_DAY;
        let today = weekday(now);
        let yesterday = (today + 6) % 7;
        if parsed.start < parsed.end {
            parsed.start <= minute && minute < parsed.end && parsed.on(today)
        } else if minute >= parsed.start {
            parsed.on(today)
        } else {
            // Early hours: the part of a window that started yesterday.
            minute < parsed.end && parsed.on(yesterday)
        }
    }

    fn parse(&self) -> Result<ParsedWindow, String> {
        let mut days = [self.days.is_empty(); 7];
        for name in &self.days {
            let index = DAY_NAMES
                .iter()
                .position(|d| d.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    format!(
                        "unknown day {name:?} in maintenance window (use {})",
                        DAY_NAMES.join(", ")
                    )
                })?;
            days[index] = true;
        }
        let start = parse_hh_mm(&self.start)?;
        let end = parse_hh_mm(&self.end)?;
        if start == end {
            return Err(format!(
                "maintenance window start and end are both {}",
                self.start
            ));
        }
        Ok(ParsedWindow { days, start, end })
    }
}

struct ParsedWindow {
    /// Indexed like `DAY_NAMES`.
    days: [bool; 7],
    start: u64,
    end: u64,
}

impl ParsedWindow {
    fn on(&self, weekday: usize) -> bool {
        self.days[weekday]
    }
}

/// Minutes since midnight for a strict "HH:MM" (00:00..=23:59).
fn parse_hh_mm(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid time {text:?} in maintenance window (want HH:MM, 00:00-23:59)");
    let (hh, mm) = text.split_once(':').ok_or_else(bad)?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(hh) || !two_digits(mm) {
        return Err(bad());
    }
    let (hours, minutes): (u64, u64) = (
        hh.parse().map_err(|_| bad())?,
        mm.parse().map_err(|_| bad())?,
    );
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    Ok(hours * 60 + minutes)
}

/// Day of the week of `now`, 0 = Monday.
fn weekday(now: Millis) -> usize {
    ((now / MS_PER_DAY + EPOCH_WEEKDAY) % 7) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Millis = 60 * MS_PER_MINUTE;
    /// 2025-11-21T00:00:00Z, a Friday.
    const FRI_2025_11_21: Millis = 1_763_683_200_000;
    /// 2026-11-21T00:00:00Z, a Saturday.
    const SAT_2026_11_21: Millis = 1_795_219_200_000;
    const SUN: Millis = SAT_2026_11_21 + MS_PER_DAY;
    const MON: Millis = SUN + MS_PER_DAY;

    /// Days since 1970-01-01 for a proleptic Gregorian date (Howard
    /// Hinnant's algorithm), to check the constants independently.
    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    fn window(days: &[&str], start: &str, end: &str) -> MaintenanceWindow {
        MaintenanceWindow {
            days: days.iter().map(|d| d.to_string()).collect(),
            start: start.into(),
            end: end.into(),
        }
    }

    #[test]
    fn constants_are_the_dates_they_claim() {
        let ms = |y, m, d| days_from_civil(y, m, d) as u64 * MS_PER_DAY;
        assert_eq!(ms(1970, 1, 1), 0);
        assert_eq!(ms(2025, 11, 21), FRI_2025_11_21);
        assert_eq!(ms(2026, 11, 21), SAT_2026_11_21);
        assert_eq!(ms(2026, 11, 23), MON);
    }

    #[test]
    fn weekdays() {
        assert_eq!(DAY_NAMES[weekday(0)], "thu");
        assert_eq!(DAY_NAMES[weekday(MS_PER_DAY - 1)], "thu");
        assert_eq!(DAY_NAMES[weekday(MS_PER_DAY)], "fri");
        assert_eq!(DAY_NAMES[weekday(FRI_2025_11_21)], "fri");
        assert_eq!(DAY_NAMES[weekday(SAT_2026_11_21)], "sat");
        assert_eq!(DAY_NAMES[weekday(SUN + 23 * HOUR)], "sun");
        assert_eq!(DAY_NAMES[weekday(MON)], "mon");
    }

    #[test]
    fn simple_window_is_start_inclusive_end_exclusive() {
        let w = window(&[], "09:00", "17:00");
        let at = |h: u64, m: u64| SAT_2026_11_21 + h * HOUR + m * MS_PER_MINUTE;
        assert!(!w.contains(at(8, 59)));
        assert!(w.contains(at(9, 0)));
        assert!(w.contains(at(16, 59)));
        assert!(w.contains(at(17, 0) - 1));
        assert!(!w.contains(at(17, 0)));
    }

    #[test]
    fn empty_days_means_every_day() {
        let w = window(&[], "00:00", "01:00");
        for day in 0..7 {
            assert!(w.contains(SAT_2026_11_21 + day * MS_PER_DAY + 30 * MS_PER_MINUTE));
        }
    }

    #[test]
    fn days_filter_and_ignore_case() {
        let w = window(&["Mon", "SAT"], "10:00", "11:00");
        assert!(w.contains(SAT_2026_11_21 + 10 * HOUR));
        assert!(!w.contains(SUN + 10 * HOUR));
        assert!(w.contains(MON + 10 * HOUR));
        assert!(!w.contains(MON + MS_PER_DAY + 10 * HOUR));
    }

    #[test]
    fn wrapping_window_belongs_to_the_day_it_starts() {
        let w = window(&["sat"], "22:00", "02:00");
        assert!(w.validate().is_ok());
        // Saturday evening and the early hours of Sunday.
        assert!(w.contains(SAT_2026_11_21 + 22 * HOUR));
        assert!(w.contains(SAT_2026_11_21 + 23 * HOUR + 59 * MS_PER_MINUTE));
        assert!(w.contains(SUN));
        assert!(w.contains(SUN + 2 * HOUR - 1));
        assert!(!w.contains(SUN + 2 * HOUR));
        // Saturday's early hours belong to Friday's window.
        assert!(!w.contains(SAT_2026_11_21 + HOUR));
        // Sunday evening is not listed.
        assert!(!w.contains(SUN + 23 * HOUR));
        assert!(!w.contains(MON + HOUR));
        assert!(!w.contains(SAT_2026_11_21 + 21 * HOUR));
    }

    #[test]
    fn wrapping_window_from_sunday_reaches_monday() {
        let w = window(&["sun"], "23:30", "00:30");
        assert!(w.contains(SUN + 23 * HOUR + 30 * MS_PER_MINUTE));
        assert!(w.contains(MON + 29 * MS_PER_MINUTE));
        assert!(!w.contains(MON + 30 * MS_PER_MINUTE));
        assert!(!w.contains(SUN + 29 * MS_PER_MINUTE));
    }

    #[test]
    fn window_ending_at_midnight() {
        let w = window(&["fri"], "22:00", "00:00");
        assert!(w.contains(FRI_2025_11_21 + 23 * HOUR));
        assert!(!w.contains(FRI_2025_11_21 + MS_PER_DAY));
        assert!(!w.contains(FRI_2025_11_21 + 21 * HOUR));
    }

    #[test]
    fn validate_rejects_bad_input() {
        assert!(window(&[], "00:00", "23:59").validate().is_ok());
        for (start, end) in [
            ("24:00", "01:00"),
            ("9:00", "10:00"),
            ("09:60", "10:00"),
            ("0900", "10:00"),
            ("ab:cd", "10:00"),
            ("+1:00", "10:00"),
            ("09:00:00", "10:00"),
            ("", "10:00"),
            ("10:00", " 11:00"),
            ("10:00", "10:00"),
        ] {
            assert!(window(&[], start, end).validate().is_err(), "{start}-{end}");
        }
        for day in ["funday", "monday", "", "m"] {
            assert!(
                window(&[day], "01:00", "02:00").validate().is_err(),
                "{day}"
            );
        }
    }

    #[test]
    fn invalid_windows_contain_nothing() {
        assert!(!window(&[], "10:00", "10:00").contains(SUN + 10 * HOUR));
        assert!(!window(&["xyz"], "00:00", "23:59").contains(SUN + HOUR));
        assert!(!window(&[], "25:00", "23:59").contains(SUN + 23 * HOUR));
    }

    #[test]
    fn serde_defaults_days_and_rejects_unknown_fields() {
        let w: MaintenanceWindow =
            serde_json::from_str(r#"{"start":"01:00","end":"02:00"}"#).unwrap();
        assert_eq!(w, window(&[], "01:00", "02:00"));
        let typo = r#"{"start":"01:00","end":"02:00","day":["mon"]}"#;
        assert!(serde_json::from_str::<MaintenanceWindow>(typo).is_err());
    }
}
