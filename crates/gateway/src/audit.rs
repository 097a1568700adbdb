//! Audit events: written to the store in batches and to the log as JSON lines.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use postern_pgwire::{FrontendEvent, QueryText};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::store::{AuditLine, Store};

/// One audited action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The gateway replica that recorded it; absent for administration
    /// commands (and events of gateways before replicas had names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub what: AuditKind,
}

/// The kinds of audited actions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditKind {
    /// A login attempt.
    Login {
        /// Claimed username.
        user: String,
        /// `local` or a connector name.
        method: String,
        /// Whether a certificate was issued.
        success: bool,
    },
    /// A tunnel session was authorized and connected.
    SessionStart {
        /// Gateway-unique session id.
        session: u64,
        /// Postern user.
        user: String,
        /// Catalog database.
        database: String,
        /// Database user.
        db_user: String,
        /// Database name.
        db_name: String,
    },
    /// A tunnel session was refused.
    SessionRejected {
        /// Postern user.
        user: String,
        /// Catalog database.
        database: String,
        /// The user-facing reason.
        reason: String,
    },
    /// A tunnel session ended.
    SessionEnd {
        /// Session id.
        session: u64,
        /// Postern user.
        user: String,
        /// Bytes from the client.
        bytes_in: u64,
        /// Bytes to the client.
        bytes_out: u64,
        /// Why the gateway ended it (a lock, the certificate's expiry, a
        /// drain); absent when the client or the database closed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The gateway cancelled a statement that ran longer than the caller's
    /// roles allow.
    StatementCancelled {
        /// Session id.
        session: u64,
        /// Postern user.
        user: String,
        /// The role option that set the limit (`max_statement_duration`).
        rule: String,
        /// The limit, as role files write it (e.g. `10m`).
        limit: String,
    },
    /// A statement sent through a session (Query or Parse).
    Query {
        /// Session id.
        session: u64,
        /// Postern user.
        user: String,
        /// Statement text, cut when it is longer than the relay keeps.
        query: String,
        /// Length in bytes of the whole statement; only when `query` was cut.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        query_len: Option<u64>,
        /// SHA-256 (hex) of the whole statement, to match it against the
        /// application's own; only when `query` was cut.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        query_sha256: Option<String>,
    },
    /// A function called through the fast-path interface (a `FunctionCall`
    /// message, e.g. libpq's large-object calls), which runs without a statement.
    FunctionCall {
        /// Session id.
        session: u64,
        /// Postern user.
        user: String,
        /// Object ID of the function (`pg_proc.oid`).
        function: u32,
        /// Number of arguments.
        args: u16,
        /// Size in bytes of each argument (-1 for NULL), never the values.
        arg_sizes: Vec<i32>,
    },
    /// A database user was created or re-enabled for a session
    /// (automatic provisioning), with exactly these grants.
    UserProvisioned {
        /// Postern user, also the database user.
        user: String,
        /// Catalog database.
        database: String,
        /// Database roles the user holds now.
        roles: Vec<String>,
        /// Table privileges the user holds now (`SELECT ON schema.table`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        permissions: Vec<String>,
    },
    /// The last session of a provisioned user ended and the user was
    /// disabled or removed.
    UserDeactivated {
        /// Postern user, also the database user.
        user: String,
        /// Catalog database.
        database: String,
        /// `locked` (roles revoked, NOLOGIN), `dropped`,
        /// `kept_with_dependents` (objects depend on the user, so it was
        /// locked instead of dropped) or `failed` (see the gateway log).
        action: String,
    },
    /// An administrator locked a user.
    LockAdded {
        /// The lock's id.
        id: String,
        /// The locked Postern user.
        user: String,
        /// The administrator's message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// When it stops applying (milliseconds since the Unix epoch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_ms: Option<i64>,
    },
    /// An administrator removed a lock.
    LockRemoved {
        /// The lock's id.
        id: String,
    },
    /// A CancelRequest arrived.
    Cancel {
        /// Postern user who sent it.
        user: String,
        /// Whether it was forwarded to the database.
        forwarded: bool,
    },
    /// The operator reloaded the roles and databases (SIGHUP).
    PolicyReloaded {
        /// Roles defined now.
        roles: usize,
        /// Databases in the catalog now.
        databases: usize,
    },
}

impl AuditEvent {
    /// The event, happening now, recorded by `replica` (`None`: by an
    /// administration command).
    pub fn now(replica: Option<String>, what: AuditKind) -> Self {
        AuditEvent {
            time_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            replica,
            what,
        }
    }

    /// The JSON line stored and logged, with its time.
    fn to_line(&self) -> AuditLine {
        AuditLine {
            time_ms: self.time_ms,
            json: serde_json::to_string(self).expect("audit events serialize"),
        }
    }
}

/// Stores and logs one event at once, for the administration commands,
/// which run outside the gateway process and its [`Auditor`].
pub fn record_now(store: &dyn Store, what: AuditKind) -> Result<(), crate::store::StoreError> {
    let line = AuditEvent::now(None, what).to_line();
    tracing::info!(target: "audit", "{}", line.json);
    store.append_audit(&[line])
}

impl AuditKind {
    /// The event to record for what a session's client sent, if the audit
    /// records it (statements and function calls; not `Terminate`).
    pub fn from_client(session: u64, user: &str, event: FrontendEvent) -> Option<Self> {
        let user = user.to_owned();
        Some(match event {
            FrontendEvent::Query(query) | FrontendEvent::Parse { query, .. } => {
                let QueryText { text, cut } = query;
                AuditKind::Query {
                    session,
                    user,
                    query: text,
                    query_len: cut.as_ref().map(|cut| cut.len as u64),
                    query_sha256: cut.map(|cut| hex::encode(cut.sha256)),
                }
            }
            FrontendEvent::FunctionCall(call) => AuditKind::FunctionCall {
                session,
                user,
                function: call.function,
                args: call.args,
                arg_sizes: call.arg_sizes,
            },
            FrontendEvent::Terminate => return None,
        })
    }
}

/// How long the writer gathers events before one store transaction.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Most events in one store transaction; a fuller queue wakes the writer early.
const BATCH_MAX: usize = 4096;

/// Events waiting for the writer thread.
#[derive(Default)]
struct Queue {
    lines: Vec<AuditLine>,
    /// Events ever queued.
    queued: u64,
    /// The writer sleeps until the next event (it found the queue empty).
    writer_idle: bool,
    /// Every handle is gone: store what is left and stop.
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Events the writer is done with (stored, or logged as not storable).
    written: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves only a Vec behind: keep going.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes the queue when the last [`Auditor`] is dropped.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake.notify_one();
    }
}

/// Cheap, cloneable handle that records audit events without blocking.
#[derive(Clone)]
pub struct Auditor {
    shared: Arc<Closer>,
    /// The replica's name, in every event.
    replica: Arc<str>,
}

impl Auditor {
    /// Starts the writer thread for the events of `replica`. It stores
    /// everything queued before it exits, which happens when the last handle
    /// is dropped.
    pub fn start(store: Arc<dyn Store>, replica: &str) -> (Self, std::thread::JoinHandle<()>) {
        let shared = Arc::new(Shared::default());
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("postern-audit".into())
                .spawn(move || write_batches(store.as_ref(), &shared))
                .expect("the audit writer thread starts")
        };
        let shared = Arc::new(Closer(shared));
        let replica = replica.into();
        (Auditor { shared, replica }, writer)
    }

    /// Records an event: serialized once here, then logged as a JSON line
    /// and stored by the writer within [`BATCH_WINDOW`]. Statements are
    /// audited on the relay's hot path, so this only formats and queues, and
    /// wakes the writer only for the first event after a quiet spell: a
    /// wake-up per statement (a futex call and a context switch) cost more
    /// than the relay itself.
    pub fn record(&self, what: AuditKind) {
        let line = AuditEvent::now(Some(self.replica.to_string()), what).to_line();
        let shared = &self.shared.0;
        let mut queue = shared.lock();
        queue.lines.push(line);
        queue.queued += 1;
        let wake = std::mem::take(&mut queue.writer_idle) || queue.lines.len() >= BATCH_MAX;
        drop(queue);
        if wake {
            shared.wake.notify_one();
        }
    }

    /// Waits until the writer is done with every event recorded so far, or
    /// `within` has passed; false then. Before a process exits, so that
    /// what it recorded last is in the store.
    pub async fn flush(&self, within: Duration) -> bool {
        let shared = &self.shared.0;
        let target = shared.lock().queued;
        let mut written = shared.written.subscribe();
        tokio::time::timeout(within, written.wait_for(|n| *n >= target))
            .await
            .is_ok()
    }
}

/// How often retention deletes old events.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// The lease under which one replica at a time deletes old events.
const RETENTION_LEASE: &str = "audit-retention";

/// Deletes the events older than `retention` from the store now and then
/// every [`RETENTION_EVERY`] until `stop`: one replica at a time, under a
/// lease, so replicas sharing the store do not all run the same delete.
pub async fn retention(
    store: Arc<dyn Store>,
    retention: Duration,
    replica: String,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut every = tokio::time::interval(RETENTION_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let (store, replica) = (store.clone(), replica.clone());
        let deleted = tokio::task::spawn_blocking(move || {
            // Held for less than the period, so a replica that dies while
            // deleting leaves the next turn to another.
            if !store.try_lease(RETENTION_LEASE, &replica, RETENTION_EVERY / 2)? {
                return Ok(None);
            }
            let cutoff = SystemTime::now()
                .checked_sub(retention)
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            store.delete_audit_before(cutoff).map(Some)
        })
        .await;
        match deleted {
            Ok(Ok(Some(deleted))) if deleted > 0 => {
                tracing::info!(deleted, "audit events past their retention deleted");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "old audit events could not be deleted"),
            Err(e) => tracing::warn!(error = %e, "the audit retention task failed"),
        }
    }
}

/// Waits for events, gathers them for a short window (or up to
/// [`BATCH_MAX`]), then logs them and stores them in one transaction, so a
/// busy gateway commits a few times a second instead of once per statement.
fn write_batches(store: &dyn Store, shared: &Shared) {
    loop {
        let (batch, closed) = {
            let mut queue = shared.lock();
            while queue.lines.is_empty() && !queue.closed {
                queue.writer_idle = true;
                queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
            let deadline = Instant::now() + BATCH_WINDOW;
            while queue.lines.len() < BATCH_MAX && !queue.closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                queue = shared
                    .wake
                    .wait_timeout(queue, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            (std::mem::take(&mut queue.lines), queue.closed)
        };
        for line in &batch {
            tracing::info!(target: "audit", "{}", line.json);
        }
        if !batch.is_empty()
            && let Err(e) = store.append_audit(&batch)
        {
            tracing::error!(error = %e, events = batch.len(), "audit events could not be stored");
        }
        shared.written.send_modify(|n| *n += batch.len() as u64);
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use postern_pgwire::{Cut, FunctionCall};

    use super::*;
    use crate::store::SqliteStore;

    fn query(n: usize) -> AuditKind {
        AuditKind::Query {
            session: 1,
            user: "alice".into(),
            query: format!("select {n}"),
            query_len: None,
            query_sha256: None,
        }
    }

    fn json(event: FrontendEvent) -> serde_json::Value {
        serde_json::to_value(AuditKind::from_client(7, "alice", event).unwrap()).unwrap()
    }

    #[test]
    fn a_cut_statement_is_recorded_with_its_whole_length_and_digest() {
        let cut = Cut {
            len: 100_000,
            sha256: [0xab; 32],
        };
        let event = FrontendEvent::Parse {
            statement: "s1".into(),
            query: QueryText {
                text: "SELECT 'xx".into(),
                cut: Some(cut),
            },
        };
        assert_eq!(
            json(event),
            serde_json::json!({
                "event": "query",
                "session": 7,
                "user": "alice",
                "query": "SELECT 'xx",
                "query_len": 100_000,
                "query_sha256": "ab".repeat(32),
            })
        );

        // A statement kept whole has nothing more to say.
        let whole = FrontendEvent::Query(QueryText {
            text: "SELECT 1".into(),
            cut: None,
        });
        assert_eq!(
            json(whole),
            serde_json::json!({"event": "query", "session": 7, "user": "alice", "query": "SELECT 1"})
        );
    }

    #[test]
    fn a_function_call_is_recorded_without_its_arguments() {
        let call = FrontendEvent::FunctionCall(FunctionCall {
            function: 3252,
            args: 3,
            arg_sizes: vec![4, -1, 3500],
        });
        assert_eq!(
            json(call),
            serde_json::json!({
                "event": "function_call",
                "session": 7,
                "user": "alice",
                "function": 3252,
                "args": 3,
                "arg_sizes": [4, -1, 3500],
            })
        );
        assert_eq!(
            AuditKind::from_client(7, "alice", FrontendEvent::Terminate),
            None
        );
    }

    #[test]
    fn events_are_stored_after_a_quiet_spell_and_all_are_kept_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let (auditor, writer) = Auditor::start(store.clone(), "test");

        // The first event after the writer went idle wakes it.
        auditor.record(query(0));
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.recent_audit(10).unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the event was never stored");
            std::thread::sleep(Duration::from_millis(10));
        }

        // More than one batch's worth, then the last handle goes: nothing
        // queued may be lost.
        let copy = auditor.clone();
        for n in 1..=BATCH_MAX + 10 {
            copy.record(query(n));
        }
        drop(copy);
        drop(auditor);
        writer.join().unwrap();
        let stored = store.recent_audit(2 * BATCH_MAX).unwrap();
        assert_eq!(stored.len(), BATCH_MAX + 11);
    }

    #[tokio::test]
    async fn a_flush_returns_once_everything_recorded_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let (auditor, _writer) = Auditor::start(store.clone(), "a");
        assert!(
            auditor.flush(Duration::from_secs(5)).await,
            "nothing to wait for"
        );
        for n in 0..BATCH_MAX + 10 {
            auditor.record(query(n));
        }
        // While other handles live on, as when a gateway exits after a drain.
        assert!(auditor.flush(Duration::from_secs(5)).await);
        assert_eq!(
            store.recent_audit(2 * BATCH_MAX).unwrap().len(),
            BATCH_MAX + 10
        );
    }
}
