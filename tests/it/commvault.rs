//! The Commvault dialect, end to end over HTTP.

use crate::support::{ADMIN_PASSWORD, TestApp, b64, faulty::SECRET_CAUSE};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sessiond::domain::{EndReason, UserId};
use sessiond::store::{SessionQuery, StateFilter};
use std::sync::Arc;
use std::time::Duration;

const BASE: &str = "/commandcenter/api";
const JSON: &str = "application/json";
const XML: &str = "application/xml";

impl TestApp {
    fn cv(&self, path: &str) -> String {
        self.url(&format!("{BASE}{path}"))
    }

    async fn cv_login_raw(&self, body: Value) -> Response {
        self.http
            .post(self.cv("/Login"))
            .header("Accept", JSON)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Logs in through the JSON form; returns the `QSDK ...` token.
    pub async fn cv_login(&self, user: &str, password: &str) -> String {
        let r = self
            .cv_login_raw(json!({"username": user, "password": b64(password)}))
            .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["token"].as_str().expect("token").to_string()
    }

    async fn cv_get(&self, path: &str, token: &str, accept: &str) -> Response {
        self.cv_get_at(&format!("{BASE}{path}"), token, accept)
            .await
    }

    /// `cv_get` of a path from the root (any base path or spelling).
    async fn cv_get_at(&self, path: &str, token: &str, accept: &str) -> Response {
        self.http
            .get(self.url(path))
            .header("Authtoken", token)
            .header("Accept", accept)
            .send()
            .await
            .unwrap()
    }

    async fn sessions_json(&self, token: &str, user: UserId) -> Vec<Value> {
        let r = self
            .cv_get(&format!("/Session?userId={}", user.0), token, JSON)
            .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["sessions"].as_array().expect("sessions array").clone()
    }

    async fn session_count(&self) -> usize {
        self.store()
            .list_sessions(&SessionQuery {
                user: None,
                state: StateFilter::Any,
                host: None,
                now: self.clock_now(),
                after: None,
                limit: 10_000,
            })
            .await
            .unwrap()
            .len()
    }

    fn clock_now(&self) -> sessiond::domain::Timestamp {
        use sessiond::clock::Clock;
        self.clock.now()
    }
}

async fn json_body(r: Response) -> Value {
    r.json().await.unwrap()
}

async fn assert_cv_error(r: Response, status: u16, code: i64) -> String {
    assert_eq!(r.status().as_u16(), status);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    let text = r.text().await.unwrap();
    let (got_code, msg) = if ct.contains("json") {
        let v: Value = serde_json::from_str(&text).unwrap();
        (
            v["errorCode"].as_i64().unwrap(),
            v["errorMessage"].as_str().unwrap().to_string(),
        )
    } else {
        assert!(text.contains("<CVGui_GenericResp"), "{text}");
        let code = attr(&text, "errorCode").parse().unwrap();
        (code, attr(&text, "errorMessage"))
    };
    assert_eq!(got_code, code, "{text}");
    msg
}

/// The value of the first `name="..."` attribute in an XML text.
fn attr(xml: &str, name: &str) -> String {
    let needle = format!(" {name}=\"");
    let start = xml
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} in {xml}"))
        + needle.len();
    let end = xml[start..].find('"').unwrap() + start;
    xml[start..end].to_string()
}

#[tokio::test]
async fn base_paths_answer_200() {
    let app = TestApp::spawn().await;
    for path in [
        "/",
        "/commandcenter/api",
        "/commandcenter/api/",
        "/webconsole/api/",
        "/CommandCenter/API/",
    ] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

/// The vendor's spelling (routed as sent), lower case and any other spelling
/// (normalized to lower case) reach the same endpoint and answer the same.
#[tokio::test]
async fn every_spelling_of_an_endpoint_answers_the_same() {
    let app = TestApp::spawn().await;
    let token = app.cv_login("admin", ADMIN_PASSWORD).await;
    let id = app.admin.id;
    let mut answers = Vec::new();
    for path in [
        format!("/commandcenter/api/Session?userId={id}"),
        format!("/commandcenter/api/session?userId={id}"),
        format!("/COMMANDCENTER/API/SESSION/?userId={id}"),
        format!("/webconsole/api/Session?userId={id}"),
        format!("/Session?userId={id}"),
        format!("/sEsSiOn?userId={id}"),
    ] {
        let r = app.cv_get_at(&path, &token, JSON).await;
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["sessions"].as_array().map(Vec::len), Some(1), "{path}");
        answers.push(v["sessions"][0]["sessionId"].clone());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    let r = app
        .cv_get_at("/commandcenter/api/WhoAmI", &token, JSON)
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn login_json_and_xml_forms() {
    let app = TestApp::spawn().await;
    let r = app
        .cv_login_raw(json!({
            "username": "admin", "password": b64(ADMIN_PASSWORD), "domain": "",
            "commserver": "", "timeout": 30, "deviceId": "dev-1", "mode": 4, "clientType": 30
        }))
        .await;
    assert_eq!(r.status(), 200);
    let v = json_body(r).await;
    let token = v["token"].as_str().unwrap();
    assert!(
        token.starts_with("QSDK ") && token.len() == 5 + 64,
        "{token}"
    );
    assert_eq!(v["userName"], "admin");
    assert_eq!(v["aliasName"], app.admin.id.to_string());
    assert_eq!(v["userGUID"], app.admin.guid);
    assert_eq!(v["errList"], json!([]));
    assert_eq!(v["forcePasswordChange"], false);
    assert_eq!(v["isAccountLocked"], false);
    assert!(v.get("ccn").is_some());

    // The older wrapped JSON form.
    let r = app
        .cv_login_raw(json!({"DM2ContentIndexing_CheckCredentialReq": {
            "@mode": "Webconsole", "@username": "admin", "@password": b64(ADMIN_PASSWORD)
        }}))
        .await;
    assert!(json_body(r).await["token"].is_string());

    // XML request, XML response.
    let body = format!(
        r#"<DM2ContentIndexing_CheckCredentialReq domain="" username="admin" password="{}" commserver="" timeout="10"/>"#,
        b64(ADMIN_PASSWORD)
    );
    let r = app
        .http
        .post(app.cv("/Login"))
        .header("Content-Type", XML)
        .header("Accept", XML)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("xml")
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains("<DM2ContentIndexing_CheckCredentialResp "),
        "{text}"
    );
    assert!(attr(&text, "token").starts_with("QSDK "));
    assert_eq!(attr(&text, "userName"), "admin");
    assert_eq!(attr(&text, "aliasName"), app.admin.id.to_string());
    assert_eq!(attr(&text, "userGUID"), app.admin.guid);
    assert_eq!(attr(&text, "ccn"), "0");
}

#[tokio::test]
async fn failed_logins_answer_200_with_errlist_and_look_the_same() {
    let app = TestApp::spawn().await;
    let wrong = json_body(
        app.cv_login_raw(json!({"username": "admin", "password": b64("not-the-password")}))
            .await,
    )
    .await;
    let unknown = json_body(
        app.cv_login_raw(json!({"username": "nobody", "password": b64("not-the-password")}))
            .await,
    )
    .await;
    assert_eq!(wrong, unknown);
    assert!(wrong.get("token").is_none());
    assert_eq!(
        wrong["errList"][0]["errLogMessage"],
        "Invalid Username or Password"
    );

    let r = app
        .http
        .post(app.cv("/Login"))
        .header("Content-Type", XML)
        .header("Accept", XML)
        .body(format!(
            r#"<DM2ContentIndexing_CheckCredentialReq username="nobody" password="{}"/>"#,
            b64("xxxxxxxxx")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("<errList "), "{text}");
    assert_eq!(attr(&text, "errLogMessage"), "Invalid Username or Password");
    assert_eq!(app.session_count().await, 0);

    // A disabled account is refused after the password check.
    let bob = app.add_user("bob", "bob-password", &[]).await;
    app.state
        .service
        .update_user(
            &sessiond::service::Actor::System,
            bob.id,
            sessiond::service::UserChanges {
                enabled: Some(false),
                ..Default::default()
            },
            &sessiond::service::Origin {
                dialect: sessiond::domain::Dialect::Native,
                source: "t".into(),
            },
        )
        .await
        .unwrap();
    let v = json_body(
        app.cv_login_raw(json!({"username": "bob", "password": b64("bob-password")}))
            .await,
    )
    .await;
    assert_eq!(v["errList"][0]["errLogMessage"], "User account is disabled");
    assert_eq!(app.session_count().await, 0);
}

#[tokio::test]
async fn malformed_logins_are_400_and_change_nothing() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, &str, String)> = vec![
        ("malformed json", JSON, "{\"username\": \"admin\",".into()),
        ("json array", JSON, "[1,2]".into()),
        ("bad base64", JSON, json!({"username": "admin", "password": "%%%"}).to_string()),
        ("not utf-8 inside base64", JSON, json!({"username": "admin", "password": "/w=="}).to_string()),
        ("unknown field", JSON, json!({"username": "admin", "password": b64(ADMIN_PASSWORD), "isAdmin": true}).to_string()),
        ("missing username", JSON, json!({"password": b64(ADMIN_PASSWORD)}).to_string()),
        ("missing password", JSON, json!({"username": "admin"}).to_string()),
        ("username not a string", JSON, json!({"username": ["admin"], "password": b64(ADMIN_PASSWORD)}).to_string()),
        ("negative timeout", JSON, json!({"username": "admin", "password": b64(ADMIN_PASSWORD), "timeout": -5}).to_string()),
        ("timeout not a number", JSON, json!({"username": "admin", "password": b64(ADMIN_PASSWORD), "timeout": "soon"}).to_string()),
        ("malformed xml", XML, "<DM2ContentIndexing_CheckCredentialReq username=\"admin\"".into()),
        ("wrong xml root", XML, format!("<Other username=\"admin\" password=\"{}\"/>", b64(ADMIN_PASSWORD))),
        ("unknown xml attribute", XML, format!("<DM2ContentIndexing_CheckCredentialReq username=\"admin\" password=\"{}\" evil=\"1\"/>", b64(ADMIN_PASSWORD))),
        ("xml entity", XML, "<!DOCTYPE x [<!ENTITY e \"admin\">]><DM2ContentIndexing_CheckCredentialReq username=\"&e;\" password=\"x\"/>".into()),
        ("empty body", JSON, String::new()),
    ];
    for (what, ct, body) in cases {
        let r = app
            .http
            .post(app.cv("/Login"))
            .header("Content-Type", ct)
            .header("Accept", JSON)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{what}");
        let v = json_body(r).await;
        assert_eq!(v["errorCode"], 2, "{what}");
        assert!(
            v["errList"][0]["errLogMessage"]
                .as_str()
                .unwrap()
                .starts_with("Invalid request"),
            "{what}: {v}"
        );
    }
    // The XML shape for XML clients.
    let r = app
        .http
        .post(app.cv("/Login"))
        .header("Content-Type", XML)
        .header("Accept", XML)
        .body("<nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("errLogMessage=\"Invalid request"), "{text}");
    assert_eq!(app.session_count().await, 0);
}

#[tokio::test]
async fn oversized_bodies_are_413_in_the_dialect_shape() {
    let app = TestApp::spawn().await;
    let huge = json!({"username": "admin", "password": "x".repeat(200 * 1024)}).to_string();
    let r = app
        .http
        .post(app.cv("/Login"))
        .header("Content-Type", JSON)
        .header("Accept", JSON)
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v = json_body(r).await;
    assert_eq!(v["errorMessage"], "Request body too large");
    let token = app.cv_login("admin", ADMIN_PASSWORD).await;
    let r = app
        .http
        .delete(app.cv("/Sessions"))
        .header("Authtoken", &token)
        .header("Accept", XML)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_cv_error(r, 413, 2).await;
    assert_eq!(app.session_count().await, 1);
}

/// Each flush of last-access times leaves a user's cached listing stale; the
/// requests that then find it so read the store once between them, not once each.
#[tokio::test]
async fn concurrent_listings_after_a_flush_read_the_store_once() {
    let app = Arc::new(TestApp::spawn().await);
    let token = app.cv_login("admin", ADMIN_PASSWORD).await;
    assert_eq!(app.sessions_json(&token, app.admin.id).await.len(), 1);
    app.flush().await;
    app.store.set_slow_listings(true);
    let before = app.store.listing_reads();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (app, token) = (app.clone(), token.clone());
        requests.spawn(async move { app.sessions_json(&token, app.admin.id).await.len() });
    }
    while let Some(count) = requests.join_next().await {
        assert_eq!(count.unwrap(), 1);
    }
    let reads = app.store.listing_reads() - before;
    // One read, or two if the background flush moved the touch epoch meanwhile.
    assert!(
        (1..=2).contains(&reads),
        "{reads} store reads for 16 listings"
    );
}

#[tokio::test]
async fn token_problems_are_401_in_json_and_xml() {
    let app = TestApp::spawn().await;
    let token = app.cv_login("admin", ADMIN_PASSWORD).await;
    let path = format!("/Session?userId={}", app.admin.id);
    for bad in [
        None,
        Some("QSDK "),
        Some("QSDK garbage"),
        Some("QSDK 0000000000000000000000000000000000000000000000000000000000000000"),
        Some("Bearer whatever"),
    ] {
        for accept in [JSON, XML] {
            let mut req = app.http.get(app.cv(&path)).header("Accept", accept);
            if let Some(t) = bad {
                req = req.header("Authtoken", t);
            }
            let r = req.send().await.unwrap();
            let msg = assert_cv_error(r, 401, 5).await;
            assert_eq!(msg, "Access denied");
        }
    }
    // Exact JSON body.
    let r = app.cv_get(&path, "QSDK nope", JSON).await;
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"errorCode":5,"errorMessage":"Access denied"}"#
    );
    // The bare secret (no QSDK prefix) works too.
    let bare = token.strip_prefix("QSDK ").unwrap();
    assert_eq!(app.cv_get(&path, bare, JSON).await.status(), 200);
}

#[tokio::test]
async fn sessions_of_self_in_json_and_xml() {
    let app = TestApp::spawn().await;
    let token = app.cv_login("admin", ADMIN_PASSWORD).await;
    let t0 = app.clock_now().unix_seconds();
    let list = app.sessions_json(&token, app.admin.id).await;
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_eq!(s["logoutTime"], 0);
    assert_eq!(s["loginTime"], t0);
    assert_eq!(s["lastAccessedTime"], t0);
    assert_eq!(s["host"], "127.0.0.1");
    assert_eq!(s["description"], "");
    assert_eq!(s["browserSessionId"], 1);
    assert_eq!(s["consoleType"], 13);
    assert_eq!(
        s["user"],
        json!({"userName": "admin", "userId": app.admin.id.0})
    );
    let sid = s["sessionId"].as_str().unwrap().to_string();
    assert_eq!(sid, sid.to_uppercase());

    let r = app
        .cv_get(&format!("/Session?userId={}", app.admin.id), &token, XML)
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?><Api_GetLoggedInSessionsResp>"), "{text}");
    let expected = format!(
        r#"<sessions logoutTime="0" loginTime="{t0}" lastAccessedTime="{t0}" host="127.0.0.1" description="" sessionId="{sid}" browserSessionId="1" consoleType="13"><user userName="admin" userId="{}"/></sessions>"#,
        app.admin.id
    );
    assert!(text.contains(&expected), "{text}");
    assert!(text.ends_with("</Api_GetLoggedInSessionsResp>"));

    // Case-insensitive path segments.
    let r = app
        .cv_get_at(
            &format!("/COMMANDCENTER/API/session?userId={}", app.admin.id),
            &token,
            JSON,
        )
        .await;
    assert_eq!(r.status(), 200);
    // At the root and under /webconsole/api too.
    for prefix in ["", "/webconsole/api"] {
        let r = app
            .cv_get_at(
                &format!("{prefix}/Session?userId={}", app.admin.id),
                &token,
                JSON,
            )
            .await;
        assert_eq!(r.status(), 200, "{prefix}");
    }
}

#[tokio::test]
async fn browser_session_ids_count_per_user_and_only_active_filters() {
    let app = TestApp::spawn().await;
    app.add_user("bob", "bob-password", &[]).await;
    let a1 = app.cv_login("admin", ADMIN_PASSWORD).await;
    app.advance(Duration::from_secs(1));
    let _a2 = app.cv_login("admin", ADMIN_PASSWORD).await;
    app.advance(Duration::from_secs(1));
    let b1 = app.cv_login("bob", "bob-password").await;
    app.advance(Duration::from_secs(1));
    let a3 = app.cv_login("admin", ADMIN_PASSWORD).await;
    let ids: Vec<i64> = app
        .sessions_json(&a1, app.admin.id)
        .await
        .iter()
        .map(|s| s["browserSessionId"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![3, 2, 1], "newest first");
    let bob = app.store().find_user_by_name("bob").await.unwrap().unwrap();
    let bob_list = app.sessions_json(&b1, bob.id).await;
    assert_eq!(bob_list[0]["browserSessionId"], 1);

    // Log one out: it stays listed, with its logout time, unless only active ones are asked for.
    app.advance(Duration::from_secs(90));
    let r = app
        .http
        .post(app.cv("/Logout"))
        .header("Authtoken", &a3)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/plain;charset=utf-8"
    );
    assert_eq!(r.text().await.unwrap(), "User logged out");
    let all = app.sessions_json(&a1, app.admin.id).await;
    assert_eq!(all.len(), 3);
    assert_eq!(all[0]["logoutTime"], app.clock_now().unix_seconds());
    let r = app
        .http
        .get(app.cv(&format!("/Session?userId={}", app.admin.id)))
        .header("Authtoken", &a1)
        .header("Accept", JSON)
        .header("ONLY-ACTIVE-SESSIONS", "true")
        .send()
        .await
        .unwrap();
    let active = json_body(r).await["sessions"].as_array().unwrap().clone();
    assert_eq!(active.len(), 2);
    assert!(active.iter().all(|s| s["logoutTime"] == 0));
    // The logged-out token is dead.
    let r = app
        .cv_get(&format!("/Session?userId={}", app.admin.id), &a3, JSON)
        .await;
    assert_cv_error(r, 401, 5).await;
    // A user with no sessions gets an empty list, never {}.
    let carol = app.add_user("carol", "carol-password", &[]).await;
    assert_eq!(app.sessions_json(&a1, carol.id).await, Vec::<Value>::new());
    let r = app
        .cv_get(&format!("/Session?userId={}", carol.id), &a1, XML)
        .await;
    let text = r.text().await.unwrap();
    assert!(
        text.ends_with("<Api_GetLoggedInSessionsResp></Api_GetLoggedInSessionsResp>"),
        "{text}"
    );
}

#[tokio::test]
async fn rbac_for_other_users_sessions() {
    let app = TestApp::spawn().await;
    let plain = app.add_user("plain", "plain-password", &[]).await;
    let viewer = app.add_user("viewer", "viewer-password", &["view"]).await;
    let uadmin = app
        .add_user("uadmin", "uadmin-password", &["user-admin"])
        .await;
    let t_plain = app.cv_login("plain", "plain-password").await;
    let t_view = app.cv_login("viewer", "viewer-password").await;
    let t_uadmin = app.cv_login("uadmin", "uadmin-password").await;
    let t_master = app.cv_login("admin", ADMIN_PASSWORD).await;

    // Everyone sees their own.
    for (t, u) in [(&t_plain, &plain), (&t_view, &viewer), (&t_uadmin, &uadmin)] {
        assert_eq!(app.sessions_json(t, u.id).await.len(), 1);
    }
    // Another user's: only with "Add, Delete and Modify a User".
    let target = format!("/Session?userId={}", plain.id);
    for (t, status) in [(&t_view, 403), (&t_uadmin, 200), (&t_master, 200)] {
        for accept in [JSON, XML] {
            let r = app.cv_get(&target, t, accept).await;
            assert_eq!(r.status().as_u16(), status);
            if status == 403 {
                let msg = assert_cv_error(r, 403, 5).await;
                assert!(msg.contains("Add, Delete and Modify a User"), "{msg}");
            }
        }
    }
    let r = app
        .cv_get(&format!("/Session?userId={}", app.admin.id), &t_plain, JSON)
        .await;
    assert_cv_error(r, 403, 5).await;
    // A plain user asking about a user that does not exist learns nothing more than 403.
    let r = app.cv_get("/Session?userId=99999", &t_plain, JSON).await;
    assert_cv_error(r, 403, 5).await;
    let r = app.cv_get("/Session?userId=99999", &t_master, JSON).await;
    assert_cv_error(r, 404, 4).await;
}

/// A user's whole listing is served from the cache for up to a second; asked for
/// active sessions only, one that went idle past its timeout since the listing was
/// read is left out (and listed as ended without the header).
#[tokio::test]
async fn only_active_leaves_out_what_expired_since_the_cached_listing() {
    let app = TestApp::spawn().await;
    let idle = app.cv_login("admin", ADMIN_PASSWORD).await;
    let idle_id = app.sessions_json(&idle, app.admin.id).await[0]["sessionId"].clone();
    app.advance(Duration::from_secs(29 * 60));
    let current = app.cv_login("admin", ADMIN_PASSWORD).await;
    let active = |token: String| {
        let app = &app;
        async move {
            let r = app
                .http
                .get(app.cv(&format!("/Session?userId={}", app.admin.id)))
                .header("Authtoken", token)
                .header("Accept", JSON)
                .header("only-active-sessions", "true")
                .send()
                .await
                .unwrap();
            json_body(r).await["sessions"].as_array().unwrap().clone()
        }
    };
    // 29:59.7 idle: still live; this listing is read and cached.
    app.advance(Duration::from_millis(59_700));
    assert_eq!(active(current.clone()).await.len(), 2);
    // 30:00.2 idle: ended, half a second after the listing was read.
    app.advance(Duration::from_millis(500));
    let listed = active(current.clone()).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_ne!(listed[0]["sessionId"], idle_id);
    let all = app.sessions_json(&current, app.admin.id).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["sessionId"], idle_id);
    assert_ne!(all[1]["logoutTime"], 0);
}

#[tokio::test]
async fn bad_user_id_parameters_are_400() {
    let app = TestApp::spawn().await;
    let token = app.cv_login("admin", ADMIN_PASSWORD).await;
    for q in [
        "/Session",
        "/Session?userId=",
        "/Session?userId=abc",
        "/Session?userId=1.5",
        "/Session?userId=1&userId=2",
        "/Session?userId=%ZZ",
    ] {
        for accept in [JSON, XML] {
            let r = app.cv_get(q, &token, accept).await;
            assert_cv_error(r, 400, 2).await;
        }
    }
    let r = app.cv_get("/User/abc", &token, JSON).await;
    assert_cv_error(r, 400, 2).await;
}

#[tokio::test]
async fn every_call_touches_and_idle_expiry_ends_the_session() {
    let app = TestApp::spawn().await;
    let token = app.cv_login("admin", ADMIN_PASSWORD).await;
    let t0 = app.clock_now();
    app.advance(Duration::from_secs(25 * 60));
    let list = app.sessions_json(&token, app.admin.id).await;
    let touched = app.clock_now().unix_seconds();
    assert_eq!(list[0]["lastAccessedTime"], touched);
    app.flush().await;
    let stored = app
        .store()
        .list_sessions(&SessionQuery {
            user: Some(app.admin.id),
            state: StateFilter::Any,
            host: None,
            now: app.clock_now(),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(stored[0].last_accessed_at.unix_seconds(), touched);

    // 29 minutes idle: still fine; that call touches again.
    app.advance(Duration::from_secs(29 * 60));
    assert_eq!(app.sessions_json(&token, app.admin.id).await.len(), 1);
    let last = app.clock_now();
    // 30 minutes idle: gone.
    app.advance(Duration::from_secs(30 * 60));
    let r = app
        .cv_get(&format!("/Session?userId={}", app.admin.id), &token, JSON)
        .await;
    assert_cv_error(r, 401, 5).await;
    // It shows as ended, at the moment it expired.
    let other = app.cv_login("admin", ADMIN_PASSWORD).await;
    let list = app.sessions_json(&other, app.admin.id).await;
    let old = list
        .iter()
        .find(|s| s["loginTime"] == t0.unix_seconds())
        .unwrap();
    assert_eq!(
        old["logoutTime"],
        last.plus(Duration::from_secs(30 * 60)).unix_seconds()
    );
    let s = app
        .store()
        .list_sessions(&SessionQuery {
            user: Some(app.admin.id),
            state: StateFilter::Ended,
            host: None,
            now: app.clock_now(),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(s[0].end.unwrap().reason, EndReason::Idle);
}

#[tokio::test]
async fn absolute_lifetime_caps_a_busy_session() {
    let app = TestApp::spawn().await;
    let token = app.cv_login("admin", ADMIN_PASSWORD).await;
    let path = format!("/Session?userId={}", app.admin.id);
    // Busy every 20 minutes for 24 hours.
    for _ in 0..(24 * 3 - 1) {
        app.advance(Duration::from_secs(20 * 60));
        assert_eq!(app.cv_get(&path, &token, JSON).await.status(), 200);
    }
    app.advance(Duration::from_secs(20 * 60));
    assert_cv_error(app.cv_get(&path, &token, JSON).await, 401, 5).await;
    let ended = app
        .store()
        .list_sessions(&SessionQuery {
            user: Some(app.admin.id),
            state: StateFilter::Ended,
            host: None,
            now: app.clock_now(),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(ended[0].end.unwrap().reason, EndReason::Absolute);
}

#[tokio::test]
async fn login_timeout_is_honoured_within_the_maximum() {
    let app = TestApp::spawn_with(|c| {
        c.session.max_idle_timeout = Duration::from_secs(60 * 60);
    })
    .await;
    let login = |minutes: i64| {
        app.cv_login_raw(
            json!({"username": "admin", "password": b64(ADMIN_PASSWORD), "timeout": minutes}),
        )
    };
    let short = json_body(login(5).await).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let long = json_body(login(600).await).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/Session?userId={}", app.admin.id);
    app.advance(Duration::from_secs(6 * 60));
    assert_eq!(app.cv_get(&path, &short, JSON).await.status(), 401);
    // Asked for 10 hours, capped at the 1 hour maximum.
    app.advance(Duration::from_secs(53 * 60));
    assert_eq!(app.cv_get(&path, &long, JSON).await.status(), 200);
    app.advance(Duration::from_secs(60 * 60));
    assert_eq!(app.cv_get(&path, &long, JSON).await.status(), 401);
}

#[tokio::test]
async fn delete_sessions_in_xml_and_json_with_rbac() {
    let app = TestApp::spawn().await;
    let bob = app.add_user("bob", "bob-password", &[]).await;
    let t_bob = app.cv_login("bob", "bob-password").await;
    let t_bob2 = app.cv_login("bob", "bob-password").await;
    let t_admin = app.cv_login("admin", ADMIN_PASSWORD).await;
    let admin_sid = app.sessions_json(&t_admin, app.admin.id).await[0]["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let bob_sids: Vec<String> = app
        .sessions_json(&t_bob, bob.id)
        .await
        .iter()
        .map(|s| s["sessionId"].as_str().unwrap().to_string())
        .collect();

    // Bob may not end the admin's session: 403, nothing changes.
    let body = format!(
        r#"<Api_LogoffUsersRequest><sessions val="{admin_sid}"/></Api_LogoffUsersRequest>"#
    );
    let r = app
        .http
        .delete(app.cv("/Sessions"))
        .header("Authtoken", &t_bob)
        .header("Content-Type", XML)
        .header("Accept", XML)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_cv_error(r, 403, 5).await;
    assert_eq!(
        app.cv_get(&format!("/Session?userId={}", app.admin.id), &t_admin, JSON)
            .await
            .status(),
        200
    );

    // Unknown id: 404, and the known one in the same request is not ended either.
    let body = json!({"sessions": [{"val": bob_sids[0]}, {"val": "00000000-0000-0000-0000-000000000000"}]});
    let r = app
        .http
        .delete(app.cv("/Sessions"))
        .header("Authtoken", &t_bob)
        .header("Accept", JSON)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_cv_error(r, 404, 4).await;
    assert_eq!(
        app.sessions_json(&t_bob, bob.id)
            .await
            .iter()
            .filter(|s| s["logoutTime"] == 0)
            .count(),
        2
    );

    // Bad requests.
    for (ct, body) in [
        (
            XML,
            "<Api_LogoffUsersRequest><sessions val=\"not-a-guid\"/></Api_LogoffUsersRequest>"
                .to_string(),
        ),
        (
            XML,
            "<Api_LogoffUsersRequest></Api_LogoffUsersRequest>".to_string(),
        ),
        (XML, "<Wrong/>".to_string()),
        (
            XML,
            format!(
                "<Api_LogoffUsersRequest><session val=\"{admin_sid}\"/></Api_LogoffUsersRequest>"
            ),
        ),
        (JSON, "{\"sessions\": 5}".to_string()),
        (
            JSON,
            format!("{{\"sessions\": [{{\"val\": \"{admin_sid}\", \"force\": true}}]}}"),
        ),
        (JSON, "{".to_string()),
    ] {
        let r = app
            .http
            .delete(app.cv("/Sessions"))
            .header("Authtoken", &t_admin)
            .header("Content-Type", ct)
            .header("Accept", JSON)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_cv_error(r, 400, 2).await;
    }
    assert_eq!(
        app.cv_get(&format!("/Session?userId={}", app.admin.id), &t_admin, JSON)
            .await
            .status(),
        200
    );

    // Bob ends his own second session (JSON); the admin ends bob's first (XML).
    let r = app
        .http
        .delete(app.cv("/Sessions"))
        .header("Authtoken", &t_bob)
        .header("Accept", JSON)
        .json(&json!({"sessions": [{"val": bob_sids[0]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "{}");
    let body = format!(
        r#"<Api_LogoffUsersRequest><sessions val="{}"/></Api_LogoffUsersRequest>"#,
        bob_sids[1]
    );
    let r = app
        .http
        .delete(app.cv("/Sessions"))
        .header("Authtoken", &t_admin)
        .header("Content-Type", XML)
        .header("Accept", XML)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .ends_with("<Api_LogoffUsersResponse/>")
    );
    for t in [&t_bob, &t_bob2] {
        assert_eq!(
            app.cv_get(&format!("/Session?userId={}", bob.id), t, JSON)
                .await
                .status(),
            401
        );
    }
    let audit = app
        .store()
        .query_audit(&sessiond::store::AuditQuery {
            user: Some(bob.id),
            kinds: vec![sessiond::domain::AuditKind::SessionRevoked],
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 2);
    assert!(
        audit
            .iter()
            .any(|e| e.event.actor.as_ref().map(|a| a.id) == Some(app.admin.id))
    );
}

#[tokio::test]
async fn renew_login_token_rotates_the_secret() {
    let app = TestApp::spawn().await;
    let token = app.cv_login("admin", ADMIN_PASSWORD).await;
    let r = app
        .http
        .post(app.cv("/RenewLoginToken"))
        .header("Authtoken", &token)
        .header("Accept", JSON)
        .json(&json!({"sessionId": token, "deviceId": "dev"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let fresh = json_body(r).await["token"].as_str().unwrap().to_string();
    assert!(fresh.starts_with("QSDK ") && fresh != token);
    let path = format!("/Session?userId={}", app.admin.id);
    assert_eq!(app.cv_get(&path, &token, JSON).await.status(), 401);
    let list = app.sessions_json(&fresh, app.admin.id).await;
    assert_eq!(list.len(), 1, "the same session, a new secret");

    // XML form.
    let r = app
        .http
        .post(app.cv("/RenewLoginToken"))
        .header("Content-Type", XML)
        .header("Accept", XML)
        .body(format!(
            r#"<DM2ContentIndexing_RenewLoginTokenReq sessionId="{fresh}"/>"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let newer = attr(&r.text().await.unwrap(), "token");
    assert!(newer.starts_with("QSDK "));

    // A dead token cannot be renewed: a clean 401, three times over (cvpysdk retries).
    for _ in 0..3 {
        let r = app
            .http
            .post(app.cv("/RenewLoginToken"))
            .header("Authtoken", &token)
            .header("Accept", JSON)
            .json(&json!({"sessionId": token, "deviceId": "dev"}))
            .send()
            .await
            .unwrap();
        assert_cv_error(r, 401, 5).await;
    }
    let r = app
        .http
        .post(app.cv("/RenewLoginToken"))
        .header("Accept", JSON)
        .json(&json!({"sessionId": "QSDK junk"}))
        .send()
        .await
        .unwrap();
    assert_cv_error(r, 401, 5).await;
    let r = app
        .http
        .post(app.cv("/RenewLoginToken"))
        .header("Accept", JSON)
        .json(&json!({"sessionId": newer, "extra": 1}))
        .send()
        .await
        .unwrap();
    assert_cv_error(r, 400, 2).await;
    // An expired session cannot be renewed either.
    app.advance(Duration::from_secs(31 * 60));
    let r = app
        .http
        .post(app.cv("/RenewLoginToken"))
        .header("Accept", JSON)
        .json(&json!({"sessionId": newer}))
        .send()
        .await
        .unwrap();
    assert_cv_error(r, 401, 5).await;
}

#[tokio::test]
async fn users_listing_and_properties() {
    let app = TestApp::spawn().await;
    let plain = app.add_user("plain", "plain-password", &[]).await;
    let viewer = app.add_user("viewer", "viewer-password", &["view"]).await;
    let t_plain = app.cv_login("plain", "plain-password").await;
    let t_view = app.cv_login("viewer", "viewer-password").await;
    let t_admin = app.cv_login("admin", ADMIN_PASSWORD).await;

    let v = json_body(app.cv_get("/User", &t_admin, JSON).await).await;
    let names: Vec<&str> = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userEntity"]["userName"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["admin", "plain", "viewer"]);
    let first = &v["users"][0];
    assert_eq!(
        first["userEntity"],
        json!({"userName": "admin", "userGUID": app.admin.guid, "userId": app.admin.id.0})
    );
    assert_eq!(first["enableUser"], true);
    assert!(first.get("email").is_some() && first.get("description").is_some());

    // A plain user sees only themself; a viewer sees all.
    let v = json_body(app.cv_get("/User", &t_plain, JSON).await).await;
    assert_eq!(v["users"].as_array().unwrap().len(), 1);
    assert_eq!(v["users"][0]["userEntity"]["userName"], "plain");
    let v = json_body(app.cv_get("/user", &t_view, JSON).await).await;
    assert_eq!(v["users"].as_array().unwrap().len(), 3);

    let r = app.cv_get("/User", &t_admin, XML).await;
    let text = r.text().await.unwrap();
    assert!(
        text.contains("<App_GetUserPropertiesResponse><users "),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"<userEntity userName="admin" userGUID="{}" userId="{}"/>"#,
            app.admin.guid, app.admin.id
        )),
        "{text}"
    );

    // Properties: self always, others with View, unknown 404.
    let r = app
        .cv_get(&format!("/User/{}?Level=50", plain.id), &t_plain, XML)
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("<App_GetUserPropertiesResponse>") && text.contains("userName=\"plain\""),
        "{text}"
    );
    let v = json_body(
        app.cv_get(&format!("/User/{}", plain.id), &t_view, JSON)
            .await,
    )
    .await;
    assert_eq!(v["users"][0]["email"], "plain@example.test");
    assert_cv_error(
        app.cv_get(&format!("/User/{}", viewer.id), &t_plain, JSON)
            .await,
        403,
        5,
    )
    .await;
    assert_cv_error(app.cv_get("/User/424242", &t_admin, XML).await, 404, 4).await;

    // The v4 endpoints cvpysdk uses, and the security associations.
    let v = json_body(
        app.cv_get("/v4/user?additionalProperties=true", &t_admin, JSON)
            .await,
    )
    .await;
    assert_eq!(v["users"][1]["name"], "plain");
    assert_eq!(v["users"][1]["id"], plain.id.0);
    let v = json_body(
        app.cv_get(&format!("/V4/User/{}", viewer.id), &t_view, JSON)
            .await,
    )
    .await;
    assert_eq!(v["name"], "viewer");
    assert_eq!(v["enabled"], true);
    let v = json_body(
        app.cv_get(&format!("/User/{}/Security", viewer.id), &t_view, JSON)
            .await,
    )
    .await;
    assert_eq!(
        v["associations"][0]["properties"]["role"]["roleName"],
        "view"
    );
    let v = json_body(app.cv_get("/WhoAmI", &t_view, JSON).await).await;
    assert_eq!(v["user"]["userName"], "viewer");
}

#[tokio::test]
async fn unknown_commvault_paths_are_404_in_shape() {
    let app = TestApp::spawn().await;
    let r = app
        .http
        .get(app.cv("/NoSuchThing"))
        .header("Accept", JSON)
        .send()
        .await
        .unwrap();
    assert_cv_error(r, 404, 4).await;
}

#[tokio::test]
async fn console_type_and_host_rules() {
    let app = TestApp::spawn_with(|c| {
        c.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let login = |body: Value, ua: &'static str, xff: Option<&'static str>| {
        let mut req = app
            .http
            .post(app.cv("/Login"))
            .header("Accept", JSON)
            .header("User-Agent", ua)
            .json(&body);
        if let Some(x) = xff {
            req = req.header("X-Forwarded-For", x);
        }
        req.send()
    };
    let pw = b64(ADMIN_PASSWORD);
    login(
        json!({"username": "admin", "password": pw, "clientType": 5}),
        "cv",
        Some("203.0.113.5"),
    )
    .await
    .unwrap();
    app.advance(Duration::from_secs(1));
    login(
        json!({"username": "admin", "password": pw}),
        "Mozilla/5.0 (X11)",
        None,
    )
    .await
    .unwrap();
    app.advance(Duration::from_secs(1));
    let token = app.cv_login("admin", ADMIN_PASSWORD).await;
    let list = app.sessions_json(&token, app.admin.id).await;
    let got: Vec<(i64, &str)> = list
        .iter()
        .map(|s| {
            (
                s["consoleType"].as_i64().unwrap(),
                s["host"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(13, "127.0.0.1"), (19, "127.0.0.1"), (5, "203.0.113.5")]
    );
}

#[tokio::test]
async fn forwarded_for_from_untrusted_peers_is_ignored() {
    let app = TestApp::spawn().await;
    app.http
        .post(app.cv("/Login"))
        .header("X-Forwarded-For", "203.0.113.5")
        .json(&json!({"username": "admin", "password": b64(ADMIN_PASSWORD)}))
        .send()
        .await
        .unwrap();
    let token = app.cv_login("admin", ADMIN_PASSWORD).await;
    let list = app.sessions_json(&token, app.admin.id).await;
    assert!(list.iter().all(|s| s["host"] == "127.0.0.1"));
}

#[tokio::test]
async fn store_failure_is_503_without_detail() {
    let app = TestApp::spawn().await;
    let token = app.cv_login("admin", ADMIN_PASSWORD).await;
    app.store.set_failing(true);
    for accept in [JSON, XML] {
        let r = app
            .cv_get(&format!("/Session?userId={}", app.admin.id), &token, accept)
            .await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let text = r.text().await.unwrap();
        assert!(text.contains("Service unavailable"), "{text}");
        assert!(!text.contains("fire") && !text.contains("secret"), "{text}");
        let r = app
            .http
            .post(app.cv("/Login"))
            .header("Accept", accept)
            .json(&json!({"username": "admin", "password": b64(ADMIN_PASSWORD)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert!(!r.text().await.unwrap().contains(SECRET_CAUSE));
    }
    app.store.set_failing(false);
    assert_eq!(
        app.cv_get(&format!("/Session?userId={}", app.admin.id), &token, JSON)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_under_each_base_path() {
    let app = TestApp::spawn().await;
    let get = |path: &'static str| app.http.get(app.url(path)).header("Accept", JSON).send();
    // Under a Commvault base path: the dialect's own 404, in any case and depth.
    for path in [
        "/commandcenter/api/nothing",
        "/webconsole/api/NoSuchThing",
        "/commandcenter/api/v4/user/1/deeper",
    ] {
        assert_cv_error(get(path).await.unwrap(), 404, 4).await;
    }
    // The base itself answers; so does the same endpoint at every base.
    for base in ["", "/commandcenter/api", "/webconsole/api"] {
        let r = app
            .http
            .get(app.url(&format!("{base}/Login")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{base}");
        assert_eq!(r.headers()["allow"], "POST");
    }
    let r = get("/commandcenter/api").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Outside every base: the plain 404.
    let r = get("/commandcenterx/api/Login").await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.text().await.unwrap(), "not found\n");
}
