//! Several real `sessiond serve` processes over one PostgreSQL database or one Redis
//! key prefix, driven over HTTP through the Commvault dialect; and a store outage
//! (a cuttable TCP proxy between sessiond and the server) answered with 503 and
//! recovered from without a restart.

use crate::support::b64;
use crate::support::backends::{TestDatabase, TestRedisPrefix, test_store_options};
use crate::support::process::{ServeProcess, cli_with_env, text};
use crate::support::proxy::Proxy;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sessiond::domain::SessionId;
use std::time::{Duration, Instant};

const PASSWORD: &str = "cluster-admin-password";
const API: &str = "/commandcenter/api";

/// One sessiond process, as a Commvault client sees it.
struct Node {
    process: ServeProcess,
    http: reqwest::Client,
}

impl Node {
    /// Starts `sessiond serve` on `store` with extra environment (store options).
    async fn start(store: String, env: Vec<(String, String)>) -> Node {
        let process = tokio::task::spawn_blocking(move || {
            let mut env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            env.push(("SESSIOND_ADMIN_PASSWORD", PASSWORD));
            env.push(("SESSIOND_PASSWORD_HASH__MEMORY_KIB", "8"));
            env.push(("SESSIOND_PASSWORD_HASH__ITERATIONS", "1"));
            ServeProcess::start(&store, &[], &env)
        })
        .await
        .unwrap();
        Node {
            process,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API}{path}", self.process.base())
    }

    async fn login_raw(&self) -> reqwest::Response {
        self.http
            .post(self.url("/Login"))
            .header("Accept", "application/json")
            .json(&json!({"username": "admin", "password": b64(PASSWORD)}))
            .send()
            .await
            .unwrap()
    }

    /// Logs in as admin: (token, user id).
    async fn login(&self) -> (String, String) {
        let r = self.login_raw().await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errList"], json!([]), "{v}");
        (
            v["token"].as_str().unwrap().to_string(),
            v["aliasName"].as_str().unwrap().to_string(),
        )
    }

    async fn sessions(&self, token: &str, user: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/Session?userId={user}")))
            .header("Authtoken", token)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
    }

    async fn session_list(&self, token: &str, user: &str) -> Vec<Value> {
        let r = self.sessions(token, user).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["sessions"].as_array().unwrap().clone()
    }

    async fn logout(&self, token: &str) -> reqwest::Response {
        self.http
            .post(self.url("/Logout"))
            .header("Authtoken", token)
            .send()
            .await
            .unwrap()
    }
}

/// Starts two instances at once on an empty store (both migrate and bootstrap),
/// then: login on A; get on B sees the session and touches its last access; logout
/// on B; A refuses the token at once; a listing on A shows the ended session.
async fn two_instances_share_one_store(store: String, env: Vec<(String, String)>) {
    let (a, b) = tokio::join!(
        Node::start(store.clone(), env.clone()),
        Node::start(store.clone(), env.clone())
    );
    let (token, user) = a.login().await;
    // Times have millisecond resolution, and B's touch is told from the creation
    // below by being later: a fast machine could otherwise do both in one
    // millisecond (not a wait for anything to expire).
    tokio::time::sleep(Duration::from_millis(2)).await;

    let on_b = b.session_list(&token, &user).await;
    assert_eq!(on_b.len(), 1, "{on_b:?}");
    assert_eq!(on_b[0]["logoutTime"], 0);
    let id = SessionId::parse(on_b[0]["sessionId"].as_str().unwrap()).unwrap();

    // B's touch reaches the shared store within its flush bound (at most 1 s).
    let observer = sessiond::store::open_with(&store, &observer_options(&env))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = observer.get_session(id).await.unwrap().unwrap();
        if s.last_accessed_at > s.created_at {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B's last-access update never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let r = b.logout(&token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "User logged out");
    // No cache on A: the very next request is refused.
    assert_eq!(
        a.sessions(&token, &user).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let (second, _) = a.login().await;
    let on_a = a.session_list(&second, &user).await;
    let ended: Vec<_> = on_a
        .iter()
        .filter(|s| SessionId::parse(s["sessionId"].as_str().unwrap()) == Some(id))
        .collect();
    assert_eq!(ended.len(), 1, "{on_a:?}");
    assert_ne!(ended[0]["logoutTime"], 0, "{on_a:?}");
    let stored = observer.get_session(id).await.unwrap().unwrap();
    assert_eq!(
        stored.end.map(|e| e.reason),
        Some(sessiond::domain::EndReason::Logout)
    );

    // Exactly one admin despite the simultaneous start.
    assert_eq!(observer.count_users().await.unwrap(), 1);
    for n in [a, b] {
        assert_eq!(n.process.terminate().code(), Some(0));
    }
}

fn observer_options(env: &[(String, String)]) -> sessiond::store::StoreOptions {
    let prefix = env
        .iter()
        .find(|(k, _)| k == "SESSIOND_STORE_OPTIONS__KEY_PREFIX")
        .map_or("sessiond:", |(_, v)| v.as_str());
    test_store_options(prefix)
}

fn prefix_env(prefix: &str) -> Vec<(String, String)> {
    vec![(
        "SESSIOND_STORE_OPTIONS__KEY_PREFIX".to_string(),
        prefix.to_string(),
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres() {
    let db = TestDatabase::create().await;
    two_instances_share_one_store(db.url(), Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis() {
    let p = TestRedisPrefix::create().await;
    two_instances_share_one_store(p.url(), prefix_env(&p.prefix)).await;
}

/// Short store timeouts, so that an outage is answered within seconds.
fn outage_env() -> Vec<(String, String)> {
    vec![
        (
            "SESSIOND_STORE_OPTIONS__CONNECT_TIMEOUT".into(),
            "1s".into(),
        ),
        (
            "SESSIOND_STORE_OPTIONS__OPERATION_TIMEOUT".into(),
            "2s".into(),
        ),
    ]
}

/// How the store goes away.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// Connections fail (the server stopped).
    Cut,
    /// Connections hang (a network partition): only timeouts notice.
    Stall,
}

/// The store goes away under a running instance, twice (connections refused, then
/// connections hanging): requests answer 503 with no detail, within seconds; when it
/// is back the same process serves them again.
async fn outage_then_recovery(node: Node, proxy: Proxy, internals: &[&str]) {
    let (token, user) = node.login().await;
    assert_eq!(node.session_list(&token, &user).await.len(), 1);
    for outage in [Outage::Cut, Outage::Stall] {
        match outage {
            Outage::Cut => proxy.cut(),
            Outage::Stall => proxy.stall(),
        }
        for _ in 0..2 {
            let started = Instant::now();
            let r = node.sessions(&token, &user).await;
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{outage:?}");
            let body = r.text().await.unwrap();
            assert!(body.contains("Service unavailable"), "{body}");
            for secret in internals {
                assert!(
                    !body.to_lowercase().contains(&secret.to_lowercase()),
                    "{secret:?} in {body}"
                );
            }
            let r = node.login_raw().await;
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{outage:?}");
            let body = r.text().await.unwrap();
            assert!(!body.contains(&proxy.port.to_string()), "{body}");
            // Store timeouts are 1 s to connect and 2 s per call.
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{outage:?}: two 503s took {:?}",
                started.elapsed()
            );
        }

        proxy.restore();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = node.sessions(&token, &user).await.status();
            if status == StatusCode::OK {
                break;
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(
                Instant::now() < deadline,
                "{outage:?}: sessiond did not recover after the store came back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (second, _) = node.login().await;
    assert_eq!(node.session_list(&second, &user).await.len(), 2);
    assert_eq!(node.logout(&token).await.status(), 200);
    assert_eq!(
        node.sessions(&token, &user).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let log = node.process.log_text();
    assert!(log.contains("store or system failure"), "{log}");
    assert_eq!(node.process.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_503_and_recovers() {
    let db = TestDatabase::create().await;
    let proxy = Proxy::start(db.server_port()).await;
    let node = Node::start(db.url_via(Some(proxy.port)), outage_env()).await;
    let name = db.name.clone();
    outage_then_recovery(
        node,
        proxy,
        &[
            "postgres",
            "sql",
            "127.0.0.1",
            "connection",
            "pool",
            "timed",
            &name,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_503_and_recovers() {
    let p = TestRedisPrefix::create().await;
    let proxy = Proxy::start(p.server_port()).await;
    let mut env = outage_env();
    env.extend(prefix_env(&p.prefix));
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let node = Node::start(url, env).await;
    let prefix = p.prefix.clone();
    outage_then_recovery(
        node,
        proxy,
        &[
            "redis",
            "127.0.0.1",
            "connection",
            "broken",
            "timed",
            &prefix,
        ],
    )
    .await;
}

/// The operator's user commands reach the same store as the instances, chosen by
/// `--store` or `SESSIOND_STORE`, with the Redis prefix from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_commands_work_on_postgres_and_redis() {
    let db = TestDatabase::create().await;
    let p = TestRedisPrefix::create().await;
    let (pg, redis, prefix) = (db.url(), p.url(), p.prefix.clone());
    tokio::task::spawn_blocking(move || {
        let by_flag: &[(&str, &str)] = &[("SESSIOND_STORE_OPTIONS__KEY_PREFIX", &prefix)];
        for (store, env) in [(&pg, &[][..]), (&redis, by_flag)] {
            let out = cli_with_env(
                &[
                    "user",
                    "add",
                    "carol",
                    "--role",
                    "view",
                    "--password-stdin",
                    "--store",
                    store,
                ],
                "carol-password-1\n",
                env,
            );
            assert!(out.status.success(), "{}", text(&out.stderr));
            let mut env = env.to_vec();
            env.push(("SESSIOND_STORE", store));
            let out = cli_with_env(&["user", "list", "--json"], "", &env);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let users: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(users[0]["name"], "carol", "{users}");
            assert_eq!(users[0]["roles"], json!(["view"]));
        }
    })
    .await
    .unwrap();
    // The Redis user went under the prefix, nowhere else.
    assert!(
        p.keys()
            .await
            .iter()
            .any(|k| k.ends_with("user-name:carol"))
    );
}
