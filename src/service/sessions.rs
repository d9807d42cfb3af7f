//! Listing and ending sessions, with authorization.
//!
//! A caller always sees and may end its own user's sessions; another user's need
//! "Add, Delete and Modify a User".

use super::cache::{Listing, ListingKey, UserKey};
use super::{Actor, Caller, Origin, Service, ServiceError, ServiceResult};
use crate::domain::{
    AuditKind, EndReason, Permission, Session, SessionEnd, SessionId, SessionState, Timestamp,
    UserId,
};
use crate::store::{SessionCursor, SessionQuery, StateFilter, StoreGeneration};
use std::sync::Arc;

/// A session with its state at the time of the listing.
#[derive(Clone, Debug)]
pub struct SessionView {
    pub session: Session,
    pub state: SessionState,
}

/// One page of sessions as listed, newest first, without a copy of any: shared
/// with the cache, each with its last access as this instance knows it and its
/// state at the time of the listing (a view, [`SessionView`], copies the session:
/// five strings, more than the rest of a Commvault `GET Session` answer's work).
#[derive(Debug)]
pub struct SessionRows {
    sessions: Arc<Vec<Session>>,
    /// Index into `sessions`, last access, state: the sessions the listing keeps.
    rows: Vec<(usize, Timestamp, SessionState)>,
    /// Where the next page starts, if there may be one.
    next: Option<SessionCursor>,
}

/// One session of [`SessionRows`].
#[derive(Clone, Copy, Debug)]
pub struct SessionRow<'a> {
    /// As read; its `last_accessed_at` may be older than the row's.
    pub session: &'a Session,
    pub last_accessed_at: Timestamp,
    pub state: SessionState,
}

impl SessionRows {
    /// All of `sessions`, each with its own last access and its state at `now`, and
    /// no next page (for renderings measured or tested outside the service).
    pub fn of(sessions: Vec<Session>, now: Timestamp) -> Self {
        let rows = sessions
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.last_accessed_at, s.state_at(now)))
            .collect();
        SessionRows {
            sessions: Arc::new(sessions),
            rows,
            next: None,
        }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = SessionRow<'_>> + '_ {
        self.rows
            .iter()
            .map(|&(i, last_accessed_at, state)| SessionRow {
                session: &self.sessions[i],
                last_accessed_at,
                state,
            })
    }
}

impl SessionRow<'_> {
    /// The session as a [`SessionView`] (a copy, with its last access).
    pub fn to_view(&self) -> SessionView {
        SessionView {
            session: Session {
                last_accessed_at: self.last_accessed_at,
                ..self.session.clone()
            },
            state: self.state,
        }
    }
}

/// One page of sessions, newest first.
#[derive(Clone, Debug)]
pub struct SessionListing {
    pub sessions: Vec<SessionView>,
    /// Where the next page starts, if there may be one.
    pub next: Option<SessionCursor>,
}

/// Which of the listing-read locks (`Inner::listing_reads`) serializes the store
/// reads of listing `key`.
pub(super) fn listing_stripe((user, live): ListingKey, stripes: usize) -> usize {
    (user.0.unsigned_abs() as usize)
        .wrapping_mul(2)
        .wrapping_add(usize::from(live))
        % stripes
}

/// Largest page a listing returns.
pub const MAX_PAGE: usize = 1000;

impl Service {
    /// Sessions of `user` (or of everyone, with `None`), one page.
    pub async fn list_sessions(
        &self,
        actor: &Actor<'_>,
        user: Option<UserId>,
        state: StateFilter,
        host: Option<String>,
        after: Option<SessionCursor>,
        limit: usize,
    ) -> ServiceResult<SessionListing> {
        let rows = self
            .session_rows(actor, user, state, host, after, limit)
            .await?;
        Ok(SessionListing {
            sessions: rows.iter().map(|r| r.to_view()).collect(),
            next: rows.next,
        })
    }

    /// [`Service::list_sessions`] without copying the sessions (see [`SessionRows`]).
    async fn session_rows(
        &self,
        actor: &Actor<'_>,
        user: Option<UserId>,
        state: StateFilter,
        host: Option<String>,
        after: Option<SessionCursor>,
        limit: usize,
    ) -> ServiceResult<SessionRows> {
        let access = self.access(actor).await?;
        match user {
            Some(u) if access.is(u) => {}
            _ => access.require(Permission::UserManagement)?,
        }
        if let Some(u) = user
            && !access.is(u)
            && self.user_by(UserKey::Id(u)).await?.is_none()
        {
            return Err(ServiceError::NotFound("user"));
        }
        let limit = limit.clamp(1, MAX_PAGE);
        let now = self.now_of(actor);
        // A user's whole first page (Commvault's `GET Session`) may come from the
        // cache; see `cache.rs` for what keeps it fresh.
        let cache_key = match (user, state, &host, after) {
            (Some(u), StateFilter::Any, None, None) if limit == MAX_PAGE => Some((u, false)),
            (Some(u), StateFilter::Live, None, None) if limit == MAX_PAGE => Some((u, true)),
            _ => None,
        };
        let query = SessionQuery {
            user,
            state,
            host,
            now,
            after,
            limit,
        };
        let sessions = match cache_key {
            Some(key) => self.cached_listing(key, &query, actor.generation()).await?,
            None => Arc::new(self.store().list_sessions(&query).await?),
        };
        let next = (sessions.len() == limit)
            .then(|| sessions.last().map(SessionCursor::after))
            .flatten();
        let only_live = state == StateFilter::Live;
        let rows = sessions
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let last_accessed_at = self.last_access(s);
                (
                    i,
                    last_accessed_at,
                    s.state_at_after_access(now, last_accessed_at),
                )
            })
            // A cached listing may hold sessions that expired since it was read.
            .filter(|&(_, _, st)| !only_live || st == SessionState::Live)
            .collect();
        Ok(SessionRows {
            sessions,
            rows,
            next,
        })
    }

    /// The listing `query` describes, whose cache key is `key`: from the cache while
    /// it is fresh, otherwise read from the store and cached. One read per key at a
    /// time: requests that find the same listing stale (all of a user's polling
    /// clients, right after each flush of last-access times moves the touch epoch)
    /// wait for the first one's read and take it from the cache, rather than each
    /// reading the store (64 concurrent reads of a cold file held up every one of
    /// them by ~10 ms, bench/PROFILE.md).
    ///
    /// `generation`, if given, is the one the request was authenticated at (see
    /// [`Caller`]), used for the first look; after waiting for another request's
    /// read, the generation is read again.
    async fn cached_listing(
        &self,
        key: ListingKey,
        query: &SessionQuery,
        generation: Option<StoreGeneration>,
    ) -> ServiceResult<Arc<Vec<Session>>> {
        // The generation and the touch epoch, read before the store so that a write
        // racing with the read leaves the copy stale (see `cache.rs`), and the cached
        // copy if it is fresh; `None` when the store publishes no generation (nothing
        // is cached then).
        let look = |known: Option<StoreGeneration>| {
            let g = known.or_else(|| self.store().session_generation())?;
            let epoch = self.touch_epoch();
            Some((g, epoch, self.inner.cache.listing(g, key, epoch, query.now)))
        };
        match look(generation) {
            None => return Ok(Arc::new(self.store().list_sessions(query).await?)),
            Some((_, _, Some(sessions))) => return Ok(sessions),
            Some((_, _, None)) => {}
        }
        let stripes = &self.inner.listing_reads;
        let _reading = stripes[listing_stripe(key, stripes.len())].lock().await;
        // Looked up again: the request that held the lock may have read it meanwhile.
        let seen = look(None);
        if let Some((_, _, Some(sessions))) = seen {
            return Ok(sessions);
        }
        let sessions = Arc::new(self.store().list_sessions(query).await?);
        if let Some((g, epoch, _)) = seen {
            let listing = Listing {
                sessions: sessions.clone(),
                listings: g.listings,
                touch_epoch: epoch,
                read_at: query.now,
            };
            self.inner.cache.insert_listing(g, key, listing);
        }
        Ok(sessions)
    }

    /// Every session of `user` the listing bounds allow (Commvault's `GET Session`,
    /// which every Commvault client makes to check its token: the sessions are not
    /// copied, see [`SessionRows`]).
    pub async fn user_sessions(
        &self,
        caller: &Caller,
        user: UserId,
        only_live: bool,
    ) -> ServiceResult<SessionRows> {
        let state = if only_live {
            StateFilter::Live
        } else {
            StateFilter::Any
        };
        self.session_rows(
            &Actor::User(caller),
            Some(user),
            state,
            None,
            None,
            MAX_PAGE,
        )
        .await
    }

    /// One session by its public id.
    pub async fn get_session(
        &self,
        actor: &Actor<'_>,
        id: SessionId,
    ) -> ServiceResult<SessionView> {
        let access = self.access(actor).await?;
        let session = self
            .store()
            .get_session(id)
            .await?
            .ok_or(ServiceError::NotFound("session"))?;
        if !access.is(session.user_id) {
            // Do not tell a caller without the permission whether the id exists.
            access
                .require(Permission::UserManagement)
                .map_err(|_| ServiceError::NotFound("session"))?;
        }
        Ok(self.view(session, self.now()))
    }

    /// Ends the given sessions. All are checked before any is ended: an unknown id
    /// or one the caller may not end changes nothing. Already ended ones are skipped.
    pub async fn end_sessions(
        &self,
        actor: &Actor<'_>,
        ids: &[SessionId],
        origin: &Origin,
    ) -> ServiceResult<usize> {
        let access = self.access(actor).await?;
        let mut targets = Vec::with_capacity(ids.len());
        for id in ids {
            let s = self
                .store()
                .get_session(*id)
                .await?
                .ok_or(ServiceError::NotFound("session"))?;
            if !access.is(s.user_id) {
                access.require(Permission::UserManagement)?;
            }
            targets.push(s.id);
        }
        let end = SessionEnd {
            at: self.now(),
            reason: EndReason::Revoked,
        };
        let actor_ref = access.user.as_deref().map(super::auth::user_ref);
        let mut ended = 0;
        for id in targets {
            if let Some(s) = self.end_one(id, end).await? {
                ended += 1;
                let kind = match s.end.map(|e| e.reason) {
                    Some(EndReason::Revoked) => AuditKind::SessionRevoked,
                    _ => AuditKind::SessionExpired,
                };
                self.audit_session_end(&s, kind, actor_ref.clone(), &origin.source)
                    .await;
            }
        }
        Ok(ended)
    }

    /// Ends every live session of `user`: one's own, or anyone's with user management.
    /// Returns how many it ended; an unknown user is "user not found".
    pub async fn end_user_sessions(
        &self,
        actor: &Actor<'_>,
        user: UserId,
        origin: &Origin,
    ) -> ServiceResult<usize> {
        let access = self.access(actor).await?;
        if !access.is(user) {
            access.require(Permission::UserManagement)?;
            if self.store().get_user(user).await?.is_none() {
                return Err(ServiceError::NotFound("user"));
            }
        }
        let actor_ref = access.user.as_deref().map(super::auth::user_ref);
        self.revoke_user_sessions(user, None, actor_ref, &origin.source)
            .await
    }

    /// Self-service: ends every live session of the caller's user except the
    /// caller's own. Returns how many it ended.
    pub async fn end_other_sessions(
        &self,
        caller: &Caller,
        origin: &Origin,
    ) -> ServiceResult<usize> {
        self.access(&Actor::User(caller)).await?;
        self.revoke_user_sessions(
            caller.user_id(),
            Some(caller.session.id),
            Some(caller.user_ref()),
            &origin.source,
        )
        .await
    }

    /// Ends every live session of `user` (except `keep`), as a revocation by `actor`.
    pub(super) async fn revoke_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        actor: Option<crate::domain::UserRef>,
        source: &str,
    ) -> ServiceResult<usize> {
        let end = SessionEnd {
            at: self.now(),
            reason: EndReason::Revoked,
        };
        self.flush_touches().await?;
        let ended = self.store().end_user_sessions(user, end, keep).await?;
        for s in &ended {
            let kind = match s.end.map(|e| e.reason) {
                Some(EndReason::Revoked) => AuditKind::SessionRevoked,
                _ => AuditKind::SessionExpired,
            };
            self.audit_session_end(s, kind, actor.clone(), source).await;
        }
        Ok(ended.len())
    }

    fn view(&self, mut session: Session, now: crate::domain::Timestamp) -> SessionView {
        session.last_accessed_at = self.last_access(&session);
        SessionView {
            state: session.state_at(now),
            session,
        }
    }

    /// The last access of `session` as this instance knows it: the store's, or a
    /// later touch not yet written.
    fn last_access(&self, session: &Session) -> Timestamp {
        match session.end {
            None => self
                .inner
                .touches
                .pending(session.id)
                .map_or(session.last_accessed_at, |t| {
                    session.last_accessed_at.max(t)
                }),
            Some(_) => session.last_accessed_at,
        }
    }
}
