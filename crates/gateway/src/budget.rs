//! Connection budgets: what a stranger can hold on the gateway port.
//!
//! Every accepted connection starts unauthenticated: its TLS handshake, and
//! for HTTP any request without a session certificate (login, ping, single
//! sign-on). Those connections draw from a small budget of their own, with
//! a share per source address, and a connection that finds it spent is
//! closed at once, before any TLS work. A connection that presents a valid
//! session certificate moves to the budget of established connections,
//! which strangers can never reach, so idle or half-open connections cannot
//! starve the people who are signed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The gateway's connection budgets.
pub struct Budgets {
    unauthenticated: Arc<Semaphore>,
    per_source: Mutex<HashMap<IpAddr, usize>>,
    per_source_max: usize,
    established: Arc<Semaphore>,
}

/// A place in the unauthenticated budget; given back on drop.
pub struct Unauthenticated {
    budgets: Arc<Budgets>,
    source: IpAddr,
    _permit: OwnedSemaphorePermit,
}

/// A place in the budget of established connections; given back on drop.
pub struct Established {
    _permit: OwnedSemaphorePermit,
}

impl Budgets {
    /// `unauthenticated` connections at most, `per_source` of them from one
    /// address, and `established` connections with a session certificate.
    pub fn new(unauthenticated: usize, per_source: usize, established: usize) -> Arc<Self> {
        Arc::new(Budgets {
            unauthenticated: Arc::new(Semaphore::new(unauthenticated)),
            per_source: Mutex::new(HashMap::new()),
            per_source_max: per_source,
            established: Arc::new(Semaphore::new(established)),
        })
    }

    /// A place for a new connection from `source`, or `None` when the
    /// stranger budget or this address's share of it is spent.
    pub fn unauthenticated(self: &Arc<Self>, source: IpAddr) -> Option<Unauthenticated> {
        let mut per_source = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_source.entry(source).or_default();
        if *count >= self.per_source_max {
            return None;
        }
        let permit = self.unauthenticated.clone().try_acquire_owned().ok()?;
        *count += 1;
        Some(Unauthenticated {
            budgets: self.clone(),
            source,
            _permit: permit,
        })
    }

    /// A place for a connection that proved who it is, or `None` when the
    /// gateway serves `max_connections` already.
    pub fn established(&self) -> Option<Established> {
        self.established
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|permit| Established { _permit: permit })
    }
}

impl Unauthenticated {
    /// The address the connection came from, as accepted.
    pub fn source(&self) -> IpAddr {
        self.source
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        let mut per_source = self
            .budgets
            .per_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                per_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strangers_have_a_budget_of_their_own_with_a_share_per_source() {
        let budgets = Budgets::new(3, 2, 1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = budgets.unauthenticated(a).unwrap();
        let _a2 = budgets.unauthenticated(a).unwrap();
        assert!(budgets.unauthenticated(a).is_none(), "a's share is spent");
        let b1 = budgets.unauthenticated(b).unwrap();
        assert!(
            budgets.unauthenticated(b).is_none(),
            "the whole budget is spent"
        );
        // Signed-in connections are not touched by any of that.
        let signed_in = budgets.established().unwrap();
        assert!(budgets.established().is_none());
        drop(a1);
        drop(b1);
        assert!(budgets.unauthenticated(b).is_some());
        drop(signed_in);
        assert!(budgets.established().is_some());
        assert_eq!(budgets.per_source.lock().unwrap().get(&a), Some(&1));
    }
}
