//! Session lifecycle across dialects: revocation, per-user limits, history and its
//! retention, audit retention, and login lockout. Time moves only by `app.advance`.

use crate::support::{ADMIN_PASSWORD, TestApp, b64};
use reqwest::Method;
use serde_json::{Value, json};
use sessiond::domain::AuditKind;
use sessiond::store::AuditQuery;
use std::time::Duration;

const CV: &str = "/commandcenter/api";

impl TestApp {
    /// A Commvault JSON login from `source` (via a trusted X-Forwarded-For when given).
    async fn cv_login_json(&self, user: &str, password: &str, source: Option<&str>) -> Value {
        let mut req = self
            .http
            .post(self.url(&format!("{CV}/Login")))
            .header("Accept", "application/json")
            .json(&json!({"username": user, "password": b64(password)}));
        if let Some(s) = source {
            req = req.header("X-Forwarded-For", s);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "Commvault logins answer 200");
        r.json().await.unwrap()
    }

    /// A `/v1` login from `source`; returns status and body.
    async fn v1_login_from(&self, user: &str, password: &str, source: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/v1/login"))
            .header("X-Forwarded-For", source)
            .json(&json!({"username": user, "password": password}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    async fn cv_status(&self, token: &str) -> u16 {
        self.http
            .get(self.url(&format!("{CV}/WhoAmI")))
            .header("Authtoken", token)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn events(&self, kind: AuditKind) -> Vec<sessiond::domain::AuditEvent> {
        self.store()
            .query_audit(&AuditQuery {
                kinds: vec![kind],
                limit: 1000,
                ..AuditQuery::default()
            })
            .await
            .unwrap()
    }
}

// ---- revocation ----

#[tokio::test]
async fn revoking_a_user_takes_effect_on_the_next_request_in_every_dialect() {
    let app = TestApp::spawn().await;
    let alice = app.add_user("alice", "alice-password", &[]).await;
    let cv = app.cv_login("alice", "alice-password").await;
    let (native, _) = app.v1_login("alice", "alice-password").await;
    assert_eq!(app.cv_status(&cv).await, 200);

    let (admin, _) = app.v1_login("admin", ADMIN_PASSWORD).await;
    let r = app
        .v1_raw(
            Method::POST,
            "/v1/sessions/revoke",
            Some(&admin),
            Some(json!({"user_id": alice.id.0})),
        )
        .await;
    assert_eq!(r.body, json!({"ended": 2}));
    assert_eq!(app.cv_status(&cv).await, 401);
    app.v1_get("/v1/session", &native)
        .await
        .error(401, "unauthenticated");

    let revoked = app.events(AuditKind::SessionRevoked).await;
    assert_eq!(revoked.len(), 2);
    for e in &revoked {
        assert_eq!(e.event.actor.as_ref().unwrap().name, "admin", "who revoked");
        assert_eq!(e.event.subject.as_ref().unwrap().name, "alice");
    }
    // A second revoke finds nothing live; an unknown user is 404.
    let r = app
        .v1_raw(
            Method::POST,
            "/v1/sessions/revoke",
            Some(&admin),
            Some(json!({"user_id": alice.id.0})),
        )
        .await;
    assert_eq!(r.body, json!({"ended": 0}));
    app.v1_raw(
        Method::POST,
        "/v1/sessions/revoke",
        Some(&admin),
        Some(json!({"user_id": 424242})),
    )
    .await
    .error(404, "not_found");
}

#[tokio::test]
async fn ending_all_my_other_sessions_keeps_this_one() {
    let app = TestApp::spawn().await;
    app.add_user("alice", "alice-password", &[]).await;
    let cv = app.cv_login("alice", "alice-password").await;
    let (other, _) = app.v1_login("alice", "alice-password").await;
    let (me, mine) = app.v1_login("alice", "alice-password").await;
    let (admin, _) = app.v1_login("admin", ADMIN_PASSWORD).await;
    let r = app
        .v1_raw(
            Method::POST,
            "/v1/sessions/revoke",
            Some(&me),
            Some(json!({"all_except_current": true})),
        )
        .await;
    assert_eq!(r.body, json!({"ended": 2}));
    assert_eq!(app.cv_status(&cv).await, 401);
    assert_eq!(app.v1_get("/v1/session", &other).await.status, 401);
    let r = app.v1_get("/v1/session", &me).await;
    assert_eq!(r.body["session"]["id"], mine["id"]);
    assert_eq!(
        app.v1_get("/v1/session", &admin).await.status,
        200,
        "other users are untouched"
    );
}

#[tokio::test]
async fn disabling_and_deleting_users_end_their_sessions() {
    let app = TestApp::spawn().await;
    let bob = app.add_user("bob", "bob-password", &[]).await;
    let carol = app.add_user("carol", "carol-password", &[]).await;
    let bob_cv = app.cv_login("bob", "bob-password").await;
    let (carol_token, carol_session) = app.v1_login("carol", "carol-password").await;
    let (admin, _) = app.v1_login("admin", ADMIN_PASSWORD).await;

    app.v1_raw(
        Method::PATCH,
        &format!("/v1/users/{}", bob.id.0),
        Some(&admin),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(app.cv_status(&bob_cv).await, 401);
    let r = app
        .v1_raw(
            Method::DELETE,
            &format!("/v1/users/{}", carol.id.0),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(app.v1_get("/v1/session", &carol_token).await.status, 401);
    // Her session stays in the history, ended as revoked.
    let r = app
        .v1_get(
            &format!("/v1/sessions/{}", carol_session["id"].as_str().unwrap()),
            &admin,
        )
        .await;
    assert_eq!(r.body["end_reason"], "revoked");
    let kinds: Vec<&str> = app
        .events(AuditKind::UserDisabled)
        .await
        .iter()
        .map(|e| e.event.kind.key())
        .chain(
            app.events(AuditKind::UserDeleted)
                .await
                .iter()
                .map(|e| e.event.kind.key()),
        )
        .collect();
    assert_eq!(kinds, ["user.disabled", "user.deleted"]);
}

#[tokio::test]
async fn password_changes_end_sessions_per_policy() {
    // Default: changing one's own password ends one's other sessions.
    let app = TestApp::spawn().await;
    let alice = app.add_user("alice", "alice-password", &[]).await;
    let cv = app.cv_login("alice", "alice-password").await;
    let (me, _) = app.v1_login("alice", "alice-password").await;
    let path = format!("/v1/users/{}/password", alice.id.0);
    let r = app
        .v1_raw(
            Method::PUT,
            &path,
            Some(&me),
            Some(json!({"password": "alice-password-2", "current_password": "alice-password"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(app.cv_status(&cv).await, 401);
    assert_eq!(app.v1_get("/v1/session", &me).await.status, 200);
    // Set by an administrator: all of the user's sessions end.
    let (admin, _) = app.v1_login("admin", ADMIN_PASSWORD).await;
    let r = app
        .v1_raw(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"password": "alice-password-3"})),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(app.v1_get("/v1/session", &me).await.status, 401);

    // Configured to keep them: one's own change leaves every session alive.
    let app = TestApp::spawn_with(|c| c.session.password_change_ends_other_sessions = false).await;
    let alice = app.add_user("alice", "alice-password", &[]).await;
    let cv = app.cv_login("alice", "alice-password").await;
    let (me, _) = app.v1_login("alice", "alice-password").await;
    let r = app
        .v1_raw(
            Method::PUT,
            &format!("/v1/users/{}/password", alice.id.0),
            Some(&me),
            Some(json!({"password": "alice-password-2", "current_password": "alice-password"})),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(app.cv_status(&cv).await, 200);
    assert_eq!(app.events(AuditKind::PasswordChanged).await.len(), 1);
}

// ---- limits ----

#[tokio::test]
async fn session_limit_deny_refuses_in_each_dialect() {
    let app = TestApp::spawn_with(|c| {
        c.limits.max_sessions_per_user = 2;
        c.limits.policy = sessiond::config::LimitPolicy::Deny;
    })
    .await;
    app.add_user("alice", "alice-password", &[]).await;
    let first = app.cv_login("alice", "alice-password").await;
    app.v1_login("alice", "alice-password").await;

    let r = app
        .v1_raw(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"username": "alice", "password": "alice-password"})),
        )
        .await;
    r.error(409, "too_many_sessions");
    let v = app.cv_login_json("alice", "alice-password", None).await;
    assert_eq!(
        v["errList"][0]["errLogMessage"],
        "Maximum number of sessions reached for this user"
    );
    assert!(v.get("token").is_none());

    // Another user is not affected; ending one session makes room.
    app.v1_login("admin", ADMIN_PASSWORD).await;
    let r = app
        .http
        .post(app.url(&format!("{CV}/Logout")))
        .header("Authtoken", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.v1_login("alice", "alice-password").await;
    // Expired sessions do not count.
    app.advance(Duration::from_secs(31 * 60));
    app.v1_login("alice", "alice-password").await;
    app.v1_login("alice", "alice-password").await;
}

#[tokio::test]
async fn session_limit_evict_oldest_ends_the_oldest() {
    let app = TestApp::spawn_with(|c| {
        c.limits.max_sessions_per_user = 2;
        c.limits.policy = sessiond::config::LimitPolicy::EvictOldest;
    })
    .await;
    app.add_user("alice", "alice-password", &[]).await;
    let oldest = app.cv_login("alice", "alice-password").await;
    app.advance(Duration::from_secs(1));
    let (middle, _) = app.v1_login("alice", "alice-password").await;
    app.advance(Duration::from_secs(1));
    let (newest, _) = app.v1_login("alice", "alice-password").await;
    assert_eq!(app.cv_status(&oldest).await, 401);
    assert_eq!(app.v1_get("/v1/session", &middle).await.status, 200);
    // A Commvault login evicts too.
    let v = app.cv_login_json("alice", "alice-password", None).await;
    assert!(v["token"].as_str().unwrap().starts_with("QSDK "));
    assert_eq!(app.v1_get("/v1/session", &middle).await.status, 401);
    assert_eq!(app.v1_get("/v1/session", &newest).await.status, 200);

    let alice = app
        .store()
        .find_user_by_name("alice")
        .await
        .unwrap()
        .unwrap();
    let r = app
        .v1_get(
            &format!("/v1/sessions?state=ended&user={}", alice.id.0),
            &newest,
        )
        .await;
    let reasons: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["end_reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["evicted", "evicted"]);
    assert_eq!(app.events(AuditKind::SessionEvicted).await.len(), 2);
}

// ---- history and retention ----

#[tokio::test]
async fn history_keeps_every_end_reason_until_its_retention_then_is_purged() {
    let app = TestApp::spawn_with(|c| {
        c.session.idle_timeout = Duration::from_secs(600);
        c.session.absolute_lifetime = Duration::from_secs(3600);
        c.session.history_retention = Duration::from_secs(24 * 3600);
        c.audit.retention = Duration::from_secs(48 * 3600);
        c.limits.max_sessions_per_user = 5;
        c.limits.policy = sessiond::config::LimitPolicy::EvictOldest;
    })
    .await;
    let alice = app.add_user("alice", "alice-password", &[]).await;
    let (admin, _) = app.v1_login("admin", ADMIN_PASSWORD).await;

    // absolute: kept busy until its lifetime ends.
    let (busy, _) = app.v1_login("alice", "alice-password").await;
    // idle: never used again.
    app.v1_login("alice", "alice-password").await;
    // logout and revoked.
    let (bye, _) = app.v1_login("alice", "alice-password").await;
    app.v1_raw(Method::POST, "/v1/logout", Some(&bye), None)
        .await;
    let (_, revoked) = app.v1_login("alice", "alice-password").await;
    app.v1_raw(
        Method::DELETE,
        &format!("/v1/sessions/{}", revoked["id"].as_str().unwrap()),
        Some(&admin),
        None,
    )
    .await;
    for _ in 0..6 {
        app.advance(Duration::from_secs(540));
        assert_eq!(app.v1_get("/v1/session", &busy).await.status, 200);
    }
    // Now past the busy session's absolute lifetime (and the admin's, unused since login).
    app.advance(Duration::from_secs(540));
    // evicted: five live allowed; fill up and push the oldest out.
    let mut fresh = Vec::new();
    for _ in 0..6 {
        fresh.push(app.v1_login("alice", "alice-password").await.0);
        app.advance(Duration::from_millis(10));
    }
    assert_eq!(app.v1_get("/v1/session", &fresh[0]).await.status, 401);
    let ended = app.state.service.sweep().await.unwrap();
    assert_eq!(
        ended, 3,
        "the sweep records alice's idle and absolute expiry, and the admin's"
    );
    assert_eq!(app.events(AuditKind::SessionExpired).await.len(), 3);

    let (admin, _) = app.v1_login("admin", ADMIN_PASSWORD).await;
    let r = app
        .v1_get(
            &format!("/v1/sessions?user={}&state=ended&limit=100", alice.id.0),
            &admin,
        )
        .await;
    let mut reasons: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(s["ended_at"].is_string());
            s["end_reason"].as_str().unwrap()
        })
        .collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        ["absolute", "evicted", "idle", "logout", "revoked"]
    );

    // Past the history retention the sweep purges ended sessions; live ones stay.
    app.advance(Duration::from_secs(25 * 3600));
    let (_, live) = app.v1_login("alice", "alice-password").await;
    let (admin, _) = app.v1_login("admin", ADMIN_PASSWORD).await;
    app.state.service.sweep().await.unwrap();
    let r = app
        .v1_get(
            &format!("/v1/sessions?user={}&state=all", alice.id.0),
            &admin,
        )
        .await;
    let left: Vec<&Value> = r.body["items"].as_array().unwrap().iter().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["id"], live["id"]);
    assert_eq!(left[0]["state"], "live");

    // Audit events live for their own retention.
    assert!(!app.events(AuditKind::UserCreated).await.is_empty());
    app.advance(Duration::from_secs(24 * 3600));
    app.state.service.sweep().await.unwrap();
    assert!(app.events(AuditKind::UserCreated).await.is_empty());
    assert!(
        !app.events(AuditKind::LoginSucceeded).await.is_empty(),
        "recent events stay"
    );
}

// ---- lockout ----

fn lockout_config(c: &mut sessiond::config::Config) {
    c.lockout.max_failures_per_account = 3;
    c.lockout.max_failures_per_address = 10;
    c.lockout.window = Duration::from_secs(600);
    c.lockout.base_lockout = Duration::from_secs(60);
    c.lockout.max_lockout = Duration::from_secs(3600);
    c.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
}

#[tokio::test]
async fn accounts_lock_after_failures_and_the_lock_grows() {
    let app = TestApp::spawn_with(lockout_config).await;
    app.add_user("alice", "alice-password", &[]).await;
    let src = "198.51.100.1";
    for _ in 0..2 {
        let (s, v) = app.v1_login_from("alice", "wrong-password", src).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (401, Some("unauthenticated"))
        );
    }
    // The third failure locks the account for the base lockout.
    let (s, v) = app.v1_login_from("alice", "wrong-password", src).await;
    assert_eq!((s, v["error"]["code"].as_str()), (429, Some("locked")));
    assert_eq!(v["error"]["retry_after_seconds"], 60);

    // Locked: even the right password is refused, from any address, in each dialect.
    let (s, v) = app
        .v1_login_from("alice", "alice-password", "203.0.113.9")
        .await;
    assert_eq!(s, 429, "{v}");
    let r = app
        .http
        .post(app.url("/v1/login"))
        .json(&json!({"username": "Alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    let cv = app
        .cv_login_json("alice", "alice-password", Some("203.0.113.9"))
        .await;
    assert_eq!(cv["isAccountLocked"], true);
    assert_eq!(cv["remainingLockTime"], 60);
    assert!(cv.get("token").is_none());

    // After the lock, the right password works; the next lock is twice as long.
    app.advance(Duration::from_secs(61));
    for _ in 0..2 {
        app.v1_login_from("alice", "wrong-password", src).await;
    }
    let (s, v) = app.v1_login_from("alice", "wrong-password", src).await;
    assert_eq!(s, 429);
    assert_eq!(v["error"]["retry_after_seconds"], 120);
    app.advance(Duration::from_secs(121));
    let (s, _) = app.v1_login_from("alice", "alice-password", src).await;
    assert_eq!(s, 201);

    // Success cleared the account: three more failures are needed, and the
    // lockout starts from the base again.
    for _ in 0..2 {
        let (s, _) = app.v1_login_from("alice", "wrong-password", src).await;
        assert_eq!(s, 401);
    }
    let (s, v) = app.v1_login_from("alice", "wrong-password", src).await;
    assert_eq!(
        (s, v["error"]["retry_after_seconds"].as_u64()),
        (429, Some(60))
    );

    let locks = app.events(AuditKind::AccountLocked).await;
    assert_eq!(locks.len(), 3);
    assert!(
        locks[0].event.detail.starts_with("account locked for 60s"),
        "{:?}",
        locks[0]
    );
    let refused = app.events(AuditKind::LoginFailed).await;
    assert!(refused.iter().any(|e| e.event.detail == "locked"));
}

#[tokio::test]
async fn failures_outside_the_window_do_not_add_up() {
    let app = TestApp::spawn_with(lockout_config).await;
    app.add_user("alice", "alice-password", &[]).await;
    for _ in 0..5 {
        let (s, _) = app
            .v1_login_from("alice", "wrong-password", "198.51.100.1")
            .await;
        assert_eq!(s, 401);
        app.advance(Duration::from_secs(301));
    }
    let (s, _) = app
        .v1_login_from("alice", "alice-password", "198.51.100.1")
        .await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn unknown_names_lock_alike_so_lockout_reveals_nothing() {
    let app = TestApp::spawn_with(lockout_config).await;
    app.add_user("alice", "alice-password", &[]).await;
    let mut answers = Vec::new();
    for name in ["alice", "nobody"] {
        let mut seen = Vec::new();
        for i in 0..4 {
            // A fresh address per attempt: only the account counter is at work.
            let (s, v) = app
                .v1_login_from(name, "wrong-password", &format!("198.51.100.{i}"))
                .await;
            seen.push((s, v));
        }
        answers.push(seen);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        answers[0].iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [401, 401, 429, 429]
    );
}

#[tokio::test]
async fn a_source_address_locks_after_failures_across_accounts() {
    let app = TestApp::spawn_with(lockout_config).await;
    app.add_user("alice", "alice-password", &[]).await;
    let spray = "192.0.2.66";
    for i in 0..5 {
        let (s, _) = app
            .v1_login_from(&format!("user{i}"), "password-guess", spray)
            .await;
        assert_eq!(s, 401);
    }
    // Alice signing in from there does not reset the address's count.
    let (s, _) = app.v1_login_from("alice", "alice-password", spray).await;
    assert_eq!(s, 201);
    for i in 5..9 {
        let (s, _) = app
            .v1_login_from(&format!("user{i}"), "password-guess", spray)
            .await;
        assert_eq!(s, 401);
    }
    let (s, _) = app.v1_login_from("user9", "password-guess", spray).await;
    assert_eq!(s, 429, "the tenth failure from one address locks it");
    let (s, _) = app.v1_login_from("alice", "alice-password", spray).await;
    assert_eq!(s, 429, "a locked address refuses everyone");
    let (s, _) = app
        .v1_login_from("alice", "alice-password", "192.0.2.67")
        .await;
    assert_eq!(s, 201, "other addresses are unaffected");
    app.advance(Duration::from_secs(61));
    let (s, _) = app.v1_login_from("alice", "alice-password", spray).await;
    assert_eq!(s, 201, "the lock ends");
}

#[tokio::test]
async fn unknown_user_and_wrong_password_both_run_the_hasher_and_answer_alike() {
    let app = TestApp::spawn_with(lockout_config).await;
    app.add_user("alice", "alice-password", &[]).await;
    let hasher = app.state.service.passwords();
    let mut bodies = Vec::new();
    for (name, cv_name) in [("alice", "alice"), ("nobody", "nobody")] {
        let before = hasher.verifications();
        let (s, v) = app
            .v1_login_from(name, "wrong-password", "198.51.100.7")
            .await;
        assert_eq!(s, 401);
        let cv = app
            .cv_login_json(cv_name, "wrong-password", Some("198.51.100.8"))
            .await;
        assert_eq!(
            hasher.verifications() - before,
            2,
            "{name}: one verification per attempt, a dummy one for an unknown user"
        );
        bodies.push((v, cv));
    }
    assert_eq!(bodies[0], bodies[1]);
    // Once locked, neither path verifies anything, and both answer alike again.
    for name in ["alice", "nobody"] {
        app.v1_login_from(name, "wrong-password", "198.51.100.9")
            .await;
    }
    let before = hasher.verifications();
    let (sa, va) = app
        .v1_login_from("alice", "alice-password", "198.51.100.9")
        .await;
    let (sn, vn) = app
        .v1_login_from("nobody", "alice-password", "198.51.100.9")
        .await;
    assert_eq!((sa, sn), (429, 429));
    assert_eq!(va, vn);
    assert_eq!(hasher.verifications(), before);
}
