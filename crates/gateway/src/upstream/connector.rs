//! How the gateway opens a connection to a database: the seam between the
//! login logic and the network (cloud-sql-proxy's `Dialer`).
//!
//! [`TcpTls`] is the real one: TCP, `SSLRequest`, then TLS verified as the
//! database's `tls` settings say. Tests hand the gateway another
//! [`Connector`], e.g. one that returns one end of a
//! [`tokio::io::duplex`] pipe with a scripted database on the other, and
//! drive a whole session without sockets:
//!
//! ```
//! use std::sync::Arc;
//! use postern_gateway::upstream::{Connector, Dial, DbStream, UpstreamError};
//!
//! struct Pipe;
//! impl Connector for Pipe {
//!     fn connect<'a>(&'a self, _dial: Dial<'a>) -> postern_gateway::upstream::Connecting<'a> {
//!         Box::pin(async {
//!             let (gateway_end, _database_end) = tokio::io::duplex(64 * 1024);
//!             // A real test gives `_database_end` to a scripted database.
//!             Ok(Box::new(gateway_end) as DbStream)
//!         })
//!     }
//! }
//! let connector: Arc<dyn Connector> = Arc::new(Pipe);
//! # let _ = connector;
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use postern_pgwire::frontend;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::UpstreamError;

/// Read buffer under TLS connections. rustls reads at most 4 KiB per call;
/// the buffer underneath turns that into one syscall per 64 KiB of a bulk
/// result.
pub const READ_BUFFER: usize = 64 * 1024;

/// A byte stream to a database, after TLS: what logins, cancels and the
/// relay read and write.
pub trait DbIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> DbIo for T {}

/// A connection to a database, ready for a StartupMessage or a
/// CancelRequest. Boxed: one virtual call per read or write of the relay's
/// 64 KiB buffers costs nothing measurable.
pub type DbStream = Box<dyn DbIo>;

/// What [`Connector::connect`] returns.
pub type Connecting<'a> =
    Pin<Box<dyn Future<Output = Result<DbStream, UpstreamError>> + Send + 'a>>;

/// Everything needed to reach one database.
pub struct Dial<'a> {
    /// Catalog name, for errors.
    pub database: &'a str,
    /// Host of the database's endpoint.
    pub host: &'a str,
    /// Port of the database's endpoint.
    pub port: u16,
    /// Name its TLS certificate must carry.
    pub server_name: &'a ServerName<'static>,
    /// TLS settings: trusted CA, and the gateway's client certificate for
    /// the db user when it logs in with one.
    pub tls: Arc<ClientConfig>,
}

/// Opens connections to databases. One per catalog database, shared by
/// sessions, cancels and provisioning.
pub trait Connector: Send + Sync {
    /// A connection to `dial`'s database, after TLS.
    fn connect<'a>(&'a self, dial: Dial<'a>) -> Connecting<'a>;
}

/// The real connector: TCP, `SSLRequest` (a database that does not answer
/// `S` is refused: there is no plaintext fallback), then TLS.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpTls;

impl Connector for TcpTls {
    fn connect<'a>(&'a self, dial: Dial<'a>) -> Connecting<'a> {
        Box::pin(async move {
            let addr = format!("{}:{}", dial.host, dial.port);
            let mut tcp = TcpStream::connect((dial.host, dial.port))
                .await
                .map_err(|source| UpstreamError::Unreachable {
                    database: dial.database.to_owned(),
                    addr: addr.clone(),
                    source,
                })?;
            tcp.set_nodelay(true)?;
            let mut buf = BytesMut::new();
            frontend::ssl_request(&mut buf);
            tcp.write_all(&buf).await?;
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer).await?;
            if answer[0] != b'S' {
                return Err(UpstreamError::NoTls(dial.database.to_owned()));
            }
            let tls = TlsConnector::from(dial.tls)
                .connect(
                    dial.server_name.clone(),
                    BufReader::with_capacity(READ_BUFFER, tcp),
                )
                .await
                .map_err(|source| UpstreamError::Tls {
                    database: dial.database.to_owned(),
                    source,
                })?;
            Ok(Box::new(tls) as DbStream)
        })
    }
}
