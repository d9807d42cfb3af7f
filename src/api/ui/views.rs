//! What the console's pages show: template types (askama, `templates/ui/`) and the
//! wording of times, durations, clients and dialects. `console.js` words live
//! updates the same way.

use crate::domain::{Dialect, EndReason, Session, SessionState, Timestamp};
use crate::service::SessionView;
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use std::time::Duration;

/// Renders a page (a template failure is a 500 whose cause goes to the log).
pub fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not render a console page");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

/// `2026-11-23 13:45 UTC`.
pub fn time_text(t: Timestamp) -> String {
    let s = t.to_string();
    match (s.get(..10), s.get(11..16)) {
        (Some(day), Some(hm)) => format!("{day} {hm} UTC"),
        _ => s,
    }
}

/// `2026-11-23 13:45:07 UTC`.
pub fn time_text_seconds(t: Timestamp) -> String {
    let s = t.to_string();
    match (s.get(..10), s.get(11..19)) {
        (Some(day), Some(hms)) => format!("{day} {hms} UTC"),
        _ => s,
    }
}

/// Minutes for people: `< 1 min`, `3 min`, `2 h 5 min`.
pub fn minutes_text(d: Duration) -> String {
    let m = d.as_secs() / 60;
    match m {
        0 => "< 1 min".into(),
        1..60 => format!("{m} min"),
        _ => format!("{} h {} min", m / 60, m % 60),
    }
}

/// How long to wait: seconds under a minute, else minutes (rounded up).
pub fn wait_text(d: Duration) -> String {
    let s = d.as_secs().max(1);
    if s < 60 {
        format!("{s} s")
    } else {
        format!("{} min", s.div_ceil(60))
    }
}

pub fn dialect_text(d: Dialect) -> &'static str {
    match d {
        Dialect::Commvault => "Commvault",
        Dialect::Vsphere => "vSphere",
        Dialect::Native => "native API",
        Dialect::WebConsole => "web console",
    }
}

pub fn reason_text(r: EndReason) -> &'static str {
    match r {
        EndReason::Logout => "signed out",
        EndReason::Idle => "idle timeout",
        EndReason::Absolute => "lifetime reached",
        EndReason::Revoked => "revoked",
        EndReason::Evicted => "evicted by a newer sign-in",
    }
}

/// The header of every signed-in page.
pub struct Chrome {
    pub user_name: String,
    pub user_id: i64,
    pub csrf: String,
    pub can_manage: bool,
    /// `sessions`, `users` or `audit`.
    pub active: &'static str,
}

/// A fixed message after a redirect, chosen by key (never echoed from the URL).
pub fn notice_text(key: Option<&str>) -> Option<&'static str> {
    Some(match key? {
        "ended" => "The session was ended.",
        "ended-all" => "The user's sessions were ended.",
        "signed-out" => "You have signed out.",
        "created" => "The user was created.",
        "saved" => "Saved.",
        "password" => "The password was set; the user's sessions were ended.",
        _ => return None,
    })
}

#[derive(Template)]
#[template(path = "ui/login.html")]
pub struct LoginPage {
    pub csrf: String,
    pub username: String,
    pub error: Option<String>,
    pub notice: Option<&'static str>,
}

/// One row of the sessions table.
pub struct SessionRow {
    pub id: String,
    pub user_id: i64,
    pub user: String,
    pub host: String,
    pub client: &'static str,
    pub console_code: i32,
    pub dialect: &'static str,
    pub login: String,
    pub login_iso: String,
    pub live: bool,
    pub current: bool,
    /// `idle 3 min` while live.
    pub idle: String,
    /// `13:45 UTC (in 27 min)` while live; the end time once ended.
    pub expiry: String,
    /// `live`, or `ended: <reason>`.
    pub state: String,
    pub last_access_ms: i64,
    pub idle_timeout_ms: i64,
    pub expires_ms: i64,
}

impl SessionRow {
    pub fn new(v: &SessionView, now: Timestamp, current: crate::domain::SessionId) -> Self {
        let s: &Session = &v.session;
        let (live, idle, expiry, state) = match v.state {
            SessionState::Live => {
                let deadline = s.deadline().at;
                (
                    true,
                    format!("idle {}", minutes_text(now.since(s.last_accessed_at))),
                    format!(
                        "{} (in {})",
                        time_text(deadline),
                        minutes_text(deadline.since(now))
                    ),
                    "live".to_string(),
                )
            }
            SessionState::Ended(end) => (
                false,
                "\u{2014}".to_string(),
                format!("ended {}", time_text(end.at)),
                format!("ended: {}", reason_text(end.reason)),
            ),
        };
        SessionRow {
            id: s.id.to_string(),
            user_id: s.user_id.0,
            user: s.user_name.clone(),
            host: s.client.host.clone(),
            client: s.console_type.describe(),
            console_code: s.console_type.code(),
            dialect: dialect_text(s.dialect),
            login: time_text(s.created_at),
            login_iso: s.created_at.to_string(),
            live,
            current: s.id == current,
            idle,
            expiry,
            state,
            last_access_ms: s.last_accessed_at.unix_millis(),
            idle_timeout_ms: crate::domain::duration_millis(s.idle_timeout),
            expires_ms: s.expires_at.unix_millis(),
        }
    }
}

#[derive(Template)]
#[template(path = "ui/sessions.html")]
pub struct SessionsPage {
    pub chrome: Chrome,
    pub rows: Vec<SessionRow>,
    /// The user filter as typed (a name), empty for all.
    pub filter_user: String,
    /// The filtered user's id for live updates, empty for all.
    pub filter_user_id: String,
    /// `live`, `ended` or `all`.
    pub state: &'static str,
    pub first_page: bool,
    /// The first page with the same filters.
    pub newest: String,
    pub next: Option<String>,
    pub now_ms: i64,
    pub notice: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "ui/confirm.html")]
pub struct ConfirmPage {
    pub chrome: Chrome,
    pub title: String,
    pub question: String,
    pub details: Vec<(&'static str, String)>,
    pub action: String,
    pub button: &'static str,
    pub cancel: String,
}

pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub full_name: String,
    pub email: String,
    pub enabled: bool,
    pub roles: String,
    pub created: String,
}

impl From<&crate::domain::User> for UserRow {
    fn from(u: &crate::domain::User) -> Self {
        UserRow {
            id: u.id.0,
            name: u.name.clone(),
            full_name: u.full_name.clone(),
            email: u.email.clone(),
            enabled: u.enabled,
            roles: if u.roles.is_empty() {
                "(none)".into()
            } else {
                u.roles.join(", ")
            },
            created: time_text(u.created_at),
        }
    }
}

/// A role checkbox.
pub struct RoleOption {
    pub name: &'static str,
    pub description: &'static str,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "ui/users.html")]
pub struct UsersPage {
    pub chrome: Chrome,
    pub users: Vec<UserRow>,
    pub roles: Vec<RoleOption>,
    pub next: Option<String>,
    pub notice: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "ui/user.html")]
pub struct UserPage {
    pub chrome: Chrome,
    pub user: UserRow,
    pub roles: Vec<RoleOption>,
    pub live_sessions: u64,
    pub notice: Option<&'static str>,
}

pub struct AuditRow {
    pub at: String,
    pub kind: &'static str,
    pub actor: String,
    pub subject: String,
    pub source: String,
    pub dialect: &'static str,
    pub detail: String,
}

impl From<&crate::domain::AuditEvent> for AuditRow {
    fn from(e: &crate::domain::AuditEvent) -> Self {
        let ev = &e.event;
        AuditRow {
            at: time_text_seconds(ev.at),
            kind: ev.kind.key(),
            actor: ev
                .actor
                .as_ref()
                .map_or_else(|| "\u{2014}".into(), |r| r.name.clone()),
            subject: ev
                .subject
                .as_ref()
                .map_or_else(String::new, |r| r.name.clone()),
            source: ev.source.clone(),
            dialect: ev.dialect.map_or("", dialect_text),
            detail: ev.detail.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "ui/audit.html")]
pub struct AuditPage {
    pub chrome: Chrome,
    pub rows: Vec<AuditRow>,
    pub filter_user: String,
    pub kind: String,
    pub kinds: Vec<&'static str>,
    pub next: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/error.html")]
pub struct ErrorPage {
    pub status: StatusCode,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(minutes_text(Duration::from_secs(59)), "< 1 min");
        assert_eq!(minutes_text(Duration::from_secs(180)), "3 min");
        assert_eq!(minutes_text(Duration::from_secs(7500)), "2 h 5 min");
        assert_eq!(wait_text(Duration::from_secs(0)), "1 s");
        assert_eq!(wait_text(Duration::from_secs(61)), "2 min");
        assert_eq!(
            time_text(Timestamp::from_unix_millis(1_420_150_385_651)),
            "2015-01-01 22:13 UTC"
        );
    }

    #[test]
    fn notices_come_from_a_fixed_list() {
        assert_eq!(notice_text(Some("ended")), Some("The session was ended."));
        assert_eq!(notice_text(Some("<script>")), None);
        assert_eq!(notice_text(None), None);
    }
}
