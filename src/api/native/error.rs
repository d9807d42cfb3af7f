//! The native API's one error table.
//!
//! | error                                        | HTTP | code                  |
//! |----------------------------------------------|------|-----------------------|
//! | no / bad / ended / expired token             | 401  | `unauthenticated`     |
//! | wrong user name or password, disabled user   | 401  | `unauthenticated`     |
//! | missing permission, not allowed              | 403  | `forbidden`           |
//! | console cookie without its CSRF token        | 403  | `forbidden`           |
//! | unknown user, session or path                | 404  | `not_found`           |
//! | method not allowed on the path               | 405  | `method_not_allowed`  |
//! | malformed body, parameter or cursor; rules   | 400  | `invalid_request`     |
//! | name already taken                           | 409  | `conflict`            |
//! | per-user session limit (`deny`)              | 409  | `too_many_sessions`   |
//! | body over the size limit                     | 413  | `payload_too_large`   |
//! | account or address locked out                | 429  | `locked` (+`Retry-After`) |
//! | store failure                                | 503  | `service_unavailable` |
//!
//! Body: `{"error":{"code":"...","message":"..."}}`, with `retry_after_seconds`
//! for `locked`. A 401 also carries `WWW-Authenticate: Bearer`.

use crate::service::ServiceError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error on its way to a native API client.
#[derive(Debug)]
pub enum NativeError {
    Service(ServiceError),
    BadRequest(String),
    TooLarge,
    NoRoute,
    MethodNotAllowed,
    /// A state-changing request authenticated by the console cookie lacked the
    /// session's CSRF token.
    CsrfMismatch,
}

/// The error document.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of `unauthenticated`, `forbidden`, `not_found`, `method_not_allowed`,
    /// `invalid_request`, `conflict`, `too_many_sessions`, `payload_too_large`,
    /// `locked`, `service_unavailable`.
    pub code: &'static str,
    /// For people; never internal detail.
    pub message: String,
    /// With `locked`: seconds until a login may be tried again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

impl From<ServiceError> for NativeError {
    fn from(e: ServiceError) -> Self {
        NativeError::Service(e)
    }
}

impl NativeError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        NativeError::BadRequest(msg.into())
    }

    /// Status, code, message and (for lockouts) the seconds to wait.
    pub fn parts(&self) -> (StatusCode, &'static str, String, Option<u64>) {
        use StatusCode as S;
        match self {
            NativeError::BadRequest(m) => (S::BAD_REQUEST, "invalid_request", m.clone(), None),
            NativeError::TooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large".into(),
                None,
            ),
            NativeError::NoRoute => (S::NOT_FOUND, "not_found", "no such endpoint".into(), None),
            NativeError::CsrfMismatch => (
                S::FORBIDDEN,
                "forbidden",
                "a request authenticated by the console cookie needs its X-CSRF-Token".into(),
                None,
            ),
            NativeError::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method".into(),
                None,
            ),
            NativeError::Service(e) => match e {
                ServiceError::Unauthenticated => (
                    S::UNAUTHORIZED,
                    "unauthenticated",
                    "a valid session token is required (Authorization: Bearer <token>)".into(),
                    None,
                ),
                ServiceError::InvalidCredentials => (
                    S::UNAUTHORIZED,
                    "unauthenticated",
                    "invalid user name or password".into(),
                    None,
                ),
                ServiceError::AccountDisabled => (
                    S::UNAUTHORIZED,
                    "unauthenticated",
                    "the account is disabled".into(),
                    None,
                ),
                ServiceError::AccountLocked { retry_after } => {
                    let secs = retry_after.as_secs().max(1);
                    (
                        S::TOO_MANY_REQUESTS,
                        "locked",
                        format!("too many failed logins; try again in {secs} s"),
                        Some(secs),
                    )
                }
                ServiceError::Forbidden(p) => (
                    S::FORBIDDEN,
                    "forbidden",
                    format!("this requires the permission '{}'", p.display_name()),
                    None,
                ),
                ServiceError::NotAllowed(why) => (S::FORBIDDEN, "forbidden", why.to_string(), None),
                ServiceError::NotFound(what) => {
                    (S::NOT_FOUND, "not_found", format!("{what} not found"), None)
                }
                ServiceError::Invalid(m) => (S::BAD_REQUEST, "invalid_request", m.clone(), None),
                ServiceError::Conflict(m) => (S::CONFLICT, "conflict", m.clone(), None),
                ServiceError::SessionLimitReached => (
                    S::CONFLICT,
                    "too_many_sessions",
                    "this user has the most live sessions allowed; end one first".into(),
                    None,
                ),
                ServiceError::Unavailable(_) => (
                    S::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "service unavailable".into(),
                    None,
                ),
            },
        }
    }
}

impl IntoResponse for NativeError {
    fn into_response(self) -> Response {
        if let NativeError::Service(e) = &self {
            e.log_if_internal();
        }
        let (status, code, message, retry_after_seconds) = self.parts();
        let mut resp = (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code,
                    message,
                    retry_after_seconds,
                },
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = retry_after_seconds {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Permission;
    use std::time::Duration;

    #[test]
    fn the_table_holds() {
        let cases: Vec<(NativeError, u16, &str)> = vec![
            (ServiceError::Unauthenticated.into(), 401, "unauthenticated"),
            (
                ServiceError::InvalidCredentials.into(),
                401,
                "unauthenticated",
            ),
            (ServiceError::AccountDisabled.into(), 401, "unauthenticated"),
            (
                ServiceError::AccountLocked {
                    retry_after: Duration::from_millis(1500),
                }
                .into(),
                429,
                "locked",
            ),
            (
                ServiceError::Forbidden(Permission::UserManagement).into(),
                403,
                "forbidden",
            ),
            (ServiceError::NotAllowed("no").into(), 403, "forbidden"),
            (ServiceError::NotFound("user").into(), 404, "not_found"),
            (NativeError::NoRoute, 404, "not_found"),
            (NativeError::MethodNotAllowed, 405, "method_not_allowed"),
            (
                ServiceError::Invalid("x".into()).into(),
                400,
                "invalid_request",
            ),
            (NativeError::bad_request("x"), 400, "invalid_request"),
            (ServiceError::Conflict("x".into()).into(), 409, "conflict"),
            (
                ServiceError::SessionLimitReached.into(),
                409,
                "too_many_sessions",
            ),
            (NativeError::TooLarge, 413, "payload_too_large"),
            (
                ServiceError::Unavailable(anyhow::anyhow!("disk on fire")).into(),
                503,
                "service_unavailable",
            ),
        ];
        for (err, status, code) in cases {
            let (s, c, m, _) = err.parts();
            assert_eq!((s.as_u16(), c), (status, code), "{m}");
            assert!(!m.contains("disk on fire"));
        }
    }

    #[test]
    fn lockouts_say_when_to_retry_and_401s_name_the_scheme() {
        let r = NativeError::from(ServiceError::AccountLocked {
            retry_after: Duration::from_secs(90),
        })
        .into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "90");
        let r = NativeError::from(ServiceError::Unauthenticated).into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
