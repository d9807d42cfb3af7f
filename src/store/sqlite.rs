//! The embedded default: one SQLite file in WAL mode, through sqlx.
//!
//! Writes go through a single connection (SQLite has one writer at a time; one
//! connection in-process means transactions never fight over the write lock),
//! with `synchronous = FULL` so a commit is on disk before the method returns.
//! Reads use a small pool of read-only connections that see every committed write.

use super::generation::{Generation, Slot, StoreGeneration};
use super::{
    AuditQuery, CreatedSession, FailureRecord, SessionLimit, SessionQuery, StateFilter, Store,
    StoreError, StoreResult,
};
use crate::domain::{
    AuditEvent, AuditKind, ClientInfo, ConsoleType, Dialect, EndReason, NewAuditEvent, NewSession,
    NewUser, PasswordHash, Session, SessionEnd, SessionId, Timestamp, TokenHash, User, UserId,
    UserRef, duration_millis,
};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row, Sqlite};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard, mpsc, oneshot};

/// The SQLite backend.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: Conns,
    reader: Conns,
    /// Bumped after every commit that ends sessions, rotates a token or changes a
    /// user (see `generation.rs`), by every process that opens the file.
    generation: Arc<Generation>,
    /// New sessions go to the [`SessionWriter`] task through this.
    creates: mpsc::UnboundedSender<CreateJob>,
}

macro_rules! session_cols {
    () => {
        "id, token_hash, user_id, user_name, host, user_agent, device_id, description, \
         console_type, dialect, browser_session_id, created_at, last_accessed_at, \
         idle_timeout_ms, expires_at, ended_at, end_reason"
    };
}

/// The columns an audit insert writes, in [`bind_audit`]'s order.
macro_rules! audit_cols {
    () => {
        "at, kind, actor_id, actor_name, subject_id, subject_name, session_id, source, \
         dialect, detail"
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
/// Binds: ?1 end time, ?2 requested reason.
macro_rules! end_assignments {
    () => {
        concat!(
            "ended_at = MIN(?1, deadline_at), end_reason = CASE WHEN deadline_at <= ?1 THEN ",
            expiry_reason!(),
            " ELSE ?2 END"
        )
    };
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Page cache of the writer connection (`cache_size`, negative: KiB): 64 MiB where
/// SQLite's default is 2 MiB. Every new session goes into the token-hash index at a
/// random place; with 1M sessions that index is ~40 MiB, and a page the default
/// cache had dropped came back from the OS, or from the disk when the OS had dropped
/// it too (seen on this project's VMs: logins then waited on reads, not on Argon2).
/// Memory only as pages are used, and freed with the connection.
const WRITER_CACHE: &str = "-65536";
/// Page cache of each of the [`READERS`] reader connections: 16 MiB.
const READER_CACHE: &str = "-16384";
/// Read-only connections (reads run on them in parallel with the writer and with
/// each other).
const READERS: usize = 4;

/// Connections the store holds itself, each behind a lock, instead of in an sqlx
/// `Pool`: the pool pings a connection when it hands it out and again when it takes
/// it back, two round trips to the connection's thread beside the query's own (each
/// a wake-up of that thread and of a runtime worker; bench/PROFILE.md), and a ping
/// proves nothing about a file this process opened. A query takes the first free
/// connection from a rotating start, or waits in turn for one. Commands on a
/// connection run in the order sent, so a query dropped half-way (its request gone)
/// leaves nothing for the next holder to trip over, and a transaction dropped
/// open queues its rollback first (sqlx's `Transaction` does that on drop).
#[derive(Clone, Debug)]
struct Conns {
    conns: Arc<[Mutex<SqliteConnection>]>,
    next: Arc<AtomicUsize>,
}

impl Conns {
    async fn open(opts: &SqliteConnectOptions, n: usize) -> anyhow::Result<Conns> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(Mutex::new(opts.connect().await?));
        }
        Ok(Conns {
            conns: conns.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    async fn get(&self) -> MutexGuard<'_, SqliteConnection> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(conn) = self.conns[(start + i) % n].try_lock() {
                return conn;
            }
        }
        self.conns[start % n].lock().await
    }
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database a `sqlite:` URL names.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let base = SqliteConnectOptions::from_str(url)?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("cache_size", READER_CACHE);
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let writer_opts = base
            .clone()
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Full)
            .pragma("cache_size", WRITER_CACHE)
            // The statement journal of the savepoints a login's writes run under
            // (`SessionWriter`) stays in memory: by default it spilled to a temporary
            // file past 64 KiB, which a login's ~16 changed pages reach, and every
            // commit then created, wrote and deleted a file (bench/PROFILE.md).
            .pragma("temp_store", "memory");
        let writer = Conns::open(&writer_opts, 1).await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&mut *writer.get().await)
            .await?;
        let reader = if memory {
            // An in-memory database exists only inside its one connection.
            writer.clone()
        } else {
            Conns::open(&base.read_only(true), READERS).await?
        };
        let generation = if memory {
            Generation::in_process()
        } else {
            Generation::beside(writer_opts_filename(url)?.as_path())?
        };
        let generation = Arc::new(generation);
        let (creates, jobs) = mpsc::unbounded_channel();
        tokio::spawn(
            SessionWriter {
                writer: writer.clone(),
                generation: Arc::clone(&generation),
            }
            .run(jobs),
        );
        Ok(SqliteStore {
            writer,
            reader,
            generation,
            creates,
        })
    }

    /// Bulk-loads synthetic data for the benchmark (`bench/`): `users` users named
    /// `bench-user-<n>` (n from 1) sharing `password_hash`, each with
    /// `sessions_per_user` live sessions created before `now` (a millisecond apart,
    /// idle timeout 12 h, lifetime 24 h) with random ids and token hashes whose
    /// secrets nobody knows. One transaction of set-based inserts (a recursive
    /// CTE), so a million sessions load in seconds rather than hours of one durable
    /// commit each. Returns the id of the first user created.
    pub async fn seed_benchmark_data(
        &self,
        users: u32,
        sessions_per_user: u32,
        now: Timestamp,
        password_hash: &PasswordHash,
    ) -> StoreResult<UserId> {
        const IDLE_MS: i64 = 12 * 3600 * 1000;
        const LIFE_MS: i64 = 24 * 3600 * 1000;
        let now = now.unix_millis();
        let total = i64::from(users) * i64::from(sessions_per_user);
        let mut conn = self.writer.get().await;
        let mut tx = conn.begin().await.map_err(backend)?;
        let first: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM users")
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO users (id, name, name_key, guid, enabled, roles, password_hash, \
             created_at, updated_at, next_browser_session_id) \
             SELECT ?2 + i - 1, 'bench-user-' || i, 'bench-user-' || i, lower(hex(randomblob(16))), \
             1, '', ?3, ?4, ?4, ?5 + 1 FROM n",
        )
        .bind(i64::from(users))
        .bind(first)
        .bind(&password_hash.0)
        .bind(now)
        .bind(i64::from(sessions_per_user))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query(concat!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1), \
             r(i, h) AS (SELECT i, lower(hex(randomblob(16))) FROM n) \
             INSERT INTO sessions (",
            session_cols!(),
            ", deadline_at) SELECT \
             substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-a' \
             || substr(h, 18, 3) || '-' || substr(h, 21, 12), \
             randomblob(32), ?2 + (i % ?3), 'bench-user-' || (1 + i % ?3), '127.0.0.1', \
             'bench', '', '', 13, 'commvault', 1 + i / ?3, ?4 - (?1 - i), ?4 - (?1 - i), \
             ?5, ?4 - (?1 - i) + ?6, NULL, NULL, MIN(?4 - (?1 - i) + ?5, ?4 - (?1 - i) + ?6) FROM r"
        ))
        .bind(total)
        .bind(first)
        .bind(i64::from(users))
        .bind(now)
        .bind(IDLE_MS)
        .bind(LIFE_MS)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        self.generation.bump(Slot::Listings).await;
        Ok(UserId(first))
    }

    /// `create_session`, with the login's audit event in the same transaction.
    ///
    /// Handed to the session writer (see [`SessionWriter`]), which commits the
    /// sessions that arrive while it waits for a commit together.
    async fn create_session_with(
        &self,
        new: NewSession,
        limit: SessionLimit,
        event: Option<NewAuditEvent>,
    ) -> StoreResult<CreatedSession> {
        let (reply, answer) = oneshot::channel();
        self.creates
            .send(CreateJob {
                new,
                limit,
                event,
                reply,
            })
            .map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }

    /// Where the generation file of the database `url` names lives (`None` in memory).
    pub fn generation_path(url: &str) -> anyhow::Result<Option<std::path::PathBuf>> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Ok(None);
        }
        Ok(Some(Generation::path_for(&writer_opts_filename(url)?)))
    }
}

/// What every session of a commit gets when one of them failed in a way that may
/// have left the transaction in an unknown state (the cause is logged, once).
fn writer_failed() -> StoreError {
    StoreError::backend(anyhow::anyhow!(
        "creating a session failed; the sessions committed with it were rolled back"
    ))
}

/// What a login gets if the [`SessionWriter`] task is gone (the runtime is stopping).
fn writer_stopped() -> StoreError {
    StoreError::backend(anyhow::anyhow!("the session writer has stopped"))
}

/// The token-hash index, read in its order (see [`SessionWriter::warm_up`]).
const WARM_UP: &str = "SELECT COUNT(*) FROM sessions WHERE token_hash >= x''";

/// Most sessions one commit of the [`SessionWriter`] creates.
const MAX_CREATES_PER_COMMIT: usize = 64;

/// A session to create, and where its outcome goes.
struct CreateJob {
    new: NewSession,
    limit: SessionLimit,
    event: Option<NewAuditEvent>,
    reply: oneshot::Sender<StoreResult<CreatedSession>>,
}

/// Creates sessions with group commit. With `synchronous = FULL` each commit waits
/// for the disk, and on a slow disk one commit per login made the commit, not
/// Argon2, the limit of a burst of logins (a `fsync` of tens of milliseconds
/// allowed a few dozen logins a second, with the CPU idle). The writer takes every
/// session waiting when it starts a commit (up to [`MAX_CREATES_PER_COMMIT`]),
/// creates each under a savepoint of its own (one refused by its session limit
/// changes nothing for the others), commits them together and only then answers
/// each: a session is on disk before its login is answered, as before, and the
/// next commit gathers the logins that arrived meanwhile.
struct SessionWriter {
    writer: Conns,
    generation: Arc<Generation>,
}

impl SessionWriter {
    /// Runs until every [`SqliteStore`] holding the sender is gone.
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<CreateJob>) {
        self.warm_up().await;
        let mut batch = Vec::new();
        while jobs.recv_many(&mut batch, MAX_CREATES_PER_COMMIT).await > 0 {
            let outcomes = self.create_all(&batch).await;
            let evicted = outcomes
                .iter()
                .any(|o| o.as_ref().is_ok_and(|(_, ev)| !ev.is_empty()));
            if outcomes.iter().any(Result::is_ok) {
                if evicted {
                    self.generation
                        .bump_all(&[Slot::Changes, Slot::Listings])
                        .await;
                } else {
                    self.generation.bump(Slot::Listings).await;
                }
            }
            for (job, outcome) in batch.drain(..).zip(outcomes) {
                let created = outcome.map(|(bsid, evicted)| CreatedSession {
                    session: job.new.into_session(bsid),
                    evicted,
                });
                // The caller may have gone (its request was dropped): nothing to tell.
                let _ = job.reply.send(created);
            }
        }
    }

    /// Reads the token-hash index once through the writer, so that its pages are in
    /// the writer's cache before the first login: every new session goes into that
    /// index at a random place, and on a cold file each such place was a read from
    /// disk (a 1M-session file's first logins ran at about half their later rate).
    /// One pass over the index in its order (~40 MiB for 1M sessions, within
    /// [`WRITER_CACHE`]); sessions created meanwhile wait for it.
    async fn warm_up(&self) {
        let scan = sqlx::query_scalar::<_, i64>(WARM_UP)
            .fetch_one(&mut *self.writer.get().await)
            .await;
        if let Err(e) = scan {
            tracing::warn!(error = %e, "could not read the session index ahead of logins");
        }
    }

    /// Each job's browser session id and evicted sessions, or why it failed; all
    /// fail alike if the transaction cannot begin or commit.
    ///
    /// The transaction is SQLite's own (`BEGIN` and `COMMIT` in the statements, not
    /// sqlx's `Transaction`, whose begin and commit are round trips of their own):
    /// the first session's statements begin it and, when the last session has no
    /// limit to check, its statements commit it, so a login that commits alone is
    /// one round trip to the connection's thread. Every path that leaves it open on
    /// a failure rolls it back before the connection is let go.
    async fn create_all(&self, batch: &[CreateJob]) -> Vec<StoreResult<(i64, Vec<Session>)>> {
        let all_fail = |e: &sqlx::Error| {
            batch
                .iter()
                .map(|_| Err(StoreError::backend(anyhow::anyhow!("{e}"))))
                .collect()
        };
        let mut conn = self.writer.get().await;
        let last = batch.len().saturating_sub(1);
        let mut committed = false;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (i, job) in batch.iter().enumerate() {
            let ends = Ends {
                begin: i == 0,
                commit: i == last && job.limit == SessionLimit::Unlimited,
            };
            let outcome = create_in(&mut conn, &job.new, job.limit, job.event.as_ref(), ends).await;
            // A created session's savepoint stays open (the commit releases them all);
            // a refused one's is rolled back, `ROLLBACK TO` naming the newest
            // savepoint, its own. A refusal is only ever decided after the savepoint
            // was taken; after any other failure that is not known, and the whole
            // transaction goes. A session whose user is gone changed nothing, and
            // its statements ran to the end: with the commit, if they carried it.
            match &outcome {
                Ok(_) | Err(StoreError::NotFound) if ends.commit => committed = true,
                Ok(_) => {}
                Err(StoreError::Conflict(_) | StoreError::NotFound | StoreError::LimitReached) => {
                    if let Err(e) =
                        sqlx::raw_sql("ROLLBACK TO create_session; RELEASE create_session")
                            .execute(&mut *conn)
                            .await
                    {
                        roll_back(&mut conn).await;
                        return all_fail(&e);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "creating a session failed");
                    roll_back(&mut conn).await;
                    return batch.iter().map(|_| Err(writer_failed())).collect();
                }
            }
            outcomes.push(outcome);
        }
        if !committed && let Err(e) = sqlx::raw_sql("COMMIT").execute(&mut *conn).await {
            roll_back(&mut conn).await;
            return all_fail(&e);
        }
        outcomes
    }
}

/// Ends the writer's open transaction, if there is one (after a failure it may or
/// may not be: SQLite rolls back some failed commits itself).
async fn roll_back(conn: &mut SqliteConnection) {
    if let Err(e) = sqlx::raw_sql("ROLLBACK").execute(conn).await {
        tracing::debug!(error = %e, "rollback after a failed session create");
    }
}

/// Whether a session's statements begin the batch's transaction, and commit it.
#[derive(Clone, Copy)]
struct Ends {
    begin: bool,
    commit: bool,
}

/// Creating a session, from its savepoint to its audit event, is one round trip to
/// the connection's thread (sqlx runs the statements of one query in turn, taking
/// `?N` from the one argument list): seven round trips per login, each a wake-up
/// of that thread and then of a runtime worker, had made the context switches of
/// a burst of logins a tenth of its CPU beside Argon2 (bench/PROFILE.md).
///
/// `?1` is the user; the browser session id is the user's counter, read by the
/// insert after the update moved it on; the update's `RETURNING` row is how the
/// caller knows the user exists (without it, nothing was inserted).
macro_rules! create_statements {
    ($start:expr, $audit:expr, $commit:expr) => {
        concat!(
            $start,
            "UPDATE users SET next_browser_session_id = next_browser_session_id + 1 \
             WHERE id = ?1 RETURNING next_browser_session_id - 1; \
             INSERT INTO sessions (",
            session_cols!(),
            ", deadline_at) SELECT ?2, ?3, ?1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
             next_browser_session_id - 1, ?11, ?11, ?12, ?13, NULL, NULL, ?14 \
             FROM users WHERE id = ?1;",
            $audit,
            $commit
        )
    };
}

/// The audit event's insert in [`create_statements`], its values from `?15`: only
/// if the session was inserted (`changes()` counts the rows of the statement just
/// before), so that a commit in the same statements never records a login whose
/// user had gone.
macro_rules! audit_insert_numbered {
    () => {
        concat!(
            " INSERT INTO audit_events (",
            audit_cols!(),
            ") SELECT ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24 WHERE changes() = 1;"
        )
    };
}

/// Where a session's writes start: rolled back to if it is refused.
macro_rules! savepoint {
    () => {
        "SAVEPOINT create_session; "
    };
}

/// [`create_statements`] with no limit to check, under the session's own
/// savepoint, by (begins the transaction, commits it, writes an audit event).
macro_rules! unlimited {
    ($begin:expr, $commit:expr) => {
        [
            create_statements!(concat!($begin, savepoint!()), "", $commit),
            create_statements!(
                concat!($begin, savepoint!()),
                audit_insert_numbered!(),
                $commit
            ),
        ]
    };
}
const CREATE_UNLIMITED: [[[&str; 2]; 2]; 2] = [
    [unlimited!("", ""), unlimited!("", " COMMIT;")],
    [unlimited!("BEGIN; ", ""), unlimited!("BEGIN; ", " COMMIT;")],
];

/// [`create_statements`] after a limit was checked (the savepoint, and the
/// transaction, already open), by (writes an audit event).
const CREATE_LIMITED: [&str; 2] = [
    create_statements!("", "", ""),
    create_statements!("", audit_insert_numbered!(), ""),
];

/// One new session (and its audit event) in the writer's transaction (begun or
/// committed here as `ends` says), under a savepoint of its own named
/// `create_session` that it leaves open (see [`SessionWriter`]): the per-user limit
/// applied (evicting or refusing), a browser session id taken, the row inserted.
/// Returns the browser session id and the sessions evicted.
async fn create_in(
    conn: &mut SqliteConnection,
    new: &NewSession,
    limit: SessionLimit,
    event: Option<&NewAuditEvent>,
    ends: Ends,
) -> StoreResult<(i64, Vec<Session>)> {
    let now = new.created_at.unix_millis();
    let mut evicted = Vec::new();
    let max = match limit {
        SessionLimit::Unlimited => None,
        SessionLimit::Deny(n) | SessionLimit::EvictOldest(n) => Some(n as usize),
    };
    if let Some(max) = max {
        let start = if ends.begin {
            concat!("BEGIN; ", savepoint!())
        } else {
            savepoint!()
        };
        sqlx::raw_sql(start)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM sessions WHERE user_id = ? AND ended_at IS NULL AND deadline_at > ? \
             ORDER BY created_at ASC, id ASC",
        )
        .bind(new.user_id.0)
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
        if live.len() >= max {
            if matches!(limit, SessionLimit::Deny(_)) || max == 0 {
                return Err(StoreError::LimitReached);
            }
            for id in &live[..=live.len() - max] {
                let row = sqlx::query(concat!(
                    "UPDATE sessions SET ",
                    end_assignments!(),
                    " WHERE id = ?3 AND ended_at IS NULL RETURNING ",
                    session_cols!()
                ))
                .bind(now)
                .bind(EndReason::Evicted.key())
                .bind(id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(backend)?;
                if let Some(row) = row {
                    evicted.push(session_from_row(&row)?);
                }
            }
        }
    }
    let idle_ms = duration_millis(new.idle_timeout);
    let deadline = now
        .saturating_add(idle_ms)
        .min(new.expires_at.unix_millis());
    let audited = usize::from(event.is_some());
    let sql = match max {
        Some(_) => CREATE_LIMITED[audited],
        None => CREATE_UNLIMITED[usize::from(ends.begin)][usize::from(ends.commit)][audited],
    };
    let query = sqlx::query(sql)
        .bind(new.user_id.0)
        .bind(id_text(new.id))
        .bind(new.token_hash.as_bytes().as_slice())
        .bind(&new.user_name)
        .bind(&new.client.host)
        .bind(&new.client.user_agent)
        .bind(&new.client.device_id)
        .bind(&new.client.description)
        .bind(new.console_type.code())
        .bind(new.dialect.key())
        .bind(now)
        .bind(idle_ms)
        .bind(new.expires_at.unix_millis())
        .bind(deadline);
    let query = match event {
        Some(e) => bind_audit(query, e),
        None => query,
    };
    // The rows of every statement: the update's one, if the user exists.
    let rows = query.fetch_all(&mut *conn).await.map_err(backend)?;
    let bsid = rows
        .first()
        .ok_or(StoreError::NotFound)?
        .try_get::<i64, _>(0)
        .map_err(backend)?;
    Ok((bsid, evicted))
}

fn writer_opts_filename(url: &str) -> anyhow::Result<std::path::PathBuf> {
    Ok(SqliteConnectOptions::from_str(url)?
        .get_filename()
        .to_path_buf())
}

fn backend(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return StoreError::Conflict(db.message().to_string());
    }
    StoreError::backend(e)
}

fn id_text(id: SessionId) -> String {
    id.0.hyphenated().to_string()
}

fn corrupt(what: &str) -> StoreError {
    StoreError::backend(anyhow::anyhow!("corrupt row: {what}"))
}

fn session_from_row(row: &SqliteRow) -> StoreResult<Session> {
    let id: String = row.try_get("id").map_err(backend)?;
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
        id: SessionId::parse(&id).ok_or_else(|| corrupt("session id"))?,
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

fn sessions_from_rows(rows: &[SqliteRow]) -> StoreResult<Vec<Session>> {
    rows.iter().map(session_from_row).collect()
}

fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    let roles: String = row.try_get("roles").map_err(backend)?;
    Ok(User {
        id: UserId(row.try_get("id").map_err(backend)?),
        name: row.try_get("name").map_err(backend)?,
        guid: row.try_get("guid").map_err(backend)?,
        full_name: row.try_get("full_name").map_err(backend)?,
        email: row.try_get("email").map_err(backend)?,
        description: row.try_get("description").map_err(backend)?,
        enabled: row.try_get("enabled").map_err(backend)?,
        roles: split_roles(&roles),
        password_hash: PasswordHash(row.try_get("password_hash").map_err(backend)?),
        created_at: Timestamp::from_unix_millis(row.try_get("created_at").map_err(backend)?),
        updated_at: Timestamp::from_unix_millis(row.try_get("updated_at").map_err(backend)?),
    })
}

fn split_roles(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
}

fn audit_from_row(row: &SqliteRow) -> StoreResult<AuditEvent> {
    let user_ref = |id: &str, name: &str| -> StoreResult<Option<UserRef>> {
        let id: Option<i64> = row.try_get(id).map_err(backend)?;
        let name: Option<String> = row.try_get(name).map_err(backend)?;
        Ok(id.map(|id| UserRef {
            id: UserId(id),
            name: name.unwrap_or_default(),
        }))
    };
    let kind: String = row.try_get("kind").map_err(backend)?;
    let session: Option<String> = row.try_get("session_id").map_err(backend)?;
    let dialect: Option<String> = row.try_get("dialect").map_err(backend)?;
    Ok(AuditEvent {
        id: row.try_get("id").map_err(backend)?,
        event: NewAuditEvent {
            at: Timestamp::from_unix_millis(row.try_get("at").map_err(backend)?),
            kind: AuditKind::from_key(&kind).ok_or_else(|| corrupt("audit kind"))?,
            actor: user_ref("actor_id", "actor_name")?,
            subject: user_ref("subject_id", "subject_name")?,
            session_id: session.as_deref().and_then(SessionId::parse),
            source: row.try_get("source").map_err(backend)?,
            dialect: dialect.as_deref().and_then(Dialect::from_key),
            detail: row.try_get("detail").map_err(backend)?,
        },
    })
}

fn failure_from_row(row: &SqliteRow) -> StoreResult<FailureRecord> {
    let failures: i64 = row.try_get("failures").map_err(backend)?;
    let lockouts: i64 = row.try_get("lockouts").map_err(backend)?;
    let locked: Option<i64> = row.try_get("locked_until").map_err(backend)?;
    Ok(FailureRecord {
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        window_start: Timestamp::from_unix_millis(row.try_get("window_start").map_err(backend)?),
        locked_until: locked.map(Timestamp::from_unix_millis),
        lockouts: u32::try_from(lockouts).unwrap_or(u32::MAX),
    })
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, u: NewUser) -> StoreResult<User> {
        let row = sqlx::query(concat!(
            "INSERT INTO users (name, name_key, guid, full_name, email, description, enabled, \
             roles, password_hash, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ",
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
        .bind(u.created_at.unix_millis())
        .fetch_one(&mut *self.writer.get().await)
        .await
        .map_err(backend)?;
        user_from_row(&row)
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        let row = sqlx::query(concat!("SELECT ", user_cols!(), " FROM users WHERE id = ?"))
            .bind(id.0)
            .fetch_optional(&mut *self.reader.get().await)
            .await
            .map_err(backend)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn find_user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE name_key = ?"
        ))
        .bind(name.to_lowercase())
        .fetch_optional(&mut *self.reader.get().await)
        .await
        .map_err(backend)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self, after: Option<UserId>, limit: usize) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE id > ? ORDER BY id LIMIT ?"
        ))
        .bind(after.map_or(i64::MIN, |u| u.0))
        .bind(limit_i64(limit))
        .fetch_all(&mut *self.reader.get().await)
        .await
        .map_err(backend)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn update_user(&self, u: &User) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE users SET name = ?, name_key = ?, guid = ?, full_name = ?, email = ?, \
             description = ?, enabled = ?, roles = ?, password_hash = ?, updated_at = ? \
             WHERE id = ?",
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
        .execute(&mut *self.writer.get().await)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.generation.bump(Slot::Changes).await;
        Ok(())
    }

    async fn delete_user(&self, id: UserId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id.0)
            .execute(&mut *self.writer.get().await)
            .await
            .map_err(backend)?;
        self.generation.bump(Slot::Changes).await;
        Ok(done.rows_affected() > 0)
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *self.reader.get().await)
            .await
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn create_session(
        &self,
        new: NewSession,
        limit: SessionLimit,
    ) -> StoreResult<CreatedSession> {
        self.create_session_with(new, limit, None).await
    }

    async fn create_session_audited(
        &self,
        new: NewSession,
        limit: SessionLimit,
        event: NewAuditEvent,
    ) -> StoreResult<CreatedSession> {
        self.create_session_with(new, limit, Some(event)).await
    }

    async fn find_session_by_token(&self, hash: &TokenHash) -> StoreResult<Option<Session>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_cols!(),
            " FROM sessions WHERE token_hash = ?"
        ))
        .bind(hash.as_bytes().as_slice())
        .fetch_optional(&mut *self.reader.get().await)
        .await
        .map_err(backend)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_cols!(),
            " FROM sessions WHERE id = ?"
        ))
        .bind(id_text(id))
        .fetch_optional(&mut *self.reader.get().await)
        .await
        .map_err(backend)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn touch_sessions(&self, touches: &[(SessionId, Timestamp)]) -> StoreResult<()> {
        if touches.is_empty() {
            return Ok(());
        }
        let mut conn = self.writer.get().await;
        let mut tx = conn.begin().await.map_err(backend)?;
        for (id, at) in touches {
            // Only raise, only while recorded live and within the absolute lifetime.
            sqlx::query(
                "UPDATE sessions SET last_accessed_at = ?1, \
                 deadline_at = MIN(?1 + idle_timeout_ms, expires_at) \
                 WHERE id = ?2 AND ended_at IS NULL AND last_accessed_at < ?1 AND expires_at > ?1",
            )
            .bind(at.unix_millis())
            .bind(id_text(*id))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn end_session(&self, id: SessionId, end: SessionEnd) -> StoreResult<Option<Session>> {
        let row = sqlx::query(concat!(
            "UPDATE sessions SET ",
            end_assignments!(),
            " WHERE id = ?3 AND ended_at IS NULL RETURNING ",
            session_cols!()
        ))
        .bind(end.at.unix_millis())
        .bind(end.reason.key())
        .bind(id_text(id))
        .fetch_optional(&mut *self.writer.get().await)
        .await
        .map_err(backend)?;
        if row.is_some() {
            self.generation.bump(Slot::Changes).await;
        }
        row.as_ref().map(session_from_row).transpose()
    }

    async fn end_user_sessions(
        &self,
        user: UserId,
        end: SessionEnd,
        except: Option<SessionId>,
    ) -> StoreResult<Vec<Session>> {
        let rows = sqlx::query(concat!(
            "UPDATE sessions SET ",
            end_assignments!(),
            " WHERE user_id = ?3 AND ended_at IS NULL AND id IS NOT ?4 RETURNING ",
            session_cols!()
        ))
        .bind(end.at.unix_millis())
        .bind(end.reason.key())
        .bind(user.0)
        .bind(except.map(id_text))
        .fetch_all(&mut *self.writer.get().await)
        .await
        .map_err(backend)?;
        if !rows.is_empty() {
            self.generation.bump(Slot::Changes).await;
        }
        sessions_from_rows(&rows)
    }

    async fn rotate_session_token(
        &self,
        id: SessionId,
        old: &TokenHash,
        new: &TokenHash,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET token_hash = ? WHERE id = ? AND token_hash = ? AND ended_at IS NULL",
        )
        .bind(new.as_bytes().as_slice())
        .bind(id_text(id))
        .bind(old.as_bytes().as_slice())
        .execute(&mut *self.writer.get().await)
        .await
        .map_err(backend)?;
        if done.rows_affected() > 0 {
            self.generation.bump(Slot::Changes).await;
        }
        Ok(done.rows_affected() == 1)
    }

    async fn list_sessions(&self, q: &SessionQuery) -> StoreResult<Vec<Session>> {
        let mut qb = QueryBuilder::<Sqlite>::new("");
        push_list_sessions(&mut qb, q);
        let rows = qb
            .build()
            .fetch_all(&mut *self.reader.get().await)
            .await
            .map_err(backend)?;
        sessions_from_rows(&rows)
    }

    async fn end_expired_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Session>> {
        let rows = sqlx::query(concat!(
            "UPDATE sessions SET ended_at = deadline_at, end_reason = ",
            expiry_reason!(),
            " WHERE id IN (SELECT id FROM sessions WHERE ended_at IS NULL AND deadline_at <= ? \
             ORDER BY deadline_at LIMIT ?) RETURNING ",
            session_cols!()
        ))
        .bind(now.unix_millis())
        .bind(limit_i64(limit))
        .fetch_all(&mut *self.writer.get().await)
        .await
        .map_err(backend)?;
        if !rows.is_empty() {
            self.generation.bump(Slot::Changes).await;
        }
        sessions_from_rows(&rows)
    }

    async fn purge_ended_sessions(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
             WHERE ended_at IS NOT NULL AND ended_at < ? LIMIT ?)",
        )
        .bind(before.unix_millis())
        .bind(limit_i64(limit))
        .execute(&mut *self.writer.get().await)
        .await
        .map_err(backend)?;
        if done.rows_affected() > 0 {
            self.generation.bump(Slot::Listings).await;
        }
        Ok(done.rows_affected())
    }

    async fn count_live_sessions(&self, user: Option<UserId>, now: Timestamp) -> StoreResult<u64> {
        let n: i64 = match user {
            Some(u) => sqlx::query_scalar(
                "SELECT COUNT(*) FROM sessions WHERE user_id = ? AND ended_at IS NULL AND deadline_at > ?",
            )
            .bind(u.0)
            .bind(now.unix_millis())
            .fetch_one(&mut *self.reader.get().await)
            .await,
            None => sqlx::query_scalar(
                "SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL AND deadline_at > ?",
            )
            .bind(now.unix_millis())
            .fetch_one(&mut *self.reader.get().await)
            .await,
        }
        .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn append_audit(&self, e: NewAuditEvent) -> StoreResult<()> {
        insert_audit(&mut *self.writer.get().await, &e).await
    }

    async fn query_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT id, at, kind, actor_id, actor_name, subject_id, subject_name, session_id, \
             source, dialect, detail FROM audit_events WHERE 1 = 1",
        );
        if let Some(u) = q.user {
            qb.push(" AND (actor_id = ")
                .push_bind(u.0)
                .push(" OR subject_id = ")
                .push_bind(u.0)
                .push(")");
        }
        if !q.kinds.is_empty() {
            qb.push(" AND kind IN (");
            let mut list = qb.separated(", ");
            for k in &q.kinds {
                list.push_bind(k.key());
            }
            qb.push(")");
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
        let rows = qb
            .build()
            .fetch_all(&mut *self.reader.get().await)
            .await
            .map_err(backend)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn purge_audit(&self, before: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM audit_events WHERE at < ?")
            .bind(before.unix_millis())
            .execute(&mut *self.writer.get().await)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn login_failures(&self, key: &str) -> StoreResult<Option<FailureRecord>> {
        let row = sqlx::query(
            "SELECT failures, window_start, locked_until, lockouts FROM login_failures WHERE key = ?",
        )
        .bind(key)
        .fetch_optional(&mut *self.reader.get().await)
        .await
        .map_err(backend)?;
        row.as_ref().map(failure_from_row).transpose()
    }

    async fn login_failures_of(&self, keys: &[&str]) -> StoreResult<Vec<Option<FailureRecord>>> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT key, failures, window_start, locked_until, lockouts FROM login_failures \
             WHERE key IN (",
        );
        let mut list = qb.separated(", ");
        for key in keys {
            list.push_bind(*key);
        }
        qb.push(")");
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = qb
            .build()
            .fetch_all(&mut *self.reader.get().await)
            .await
            .map_err(backend)?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let key: String = row.try_get("key").map_err(backend)?;
            found.push((key, failure_from_row(row)?));
        }
        Ok(keys
            .iter()
            .map(|k| found.iter().find(|(f, _)| f == k).map(|(_, r)| *r))
            .collect())
    }

    async fn record_login_failure(
        &self,
        key: &str,
        now: Timestamp,
        window: Duration,
    ) -> StoreResult<FailureRecord> {
        let row = sqlx::query(
            "INSERT INTO login_failures (key, failures, window_start, lockouts) VALUES (?1, 1, ?2, 0) \
             ON CONFLICT (key) DO UPDATE SET \
               failures = CASE WHEN window_start <= ?2 - ?3 THEN 1 ELSE failures + 1 END, \
               window_start = CASE WHEN window_start <= ?2 - ?3 THEN ?2 ELSE window_start END \
             RETURNING failures, window_start, locked_until, lockouts",
        )
        .bind(key)
        .bind(now.unix_millis())
        .bind(duration_millis(window))
        .fetch_one(&mut *self.writer.get().await)
        .await
        .map_err(backend)?;
        failure_from_row(&row)
    }

    async fn lock_login(&self, key: &str, until: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO login_failures (key, failures, window_start, locked_until, lockouts) \
             VALUES (?1, 0, ?2, ?2, 1) \
             ON CONFLICT (key) DO UPDATE SET locked_until = ?2, lockouts = lockouts + 1, \
               failures = 0, window_start = ?2",
        )
        .bind(key)
        .bind(until.unix_millis())
        .execute(&mut *self.writer.get().await)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn clear_login_failures(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_failures WHERE key = ?")
            .bind(key)
            .execute(&mut *self.writer.get().await)
            .await
            .map_err(backend)?;
        Ok(())
    }

    fn session_generation(&self) -> Option<StoreGeneration> {
        self.generation.current()
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.reader.get().await)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// One page of a session listing: a keyset query walking one index (`sessions_by_user`,
/// `sessions_by_host` or `sessions_by_created`) from the cursor, however deep the page.
fn push_list_sessions(qb: &mut QueryBuilder<Sqlite>, q: &SessionQuery) {
    qb.push(concat!(
        "SELECT ",
        session_cols!(),
        " FROM sessions WHERE 1 = 1"
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
            // `+` keeps the planner off the partial index on `deadline_at`: walking it
            // would mean sorting every live session before the first page.
            qb.push(" AND ended_at IS NULL AND +deadline_at > ")
                .push_bind(now);
        }
        StateFilter::Ended => {
            qb.push(" AND (ended_at IS NOT NULL OR +deadline_at <= ")
                .push_bind(now)
                .push(")");
        }
    }
    if let Some(c) = q.after {
        // A row value, so that SQLite starts the index walk at the cursor.
        qb.push(" AND (created_at, id) < (")
            .push_bind(c.created_at.unix_millis())
            .push(", ")
            .push_bind(id_text(c.id))
            .push(")");
    }
    qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(limit_i64(q.limit));
}

/// `e`'s ten values, in the column order of every audit insert here.
fn bind_audit<'q>(
    query: sqlx::query::Query<'q, Sqlite, <Sqlite as sqlx::Database>::Arguments>,
    e: &'q NewAuditEvent,
) -> sqlx::query::Query<'q, Sqlite, <Sqlite as sqlx::Database>::Arguments> {
    query
        .bind(e.at.unix_millis())
        .bind(e.kind.key())
        .bind(e.actor.as_ref().map(|u| u.id.0))
        .bind(e.actor.as_ref().map(|u| u.name.as_str()))
        .bind(e.subject.as_ref().map(|u| u.id.0))
        .bind(e.subject.as_ref().map(|u| u.name.as_str()))
        .bind(e.session_id.map(id_text))
        .bind(&e.source)
        .bind(e.dialect.map(Dialect::key))
        .bind(&e.detail)
}

/// Inserts one audit event, on the pool or inside a transaction.
async fn insert_audit<'c, E>(exec: E, e: &NewAuditEvent) -> StoreResult<()>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    bind_audit(
        sqlx::query(concat!(
            "INSERT INTO audit_events (",
            audit_cols!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )),
        e,
    )
    .execute(exec)
    .await
    .map_err(backend)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SessionId;
    use crate::store::SessionCursor;

    /// The user the session-writer tests log in.
    fn ann(now: Timestamp) -> crate::domain::NewUser {
        crate::domain::NewUser {
            name: "ann".into(),
            guid: "A".into(),
            full_name: String::new(),
            email: String::new(),
            description: String::new(),
            enabled: true,
            roles: vec![],
            password_hash: PasswordHash("$argon2id$fake".into()),
            created_at: now,
        }
    }

    /// A session of `ann`'s (by name) for the user `user_id`, created at `now`.
    fn session_of(user_id: UserId, token_hash: TokenHash, now: Timestamp) -> NewSession {
        NewSession {
            id: SessionId::generate(),
            token_hash,
            user_id,
            user_name: "ann".into(),
            client: ClientInfo::default(),
            console_type: ConsoleType::CommandLine,
            dialect: Dialect::Commvault,
            created_at: now,
            idle_timeout: Duration::from_secs(1800),
            expires_at: now.plus(Duration::from_secs(86_400)),
        }
    }

    /// The audit event of a login that creates `new`.
    fn login_event(new: &NewSession, now: Timestamp) -> NewAuditEvent {
        let who = UserRef {
            id: new.user_id,
            name: new.user_name.clone(),
        };
        NewAuditEvent {
            at: now,
            kind: AuditKind::LoginSucceeded,
            actor: Some(who.clone()),
            subject: Some(who),
            session_id: Some(new.id),
            source: String::new(),
            dialect: Some(Dialect::Commvault),
            detail: String::new(),
        }
    }

    /// How many successful logins of `user` (of anyone: `None`) the audit trail holds.
    async fn logins_recorded(store: &SqliteStore, user: Option<UserId>) -> usize {
        store
            .query_audit(&AuditQuery {
                user,
                kinds: vec![AuditKind::LoginSucceeded],
                since: None,
                until: None,
                before_id: None,
                limit: 100,
            })
            .await
            .expect("audit")
            .len()
    }

    fn fresh_hash() -> TokenHash {
        crate::domain::SessionToken::generate().expect("rng").hash()
    }

    /// The query plan of every listing shape: which index it walks, and that it never
    /// sorts (a sort would read every matching row before the first page).
    async fn plans(store: &SqliteStore) -> Vec<(String, String)> {
        let cursor = SessionCursor {
            created_at: Timestamp::from_unix_millis(1_000_000),
            id: SessionId::parse("00015f90-0000-4000-8000-000000015f90").expect("id"),
        };
        let mut out = Vec::new();
        for user in [None, Some(UserId(7))] {
            for host in [None, Some("10.0.0.1".to_string())] {
                for state in [StateFilter::Any, StateFilter::Live, StateFilter::Ended] {
                    for after in [None, Some(cursor)] {
                        let q = SessionQuery {
                            user,
                            state,
                            host: host.clone(),
                            now: Timestamp::from_unix_millis(2_000_000),
                            after,
                            limit: 50,
                        };
                        let mut qb = QueryBuilder::<Sqlite>::new("EXPLAIN QUERY PLAN ");
                        push_list_sessions(&mut qb, &q);
                        let rows = qb
                            .build()
                            .fetch_all(&mut *store.reader.get().await)
                            .await
                            .expect("plan");
                        let plan: Vec<String> =
                            rows.iter().map(|r| r.get::<String, _>("detail")).collect();
                        out.push((format!("{q:?}"), plan.join(" / ")));
                    }
                }
            }
        }
        out
    }

    /// The writer's settings that its durability and speed rest on: WAL, a commit on
    /// disk before it returns, and savepoint journals in memory (not a temporary file
    /// per commit).
    #[tokio::test]
    async fn the_writer_commits_durably_and_journals_savepoints_in_memory() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let store = SqliteStore::open(&url).await.expect("open");
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *store.writer.get().await)
            .await
            .expect("journal_mode");
        assert_eq!(journal, "wal");
        let number = |sql: &'static str| {
            let writer = store.writer.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&mut *writer.get().await)
                    .await
                    .expect(sql)
            }
        };
        assert_eq!(number("PRAGMA synchronous").await, 2, "FULL");
        assert_eq!(number("PRAGMA temp_store").await, 2, "MEMORY");
    }

    /// A transaction dropped open (its request gone half-way) is rolled back before
    /// the writer connection serves anyone else: nothing of it is ever committed,
    /// and the next write commits on its own.
    #[tokio::test]
    async fn a_write_dropped_half_way_is_rolled_back_before_the_next() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("drop.db").display());
        let store = SqliteStore::open(&url).await.expect("open");
        {
            let mut conn = store.writer.get().await;
            let mut tx = conn.begin().await.expect("begin");
            sqlx::query(
                "INSERT INTO users (name, name_key, guid, enabled, password_hash, created_at, \
                 updated_at) VALUES ('ghost', 'ghost', 'G', 1, 'x', 0, 0)",
            )
            .execute(&mut *tx)
            .await
            .expect("insert");
        }
        let now = Timestamp::from_unix_millis(1_800_000_000_000);
        store.create_user(ann(now)).await.expect("user");
        let names: Vec<String> = store
            .list_users(None, 10)
            .await
            .expect("list")
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["ann"]);
    }

    /// Without a limit, a session's statements carry the commit when it is the last
    /// of its batch (see `SessionWriter::create_all`), and each login is still
    /// decided alone: of 24 concurrent logins, those whose user is gone create
    /// nothing and record no audit event, those whose token hash is taken are
    /// refused, and the rest are committed with their events; the writer is then
    /// free (no transaction left open) for the next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unlimited_creates_commit_with_their_statements_and_fail_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("fold.db").display());
        let store = SqliteStore::open(&url).await.expect("open");
        let now = Timestamp::from_unix_millis(1_800_000_000_000);
        let user = store.create_user(ann(now)).await.expect("user");
        let gone = UserId(999_999);
        let taken = fresh_hash();
        store
            .create_session(session_of(user.id, taken, now), SessionLimit::Unlimited)
            .await
            .expect("first session");
        // Alone, so first and last of its batch: its statements carry the commit.
        let alone = session_of(gone, fresh_hash(), now);
        let event = login_event(&alone, now);
        let refused = store
            .create_session_audited(alone, SessionLimit::Unlimited, event)
            .await;
        assert!(matches!(refused, Err(StoreError::NotFound)), "{refused:?}");
        let logins = (0..24).map(|i| {
            let store = store.clone();
            let new = match i % 4 {
                1 => session_of(gone, fresh_hash(), now),
                2 => session_of(user.id, taken, now),
                _ => session_of(user.id, fresh_hash(), now),
            };
            let event = login_event(&new, now);
            tokio::spawn(async move {
                let hash = new.token_hash;
                let created = store
                    .create_session_audited(new, SessionLimit::Unlimited, event)
                    .await;
                (created, hash)
            })
        });
        let (mut created, mut not_found, mut conflicts) = (Vec::new(), 0, 0);
        for login in logins.collect::<Vec<_>>() {
            match login.await.expect("task") {
                (Ok(c), hash) => created.push((c.session, hash)),
                (Err(StoreError::NotFound), _) => not_found += 1,
                (Err(StoreError::Conflict(_)), _) => conflicts += 1,
                (Err(e), _) => panic!("unexpected {e}"),
            }
        }
        assert_eq!((created.len(), not_found, conflicts), (12, 6, 6));
        for (session, hash) in &created {
            let found = store.find_session_by_token(hash).await.expect("find");
            assert_eq!(found.map(|f| f.id), Some(session.id));
        }
        assert_eq!(logins_recorded(&store, Some(user.id)).await, 12);
        assert_eq!(logins_recorded(&store, Some(gone)).await, 0);
        let last = fresh_hash();
        store
            .create_session(session_of(user.id, last, now), SessionLimit::Unlimited)
            .await
            .expect("a login after them");
        assert!(
            store
                .find_session_by_token(&last)
                .await
                .expect("find")
                .is_some()
        );
    }

    /// Logins that arrive together are committed together (see `SessionWriter`), and
    /// each is still decided alone: under a `deny` limit of 5, exactly 5 of 24
    /// concurrent logins get a session, with its audit event, and the other 19 are
    /// refused without undoing anyone else's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_creates_share_commits_and_fail_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("group.db").display());
        let store = SqliteStore::open(&url).await.expect("open");
        let now = Timestamp::from_unix_millis(1_800_000_000_000);
        let user = store.create_user(ann(now)).await.expect("user");
        let session_with = |token_hash| session_of(user.id, token_hash, now);
        let logins = (0..24).map(|_| {
            let store = store.clone();
            let new = session_with(fresh_hash());
            let event = login_event(&new, now);
            tokio::spawn(async move {
                let hash = new.token_hash;
                let created = store
                    .create_session_audited(new, SessionLimit::Deny(5), event)
                    .await;
                (created, hash)
            })
        });
        let mut created = Vec::new();
        let mut refused = 0;
        for login in logins.collect::<Vec<_>>() {
            match login.await.expect("task") {
                (Ok(c), hash) => created.push((c.session, hash)),
                (Err(StoreError::LimitReached), _) => refused += 1,
                (Err(e), _) => panic!("unexpected {e}"),
            }
        }
        assert_eq!((created.len(), refused), (5, 19));
        let mut ids: Vec<i64> = created.iter().map(|(s, _)| s.browser_session_id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
        for (session, hash) in &created {
            let found = store.find_session_by_token(hash).await.expect("find");
            assert_eq!(found.map(|f| f.id), Some(session.id));
        }
        assert_eq!(logins_recorded(&store, Some(user.id)).await, 5);

        // A login that fails after its first write (a token hash already taken:
        // after the browser session id was counted) leaves nothing behind.
        let taken = created[0].1;
        let (dup, next) = tokio::join!(
            store.create_session(session_with(taken), SessionLimit::Unlimited),
            store.create_session(session_with(fresh_hash()), SessionLimit::Unlimited),
        );
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        assert_eq!(next.expect("created").session.browser_session_id, 6);

        // Refusals between successes, sent together so that they share commits: each
        // refusal undoes its own writes (its session, its event) and nobody else's.
        let audited = |new: NewSession| {
            let event = NewAuditEvent {
                at: now,
                kind: AuditKind::LoginSucceeded,
                actor: None,
                subject: None,
                session_id: Some(new.id),
                source: String::new(),
                dialect: Some(Dialect::Commvault),
                detail: String::new(),
            };
            store.create_session_audited(new, SessionLimit::Unlimited, event)
        };
        let mut nobody = session_with(fresh_hash());
        nobody.user_id = UserId(user.id.0 + 1000);
        let (first, second) = (session_with(fresh_hash()), session_with(fresh_hash()));
        let (first_hash, second_hash) = (first.token_hash, second.token_hash);
        let (a, dup, b, unknown) = tokio::join!(
            audited(first),
            audited(session_with(taken)),
            audited(second),
            audited(nobody),
        );
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
        let ids = [a, b].map(|c| c.expect("created").session.browser_session_id);
        assert_eq!(ids, [7, 8]);
        for hash in [first_hash, second_hash] {
            assert!(
                store
                    .find_session_by_token(&hash)
                    .await
                    .expect("find")
                    .is_some()
            );
        }
        assert_eq!(logins_recorded(&store, None).await, 5 + 2);
    }

    /// The writer's warm-up reads the token-hash index alone, not the table.
    #[tokio::test]
    async fn the_warm_up_reads_only_the_token_index() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("warm.db").display());
        let store = SqliteStore::open(&url).await.expect("open");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {WARM_UP}")))
            .fetch_all(&mut *store.reader.get().await)
            .await
            .expect("plan");
        let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
        let plan = plan.join(" / ");
        assert!(
            plan.contains("COVERING INDEX") && plan.contains("token_hash"),
            "{plan}"
        );
    }

    #[tokio::test]
    async fn every_listing_walks_an_index_from_its_cursor_without_sorting() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = SqliteStore::open(&url).await.expect("open");
        for (query, plan) in plans(&store).await {
            assert!(!plan.contains("TEMP B-TREE"), "{query}: sorts: {plan}");
            assert!(plan.contains("USING INDEX"), "{query}: no index: {plan}");
            if query.contains("after: Some") {
                // The walk starts at the cursor (a range on the index), not at the top.
                assert!(
                    plan.contains("SEARCH"),
                    "{query}: scans from the top: {plan}"
                );
            }
        }
    }
}
