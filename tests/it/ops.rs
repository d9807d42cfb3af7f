//! Operations as an operator tries them: `/healthz`, `/readyz`, `/metrics`, request
//! ids, JSON logs, SIGTERM, the shutdown grace timeout and TLS.
//!
//! Metrics live in one registry per process. In-process servers share this test
//! binary's, so their tests compare before and after or look for label shapes;
//! exact counts are asserted against a fresh `sessiond serve` process.

use crate::support::process::{ServeProcess, binary, text};
use crate::support::{ADMIN_PASSWORD, TestApp, b64, cv_login_answer as cv_login};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sessiond::domain::SessionToken;
use sessiond::telemetry::{HTTP_DURATION, LIVE_SESSIONS, LOGINS, STORE_ERRORS};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LOGIN: &str = "/commandcenter/api/Login";

// ---- Prometheus text ----

/// The value of the sample `name` whose labels are exactly `labels`.
fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<&str, &str> = labels.iter().copied().collect();
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let found: BTreeMap<&str, &str> = label_text
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k, v.trim_end_matches('"')))
                })
                .collect();
            (series_name == name && found == wanted).then(|| value.parse().ok())?
        })
}

fn logins(exposition: &str, result: &str) -> Option<f64> {
    sample(
        exposition,
        LOGINS,
        &[("dialect", "commvault"), ("result", result)],
    )
}

fn request_count(exposition: &str, route: &str, method: &str, status: &str) -> Option<f64> {
    sample(
        exposition,
        &format!("{HTTP_DURATION}_count"),
        &[("route", route), ("method", method), ("status", status)],
    )
}

async fn scrape(http: &reqwest::Client, base: &str) -> String {
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.unwrap()
}

/// `QSDK <hex>` → `<hex>`.
fn secret_of(token: &str) -> &str {
    token.strip_prefix("QSDK ").expect("QSDK token")
}

// ---- probes and metrics, in process ----

#[tokio::test]
async fn healthz_answers_while_readyz_follows_the_store() {
    let app = TestApp::spawn().await;
    let get = |path: &'static str| {
        let req = app.http.get(app.url(path));
        async move { req.send().await.unwrap() }
    };
    let r = get("/healthz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    assert_eq!(get("/readyz").await.status(), 200);

    app.store.set_failing(true);
    let r = get("/readyz").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.unwrap();
    assert_eq!(body, "store unavailable\n", "no internal detail");
    assert_eq!(get("/healthz").await.status(), 200);

    app.store.set_failing(false);
    assert_eq!(get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn metrics_label_routes_by_template_and_count_store_errors() {
    let app = TestApp::spawn().await;
    let base = app.url("");
    let token = cv_login(&app.http, &base, "admin", ADMIN_PASSWORD).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let user_path = format!("/commandcenter/api/User/{}", app.admin.id.0);
    let r = app
        .http
        .get(app.url(&user_path))
        .header("Authtoken", &token)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .get(app.url("/no-such-route/secret-looking-segment"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A dialect's catch-all is a route of its own, not the router's fallback.
    let r = app
        .http
        .get(app.url("/v1/no-such-route"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let before = sample(&scrape(&app.http, &base).await, STORE_ERRORS, &[]).unwrap();
    app.store.set_failing(true);
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    let r = app
        .http
        .post(app.url(LOGIN))
        .header("Accept", "application/json")
        .json(&json!({"username": "admin", "password": b64(ADMIN_PASSWORD)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    app.store.set_failing(false);

    let text = scrape(&app.http, &base).await;
    let after = sample(&text, STORE_ERRORS, &[]).unwrap();
    assert!(after >= before + 2.0, "store errors {before} -> {after}");
    assert!(logins(&text, "error").unwrap() >= 1.0, "{text}");
    assert!(
        request_count(&text, "/commandcenter/api/user/{id}", "GET", "200").unwrap() >= 1.0,
        "{text}"
    );
    assert!(request_count(&text, "unmatched", "GET", "404").unwrap() >= 1.0);
    assert!(request_count(&text, "/v1/{*rest}", "GET", "404").unwrap() >= 1.0);
    assert!(request_count(&text, "/readyz", "GET", "503").unwrap() >= 1.0);
    // Raw paths, ids and tokens never become label values.
    assert!(!text.contains("secret-looking-segment"));
    assert!(!text.contains(&format!("/user/{}\"", app.admin.id.0)));
    assert!(!text.contains(secret_of(&token)));
}

#[tokio::test]
async fn login_results_are_counted_by_result() {
    let app = TestApp::spawn_with(|c| c.limits.max_sessions_per_user = 1).await;
    let base = app.url("");
    let carol = app.add_user("carol", "carol-password", &[]).await;
    let count = |text: &str, result: &str| logins(text, result).unwrap_or(0.0);
    let before = scrape(&app.http, &base).await;

    cv_login(&app.http, &base, "carol", "carol-password").await;
    // Over the limit of one session.
    let v = cv_login(&app.http, &base, "carol", "carol-password").await;
    assert!(v["errList"][0]["errLogMessage"].is_string(), "{v}");
    let v = cv_login(&app.http, &base, "carol", "wrong-password").await;
    assert!(v["errList"][0].is_object(), "{v}");
    app.state
        .service
        .update_user(
            &sessiond::service::Actor::System,
            carol.id,
            sessiond::service::UserChanges {
                enabled: Some(false),
                ..Default::default()
            },
            &sessiond::service::Origin {
                dialect: sessiond::domain::Dialect::Native,
                source: "test".into(),
            },
        )
        .await
        .unwrap();
    let v = cv_login(&app.http, &base, "carol", "carol-password").await;
    assert!(v["errList"][0].is_object(), "{v}");

    let after = scrape(&app.http, &base).await;
    for result in ["success", "limit", "invalid_credentials", "disabled"] {
        assert!(
            count(&after, result) > count(&before, result),
            "{result} not counted:\n{after}"
        );
    }
}

#[tokio::test]
async fn live_sessions_are_counted_in_the_store() {
    let app = TestApp::spawn().await;
    let base = app.url("");
    let svc = &app.state.service;
    assert_eq!(svc.refresh_live_sessions().await.unwrap(), 0);
    let first = cv_login(&app.http, &base, "admin", ADMIN_PASSWORD).await;
    cv_login(&app.http, &base, "admin", ADMIN_PASSWORD).await;
    assert_eq!(svc.refresh_live_sessions().await.unwrap(), 2);
    let r = app
        .http
        .post(app.url("/commandcenter/api/Logout"))
        .header("Authtoken", first["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(svc.refresh_live_sessions().await.unwrap(), 1);
    // Expired, even before a sweep records it: not live.
    app.advance(Duration::from_secs(31 * 60));
    assert_eq!(svc.refresh_live_sessions().await.unwrap(), 0);
}

#[tokio::test]
async fn metrics_endpoint_can_be_turned_off() {
    let app = TestApp::spawn_with(|c| c.http.metrics = false).await;
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The session gets are served before the router (`api::direct`): each still
/// echoes its request id and is counted under its route template, and the other
/// methods on those paths still reach the router.
#[tokio::test]
async fn session_gets_served_before_the_router_are_instrumented_like_the_rest() {
    let app = TestApp::spawn().await;
    let base = app.url("");
    let v = cv_login(&app.http, &base, "admin", ADMIN_PASSWORD).await;
    let token = v["token"].as_str().unwrap().to_string();
    let hex = secret_of(&token).to_string();
    let alias = v["aliasName"].as_str().unwrap().to_string();
    let rpc = json!({"jsonrpc": "2.0", "method": "invoke", "id": "7", "params": {
        "serviceId": "com.vmware.cis.session", "operationId": "get",
        "input": {"STRUCTURE": {"operation-input": {}}},
        "ctx": {"securityCtx": {"schemeId": "com.vmware.vapi.std.security.session_id",
                                "sessionId": hex}}}});
    let http = &app.http;
    let requests = [
        (
            "/commandcenter/api/session",
            "GET",
            http.get(app.url(&format!("/commandcenter/api/Session?userId={alias}")))
                .header("Authtoken", &token),
        ),
        (
            "/webconsole/api/session",
            "GET",
            http.get(app.url(&format!("/webconsole/api/session?userId={alias}")))
                .header("Authtoken", &token),
        ),
        (
            "/rest/com/vmware/cis/session",
            "POST",
            http.post(app.url("/rest/com/vmware/cis/session?~action=get"))
                .header("vmware-api-session-id", &hex),
        ),
        (
            "/api/session",
            "GET",
            http.get(app.url("/api/session"))
                .header("vmware-api-session-id", &hex),
        ),
        ("/api", "POST", http.post(app.url("/api")).json(&rpc)),
        (
            "/v1/session",
            "GET",
            http.get(app.url("/v1/session")).bearer_auth(&hex),
        ),
    ];
    for (i, (route, method, req)) in requests.into_iter().enumerate() {
        let before = scrape(http, &base).await;
        // Twice: the first answer registers the route's histogram, the second
        // records through the handle the route keeps.
        for round in 0..2 {
            let id = format!("direct-{i}-{round}");
            let r = req
                .try_clone()
                .unwrap()
                .header("Accept", "application/json")
                .header("x-request-id", &id)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{route}");
            assert_eq!(r.headers()["x-request-id"], id.as_str(), "{route}");
            let body = r.text().await.unwrap();
            assert!(
                body.contains("admin") && !body.contains("\"error\""),
                "{route}: {body}"
            );
        }
        let after = scrape(http, &base).await;
        let count = |text: &str| request_count(text, route, method, "200").unwrap_or(0.0);
        assert!(
            count(&after) >= count(&before) + 2.0,
            "{route} not counted twice:\n{after}"
        );
    }
    // Other methods on those paths are the router's: HEAD by the GET handler, and
    // the dialect's own answer to a method it does not serve.
    let r = http
        .head(app.url("/api/session"))
        .header("vmware-api-session-id", &hex)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .put(app.url("/v1/session"))
        .bearer_auth(&hex)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let text = scrape(http, &base).await;
    assert!(
        request_count(&text, "/v1/session", "PUT", "405").unwrap() >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn request_ids_are_kept_when_plain_and_made_otherwise() {
    let app = TestApp::spawn().await;
    let id_of = |path: &'static str, id: Option<String>| {
        let mut req = app.http.get(app.url(path));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        async move {
            let r = req.send().await.unwrap();
            r.headers()["x-request-id"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(
        id_of("/healthz", Some("lb-7f3a:01.x_y".into())).await,
        "lb-7f3a:01.x_y"
    );
    // Unmatched routes get one too.
    assert_eq!(id_of("/nowhere", Some("abc".into())).await, "abc");
    for bad in [None, Some("a".repeat(129)), Some("<script>".into())] {
        let made = id_of("/healthz", bad.clone()).await;
        assert!(uuid::Uuid::parse_str(&made).is_ok(), "{bad:?} -> {made}");
    }
    assert_ne!(id_of("/healthz", None).await, id_of("/healthz", None).await);
}

// ---- a real process ----

fn store_in(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("ops.db").display())
}

const PW: &str = "operator-password";

/// Environment for a server whose Argon2 takes long enough (about a second) for a
/// signal to arrive while a login is hashing.
const SLOW_LOGIN: [(&str, &str); 2] = [
    ("SESSIOND_PASSWORD_HASH__ITERATIONS", "40"),
    ("RUST_LOG", "info,sessiond::api::ops=debug"),
];

#[tokio::test]
async fn metrics_of_a_fresh_process_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(
        &store_in(&dir),
        &[],
        &[
            ("SESSIOND_ADMIN_PASSWORD", PW),
            ("SESSIOND_SESSION__SWEEP_INTERVAL", "100ms"),
        ],
    );
    let base = server.base();
    let http = reqwest::Client::new();
    let token = cv_login(&http, &base, "admin", PW).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let v = cv_login(&http, &base, "admin", "not-the-password").await;
    assert!(v["errList"][0].is_object());
    let r = http
        .get(format!("{base}/commandcenter/api/User/1"))
        .header("Authtoken", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let text = scrape(&http, &base).await;
    assert_eq!(logins(&text, "success"), Some(1.0), "{text}");
    assert_eq!(logins(&text, "invalid_credentials"), Some(1.0));
    assert_eq!(logins(&text, "error"), None);
    assert_eq!(
        request_count(&text, "/commandcenter/api/login", "POST", "200"),
        Some(2.0)
    );
    assert_eq!(
        request_count(&text, "/commandcenter/api/user/{id}", "GET", "200"),
        Some(1.0)
    );
    assert_eq!(sample(&text, STORE_ERRORS, &[]), Some(0.0));
    assert!(text.contains(&format!("# TYPE {HTTP_DURATION} histogram")));
    assert!(!text.contains(secret_of(&token)));

    // The background task refreshes the gauge every sweep interval.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(&http, &base).await;
        if sample(&text, LIVE_SESSIONS, &[]) == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "live sessions never 1:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn json_logs_carry_request_ids_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(
        &store_in(&dir),
        &[],
        &[
            ("SESSIOND_ADMIN_PASSWORD", PW),
            ("SESSIOND_LOG__FORMAT", "json"),
        ],
    );
    let base = server.base();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}{LOGIN}"))
        .header("Accept", "application/json")
        .header("x-request-id", "login-req-1")
        .json(&json!({"username": "admin", "password": b64(PW)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "login-req-1");
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http
        .get(format!("{base}/commandcenter/api/WhoAmI"))
        .header("Authtoken", &token)
        .header("x-request-id", "whoami-req-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, log) = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.signal_term();
        (server.wait_exit(), server.log_text())
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));

    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_request = |id: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id)
            .collect()
    };
    let message = |l: &Value| l["fields"]["message"].as_str().unwrap_or("").to_string();
    let login_lines = of_request("login-req-1");
    assert!(
        login_lines.iter().any(|l| message(l) == "login"),
        "{login_lines:?}"
    );
    assert!(
        login_lines
            .iter()
            .any(|l| message(l) == "finished processing request" && l["fields"]["status"] == 200),
        "{login_lines:?}"
    );
    assert!(
        login_lines
            .iter()
            .any(|l| message(l) == "finished processing request"
                && l["fields"]["route"] == "/commandcenter/api/login"
                && l["fields"]["method"] == "POST"),
        "{login_lines:?}"
    );
    assert!(!of_request("whoami-req-2").is_empty(), "{log}");
    for secret in [secret_of(&token), PW, &b64(PW)] {
        assert!(!log.contains(secret), "{secret:?} in the log");
    }
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_login_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![("SESSIOND_ADMIN_PASSWORD", PW)];
    env.extend(SLOW_LOGIN);
    let server = ServeProcess::start(&store_in(&dir), &[], &env);
    let base = server.base();
    let login = tokio::spawn(async move {
        let http = reqwest::Client::new();
        cv_login(&http, &base, "admin", PW).await
    });
    let server = tokio::task::spawn_blocking(move || {
        server.wait_for_log("started processing request");
        server.signal_term();
        server
    })
    .await
    .unwrap();
    let v = login.await.unwrap();
    assert!(v["token"].as_str().unwrap().starts_with("QSDK "), "{v}");
    let (status, log) = tokio::task::spawn_blocking(move || {
        let mut server = server;
        (server.wait_exit(), server.log_text())
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    // The signal arrived while the login was hashing.
    let shutting = log.find("shutting down").expect("shutdown logged");
    let logged_in = log.find("sessiond::service::auth").expect("login logged");
    assert!(shutting < logged_in, "{log}");
}

#[tokio::test]
async fn shutdown_timeout_drops_requests_that_outlast_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("SESSIOND_ADMIN_PASSWORD", PW),
        ("SESSIOND_HTTP__SHUTDOWN_TIMEOUT", "50ms"),
    ];
    env.extend(SLOW_LOGIN);
    let server = ServeProcess::start(&store_in(&dir), &[], &env);
    let url = format!("{}{LOGIN}", server.base());
    let login = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("Accept", "application/json")
            .json(&json!({"username": "admin", "password": b64(PW)}))
            .send()
            .await
    });
    let server = tokio::task::spawn_blocking(move || {
        server.wait_for_log("started processing request");
        server.signal_term();
        server
    })
    .await
    .unwrap();
    let outcome = login.await.unwrap();
    assert!(outcome.is_err(), "the connection should have been dropped");
    let (status, log) = tokio::task::spawn_blocking(move || {
        let mut server = server;
        (server.wait_exit(), server.log_text())
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
}

#[tokio::test]
async fn shutdown_writes_pending_last_access_times() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let server = ServeProcess::start(
        &store,
        &[],
        &[
            ("SESSIOND_ADMIN_PASSWORD", PW),
            // The longest batching allowed: only the shutdown flush can save the touch.
            ("SESSIOND_SESSION__TOUCH_FLUSH_INTERVAL", "1s"),
        ],
    );
    let base = server.base();
    let http = reqwest::Client::new();
    let token = cv_login(&http, &base, "admin", PW).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    // A second login (a password hash: milliseconds) puts time between the first
    // session's creation and its touch.
    cv_login(&http, &base, "admin", PW).await;
    let r = http
        .get(format!("{base}/commandcenter/api/WhoAmI"))
        .header("Authtoken", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let reopened = sessiond::store::open(&store).await.unwrap();
    let hash = SessionToken::parse(secret_of(&token).as_bytes())
        .unwrap()
        .hash();
    let session = reopened
        .find_session_by_token(&hash)
        .await
        .unwrap()
        .expect("session");
    assert!(
        session.last_accessed_at > session.created_at,
        "the touch was lost: created {} last accessed {}",
        session.created_at,
        session.last_accessed_at
    );

    // And the service starts again on that store.
    let again = ServeProcess::start(&store, &[], &[]);
    assert_eq!(
        reqwest::get(format!("{}/readyz", again.base()))
            .await
            .unwrap()
            .status(),
        200
    );
}

// ---- TLS ----

pub(crate) struct TestCert {
    _dir: tempfile::TempDir,
    pub(crate) cert: String,
    pub(crate) key: String,
    pub(crate) der: rustls::pki_types::CertificateDer<'static>,
}

pub(crate) fn self_signed() -> TestCert {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    TestCert {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        der: ck.cert.der().clone(),
        _dir: dir,
    }
}

/// One HTTP/1.1 request over TLS, trusting only `ca`.
pub(crate) async fn https(
    port: u16,
    ca: &rustls::pki_types::CertificateDer<'static>,
    req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> (u16, String, Option<String>) {
    use http_body_util::BodyExt;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let cookie = res
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), cookie)
}

#[tokio::test]
async fn https_with_a_self_signed_certificate() {
    let cert = self_signed();
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(
        &store_in(&dir),
        &["--tls-cert", &cert.cert, "--tls-key", &cert.key],
        &[("SESSIOND_ADMIN_PASSWORD", PW)],
    );
    let port = server.port;
    server.wait_for_log(&format!("listening on https://127.0.0.1:{port}"));
    let body = json!({"username": "admin", "password": b64(PW)}).to_string();
    let req = hyper::Request::post(LOGIN)
        .header("host", format!("127.0.0.1:{port}"))
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let (status, body, _) = https(port, &cert.der, req).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["token"].as_str().unwrap().starts_with("QSDK "), "{v}");

    // Cookies set over TLS are Secure (vSphere's legacy session cookie).
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{PW}"));
    let req = hyper::Request::post("/rest/com/vmware/cis/session")
        .header("host", format!("127.0.0.1:{port}"))
        .header("authorization", format!("Basic {basic}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (status, body, cookie) = https(port, &cert.der, req).await;
    assert_eq!(status, 200, "{body}");
    let cookie = cookie.expect("session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Path=/rest"),
        "{cookie}"
    );

    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    let (status, log) = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.signal_term();
        (server.wait_exit(), server.log_text())
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn tls_flags_are_checked_before_serving() {
    let cert = self_signed();
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    // Each of these must fail at start-up; one that serves is killed, not awaited.
    let serve = |extra: &[&str]| {
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--store", &store])
            .args(extra)
            .env_remove("SESSIOND_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{extra:?} started serving");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{extra:?} started");
        text(&out.stderr)
    };
    let e = serve(&["--tls-cert", &cert.cert]);
    assert!(e.contains("needs tls.key"), "{e}");
    let e = serve(&["--tls-key", &cert.key]);
    assert!(e.contains("needs tls.cert"), "{e}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let garbage = garbage.display().to_string();
    let e = serve(&["--tls-cert", &garbage, "--tls-key", &cert.key]);
    assert!(
        e.contains(&format!("reading TLS certificate {garbage}")),
        "{e}"
    );
    let e = serve(&["--tls-cert", &cert.cert, "--tls-key", &garbage]);
    assert!(
        e.contains(&format!("reading TLS private key {garbage}")),
        "{e}"
    );
    let missing = "/nonexistent/key.pem";
    let e = serve(&["--tls-cert", &cert.cert, "--tls-key", missing]);
    assert!(e.contains(missing), "{e}");
    // A key that is not the certificate's.
    let other = self_signed();
    let e = serve(&["--tls-cert", &cert.cert, "--tls-key", &other.key]);
    assert!(e.contains("TLS certificate"), "{e}");
    // Nothing was served, so no store was created.
    assert!(!Path::new(&dir.path().join("ops.db")).exists());
}
