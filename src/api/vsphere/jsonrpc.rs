//! vAPI JSON-RPC 2.0 on `POST /api`: the transport of VMware's own SDKs.
//!
//! A request is `{"jsonrpc":"2.0","method":"invoke","id":ID,"params":{"serviceId",
//! "operationId","input":{"STRUCTURE":{"operation-input":{}}},"ctx":{"appCtx",
//! "securityCtx"}}}`. The service is `com.vmware.cis.session` with the operations
//! `create` (security context `com.vmware.vapi.std.security.user_pass` with
//! `userName`, `password`), `get` and `delete` (`com.vmware.vapi.std.security.session_id`
//! with `sessionId`, or, without a security context, the `vmware-api-session-id`
//! header).
//!
//! Answers are HTTP 200 and echo `id`: `{"jsonrpc":"2.0","id":ID,"result":{"output":O}}`
//! or `{"result":{"error":E}}` with values in the vAPI typed encoding that
//! `vmware/vapi/data/serializers/jsonrpc.py` decodes: create's output is
//! `{"SECRET":"<id>"}`, get's `{"STRUCTURE":{"com.vmware.cis.session.info":{...}}}`,
//! delete's `null` (void); errors are `ERROR` values (see `error.rs`). Another
//! service or operation is the vAPI `operation_not_found` error.
//!
//! A request that is not valid JSON-RPC gets the JSON-RPC error object
//! `{"jsonrpc":"2.0","id":..,"error":{"code","message","data"}}`, HTTP 200:
//! -32700 (not JSON) and -32600 (not a valid request; `id` null, as the vAPI
//! runtime expects), -32601 (`method` other than `invoke`) and -32602 (`params`
//! malformed) with the request's `id`. The one exception is a body over the size
//! limit: HTTP 413 with a -32600 error object, since the request could not be read.

use super::error::VsError;
use super::{Credentials, authenticate, body_bytes, login, session_id_header, session_info};
use crate::api::{AppState, ClientAddr};
use crate::domain::{ConsoleType, Dialect};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

pub const SESSION_SERVICE: &str = "com.vmware.cis.session";
const USER_PASS_SCHEME: &str = "com.vmware.vapi.std.security.user_pass";
const SESSION_ID_SCHEME: &str = "com.vmware.vapi.std.security.session_id";
const INFO_STRUCTURE: &str = "com.vmware.cis.session.info";

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// A JSON-RPC protocol error (not a vAPI error: those travel in `result`).
#[derive(Debug)]
struct RpcError {
    code: i64,
    /// The request's id, or null when it could not be read.
    id: Value,
    detail: String,
}

impl RpcError {
    fn new(code: i64, id: Value, detail: impl Into<String>) -> Self {
        RpcError {
            code,
            id,
            detail: detail.into(),
        }
    }

    fn message(&self) -> &'static str {
        match self.code {
            PARSE_ERROR => "Parse error.",
            INVALID_REQUEST => "Invalid Request.",
            METHOD_NOT_FOUND => "Method not found.",
            INVALID_PARAMS => "Invalid params.",
            _ => "Server error.",
        }
    }

    fn body(&self) -> Value {
        json!({
            "jsonrpc": "2.0",
            "id": self.id,
            "error": {"code": self.code, "message": self.message(), "data": self.detail},
        })
    }
}

/// `POST /api`.
pub async fn invoke(
    State(st): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let bytes = match body_bytes(body) {
        Ok(b) => b,
        Err(VsError::TooLarge) => {
            let e = RpcError::new(
                INVALID_REQUEST,
                Value::Null,
                "the request body is too large",
            );
            return (StatusCode::PAYLOAD_TOO_LARGE, Json(e.body())).into_response();
        }
        Err(_) => {
            let e = RpcError::new(
                INVALID_REQUEST,
                Value::Null,
                "could not read the request body",
            );
            return Json(e.body()).into_response();
        }
    };
    let (id, call) = match parse(&bytes) {
        Ok(r) => r,
        Err(e) => return Json(e.body()).into_response(),
    };
    let result = match call_operation(&st, addr, &headers, call).await {
        Ok(output) => json!({ "output": output }),
        Err(e) => json!({ "error": e.typed_value() }),
    };
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

/// An `invoke` call, as far as the protocol is concerned.
#[derive(Debug)]
struct Call {
    service: String,
    operation: String,
    /// The fields of the `operation-input` structure.
    input: Map<String, Value>,
    security: Security,
}

#[derive(Debug)]
enum Security {
    None,
    UserPass {
        user: String,
        password: String,
    },
    SessionId(String),
    /// A scheme sessiond does not take (SAML tokens, OAuth, ...).
    Other,
}

/// Reads the JSON-RPC envelope and the vAPI `invoke` parameters.
fn parse(bytes: &[u8]) -> Result<(Value, Call), RpcError> {
    let invalid = |m: &str| RpcError::new(INVALID_REQUEST, Value::Null, m);
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        RpcError::new(
            PARSE_ERROR,
            Value::Null,
            format!("the body is not JSON: {e}"),
        )
    })?;
    let mut req = match value {
        Value::Object(m) => m,
        Value::Array(_) => return Err(invalid("batch requests are not supported")),
        _ => return Err(invalid("the request must be a JSON object")),
    };
    if req.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let id = match req.remove("id") {
        None => {
            return Err(invalid(
                "\"id\" is required (notifications are not supported)",
            ));
        }
        Some(id @ (Value::String(_) | Value::Number(_))) => id,
        Some(_) => return Err(invalid("\"id\" must be a string or a number")),
    };
    let Some(Value::String(method)) = req.remove("method") else {
        return Err(invalid("\"method\" must be a string"));
    };
    if method != "invoke" {
        return Err(RpcError::new(
            METHOD_NOT_FOUND,
            id,
            format!(
                "unknown method {:?} (vAPI has \"invoke\")",
                method.chars().take(64).collect::<String>()
            ),
        ));
    }
    let params = match req.remove("params") {
        Some(Value::Object(p)) => p,
        _ => {
            return Err(RpcError::new(
                INVALID_PARAMS,
                id,
                "\"params\" must be an object",
            ));
        }
    };
    match invoke_params(params) {
        Ok(call) => Ok((id, call)),
        Err(m) => Err(RpcError::new(INVALID_PARAMS, id, m)),
    }
}

fn invoke_params(mut p: Map<String, Value>) -> Result<Call, String> {
    let mut string = |name: &str| match p.remove(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(format!("params.{name} must be a string")),
    };
    let service = string("serviceId")?;
    let operation = string("operationId")?;
    let input = operation_input(p.remove("input"))?;
    let security = match p.remove("ctx") {
        None | Some(Value::Null) => Security::None,
        Some(Value::Object(mut ctx)) => match ctx.remove("securityCtx") {
            None | Some(Value::Null) => Security::None,
            Some(Value::Object(sec)) => security_context(sec)?,
            Some(_) => return Err("params.ctx.securityCtx must be an object".into()),
        },
        Some(_) => return Err("params.ctx must be an object".into()),
    };
    Ok(Call {
        service,
        operation,
        input,
        security,
    })
}

/// `{"STRUCTURE":{"operation-input":{fields}}}` → its fields.
fn operation_input(input: Option<Value>) -> Result<Map<String, Value>, String> {
    const SHAPE: &str = "params.input must be {\"STRUCTURE\":{\"operation-input\":{...}}}";
    let Some(Value::Object(mut outer)) = input else {
        return Err(SHAPE.into());
    };
    if outer.len() != 1 {
        return Err(SHAPE.into());
    }
    let Some(Value::Object(mut structure)) = outer.remove("STRUCTURE") else {
        return Err(SHAPE.into());
    };
    if structure.len() != 1 {
        return Err(SHAPE.into());
    }
    match structure.remove("operation-input") {
        Some(Value::Object(fields)) => Ok(fields),
        _ => Err(SHAPE.into()),
    }
}

fn security_context(mut sec: Map<String, Value>) -> Result<Security, String> {
    let mut string = |name: &str| match sec.remove(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(format!("params.ctx.securityCtx.{name} must be a string")),
    };
    let scheme = string("schemeId")?;
    Ok(match scheme.as_str() {
        USER_PASS_SCHEME => Security::UserPass {
            user: string("userName")?,
            password: string("password")?,
        },
        SESSION_ID_SCHEME => Security::SessionId(string("sessionId")?),
        _ => Security::Other,
    })
}

/// Runs one operation of `com.vmware.cis.session`; its output as a typed value.
async fn call_operation(
    st: &AppState,
    addr: ClientAddr,
    headers: &HeaderMap,
    call: Call,
) -> Result<Value, VsError> {
    let op = match (call.service.as_str(), call.operation.as_str()) {
        (SESSION_SERVICE, op @ ("create" | "get" | "delete")) => op,
        (service, op) => {
            return Err(VsError::NoOperation(format!(
                "{}.{}",
                service.chars().take(100).collect::<String>(),
                op.chars().take(100).collect::<String>()
            )));
        }
    };
    if let Some(field) = call.input.keys().next() {
        return Err(VsError::bad_request(format!(
            "{SESSION_SERVICE}.{op} takes no input, but got {:?}",
            field.chars().take(64).collect::<String>()
        )));
    }
    let security = match call.security {
        Security::None => match session_id_header(headers)? {
            Some(id) => Security::SessionId(id.to_string()),
            None => Security::None,
        },
        other => other,
    };
    match (op, security) {
        ("create", Security::UserPass { user, password }) => {
            let creds = Credentials {
                username: user,
                password: SecretString::from(password),
            };
            let out = login(st, creds, ConsoleType::VsphereJsonRpc, headers, addr).await?;
            Ok(json!({ "SECRET": out.token.to_hex() }))
        }
        ("get", Security::SessionId(id)) => {
            let caller = authenticate(st, Some(&id)).await?;
            let info = session_info(&caller, &st.dialects.vsphere_domain);
            Ok(json!({ "STRUCTURE": { INFO_STRUCTURE: info } }))
        }
        ("delete", Security::SessionId(id)) => {
            let caller = authenticate(st, Some(&id)).await?;
            st.service
                .logout(&caller, &addr.origin(Dialect::Vsphere))
                .await?;
            Ok(Value::Null)
        }
        // No credentials, or not the kind this operation takes.
        _ => Err(VsError::NoCredentials),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(body: &str) -> (i64, Value) {
        let e = parse(body.as_bytes()).unwrap_err();
        (e.code, e.id)
    }

    #[test]
    fn envelope_errors() {
        assert_eq!(code_of("{not json"), (PARSE_ERROR, Value::Null));
        assert_eq!(code_of("[]"), (INVALID_REQUEST, Value::Null));
        assert_eq!(code_of("42"), (INVALID_REQUEST, Value::Null));
        assert_eq!(
            code_of(r#"{"jsonrpc":"1.0","method":"invoke","id":"1","params":{}}"#),
            (INVALID_REQUEST, Value::Null)
        );
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","method":"invoke","params":{}}"#),
            (INVALID_REQUEST, Value::Null)
        );
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","method":"invoke","id":{},"params":{}}"#),
            (INVALID_REQUEST, Value::Null)
        );
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","id":"7","params":{}}"#),
            (INVALID_REQUEST, Value::Null)
        );
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","method":"call","id":"7","params":{}}"#),
            (METHOD_NOT_FOUND, json!("7"))
        );
        assert_eq!(
            code_of(r#"{"jsonrpc":"2.0","method":"invoke","id":7,"params":[]}"#),
            (INVALID_PARAMS, json!(7))
        );
        assert_eq!(
            code_of(
                r#"{"jsonrpc":"2.0","method":"invoke","id":7,"params":{"serviceId":"s","operationId":"o","input":{}}}"#
            ),
            (INVALID_PARAMS, json!(7))
        );
    }

    #[test]
    fn invoke_parameters() {
        let (id, call) = parse(
            br#"{"jsonrpc":"2.0","method":"invoke","id":"0","params":{"serviceId":"com.vmware.cis.session","operationId":"create","input":{"STRUCTURE":{"operation-input":{}}},"ctx":{"appCtx":{"opId":"x"},"securityCtx":{"schemeId":"com.vmware.vapi.std.security.user_pass","userName":"admin","password":"pw"}}}}"#,
        )
        .unwrap();
        assert_eq!(id, json!("0"));
        assert_eq!(call.operation, "create");
        assert!(matches!(call.security, Security::UserPass { ref user, .. } if user == "admin"));
        let call = invoke_params(
            json!({"serviceId":"a","operationId":"b","input":{"STRUCTURE":{"operation-input":{}}},
                   "ctx":{"securityCtx":{"schemeId":"com.vmware.vapi.std.security.saml_hok_token"}}})
            .as_object()
            .unwrap()
            .clone(),
        )
        .unwrap();
        assert!(matches!(call.security, Security::Other));
        assert!(
            invoke_params(
                json!({"serviceId":"a","operationId":"b","input":{"STRUCTURE":{"operation-input":{}}},
                       "ctx":{"securityCtx":{"schemeId":SESSION_ID_SCHEME,"sessionId":5}}})
                .as_object()
                .unwrap()
                .clone()
            )
            .is_err()
        );
    }
}
