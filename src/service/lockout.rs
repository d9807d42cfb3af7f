//! Login throttling: failures counted per account and per source address.
//!
//! Every failed login (unknown user and wrong password alike, so that a lockout
//! never tells which names exist) counts under two keys, `user:<lower-case name>`
//! and `addr:<source address>`. When a key reaches its threshold within `window`,
//! it is locked for `base_lockout`, doubled for each successive lockout of that
//! key, capped at `max_lockout`. A locked key refuses every login, even with the
//! right password, until the lock ends. A successful login clears the account key
//! (not the address key: a source must not reset its count by signing in to an
//! account of its own); a key whose last lock ended `max_lockout` ago or more
//! starts its escalation afresh.

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{AuditKind, Dialect, NewAuditEvent, Timestamp, UserRef};
use crate::store::FailureRecord;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[lockout]`: thresholds and lock durations. A threshold of 0 turns that counter off.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutPolicy {
    /// Failures count within this window (a new window starts after it passes).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Failed logins for one user name within the window before it is locked.
    pub max_failures_per_account: u32,
    /// Failed logins from one source address within the window before it is locked.
    pub max_failures_per_address: u32,
    /// Length of the first lockout; each successive one doubles it.
    #[serde(with = "humantime_serde")]
    pub base_lockout: Duration,
    /// The longest lockout.
    #[serde(with = "humantime_serde")]
    pub max_lockout: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            window: Duration::from_secs(15 * 60),
            max_failures_per_account: 5,
            max_failures_per_address: 20,
            base_lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(30 * 60),
        }
    }
}

impl LockoutPolicy {
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, d) in [
            ("window", self.window),
            ("base_lockout", self.base_lockout),
            ("max_lockout", self.max_lockout),
        ] {
            anyhow::ensure!(!d.is_zero(), "lockout.{name} must be more than zero");
        }
        anyhow::ensure!(
            self.base_lockout <= self.max_lockout,
            "lockout.base_lockout must not exceed lockout.max_lockout"
        );
        Ok(())
    }

    /// The length of a key's next lockout after `previous` lockouts.
    pub fn lockout_after(&self, previous: u32) -> Duration {
        let factor = 1u32.checked_shl(previous.min(31)).unwrap_or(u32::MAX);
        self.base_lockout
            .checked_mul(factor)
            .unwrap_or(self.max_lockout)
            .min(self.max_lockout)
    }
}

/// The two keys a login attempt counts under.
pub(super) struct ThrottleKeys {
    pub account: String,
    pub address: String,
}

impl ThrottleKeys {
    pub fn new(username: &str, source: &str) -> Self {
        let name: String = username.trim().to_lowercase().chars().take(128).collect();
        ThrottleKeys {
            account: format!("user:{name}"),
            address: format!("addr:{source}"),
        }
    }

    fn with_thresholds<'a>(&'a self, p: &LockoutPolicy) -> [(&'a str, u32); 2] {
        [
            (self.account.as_str(), p.max_failures_per_account),
            (self.address.as_str(), p.max_failures_per_address),
        ]
    }
}

/// What the account key held before a login, to clear it only when needed.
pub(super) struct ThrottleState {
    account_recorded: bool,
}

impl Service {
    fn lockout_policy(&self) -> &LockoutPolicy {
        &self.inner.config.lockout
    }

    /// Refuses the attempt if either key is locked now.
    pub(super) async fn check_throttle(&self, keys: &ThrottleKeys) -> ServiceResult<ThrottleState> {
        let now = self.now();
        let mut retry_after = Duration::ZERO;
        let mut account_recorded = false;
        let checked: Vec<&str> = keys
            .with_thresholds(self.lockout_policy())
            .into_iter()
            .filter(|(_, threshold)| *threshold > 0)
            .map(|(key, _)| key)
            .collect();
        // One query for both keys where the store can.
        let records = self.store().login_failures_of(&checked).await?;
        for (key, rec) in checked.iter().zip(records) {
            if let Some(rec) = rec {
                account_recorded |= *key == keys.account;
                if let Some(until) = rec.locked_until
                    && until > now
                {
                    retry_after = retry_after.max(until.since(now));
                }
            }
        }
        if retry_after > Duration::ZERO {
            return Err(ServiceError::AccountLocked { retry_after });
        }
        Ok(ThrottleState { account_recorded })
    }

    /// Counts a failed attempt under both keys and locks those that reach their
    /// threshold. Returns how long the attempt's keys are now locked, if they are.
    pub(super) async fn count_failure(
        &self,
        keys: &ThrottleKeys,
        subject: &UserRef,
        dialect: Dialect,
        source: &str,
    ) -> ServiceResult<Option<Duration>> {
        let policy = self.lockout_policy().clone();
        let now = self.now();
        let mut locked_for: Option<Duration> = None;
        for (key, threshold) in keys.with_thresholds(&policy) {
            if threshold == 0 {
                continue;
            }
            let mut rec = self
                .store()
                .record_login_failure(key, now, policy.window)
                .await?;
            if escalation_has_lapsed(&rec, now, &policy) {
                self.store().clear_login_failures(key).await?;
                rec = self
                    .store()
                    .record_login_failure(key, now, policy.window)
                    .await?;
            }
            let already_locked = rec.locked_until.is_some_and(|u| u > now);
            if rec.failures >= threshold && !already_locked {
                let length = policy.lockout_after(rec.lockouts);
                self.store().lock_login(key, now.plus(length)).await?;
                locked_for = Some(locked_for.map_or(length, |l| l.max(length)));
                let what = if key == keys.account {
                    "account"
                } else {
                    "address"
                };
                tracing::warn!(key, seconds = length.as_secs(), "login locked");
                self.audit(NewAuditEvent {
                    subject: Some(subject.clone()),
                    source: source.to_string(),
                    dialect: Some(dialect),
                    detail: format!(
                        "{what} locked for {}s after {} failed logins",
                        length.as_secs(),
                        rec.failures
                    ),
                    ..self.event(AuditKind::AccountLocked)
                })
                .await;
            }
        }
        Ok(locked_for)
    }

    /// After a successful login: forget the account's failures.
    pub(super) async fn clear_throttle(
        &self,
        keys: &ThrottleKeys,
        state: &ThrottleState,
    ) -> ServiceResult<()> {
        if state.account_recorded {
            self.store().clear_login_failures(&keys.account).await?;
        }
        Ok(())
    }
}

/// A key whose last lock ended at least `max_lockout` ago starts afresh.
fn escalation_has_lapsed(rec: &FailureRecord, now: Timestamp, p: &LockoutPolicy) -> bool {
    rec.lockouts > 0
        && rec
            .locked_until
            .is_some_and(|until| now >= until.plus(p.max_lockout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockouts_double_and_are_capped() {
        let p = LockoutPolicy {
            base_lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(600),
            ..LockoutPolicy::default()
        };
        let secs: Vec<u64> = (0..6).map(|n| p.lockout_after(n).as_secs()).collect();
        assert_eq!(secs, [60, 120, 240, 480, 600, 600]);
        assert_eq!(p.lockout_after(u32::MAX).as_secs(), 600);
    }

    #[test]
    fn keys_fold_case_and_never_depend_on_the_user_existing() {
        let k = ThrottleKeys::new("  Alice ", "192.0.2.1");
        assert_eq!(k.account, "user:alice");
        assert_eq!(k.address, "addr:192.0.2.1");
    }

    #[test]
    fn escalation_lapses_after_a_quiet_max_lockout() {
        let p = LockoutPolicy::default();
        let t = Timestamp::from_unix_millis(1_000_000_000);
        let rec = FailureRecord {
            failures: 1,
            window_start: t,
            locked_until: Some(t),
            lockouts: 3,
        };
        assert!(!escalation_has_lapsed(
            &rec,
            t.plus(p.max_lockout - Duration::from_secs(1)),
            &p
        ));
        assert!(escalation_has_lapsed(&rec, t.plus(p.max_lockout), &p));
        let fresh = FailureRecord {
            lockouts: 0,
            locked_until: None,
            ..rec
        };
        assert!(!escalation_has_lapsed(&fresh, t.plus(p.max_lockout), &p));
    }

    #[test]
    fn validation_rejects_nonsense() {
        assert!(LockoutPolicy::default().validate().is_ok());
        let bad = LockoutPolicy {
            base_lockout: Duration::from_secs(7200),
            ..LockoutPolicy::default()
        };
        assert!(bad.validate().is_err());
    }
}
