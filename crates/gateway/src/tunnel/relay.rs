//! The established session: bytes both ways, statements audited on the way in.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use postern_pgwire::{FrontendEvent, FrontendScanner};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Relay buffer per direction: large enough that a COPY moves in few syscalls.
const BUF: usize = 64 * 1024;
/// Statement text kept for the audit log; a longer statement is recorded
/// with its whole length and SHA-256.
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
/// copied); `on_event` receives what the scanner finds (statements, function
/// calls, the client's Terminate) before the bytes go on.
pub async fn relay<C, D>(
    client: C,
    database: D,
    max_message: usize,
    mut on_event: impl FnMut(FrontendEvent) + Send,
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
            events.drain(..).for_each(&mut on_event);
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

#[cfg(test)]
mod tests {
    use postern_pgwire::{FunctionCall, QueryText};

    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn client_messages_are_reported_and_forwarded_unchanged() {
        let statement = format!("SELECT '{}'", "x".repeat(3 * AUDIT_QUERY_CAP));
        let mut call = 2147u32.to_be_bytes().to_vec();
        call.extend_from_slice(b"\0\0\0\x01\0\0\0\x05hello\0\0");
        let stream = [
            message(b'Q', format!("{statement}\0").as_bytes()),
            message(b'F', &call),
            message(b'X', b""),
        ]
        .concat();

        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (database, mut database_peer) = tokio::io::duplex(1024);
        let mut events = Vec::new();
        let mut forwarded = Vec::new();
        let (relayed, ..) = tokio::join!(
            relay(client, database, 1 << 20, |event| events.push(event)),
            async {
                client_peer.write_all(&stream).await.unwrap();
                client_peer.shutdown().await.unwrap();
            },
            async { database_peer.read_to_end(&mut forwarded).await.unwrap() },
        );

        assert_eq!(forwarded, stream);
        assert_eq!(relayed.bytes_in, stream.len() as u64);
        let [
            FrontendEvent::Query(QueryText {
                text,
                cut: Some(cut),
            }),
            call,
            terminate,
        ] = &events[..]
        else {
            panic!("unexpected events: {events:?}");
        };
        assert_eq!(text.len(), AUDIT_QUERY_CAP);
        assert_eq!(cut.len, statement.len());
        assert_eq!(
            call,
            &FrontendEvent::FunctionCall(FunctionCall {
                function: 2147,
                args: 1,
                arg_sizes: vec![5],
            })
        );
        assert_eq!(terminate, &FrontendEvent::Terminate);
    }
}
