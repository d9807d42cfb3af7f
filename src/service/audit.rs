//! Reading the audit trail, and how long it is kept.
//!
//! "View" (and so `view`, `user-admin`, `master`) reads every event; anyone else
//! reads only events about or by themself.

use super::{Actor, Service, ServiceError, ServiceResult};
use crate::domain::{AuditEvent, AuditKind, Permission, Timestamp, UserId};
use crate::store::AuditQuery;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[audit]`: retention of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditPolicy {
    /// Events older than this are purged by the background sweep; `0s` keeps them forever.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        AuditPolicy {
            retention: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// What an audit query asks for. Pages are newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Events whose actor or subject is this user.
    pub user: Option<UserId>,
    /// Any of these kinds; empty means all.
    pub kinds: Vec<AuditKind>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Events older than (below) this event id.
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// One page of events, newest first.
#[derive(Clone, Debug)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// The event id the next page starts below, if there may be one.
    pub next: Option<i64>,
}

impl Service {
    /// A page of the audit trail the actor may read.
    pub async fn query_audit(
        &self,
        actor: &Actor<'_>,
        filter: AuditFilter,
    ) -> ServiceResult<AuditPage> {
        let access = self.access(actor).await?;
        let user = if access.has(Permission::View) {
            filter.user
        } else {
            match (filter.user, access.user.as_ref()) {
                (Some(u), _) if access.is(u) => Some(u),
                (None, Some(me)) => Some(me.id),
                _ => return Err(ServiceError::Forbidden(Permission::View)),
            }
        };
        if let (Some(s), Some(u)) = (filter.since, filter.until)
            && s > u
        {
            return Err(ServiceError::Invalid("since is later than until".into()));
        }
        let limit = filter.limit.clamp(1, super::sessions::MAX_PAGE);
        let events = self
            .store()
            .query_audit(&AuditQuery {
                user,
                kinds: filter.kinds,
                since: filter.since,
                until: filter.until,
                before_id: filter.before_id,
                limit,
            })
            .await?;
        let next = (events.len() == limit)
            .then(|| events.last().map(|e| e.id))
            .flatten();
        Ok(AuditPage { events, next })
    }

    /// Purges audit events past their retention. Returns how many.
    pub(super) async fn purge_old_audit(&self) -> ServiceResult<u64> {
        let retention = self.inner.config.audit.retention;
        if retention.is_zero() {
            return Ok(0);
        }
        Ok(self
            .store()
            .purge_audit(self.now().minus(retention))
            .await?)
    }
}
