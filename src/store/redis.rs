//! The Redis backend, for several sessiond instances over one Redis (single node or
//! primary; Redis Cluster is not supported: scripts touch keys they compute).
//!
//! Every key lives under a configurable prefix `P` (ARCHITECTURE.md has the layout).
//! A session is a hash; its indexes are sorted sets. Every change that touches more
//! than one key is one Lua script, which Redis runs atomically, so an index entry
//! and its session appear and disappear together: the sweep moves a session from
//! the live indexes to the ended index in the same step that records its end, and
//! the purge deletes the session with every index entry that names it. No key has a
//! TTL: nothing disappears behind the indexes' back (the failure of Spring Session's
//! Redis index, whose expired sessions left entries in the per-user sets).
//!
//! A write is acknowledged once it is in the Redis primary's memory. Durability
//! before the reply therefore depends on the server: `appendonly yes` with
//! `appendfsync always` (README.md); on open, sessiond logs a warning when the
//! server says otherwise.
//!
//! One multiplexed connection per instance ([`ConnectionManager`]): it reconnects
//! by itself after an outage; every command is bounded by the operation timeout.

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
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The Redis backend.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    scripts: std::sync::Arc<Scripts>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Shared by every script: `P` (the key prefix, always `ARGV[1]`) and the one
/// definition of ending a live session.
const LUA_PRELUDE: &str = r#"
local P = ARGV[1]
local function num(n) return string.format('%.0f', n) end
local function skey(id) return P .. 'session:' .. id end

-- Ends a session recorded live, never later than its deadline; a session whose
-- deadline has passed records its expiry (idle or absolute) instead of `reason`.
-- Moves it from the live indexes to the ended index. Returns its fields, or false.
local function end_live(id, at, reason)
  local k = skey(id)
  local f = redis.call('HMGET', k, 'ended_at', 'deadline_at', 'last_accessed_at',
                       'idle_timeout_ms', 'expires_at', 'user_id')
  if not f[2] or f[1] then return false end
  local deadline = tonumber(f[2])
  local ended_at, why = at, reason
  if deadline <= at then
    ended_at = deadline
    if tonumber(f[3]) + tonumber(f[4]) < tonumber(f[5]) then why = 'idle' else why = 'absolute' end
  end
  redis.call('HSET', k, 'ended_at', num(ended_at), 'end_reason', why)
  redis.call('ZREM', P .. 'sessions:live', id)
  redis.call('ZREM', P .. 'sessions:live-by-user:' .. f[6], id)
  redis.call('ZADD', P .. 'sessions:ended', num(ended_at), id)
  return redis.call('HGETALL', k)
end
"#;

// ARGV: P, name key, then the user's field pairs.
const CREATE_USER: &str = r#"
local nk = P .. 'user-name:' .. ARGV[2]
if redis.call('EXISTS', nk) == 1 then return {'conflict'} end
local id = redis.call('INCR', P .. 'users:next-id')
redis.call('SET', nk, id)
redis.call('HSET', P .. 'user:' .. id, 'id', id, 'next_browser_session_id', 1, unpack(ARGV, 3))
redis.call('ZADD', P .. 'users', id, id)
return {'ok', id}
"#;

// ARGV: P, user id, new name key, then the user's field pairs.
const UPDATE_USER: &str = r#"
local id = ARGV[2]
local uk = P .. 'user:' .. id
local old = redis.call('HGET', uk, 'name_key')
if not old then return {'not_found'} end
local nk = ARGV[3]
if old ~= nk then
  local owner = redis.call('GET', P .. 'user-name:' .. nk)
  if owner and owner ~= id then return {'conflict'} end
  redis.call('DEL', P .. 'user-name:' .. old)
  redis.call('SET', P .. 'user-name:' .. nk, id)
end
redis.call('HSET', uk, unpack(ARGV, 4))
return {'ok'}
"#;

const DELETE_USER: &str = r#"
local uk = P .. 'user:' .. ARGV[2]
local nk = redis.call('HGET', uk, 'name_key')
if not nk then return 0 end
redis.call('DEL', uk, P .. 'user-name:' .. nk)
redis.call('ZREM', P .. 'users', ARGV[2])
return 1
"#;

const FIND_USER_BY_NAME: &str = r#"
local id = redis.call('GET', P .. 'user-name:' .. ARGV[2])
if not id then return false end
return redis.call('HGETALL', P .. 'user:' .. id)
"#;

const LIST_USERS: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', P .. 'users', ARGV[2], '+inf', 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do out[#out + 1] = redis.call('HGETALL', P .. 'user:' .. id) end
return out
"#;

// ARGV: P, user id, now, max live (-1: unlimited), 'deny'|'evict', session id,
// token hash, created_at, deadline_at, host, then the session's field pairs.
const CREATE_SESSION: &str = r#"
local uid, now, max, policy = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local id, tok, created, deadline, host = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local uk = P .. 'user:' .. uid
if redis.call('EXISTS', uk) == 0 then return {'not_found'} end
if redis.call('EXISTS', skey(id)) == 1 or redis.call('EXISTS', P .. 'token:' .. tok) == 1 then
  return {'conflict'}
end
local evicted = {}
if max >= 0 then
  local live = redis.call('ZRANGEBYSCORE', P .. 'sessions:live-by-user:' .. uid, '(' .. ARGV[3], '+inf')
  if #live >= max then
    if policy == 'deny' or max == 0 then return {'limit'} end
    local rows = {}
    for _, sid in ipairs(live) do
      rows[#rows + 1] = {tonumber(redis.call('HGET', skey(sid), 'created_at')), sid}
    end
    table.sort(rows, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[2] < b[2]
    end)
    for i = 1, #rows - max + 1 do
      local s = end_live(rows[i][2], now, 'evicted')
      if s then evicted[#evicted + 1] = s end
    end
  end
end
local bsid = redis.call('HINCRBY', uk, 'next_browser_session_id', 1) - 1
redis.call('HSET', skey(id), 'browser_session_id', bsid, unpack(ARGV, 11))
redis.call('SET', P .. 'token:' .. tok, id)
redis.call('ZADD', P .. 'sessions:by-created', created, id)
redis.call('ZADD', P .. 'sessions:by-user:' .. uid, created, id)
redis.call('ZADD', P .. 'sessions:by-host:' .. host, created, id)
redis.call('ZADD', P .. 'sessions:live', deadline, id)
redis.call('ZADD', P .. 'sessions:live-by-user:' .. uid, deadline, id)
return {'ok', bsid, evicted}
"#;

const FIND_SESSION_BY_TOKEN: &str = r#"
local id = redis.call('GET', P .. 'token:' .. ARGV[2])
if not id then return false end
return redis.call('HGETALL', skey(id))
"#;

// ARGV: P, then (session id, instant) pairs.
const TOUCH: &str = r#"
for i = 2, #ARGV, 2 do
  local id, at = ARGV[i], tonumber(ARGV[i + 1])
  local k = skey(id)
  local f = redis.call('HMGET', k, 'ended_at', 'last_accessed_at', 'expires_at',
                       'idle_timeout_ms', 'user_id')
  if f[2] and not f[1] and tonumber(f[2]) < at and tonumber(f[3]) > at then
    local deadline = num(math.min(at + tonumber(f[4]), tonumber(f[3])))
    redis.call('HSET', k, 'last_accessed_at', ARGV[i + 1], 'deadline_at', deadline)
    redis.call('ZADD', P .. 'sessions:live', deadline, id)
    redis.call('ZADD', P .. 'sessions:live-by-user:' .. f[5], deadline, id)
  end
end
return 0
"#;

const END_SESSION: &str = r#"
return end_live(ARGV[2], tonumber(ARGV[3]), ARGV[4])
"#;

// ARGV: P, user id, at, reason, session id to keep ('' for none).
const END_USER_SESSIONS: &str = r#"
local ids = redis.call('ZRANGE', P .. 'sessions:live-by-user:' .. ARGV[2], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  if id ~= ARGV[5] then
    local s = end_live(id, tonumber(ARGV[3]), ARGV[4])
    if s then out[#out + 1] = s end
  end
end
return out
"#;

// ARGV: P, session id, old hash, new hash.
const ROTATE_TOKEN: &str = r#"
local k = skey(ARGV[2])
local f = redis.call('HMGET', k, 'token_hash', 'ended_at')
if f[1] ~= ARGV[3] or f[2] then return 0 end
if redis.call('EXISTS', P .. 'token:' .. ARGV[4]) == 1 then return -1 end
redis.call('DEL', P .. 'token:' .. ARGV[3])
redis.call('SET', P .. 'token:' .. ARGV[4], ARGV[2])
redis.call('HSET', k, 'token_hash', ARGV[4])
return 1
"#;

// ARGV: P, index key (after P), state, now, host filter, '1' if filtering by host,
// max created_at ('+inf' or a number), cursor id ('' for none), limit.
// Walks the index newest first (score desc, then member desc: the id order).
const LIST_SESSIONS: &str = r#"
local idx, state, now = P .. ARGV[2], ARGV[3], tonumber(ARGV[4])
local host, by_host = ARGV[5], ARGV[6] == '1'
local max, after, limit = ARGV[7], ARGV[8], tonumber(ARGV[9])
local cursor = tonumber(max)
local out, offset, chunk = {}, 0, 256
while #out < limit do
  local page = redis.call('ZREVRANGEBYSCORE', idx, max, '-inf', 'WITHSCORES', 'LIMIT', offset, chunk)
  if #page == 0 then break end
  for i = 1, #page, 2 do
    local id = page[i]
    if not (after ~= '' and tonumber(page[i + 1]) == cursor and id >= after) then
      local k = skey(id)
      local f = redis.call('HMGET', k, 'ended_at', 'deadline_at', 'host')
      if f[2] then
        local live = (not f[1]) and tonumber(f[2]) > now
        local ok = state == 'any' or (state == 'live' and live) or (state == 'ended' and not live)
        if ok and (not by_host or f[3] == host) then
          out[#out + 1] = redis.call('HGETALL', k)
          if #out >= limit then break end
        end
      end
    end
  end
  offset = offset + chunk
end
return out
"#;

// ARGV: P, now, limit.
const END_EXPIRED: &str = r#"
local now = tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', P .. 'sessions:live', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  local s = end_live(id, now, 'idle')
  if s then out[#out + 1] = s
  elseif redis.call('EXISTS', skey(id)) == 0 then redis.call('ZREM', P .. 'sessions:live', id) end
end
return out
"#;

// ARGV: P, before, limit.
const PURGE_SESSIONS: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', P .. 'sessions:ended', '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
  local k = skey(id)
  local f = redis.call('HMGET', k, 'user_id', 'token_hash', 'host')
  if f[1] then
    local tk = P .. 'token:' .. f[2]
    if redis.call('GET', tk) == id then redis.call('DEL', tk) end
    redis.call('ZREM', P .. 'sessions:by-user:' .. f[1], id)
    redis.call('ZREM', P .. 'sessions:live-by-user:' .. f[1], id)
    redis.call('ZREM', P .. 'sessions:by-host:' .. f[3], id)
    redis.call('DEL', k)
  end
  redis.call('ZREM', P .. 'sessions:by-created', id)
  redis.call('ZREM', P .. 'sessions:live', id)
  redis.call('ZREM', P .. 'sessions:ended', id)
end
return #ids
"#;

// ARGV: P, at, actor id or '', subject id or '', then the event's field pairs.
const APPEND_AUDIT: &str = r#"
local id = redis.call('INCR', P .. 'audit:next-id')
redis.call('HSET', P .. 'audit:' .. id, 'id', id, unpack(ARGV, 5))
redis.call('ZADD', P .. 'audit:by-id', id, id)
redis.call('ZADD', P .. 'audit:by-time', ARGV[2], id)
if ARGV[3] ~= '' then redis.call('ZADD', P .. 'audit:by-user:' .. ARGV[3], id, id) end
if ARGV[4] ~= '' and ARGV[4] ~= ARGV[3] then
  redis.call('ZADD', P .. 'audit:by-user:' .. ARGV[4], id, id)
end
return id
"#;

// ARGV: P, index key (after P), max id ('+inf' or '(N'), since or '', until or '',
// limit, then the kinds wanted (none: all).
const QUERY_AUDIT: &str = r#"
local idx, max = P .. ARGV[2], ARGV[3]
local since, till, limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local kinds, any_kind = {}, #ARGV < 7
for i = 7, #ARGV do kinds[ARGV[i]] = true end
local out, offset, chunk = {}, 0, 256
while #out < limit do
  local ids = redis.call('ZREVRANGEBYSCORE', idx, max, '-inf', 'LIMIT', offset, chunk)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local k = P .. 'audit:' .. id
    local f = redis.call('HMGET', k, 'at', 'kind')
    if f[1] then
      local at = tonumber(f[1])
      if (any_kind or kinds[f[2]]) and (not since or at >= since) and (not till or at < till) then
        out[#out + 1] = redis.call('HGETALL', k)
        if #out >= limit then break end
      end
    end
  end
  offset = offset + chunk
end
return out
"#;

// ARGV: P, before, limit.
const PURGE_AUDIT: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', P .. 'audit:by-time', '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
  local k = P .. 'audit:' .. id
  local f = redis.call('HMGET', k, 'actor_id', 'subject_id')
  if f[1] then redis.call('ZREM', P .. 'audit:by-user:' .. f[1], id) end
  if f[2] then redis.call('ZREM', P .. 'audit:by-user:' .. f[2], id) end
  redis.call('DEL', k)
  redis.call('ZREM', P .. 'audit:by-id', id)
  redis.call('ZREM', P .. 'audit:by-time', id)
end
return #ids
"#;

// ARGV: P, key, now, window (ms).
const RECORD_FAILURE: &str = r#"
local k = P .. 'login-failures:' .. ARGV[2]
local now, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local f = redis.call('HMGET', k, 'failures', 'window_start')
if not f[1] then
  redis.call('HSET', k, 'failures', 1, 'window_start', ARGV[3], 'lockouts', 0)
elseif tonumber(f[2]) <= now - window then
  redis.call('HSET', k, 'failures', 1, 'window_start', ARGV[3])
else
  redis.call('HINCRBY', k, 'failures', 1)
end
return redis.call('HGETALL', k)
"#;

// ARGV: P, key, until.
const LOCK_LOGIN: &str = r#"
local k = P .. 'login-failures:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then
  redis.call('HSET', k, 'lockouts', 0)
end
redis.call('HSET', k, 'failures', 0, 'window_start', ARGV[3], 'locked_until', ARGV[3])
redis.call('HINCRBY', k, 'lockouts', 1)
return 1
"#;

struct Scripts {
    create_user: Script,
    update_user: Script,
    delete_user: Script,
    find_user_by_name: Script,
    list_users: Script,
    create_session: Script,
    find_session_by_token: Script,
    touch: Script,
    end_session: Script,
    end_user_sessions: Script,
    rotate_token: Script,
    list_sessions: Script,
    end_expired: Script,
    purge_sessions: Script,
    append_audit: Script,
    query_audit: Script,
    purge_audit: Script,
    record_failure: Script,
    lock_login: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{LUA_PRELUDE}\n{body}"));
        Scripts {
            create_user: s(CREATE_USER),
            update_user: s(UPDATE_USER),
            delete_user: s(DELETE_USER),
            find_user_by_name: s(FIND_USER_BY_NAME),
            list_users: s(LIST_USERS),
            create_session: s(CREATE_SESSION),
            find_session_by_token: s(FIND_SESSION_BY_TOKEN),
            touch: s(TOUCH),
            end_session: s(END_SESSION),
            end_user_sessions: s(END_USER_SESSIONS),
            rotate_token: s(ROTATE_TOKEN),
            list_sessions: s(LIST_SESSIONS),
            end_expired: s(END_EXPIRED),
            purge_sessions: s(PURGE_SESSIONS),
            append_audit: s(APPEND_AUDIT),
            query_audit: s(QUERY_AUDIT),
            purge_audit: s(PURGE_AUDIT),
            record_failure: s(RECORD_FAILURE),
            lock_login: s(LOCK_LOGIN),
        }
    }
}

/// Batch size for purges that loop until done.
const PURGE_BATCH: usize = 1000;

impl RedisStore {
    /// Connects to the Redis a `redis://` URL names.
    pub async fn open(url: &str, options: &StoreOptions) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.operation_timeout))
            // Fail a request at once when Redis is unreachable; the next request
            // starts a fresh connection attempt, so the instance recovers by itself.
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        let store = RedisStore {
            conn,
            prefix: options.key_prefix.clone(),
            scripts: std::sync::Arc::new(Scripts::new()),
        };
        store.warn_unless_durable().await;
        Ok(store)
    }

    /// Says in the log when the server acknowledges writes before they are on disk.
    async fn warn_unless_durable(&self) {
        let mut conn = self.conn.clone();
        let config: redis::RedisResult<HashMap<String, String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("append*")
            .query_async(&mut conn)
            .await;
        match config {
            Ok(c)
                if c.get("appendonly").map(String::as_str) == Some("yes")
                    && c.get("appendfsync").map(String::as_str) == Some("always") => {}
            Ok(c) => tracing::warn!(
                appendonly = c.get("appendonly").map_or("?", String::as_str),
                appendfsync = c.get("appendfsync").map_or("?", String::as_str),
                "Redis acknowledges writes before they are on disk: logins and logouts may be \
                 lost if it stops; set appendonly yes and appendfsync always for durability"
            ),
            Err(e) => tracing::info!(error = %e, "could not read the Redis persistence settings"),
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{}", self.prefix, rest)
    }

    fn invocation<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix);
        inv
    }

    async fn run(&self, inv: &redis::ScriptInvocation<'_>) -> StoreResult<Value> {
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(backend)
    }

    async fn hgetall(&self, key: String) -> StoreResult<Value> {
        let mut conn = self.conn.clone();
        redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(backend)
    }
}

fn backend(e: redis::RedisError) -> StoreError {
    StoreError::backend(e)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::backend(anyhow::anyhow!("corrupt Redis data: {what}"))
}

fn id_text(id: SessionId) -> String {
    id.0.hyphenated().to_string()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other).and_then(|s| s.parse().ok()),
    }
}

fn items(v: Value) -> StoreResult<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        _ => Err(corrupt("expected an array")),
    }
}

/// A script's `{status, ...}` reply.
fn status(v: Value) -> StoreResult<(String, Vec<Value>)> {
    let mut a = items(v)?;
    if a.is_empty() {
        return Err(corrupt("empty script reply"));
    }
    let rest = a.split_off(1);
    let s = text(&a[0]).ok_or_else(|| corrupt("script status"))?;
    Ok((s, rest))
}

/// The fields of one hash (an `HGETALL` reply); `None` when it does not exist.
struct Fields(HashMap<String, String>);

impl Fields {
    fn parse(v: Value) -> StoreResult<Option<Fields>> {
        let flat = match v {
            Value::Nil => return Ok(None),
            Value::Map(pairs) => pairs
                .into_iter()
                .flat_map(|(k, v)| [k, v])
                .collect::<Vec<_>>(),
            other => items(other)?,
        };
        if flat.is_empty() {
            return Ok(None);
        }
        let mut map = HashMap::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            let [k, v] = pair else {
                return Err(corrupt("odd hash reply"));
            };
            let k = text(k).ok_or_else(|| corrupt("hash field name"))?;
            let v = text(v).ok_or_else(|| corrupt("hash field value"))?;
            map.insert(k, v);
        }
        Ok(Some(Fields(map)))
    }

    fn opt(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn str(&self, name: &str) -> StoreResult<String> {
        self.opt(name)
            .map(str::to_string)
            .ok_or_else(|| corrupt(name))
    }

    fn int_opt(&self, name: &str) -> StoreResult<Option<i64>> {
        self.opt(name)
            .map(|s| {
                s.parse::<i64>()
                    // Lua writes whole numbers; one beyond i64 (a saturated instant) clamps.
                    .or_else(|_| s.parse::<f64>().map(|f| f as i64))
                    .map_err(|_| corrupt(name))
            })
            .transpose()
    }

    fn int(&self, name: &str) -> StoreResult<i64> {
        self.int_opt(name)?.ok_or_else(|| corrupt(name))
    }

    fn session(&self) -> StoreResult<Session> {
        let end = match (self.int_opt("ended_at")?, self.opt("end_reason")) {
            (Some(at), Some(r)) => Some(SessionEnd {
                at: Timestamp::from_unix_millis(at),
                reason: EndReason::from_key(r).ok_or_else(|| corrupt("end_reason"))?,
            }),
            (None, _) => None,
            (Some(_), None) => return Err(corrupt("ended_at without end_reason")),
        };
        let hash = hex::decode(self.str("token_hash")?).map_err(|_| corrupt("token_hash"))?;
        Ok(Session {
            id: SessionId::parse(&self.str("id")?).ok_or_else(|| corrupt("session id"))?,
            token_hash: TokenHash::from_slice(&hash).ok_or_else(|| corrupt("token_hash"))?,
            user_id: UserId(self.int("user_id")?),
            user_name: self.str("user_name")?,
            client: ClientInfo {
                host: self.str("host")?,
                user_agent: self.str("user_agent")?,
                device_id: self.str("device_id")?,
                description: self.str("description")?,
            },
            console_type: ConsoleType::from_code(
                i32::try_from(self.int("console_type")?).map_err(|_| corrupt("console_type"))?,
            ),
            dialect: Dialect::from_key(&self.str("dialect")?).ok_or_else(|| corrupt("dialect"))?,
            browser_session_id: self.int("browser_session_id")?,
            created_at: Timestamp::from_unix_millis(self.int("created_at")?),
            last_accessed_at: Timestamp::from_unix_millis(self.int("last_accessed_at")?),
            idle_timeout: Duration::from_millis(
                u64::try_from(self.int("idle_timeout_ms")?).unwrap_or(0),
            ),
            expires_at: Timestamp::from_unix_millis(self.int("expires_at")?),
            end,
        })
    }

    fn user(&self) -> StoreResult<User> {
        Ok(User {
            id: UserId(self.int("id")?),
            name: self.str("name")?,
            guid: self.str("guid")?,
            full_name: self.str("full_name")?,
            email: self.str("email")?,
            description: self.str("description")?,
            enabled: self.int("enabled")? != 0,
            roles: self
                .str("roles")?
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect(),
            password_hash: PasswordHash(self.str("password_hash")?),
            created_at: Timestamp::from_unix_millis(self.int("created_at")?),
            updated_at: Timestamp::from_unix_millis(self.int("updated_at")?),
        })
    }

    fn audit(&self) -> StoreResult<AuditEvent> {
        let user_ref = |id: &str, name: &str| -> StoreResult<Option<UserRef>> {
            Ok(self.int_opt(id)?.map(|id| UserRef {
                id: UserId(id),
                name: self.opt(name).unwrap_or_default().to_string(),
            }))
        };
        Ok(AuditEvent {
            id: self.int("id")?,
            event: NewAuditEvent {
                at: Timestamp::from_unix_millis(self.int("at")?),
                kind: AuditKind::from_key(&self.str("kind")?)
                    .ok_or_else(|| corrupt("audit kind"))?,
                actor: user_ref("actor_id", "actor_name")?,
                subject: user_ref("subject_id", "subject_name")?,
                session_id: self.opt("session_id").and_then(SessionId::parse),
                source: self.str("source")?,
                dialect: self.opt("dialect").and_then(Dialect::from_key),
                detail: self.str("detail")?,
            },
        })
    }

    fn failure(&self) -> StoreResult<FailureRecord> {
        let small =
            |name: &str| -> StoreResult<u32> { Ok(u32::try_from(self.int(name)?).unwrap_or(0)) };
        Ok(FailureRecord {
            failures: small("failures")?,
            window_start: Timestamp::from_unix_millis(self.int("window_start")?),
            locked_until: self
                .int_opt("locked_until")?
                .map(Timestamp::from_unix_millis),
            lockouts: small("lockouts")?,
        })
    }
}

fn one_session(v: Value) -> StoreResult<Option<Session>> {
    Fields::parse(v)?.map(|f| f.session()).transpose()
}

fn many_sessions(v: Value) -> StoreResult<Vec<Session>> {
    items(v)?
        .into_iter()
        .filter_map(|s| Fields::parse(s).transpose())
        .map(|f| f?.session())
        .collect()
}

/// The fields of a user a create or an update writes (never `id` or `created_at`
/// on update; the caller adds `created_at` on create).
fn user_fields(name: &str, u: UserWrite<'_>) -> Vec<(&'static str, String)> {
    vec![
        ("name_key", name.to_lowercase()),
        ("name", name.to_string()),
        ("guid", u.guid.to_string()),
        ("full_name", u.full_name.to_string()),
        ("email", u.email.to_string()),
        ("description", u.description.to_string()),
        ("enabled", if u.enabled { "1" } else { "0" }.to_string()),
        ("roles", u.roles.join(",")),
        ("password_hash", u.password_hash.to_string()),
        ("updated_at", u.updated_at.unix_millis().to_string()),
    ]
}

struct UserWrite<'a> {
    guid: &'a str,
    full_name: &'a str,
    email: &'a str,
    description: &'a str,
    enabled: bool,
    roles: &'a [String],
    password_hash: &'a str,
    updated_at: Timestamp,
}

fn push_pairs(inv: &mut redis::ScriptInvocation<'_>, pairs: &[(&str, String)]) {
    for (k, v) in pairs {
        inv.arg(*k).arg(v);
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn create_user(&self, u: NewUser) -> StoreResult<User> {
        let mut inv = self.invocation(&self.scripts.create_user);
        let fields = user_fields(
            &u.name,
            UserWrite {
                guid: &u.guid,
                full_name: &u.full_name,
                email: &u.email,
                description: &u.description,
                enabled: u.enabled,
                roles: &u.roles,
                password_hash: &u.password_hash.0,
                updated_at: u.created_at,
            },
        );
        inv.arg(&fields[0].1);
        push_pairs(&mut inv, &fields);
        inv.arg("created_at").arg(u.created_at.unix_millis());
        let (st, rest) = status(self.run(&inv).await?)?;
        match st.as_str() {
            "ok" => {
                let id = rest
                    .first()
                    .and_then(int)
                    .ok_or_else(|| corrupt("user id"))?;
                Ok(User {
                    id: UserId(id),
                    name: u.name,
                    guid: u.guid,
                    full_name: u.full_name,
                    email: u.email,
                    description: u.description,
                    enabled: u.enabled,
                    roles: u.roles,
                    password_hash: u.password_hash,
                    created_at: u.created_at,
                    updated_at: u.created_at,
                })
            }
            "conflict" => Err(StoreError::Conflict(format!(
                "user name {:?} is taken",
                u.name
            ))),
            other => Err(corrupt(other)),
        }
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        let v = self.hgetall(self.key(&format!("user:{id}"))).await?;
        Fields::parse(v)?.map(|f| f.user()).transpose()
    }

    async fn find_user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        let mut inv = self.invocation(&self.scripts.find_user_by_name);
        inv.arg(name.to_lowercase());
        Fields::parse(self.run(&inv).await?)?
            .map(|f| f.user())
            .transpose()
    }

    async fn list_users(&self, after: Option<UserId>, limit: usize) -> StoreResult<Vec<User>> {
        let mut inv = self.invocation(&self.scripts.list_users);
        inv.arg(after.map_or("-inf".to_string(), |u| format!("({}", u.0)))
            .arg(limit);
        items(self.run(&inv).await?)?
            .into_iter()
            .filter_map(|u| Fields::parse(u).transpose())
            .map(|f| f?.user())
            .collect()
    }

    async fn update_user(&self, u: &User) -> StoreResult<()> {
        let mut inv = self.invocation(&self.scripts.update_user);
        inv.arg(u.id.0);
        let fields = user_fields(
            &u.name,
            UserWrite {
                guid: &u.guid,
                full_name: &u.full_name,
                email: &u.email,
                description: &u.description,
                enabled: u.enabled,
                roles: &u.roles,
                password_hash: &u.password_hash.0,
                updated_at: u.updated_at,
            },
        );
        inv.arg(&fields[0].1);
        push_pairs(&mut inv, &fields);
        let (st, _) = status(self.run(&inv).await?)?;
        match st.as_str() {
            "ok" => Ok(()),
            "not_found" => Err(StoreError::NotFound),
            "conflict" => Err(StoreError::Conflict(format!(
                "user name {:?} is taken",
                u.name
            ))),
            other => Err(corrupt(other)),
        }
    }

    async fn delete_user(&self, id: UserId) -> StoreResult<bool> {
        let mut inv = self.invocation(&self.scripts.delete_user);
        inv.arg(id.0);
        Ok(int(&self.run(&inv).await?) == Some(1))
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let mut conn = self.conn.clone();
        let n: u64 = redis::cmd("ZCARD")
            .arg(self.key("users"))
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(n)
    }

    async fn create_session(
        &self,
        new: NewSession,
        limit: SessionLimit,
    ) -> StoreResult<CreatedSession> {
        let now = new.created_at.unix_millis();
        let idle_ms = duration_millis(new.idle_timeout);
        let deadline = now
            .saturating_add(idle_ms)
            .min(new.expires_at.unix_millis());
        let (max, policy) = match limit {
            SessionLimit::Unlimited => (-1, "deny"),
            SessionLimit::Deny(n) => (i64::from(n), "deny"),
            SessionLimit::EvictOldest(n) => (i64::from(n), "evict"),
        };
        let id = id_text(new.id);
        let token = new.token_hash.to_hex();
        let mut inv = self.invocation(&self.scripts.create_session);
        inv.arg(new.user_id.0)
            .arg(now)
            .arg(max)
            .arg(policy)
            .arg(&id)
            .arg(&token)
            .arg(now)
            .arg(deadline)
            .arg(&new.client.host);
        push_pairs(
            &mut inv,
            &[
                ("id", id.clone()),
                ("token_hash", token.clone()),
                ("user_id", new.user_id.0.to_string()),
                ("user_name", new.user_name.clone()),
                ("host", new.client.host.clone()),
                ("user_agent", new.client.user_agent.clone()),
                ("device_id", new.client.device_id.clone()),
                ("description", new.client.description.clone()),
                ("console_type", new.console_type.code().to_string()),
                ("dialect", new.dialect.key().to_string()),
                ("created_at", now.to_string()),
                ("last_accessed_at", now.to_string()),
                ("idle_timeout_ms", idle_ms.to_string()),
                ("expires_at", new.expires_at.unix_millis().to_string()),
                ("deadline_at", deadline.to_string()),
            ],
        );
        let (st, mut rest) = status(self.run(&inv).await?)?;
        match st.as_str() {
            "ok" if rest.len() == 2 => {
                let evicted = many_sessions(rest.pop().unwrap_or_default())?;
                let bsid = int(&rest[0]).ok_or_else(|| corrupt("browser session id"))?;
                Ok(CreatedSession {
                    session: new.into_session(bsid),
                    evicted,
                })
            }
            "not_found" => Err(StoreError::NotFound),
            "limit" => Err(StoreError::LimitReached),
            "conflict" => Err(StoreError::Conflict("session id or token taken".into())),
            other => Err(corrupt(other)),
        }
    }

    async fn find_session_by_token(&self, hash: &TokenHash) -> StoreResult<Option<Session>> {
        let mut inv = self.invocation(&self.scripts.find_session_by_token);
        inv.arg(hash.to_hex());
        one_session(self.run(&inv).await?)
    }

    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        one_session(
            self.hgetall(self.key(&format!("session:{}", id_text(id))))
                .await?,
        )
    }

    async fn touch_sessions(&self, touches: &[(SessionId, Timestamp)]) -> StoreResult<()> {
        if touches.is_empty() {
            return Ok(());
        }
        let mut inv = self.invocation(&self.scripts.touch);
        for (id, at) in touches {
            inv.arg(id_text(*id)).arg(at.unix_millis());
        }
        self.run(&inv).await?;
        Ok(())
    }

    async fn end_session(&self, id: SessionId, end: SessionEnd) -> StoreResult<Option<Session>> {
        let mut inv = self.invocation(&self.scripts.end_session);
        inv.arg(id_text(id))
            .arg(end.at.unix_millis())
            .arg(end.reason.key());
        one_session(self.run(&inv).await?)
    }

    async fn end_user_sessions(
        &self,
        user: UserId,
        end: SessionEnd,
        except: Option<SessionId>,
    ) -> StoreResult<Vec<Session>> {
        let mut inv = self.invocation(&self.scripts.end_user_sessions);
        inv.arg(user.0)
            .arg(end.at.unix_millis())
            .arg(end.reason.key())
            .arg(except.map(id_text).unwrap_or_default());
        many_sessions(self.run(&inv).await?)
    }

    async fn rotate_session_token(
        &self,
        id: SessionId,
        old: &TokenHash,
        new: &TokenHash,
    ) -> StoreResult<bool> {
        let mut inv = self.invocation(&self.scripts.rotate_token);
        inv.arg(id_text(id)).arg(old.to_hex()).arg(new.to_hex());
        match int(&self.run(&inv).await?) {
            Some(1) => Ok(true),
            Some(-1) => Err(StoreError::Conflict("token taken".into())),
            _ => Ok(false),
        }
    }

    async fn list_sessions(&self, q: &SessionQuery) -> StoreResult<Vec<Session>> {
        // The narrowest index: the user's, else the host's, else all sessions.
        let (index, host_filter) = match (q.user, &q.host) {
            (Some(u), host) => (format!("sessions:by-user:{u}"), host.as_deref()),
            (None, Some(h)) => (format!("sessions:by-host:{h}"), None),
            (None, None) => ("sessions:by-created".to_string(), None),
        };
        let state = match q.state {
            StateFilter::Any => "any",
            StateFilter::Live => "live",
            StateFilter::Ended => "ended",
        };
        let mut inv = self.invocation(&self.scripts.list_sessions);
        inv.arg(index)
            .arg(state)
            .arg(q.now.unix_millis())
            .arg(host_filter.unwrap_or_default())
            .arg(if host_filter.is_some() { "1" } else { "0" })
            .arg(q.after.map_or("+inf".to_string(), |c| {
                c.created_at.unix_millis().to_string()
            }))
            .arg(q.after.map(|c| id_text(c.id)).unwrap_or_default())
            .arg(q.limit);
        many_sessions(self.run(&inv).await?)
    }

    async fn end_expired_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Session>> {
        let mut inv = self.invocation(&self.scripts.end_expired);
        inv.arg(now.unix_millis()).arg(limit);
        many_sessions(self.run(&inv).await?)
    }

    async fn purge_ended_sessions(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        let mut inv = self.invocation(&self.scripts.purge_sessions);
        inv.arg(before.unix_millis()).arg(limit);
        let n = int(&self.run(&inv).await?).ok_or_else(|| corrupt("purge count"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn count_live_sessions(&self, user: Option<UserId>, now: Timestamp) -> StoreResult<u64> {
        let index = match user {
            Some(u) => self.key(&format!("sessions:live-by-user:{u}")),
            None => self.key("sessions:live"),
        };
        let mut conn = self.conn.clone();
        let n: u64 = redis::cmd("ZCOUNT")
            .arg(index)
            .arg(format!("({}", now.unix_millis()))
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(n)
    }

    async fn append_audit(&self, e: NewAuditEvent) -> StoreResult<()> {
        let mut inv = self.invocation(&self.scripts.append_audit);
        inv.arg(e.at.unix_millis())
            .arg(
                e.actor
                    .as_ref()
                    .map(|u| u.id.0.to_string())
                    .unwrap_or_default(),
            )
            .arg(
                e.subject
                    .as_ref()
                    .map(|u| u.id.0.to_string())
                    .unwrap_or_default(),
            );
        let mut pairs = vec![
            ("at", e.at.unix_millis().to_string()),
            ("kind", e.kind.key().to_string()),
            ("source", e.source),
            ("detail", e.detail),
        ];
        if let Some(a) = e.actor {
            pairs.push(("actor_id", a.id.0.to_string()));
            pairs.push(("actor_name", a.name));
        }
        if let Some(s) = e.subject {
            pairs.push(("subject_id", s.id.0.to_string()));
            pairs.push(("subject_name", s.name));
        }
        if let Some(id) = e.session_id {
            pairs.push(("session_id", id_text(id)));
        }
        if let Some(d) = e.dialect {
            pairs.push(("dialect", d.key().to_string()));
        }
        push_pairs(&mut inv, &pairs);
        self.run(&inv).await?;
        Ok(())
    }

    async fn query_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let mut inv = self.invocation(&self.scripts.query_audit);
        inv.arg(match q.user {
            Some(u) => format!("audit:by-user:{u}"),
            None => "audit:by-id".to_string(),
        })
        .arg(q.before_id.map_or("+inf".to_string(), |b| format!("({b}")))
        .arg(
            q.since
                .map(|t| t.unix_millis().to_string())
                .unwrap_or_default(),
        )
        .arg(
            q.until
                .map(|t| t.unix_millis().to_string())
                .unwrap_or_default(),
        )
        .arg(q.limit);
        for k in &q.kinds {
            inv.arg(k.key());
        }
        items(self.run(&inv).await?)?
            .into_iter()
            .filter_map(|e| Fields::parse(e).transpose())
            .map(|f| f?.audit())
            .collect()
    }

    async fn purge_audit(&self, before: Timestamp) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let mut inv = self.invocation(&self.scripts.purge_audit);
            inv.arg(before.unix_millis()).arg(PURGE_BATCH);
            let n = int(&self.run(&inv).await?).ok_or_else(|| corrupt("purge count"))?;
            let n = u64::try_from(n).unwrap_or(0);
            total += n;
            if n < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    async fn login_failures(&self, key: &str) -> StoreResult<Option<FailureRecord>> {
        let v = self
            .hgetall(self.key(&format!("login-failures:{key}")))
            .await?;
        Fields::parse(v)?.map(|f| f.failure()).transpose()
    }

    async fn record_login_failure(
        &self,
        key: &str,
        now: Timestamp,
        window: Duration,
    ) -> StoreResult<FailureRecord> {
        let mut inv = self.invocation(&self.scripts.record_failure);
        inv.arg(key)
            .arg(now.unix_millis())
            .arg(duration_millis(window));
        Fields::parse(self.run(&inv).await?)?
            .ok_or_else(|| corrupt("failure record"))?
            .failure()
    }

    async fn lock_login(&self, key: &str, until: Timestamp) -> StoreResult<()> {
        let mut inv = self.invocation(&self.scripts.lock_login);
        inv.arg(key).arg(until.unix_millis());
        self.run(&inv).await?;
        Ok(())
    }

    async fn clear_login_failures(&self, key: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(self.key(&format!("login-failures:{key}")))
            .query_async::<()>(&mut conn)
            .await
            .map_err(backend)
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(backend)
    }
}
