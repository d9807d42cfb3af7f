//! The admin web console under `/ui`: server-rendered pages (askama templates in
//! `templates/ui/`, compiled into the binary) and a little plain JavaScript that
//! follows `/v1/events`.
//!
//! Handlers only extract, call the service (the same operations and authorization
//! as `/v1`) and render. The caller is the session in the console cookie
//! ([`UiCaller`]); every POST goes through [`UiForm`], which checks the form's CSRF
//! token before the handler runs (see `api::websession`). Errors are rendered by
//! [`UiError`], the console's one error table.

mod pages;
mod views;

use super::websession;
use super::{AppState, ClientAddr};
use crate::domain::Dialect;
use crate::service::{Caller, Origin, ServiceError};
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use pages::home;

/// The console's routes (absolute paths under `/ui`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(home))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/sessions", get(pages::sessions))
        .route(
            "/ui/sessions/{id}/end",
            get(pages::end_session_confirm).post(pages::end_session),
        )
        .route("/ui/users", get(pages::users).post(pages::create_user))
        .route("/ui/users/{id}", get(pages::user))
        .route("/ui/users/{id}/enabled", post(pages::set_enabled))
        .route("/ui/users/{id}/password", post(pages::set_password))
        .route("/ui/users/{id}/roles", post(pages::set_roles))
        .route(
            "/ui/users/{id}/end-sessions",
            get(pages::end_user_sessions_confirm).post(pages::end_user_sessions),
        )
        .route("/ui/audit", get(pages::audit))
        .route("/ui/static/console.css", get(css))
        .route("/ui/static/console.js", get(js))
        .layer(axum::middleware::map_response(security_headers))
}

/// Headers on every console response: no framing, no foreign scripts, no caching
/// of pages that show sessions.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../../templates/ui/static/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../../templates/ui/static/console.js"),
    )
        .into_response()
}

fn origin(addr: &ClientAddr) -> Origin {
    addr.origin(Dialect::WebConsole)
}

/// The signed-in console user: the live session the cookie names.
pub struct UiCaller {
    pub caller: Caller,
    /// The session secret from the cookie (for the CSRF token; never rendered).
    token: String,
}

impl UiCaller {
    /// The CSRF token forms of this session carry.
    pub fn csrf(&self) -> String {
        websession::csrf_for(&self.token)
    }
}

impl FromRequestParts<AppState> for UiCaller {
    type Rejection = UiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = websession::cookie_value(&parts.headers, websession::SESSION_COOKIE)
            .ok_or(UiError::SignIn)?;
        match state.service.authenticate(token.as_bytes()).await {
            Ok(caller) => Ok(UiCaller { caller, token }),
            Err(ServiceError::Unauthenticated) => Err(UiError::SignIn),
            Err(e) => Err(e.into()),
        }
    }
}

/// A POSTed form of a signed-in user whose CSRF token (field `csrf`) matched.
pub struct UiForm {
    pub ui: UiCaller,
    pub fields: Fields,
}

/// Form fields in order (names may repeat, e.g. checkboxes).
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field that must be there (400 otherwise).
    pub fn require(&self, name: &str) -> Result<&str, UiError> {
        self.get(name)
            .ok_or_else(|| UiError::BadRequest(format!("the form lacks the field {name:?}")))
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// Reads an `application/x-www-form-urlencoded` body into [`Fields`].
async fn read_fields(req: Request, state: &AppState) -> Result<Fields, UiError> {
    let req = crate::api::limited(req, state);
    match axum::Form::<Vec<(String, String)>>::from_request(req, state).await {
        Ok(axum::Form(v)) => Ok(Fields(v)),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(UiError::BadRequest("the form is too large".into()))
        }
        Err(_) => Err(UiError::BadRequest("could not read the form".into())),
    }
}

impl FromRequest<AppState> for UiForm {
    type Rejection = UiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let ui = UiCaller::from_request_parts(&mut parts, state).await?;
        let fields = read_fields(Request::from_parts(parts, body), state).await?;
        let presented = fields.get("csrf").unwrap_or("");
        if !websession::csrf_matches(&ui.token, presented) {
            return Err(UiError::Csrf);
        }
        Ok(UiForm { ui, fields })
    }
}

/// The console's one error table: a page with the status, or a redirect to sign in.
#[derive(Debug)]
pub enum UiError {
    /// No valid session: go to the sign-in page.
    SignIn,
    /// A POST without the session's CSRF token: 403.
    Csrf,
    BadRequest(String),
    Service(ServiceError),
}

impl From<ServiceError> for UiError {
    fn from(e: ServiceError) -> Self {
        UiError::Service(e)
    }
}

impl UiError {
    /// Status and message for people (never internal detail).
    pub fn parts(&self) -> (StatusCode, String) {
        use StatusCode as S;
        match self {
            UiError::SignIn => (S::UNAUTHORIZED, "Please sign in.".into()),
            UiError::Csrf => (
                S::FORBIDDEN,
                "This form has expired or did not come from this console. Reload the page and try again."
                    .into(),
            ),
            UiError::BadRequest(m) => (S::BAD_REQUEST, m.clone()),
            UiError::Service(e) => match e {
                ServiceError::Unauthenticated => (S::UNAUTHORIZED, "Please sign in.".into()),
                ServiceError::InvalidCredentials | ServiceError::AccountDisabled => (
                    S::UNAUTHORIZED,
                    "Wrong user name or password.".into(),
                ),
                ServiceError::AccountLocked { retry_after } => (
                    S::TOO_MANY_REQUESTS,
                    format!(
                        "Too many failed sign-ins: the account is locked. Try again in {}.",
                        views::wait_text(*retry_after)
                    ),
                ),
                ServiceError::Forbidden(p) => (
                    S::FORBIDDEN,
                    format!(
                        "You do not have permission to do this (it needs \u{201c}{}\u{201d}).",
                        p.display_name()
                    ),
                ),
                ServiceError::NotAllowed(why) => (S::FORBIDDEN, format!("Not allowed: {why}.")),
                ServiceError::NotFound(what) => (S::NOT_FOUND, format!("No such {what}.")),
                ServiceError::Invalid(m) => (S::BAD_REQUEST, format!("Invalid input: {m}.")),
                ServiceError::Conflict(m) => (S::CONFLICT, format!("Conflict: {m}.")),
                ServiceError::SessionLimitReached => (
                    S::CONFLICT,
                    "Too many sessions are open for this user; end one first.".into(),
                ),
                ServiceError::Unavailable(_) => (
                    S::SERVICE_UNAVAILABLE,
                    "Service unavailable. Try again shortly.".into(),
                ),
            },
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if let UiError::Service(e) = &self {
            e.log_if_internal();
        }
        if matches!(
            self,
            UiError::SignIn | UiError::Service(ServiceError::Unauthenticated)
        ) {
            return Redirect::to("/ui/login").into_response();
        }
        let (status, message) = self.parts();
        (status, views::render(&views::ErrorPage { status, message })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_status_for_people() {
        let cases = [
            (UiError::Csrf, 403),
            (UiError::BadRequest("x".into()), 400),
            (
                UiError::Service(ServiceError::Forbidden(
                    crate::domain::Permission::UserManagement,
                )),
                403,
            ),
            (UiError::Service(ServiceError::NotFound("session")), 404),
            (
                UiError::Service(ServiceError::Unavailable(anyhow::anyhow!("db gone"))),
                503,
            ),
        ];
        for (e, status) in cases {
            let (s, m) = e.parts();
            assert_eq!(s.as_u16(), status, "{e:?}");
            assert!(!m.contains("db gone"), "{m}");
        }
    }
}
