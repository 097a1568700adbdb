//! Draining: how a replica leaves service without dropping anyone's work
//! on the floor (DESIGN.md §9, "Lifecycle").
//!
//! When the gateway is told to stop ([`crate::server::Running::drain`], on
//! SIGTERM or SIGINT) it:
//! 1. stops accepting at once (the listener closes, so a load balancer
//!    sends new connections to another replica), answers `/v1/ready` with
//!    503, refuses sessions whose route arrives now, and lets HTTP
//!    connections finish their request;
//! 2. lets live tunnel sessions run for `limits.drain_grace`; a session
//!    that ends meanwhile ends as usual;
//! 3. then ends every remaining session the way a lock does: the client
//!    gets a FATAL `57P01` ErrorResponse ([`restarting`]), the statement
//!    running upstream is cancelled, `session_end` is audited with the
//!    reason and the provisioned database user is locked or dropped;
//! 4. waits a bounded time for those ends, and stores the audit queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use postern_pgwire::ErrorFields;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The FATAL error a session gets when the gateway ends it for a restart:
/// PostgreSQL's own code for an administrator's shutdown, so clients and
/// poolers that reconnect on it do so.
pub fn restarting() -> ErrorFields {
    ErrorFields::fatal("57P01", "postern: the gateway is restarting; reconnect")
}

/// Where a drain stands; cloned into everything that must know.
#[derive(Clone, Default)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// No new connections or sessions; not ready.
    started: CancellationToken,
    /// The grace period is over: sessions end now.
    ending: CancellationToken,
    /// Sessions relaying now.
    sessions: AtomicUsize,
}

/// Counts one relaying session while it lives.
pub struct LiveSession(Arc<Inner>);

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a drain went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drained {
    /// Sessions still live when the grace period ended, which the gateway
    /// ended itself.
    pub ended: usize,
    /// Whether every connection was over within the bound; when false the
    /// caller cuts the rest.
    pub finished: bool,
}

impl Drain {
    /// Whether the gateway is draining (and so not ready).
    pub fn is_draining(&self) -> bool {
        self.inner.started.is_cancelled()
    }

    /// Completes when the drain starts.
    pub async fn started(&self) {
        self.inner.started.cancelled().await;
    }

    /// Completes when live sessions must end, with the error they end with.
    pub async fn sessions_end(&self) -> ErrorFields {
        self.inner.ending.cancelled().await;
        restarting()
    }

    /// Counts a session as live until the returned guard is dropped.
    pub fn session(&self) -> LiveSession {
        self.inner.sessions.fetch_add(1, Ordering::Relaxed);
        LiveSession(self.inner.clone())
    }

    /// Sessions relaying now.
    pub fn live_sessions(&self) -> usize {
        self.inner.sessions.load(Ordering::Relaxed)
    }

    /// Drains the connections `connections` tracks (closing it): starts
    /// the drain, waits up to `grace` (less when `hurry` completes first)
    /// for them to end, then ends the remaining sessions and waits up to
    /// `ending` for them.
    pub async fn run(
        &self,
        connections: &TaskTracker,
        grace: Duration,
        ending: Duration,
        hurry: impl Future<Output = ()>,
    ) -> Drained {
        self.inner.started.cancel();
        connections.close();
        tracing::info!(
            sessions = self.live_sessions(),
            grace = ?grace,
            "draining: no new connections; live sessions may run until the grace period ends"
        );
        let done = tokio::select! {
            () = connections.wait() => true,
            () = tokio::time::sleep(grace) => false,
            () = hurry => {
                tracing::info!("draining: asked again, ending sessions now");
                false
            }
        };
        if done {
            tracing::info!("drained: every session ended within the grace period");
            return Drained {
                ended: 0,
                finished: true,
            };
        }
        let ended = self.live_sessions();
        tracing::info!(
            sessions = ended,
            "draining: grace period over, ending sessions"
        );
        self.inner.ending.cancel();
        let finished = tokio::time::timeout(ending, connections.wait())
            .await
            .is_ok();
        if finished {
            tracing::info!(sessions = ended, "drained: sessions ended");
        } else {
            tracing::warn!(
                left = connections.len(),
                "drain: connections still open after the bound; cutting them"
            );
        }
        Drained { ended, finished }
    }
}
