//! PostgreSQL wire protocol framing for a proxy.
//!
//! This crate owns no sockets: every parser works on a byte buffer and
//! answers "need more bytes" (`Ok(None)`) until a frame is complete, and every
//! encoder appends to a [`bytes::BytesMut`]. Lengths read from the peer are
//! bounded before anything is buffered, so a hostile peer cannot make the
//! caller allocate more than the configured limits.
//!
//! Message formats follow
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

pub mod auth;
pub mod backend;
mod backend_message;
mod boundaries;
mod cancel_key;
mod error;
pub mod frontend;
mod message;
mod reader;
mod scanner;
mod startup;
mod writer;

pub use backend_message::{AuthRequest, BackendMessage, ErrorFields};
pub use boundaries::{Boundaries, Ready};
pub use cancel_key::CancelKey;
pub use error::ProtocolError;
pub use message::{Message, parse_message};
pub use scanner::{
    Cut, FUNCTION_ARGS_KEPT, FrontendEvent, FrontendScanner, FunctionCall, QueryText, Requests,
};
pub use startup::{StartupPacket, parse_startup};
pub use writer::EncodeError;

/// Hard limit on a startup-phase packet, length field included.
///
/// PostgreSQL itself refuses startup packets over 10 000 bytes
/// (`MAX_STARTUP_PACKET_LENGTH` in `pqcomm.h`), so no legitimate client sends more.
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// Default bound on the body of a regular message; callers pass their own to [`parse_message`].
///
/// 1 GiB is PostgreSQL's own ceiling (`PQ_LARGE_MESSAGE_LIMIT` is just under it).
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 30;
