//! Framing of regular (tagged) messages, shared by both directions.
//!
//! <https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS>

use crate::ProtocolError;

/// Size of a message header: 1 tag byte and a 4-byte length.
pub(crate) const HEADER_LEN: usize = 5;

/// One complete regular message, borrowed from the input buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Message type byte, e.g. `b'Q'`.
    pub tag: u8,
    /// Body without tag and length.
    pub body: &'a [u8],
}

/// Parses one regular message from the front of `buf`.
///
/// Returns `Ok(None)` while more bytes are needed and `Ok(Some((message, consumed)))`
/// once a message is complete. A body longer than `max_len` is refused as soon
/// as the 5-byte header is present, before the body is buffered.
pub fn parse_message(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(Message<'_>, usize)>, ProtocolError> {
    let Some(&[tag, a, b, c, d]) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let body_len = body_len(tag, i32::from_be_bytes([a, b, c, d]), max_len)?;
    let total = HEADER_LEN + body_len;
    Ok(buf
        .get(HEADER_LEN..total)
        .map(|body| (Message { tag, body }, total)))
}

/// Validates a declared length (which counts itself) and returns the body length.
pub(crate) fn body_len(tag: u8, declared: i32, max_len: usize) -> Result<usize, ProtocolError> {
    let len = usize::try_from(declared).map_err(|_| ProtocolError::NegativeLength(declared))?;
    let body = len
        .checked_sub(4)
        .ok_or(ProtocolError::MessageTooShort { tag, len: declared })?;
    if body > max_len {
        return Err(ProtocolError::MessageTooLarge {
            tag,
            len: body,
            max: max_len,
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_MAX_MESSAGE;

    #[test]
    fn parses_one_message_and_leaves_the_rest() {
        let bytes = b"Q\0\0\0\x0dSELECT 1\0X\0\0\0\x04";
        for split in 0..14 {
            assert_eq!(
                parse_message(&bytes[..split], 100),
                Ok(None),
                "split {split}"
            );
        }
        let (msg, consumed) = parse_message(bytes, 100).unwrap().unwrap();
        assert_eq!(
            msg,
            Message {
                tag: b'Q',
                body: b"SELECT 1\0"
            }
        );
        assert_eq!(consumed, 14);
        let (msg, consumed) = parse_message(&bytes[14..], 100).unwrap().unwrap();
        assert_eq!(
            (msg, consumed),
            (
                Message {
                    tag: b'X',
                    body: b""
                },
                5
            )
        );
    }

    #[test]
    fn bad_lengths_are_rejected_once_the_header_is_in() {
        assert_eq!(
            parse_message(b"Q\xff\xff\xff\xff", 100),
            Err(ProtocolError::NegativeLength(-1))
        );
        for len in 0..4 {
            assert_eq!(
                parse_message(&[b'Q', 0, 0, 0, len], 100),
                Err(ProtocolError::MessageTooShort {
                    tag: b'Q',
                    len: len.into()
                })
            );
        }
        assert_eq!(
            parse_message(b"d\0\0\0\x69", 100),
            Err(ProtocolError::MessageTooLarge {
                tag: b'd',
                len: 101,
                max: 100
            })
        );
        // Exactly at the limit only waits for the body.
        assert_eq!(parse_message(b"d\0\0\0\x68", 100), Ok(None));
        assert_eq!(
            parse_message(b"d\x7f\xff\xff\xff", DEFAULT_MAX_MESSAGE),
            Err(ProtocolError::MessageTooLarge {
                tag: b'd',
                len: i32::MAX as usize - 4,
                max: DEFAULT_MAX_MESSAGE
            })
        );
    }

    #[test]
    fn error_text_names_the_message_type() {
        let err = ProtocolError::MessageTooLarge {
            tag: b'Q',
            len: 5000,
            max: 4096,
        };
        assert_eq!(
            err.to_string(),
            "message 'Q' of 5000 bytes exceeds the limit of 4096 bytes"
        );
        let err = ProtocolError::MessageTooShort { tag: 0, len: 1 };
        assert_eq!(
            err.to_string(),
            "message 0x00 declares length 1, less than the 4 bytes of its length field"
        );
    }
}
