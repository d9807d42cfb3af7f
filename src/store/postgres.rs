//! The PostgreSQL backend, for several sessiond instances over one database.
//!
//! Migrations (`migrations/postgres/`) run on open; sqlx's migrator holds a
//! PostgreSQL advisory lock while it works, so instances starting together apply
//! them once. Every change is one statement or one transaction, committed (with the
//! default `synchronous_commit = on`, durably) before the method returns:
//! - ending is a conditional `UPDATE ... WHERE ended_at IS NULL RETURNING`, so two
//!   instances never both end a session;
//! - the expiry sweep picks its batch with `FOR UPDATE SKIP LOCKED`, so concurrent
//!   sweepers take disjoint batches;
//! - a login locks its user's row first (bumping `next_browser_session_id`), so the
//!   per-user session limit is checked and applied without a race.
//!
//! Each call is bounded by [`StoreOptions::operation_timeout`] and a pooled
//! connection by [`StoreOptions::connect_timeout`], so an unreachable database fails
//! requests in seconds; the pool drops broken connections and opens new ones when
//! the database is back.

use super::{
    AuditQuery, CreatedSession, FailureRecord, SessionLimit, SessionQuery, StateFilter, Store,
    StoreError, StoreOptions, StoreResult,
};
use crate::domain::{
    AuditEvent, AuditKind, ClientInfo, ConsoleType, Dialect, EndReason, NewAuditEvent, NewSession,
    NewUser, PasswordHash, Session, SessionEnd, SessionId, Timestamp, TokenHash, User, UserId,
    UserRef, duration_millis,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Postgres, QueryBuilder, Row};
use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

/// The PostgreSQL backend.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    operation_timeout: Duration,
}

macro_rules! session_cols {
    () => {
        "id, token_hash, user_id, user_name, host, user_agent, device_id, description, \
         console_type, dialect, browser_session_id, created_at, last_accessed_at, \
         idle_timeout_ms, expires_at, ended_at, end_reason"
    };
}

macro_rules! user_cols {
    () => {
        "id, name, guid, full_name, email, description, enabled, roles, password_hash, \
         created_at, updated_at"
    };
}

/// SQL for "the reason a session that reached its deadline ended".
macro_rules! expiry_reason {
    () => {
        "CASE WHEN last_accessed_at + idle_timeout_ms < expires_at THEN 'idle' ELSE 'absolute' END"
    };
}

/// Ending a live session: never later than its deadline, and if the deadline has
/// already passed, the true reason (idle/absolute) instead of the one asked for.
/// Binds: $1 end time, $2 requested reason.
macro_rules! end_assignments {
    () => {
        concat!(
            "ended_at = LEAST($1, deadline_at), end_reason = CASE WHEN deadline_at <= $1 THEN ",
            expiry_reason!(),
            " ELSE $2 END"
        )
    };
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names and applies migrations.
    pub async fn open(url: &str, options: &StoreOptions) -> anyhow::Result<Self> {
        let statement_timeout = duration_millis(options.operation_timeout).to_string();
        let connect = PgConnectOptions::from_str(url)?
            .application_name("sessiond")
            .options([("statement_timeout", statement_timeout.as_str())]);
        // One direct connection first, so that a start against an unreachable or
        // misconfigured server reports the real cause rather than a pool timeout.
        let first = tokio::time::timeout(options.connect_timeout, connect.connect())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "PostgreSQL did not answer within {:?}",
                    options.connect_timeout
                )
            })??;
        first.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(0)
            .acquire_timeout(options.connect_timeout)
            // A connection broken by an outage is found out and replaced on acquire.
            .test_before_acquire(true)
            .idle_timeout(Some(Duration::from_secs(600)))
            .connect_with(connect)
            .await?;
        tokio::time::timeout(
            options.operation_timeout.max(Duration::from_secs(60)),
            sqlx::migrate!("migrations/postgres").run(&pool),
        )
        .await
        .map_err(|_| anyhow::anyhow!("timed out applying migrations"))??;
        Ok(PostgresStore {
            pool,
            operation_timeout: options.operation_timeout,
        })
    }

    /// Runs one store operation within the operation timeout.
    async fn timed<T>(&self, op: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        tokio::time::timeout(self.operation_timeout, op)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::backend(anyhow::anyhow!(
                    "PostgreSQL did not answer within {:?}",
                    self.operation_timeout
                )))
            })
    }
}

fn backend(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return StoreError::Conflict(db.message().to_string());
    }
    StoreError::backend(e)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::backend(anyhow::anyhow!("corrupt row: {what}"))
}

fn session_from_row(row: &PgRow) -> StoreResult<Session> {
    let id: Uuid = row.try_get("id").map_err(backend)?;
    let hash: Vec<u8> = row.try_get("token_hash").map_err(backend)?;
    let dialect: String = row.try_get("dialect").map_err(backend)?;
    let ended_at: Option<i64> = row.try_get("ended_at").map_err(backend)?;
    let reason: Option<String> = row.try_get("end_reason").map_err(backend)?;
    let idle_ms: i64 = row.try_get("idle_timeout_ms").map_err(backend)?;
    let end = match (ended_at, reason) {
        (Some(at), Some(r)) => Some(SessionEnd {
            at: Timestamp::from_unix_millis(at),
            reason: EndReason::from_key(&r).ok_or_else(|| corrupt("end_reason"))?,
        }),
        (None, _) => None,
        (Some(_), None) => return Err(corrupt("ended_at without end_reason")),
    };
    Ok(Session {
        id: SessionId(id),
        token_hash: TokenHash::from_slice(&hash).ok_or_else(|| corrupt("token_hash"))?,
        user_id: UserId(row.try_get("user_id").map_err(backend)?),
        user_name: row.try_get("user_name").map_err(backend)?,
        client: ClientInfo {
            host: row.try_get("host").map_err(backend)?,
            user_agent: row.try_get("user_agent").map_err(backend)?,
            device_id: row.try_get("device_id").map_err(backend)?,
            description: row.try_get("description").map_err(backend)?,
        },
        console_type: ConsoleType::from_code(row.try_get("console_type").map_err(backend)?),
        dialect: Dialect::from_key(&dialect).ok_or_else(|| corrupt("dialect"))?,
        browser_session_id: row.try_get("browser_session_id").map_err(backend)?,
        created_at: Timestamp::from_unix_millis(row.try_get("created_at").map_err(backend)?),
        last_accessed_at: Timestamp::from_unix_millis(
            row.try_get("last_accessed_at").map_err(backend)?,
        ),
        idle_timeout: Duration::from_millis(u64::try_from(idle_ms).unwrap_or(0)),
        expires_at: Timestamp::from_unix_millis(row.try_get("expires_at").map_err(backend)?),
        end,
    })
}

fn sessions_from_rows(rows: &[PgRow]) -> StoreResult<Vec<Session>> {
    rows.iter().map(session_from_row).collect()
}

fn user_from_row(row: &PgRow) -> StoreResult<User> {
    let roles: String = row.try_get("roles").map_err(backend)?;
    Ok(User {
        id: UserId(row.try_get("id").map_err(backend)?),
        name: row.try_get("name").map_err(backend)?,
        guid: row.try_get("guid").map_err(backend)?,
        full_name: row.try_get("full_name").map_err(backend)?,
        email: row.try_get("email").map_err(backend)?,
        description: row.try_get("description").map_err(backend)?,
        enabled: row.try_get("enabled").map_err(backend)?,
        roles: roles
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect(),
        password_hash: PasswordHash(row.try_get("password_hash").map_err(backend)?),
        created_at: Timestamp::from_unix_millis(row.try_get("created_at").map_err(backend)?),
        updated_at: Timestamp::from_unix_millis(row.try_get("updated_at").map_err(backend)?),
    })
}

fn audit_from_row(row: &PgRow) -> StoreResult<AuditEvent> {
    let user_ref = |id: &str, name: &str| -> StoreResult<Option<UserRef>> {
        let id: Option<i64> = row.try_get(id).map_err(backend)?;
        let name: Option<String> = row.try_get(name).map_err(backend)?;
        Ok(id.map(|id| UserRef {
            id: UserId(id),
            name: name.unwrap_or_default(),
        }))
    };
    let kind: String = row.try_get("kind").map_err(backend)?;
    let session: Option<Uuid> = row.try_get("session_id").map_err(backend)?;
    let dialect: Option<String> = row.try_get("dialect").map_err(backend)?;
    Ok(AuditEvent {
        id: row.try_get("id").map_err(backend)?,
        event: NewAuditEvent {
            at: Timestamp::from_unix_millis(row.try_get("at").map_err(backend)?),
            kind: AuditKind::from_key(&kind).ok_or_else(|| corrupt("audit kind"))?,
            actor: user_ref("actor_id", "actor_name")?,
            subject: user_ref("subject_id", "subject_name")?,
            session_id: session.map(SessionId),
            source: row.try_get("source").map_err(backend)?,
            dialect: dialect.as_deref().and_then(Dialect::from_key),
            detail: row.try_get("detail").map_err(backend)?,
        },
    })
}

fn failure_from_row(row: &PgRow) -> StoreResult<FailureRecord> {
    let failures: i32 = row.try_get("failures").map_err(backend)?;
    let lockouts: i32 = row.try_get("lockouts").map_err(backend)?;
    let locked: Option<i64> = row.try_get("locked_until").map_err(backend)?;
    Ok(FailureRecord {
        failures: u32::try_from(failures).unwrap_or(0),
        window_start: Timestamp::from_unix_millis(row.try_get("window_start").map_err(backend)?),
        locked_until: locked.map(Timestamp::from_unix_millis),
        lockouts: u32::try_from(lockouts).unwrap_or(0),
    })
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_user(&self, u: NewUser) -> StoreResult<User> {
        self.timed(async {
            let row = sqlx::query(concat!(
                "INSERT INTO users (name, name_key, guid, full_name, email, description, enabled, \
                 roles, password_hash, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING ",
                user_cols!()
            ))
            .bind(&u.name)
            .bind(u.name.to_lowercase())
            .bind(&u.guid)
            .bind(&u.full_name)
            .bind(&u.email)
            .bind(&u.description)
            .bind(u.enabled)
            .bind(u.roles.join(","))
            .bind(&u.password_hash.0)
            .bind(u.created_at.unix_millis())
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
            user_from_row(&row)
        })
        .await
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.timed(async {
            let row = sqlx::query(concat!(
                "SELECT ",
                user_cols!(),
                " FROM users WHERE id = $1"
            ))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
            row.as_ref().map(user_from_row).transpose()
        })
        .await
    }

    async fn find_user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        self.timed(async {
            let row = sqlx::query(concat!(
                "SELECT ",
                user_cols!(),
                " FROM users WHERE name_key = $1"
            ))
            .bind(name.to_lowercase())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
            row.as_ref().map(user_from_row).transpose()
        })
        .await
    }

    async fn list_users(&self, after: Option<UserId>, limit: usize) -> StoreResult<Vec<User>> {
        self.timed(async {
            let rows = sqlx::query(concat!(
                "SELECT ",
                user_cols!(),
                " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
            ))
            .bind(after.map_or(i64::MIN, |u| u.0))
            .bind(limit_i64(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            rows.iter().map(user_from_row).collect()
        })
        .await
    }

    async fn update_user(&self, u: &User) -> StoreResult<()> {
        self.timed(async {
            let done = sqlx::query(
                "UPDATE users SET name = $1, name_key = $2, guid = $3, full_name = $4, email = $5, \
                 description = $6, enabled = $7, roles = $8, password_hash = $9, updated_at = $10 \
                 WHERE id = $11",
            )
            .bind(&u.name)
            .bind(u.name.to_lowercase())
            .bind(&u.guid)
            .bind(&u.full_name)
            .bind(&u.email)
            .bind(&u.description)
            .bind(u.enabled)
            .bind(u.roles.join(","))
            .bind(&u.password_hash.0)
            .bind(u.updated_at.unix_millis())
            .bind(u.id.0)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn delete_user(&self, id: UserId) -> StoreResult<bool> {
        self.timed(async {
            let done = sqlx::query("DELETE FROM users WHERE id = $1")
                .bind(id.0)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn count_users(&self) -> StoreResult<u64> {
        self.timed(async {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn create_session(
        &self,
        new: NewSession,
        limit: SessionLimit,
    ) -> StoreResult<CreatedSession> {
        self.timed(async {
            let now = new.created_at.unix_millis();
            let mut tx = self.pool.begin().await.map_err(backend)?;
            // Bumping the counter locks the user's row until commit: logins of one user
            // are serialized, so the limit below cannot be raced past.
            let bsid: Option<i64> = sqlx::query_scalar(
                "UPDATE users SET next_browser_session_id = next_browser_session_id + 1 \
                 WHERE id = $1 RETURNING next_browser_session_id - 1",
            )
            .bind(new.user_id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
            let bsid = bsid.ok_or(StoreError::NotFound)?;
            let mut evicted = Vec::new();
            let max = match limit {
                SessionLimit::Unlimited => None,
                SessionLimit::Deny(n) | SessionLimit::EvictOldest(n) => Some(n as usize),
            };
            if let Some(max) = max {
                let live: Vec<Uuid> = sqlx::query_scalar(
                    "SELECT id FROM sessions WHERE user_id = $1 AND ended_at IS NULL \
                     AND deadline_at > $2 ORDER BY created_at ASC, id ASC",
                )
                .bind(new.user_id.0)
                .bind(now)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
                if live.len() >= max {
                    if matches!(limit, SessionLimit::Deny(_)) || max == 0 {
                        return Err(StoreError::LimitReached);
                    }
                    let oldest = &live[..=live.len() - max];
                    let rows = sqlx::query(concat!(
                        "UPDATE sessions SET ",
                        end_assignments!(),
                        " WHERE id = ANY($3) AND ended_at IS NULL RETURNING ",
                        session_cols!()
                    ))
                    .bind(now)
                    .bind(EndReason::Evicted.key())
                    .bind(oldest)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(backend)?;
                    evicted = sessions_from_rows(&rows)?;
                    evicted.sort_by_key(|s| (s.created_at, s.id));
                }
            }
            let idle_ms = duration_millis(new.idle_timeout);
            let deadline = now
                .saturating_add(idle_ms)
                .min(new.expires_at.unix_millis());
            sqlx::query(concat!(
                "INSERT INTO sessions (",
                session_cols!(),
                ", deadline_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, \
                 $13, $14, NULL, NULL, $15)"
            ))
            .bind(new.id.0)
            .bind(new.token_hash.as_bytes().as_slice())
            .bind(new.user_id.0)
            .bind(&new.user_name)
            .bind(&new.client.host)
            .bind(&new.client.user_agent)
            .bind(&new.client.device_id)
            .bind(&new.client.description)
            .bind(new.console_type.code())
            .bind(new.dialect.key())
            .bind(bsid)
            .bind(now)
            .bind(idle_ms)
            .bind(new.expires_at.unix_millis())
            .bind(deadline)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            Ok(CreatedSession {
                session: new.into_session(bsid),
                evicted,
            })
        })
        .await
    }

    async fn find_session_by_token(&self, hash: &TokenHash) -> StoreResult<Option<Session>> {
        self.timed(async {
            let row = sqlx::query(concat!(
                "SELECT ",
                session_cols!(),
                " FROM sessions WHERE token_hash = $1"
            ))
            .bind(hash.as_bytes().as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
            row.as_ref().map(session_from_row).transpose()
        })
        .await
    }

    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        self.timed(async {
            let row = sqlx::query(concat!(
                "SELECT ",
                session_cols!(),
                " FROM sessions WHERE id = $1"
            ))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
            row.as_ref().map(session_from_row).transpose()
        })
        .await
    }

    async fn touch_sessions(&self, touches: &[(SessionId, Timestamp)]) -> StoreResult<()> {
        if touches.is_empty() {
            return Ok(());
        }
        // One row per session (the latest touch), in id order so that concurrent
        // batches from several instances lock rows in the same order.
        let mut latest: HashMap<Uuid, i64> = HashMap::new();
        for (id, at) in touches {
            let t = latest.entry(id.0).or_insert(at.unix_millis());
            *t = (*t).max(at.unix_millis());
        }
        let mut batch: Vec<(Uuid, i64)> = latest.into_iter().collect();
        batch.sort_unstable();
        let (ids, ats): (Vec<Uuid>, Vec<i64>) = batch.into_iter().unzip();
        self.timed(async {
            // Only raise, only while recorded live and within the absolute lifetime.
            sqlx::query(
                "UPDATE sessions AS s SET last_accessed_at = t.at, \
                 deadline_at = LEAST(t.at + s.idle_timeout_ms, s.expires_at) \
                 FROM UNNEST($1::uuid[], $2::bigint[]) AS t(id, at) \
                 WHERE s.id = t.id AND s.ended_at IS NULL AND s.last_accessed_at < t.at \
                 AND s.expires_at > t.at",
            )
            .bind(&ids)
            .bind(&ats)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn end_session(&self, id: SessionId, end: SessionEnd) -> StoreResult<Option<Session>> {
        self.timed(async {
            let row = sqlx::query(concat!(
                "UPDATE sessions SET ",
                end_assignments!(),
                " WHERE id = $3 AND ended_at IS NULL RETURNING ",
                session_cols!()
            ))
            .bind(end.at.unix_millis())
            .bind(end.reason.key())
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
            row.as_ref().map(session_from_row).transpose()
        })
        .await
    }

    async fn end_user_sessions(
        &self,
        user: UserId,
        end: SessionEnd,
        except: Option<SessionId>,
    ) -> StoreResult<Vec<Session>> {
        self.timed(async {
            let rows = sqlx::query(concat!(
                "UPDATE sessions SET ",
                end_assignments!(),
                " WHERE user_id = $3 AND ended_at IS NULL AND id IS DISTINCT FROM $4 RETURNING ",
                session_cols!()
            ))
            .bind(end.at.unix_millis())
            .bind(end.reason.key())
            .bind(user.0)
            .bind(except.map(|s| s.0))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            sessions_from_rows(&rows)
        })
        .await
    }

    async fn rotate_session_token(
        &self,
        id: SessionId,
        old: &TokenHash,
        new: &TokenHash,
    ) -> StoreResult<bool> {
        self.timed(async {
            let done = sqlx::query(
                "UPDATE sessions SET token_hash = $1 \
                 WHERE id = $2 AND token_hash = $3 AND ended_at IS NULL",
            )
            .bind(new.as_bytes().as_slice())
            .bind(id.0)
            .bind(old.as_bytes().as_slice())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn list_sessions(&self, q: &SessionQuery) -> StoreResult<Vec<Session>> {
        self.timed(async {
            let mut qb = QueryBuilder::<Postgres>::new(concat!(
                "SELECT ",
                session_cols!(),
                " FROM sessions WHERE TRUE"
            ));
            if let Some(user) = q.user {
                qb.push(" AND user_id = ").push_bind(user.0);
            }
            if let Some(host) = &q.host {
                qb.push(" AND host = ").push_bind(host.clone());
            }
            let now = q.now.unix_millis();
            match q.state {
                StateFilter::Any => {}
                StateFilter::Live => {
                    qb.push(" AND ended_at IS NULL AND deadline_at > ")
                        .push_bind(now);
                }
                StateFilter::Ended => {
                    qb.push(" AND (ended_at IS NOT NULL OR deadline_at <= ")
                        .push_bind(now)
                        .push(")");
                }
            }
            if let Some(c) = q.after {
                qb.push(" AND (created_at, id) < (")
                    .push_bind(c.created_at.unix_millis())
                    .push(", ")
                    .push_bind(c.id.0)
                    .push(")");
            }
            qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                .push_bind(limit_i64(q.limit));
            let rows = qb.build().fetch_all(&self.pool).await.map_err(backend)?;
            sessions_from_rows(&rows)
        })
        .await
    }

    async fn end_expired_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Session>> {
        self.timed(async {
            // The batch is picked once (a CTE) and locked; SKIP LOCKED leaves rows
            // another sweeper is ending to it.
            let rows = sqlx::query(concat!(
                "WITH batch AS (SELECT id AS sid FROM sessions \
                 WHERE ended_at IS NULL AND deadline_at <= $1 \
                 ORDER BY deadline_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 UPDATE sessions SET ended_at = deadline_at, end_reason = ",
                expiry_reason!(),
                " FROM batch WHERE id = batch.sid AND ended_at IS NULL RETURNING ",
                session_cols!()
            ))
            .bind(now.unix_millis())
            .bind(limit_i64(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            sessions_from_rows(&rows)
        })
        .await
    }

    async fn purge_ended_sessions(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        self.timed(async {
            let done = sqlx::query(
                "WITH batch AS (SELECT id AS sid FROM sessions \
                 WHERE ended_at IS NOT NULL AND ended_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 DELETE FROM sessions USING batch WHERE id = batch.sid",
            )
            .bind(before.unix_millis())
            .bind(limit_i64(limit))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn count_live_sessions(&self, user: Option<UserId>, now: Timestamp) -> StoreResult<u64> {
        self.timed(async {
            let n: i64 =
                match user {
                    Some(u) => {
                        sqlx::query_scalar(
                            "SELECT COUNT(*) FROM sessions \
                     WHERE user_id = $1 AND ended_at IS NULL AND deadline_at > $2",
                        )
                        .bind(u.0)
                        .bind(now.unix_millis())
                        .fetch_one(&self.pool)
                        .await
                    }
                    None => sqlx::query_scalar(
                        "SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL AND deadline_at > $1",
                    )
                    .bind(now.unix_millis())
                    .fetch_one(&self.pool)
                    .await,
                }
                .map_err(backend)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn append_audit(&self, e: NewAuditEvent) -> StoreResult<()> {
        self.timed(async {
            sqlx::query(
                "INSERT INTO audit_events (at, kind, actor_id, actor_name, subject_id, \
                 subject_name, session_id, source, dialect, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(e.at.unix_millis())
            .bind(e.kind.key())
            .bind(e.actor.as_ref().map(|u| u.id.0))
            .bind(e.actor.as_ref().map(|u| u.name.as_str()))
            .bind(e.subject.as_ref().map(|u| u.id.0))
            .bind(e.subject.as_ref().map(|u| u.name.as_str()))
            .bind(e.session_id.map(|s| s.0))
            .bind(&e.source)
            .bind(e.dialect.map(Dialect::key))
            .bind(&e.detail)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn query_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        self.timed(async {
            let mut qb = QueryBuilder::<Postgres>::new(
                "SELECT id, at, kind, actor_id, actor_name, subject_id, subject_name, session_id, \
                 source, dialect, detail FROM audit_events WHERE TRUE",
            );
            if let Some(u) = q.user {
                qb.push(" AND (actor_id = ")
                    .push_bind(u.0)
                    .push(" OR subject_id = ")
                    .push_bind(u.0)
                    .push(")");
            }
            if !q.kinds.is_empty() {
                let kinds: Vec<&str> = q.kinds.iter().map(|k| k.key()).collect();
                qb.push(" AND kind = ANY(").push_bind(kinds).push(")");
            }
            if let Some(s) = q.since {
                qb.push(" AND at >= ").push_bind(s.unix_millis());
            }
            if let Some(u) = q.until {
                qb.push(" AND at < ").push_bind(u.unix_millis());
            }
            if let Some(b) = q.before_id {
                qb.push(" AND id < ").push_bind(b);
            }
            qb.push(" ORDER BY id DESC LIMIT ")
                .push_bind(limit_i64(q.limit));
            let rows = qb.build().fetch_all(&self.pool).await.map_err(backend)?;
            rows.iter().map(audit_from_row).collect()
        })
        .await
    }

    async fn purge_audit(&self, before: Timestamp) -> StoreResult<u64> {
        self.timed(async {
            let done = sqlx::query("DELETE FROM audit_events WHERE at < $1")
                .bind(before.unix_millis())
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn login_failures(&self, key: &str) -> StoreResult<Option<FailureRecord>> {
        self.timed(async {
            let row = sqlx::query(
                "SELECT failures, window_start, locked_until, lockouts \
                 FROM login_failures WHERE key = $1",
            )
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
            row.as_ref().map(failure_from_row).transpose()
        })
        .await
    }

    async fn record_login_failure(
        &self,
        key: &str,
        now: Timestamp,
        window: Duration,
    ) -> StoreResult<FailureRecord> {
        self.timed(async {
            let row = sqlx::query(
                "INSERT INTO login_failures AS f (key, failures, window_start, lockouts) \
                 VALUES ($1, 1, $2, 0) \
                 ON CONFLICT (key) DO UPDATE SET \
                   failures = CASE WHEN f.window_start <= $2 - $3 THEN 1 ELSE f.failures + 1 END, \
                   window_start = CASE WHEN f.window_start <= $2 - $3 THEN $2 ELSE f.window_start END \
                 RETURNING failures, window_start, locked_until, lockouts",
            )
            .bind(key)
            .bind(now.unix_millis())
            .bind(duration_millis(window))
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
            failure_from_row(&row)
        })
        .await
    }

    async fn lock_login(&self, key: &str, until: Timestamp) -> StoreResult<()> {
        self.timed(async {
            sqlx::query(
                "INSERT INTO login_failures AS f (key, failures, window_start, locked_until, lockouts) \
                 VALUES ($1, 0, $2, $2, 1) \
                 ON CONFLICT (key) DO UPDATE SET locked_until = $2, lockouts = f.lockouts + 1, \
                   failures = 0, window_start = $2",
            )
            .bind(key)
            .bind(until.unix_millis())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn clear_login_failures(&self, key: &str) -> StoreResult<()> {
        self.timed(async {
            sqlx::query("DELETE FROM login_failures WHERE key = $1")
                .bind(key)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.timed(async {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(())
        })
        .await
    }
}
