//! The RBAC matrix: every `/v1` endpoint and every Commvault and vSphere endpoint
//! that takes a token, called by {no token, plain user, view, user-admin, master},
//! with the exact status expected in each cell. (vAPI JSON-RPC always answers HTTP
//! 200; its cell holds the status its error kind stands for, 200 when it succeeded.)
//!
//! Each cell runs against fresh fixtures (a fresh caller with its own session, a
//! fresh plain "victim" user with a live session, a fresh master "peer"), so no
//! cell depends on another. Placeholders in paths and bodies:
//! `{self}` the caller's user id, `{own}` the caller's session id, `{victim}` /
//! `{victim_session}` / `{victim_name}` the victim, `{peer}` another master,
//! `{fresh}` an unused user name, `{pw}` the caller's password.
//! Without a token, `{self}` and `{own}` are the victim's.

use crate::support::TestApp;
use reqwest::Method;
use serde_json::Value;
use sessiond::service::Actor;
use std::collections::BTreeSet;

const CALLERS: [(&str, Option<&str>); 5] = [
    ("no token", None),
    ("plain", Some("")),
    ("view", Some("view")),
    ("user-admin", Some("user-admin")),
    ("master", Some("master")),
];

struct Row {
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    /// no token, plain, view, user-admin, master
    expect: [u16; 5],
}

fn row(method: Method, path: &'static str, body: Option<&'static str>, expect: [u16; 5]) -> Row {
    Row {
        method,
        path,
        body,
        expect,
    }
}

fn native_rows() -> Vec<Row> {
    use Method as M;
    vec![
        row(M::GET, "/v1/openapi.json", None, [200, 200, 200, 200, 200]),
        row(
            M::POST,
            "/v1/login",
            Some(r#"{"username":"{victim_name}","password":"victim-password"}"#),
            [201, 201, 201, 201, 201],
        ),
        row(M::POST, "/v1/logout", None, [401, 204, 204, 204, 204]),
        row(M::GET, "/v1/session", None, [401, 200, 200, 200, 200]),
        // An endless event stream: only its status is checked.
        row(M::GET, "/v1/events", None, [401, 200, 200, 200, 200]),
        row(M::GET, "/v1/sessions", None, [401, 403, 403, 200, 200]),
        row(
            M::GET,
            "/v1/sessions?user={self}",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            M::GET,
            "/v1/sessions?user={victim}",
            None,
            [401, 403, 403, 200, 200],
        ),
        row(
            M::GET,
            "/v1/sessions/{own}",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            M::GET,
            "/v1/sessions/{victim_session}",
            None,
            [401, 404, 404, 200, 200],
        ),
        row(
            M::DELETE,
            "/v1/sessions/{own}",
            None,
            [401, 204, 204, 204, 204],
        ),
        row(
            M::DELETE,
            "/v1/sessions/{victim_session}",
            None,
            [401, 403, 403, 204, 204],
        ),
        row(
            M::POST,
            "/v1/sessions/revoke",
            Some(r#"{"all_except_current":true}"#),
            [401, 200, 200, 200, 200],
        ),
        row(
            M::POST,
            "/v1/sessions/revoke",
            Some(r#"{"user_id":{victim}}"#),
            [401, 403, 403, 200, 200],
        ),
        row(M::GET, "/v1/users", None, [401, 200, 200, 200, 200]),
        row(
            M::POST,
            "/v1/users",
            Some(r#"{"name":"{fresh}","password":"fresh-password"}"#),
            [401, 403, 403, 201, 201],
        ),
        row(
            M::POST,
            "/v1/users",
            Some(r#"{"name":"{fresh}","password":"fresh-password","roles":["master"]}"#),
            [401, 403, 403, 403, 201],
        ),
        row(M::GET, "/v1/users/{self}", None, [401, 200, 200, 200, 200]),
        row(
            M::GET,
            "/v1/users/{victim}",
            None,
            [401, 403, 200, 200, 200],
        ),
        row(
            M::PATCH,
            "/v1/users/{victim}",
            Some(r#"{"description":"changed"}"#),
            [401, 403, 403, 200, 200],
        ),
        row(
            M::PATCH,
            "/v1/users/{peer}",
            Some(r#"{"description":"changed"}"#),
            [401, 403, 403, 403, 200],
        ),
        row(
            M::DELETE,
            "/v1/users/{victim}",
            None,
            [401, 403, 403, 204, 204],
        ),
        row(
            M::DELETE,
            "/v1/users/{peer}",
            None,
            [401, 403, 403, 403, 204],
        ),
        row(
            M::DELETE,
            "/v1/users/{self}",
            None,
            [401, 403, 403, 403, 403],
        ),
        row(
            M::PUT,
            "/v1/users/{self}/password",
            Some(r#"{"password":"another-password","current_password":"{pw}"}"#),
            [401, 204, 204, 204, 204],
        ),
        row(
            M::PUT,
            "/v1/users/{victim}/password",
            Some(r#"{"password":"another-password"}"#),
            [401, 403, 403, 204, 204],
        ),
        row(M::GET, "/v1/roles", None, [401, 200, 200, 200, 200]),
        row(M::GET, "/v1/audit", None, [401, 200, 200, 200, 200]),
        row(
            M::GET,
            "/v1/audit?user={self}",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            M::GET,
            "/v1/audit?user={victim}",
            None,
            [401, 403, 200, 200, 200],
        ),
    ]
}

fn commvault_rows() -> Vec<Row> {
    use Method as M;
    vec![
        row(
            M::POST,
            "/commandcenter/api/Logout",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            M::POST,
            "/commandcenter/api/RenewLoginToken",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            M::GET,
            "/commandcenter/api/WhoAmI",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            M::GET,
            "/commandcenter/api/Session?userId={self}",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            M::GET,
            "/commandcenter/api/Session?userId={victim}",
            None,
            [401, 403, 403, 200, 200],
        ),
        row(
            M::DELETE,
            "/commandcenter/api/Sessions",
            Some(r#"{"sessions":[{"val":"{own}"}]}"#),
            [401, 200, 200, 200, 200],
        ),
        row(
            M::DELETE,
            "/commandcenter/api/Sessions",
            Some(r#"{"sessions":[{"val":"{victim_session}"}]}"#),
            [401, 403, 403, 200, 200],
        ),
        row(
            M::GET,
            "/commandcenter/api/User",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            M::GET,
            "/commandcenter/api/User/{self}",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            M::GET,
            "/commandcenter/api/User/{victim}",
            None,
            [401, 403, 200, 200, 200],
        ),
        row(
            M::GET,
            "/commandcenter/api/User/{victim}/security",
            None,
            [401, 403, 200, 200, 200],
        ),
        row(
            M::GET,
            "/commandcenter/api/v4/User",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            M::GET,
            "/commandcenter/api/v4/User/{victim}",
            None,
            [401, 403, 200, 200, 200],
        ),
    ]
}

const JSONRPC_GET: &str = r#"{"jsonrpc":"2.0","method":"invoke","id":"7","params":{"serviceId":"com.vmware.cis.session","operationId":"get","input":{"STRUCTURE":{"operation-input":{}}},"ctx":{"securityCtx":{"schemeId":"com.vmware.vapi.std.security.session_id","sessionId":"{token}"}}}}"#;

fn vsphere_rows() -> Vec<Row> {
    use Method as M;
    vec![
        row(
            M::POST,
            "/rest/com/vmware/cis/session?~action=get",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            M::DELETE,
            "/rest/com/vmware/cis/session",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(M::GET, "/api/session", None, [401, 200, 200, 200, 200]),
        row(M::DELETE, "/api/session", None, [401, 204, 204, 204, 204]),
        row(
            M::POST,
            "/api",
            Some(JSONRPC_GET),
            [401, 200, 200, 200, 200],
        ),
    ]
}

/// How a dialect carries the token and shapes its errors.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Native,
    Commvault,
    Vsphere,
}

/// The status a response stands for: its HTTP status, or for vAPI JSON-RPC (always
/// 200) the status of the error kind it carries.
fn effective_status(dialect: Dialect, http: u16, body: &Value) -> u16 {
    if dialect != Dialect::Vsphere || body.get("jsonrpc").is_none() {
        return http;
    }
    let Some(error) = body["result"]["error"]["ERROR"].as_object() else {
        return http;
    };
    match error.keys().next().map(String::as_str) {
        Some("com.vmware.vapi.std.errors.unauthenticated") => 401,
        Some("com.vmware.vapi.std.errors.unauthorized") => 403,
        Some("com.vmware.vapi.std.errors.not_found") => 404,
        Some("com.vmware.vapi.std.errors.service_unavailable") => 503,
        _ => 400,
    }
}

/// The fixtures of one cell.
struct Cell {
    vars: Vec<(&'static str, String)>,
    token: Option<String>,
}

impl Cell {
    fn fill(&self, template: &str) -> String {
        self.vars
            .iter()
            .fold(template.to_string(), |t, (k, v)| t.replace(k, v))
    }
}

async fn cell(app: &TestApp, n: usize, caller: usize) -> Cell {
    let victim_name = format!("victim{n}");
    let victim = app.add_user(&victim_name, "victim-password", &[]).await;
    let (_, victim_session) = app.v1_login(&victim_name, "victim-password").await;
    let peer = app
        .add_user(&format!("peer{n}"), "peer-password", &["master"])
        .await;
    let mut vars = vec![
        (
            "{victim_session}",
            victim_session["id"].as_str().unwrap().to_string(),
        ),
        ("{victim_name}", victim_name),
        ("{victim}", victim.id.0.to_string()),
        ("{peer}", peer.id.0.to_string()),
        ("{fresh}", format!("fresh{n}")),
    ];
    let token = match CALLERS[caller].1 {
        None => {
            vars.push(("{token}", String::new()));
            vars.push(("{self}", victim.id.0.to_string()));
            vars.push(("{own}", victim_session["id"].as_str().unwrap().to_string()));
            vars.push(("{pw}", "victim-password".into()));
            None
        }
        Some(role) => {
            let name = format!("caller{n}");
            let roles: Vec<&str> = if role.is_empty() { vec![] } else { vec![role] };
            let me = app.add_user(&name, "caller-password", &roles).await;
            let (token, session) = app.v1_login(&name, "caller-password").await;
            vars.push(("{self}", me.id.0.to_string()));
            vars.push(("{own}", session["id"].as_str().unwrap().to_string()));
            vars.push(("{pw}", "caller-password".into()));
            vars.push(("{token}", token.clone()));
            Some(token)
        }
    };
    Cell { vars, token }
}

async fn run(app: &TestApp, rows: &[Row], dialect: Dialect, n: &mut usize) -> Vec<String> {
    let mut failures = Vec::new();
    for r in rows {
        for (caller, (who, _)) in CALLERS.iter().enumerate() {
            *n += 1;
            let cell = cell(app, *n, caller).await;
            let mut req = app
                .http
                .request(r.method.clone(), app.url(&cell.fill(r.path)));
            if let Some(t) = &cell.token {
                req = match dialect {
                    Dialect::Commvault => req.header("Authtoken", format!("QSDK {t}")),
                    Dialect::Native => req.bearer_auth(t),
                    Dialect::Vsphere => req.header("vmware-api-session-id", t),
                };
            }
            if dialect == Dialect::Commvault {
                req = req.header("Accept", "application/json");
            }
            if let Some(b) = r.body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(cell.fill(b));
            }
            let resp = req.send().await.unwrap();
            let http = resp.status().as_u16();
            let streaming = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            // An event stream never ends: dropping the response closes it.
            let text = if streaming {
                String::new()
            } else {
                resp.text().await.unwrap()
            };
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let got = effective_status(dialect, http, &v);
            if got != r.expect[caller] {
                failures.push(format!(
                    "{} {} as {who}: expected {}, got {got}: {text}",
                    r.method, r.path, r.expect[caller]
                ));
            }
            // Error answers are in the dialect's shape.
            if got >= 400 {
                let shaped = match dialect {
                    Dialect::Commvault => v["errorCode"].is_i64(),
                    Dialect::Native => v["error"]["code"].is_string(),
                    Dialect::Vsphere => {
                        v["type"].is_string()
                            || v["error_type"].is_string()
                            || v["result"]["error"]["ERROR"].is_object()
                    }
                };
                if !shaped {
                    failures.push(format!(
                        "{} {} as {who}: not in shape: {text}",
                        r.method, r.path
                    ));
                }
            }
        }
    }
    failures
}

#[tokio::test]
async fn every_endpoint_by_every_kind_of_caller() {
    let app = TestApp::spawn().await;
    let mut n = 0;
    let mut failures = run(&app, &native_rows(), Dialect::Native, &mut n).await;
    failures.extend(run(&app, &commvault_rows(), Dialect::Commvault, &mut n).await);
    failures.extend(run(&app, &vsphere_rows(), Dialect::Vsphere, &mut n).await);
    assert!(
        failures.is_empty(),
        "{} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The matrix covers every operation of the OpenAPI document, and nothing else.
#[test]
fn the_matrix_covers_every_documented_operation() {
    let doc: Value = serde_json::from_str(&sessiond::api::native::openapi::document()).unwrap();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let in_matrix: BTreeSet<(String, String)> = native_rows()
        .iter()
        .map(|r| {
            let path = r.path.split('?').next().unwrap();
            // Any placeholder stands for the document's `{id}`.
            let template: Vec<String> = path
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        "{id}".to_string()
                    } else {
                        seg.to_string()
                    }
                })
                .collect();
            (r.method.to_string(), template.join("/"))
        })
        .collect();
    assert_eq!(in_matrix, documented);
}

/// The fixtures are what the matrix assumes: a victim with a live session, a caller with its role.
#[tokio::test]
async fn cell_fixtures_are_what_they_claim() {
    let app = TestApp::spawn().await;
    let c = cell(&app, 1, 2).await;
    let victim = app
        .store()
        .find_user_by_name("victim1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.fill("{victim}"), victim.id.0.to_string());
    let me = app
        .store()
        .find_user_by_name("caller1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(me.roles, ["view"]);
    let s = app
        .state
        .service
        .get_session(
            &Actor::System,
            sessiond::domain::SessionId::parse(&c.fill("{victim_session}")).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(s.session.user_id, victim.id);
}
