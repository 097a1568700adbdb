//! Decoding of the backend messages a proxy meets while it authenticates upstream.
//!
//! Formats: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

use crate::reader::Reader;
use crate::{Message, ProtocolError};

/// A message from the server, decoded as far as the upstream handshake needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendMessage<'a> {
    /// `Authentication*` (tag `R`).
    Authentication(AuthRequest<'a>),
    /// `ParameterStatus` (tag `S`): a run-time parameter the client should know.
    ParameterStatus {
        /// Parameter name.
        name: &'a str,
        /// Current value.
        value: &'a str,
    },
    /// `BackendKeyData` (tag `K`): the key a client needs to cancel queries.
    BackendKeyData {
        /// Backend process id.
        pid: i32,
        /// Secret key.
        secret: i32,
    },
    /// `ReadyForQuery` (tag `Z`) with its transaction status (`I`, `T` or `E`).
    ReadyForQuery(u8),
    /// `ErrorResponse` (tag `E`).
    ErrorResponse(ErrorFields),
    /// `NoticeResponse` (tag `N`).
    NoticeResponse(ErrorFields),
    /// `NegotiateProtocolVersion` (tag `v`): the server supports less than was asked.
    NegotiateProtocolVersion {
        /// Newest minor protocol version the server supports.
        newest_minor: i32,
        /// Protocol options (`_pq_.*`) the server did not recognise.
        unrecognized: Vec<&'a str>,
    },
    /// Any other message; the proxy relays or rejects it without looking inside.
    Other {
        /// Message type byte.
        tag: u8,
    },
}

/// The request carried by an `Authentication*` message.
///
/// <https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONOK>
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    /// `AuthenticationOk` (0): authentication succeeded.
    Ok,
    /// `AuthenticationCleartextPassword` (3).
    CleartextPassword,
    /// `AuthenticationMD5Password` (5) with its salt.
    Md5Password {
        /// Salt to hash the password with.
        salt: [u8; 4],
    },
    /// `AuthenticationSASL` (10) with the mechanisms the server offers.
    Sasl {
        /// Mechanism names, e.g. `SCRAM-SHA-256`.
        mechanisms: Vec<&'a str>,
    },
    /// `AuthenticationSASLContinue` (11): the server-first message.
    SaslContinue(&'a [u8]),
    /// `AuthenticationSASLFinal` (12): the server-final message.
    SaslFinal(&'a [u8]),
    /// A method this crate does not implement (Kerberos, GSSAPI, SSPI, ...), by code.
    Unsupported(i32),
}

/// The fields of an `ErrorResponse` or `NoticeResponse` that a proxy reads or writes.
///
/// <https://www.postgresql.org/docs/current/protocol-error-fields.html>
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// Severity, not localized: `ERROR`, `FATAL`, `PANIC`, `WARNING`, `NOTICE`, ...
    pub severity: String,
    /// SQLSTATE code, e.g. `28P01`.
    pub code: String,
    /// Primary human-readable message.
    pub message: String,
    /// Optional secondary message with more detail.
    pub detail: Option<String>,
    /// Optional suggestion what to do about the problem.
    pub hint: Option<String>,
}

impl ErrorFields {
    /// An error that ends the session (severity `FATAL`).
    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self::new("FATAL", code, message.into())
    }

    /// An error that aborts the current command (severity `ERROR`).
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::new("ERROR", code, message.into())
    }

    /// A warning that ends nothing (severity `WARNING`), for a
    /// NoticeResponse.
    pub fn warning(code: &str, message: impl Into<String>) -> Self {
        Self::new("WARNING", code, message.into())
    }

    /// Adds a `DETAIL` line.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a `HINT` line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    fn new(severity: &str, code: &str, message: String) -> Self {
        ErrorFields {
            severity: severity.to_owned(),
            code: code.to_owned(),
            message,
            detail: None,
            hint: None,
        }
    }

    /// Field list: a type byte and a NUL-terminated string each, then a single NUL.
    fn decode(body: &[u8]) -> Result<Self, ProtocolError> {
        const UNTERMINATED: &str = "error field list is not terminated";
        let mut r = Reader::new(body);
        let mut fields = ErrorFields::default();
        let mut localized_severity = None;
        loop {
            let kind = r.u8(UNTERMINATED)?;
            if kind == 0 {
                break;
            }
            // Texts are in the session's client_encoding, which need not be
            // UTF-8; a garbled character is better than losing the error.
            let value = String::from_utf8_lossy(r.cstr(UNTERMINATED)?).into_owned();
            match kind {
                b'S' => localized_severity = Some(value),
                b'V' => fields.severity = value,
                b'C' => fields.code = value,
                b'M' => fields.message = value,
                b'D' => fields.detail = Some(value),
                b'H' => fields.hint = Some(value),
                // Position, context, source location etc. are not needed by a proxy.
                _ => {}
            }
        }
        r.finish("error response has bytes after its terminator")?;
        // `V` exists since PostgreSQL 9.6; older servers only send the
        // localized `S`, which is still better than nothing.
        if fields.severity.is_empty() {
            fields.severity = localized_severity.unwrap_or_default();
        }
        Ok(fields)
    }
}

impl<'a> BackendMessage<'a> {
    /// Decodes a message received from the server.
    ///
    /// Only the messages of the handshake are decoded; everything else is
    /// [`BackendMessage::Other`]. A known message that does not follow its
    /// layout is an error.
    pub fn decode(msg: &Message<'a>) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(msg.body);
        let decoded = match msg.tag {
            b'R' => BackendMessage::Authentication(decode_auth(&mut r)?),
            b'S' => {
                let name = r.utf8_cstr("ParameterStatus name is malformed")?;
                let value = r.utf8_cstr("ParameterStatus value is malformed")?;
                BackendMessage::ParameterStatus { name, value }
            }
            b'K' => BackendMessage::BackendKeyData {
                pid: r.i32("BackendKeyData is too short")?,
                secret: r.i32("BackendKeyData is too short")?,
            },
            b'Z' => BackendMessage::ReadyForQuery(r.u8("ReadyForQuery has no status")?),
            b'E' => {
                return Ok(BackendMessage::ErrorResponse(ErrorFields::decode(
                    msg.body,
                )?));
            }
            b'N' => {
                return Ok(BackendMessage::NoticeResponse(ErrorFields::decode(
                    msg.body,
                )?));
            }
            b'v' => {
                const BAD: &str = "NegotiateProtocolVersion is malformed";
                let newest_minor = r.i32(BAD)?;
                let count = r.i32(BAD)?;
                if count < 0 {
                    return Err(ProtocolError::Malformed(BAD));
                }
                // The count is untrusted: grow the list as entries actually arrive.
                let mut unrecognized = Vec::new();
                for _ in 0..count {
                    unrecognized.push(r.utf8_cstr(BAD)?);
                }
                BackendMessage::NegotiateProtocolVersion {
                    newest_minor,
                    unrecognized,
                }
            }
            tag => return Ok(BackendMessage::Other { tag }),
        };
        r.finish(match msg.tag {
            // With protocol 3.2 the secret may be longer; we only ever ask for 3.0.
            b'K' => "BackendKeyData has an unsupported key length",
            _ => "message has unexpected trailing bytes",
        })?;
        Ok(decoded)
    }
}

/// <https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONOK>
fn decode_auth<'a>(r: &mut Reader<'a>) -> Result<AuthRequest<'a>, ProtocolError> {
    Ok(match r.i32("Authentication message has no code")? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::CleartextPassword,
        5 => AuthRequest::Md5Password {
            salt: r.array("AuthenticationMD5Password has no salt")?,
        },
        10 => {
            const BAD: &str = "AuthenticationSASL mechanism list is malformed";
            let mut mechanisms = Vec::new();
            loop {
                let name = r.utf8_cstr(BAD)?;
                if name.is_empty() {
                    break;
                }
                mechanisms.push(name);
            }
            AuthRequest::Sasl { mechanisms }
        }
        11 => AuthRequest::SaslContinue(r.rest()),
        12 => AuthRequest::SaslFinal(r.rest()),
        // The body of an unsupported request is not ours to judge.
        other => {
            r.rest();
            AuthRequest::Unsupported(other)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_MAX_MESSAGE, backend, parse_message};
    use bytes::BytesMut;

    fn decode(bytes: &[u8]) -> Result<BackendMessage<'_>, ProtocolError> {
        let (msg, consumed) = parse_message(bytes, DEFAULT_MAX_MESSAGE)?.expect("complete message");
        assert_eq!(consumed, bytes.len());
        BackendMessage::decode(&msg)
    }

    #[test]
    fn authentication_requests() {
        let cases: &[(&[u8], AuthRequest<'_>)] = &[
            (b"R\0\0\0\x08\0\0\0\0", AuthRequest::Ok),
            (b"R\0\0\0\x08\0\0\0\x03", AuthRequest::CleartextPassword),
            (
                b"R\0\0\0\x0c\0\0\0\x05\x01\x02\x03\x04",
                AuthRequest::Md5Password { salt: [1, 2, 3, 4] },
            ),
            (
                b"R\0\0\0\x2a\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0",
                AuthRequest::Sasl {
                    mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"],
                },
            ),
            (
                b"R\0\0\0\x0e\0\0\0\x0br=abc,",
                AuthRequest::SaslContinue(b"r=abc,"),
            ),
            (
                b"R\0\0\0\x0c\0\0\0\x0cv=xy",
                AuthRequest::SaslFinal(b"v=xy"),
            ),
            (b"R\0\0\0\x08\0\0\0\x07", AuthRequest::Unsupported(7)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                decode(bytes),
                Ok(BackendMessage::Authentication(expected.clone()))
            );
        }
    }

    #[test]
    fn malformed_authentication_requests() {
        let cases: &[&[u8]] = &[
            b"R\0\0\0\x04",
            b"R\0\0\0\x09\0\0\0\0\0",
            b"R\0\0\0\x0b\0\0\0\x05\x01\x02\x03",
            b"R\0\0\0\x0d\0\0\0\x0aSCRAM",
            b"R\0\0\0\x0e\0\0\0\x0aSCRAM\0",
        ];
        for bytes in cases {
            assert!(
                matches!(decode(bytes), Err(ProtocolError::Malformed(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn real_server_error() {
        // What PostgreSQL 15 sends for a wrong password (elog.c field order).
        let bytes = b"E\0\0\0\x65SFATAL\0VFATAL\0C28P01\0\
            Mpassword authentication failed for user \"alice\"\0\
            Fauth.c\0L323\0Rauth_failed\0\0";
        assert_eq!(
            decode(bytes),
            Ok(BackendMessage::ErrorResponse(ErrorFields {
                severity: "FATAL".into(),
                code: "28P01".into(),
                message: "password authentication failed for user \"alice\"".into(),
                detail: None,
                hint: None,
            }))
        );
    }

    #[test]
    fn localized_severity_and_non_utf8_text() {
        // A German server without `V`, in LATIN1: still readable.
        let bytes = b"N\0\0\0\x1cSHINWEIS\0C00000\0Mgr\xfc\xdfe\0\0";
        let Ok(BackendMessage::NoticeResponse(fields)) = decode(bytes) else {
            panic!("not a notice");
        };
        assert_eq!(fields.severity, "HINWEIS");
        assert_eq!(fields.message, "gr\u{fffd}\u{fffd}e");
    }

    #[test]
    fn malformed_error_responses() {
        for bytes in [
            &b"E\0\0\0\x04"[..],
            b"E\0\0\0\x08Mabc",
            b"E\0\0\0\x0bMabc\0\0x",
        ] {
            assert!(
                matches!(decode(bytes), Err(ProtocolError::Malformed(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn handshake_messages() {
        assert_eq!(
            decode(b"S\0\0\0\x18server_version\x0015.4\0"),
            Ok(BackendMessage::ParameterStatus {
                name: "server_version",
                value: "15.4"
            })
        );
        assert_eq!(
            decode(b"K\0\0\0\x0c\0\0\x30\x39\xde\xad\xbe\xef"),
            Ok(BackendMessage::BackendKeyData {
                pid: 12345,
                secret: 0xdead_beef_u32 as i32
            })
        );
        assert_eq!(
            decode(b"Z\0\0\0\x05I"),
            Ok(BackendMessage::ReadyForQuery(b'I'))
        );
        assert_eq!(
            decode(b"v\0\0\0\x1a\0\0\0\0\0\0\0\x01_pq_.compress\0"),
            Ok(BackendMessage::NegotiateProtocolVersion {
                newest_minor: 0,
                unrecognized: vec!["_pq_.compress"],
            })
        );
        assert_eq!(
            decode(b"T\0\0\0\x06\0\0"),
            Ok(BackendMessage::Other { tag: b'T' })
        );
    }

    #[test]
    fn malformed_handshake_messages() {
        let cases: &[&[u8]] = &[
            b"S\0\0\0\x08abc\0",
            b"S\0\0\0\x08a\0\xff\0",
            // A protocol 3.2 key (longer secret) is not what we asked for.
            b"K\0\0\0\x10\0\0\0\x01\0\0\0\x02\0\0\0\x03",
            b"K\0\0\0\x0b\0\0\0\x01\0\0\0",
            b"Z\0\0\0\x04",
            b"Z\0\0\0\x06II",
            // Count larger than the entries present: no over-allocation, just an error.
            b"v\0\0\0\x0c\0\0\0\0\x7f\xff\xff\xff",
            b"v\0\0\0\x0c\0\0\0\0\xff\xff\xff\xff",
        ];
        for bytes in cases {
            assert!(
                matches!(decode(bytes), Err(ProtocolError::Malformed(_))),
                "{bytes:?} -> {:?}",
                decode(bytes)
            );
        }
    }

    #[test]
    fn backend_encoders_round_trip() {
        let fields = ErrorFields::fatal("08006", "postern: your session expired — log in again")
            .with_detail("certificate expired")
            .with_hint("run `postern login`");
        let mut buf = BytesMut::new();
        backend::authentication_ok(&mut buf);
        backend::parameter_status("server_version", "15.4", &mut buf).unwrap();
        backend::backend_key_data(7, -8, &mut buf);
        backend::error_response(&fields, &mut buf);
        backend::notice_response(&ErrorFields::error("01000", "note"), &mut buf);
        backend::ready_for_query(b'T', &mut buf);

        let mut decoded = Vec::new();
        let mut rest = &buf[..];
        while let Some((msg, consumed)) = parse_message(rest, DEFAULT_MAX_MESSAGE).unwrap() {
            decoded.push(BackendMessage::decode(&msg).unwrap());
            rest = &rest[consumed..];
        }
        assert!(rest.is_empty());
        assert_eq!(
            decoded,
            [
                BackendMessage::Authentication(AuthRequest::Ok),
                BackendMessage::ParameterStatus {
                    name: "server_version",
                    value: "15.4"
                },
                BackendMessage::BackendKeyData { pid: 7, secret: -8 },
                BackendMessage::ErrorResponse(fields),
                BackendMessage::NoticeResponse(ErrorFields {
                    severity: "ERROR".into(),
                    code: "01000".into(),
                    message: "note".into(),
                    detail: None,
                    hint: None,
                }),
                BackendMessage::ReadyForQuery(b'T'),
            ]
        );
    }

    #[test]
    fn backend_encoders_byte_layout() {
        let mut buf = BytesMut::new();
        backend::authentication_ok(&mut buf);
        assert_eq!(&buf[..], b"R\0\0\0\x08\0\0\0\0");

        buf.clear();
        backend::ready_for_query(b'I', &mut buf);
        assert_eq!(&buf[..], b"Z\0\0\0\x05I");

        buf.clear();
        backend::backend_key_data(12345, 0xdead_beef_u32 as i32, &mut buf);
        assert_eq!(&buf[..], b"K\0\0\0\x0c\0\0\x30\x39\xde\xad\xbe\xef");

        buf.clear();
        backend::error_response(
            &ErrorFields::error("42501", "denied").with_hint("ask"),
            &mut buf,
        );
        assert_eq!(
            &buf[..],
            b"E\0\0\0\x27SERROR\0VERROR\0C42501\0Mdenied\0Hask\0\0"
        );
    }

    #[test]
    fn embedded_nul_cannot_inject_fields() {
        let mut buf = BytesMut::new();
        backend::error_response(&ErrorFields::error("42501", "denied\0Hinjected"), &mut buf);
        let Ok(BackendMessage::ErrorResponse(fields)) = decode(&buf) else {
            panic!("not an error");
        };
        // Shown, never cut, and no field can be smuggled in.
        assert_eq!(
            (fields.message.as_str(), fields.hint),
            ("denied\u{fffd}Hinjected", None)
        );
    }
}
