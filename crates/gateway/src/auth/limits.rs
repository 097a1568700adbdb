//! Budgets of password logins: failures per user and per source address,
//! and password checks at once. Strangers can call `/v1/login/local`, so
//! every attempt is counted before any expensive work.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::LoginLimits;
use crate::store::{FailureRun, Store, StoreError};

/// The window of the per-source budget.
const SOURCE_WINDOW: Duration = Duration::from_secs(60);

/// Why a login is refused before its password is checked.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The user or the source address failed too often.
    #[error("too many failed logins; try again in {}", wait(*.0))]
    TooManyFailures(Duration),
    /// Every password check slot stayed busy.
    #[error("the gateway is busy checking other logins; try again in {}", wait(*.0))]
    Busy(Duration),
}

impl Refused {
    /// How long the caller should wait (`Retry-After`).
    pub fn retry_after(&self) -> Duration {
        match self {
            Refused::TooManyFailures(d) | Refused::Busy(d) => *d,
        }
    }
}

fn wait(d: Duration) -> String {
    let secs = d.as_secs().max(1);
    if secs < 120 {
        format!("{secs} seconds")
    } else {
        format!("{} minutes", secs.div_ceil(60))
    }
}

/// The budgets, counted in the store.
pub struct Limiter {
    store: Arc<dyn Store>,
    limits: LoginLimits,
    argon2: Semaphore,
}

/// The store key of a user's failures.
fn user_key(user: &str) -> String {
    format!("user:{user}")
}

/// The store key of a source's failures: an IPv6 host usually owns a whole
/// /64, so that is one source.
fn source_key(source: IpAddr) -> String {
    match source {
        IpAddr::V4(ip) => format!("ip:{ip}"),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let prefix = u128::from(ip) & !((1u128 << 64) - 1);
                format!("ip:{}/64", std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// A refusal when there is a wait.
fn refused(wait: Option<Duration>) -> Result<(), Refused> {
    match wait {
        Some(wait) => Err(Refused::TooManyFailures(wait)),
        None => Ok(()),
    }
}

/// The time left until `until`, if it is in the future.
fn left(until: SystemTime) -> Option<Duration> {
    until
        .duration_since(SystemTime::now())
        .ok()
        .filter(|d| !d.is_zero())
}

impl Limiter {
    /// Budgets from the configuration, counted in `store`.
    pub fn new(store: Arc<dyn Store>, limits: LoginLimits) -> Self {
        let argon2 = Semaphore::new(limits.argon2_concurrency);
        Limiter {
            store,
            limits,
            argon2,
        }
    }

    fn user_blocked(&self, run: FailureRun) -> Option<Duration> {
        (run.count >= self.limits.max_failures)
            .then(|| left(run.last + self.limits.lockout))
            .flatten()
    }

    fn source_blocked(&self, run: FailureRun) -> Option<Duration> {
        (run.count >= self.limits.per_source_per_minute)
            .then(|| left(run.first + SOURCE_WINDOW))
            .flatten()
    }

    /// Refuses a login whose user or source has no budget left. Blocking
    /// (the store); `user` is the name as submitted, already cut.
    pub fn check(&self, user: &str, source: IpAddr) -> Result<Result<(), Refused>, StoreError> {
        let user_wait = self
            .store
            .login_failures(&user_key(user))?
            .and_then(|run| self.user_blocked(run));
        let source_wait = self.source_wait(source)?;
        Ok(refused(user_wait.max(source_wait)))
    }

    /// Refuses a guess without a user (a device sign-in's code typed in a
    /// browser) from a source with no budget left. Blocking.
    pub fn check_source(&self, source: IpAddr) -> Result<Result<(), Refused>, StoreError> {
        Ok(refused(self.source_wait(source)?))
    }

    fn source_wait(&self, source: IpAddr) -> Result<Option<Duration>, StoreError> {
        Ok(self
            .store
            .login_failures(&source_key(source))?
            .and_then(|run| self.source_blocked(run)))
    }

    /// Counts a failed login against `user` and `source`. Blocking.
    pub fn failed(&self, user: &str, source: IpAddr) -> Result<(), StoreError> {
        self.store
            .add_login_failure(&user_key(user), self.limits.lockout, self.forget_after())?;
        self.failed_source(source)
    }

    /// Counts a wrong guess against `source` only. Blocking.
    pub fn failed_source(&self, source: IpAddr) -> Result<(), StoreError> {
        self.store
            .add_login_failure(&source_key(source), SOURCE_WINDOW, self.forget_after())?;
        Ok(())
    }

    /// When a run of failures of any key is forgotten.
    fn forget_after(&self) -> Duration {
        self.limits.lockout.max(SOURCE_WINDOW)
    }

    /// Ends `user`'s run of failures. Blocking.
    pub fn succeeded(&self, user: &str) -> Result<(), StoreError> {
        self.store.clear_login_failures(&user_key(user))
    }

    /// A slot for one password check, waiting at most `argon2_wait`.
    pub async fn argon2_slot(&self) -> Result<SemaphorePermit<'_>, Refused> {
        let wait = self.limits.argon2_wait;
        match tokio::time::timeout(wait, self.argon2.acquire()).await {
            Ok(permit) => Ok(permit.expect("the semaphore is never closed")),
            Err(_) => Err(Refused::Busy(wait.max(Duration::from_secs(1)))),
        }
    }
}

/// A submitted username as the audit trail and the log show it: at most
/// 64 characters, control characters escaped, so a stranger cannot write
/// megabytes or forge lines.
pub fn shown_username(raw: &str) -> String {
    const MAX: usize = 64;
    let mut shown: String = raw
        .chars()
        .take(MAX)
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    if raw.chars().nth(MAX).is_some() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_cut_and_escaped() {
        assert_eq!(shown_username("alice"), "alice");
        assert_eq!(shown_username("a\nb\u{1b}"), "a\\nb\\u{1b}");
        let long = "x".repeat(100_000);
        assert_eq!(shown_username(&long).chars().count(), 65);
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), "ip:10.0.0.1");
    }
}
