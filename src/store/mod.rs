//! Persistence: one trait, one file per backend.
//!
//! Only this layer knows SQL or Redis commands. Every method keeps its meaning on
//! every backend; `tests/it/conformance.rs` holds the one suite that checks it.
//!
//! Rules each backend follows:
//! - Writes that callers rely on (users, session create/end/rotate, audit) are durable
//!   when the method returns.
//! - A session is found by the SHA-256 of its secret; the secret itself never arrives here.
//! - Listing one user's sessions uses a per-user index, never a scan of all sessions.
//! - Conditional updates (end only if live, rotate only if the old hash matches, sweep
//!   only what is still live) make concurrent instances safe without locks held across calls.

mod generation;
mod postgres;
mod redis;
mod sqlite;

pub use self::generation::StoreGeneration;
pub use self::postgres::PostgresStore;
pub use self::redis::RedisStore;
pub use self::sqlite::SqliteStore;

use crate::domain::{
    AuditEvent, AuditKind, NewAuditEvent, NewSession, NewUser, Session, SessionEnd, SessionId,
    Timestamp, TokenHash, User, UserId,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// What can go wrong in a store, as the service needs to tell it apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (e.g. a user name).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The record to change does not exist.
    #[error("not found")]
    NotFound,
    /// The per-user session limit with the `deny` policy refused a new session.
    #[error("session limit reached")]
    LimitReached,
    /// The backend failed (connection, I/O, corrupt data). Detail for the log only.
    #[error("store backend failure: {0}")]
    Backend(#[source] anyhow::Error),
}

impl StoreError {
    pub fn backend(e: impl Into<anyhow::Error>) -> Self {
        StoreError::Backend(e.into())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How many live sessions one user may hold, and what a login beyond that does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SessionLimit {
    #[default]
    Unlimited,
    /// Refuse the new session ([`StoreError::LimitReached`]).
    Deny(u32),
    /// End the oldest live sessions (reason `Evicted`) to make room.
    EvictOldest(u32),
}

/// Which sessions a listing wants, by state at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StateFilter {
    #[default]
    Any,
    /// Not ended and not expired at `now`.
    Live,
    /// Ended, or expired at `now`.
    Ended,
}

/// Position after which the next page starts; pages are newest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionCursor {
    pub created_at: Timestamp,
    pub id: SessionId,
}

impl SessionCursor {
    pub fn after(s: &Session) -> Self {
        SessionCursor {
            created_at: s.created_at,
            id: s.id,
        }
    }
}

/// A page of sessions: newest first (`created_at` desc, then id desc).
#[derive(Clone, Debug)]
pub struct SessionQuery {
    pub user: Option<UserId>,
    pub state: StateFilter,
    /// Exact match on the client host.
    pub host: Option<String>,
    /// The instant the state filter is evaluated at.
    pub now: Timestamp,
    pub after: Option<SessionCursor>,
    pub limit: usize,
}

/// A page of audit events: newest first (id desc).
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Events whose actor or subject is this user.
    pub user: Option<UserId>,
    /// Any of these kinds; empty means all.
    pub kinds: Vec<AuditKind>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Events with an id below this one.
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// Result of creating a session.
#[derive(Clone, Debug)]
pub struct CreatedSession {
    pub session: Session,
    /// Sessions ended (reason `Evicted`) to respect [`SessionLimit::EvictOldest`].
    pub evicted: Vec<Session>,
}

/// Login failures counted under one key (an account or a source address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureRecord {
    /// Failures within the current window.
    pub failures: u32,
    pub window_start: Timestamp,
    /// Set while the key is locked out.
    pub locked_until: Option<Timestamp>,
    /// How many times this key has been locked since its last success (grows the lockout).
    pub lockouts: u32,
}

/// The store behind every dialect.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- users ----

    /// Creates a user; [`StoreError::Conflict`] if the name (case-insensitive) is taken.
    async fn create_user(&self, user: NewUser) -> StoreResult<User>;
    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>>;
    /// Case-insensitive.
    async fn find_user_by_name(&self, name: &str) -> StoreResult<Option<User>>;
    /// Users with an id above `after`, ascending, at most `limit`.
    async fn list_users(&self, after: Option<UserId>, limit: usize) -> StoreResult<Vec<User>>;
    /// Replaces every field but `id` and `created_at`. [`StoreError::NotFound`] if gone,
    /// [`StoreError::Conflict`] if renamed onto a taken name.
    async fn update_user(&self, user: &User) -> StoreResult<()>;
    /// Deletes the user (its sessions stay, as history). `false` if there was none.
    async fn delete_user(&self, id: UserId) -> StoreResult<bool>;
    async fn count_users(&self) -> StoreResult<u64>;

    // ---- sessions ----

    /// Stores a new live session, assigning the next `browser_session_id` of its user,
    /// and applies `limit` atomically with the insert.
    async fn create_session(
        &self,
        session: NewSession,
        limit: SessionLimit,
    ) -> StoreResult<CreatedSession>;
    /// [`Store::create_session`] and the audit `event` of the login that opened it,
    /// in one transaction where the backend can (the embedded store: one commit and
    /// one sync instead of two). The default records the event right after; a failure
    /// to record it is logged and counted, and the session stands.
    async fn create_session_audited(
        &self,
        session: NewSession,
        limit: SessionLimit,
        event: NewAuditEvent,
    ) -> StoreResult<CreatedSession> {
        let created = self.create_session(session, limit).await?;
        let kind = event.kind;
        if let Err(e) = self.append_audit(event).await {
            crate::telemetry::audit_not_recorded(kind, &e);
        }
        Ok(created)
    }
    async fn find_session_by_token(&self, hash: &TokenHash) -> StoreResult<Option<Session>>;
    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>>;
    /// Raises `last_accessed_at` of sessions recorded live to the given instants (never
    /// lowers it, never past `expires_at`). The service records a touch only after it
    /// found the session live with its own, fresher, pending touches, so a touch may
    /// move an idle deadline the store alone would think passed.
    async fn touch_sessions(&self, touches: &[(SessionId, Timestamp)]) -> StoreResult<()>;
    /// Ends the session if it is still live; returns it as ended, or `None` if it
    /// was unknown or had already ended.
    async fn end_session(&self, id: SessionId, end: SessionEnd) -> StoreResult<Option<Session>>;
    /// Ends every live session of `user` except `except`; returns those it ended.
    async fn end_user_sessions(
        &self,
        user: UserId,
        end: SessionEnd,
        except: Option<SessionId>,
    ) -> StoreResult<Vec<Session>>;
    /// Replaces the secret of a live session, only if `old` is still its hash.
    async fn rotate_session_token(
        &self,
        id: SessionId,
        old: &TokenHash,
        new: &TokenHash,
    ) -> StoreResult<bool>;
    async fn list_sessions(&self, query: &SessionQuery) -> StoreResult<Vec<Session>>;
    /// Records the end (idle or absolute, at the instant it happened) of up to `limit`
    /// sessions that have expired by `now` but are still marked live; returns them.
    /// Safe to run on several instances at once: each session is ended once.
    async fn end_expired_sessions(&self, now: Timestamp, limit: usize)
    -> StoreResult<Vec<Session>>;
    /// Deletes up to `limit` sessions that ended before `before`; returns how many.
    async fn purge_ended_sessions(&self, before: Timestamp, limit: usize) -> StoreResult<u64>;
    /// Sessions live at `now`, of one user or of all.
    async fn count_live_sessions(&self, user: Option<UserId>, now: Timestamp) -> StoreResult<u64>;

    // ---- audit ----

    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<()>;
    async fn query_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;
    /// Deletes events older than `before`; returns how many.
    async fn purge_audit(&self, before: Timestamp) -> StoreResult<u64>;

    // ---- login throttling ----

    async fn login_failures(&self, key: &str) -> StoreResult<Option<FailureRecord>>;
    /// [`Store::login_failures`] of each key, in order; in one query where the backend
    /// can (a login checks its account and its address).
    async fn login_failures_of(&self, keys: &[&str]) -> StoreResult<Vec<Option<FailureRecord>>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.login_failures(key).await?);
        }
        Ok(out)
    }
    /// Atomically counts one failure: a window older than `window` restarts at 1.
    async fn record_login_failure(
        &self,
        key: &str,
        now: Timestamp,
        window: Duration,
    ) -> StoreResult<FailureRecord>;
    /// Locks the key until `until`, counts one more lockout and restarts the failure count.
    async fn lock_login(&self, key: &str, until: Timestamp) -> StoreResult<()>;
    /// Forgets the key (after a successful login).
    async fn clear_login_failures(&self, key: &str) -> StoreResult<()>;

    // ---- health ----

    /// Cheap round trip to the backend.
    async fn ping(&self) -> StoreResult<()>;

    /// Values that change (on every process sharing this store) whenever a session
    /// ends, a token is rotated or a user changes (`changes`), or sessions are added
    /// or purged (`listings`); `None` when the backend cannot say so cheaply and
    /// reliably. While they are `Some` and unchanged, sessions, users and listings
    /// may be served from an in-process cache (see `service::cache`). Only the
    /// embedded SQLite store has one (its generation file); PostgreSQL and Redis
    /// serve several instances that would need a shared signal, so they have none
    /// and every validation reads the store.
    fn session_generation(&self) -> Option<StoreGeneration> {
        None
    }
}

/// Connection settings of the server backends (`[store_options]`); the embedded
/// SQLite store needs none.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreOptions {
    /// PostgreSQL: most pooled connections per instance. (Redis multiplexes every
    /// request of an instance over one connection.)
    pub max_connections: u32,
    /// Longest wait to open a connection or get one from the pool; past it the
    /// request fails with 503 and the next request tries again.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest one store operation may take once connected (PostgreSQL
    /// `statement_timeout` and a client-side bound; Redis response timeout).
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
    /// Redis: every key sessiond writes starts with this (several deployments, or
    /// tests, can share one Redis).
    pub key_prefix: String,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 10,
            connect_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(5),
            key_prefix: "sessiond:".into(),
        }
    }
}

impl StoreOptions {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_connections >= 1,
            "store_options.max_connections must be at least 1"
        );
        anyhow::ensure!(
            !self.connect_timeout.is_zero(),
            "store_options.connect_timeout must be more than zero"
        );
        anyhow::ensure!(
            !self.operation_timeout.is_zero(),
            "store_options.operation_timeout must be more than zero"
        );
        anyhow::ensure!(
            !self.key_prefix.is_empty() && !self.key_prefix.chars().any(char::is_whitespace),
            "store_options.key_prefix must be non-empty, without spaces"
        );
        Ok(())
    }
}

/// Opens the backend a URL names with default [`StoreOptions`].
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    open_with(url, &StoreOptions::default()).await
}

/// Opens the backend a URL names: `sqlite://PATH` (created and migrated if missing),
/// `sqlite::memory:`, `postgres://...` or `postgresql://...` (migrated on open),
/// `redis://...` (keys under `options.key_prefix`).
pub async fn open_with(url: &str, options: &StoreOptions) -> anyhow::Result<Arc<dyn Store>> {
    options.validate()?;
    let scheme = url.split_once(':').map_or("", |(s, _)| s);
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" => Ok(Arc::new(SqliteStore::open(url).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(PostgresStore::open(url, options).await?)),
        "redis" => Ok(Arc::new(RedisStore::open(url, options).await?)),
        "rediss" => anyhow::bail!(
            "rediss:// (Redis over TLS) is not supported by this build; use redis:// over a \
             trusted network or a TLS tunnel"
        ),
        _ => anyhow::bail!(
            "unsupported store URL {:?}: expected sqlite://PATH, postgres://... or redis://...",
            redact_url(url)
        ),
    }
}

/// A URL with any password replaced, fit for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("postgres://u:secret@db/x"),
            "postgres://u:***@db/x"
        );
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
    }
}
