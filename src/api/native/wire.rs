//! The native API's wire types (JSON, described in the OpenAPI document) and their
//! conversions from the domain. Request bodies reject unknown fields.

use super::error::NativeError;
use crate::api::WireTime;
use crate::api::json_text::JsonText;
use crate::domain;
use crate::service::SessionView;
use crate::store::SessionCursor;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Page size when a list request names none.
pub const DEFAULT_PAGE: usize = 100;

// ---- requests ----

/// `POST /v1/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    /// The password in clear (the connection should be TLS).
    pub password: String,
    /// Idle timeout to ask for, in minutes (capped by `session.max_idle_timeout`).
    #[serde(default)]
    pub idle_timeout_minutes: Option<u64>,
}

/// `POST /v1/sessions/revoke`: exactly one of the two.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// End every live session of this user.
    #[serde(default)]
    pub user_id: Option<i64>,
    /// End every live session of the caller's user except the caller's own.
    #[serde(default)]
    pub all_except_current: bool,
}

/// `POST /v1/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub password: String,
    /// Built-in role names (see `GET /v1/roles`); none: a plain user.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// `PATCH /v1/users/{id}`: fields left out stay as they are. Disabling a user ends
/// their sessions.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    pub full_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

/// `PUT /v1/users/{id}/password`. Changing one's own password needs the current one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub password: String,
    #[serde(default)]
    pub current_password: Option<String>,
}

/// Session state filter of `GET /v1/sessions`.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StateParam {
    Live,
    Ended,
    All,
}

/// `GET /v1/sessions` parameters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SessionListParams {
    /// Only this user's sessions (needed without user management: your own id).
    pub user: Option<i64>,
    /// `live` (default), `ended` or `all`.
    pub state: Option<StateParam>,
    /// Only sessions from this client host (exact match).
    pub host: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /v1/users` parameters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /v1/audit` parameters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Events by or about this user id.
    pub user: Option<i64>,
    /// Event kinds, comma-separated (e.g. `login.failed,login.locked`).
    pub kind: Option<String>,
    /// Events at or after this instant (RFC 3339).
    pub since: Option<String>,
    /// Events before this instant (RFC 3339).
    pub until: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

// ---- responses ----

/// `POST /v1/login` result: the token is shown here once.
#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// 64 hex digits; send as `Authorization: Bearer <token>`.
    pub token: String,
    pub session: Session,
}

/// `GET /v1/session`: the caller's session and user.
#[derive(Serialize, ToSchema)]
pub struct CurrentSession {
    pub session: Session,
    pub user: User,
}

impl CurrentSession {
    /// `GET /v1/session`'s answer (the native API's validation call) written by hand
    /// straight from the caller's session (as last used at `last_accessed_at`, in
    /// `state`) and user: byte for byte the `Serialize` form of the
    /// `CurrentSession` that [`Session::from_view`] and `User::from` make of them
    /// (tested), without copying their strings first (see `api::json_text`).
    pub fn write_json(
        out: &mut JsonText,
        session: &domain::Session,
        last_accessed_at: domain::Timestamp,
        state: domain::SessionState,
        user: &domain::User,
    ) {
        out.raw(r#"{"session":"#);
        write_session(out, session, last_accessed_at, state);
        out.raw(r#","user":"#);
        write_user(out, user);
        out.raw("}");
    }
}

/// A session's state on the wire, and its end if it has ended.
fn state_and_end(state: domain::SessionState) -> (SessionState, Option<domain::SessionEnd>) {
    match state {
        domain::SessionState::Live => (SessionState::Live, None),
        domain::SessionState::Ended(e) => (SessionState::Ended, Some(e)),
    }
}

/// [`Session::from_view`]'s fields for the session making the request.
fn write_session(
    out: &mut JsonText,
    s: &domain::Session,
    last_accessed_at: domain::Timestamp,
    state: domain::SessionState,
) {
    let (wire_state, end) = state_and_end(state);
    out.raw(r#"{"id":"#)
        .guid(crate::api::Guid(s.id))
        .raw(r#","user":{"id":"#)
        .int(s.user_id.0)
        .raw(r#","name":"#)
        .str(&s.user_name)
        .raw(r#"},"host":"#)
        .str(&s.client.host)
        .raw(r#","user_agent":"#)
        .str(&s.client.user_agent)
        .raw(r#","device_id":"#)
        .str(&s.client.device_id)
        .raw(r#","description":"#)
        .str(&s.client.description)
        .raw(r#","console_type":{"code":"#)
        .int(s.console_type.code())
        .raw(r#","name":"#)
        .known(s.console_type.describe())
        .raw(r#"},"dialect":"#)
        .known(s.dialect.key())
        .raw(r#","browser_session_id":"#)
        .int(s.browser_session_id)
        .raw(r#","created_at":"#)
        .time(WireTime(s.created_at))
        .raw(r#","last_accessed_at":"#)
        .time(WireTime(last_accessed_at))
        .raw(r#","expires_at":"#)
        .time(WireTime(s.expires_at))
        .raw(r#","idle_timeout_seconds":"#)
        .int(s.idle_timeout.as_secs())
        .raw(r#","state":"#)
        .known(wire_state.name())
        .raw(r#","ended_at":"#);
    match end {
        Some(e) => out.time(WireTime(e.at)),
        None => out.raw("null"),
    };
    out.raw(r#","end_reason":"#);
    match end {
        Some(e) => out.known(e.reason.key()),
        None => out.raw("null"),
    };
    // The session making the request is the current one.
    out.raw(r#","current":true}"#);
}

/// `User::from`'s fields.
fn write_user(out: &mut JsonText, u: &domain::User) {
    out.raw(r#"{"id":"#)
        .int(u.id.0)
        .raw(r#","name":"#)
        .str(&u.name)
        .raw(r#","guid":"#)
        .str(&u.guid)
        .raw(r#","full_name":"#)
        .str(&u.full_name)
        .raw(r#","email":"#)
        .str(&u.email)
        .raw(r#","description":"#)
        .str(&u.description)
        .raw(r#","enabled":"#)
        .bool(u.enabled)
        .raw(r#","roles":"#)
        .strs(u.roles.iter().map(String::as_str))
        .raw(r#","permissions":"#)
        .known_strs(u.permissions().iter().map(domain::Permission::key))
        .raw(r#","created_at":"#)
        .time(WireTime(u.created_at))
        .raw(r#","updated_at":"#)
        .time(WireTime(u.updated_at))
        .raw("}");
}

/// A user as named in a session or an audit event.
#[derive(Serialize, ToSchema)]
pub struct UserRef {
    pub id: i64,
    pub name: String,
}

/// Where the session was opened: Commvault `consoleType` codes, and sessiond's own.
#[derive(Serialize, ToSchema)]
pub struct ConsoleType {
    /// e.g. 13 (command line), 19 (web console), 102 (vSphere REST), 201 (native API).
    pub code: i32,
    /// The code in words.
    pub name: &'static str,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    Commvault,
    Vsphere,
    Native,
    WebConsole,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Live,
    Ended,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    Logout,
    Idle,
    Absolute,
    Revoked,
    Evicted,
}

/// A session record. Instants are RFC 3339 UTC with milliseconds.
#[derive(Serialize, ToSchema)]
pub struct Session {
    /// Public id (a GUID), not the secret.
    #[schema(value_type = String)]
    pub id: crate::api::Guid,
    pub user: UserRef,
    /// Client host or address at login.
    pub host: String,
    pub user_agent: String,
    pub device_id: String,
    pub description: String,
    pub console_type: ConsoleType,
    pub dialect: Dialect,
    /// Small per-user counter (Commvault `browserSessionId`).
    pub browser_session_id: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: WireTime,
    #[schema(value_type = String, format = DateTime)]
    pub last_accessed_at: WireTime,
    /// End of the absolute lifetime.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: WireTime,
    pub idle_timeout_seconds: u64,
    pub state: SessionState,
    /// When it ended (also for an expiry not yet recorded); null while live.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<WireTime>,
    pub end_reason: Option<EndReason>,
    /// Whether this is the session making the request.
    pub current: bool,
}

/// A page of sessions, newest first.
#[derive(Serialize, ToSchema)]
pub struct SessionPage {
    pub items: Vec<Session>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/sessions/revoke` result.
#[derive(Serialize, ToSchema)]
pub struct RevokeResult {
    /// How many live sessions were ended.
    pub ended: usize,
}

#[derive(Serialize, ToSchema)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub guid: String,
    pub full_name: String,
    pub email: String,
    pub description: String,
    pub enabled: bool,
    pub roles: Vec<String>,
    /// Permission keys the roles grant.
    pub permissions: Vec<&'static str>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: WireTime,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: WireTime,
}

/// A page of users, by ascending id.
#[derive(Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<User>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Permission {
    /// Stable key, e.g. `user-management`.
    pub key: &'static str,
    /// The vendor's wording, e.g. "Add, Delete and Modify a User".
    pub name: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Role {
    pub name: &'static str,
    pub description: &'static str,
    pub permissions: Vec<Permission>,
}

/// A recorded event. Never carries a password or a token.
#[derive(Serialize, ToSchema)]
pub struct AuditEvent {
    pub id: i64,
    #[schema(format = DateTime)]
    pub at: String,
    /// e.g. `login.succeeded`, `login.failed`, `login.locked`, `session.revoked`, `user.created`.
    pub kind: &'static str,
    /// Who did it; null for the system (expiry) or an unknown caller.
    pub actor: Option<UserRef>,
    /// Whom it concerns (id 0 for a failed login with an unknown name).
    pub subject: Option<UserRef>,
    pub session_id: Option<String>,
    pub source: String,
    pub dialect: Option<Dialect>,
    pub detail: String,
}

/// A page of events, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

/// One event of `GET /v1/events`: the `data` of a server-sent event whose `event`
/// field is the same as `type`. See `docs/events.md`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "type")]
pub enum LiveEvent {
    /// First on every stream: the subscription is in place. `scope` is `all`
    /// (a user administrator sees every user's events) or `own`.
    #[serde(rename = "ready")]
    Ready { scope: &'static str },
    /// A session was opened (through any dialect).
    #[serde(rename = "session.started")]
    SessionStarted { session: Box<Session> },
    /// A session was used: its last access and so its idle time changed. Sent
    /// from the coalesced last-access flush (at most one per session per flush
    /// interval), not per request.
    #[serde(rename = "session.touched")]
    SessionTouched {
        session_id: String,
        user_id: i64,
        #[schema(format = DateTime)]
        last_accessed_at: String,
    },
    /// A session ended: logout, idle or absolute expiry, revocation, eviction.
    #[serde(rename = "session.ended")]
    SessionEnded {
        session_id: String,
        user: UserRef,
        #[schema(format = DateTime)]
        ended_at: String,
        end_reason: EndReason,
    },
    /// A user was created, changed, enabled, disabled, deleted, or given a new
    /// password; `change` is the audit kind (`user.created`, `user.disabled`, ...).
    #[serde(rename = "user.changed")]
    UserChanged { user: UserRef, change: &'static str },
    /// The subscriber fell behind and `missed` events were dropped for it: what it
    /// shows may be stale; reload.
    #[serde(rename = "resync")]
    Resync { missed: u64 },
}

impl LiveEvent {
    /// The SSE `event` name (the same as `type`).
    pub fn name(&self) -> &'static str {
        match self {
            LiveEvent::Ready { .. } => "ready",
            LiveEvent::SessionStarted { .. } => "session.started",
            LiveEvent::SessionTouched { .. } => "session.touched",
            LiveEvent::SessionEnded { .. } => "session.ended",
            LiveEvent::UserChanged { .. } => "user.changed",
            LiveEvent::Resync { .. } => "resync",
        }
    }

    /// The wire form of a service event; `now` decides a new session's state,
    /// `current` marks the subscriber's own session.
    pub fn from_event(
        e: &crate::service::Event,
        now: domain::Timestamp,
        current: domain::SessionId,
    ) -> Self {
        use crate::service::Event as E;
        match e {
            E::SessionStarted { session } => {
                let view = SessionView {
                    state: session.state_at(now),
                    session: session.clone(),
                };
                LiveEvent::SessionStarted {
                    session: Box::new(Session::from_view(&view, current)),
                }
            }
            E::SessionTouched {
                session,
                user,
                last_accessed_at,
            } => LiveEvent::SessionTouched {
                session_id: session.to_string(),
                user_id: user.0,
                last_accessed_at: last_accessed_at.to_string(),
            },
            E::SessionEnded {
                session,
                user,
                user_name,
                end,
            } => LiveEvent::SessionEnded {
                session_id: session.to_string(),
                user: user_ref(*user, user_name),
                ended_at: end.at.to_string(),
                end_reason: end.reason.into(),
            },
            E::UserChanged {
                user,
                user_name,
                change,
            } => LiveEvent::UserChanged {
                user: user_ref(*user, user_name),
                change: change.key(),
            },
        }
    }
}

// ---- conversions ----

fn user_ref(id: domain::UserId, name: &str) -> UserRef {
    UserRef {
        id: id.0,
        name: name.to_string(),
    }
}

// The wire names of the enums, as serde names them, for the hand-written
// answers (`api::json_text`): a dialect and an end reason are named by their
// domain keys; the test compares each with its serde name.

impl SessionState {
    pub fn name(&self) -> &'static str {
        match self {
            SessionState::Live => "live",
            SessionState::Ended => "ended",
        }
    }
}

impl From<domain::Dialect> for Dialect {
    fn from(d: domain::Dialect) -> Self {
        match d {
            domain::Dialect::Commvault => Dialect::Commvault,
            domain::Dialect::Vsphere => Dialect::Vsphere,
            domain::Dialect::Native => Dialect::Native,
            domain::Dialect::WebConsole => Dialect::WebConsole,
        }
    }
}

impl From<domain::EndReason> for EndReason {
    fn from(r: domain::EndReason) -> Self {
        match r {
            domain::EndReason::Logout => EndReason::Logout,
            domain::EndReason::Idle => EndReason::Idle,
            domain::EndReason::Absolute => EndReason::Absolute,
            domain::EndReason::Revoked => EndReason::Revoked,
            domain::EndReason::Evicted => EndReason::Evicted,
        }
    }
}

impl Session {
    /// `current`: the id of the session making the request.
    pub fn from_view(v: &SessionView, current: domain::SessionId) -> Self {
        let s = &v.session;
        let (state, end) = state_and_end(v.state);
        Session {
            id: crate::api::Guid(s.id),
            user: user_ref(s.user_id, &s.user_name),
            host: s.client.host.clone(),
            user_agent: s.client.user_agent.clone(),
            device_id: s.client.device_id.clone(),
            description: s.client.description.clone(),
            console_type: ConsoleType {
                code: s.console_type.code(),
                name: s.console_type.describe(),
            },
            dialect: s.dialect.into(),
            browser_session_id: s.browser_session_id,
            created_at: WireTime(s.created_at),
            last_accessed_at: WireTime(s.last_accessed_at),
            expires_at: WireTime(s.expires_at),
            idle_timeout_seconds: s.idle_timeout.as_secs(),
            state,
            ended_at: end.map(|e| WireTime(e.at)),
            end_reason: end.map(|e| e.reason.into()),
            current: s.id == current,
        }
    }
}

impl From<&domain::User> for User {
    fn from(u: &domain::User) -> Self {
        User {
            id: u.id.0,
            name: u.name.clone(),
            guid: u.guid.clone(),
            full_name: u.full_name.clone(),
            email: u.email.clone(),
            description: u.description.clone(),
            enabled: u.enabled,
            roles: u.roles.clone(),
            permissions: u
                .permissions()
                .iter()
                .map(domain::Permission::key)
                .collect(),
            created_at: WireTime(u.created_at),
            updated_at: WireTime(u.updated_at),
        }
    }
}

impl From<&domain::Role> for Role {
    fn from(r: &domain::Role) -> Self {
        Role {
            name: r.name,
            description: r.description,
            permissions: r
                .permissions
                .iter()
                .map(|p| Permission {
                    key: p.key(),
                    name: p.display_name(),
                })
                .collect(),
        }
    }
}

impl From<&domain::AuditEvent> for AuditEvent {
    fn from(e: &domain::AuditEvent) -> Self {
        let ev = &e.event;
        AuditEvent {
            id: e.id,
            at: ev.at.to_string(),
            kind: ev.kind.key(),
            actor: ev.actor.as_ref().map(|r| user_ref(r.id, &r.name)),
            subject: ev.subject.as_ref().map(|r| user_ref(r.id, &r.name)),
            session_id: ev.session_id.map(|s| s.to_string()),
            source: ev.source.clone(),
            dialect: ev.dialect.map(Into::into),
            detail: ev.detail.clone(),
        }
    }
}

// ---- parameters ----

/// An RFC 3339 instant, to milliseconds.
pub fn parse_instant(field: &str, s: &str) -> Result<domain::Timestamp, NativeError> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
        NativeError::bad_request(format!(
            "{field}: expected an RFC 3339 instant such as 2025-01-31T12:00:00Z"
        ))
    })?;
    let ms = i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000))
        .map_err(|_| NativeError::bad_request(format!("{field}: out of range")))?;
    Ok(domain::Timestamp::from_unix_millis(ms))
}

pub fn page_limit(limit: Option<usize>) -> Result<usize, NativeError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=crate::service::MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(NativeError::bad_request(format!(
            "limit must be between 1 and {}",
            crate::service::MAX_PAGE
        ))),
    }
}

/// Cursors are opaque to clients: base64url of a tagged position.
fn encode_cursor(raw: &str) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor<'a>(tag: &str, s: &str, buf: &'a mut String) -> Option<&'a str> {
    let bytes = URL_SAFE_NO_PAD.decode(s.trim()).ok()?;
    *buf = String::from_utf8(bytes).ok()?;
    buf.strip_prefix(tag)?.strip_prefix(':')
}

fn bad_cursor() -> NativeError {
    NativeError::bad_request("cursor is not one this list returned")
}

pub fn session_cursor(c: SessionCursor) -> String {
    encode_cursor(&format!(
        "s:{}:{}",
        c.created_at.unix_millis(),
        c.id.0.as_hyphenated()
    ))
}

pub fn parse_session_cursor(s: &str) -> Result<SessionCursor, NativeError> {
    let mut buf = String::new();
    let rest = decode_cursor("s", s, &mut buf).ok_or_else(bad_cursor)?;
    let (ms, id) = rest.split_once(':').ok_or_else(bad_cursor)?;
    Ok(SessionCursor {
        created_at: domain::Timestamp::from_unix_millis(ms.parse().map_err(|_| bad_cursor())?),
        id: domain::SessionId::parse(id).ok_or_else(bad_cursor)?,
    })
}

/// A cursor over a numeric key (`u` users, `a` audit events).
pub fn id_cursor(tag: &str, id: i64) -> String {
    encode_cursor(&format!("{tag}:{id}"))
}

pub fn parse_id_cursor(tag: &str, s: &str) -> Result<i64, NativeError> {
    let mut buf = String::new();
    decode_cursor(tag, s, &mut buf)
        .and_then(|rest| rest.parse().ok())
        .ok_or_else(bad_cursor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;

    #[test]
    fn cursors_round_trip_and_do_not_mix() {
        let c = SessionCursor {
            created_at: domain::Timestamp::from_unix_millis(1_700_000_000_123),
            id: domain::SessionId::generate(),
        };
        assert_eq!(parse_session_cursor(&session_cursor(c)).unwrap(), c);
        assert_eq!(parse_id_cursor("a", &id_cursor("a", 42)).unwrap(), 42);
        assert!(parse_id_cursor("u", &id_cursor("a", 42)).is_err());
        assert!(parse_session_cursor(&id_cursor("a", 42)).is_err());
        for junk in ["", "!!!", "czo", "s:1:2"] {
            assert!(parse_session_cursor(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn instants_parse_from_rfc3339() {
        let t = parse_instant("since", "2015-01-01T22:13:05.651Z").unwrap();
        assert_eq!(t.unix_millis(), 1_420_150_385_651);
        let t = parse_instant("since", "2015-01-01T23:13:05+01:00").unwrap();
        assert_eq!(t.unix_millis(), 1_420_150_385_000);
        assert!(parse_instant("since", "yesterday").is_err());
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_limit(Some(1000)).unwrap(), 1000);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(1001)).is_err());
    }

    #[test]
    fn wire_names_are_the_serde_names() {
        fn serde_name<T: Serialize>(v: &T) -> String {
            serde_json::to_string(v).unwrap()
        }
        for d in [
            domain::Dialect::Commvault,
            domain::Dialect::Vsphere,
            domain::Dialect::Native,
            domain::Dialect::WebConsole,
        ] {
            assert_eq!(serde_name(&Dialect::from(d)), format!("\"{}\"", d.key()));
        }
        for st in [SessionState::Live, SessionState::Ended] {
            assert_eq!(serde_name(&st), format!("\"{}\"", st.name()));
        }
        for r in domain::EndReason::ALL {
            assert_eq!(serde_name(&EndReason::from(r)), format!("\"{}\"", r.key()));
        }
    }

    #[test]
    fn current_session_by_hand_is_its_serde_form() {
        let t = Timestamp::from_unix_millis;
        for (odd, ended) in [("", false), ("\"\\\n\u{1f}é", true)] {
            let session = domain::Session {
                id: domain::SessionId(uuid::Uuid::from_u128(7 << 64 | 9)),
                token_hash: domain::TokenHash([3; 32]),
                user_id: domain::UserId(42),
                user_name: format!("ann{odd}"),
                client: domain::ClientInfo {
                    host: format!("10.0.0.1{odd}"),
                    user_agent: format!("curl/8{odd}"),
                    device_id: String::new(),
                    description: odd.to_string(),
                },
                console_type: if ended {
                    domain::ConsoleType::WebConsole
                } else {
                    domain::ConsoleType::NativeApi
                },
                dialect: if ended {
                    domain::Dialect::WebConsole
                } else {
                    domain::Dialect::Native
                },
                browser_session_id: -3,
                created_at: t(1_764_000_000_123),
                last_accessed_at: t(1_764_000_000_500),
                idle_timeout: std::time::Duration::from_secs(u64::from(u32::MAX)),
                expires_at: t(i64::MAX),
                end: None,
            };
            let last_access = t(1_764_000_000_999);
            let state = if ended {
                domain::SessionState::Ended(domain::SessionEnd {
                    at: t(1_764_000_100_000),
                    reason: domain::EndReason::Revoked,
                })
            } else {
                domain::SessionState::Live
            };
            let user = domain::User {
                id: domain::UserId(42),
                name: format!("ann{odd}"),
                guid: "B0CD93B5-D6F1-4678-A7E9-DD7E97CAB47A".into(),
                full_name: odd.into(),
                email: "a@b".into(),
                description: String::new(),
                enabled: ended,
                roles: if ended {
                    vec![]
                } else {
                    vec!["master".into(), odd.into()]
                },
                password_hash: domain::PasswordHash("not used".into()),
                created_at: t(0),
                updated_at: t(-1),
            };
            let view = SessionView {
                session: domain::Session {
                    last_accessed_at: last_access,
                    ..session.clone()
                },
                state,
            };
            let answer = CurrentSession {
                session: Session::from_view(&view, session.id),
                user: (&user).into(),
            };
            let mut out = JsonText::new();
            CurrentSession::write_json(&mut out, &session, last_access, state, &user);
            assert_eq!(out.as_str(), serde_json::to_string(&answer).unwrap());
        }
    }
}
