//! sessiond's own API under `/v1`: JSON, described by the OpenAPI document at
//! `/v1/openapi.json` (generated from these handlers and `wire`; checked into
//! `docs/openapi.json`).
//!
//! The caller authenticates with `Authorization: Bearer <token>` (the secret
//! `POST /v1/login` returns, the same one other dialects carry). Handlers only
//! extract, call the service and map; errors go through `error`'s one table.

mod error;
mod extract;
pub mod openapi;
pub mod wire;

pub use error::{ErrorBody, NativeError};

use super::{AppState, ClientAddr};
use crate::api::Json;
use crate::api::json_text::JsonText;
use crate::domain::{self, ClientInfo, ConsoleType, Dialect, SessionId, UserId};
use crate::service::{Actor, AuditFilter, LoginRequest, UserChanges, UserInput};
use crate::store::StateFilter;
use axum::Router;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use extract::{NJson, NQuery, NativeCaller};
use secrecy::SecretString;
use std::time::Duration;

type Result<T> = std::result::Result<T, NativeError>;

/// Routes of the dialect, written out under `/v1` rather than nested there (a
/// nested router rebuilds every request's URI to strip the prefix); anything else
/// under `/v1` is the dialect's 404.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/openapi.json", get(openapi_document))
        .route("/v1/login", post(login))
        .route("/v1/logout", post(logout))
        .route("/v1/session", get(crate::api::handler(current_session)))
        .route("/v1/sessions", get(list_sessions))
        .route("/v1/sessions/revoke", post(revoke_sessions))
        .route("/v1/sessions/{id}", get(get_session).delete(delete_session))
        .route("/v1/users", get(list_users).post(create_user))
        .route(
            "/v1/users/{id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route("/v1/users/{id}/password", put(set_password))
        .route("/v1/roles", get(roles))
        .route("/v1/audit", get(audit))
        .route("/v1/events", get(events))
        .route("/v1", any(no_route))
        .route("/v1/{*rest}", any(no_route))
        .method_not_allowed_fallback(method_not_allowed)
}

/// `GET /v1/session`, served before the router (`api::direct`).
pub fn direct_routes() -> Vec<crate::api::Direct> {
    vec![crate::api::Direct::new(
        axum::http::Method::GET,
        "/v1/session",
        crate::api::Get::Native,
    )]
}

async fn no_route() -> NativeError {
    NativeError::NoRoute
}

async fn method_not_allowed() -> NativeError {
    NativeError::MethodNotAllowed
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of /v1", content_type = "application/json")))]
async fn openapi_document() -> Response {
    (
        [(header::CONTENT_TYPE, crate::api::APPLICATION_JSON)],
        openapi::document(),
    )
        .into_response()
}

fn origin(addr: &ClientAddr) -> crate::service::Origin {
    addr.origin(Dialect::Native)
}

fn session_id(raw: &str) -> Result<SessionId> {
    SessionId::parse(raw)
        .ok_or_else(|| NativeError::bad_request(format!("{raw:?} is not a session id")))
}

fn user_id(raw: &str) -> Result<UserId> {
    raw.trim()
        .parse::<i64>()
        .map(UserId)
        .map_err(|_| NativeError::bad_request("the user id must be a whole number"))
}

// ---- sign-in ----

/// Sign in: opens a session and returns its token (once).
#[utoipa::path(post, path = "/v1/login", tag = "session", security(()),
    request_body = wire::LoginRequest,
    responses(
        (status = 201, description = "Signed in", body = wire::LoginResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Wrong user name or password, or disabled account", body = ErrorBody),
        (status = 409, description = "Per-user session limit reached (`too_many_sessions`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Locked out after failed logins (`locked`, `Retry-After`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
async fn login(
    State(st): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
    NJson(body): NJson<wire::LoginRequest>,
) -> Result<(StatusCode, Json<wire::LoginResponse>)> {
    let user_agent: String = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(256)
        .collect();
    let req = LoginRequest {
        username: body.username,
        password: SecretString::from(body.password),
        client: ClientInfo {
            host: addr.host(),
            user_agent,
            device_id: String::new(),
            description: String::new(),
        },
        console_type: ConsoleType::NativeApi,
        dialect: Dialect::Native,
        requested_idle_timeout: body
            .idle_timeout_minutes
            .map(|m| Duration::from_secs(m.saturating_mul(60))),
    };
    let out = st.service.login(req).await?;
    let view = crate::service::SessionView {
        state: out.session.state_at(st.service.now()),
        session: out.session,
    };
    Ok((
        StatusCode::CREATED,
        Json(wire::LoginResponse {
            token: out.token.to_hex(),
            session: wire::Session::from_view(&view, view.session.id),
        }),
    ))
}

/// Sign out: ends the caller's session.
#[utoipa::path(post, path = "/v1/logout", tag = "session",
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn logout(
    State(st): State<AppState>,
    addr: ClientAddr,
    NativeCaller(caller): NativeCaller,
) -> Result<StatusCode> {
    st.service.logout(&caller, &origin(&addr)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's session (this call counts as activity) and user.
#[utoipa::path(get, path = "/v1/session", tag = "session",
    responses(
        (status = 200, description = "The current session", body = wire::CurrentSession),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(crate) async fn current_session(st: AppState, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let answer = async {
        let NativeCaller(caller) = NativeCaller::from_request_parts(&mut parts, &st).await?;
        let user = st.service.caller_user(&caller).await?;
        let session = &caller.session;
        // At the request's own time (no second reading of the clock).
        let state = session.state_at_after_access(caller.last_accessed_at, caller.last_accessed_at);
        let mut out = JsonText::new();
        wire::CurrentSession::write_json(&mut out, session, caller.last_accessed_at, state, &user);
        Ok::<_, NativeError>(out.answer(crate::api::APPLICATION_JSON))
    };
    answer.await.into_response()
}

// ---- sessions ----

/// Sessions, newest first. Without user management, only your own (`user=<your id>`).
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    params(wire::SessionListParams),
    responses(
        (status = 200, description = "A page of sessions", body = wire::SessionPage),
        (status = 400, description = "Bad parameter or cursor", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs user management", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
    ))]
async fn list_sessions(
    State(st): State<AppState>,
    NativeCaller(caller): NativeCaller,
    NQuery(p): NQuery<wire::SessionListParams>,
) -> Result<Json<wire::SessionPage>> {
    let state = match p.state.unwrap_or(wire::StateParam::Live) {
        wire::StateParam::Live => StateFilter::Live,
        wire::StateParam::Ended => StateFilter::Ended,
        wire::StateParam::All => StateFilter::Any,
    };
    let after = p
        .cursor
        .as_deref()
        .map(wire::parse_session_cursor)
        .transpose()?;
    let limit = wire::page_limit(p.limit)?;
    let page = st
        .service
        .list_sessions(
            &Actor::User(&caller),
            p.user.map(UserId),
            state,
            p.host,
            after,
            limit,
        )
        .await?;
    Ok(Json(wire::SessionPage {
        items: page
            .sessions
            .iter()
            .map(|v| wire::Session::from_view(v, caller.session.id))
            .collect(),
        next_cursor: page.next.map(wire::session_cursor),
    }))
}

/// One session. Another user's needs user management (404 otherwise).
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id (GUID)")),
    responses(
        (status = 200, description = "The session", body = wire::Session),
        (status = 400, description = "Not a session id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "Unknown, or not yours to see", body = ErrorBody),
    ))]
async fn get_session(
    State(st): State<AppState>,
    NativeCaller(caller): NativeCaller,
    Path(id): Path<String>,
) -> Result<Json<wire::Session>> {
    let view = st
        .service
        .get_session(&Actor::User(&caller), session_id(&id)?)
        .await?;
    Ok(Json(wire::Session::from_view(&view, caller.session.id)))
}

/// Ends a session (reason `revoked`). Another user's needs user management.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id (GUID)")),
    responses(
        (status = 204, description = "Ended (or had already ended)"),
        (status = 400, description = "Not a session id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs user management", body = ErrorBody),
        (status = 404, description = "Unknown session", body = ErrorBody),
    ))]
async fn delete_session(
    State(st): State<AppState>,
    addr: ClientAddr,
    NativeCaller(caller): NativeCaller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    st.service
        .end_sessions(&Actor::User(&caller), &[session_id(&id)?], &origin(&addr))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every live session of a user (`user_id`; another user's needs user
/// management), or all of your own but this one (`all_except_current`).
#[utoipa::path(post, path = "/v1/sessions/revoke", tag = "sessions",
    request_body = wire::RevokeRequest,
    responses(
        (status = 200, description = "How many sessions ended", body = wire::RevokeResult),
        (status = 400, description = "Neither or both of user_id and all_except_current", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs user management", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
    ))]
async fn revoke_sessions(
    State(st): State<AppState>,
    addr: ClientAddr,
    NativeCaller(caller): NativeCaller,
    NJson(body): NJson<wire::RevokeRequest>,
) -> Result<Json<wire::RevokeResult>> {
    let ended = match (body.user_id, body.all_except_current) {
        (Some(u), false) => {
            st.service
                .end_user_sessions(&Actor::User(&caller), UserId(u), &origin(&addr))
                .await?
        }
        (None, true) => {
            st.service
                .end_other_sessions(&caller, &origin(&addr))
                .await?
        }
        _ => {
            return Err(NativeError::bad_request(
                "give either user_id or all_except_current: true",
            ));
        }
    };
    Ok(Json(wire::RevokeResult { ended }))
}

// ---- users ----

/// Users by ascending id. Without "View" or user management, only yourself.
#[utoipa::path(get, path = "/v1/users", tag = "users",
    params(wire::PageParams),
    responses(
        (status = 200, description = "A page of users", body = wire::UserPage),
        (status = 400, description = "Bad parameter or cursor", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn list_users(
    State(st): State<AppState>,
    NativeCaller(caller): NativeCaller,
    NQuery(p): NQuery<wire::PageParams>,
) -> Result<Json<wire::UserPage>> {
    let after = p
        .cursor
        .as_deref()
        .map(|c| wire::parse_id_cursor("u", c).map(UserId))
        .transpose()?;
    let limit = wire::page_limit(p.limit)?;
    let users = st
        .service
        .list_users(&Actor::User(&caller), after, limit)
        .await?;
    let next_cursor = (users.len() == limit)
        .then(|| users.last().map(|u| wire::id_cursor("u", u.id.0)))
        .flatten();
    Ok(Json(wire::UserPage {
        items: users.iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Creates a user. Needs user management, and every permission the roles grant.
#[utoipa::path(post, path = "/v1/users", tag = "users",
    request_body = wire::NewUser,
    responses(
        (status = 201, description = "Created", body = wire::User),
        (status = 400, description = "Invalid name, password, role or field", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs user management (or a permission the roles grant)", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
    ))]
async fn create_user(
    State(st): State<AppState>,
    addr: ClientAddr,
    NativeCaller(caller): NativeCaller,
    NJson(body): NJson<wire::NewUser>,
) -> Result<(StatusCode, Json<wire::User>)> {
    let user = st
        .service
        .create_user(
            &Actor::User(&caller),
            UserInput {
                name: body.name,
                password: SecretString::from(body.password),
                roles: body.roles,
                full_name: body.full_name,
                email: body.email,
                description: body.description,
                enabled: body.enabled,
            },
            &origin(&addr),
        )
        .await?;
    Ok((StatusCode::CREATED, Json((&user).into())))
}

/// One user: yourself, or anyone with "View" or user management.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = wire::User),
        (status = 400, description = "Not a user id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs View", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
    ))]
async fn get_user(
    State(st): State<AppState>,
    NativeCaller(caller): NativeCaller,
    Path(id): Path<String>,
) -> Result<Json<wire::User>> {
    let user = st
        .service
        .get_user(&Actor::User(&caller), user_id(&id)?)
        .await?;
    Ok(Json((&user).into()))
}

/// Changes a user. Needs user management; disabling ends the user's sessions.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    request_body = wire::UserPatch,
    responses(
        (status = 200, description = "The changed user", body = wire::User),
        (status = 400, description = "Invalid field or role", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs user management, or disabling yourself", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
    ))]
async fn update_user(
    State(st): State<AppState>,
    addr: ClientAddr,
    NativeCaller(caller): NativeCaller,
    Path(id): Path<String>,
    NJson(body): NJson<wire::UserPatch>,
) -> Result<Json<wire::User>> {
    let user = st
        .service
        .update_user(
            &Actor::User(&caller),
            user_id(&id)?,
            UserChanges {
                full_name: body.full_name,
                email: body.email,
                description: body.description,
                enabled: body.enabled,
                roles: body.roles,
            },
            &origin(&addr),
        )
        .await?;
    Ok(Json((&user).into()))
}

/// Deletes a user and ends their sessions (which stay listed as history).
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not a user id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs user management, or deleting yourself", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
    ))]
async fn delete_user(
    State(st): State<AppState>,
    addr: ClientAddr,
    NativeCaller(caller): NativeCaller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    st.service
        .delete_user(&Actor::User(&caller), user_id(&id)?, &origin(&addr))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a password. Your own needs `current_password` (and keeps this session;
/// your other sessions end if so configured); anyone else's needs user management
/// and ends all of their sessions.
#[utoipa::path(put, path = "/v1/users/{id}/password", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    request_body = wire::PasswordChange,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Too short or long, or wrong or missing current password", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs user management", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
        (status = 429, description = "Locked out after wrong current passwords", body = ErrorBody),
    ))]
async fn set_password(
    State(st): State<AppState>,
    addr: ClientAddr,
    NativeCaller(caller): NativeCaller,
    Path(id): Path<String>,
    NJson(body): NJson<wire::PasswordChange>,
) -> Result<StatusCode> {
    let id = user_id(&id)?;
    let new = SecretString::from(body.password);
    if id == caller.user_id() {
        let current = body.current_password.ok_or_else(|| {
            NativeError::bad_request("current_password is required to change your own password")
        })?;
        st.service
            .change_own_password(&caller, &SecretString::from(current), &new, &origin(&addr))
            .await?;
    } else {
        st.service
            .set_password(&Actor::User(&caller), id, &new, &origin(&addr))
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The built-in roles and the permissions they grant.
#[utoipa::path(get, path = "/v1/roles", tag = "users",
    responses(
        (status = 200, description = "Roles", body = Vec<wire::Role>),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn roles(NativeCaller(_caller): NativeCaller) -> Json<Vec<wire::Role>> {
    Json(domain::Role::BUILTIN.iter().map(Into::into).collect())
}

// ---- audit ----

/// Audit events, newest first. Without "View", only events by or about yourself.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(wire::AuditParams),
    responses(
        (status = 200, description = "A page of events", body = wire::AuditPage),
        (status = 400, description = "Bad kind, instant, limit or cursor", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs View (for other users' events)", body = ErrorBody),
    ))]
async fn audit(
    State(st): State<AppState>,
    NativeCaller(caller): NativeCaller,
    NQuery(p): NQuery<wire::AuditParams>,
) -> Result<Json<wire::AuditPage>> {
    let kinds = match p.kind.as_deref() {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| {
                domain::AuditKind::from_key(k)
                    .ok_or_else(|| NativeError::bad_request(format!("unknown event kind {k:?}")))
            })
            .collect::<Result<_>>()?,
    };
    let filter = AuditFilter {
        user: p.user.map(UserId),
        kinds,
        since: p
            .since
            .as_deref()
            .map(|s| wire::parse_instant("since", s))
            .transpose()?,
        until: p
            .until
            .as_deref()
            .map(|s| wire::parse_instant("until", s))
            .transpose()?,
        before_id: p
            .cursor
            .as_deref()
            .map(|c| wire::parse_id_cursor("a", c))
            .transpose()?,
        limit: wire::page_limit(p.limit)?,
    };
    let page = st
        .service
        .query_audit(&Actor::User(&caller), filter)
        .await?;
    Ok(Json(wire::AuditPage {
        items: page.events.iter().map(Into::into).collect(),
        next_cursor: page.next.map(|id| wire::id_cursor("a", id)),
    }))
}

// ---- live events ----

/// Live events as server-sent events (`text/event-stream`), for as long as the
/// caller's session lives. A user administrator sees every user's events, anyone
/// else only their own. Events are per instance. Each SSE message has `event:`
/// set to the type and `data:` one JSON `LiveEvent`: `ready`, `session.started`,
/// `session.touched`, `session.ended`, `user.changed`, or `resync` when the
/// subscriber fell behind. A comment line keeps the connection alive every 15 s.
/// Also accepts the web console's cookie. See `docs/events.md`.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    responses(
        (status = 200, description = "An endless stream of events (`event: <type>`, `data: <LiveEvent JSON>`)",
            content_type = "text/event-stream", body = wire::LiveEvent),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn events(
    State(st): State<AppState>,
    NativeCaller(caller): NativeCaller,
) -> Result<Response> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    use std::convert::Infallible;

    let sub = st.service.subscribe_events(&caller).await?;
    let scope = if sub.sees_everyone() { "all" } else { "own" };
    let sse = |e: &wire::LiveEvent| -> std::result::Result<Event, Infallible> {
        Ok(Event::default()
            .event(e.name())
            .json_data(e)
            .unwrap_or_else(|_| Event::default().comment("unencodable event")))
    };
    let ready = sse(&wire::LiveEvent::Ready { scope });
    let current = caller.session.id;
    let service = st.service.clone();
    let stop = st.shutting_down.clone();
    let rest = futures_util::stream::unfold(sub, move |mut sub| {
        let stop = stop.clone();
        let service = service.clone();
        async move {
            let delivery = tokio::select! {
                () = stop.cancelled() => None,
                d = sub.next() => d,
            }?;
            let wire = match delivery {
                crate::service::Delivery::Event(e) => {
                    wire::LiveEvent::from_event(&e, service.now(), current)
                }
                crate::service::Delivery::Lagged(missed) => wire::LiveEvent::Resync { missed },
            };
            Some((sse(&wire), sub))
        }
    });
    let stream = futures_util::stream::once(async move { ready }).chain(rest);
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
        .into_response())
}
