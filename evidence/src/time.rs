//! Evidence timestamps: whole milliseconds since the Unix epoch, written as RFC 3339 UTC
//! (`2026-12-06T03:14:15.123Z`). No clock is read here; callers pass [`SystemTime`]s.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time with millisecond precision, as evidence records carry it.
///
/// Times before 1970 are clamped to the epoch; evidence never needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// Truncates a [`SystemTime`] to whole milliseconds.
    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Self(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// Builds a timestamp from milliseconds since the Unix epoch.
    pub fn from_unix_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Returns the milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> u64 {
        self.0
    }

    /// Returns the same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// Returns the UTC day, `YYYY-MM-DD`, that pseudonym key files are named by.
    pub fn day(self) -> String {
        let mut buf = [0; 24];
        match self.write_to(&mut buf) {
            Some(s) => s[..10].to_owned(),
            None => {
                let c = Civil::from_millis(self.0);
                format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
            }
        }
    }

    /// Writes `YYYY-MM-DDTHH:MM:SS.mmmZ` into `buf` digit by digit (the evidence writer
    /// formats a timestamp per record; `write!` with padding costs several times more), or
    /// returns `None` after the year 9999, which the slower path prints in full.
    fn write_to(self, buf: &mut [u8; 24]) -> Option<&str> {
        let c = Civil::from_millis(self.0);
        if c.year > 9999 {
            return None;
        }
        *buf = *b"0000-00-00T00:00:00.000Z";
        for (range, v) in [
            (0..4, c.year),
            (5..7, c.month),
            (8..10, c.day),
            (11..13, c.hour),
            (14..16, c.minute),
            (17..19, c.second),
            (20..23, c.milli),
        ] {
            let mut v = v;
            for b in buf[range].iter_mut().rev() {
                // v % 10 < 10 fits a u8.
                *b = b'0' + u8::try_from(v % 10).unwrap_or(0);
                v /= 10;
            }
        }
        std::str::from_utf8(buf).ok()
    }

    /// Returns the compact form used in segment file names, `YYYYMMDDTHHMMSSZ`.
    pub fn compact(self) -> String {
        let c = Civil::from_millis(self.0);
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )
    }

    /// Parses exactly the form [`Display`](fmt::Display) writes: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 24
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'.'
            || b[23] != b'Z'
        {
            return None;
        }
        let num = |from: usize, to: usize| -> Option<u64> {
            b[from..to].iter().try_fold(0u64, |acc, &d| {
                d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
            })
        };
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (hour, minute, second, milli) =
            (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
        if year < 1970
            || !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
        Some(Self(secs * 1000 + milli))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0; 24];
        if let Some(s) = self.write_to(&mut buf) {
            return f.write_str(s);
        }
        let c = Civil::from_millis(self.0);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second, c.milli
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| {
            serde::de::Error::custom("expected an RFC 3339 UTC time like 2026-12-06T03:14:15.123Z")
        })
    }
}

/// A broken-down UTC time.
struct Civil {
    year: u64,
    month: u64,
    day: u64,
    hour: u64,
    minute: u64,
    second: u64,
    milli: u64,
}

impl Civil {
    fn from_millis(ms: u64) -> Self {
        let secs = ms / 1000;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
            milli: ms % 1000,
        }
    }
}

fn is_leap(year: u64) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year ≥ 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let mut days = 0;
    for y in 1970..year {
        days += if is_leap(y) { 366 } else { 365 };
    }
    for m in 1..month {
        days += days_in_month(year, m);
    }
    days + day - 1
}

/// The date `days` after 1970-01-01, counted in 400-year eras so it runs in constant time.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // 1970-01-01 is day 135_080 of the era that started on 1600-03-01 (a leap-year cycle
    // starting in March keeps February, the odd month, last).
    let since_1600_03 = days + 135_080;
    let era = since_1600_03 / 146_097;
    let day_of_era = since_1600_03 % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = 1600 + era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_796_526_855_123, "2026-12-06T03:14:15.123Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
        ];
        for (ms, text) in cases {
            let t = Timestamp::from_unix_millis(ms);
            assert_eq!(t.to_string(), text);
            assert_eq!(Timestamp::parse(text), Some(t));
        }
        assert_eq!(
            Timestamp::from_unix_millis(1_796_526_855_123).day(),
            "2026-12-06"
        );
        assert_eq!(
            Timestamp::from_unix_millis(1_796_526_855_123).compact(),
            "20261206T031415Z"
        );
    }

    #[test]
    fn every_day_for_three_centuries_round_trips() {
        for days in 0..(300 * 366) {
            let t = Timestamp::from_unix_millis(days * 86_400_000 + 3_723_004);
            assert_eq!(Timestamp::parse(&t.to_string()), Some(t), "day {days}");
        }
    }

    #[test]
    fn digit_writer_matches_the_padded_format() {
        let padded = |ms: u64| {
            let c = Civil::from_millis(ms);
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                c.year, c.month, c.day, c.hour, c.minute, c.second, c.milli
            )
        };
        // Every day boundary and odd millisecond for three centuries, then beyond year 9999.
        let mut ms = 0u64;
        while ms < 300 * 366 * 86_400_000 {
            assert_eq!(
                Timestamp::from_unix_millis(ms).to_string(),
                padded(ms),
                "{ms}"
            );
            ms += 86_399_999;
        }
        for ms in [253_402_300_799_999, 253_402_300_800_000, u64::MAX / 4] {
            let t = Timestamp::from_unix_millis(ms);
            assert_eq!(t.to_string(), padded(ms), "{ms}");
            assert_eq!(t.day(), padded(ms).split('T').next().unwrap_or_default());
        }
        assert_eq!(
            Timestamp::from_unix_millis(253_402_300_800_000).day(),
            "10000-01-01"
        );
    }

    #[test]
    fn rejects_other_forms() {
        for bad in [
            "2026-12-06T03:14:15Z",
            "2026-12-06T03:14:15.123+00:00",
            "2026-02-30T00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "1969-12-31T23:59:59.999Z",
            "2026-12-06 03:14:15.123Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }
}
