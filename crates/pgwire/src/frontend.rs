//! Encoders for what a proxy writes to a server, playing the client's part.
//!
//! Formats: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

use bytes::{BufMut, BytesMut};

use crate::startup::{CANCEL_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE};
use crate::writer::{EncodeError, cstr, tagged, try_tagged, try_untagged, untagged};

/// `SSLRequest`: asks the server to switch to TLS.
pub fn ssl_request(buf: &mut BytesMut) {
    untagged(buf, |buf| buf.put_i32(SSL_REQUEST_CODE));
}

/// `CancelRequest` for the session identified by `BackendKeyData`.
pub fn cancel_request(pid: i32, secret: i32, buf: &mut BytesMut) {
    untagged(buf, |buf| {
        buf.put_i32(CANCEL_REQUEST_CODE);
        buf.put_i32(pid);
        buf.put_i32(secret);
    });
}

/// `StartupMessage` for protocol 3.0 with the given parameters, in order.
///
/// A name or value containing NUL is refused and nothing is written: the
/// server must read exactly the parameters the caller passed.
pub fn startup_message<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    try_untagged(buf, |buf| {
        buf.put_i32(PROTOCOL_3_0);
        for (name, value) in params {
            // An empty name would end the list: what follows would be lost.
            if name.is_empty() {
                return Err(EncodeError::EmptyName);
            }
            cstr(name.as_bytes(), buf)?;
            cstr(value.as_bytes(), buf)?;
        }
        buf.put_u8(0);
        Ok(())
    })
}

/// `PasswordMessage` carrying a cleartext password or an MD5 hash; a
/// password containing NUL is refused.
pub fn password_message(password: &[u8], buf: &mut BytesMut) -> Result<(), EncodeError> {
    try_tagged(b'p', buf, |buf| cstr(password, buf))
}

/// `SASLInitialResponse`: the chosen mechanism and the client-first message.
pub fn sasl_initial_response(
    mechanism: &str,
    data: &[u8],
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    try_tagged(b'p', buf, |buf| {
        cstr(mechanism.as_bytes(), buf)?;
        // Bounded by the caller's SCRAM message, far below i32::MAX.
        buf.put_i32(i32::try_from(data.len()).expect("SASL message larger than 2 GiB"));
        buf.put_slice(data);
        Ok(())
    })
}

/// `SASLResponse`: the client-final message.
pub fn sasl_response(data: &[u8], buf: &mut BytesMut) {
    tagged(b'p', buf, |buf| buf.put_slice(data));
}

/// `Terminate`: the client is closing the session.
pub fn terminate(buf: &mut BytesMut) {
    tagged(b'X', buf, |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_MAX_MESSAGE, Message, parse_message};

    fn only_message(buf: &[u8]) -> Message<'_> {
        let (msg, consumed) = parse_message(buf, DEFAULT_MAX_MESSAGE).unwrap().unwrap();
        assert_eq!(consumed, buf.len());
        msg
    }

    #[test]
    fn password_message_layout() {
        let mut buf = BytesMut::new();
        password_message(b"md5abc", &mut buf).unwrap();
        assert_eq!(&buf[..], b"p\0\0\0\x0bmd5abc\0");
        assert_eq!(only_message(&buf).body, b"md5abc\0");
    }

    #[test]
    fn sasl_messages_layout() {
        let mut buf = BytesMut::new();
        sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=x", &mut buf).unwrap();
        assert_eq!(&buf[..], b"p\0\0\0\x1fSCRAM-SHA-256\0\0\0\0\x09n,,n=,r=x");
        only_message(&buf);

        buf.clear();
        sasl_response(b"c=biws", &mut buf);
        assert_eq!(&buf[..], b"p\0\0\0\x0ac=biws");
    }

    #[test]
    fn terminate_layout() {
        let mut buf = BytesMut::new();
        terminate(&mut buf);
        assert_eq!(&buf[..], b"X\0\0\0\x04");
    }

    #[test]
    fn nul_is_refused_not_cut_and_leaves_nothing_behind() {
        let mut buf = BytesMut::from(&b"prefix"[..]);
        for params in [
            [("database\0", "postgres")],
            [("database", "shop\0postgres")],
            [("user\0x", "postgres")],
        ] {
            assert_eq!(startup_message(params, &mut buf), Err(EncodeError::Nul));
            assert_eq!(&buf[..], b"prefix", "{params:?}");
        }
        assert_eq!(
            startup_message([("", "x")], &mut buf),
            Err(EncodeError::EmptyName)
        );
        assert_eq!(password_message(b"pw\0", &mut buf), Err(EncodeError::Nul));
        assert_eq!(
            sasl_initial_response("SCRAM\0", b"", &mut buf),
            Err(EncodeError::Nul)
        );
        assert_eq!(&buf[..], b"prefix");
    }

    #[test]
    fn encoders_append_to_existing_bytes() {
        let mut buf = BytesMut::from(&b"prefix"[..]);
        terminate(&mut buf);
        assert_eq!(&buf[..], b"prefixX\0\0\0\x04");
    }
}
