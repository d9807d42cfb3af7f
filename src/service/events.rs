//! Live events: what happens to sessions and users, as it happens, on this instance.
//!
//! The service publishes on a bounded [`tokio::sync::broadcast`] channel. Sending
//! never waits: a subscriber that falls more than [`EVENT_BUFFER`] events behind
//! loses the oldest ones and is told so ([`Delivery::Lagged`]), and one that has
//! gone away costs nothing. With no subscriber, publishing is a counter check.
//!
//! Events are per instance: each instance announces what it did itself (its
//! logins, its touch flushes, the ends it recorded). Nothing crosses instances.

use super::{Access, Actor, Caller, Service, ServiceResult};
use crate::domain::{
    AuditKind, Permission, Session, SessionEnd, SessionId, Timestamp, User, UserId,
};
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many events a subscriber may fall behind before it misses some.
pub const EVENT_BUFFER: usize = 1024;

/// Something that happened, with the user it concerns (for filtering).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A session was opened.
    SessionStarted { session: Session },
    /// Sessions were used: their last access (and so their idle time) changed.
    /// Published from the coalesced touch flush, not per request.
    SessionTouched {
        session: SessionId,
        user: UserId,
        last_accessed_at: Timestamp,
    },
    /// A session ended (logout, expiry, revocation, eviction).
    SessionEnded {
        session: SessionId,
        user: UserId,
        user_name: String,
        end: SessionEnd,
    },
    /// A user was created, changed, enabled, disabled, deleted or given a new password.
    UserChanged {
        user: UserId,
        user_name: String,
        change: AuditKind,
    },
}

impl Event {
    /// The user the event concerns.
    pub fn user(&self) -> UserId {
        match self {
            Event::SessionStarted { session } => session.user_id,
            Event::SessionTouched { user, .. }
            | Event::SessionEnded { user, .. }
            | Event::UserChanged { user, .. } => *user,
        }
    }
}

/// The sending side, owned by the service.
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::with_capacity(EVENT_BUFFER)
    }
}

impl EventBus {
    pub fn with_capacity(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventBus { tx }
    }

    /// Whether anyone listens (so that callers skip building events nobody reads).
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Publishes `make()` if anyone listens. Never waits.
    pub fn publish(&self, make: impl FnOnce() -> Event) {
        if self.has_subscribers() {
            // An error only means the last subscriber left meanwhile.
            let _ = self.tx.send(Arc::new(make()));
        }
    }

    /// A raw subscription to every event (see [`super::Service::subscribe_events`]).
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

impl Service {
    /// Subscribes the caller to live events: every user's with user management,
    /// else only its own user's (see [`EventSubscription`]).
    pub async fn subscribe_events(&self, caller: &Caller) -> ServiceResult<EventSubscription> {
        // Subscribe first, so that nothing between the check and the subscription is missed.
        let rx = self.inner.events.subscribe();
        let access = self.access(&Actor::User(caller)).await?;
        Ok(EventSubscription::new(rx, &access, caller))
    }

    pub(super) fn announce_start(&self, session: &Session) {
        self.inner.events.publish(|| Event::SessionStarted {
            session: session.clone(),
        });
    }

    /// Announces written touches (called by the flush, never per request).
    pub(super) fn announce_touches(&self, written: &[(SessionId, Timestamp)]) {
        if !self.inner.events.has_subscribers() {
            // Still forget the owners of written touches.
            self.inner.touches.owners_of(written);
            return;
        }
        for (session, user, last_accessed_at) in self.inner.touches.owners_of(written) {
            self.inner.events.publish(|| Event::SessionTouched {
                session,
                user,
                last_accessed_at,
            });
        }
    }

    pub(super) fn announce_end(&self, s: &Session) {
        if let Some(end) = s.end {
            self.inner.events.publish(|| Event::SessionEnded {
                session: s.id,
                user: s.user_id,
                user_name: s.user_name.clone(),
                end,
            });
        }
    }

    pub(super) fn announce_user_change(&self, user: &User, change: AuditKind) {
        self.inner.events.publish(|| Event::UserChanged {
            user: user.id,
            user_name: user.name.clone(),
            change,
        });
    }
}

/// What a subscriber receives next.
#[derive(Clone, Debug)]
pub enum Delivery {
    Event(Arc<Event>),
    /// The subscriber fell behind and this many events were dropped for it: what it
    /// shows may be stale, it should reload.
    Lagged(u64),
}

/// One subscriber's view of the events: all of them for a user administrator,
/// else only those about the subscriber's own user. It ends when the
/// subscriber's own session ends, and when the subscriber's user changes (its
/// roles, and so its scope, may have changed: subscribe again).
pub struct EventSubscription {
    rx: broadcast::Receiver<Arc<Event>>,
    /// `None`: everything.
    only: Option<UserId>,
    own_user: UserId,
    own_session: SessionId,
    done: bool,
}

impl EventSubscription {
    pub(super) fn new(
        rx: broadcast::Receiver<Arc<Event>>,
        access: &Access,
        caller: &Caller,
    ) -> Self {
        EventSubscription {
            rx,
            only: (!access.has(Permission::UserManagement)).then(|| caller.user_id()),
            own_user: caller.user_id(),
            own_session: caller.session.id,
            done: false,
        }
    }

    /// Whether this subscriber sees every user's events.
    pub fn sees_everyone(&self) -> bool {
        self.only.is_none()
    }

    /// The next delivery, or `None` once the subscriber's session has ended or its
    /// user changed (that event is delivered first), or the bus is gone.
    pub async fn next(&mut self) -> Option<Delivery> {
        if self.done {
            return None;
        }
        loop {
            match self.rx.recv().await {
                Ok(event) => {
                    let last = match event.as_ref() {
                        Event::SessionEnded { session, .. } => *session == self.own_session,
                        Event::UserChanged { user, .. } => *user == self.own_user,
                        _ => false,
                    };
                    if last {
                        self.done = true;
                        return Some(Delivery::Event(event));
                    }
                    if self.only.is_none_or(|u| u == event.user()) {
                        return Some(Delivery::Event(event));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => return Some(Delivery::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EndReason;

    fn ended(n: u128, user: i64) -> Event {
        Event::SessionEnded {
            session: SessionId(uuid::Uuid::from_u128(n)),
            user: UserId(user),
            user_name: format!("u{user}"),
            end: SessionEnd {
                at: Timestamp::from_unix_millis(1),
                reason: EndReason::Revoked,
            },
        }
    }

    #[test]
    fn publishing_without_subscribers_builds_nothing() {
        let bus = EventBus::with_capacity(4);
        let mut built = false;
        bus.publish(|| {
            built = true;
            ended(1, 1)
        });
        assert!(!built);
    }

    #[tokio::test]
    async fn a_stalled_subscriber_never_blocks_the_sender_and_is_told_it_lagged() {
        let bus = EventBus::with_capacity(4);
        let mut rx = bus.subscribe();
        // Far more than the buffer, with nobody reading: each send returns at once.
        for n in 0..100 {
            bus.publish(|| ended(n, 1));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(missed)) => assert_eq!(missed, 96),
            other => panic!("expected a lag notice, got {other:?}"),
        }
        // Then it carries on with the newest events.
        let next = rx.recv().await.unwrap();
        assert_eq!(*next, ended(96, 1));
    }
}
