//! Argon2id password hashing, run on the blocking thread pool so that a burst of
//! logins never stalls the async workers that validate sessions.
//!
//! Verification computes in working memory kept between verifications (one buffer
//! per permit, [`MemoryPool`]) rather than in a fresh zeroed allocation of
//! `memory_kib` each time: the allocation, its zeroing and its page faults were a
//! tenth of a login's CPU, and reuse also bounds the memory Argon2 keeps.

use super::error::{ServiceError, ServiceResult};
use crate::domain::PasswordHash;
use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
    permits: Arc<Semaphore>,
    memory: MemoryPool,
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
                permits: Arc::new(Semaphore::new(cores)),
                memory: MemoryPool::new(cores),
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
                Some(h) => verify_in(&inner.memory, bytes, h),
                None => {
                    let _ = verify_in(&inner.memory, bytes, &inner.dummy);
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
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|e| ServiceError::Unavailable(e.into()))?;
        let inner = Arc::clone(&self.inner);
        // The permit is released on the blocking thread as soon as the hash is done,
        // not when this task is next polled: the next login starts hashing at once.
        tokio::task::spawn_blocking(move || {
            let out = f(&inner);
            drop(permit);
            out
        })
        .await
        .map_err(|e| ServiceError::Unavailable(e.into()))
    }
}

/// Argon2 working memory kept for reuse: at most one buffer per permit.
struct MemoryPool {
    free: Mutex<Vec<Vec<Block>>>,
    keep: usize,
}

impl MemoryPool {
    fn new(keep: usize) -> Self {
        MemoryPool {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// A buffer of at least `blocks` blocks (contents unspecified: Argon2 writes
    /// every block before it reads it).
    fn take(&self, blocks: usize) -> Vec<Block> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        match free.iter().position(|b| b.len() >= blocks) {
            Some(i) => free.swap_remove(i),
            None => vec![Block::new(); blocks],
        }
    }

    fn give(&self, buffer: Vec<Block>) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < self.keep {
            free.push(buffer);
        }
    }
}

/// `password` against the PHC string `hash` (any Argon2 variant, version and
/// parameters the string names), computed in pooled memory; the outputs are
/// compared in constant time. What `PasswordVerifier::verify_password` does, minus
/// its fresh allocation.
fn verify_in(pool: &MemoryPool, password: &[u8], hash: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(parsed) = argon2::PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm.as_str()),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let mut memory = pool.take(blocks);
    let computed =
        argon.hash_password_into_with_memory(password, salt.as_ref(), out, &mut memory[..blocks]);
    pool.give(memory);
    computed.is_ok() && bool::from(out.ct_eq(expected.as_bytes()))
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

    #[test]
    fn pooled_verification_agrees_with_the_library() {
        use argon2::password_hash::PasswordVerifier;
        let pool = MemoryPool::new(1);
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 2, 1, None).unwrap(),
        );
        let big = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(256, 1, 2, Some(16)).unwrap(),
        );
        for argon in [&small, &big, &small] {
            let h = argon.hash_password(b"correct horse").unwrap().to_string();
            assert!(argon.verify_password(b"correct horse", h.as_str()).is_ok());
            assert!(verify_in(&pool, b"correct horse", &h), "{h}");
            assert!(!verify_in(&pool, b"correct horse.", &h), "{h}");
            assert!(!verify_in(&pool, b"", &h), "{h}");
        }
        assert_eq!(
            pool.free.lock().unwrap().len(),
            1,
            "kept, and no more than one"
        );
        for bad in [
            "",
            "$argon2id$",
            "$scrypt$ln=1,r=8,p=1$c2FsdHNhbHQ$aGFzaA",
            "plain",
        ] {
            assert!(!verify_in(&pool, b"x", bad), "{bad}");
        }
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
