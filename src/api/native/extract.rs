//! Extractors of the native API: the caller, JSON bodies and query strings, each
//! rejecting in the native error shape.

use super::error::NativeError;
use crate::api::{AppState, websession};
use crate::service::{Caller, ServiceError};
use axum::extract::FromRef;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use serde::de::DeserializeOwned;

/// The authenticated caller of a `/v1` request.
///
/// Credentials are looked for in [`credential`]'s sources, in order:
/// `Authorization: Bearer <token>`, then the web console's session cookie (see
/// `api::websession`), which on any method but `GET` and `HEAD` also needs the
/// session's CSRF token in `X-CSRF-Token` (403 otherwise).
pub struct NativeCaller(pub Caller);

/// A credential a request presented, before it is checked.
enum Credential<'a> {
    /// The token as the header's bytes (the token's parse checks them; a header
    /// value's own text check would double that work on every request).
    Bearer(&'a [u8]),
    ConsoleCookie(String),
}

/// The request's credential, if it presents one. A malformed or foreign
/// `Authorization` header is an authentication failure, not "no credential".
fn credential(parts: &Parts) -> Result<Option<Credential<'_>>, NativeError> {
    let Some(value) = crate::api::header(&parts.headers, &AUTHORIZATION) else {
        return Ok(
            websession::cookie_value(&parts.headers, websession::SESSION_COOKIE)
                .map(Credential::ConsoleCookie),
        );
    };
    let value = value.as_bytes().trim_ascii();
    match value.iter().position(|&b| b == b' ') {
        Some(i) if value[..i].eq_ignore_ascii_case(b"bearer") => {
            Ok(Some(Credential::Bearer(value[i + 1..].trim_ascii())))
        }
        _ => Err(NativeError::Service(ServiceError::Unauthenticated)),
    }
}

impl FromRequestParts<AppState> for NativeCaller {
    type Rejection = NativeError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match credential(parts)? {
            Some(Credential::Bearer(token)) => {
                Ok(NativeCaller(state.service.authenticate(token).await?))
            }
            Some(Credential::ConsoleCookie(token)) => {
                let caller = state.service.authenticate(token.as_bytes()).await?;
                let safe = parts.method == Method::GET || parts.method == Method::HEAD;
                let presented = parts
                    .headers
                    .get(websession::CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !safe && !websession::csrf_matches(&token, presented) {
                    return Err(NativeError::CsrfMismatch);
                }
                Ok(NativeCaller(caller))
            }
            None => Err(ServiceError::Unauthenticated.into()),
        }
    }
}

/// A JSON body (`Content-Type: application/json`); 400 or 413 in shape otherwise.
pub struct NJson<T>(pub T);

impl<T, S> FromRequest<S> for NJson<T>
where
    T: DeserializeOwned,
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = NativeError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let req = crate::api::limited(req, &AppState::from_ref(state));
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(NJson(v)),
            Err(r) => Err(json_rejection(&r)),
        }
    }
}

fn json_rejection(r: &JsonRejection) -> NativeError {
    match r {
        _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => NativeError::TooLarge,
        JsonRejection::MissingJsonContentType(_) => {
            NativeError::bad_request("expected a JSON body (Content-Type: application/json)")
        }
        JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
            NativeError::bad_request(format!("invalid JSON body: {}", r.body_text()))
        }
        _ => NativeError::bad_request("could not read the request body"),
    }
}

/// Query parameters; unknown or malformed ones are 400 in shape.
pub struct NQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for NQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = NativeError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(NQuery(v)),
            Err(r) => Err(query_rejection(&r)),
        }
    }
}

fn query_rejection(r: &QueryRejection) -> NativeError {
    NativeError::bad_request(format!("invalid query parameters: {}", r.body_text()))
}
