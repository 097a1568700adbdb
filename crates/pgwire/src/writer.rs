//! Shared encoding helpers: the length is written after the body, as `postgres-protocol` does.

use bytes::{BufMut, BytesMut};

/// Writes a tagged message: tag, length placeholder, body, then the real length.
pub(crate) fn tagged(tag: u8, buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    untagged(buf, body);
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
/// PostgreSQL strings cannot contain NUL, so anything from the first NUL on is
/// dropped: a value can then never end a field early and smuggle in another.
pub(crate) fn cstr(s: &[u8], buf: &mut BytesMut) {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    buf.put_slice(&s[..end]);
    buf.put_u8(0);
}
