//! Coalesced last-access updates.
//!
//! Every authenticated call touches its session. Writing each touch to the store
//! would put a durable write on the hot path, so touches collect here and are
//! written in one batch per flush interval (at most 1 s, see `SessionPolicy`), and
//! on shutdown. This instance always sees its own pending touches (they are overlaid
//! on what the store returns); another instance may see a last-access time that is
//! up to one flush interval old. Each pending touch remembers its session's user,
//! so that the flush can announce it (`Event::SessionTouched`) to that user's
//! subscribers.

use crate::domain::{SessionId, Timestamp, UserId};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct TouchBuffer {
    pending: Mutex<HashMap<SessionId, (UserId, Timestamp)>>,
}

/// A pending last-access update: session, its user, instant.
pub type Touch = (SessionId, UserId, Timestamp);

impl TouchBuffer {
    pub fn record(&self, id: SessionId, user: UserId, at: Timestamp) {
        let mut map = self.lock();
        let t = map.entry(id).or_insert((user, at));
        if t.1 < at {
            t.1 = at;
        }
    }

    /// The latest pending touch of a session, if any.
    pub fn pending(&self, id: SessionId) -> Option<Timestamp> {
        self.lock().get(&id).map(|t| t.1)
    }

    /// Takes everything pending, leaving the buffer empty.
    pub fn take(&self) -> Vec<Touch> {
        let mut map = self.lock();
        if map.is_empty() {
            return Vec::new();
        }
        map.drain().map(|(id, (user, at))| (id, user, at)).collect()
    }

    /// Puts back touches that could not be written (keeping the later of two).
    pub fn restore(&self, touches: Vec<Touch>) {
        for (id, user, at) in touches {
            self.record(id, user, at);
        }
    }

    /// Removes and returns the pending touch of one session.
    pub fn take_one(&self, id: SessionId) -> Option<(UserId, Timestamp)> {
        self.lock().remove(&id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, (UserId, Timestamp)>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_touch_and_drains() {
        let b = TouchBuffer::default();
        let id = SessionId::generate();
        let u = UserId(7);
        b.record(id, u, Timestamp::from_unix_millis(5));
        b.record(id, u, Timestamp::from_unix_millis(3));
        assert_eq!(b.pending(id), Some(Timestamp::from_unix_millis(5)));
        let taken = b.take();
        assert_eq!(taken, vec![(id, u, Timestamp::from_unix_millis(5))]);
        assert_eq!(b.pending(id), None);
        b.record(id, u, Timestamp::from_unix_millis(9));
        b.restore(taken);
        assert_eq!(b.pending(id), Some(Timestamp::from_unix_millis(9)));
    }
}
