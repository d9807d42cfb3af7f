//! Legacy REST: `/rest/com/vmware/cis/session`.
//!
//! - `POST` with `Authorization: Basic` creates a session: 200 `{"value":"<id>"}` and
//!   the cookie `vmware-api-session-id` (Path `/rest`, HttpOnly, SameSite=Strict, and
//!   Secure when served over TLS),
//!   unless the request sends `vmware-use-header-authn: true`.
//! - `POST ?~action=get` answers `{"value":{"user","created_time","last_accessed_time"}}`
//!   (and, like every authenticated call, updates the last access).
//! - `DELETE` ends the session: 200 with an empty body (and an expired cookie when
//!   the request came with the cookie).
//!
//! The session id is taken from the `vmware-api-session-id` header or, when the
//! header is absent, from the cookie of that name. Request bodies are read only to
//! enforce the size limit (these operations take no input).

use super::error::{RestError, VsError};
use super::{
    SESSION_ID_HEADER, authenticate, basic_credentials, body_bytes, login, session_id_header,
    session_info,
};
use crate::api::json_text::JsonText;
use crate::api::{AppState, ClientAddr, single_query_param};
use crate::api::{Json, LimitedBytes, limited_body};
use crate::domain::{ConsoleType, Dialect};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use cookie::Cookie;
use std::borrow::Cow;

pub const SESSION_PATH: &str = "/rest/com/vmware/cis/session";

/// `POST`: create, or the operation `~action` names (served before the router,
/// `api::direct`).
pub async fn create_or_action(st: AppState, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let answer = async {
        body_bytes(limited_body(body, &st).await).map_err(VsError::legacy)?;
        match action(parts.uri.query()).map_err(VsError::legacy)? {
            // Boxed: the login branch's future is large, and every get would carry it.
            None => {
                let addr = ClientAddr::of(&parts.headers, &st);
                Box::pin(create(&st, addr, &parts.headers))
                    .await
                    .map_err(VsError::legacy)
            }
            Some(Action::Get) => get(&st, &parts.headers).await.map_err(VsError::legacy),
        }
    };
    answer.await.into_response()
}

pub enum Action {
    Get,
}

/// The `~action` query parameter; other parameters are ignored.
fn action(query: Option<&str>) -> Result<Option<Action>, VsError> {
    let first = single_query_param(query.unwrap_or_default(), |k| k == "~action")
        .map_err(|_| VsError::bad_request("~action is given more than once"))?;
    let Some(first) = first else {
        return Ok(None);
    };
    match first.as_ref() {
        "get" => Ok(Some(Action::Get)),
        other => Err(VsError::bad_request(format!(
            "unknown ~action {:?} (this resource has \"get\")",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

async fn create(st: &AppState, addr: ClientAddr, headers: &HeaderMap) -> Result<Response, VsError> {
    let creds = basic_credentials(headers)?;
    let out = login(st, creds, ConsoleType::VsphereRest, headers, addr).await?;
    let id = out.token.to_hex();
    let header_authn = headers
        .get("vmware-use-header-authn")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let mut resp = Json(Value { value: &id }).into_response();
    if !header_authn {
        let cookie = Cookie::build((SESSION_ID_HEADER, id))
            .path("/rest")
            .http_only(true)
            .same_site(cookie::SameSite::Strict)
            .secure(st.secure_transport)
            .build();
        set_cookie(&mut resp, &cookie);
    }
    Ok(resp)
}

async fn get(st: &AppState, headers: &HeaderMap) -> Result<Response, VsError> {
    let id = session_id(headers)?;
    let caller = authenticate(st, id.as_deref()).await?;
    let info = session_info(&caller, &st.dialects.vsphere_domain);
    let mut out = JsonText::new();
    out.raw(r#"{"value":"#);
    info.write_json(&mut out);
    out.raw("}");
    Ok(out.answer(crate::api::APPLICATION_JSON))
}

/// `DELETE`: ends the session.
pub async fn delete(
    State(st): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
    LimitedBytes(body): LimitedBytes,
) -> Result<Response, RestError> {
    async {
        body_bytes(body)?;
        let id = session_id(&headers)?;
        let caller = authenticate(&st, id.as_deref()).await?;
        st.service
            .logout(&caller, &addr.origin(Dialect::Vsphere))
            .await?;
        let mut resp = ().into_response();
        if session_cookie(&headers).is_some() {
            let expired = Cookie::build((SESSION_ID_HEADER, ""))
                .path("/rest")
                .http_only(true)
                .same_site(cookie::SameSite::Strict)
                .secure(st.secure_transport)
                .max_age(cookie::time::Duration::ZERO)
                .build();
            set_cookie(&mut resp, &expired);
        }
        Ok(resp)
    }
    .await
    .map_err(VsError::legacy)
}

/// Any other path or method under `/rest`.
pub async fn no_operation(method: Method, uri: Uri) -> RestError {
    let path: String = uri.path().chars().take(200).collect();
    VsError::NoOperation(format!("{method} {path}")).legacy()
}

/// The session id: the header (borrowed: the usual case), else the cookie.
fn session_id(headers: &HeaderMap) -> Result<Option<Cow<'_, str>>, VsError> {
    Ok(session_id_header(headers)?
        .map(Cow::Borrowed)
        .or_else(|| session_cookie(headers).map(Cow::Owned)))
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    crate::api::websession::cookie_value(headers, SESSION_ID_HEADER)
}

fn set_cookie(resp: &mut Response, cookie: &Cookie<'_>) {
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; vmware-api-session-id=abc; b=2".parse().unwrap(),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        assert_eq!(session_id(&h).unwrap().as_deref(), Some("abc"));
        h.insert(SESSION_ID_HEADER, "from-header".parse().unwrap());
        assert_eq!(session_id(&h).unwrap().as_deref(), Some("from-header"));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }
}

/// The legacy REST envelope `{"value": ...}`, serialized straight from the value
/// (the session get is the hot path: no intermediate `serde_json::Value`).
#[derive(serde::Serialize)]
struct Value<T> {
    value: T,
}
