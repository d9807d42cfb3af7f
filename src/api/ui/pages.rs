//! The console's handlers: extract, call the service, render or redirect.

use super::views::{self, Chrome, render};
use super::{UiCaller, UiError, UiForm, origin, read_fields};
use crate::api::native::wire;
use crate::api::{AppState, ClientAddr, websession};
use crate::domain::{
    AuditKind, ClientInfo, ConsoleType, Dialect, Permission, Role, SessionId, UserId,
};
use crate::service::{Actor, AuditFilter, LoginRequest, UserChanges, UserInput};
use crate::store::StateFilter;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::SecretString;
use serde::Deserialize;

type Result<T> = std::result::Result<T, UiError>;

/// Rows per page.
const PAGE: usize = 50;

/// `/ui`: the sessions view (or the sign-in page, by way of it).
pub async fn home() -> Redirect {
    Redirect::to("/ui/sessions")
}

/// The header of a signed-in page. Whether to show the Users link is only
/// presentation: every user operation is authorized by the service.
async fn chrome(st: &AppState, ui: &UiCaller, active: &'static str) -> Result<Chrome> {
    let user = st.service.caller_user(&ui.caller).await?;
    Ok(Chrome {
        can_manage: user.permissions().has(Permission::UserManagement),
        user_name: user.name.clone(),
        user_id: user.id.0,
        csrf: ui.csrf(),
        active,
    })
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

fn parse_session_id(raw: &str) -> Result<SessionId> {
    SessionId::parse(raw).ok_or_else(|| UiError::BadRequest("that is not a session id".into()))
}

fn parse_user_id(raw: &str) -> Result<UserId> {
    raw.trim()
        .parse::<i64>()
        .map(UserId)
        .map_err(|_| UiError::BadRequest("that is not a user id".into()))
}

/// Percent-encodes a query parameter value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- sign-in ----

#[derive(Deserialize)]
pub struct NoticeParams {
    notice: Option<String>,
}

fn login_page(
    st: &AppState,
    status: axum::http::StatusCode,
    username: String,
    error: Option<String>,
    notice: Option<&'static str>,
) -> Response {
    let Some(csrf) = websession::random_hex() else {
        return UiError::Service(crate::service::ServiceError::Unavailable(anyhow::anyhow!(
            "OS RNG failed"
        )))
        .into_response();
    };
    let cookie = websession::login_csrf_cookie(&csrf, st.secure_transport);
    let page = views::LoginPage {
        csrf,
        username,
        error,
        notice,
    };
    (status, [(header::SET_COOKIE, cookie)], render(&page)).into_response()
}

pub async fn login_form(State(st): State<AppState>, Query(p): Query<NoticeParams>) -> Response {
    login_page(
        &st,
        axum::http::StatusCode::OK,
        String::new(),
        None,
        views::notice_text(p.notice.as_deref()),
    )
}

/// Signs in with the same service login as every dialect (lockout and throttling
/// included), as console type "sessiond web console".
pub async fn login(State(st): State<AppState>, addr: ClientAddr, req: Request) -> Response {
    let headers = req.headers().clone();
    let fields = match read_fields(req, &st).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let username = fields.get("username").unwrap_or("").trim().to_string();
    let expected = websession::cookie_value(&headers, websession::LOGIN_CSRF_COOKIE);
    let presented = fields.get("csrf").unwrap_or("");
    if !expected.is_some_and(|e| websession::equal(e.as_bytes(), presented.as_bytes())) {
        let (status, message) = UiError::Csrf.parts();
        return login_page(&st, status, username, Some(message), None);
    }
    let req = LoginRequest {
        username: username.clone(),
        password: SecretString::from(fields.get("password").unwrap_or("").to_string()),
        client: ClientInfo {
            host: addr.host(),
            user_agent: user_agent(&headers),
            device_id: String::new(),
            description: "sessiond web console".into(),
        },
        console_type: ConsoleType::AdminConsole,
        dialect: Dialect::WebConsole,
        requested_idle_timeout: None,
    };
    match st.service.login(req).await {
        Ok(out) => {
            let cookie = websession::session_cookie(&out.token.to_hex(), st.secure_transport);
            ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/sessions")).into_response()
        }
        Err(e) => {
            e.log_if_internal();
            let (status, message) = UiError::Service(e).parts();
            login_page(&st, status, username, Some(message), None)
        }
    }
}

fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(256)
        .collect()
}

pub async fn logout(State(st): State<AppState>, addr: ClientAddr, form: UiForm) -> Response {
    // Already ended elsewhere: signing out still clears the cookie.
    match st.service.logout(&form.ui.caller, &origin(&addr)).await {
        Ok(()) | Err(crate::service::ServiceError::Unauthenticated) => {}
        Err(e) => return UiError::Service(e).into_response(),
    }
    (
        [(
            header::SET_COOKIE,
            websession::clear_session_cookie(st.secure_transport),
        )],
        Redirect::to("/ui/login?notice=signed-out"),
    )
        .into_response()
}

// ---- sessions ----

#[derive(Deserialize)]
pub struct SessionParams {
    user: Option<String>,
    state: Option<String>,
    cursor: Option<String>,
    notice: Option<String>,
}

pub async fn sessions(
    State(st): State<AppState>,
    ui: UiCaller,
    Query(p): Query<SessionParams>,
) -> Result<Response> {
    let chrome = chrome(&st, &ui, "sessions").await?;
    let actor = Actor::User(&ui.caller);
    let (state, state_key) = match p.state.as_deref().unwrap_or("live") {
        "live" => (StateFilter::Live, "live"),
        "ended" => (StateFilter::Ended, "ended"),
        "all" => (StateFilter::Any, "all"),
        other => {
            return Err(UiError::BadRequest(format!(
                "unknown state {other:?}: use live, ended or all"
            )));
        }
    };
    let filter_user = p.user.as_deref().unwrap_or("").trim().to_string();
    // A user administrator sees everyone by default; anyone else their own sessions.
    let user = if !filter_user.is_empty() {
        Some(st.service.find_user(&actor, &filter_user).await?.id)
    } else if chrome.can_manage {
        None
    } else {
        Some(ui.caller.user_id())
    };
    let after = p
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(wire::parse_session_cursor)
        .transpose()
        .map_err(|_| UiError::BadRequest("that page link is not valid".into()))?;
    let listing = st
        .service
        .list_sessions(&actor, user, state, None, after, PAGE)
        .await?;
    let now = st.service.now();
    let rows = listing
        .sessions
        .iter()
        .map(|v| views::SessionRow::new(v, now, ui.caller.session.id))
        .collect();
    let next = listing.next.map(|c| {
        format!(
            "/ui/sessions?user={}&state={state_key}&cursor={}",
            encode(&filter_user),
            wire::session_cursor(c)
        )
    });
    let newest = format!(
        "/ui/sessions?user={}&state={state_key}",
        encode(&filter_user)
    );
    let page = views::SessionsPage {
        chrome,
        rows,
        filter_user,
        filter_user_id: user.map(|u| u.0.to_string()).unwrap_or_default(),
        state: state_key,
        first_page: after.is_none(),
        newest,
        next,
        now_ms: now.unix_millis(),
        notice: views::notice_text(p.notice.as_deref()),
    };
    Ok(render(&page))
}

pub async fn end_session_confirm(
    State(st): State<AppState>,
    ui: UiCaller,
    Path(id): Path<String>,
) -> Result<Response> {
    let chrome = chrome(&st, &ui, "sessions").await?;
    let view = st
        .service
        .get_session(&Actor::User(&ui.caller), parse_session_id(&id)?)
        .await?;
    let row = views::SessionRow::new(&view, st.service.now(), ui.caller.session.id);
    let own = if row.current {
        " This is the session you are using: you will be signed out."
    } else {
        ""
    };
    let page = views::ConfirmPage {
        chrome,
        title: "End session".into(),
        question: format!("End this session of {}?{own}", row.user),
        details: vec![
            ("User", row.user.clone()),
            ("Host", row.host.clone()),
            ("Client", row.client.to_string()),
            ("Signed in", row.login.clone()),
            ("State", row.state.clone()),
        ],
        action: format!("/ui/sessions/{}/end", row.id),
        button: "End session",
        cancel: "/ui/sessions".into(),
    };
    Ok(render(&page))
}

pub async fn end_session(
    State(st): State<AppState>,
    addr: ClientAddr,
    Path(id): Path<String>,
    form: UiForm,
) -> Result<Response> {
    let id = parse_session_id(&id)?;
    st.service
        .end_sessions(&Actor::User(&form.ui.caller), &[id], &origin(&addr))
        .await?;
    if id == form.ui.caller.session.id {
        return Ok(see_other("/ui/login?notice=signed-out"));
    }
    Ok(see_other("/ui/sessions?notice=ended"))
}

pub async fn end_user_sessions_confirm(
    State(st): State<AppState>,
    ui: UiCaller,
    Path(id): Path<String>,
) -> Result<Response> {
    let chrome = chrome(&st, &ui, "sessions").await?;
    let user = st
        .service
        .get_user(&Actor::User(&ui.caller), parse_user_id(&id)?)
        .await?;
    let own = if user.id == ui.caller.user_id() {
        " This includes the session you are using: you will be signed out."
    } else {
        ""
    };
    let page = views::ConfirmPage {
        chrome,
        title: "End all sessions of a user".into(),
        question: format!("End every live session of {}?{own}", user.name),
        details: vec![("User", user.name.clone())],
        action: format!("/ui/users/{}/end-sessions", user.id.0),
        button: "End all sessions",
        cancel: "/ui/sessions".into(),
    };
    Ok(render(&page))
}

pub async fn end_user_sessions(
    State(st): State<AppState>,
    addr: ClientAddr,
    Path(id): Path<String>,
    form: UiForm,
) -> Result<Response> {
    let user = parse_user_id(&id)?;
    st.service
        .end_user_sessions(&Actor::User(&form.ui.caller), user, &origin(&addr))
        .await?;
    if user == form.ui.caller.user_id() {
        return Ok(see_other("/ui/login?notice=signed-out"));
    }
    Ok(see_other("/ui/sessions?notice=ended-all"))
}

// ---- users ----

#[derive(Deserialize)]
pub struct PageParams {
    cursor: Option<String>,
    notice: Option<String>,
}

fn role_options(checked: &[String]) -> Vec<views::RoleOption> {
    Role::BUILTIN
        .iter()
        .map(|r| views::RoleOption {
            name: r.name,
            description: r.description,
            checked: checked.iter().any(|c| c == r.name),
        })
        .collect()
}

pub async fn users(
    State(st): State<AppState>,
    ui: UiCaller,
    Query(p): Query<PageParams>,
) -> Result<Response> {
    let after = p
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(parse_user_id)
        .transpose()?;
    let users = st
        .service
        .list_users_to_manage(&Actor::User(&ui.caller), after, PAGE)
        .await?;
    let next = (users.len() == PAGE)
        .then(|| users.last().map(|u| format!("/ui/users?cursor={}", u.id.0)))
        .flatten();
    let page = views::UsersPage {
        chrome: chrome(&st, &ui, "users").await?,
        users: users.iter().map(Into::into).collect(),
        roles: role_options(&[]),
        next,
        notice: views::notice_text(p.notice.as_deref()),
    };
    Ok(render(&page))
}

pub async fn create_user(
    State(st): State<AppState>,
    addr: ClientAddr,
    form: UiForm,
) -> Result<Response> {
    let f = &form.fields;
    let user = st
        .service
        .create_user(
            &Actor::User(&form.ui.caller),
            UserInput {
                name: f.require("name")?.trim().to_string(),
                password: SecretString::from(f.require("password")?.to_string()),
                roles: f.all("role"),
                full_name: f.get("full_name").unwrap_or("").trim().to_string(),
                email: f.get("email").unwrap_or("").trim().to_string(),
                description: String::new(),
                enabled: true,
            },
            &origin(&addr),
        )
        .await?;
    Ok(see_other(&format!(
        "/ui/users/{}?notice=created",
        user.id.0
    )))
}

pub async fn user(
    State(st): State<AppState>,
    ui: UiCaller,
    Path(id): Path<String>,
    Query(p): Query<NoticeParams>,
) -> Result<Response> {
    let actor = Actor::User(&ui.caller);
    // The same gate as the list: this page is for user administrators.
    st.service.list_users_to_manage(&actor, None, 1).await?;
    let user = st.service.get_user(&actor, parse_user_id(&id)?).await?;
    let live = st
        .service
        .list_sessions(
            &actor,
            Some(user.id),
            StateFilter::Live,
            None,
            None,
            crate::service::MAX_PAGE,
        )
        .await?
        .sessions
        .len() as u64;
    let page = views::UserPage {
        chrome: chrome(&st, &ui, "users").await?,
        roles: role_options(&user.roles),
        user: (&user).into(),
        live_sessions: live,
        notice: views::notice_text(p.notice.as_deref()),
    };
    Ok(render(&page))
}

async fn change_user(
    st: &AppState,
    addr: &ClientAddr,
    form: &UiForm,
    id: &str,
    changes: UserChanges,
) -> Result<Response> {
    let id = parse_user_id(id)?;
    st.service
        .update_user(&Actor::User(&form.ui.caller), id, changes, &origin(addr))
        .await?;
    Ok(see_other(&format!("/ui/users/{}?notice=saved", id.0)))
}

pub async fn set_enabled(
    State(st): State<AppState>,
    addr: ClientAddr,
    Path(id): Path<String>,
    form: UiForm,
) -> Result<Response> {
    let enabled = match form.fields.require("enabled")? {
        "true" => true,
        "false" => false,
        _ => return Err(UiError::BadRequest("enabled must be true or false".into())),
    };
    let changes = UserChanges {
        enabled: Some(enabled),
        ..UserChanges::default()
    };
    change_user(&st, &addr, &form, &id, changes).await
}

pub async fn set_roles(
    State(st): State<AppState>,
    addr: ClientAddr,
    Path(id): Path<String>,
    form: UiForm,
) -> Result<Response> {
    let changes = UserChanges {
        roles: Some(form.fields.all("role")),
        ..UserChanges::default()
    };
    change_user(&st, &addr, &form, &id, changes).await
}

/// An administrator sets someone's password (which ends their sessions); one's
/// own needs the current password, as on `/v1`.
pub async fn set_password(
    State(st): State<AppState>,
    addr: ClientAddr,
    Path(id): Path<String>,
    form: UiForm,
) -> Result<Response> {
    let id = parse_user_id(&id)?;
    let new = SecretString::from(form.fields.require("password")?.to_string());
    if id == form.ui.caller.user_id() {
        let current = SecretString::from(
            form.fields
                .get("current_password")
                .unwrap_or("")
                .to_string(),
        );
        st.service
            .change_own_password(&form.ui.caller, &current, &new, &origin(&addr))
            .await?;
        return Ok(see_other(&format!("/ui/users/{}?notice=saved", id.0)));
    }
    st.service
        .set_password(&Actor::User(&form.ui.caller), id, &new, &origin(&addr))
        .await?;
    Ok(see_other(&format!("/ui/users/{}?notice=password", id.0)))
}

// ---- audit ----

#[derive(Deserialize)]
pub struct AuditParams {
    user: Option<String>,
    kind: Option<String>,
    cursor: Option<String>,
}

pub async fn audit(
    State(st): State<AppState>,
    ui: UiCaller,
    Query(p): Query<AuditParams>,
) -> Result<Response> {
    let actor = Actor::User(&ui.caller);
    let filter_user = p.user.as_deref().unwrap_or("").trim().to_string();
    let user = if filter_user.is_empty() {
        None
    } else {
        Some(st.service.find_user(&actor, &filter_user).await?.id)
    };
    let kind = p.kind.as_deref().unwrap_or("").trim().to_string();
    let kinds = if kind.is_empty() {
        Vec::new()
    } else {
        vec![
            AuditKind::from_key(&kind)
                .ok_or_else(|| UiError::BadRequest(format!("unknown event kind {kind:?}")))?,
        ]
    };
    let before_id = p
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| UiError::BadRequest("that page link is not valid".into()))
        })
        .transpose()?;
    let page = st
        .service
        .query_audit(
            &actor,
            AuditFilter {
                user,
                kinds,
                since: None,
                until: None,
                before_id,
                limit: PAGE,
            },
        )
        .await?;
    let next = page.next.map(|id| {
        format!(
            "/ui/audit?user={}&kind={}&cursor={id}",
            encode(&filter_user),
            encode(&kind)
        )
    });
    let view = views::AuditPage {
        chrome: chrome(&st, &ui, "audit").await?,
        rows: page.events.iter().map(Into::into).collect(),
        filter_user,
        kind,
        kinds: AuditKind::ALL.iter().map(|k| k.key()).collect(),
        next,
    };
    Ok(render(&view))
}
