//! The in-process cache of the hot path, for stores that publish a generation (the
//! embedded SQLite store, see `Store::session_generation`): token hash → session,
//! user id → user (authorization), user name → user (a login's lookup), and one
//! user's whole session listing (Commvault `GET Session`).
//!
//! Correctness rests on these rules:
//! - Every lookup is made at a generation read after its request began: the
//!   request's authentication reads it, and the request's later lookups (its user,
//!   its own listing) use that reading (`Caller`). If its `changes` differ from the
//!   one the cache was filled at, the whole cache is dropped. Each process that
//!   ends a session, rotates a token or changes a user bumps it after its commit
//!   (this process's own writes included), so the next request after such a write
//!   never sees the old entry.
//! - A listing is also keyed by the `listings` generation (sessions added or
//!   purged, by any process), by this process's touch epoch (moved by every flush
//!   of last-access times, so that the pending-touch overlay never hides a flushed
//!   one), and lives at most `MAX_TOUCH_STALENESS` (touches of other processes).
//! - An entry read from the store is inserted only if the cache is still at the
//!   generation read *before* the store lookup; a write that raced with the lookup
//!   has bumped the generation and the stale entry is refused.
//! - Only "live" is decided from a cached copy. Its last access may be older than
//!   the store's (another process's touches do not bump the generation), which can
//!   only make it look *less* live, never more; a cached copy that looks expired is
//!   dropped and the store asked.
//!
//! The cache is bounded: least recently used entries are evicted beyond its
//! capacity (`session.cache_capacity`, 0 turns it off). `hashlink::LruCache` (already
//! in the tree through sqlx) behind one mutex: the critical sections are a hash
//! lookup and an `Arc` clone.

use crate::domain::{Session, Timestamp, TokenHash, User, UserId};
use crate::store::StoreGeneration;
use hashlink::LruCache;
use std::sync::{Arc, Mutex};

pub struct SessionCache {
    state: Option<Mutex<State>>,
}

struct State {
    /// The `changes` generation the entries were read at.
    generation: Option<u64>,
    entries: LruCache<TokenHash, Entry>,
    users: LruCache<UserId, Arc<User>>,
    /// The user a login's name found (the name as the login gave it).
    named: LruCache<String, Arc<User>>,
    listings: LruCache<ListingKey, Listing>,
}

/// A cached session, shared with the callers it was handed to, and its last access
/// as far as this instance knows (its own touches raise it; the shared copy stays as read).
struct Entry {
    session: Arc<Session>,
    last_accessed_at: Timestamp,
}

/// What [`SessionCache::get_touched`] found.
pub struct Touched {
    pub session: Arc<Session>,
    /// The last access known here before this request.
    pub last_access: Timestamp,
    /// The session's user, if cached at the same generation.
    pub user: Option<Arc<User>>,
}

/// How a user is looked up: by id (authorization), or by the name a login gave.
#[derive(Clone, Copy, Debug)]
pub enum UserKey<'a> {
    Id(UserId),
    Name(&'a str),
}

/// Whose sessions, and only the live ones or all.
pub type ListingKey = (UserId, bool);

/// A cached listing and what it is valid for.
#[derive(Clone)]
pub struct Listing {
    pub sessions: Arc<Vec<Session>>,
    pub listings: u64,
    pub touch_epoch: u64,
    pub read_at: Timestamp,
}

impl SessionCache {
    /// A cache of at most `capacity` sessions; 0 caches nothing.
    pub fn new(capacity: usize) -> Self {
        SessionCache {
            state: (capacity > 0).then(|| {
                Mutex::new(State {
                    generation: None,
                    entries: LruCache::new(capacity),
                    // Users and listings are per user: far fewer than sessions.
                    users: LruCache::new(capacity.div_ceil(4)),
                    named: LruCache::new(capacity.div_ceil(4)),
                    listings: LruCache::new(capacity.div_ceil(16)),
                })
            }),
        }
    }

    /// The cached session of `hash` at `generation` and its last access known here
    /// before this call (at least the copy's own), raised to `now` in the same step
    /// (this instance's touch); a different generation empties the cache first. A
    /// caller that finds the session no longer live removes it. The session's user,
    /// if cached, comes with it: found under the same lock, it spares the request a
    /// second one (the lock's cache line moves between the cores at every taking).
    pub fn get_touched(
        &self,
        generation: u64,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Option<Touched> {
        let mut st = self.at(generation)?;
        let e = st.entries.get_mut(hash)?;
        let last_access = e.last_accessed_at;
        e.last_accessed_at = last_access.max(now);
        let session = e.session.clone();
        let user = st.users.get(&session.user_id).cloned();
        Some(Touched {
            session,
            last_access,
            user,
        })
    }

    /// The cache, emptied first if `generation` is not the one it was filled at.
    fn at(&self, generation: u64) -> Option<std::sync::MutexGuard<'_, State>> {
        let mut st = self.lock()?;
        if st.generation != Some(generation) {
            st.entries.clear();
            st.users.clear();
            st.named.clear();
            st.listings.clear();
            st.generation = Some(generation);
        }
        Some(st)
    }

    /// The user `key` found at `generation`.
    pub fn user(&self, generation: u64, key: UserKey<'_>) -> Option<Arc<User>> {
        let mut st = self.at(generation)?;
        match key {
            UserKey::Id(id) => st.users.get(&id).cloned(),
            UserKey::Name(name) => st.named.get(name).cloned(),
        }
    }

    /// Caches the user the store found by `key` after `generation` was read;
    /// refused if the generation has moved on since.
    pub fn insert_user(&self, generation: u64, key: UserKey<'_>, user: Arc<User>) {
        if let Some(mut st) = self.lock()
            && st.generation == Some(generation)
        {
            match key {
                UserKey::Id(id) => st.users.insert(id, user),
                UserKey::Name(name) => st.named.insert(name.to_owned(), user),
            };
        }
    }

    /// A listing still valid for `g`, `touch_epoch` and `now`.
    pub fn listing(
        &self,
        g: StoreGeneration,
        key: ListingKey,
        touch_epoch: u64,
        now: Timestamp,
    ) -> Option<Arc<Vec<Session>>> {
        let mut st = self.at(g.changes)?;
        let l = st.listings.get(&key)?;
        let fresh = l.listings == g.listings
            && l.touch_epoch == touch_epoch
            && now >= l.read_at
            && now < l.read_at.plus(super::MAX_TOUCH_STALENESS);
        if fresh {
            Some(l.sessions.clone())
        } else {
            st.listings.remove(&key);
            None
        }
    }

    pub fn insert_listing(&self, g: StoreGeneration, key: ListingKey, listing: Listing) {
        if let Some(mut st) = self.lock()
            && st.generation == Some(g.changes)
        {
            st.listings.insert(key, listing);
        }
    }

    /// Caches `session`, read from the store after `generation` was read; refused if
    /// the generation has moved on since.
    pub fn insert(&self, generation: u64, hash: TokenHash, session: impl Into<Arc<Session>>) {
        if let Some(mut st) = self.lock()
            && st.generation == Some(generation)
        {
            let session = session.into();
            let last_accessed_at = session.last_accessed_at;
            st.entries.insert(
                hash,
                Entry {
                    session,
                    last_accessed_at,
                },
            );
        }
    }

    pub fn remove(&self, hash: &TokenHash) {
        if let Some(mut st) = self.lock() {
            st.entries.remove(hash);
        }
    }

    /// How many sessions are cached.
    pub fn len(&self) -> usize {
        self.lock().map_or(0, |st| st.entries.len())
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.state
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        ClientInfo, ConsoleType, Dialect, NewSession, SessionId, SessionToken, UserId,
    };
    use std::time::Duration;

    impl SessionCache {
        /// A lookup that raises nothing (a touch at the epoch never raises).
        fn get(&self, generation: u64, hash: &TokenHash) -> Option<(Arc<Session>, Timestamp)> {
            self.get_touched(generation, hash, Timestamp::from_unix_millis(0))
                .map(|t| (t.session, t.last_access))
        }

        fn touch(&self, hash: &TokenHash, at: Timestamp) {
            let generation = self.lock().and_then(|st| st.generation);
            if let Some(g) = generation {
                self.get_touched(g, hash, at);
            }
        }
    }

    fn session() -> (TokenHash, Session) {
        let hash = SessionToken::generate().unwrap().hash();
        let now = Timestamp::from_unix_millis(1_000_000);
        let s = NewSession {
            id: SessionId::generate(),
            token_hash: hash,
            user_id: UserId(1),
            user_name: "alice".into(),
            client: ClientInfo::default(),
            console_type: ConsoleType::CommandLine,
            dialect: Dialect::Native,
            created_at: now,
            idle_timeout: Duration::from_secs(60),
            expires_at: now.plus(Duration::from_secs(3600)),
        }
        .into_session(1);
        (hash, s)
    }

    #[test]
    fn size_is_bounded_least_recently_used_first() {
        let c = SessionCache::new(2);
        let (a, b, d) = (session(), session(), session());
        assert!(c.get(7, &a.0).is_none());
        c.insert(7, a.0, a.1.clone());
        c.insert(7, b.0, b.1.clone());
        assert!(c.get(7, &a.0).is_some()); // a is now the most recently used
        c.insert(7, d.0, d.1.clone());
        assert_eq!(c.len(), 2);
        assert!(c.get(7, &b.0).is_none(), "least recently used evicted");
        assert!(c.get(7, &a.0).is_some());
        assert!(c.get(7, &d.0).is_some());
    }

    #[test]
    fn a_new_generation_drops_everything_and_refuses_stale_inserts() {
        let c = SessionCache::new(10);
        let (a, b) = (session(), session());
        assert!(c.get(1, &a.0).is_none());
        c.insert(1, a.0, a.1.clone());
        assert!(c.get(1, &a.0).is_some());
        // Another request saw generation 2 (a session ended): all gone.
        assert!(c.get(2, &b.0).is_none());
        assert_eq!(c.len(), 0);
        // A lookup that started at generation 1 must not insert what it read.
        c.insert(1, a.0, a.1.clone());
        assert_eq!(c.len(), 0);
        c.insert(2, b.0, b.1.clone());
        assert_eq!(c.len(), 1);
    }

    /// The session's user comes with it only if cached at the same generation.
    #[test]
    fn a_cached_user_comes_with_its_session() {
        let c = SessionCache::new(10);
        let (a, session) = session();
        let now = Timestamp::from_unix_millis(0);
        c.get(1, &a);
        c.insert(1, a, session.clone());
        assert!(c.get_touched(1, &a, now).unwrap().user.is_none());
        let user = Arc::new(crate::domain::User {
            id: session.user_id,
            name: session.user_name.clone(),
            guid: String::new(),
            full_name: String::new(),
            email: String::new(),
            description: String::new(),
            enabled: true,
            roles: vec![],
            password_hash: crate::domain::PasswordHash(String::new()),
            created_at: now,
            updated_at: now,
        });
        c.insert_user(1, UserKey::Id(session.user_id), user.clone());
        let found = c.get_touched(1, &a, now).unwrap().user.unwrap();
        assert!(Arc::ptr_eq(&found, &user));
        assert!(
            c.get_touched(2, &a, now).is_none(),
            "a new generation drops both"
        );
        drop(session);
    }

    #[test]
    fn touches_raise_the_cached_last_access_and_capacity_zero_caches_nothing() {
        let c = SessionCache::new(4);
        let (a, _) = (session(), ());
        c.get(1, &a.0);
        c.insert(1, a.0, a.1.clone());
        let later = a.1.last_accessed_at.plus(Duration::from_secs(5));
        c.touch(&a.0, later);
        c.touch(&a.0, a.1.last_accessed_at);
        assert_eq!(c.get(1, &a.0).unwrap().1, later);
        c.remove(&a.0);
        assert!(c.get(1, &a.0).is_none());

        let off = SessionCache::new(0);
        off.get(1, &a.0);
        off.insert(1, a.0, a.1);
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn listings_follow_both_generations_the_touch_epoch_and_an_age_bound() {
        let c = SessionCache::new(64);
        let (_, a) = session();
        let g = StoreGeneration {
            changes: 1,
            listings: 1,
        };
        let key = (UserId(1), false);
        let t0 = Timestamp::from_unix_millis(5_000);
        let put = |g: StoreGeneration, epoch: u64, at: Timestamp| {
            c.insert_listing(
                g,
                key,
                Listing {
                    sessions: Arc::new(vec![a.clone()]),
                    listings: g.listings,
                    touch_epoch: epoch,
                    read_at: at,
                },
            );
        };
        assert!(c.listing(g, key, 0, t0).is_none());
        put(g, 0, t0);
        assert_eq!(c.listing(g, key, 0, t0).unwrap().len(), 1);
        let later = t0.plus(crate::service::MAX_TOUCH_STALENESS);
        assert!(c.listing(g, key, 0, later).is_none(), "too old");
        put(g, 0, t0);
        assert!(
            c.listing(g, key, 1, t0).is_none(),
            "touches were flushed since"
        );
        put(g, 0, t0);
        let created = StoreGeneration { listings: 2, ..g };
        assert!(
            c.listing(created, key, 0, t0).is_none(),
            "a session was added"
        );
        put(g, 0, t0);
        let ended = StoreGeneration { changes: 2, ..g };
        assert!(c.listing(ended, key, 0, t0).is_none(), "a session ended");
        put(g, 0, t0);
        assert!(
            c.listing(ended, key, 0, t0).is_none(),
            "stale insert refused"
        );
    }
}
