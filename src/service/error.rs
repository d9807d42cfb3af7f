//! The service's one error type. Each dialect maps it, once, to its own wire shape.

use crate::domain::Permission;
use crate::store::StoreError;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No, an unknown, an ended or an expired session token (401).
    #[error("not authenticated")]
    Unauthenticated,
    /// Unknown user or wrong password: deliberately the same error.
    #[error("invalid user name or password")]
    InvalidCredentials,
    /// Right password, but the account is disabled.
    #[error("the account is disabled")]
    AccountDisabled,
    /// Too many failed logins for this account or source.
    #[error("the account is locked")]
    AccountLocked { retry_after: Duration },
    /// Authenticated, but lacking a permission (403).
    #[error("permission required: {}", .0.display_name())]
    Forbidden(Permission),
    /// Authenticated, but the operation is never allowed for this caller (403).
    #[error("not allowed: {0}")]
    NotAllowed(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Bad input that passed the wire format but not the rules (400).
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// The per-user session limit refused a new session.
    #[error("too many sessions for this user")]
    SessionLimitReached,
    /// The store (or the OS RNG) failed. The cause is for the log, never for clients.
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ServiceError::Conflict(what),
            StoreError::NotFound => ServiceError::NotFound("record"),
            StoreError::LimitReached => ServiceError::SessionLimitReached,
            StoreError::Backend(cause) => ServiceError::Unavailable(cause),
        }
    }
}

impl From<crate::domain::RngFailure> for ServiceError {
    fn from(e: crate::domain::RngFailure) -> Self {
        ServiceError::Unavailable(e.into())
    }
}

impl ServiceError {
    /// Logs the hidden cause of a 503 once, where a dialect renders it, and counts
    /// it in `sessiond_store_errors_total`.
    pub fn log_if_internal(&self) {
        if let ServiceError::Unavailable(cause) = self {
            crate::telemetry::store_error();
            tracing::error!(error = format!("{cause:#}"), "store or system failure");
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
