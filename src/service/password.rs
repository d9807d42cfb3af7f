//! Argon2id password hashing, run on the blocking thread pool so that a burst of
//! logins never stalls the async workers that validate sessions.

use super::error::{ServiceError, ServiceResult};
use crate::domain::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;

/// Argon2id cost parameters (OWASP's minimum by default: 19 MiB, 2 passes, 1 lane).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Argon2Config {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

impl Argon2Config {
    /// Cheapest parameters Argon2 accepts; for tests only.
    pub const TEST: Argon2Config = Argon2Config {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
}

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashes and verifies passwords with a bounded number of concurrent hashes.
#[derive(Clone)]
pub struct Passwords {
    inner: Arc<Inner>,
}

struct Inner {
    argon: Argon2<'static>,
    /// A hash of a random password: unknown users are verified against it, so that
    /// they cost the same time as known ones.
    dummy: String,
    permits: Semaphore,
    /// How many verifications ran (known and unknown users alike).
    verifications: AtomicU64,
}

impl Passwords {
    pub fn new(cfg: Argon2Config) -> anyhow::Result<Self> {
        let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| anyhow::anyhow!("OS random number generator: {e}"))?;
        let dummy = argon
            .hash_password(&random)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Passwords {
            inner: Arc::new(Inner {
                argon,
                dummy,
                permits: Semaphore::new(cores),
                verifications: AtomicU64::new(0),
            }),
        })
    }

    /// Checks the password policy, then hashes.
    pub async fn hash(&self, password: &SecretString) -> ServiceResult<PasswordHash> {
        check_policy(password.expose_secret())?;
        let pw = password.clone();
        self.blocking(move |inner| {
            inner
                .argon
                .hash_password(pw.expose_secret().as_bytes())
                .map(|h| PasswordHash(h.to_string()))
                .map_err(|e| ServiceError::Unavailable(anyhow::anyhow!("argon2: {e}")))
        })
        .await?
    }

    /// `true` if `password` matches `hash`. With no hash (unknown user), spends the
    /// same effort on a dummy and answers `false`.
    pub async fn verify(
        &self,
        password: &SecretString,
        hash: Option<&PasswordHash>,
    ) -> ServiceResult<bool> {
        let pw = password.clone();
        let hash = hash.map(|h| h.0.clone());
        self.blocking(move |inner| {
            inner.verifications.fetch_add(1, Ordering::Relaxed);
            let bytes = pw.expose_secret().as_bytes();
            match &hash {
                Some(h) => inner.argon.verify_password(bytes, h.as_str()).is_ok(),
                None => {
                    let _ = inner.argon.verify_password(bytes, inner.dummy.as_str());
                    false
                }
            }
        })
        .await
    }

    /// How many password verifications have run, against a real or the dummy hash.
    pub fn verifications(&self) -> u64 {
        self.inner.verifications.load(Ordering::Relaxed)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> T + Send + 'static,
    ) -> ServiceResult<T> {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|e| ServiceError::Unavailable(e.into()))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| ServiceError::Unavailable(e.into()))
    }
}

fn check_policy(pw: &str) -> ServiceResult<()> {
    if pw.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ServiceError::Invalid(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if pw.len() > MAX_PASSWORD_BYTES {
        return Err(ServiceError::Invalid(format!(
            "the password must have at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[tokio::test]
    async fn hashes_with_argon2id_and_verifies() {
        let p = Passwords::new(Argon2Config::TEST).unwrap();
        let h = p.hash(&secret("correct horse")).await.unwrap();
        assert!(h.0.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{}", h.0);
        assert!(p.verify(&secret("correct horse"), Some(&h)).await.unwrap());
        assert!(!p.verify(&secret("wrong horse!"), Some(&h)).await.unwrap());
        assert!(!p.verify(&secret("correct horse"), None).await.unwrap());
        assert_eq!(
            p.verifications(),
            3,
            "the dummy is verified like a real hash"
        );
    }

    #[tokio::test]
    async fn enforces_the_length_policy() {
        let p = Passwords::new(Argon2Config::TEST).unwrap();
        assert!(matches!(
            p.hash(&secret("short")).await,
            Err(ServiceError::Invalid(_))
        ));
        assert!(matches!(
            p.hash(&secret(&"x".repeat(MAX_PASSWORD_BYTES + 1))).await,
            Err(ServiceError::Invalid(_))
        ));
    }
}
