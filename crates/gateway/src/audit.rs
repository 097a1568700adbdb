//! Audit events: written to the store in batches and to the log as JSON lines.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

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
    /// A CancelRequest arrived.
    Cancel {
        /// Postern user who sent it.
        user: String,
        /// Whether it was forwarded to the database.
        forwarded: bool,
    },
}

/// Cheap, cloneable handle that records audit events without blocking.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::UnboundedSender<AuditEvent>,
}

impl Auditor {
    /// Starts the background writer. It drains everything queued before it
    /// exits, which happens when the last handle is dropped.
    pub fn start(store: Arc<dyn Store>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<AuditEvent>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(256);
            while rx.recv_many(&mut batch, 1024).await > 0 {
                let events = std::mem::take(&mut batch);
                let store = store.clone();
                let result = tokio::task::spawn_blocking(move || store.append_audit(&events)).await;
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "audit events could not be stored"),
                    Err(e) => tracing::error!(error = %e, "audit writer failed"),
                }
            }
        });
        (Auditor { tx }, task)
    }

    /// Records an event: logged now as a JSON line, stored shortly after.
    pub fn record(&self, what: AuditKind) {
        let event = AuditEvent {
            time_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            what,
        };
        if tracing::enabled!(target: "audit", tracing::Level::INFO)
            && let Ok(line) = serde_json::to_string(&event)
        {
            tracing::info!(target: "audit", "{line}");
        }
        // The writer only stops after every handle is gone, so this cannot fail
        // while `self` exists.
        let _ = self.tx.send(event);
    }
}
