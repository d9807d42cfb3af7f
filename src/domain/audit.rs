//! Audit events: what happened to whom, by whom, from where.

use super::{Dialect, SessionId, Timestamp, UserId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditKind {
    LoginSucceeded,
    /// Never carries the password; `detail` says why (unknown user and wrong
    /// password are recorded alike, "invalid credentials").
    LoginFailed,
    Logout,
    /// Ended by idle timeout or absolute lifetime.
    SessionExpired,
    /// Ended by someone (`actor`), or by a user change.
    SessionRevoked,
    /// Ended because a newer login went over the per-user limit.
    SessionEvicted,
    TokenRenewed,
    UserCreated,
    UserChanged,
    UserDisabled,
    UserEnabled,
    UserDeleted,
    PasswordChanged,
    AccountLocked,
}

impl AuditKind {
    pub const ALL: [AuditKind; 14] = [
        AuditKind::LoginSucceeded,
        AuditKind::LoginFailed,
        AuditKind::Logout,
        AuditKind::SessionExpired,
        AuditKind::SessionRevoked,
        AuditKind::SessionEvicted,
        AuditKind::TokenRenewed,
        AuditKind::UserCreated,
        AuditKind::UserChanged,
        AuditKind::UserDisabled,
        AuditKind::UserEnabled,
        AuditKind::UserDeleted,
        AuditKind::PasswordChanged,
        AuditKind::AccountLocked,
    ];

    pub fn key(self) -> &'static str {
        match self {
            AuditKind::LoginSucceeded => "login.succeeded",
            AuditKind::LoginFailed => "login.failed",
            AuditKind::Logout => "session.logout",
            AuditKind::SessionExpired => "session.expired",
            AuditKind::SessionRevoked => "session.revoked",
            AuditKind::SessionEvicted => "session.evicted",
            AuditKind::TokenRenewed => "session.renewed",
            AuditKind::UserCreated => "user.created",
            AuditKind::UserChanged => "user.changed",
            AuditKind::UserDisabled => "user.disabled",
            AuditKind::UserEnabled => "user.enabled",
            AuditKind::UserDeleted => "user.deleted",
            AuditKind::PasswordChanged => "user.password-changed",
            AuditKind::AccountLocked => "login.locked",
        }
    }

    pub fn from_key(s: &str) -> Option<Self> {
        AuditKind::ALL.into_iter().find(|k| k.key() == s)
    }
}

/// A user named in an event, by id and by the name it had then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRef {
    pub id: UserId,
    pub name: String,
}

/// An event to record; the store assigns the id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub at: Timestamp,
    pub kind: AuditKind,
    /// Who did it (`None`: the system itself, e.g. expiry, or an unknown caller).
    pub actor: Option<UserRef>,
    /// Whom it concerns. For a failed login of an unknown name: id 0 and the name tried.
    pub subject: Option<UserRef>,
    pub session_id: Option<SessionId>,
    /// Source address of the request, when there was one.
    pub source: String,
    pub dialect: Option<Dialect>,
    /// Short human-readable detail. Never a secret.
    pub detail: String,
}

/// A recorded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Increasing with insertion order (a cursor for pagination).
    pub id: i64,
    pub event: NewAuditEvent,
}
