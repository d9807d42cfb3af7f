//! The session record and its life cycle.

use super::{Timestamp, TokenHash, UserId};
use std::fmt;
use std::time::Duration;

/// Public, stable identifier of a session (not the secret): a GUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub uuid::Uuid);

impl SessionId {
    /// A new id: a UUID version 7 (creation time in milliseconds, then 74 random
    /// bits). Ids made one after another sort together, so a new session's id
    /// lands at the end of the stores' id indexes rather than on a random page of
    /// them (on a cold 1M-session SQLite file, a random page was a disk read per
    /// login). The time it shows is the session's creation time, which every
    /// dialect shows beside it anyway.
    pub fn generate() -> Self {
        SessionId(uuid::Uuid::now_v7())
    }

    /// Accepts the hyphenated form in either case, with or without braces.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or(s);
        uuid::Uuid::try_parse(s).ok().map(SessionId)
    }
}

impl fmt::Display for SessionId {
    /// Upper-case hyphenated, the way Commvault prints GUIDs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = uuid::Uuid::encode_buffer();
        f.write_str(self.0.hyphenated().encode_upper(&mut buf))
    }
}

/// The dialect (API family) through which a session was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    Commvault,
    Vsphere,
    Native,
    WebConsole,
}

impl Dialect {
    pub fn key(self) -> &'static str {
        match self {
            Dialect::Commvault => "commvault",
            Dialect::Vsphere => "vsphere",
            Dialect::Native => "native",
            Dialect::WebConsole => "web-console",
        }
    }

    pub fn from_key(s: &str) -> Option<Self> {
        [
            Dialect::Commvault,
            Dialect::Vsphere,
            Dialect::Native,
            Dialect::WebConsole,
        ]
        .into_iter()
        .find(|d| d.key() == s)
    }
}

/// Where the user is logged on: Commvault's `consoleType` codes, extended with
/// codes of our own for the other dialects (documented in ARCHITECTURE.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConsoleType {
    /// 5: CommCell Console.
    CommCellConsole,
    /// 13: command line interface (also SDKs and scripts).
    CommandLine,
    /// 14: CommCell Console as a remote web-based application.
    RemoteWebConsole,
    /// 19: Web Console and mobile applications.
    WebConsole,
    /// 101: vSphere Automation legacy REST (`/rest/com/vmware/cis/session`).
    VsphereRest,
    /// 102: vSphere Automation REST (`/api/session`).
    VsphereApi,
    /// 103: vSphere Automation vAPI JSON-RPC (`POST /api`).
    VsphereJsonRpc,
    /// 201: sessiond's native API (`/v1`) and its CLI.
    NativeApi,
    /// 202: sessiond's own admin web console (`/ui`).
    AdminConsole,
    /// Any other code a Commvault client sent; kept as given.
    Other(i32),
}

impl ConsoleType {
    pub fn code(self) -> i32 {
        match self {
            ConsoleType::CommCellConsole => 5,
            ConsoleType::CommandLine => 13,
            ConsoleType::RemoteWebConsole => 14,
            ConsoleType::WebConsole => 19,
            ConsoleType::VsphereRest => 101,
            ConsoleType::VsphereApi => 102,
            ConsoleType::VsphereJsonRpc => 103,
            ConsoleType::NativeApi => 201,
            ConsoleType::AdminConsole => 202,
            ConsoleType::Other(c) => c,
        }
    }

    pub fn from_code(code: i32) -> Self {
        match code {
            5 => ConsoleType::CommCellConsole,
            13 => ConsoleType::CommandLine,
            14 => ConsoleType::RemoteWebConsole,
            19 => ConsoleType::WebConsole,
            101 => ConsoleType::VsphereRest,
            102 => ConsoleType::VsphereApi,
            103 => ConsoleType::VsphereJsonRpc,
            201 => ConsoleType::NativeApi,
            202 => ConsoleType::AdminConsole,
            c => ConsoleType::Other(c),
        }
    }

    /// The console type in words, for people.
    pub fn describe(self) -> &'static str {
        match self {
            ConsoleType::CommCellConsole => "CommCell Console",
            ConsoleType::CommandLine => "command line",
            ConsoleType::RemoteWebConsole => "remote web console",
            ConsoleType::WebConsole => "web console / mobile",
            ConsoleType::VsphereRest => "vSphere API (legacy REST)",
            ConsoleType::VsphereApi => "vSphere API (REST)",
            ConsoleType::VsphereJsonRpc => "vSphere API (JSON-RPC)",
            ConsoleType::NativeApi => "native API",
            ConsoleType::AdminConsole => "sessiond web console",
            ConsoleType::Other(_) => "other client",
        }
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The client logged out.
    Logout,
    /// Unused for longer than its idle timeout.
    Idle,
    /// Reached its absolute lifetime.
    Absolute,
    /// Ended by an administrator, the user themself, or a user change
    /// (disabled, deleted, password changed).
    Revoked,
    /// Pushed out by a newer login over the per-user session limit.
    Evicted,
}

impl EndReason {
    pub const ALL: [EndReason; 5] = [
        EndReason::Logout,
        EndReason::Idle,
        EndReason::Absolute,
        EndReason::Revoked,
        EndReason::Evicted,
    ];

    pub fn key(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Idle => "idle",
            EndReason::Absolute => "absolute",
            EndReason::Revoked => "revoked",
            EndReason::Evicted => "evicted",
        }
    }

    pub fn from_key(s: &str) -> Option<Self> {
        EndReason::ALL.into_iter().find(|r| r.key() == s)
    }
}

/// When and why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionEnd {
    pub at: Timestamp,
    pub reason: EndReason,
}

/// What the client told us about itself at login.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Client host name or address.
    pub host: String,
    pub user_agent: String,
    pub device_id: String,
    pub description: String,
}

/// A session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub token_hash: TokenHash,
    pub user_id: UserId,
    /// The user's name at login (kept with the record so history outlives renames).
    pub user_name: String,
    pub client: ClientInfo,
    pub console_type: ConsoleType,
    pub dialect: Dialect,
    /// Small per-user counter (Commvault `browserSessionId`).
    pub browser_session_id: i64,
    pub created_at: Timestamp,
    pub last_accessed_at: Timestamp,
    pub idle_timeout: Duration,
    /// Absolute end of life, fixed at login.
    pub expires_at: Timestamp,
    /// `None` while the record says live (it may still have expired since).
    pub end: Option<SessionEnd>,
}

/// A session's state at a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    Live,
    Ended(SessionEnd),
}

impl Session {
    /// When this session stops being usable if nobody uses it again, and why.
    pub fn deadline(&self) -> SessionEnd {
        self.deadline_after_access(self.last_accessed_at)
    }

    /// [`Session::deadline`] as if it was last used at `last_accessed_at`.
    fn deadline_after_access(&self, last_accessed_at: Timestamp) -> SessionEnd {
        let idle_at = last_accessed_at.plus(self.idle_timeout);
        if idle_at < self.expires_at {
            SessionEnd {
                at: idle_at,
                reason: EndReason::Idle,
            }
        } else {
            SessionEnd {
                at: self.expires_at,
                reason: EndReason::Absolute,
            }
        }
    }

    /// The state at `now`, counting expiry that the store has not recorded yet.
    pub fn state_at(&self, now: Timestamp) -> SessionState {
        self.state_at_after_access(now, self.last_accessed_at)
    }

    /// [`Session::state_at`] as if it was last used at `last_accessed_at` (a use this
    /// copy does not record yet).
    pub fn state_at_after_access(
        &self,
        now: Timestamp,
        last_accessed_at: Timestamp,
    ) -> SessionState {
        if let Some(end) = self.end {
            return SessionState::Ended(end);
        }
        let deadline = self.deadline_after_access(last_accessed_at);
        if now >= deadline.at {
            SessionState::Ended(deadline)
        } else {
            SessionState::Live
        }
    }

    pub fn is_live_at(&self, now: Timestamp) -> bool {
        self.state_at(now) == SessionState::Live
    }
}

/// A session as created; the store assigns `browser_session_id`.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub id: SessionId,
    pub token_hash: TokenHash,
    pub user_id: UserId,
    pub user_name: String,
    pub client: ClientInfo,
    pub console_type: ConsoleType,
    pub dialect: Dialect,
    pub created_at: Timestamp,
    pub idle_timeout: Duration,
    pub expires_at: Timestamp,
}

impl NewSession {
    pub fn into_session(self, browser_session_id: i64) -> Session {
        Session {
            id: self.id,
            token_hash: self.token_hash,
            user_id: self.user_id,
            user_name: self.user_name,
            client: self.client,
            console_type: self.console_type,
            dialect: self.dialect,
            browser_session_id,
            created_at: self.created_at,
            last_accessed_at: self.created_at,
            idle_timeout: self.idle_timeout,
            expires_at: self.expires_at,
            end: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(idle_min: u64, life_min: u64) -> Session {
        NewSession {
            id: SessionId::generate(),
            token_hash: TokenHash([0; 32]),
            user_id: UserId(1),
            user_name: "u".into(),
            client: ClientInfo::default(),
            console_type: ConsoleType::CommandLine,
            dialect: Dialect::Commvault,
            created_at: Timestamp::from_unix_millis(1_000_000),
            idle_timeout: Duration::from_secs(idle_min * 60),
            expires_at: Timestamp::from_unix_millis(1_000_000 + life_min as i64 * 60_000),
        }
        .into_session(1)
    }

    #[test]
    fn idle_expiry_comes_first_when_sooner() {
        let s = session(30, 24 * 60);
        let t0 = s.created_at;
        assert!(s.is_live_at(t0.plus(Duration::from_secs(30 * 60 - 1))));
        assert_eq!(
            s.state_at(t0.plus(Duration::from_secs(30 * 60))),
            SessionState::Ended(SessionEnd {
                at: t0.plus(Duration::from_secs(30 * 60)),
                reason: EndReason::Idle
            })
        );
    }

    #[test]
    fn absolute_lifetime_caps_a_busy_session() {
        let mut s = session(30, 60);
        s.last_accessed_at = s.created_at.plus(Duration::from_secs(59 * 60));
        let end = s.deadline();
        assert_eq!(end.reason, EndReason::Absolute);
        assert_eq!(end.at, s.expires_at);
    }

    #[test]
    fn a_recorded_end_wins() {
        let mut s = session(30, 60);
        let end = SessionEnd {
            at: s.created_at,
            reason: EndReason::Logout,
        };
        s.end = Some(end);
        assert_eq!(s.state_at(s.created_at), SessionState::Ended(end));
    }

    #[test]
    fn session_ids_print_upper_case_and_parse_back() {
        let id = SessionId::generate();
        let s = id.to_string();
        assert_eq!(s, s.to_uppercase());
        assert_eq!(SessionId::parse(&s), Some(id));
        assert_eq!(
            SessionId::parse(&format!("{{{}}}", s.to_lowercase())),
            Some(id)
        );
        assert_eq!(SessionId::parse("nope"), None);
    }

    #[test]
    fn console_codes_round_trip() {
        for c in [5, 13, 14, 19, 101, 102, 103, 201, 202, 77] {
            assert_eq!(ConsoleType::from_code(c).code(), c);
        }
    }
}
