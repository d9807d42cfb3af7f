//! Coalesced last-access updates.
//!
//! Every authenticated call touches its session. Writing each touch to the store
//! would put a durable write on the hot path, so touches collect here and are
//! written in one batch per flush interval (at most 1 s, see `SessionPolicy`), and
//! on shutdown. This instance always sees its own pending touches (they are overlaid
//! on what the store returns); another instance may see a last-access time that is
//! up to one flush interval old.
//!
//! The buffer also remembers whose sessions it holds touches of, so that a flush
//! can announce them (`Event::SessionTouched`) to that user's subscribers.

use crate::domain::{SessionId, Timestamp, UserId};
// Hashed with foldhash rather than SipHash: the keys are session ids this service
// made, not values a client chooses, and every authenticated request looks up two.
use foldhash::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct TouchBuffer {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The latest touch of each session not yet written.
    pending: HashMap<SessionId, Timestamp>,
    /// The user of each session with a pending or unannounced touch.
    owners: HashMap<SessionId, UserId>,
}

impl TouchBuffer {
    pub fn record(&self, id: SessionId, at: Timestamp) {
        let mut state = self.lock();
        let t = state.pending.entry(id).or_insert(at);
        if *t < at {
            *t = at;
        }
    }

    /// Records a touch of a session of `user` (the hot path: what authentication does).
    pub fn record_by(&self, id: SessionId, user: UserId, at: Timestamp) {
        let mut state = self.lock();
        state.owners.entry(id).or_insert(user);
        let t = state.pending.entry(id).or_insert(at);
        if *t < at {
            *t = at;
        }
    }

    /// The users of written touches, for announcing them. Owners of sessions that
    /// are pending again are kept for the next flush; the others are forgotten.
    pub fn owners_of(
        &self,
        written: &[(SessionId, Timestamp)],
    ) -> Vec<(SessionId, UserId, Timestamp)> {
        let mut state = self.lock();
        let State { pending, owners } = &mut *state;
        written
            .iter()
            .filter_map(|&(id, at)| {
                let user = if pending.contains_key(&id) {
                    owners.get(&id).copied()
                } else {
                    owners.remove(&id)
                };
                user.map(|u| (id, u, at))
            })
            .collect()
    }

    /// The latest pending touch of a session, if any.
    pub fn pending(&self, id: SessionId) -> Option<Timestamp> {
        self.lock().pending.get(&id).copied()
    }

    /// Takes everything pending, leaving the buffer empty.
    pub fn take(&self) -> Vec<(SessionId, Timestamp)> {
        let mut state = self.lock();
        if state.pending.is_empty() {
            return Vec::new();
        }
        state.pending.drain().collect()
    }

    /// Puts back touches that could not be written (keeping the later of two).
    pub fn restore(&self, touches: Vec<(SessionId, Timestamp)>) {
        for (id, at) in touches {
            self.record(id, at);
        }
    }

    /// Removes and returns the pending touch of one session. Only done before the
    /// session ends, so its touch is not announced.
    pub fn take_one(&self, id: SessionId) -> Option<Timestamp> {
        let mut state = self.lock();
        state.owners.remove(&id);
        state.pending.remove(&id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps inconsistent.
        self.state
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
        b.record(id, Timestamp::from_unix_millis(5));
        b.record(id, Timestamp::from_unix_millis(3));
        assert_eq!(b.pending(id), Some(Timestamp::from_unix_millis(5)));
        let taken = b.take();
        assert_eq!(taken, vec![(id, Timestamp::from_unix_millis(5))]);
        assert_eq!(b.pending(id), None);
        b.record(id, Timestamp::from_unix_millis(9));
        b.restore(taken);
        assert_eq!(b.pending(id), Some(Timestamp::from_unix_millis(9)));
    }

    #[test]
    fn owners_are_kept_until_their_touches_are_announced() {
        let b = TouchBuffer::default();
        let (id, other) = (SessionId::generate(), SessionId::generate());
        let u = UserId(7);
        b.record_by(id, u, Timestamp::from_unix_millis(5));
        b.record_by(other, UserId(8), Timestamp::from_unix_millis(5));
        let taken = b.take();
        // A new touch of `id` arrives before the flush finishes.
        b.record_by(id, u, Timestamp::from_unix_millis(6));
        let mut announced = b.owners_of(&taken);
        announced.sort_by_key(|t| t.1);
        assert_eq!(
            announced,
            vec![
                (id, u, Timestamp::from_unix_millis(5)),
                (other, UserId(8), Timestamp::from_unix_millis(5))
            ]
        );
        // `id`'s owner is still known for the next flush; `other`'s is gone.
        let next = b.take();
        assert_eq!(
            b.owners_of(&next),
            vec![(id, u, Timestamp::from_unix_millis(6))]
        );
        assert_eq!(b.owners_of(&taken), vec![]);
        // A session settled before it ends is forgotten.
        b.record_by(id, u, Timestamp::from_unix_millis(7));
        b.take_one(id);
        assert_eq!(b.owners_of(&[(id, Timestamp::from_unix_millis(7))]), vec![]);
    }
}
