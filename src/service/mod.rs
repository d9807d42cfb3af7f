//! All policy, once: authentication, authorization, expiry, revocation, users.
//!
//! The dialects in `api/` call these operations and render their results; they
//! never reach the store. This layer never sees HTTP: "now" comes from the injected
//! [`Clock`], the caller from a token the dialect extracted.

mod audit;
mod auth;
mod cache;
mod error;
mod events;
mod lockout;
mod password;
mod sessions;
mod touch;
mod users;

pub use audit::{AuditFilter, AuditPage, AuditPolicy};
pub use auth::{LoginOutcome, LoginRequest};
pub use error::{ServiceError, ServiceResult};
pub use events::{Delivery, EVENT_BUFFER, Event, EventSubscription};
pub use lockout::LockoutPolicy;
pub use password::{Argon2Config, MIN_PASSWORD_CHARS, Passwords};
pub use sessions::{MAX_PAGE, SessionListing, SessionRow, SessionRows, SessionView};
pub use users::{BootstrapOutcome, UserChanges, UserInput, validate_user_name};

use crate::clock::Clock;
use crate::domain::{
    AuditKind, Dialect, NewAuditEvent, Permission, Permissions, Session, Timestamp, User, UserId,
    UserRef,
};
use crate::store::{SessionLimit, Store, StoreGeneration};
use cache::{SessionCache, UserKey};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use touch::TouchBuffer;

/// Session lifetimes and housekeeping. Every duration is written like `30m`, `24h`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionPolicy {
    /// Idle timeout of a session whose client asks for none.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Upper bound for an idle timeout a client asks for (Commvault Login `timeout`).
    #[serde(with = "humantime_serde")]
    pub max_idle_timeout: Duration,
    /// Absolute lifetime from login, however busy the session.
    #[serde(with = "humantime_serde")]
    pub absolute_lifetime: Duration,
    /// How long ended sessions stay listed before they are purged.
    #[serde(with = "humantime_serde")]
    pub history_retention: Duration,
    /// How often expired sessions are recorded as ended and old history purged.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How often coalesced last-access updates are written (at most 1 s).
    #[serde(with = "humantime_serde")]
    pub touch_flush_interval: Duration,
    /// Most sessions kept in the in-process validation cache (0: none). Used only
    /// with a store that publishes a session generation (the embedded SQLite
    /// store); see `service::cache`.
    pub cache_capacity: usize,
    /// Whether changing one's own password also ends one's other sessions (the
    /// session that made the change stays). A password set by someone else always
    /// ends all of that user's sessions.
    pub password_change_ends_other_sessions: bool,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle_timeout: Duration::from_secs(30 * 60),
            max_idle_timeout: Duration::from_secs(12 * 3600),
            absolute_lifetime: Duration::from_secs(24 * 3600),
            history_retention: Duration::from_secs(30 * 24 * 3600),
            sweep_interval: Duration::from_secs(30),
            touch_flush_interval: Duration::from_millis(500),
            cache_capacity: 10_000,
            password_change_ends_other_sessions: true,
        }
    }
}

/// The bound on how stale a stored last-access time may be.
pub const MAX_TOUCH_STALENESS: Duration = Duration::from_secs(1);

impl SessionPolicy {
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("idle_timeout", self.idle_timeout),
            ("max_idle_timeout", self.max_idle_timeout),
            ("absolute_lifetime", self.absolute_lifetime),
            ("sweep_interval", self.sweep_interval),
            ("touch_flush_interval", self.touch_flush_interval),
        ];
        for (name, d) in positive {
            anyhow::ensure!(!d.is_zero(), "session.{name} must be more than zero");
        }
        anyhow::ensure!(
            self.idle_timeout <= self.max_idle_timeout,
            "session.idle_timeout must not exceed session.max_idle_timeout"
        );
        anyhow::ensure!(
            self.touch_flush_interval <= MAX_TOUCH_STALENESS,
            "session.touch_flush_interval must be at most 1s"
        );
        Ok(())
    }
}

/// Everything the service is configured with.
#[derive(Clone, Debug, Default)]
pub struct ServiceConfig {
    pub session: SessionPolicy,
    pub session_limit: SessionLimit,
    pub lockout: LockoutPolicy,
    pub audit: AuditPolicy,
}

/// An authenticated caller: the live session its token named.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The session, shared with the validation cache (no copy per request). Its
    /// `last_accessed_at` may be older than this request: see
    /// [`Caller::last_accessed_at`].
    pub session: Arc<Session>,
    /// The session's last access: this request. Also the time of the request as
    /// the service sees it: what the request does after authentication is decided
    /// at this instant (no second reading of the clock).
    pub last_accessed_at: Timestamp,
    /// The session generation the session was checked against (`None`: the store
    /// publishes none). The request's later cache lookups (its user, its listing)
    /// are made at this generation rather than reading it again: it was read after
    /// the request began, which is all the cache promises (see `cache.rs`).
    generation: Option<StoreGeneration>,
    /// The session's user as cached at `generation`, if the cache had it: found with
    /// the session, under the same lock.
    user: Option<Arc<User>>,
}

impl Caller {
    pub fn user_id(&self) -> UserId {
        self.session.user_id
    }

    pub fn user_ref(&self) -> UserRef {
        UserRef {
            id: self.session.user_id,
            name: self.session.user_name.clone(),
        }
    }
}

/// Who performs an administrative operation.
#[derive(Clone, Copy, Debug)]
pub enum Actor<'a> {
    /// The operator at the command line, with direct access to the store.
    System,
    /// A signed-in user, subject to their roles.
    User(&'a Caller),
}

impl Actor<'_> {
    /// The generation an authenticated request was checked against, if any.
    fn generation(&self) -> Option<StoreGeneration> {
        match self {
            Actor::User(caller) => caller.generation,
            Actor::System => None,
        }
    }
}

/// What a caller may do, loaded when an operation needs to decide.
#[derive(Clone, Debug)]
pub struct Access {
    /// `None` for [`Actor::System`].
    pub user: Option<Arc<User>>,
    pub permissions: Permissions,
}

impl Access {
    pub fn has(&self, p: Permission) -> bool {
        self.permissions.has(p)
    }

    pub fn require(&self, p: Permission) -> ServiceResult<()> {
        if self.has(p) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(p))
        }
    }

    pub fn is(&self, id: UserId) -> bool {
        self.user.as_ref().is_some_and(|u| u.id == id)
    }
}

/// The service: cheap to clone, shared by every dialect.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    events: events::EventBus,
    config: ServiceConfig,
    passwords: Passwords,
    touches: TouchBuffer,
    cache: SessionCache,
    /// Moved by every write of pending touches: cached listings read before it are
    /// stale (they lack the flushed touches the overlay no longer provides).
    touch_epoch: std::sync::atomic::AtomicU64,
    /// Held while pending touches are taken and written: a flush that finds the
    /// buffer empty because another flush took it returns only once that one's
    /// write is in the store (so "flushed" means written, for the caller too).
    flushing: tokio::sync::Mutex<()>,
    /// Store reads of cached listings, one at a time per stripe of listing keys
    /// (`sessions::listing_stripe`): see `Service::cached_listing`.
    listing_reads: Box<[tokio::sync::Mutex<()>]>,
}

/// Stripes of [`Inner::listing_reads`]: listings of different users rarely share
/// one, and the store's readers are fewer anyway.
const LISTING_READ_STRIPES: usize = 64;

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
        passwords: Passwords,
    ) -> Self {
        let cache = SessionCache::new(config.session.cache_capacity);
        Service {
            inner: Arc::new(Inner {
                cache,
                store,
                clock,
                events: events::EventBus::default(),
                config,
                passwords,
                touches: TouchBuffer::default(),
                touch_epoch: std::sync::atomic::AtomicU64::new(0),
                flushing: tokio::sync::Mutex::new(()),
                listing_reads: (0..LISTING_READ_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            }),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The time `actor` acts at: an authenticated request's own
    /// ([`Caller::last_accessed_at`]), otherwise the clock's.
    fn now_of(&self, actor: &Actor<'_>) -> Timestamp {
        match actor {
            Actor::User(caller) => caller.last_accessed_at,
            Actor::System => self.now(),
        }
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    /// The password hasher (its counters tell how often it ran).
    pub fn passwords(&self) -> &Passwords {
        &self.inner.passwords
    }

    /// How many sessions the validation cache holds (for tests of its bound).
    pub fn cached_sessions(&self) -> usize {
        self.inner.cache.len()
    }

    fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// Cheap readiness probe: can the store be reached?
    pub async fn ready(&self) -> ServiceResult<()> {
        Ok(self.store().ping().await?)
    }

    /// What `actor` may do.
    pub async fn access(&self, actor: &Actor<'_>) -> ServiceResult<Access> {
        match actor {
            Actor::System => Ok(Access {
                user: None,
                permissions: Permissions::of(&Permission::ALL),
            }),
            Actor::User(caller) => {
                let user = self
                    .user_of(caller)
                    .await?
                    .filter(|u| u.enabled)
                    .ok_or(ServiceError::Unauthenticated)?;
                Ok(Access {
                    permissions: user.permissions(),
                    user: Some(user),
                })
            }
        }
    }

    /// A user by id (authorization, display) or by the name a login gave, from the
    /// cache when the store publishes a generation (see `cache.rs`; every change to
    /// a user, its password or its being enabled included, moves it). Changes to
    /// users go to the store. A user nobody has is not cached.
    async fn user_by(&self, key: UserKey<'_>) -> ServiceResult<Option<Arc<User>>> {
        self.user_at(key, self.store().session_generation()).await
    }

    /// The user of an authenticated request: found with its session, or looked up
    /// at the generation the session was checked at.
    async fn user_of(&self, caller: &Caller) -> ServiceResult<Option<Arc<User>>> {
        match &caller.user {
            Some(u) => Ok(Some(Arc::clone(u))),
            None => {
                self.user_at(UserKey::Id(caller.user_id()), caller.generation)
                    .await
            }
        }
    }

    /// [`Service::user_by`] at a generation already read (`None`: the store
    /// publishes none): an authenticated request's.
    async fn user_at(
        &self,
        key: UserKey<'_>,
        generation: Option<StoreGeneration>,
    ) -> ServiceResult<Option<Arc<User>>> {
        if let Some(g) = generation
            && let Some(u) = self.inner.cache.user(g.changes, key)
        {
            return Ok(Some(u));
        }
        let user = match key {
            UserKey::Id(id) => self.store().get_user(id).await?,
            UserKey::Name(name) => self.store().find_user_by_name(name).await?,
        }
        .map(Arc::new);
        if let (Some(g), Some(u)) = (generation, &user) {
            self.inner.cache.insert_user(g.changes, key, Arc::clone(u));
        }
        Ok(user)
    }

    fn touch_epoch(&self) -> u64 {
        self.inner
            .touch_epoch
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn next_touch_epoch(&self) {
        self.inner
            .touch_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Records an audit event. A failure is logged, not returned: the operation
    /// it describes has already happened.
    async fn audit(&self, event: NewAuditEvent) {
        let kind = event.kind;
        if let Err(e) = self.store().append_audit(event).await {
            crate::telemetry::audit_not_recorded(kind, &e);
        }
    }

    fn event(&self, kind: AuditKind) -> NewAuditEvent {
        NewAuditEvent {
            at: self.now(),
            kind,
            actor: None,
            subject: None,
            session_id: None,
            source: String::new(),
            dialect: None,
            detail: String::new(),
        }
    }

    /// Writes pending last-access updates. Runs every flush interval and at shutdown.
    pub async fn flush_touches(&self) -> ServiceResult<()> {
        let _flushing = self.inner.flushing.lock().await;
        let batch = self.inner.touches.take();
        if batch.is_empty() {
            return Ok(());
        }
        let written = self.store().touch_sessions(&batch).await;
        self.next_touch_epoch();
        if let Err(e) = written {
            self.inner.touches.restore(batch);
            return Err(e.into());
        }
        self.announce_touches(&batch);
        Ok(())
    }

    /// Writes the pending touch of one session, so that the store decides its end
    /// with its true last access.
    async fn settle_touch(&self, id: crate::domain::SessionId) -> ServiceResult<()> {
        let _flushing = self.inner.flushing.lock().await;
        if let Some(t) = self.inner.touches.take_one(id) {
            let written = self.store().touch_sessions(&[(id, t)]).await;
            self.next_touch_epoch();
            if let Err(e) = written {
                self.inner.touches.record(id, t);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Ends one session after settling its pending touch.
    async fn end_one(
        &self,
        id: crate::domain::SessionId,
        end: crate::domain::SessionEnd,
    ) -> ServiceResult<Option<Session>> {
        self.settle_touch(id).await?;
        Ok(self.store().end_session(id, end).await?)
    }

    /// Records expired sessions as ended, and purges session history and audit
    /// events past their retention. Safe to run on several instances at once.
    /// Returns how many sessions it ended.
    pub async fn sweep(&self) -> ServiceResult<usize> {
        const BATCH: usize = 500;
        self.flush_touches().await?;
        // Sessions touched on another instance may be up to one flush interval
        // fresher than the store says: leave them that much grace.
        let now = self.now().minus(MAX_TOUCH_STALENESS * 2);
        let mut ended = 0;
        loop {
            let batch = self.store().end_expired_sessions(now, BATCH).await?;
            ended += batch.len();
            for s in &batch {
                self.audit_session_end(s, AuditKind::SessionExpired, None, "")
                    .await;
            }
            if batch.len() < BATCH {
                break;
            }
        }
        let horizon = self
            .now()
            .minus(self.inner.config.session.history_retention);
        while self.store().purge_ended_sessions(horizon, BATCH).await? == BATCH as u64 {}
        self.purge_old_audit().await?;
        Ok(ended)
    }

    /// Records a session's end in the audit trail and announces it to event
    /// subscribers. Every path that ends a session comes through here.
    async fn audit_session_end(
        &self,
        s: &Session,
        kind: AuditKind,
        actor: Option<UserRef>,
        source: &str,
    ) {
        self.announce_end(s);
        let reason = s.end.map_or("", |e| e.reason.key());
        self.audit(NewAuditEvent {
            actor,
            subject: Some(UserRef {
                id: s.user_id,
                name: s.user_name.clone(),
            }),
            session_id: Some(s.id),
            source: source.to_string(),
            dialect: Some(s.dialect),
            detail: format!("reason={reason}"),
            ..self.event(kind)
        })
        .await;
    }

    /// Counts the live sessions in the store (every instance's) and publishes the
    /// count as `sessiond_live_sessions`.
    pub async fn refresh_live_sessions(&self) -> ServiceResult<u64> {
        let n = self.store().count_live_sessions(None, self.now()).await?;
        crate::telemetry::live_sessions(n);
        Ok(n)
    }

    /// Runs the background work until `shutdown` fires, then flushes pending touches.
    pub fn spawn_background(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move {
            let policy = svc.inner.config.session.clone();
            let mut flush = tokio::time::interval(policy.touch_flush_interval);
            let mut sweep = tokio::time::interval(policy.sweep_interval);
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = flush.tick() => {
                        if let Err(e) = svc.flush_touches().await {
                            tracing::warn!(error = %e, "could not write last-access times; will retry");
                            e.log_if_internal();
                        }
                    }
                    _ = sweep.tick() => {
                        match svc.sweep().await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(ended = n, "recorded expired sessions"),
                            Err(e) => { e.log_if_internal(); }
                        }
                        if let Err(e) = svc.refresh_live_sessions().await {
                            e.log_if_internal();
                        }
                    }
                }
            }
            if let Err(e) = svc.flush_touches().await {
                e.log_if_internal();
            }
        })
    }
}

/// The dialect a request came through, and the address it came from.
#[derive(Clone, Debug)]
pub struct Origin {
    pub dialect: Dialect,
    pub source: String,
}

#[cfg(test)]
mod touch_bound_tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::{
        ClientInfo, ConsoleType, NewSession, NewUser, PasswordHash, SessionId, SessionToken,
    };

    /// Touches are not written on the request path; the background task writes them
    /// (every `touch_flush_interval`, validated ≤ `MAX_TOUCH_STALENESS`) and once more
    /// when it stops, so a graceful shutdown loses none.
    #[tokio::test]
    async fn touches_are_batched_and_written_at_shutdown() {
        let store: Arc<dyn Store> = Arc::new(
            crate::store::SqliteStore::open("sqlite::memory:")
                .await
                .unwrap(),
        );
        let clock = ManualClock::starting_now();
        let start = clock.now();
        let user = store
            .create_user(NewUser {
                name: "alice".into(),
                guid: "g".into(),
                full_name: String::new(),
                email: String::new(),
                description: String::new(),
                enabled: true,
                roles: Vec::new(),
                password_hash: PasswordHash("x".into()),
                created_at: start,
            })
            .await
            .unwrap();
        let token = SessionToken::generate().unwrap();
        let session = store
            .create_session(
                NewSession {
                    id: SessionId::generate(),
                    token_hash: token.hash(),
                    user_id: user.id,
                    user_name: user.name.clone(),
                    client: ClientInfo::default(),
                    console_type: ConsoleType::CommandLine,
                    dialect: Dialect::Native,
                    created_at: start,
                    idle_timeout: Duration::from_secs(600),
                    expires_at: start.plus(Duration::from_secs(3600)),
                },
                SessionLimit::Unlimited,
            )
            .await
            .unwrap()
            .session;
        let config = ServiceConfig::default();
        let svc = Service::new(
            store.clone(),
            Arc::new(clock.clone()),
            config,
            Passwords::new(crate::service::Argon2Config::TEST).unwrap(),
        );
        clock.advance(Duration::from_secs(5));
        let touched_at = clock.now();
        svc.authenticate(token.to_hex().as_bytes()).await.unwrap();
        let stored = |s: Arc<dyn Store>| async move {
            s.get_session(session.id)
                .await
                .unwrap()
                .unwrap()
                .last_accessed_at
        };
        assert_eq!(stored(store.clone()).await, start, "not written at once");
        svc.flush_touches().await.unwrap();
        assert_eq!(stored(store.clone()).await, touched_at);
        // A request in the same millisecond finds its touch recorded already; the
        // next millisecond's is recorded and written.
        svc.authenticate(token.to_hex().as_bytes()).await.unwrap();
        clock.advance(Duration::from_millis(1));
        svc.authenticate(token.to_hex().as_bytes()).await.unwrap();
        svc.flush_touches().await.unwrap();
        assert_eq!(
            stored(store.clone()).await,
            touched_at.plus(Duration::from_millis(1))
        );
        let mut too_slow = config_with_interval(Duration::from_millis(1500));
        assert!(too_slow.validate().is_err());
        too_slow.touch_flush_interval = MAX_TOUCH_STALENESS;
        assert!(too_slow.validate().is_ok());

        let stop = CancellationToken::new();
        let background = svc.spawn_background(stop.clone());
        // A touch pending at shutdown is written by the background task's last flush.
        clock.advance(Duration::from_secs(5));
        let last = clock.now();
        svc.authenticate(token.to_hex().as_bytes()).await.unwrap();
        stop.cancel();
        background.await.unwrap();
        assert_eq!(stored(store.clone()).await, last);
    }

    /// Every request's future holds `authenticate`'s: the store's path is boxed
    /// behind a miss of the cache, so that future stays a few words (it was ~1.5 KiB,
    /// copied each time a handler's future moved).
    #[tokio::test]
    async fn authentication_futures_stay_small() {
        let store: Arc<dyn Store> = Arc::new(
            crate::store::SqliteStore::open("sqlite::memory:")
                .await
                .unwrap(),
        );
        let svc = Service::new(
            store,
            Arc::new(ManualClock::starting_now()),
            ServiceConfig::default(),
            Passwords::new(crate::service::Argon2Config::TEST).unwrap(),
        );
        let unknown = SessionToken::generate().unwrap().to_hex();
        let fut = svc.authenticate(unknown.as_bytes());
        assert!(
            std::mem::size_of_val(&fut) <= 256,
            "{}",
            std::mem::size_of_val(&fut)
        );
        assert!(matches!(fut.await, Err(ServiceError::Unauthenticated)));
        let fut = svc.authenticate(b"not a token");
        assert!(std::mem::size_of_val(&fut) <= 256);
        assert!(matches!(fut.await, Err(ServiceError::Unauthenticated)));
    }

    fn config_with_interval(d: Duration) -> SessionPolicy {
        SessionPolicy {
            touch_flush_interval: d,
            ..SessionPolicy::default()
        }
    }
}
