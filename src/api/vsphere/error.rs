//! The vSphere dialect's one error table, and its three renderings.
//!
//! | error                                        | vAPI error            | HTTP | message id                                                | default_message                    |
//! |----------------------------------------------|-----------------------|------|-----------------------------------------------------------|------------------------------------|
//! | no credentials / session id (or other scheme) | `unauthenticated`     | 401  | `com.vmware.vapi.endpoint.method.authentication.required` | `Authentication required.`         |
//! | unknown, ended or expired session id         | `unauthenticated`     | 401  | `vapi.session.invalid`                                    | `The session is not valid: ...`    |
//! | bad user/password, disabled, locked account  | `unauthenticated`     | 401  | `vapi.security.authentication.invalid`                    | `Invalid user name or password.`   |
//! | per-user session limit                       | `unauthenticated`     | 401  | `vapi.session.limit.reached`                              | `Too many sessions for this user.` |
//! | missing permission, not allowed              | `unauthorized`        | 403  | `vapi.security.authorization.denied`                      | `Permission denied: ...`           |
//! | unknown record                               | `not_found`           | 404  | `vapi.not_found`                                          | `... not found.`                   |
//! | malformed request (Basic header, `~action`)  | `invalid_argument`    | 400  | `vapi.request.invalid`                                    | `Invalid request: ...`             |
//! | rule broken by valid input                   | `invalid_argument`    | 400  | `vapi.request.invalid`                                    | `Invalid request: ...`             |
//! | name already taken                           | `already_exists`      | 400  | `vapi.already_exists`                                     | `...`                              |
//! | body over the size limit                     | `invalid_request`     | 413  | `vapi.request.too_large`                                  | `The request body is too large.`   |
//! | unknown path, method, service or operation   | `operation_not_found` | 404  | `vapi.operation.not_found`                                | `Operation not found: ...`         |
//! | store or system failure                      | `service_unavailable` | 503  | `vapi.service.unavailable`                                | `Service unavailable.`             |
//!
//! The HTTP statuses follow vAPI's own REST mapping (`already_exists` is a 400 there).
//! Credential problems never say which part was wrong; a 503 never says why
//! (the cause goes to the log).
//!
//! Renderings:
//! - legacy `/rest`: `{"type":"com.vmware.vapi.std.errors.<kind>","value":{"messages":[M]}}`
//! - `/api`: `{"error_type":"<KIND>","messages":[M]}`
//! - JSON-RPC (HTTP 200, see `jsonrpc.rs`): the vAPI typed value
//!   `{"ERROR":{"com.vmware.vapi.std.errors.<kind>":{"messages":[{"STRUCTURE":{"com.vmware.vapi.std.localizable_message":{...}}}],"data":{"OPTIONAL":null},"error_type":{"OPTIONAL":"<KIND>"}}}}`
//!   (plus `"challenge":{"OPTIONAL":null}` for the two errors that declare it)
//!
//! where `M` is `{"args":[],"default_message":"...","id":"..."}`.

use crate::service::ServiceError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The vAPI standard errors this dialect answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VapiError {
    Unauthenticated,
    Unauthorized,
    NotFound,
    InvalidArgument,
    AlreadyExists,
    InvalidRequest,
    OperationNotFound,
    ServiceUnavailable,
}

impl VapiError {
    /// The snake-case name, as in `com.vmware.vapi.std.errors.<name>`.
    pub fn name(self) -> &'static str {
        match self {
            VapiError::Unauthenticated => "unauthenticated",
            VapiError::Unauthorized => "unauthorized",
            VapiError::NotFound => "not_found",
            VapiError::InvalidArgument => "invalid_argument",
            VapiError::AlreadyExists => "already_exists",
            VapiError::InvalidRequest => "invalid_request",
            VapiError::OperationNotFound => "operation_not_found",
            VapiError::ServiceUnavailable => "service_unavailable",
        }
    }

    /// The structure name of the error, e.g. `com.vmware.vapi.std.errors.unauthenticated`.
    pub fn type_name(self) -> String {
        format!("com.vmware.vapi.std.errors.{}", self.name())
    }

    /// The `error_type` enumeration value, e.g. `UNAUTHENTICATED`.
    pub fn error_type(self) -> String {
        self.name().to_ascii_uppercase()
    }

    pub fn status(self) -> StatusCode {
        match self {
            VapiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            VapiError::Unauthorized => StatusCode::FORBIDDEN,
            VapiError::NotFound | VapiError::OperationNotFound => StatusCode::NOT_FOUND,
            VapiError::InvalidArgument | VapiError::AlreadyExists | VapiError::InvalidRequest => {
                StatusCode::BAD_REQUEST
            }
            VapiError::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The two standard errors whose binding declares an optional `challenge` field.
    fn has_challenge(self) -> bool {
        matches!(self, VapiError::Unauthenticated | VapiError::Unauthorized)
    }
}

/// A vAPI localizable message (without arguments: sessiond's messages are plain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: &'static str,
    pub default_message: String,
}

impl Message {
    fn new(id: &'static str, text: impl Into<String>) -> Self {
        Message {
            id,
            default_message: text.into(),
        }
    }

    /// The plain JSON form of the REST renderings.
    pub fn plain(&self) -> Value {
        json!({"args": [], "default_message": self.default_message, "id": self.id})
    }

    /// The vAPI typed-value form (a `LocalizableMessage` structure).
    pub fn typed(&self) -> Value {
        json!({"STRUCTURE": {"com.vmware.vapi.std.localizable_message": {
            "id": self.id,
            "default_message": self.default_message,
            "args": [],
            "params": {"OPTIONAL": null},
            "localized": {"OPTIONAL": null},
        }}})
    }
}

/// An error on its way to a vSphere client, before the form is chosen.
#[derive(Debug)]
pub enum VsError {
    Service(ServiceError),
    /// No credentials or session id at all (or a scheme sessiond does not take).
    NoCredentials,
    BadRequest(String),
    TooLarge,
    /// An unknown path, method, service or operation (named for the message).
    NoOperation(String),
}

pub const AUTHENTICATION_REQUIRED: &str = "com.vmware.vapi.endpoint.method.authentication.required";

impl VsError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        VsError::BadRequest(msg.into())
    }

    /// The one table (see the module docs).
    pub fn parts(&self) -> (VapiError, Message) {
        use VapiError as V;
        match self {
            VsError::NoCredentials => (
                V::Unauthenticated,
                Message::new(AUTHENTICATION_REQUIRED, "Authentication required."),
            ),
            VsError::BadRequest(m) => (
                V::InvalidArgument,
                Message::new("vapi.request.invalid", format!("Invalid request: {m}.")),
            ),
            VsError::TooLarge => (
                V::InvalidRequest,
                Message::new("vapi.request.too_large", "The request body is too large."),
            ),
            VsError::NoOperation(what) => (
                V::OperationNotFound,
                Message::new(
                    "vapi.operation.not_found",
                    format!("Operation not found: {what}."),
                ),
            ),
            VsError::Service(e) => service_parts(e),
        }
    }

    fn log_if_internal(&self) {
        if let VsError::Service(e) = self {
            e.log_if_internal();
        }
    }

    /// The legacy `/rest` rendering.
    pub fn legacy(self) -> RestError {
        RestError {
            form: RestForm::Legacy,
            error: self,
        }
    }

    /// The `/api` rendering.
    pub fn api(self) -> RestError {
        RestError {
            form: RestForm::Api,
            error: self,
        }
    }

    /// The vAPI typed value of the error (JSON-RPC `result.error`). Logs a hidden cause.
    pub fn typed_value(&self) -> Value {
        self.log_if_internal();
        let (kind, message) = self.parts();
        let mut fields = serde_json::Map::new();
        fields.insert("messages".into(), json!([message.typed()]));
        fields.insert("data".into(), json!({"OPTIONAL": null}));
        fields.insert("error_type".into(), json!({"OPTIONAL": kind.error_type()}));
        if kind.has_challenge() {
            fields.insert("challenge".into(), json!({"OPTIONAL": null}));
        }
        json!({"ERROR": {kind.type_name(): fields}})
    }
}

impl From<ServiceError> for VsError {
    fn from(e: ServiceError) -> Self {
        VsError::Service(e)
    }
}

fn service_parts(e: &ServiceError) -> (VapiError, Message) {
    use VapiError as V;
    match e {
        ServiceError::Unauthenticated => (
            V::Unauthenticated,
            Message::new(
                "vapi.session.invalid",
                "The session is not valid: it is unknown, has ended or has expired.",
            ),
        ),
        ServiceError::InvalidCredentials
        | ServiceError::AccountDisabled
        | ServiceError::AccountLocked { .. } => (
            V::Unauthenticated,
            Message::new(
                "vapi.security.authentication.invalid",
                "Invalid user name or password.",
            ),
        ),
        ServiceError::SessionLimitReached => (
            V::Unauthenticated,
            Message::new(
                "vapi.session.limit.reached",
                "Too many sessions for this user.",
            ),
        ),
        ServiceError::Forbidden(p) => (
            V::Unauthorized,
            Message::new(
                "vapi.security.authorization.denied",
                format!(
                    "Permission denied: this requires the permission '{}'.",
                    p.display_name()
                ),
            ),
        ),
        ServiceError::NotAllowed(why) => (
            V::Unauthorized,
            Message::new(
                "vapi.security.authorization.denied",
                format!("Permission denied: {why}."),
            ),
        ),
        ServiceError::NotFound(what) => {
            let mut m = what.to_string();
            if let Some(c) = m.get_mut(0..1) {
                c.make_ascii_uppercase();
            }
            (
                V::NotFound,
                Message::new("vapi.not_found", format!("{m} not found.")),
            )
        }
        ServiceError::Invalid(m) => (
            V::InvalidArgument,
            Message::new("vapi.request.invalid", format!("Invalid request: {m}.")),
        ),
        ServiceError::Conflict(m) => (
            V::AlreadyExists,
            Message::new("vapi.already_exists", m.clone()),
        ),
        ServiceError::Unavailable(_) => (
            V::ServiceUnavailable,
            Message::new("vapi.service.unavailable", "Service unavailable."),
        ),
    }
}

/// Which REST form renders an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestForm {
    /// `/rest`: wrapped in `{"type","value"}`.
    Legacy,
    /// `/api`: unwrapped, with `error_type`.
    Api,
}

/// An error rendered in one of the REST forms.
#[derive(Debug)]
pub struct RestError {
    pub form: RestForm,
    pub error: VsError,
}

impl RestError {
    /// The status and JSON body.
    pub fn parts(&self) -> (StatusCode, Value) {
        let (kind, message) = self.error.parts();
        let status = match self.error {
            VsError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => kind.status(),
        };
        let body = match self.form {
            RestForm::Legacy => json!({
                "type": kind.type_name(),
                "value": {"messages": [message.plain()]},
            }),
            RestForm::Api => json!({
                "error_type": kind.error_type(),
                "messages": [message.plain()],
            }),
        };
        (status, body)
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        self.error.log_if_internal();
        let (status, body) = self.parts();
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sessiond\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Permission;
    use std::time::Duration;

    fn secret_failure() -> VsError {
        VsError::Service(ServiceError::Unavailable(anyhow::anyhow!("disk on fire")))
    }

    #[test]
    fn the_table_holds() {
        let cases: Vec<(VsError, &str, u16, &str)> = vec![
            (
                VsError::NoCredentials,
                "unauthenticated",
                401,
                AUTHENTICATION_REQUIRED,
            ),
            (
                ServiceError::Unauthenticated.into(),
                "unauthenticated",
                401,
                "vapi.session.invalid",
            ),
            (
                ServiceError::InvalidCredentials.into(),
                "unauthenticated",
                401,
                "vapi.security.authentication.invalid",
            ),
            (
                ServiceError::AccountDisabled.into(),
                "unauthenticated",
                401,
                "vapi.security.authentication.invalid",
            ),
            (
                ServiceError::AccountLocked {
                    retry_after: Duration::from_secs(60),
                }
                .into(),
                "unauthenticated",
                401,
                "vapi.security.authentication.invalid",
            ),
            (
                ServiceError::SessionLimitReached.into(),
                "unauthenticated",
                401,
                "vapi.session.limit.reached",
            ),
            (
                ServiceError::Forbidden(Permission::UserManagement).into(),
                "unauthorized",
                403,
                "vapi.security.authorization.denied",
            ),
            (
                ServiceError::NotAllowed("never").into(),
                "unauthorized",
                403,
                "vapi.security.authorization.denied",
            ),
            (
                ServiceError::NotFound("user").into(),
                "not_found",
                404,
                "vapi.not_found",
            ),
            (
                ServiceError::Invalid("x".into()).into(),
                "invalid_argument",
                400,
                "vapi.request.invalid",
            ),
            (
                ServiceError::Conflict("taken".into()).into(),
                "already_exists",
                400,
                "vapi.already_exists",
            ),
            (
                VsError::bad_request("x"),
                "invalid_argument",
                400,
                "vapi.request.invalid",
            ),
            (
                VsError::TooLarge,
                "invalid_request",
                413,
                "vapi.request.too_large",
            ),
            (
                VsError::NoOperation("x".into()),
                "operation_not_found",
                404,
                "vapi.operation.not_found",
            ),
            (
                secret_failure(),
                "service_unavailable",
                503,
                "vapi.service.unavailable",
            ),
        ];
        for (error, name, status, id) in cases {
            let (kind, message) = error.parts();
            assert_eq!((kind.name(), message.id), (name, id), "{error:?}");
            let rest = error.legacy();
            let (s, body) = rest.parts();
            assert_eq!(s.as_u16(), status, "{body}");
            assert_eq!(body["type"], format!("com.vmware.vapi.std.errors.{name}"));
            assert_eq!(body["value"]["messages"][0]["id"], id);
            let api = rest.error.api();
            let (s, body) = api.parts();
            assert_eq!(s.as_u16(), status);
            assert_eq!(body["error_type"], name.to_ascii_uppercase());
            assert_eq!(body["messages"][0]["args"], json!([]));
        }
    }

    #[test]
    fn service_unavailable_says_nothing_more() {
        let (_, body) = secret_failure().api().parts();
        assert_eq!(
            body,
            json!({"error_type": "SERVICE_UNAVAILABLE", "messages": [
                {"args": [], "default_message": "Service unavailable.", "id": "vapi.service.unavailable"}
            ]})
        );
        assert!(!secret_failure().typed_value().to_string().contains("fire"));
    }

    #[test]
    fn typed_errors_match_the_bindings() {
        let v = VsError::NoCredentials.typed_value();
        assert_eq!(
            v,
            json!({"ERROR": {"com.vmware.vapi.std.errors.unauthenticated": {
                "messages": [{"STRUCTURE": {"com.vmware.vapi.std.localizable_message": {
                    "id": AUTHENTICATION_REQUIRED,
                    "default_message": "Authentication required.",
                    "args": [],
                    "params": {"OPTIONAL": null},
                    "localized": {"OPTIONAL": null},
                }}}],
                "data": {"OPTIONAL": null},
                "error_type": {"OPTIONAL": "UNAUTHENTICATED"},
                "challenge": {"OPTIONAL": null},
            }}})
        );
        let v = VsError::NoOperation("x".into()).typed_value();
        let fields = &v["ERROR"]["com.vmware.vapi.std.errors.operation_not_found"];
        assert_eq!(
            fields["error_type"],
            json!({"OPTIONAL": "OPERATION_NOT_FOUND"})
        );
        assert!(fields.get("challenge").is_none());
    }
}
