//! Instants as whole milliseconds since the Unix epoch (UTC).
//!
//! Every backend stores them as a plain 64-bit integer; the dialects format them
//! (Commvault: Unix seconds, vSphere: `YYYY-MM-DDThh:mm:ss.sssZ`).

use std::fmt;
use std::time::Duration;

/// A point in time, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);

    pub const fn from_unix_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch, rounded down (Commvault's `loginTime`).
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// `self + d`, saturating at the far future.
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }

    /// `self - d`, saturating at the far past.
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_millis(d)))
    }

    /// How long from `earlier` to `self`; zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Timestamp {
    /// `YYYY-MM-DDThh:mm:ss.sssZ` (UTC) in a stack buffer, or `None` for an
    /// instant outside years 0000..=9999. On the hot path (every vSphere and native
    /// session answer), so the digits are written in pairs from a table rather than
    /// through `write!` with padding, the date is worked out arithmetically (see
    /// [`date_text`]), and callers hand out the bytes without the formatting machinery.
    pub fn rfc3339(self) -> Option<Rfc3339> {
        // Counted from 400 years before 0000-03-01 (see `date_text`), every year
        // this formats is after the start: unsigned from here on, so that each
        // division by a constant is a multiplication and a shift.
        let ms = u64::try_from(self.0.checked_add(SHIFT_MS)?).ok()?;
        let (day, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
        let date = date_text(day)?;
        let mut b = *b"0000-00-00T00:00:00.000Z";
        b[..10].copy_from_slice(&date);
        let secs = ms_of_day / 1000;
        b[11..13].copy_from_slice(&pair(secs / 3600));
        b[14..16].copy_from_slice(&pair(secs / 60 % 60));
        b[17..19].copy_from_slice(&pair(secs % 60));
        let millis = ms_of_day % 1000;
        b[20] = pair(millis / 100)[1];
        b[21..23].copy_from_slice(&pair(millis % 100));
        Some(Rfc3339(b))
    }
}

/// Days from 400 years before 0000-03-01 to the Unix epoch, in milliseconds: one
/// 400-year era (146,097 days) before `civil_from_days`'s day 0, 0000-03-01, which
/// is 719,468 days before 1970-01-01.
const SHIFT_MS: i64 = (146_097 + 719_468) * 86_400_000;

/// The digits of `v % 100`.
fn pair(v: u64) -> [u8; 2] {
    PAIRS[usize::try_from(v % 100).unwrap_or(0)]
}

/// `"00"` to `"99"`.
const PAIRS: [[u8; 2]; 100] = {
    let mut pairs = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        pairs[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    pairs
};

/// `YYYY-MM-DD` of day `z` counted from 400 years before 0000-03-01 (see
/// [`SHIFT_MS`]); `None` outside years 0000..=9999.
///
/// The calendar date by Howard Hinnant's `civil_from_days` (days in 400-year eras
/// of 146,097 days, years starting in March so that the leap day comes last): a
/// handful of multiplications and shifts, where the `time` crate's conversion cost
/// ~230 instructions. The date last made is kept per thread, as the instants
/// answered are mostly of the same day (a session's start and last use). The test
/// below holds it to the `time` crate's dates.
fn date_text(z: u64) -> Option<[u8; 10]> {
    thread_local! {
        static LAST: std::cell::Cell<Option<(u64, [u8; 10])>> = const { std::cell::Cell::new(None) };
    }
    if let Some((d, text)) = LAST.get()
        && d == z
    {
        return Some(text);
    }
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day_of_month = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = (era * 400 + yoe + u64::from(month <= 2))
        .checked_sub(400)
        .filter(|y| *y <= 9999)?;
    let mut text = *b"0000-00-00";
    text[..2].copy_from_slice(&pair(year / 100));
    text[2..4].copy_from_slice(&pair(year));
    text[5..7].copy_from_slice(&pair(month));
    text[8..10].copy_from_slice(&pair(day_of_month));
    LAST.set(Some((z, text)));
    Some(text)
}

/// A formatted [`Timestamp`] (see [`Timestamp::rfc3339`]).
#[derive(Clone, Copy)]
pub struct Rfc3339([u8; 24]);

impl Rfc3339 {
    pub fn as_bytes(&self) -> &[u8; 24] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits were written into an ASCII template.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDThh:mm:ss.sssZ` (UTC); `@<ms>ms` outside years 0000..=9999.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rfc3339() {
            Some(text) => f.write_str(text.as_str()),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_utc_with_milliseconds() {
        assert_eq!(
            Timestamp::from_unix_millis(1_420_150_385_651).to_string(),
            "2015-01-01T22:13:05.651Z"
        );
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp::from_unix_millis(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(253_402_300_799_999).to_string(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(i64::MAX).to_string(),
            format!("@{}ms", i64::MAX)
        );
        assert_eq!(
            Timestamp::from_unix_millis(-62_167_219_200_000).to_string(),
            "0000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(-62_167_219_200_001).to_string(),
            "@-62167219200001ms"
        );
        assert_eq!(
            Timestamp::from_unix_millis(951_782_400_007).to_string(),
            "2000-02-29T00:00:00.007Z"
        );
    }

    /// The arithmetic date and the digit pairs give what the `time` crate's own
    /// formatting gives, for instants across four centuries (leap days, the first
    /// and last millisecond of a day), and for days across years 0000 to 9999.
    #[test]
    fn formatting_matches_the_time_crate() {
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let expected = |ms: i64| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap()
                .format(&format)
                .unwrap()
        };
        let mut ms: i64 = -6_000_000_000_000;
        while ms < 7_000_000_000_000 {
            for t in [ms, ms + 1, ms + 86_399_999, ms + 86_400_000, ms] {
                let got = Timestamp::from_unix_millis(t).rfc3339().unwrap();
                assert_eq!(got.as_str(), expected(t), "{t}");
            }
            ms += 86_400_000 * 13 + 3_600_000 * 7 + 60_000 * 11 + 1_013;
        }
        let (first, last) = (-62_167_219_200_000_i64, 253_402_300_799_999_i64);
        let mut ms = first;
        while ms <= last {
            let got = Timestamp::from_unix_millis(ms).rfc3339().unwrap();
            assert_eq!(got.as_str(), expected(ms), "{ms}");
            ms += 86_400_000 * 29 + 3_600_000 * 5 + 7;
        }
        for t in [first, last] {
            assert_eq!(
                Timestamp::from_unix_millis(t).rfc3339().unwrap().as_str(),
                expected(t)
            );
        }
    }

    #[test]
    fn arithmetic_saturates_and_seconds_round_down() {
        let t = Timestamp::from_unix_millis(1_999);
        assert_eq!(t.unix_seconds(), 1);
        assert_eq!(t.plus(Duration::from_secs(1)).unix_millis(), 2_999);
        assert_eq!(t.minus(Duration::from_millis(999)).unix_millis(), 1_000);
        assert_eq!(t.since(t.plus(Duration::from_secs(5))), Duration::ZERO);
        assert_eq!(
            Timestamp::from_unix_millis(i64::MAX - 1)
                .plus(Duration::from_secs(10))
                .unix_millis(),
            i64::MAX
        );
    }
}
