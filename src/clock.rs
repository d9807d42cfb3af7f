//! The injected clock. Nothing else in the crate reads the system time
//! (clippy.toml forbids `SystemTime::now`), so expiry is testable without sleeping.

use crate::domain::Timestamp;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// Wall-clock time.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place that reads the system time"
    )]
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_unix_millis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to: for tests, and for replaying.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start.unix_millis())))
    }

    /// Starts at the current wall-clock time (tests read nicer with real dates).
    pub fn starting_now() -> Self {
        ManualClock::new(SystemClock.now())
    }

    pub fn advance(&self, d: Duration) {
        self.0
            .fetch_add(crate::domain::duration_millis(d), Ordering::SeqCst);
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.unix_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_unix_millis(5));
        assert_eq!(c.now().unix_millis(), 5);
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now().unix_millis(), 2_005);
        let shared = c.clone();
        shared.set(Timestamp::EPOCH);
        assert_eq!(c.now(), Timestamp::EPOCH);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now().unix_seconds() > 1_577_836_800);
    }
}
