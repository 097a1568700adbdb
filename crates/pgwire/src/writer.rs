//! Shared encoding helpers: the length is written after the body, as `postgres-protocol` does.

use bytes::{BufMut, BytesMut};

/// Writes a tagged message: tag, length placeholder, body, then the real length.
pub(crate) fn tagged(tag: u8, buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    untagged(buf, body);
}

/// Like [`tagged`] for a body that can be refused: on error nothing is
/// left in `buf`, so a half-written message is never sent.
pub(crate) fn try_tagged(
    tag: u8,
    buf: &mut BytesMut,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    let mut result = Ok(());
    tagged(tag, buf, |buf| result = body(buf));
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// Like [`untagged`] for a body that can be refused; nothing is left on error.
pub(crate) fn try_untagged(
    buf: &mut BytesMut,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    let mut result = Ok(());
    untagged(buf, |buf| result = body(buf));
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// Writes a length-prefixed packet without a tag (startup phase).
///
/// # Panics
/// If the packet exceeds `i32::MAX` bytes. Every caller writes bounded data
/// (PostgreSQL caps messages at 1 GiB), so this would be a bug, not bad input.
pub(crate) fn untagged(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = i32::try_from(buf.len() - start).expect("PostgreSQL message larger than 2 GiB");
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes a NUL-terminated string.
///
/// PostgreSQL strings cannot contain NUL. A value with one is refused, as
/// `postgres-protocol` does, rather than cut: cutting would make the server
/// read a different value from the one the caller checked (`database\0`
/// would arrive as `database`), and the rest could become another field.
pub(crate) fn cstr(s: &[u8], buf: &mut BytesMut) -> Result<(), EncodeError> {
    if s.contains(&0) {
        return Err(EncodeError::Nul);
    }
    buf.put_slice(s);
    buf.put_u8(0);
    Ok(())
}

/// Writes human-readable text (the fields of an ErrorResponse or a
/// NoticeResponse) as a NUL-terminated string. An error report must always
/// reach the client, so a NUL in it is shown as U+FFFD instead of refusing
/// the message; it can still never end the field early.
pub(crate) fn display_text(s: &str, buf: &mut BytesMut) {
    if !s.contains('\0') {
        buf.put_slice(s.as_bytes());
    } else {
        buf.put_slice(s.replace('\0', "\u{fffd}").as_bytes());
    }
    buf.put_u8(0);
}

/// A value the PostgreSQL protocol cannot carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string holds a NUL byte, which would end the field early.
    #[error(
        "a string sent to a PostgreSQL peer contains a NUL byte, which the protocol cannot carry"
    )]
    Nul,
    /// A startup parameter without a name, which would end the list early.
    #[error("a startup parameter has an empty name, which would end the parameter list")]
    EmptyName,
}
