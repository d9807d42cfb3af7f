//! Plain types shared by every layer: no HTTP, no SQL, no wire formats.

mod audit;
mod session;
mod time;
mod token;
mod user;

pub use audit::{AuditEvent, AuditKind, NewAuditEvent, UserRef};
pub use session::{
    ClientInfo, ConsoleType, Dialect, EndReason, NewSession, Session, SessionEnd, SessionId,
    SessionState,
};
pub use time::{Rfc3339, Timestamp, duration_millis};
pub use token::{RngFailure, SessionToken, TOKEN_BYTES, TokenHash};
pub use user::{NewUser, PasswordHash, Permission, Permissions, Role, User, UserId};
