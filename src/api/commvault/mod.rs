//! The Commvault web-service dialect, served at the root and under
//! `/commandcenter/api` and `/webconsole/api` (path segments case-insensitive,
//! see `api::normalize`).
//!
//! Responses are XML or JSON by `Accept` (XML when absent); request bodies are XML
//! or JSON by `Content-Type` (or their first character). The token travels in the
//! `Authtoken` header as `QSDK <hex>` (a bare `<hex>` is accepted too).
//!
//! `consoleType` of a Commvault login: a `clientType` that is itself a Commvault
//! console code (5, 13, 14, 19) is kept; any other `clientType` (cvpysdk sends 30)
//! means a program, recorded as 13 (command line); with no `clientType`, a browser
//! `User-Agent` (`Mozilla/...`) means 19 (web console), anything else 13.

mod error;
pub mod render;
pub mod wire;

pub use error::{CvError, CvErrorKind};

use super::{AppState, BodyError, ClientAddr, LimitedBytes, single_query_param};
use crate::domain::{ClientInfo, ConsoleType, Dialect, SessionId, UserId};
use crate::service::{Actor, Caller, LoginRequest, ServiceError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, delete, get, post};
use secrecy::SecretString;
use std::time::Duration;
use wire::{Body, Fields, Format};

/// The header that carries the session token (`QSDK <hex>`). Header names the hot
/// path looks up are `HeaderName` constants: a lookup by `&str` parses the name on
/// every request.
const AUTHTOKEN: HeaderName = HeaderName::from_static("authtoken");

/// The base paths of the dialect besides the root.
pub(crate) const PREFIXES: [&str; 2] = ["/commandcenter/api", "/webconsole/api"];

/// One-segment endpoints as cvpysdk and the vendor's documentation spell them.
/// Each is routed as well as its lower-case form, and `api::normalize` leaves such
/// a path as sent: the usual client's requests skip the rewrite of their URI.
pub(crate) const VENDOR_SPELLINGS: [&str; 7] = [
    "Login",
    "Logout",
    "Session",
    "Sessions",
    "RenewLoginToken",
    "User",
    "WhoAmI",
];

/// Routes of the dialect at the root and under each of [`PREFIXES`], written out
/// in full rather than nested (a nested router rebuilds every request's URI to
/// strip its prefix); unknown paths under a prefix get the dialect's 404.
pub fn routes() -> Router<AppState> {
    PREFIXES.iter().fold(routes_at(""), |router, prefix| {
        router
            .merge(routes_at(prefix))
            .route(&format!("{prefix}/{{*rest}}"), any(no_route))
    })
}

/// The paths of `path` (lower case) under `base` ("" for the root): the path
/// itself and, for a one-segment endpoint with a vendor spelling (see
/// [`VENDOR_SPELLINGS`]), that spelling too.
fn spellings(base: &str, path: &str) -> Vec<String> {
    let at = |path: &str| match (base, path) {
        ("", _) => path.to_string(),
        (_, "/") => base.to_string(),
        _ => format!("{base}{path}"),
    };
    let vendor = path
        .strip_prefix('/')
        .and_then(|p| VENDOR_SPELLINGS.iter().find(|v| v.eq_ignore_ascii_case(p)));
    std::iter::once(at(path))
        .chain(vendor.map(|v| at(&format!("/{v}"))))
        .collect()
}

/// The session get (`GET Session`, every spelling, at the root and under each of
/// [`PREFIXES`]), served before the router (`api::direct`).
pub fn direct_routes() -> Vec<crate::api::Direct> {
    std::iter::once("")
        .chain(PREFIXES)
        .flat_map(|base| spellings(base, "/session"))
        .map(|path| crate::api::Direct::new(Method::GET, &path, crate::api::Get::Commvault))
        .collect()
}

/// The dialect's routes with `base` ("" for the root) before each path, in each
/// of its [`spellings`].
fn routes_at(base: &str) -> Router<AppState> {
    let route = |router: Router<AppState>, path: &str, handler: MethodRouter<AppState>| {
        spellings(base, path)
            .into_iter()
            .fold(router, |router, p| router.route(&p, handler.clone()))
    };
    let router = route(Router::new(), "/", get(base_path));
    let router = route(router, "/login", post(login));
    let router = route(router, "/logout", post(logout));
    let router = route(
        router,
        "/session",
        get(crate::api::handler(sessions_of_user)),
    );
    let router = route(router, "/sessions", delete(end_sessions));
    let router = route(router, "/renewlogintoken", post(renew));
    let router = route(router, "/whoami", get(who_am_i).post(who_am_i));
    let router = route(router, "/user", get(users));
    let router = route(router, "/user/{id}", get(user));
    let router = route(router, "/user/{id}/security", get(user_security));
    let router = route(router, "/v4/user", get(v4_users));
    route(router, "/v4/user/{id}", get(v4_user))
}

async fn no_route(Fmt(fmt): Fmt) -> CvError {
    CvError::new(fmt, CvErrorKind::NoRoute)
}

/// The response format the client accepts.
pub struct Fmt(pub Format);

impl<S: Send + Sync> FromRequestParts<S> for Fmt {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Fmt(Format::from_headers(&parts.headers)))
    }
}

/// The caller named by the `Authtoken` header; 401 in the dialect's shape otherwise.
pub struct CvCaller(pub Caller);

impl FromRequestParts<AppState> for CvCaller {
    type Rejection = CvError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The answer format matters only for a refusal (the handler reads its own).
        let fmt = || Format::from_headers(&parts.headers);
        // The header's bytes: the token's parse checks them (a header value's own
        // text check would double that work on every request).
        let token = crate::api::header(&parts.headers, &AUTHTOKEN)
            .map(HeaderValue::as_bytes)
            .ok_or_else(|| CvError::unauthenticated(fmt()))?;
        state
            .service
            .authenticate(strip_qsdk(token))
            .await
            .map(CvCaller)
            .map_err(|e| CvError::service(fmt(), e))
    }
}

/// `QSDK <hex>` → `<hex>`; anything else as it is.
fn strip_qsdk(token: &[u8]) -> &[u8] {
    let t = token.trim_ascii();
    match t.split_at_checked(5) {
        Some((p, rest)) if p.eq_ignore_ascii_case(b"qsdk ") => rest.trim_ascii_start(),
        _ => t,
    }
}

fn body_bytes(fmt: Format, body: Result<Bytes, BodyError>) -> Result<Bytes, CvError> {
    body.map_err(|e| match e {
        BodyError::TooLarge => CvError::new(fmt, CvErrorKind::TooLarge),
        BodyError::Unreadable => CvError::bad_request(fmt, "could not read the request body"),
    })
}

fn svc(fmt: Format) -> impl Fn(ServiceError) -> CvError {
    move |e| CvError::service(fmt, e)
}

async fn base_path() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain;charset=utf-8")],
        "sessiond: Commvault-compatible web service\n",
    )
}

// ---- Login ----

const LOGIN_ROOT: &str = "DM2ContentIndexing_CheckCredentialReq";
const LOGIN_FIELDS: &[&str] = &[
    "username",
    "password",
    "domain",
    "commserver",
    "timeout",
    "deviceId",
    "mode",
    "clientType",
];

async fn login(
    State(st): State<AppState>,
    Fmt(fmt): Fmt,
    addr: ClientAddr,
    headers: HeaderMap,
    LimitedBytes(body): LimitedBytes,
) -> Response {
    let req = match login_request(fmt, &headers, addr, body) {
        Ok(r) => r,
        Err(e) => return render::login_bad_request(e),
    };
    match st.service.login(req).await {
        Ok(out) => render::login_success(fmt, &out),
        Err(ServiceError::Unavailable(cause)) => {
            CvError::service(fmt, ServiceError::Unavailable(cause)).into_response()
        }
        Err(e) => render::login_failure(fmt, &e),
    }
}

fn login_request(
    fmt: Format,
    headers: &HeaderMap,
    addr: ClientAddr,
    body: Result<Bytes, BodyError>,
) -> Result<LoginRequest, CvError> {
    let bytes = body_bytes(fmt, body)?;
    let bad = |m: String| CvError::bad_request(fmt, m);
    let fields = match wire::parse_body(fmt, headers, &bytes)? {
        Body::Json(mut map) => {
            // The older wrapped form: {"DM2ContentIndexing_CheckCredentialReq": {"@username": ...}}
            if map.len() == 1
                && let Some(serde_json::Value::Object(inner)) = map.remove(LOGIN_ROOT)
            {
                map = inner;
            }
            Fields::from_json(map, LOGIN_FIELDS).map_err(bad)?
        }
        Body::Xml(el) => {
            if el.name != LOGIN_ROOT {
                return Err(bad(format!("expected <{LOGIN_ROOT}>, found <{}>", el.name)));
            }
            Fields::from_xml(el, LOGIN_FIELDS).map_err(bad)?
        }
    };
    let username = fields
        .string("username")
        .map_err(bad)?
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| bad("username is required".into()))?;
    let encoded = fields
        .string("password")
        .map_err(bad)?
        .ok_or_else(|| bad("password is required".into()))?;
    let password = wire::decode_password(&encoded).map_err(bad)?;
    // Validated for shape, not used: there is one CommServe and local users only.
    fields.string("domain").map_err(bad)?;
    fields.string("commserver").map_err(bad)?;
    fields.string("mode").map_err(bad)?;
    let timeout = match fields.int("timeout").map_err(bad)? {
        Some(m) if m < 0 => return Err(bad("timeout must not be negative".into())),
        Some(m) => Some(Duration::from_secs(
            u64::try_from(m).unwrap_or(0).saturating_mul(60),
        )),
        None => None,
    };
    let client_type = fields.int("clientType").map_err(bad)?;
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(256)
        .collect::<String>();
    let console_type = console_type_for(client_type, &user_agent);
    let device_id = fields
        .string("deviceId")
        .map_err(bad)?
        .unwrap_or_default()
        .chars()
        .take(256)
        .collect();
    Ok(LoginRequest {
        username,
        password: SecretString::from(password),
        client: ClientInfo {
            host: addr.host(),
            user_agent,
            device_id,
            description: String::new(),
        },
        console_type,
        dialect: Dialect::Commvault,
        requested_idle_timeout: timeout,
    })
}

/// The documented `consoleType` rule (see the module docs).
fn console_type_for(client_type: Option<i64>, user_agent: &str) -> ConsoleType {
    match client_type {
        Some(c @ (5 | 13 | 14 | 19)) => ConsoleType::from_code(c as i32),
        Some(_) => ConsoleType::CommandLine,
        None if user_agent.starts_with("Mozilla/") => ConsoleType::WebConsole,
        None => ConsoleType::CommandLine,
    }
}

// ---- Logout, renew, who am I ----

async fn logout(
    State(st): State<AppState>,
    Fmt(fmt): Fmt,
    addr: ClientAddr,
    CvCaller(caller): CvCaller,
) -> Result<Response, CvError> {
    st.service
        .logout(&caller, &addr.origin(Dialect::Commvault))
        .await
        .map_err(svc(fmt))?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain;charset=utf-8")],
        "User logged out",
    )
        .into_response())
}

const RENEW_FIELDS: &[&str] = &["sessionId", "deviceId"];

async fn renew(
    State(st): State<AppState>,
    Fmt(fmt): Fmt,
    addr: ClientAddr,
    headers: HeaderMap,
    LimitedBytes(body): LimitedBytes,
) -> Result<Response, CvError> {
    let bytes = body_bytes(fmt, body)?;
    let bad = |m: String| CvError::bad_request(fmt, m);
    let from_body = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let fields = match wire::parse_body(fmt, &headers, &bytes)? {
            Body::Json(map) => Fields::from_json(map, RENEW_FIELDS).map_err(bad)?,
            Body::Xml(el) => Fields::from_xml(el, RENEW_FIELDS).map_err(bad)?,
        };
        fields.string("deviceId").map_err(bad)?;
        fields.string("sessionId").map_err(bad)?
    };
    let token = from_body
        .or_else(|| {
            headers
                .get(AUTHTOKEN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .ok_or_else(|| CvError::unauthenticated(fmt))?;
    let (_, fresh) = st
        .service
        .renew(
            strip_qsdk(token.as_bytes()),
            &addr.origin(Dialect::Commvault),
        )
        .await
        .map_err(svc(fmt))?;
    Ok(render::renewed(fmt, &fresh))
}

async fn who_am_i(
    State(st): State<AppState>,
    Fmt(fmt): Fmt,
    CvCaller(caller): CvCaller,
) -> Result<Response, CvError> {
    let user = st.service.caller_user(&caller).await.map_err(svc(fmt))?;
    Ok(render::who_am_i(fmt, &user))
}

// ---- Sessions ----

/// `userId` (its name in any case) from a query string: the one parameter this
/// dialect takes.
fn session_user_id(query: &str) -> Result<i64, &'static str> {
    single_query_param(query, |k| k.eq_ignore_ascii_case("userid"))
        .map_err(|_| "userId is given more than once")?
        .ok_or("the userId parameter is required")?
        .trim()
        .parse::<i64>()
        .map_err(|_| "userId must be a whole number")
}

/// cvpysdk's header asking `GET Session` for live sessions only.
const ONLY_ACTIVE_SESSIONS: HeaderName = HeaderName::from_static("only-active-sessions");

/// `GET Session?userId=`: the sessions of one user, the hot path of the dialect
/// (served before the router, `api::direct`).
pub(crate) async fn sessions_of_user(st: AppState, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let fmt = Format::from_headers(&parts.headers);
    let answer = async {
        let CvCaller(caller) = CvCaller::from_request_parts(&mut parts, &st).await?;
        let user_id = session_user_id(parts.uri.query().unwrap_or(""))
            .map_err(|m| CvError::bad_request(fmt, m))?;
        let only_active = crate::api::header(&parts.headers, &ONLY_ACTIVE_SESSIONS)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let rows = st
            .service
            .user_sessions(&caller, UserId(user_id), only_active)
            .await
            .map_err(svc(fmt))?;
        Ok::<_, CvError>(render::sessions(fmt, &rows))
    };
    answer.await.into_response()
}

const LOGOFF_ROOT: &str = "Api_LogoffUsersRequest";

async fn end_sessions(
    State(st): State<AppState>,
    Fmt(fmt): Fmt,
    addr: ClientAddr,
    CvCaller(caller): CvCaller,
    headers: HeaderMap,
    LimitedBytes(body): LimitedBytes,
) -> Result<Response, CvError> {
    let bytes = body_bytes(fmt, body)?;
    let ids = logoff_ids(fmt, &headers, &bytes)?;
    st.service
        .end_sessions(
            &Actor::User(&caller),
            &ids,
            &addr.origin(Dialect::Commvault),
        )
        .await
        .map_err(svc(fmt))?;
    Ok(render::logoff_done(fmt))
}

fn logoff_ids(fmt: Format, headers: &HeaderMap, bytes: &[u8]) -> Result<Vec<SessionId>, CvError> {
    let bad = |m: String| CvError::bad_request(fmt, m);
    let raw: Vec<String> = match wire::parse_body(fmt, headers, bytes)? {
        Body::Xml(el) => {
            if el.name != LOGOFF_ROOT {
                return Err(bad(format!(
                    "expected <{LOGOFF_ROOT}>, found <{}>",
                    el.name
                )));
            }
            if !el.attrs.is_empty() {
                return Err(bad(format!("<{LOGOFF_ROOT}> takes no attributes")));
            }
            el.children
                .into_iter()
                .map(|c| {
                    if c.name != "sessions" || !c.children.is_empty() {
                        return Err(bad(format!("unexpected element <{}>", c.name)));
                    }
                    Fields::from_xml(c, &["val"])
                        .map_err(bad)?
                        .string("val")
                        .map_err(bad)?
                        .ok_or_else(|| bad("<sessions> needs a val attribute".into()))
                })
                .collect::<Result<_, _>>()?
        }
        Body::Json(mut map) => {
            if map.len() == 1
                && let Some(serde_json::Value::Object(inner)) = map.remove(LOGOFF_ROOT)
            {
                map = inner;
            }
            let fields = Fields::from_json(map, &["sessions"]).map_err(bad)?;
            let list = match fields.value("sessions") {
                Some(serde_json::Value::Array(a)) => a.clone(),
                Some(obj @ serde_json::Value::Object(_)) => vec![obj.clone()],
                _ => return Err(bad("sessions must be a list of {\"val\": id}".into())),
            };
            list.into_iter()
                .map(|v| match v {
                    serde_json::Value::Object(m) => Fields::from_json(m, &["val"])
                        .map_err(bad)?
                        .string("val")
                        .map_err(bad)?
                        .ok_or_else(|| bad("each session needs a val".into())),
                    _ => Err(bad("sessions must be a list of {\"val\": id}".into())),
                })
                .collect::<Result<_, _>>()?
        }
    };
    if raw.is_empty() {
        return Err(bad("no sessions given".into()));
    }
    raw.iter()
        .map(|s| SessionId::parse(s).ok_or_else(|| bad(format!("{s:?} is not a session id"))))
        .collect()
}

// ---- Users ----

async fn users(
    State(st): State<AppState>,
    Fmt(fmt): Fmt,
    CvCaller(caller): CvCaller,
) -> Result<Response, CvError> {
    let list = all_users(&st, caller, fmt).await?;
    Ok(render::users(fmt, &list))
}

async fn all_users(
    st: &AppState,
    caller: Caller,
    fmt: Format,
) -> Result<Vec<crate::domain::User>, CvError> {
    const PAGE: usize = 1000;
    let actor = Actor::User(&caller);
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = st
            .service
            .list_users(&actor, after, PAGE)
            .await
            .map_err(svc(fmt))?;
        let done = page.len() < PAGE;
        after = page.last().map(|u| u.id);
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

fn user_id_param(fmt: Format, raw: &str) -> Result<UserId, CvError> {
    raw.trim()
        .parse::<i64>()
        .map(UserId)
        .map_err(|_| CvError::bad_request(fmt, "the user id must be a whole number"))
}

async fn user(
    State(st): State<AppState>,
    Fmt(fmt): Fmt,
    CvCaller(caller): CvCaller,
    Path(id): Path<String>,
) -> Result<Response, CvError> {
    let id = user_id_param(fmt, &id)?;
    let u = st
        .service
        .get_user(&Actor::User(&caller), id)
        .await
        .map_err(svc(fmt))?;
    Ok(render::user_properties(fmt, &u))
}

async fn user_security(
    State(st): State<AppState>,
    Fmt(fmt): Fmt,
    CvCaller(caller): CvCaller,
    Path(id): Path<String>,
) -> Result<Response, CvError> {
    let id = user_id_param(fmt, &id)?;
    let u = st
        .service
        .get_user(&Actor::User(&caller), id)
        .await
        .map_err(svc(fmt))?;
    Ok(render::security_associations(fmt, &u))
}

async fn v4_users(
    State(st): State<AppState>,
    CvCaller(caller): CvCaller,
) -> Result<Response, CvError> {
    let list = all_users(&st, caller, Format::Json).await?;
    Ok(render::v4_users(&list))
}

async fn v4_user(
    State(st): State<AppState>,
    CvCaller(caller): CvCaller,
    Path(id): Path<String>,
) -> Result<Response, CvError> {
    let id = user_id_param(Format::Json, &id)?;
    let u = st
        .service
        .get_user(&Actor::User(&caller), id)
        .await
        .map_err(svc(Format::Json))?;
    Ok(render::v4_user(&u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qsdk_prefix_is_optional_and_case_insensitive() {
        assert_eq!(strip_qsdk(b"QSDK abc"), b"abc");
        assert_eq!(strip_qsdk(b"qsdk   abc "), b"abc");
        assert_eq!(strip_qsdk(b"abc"), b"abc");
        assert_eq!(strip_qsdk(b"QSD"), b"QSD");
    }

    #[test]
    fn console_type_rule() {
        assert_eq!(console_type_for(Some(5), ""), ConsoleType::CommCellConsole);
        assert_eq!(console_type_for(Some(19), ""), ConsoleType::WebConsole);
        assert_eq!(
            console_type_for(Some(30), "Mozilla/5.0"),
            ConsoleType::CommandLine
        );
        assert_eq!(
            console_type_for(None, "Mozilla/5.0 (X11)"),
            ConsoleType::WebConsole
        );
        assert_eq!(
            console_type_for(None, "python-requests/2"),
            ConsoleType::CommandLine
        );
    }

    #[test]
    fn query_parsing() {
        assert_eq!(session_user_id("userId=5"), Ok(5));
        assert_eq!(session_user_id("USERID=%35&x=1"), Ok(5));
        assert_eq!(session_user_id("x=1&userid=+-7+"), Ok(-7));
        assert_eq!(session_user_id(""), Err("the userId parameter is required"));
        assert_eq!(
            session_user_id("userId=1&userId=2"),
            Err("userId is given more than once")
        );
        assert_eq!(
            session_user_id("userId=%zz"),
            Err("userId must be a whole number")
        );
        assert_eq!(
            session_user_id("userId=5x"),
            Err("userId must be a whole number")
        );
    }
}
