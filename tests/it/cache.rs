//! The in-process session cache of the embedded store: whatever ends a session or
//! changes a token, in this process or in another one sharing the SQLite file,
//! takes effect on the very next request; the cache stays within its bound.

use crate::support::process::{ServeProcess, cli, text};
use crate::support::{ADMIN_PASSWORD, TestApp, cv_login_answer};
use serde_json::{Value, json};

const CV: &str = "/commandcenter/api";
const PW: &str = "cache-admin-pw";

async fn cv_login(http: &reqwest::Client, base: &str, user: &str, pw: &str) -> (String, String) {
    let v = cv_login_answer(http, base, user, pw).await;
    (
        v["token"].as_str().unwrap().to_string(),
        v["aliasName"].as_str().unwrap().to_string(),
    )
}

/// `GET Session?userId=` of the caller: the Commvault session get.
async fn cv_status(http: &reqwest::Client, base: &str, token: &str, user_id: &str) -> u16 {
    http.get(format!("{base}{CV}/Session?userId={user_id}"))
        .header("Authtoken", token)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn vs_login(http: &reqwest::Client, base: &str, user: &str, pw: &str) -> String {
    let r = http
        .post(format!("{base}/api/session"))
        .basic_auth(user, Some(pw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<String>().await.unwrap()
}

/// `GET /api/session`: the vSphere session get.
async fn vs_status(http: &reqwest::Client, base: &str, id: &str) -> u16 {
    http.get(format!("{base}/api/session"))
        .header("vmware-api-session-id", id)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn cli_ok(args: &[&str], stdin: &str) {
    let out = cli(args, stdin);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
}

#[tokio::test]
async fn cli_revoke_and_disable_in_another_process_take_effect_on_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cache.db").display());
    let server = ServeProcess::start(&store, &[], &[("SESSIOND_ADMIN_PASSWORD", PW)]);
    let base = server.base();
    for name in ["alice", "bob"] {
        cli_ok(
            &["user", "add", name, "--password-stdin", "--store", &store],
            &format!("{name}-password\n"),
        );
    }
    let http = reqwest::Client::new();
    let (a_cv, a_id) = cv_login(&http, &base, "alice", "alice-password").await;
    let a_vs = vs_login(&http, &base, "alice", "alice-password").await;
    let (b_cv, b_id) = cv_login(&http, &base, "bob", "bob-password").await;
    let b_vs = vs_login(&http, &base, "bob", "bob-password").await;
    // Validated (and so cached) several times over.
    for _ in 0..3 {
        assert_eq!(cv_status(&http, &base, &a_cv, &a_id).await, 200);
        assert_eq!(vs_status(&http, &base, &a_vs).await, 200);
        assert_eq!(cv_status(&http, &base, &b_cv, &b_id).await, 200);
        assert_eq!(vs_status(&http, &base, &b_vs).await, 200);
    }

    cli_ok(
        &["sessions", "revoke", "--user", "alice", "--store", &store],
        "",
    );
    assert_eq!(cv_status(&http, &base, &a_cv, &a_id).await, 401);
    assert_eq!(vs_status(&http, &base, &a_vs).await, 401);
    // Bob's sessions were not touched by that, and are still served.
    assert_eq!(cv_status(&http, &base, &b_cv, &b_id).await, 200);
    assert_eq!(vs_status(&http, &base, &b_vs).await, 200);

    // A login's user is cached by name too: a password set or a disable in another
    // process holds for the very next login.
    cli_ok(
        &[
            "user",
            "passwd",
            "alice",
            "--password-stdin",
            "--store",
            &store,
        ],
        "alice-new-password\n",
    );
    assert!(cv_login_refused(&http, &base, "alice", "alice-password").await);
    cv_login(&http, &base, "alice", "alice-new-password").await;

    cli_ok(&["user", "disable", "bob", "--store", &store], "");
    assert_eq!(vs_status(&http, &base, &b_vs).await, 401);
    assert_eq!(cv_status(&http, &base, &b_cv, &b_id).await, 401);
    assert!(cv_login_refused(&http, &base, "bob", "bob-password").await);
    drop(server);
}

/// Whether a Commvault login is refused (Commvault answers 200 with an `errList`).
async fn cv_login_refused(http: &reqwest::Client, base: &str, user: &str, pw: &str) -> bool {
    let v = cv_login_answer(http, base, user, pw).await;
    v["token"].is_null() && v["errList"][0].is_object()
}

#[tokio::test]
async fn own_logout_end_and_renew_take_effect_at_once() {
    let app = TestApp::spawn().await;
    let base = app.url("");
    let id = app.admin.id.0.to_string();
    let http = &app.http;

    // Commvault logout.
    let (token, _) = cv_login(http, &base, "admin", ADMIN_PASSWORD).await;
    assert_eq!(cv_status(http, &base, &token, &id).await, 200);
    assert_eq!(cv_status(http, &base, &token, &id).await, 200);
    assert!(
        app.state.service.cached_sessions() >= 1,
        "the cache is in use"
    );
    let r = http
        .post(format!("{base}{CV}/Logout"))
        .header("Authtoken", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(cv_status(http, &base, &token, &id).await, 401);

    // vSphere delete, seen by the other dialect at once.
    let sid = vs_login(http, &base, "admin", ADMIN_PASSWORD).await;
    assert_eq!(vs_status(http, &base, &sid).await, 200);
    let qsdk = format!("QSDK {sid}");
    assert_eq!(cv_status(http, &base, &qsdk, &id).await, 200);
    let r = http
        .delete(format!("{base}/api/session"))
        .header("vmware-api-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(cv_status(http, &base, &qsdk, &id).await, 401);
    assert_eq!(vs_status(http, &base, &sid).await, 401);

    // Renewal: the old token dies, the new one works.
    let (old, _) = cv_login(http, &base, "admin", ADMIN_PASSWORD).await;
    assert_eq!(cv_status(http, &base, &old, &id).await, 200);
    let r = http
        .post(format!("{base}{CV}/RenewLoginToken"))
        .header("Authtoken", &old)
        .header("Accept", "application/json")
        .json(&json!({"sessionId": old, "deviceId": "dev"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let fresh = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(cv_status(http, &base, &old, &id).await, 401);
    assert_eq!(cv_status(http, &base, &fresh, &id).await, 200);

    // Ended by an administrator through /v1 (by id): the owner's next request is 401.
    let (victim, _) = cv_login(http, &base, "admin", ADMIN_PASSWORD).await;
    assert_eq!(cv_status(http, &base, &victim, &id).await, 200);
    let me: Value = http
        .get(format!("{base}/v1/session"))
        .bearer_auth(victim.strip_prefix("QSDK ").unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let victim_id = me["session"]["id"].as_str().unwrap().to_string();
    let r = http
        .delete(format!("{base}/v1/sessions/{victim_id}"))
        .bearer_auth(fresh.strip_prefix("QSDK ").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(cv_status(http, &base, &victim, &id).await, 401);
}

#[tokio::test]
async fn the_cache_holds_at_most_its_capacity() {
    let app = TestApp::spawn_with(|c| c.session.cache_capacity = 2).await;
    let base = app.url("");
    let id = app.admin.id.0.to_string();
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(cv_login(&app.http, &base, "admin", ADMIN_PASSWORD).await.0);
    }
    for _ in 0..2 {
        for t in &tokens {
            assert_eq!(cv_status(&app.http, &base, t, &id).await, 200);
            assert!(app.state.service.cached_sessions() <= 2);
        }
    }
    assert_eq!(app.state.service.cached_sessions(), 2);
}

#[tokio::test]
async fn two_servers_on_one_file_see_each_others_logins_ends_and_renewals() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("shared.db").display());
    let a = ServeProcess::start(&store, &[], &[("SESSIOND_ADMIN_PASSWORD", PW)]);
    let b = ServeProcess::start(&store, &[], &[]);
    let (a_base, b_base) = (a.base(), b.base());
    let http = reqwest::Client::new();
    let list = |base: String, token: String, id: String| {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("{base}{CV}/Session?userId={id}"))
                .header("Authtoken", token)
                .header("Accept", "application/json")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()["sessions"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    let (t1, id) = cv_login(&http, &a_base, "admin", PW).await;
    assert_eq!(list(a_base.clone(), t1.clone(), id.clone()).await, 1);
    assert_eq!(list(b_base.clone(), t1.clone(), id.clone()).await, 1);
    // A login on B is listed by A on its next request (the listing generation).
    let (t2, _) = cv_login(&http, &b_base, "admin", PW).await;
    assert_eq!(list(a_base.clone(), t1.clone(), id.clone()).await, 2);
    // A logout on B ends the session A has cached.
    assert_eq!(cv_status(&http, &a_base, &t2, &id).await, 200);
    let r = http
        .post(format!("{b_base}{CV}/Logout"))
        .header("Authtoken", &t2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(cv_status(&http, &a_base, &t2, &id).await, 401);
    // A renewal on A kills the old token on B.
    assert_eq!(cv_status(&http, &b_base, &t1, &id).await, 200);
    let r = http
        .post(format!("{a_base}{CV}/RenewLoginToken"))
        .header("Authtoken", &t1)
        .header("Accept", "application/json")
        .json(&json!({"sessionId": t1, "deviceId": "dev"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(cv_status(&http, &b_base, &t1, &id).await, 401);
}
