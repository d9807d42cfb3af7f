//! The Commvault dialect's one error table.
//!
//! | error                                  | HTTP | errorCode | errorMessage                      |
//! |----------------------------------------|------|-----------|-----------------------------------|
//! | no / bad / ended / expired token       | 401  | 5         | `Access denied`                   |
//! | missing permission, not allowed        | 403  | 5         | `Access denied: ...`              |
//! | unknown user or session                | 404  | 4         | `... not found`                   |
//! | malformed body, header or parameter    | 400  | 2         | `Invalid request: ...`            |
//! | body over the size limit               | 413  | 2         | `Request body too large`          |
//! | name already taken                     | 409  | 3         | `...`                             |
//! | store failure                          | 503  | 1         | `Service unavailable`             |
//!
//! JSON: `{"errorCode":N,"errorMessage":"..."}`; XML (when XML is accepted):
//! `<CVGui_GenericResp errorCode="N" errorMessage="..."/>`. Login failures are the
//! exception: HTTP 200 with `errList` (see `wire::login_failure`).

use super::wire::{Format, XmlDoc};
use crate::service::ServiceError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error on its way to a Commvault client, in the format it accepts.
#[derive(Debug)]
pub struct CvError {
    pub fmt: Format,
    pub kind: CvErrorKind,
}

#[derive(Debug)]
pub enum CvErrorKind {
    Service(ServiceError),
    BadRequest(String),
    TooLarge,
    NoRoute,
}

impl CvError {
    pub fn new(fmt: Format, kind: CvErrorKind) -> Self {
        CvError { fmt, kind }
    }

    pub fn bad_request(fmt: Format, msg: impl Into<String>) -> Self {
        CvError::new(fmt, CvErrorKind::BadRequest(msg.into()))
    }

    pub fn service(fmt: Format, e: ServiceError) -> Self {
        CvError::new(fmt, CvErrorKind::Service(e))
    }

    pub fn unauthenticated(fmt: Format) -> Self {
        CvError::service(fmt, ServiceError::Unauthenticated)
    }

    /// Status, Commvault errorCode and message.
    pub fn parts(&self) -> (StatusCode, i32, String) {
        match &self.kind {
            CvErrorKind::BadRequest(m) => {
                (StatusCode::BAD_REQUEST, 2, format!("Invalid request: {m}"))
            }
            CvErrorKind::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                2,
                "Request body too large".into(),
            ),
            CvErrorKind::NoRoute => (StatusCode::NOT_FOUND, 4, "No such API".into()),
            CvErrorKind::Service(e) => service_parts(e),
        }
    }
}

fn service_parts(e: &ServiceError) -> (StatusCode, i32, String) {
    match e {
        ServiceError::Unauthenticated
        | ServiceError::InvalidCredentials
        | ServiceError::AccountDisabled
        | ServiceError::AccountLocked { .. } => {
            (StatusCode::UNAUTHORIZED, 5, "Access denied".into())
        }
        ServiceError::Forbidden(p) => (
            StatusCode::FORBIDDEN,
            5,
            format!(
                "Access denied: this requires the permission '{}'",
                p.display_name()
            ),
        ),
        ServiceError::NotAllowed(why) => {
            (StatusCode::FORBIDDEN, 5, format!("Access denied: {why}"))
        }
        ServiceError::SessionLimitReached => (
            StatusCode::FORBIDDEN,
            5,
            "Access denied: too many sessions for this user".into(),
        ),
        ServiceError::NotFound(what) => {
            let mut m = what.to_string();
            if let Some(c) = m.get_mut(0..1) {
                c.make_ascii_uppercase();
            }
            (StatusCode::NOT_FOUND, 4, format!("{m} not found"))
        }
        ServiceError::Invalid(m) => (StatusCode::BAD_REQUEST, 2, format!("Invalid request: {m}")),
        ServiceError::Conflict(m) => (StatusCode::CONFLICT, 3, m.clone()),
        ServiceError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            1,
            "Service unavailable".into(),
        ),
    }
}

impl IntoResponse for CvError {
    fn into_response(self) -> Response {
        if let CvErrorKind::Service(e) = &self.kind {
            e.log_if_internal();
        }
        let (status, code, message) = self.parts();
        let mut resp = match self.fmt {
            Format::Json => super::wire::json_response(&serde_json::json!({
                "errorCode": code,
                "errorMessage": message,
            })),
            Format::Xml => {
                let mut doc = XmlDoc::new();
                doc.empty(
                    "CVGui_GenericResp",
                    &[("errorCode", &code.to_string()), ("errorMessage", &message)],
                );
                doc.into_response()
            }
        };
        *resp.status_mut() = status;
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Permission;

    #[test]
    fn the_table_holds() {
        let cases: Vec<(CvErrorKind, u16, i32)> = vec![
            (CvErrorKind::Service(ServiceError::Unauthenticated), 401, 5),
            (
                CvErrorKind::Service(ServiceError::Forbidden(Permission::UserManagement)),
                403,
                5,
            ),
            (CvErrorKind::Service(ServiceError::NotFound("user")), 404, 4),
            (CvErrorKind::BadRequest("x".into()), 400, 2),
            (CvErrorKind::TooLarge, 413, 2),
            (
                CvErrorKind::Service(ServiceError::Unavailable(anyhow::anyhow!("disk on fire"))),
                503,
                1,
            ),
        ];
        for (kind, status, code) in cases {
            let (s, c, m) = CvError::new(Format::Json, kind).parts();
            assert_eq!((s.as_u16(), c), (status, code), "{m}");
            assert!(!m.contains("disk on fire"));
        }
    }
}
