//! The web console (/ui) over HTTP, in process: sign-in, cookie flags, CSRF on
//! every form, authorization, bad input; and the live event stream (/v1/events).
//! `browser` drives the console in chromium.

mod browser;

use crate::support::process::ServeProcess;
use crate::support::{ADMIN_PASSWORD, TestApp};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use sessiond::clock::Clock;
use sessiond::service::Actor;
use std::time::Duration;

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The value of a `name="csrf"` hidden field in a page.
fn csrf_field(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf field");
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// `name=value` of a `Set-Cookie` for `name`.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// A signed-in console: its cookie header value and its CSRF token.
struct Console {
    cookie: String,
    csrf: String,
    http: reqwest::Client,
    base: String,
}

impl Console {
    async fn sign_in(app: &TestApp, user: &str, password: &str) -> Console {
        let resp = try_sign_in(app, user, password).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let cookie = set_cookie(&resp, "sessiond_console").expect("session cookie");
        let cookie = cookie.split(';').next().unwrap().to_string();
        let http = client();
        let page = http
            .get(app.url("/ui/sessions"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let csrf = csrf_field(&page.text().await.unwrap());
        Console {
            cookie,
            csrf,
            http,
            base: app.url(""),
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// POSTs with this session's CSRF token added.
    async fn submit(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(form);
        self.post(path, &all).await
    }
}

/// Fetches the sign-in form and posts it (with its double-submit token).
async fn try_sign_in(app: &TestApp, user: &str, password: &str) -> reqwest::Response {
    let http = client();
    let form = http.get(app.url("/ui/login")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let token_cookie = set_cookie(&form, "sessiond_login_csrf").expect("login csrf cookie");
    let token_cookie = token_cookie.split(';').next().unwrap().to_string();
    let csrf = csrf_field(&form.text().await.unwrap());
    http.post(app.url("/ui/login"))
        .header(COOKIE, token_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

async fn v1_login(app: &TestApp, user: &str, password: &str) -> (String, String) {
    crate::support::process::v1_login(&app.url(""), user, password).await
}

async fn session_state(app: &TestApp, id: &str) -> String {
    let id = sessiond::domain::SessionId::parse(id).unwrap();
    let v = app
        .state
        .service
        .get_session(&Actor::System, id)
        .await
        .unwrap();
    match v.state {
        sessiond::domain::SessionState::Live => "live".into(),
        sessiond::domain::SessionState::Ended(e) => e.reason.key().into(),
    }
}

#[tokio::test]
async fn sign_in_opens_a_web_console_session_in_a_strict_http_only_cookie() {
    let app = TestApp::spawn().await;
    let resp = try_sign_in(&app, "admin", ADMIN_PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/ui/sessions");
    let cookie = set_cookie(&resp, "sessiond_console").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let jar = cookie.split(';').next().unwrap();
    // The same session on /v1 (GET needs no CSRF token): console type 202.
    let me: Value = client()
        .get(app.url("/v1/session"))
        .header(COOKIE, jar)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["session"]["console_type"]["code"], 202, "{me}");
    assert_eq!(me["session"]["dialect"], "web-console", "{me}");
    assert_eq!(me["user"]["name"], "admin");
}

#[tokio::test]
async fn the_sign_in_form_needs_its_own_token() {
    let app = TestApp::spawn().await;
    let resp = client()
        .post(app.url("/ui/login"))
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&resp, "sessiond_console").is_none());
    assert!(resp.text().await.unwrap().contains("form has expired"));
    let live = app
        .store()
        .count_live_sessions(None, app.clock.now())
        .await
        .unwrap();
    assert_eq!(live, 0);
}

/// A form beyond `http.max_body_bytes` is refused before anything in it is read.
#[tokio::test]
async fn an_oversized_form_is_refused() {
    let app = TestApp::spawn().await;
    let big = "x".repeat(100 * 1024);
    let resp = client()
        .post(app.url("/ui/login"))
        .form(&[("username", "admin"), ("password", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("the form is too large"));
}

#[tokio::test]
async fn a_wrong_password_shows_an_error_and_the_lockout_applies() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "alice-password", &[]).await;
    let resp = try_sign_in(&app, "alice", "wrong").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&resp, "sessiond_console").is_none());
    let page = resp.text().await.unwrap();
    assert!(page.contains("Wrong user name or password."), "{page}");
    assert!(
        page.contains(r#"value="alice""#),
        "the name is kept: {page}"
    );
    // The same lockout as every dialect: five failures lock the account.
    for _ in 0..4 {
        try_sign_in(&app, "alice", "wrong").await;
    }
    let resp = try_sign_in(&app, "alice", "alice-password").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let page = resp.text().await.unwrap();
    assert!(page.contains("the account is locked"), "{page}");
    // And through the Commvault dialect it is locked too.
    let cv: Value = app
        .http
        .post(app.url("/Login"))
        .header("Accept", "application/json")
        .json(&json!({"username": "alice", "password": crate::support::b64("alice-password")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cv["isAccountLocked"], true, "{cv}");
}

#[tokio::test]
async fn every_form_needs_the_session_csrf_token() {
    let app = TestApp::spawn().await;
    let alice = app.add_user("alice", "alice-password", &[]).await;
    let (_, victim) = v1_login(&app, "alice", "alice-password").await;
    let admin = Console::sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let other = Console::sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let uid = alice.id.0.to_string();
    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/ui/logout".into(), vec![]),
        (format!("/ui/sessions/{victim}/end"), vec![]),
        (format!("/ui/users/{uid}/end-sessions"), vec![]),
        (
            "/ui/users".into(),
            vec![("name", "mallory"), ("password", "mallory-password")],
        ),
        (
            format!("/ui/users/{uid}/enabled"),
            vec![("enabled", "false")],
        ),
        (
            format!("/ui/users/{uid}/password"),
            vec![("password", "taken-over-1")],
        ),
        (format!("/ui/users/{uid}/roles"), vec![("role", "master")]),
    ];
    for (path, fields) in &forms {
        let missing = admin.post(path, fields).await;
        assert_eq!(
            missing.status(),
            StatusCode::FORBIDDEN,
            "{path} without a token"
        );
        // Another session's token is no good either.
        let mut forged = vec![("csrf", other.csrf.as_str())];
        forged.extend_from_slice(fields);
        let forged = admin.post(path, &forged).await;
        assert_eq!(
            forged.status(),
            StatusCode::FORBIDDEN,
            "{path} with a foreign token"
        );
    }
    assert_eq!(session_state(&app, &victim).await, "live");
    let alice_now = app.store().get_user(alice.id).await.unwrap().unwrap();
    assert!(alice_now.enabled && alice_now.roles.is_empty());
    assert!(
        app.store()
            .find_user_by_name("mallory")
            .await
            .unwrap()
            .is_none()
    );
    let (status, _) = admin.get("/ui/sessions").await;
    assert_eq!(status, 200, "the console is still signed in");

    // With the token: the session ends.
    let ok = admin
        .submit(&format!("/ui/sessions/{victim}/end"), &[])
        .await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(ok.headers()[LOCATION], "/ui/sessions?notice=ended");
    assert_eq!(session_state(&app, &victim).await, "revoked");
}

#[tokio::test]
async fn user_administration_through_the_forms() {
    let app = TestApp::spawn().await;
    let admin = Console::sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let created = admin
        .submit(
            "/ui/users",
            &[
                ("name", "carol"),
                ("password", "carol-password"),
                ("full_name", "Carol"),
                ("role", "view"),
            ],
        )
        .await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let carol = app
        .store()
        .find_user_by_name("carol")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(carol.roles, ["view"]);
    let (_, carol_session) = v1_login(&app, "carol", "carol-password").await;
    let path = format!("/ui/users/{}", carol.id.0);
    let (status, page) = admin.get(&path).await;
    assert_eq!(status, 200);
    assert!(page.contains("Disable carol"), "{page}");

    let r = admin
        .submit(&format!("{path}/roles"), &[("role", "user-admin")])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin
        .submit(&format!("{path}/enabled"), &[("enabled", "false")])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let carol = app.store().get_user(carol.id).await.unwrap().unwrap();
    assert_eq!(carol.roles, ["user-admin"]);
    assert!(!carol.enabled);
    assert_eq!(session_state(&app, &carol_session).await, "revoked");
    let r = admin
        .submit(&format!("{path}/enabled"), &[("enabled", "true")])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin
        .submit(
            &format!("{path}/password"),
            &[("password", "carol-new-password")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    v1_login(&app, "carol", "carol-new-password").await;

    // Rule violations are a clear 4xx page.
    let dup = admin
        .submit(
            "/ui/users",
            &[("name", "carol"), ("password", "whatever-pw")],
        )
        .await;
    assert_eq!(dup.status(), StatusCode::CONFLICT);
    let bad = admin
        .submit(
            "/ui/users",
            &[("name", "no spaces"), ("password", "whatever-pw")],
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let lacking = admin.submit("/ui/users", &[("name", "dave")]).await;
    assert_eq!(lacking.status(), StatusCode::BAD_REQUEST);
    let odd = admin
        .submit(&format!("{path}/enabled"), &[("enabled", "maybe")])
        .await;
    assert_eq!(odd.status(), StatusCode::BAD_REQUEST);
    let me = admin
        .submit("/ui/users/1/enabled", &[("enabled", "false")])
        .await;
    assert_eq!(me.status(), StatusCode::FORBIDDEN, "disabling yourself");
}

#[tokio::test]
async fn a_plain_user_sees_only_their_own_sessions_and_no_users_view() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "alice-password", &[]).await;
    let (_, admin_session) = v1_login(&app, "admin", ADMIN_PASSWORD).await;
    let alice = Console::sign_in(&app, "alice", "alice-password").await;
    let (status, page) = alice.get("/ui/sessions?state=all").await;
    assert_eq!(status, 200);
    assert!(!page.contains(&admin_session), "{page}");
    assert!(
        !page.contains(r#"href="/ui/users""#),
        "no Users link: {page}"
    );
    assert!(page.contains("sessiond web console"));

    let (status, page) = alice.get("/ui/users").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("do not have permission"), "{page}");
    assert_eq!(alice.get("/ui/users/1").await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        alice.get("/ui/sessions?user=admin").await.0,
        StatusCode::FORBIDDEN
    );
    let confirm = format!("/ui/sessions/{admin_session}/end");
    assert_eq!(alice.get(&confirm).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        alice.submit(&confirm, &[]).await.status(),
        StatusCode::FORBIDDEN
    );
    let all = alice.submit("/ui/users/1/end-sessions", &[]).await;
    assert_eq!(all.status(), StatusCode::FORBIDDEN);
    assert_eq!(session_state(&app, &admin_session).await, "live");
    // Audit: own events only.
    let (status, page) = alice.get("/ui/audit").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("login.succeeded") && !page.contains(">admin<"),
        "{page}"
    );
    assert_eq!(
        alice.get("/ui/audit?user=admin").await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn signing_out_ends_the_session_and_clears_the_cookie() {
    let app = TestApp::spawn().await;
    let admin = Console::sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let out = admin.submit("/ui/logout", &[]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let cleared = set_cookie(&out, "sessiond_console").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let again = admin
        .http
        .get(app.url("/ui/sessions"))
        .header(COOKIE, &admin.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert_eq!(again.headers()[LOCATION], "/ui/login");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let app = TestApp::spawn().await;
    let admin = Console::sign_in(&app, "admin", ADMIN_PASSWORD).await;
    for (path, status) in [
        ("/ui/sessions?state=bogus", 400),
        ("/ui/sessions?cursor=garbage", 400),
        ("/ui/sessions?user=nobody", 404),
        ("/ui/sessions/not-a-session/end", 400),
        ("/ui/sessions/00000000-0000-0000-0000-000000000000/end", 404),
        ("/ui/users/abc", 400),
        ("/ui/users/999", 404),
        ("/ui/users?cursor=x", 400),
        ("/ui/audit?kind=bogus", 400),
        ("/ui/audit?cursor=x", 400),
        ("/ui/nothing-here", 404),
    ] {
        let (got, page) = admin.get(path).await;
        assert_eq!(got.as_u16(), status, "{path}: {page}");
    }
    let junk = admin
        .http
        .post(app.url("/ui/users"))
        .header(COOKIE, &admin.cookie)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(junk.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sessions_are_paged_by_cursor_with_their_filters() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "alice-password", &[]).await;
    for _ in 0..55 {
        v1_login(&app, "alice", "alice-password").await;
        app.advance(Duration::from_millis(5));
    }
    let admin = Console::sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let (status, first) = admin.get("/ui/sessions?user=alice").await;
    assert_eq!(status, 200);
    let rows = |html: &str| html.matches(r#"<tr id="s-"#).count();
    assert_eq!(rows(&first), 50);
    let at = first.find("Older sessions").expect("a next page link");
    let href_start = first[..at].rfind("href=\"").unwrap() + 6;
    let href = first[href_start..at]
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert!(
        href.contains("user=alice") && href.contains("state=live"),
        "{href}"
    );
    let (status, second) = admin.get(&href).await;
    assert_eq!(status, 200);
    assert_eq!(rows(&second), 5);
    assert!(!second.contains("Older sessions"));
    assert!(second.contains("Newest"));
}

#[tokio::test]
async fn the_console_cookie_works_on_v1_with_a_csrf_header_for_changes() {
    let app = TestApp::spawn().await;
    let admin = Console::sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let (_, other) = v1_login(&app, "admin", ADMIN_PASSWORD).await;
    let url = app.url(&format!("/v1/sessions/{other}"));
    let plain = admin
        .http
        .delete(&url)
        .header(COOKIE, &admin.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::FORBIDDEN);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(session_state(&app, &other).await, "live");
    let ok = admin
        .http
        .delete(&url)
        .header(COOKIE, &admin.cookie)
        .header("X-CSRF-Token", &admin.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(session_state(&app, &other).await, "revoked");
}

#[tokio::test]
async fn the_sessions_view_words_clients_idle_times_and_end_reasons() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "alice-password", &[]).await;
    let cv: Value = app
        .http
        .post(app.url("/Login"))
        .header("Accept", "application/json")
        .json(&json!({"username": "alice", "password": crate::support::b64("alice-password")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(cv["token"].is_string(), "{cv}");
    let vs = app
        .http
        .post(app.url("/api/session"))
        .basic_auth("alice", Some("alice-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(vs.status(), 201);
    let (_, native) = v1_login(&app, "alice", "alice-password").await;
    app.advance(Duration::from_secs(3 * 60 + 5));
    let admin = Console::sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let (_, page) = admin.get("/ui/sessions").await;
    for words in [
        "command line",
        "Commvault",
        "vSphere API (REST)",
        "vSphere",
        "native API",
        "sessiond web console",
        "web console",
        "idle 3 min",
        "idle &#60; 1 min",
        "End all of alice",
    ] {
        assert!(page.contains(words), "{words:?} missing from:\n{page}");
    }
    let revoked = admin
        .submit(&format!("/ui/sessions/{native}/end"), &[])
        .await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    let (_, live) = admin.get("/ui/sessions").await;
    assert!(!live.contains(&native));
    let (_, ended) = admin.get("/ui/sessions?state=ended&user=alice").await;
    assert!(ended.contains(&native), "{ended}");
    assert!(ended.contains("ended: revoked"), "{ended}");

    // "End all of alice": a confirmation page, then every live session of hers ends.
    let (status, confirm) = admin.get("/ui/users/2/end-sessions").await;
    assert_eq!(status, 200);
    assert!(
        confirm.contains("End every live session of alice?"),
        "{confirm}"
    );
    let all = admin.submit("/ui/users/2/end-sessions", &[]).await;
    assert_eq!(all.status(), StatusCode::SEE_OTHER);
    let live = app
        .store()
        .count_live_sessions(Some(sessiond::domain::UserId(2)), app.clock.now())
        .await
        .unwrap();
    assert_eq!(live, 0);
}

/// 100,000 sessions: every page, however deep, is a full page that starts right after its
/// cursor. That each is one keyset query walking an index (never a sort of every row) is
/// checked on the query plans by `store::sqlite::tests`; speed is the benchmark's business.
#[tokio::test]
async fn paging_works_over_a_hundred_thousand_sessions() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.db");
    let url = format!("sqlite://{}", path.display());
    let store_url = url.clone();
    let app = TestApp::spawn_with(move |c| c.store = store_url).await;
    let alice = app.add_user("alice", "alice-password", &[]).await;
    let now = app.clock.now().unix_millis();
    const N: i64 = 100_000;
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    // Sessions i = 1..N, newest first by i, 10 ms apart; even ones ended.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO sessions (id, token_hash, user_id, user_name, host, user_agent, device_id,
             description, console_type, dialect, browser_session_id, created_at, last_accessed_at,
             idle_timeout_ms, expires_at, deadline_at, ended_at, end_reason)
         SELECT printf('%08x-0000-4000-8000-%012x', i, i), randomblob(32), ?2, 'alice',
             '10.0.0.' || (i % 250), '', '', '', 13, 'commvault', i, ?3 - i * 10, ?3 - i * 10,
             1800000, ?3 - i * 10 + 86400000, ?3 - i * 10 + 1800000,
             CASE WHEN i % 2 = 0 THEN ?3 - i * 10 + 5 END,
             CASE WHEN i % 2 = 0 THEN 'logout' END
         FROM n",
    )
    .bind(N)
    .bind(alice.id.0)
    .bind(now)
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();

    let admin = Console::sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let rows = |html: &str| html.matches(r#"<tr id="s-"#).count();
    let fetch = |path: String| {
        let admin = &admin;
        async move {
            let (status, page) = admin.get(&path).await;
            assert_eq!(status, 200, "{path}");
            page
        }
    };
    // A cursor deep into the history (past 90,000 sessions).
    let deep = sessiond::api::native::wire::session_cursor(sessiond::store::SessionCursor {
        created_at: sessiond::domain::Timestamp::from_unix_millis(now - 90_000 * 10),
        id: sessiond::domain::SessionId::parse("00015f90-0000-4000-8000-000000015f90").unwrap(),
    });
    for path in [
        "/ui/sessions?state=all".to_string(),
        "/ui/sessions?state=live&user=alice".to_string(),
        "/ui/sessions?state=ended&user=alice".to_string(),
        format!("/ui/sessions?state=all&cursor={deep}"),
        format!("/ui/sessions?state=live&user=alice&cursor={deep}"),
    ] {
        let page = fetch(path.clone()).await;
        assert_eq!(rows(&page), 50, "{path}");
        assert!(page.contains("Older sessions"), "{path}");
    }
    // The deep page starts right after the cursor: session 90,001.
    let page = fetch(format!("/ui/sessions?state=all&cursor={deep}")).await;
    let first = page.find(r#"<tr id="s-"#).unwrap();
    assert_eq!(
        &page[first + 10..first + 46].to_lowercase(),
        "00015f91-0000-4000-8000-000000015f91"
    );
}

// ---- /v1/events ----

/// A server-sent event stream being read.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(app: &TestApp, token: &str) -> Events {
        let resp = app
            .http
            .get(app.url("/v1/events"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut e = Events {
            resp,
            buf: String::new(),
        };
        let (name, _) = e.next().await.expect("ready");
        assert_eq!(name, "ready");
        e
    }

    /// The next event other than a touch (the background flush announces those
    /// whenever it runs).
    async fn next_change(&mut self) -> Option<(String, Value)> {
        loop {
            let (name, data) = self.next().await?;
            if name != "session.touched" {
                return Some((name, data));
            }
        }
    }

    /// The next event (name, data), skipping keep-alive comments; `None` at the end.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if let Some(name) = name {
                    return Some((name, serde_json::from_str(&data).unwrap()));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test]
async fn events_are_filtered_by_user_unless_one_manages_users() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "alice-password", &[]).await;
    app.add_user("bob", "bob-password", &[]).await;
    let (admin_token, _) = v1_login(&app, "admin", ADMIN_PASSWORD).await;
    let (alice_token, _) = v1_login(&app, "alice", "alice-password").await;
    let mut all = Events::open(&app, &admin_token).await;
    let mut own = Events::open(&app, &alice_token).await;

    let (_, bob_session) = v1_login(&app, "bob", "bob-password").await;
    let (_, alice_session) = v1_login(&app, "alice", "alice-password").await;
    // Events arrive in order: alice's first event is her own login, so bob's was
    // withheld from her.
    let (name, data) = own.next_change().await.unwrap();
    assert_eq!(name, "session.started");
    assert_eq!(data["session"]["id"], alice_session.as_str(), "{data}");
    assert_eq!(data["session"]["user"]["name"], "alice");
    assert_eq!(data["session"]["console_type"]["name"], "native API");
    let (_, data) = all.next_change().await.unwrap();
    assert_eq!(data["session"]["id"], bob_session.as_str(), "{data}");
    let (_, data) = all.next_change().await.unwrap();
    assert_eq!(data["session"]["id"], alice_session.as_str(), "{data}");
}

/// Every flush announces the touches made since the last one, also of a session
/// that is validated from the in-process cache (the SQLite store's).
#[tokio::test]
async fn touches_are_announced_by_every_flush_not_only_the_first() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "alice-password", &[]).await;
    let (admin_token, _) = v1_login(&app, "admin", ADMIN_PASSWORD).await;
    let (alice_token, alice_session) = v1_login(&app, "alice", "alice-password").await;
    let mut events = Events::open(&app, &admin_token).await;
    for round in 0..3 {
        app.advance(Duration::from_secs(30));
        let r = app
            .http
            .get(app.url("/v1/session"))
            .bearer_auth(&alice_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        app.flush().await;
        let expected = app.clock.now().to_string();
        let data = loop {
            let (name, data) = events.next().await.unwrap();
            if name == "session.touched" && data["session_id"] == alice_session.as_str() {
                break data;
            }
        };
        assert_eq!(data["last_accessed_at"], expected.as_str(), "round {round}");
    }
}

#[tokio::test]
async fn touches_ends_and_user_changes_are_announced() {
    let app = TestApp::spawn().await;
    let alice = app.add_user("alice", "alice-password", &[]).await;
    let (admin_token, _) = v1_login(&app, "admin", ADMIN_PASSWORD).await;
    let (alice_token, alice_session) = v1_login(&app, "alice", "alice-password").await;
    let mut events = Events::open(&app, &admin_token).await;

    // Touches are announced by the flush, not per request.
    app.advance(Duration::from_secs(90));
    for _ in 0..3 {
        let r = app
            .http
            .get(app.url("/v1/session"))
            .bearer_auth(&alice_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    app.flush().await;
    // The admin's own requests are touches too; find alice's.
    let (name, data) = loop {
        let (name, data) = events.next().await.unwrap();
        if data["session_id"] == alice_session.as_str() {
            break (name, data);
        }
    };
    assert_eq!(name, "session.touched");
    assert_eq!(data["user_id"], alice.id.0);
    let expected = app.clock.now().to_string();
    assert_eq!(data["last_accessed_at"], expected.as_str());

    // Disabling alice: the user change, then her session's end.
    let r = app
        .http
        .patch(app.url(&format!("/v1/users/{}", alice.id.0)))
        .bearer_auth(&admin_token)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (name, data) = events.next_change().await.unwrap();
    assert_eq!(name, "user.changed", "{data}");
    assert_eq!(data["change"], "user.disabled");
    assert_eq!(data["user"]["name"], "alice");
    let (name, data) = events.next_change().await.unwrap();
    assert_eq!(name, "session.ended", "{data}");
    assert_eq!(data["session_id"], alice_session.as_str());
    assert_eq!(data["end_reason"], "revoked");
}

#[tokio::test]
async fn a_stream_ends_with_its_session() {
    let app = TestApp::spawn().await;
    let (token, session) = v1_login(&app, "admin", ADMIN_PASSWORD).await;
    let mut events = Events::open(&app, &token).await;
    let out = app
        .http
        .post(app.url("/v1/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let (name, data) = events.next_change().await.unwrap();
    assert_eq!(name, "session.ended");
    assert_eq!(data["session_id"], session.as_str());
    assert_eq!(data["end_reason"], "logout");
    assert!(
        events.next().await.is_none(),
        "the stream goes on after its session ended"
    );
    let again = app
        .http
        .get(app.url("/v1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);
}

#[tokio::test]
async fn a_stream_ends_when_its_user_changes_and_resubscribing_gets_the_new_scope() {
    let app = TestApp::spawn().await;
    let alice = app.add_user("alice", "alice-password", &[]).await;
    let (admin_token, _) = v1_login(&app, "admin", ADMIN_PASSWORD).await;
    let (alice_token, _) = v1_login(&app, "alice", "alice-password").await;
    let mut events = Events::open(&app, &alice_token).await;
    let r = app
        .http
        .patch(app.url(&format!("/v1/users/{}", alice.id.0)))
        .bearer_auth(&admin_token)
        .json(&json!({"roles": ["user-admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (name, data) = events.next_change().await.unwrap();
    assert_eq!(name, "user.changed");
    assert_eq!(data["change"], "user.changed");
    assert!(
        events.next().await.is_none(),
        "the stream outlived a change of its user"
    );
    let resp = app
        .http
        .get(app.url("/v1/events"))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    let mut again = Events {
        resp,
        buf: String::new(),
    };
    let (name, data) = again.next().await.unwrap();
    assert_eq!(name, "ready");
    assert_eq!(data["scope"], "all");
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_hold_up_logins() {
    let app = TestApp::spawn().await;
    let (token, _) = v1_login(&app, "admin", ADMIN_PASSWORD).await;
    // Subscribed, and never read from.
    let _stalled = app
        .http
        .get(app.url("/v1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let mut held = app
        .state
        .service
        .subscribe_events(
            &app.state
                .service
                .authenticate(token.as_bytes())
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    // More events than a subscriber may fall behind by: logins still return.
    let logins = 40;
    for _ in 0..logins {
        tokio::time::timeout(
            Duration::from_secs(10),
            v1_login(&app, "admin", ADMIN_PASSWORD),
        )
        .await
        .expect("a login waited on a subscriber");
    }
    let mut started = 0;
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), held.next()).await {
        if let sessiond::service::Delivery::Event(e) = d
            && matches!(*e, sessiond::service::Event::SessionStarted { .. })
        {
            started += 1;
        }
    }
    assert_eq!(started, logins, "the held subscription kept every event");
}

// ---- with the real binary ----

#[tokio::test]
async fn the_console_cookie_is_secure_under_tls() {
    use crate::ops::{https, self_signed};
    let cert = self_signed();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let server = ServeProcess::start(
        &store,
        &["--tls-cert", &cert.cert, "--tls-key", &cert.key],
        &[("SESSIOND_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    );
    let port = server.port;
    server.wait_for_log(&format!("listening on https://127.0.0.1:{port}"));
    let host = format!("127.0.0.1:{port}");
    let empty = || http_body_util::Full::new(bytes::Bytes::new());
    let req = hyper::Request::get("/ui/login")
        .header("host", &host)
        .body(empty())
        .unwrap();
    let (status, page, cookie) = https(port, &cert.der, req).await;
    assert_eq!(status, 200);
    let cookie = cookie.expect("login form cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    let form = format!(
        "csrf={}&username=admin&password={ADMIN_PASSWORD}",
        csrf_field(&page)
    );
    let req = hyper::Request::post("/ui/login")
        .header("host", &host)
        .header("cookie", cookie.split(';').next().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(form)))
        .unwrap();
    let (status, page, cookie) = https(port, &cert.der, req).await;
    assert_eq!(status, 303, "{page}");
    let cookie = cookie.expect("session cookie");
    assert!(cookie.starts_with("sessiond_console="), "{cookie}");
    for flag in ["; Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
}

#[tokio::test]
async fn an_open_event_stream_does_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let server = ServeProcess::start(&store, &[], &[("SESSIOND_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let http = reqwest::Client::new();
    let (token, _) =
        crate::support::process::v1_login(&server.base(), "admin", ADMIN_PASSWORD).await;
    let mut stream = http
        .get(format!("{}/v1/events", server.base()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: ready"));
    // The graceful shutdown would wait up to http.shutdown_timeout (30 s) for an
    // open response; the stream ends at once instead.
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    let rest = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .expect("the stream ended");
    assert!(!matches!(rest, Ok(Some(_))), "{rest:?}");
}
