//! The native API (/v1), end to end over HTTP.

use crate::support::{ADMIN_PASSWORD, TestApp, faulty::SECRET_CAUSE};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// A `/v1` answer: status, `WWW-Authenticate` / `Retry-After` headers, JSON body (null if none).
pub struct V1 {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl V1 {
    /// Asserts the native error shape with this status and code; returns the message.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        self.body["error"]["message"]
            .as_str()
            .expect("message")
            .to_string()
    }
}

impl TestApp {
    pub async fn v1_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> V1 {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        V1 {
            status,
            headers,
            body,
        }
    }

    pub async fn v1_get(&self, path: &str, token: &str) -> V1 {
        self.v1_raw(Method::GET, path, Some(token), None).await
    }

    /// Signs in through `/v1/login`; returns the token and the session document.
    pub async fn v1_login(&self, user: &str, password: &str) -> (String, Value) {
        let r = self
            .v1_raw(
                Method::POST,
                "/v1/login",
                None,
                Some(json!({"username": user, "password": password})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        (
            r.body["token"].as_str().unwrap().to_string(),
            r.body["session"].clone(),
        )
    }

    pub async fn v1_session_total(&self, token: &str) -> usize {
        let r = self
            .v1_get("/v1/sessions?state=all&limit=1000", token)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["items"].as_array().unwrap().len()
    }
}

#[tokio::test]
async fn login_current_session_and_logout() {
    let app = TestApp::spawn().await;
    let (token, session) = app.v1_login("ADMIN", ADMIN_PASSWORD).await;
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        session["user"],
        json!({"id": app.admin.id.0, "name": "admin"})
    );
    assert_eq!(
        session["console_type"],
        json!({"code": 201, "name": "native API"})
    );
    assert_eq!(session["dialect"], "native");
    assert_eq!(session["state"], "live");
    assert_eq!(session["current"], true);
    assert_eq!(session["host"], "127.0.0.1");
    assert_eq!(session["idle_timeout_seconds"], 1800);
    assert_eq!(session["ended_at"], Value::Null);
    let created = session["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 24, "{created}");

    // The current session: each call counts as activity.
    app.advance(Duration::from_secs(600));
    let r = app.v1_get("/v1/session", &token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["session"]["id"], session["id"]);
    assert_ne!(r.body["session"]["last_accessed_at"], session["created_at"]);
    assert_eq!(r.body["user"]["roles"], json!(["master"]));
    assert!(
        r.body["user"]["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("user-management"))
    );
    assert!(r.body["user"].get("password_hash").is_none());

    let r = app
        .v1_raw(Method::POST, "/v1/logout", Some(&token), None)
        .await;
    assert_eq!(r.status, 204);
    let r = app.v1_get("/v1/session", &token).await;
    r.error(401, "unauthenticated");
    assert_eq!(r.headers["www-authenticate"], "Bearer");

    // The ended session stays listed with its reason.
    let (admin, _) = app.v1_login("admin", ADMIN_PASSWORD).await;
    let r = app
        .v1_get(
            &format!("/v1/sessions/{}", session["id"].as_str().unwrap()),
            &admin,
        )
        .await;
    assert_eq!(r.body["state"], "ended");
    assert_eq!(r.body["end_reason"], "logout");
    assert_eq!(r.body["current"], false);
}

#[tokio::test]
async fn bad_credentials_and_tokens_are_401_in_shape() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "alice-password", &[]).await;
    let login = |u: &'static str, p: &'static str| {
        app.v1_raw(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"username": u, "password": p})),
        )
    };
    let wrong = login("alice", "wrong-password").await;
    let unknown = login("nobody", "wrong-password").await;
    assert_eq!(
        wrong.error(401, "unauthenticated"),
        "invalid user name or password"
    );
    assert_eq!(
        wrong.body, unknown.body,
        "unknown user and wrong password answer alike"
    );

    for bad in [
        Some("Bearer nothex"),
        Some("Basic YWRtaW46eA=="),
        Some("Bearer"),
        Some(&*format!("Bearer {}", "0".repeat(64))),
        None,
    ] {
        let mut req = app.http.get(app.url("/v1/session"));
        if let Some(h) = bad {
            req = req.header("Authorization", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{bad:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthenticated");
    }
}

#[tokio::test]
async fn malformed_requests_are_400_in_shape_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (token, _) = app.v1_login("admin", ADMIN_PASSWORD).await;
    let before_users = app.store().count_users().await.unwrap();
    let before_sessions = app.v1_session_total(&token).await;

    // Bodies: not JSON, wrong JSON, unknown field, wrong type, no content type.
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        ("/v1/login", "{not json", Some("application/json")),
        (
            "/v1/login",
            r#"{"username":"admin"}"#,
            Some("application/json"),
        ),
        (
            "/v1/login",
            r#"{"username":"admin","password":"x","extra":1}"#,
            Some("application/json"),
        ),
        (
            "/v1/login",
            r#"{"username":5,"password":"x"}"#,
            Some("application/json"),
        ),
        ("/v1/login", r#"{"username":"admin","password":"x"}"#, None),
        ("/v1/users", r#"{"name":"bob"}"#, Some("application/json")),
        (
            "/v1/users",
            r#"{"name":"bob","password":"bob-password","rolez":[]}"#,
            Some("application/json"),
        ),
        ("/v1/sessions/revoke", r#"{}"#, Some("application/json")),
        (
            "/v1/sessions/revoke",
            r#"{"user_id":1,"all_except_current":true}"#,
            Some("application/json"),
        ),
    ];
    for (path, body, ct) in cases {
        let mut req = app
            .http
            .post(app.url(path))
            .bearer_auth(&token)
            .body(body.to_string());
        if let Some(ct) = ct {
            req = req.header("Content-Type", ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 400, "{path} {body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_request", "{path} {body}: {v}");
    }
    // Rules the service checks: bad names, short passwords, unknown roles.
    for body in [
        json!({"name": "bad name", "password": "long-enough-pw"}),
        json!({"name": "bob", "password": "short"}),
        json!({"name": "bob", "password": "long-enough-pw", "roles": ["emperor"]}),
    ] {
        app.v1_raw(Method::POST, "/v1/users", Some(&token), Some(body))
            .await
            .error(400, "invalid_request");
    }
    // Parameters: unknown, malformed, out of range; bad ids and cursors.
    for path in [
        "/v1/sessions?colour=blue",
        "/v1/sessions?state=sleepy",
        "/v1/sessions?limit=0",
        "/v1/sessions?limit=1001",
        "/v1/sessions?limit=ten",
        "/v1/sessions?cursor=garbage",
        "/v1/sessions/not-a-guid",
        "/v1/users/abc",
        "/v1/users?cursor=czox",
        "/v1/audit?kind=login.maybe",
        "/v1/audit?since=yesterday",
        "/v1/audit?since=2030-01-01T00:00:00Z&until=2020-01-01T00:00:00Z",
    ] {
        app.v1_get(path, &token).await.error(400, "invalid_request");
    }
    assert_eq!(app.store().count_users().await.unwrap(), before_users);
    assert_eq!(app.v1_session_total(&token).await, before_sessions);
}

#[tokio::test]
async fn oversized_bodies_unknown_paths_and_methods_answer_in_shape() {
    let app = TestApp::spawn().await;
    let (token, _) = app.v1_login("admin", ADMIN_PASSWORD).await;
    let huge = json!({"name": "bob", "password": "x".repeat(70 * 1024)});
    app.v1_raw(Method::POST, "/v1/users", Some(&token), Some(huge))
        .await
        .error(413, "payload_too_large");
    app.v1_get("/v1/nothing-here", &token)
        .await
        .error(404, "not_found");
    app.v1_raw(Method::DELETE, "/v1/roles", Some(&token), None)
        .await
        .error(405, "method_not_allowed");
    app.v1_get("/v1/users/999999", &token)
        .await
        .error(404, "not_found");
    app.v1_get("/v1/sessions/00000000-0000-0000-0000-000000000000", &token)
        .await
        .error(404, "not_found");
}

#[tokio::test]
async fn sessions_filter_and_paginate_with_opaque_cursors() {
    let app =
        TestApp::spawn_with(|c| c.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()])
            .await;
    let alice = app.add_user("alice", "alice-password", &[]).await;
    let (admin, _) = app.v1_login("admin", ADMIN_PASSWORD).await;
    let mut alice_tokens = Vec::new();
    for i in 0..5 {
        app.advance(Duration::from_secs(1));
        let host = if i % 2 == 0 {
            "192.0.2.10"
        } else {
            "192.0.2.20"
        };
        let r = app
            .http
            .post(app.url("/v1/login"))
            .header("X-Forwarded-For", host)
            .json(&json!({"username": "alice", "password": "alice-password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        alice_tokens.push((
            v["token"].as_str().unwrap().to_string(),
            v["session"]["id"].clone(),
        ));
    }
    // End the oldest one.
    app.v1_raw(Method::POST, "/v1/logout", Some(&alice_tokens[0].0), None)
        .await;

    // Pages of two, newest first, until next_cursor is null.
    let mut seen = Vec::new();
    let mut path = format!("/v1/sessions?user={}&state=all&limit=2", alice.id.0);
    loop {
        let r = app.v1_get(&path, &admin).await;
        assert_eq!(r.status, 200, "{}", r.body);
        for s in r.body["items"].as_array().unwrap() {
            seen.push(s["id"].clone());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => {
                path = format!(
                    "/v1/sessions?user={}&state=all&limit=2&cursor={c}",
                    alice.id.0
                )
            }
            None => break,
        }
    }
    let expected: Vec<Value> = alice_tokens
        .iter()
        .rev()
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(seen, expected);

    let count = |v: &V1| v.body["items"].as_array().unwrap().len();
    let live = app
        .v1_get(&format!("/v1/sessions?user={}", alice.id.0), &admin)
        .await;
    assert_eq!(count(&live), 4, "live is the default");
    let ended = app
        .v1_get(
            &format!("/v1/sessions?user={}&state=ended", alice.id.0),
            &admin,
        )
        .await;
    assert_eq!(count(&ended), 1);
    assert_eq!(ended.body["items"][0]["end_reason"], "logout");
    let by_host = app
        .v1_get("/v1/sessions?state=all&host=192.0.2.20", &admin)
        .await;
    assert_eq!(count(&by_host), 2);
    assert!(
        by_host.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["host"] == "192.0.2.20")
    );

    // Alice sees her own, flagged `current` where it is the calling one.
    let mine = app
        .v1_get(
            &format!("/v1/sessions?user={}", alice.id.0),
            &alice_tokens[4].0,
        )
        .await;
    assert_eq!(count(&mine), 4);
    let current: Vec<&Value> = mine.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], alice_tokens[4].1);
}

#[tokio::test]
async fn deleting_a_session_ends_it_on_the_next_request() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "alice-password", &[]).await;
    let (a1, s1) = app.v1_login("alice", "alice-password").await;
    let (a2, s2) = app.v1_login("alice", "alice-password").await;
    let id2 = s2["id"].as_str().unwrap();
    let r = app.v1_get(&format!("/v1/sessions/{id2}"), &a1).await;
    assert_eq!(r.body["current"], false);
    let r = app
        .v1_raw(
            Method::DELETE,
            &format!("/v1/sessions/{id2}"),
            Some(&a1),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    app.v1_get("/v1/session", &a2)
        .await
        .error(401, "unauthenticated");
    let r = app.v1_get(&format!("/v1/sessions/{id2}"), &a1).await;
    assert_eq!(r.body["end_reason"], "revoked");
    // Deleting again is harmless; the caller's own session is untouched.
    let r = app
        .v1_raw(
            Method::DELETE,
            &format!("/v1/sessions/{id2}"),
            Some(&a1),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = app.v1_get("/v1/session", &a1).await;
    assert_eq!(r.body["session"]["id"], s1["id"]);
}

#[tokio::test]
async fn users_crud_roles_and_passwords() {
    let app = TestApp::spawn().await;
    let (admin, _) = app.v1_login("admin", ADMIN_PASSWORD).await;
    let r = app
        .v1_raw(
            Method::POST,
            "/v1/users",
            Some(&admin),
            Some(
                json!({"name": "carol", "password": "carol-password", "roles": ["View"],
                        "email": "c@example.test", "full_name": "Carol"}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["roles"], json!(["view"]));
    assert_eq!(r.body["permissions"], json!(["view"]));
    assert_eq!(r.body["enabled"], true);
    let id = r.body["id"].as_i64().unwrap();
    app.v1_raw(
        Method::POST,
        "/v1/users",
        Some(&admin),
        Some(json!({"name": "CAROL", "password": "carol-password"})),
    )
    .await
    .error(409, "conflict");

    let r = app.v1_get(&format!("/v1/users/{id}"), &admin).await;
    assert_eq!(r.body["email"], "c@example.test");
    let r = app.v1_get("/v1/users?limit=1", &admin).await;
    assert_eq!(r.body["items"][0]["name"], "admin");
    let next = r.body["next_cursor"].as_str().unwrap().to_string();
    let r = app
        .v1_get(&format!("/v1/users?limit=1&cursor={next}"), &admin)
        .await;
    assert_eq!(r.body["items"][0]["name"], "carol");

    let r = app
        .v1_raw(
            Method::PATCH,
            &format!("/v1/users/{id}"),
            Some(&admin),
            Some(json!({"roles": ["user-admin"], "description": "team lead"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["roles"], json!(["user-admin"]));
    assert_eq!(r.body["description"], "team lead");
    assert_eq!(r.body["full_name"], "Carol", "untouched fields stay");

    // Her own password: the current one is required and checked.
    let (carol, _) = app.v1_login("carol", "carol-password").await;
    let own = format!("/v1/users/{id}/password");
    app.v1_raw(
        Method::PUT,
        &own,
        Some(&carol),
        Some(json!({"password": "carol-password-2"})),
    )
    .await
    .error(400, "invalid_request");
    app.v1_raw(
        Method::PUT,
        &own,
        Some(&carol),
        Some(json!({"password": "carol-password-2", "current_password": "not-it-at-all"})),
    )
    .await
    .error(400, "invalid_request");
    let r = app
        .v1_raw(
            Method::PUT,
            &own,
            Some(&carol),
            Some(json!({"password": "carol-password-2", "current_password": "carol-password"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        app.v1_get("/v1/session", &carol).await.status,
        200,
        "the changing session stays"
    );
    app.v1_login("carol", "carol-password-2").await;

    // Disabling ends her sessions at once; deleting removes her.
    let r = app
        .v1_raw(
            Method::PATCH,
            &format!("/v1/users/{id}"),
            Some(&admin),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.body["enabled"], false);
    app.v1_get("/v1/session", &carol)
        .await
        .error(401, "unauthenticated");
    let r = app
        .v1_raw(
            Method::DELETE,
            &format!("/v1/users/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    app.v1_get(&format!("/v1/users/{id}"), &admin)
        .await
        .error(404, "not_found");
    // Nobody deletes or disables themself.
    let me = app.admin.id.0;
    app.v1_raw(
        Method::DELETE,
        &format!("/v1/users/{me}"),
        Some(&admin),
        None,
    )
    .await
    .error(403, "forbidden");

    let r = app.v1_get("/v1/roles", &admin).await;
    let names: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["master", "user-admin", "view"]);
    assert_eq!(
        r.body[1]["permissions"][0],
        json!({"key": "user-management", "name": "Add, Delete and Modify a User"})
    );
}

#[tokio::test]
async fn audit_query_filters_and_paginates() {
    let app = TestApp::spawn().await;
    let alice = app.add_user("alice", "alice-password", &[]).await;
    let (admin, _) = app.v1_login("admin", ADMIN_PASSWORD).await;
    let t0 = {
        use sessiond::clock::Clock;
        app.clock.now()
    };
    app.advance(Duration::from_secs(60));
    let bad = app
        .v1_raw(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"username": "alice", "password": "guess-number-1"})),
        )
        .await;
    assert_eq!(bad.status, 401);
    let (a, _) = app.v1_login("alice", "alice-password").await;
    app.v1_raw(Method::POST, "/v1/logout", Some(&a), None).await;

    let r = app
        .v1_get(&format!("/v1/audit?user={}", alice.id.0), &admin)
        .await;
    let kinds: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "session.logout",
            "login.succeeded",
            "login.failed",
            "user.created"
        ]
    );
    let failed = &r.body["items"][2];
    assert_eq!(failed["subject"]["name"], "alice");
    assert_eq!(failed["source"], "127.0.0.1");
    assert_eq!(failed["dialect"], "native");
    assert!(
        !failed.to_string().contains("guess-number-1"),
        "no password in the trail"
    );

    // Filters: kind list, time range.
    let r = app
        .v1_get("/v1/audit?kind=login.failed,session.logout", &admin)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let since = (t0.plus(Duration::from_secs(30))).to_string();
    let r = app
        .v1_get(
            &format!("/v1/audit?since={since}&kind=login.succeeded"),
            &admin,
        )
        .await;
    assert_eq!(
        r.body["items"].as_array().unwrap().len(),
        1,
        "the admin's earlier login is before `since`"
    );
    let r = app
        .v1_get(
            &format!("/v1/audit?until={since}&kind=login.succeeded"),
            &admin,
        )
        .await;
    assert_eq!(r.body["items"][0]["subject"]["name"], "admin");

    // Pages of one walk the whole trail once.
    let all = app.v1_get("/v1/audit?limit=1000", &admin).await;
    let total = all.body["items"].as_array().unwrap().len();
    let mut ids = Vec::new();
    let mut path = "/v1/audit?limit=1".to_string();
    loop {
        let r = app.v1_get(&path, &admin).await;
        ids.extend(
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap()),
        );
        match r.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/audit?limit=1&cursor={c}"),
            None => break,
        }
    }
    // Reading pages adds no events, so the walk sees the same trail.
    assert_eq!(ids.len(), total);
    assert!(ids.windows(2).all(|w| w[0] > w[1]));

    // A plain user reads only their own events.
    let (a, _) = app.v1_login("alice", "alice-password").await;
    let r = app.v1_get("/v1/audit", &a).await;
    assert!(
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| { e["subject"]["id"] == alice.id.0 || e["actor"]["id"] == alice.id.0 })
    );
    app.v1_get(&format!("/v1/audit?user={}", app.admin.id.0), &a)
        .await
        .error(403, "forbidden");
}

#[tokio::test]
async fn store_failure_is_503_without_detail() {
    let app = TestApp::spawn().await;
    let (admin, _) = app.v1_login("admin", ADMIN_PASSWORD).await;
    app.store.set_failing(true);
    for r in [
        app.v1_get("/v1/sessions", &admin).await,
        app.v1_raw(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
        )
        .await,
    ] {
        let m = r.error(503, "service_unavailable");
        assert_eq!(m, "service unavailable");
        assert!(!r.body.to_string().contains(SECRET_CAUSE));
    }
    app.store.set_failing(false);
    assert_eq!(app.v1_get("/v1/sessions", &admin).await.status, 200);
}

/// The committed `docs/openapi.json` must equal the generated document. To update
/// it: `cargo run -- openapi > docs/openapi.json` (or run this test with
/// `UPDATE_OPENAPI=1`).
#[tokio::test]
async fn openapi_document_is_served_and_committed() {
    let generated = sessiond::api::native::openapi::document();
    let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run `cargo run -- openapi > docs/openapi.json`"
    );

    let app = TestApp::spawn().await;
    let r = app
        .http
        .get(app.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), generated);
    let doc: Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["paths"]["/v1/login"]["post"]["security"], json!([{}]));
}
