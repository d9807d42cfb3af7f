//! A store wrapper that can be switched to fail every call with a backend error,
//! to check that clients see a 503 without detail and the log gets the cause.

use async_trait::async_trait;
use sessiond::domain::{
    AuditEvent, NewAuditEvent, NewSession, NewUser, Session, SessionEnd, SessionId, Timestamp,
    TokenHash, User, UserId,
};
use sessiond::store::{
    AuditQuery, CreatedSession, FailureRecord, SessionLimit, SessionQuery, Store, StoreError,
    StoreResult,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// The text of the injected failure; a client must never see it.
pub const SECRET_CAUSE: &str = "disk /var/lib/secret-volume on fire";

pub struct FaultyStore {
    inner: Arc<dyn Store>,
    failing: AtomicBool,
    /// Session listings read so far.
    listing_reads: AtomicUsize,
    /// Each listing read takes at least this long (to make requests overlap).
    slow_listings: AtomicBool,
}

/// How long a listing read takes with `slow_listings`.
const SLOW_LISTING: Duration = Duration::from_millis(50);

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        FaultyStore {
            inner,
            failing: AtomicBool::new(false),
            listing_reads: AtomicUsize::new(0),
            slow_listings: AtomicBool::new(false),
        }
    }

    /// Session listings read from the store so far.
    pub fn listing_reads(&self) -> usize {
        self.listing_reads.load(Ordering::SeqCst)
    }

    /// Makes every listing read take at least 50 ms, so that concurrent requests
    /// overlap in the store.
    pub fn set_slow_listings(&self, on: bool) {
        self.slow_listings.store(on, Ordering::SeqCst);
    }

    pub fn set_failing(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    fn check(&self) -> StoreResult<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Backend(anyhow::anyhow!(SECRET_CAUSE)))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        self.check()?;
        self.inner.create_user(user).await
    }
    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.check()?;
        self.inner.get_user(id).await
    }
    async fn find_user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        self.check()?;
        self.inner.find_user_by_name(name).await
    }
    async fn list_users(&self, after: Option<UserId>, limit: usize) -> StoreResult<Vec<User>> {
        self.check()?;
        self.inner.list_users(after, limit).await
    }
    async fn update_user(&self, user: &User) -> StoreResult<()> {
        self.check()?;
        self.inner.update_user(user).await
    }
    async fn delete_user(&self, id: UserId) -> StoreResult<bool> {
        self.check()?;
        self.inner.delete_user(id).await
    }
    async fn count_users(&self) -> StoreResult<u64> {
        self.check()?;
        self.inner.count_users().await
    }
    async fn create_session(
        &self,
        session: NewSession,
        limit: SessionLimit,
    ) -> StoreResult<CreatedSession> {
        self.check()?;
        self.inner.create_session(session, limit).await
    }
    async fn find_session_by_token(&self, hash: &TokenHash) -> StoreResult<Option<Session>> {
        self.check()?;
        self.inner.find_session_by_token(hash).await
    }
    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        self.check()?;
        self.inner.get_session(id).await
    }
    async fn touch_sessions(&self, touches: &[(SessionId, Timestamp)]) -> StoreResult<()> {
        self.check()?;
        self.inner.touch_sessions(touches).await
    }
    async fn end_session(&self, id: SessionId, end: SessionEnd) -> StoreResult<Option<Session>> {
        self.check()?;
        self.inner.end_session(id, end).await
    }
    async fn end_user_sessions(
        &self,
        user: UserId,
        end: SessionEnd,
        except: Option<SessionId>,
    ) -> StoreResult<Vec<Session>> {
        self.check()?;
        self.inner.end_user_sessions(user, end, except).await
    }
    async fn rotate_session_token(
        &self,
        id: SessionId,
        old: &TokenHash,
        new: &TokenHash,
    ) -> StoreResult<bool> {
        self.check()?;
        self.inner.rotate_session_token(id, old, new).await
    }
    async fn list_sessions(&self, query: &SessionQuery) -> StoreResult<Vec<Session>> {
        self.check()?;
        self.listing_reads.fetch_add(1, Ordering::SeqCst);
        if self.slow_listings.load(Ordering::SeqCst) {
            tokio::time::sleep(SLOW_LISTING).await;
        }
        self.inner.list_sessions(query).await
    }
    async fn end_expired_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Session>> {
        self.check()?;
        self.inner.end_expired_sessions(now, limit).await
    }
    async fn purge_ended_sessions(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        self.check()?;
        self.inner.purge_ended_sessions(before, limit).await
    }
    async fn count_live_sessions(&self, user: Option<UserId>, now: Timestamp) -> StoreResult<u64> {
        self.check()?;
        self.inner.count_live_sessions(user, now).await
    }
    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<()> {
        self.check()?;
        self.inner.append_audit(event).await
    }
    async fn query_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        self.check()?;
        self.inner.query_audit(query).await
    }
    async fn purge_audit(&self, before: Timestamp) -> StoreResult<u64> {
        self.check()?;
        self.inner.purge_audit(before).await
    }
    async fn login_failures(&self, key: &str) -> StoreResult<Option<FailureRecord>> {
        self.check()?;
        self.inner.login_failures(key).await
    }
    async fn record_login_failure(
        &self,
        key: &str,
        now: Timestamp,
        window: Duration,
    ) -> StoreResult<FailureRecord> {
        self.check()?;
        self.inner.record_login_failure(key, now, window).await
    }
    async fn lock_login(&self, key: &str, until: Timestamp) -> StoreResult<()> {
        self.check()?;
        self.inner.lock_login(key, until).await
    }
    async fn clear_login_failures(&self, key: &str) -> StoreResult<()> {
        self.check()?;
        self.inner.clear_login_failures(key).await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.check()?;
        self.inner.ping().await
    }
    /// A failing store has no readable generation, so nothing is served from the
    /// session cache while it fails (validation reaches the store and sees the fault).
    fn session_generation(&self) -> Option<sessiond::store::StoreGeneration> {
        self.check().ok()?;
        self.inner.session_generation()
    }
}
