//! Configuration: defaults, then a TOML file, then `SESSIOND_*` environment
//! variables (nested keys with `__`, e.g. `SESSIOND_SESSION__IDLE_TIMEOUT=10m`),
//! then command-line flags; later ones win. Unknown keys are an error, so a typo
//! never silently falls back to a default.

use crate::api::{DialectConfig, HttpConfig};
use crate::service::{Argon2Config, SessionPolicy};
use crate::store::{SessionLimit, StoreOptions};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8400";
pub const DEFAULT_STORE: &str = "sqlite://sessiond.db";

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on (`--listen`, `SESSIOND_LISTEN`).
    pub listen: SocketAddr,
    /// Store URL (`--store`, `SESSIOND_STORE`): `sqlite://PATH`, `postgres://...`
    /// or `redis://...`.
    pub store: String,
    /// Pool size, timeouts and key prefix of the PostgreSQL and Redis stores.
    pub store_options: StoreOptions,
    pub session: SessionPolicy,
    pub limits: LimitsConfig,
    pub password_hash: Argon2Config,
    pub http: HttpConfig,
    pub dialects: DialectConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8400))),
            store: DEFAULT_STORE.into(),
            store_options: StoreOptions::default(),
            session: SessionPolicy::default(),
            limits: LimitsConfig::default(),
            password_hash: Argon2Config::default(),
            http: HttpConfig::default(),
            dialects: DialectConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// Per-user session limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Live sessions one user may hold; 0 means no limit.
    pub max_sessions_per_user: u32,
    /// What a login over the limit does: `deny` or `evict-oldest`.
    pub policy: LimitPolicy,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitPolicy {
    #[default]
    Deny,
    EvictOldest,
}

impl LimitsConfig {
    pub fn session_limit(&self) -> SessionLimit {
        match (self.max_sessions_per_user, self.policy) {
            (0, _) => SessionLimit::Unlimited,
            (n, LimitPolicy::Deny) => SessionLimit::Deny(n),
            (n, LimitPolicy::EvictOldest) => SessionLimit::EvictOldest(n),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `sessiond=debug` (`RUST_LOG` overrides it).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Values given as command-line flags.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub store: Option<String>,
}

impl Config {
    /// Loads the layered configuration.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            anyhow::ensure!(
                path.is_file(),
                "config file {} does not exist",
                path.display()
            );
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(
            Env::prefixed("SESSIOND_")
                .split("__")
                // Read elsewhere: the config file's path, and a secret kept out of the config.
                .ignore(&["config", "admin_password"]),
        );
        if let Some(listen) = overrides.listen {
            fig = fig.merge(Serialized::default("listen", listen));
        }
        if let Some(store) = &overrides.store {
            fig = fig.merge(Serialized::default("store", store));
        }
        let config: Config = fig
            .extract()
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        config.session.validate()?;
        config.store_options.validate()?;
        anyhow::ensure!(
            config.http.max_body_bytes >= 1024,
            "http.max_body_bytes must be at least 1024"
        );
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.store, DEFAULT_STORE);
        assert_eq!(c.session.idle_timeout, Duration::from_secs(1800));
        assert_eq!(c.session.absolute_lifetime, Duration::from_secs(86400));
    }

    #[test]
    fn file_then_flags() {
        let f = file(
            "store = \"sqlite://from-file.db\"\nlisten = \"127.0.0.1:9000\"\n\
             [session]\nidle_timeout = \"10m\"\n",
        );
        let c = Config::load(
            Some(f.path()),
            &Overrides {
                listen: Some("127.0.0.1:9001".parse().unwrap()),
                store: None,
            },
        )
        .unwrap();
        assert_eq!(c.store, "sqlite://from-file.db");
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.session.idle_timeout, Duration::from_secs(600));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let f = file("stroe = \"typo\"\n");
        let e = Config::load(Some(f.path()), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("stroe"), "{e}");
        let f = file("[session]\nidle_timeout = \"2h\"\nmax_idle_timeout = \"1h\"\n");
        assert!(Config::load(Some(f.path()), &Overrides::default()).is_err());
        let missing = Path::new("/nonexistent/sessiond.toml");
        assert!(Config::load(Some(missing), &Overrides::default()).is_err());
    }

    #[test]
    fn store_options_from_file_and_env_shape() {
        let f = file(
            "store = \"postgres://db.example/sessiond\"\n[store_options]\nmax_connections = 4\n\
             connect_timeout = \"2s\"\noperation_timeout = \"1500ms\"\nkey_prefix = \"prod:\"\n",
        );
        let c = Config::load(Some(f.path()), &Overrides::default()).unwrap();
        assert_eq!(c.store_options.max_connections, 4);
        assert_eq!(c.store_options.connect_timeout, Duration::from_secs(2));
        assert_eq!(
            c.store_options.operation_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(c.store_options.key_prefix, "prod:");
        let f = file("[store_options]\nmax_conections = 4\n");
        let e = Config::load(Some(f.path()), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("max_conections"), "{e}");
        let f = file("[store_options]\nmax_connections = 0\n");
        assert!(Config::load(Some(f.path()), &Overrides::default()).is_err());
        let f = file("[store_options]\nkey_prefix = \"\"\n");
        assert!(Config::load(Some(f.path()), &Overrides::default()).is_err());
    }

    #[test]
    fn limits_map_to_the_store_policy() {
        let f = file("[limits]\nmax_sessions_per_user = 3\npolicy = \"evict-oldest\"\n");
        let c = Config::load(Some(f.path()), &Overrides::default()).unwrap();
        assert_eq!(c.limits.session_limit(), SessionLimit::EvictOldest(3));
        assert_eq!(
            LimitsConfig::default().session_limit(),
            SessionLimit::Unlimited
        );
    }
}
