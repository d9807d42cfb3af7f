//! Sign-in, session validation (the hot path), sign-out and token renewal.

use super::cache::{Touched, UserKey};
use super::lockout::ThrottleKeys;
use super::{Caller, Origin, Service, ServiceError, ServiceResult};
use crate::domain::{
    AuditKind, ClientInfo, ConsoleType, Dialect, EndReason, NewAuditEvent, NewSession, Session,
    SessionEnd, SessionId, SessionState, SessionToken, Timestamp, TokenHash, User, UserRef,
};
use crate::store::StoreGeneration;
use crate::telemetry::{self, LoginResult};
use secrecy::SecretString;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A login as a dialect parsed it.
#[derive(Debug)]
pub struct LoginRequest {
    pub username: String,
    pub password: SecretString,
    pub client: ClientInfo,
    pub console_type: ConsoleType,
    pub dialect: Dialect,
    /// An idle timeout the client asked for (Commvault Login `timeout`), honoured up
    /// to the configured maximum.
    pub requested_idle_timeout: Option<Duration>,
}

/// A successful login: the clear token is in here and nowhere else.
#[derive(Debug)]
pub struct LoginOutcome {
    pub session: Session,
    pub token: SessionToken,
    pub user: User,
}

/// A token not answered from the cache: its hash, the time of the request and the
/// session generation read before the store's lookup.
struct CacheMiss {
    hash: TokenHash,
    now: Timestamp,
    generation: Option<StoreGeneration>,
}

impl Service {
    /// Checks the credentials and opens a session; counted in
    /// `sessiond_logins_total` by dialect and result.
    ///
    /// Unknown user and wrong password take the same path (a dummy hash is
    /// verified for unknown users), count alike towards a lockout (see
    /// `lockout`) and return the same error. A locked account or address is
    /// refused before any password is checked.
    pub async fn login(&self, req: LoginRequest) -> ServiceResult<LoginOutcome> {
        let dialect = req.dialect;
        let outcome = self.attempt_login(req).await;
        telemetry::login(dialect.key(), login_result(&outcome));
        outcome
    }

    async fn attempt_login(&self, req: LoginRequest) -> ServiceResult<LoginOutcome> {
        let name = req.username.trim();
        let user = if name.is_empty() {
            None
        } else {
            self.user_by(UserKey::Name(name)).await?
        };
        let keys = ThrottleKeys::new(name, &req.client.host);
        let throttle = match self.check_throttle(&keys).await {
            Ok(t) => t,
            Err(e) => {
                if matches!(e, ServiceError::AccountLocked { .. }) {
                    self.audit_login_failure(&req, user.as_deref(), "locked")
                        .await;
                }
                return Err(e);
            }
        };
        let ok = self
            .inner
            .passwords
            .verify(&req.password, user.as_ref().map(|u| &u.password_hash))
            .await?;
        let user = match user {
            Some(u) if ok => u,
            found => {
                let subject = found.as_deref().map_or_else(
                    || UserRef {
                        id: crate::domain::UserId(0),
                        name: req.username.chars().take(128).collect(),
                    },
                    user_ref,
                );
                let locked = self
                    .count_failure(&keys, &subject, req.dialect, &req.client.host)
                    .await?;
                self.audit_login_failure(&req, found.as_deref(), "invalid credentials")
                    .await;
                return Err(match locked {
                    Some(retry_after) => ServiceError::AccountLocked { retry_after },
                    None => ServiceError::InvalidCredentials,
                });
            }
        };
        if !user.enabled {
            self.audit_login_failure(&req, Some(&user), "account disabled")
                .await;
            return Err(ServiceError::AccountDisabled);
        }
        self.clear_throttle(&keys, &throttle).await?;

        let policy = &self.inner.config.session;
        let idle_timeout = req
            .requested_idle_timeout
            .filter(|d| !d.is_zero())
            .map_or(policy.idle_timeout, |d| d.min(policy.max_idle_timeout));
        let now = self.now();
        let token = SessionToken::generate()?;
        let new = NewSession {
            id: SessionId::generate(),
            token_hash: token.hash(),
            user_id: user.id,
            user_name: user.name.clone(),
            client: req.client,
            console_type: req.console_type,
            dialect: req.dialect,
            created_at: now,
            idle_timeout,
            expires_at: now.plus(policy.absolute_lifetime),
        };
        // Recorded with the session, in one commit where the store can.
        let event = NewAuditEvent {
            actor: Some(user_ref(&user)),
            subject: Some(user_ref(&user)),
            session_id: Some(new.id),
            source: new.client.host.clone(),
            dialect: Some(new.dialect),
            detail: format!("console={}", new.console_type.code()),
            ..self.event(AuditKind::LoginSucceeded)
        };
        let created = self
            .store()
            .create_session_audited(new, self.inner.config.session_limit, event)
            .await?;
        for s in &created.evicted {
            self.audit_session_end(s, AuditKind::SessionEvicted, None, "")
                .await;
        }
        let session = created.session;
        self.announce_start(&session);
        tracing::info!(user = %user.name, session = %session.id, dialect = session.dialect.key(), host = %session.client.host, "login");
        Ok(LoginOutcome {
            session,
            token,
            user: Arc::unwrap_or_clone(user),
        })
    }

    async fn audit_login_failure(&self, req: &LoginRequest, user: Option<&User>, why: &str) {
        tracing::info!(user = %req.username, host = %req.client.host, reason = why, "login failed");
        self.audit(NewAuditEvent {
            subject: Some(match user {
                Some(u) => user_ref(u),
                None => UserRef {
                    id: crate::domain::UserId(0),
                    name: req.username.chars().take(128).collect(),
                },
            }),
            source: req.client.host.clone(),
            dialect: Some(req.dialect),
            detail: why.to_string(),
            ..self.event(AuditKind::LoginFailed)
        })
        .await;
    }

    /// The hot path: resolves a token (as the client sent it) to a live session and
    /// touches it. Expired sessions are recorded as ended and refused.
    ///
    /// With a store that publishes a session generation, a session found live is
    /// served from the in-process cache until the generation moves (see `cache.rs`).
    /// That is decided before the future is made: a cache hit's future holds only
    /// its answer, and the store's path, boxed, is paid for only on a miss (every
    /// handler's future would otherwise carry its ~1.5 KiB, copied as it moves).
    pub fn authenticate(
        &self,
        token: &[u8],
    ) -> impl Future<Output = ServiceResult<Caller>> + Send + '_ {
        let found = self.cached_caller(token);
        async move {
            match found {
                Ok(caller) => caller,
                Err(miss) => Box::pin(self.authenticate_in_store(miss)).await,
            }
        }
    }

    /// A caller from the in-process cache (`Ok`), or what the store's lookup needs.
    fn cached_caller(&self, token: &[u8]) -> Result<ServiceResult<Caller>, CacheMiss> {
        let Some(token) = SessionToken::parse(token) else {
            return Ok(Err(ServiceError::Unauthenticated));
        };
        let hash = token.hash();
        let now = self.now();
        // Read before the store lookup: a write racing with it moves the generation
        // and the insert after it is refused.
        let generation = self.store().session_generation();
        if let Some(g) = generation
            && let Some(Touched {
                session,
                last_access,
                user,
            }) = self.inner.cache.get_touched(g.changes, &hash, now)
        {
            // The entry's last access already holds every touch of this instance.
            if session.state_at_after_access(now, last_access) == SessionState::Live {
                // A touch at `now` or later was recorded by the request that raised the
                // entry to it (the clock counts milliseconds: a busy session's requests
                // mostly share one), so only a later one takes the buffer's lock.
                if last_access < now {
                    self.inner
                        .touches
                        .record_by(session.id, session.user_id, now);
                }
                return Ok(Ok(Caller {
                    session,
                    last_accessed_at: now,
                    generation,
                    user,
                }));
            }
            // The cached copy may be staler than the store (touches made by another
            // process): let the store decide.
            self.inner.cache.remove(&hash);
        }
        Err(CacheMiss {
            hash,
            now,
            generation,
        })
    }

    /// [`Service::authenticate`] through the store.
    async fn authenticate_in_store(&self, miss: CacheMiss) -> ServiceResult<Caller> {
        let CacheMiss {
            hash,
            now,
            generation,
        } = miss;
        let mut session = self
            .store()
            .find_session_by_token(&hash)
            .await?
            .ok_or(ServiceError::Unauthenticated)?;
        if let Some(t) = self.inner.touches.pending(session.id) {
            session.last_accessed_at = session.last_accessed_at.max(t);
        }
        match session.state_at(now) {
            SessionState::Live => {}
            SessionState::Ended(end) => {
                if session.end.is_none() {
                    // Expired since its last use: record it now rather than at the next sweep.
                    if let Some(ended) = self.end_one(session.id, end).await? {
                        self.audit_session_end(&ended, AuditKind::SessionExpired, None, "")
                            .await;
                    }
                }
                return Err(ServiceError::Unauthenticated);
            }
        }
        self.inner
            .touches
            .record_by(session.id, session.user_id, now);
        session.last_accessed_at = now;
        let session = Arc::new(session);
        if let Some(g) = generation {
            self.inner.cache.insert(g.changes, hash, session.clone());
        }
        Ok(Caller {
            session,
            last_accessed_at: now,
            generation,
            user: None,
        })
    }

    /// Ends the caller's own session.
    pub async fn logout(&self, caller: &Caller, origin: &Origin) -> ServiceResult<()> {
        let end = SessionEnd {
            at: self.now(),
            reason: EndReason::Logout,
        };
        match self.end_one(caller.session.id, end).await? {
            Some(ended) => {
                self.audit_session_end(
                    &ended,
                    AuditKind::Logout,
                    Some(caller.user_ref()),
                    &origin.source,
                )
                .await;
                Ok(())
            }
            // Ended by someone else between authentication and now.
            None => Err(ServiceError::Unauthenticated),
        }
    }

    /// Replaces the secret of the live session `token` names; the old token stops
    /// working. An ended or expired session cannot be renewed.
    pub async fn renew(
        &self,
        token: &[u8],
        origin: &Origin,
    ) -> ServiceResult<(Caller, SessionToken)> {
        let caller = self.authenticate(token).await?;
        let old = SessionToken::parse(token)
            .ok_or(ServiceError::Unauthenticated)?
            .hash();
        let fresh = SessionToken::generate()?;
        if !self
            .store()
            .rotate_session_token(caller.session.id, &old, &fresh.hash())
            .await?
        {
            return Err(ServiceError::Unauthenticated);
        }
        self.audit(NewAuditEvent {
            actor: Some(caller.user_ref()),
            subject: Some(caller.user_ref()),
            session_id: Some(caller.session.id),
            source: origin.source.clone(),
            dialect: Some(origin.dialect),
            ..self.event(AuditKind::TokenRenewed)
        })
        .await;
        let mut caller = caller;
        Arc::make_mut(&mut caller.session).token_hash = fresh.hash();
        Ok((caller, fresh))
    }

    /// The user behind a caller (for dialects that render user details).
    pub async fn caller_user(&self, caller: &Caller) -> ServiceResult<Arc<User>> {
        self.user_of(caller)
            .await?
            .ok_or(ServiceError::Unauthenticated)
    }
}

/// The `result` label of a login.
fn login_result(outcome: &ServiceResult<LoginOutcome>) -> LoginResult {
    match outcome {
        Ok(_) => LoginResult::Success,
        Err(ServiceError::InvalidCredentials) => LoginResult::InvalidCredentials,
        Err(ServiceError::AccountDisabled) => LoginResult::Disabled,
        Err(ServiceError::AccountLocked { .. }) => LoginResult::Locked,
        Err(ServiceError::SessionLimitReached) => LoginResult::Limit,
        Err(_) => LoginResult::Error,
    }
}

pub(super) fn user_ref(u: &User) -> UserRef {
    UserRef {
        id: u.id,
        name: u.name.clone(),
    }
}
