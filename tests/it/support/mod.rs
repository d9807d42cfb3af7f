//! Test harness: the real server on 127.0.0.1:0 over a fresh store, with a manual clock.

pub mod backends;
pub mod faulty;
pub mod process;
pub mod proxy;

use faulty::FaultyStore;
use secrecy::SecretString;
use sessiond::api::AppState;
use sessiond::clock::ManualClock;
use sessiond::config::{Config, Overrides};
use sessiond::domain::User;
use sessiond::service::{Actor, Argon2Config, Origin, UserInput};
use sessiond::store::{self, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

pub const ADMIN_PASSWORD: &str = "admin-password";

pub struct TestApp {
    pub addr: SocketAddr,
    pub clock: ManualClock,
    pub state: AppState,
    /// The store behind the service, with a switch to make it fail.
    pub store: Arc<FaultyStore>,
    pub http: reqwest::Client,
    pub admin: User,
    _dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A default configuration with cheap password hashing.
pub fn test_config() -> Config {
    let mut c = Config::load(None, &Overrides::default()).expect("default config");
    c.password_hash = Argon2Config::TEST;
    c
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a server whose configuration `tweak` may change first.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config();
        config.store = format!("sqlite://{}", dir.path().join("sessiond.db").display());
        tweak(&mut config);
        let inner = store::open(&config.store).await.expect("open store");
        let faulty = Arc::new(FaultyStore::new(inner));
        let clock = ManualClock::starting_now();
        let state = sessiond::server::build(
            &config,
            faulty.clone() as Arc<dyn Store>,
            Arc::new(clock.clone()),
        )
        .expect("build");
        let admin = state
            .service
            .bootstrap_admin(Some(SecretString::from(ADMIN_PASSWORD.to_string())))
            .await
            .expect("bootstrap")
            .expect("empty store")
            .user;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        let server_state = state.clone();
        tokio::spawn(async move {
            let _ = sessiond::server::run(listener, server_state, async {
                let _ = rx.await;
            })
            .await;
        });
        TestApp {
            addr,
            clock,
            state,
            store: faulty,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            admin,
            _dir: dir,
            shutdown: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Creates a user straight through the service (as the operator would with the CLI).
    pub async fn add_user(&self, name: &str, password: &str, roles: &[&str]) -> User {
        self.state
            .service
            .create_user(
                &Actor::System,
                UserInput {
                    name: name.into(),
                    password: SecretString::from(password.to_string()),
                    roles: roles.iter().map(|r| r.to_string()).collect(),
                    full_name: String::new(),
                    email: format!("{name}@example.test"),
                    description: String::new(),
                    enabled: true,
                },
                &Origin {
                    dialect: sessiond::domain::Dialect::Native,
                    source: "test".into(),
                },
            )
            .await
            .expect("create user")
    }

    /// Writes pending last-access updates, as the background task would.
    pub async fn flush(&self) {
        self.state.service.flush_touches().await.expect("flush");
    }

    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }
}

/// Base64 of a password, as Commvault clients send it.
pub fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The JSON answer of a Commvault `POST /commandcenter/api/Login` (a refusal is a 200
/// too, with an `errList`).
pub async fn cv_login_answer(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> serde_json::Value {
    let r = http
        .post(format!("{base}/commandcenter/api/Login"))
        .header("Accept", "application/json")
        .json(&serde_json::json!({"username": user, "password": b64(password)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}
