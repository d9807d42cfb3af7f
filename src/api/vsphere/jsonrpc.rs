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
use super::{
    Credentials, SessionInfo, authenticate, body_bytes, login, session_id_header, session_info,
};
use crate::api::Json;
use crate::api::json_text::JsonText;
use crate::api::{AppState, ClientAddr, limited_body};
use crate::domain::{ConsoleType, Dialect};
use crate::service::Caller;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::borrow::Cow;

mod invoke_reader;

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

/// `POST /api` (served before the router, `api::direct`).
pub async fn invoke(st: AppState, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let bytes = match body_bytes(limited_body(body, &st).await) {
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
    let (id, call) = match read_request(&bytes) {
        Ok(r) => r,
        Err(e) => return Json(e.body()).into_response(),
    };
    let mut caller = None;
    let result = match call_operation(&st, &headers, call, &mut caller).await {
        Ok(output) => RpcResult::Output(output),
        Err(e) => RpcResult::Error(e.typed_value()),
    };
    Reply {
        id: &id,
        jsonrpc: "2.0",
        result,
    }
    .answer()
}

impl Reply<'_> {
    /// The reply as JSON: a session's `Info` (the hot path) written by hand (see
    /// `api::json_text`), everything else through serde.
    fn answer(self) -> Response {
        match &self.result {
            RpcResult::Output(Output::Info(info)) => {
                info_reply(self.id, info).answer(crate::api::APPLICATION_JSON)
            }
            _ => Json(self).into_response(),
        }
    }
}

/// A `Reply` carrying a session's `Info`, as serde would write it.
fn info_reply(id: &Value, info: &SessionInfo) -> JsonText {
    let mut out = JsonText::new();
    out.raw(r#"{"id":"#)
        .value(id)
        .raw(r#","jsonrpc":"2.0","result":{"output":{"STRUCTURE":{"com.vmware.cis.session.info":"#);
    info.write_json(&mut out);
    out.raw("}}}}");
    out
}

/// `{"id":..,"jsonrpc":"2.0","result":..}`, serialized without building a map
/// (keys in the order a map had them).
#[derive(Serialize)]
struct Reply<'a> {
    id: &'a Value,
    jsonrpc: &'static str,
    result: RpcResult<'a>,
}

/// `{"output":O}` or `{"error":E}`.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum RpcResult<'a> {
    Output(Output<'a>),
    Error(Value),
}

/// What an operation returns, in the vAPI typed encoding.
enum Output<'a> {
    /// create: `{"SECRET":"<session id>"}`.
    Secret(String),
    /// get: `{"STRUCTURE":{"com.vmware.cis.session.info":{...}}}`.
    Info(SessionInfo<'a>),
    /// delete: `null`.
    Void,
}

impl Serialize for Output<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Structure<'b, 'a>(&'b SessionInfo<'a>);
        impl Serialize for Structure<'_, '_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(INFO_STRUCTURE, self.0)?;
                m.end()
            }
        }
        match self {
            Output::Secret(secret) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("SECRET", secret)?;
                m.end()
            }
            Output::Info(info) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("STRUCTURE", &Structure(info))?;
                m.end()
            }
            Output::Void => s.serialize_unit(),
        }
    }
}

/// An `invoke` call, as far as the protocol is concerned; its strings borrow from
/// the body when [`invoke_reader`] read it.
#[derive(Debug)]
struct Call<'a> {
    service: Cow<'a, str>,
    operation: Cow<'a, str>,
    /// The fields of the `operation-input` structure.
    input: Map<String, Value>,
    security: Security<'a>,
}

#[derive(Debug)]
enum Security<'a> {
    None,
    UserPass {
        user: Cow<'a, str>,
        password: Cow<'a, str>,
    },
    SessionId(Cow<'a, str>),
    /// A scheme sessiond does not take (SAML tokens, OAuth, ...).
    Other,
}

/// Reads the request: a well-formed `invoke` by [`invoke_reader`], anything else
/// (or what that reader leaves) by [`parse`].
fn read_request(bytes: &[u8]) -> Result<(Value, Call<'_>), RpcError> {
    // UTF-8 checked once for the whole body; `parse` checks it again, as it must.
    match std::str::from_utf8(bytes)
        .ok()
        .and_then(invoke_reader::read_invoke)
    {
        Some(read) => Ok(read),
        None => parse(bytes),
    }
}

/// Reads the JSON-RPC envelope and the vAPI `invoke` parameters.
fn parse(bytes: &[u8]) -> Result<(Value, Call<'static>), RpcError> {
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

fn invoke_params(mut p: Map<String, Value>) -> Result<Call<'static>, String> {
    let mut string = |name: &str| match p.remove(name) {
        Some(Value::String(s)) => Ok(Cow::Owned(s)),
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

fn security_context(mut sec: Map<String, Value>) -> Result<Security<'static>, String> {
    let mut string = |name: &str| match sec.remove(name) {
        Some(Value::String(s)) => Ok(Cow::<str>::Owned(s)),
        _ => Err(format!("params.ctx.securityCtx.{name} must be a string")),
    };
    let scheme = string("schemeId")?;
    Ok(match scheme.as_ref() {
        USER_PASS_SCHEME => Security::UserPass {
            user: string("userName")?,
            password: string("password")?,
        },
        SESSION_ID_SCHEME => Security::SessionId(string("sessionId")?),
        _ => Security::Other,
    })
}

/// Runs one operation of `com.vmware.cis.session`; its output as a typed value.
async fn call_operation<'a>(
    st: &'a AppState,
    headers: &HeaderMap,
    call: Call<'_>,
    caller: &'a mut Option<Caller>,
) -> Result<Output<'a>, VsError> {
    let op = match (call.service.as_ref(), call.operation.as_ref()) {
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
            Some(id) => Security::SessionId(Cow::Borrowed(id)),
            None => Security::None,
        },
        other => other,
    };
    match (op, security) {
        ("create", Security::UserPass { user, password }) => {
            let creds = Credentials {
                username: user.into_owned(),
                password: SecretString::from(password.into_owned()),
            };
            let addr = ClientAddr::of(headers, st);
            // Boxed: the login's future is large, and every `get` would carry it.
            let out =
                Box::pin(login(st, creds, ConsoleType::VsphereJsonRpc, headers, addr)).await?;
            Ok(Output::Secret(out.token.to_hex()))
        }
        ("get", Security::SessionId(id)) => {
            let caller = caller.insert(authenticate(st, Some(&id)).await?);
            Ok(Output::Info(session_info(
                caller,
                &st.dialects.vsphere_domain,
            )))
        }
        ("delete", Security::SessionId(id)) => {
            let caller = authenticate(st, Some(&id)).await?;
            let addr = ClientAddr::of(headers, st);
            Box::pin(st.service.logout(&caller, &addr.origin(Dialect::Vsphere))).await?;
            Ok(Output::Void)
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

    /// What `parse` makes of a request, in a comparable form.
    fn read(body: &str) -> Option<(Value, String)> {
        parse(body.as_bytes())
            .ok()
            .map(|(id, call)| (id, format!("{call:?}")))
    }

    /// What the fast reader makes of a request, in the same form as [`read`].
    fn fast(body: &str) -> Option<(Value, String)> {
        invoke_reader::read_invoke(body).map(|(id, call)| (id, format!("{call:?}")))
    }

    /// The fast reader either leaves a request to the general path or reads it
    /// exactly as that path does.
    fn agrees(body: &str) -> bool {
        match fast(body) {
            None => true,
            some => some == read(body),
        }
    }

    const SDK_GET: &str = r#"{"jsonrpc":"2.0","method":"invoke","id":"3","params":{"serviceId":"com.vmware.cis.session","operationId":"get","input":{"STRUCTURE":{"operation-input":{}}},"ctx":{"appCtx":{"opId":"x","$userAgent":"pyvmomi"},"securityCtx":{"schemeId":"com.vmware.vapi.std.security.session_id","sessionId":"ab"}}}}"#;

    #[test]
    fn well_formed_requests_read_the_same_on_both_paths() {
        let accepted = [
            SDK_GET,
            r#"{"jsonrpc":"2.0","method":"invoke","id":"0","params":{"serviceId":"com.vmware.cis.session","operationId":"create","input":{"STRUCTURE":{"operation-input":{}}},"ctx":{"appCtx":{"opId":"x"},"securityCtx":{"schemeId":"com.vmware.vapi.std.security.user_pass","userName":"admin","password":"pw"}}}}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":3,"params":{"serviceId":"com.vmware.cis.session","operationId":"get","input":{"STRUCTURE":{"operation-input":{}}},"ctx":{"securityCtx":{"schemeId":"com.vmware.vapi.std.security.session_id","sessionId":"ab"}}}}"#,
            r#"{"params":{"operationId":"get","serviceId":"s","input":{"STRUCTURE":{"operation-input":{}}},"ctx":null},"id":-12,"method":"invoke","jsonrpc":"2.0","extra":[true,false,null,{"a":[1,"b"]},[]]}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":"1","params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{}}}}}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":"1","params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{}}},"ctx":{"securityCtx":null}}}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":"1","params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{}}},"ctx":{"securityCtx":{"schemeId":"com.vmware.vapi.std.security.saml_hok_token","token":"t"}}}}"#,
            // Strings either side of the reader's short-string loop (15, 16 and 17
            // bytes; an empty one) and a 64-byte session id.
            r#"{"jsonrpc":"2.0","method":"invoke","id":"","params":{"serviceId":"0123456789abcde","operationId":"0123456789abcdef","input":{"STRUCTURE":{"operation-input":{}}},"ctx":{"0123456789abcdefg":"x","securityCtx":{"schemeId":"com.vmware.vapi.std.security.session_id","sessionId":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}}}}"#,
            // Python's json.dumps without separators, and a pretty-printed body.
            r#"{"jsonrpc": "2.0", "method": "invoke", "id": "ü", "params": {"serviceId": "s", "operationId": "o", "input": {"STRUCTURE": {"operation-input": {}}}}}"#,
            "{\n  \"jsonrpc\": \"2.0\",\r\n\t\"method\": \"invoke\",\n  \"id\": 0,\n  \"params\": {\n    \"serviceId\": \"s\",\n    \"operationId\": \"o\",\n    \"input\": { \"STRUCTURE\" : { \"operation-input\" : { } } }\n  }\n}\n",
        ];
        for body in accepted {
            assert!(fast(body).is_some(), "{body}");
            assert_eq!(fast(body), read(body), "{body}");
        }
        let refused = [
            "{not json",
            "[]",
            r#"{"jsonrpc":"1.0","method":"invoke","id":"1","params":{}}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":{},"params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{}}}}}"#,
            r#"{"jsonrpc":"2.0","method":"call","id":"7","params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{}}}}}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":7,"params":{"serviceId":"s","operationId":"o","input":{}}}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":7,"params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{}},"more":1}}}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":"1","params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{}}},"ctx":{"securityCtx":{"schemeId":"com.vmware.vapi.std.security.session_id","sessionId":5}}}}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":"1","params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{}}},"ctx":{"securityCtx":{"schemeId":"com.vmware.vapi.std.security.user_pass","userName":"a"}}}}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":"1","params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{}}}}} x"#,
        ];
        for body in refused {
            assert!(fast(body).is_none(), "{body}");
            assert!(read(body).is_none(), "{body}");
        }
        // Valid, but left to the general path: an escape, a field of another scheme
        // that is not a string (ignored there), a repeated key (the last one counts),
        // input (refused there), a fraction as id.
        let left = [
            r#"{"jsonrpc":"2.0","method":"invoke","id":"1","params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{}}},"ctx":{"securityCtx":{"schemeId":"com.vmware.vapi.std.security.user_pass","userName":"a","password":"p\"w"}}}}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":"1","params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{}}},"ctx":{"securityCtx":{"schemeId":"other","userName":5}}}}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":"1","id":"2","params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{}}}}}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":"1","params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{"x":1}}}}}"#,
            r#"{"jsonrpc":"2.0","method":"invoke","id":1.5,"params":{"serviceId":"s","operationId":"o","input":{"STRUCTURE":{"operation-input":{}}}}}"#,
        ];
        for body in left {
            assert!(fast(body).is_none(), "{body}");
        }
        assert!(read(left[0]).unwrap().1.contains(r#"p\"w"#));
        assert!(read(left[1]).unwrap().1.contains("Other"));
        assert_eq!(read(left[2]).unwrap().0, json!("2"));
    }

    /// Every prefix, every body with one byte removed or replaced by a character
    /// that matters to JSON, and every body with whitespace inserted somewhere: the
    /// fast reader agrees with the general path on all of them.
    #[test]
    fn the_fast_reader_agrees_with_the_general_path_on_variations() {
        let bodies = [
            SDK_GET,
            r#"{"params":{"operationId":"get","serviceId":"s","input":{"STRUCTURE":{"operation-input":{}}},"ctx":null},"id":-12,"method":"invoke","jsonrpc":"2.0","extra":[true,false,null,{"a":[10,"b"]},[]]}"#,
        ];
        let (mut tried, mut read_fast) = (0, 0);
        for body in bodies {
            let b = body.as_bytes();
            for cut in 0..=b.len() {
                let mut variants = vec![b[..cut].to_vec()];
                if cut < b.len() {
                    let mut without = b.to_vec();
                    without.remove(cut);
                    variants.push(without);
                    for c in *br#"{}[]:,"\ 0-1.eEtn"# {
                        let mut replaced = b.to_vec();
                        replaced[cut] = c;
                        variants.push(replaced);
                    }
                    let mut spaced = b.to_vec();
                    spaced.insert(cut, b' ');
                    variants.push(spaced);
                }
                for v in variants {
                    if let Ok(text) = std::str::from_utf8(&v) {
                        tried += 1;
                        read_fast += usize::from(fast(text).is_some());
                        assert!(agrees(text), "{text}");
                    }
                }
            }
        }
        // Most variants are not JSON; whitespace between tokens is, and is read fast.
        assert!(tried > 9_000 && read_fast > 300, "{tried} {read_fast}");
    }

    #[test]
    fn replies_serialize_as_the_typed_encoding() {
        let id = json!("9");
        let bytes = |result| {
            serde_json::to_value(Reply {
                id: &id,
                jsonrpc: "2.0",
                result,
            })
            .unwrap()
        };
        assert_eq!(
            bytes(RpcResult::Output(Output::Secret("ab".into()))),
            json!({"id":"9","jsonrpc":"2.0","result":{"output":{"SECRET":"ab"}}})
        );
        assert_eq!(
            bytes(RpcResult::Output(Output::Void)),
            json!({"id":"9","jsonrpc":"2.0","result":{"output":null}})
        );
        assert_eq!(
            bytes(RpcResult::Error(json!({"ERROR":{}}))),
            json!({"id":"9","jsonrpc":"2.0","result":{"error":{"ERROR":{}}}})
        );
        let info = SessionInfo {
            created_time: crate::api::WireTime(crate::domain::Timestamp::from_unix_millis(1_000)),
            last_accessed_time: crate::api::WireTime(crate::domain::Timestamp::from_unix_millis(
                2_000,
            )),
            user: super::super::UserAtDomain {
                user: "ann",
                domain: "local",
            },
        };
        let by_hand = info_reply(&id, &info);
        let text = serde_json::to_string(&Reply {
            id: &id,
            jsonrpc: "2.0",
            result: RpcResult::Output(Output::Info(info)),
        })
        .unwrap();
        assert_eq!(by_hand.as_str(), text);
        assert_eq!(
            text,
            r#"{"id":"9","jsonrpc":"2.0","result":{"output":{"STRUCTURE":{"com.vmware.cis.session.info":{"created_time":"1970-01-01T00:00:01.000Z","last_accessed_time":"1970-01-01T00:00:02.000Z","user":"ann@local"}}}}}"#
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
