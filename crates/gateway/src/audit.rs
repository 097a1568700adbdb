//! Audit events: written to the store in batches and to the log as JSON lines.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::store::Store;

/// One audited action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
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
    },
    /// A statement sent through a session (Query or Parse).
    Query {
        /// Session id.
        session: u64,
        /// Postern user.
        user: String,
        /// Statement text, possibly truncated.
        query: String,
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
    /// A CancelRequest arrived.
    Cancel {
        /// Postern user who sent it.
        user: String,
        /// Whether it was forwarded to the database.
        forwarded: bool,
    },
}

/// How long the writer gathers events before one store transaction.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Most events in one store transaction.
const BATCH_MAX: usize = 4096;

/// Cheap, cloneable handle that records audit events without blocking.
#[derive(Clone)]
pub struct Auditor {
    tx: std_mpsc::Sender<String>,
}

impl Auditor {
    /// Starts the writer thread. It stores everything queued before it exits,
    /// which happens when the last handle is dropped.
    pub fn start(store: Arc<dyn Store>) -> (Self, std::thread::JoinHandle<()>) {
        let (tx, rx) = std_mpsc::channel::<String>();
        let writer = std::thread::Builder::new()
            .name("postern-audit".into())
            .spawn(move || write_batches(store.as_ref(), &rx))
            .expect("the audit writer thread starts");
        (Auditor { tx }, writer)
    }

    /// Records an event: serialized once, logged now as a JSON line, stored
    /// within [`BATCH_WINDOW`]. Statements are audited on the relay's hot
    /// path, so this only formats and queues.
    pub fn record(&self, what: AuditKind) {
        let event = AuditEvent {
            time_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            what,
        };
        let line = serde_json::to_string(&event).expect("audit events serialize");
        tracing::info!(target: "audit", "{line}");
        // The writer only stops after every handle is gone, so this cannot fail
        // while `self` exists.
        let _ = self.tx.send(line);
    }
}

/// Gathers events for a short window (or up to [`BATCH_MAX`]) and stores
/// each batch in one transaction, so a busy gateway commits a few times a
/// second instead of once per statement.
fn write_batches(store: &dyn Store, rx: &std_mpsc::Receiver<String>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let deadline = Instant::now() + BATCH_WINDOW;
        let mut closed = false;
        while batch.len() < BATCH_MAX {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => batch.push(line),
                Err(std_mpsc::RecvTimeoutError::Timeout) => break,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if let Err(e) = store.append_audit(&batch) {
            tracing::error!(error = %e, events = batch.len(), "audit events could not be stored");
        }
        if closed {
            return;
        }
    }
}
