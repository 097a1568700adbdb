//! What can be wrong with bytes received from a PostgreSQL peer.

use crate::MAX_STARTUP_PACKET;

/// A protocol violation found while parsing bytes from a peer.
///
/// The texts are written to be shown to a user (for example in an
/// `ErrorResponse`); none of them echo the offending bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A startup packet declared a length above [`MAX_STARTUP_PACKET`].
    #[error("startup packet of {0} bytes exceeds the limit of {MAX_STARTUP_PACKET} bytes")]
    StartupTooLarge(usize),
    /// A startup packet declared a length too small to hold its length and protocol code.
    #[error("startup packet length {0} is too short: at least 8 bytes are required")]
    StartupTooShort(usize),
    /// A length field was negative.
    #[error("invalid negative message length {0}")]
    NegativeLength(i32),
    /// A regular message declared a length smaller than the length field itself.
    #[error("message {} declares length {len}, less than the 4 bytes of its length field", show_tag(*tag))]
    MessageTooShort {
        /// Message type byte.
        tag: u8,
        /// Declared length.
        len: i32,
    },
    /// A regular message body is larger than the caller's limit.
    #[error("message {} of {len} bytes exceeds the limit of {max} bytes", show_tag(*tag))]
    MessageTooLarge {
        /// Message type byte.
        tag: u8,
        /// Declared body length.
        len: usize,
        /// The limit that was exceeded.
        max: usize,
    },
    /// The client asked for a protocol version other than 3.x.
    #[error(
        "unsupported frontend protocol {major}.{minor}: only protocol 3.0 is supported \
         (the client is too old or is not a PostgreSQL client)"
    )]
    UnsupportedProtocolVersion {
        /// Requested major version.
        major: u16,
        /// Requested minor version.
        minor: u16,
    },
    /// The bytes do not follow the message layout.
    #[error("malformed protocol message: {0}")]
    Malformed(&'static str),
}

/// A type byte as `'Q'`, or in hex when it is not printable (garbage is often not).
fn show_tag(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", char::from(tag))
    } else {
        format!("0x{tag:02x}")
    }
}
