//! Encoders for what a proxy writes to a client, playing the server's part.
//!
//! Formats: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

use bytes::{BufMut, BytesMut};

use crate::ErrorFields;
use crate::writer::{EncodeError, cstr, display_text, tagged, try_tagged};

/// `AuthenticationOk`: the client is authenticated.
pub fn authentication_ok(buf: &mut BytesMut) {
    tagged(b'R', buf, |buf| buf.put_i32(0));
}

/// `ParameterStatus`: reports a run-time parameter such as `server_version`;
/// a name or value with NUL is refused.
pub fn parameter_status(name: &str, value: &str, buf: &mut BytesMut) -> Result<(), EncodeError> {
    try_tagged(b'S', buf, |buf| {
        cstr(name.as_bytes(), buf)?;
        cstr(value.as_bytes(), buf)
    })
}

/// `BackendKeyData`: the key the client will present in a `CancelRequest`.
pub fn backend_key_data(pid: i32, secret: i32, buf: &mut BytesMut) {
    tagged(b'K', buf, |buf| {
        buf.put_i32(pid);
        buf.put_i32(secret);
    });
}

/// `ReadyForQuery` with a transaction status: `b'I'` idle, `b'T'` in a transaction, `b'E'` failed.
pub fn ready_for_query(status: u8, buf: &mut BytesMut) {
    tagged(b'Z', buf, |buf| buf.put_u8(status));
}

/// `ErrorResponse` with the fields `S`, `V`, `C`, `M` and, when set, `D` and `H`.
pub fn error_response(fields: &ErrorFields, buf: &mut BytesMut) {
    tagged(b'E', buf, |buf| error_fields(fields, buf));
}

/// `NoticeResponse`, laid out like [`error_response`].
pub fn notice_response(fields: &ErrorFields, buf: &mut BytesMut) {
    tagged(b'N', buf, |buf| error_fields(fields, buf));
}

/// <https://www.postgresql.org/docs/current/protocol-error-fields.html>
fn error_fields(fields: &ErrorFields, buf: &mut BytesMut) {
    let mut field = |kind: u8, value: &str| {
        buf.put_u8(kind);
        display_text(value, buf);
    };
    // Clients read `S` for display and newer ones `V` for logic; we never
    // localize, so both carry the same text.
    field(b'S', &fields.severity);
    field(b'V', &fields.severity);
    field(b'C', &fields.code);
    field(b'M', &fields.message);
    if let Some(detail) = &fields.detail {
        field(b'D', detail);
    }
    if let Some(hint) = &fields.hint {
        field(b'H', hint);
    }
    buf.put_u8(0);
}
