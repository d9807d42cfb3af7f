//! The VMware vSphere Automation dialect: the CIS session service in the three
//! forms clients use, over the same service and store as every other dialect.
//!
//! - `rest.rs`: legacy REST, `/rest/com/vmware/cis/session` (console type 101).
//! - `api.rs`: the vSphere 7+ REST form, `/api/session` (console type 102).
//! - `jsonrpc.rs`: vAPI JSON-RPC 2.0 on `POST /api` (console type 103), the
//!   transport of VMware's own Python SDK.
//! - `error.rs`: the one error table and its three renderings.
//!
//! The session id is the same 64-hex-digit secret Commvault clients see as
//! `QSDK <hex>`, so a session opened in one dialect works in the others.
//! The `user` is rendered `name@domain` with the configured `vsphere_domain`.
//!
//! User names in credentials (the domain rule): `name`, `name@<domain>` and
//! `<domain>\name` name the local user `name` when `<domain>` is the configured
//! `vsphere_domain` (compared case-insensitively). A name with any other domain is
//! passed on as it is; since local user names cannot contain `@` or `\`, it names
//! nobody and fails exactly like a wrong password (same path, same timing, same
//! audit event, `unauthenticated`).

mod api;
mod error;
mod jsonrpc;
mod rest;

/// The handlers served before the router (`api::direct`).
pub(crate) use {
    api::get as api_get, jsonrpc::invoke as json_rpc, rest::create_or_action as rest_post,
};

pub use error::{RestError, RestForm, VapiError, VsError};

use super::json_text::JsonText;
use super::{AppState, BodyError, ClientAddr, WireTime};
use crate::domain::{ClientInfo, ConsoleType, Dialect};
use crate::service::{Caller, LoginOutcome, LoginRequest};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, header};
use axum::routing::{any, post};
use base64::Engine;
use secrecy::SecretString;

/// The header (and, for legacy REST, the cookie) that carries the session id.
pub const SESSION_ID_HEADER: &str = "vmware-api-session-id";

/// [`SESSION_ID_HEADER`] as a `HeaderName`, for lookups (one by `&str` parses the
/// name on every request).
const SESSION_ID: HeaderName = HeaderName::from_static(SESSION_ID_HEADER);

/// Routes of the dialect. Anything else under `/rest` or `/api` is the dialect's
/// `operation_not_found`, in that form's shape.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            rest::SESSION_PATH,
            post(crate::api::handler(rest::create_or_action))
                .delete(rest::delete)
                .fallback(rest::no_operation),
        )
        .route("/rest", any(rest::no_operation))
        .route("/rest/{*path}", any(rest::no_operation))
        .route(
            "/api",
            post(crate::api::handler(jsonrpc::invoke)).fallback(api::no_operation),
        )
        .route(
            "/api/session",
            post(api::create)
                .get(crate::api::handler(api::get))
                .delete(api::delete)
                .fallback(api::no_operation),
        )
        .route("/api/{*path}", any(api::no_operation))
}

/// The session gets of the three forms, served before the router
/// (`api::direct`): legacy REST's `POST` (every `~action`), `GET /api/session` and
/// JSON-RPC's `POST /api`.
pub fn direct_routes() -> Vec<crate::api::Direct> {
    use crate::api::{Direct, Get};
    use axum::http::Method;
    vec![
        Direct::new(Method::POST, rest::SESSION_PATH, Get::VsphereRest),
        Direct::new(Method::GET, "/api/session", Get::VsphereApi),
        Direct::new(Method::POST, "/api", Get::JsonRpc),
    ]
}

/// A user name and password from a vSphere client.
struct Credentials {
    username: String,
    password: SecretString,
}

/// The credentials of an `Authorization: Basic` header. No header, or another
/// scheme, is `NoCredentials` (401); a malformed Basic value is a 400.
fn basic_credentials(headers: &HeaderMap) -> Result<Credentials, VsError> {
    let Some(value) = crate::api::header(headers, &header::AUTHORIZATION) else {
        return Err(VsError::NoCredentials);
    };
    let value = value
        .to_str()
        .map_err(|_| VsError::bad_request("the Authorization header is not text"))?
        .trim();
    let (scheme, encoded) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(VsError::NoCredentials);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| VsError::bad_request("the Basic credentials are not valid base64"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| VsError::bad_request("the Basic credentials are not UTF-8"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| VsError::bad_request("the Basic credentials must be user:password"))?;
    if user.trim().is_empty() {
        return Err(VsError::bad_request("the Basic credentials name no user"));
    }
    Ok(Credentials {
        username: user.to_string(),
        password: SecretString::from(password.to_string()),
    })
}

/// The local user name for a name a vSphere client sent (see the module docs).
fn local_user_name(name: &str, domain: &str) -> String {
    let name = name.trim();
    if let Some((user, d)) = name.rsplit_once('@')
        && d.eq_ignore_ascii_case(domain)
    {
        return user.to_string();
    }
    if let Some((d, user)) = name.split_once('\\')
        && d.eq_ignore_ascii_case(domain)
    {
        return user.to_string();
    }
    name.to_string()
}

/// Opens a session for `creds` through `console`.
async fn login(
    st: &AppState,
    creds: Credentials,
    console: ConsoleType,
    headers: &HeaderMap,
    addr: ClientAddr,
) -> Result<LoginOutcome, VsError> {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(256)
        .collect();
    let req = LoginRequest {
        username: local_user_name(&creds.username, &st.dialects.vsphere_domain),
        password: creds.password,
        client: ClientInfo {
            host: addr.host(),
            user_agent,
            device_id: String::new(),
            description: String::new(),
        },
        console_type: console,
        dialect: Dialect::Vsphere,
        requested_idle_timeout: None,
    };
    Ok(st.service.login(req).await?)
}

/// The caller a session id names; no id at all is `NoCredentials`.
async fn authenticate(st: &AppState, session_id: Option<&str>) -> Result<Caller, VsError> {
    let id = session_id.ok_or(VsError::NoCredentials)?;
    Ok(st.service.authenticate(id.trim().as_bytes()).await?)
}

/// The `vmware-api-session-id` header, if sent.
fn session_id_header(headers: &HeaderMap) -> Result<Option<&str>, VsError> {
    crate::api::header(headers, &SESSION_ID)
        .map(|v| {
            v.to_str()
                .map_err(|_| VsError::bad_request("the vmware-api-session-id header is not text"))
        })
        .transpose()
}

/// `cis session: get`'s `Info` as plain JSON.
fn session_info<'a>(caller: &'a Caller, domain: &'a str) -> SessionInfo<'a> {
    SessionInfo {
        created_time: WireTime(caller.session.created_at),
        last_accessed_time: WireTime(caller.last_accessed_at),
        user: UserAtDomain {
            user: &caller.session.user_name,
            domain,
        },
    }
}

/// `Info`, serialized without building a map (fields in the order a map had them).
#[derive(serde::Serialize)]
struct SessionInfo<'a> {
    created_time: WireTime,
    last_accessed_time: WireTime,
    user: UserAtDomain<'a>,
}

impl SessionInfo<'_> {
    /// As its `Serialize` form, by hand (the hot path: see `api::json_text`).
    fn write_json(&self, out: &mut JsonText) {
        out.raw(r#"{"created_time":"#)
            .time(self.created_time)
            .raw(r#","last_accessed_time":"#)
            .time(self.last_accessed_time)
            .raw(r#","user":"#)
            .str_of(&[self.user.user, "@", self.user.domain])
            .raw("}");
    }
}

/// `name@domain`.
struct UserAtDomain<'a> {
    user: &'a str,
    domain: &'a str,
}

/// As one string, built in one allocation (cheaper than `collect_str`'s formatting).
impl serde::Serialize for UserAtDomain<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(self.user.len() + 1 + self.domain.len());
        text.push_str(self.user);
        text.push('@');
        text.push_str(self.domain);
        s.serialize_str(&text)
    }
}

/// The request body, within the size limit.
fn body_bytes(body: Result<Bytes, BodyError>) -> Result<Bytes, VsError> {
    body.map_err(|e| match e {
        BodyError::TooLarge => VsError::TooLarge,
        BodyError::Unreadable => VsError::bad_request("could not read the request body"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(raw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, raw.parse().unwrap());
        h
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn session_info_by_hand_is_its_serde_form() {
        for (user, domain, ms) in [
            ("admin", "local", 1_764_000_000_123),
            ("a\"b\\c\n", "dom\u{1}", 0),
            ("ünï", "x", -5),
        ] {
            let info = SessionInfo {
                created_time: WireTime(crate::domain::Timestamp::from_unix_millis(ms)),
                last_accessed_time: WireTime(crate::domain::Timestamp::from_unix_millis(ms + 1)),
                user: UserAtDomain { user, domain },
            };
            let mut out = JsonText::new();
            info.write_json(&mut out);
            assert_eq!(out.as_str(), serde_json::to_string(&info).unwrap());
        }
    }

    #[test]
    fn domain_rule() {
        assert_eq!(local_user_name("admin", "local"), "admin");
        assert_eq!(local_user_name("admin@local", "local"), "admin");
        assert_eq!(local_user_name("admin@LOCAL", "local"), "admin");
        assert_eq!(local_user_name("LOCAL\\admin", "local"), "admin");
        assert_eq!(
            local_user_name("admin@vsphere.local", "local"),
            "admin@vsphere.local"
        );
        assert_eq!(local_user_name("corp\\admin", "local"), "corp\\admin");
        assert_eq!(local_user_name("a@b@local", "local"), "a@b");
    }

    #[test]
    fn basic_header_parsing() {
        let c = basic_credentials(&basic(&format!("Basic {}", b64("admin@local:p:w")))).unwrap();
        assert_eq!(c.username, "admin@local");
        use secrecy::ExposeSecret;
        assert_eq!(c.password.expose_secret(), "p:w");
        assert!(matches!(
            basic_credentials(&HeaderMap::new()),
            Err(VsError::NoCredentials)
        ));
        assert!(matches!(
            basic_credentials(&basic("Bearer abc")),
            Err(VsError::NoCredentials)
        ));
        for bad in [
            "Basic !!!".to_string(),
            format!("Basic {}", b64("no-colon")),
            format!("basic {}", b64(":nobody")),
            "Basic /w==".to_string(),
        ] {
            assert!(
                matches!(basic_credentials(&basic(&bad)), Err(VsError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
