//! The untagged packets a client sends before the session starts.
//!
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html>
//! (`StartupMessage`, `SSLRequest`, `GSSENCRequest`, `CancelRequest`).

use crate::reader::Reader;
use crate::{MAX_STARTUP_PACKET, ProtocolError};

/// Protocol code of `SSLRequest` (1234.5679).
pub(crate) const SSL_REQUEST_CODE: i32 = 80_877_103;
/// Protocol code of `GSSENCRequest` (1234.5680).
pub(crate) const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// Protocol code of `CancelRequest` (1234.5678).
pub(crate) const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Protocol version 3.0, the only one this crate speaks.
pub(crate) const PROTOCOL_3_0: i32 = 3 << 16;

/// A packet of the startup phase, sent by a client before any tagged message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// `SSLRequest`: the client asks to switch to TLS.
    SslRequest,
    /// `GSSENCRequest`: the client asks for GSSAPI encryption.
    GssEncRequest,
    /// `CancelRequest`: cancel the query running on the session with this key.
    Cancel {
        /// Backend process id from `BackendKeyData`.
        pid: i32,
        /// Secret key from `BackendKeyData`.
        secret: i32,
    },
    /// `StartupMessage` for protocol 3.0, with its parameters in the order sent.
    Startup {
        /// Parameter names and values (`user`, `database`, `options`, ...).
        params: Vec<(String, String)>,
    },
}

impl StartupPacket {
    /// The value of a `StartupMessage` parameter, if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            StartupPacket::Startup { params } => params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// Parses one startup-phase packet from the front of `buf`.
///
/// Returns `Ok(None)` while more bytes are needed and `Ok(Some((packet, consumed)))`
/// once a packet is complete. The declared length is checked as soon as its 4
/// bytes are present, so an oversized packet is refused before it is buffered.
pub fn parse_startup(buf: &[u8]) -> Result<Option<(StartupPacket, usize)>, ProtocolError> {
    let Some(len_bytes) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let declared = i32::from_be_bytes(*len_bytes);
    let len = usize::try_from(declared).map_err(|_| ProtocolError::NegativeLength(declared))?;
    if len < 8 {
        return Err(ProtocolError::StartupTooShort(len));
    }
    if len > MAX_STARTUP_PACKET {
        return Err(ProtocolError::StartupTooLarge(len));
    }
    let Some(packet) = buf.get(4..len) else {
        return Ok(None);
    };

    let mut r = Reader::new(packet);
    let code = r.i32("startup packet has no protocol code")?;
    let parsed = match code {
        SSL_REQUEST_CODE => {
            r.finish("SSLRequest has trailing bytes")?;
            StartupPacket::SslRequest
        }
        GSSENC_REQUEST_CODE => {
            r.finish("GSSENCRequest has trailing bytes")?;
            StartupPacket::GssEncRequest
        }
        CANCEL_REQUEST_CODE => {
            let pid = r.i32("CancelRequest is too short")?;
            let secret = r.i32("CancelRequest is too short")?;
            // Protocol 3.2 allows longer secrets; we only hand out 4-byte keys.
            r.finish("CancelRequest has an unsupported key length")?;
            StartupPacket::Cancel { pid, secret }
        }
        _ => {
            // Any 3.x is served as 3.0: per the protocol docs a server that
            // does not answer with NegotiateProtocolVersion is speaking 3.0,
            // and minor versions only add optional features.
            let [major_hi, major_lo, minor_hi, minor_lo] = code.to_be_bytes();
            let major = u16::from_be_bytes([major_hi, major_lo]);
            if major != 3 {
                return Err(ProtocolError::UnsupportedProtocolVersion {
                    major,
                    minor: u16::from_be_bytes([minor_hi, minor_lo]),
                });
            }
            StartupPacket::Startup {
                params: startup_params(r)?,
            }
        }
    };
    Ok(Some((parsed, len)))
}

/// Name/value pairs, each NUL-terminated, ending with one extra NUL.
fn startup_params(mut r: Reader<'_>) -> Result<Vec<(String, String)>, ProtocolError> {
    const UNTERMINATED: &str = "startup parameters are not terminated";
    const NOT_UTF8: &str = "startup parameter is not valid UTF-8";
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        let name = r.cstr(UNTERMINATED)?;
        if name.is_empty() {
            break;
        }
        let value = r.cstr(UNTERMINATED)?;
        let utf8 = |s| std::str::from_utf8(s).map_err(|_| ProtocolError::Malformed(NOT_UTF8));
        let (name, value) = (utf8(name)?, utf8(value)?);
        // PostgreSQL lets a repeated name silently override the first one. A
        // proxy that checks one copy while the server uses the other could be
        // fooled, so a repeat is refused; real clients never send one.
        if params.iter().any(|(k, _)| k == name) {
            return Err(ProtocolError::Malformed("startup parameter given twice"));
        }
        params.push((name.to_owned(), value.to_owned()));
    }
    r.finish("startup packet has bytes after the parameter terminator")?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend;
    use bytes::BytesMut;

    /// Asserts that every strict prefix asks for more bytes and the whole packet parses.
    fn parse_whole(bytes: &[u8]) -> StartupPacket {
        for split in 0..bytes.len() {
            assert_eq!(
                parse_startup(&bytes[..split]),
                Ok(None),
                "prefix of {split} bytes"
            );
        }
        let (packet, consumed) = parse_startup(bytes).unwrap().unwrap();
        assert_eq!(consumed, bytes.len());
        packet
    }

    #[test]
    fn ssl_request() {
        let bytes = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(parse_whole(&bytes), StartupPacket::SslRequest);
        let mut buf = BytesMut::new();
        frontend::ssl_request(&mut buf);
        assert_eq!(&buf[..], &bytes);
    }

    #[test]
    fn gssenc_request() {
        let bytes = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
        assert_eq!(parse_whole(&bytes), StartupPacket::GssEncRequest);
    }

    #[test]
    fn cancel_request() {
        let bytes = [
            0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef,
        ];
        let expected = StartupPacket::Cancel {
            pid: 12345,
            secret: 0xdead_beef_u32 as i32,
        };
        assert_eq!(parse_whole(&bytes), expected);
        let mut buf = BytesMut::new();
        frontend::cancel_request(12345, 0xdead_beef_u32 as i32, &mut buf);
        assert_eq!(&buf[..], &bytes);
    }

    #[test]
    fn startup_message() {
        let bytes = b"\0\0\0\x22\0\x03\0\0user\0alice\0database\0shop\0\0";
        let packet = parse_whole(bytes);
        assert_eq!(
            packet,
            StartupPacket::Startup {
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "shop".into())
                ]
            }
        );
        assert_eq!(packet.param("user"), Some("alice"));
        assert_eq!(packet.param("database"), Some("shop"));
        assert_eq!(packet.param("options"), None);
        assert_eq!(StartupPacket::SslRequest.param("user"), None);

        let mut buf = BytesMut::new();
        frontend::startup_message([("user", "alice"), ("database", "shop")], &mut buf).unwrap();
        assert_eq!(&buf[..], bytes);
    }

    #[test]
    fn startup_round_trip_preserves_order_and_unicode() {
        let params = [
            ("user", "jürgen"),
            ("application_name", "psql"),
            ("options", "-c search_path=ä"),
            ("database", ""),
        ];
        let mut buf = BytesMut::new();
        frontend::startup_message(params, &mut buf).unwrap();
        let StartupPacket::Startup { params: parsed } = parse_whole(&buf) else {
            panic!("not a startup message");
        };
        let parsed: Vec<_> = parsed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(parsed, params);
    }

    #[test]
    fn consumes_one_packet_and_leaves_the_rest() {
        let mut buf = BytesMut::new();
        frontend::ssl_request(&mut buf);
        frontend::startup_message([("user", "a")], &mut buf).unwrap();
        let (packet, consumed) = parse_startup(&buf).unwrap().unwrap();
        assert_eq!((packet, consumed), (StartupPacket::SslRequest, 8));
        let (packet, _) = parse_startup(&buf[consumed..]).unwrap().unwrap();
        assert_eq!(packet.param("user"), Some("a"));
    }

    #[test]
    fn minor_versions_of_3_are_served_as_3_0() {
        let bytes = b"\0\0\0\x10\0\x03\0\x02user\0u\0\0";
        assert_eq!(parse_whole(bytes).param("user"), Some("u"));
    }

    #[test]
    fn bad_lengths_are_rejected_after_four_bytes() {
        // Only the length is present: the verdict must not wait for the body.
        assert_eq!(
            parse_startup(&10_001_i32.to_be_bytes()),
            Err(ProtocolError::StartupTooLarge(10_001))
        );
        assert_eq!(
            parse_startup(&(-1_i32).to_be_bytes()),
            Err(ProtocolError::NegativeLength(-1))
        );
        assert_eq!(
            parse_startup(&i32::MIN.to_be_bytes()),
            Err(ProtocolError::NegativeLength(i32::MIN))
        );
        for len in 0..8 {
            assert_eq!(
                parse_startup(&(len as i32).to_be_bytes()),
                Err(ProtocolError::StartupTooShort(len))
            );
        }
        // The largest allowed length only waits for more bytes.
        assert_eq!(parse_startup(&10_000_i32.to_be_bytes()), Ok(None));
    }

    #[test]
    fn largest_allowed_packet_parses() {
        let value = "v".repeat(MAX_STARTUP_PACKET - 8 - "user\0".len() - 2);
        let mut buf = BytesMut::new();
        frontend::startup_message([("user", value.as_str())], &mut buf).unwrap();
        assert_eq!(buf.len(), MAX_STARTUP_PACKET);
        assert_eq!(parse_startup(&buf).unwrap().unwrap().1, MAX_STARTUP_PACKET);
    }

    #[test]
    fn protocol_2_and_unknown_codes_are_rejected() {
        let v2 = b"\0\0\0\x0c\0\x02\0\0user";
        assert_eq!(
            parse_startup(v2),
            Err(ProtocolError::UnsupportedProtocolVersion { major: 2, minor: 0 })
        );
        let unknown = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x31];
        assert_eq!(
            parse_startup(&unknown),
            Err(ProtocolError::UnsupportedProtocolVersion {
                major: 1234,
                minor: 5681
            })
        );
        let text = ProtocolError::UnsupportedProtocolVersion { major: 2, minor: 0 }.to_string();
        assert!(text.contains("2.0") && text.contains("3.0"), "{text}");
    }

    #[test]
    fn non_utf8_params_are_rejected() {
        let name = b"\0\0\0\x0f\0\x03\0\0us\xffr\0\0\0";
        let value = b"\0\0\0\x10\0\x03\0\0user\0\xc3\0\0";
        for bytes in [&name[..], &value[..]] {
            assert_eq!(
                parse_startup(bytes),
                Err(ProtocolError::Malformed(
                    "startup parameter is not valid UTF-8"
                ))
            );
        }
    }

    #[test]
    fn malformed_startup_packets_are_rejected() {
        let unterminated = "startup parameters are not terminated";
        let cases: &[(&[u8], &str)] = &[
            (b"\0\0\0\x08\0\x03\0\0", unterminated),
            (b"\0\0\0\x0d\0\x03\0\0user\0", unterminated),
            (b"\0\0\0\x0e\0\x03\0\0user\0u", unterminated),
            (b"\0\0\0\x0f\0\x03\0\0user\0u\0", unterminated),
            (
                b"\0\0\0\x11\0\x03\0\0user\0u\0\0x",
                "startup packet has bytes after the parameter terminator",
            ),
            (
                b"\0\0\0\x17\0\x03\0\0user\0a\0user\0b\0\0",
                "startup parameter given twice",
            ),
            (
                b"\0\0\0\x09\x04\xd2\x16\x2f\0",
                "SSLRequest has trailing bytes",
            ),
            (
                b"\0\0\0\x0c\x04\xd2\x16\x2e\0\0\0\x01",
                "CancelRequest is too short",
            ),
            (
                b"\0\0\0\x14\x04\xd2\x16\x2e\0\0\0\x01\0\0\0\x02\0\0\0\x03",
                "CancelRequest has an unsupported key length",
            ),
        ];
        for (bytes, reason) in cases {
            assert_eq!(
                parse_startup(bytes),
                Err(ProtocolError::Malformed(reason)),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn empty_parameter_list_is_accepted() {
        // Refusing a session without `user` is the caller's policy, not framing.
        let bytes = b"\0\0\0\x09\0\x03\0\0\0";
        assert_eq!(
            parse_whole(bytes),
            StartupPacket::Startup { params: vec![] }
        );
    }
}
