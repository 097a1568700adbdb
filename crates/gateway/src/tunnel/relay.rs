//! The established session: bytes both ways, statements audited on the way
//! in, timed against the role limits both ways.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use postern_pgwire::{Boundaries, ErrorFields, FrontendEvent, FrontendScanner, backend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::statement_clock::{Overrun, StatementClock, StatementLimits};

/// Relay buffer per direction: large enough that a COPY moves in few syscalls.
const BUF: usize = 64 * 1024;
/// Statement text kept for the audit log; a longer statement is recorded
/// with its whole length and SHA-256.
const AUDIT_QUERY_CAP: usize = 4096;
/// How long the database may take to finish the message it is sending when
/// the gateway ends a session; the final error can only follow a whole one.
const FINISH_MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Byte counts of a finished relay.
#[derive(Debug, Default, Clone)]
pub struct Relayed {
    /// Bytes from the client to the database.
    pub bytes_in: u64,
    /// Bytes from the database to the client.
    pub bytes_out: u64,
    /// The error the gateway ended the session with, when `stop` fired.
    pub stopped: Option<ErrorFields>,
}

/// Relays until either side closes, or until `stop` completes: then the
/// client gets its error (after the message in progress, never inside one)
/// and both connections close. Client → database traffic is scanned (not
/// copied); `on_event` receives what the scanner finds (statements,
/// function calls, the client's Terminate) before the bytes go on.
///
/// Statements are timed against `limits`: one running too long gets a
/// warning to the client (at a message boundary), then `cancel_statement`
/// (which cancels it upstream); a session idle too long inside a
/// transaction is ended like a `stop`.
pub async fn relay<C, D, Cancel>(
    client: C,
    database: D,
    max_message: usize,
    mut on_event: impl FnMut(FrontendEvent) + Send,
    limits: StatementLimits,
    mut cancel_statement: impl FnMut(Overrun) -> Cancel,
    stop: impl Future<Output = ErrorFields>,
) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    D: AsyncRead + AsyncWrite + Unpin,
    Cancel: Future<Output = ()>,
{
    let clock = StatementClock::new(limits);
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
                return Err(invalid_data(e));
            }
            events.drain(..).for_each(&mut on_event);
            clock.client(scanner.take_requests());
            db_w.write_all(&buf[..n]).await?;
            db_w.flush().await?;
            bytes_in.fetch_add(n as u64, Relaxed);
        }
        db_w.shutdown().await
    };
    let outbound = async {
        let mut buf = vec![0u8; BUF];
        let mut framing = Boundaries::default();
        let mut stop = std::pin::pin!(stop);
        let mut overrun = std::pin::pin!(clock.overrun());
        // A statement over its limit whose warning waits for the end of the
        // message the database is sending.
        let mut to_cancel: Option<Overrun> = None;
        loop {
            // The limits come first, so a busy stream cannot hide them; the
            // stop signal is only looked at when the database has nothing to
            // send.
            let n = tokio::select! {
                biased;
                passed = &mut overrun => {
                    overrun.set(clock.overrun());
                    if let Overrun::IdleInTransaction(_) = passed {
                        let fields = end_session(&mut db_r, &mut client_w, &mut framing, &mut buf, passed.fields()).await;
                        return Ok(Some(fields));
                    }
                    if framing.at_boundary() {
                        warn_and_cancel(&mut client_w, passed, &mut cancel_statement).await?;
                    } else {
                        to_cancel = Some(passed);
                    }
                    continue;
                }
                n = db_r.read(&mut buf) => n?,
                fields = &mut stop => {
                    let fields = end_session(&mut db_r, &mut client_w, &mut framing, &mut buf, fields).await;
                    return Ok(Some(fields));
                }
            };
            if n == 0 {
                break;
            }
            let mut chunk = &buf[..n];
            if let Some(passed) = to_cancel {
                let end = framing.until_boundary(chunk).map_err(invalid_data)?;
                if let Some(end) = end {
                    client_w.write_all(&chunk[..end]).await?;
                    warn_and_cancel(&mut client_w, passed, &mut cancel_statement).await?;
                    to_cancel = None;
                    chunk = &chunk[end..];
                    framing.advance(chunk).map_err(invalid_data)?;
                }
            } else {
                framing.advance(chunk).map_err(invalid_data)?;
            }
            if let Some(ready) = framing.take_ready() {
                clock.server(ready);
            }
            client_w.write_all(chunk).await?;
            client_w.flush().await?;
            bytes_out.fetch_add(n as u64, Relaxed);
        }
        client_w.shutdown().await.map(|()| None)
    };
    // Whichever side finishes first ends the session: after a client's
    // Terminate nothing more is wanted, and after the database closes nothing
    // more can be served.
    let stopped = tokio::select! {
        r = inbound => {
            if let Err(e) = r { tracing::debug!(error = %e, "client side of relay ended") }
            None
        }
        r = outbound => r.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "database side of relay ended");
            None
        }),
    };
    Relayed {
        bytes_in: bytes_in.into_inner(),
        bytes_out: bytes_out.into_inner(),
        stopped,
    }
}

fn invalid_data(e: postern_pgwire::ProtocolError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// Warns the client that its statement is over the limit, then cancels it:
/// the warning arrives before the cancellation's error.
async fn warn_and_cancel<W, Cancel>(
    client: &mut W,
    passed: Overrun,
    cancel: &mut impl FnMut(Overrun) -> Cancel,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    Cancel: Future<Output = ()>,
{
    let mut out = BytesMut::new();
    backend::notice_response(&passed.fields(), &mut out);
    client.write_all(&out).await?;
    client.flush().await?;
    cancel(passed).await;
    Ok(())
}

/// Relays the rest of the message the database is in the middle of (for
/// at most [`FINISH_MESSAGE_TIMEOUT`]), then sends the client `fields` and
/// closes its side. A database that does not finish in time, or a client
/// that is gone, gets a plain close: an error inside a message would be
/// garbage to the client.
async fn end_session<R, W>(
    db: &mut R,
    client: &mut W,
    framing: &mut Boundaries,
    buf: &mut [u8],
    fields: ErrorFields,
) -> ErrorFields
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let at_boundary = framing.at_boundary();
    let finish = async {
        loop {
            let n = db.read(buf).await?;
            let end = framing.until_boundary(&buf[..n]).map_err(invalid_data)?;
            if n == 0 && end.is_none() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            client.write_all(&buf[..end.unwrap_or(n)]).await?;
            if end.is_some() {
                return Ok::<_, std::io::Error>(());
            }
        }
    };
    let finished = if at_boundary {
        Ok(Ok(()))
    } else {
        tokio::time::timeout(FINISH_MESSAGE_TIMEOUT, finish).await
    };
    if let Ok(Ok(())) = finished {
        let mut out = BytesMut::new();
        backend::error_response(&fields, &mut out);
        let _ = client.write_all(&out).await;
    }
    let _ = client.shutdown().await;
    fields
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
            relay(
                client,
                database,
                1 << 20,
                |event| events.push(event),
                StatementLimits::default(),
                |_| async {},
                std::future::pending()
            ),
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
