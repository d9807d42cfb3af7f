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
    /// instant outside years 0000..=9999. On the hot path (vSphere session info), so
    /// the digits are written one by one rather than through `write!` with padding,
    /// and callers hand out the `str` without the formatting machinery.
    pub fn rfc3339(self) -> Option<Rfc3339> {
        // Whole seconds and milliseconds apart (no 128-bit nanoseconds), and the
        // calendar date worked out once (`month()` and `day()` would each redo it).
        let t = time::OffsetDateTime::from_unix_timestamp(self.0.div_euclid(1000)).ok()?;
        let millis = self.0.rem_euclid(1000) as u32;
        let (year, month, day) = t.to_calendar_date();
        let (hour, minute, second) = t.to_hms();
        let year = u32::try_from(year).ok().filter(|y| *y <= 9999)?;
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: u32| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, u32::from(u8::from(month)));
        put(8, 2, u32::from(day));
        put(11, 2, u32::from(hour));
        put(14, 2, u32::from(minute));
        put(17, 2, u32::from(second));
        put(20, 3, millis);
        Some(Rfc3339(b))
    }
}

/// A formatted [`Timestamp`] (see [`Timestamp::rfc3339`]).
#[derive(Clone, Copy)]
pub struct Rfc3339([u8; 24]);

impl Rfc3339 {
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
