//! Argon2id password hashing, on threads of its own (one per core) so that a burst
//! of logins never stalls the async workers that validate sessions.
//!
//! A login hands its verification to the hashers through one queue and awaits the
//! answer. A hasher that finishes takes the next job at once, with no hand-over
//! through the async runtime: a semaphore and `spawn_blocking` cost two thread
//! wake-ups per hash (the waiting login's worker, then the blocking thread), each
//! of which preempted a hash in progress on a machine whose cores all hash.
//!
//! Each hasher verifies in working memory it keeps between verifications rather
//! than in a fresh zeroed allocation of `memory_kib` each time: the allocation,
//! its zeroing and its page faults were a tenth of a login's CPU, and reuse also
//! bounds the memory Argon2 keeps (one buffer per hasher).

use super::error::{ServiceError, ServiceResult};
use crate::domain::PasswordHash;
use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

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

/// Hashes and verifies passwords on dedicated hasher threads, as many as cores.
/// The threads end when the last clone is dropped.
#[derive(Clone)]
pub struct Passwords {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    jobs: flume::Sender<Job>,
}

/// What the hashers read.
struct Shared {
    argon: Argon2<'static>,
    /// A hash of a random password: unknown users are verified against it, so that
    /// they cost the same time as known ones.
    dummy: String,
    /// How many verifications ran (known and unknown users alike).
    verifications: AtomicU64,
}

/// A hasher's own state: the shared parameters and its working memory.
struct Hasher {
    shared: Arc<Shared>,
    memory: Vec<Block>,
}

type Job = Box<dyn FnOnce(&mut Hasher) + Send>;

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
        let shared = Arc::new(Shared {
            argon,
            dummy,
            verifications: AtomicU64::new(0),
        });
        let (jobs, queue) = flume::unbounded::<Job>();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for i in 0..cores {
            let queue = queue.clone();
            let mut hasher = Hasher {
                shared: Arc::clone(&shared),
                memory: Vec::new(),
            };
            std::thread::Builder::new()
                .name(format!("sessiond-argon2-{i}"))
                .spawn(move || {
                    // Ends when every sender is gone. A job that panics loses only
                    // its own answer (its caller sees the channel closed).
                    while let Ok(job) = queue.recv() {
                        let _ = catch_unwind(AssertUnwindSafe(|| job(&mut hasher)));
                    }
                })
                .map_err(|e| anyhow::anyhow!("starting a hasher thread: {e}"))?;
        }
        Ok(Passwords {
            inner: Arc::new(Inner { shared, jobs }),
        })
    }

    /// Checks the password policy, then hashes.
    pub async fn hash(&self, password: &SecretString) -> ServiceResult<PasswordHash> {
        check_policy(password.expose_secret())?;
        let pw = password.clone();
        self.on_hasher(move |h| {
            h.shared
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
        self.on_hasher(move |h| {
            h.shared.verifications.fetch_add(1, Ordering::Relaxed);
            let bytes = pw.expose_secret().as_bytes();
            match &hash {
                Some(hash) => verify_in(&mut h.memory, bytes, hash),
                None => {
                    let _ = verify_in(&mut h.memory, bytes, &h.shared.dummy);
                    false
                }
            }
        })
        .await
    }

    /// How many password verifications have run, against a real or the dummy hash.
    pub fn verifications(&self) -> u64 {
        self.inner.shared.verifications.load(Ordering::Relaxed)
    }

    /// Runs `f` on the next free hasher and awaits its answer. A caller that gives
    /// up (its request dropped) before a hasher reaches its job costs no hash.
    async fn on_hasher<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Hasher) -> T + Send + 'static,
    ) -> ServiceResult<T> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |hasher| {
            if !reply.is_closed() {
                let _ = reply.send(f(hasher));
            }
        });
        self.inner
            .jobs
            .send(job)
            .map_err(|_| ServiceError::Unavailable(anyhow::anyhow!("the hashers have stopped")))?;
        answer.await.map_err(|_| {
            ServiceError::Unavailable(anyhow::anyhow!("a password hash failed unexpectedly"))
        })
    }
}

/// `password` against the PHC string `hash` (any Argon2 variant, version and
/// parameters the string names), computed in `memory`; the outputs are
/// compared in constant time. What `PasswordVerifier::verify_password` does, minus
/// its fresh allocation: `memory` grows to the largest cost seen and is kept.
fn verify_in(memory: &mut Vec<Block>, password: &[u8], hash: &str) -> bool {
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
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let computed =
        argon.hash_password_into_with_memory(password, salt.as_ref(), out, &mut memory[..blocks]);
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
        let mut memory = Vec::new();
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
            assert!(verify_in(&mut memory, b"correct horse", &h), "{h}");
            assert!(!verify_in(&mut memory, b"correct horse.", &h), "{h}");
            assert!(!verify_in(&mut memory, b"", &h), "{h}");
        }
        assert_eq!(
            memory.len(),
            big.params().block_count(),
            "kept at the largest cost seen"
        );
        for bad in [
            "",
            "$argon2id$",
            "$scrypt$ln=1,r=8,p=1$c2FsdHNhbHQ$aGFzaA",
            "plain",
        ] {
            assert!(!verify_in(&mut memory, b"x", bad), "{bad}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_verifications_each_get_their_own_answer() {
        let p = Passwords::new(Argon2Config::TEST).unwrap();
        let right = p.hash(&secret("correct horse")).await.unwrap();
        let wrong = p.hash(&secret("another horse")).await.unwrap();
        let checks = (0..64).map(|i| {
            let (p, right, wrong) = (p.clone(), right.clone(), wrong.clone());
            tokio::spawn(async move {
                let hash = if i % 3 == 0 { &wrong } else { &right };
                (
                    i,
                    p.verify(&secret("correct horse"), Some(hash))
                        .await
                        .unwrap(),
                )
            })
        });
        for check in checks.collect::<Vec<_>>() {
            let (i, ok) = check.await.unwrap();
            assert_eq!(ok, i % 3 != 0, "verification {i}");
        }
        assert_eq!(p.verifications(), 64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_run_on_the_hasher_threads_not_the_runtime() {
        let p = Passwords::new(Argon2Config::TEST).unwrap();
        let (thread, in_runtime) = p
            .on_hasher(|_| {
                (
                    std::thread::current().name().map(str::to_owned),
                    tokio::runtime::Handle::try_current().is_ok(),
                )
            })
            .await
            .unwrap();
        assert!(
            thread
                .as_deref()
                .is_some_and(|n| n.starts_with("sessiond-argon2-")),
            "{thread:?}"
        );
        assert!(
            !in_runtime,
            "no async worker (nor blocking pool) computes a hash"
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
