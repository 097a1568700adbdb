//! The established session: bytes both ways, statements audited on the way in.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use postern_pgwire::{FrontendEvent, FrontendScanner};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Relay buffer per direction: large enough that a COPY moves in few syscalls.
const BUF: usize = 64 * 1024;
/// Statement text kept for the audit log.
const AUDIT_QUERY_CAP: usize = 4096;

/// Byte counts of a finished relay.
#[derive(Debug, Default, Clone, Copy)]
pub struct Relayed {
    /// Bytes from the client to the database.
    pub bytes_in: u64,
    /// Bytes from the database to the client.
    pub bytes_out: u64,
}

/// Relays until either side closes. Client → database traffic is scanned (not
/// copied) for Query/Parse messages, which `on_statement` receives.
pub async fn relay<C, D>(
    client: C,
    database: D,
    max_message: usize,
    mut on_statement: impl FnMut(String) + Send,
) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    D: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut db_r, mut db_w) = tokio::io::split(database);
    // Atomics so either direction's count survives the other being dropped.
    let bytes_in = AtomicU64::new(0);
    let bytes_out = AtomicU64::new(0);

    let inbound = async {
        let mut scanner = FrontendScanner::new(max_message, AUDIT_QUERY_CAP);
        let mut events = Vec::new();
        let mut buf = vec![0u8; BUF];
        loop {
            let n = client_r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            if let Err(e) = scanner.feed(&buf[..n], &mut events) {
                // The stream can no longer be followed; stop rather than
                // forward bytes the audit cannot see.
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
            }
            for event in events.drain(..) {
                match event {
                    FrontendEvent::Query(q) | FrontendEvent::Parse { query: q, .. } => {
                        on_statement(q)
                    }
                    FrontendEvent::Terminate => {}
                }
            }
            db_w.write_all(&buf[..n]).await?;
            db_w.flush().await?;
            bytes_in.fetch_add(n as u64, Relaxed);
        }
        db_w.shutdown().await
    };
    let outbound = async {
        let mut buf = vec![0u8; BUF];
        loop {
            let n = db_r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            client_w.write_all(&buf[..n]).await?;
            client_w.flush().await?;
            bytes_out.fetch_add(n as u64, Relaxed);
        }
        client_w.shutdown().await
    };
    // Whichever side finishes first ends the session: after a client's
    // Terminate nothing more is wanted, and after the database closes nothing
    // more can be served.
    tokio::select! {
        r = inbound => if let Err(e) = r { tracing::debug!(error = %e, "client side of relay ended") },
        r = outbound => if let Err(e) = r { tracing::debug!(error = %e, "database side of relay ended") },
    }
    Relayed {
        bytes_in: bytes_in.into_inner(),
        bytes_out: bytes_out.into_inner(),
    }
}
