//! The vSphere dialect, end to end over HTTP, in its three forms: legacy REST
//! (`/rest/com/vmware/cis/session`), `/api/session` and vAPI JSON-RPC (`POST /api`).

use crate::support::{ADMIN_PASSWORD, TestApp, b64, faulty::SECRET_CAUSE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sessiond::clock::Clock;
use sessiond::domain::Timestamp;
use sessiond::service::{Actor, Origin, UserChanges};
use sessiond::store::{SessionQuery, StateFilter};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const REST: &str = "/rest/com/vmware/cis/session";
const REST_GET: &str = "/rest/com/vmware/cis/session?~action=get";
const SID: &str = "vmware-api-session-id";
const SESSION_SERVICE: &str = "com.vmware.cis.session";
const USER_PASS: &str = "com.vmware.vapi.std.security.user_pass";
const SESSION_ID: &str = "com.vmware.vapi.std.security.session_id";
const AUTH_REQUIRED: &str = "com.vmware.vapi.endpoint.method.authentication.required";
const SESSION_INVALID: &str = "vapi.session.invalid";
const BAD_CREDENTIALS: &str = "vapi.security.authentication.invalid";

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", b64(&format!("{user}:{password}")))
}

impl TestApp {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn rest_create_as(&self, user: &str, password: &str) -> RequestBuilder {
        self.http
            .post(self.url(REST))
            .header("Authorization", basic(user, password))
    }

    /// Creates a legacy REST session as admin; returns the session id.
    async fn rest_login(&self) -> String {
        let r = self
            .rest_create_as("admin@local", ADMIN_PASSWORD)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["value"].as_str().expect("session id").to_string()
    }

    async fn rest_get(&self, sid: &str) -> Response {
        self.http
            .post(self.url(REST_GET))
            .header(SID, sid)
            .send()
            .await
            .unwrap()
    }

    /// Creates an `/api/session` session as `user`; returns the session id.
    async fn api_login_as(&self, user: &str, password: &str) -> String {
        let r = self
            .http
            .post(self.url("/api/session"))
            .header("Authorization", basic(user, password))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<String>().await.unwrap()
    }

    async fn api_get(&self, sid: &str) -> Response {
        self.http
            .get(self.url("/api/session"))
            .header(SID, sid)
            .send()
            .await
            .unwrap()
    }

    /// Posts a raw body to the JSON-RPC endpoint; asserts HTTP 200 and returns the answer.
    async fn rpc_raw(&self, body: impl Into<reqwest::Body>) -> Value {
        let r = self
            .http
            .post(self.url("/api"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Invokes `service.operation` the way the vAPI Python runtime does.
    async fn rpc(&self, service: &str, operation: &str, security: Value) -> Value {
        let body = json!({
            "jsonrpc": "2.0",
            "method": "invoke",
            "params": {
                "serviceId": service,
                "operationId": operation,
                "input": {"STRUCTURE": {"operation-input": {}}},
                "ctx": {"appCtx": {"opId": "op-1"}, "securityCtx": security},
            },
            "id": "17",
        });
        let v = self.rpc_raw(body.to_string()).await;
        assert_eq!(v["id"], "17", "{v}");
        assert_eq!(v["jsonrpc"], "2.0", "{v}");
        v
    }

    async fn rpc_create(&self, user: &str, password: &str) -> Value {
        self.rpc(
            SESSION_SERVICE,
            "create",
            json!({"schemeId": USER_PASS, "userName": user, "password": password}),
        )
        .await
    }

    async fn rpc_login(&self) -> String {
        let v = self.rpc_create("admin@local", ADMIN_PASSWORD).await;
        v["result"]["output"]["SECRET"]
            .as_str()
            .unwrap_or_else(|| panic!("no SECRET in {v}"))
            .to_string()
    }

    async fn rpc_with_session(&self, operation: &str, sid: &str) -> Value {
        self.rpc(
            SESSION_SERVICE,
            operation,
            json!({"schemeId": SESSION_ID, "sessionId": sid}),
        )
        .await
    }

    async fn live_session_count(&self) -> usize {
        self.store()
            .list_sessions(&SessionQuery {
                user: None,
                state: StateFilter::Live,
                host: None,
                now: self.now(),
                after: None,
                limit: 10_000,
            })
            .await
            .unwrap()
            .len()
    }

    /// The caller's sessions through Commvault's `GET Session` (JSON).
    async fn commvault_sessions(&self, token: &str) -> Vec<Value> {
        let r = self
            .http
            .get(self.url(&format!(
                "/commandcenter/api/Session?userId={}",
                self.admin.id.0
            )))
            .header("Authtoken", token)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["sessions"].as_array().unwrap().clone()
    }
}

/// Asserts a legacy REST error; returns its message id.
async fn assert_rest_error(r: Response, status: u16, kind: &str) -> String {
    assert_eq!(r.status().as_u16(), status);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["type"],
        format!("com.vmware.vapi.std.errors.{kind}"),
        "{v}"
    );
    let messages = v["value"]["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{v}");
    assert_eq!(messages[0]["args"], json!([]), "{v}");
    assert!(messages[0]["default_message"].as_str().is_some(), "{v}");
    messages[0]["id"].as_str().unwrap().to_string()
}

/// Asserts an `/api` error; returns its message id.
async fn assert_api_error(r: Response, status: u16, error_type: &str) -> String {
    assert_eq!(r.status().as_u16(), status);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error_type"], error_type, "{v}");
    let messages = v["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{v}");
    assert_eq!(messages[0]["args"], json!([]), "{v}");
    assert!(messages[0]["default_message"].as_str().is_some(), "{v}");
    messages[0]["id"].as_str().unwrap().to_string()
}

/// Asserts a vAPI error in a JSON-RPC answer, in the typed encoding; returns its message id.
fn assert_rpc_error(v: &Value, kind: &str) -> String {
    assert!(v["result"].get("output").is_none(), "{v}");
    let error = &v["result"]["error"]["ERROR"];
    let fields = &error[format!("com.vmware.vapi.std.errors.{kind}")];
    assert!(fields.is_object(), "{v}");
    assert_eq!(error.as_object().unwrap().len(), 1);
    assert_eq!(
        fields["error_type"],
        json!({"OPTIONAL": kind.to_ascii_uppercase()}),
        "{v}"
    );
    assert_eq!(fields["data"], json!({"OPTIONAL": null}), "{v}");
    let messages = fields["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{v}");
    let m = &messages[0]["STRUCTURE"]["com.vmware.vapi.std.localizable_message"];
    assert_eq!(m["args"], json!([]), "{v}");
    assert_eq!(m["params"], json!({"OPTIONAL": null}), "{v}");
    assert_eq!(m["localized"], json!({"OPTIONAL": null}), "{v}");
    assert!(m["default_message"].as_str().is_some(), "{v}");
    m["id"].as_str().unwrap().to_string()
}

/// Asserts a JSON-RPC protocol error object.
fn assert_rpc_protocol_error(v: &Value, code: i64, id: Value) {
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert_eq!(v["id"], id, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].as_str().is_some(), "{v}");
    assert!(v["error"]["data"].as_str().is_some(), "{v}");
    assert!(v.get("result").is_none(), "{v}");
}

fn assert_vapi_time(s: &Value) -> String {
    let s = s.as_str().unwrap_or_else(|| panic!("not a string: {s}"));
    let b = s.as_bytes();
    assert_eq!(b.len(), 24, "{s}");
    for (i, c) in b.iter().enumerate() {
        let expected_digit = !matches!(i, 4 | 7 | 10 | 13 | 16 | 19 | 23);
        assert_eq!(c.is_ascii_digit(), expected_digit, "{s}");
    }
    assert_eq!(
        (b[4], b[7], b[10], b[13], b[16], b[19], b[23]),
        (b'-', b'-', b'T', b':', b':', b'.', b'Z'),
        "{s}"
    );
    s.to_string()
}

fn is_session_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---- Legacy REST ----

#[tokio::test]
async fn legacy_rest_create_get_delete_with_the_cookie() {
    let app = TestApp::spawn().await;
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let t0 = app.now();
    let r = browser
        .post(app.url(REST))
        .header("Authorization", basic("admin@local", ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    let sid = v["value"].as_str().unwrap();
    assert!(is_session_id(sid), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 1);
    assert!(cookie.starts_with(&format!("{SID}={sid}")), "{cookie}");
    assert!(cookie.contains("Path=/rest"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP: no Secure flag: {cookie}"
    );
    assert!(cookie.contains("HttpOnly"), "{cookie}");

    // The cookie alone authenticates `~action=get`, which touches the session.
    app.advance(Duration::from_secs(90));
    let r = browser.post(app.url(REST_GET)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"value": {
            "user": "admin@local",
            "created_time": t0.to_string(),
            "last_accessed_time": app.now().to_string(),
        }})
    );
    assert_vapi_time(&v["value"]["created_time"]);

    // DELETE with the cookie ends the session and expires the cookie.
    let r = browser.delete(app.url(REST)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let expired = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(expired.contains("Max-Age=0"), "{expired}");
    assert_eq!(r.text().await.unwrap(), "");
    assert_eq!(app.live_session_count().await, 0);

    // The browser dropped the cookie: no credentials at all now.
    let r = browser.post(app.url(REST_GET)).send().await.unwrap();
    assert_eq!(
        assert_rest_error(r, 401, "unauthenticated").await,
        AUTH_REQUIRED
    );
    // The ended id, sent as a cookie by hand, is refused.
    let r = app
        .http
        .post(app.url(REST_GET))
        .header("Cookie", format!("{SID}={sid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_rest_error(r, 401, "unauthenticated").await,
        SESSION_INVALID
    );
}

#[tokio::test]
async fn legacy_rest_header_authn_sets_no_cookie_and_the_header_wins() {
    let app = TestApp::spawn().await;
    let r = app
        .rest_create_as("admin", ADMIN_PASSWORD)
        .header("vmware-use-header-authn", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none());
    let sid = r.json::<Value>().await.unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();

    let r = app.rest_get(&sid).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["value"]["user"],
        "admin@local"
    );

    // The header is taken over a cookie.
    let r = app
        .http
        .post(app.url(REST_GET))
        .header(SID, &sid)
        .header("Cookie", format!("{SID}=nonsense"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .post(app.url(REST_GET))
        .header(SID, "nonsense")
        .header("Cookie", format!("{SID}={sid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_rest_error(r, 401, "unauthenticated").await,
        SESSION_INVALID
    );

    let r = app
        .http
        .delete(app.url(REST))
        .header(SID, &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none());
    assert_eq!(
        assert_rest_error(app.rest_get(&sid).await, 401, "unauthenticated").await,
        SESSION_INVALID
    );
    // Ending it again is refused too.
    let r = app
        .http
        .delete(app.url(REST))
        .header(SID, &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_rest_error(r, 401, "unauthenticated").await,
        SESSION_INVALID
    );
}

#[tokio::test]
async fn legacy_rest_errors() {
    let app = TestApp::spawn().await;
    // No credentials: 401 with a challenge.
    let r = app.http.post(app.url(REST)).send().await.unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(
        assert_rest_error(r, 401, "unauthenticated").await,
        AUTH_REQUIRED
    );
    // Another scheme is no credentials we take.
    let r = app
        .http
        .post(app.url(REST))
        .header("Authorization", "Bearer abc")
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_rest_error(r, 401, "unauthenticated").await,
        AUTH_REQUIRED
    );
    // Wrong password and unknown user look the same.
    let wrong = app
        .rest_create_as("admin@local", "wrong-password")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let wrong = wrong.text().await.unwrap();
    let unknown = app
        .rest_create_as("nobody@local", "wrong-password")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(wrong, unknown);
    let v: Value = serde_json::from_str(&wrong).unwrap();
    assert_eq!(v["type"], "com.vmware.vapi.std.errors.unauthenticated");
    assert_eq!(v["value"]["messages"][0]["id"], BAD_CREDENTIALS);
    // Malformed Basic headers are 400 invalid_argument.
    for bad in [
        "Basic !!!not-base64".to_string(),
        format!("Basic {}", b64("no-colon-here")),
        format!("Basic {}", b64(":no-user")),
    ] {
        let r = app
            .http
            .post(app.url(REST))
            .header("Authorization", bad.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(
            assert_rest_error(r, 400, "invalid_argument").await,
            "vapi.request.invalid",
            "{bad}"
        );
    }
    // An unknown ~action is 400, even with good credentials; so is a repeated one.
    for query in ["~action=list", "~action=get&~action=get", "~action=GET"] {
        let r = app
            .http
            .post(app.url(&format!("{REST}?{query}")))
            .header("Authorization", basic("admin", ADMIN_PASSWORD))
            .send()
            .await
            .unwrap();
        assert_rest_error(r, 400, "invalid_argument").await;
    }
    // A percent-encoded ~action is the same parameter.
    let sid = app.rest_login().await;
    let r = app
        .http
        .post(app.url(&format!("{REST}?%7Eaction=get")))
        .header(SID, &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // get / delete without, with an unknown, a malformed or an empty session id.
    let r = app.http.post(app.url(REST_GET)).send().await.unwrap();
    assert_eq!(
        assert_rest_error(r, 401, "unauthenticated").await,
        AUTH_REQUIRED
    );
    let r = app.http.delete(app.url(REST)).send().await.unwrap();
    assert_eq!(
        assert_rest_error(r, 401, "unauthenticated").await,
        AUTH_REQUIRED
    );
    for bad in ["0".repeat(64), "not-a-session".into(), String::new()] {
        assert_eq!(
            assert_rest_error(app.rest_get(&bad).await, 401, "unauthenticated").await,
            SESSION_INVALID
        );
    }
    // Unknown methods and paths under /rest: operation_not_found.
    let r = app.http.get(app.url(REST)).send().await.unwrap();
    assert_rest_error(r, 404, "operation_not_found").await;
    let r = app
        .http
        .get(app.url("/rest/vcenter/vm"))
        .header(SID, &sid)
        .send()
        .await
        .unwrap();
    assert_rest_error(r, 404, "operation_not_found").await;
    let r = app.http.post(app.url("/rest")).send().await.unwrap();
    assert_rest_error(r, 404, "operation_not_found").await;
    // Only the one session above was opened.
    assert_eq!(app.live_session_count().await, 1);
}

// ---- /api/session ----

#[tokio::test]
async fn api_session_create_get_delete() {
    let app = TestApp::spawn().await;
    let t0 = app.now();
    let r = app
        .http
        .post(app.url("/api/session"))
        .header("Authorization", basic("admin@local", ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("set-cookie").is_none());
    let text = r.text().await.unwrap();
    let sid: String = serde_json::from_str(&text).expect("a bare JSON string");
    assert!(is_session_id(&sid), "{text}");

    app.advance(Duration::from_secs(61));
    let r = app.api_get(&sid).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({
            "user": "admin@local",
            "created_time": t0.to_string(),
            "last_accessed_time": app.now().to_string(),
        })
    );

    let r = app
        .http
        .delete(app.url("/api/session"))
        .header(SID, &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.text().await.unwrap(), "");
    assert_eq!(
        assert_api_error(app.api_get(&sid).await, 401, "UNAUTHENTICATED").await,
        SESSION_INVALID
    );
}

#[tokio::test]
async fn api_session_errors() {
    let app = TestApp::spawn().await;
    let post = |auth: Option<String>| {
        let mut req = app.http.post(app.url("/api/session"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send()
    };
    let r = post(None).await.unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(
        assert_api_error(r, 401, "UNAUTHENTICATED").await,
        AUTH_REQUIRED
    );
    let r = post(Some(basic("admin", "wrong-password"))).await.unwrap();
    assert_eq!(
        assert_api_error(r, 401, "UNAUTHENTICATED").await,
        BAD_CREDENTIALS
    );
    let r = post(Some("Basic %%%".into())).await.unwrap();
    assert_api_error(r, 400, "INVALID_ARGUMENT").await;
    // GET and DELETE without a session id.
    let r = app.http.get(app.url("/api/session")).send().await.unwrap();
    assert_eq!(
        assert_api_error(r, 401, "UNAUTHENTICATED").await,
        AUTH_REQUIRED
    );
    let r = app
        .http
        .delete(app.url("/api/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_api_error(r, 401, "UNAUTHENTICATED").await,
        AUTH_REQUIRED
    );
    let r = app
        .http
        .delete(app.url("/api/session"))
        .header(SID, "f".repeat(64))
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_api_error(r, 401, "UNAUTHENTICATED").await,
        SESSION_INVALID
    );
    // Unknown operations, paths and methods.
    let r = app.http.put(app.url("/api/session")).send().await.unwrap();
    assert_api_error(r, 404, "OPERATION_NOT_FOUND").await;
    let r = app
        .http
        .get(app.url("/api/vcenter/vm"))
        .send()
        .await
        .unwrap();
    assert_api_error(r, 404, "OPERATION_NOT_FOUND").await;
    let r = app.http.get(app.url("/api")).send().await.unwrap();
    assert_api_error(r, 404, "OPERATION_NOT_FOUND").await;
    // A trailing slash is the same resource.
    let r = app.http.get(app.url("/api/session/")).send().await.unwrap();
    assert_api_error(r, 401, "UNAUTHENTICATED").await;
    assert_eq!(app.live_session_count().await, 0);
}

// ---- JSON-RPC ----

#[tokio::test]
async fn jsonrpc_create_get_delete_as_the_vapi_runtime_sends_them() {
    let app = TestApp::spawn().await;
    let t0 = app.now();
    // The exact request VMware's Python runtime sends for `Session(cfg).create()`.
    let create = format!(
        r#"{{"jsonrpc":"2.0","method":"invoke","params":{{"serviceId":"com.vmware.cis.session","operationId":"create","input":{{"STRUCTURE":{{"operation-input":{{}}}}}},"ctx":{{"appCtx":{{"opId":"a1"}},"securityCtx":{{"schemeId":"com.vmware.vapi.std.security.user_pass","userName":"admin","password":"{ADMIN_PASSWORD}"}}}}}},"id":"0"}}"#
    );
    let v = app.rpc_raw(create).await;
    let sid = v["result"]["output"]["SECRET"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(is_session_id(&sid), "{v}");
    assert_eq!(
        v,
        json!({"jsonrpc": "2.0", "id": "0", "result": {"output": {"SECRET": sid}}})
    );

    app.advance(Duration::from_secs(5));
    let v = app.rpc_with_session("get", &sid).await;
    assert_eq!(
        v["result"],
        json!({"output": {"STRUCTURE": {"com.vmware.cis.session.info": {
            "user": "admin@local",
            "created_time": t0.to_string(),
            "last_accessed_time": app.now().to_string(),
        }}}})
    );

    // Numeric ids are echoed as numbers.
    let v = app
        .rpc_raw(
            json!({"jsonrpc": "2.0", "method": "invoke", "id": 42, "params": {
                "serviceId": SESSION_SERVICE, "operationId": "delete",
                "input": {"STRUCTURE": {"operation-input": {}}},
                "ctx": {"securityCtx": {"schemeId": SESSION_ID, "sessionId": sid}}}})
            .to_string(),
        )
        .await;
    assert_eq!(
        v,
        json!({"jsonrpc": "2.0", "id": 42, "result": {"output": null}})
    );
    assert_eq!(app.live_session_count().await, 0);

    let v = app.rpc_with_session("get", &sid).await;
    assert_eq!(assert_rpc_error(&v, "unauthenticated"), SESSION_INVALID);
    let v = app.rpc_with_session("delete", &sid).await;
    assert_eq!(assert_rpc_error(&v, "unauthenticated"), SESSION_INVALID);
}

#[tokio::test]
async fn jsonrpc_takes_the_session_header_without_a_security_context() {
    let app = TestApp::spawn().await;
    let sid = app.rpc_login().await;
    let body = json!({"jsonrpc": "2.0", "method": "invoke", "id": "1", "params": {
        "serviceId": SESSION_SERVICE, "operationId": "get",
        "input": {"STRUCTURE": {"operation-input": {}}}, "ctx": {"appCtx": {}}}});
    let r = app
        .http
        .post(app.url("/api"))
        .header(SID, &sid)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["result"]["output"]["STRUCTURE"]["com.vmware.cis.session.info"]["user"],
        "admin@local"
    );
    // Without the header either: unauthenticated, authentication required.
    let v = app.rpc_raw(body.to_string()).await;
    assert_eq!(assert_rpc_error(&v, "unauthenticated"), AUTH_REQUIRED);
}

#[tokio::test]
async fn jsonrpc_authentication_errors() {
    let app = TestApp::spawn().await;
    let v = app.rpc_create("admin", "wrong-password").await;
    assert_eq!(assert_rpc_error(&v, "unauthenticated"), BAD_CREDENTIALS);
    let v = app.rpc_create("nobody", "wrong-password").await;
    assert_eq!(assert_rpc_error(&v, "unauthenticated"), BAD_CREDENTIALS);
    // The unauthenticated binding has an optional challenge; it is present, unset.
    assert_eq!(
        v["result"]["error"]["ERROR"]["com.vmware.vapi.std.errors.unauthenticated"]["challenge"],
        json!({"OPTIONAL": null})
    );
    // No security context, the wrong kind for the operation, or an unknown scheme.
    for (op, security) in [
        ("create", Value::Null),
        (
            "create",
            json!({"schemeId": SESSION_ID, "sessionId": "0".repeat(64)}),
        ),
        (
            "get",
            json!({"schemeId": USER_PASS, "userName": "admin", "password": ADMIN_PASSWORD}),
        ),
        (
            "delete",
            json!({"schemeId": "com.vmware.vapi.std.security.saml_hok_token", "token": "x"}),
        ),
    ] {
        let v = app.rpc(SESSION_SERVICE, op, security).await;
        assert_eq!(
            assert_rpc_error(&v, "unauthenticated"),
            AUTH_REQUIRED,
            "{v}"
        );
    }
    // Unknown and malformed session ids.
    for bad in ["0".repeat(64), "x".into()] {
        let v = app.rpc_with_session("get", &bad).await;
        assert_eq!(assert_rpc_error(&v, "unauthenticated"), SESSION_INVALID);
    }
    // These operations take no input.
    let v = app
        .rpc_raw(
            json!({"jsonrpc": "2.0", "method": "invoke", "id": "9", "params": {
                "serviceId": SESSION_SERVICE, "operationId": "create",
                "input": {"STRUCTURE": {"operation-input": {"spec": "x"}}},
                "ctx": {"securityCtx": {"schemeId": USER_PASS, "userName": "admin", "password": ADMIN_PASSWORD}}}})
            .to_string(),
        )
        .await;
    assert_eq!(v["id"], "9");
    assert_rpc_error(&v, "invalid_argument");
    assert_eq!(app.live_session_count().await, 0);
}

#[tokio::test]
async fn jsonrpc_unknown_services_and_operations_are_operation_not_found() {
    let app = TestApp::spawn().await;
    let sid = app.rpc_login().await;
    let security = json!({"schemeId": SESSION_ID, "sessionId": sid});
    for (service, op) in [
        (SESSION_SERVICE, "list"),
        (SESSION_SERVICE, "Get"),
        ("com.vmware.cis.tasks", "get"),
        ("com.vmware.vcenter.vm", "list"),
        ("", ""),
    ] {
        let v = app.rpc(service, op, security.clone()).await;
        assert_eq!(
            assert_rpc_error(&v, "operation_not_found"),
            "vapi.operation.not_found"
        );
    }
    // The session is untouched by all that.
    assert_eq!(app.live_session_count().await, 1);
}

#[tokio::test]
async fn malformed_jsonrpc_gets_jsonrpc_error_objects() {
    let app = TestApp::spawn().await;
    let input = json!({"STRUCTURE": {"operation-input": {}}});
    let invoke = |id: Value, params: Value| {
        json!({"jsonrpc": "2.0", "method": "invoke", "id": id, "params": params}).to_string()
    };
    let cases: Vec<(String, i64, Value)> = vec![
        // Not JSON.
        ("{\"jsonrpc\": \"2.0\", ".into(), -32700, Value::Null),
        ("".into(), -32700, Value::Null),
        ("\u{0}\u{1}binary".into(), -32700, Value::Null),
        // Not a request.
        ("[]".into(), -32600, Value::Null),
        ("\"invoke\"".into(), -32600, Value::Null),
        (
            json!({"jsonrpc": "1.0", "method": "invoke", "id": "1", "params": {}}).to_string(),
            -32600,
            Value::Null,
        ),
        (
            json!({"method": "invoke", "id": "1", "params": {}}).to_string(),
            -32600,
            Value::Null,
        ),
        (
            json!({"jsonrpc": "2.0", "method": "invoke", "params": {}}).to_string(),
            -32600,
            Value::Null,
        ),
        (
            json!({"jsonrpc": "2.0", "method": "invoke", "id": [1], "params": {}}).to_string(),
            -32600,
            Value::Null,
        ),
        (
            json!({"jsonrpc": "2.0", "id": "1", "params": {}}).to_string(),
            -32600,
            Value::Null,
        ),
        // Not vAPI's method.
        (
            json!({"jsonrpc": "2.0", "method": "system.listMethods", "id": "m"}).to_string(),
            -32601,
            json!("m"),
        ),
        // Bad params: not an object, missing fields, wrong types.
        (invoke(json!("p"), json!([1, 2])), -32602, json!("p")),
        (invoke(json!("p"), json!("params")), -32602, json!("p")),
        (
            json!({"jsonrpc": "2.0", "method": "invoke", "id": 5}).to_string(),
            -32602,
            json!(5),
        ),
        (
            invoke(json!("p"), json!({"operationId": "get", "input": input})),
            -32602,
            json!("p"),
        ),
        (
            invoke(
                json!("p"),
                json!({"serviceId": SESSION_SERVICE, "operationId": 3, "input": input}),
            ),
            -32602,
            json!("p"),
        ),
        (
            invoke(
                json!("p"),
                json!({"serviceId": SESSION_SERVICE, "operationId": "get"}),
            ),
            -32602,
            json!("p"),
        ),
        (
            invoke(
                json!("p"),
                json!({"serviceId": SESSION_SERVICE, "operationId": "get", "input": {"operation-input": {}}}),
            ),
            -32602,
            json!("p"),
        ),
        (
            invoke(
                json!("p"),
                json!({"serviceId": SESSION_SERVICE, "operationId": "get", "input": input, "ctx": "x"}),
            ),
            -32602,
            json!("p"),
        ),
        (
            invoke(
                json!("p"),
                json!({"serviceId": SESSION_SERVICE, "operationId": "get", "input": input,
                       "ctx": {"securityCtx": {"schemeId": SESSION_ID}}}),
            ),
            -32602,
            json!("p"),
        ),
        (
            invoke(
                json!("p"),
                json!({"serviceId": SESSION_SERVICE, "operationId": "create", "input": input,
                       "ctx": {"securityCtx": {"schemeId": USER_PASS, "userName": "admin", "password": 1}}}),
            ),
            -32602,
            json!("p"),
        ),
    ];
    for (body, code, id) in cases {
        let v = app.rpc_raw(body.clone()).await;
        assert_rpc_protocol_error(&v, code, id);
    }
    assert_eq!(app.live_session_count().await, 0);
    // Still serving.
    app.rpc_login().await;
}

// ---- One session across dialects ----

#[tokio::test]
async fn a_commvault_token_is_a_vsphere_session_id_and_the_reverse() {
    let app = TestApp::spawn().await;
    let qsdk = app.cv_login("admin", ADMIN_PASSWORD).await;
    let bare = qsdk.strip_prefix("QSDK ").unwrap().to_string();
    assert!(is_session_id(&bare));
    assert_eq!(app.rest_get(&bare).await.status(), 200);
    assert_eq!(app.api_get(&bare).await.status(), 200);
    let v = app.rpc_with_session("get", &bare).await;
    assert_eq!(
        v["result"]["output"]["STRUCTURE"]["com.vmware.cis.session.info"]["user"],
        "admin@local"
    );
    // The QSDK form is Commvault's, not a vSphere session id.
    assert_eq!(app.rest_get(&qsdk).await.status(), 401);

    // Each vSphere form's id works as a Commvault token, bare or with QSDK.
    let ids = [
        app.rest_login().await,
        app.api_login_as("admin", ADMIN_PASSWORD).await,
        app.rpc_login().await,
    ];
    for id in &ids {
        assert!(!app.commvault_sessions(id).await.is_empty());
        assert!(
            !app.commvault_sessions(&format!("QSDK {id}"))
                .await
                .is_empty()
        );
    }
    // Ended through vSphere, it is ended for Commvault; and the reverse.
    let r = app
        .http
        .delete(app.url("/api/session"))
        .header(SID, &ids[1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = app
        .http
        .get(app.url("/commandcenter/api/Session?userId=1"))
        .header("Authtoken", &ids[1])
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .post(app.url("/commandcenter/api/Logout"))
        .header("Authtoken", &qsdk)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        assert_rest_error(app.rest_get(&bare).await, 401, "unauthenticated").await,
        SESSION_INVALID
    );
}

#[tokio::test]
async fn console_types_101_102_103_show_through_commvault() {
    let app = TestApp::spawn().await;
    let rest = app.rest_login().await;
    let api = app.api_login_as("admin", ADMIN_PASSWORD).await;
    let rpc = app.rpc_login().await;
    let sessions = app.commvault_sessions(&rest).await;
    let mut consoles: Vec<i64> = sessions
        .iter()
        .map(|s| s["consoleType"].as_i64().unwrap())
        .collect();
    consoles.sort();
    assert_eq!(consoles, vec![101, 102, 103]);
    assert!(sessions.iter().all(|s| s["host"] == "127.0.0.1"));
    assert!(
        sessions
            .iter()
            .all(|s| s["user"]["userName"] == "admin" && s["logoutTime"] == 0)
    );
    // Ending one through JSON-RPC records its logout for Commvault.
    let v = app.rpc_with_session("delete", &rpc).await;
    assert_eq!(v["result"], json!({"output": null}));
    let sessions = app.commvault_sessions(&api).await;
    let ended: Vec<&Value> = sessions.iter().filter(|s| s["logoutTime"] != 0).collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["consoleType"], 103);
}

// ---- User names and domains ----

#[tokio::test]
async fn user_names_with_the_configured_domain_only() {
    let app = TestApp::spawn().await;
    app.add_user("bob", "bob-password", &[]).await;
    for good in ["bob", "bob@local", "bob@LOCAL", "local\\bob", "LOCAL\\bob"] {
        let sid = app.api_login_as(good, "bob-password").await;
        let v: Value = app.api_get(&sid).await.json().await.unwrap();
        assert_eq!(v["user"], "bob@local", "{good}");
    }
    for other in ["bob@vsphere.local", "corp\\bob", "bob@", "@local"] {
        let r = app
            .http
            .post(app.url("/api/session"))
            .header("Authorization", basic(other, "bob-password"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            assert_api_error(r, 401, "UNAUTHENTICATED").await,
            BAD_CREDENTIALS,
            "{other}"
        );
    }
    // Disabled accounts answer like wrong passwords, in every form.
    app.state
        .service
        .update_user(
            &Actor::System,
            app.state
                .service
                .find_user(&Actor::System, "bob")
                .await
                .unwrap()
                .id,
            UserChanges {
                enabled: Some(false),
                ..Default::default()
            },
            &Origin {
                dialect: sessiond::domain::Dialect::Native,
                source: "test".into(),
            },
        )
        .await
        .unwrap();
    let r = app
        .rest_create_as("bob", "bob-password")
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_rest_error(r, 401, "unauthenticated").await,
        BAD_CREDENTIALS
    );
    let v = app.rpc_create("bob", "bob-password").await;
    assert_eq!(assert_rpc_error(&v, "unauthenticated"), BAD_CREDENTIALS);
}

#[tokio::test]
async fn the_domain_is_configurable() {
    let app = TestApp::spawn_with(|c| c.dialects.vsphere_domain = "corp.example".into()).await;
    let r = app
        .rest_create_as("admin@local", ADMIN_PASSWORD)
        .send()
        .await
        .unwrap();
    assert_rest_error(r, 401, "unauthenticated").await;
    let sid = app.api_login_as("admin@Corp.Example", ADMIN_PASSWORD).await;
    let v: Value = app.api_get(&sid).await.json().await.unwrap();
    assert_eq!(v["user"], "admin@corp.example");
    let v = app.rpc_create("CORP.EXAMPLE\\admin", ADMIN_PASSWORD).await;
    let rpc = v["result"]["output"]["SECRET"].as_str().unwrap();
    let v = app.rpc_with_session("get", rpc).await;
    assert_eq!(
        v["result"]["output"]["STRUCTURE"]["com.vmware.cis.session.info"]["user"],
        "admin@corp.example"
    );
}

#[tokio::test]
async fn the_session_limit_is_unauthenticated() {
    let app = TestApp::spawn_with(|c| c.limits.max_sessions_per_user = 1).await;
    app.rest_login().await;
    let r = app
        .rest_create_as("admin", ADMIN_PASSWORD)
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_rest_error(r, 401, "unauthenticated").await,
        "vapi.session.limit.reached"
    );
    let v = app.rpc_create("admin", ADMIN_PASSWORD).await;
    assert_eq!(
        assert_rpc_error(&v, "unauthenticated"),
        "vapi.session.limit.reached"
    );
}

// ---- Time and expiry ----

#[tokio::test]
async fn every_get_touches_and_idle_expiry_ends_the_session_in_every_form() {
    let app = TestApp::spawn().await;
    let t0 = app.now();
    let rest = app.rest_login().await;
    let api = app.api_login_as("admin", ADMIN_PASSWORD).await;
    let rpc = app.rpc_login().await;
    // 29 minutes idle: still live; the get moves last access to now.
    app.advance(Duration::from_secs(29 * 60));
    let v: Value = app.rest_get(&rest).await.json().await.unwrap();
    assert_eq!(v["value"]["created_time"], t0.to_string());
    let touched = assert_vapi_time(&v["value"]["last_accessed_time"]);
    assert_eq!(touched, app.now().to_string());
    assert_eq!(app.api_get(&api).await.status(), 200);
    let v = app.rpc_with_session("get", &rpc).await;
    assert!(v["result"]["output"].is_object(), "{v}");
    // Another 29 minutes: live, because the last get counts.
    app.advance(Duration::from_secs(29 * 60));
    assert_eq!(app.rest_get(&rest).await.status(), 200);
    // 31 idle minutes later, all three have expired.
    app.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        assert_rest_error(app.rest_get(&rest).await, 401, "unauthenticated").await,
        SESSION_INVALID
    );
    assert_eq!(
        assert_api_error(app.api_get(&api).await, 401, "UNAUTHENTICATED").await,
        SESSION_INVALID
    );
    let v = app.rpc_with_session("get", &rpc).await;
    assert_eq!(assert_rpc_error(&v, "unauthenticated"), SESSION_INVALID);
    assert_eq!(app.live_session_count().await, 0);
}

#[tokio::test]
async fn absolute_lifetime_ends_a_busy_session() {
    let app =
        TestApp::spawn_with(|c| c.session.absolute_lifetime = Duration::from_secs(3600)).await;
    let sid = app.api_login_as("admin", ADMIN_PASSWORD).await;
    for _ in 0..3 {
        app.advance(Duration::from_secs(20 * 60 - 1));
        assert_eq!(app.api_get(&sid).await.status(), 200);
    }
    app.advance(Duration::from_secs(4));
    assert_eq!(
        assert_api_error(app.api_get(&sid).await, 401, "UNAUTHENTICATED").await,
        SESSION_INVALID
    );
    let v = app.rpc_with_session("get", &sid).await;
    assert_rpc_error(&v, "unauthenticated");
}

// ---- Failures and limits ----

/// Collects what the server logs on this thread (the test runtime's thread).
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn store_failure_is_503_without_detail_in_all_three_forms() {
    let app = TestApp::spawn().await;
    let log = LogCapture::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .finish(),
    );
    let sid = app.rest_login().await;
    app.store.set_failing(true);

    let mut seen = Vec::new();
    // Legacy REST: create and get.
    for r in [
        app.rest_create_as("admin", ADMIN_PASSWORD)
            .send()
            .await
            .unwrap(),
        app.rest_get(&sid).await,
    ] {
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let text = r.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"type": "com.vmware.vapi.std.errors.service_unavailable", "value": {"messages": [
                {"args": [], "default_message": "Service unavailable.", "id": "vapi.service.unavailable"}
            ]}})
        );
        seen.push(text);
    }
    // /api/session: create, get and delete.
    for r in [
        app.http
            .post(app.url("/api/session"))
            .header("Authorization", basic("admin", ADMIN_PASSWORD))
            .send()
            .await
            .unwrap(),
        app.api_get(&sid).await,
        app.http
            .delete(app.url("/api/session"))
            .header(SID, &sid)
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let text = r.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"error_type": "SERVICE_UNAVAILABLE", "messages": [
                {"args": [], "default_message": "Service unavailable.", "id": "vapi.service.unavailable"}
            ]})
        );
        seen.push(text);
    }
    // JSON-RPC: HTTP 200 with the vAPI service_unavailable error.
    for v in [
        app.rpc_create("admin", ADMIN_PASSWORD).await,
        app.rpc_with_session("get", &sid).await,
        app.rpc_with_session("delete", &sid).await,
    ] {
        assert_eq!(
            assert_rpc_error(&v, "service_unavailable"),
            "vapi.service.unavailable"
        );
        let fields =
            &v["result"]["error"]["ERROR"]["com.vmware.vapi.std.errors.service_unavailable"];
        assert_eq!(
            fields["messages"][0]["STRUCTURE"]["com.vmware.vapi.std.localizable_message"]["default_message"],
            "Service unavailable."
        );
        seen.push(v.to_string());
    }
    for text in &seen {
        assert!(!text.contains(SECRET_CAUSE), "{text}");
        assert!(
            !text.contains("fire") && !text.contains("secret-volume"),
            "{text}"
        );
    }
    // The cause is in the log (at least once per failed request).
    let logged = log.text();
    assert!(
        logged.matches(SECRET_CAUSE).count() >= seen.len(),
        "{logged}"
    );

    app.store.set_failing(false);
    assert_eq!(app.rest_get(&sid).await.status(), 200);
}

#[tokio::test]
async fn oversized_bodies_are_413_in_each_shape() {
    let app = TestApp::spawn().await;
    let huge = "x".repeat(200 * 1024);
    let sid = app.rest_login().await;
    let r = app
        .rest_create_as("admin", ADMIN_PASSWORD)
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_rest_error(r, 413, "invalid_request").await,
        "vapi.request.too_large"
    );
    let r = app
        .http
        .delete(app.url(REST))
        .header(SID, &sid)
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    assert_rest_error(r, 413, "invalid_request").await;
    let r = app
        .http
        .post(app.url("/api/session"))
        .header("Authorization", basic("admin", ADMIN_PASSWORD))
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_api_error(r, 413, "INVALID_REQUEST").await,
        "vapi.request.too_large"
    );
    let padded = json!({"jsonrpc": "2.0", "method": "invoke", "id": "1", "params": {
        "serviceId": SESSION_SERVICE, "operationId": "create",
        "input": {"STRUCTURE": {"operation-input": {}}},
        "ctx": {"securityCtx": {"schemeId": USER_PASS, "userName": "admin", "password": huge}}}});
    let r = app
        .http
        .post(app.url("/api"))
        .json(&padded)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_rpc_protocol_error(&v, -32600, Value::Null);
    // Nothing was created or ended.
    assert_eq!(app.live_session_count().await, 1);
    assert_eq!(app.rest_get(&sid).await.status(), 200);
}
