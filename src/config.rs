//! Configuration: defaults, then a TOML file, then `SESSIOND_*` environment
//! variables (nested keys with `__`, e.g. `SESSIOND_SESSION__IDLE_TIMEOUT=10m`),
//! then command-line flags; later ones win. Unknown keys are an error, so a typo
//! never silently falls back to a default.

use crate::api::{DialectConfig, HttpConfig};
use crate::service::{Argon2Config, AuditPolicy, LockoutPolicy, SessionPolicy};
use crate::store::{SessionLimit, StoreOptions};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    pub lockout: LockoutPolicy,
    pub audit: AuditPolicy,
    pub password_hash: Argon2Config,
    pub http: HttpConfig,
    pub dialects: DialectConfig,
    pub log: LogConfig,
    pub tls: TlsConfig,
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
            lockout: LockoutPolicy::default(),
            audit: AuditPolicy::default(),
            password_hash: Argon2Config::default(),
            http: HttpConfig::default(),
            dialects: DialectConfig::default(),
            log: LogConfig::default(),
            tls: TlsConfig::default(),
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

/// HTTPS: both files, or neither for plain HTTP (`--tls-cert`, `--tls-key`,
/// `SESSIOND_TLS__CERT`, `SESSIOND_TLS__KEY`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file: the server certificate, then any intermediates.
    pub cert: Option<PathBuf>,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    /// The certificate and key files, `None` for plain HTTP; an error when only
    /// one of them is given.
    pub fn files(&self) -> anyhow::Result<Option<(&Path, &Path)>> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => anyhow::bail!("tls.cert (--tls-cert) needs tls.key (--tls-key)"),
            (None, Some(_)) => anyhow::bail!("tls.key (--tls-key) needs tls.cert (--tls-cert)"),
        }
    }
}

/// Values given as command-line flags.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub store: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
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
        if let Some(cert) = &overrides.tls_cert {
            fig = fig.merge(Serialized::default("tls.cert", cert));
        }
        if let Some(key) = &overrides.tls_key {
            fig = fig.merge(Serialized::default("tls.key", key));
        }
        let config: Config = fig
            .extract()
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        config.session.validate()?;
        config.lockout.validate()?;
        config.store_options.validate()?;
        anyhow::ensure!(
            config.http.max_body_bytes >= 1024,
            "http.max_body_bytes must be at least 1024"
        );
        config.tls.files()?;
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
                ..Overrides::default()
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
    fn lockout_audit_and_password_change_keys() {
        let f = file(
            "[lockout]\nwindow = \"5m\"\nmax_failures_per_account = 3\nmax_failures_per_address = 0\n\
             base_lockout = \"30s\"\nmax_lockout = \"10m\"\n[audit]\nretention = \"7d\"\n\
             [session]\npassword_change_ends_other_sessions = false\n",
        );
        let c = Config::load(Some(f.path()), &Overrides::default()).unwrap();
        assert_eq!(c.lockout.window, Duration::from_secs(300));
        assert_eq!(c.lockout.max_failures_per_account, 3);
        assert_eq!(c.lockout.max_failures_per_address, 0);
        assert_eq!(c.lockout.lockout_after(1), Duration::from_secs(60));
        assert_eq!(c.audit.retention, Duration::from_secs(7 * 86400));
        assert!(!c.session.password_change_ends_other_sessions);
        let d = Config::load(None, &Overrides::default()).unwrap();
        assert!(d.session.password_change_ends_other_sessions);
        assert_eq!(d.lockout.max_failures_per_account, 5);
        let bad = file("[lockout]\nbase_lockout = \"2h\"\nmax_lockout = \"1h\"\n");
        assert!(Config::load(Some(bad.path()), &Overrides::default()).is_err());
    }

    #[test]
    fn operations_settings_from_file_env_and_flags() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert!(c.http.metrics);
        assert_eq!(c.http.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.tls, TlsConfig::default());
        let f =
            file("[http]\nmetrics = false\nshutdown_timeout = \"5s\"\n[tls]\ncert = \"c.pem\"\n");
        let c = Config::load(
            Some(f.path()),
            &Overrides {
                tls_key: Some("k.pem".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert!(!c.http.metrics);
        assert_eq!(c.http.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(
            c.tls.files().unwrap(),
            Some((Path::new("c.pem"), Path::new("k.pem")))
        );
    }

    #[test]
    fn tls_needs_both_files() {
        let only_cert = Overrides {
            tls_cert: Some("c.pem".into()),
            ..Overrides::default()
        };
        let e = Config::load(None, &only_cert).unwrap_err();
        assert!(e.to_string().contains("needs tls.key"), "{e}");
        let f = file("[tls]\nkey = \"k.pem\"\n");
        let e = Config::load(Some(f.path()), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("needs tls.cert"), "{e}");
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
