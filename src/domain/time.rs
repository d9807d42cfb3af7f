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
    /// through `write!` with padding, the date comes from a per-thread copy (see
    /// [`date_text`]), and callers hand out the bytes without the formatting machinery.
    pub fn rfc3339(self) -> Option<Rfc3339> {
        // Whole seconds and milliseconds apart (no 128-bit nanoseconds).
        let secs = self.0.div_euclid(1000);
        let (day, second_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let date = date_text(day)?;
        let mut b = *b"0000-00-00T00:00:00.000Z";
        b[..10].copy_from_slice(&date);
        // In range by construction: hours < 24, minutes and seconds < 60.
        let two = |v: i64| PAIRS[usize::try_from(v).unwrap_or(0) % 100];
        b[11..13].copy_from_slice(&two(second_of_day / 3600));
        b[14..16].copy_from_slice(&two(second_of_day / 60 % 60));
        b[17..19].copy_from_slice(&two(second_of_day % 60));
        let millis = self.0.rem_euclid(1000);
        b[20] = b'0' + (millis / 100) as u8;
        b[21..23].copy_from_slice(&two(millis % 100));
        Some(Rfc3339(b))
    }
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

/// `YYYY-MM-DD` of a day since the epoch; `None` outside years 0000..=9999. The
/// calendar date is worked out by the `time` crate and kept per thread for the
/// day last asked for: the instants answered are nearly all of a few recent days
/// (a session's start and last use), and the date was most of a formatting.
fn date_text(day: i64) -> Option<[u8; 10]> {
    thread_local! {
        static LAST: std::cell::Cell<Option<(i64, [u8; 10])>> = const { std::cell::Cell::new(None) };
    }
    if let Some((d, text)) = LAST.get()
        && d == day
    {
        return Some(text);
    }
    let date = time::OffsetDateTime::from_unix_timestamp(day.checked_mul(86_400)?).ok()?;
    let (year, month, day_of_month) = date.to_calendar_date();
    let year = usize::try_from(year).ok().filter(|y| *y <= 9999)?;
    let mut text = *b"0000-00-00";
    text[..2].copy_from_slice(&PAIRS[year / 100]);
    text[2..4].copy_from_slice(&PAIRS[year % 100]);
    text[5..7].copy_from_slice(&PAIRS[usize::from(u8::from(month))]);
    text[8..10].copy_from_slice(&PAIRS[usize::from(day_of_month)]);
    LAST.set(Some((day, text)));
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

    /// The per-thread date and the digit pairs give what the `time` crate's own
    /// formatting gives, for instants across four centuries (leap days, the first
    /// and last millisecond of a day), days alternating and repeating.
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
