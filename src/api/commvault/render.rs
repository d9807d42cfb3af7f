//! Commvault response documents, in XML and JSON.

use super::error::{CvError, CvErrorKind};
use super::wire::{Format, JSON_CONTENT_TYPE, XmlDoc, json_response};
use crate::api::json_text::JsonText;
use crate::domain::{Role, SessionState, SessionToken, User};
use crate::service::{LoginOutcome, ServiceError, SessionRow, SessionRows};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

fn qsdk(token: &SessionToken) -> String {
    format!("QSDK {}", token.to_hex())
}

// ---- Login ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoginOk<'a> {
    alias_name: String,
    #[serde(rename = "userGUID")]
    user_guid: &'a str,
    login_attempts: u32,
    remaining_lock_time: u64,
    smtp_address: &'a str,
    user_name: &'a str,
    provider_type: i32,
    ccn: i32,
    token: String,
    capability: i64,
    force_password_change: bool,
    is_account_locked: bool,
    err_list: [(); 0],
}

pub fn login_success(fmt: Format, out: &LoginOutcome) -> Response {
    let token = qsdk(&out.token);
    let alias = out.user.id.to_string();
    match fmt {
        Format::Json => json_response(&LoginOk {
            alias_name: alias,
            user_guid: &out.user.guid,
            login_attempts: 0,
            remaining_lock_time: 0,
            smtp_address: &out.user.email,
            user_name: &out.user.name,
            provider_type: 1,
            ccn: 0,
            token,
            capability: 0,
            force_password_change: false,
            is_account_locked: false,
            err_list: [],
        }),
        Format::Xml => {
            let mut d = XmlDoc::new();
            d.empty(
                "DM2ContentIndexing_CheckCredentialResp",
                &[
                    ("aliasName", &alias),
                    ("userGUID", &out.user.guid),
                    ("loginAttempts", "0"),
                    ("remainingLockTime", "0"),
                    ("smtpAddress", &out.user.email),
                    ("userName", &out.user.name),
                    ("providerType", "1"),
                    ("ccn", "0"),
                    ("token", &token),
                    ("capability", "0"),
                    ("forcePasswordChange", "false"),
                    ("isAccountLocked", "false"),
                ],
            );
            d.into_response()
        }
    }
}

/// A refused login: HTTP 200 with `errList`, as cvpysdk expects.
pub fn login_failure(fmt: Format, e: &ServiceError) -> Response {
    let (code, message, locked_for) = match e {
        ServiceError::InvalidCredentials => (5, "Invalid Username or Password".to_string(), None),
        ServiceError::AccountDisabled => (5, "User account is disabled".to_string(), None),
        ServiceError::AccountLocked { retry_after } => (
            5,
            "User account is locked; try again later".to_string(),
            Some(retry_after.as_secs().max(1)),
        ),
        ServiceError::SessionLimitReached => (
            5,
            "Maximum number of sessions reached for this user".to_string(),
            None,
        ),
        other => {
            // Not a credential problem: answer with the ordinary error table.
            let (_, code, msg) = CvError::new(
                fmt,
                CvErrorKind::Service(ServiceError::Invalid(other.to_string())),
            )
            .parts();
            (code, msg, None)
        }
    };
    let locked = locked_for.is_some();
    let remaining = locked_for.unwrap_or(0);
    match fmt {
        Format::Json => json_response(&serde_json::json!({
            "loginAttempts": 0,
            "remainingLockTime": remaining,
            "isAccountLocked": locked,
            "errList": [{"errorCode": code, "errLogMessage": message}],
        })),
        Format::Xml => {
            let mut d = XmlDoc::new();
            d.start(
                "DM2ContentIndexing_CheckCredentialResp",
                &[
                    ("loginAttempts", "0"),
                    ("remainingLockTime", &remaining.to_string()),
                    ("isAccountLocked", if locked { "true" } else { "false" }),
                ],
            );
            d.empty(
                "errList",
                &[
                    ("errorCode", &code.to_string()),
                    ("errLogMessage", &message),
                ],
            );
            d.end("DM2ContentIndexing_CheckCredentialResp");
            d.into_response()
        }
    }
}

/// A malformed login request: 400, carrying both the generic error fields and
/// `errList` so that any client finds a message.
pub fn login_bad_request(e: CvError) -> Response {
    let (status, code, message) = e.parts();
    let mut resp = match e.fmt {
        Format::Json => json_response(&serde_json::json!({
            "errorCode": code,
            "errorMessage": message,
            "errList": [{"errorCode": code, "errLogMessage": message}],
        })),
        Format::Xml => {
            let mut d = XmlDoc::new();
            d.start(
                "DM2ContentIndexing_CheckCredentialResp",
                &[("errorCode", &code.to_string()), ("errorMessage", &message)],
            );
            d.empty(
                "errList",
                &[
                    ("errorCode", &code.to_string()),
                    ("errLogMessage", &message),
                ],
            );
            d.end("DM2ContentIndexing_CheckCredentialResp");
            d.into_response()
        }
    };
    *resp.status_mut() = status;
    resp
}

pub fn renewed(fmt: Format, token: &SessionToken) -> Response {
    let token = qsdk(token);
    match fmt {
        Format::Json => json_response(&serde_json::json!({ "token": token, "errList": [] })),
        Format::Xml => {
            let mut d = XmlDoc::new();
            d.empty(
                "DM2ContentIndexing_RenewLoginTokenResp",
                &[("token", &token)],
            );
            d.into_response()
        }
    }
}

pub fn who_am_i(fmt: Format, user: &User) -> Response {
    match fmt {
        Format::Json => json_response(&serde_json::json!({
            "user": {"userName": user.name, "userId": user.id.0, "userGUID": user.guid}
        })),
        Format::Xml => {
            let mut d = XmlDoc::new();
            d.start("CvEntities_ProcessingInstructionInfo", &[]);
            d.empty(
                "user",
                &[
                    ("userName", &user.name),
                    ("userId", &user.id.to_string()),
                    ("userGUID", &user.guid),
                ],
            );
            d.end("CvEntities_ProcessingInstructionInfo");
            d.into_response()
        }
    }
}

// ---- Sessions ----

#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionJson<'a> {
    logout_time: i64,
    login_time: i64,
    last_accessed_time: i64,
    host: &'a str,
    description: &'a str,
    session_id: crate::api::Guid,
    browser_session_id: i64,
    console_type: i32,
    user: SessionUserJson<'a>,
}

#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionUserJson<'a> {
    user_name: &'a str,
    user_id: i64,
}

/// The document: `{"sessions":[...]}` (the writer below makes it without
/// collecting the sessions first; the test holds the two to the same bytes).
#[cfg(test)]
#[derive(Serialize)]
struct SessionsJson<'a> {
    sessions: Vec<SessionJson<'a>>,
}

/// [`SessionsJson`] of `sessions` by hand: `GET Session` is how Commvault clients
/// check their token (see `api::json_text`).
fn write_sessions_json<'a>(
    out: &mut JsonText,
    sessions: impl IntoIterator<Item = SessionJson<'a>>,
) {
    out.raw(r#"{"sessions":["#);
    for (i, s) in sessions.into_iter().enumerate() {
        if i > 0 {
            out.raw(",");
        }
        out.raw(r#"{"logoutTime":"#)
            .int(s.logout_time)
            .raw(r#","loginTime":"#)
            .int(s.login_time)
            .raw(r#","lastAccessedTime":"#)
            .int(s.last_accessed_time)
            .raw(r#","host":"#)
            .str(s.host)
            .raw(r#","description":"#)
            .str(s.description)
            .raw(r#","sessionId":"#)
            .guid(s.session_id)
            .raw(r#","browserSessionId":"#)
            .int(s.browser_session_id)
            .raw(r#","consoleType":"#)
            .int(s.console_type)
            .raw(r#","user":{"userName":"#)
            .str(s.user.user_name)
            .raw(r#","userId":"#)
            .int(s.user.user_id)
            .raw("}}");
    }
    out.raw("]}");
}

fn logout_time(v: &SessionRow<'_>) -> i64 {
    match v.state {
        SessionState::Live => 0,
        SessionState::Ended(end) => end.at.unix_seconds(),
    }
}

fn session_json(v: SessionRow<'_>) -> SessionJson<'_> {
    let s = v.session;
    SessionJson {
        logout_time: logout_time(&v),
        login_time: s.created_at.unix_seconds(),
        last_accessed_time: v.last_accessed_at.unix_seconds(),
        host: &s.client.host,
        description: &s.client.description,
        session_id: crate::api::Guid(s.id),
        browser_session_id: s.browser_session_id,
        console_type: s.console_type.code(),
        user: SessionUserJson {
            user_name: &s.user_name,
            user_id: s.user_id.0,
        },
    }
}

pub fn sessions(fmt: Format, rows: &SessionRows) -> Response {
    match fmt {
        Format::Json => {
            let mut out = JsonText::new();
            write_sessions_json(&mut out, rows.iter().map(session_json));
            out.answer(JSON_CONTENT_TYPE)
        }
        Format::Xml => {
            let mut d = XmlDoc::new();
            d.start("Api_GetLoggedInSessionsResp", &[]);
            for v in rows.iter() {
                let s = v.session;
                d.start(
                    "sessions",
                    &[
                        ("logoutTime", &logout_time(&v).to_string()),
                        ("loginTime", &s.created_at.unix_seconds().to_string()),
                        (
                            "lastAccessedTime",
                            &v.last_accessed_at.unix_seconds().to_string(),
                        ),
                        ("host", &s.client.host),
                        ("description", &s.client.description),
                        ("sessionId", &s.id.to_string()),
                        ("browserSessionId", &s.browser_session_id.to_string()),
                        ("consoleType", &s.console_type.code().to_string()),
                    ],
                );
                d.empty(
                    "user",
                    &[
                        ("userName", &s.user_name),
                        ("userId", &s.user_id.to_string()),
                    ],
                );
                d.end("sessions");
            }
            d.end("Api_GetLoggedInSessionsResp");
            d.into_response()
        }
    }
}

pub fn logoff_done(fmt: Format) -> Response {
    match fmt {
        Format::Json => json_response(&serde_json::json!({})),
        Format::Xml => {
            let mut d = XmlDoc::new();
            d.empty("Api_LogoffUsersResponse", &[]);
            d.into_response()
        }
    }
}

// ---- Users ----

fn user_json(u: &User) -> serde_json::Value {
    serde_json::json!({
        "userEntity": {"userName": u.name, "userGUID": u.guid, "userId": u.id.0},
        "email": u.email,
        "fullName": u.full_name,
        "description": u.description,
        "enableUser": u.enabled,
    })
}

fn user_xml(d: &mut XmlDoc, u: &User) {
    d.start(
        "users",
        &[
            ("email", &u.email),
            ("fullName", &u.full_name),
            ("description", &u.description),
            ("enableUser", if u.enabled { "true" } else { "false" }),
        ],
    );
    d.empty(
        "userEntity",
        &[
            ("userName", &u.name),
            ("userGUID", &u.guid),
            ("userId", &u.id.to_string()),
        ],
    );
    d.end("users");
}

/// `GET User` and `GET User/{id}` share one document shape.
pub fn users(fmt: Format, list: &[User]) -> Response {
    match fmt {
        Format::Json => json_response(&serde_json::json!({
            "users": list.iter().map(user_json).collect::<Vec<_>>()
        })),
        Format::Xml => {
            let mut d = XmlDoc::new();
            d.start("App_GetUserPropertiesResponse", &[]);
            for u in list {
                user_xml(&mut d, u);
            }
            d.end("App_GetUserPropertiesResponse");
            d.into_response()
        }
    }
}

pub fn user_properties(fmt: Format, u: &User) -> Response {
    users(fmt, std::slice::from_ref(u))
}

fn role_id(name: &str) -> i64 {
    Role::BUILTIN
        .iter()
        .position(|r| r.name == name)
        .map_or(0, |i| i as i64 + 1)
}

/// `GET User/{id}/Security`: the user's roles as CommCell-wide associations.
pub fn security_associations(fmt: Format, u: &User) -> Response {
    match fmt {
        Format::Json => json_response(&serde_json::json!({
            "associations": u.roles.iter().map(|r| serde_json::json!({
                "entities": {"entity": [{"commCellName": "sessiond", "_type_": 1}]},
                "properties": {"role": {"roleId": role_id(r), "roleName": r}},
            })).collect::<Vec<_>>()
        })),
        Format::Xml => {
            let mut d = XmlDoc::new();
            d.start("App_SecurityAssociationsResp", &[]);
            for r in &u.roles {
                d.start("associations", &[]);
                d.start("entities", &[]);
                d.empty("entity", &[("commCellName", "sessiond"), ("_type_", "1")]);
                d.end("entities");
                d.start("properties", &[]);
                d.empty(
                    "role",
                    &[("roleId", &role_id(r).to_string()), ("roleName", r)],
                );
                d.end("properties");
                d.end("associations");
            }
            d.end("App_SecurityAssociationsResp");
            d.into_response()
        }
    }
}

fn v4_user_json(u: &User) -> serde_json::Value {
    serde_json::json!({
        "id": u.id.0,
        "name": u.name,
        "fullName": u.full_name,
        "email": u.email,
        "description": u.description,
        "enabled": u.enabled,
        "GUID": u.guid,
        "userPrincipalName": "",
    })
}

pub fn v4_users(list: &[User]) -> Response {
    json_response(&serde_json::json!({
        "users": list.iter().map(v4_user_json).collect::<Vec<_>>()
    }))
}

pub fn v4_user(u: &User) -> Response {
    json_response(&v4_user_json(u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_json_by_hand_is_its_serde_form() {
        let one = |odd: &'static str, n: i64| SessionJson {
            logout_time: n,
            login_time: -n,
            last_accessed_time: i64::MAX,
            host: odd,
            description: odd,
            session_id: crate::api::Guid(crate::domain::SessionId(uuid::Uuid::from_u128(
                n as u128,
            ))),
            browser_session_id: n,
            console_type: 13,
            user: SessionUserJson {
                user_name: odd,
                user_id: n,
            },
        };
        for list in [
            vec![],
            vec![one("10.0.0.1", 1)],
            vec![one("a\"b\\\u{1}é", 0), one("", 2)],
        ] {
            let mut out = JsonText::new();
            write_sessions_json(&mut out, list.iter().copied());
            let doc = SessionsJson { sessions: list };
            assert_eq!(out.as_str(), serde_json::to_string(&doc).unwrap());
        }
    }
}
