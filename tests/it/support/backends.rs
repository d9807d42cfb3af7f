//! Private PostgreSQL databases and Redis key prefixes for tests, removed when the
//! guard drops (also when the test fails). A server that cannot be reached fails
//! the test with a message saying how to start it: tests never skip silently.

use sessiond::store::StoreOptions;
use sqlx::Connection;
use std::time::Duration;

/// The PostgreSQL server tests use, as a URL to its maintenance database
/// (`SESSIOND_TEST_POSTGRES` overrides it).
pub fn postgres_admin_url() -> String {
    std::env::var("SESSIOND_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis server tests use (`SESSIOND_TEST_REDIS` overrides it).
pub fn redis_url() -> String {
    std::env::var("SESSIOND_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn random_name(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Store options for tests: a small pool and short timeouts.
pub fn test_store_options(key_prefix: &str) -> StoreOptions {
    StoreOptions {
        max_connections: 4,
        connect_timeout: Duration::from_secs(3),
        operation_timeout: Duration::from_secs(10),
        key_prefix: key_prefix.into(),
    }
}

/// A fresh database `sessiond_t_<random>`, dropped (WITH (FORCE)) on drop.
pub struct TestDatabase {
    pub name: String,
    admin: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let admin = postgres_admin_url();
        let name = random_name("sessiond_t_");
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not reachable at {admin} ({e}). Start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                 (see DEVELOPERS.md) or point SESSIOND_TEST_POSTGRES at one."
                )
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        TestDatabase { name, admin }
    }

    /// The URL of this database (same server and credentials as the admin URL).
    pub fn url(&self) -> String {
        self.url_via(None)
    }

    /// The URL of this database through another port (a proxy in front of it).
    pub fn url_via(&self, port: Option<u16>) -> String {
        let mut url = url::Url::parse(&self.admin).expect("admin URL");
        url.set_path(&self.name);
        if let Some(p) = port {
            url.set_port(Some(p)).expect("port");
        }
        url.to_string()
    }

    /// The port the server listens on.
    pub fn server_port(&self) -> u16 {
        url::Url::parse(&self.admin)
            .expect("admin URL")
            .port()
            .unwrap_or(5432)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {done:?}", self.name);
        }
    }
}

/// A random key prefix `sessiond_t_<random>:` on the test Redis; its keys are
/// deleted on drop.
pub struct TestRedisPrefix {
    pub prefix: String,
    url: String,
}

impl TestRedisPrefix {
    pub async fn create() -> TestRedisPrefix {
        let url = redis_url();
        let prefix = format!("{}:", random_name("sessiond_t_"));
        let mut conn = redis_connection(&url).await;
        let _: () = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("Redis PING");
        TestRedisPrefix { prefix, url }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The port the server listens on.
    pub fn server_port(&self) -> u16 {
        url::Url::parse(&self.url)
            .expect("redis URL")
            .port()
            .unwrap_or(6379)
    }

    /// A connection to the test Redis, for checks that look at the keys themselves.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis_connection(&self.url).await
    }

    /// Every key under this prefix.
    pub async fn keys(&self) -> Vec<String> {
        scan_keys(&mut self.connection().await, &self.prefix).await
    }
}

async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("redis URL");
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis is not reachable at {url} ({e}). Start it with `redis-server --daemonize yes \
                 --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no` (see DEVELOPERS.md) \
                 or point SESSIOND_TEST_REDIS at one."
            )
        })
}

async fn scan_keys(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

impl Drop for TestRedisPrefix {
    fn drop(&mut self) {
        let url = self.url.clone();
        let prefix = self.prefix.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = redis::Client::open(url.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                let keys = scan_keys(&mut conn, &prefix).await;
                for chunk in keys.chunks(500) {
                    let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await?;
                }
                Ok::<(), redis::RedisError>(())
            })
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not delete test keys {}*: {done:?}", self.prefix);
        }
    }
}
