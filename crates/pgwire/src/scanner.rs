//! Watching a relayed client→server stream for statements, without holding on to it.
//!
//! The relay forwards every chunk as it arrives; the scanner only looks at
//! the message headers and keeps a bounded prefix of `Query` and `Parse`
//! bodies. Formats:
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-QUERY>
//! and `#PROTOCOL-MESSAGE-FORMATS-PARSE`.

use crate::ProtocolError;
use crate::message::{HEADER_LEN, body_len};

/// An auditable event found in the client→server stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontendEvent {
    /// A simple-protocol `Query`, possibly truncated.
    Query(String),
    /// An extended-protocol `Parse`, possibly truncated.
    Parse {
        /// Prepared statement name; empty for the unnamed statement.
        statement: String,
        /// Query text.
        query: String,
    },
    /// `Terminate`: the client ended the session.
    Terminate,
}

/// Incremental scanner of the regular messages a client sends after startup.
///
/// Chunks may split messages anywhere, headers included. Bodies of messages
/// other than `Query` and `Parse` are skipped by counting; of those two at
/// most `query_cap` bytes per text are copied.
#[derive(Debug)]
pub struct FrontendScanner {
    max_message: usize,
    query_cap: usize,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Collecting the 5-byte header, which may arrive in pieces.
    Header { buf: [u8; HEADER_LEN], have: usize },
    /// Inside a body; `texts` is present only for messages we audit.
    Body {
        tag: u8,
        remaining: usize,
        texts: Option<Texts>,
    },
    /// After a framing error the stream cannot be resynchronised.
    Failed(ProtocolError),
}

impl State {
    fn header() -> Self {
        State::Header {
            buf: [0; HEADER_LEN],
            have: 0,
        }
    }
}

impl FrontendScanner {
    /// A scanner refusing bodies over `max_message` bytes and keeping at most `query_cap` bytes of query text.
    pub fn new(max_message: usize, query_cap: usize) -> Self {
        FrontendScanner {
            max_message,
            query_cap,
            state: State::header(),
        }
    }

    /// Scans one chunk and pushes the events of messages completed in it onto `out`.
    ///
    /// The caller may drop the chunk afterwards. A negative, too small or
    /// over-limit length is an error, and every later call returns it again.
    pub fn feed(
        &mut self,
        mut chunk: &[u8],
        out: &mut Vec<FrontendEvent>,
    ) -> Result<(), ProtocolError> {
        loop {
            match &mut self.state {
                State::Failed(err) => return Err(err.clone()),
                State::Header { buf, have } => {
                    let n = (HEADER_LEN - *have).min(chunk.len());
                    buf[*have..*have + n].copy_from_slice(&chunk[..n]);
                    *have += n;
                    chunk = &chunk[n..];
                    if *have < HEADER_LEN {
                        return Ok(());
                    }
                    let [tag, a, b, c, d] = *buf;
                    match body_len(tag, i32::from_be_bytes([a, b, c, d]), self.max_message) {
                        Ok(remaining) => {
                            self.state = State::Body {
                                tag,
                                remaining,
                                texts: Texts::for_tag(tag),
                            }
                        }
                        Err(err) => {
                            self.state = State::Failed(err.clone());
                            return Err(err);
                        }
                    }
                }
                State::Body {
                    tag,
                    remaining,
                    texts,
                } => {
                    // Also entered straight from the header, so an empty body (Sync,
                    // Terminate) completes without waiting for another chunk.
                    let n = (*remaining).min(chunk.len());
                    if let Some(texts) = texts {
                        texts.feed(&chunk[..n], self.query_cap);
                    }
                    *remaining -= n;
                    chunk = &chunk[n..];
                    if *remaining > 0 {
                        return Ok(());
                    }
                    let event = match (*tag, texts.take()) {
                        (b'Q', Some(t)) => Some(FrontendEvent::Query(t.query.into_string())),
                        (b'P', Some(t)) => Some(FrontendEvent::Parse {
                            statement: t.statement.into_string(),
                            query: t.query.into_string(),
                        }),
                        (b'X', _) => Some(FrontendEvent::Terminate),
                        _ => None,
                    };
                    out.extend(event);
                    self.state = State::header();
                    if chunk.is_empty() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The texts kept of a `Query` (query only) or `Parse` (statement name, then query).
///
/// A message cut short of its NUL still yields what was seen: the server
/// will reject it, but the attempt belongs in the audit log.
#[derive(Debug)]
struct Texts {
    field: Field,
    statement: Text,
    query: Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Statement,
    Query,
    Done,
}

impl Texts {
    fn for_tag(tag: u8) -> Option<Self> {
        let field = match tag {
            b'Q' => Field::Query,
            b'P' => Field::Statement,
            _ => return None,
        };
        Some(Texts {
            field,
            statement: Text::default(),
            query: Text::default(),
        })
    }

    fn feed(&mut self, mut part: &[u8], cap: usize) {
        loop {
            let (text, next) = match self.field {
                Field::Statement => (&mut self.statement, Field::Query),
                // The query is the last field we need: once it is over the
                // cap, the rest of the body is not even searched for its NUL.
                Field::Query if !self.query.truncated => (&mut self.query, Field::Done),
                Field::Query | Field::Done => return,
            };
            match text.take(part, cap) {
                Some(rest) => {
                    self.field = next;
                    part = rest;
                }
                None => return,
            }
        }
    }
}

/// A NUL-terminated field, of which at most the cap is copied.
#[derive(Debug, Default)]
struct Text {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Text {
    /// Takes the field's bytes from `part`; returns what follows its NUL if the field ends here.
    fn take<'p>(&mut self, part: &'p [u8], cap: usize) -> Option<&'p [u8]> {
        let (field, rest) = match part.iter().position(|&b| b == 0) {
            Some(nul) => (&part[..nul], Some(&part[nul + 1..])),
            None => (part, None),
        };
        let room = cap.saturating_sub(self.bytes.len());
        if field.len() > room {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(&field[..field.len().min(room)]);
        rest
    }

    fn into_string(self) -> String {
        let mut bytes = self.bytes;
        if self.truncated {
            trim_partial_char(&mut bytes);
        }
        // No second copy in the common case of valid UTF-8.
        String::from_utf8(bytes)
            .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
    }
}

/// Drops a UTF-8 sequence cut in half by the cap, so truncation does not add a `�`.
fn trim_partial_char(bytes: &mut Vec<u8>) {
    let tail = bytes.len().saturating_sub(3);
    // The last byte that is not a continuation byte starts the final character.
    if let Some(start) = (tail..bytes.len()).rev().find(|&i| bytes[i] & 0xC0 != 0x80)
        && let Err(err) = std::str::from_utf8(&bytes[start..])
        && err.error_len().is_none()
    {
        bytes.truncate(start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client session: simple query, extended protocol, COPY data, terminate.
    const STREAM: &[u8] = b"Q\0\0\0\x0dSELECT 1\0\
        P\0\0\0\x17s1\0SELECT $1\0\0\x01\0\0\0\x17\
        B\0\0\0\x0e\0s1\0\0\0\0\0\0\0\
        S\0\0\0\x04\
        d\0\0\0\x07abc\
        P\0\0\0\x10\0SELECT 2\0\0\0\
        X\0\0\0\x04";

    fn expected() -> Vec<FrontendEvent> {
        vec![
            FrontendEvent::Query("SELECT 1".into()),
            FrontendEvent::Parse {
                statement: "s1".into(),
                query: "SELECT $1".into(),
            },
            FrontendEvent::Parse {
                statement: String::new(),
                query: "SELECT 2".into(),
            },
            FrontendEvent::Terminate,
        ]
    }

    fn scan(chunks: &[&[u8]], cap: usize) -> Result<Vec<FrontendEvent>, ProtocolError> {
        let mut scanner = FrontendScanner::new(1024, cap);
        let mut out = Vec::new();
        for chunk in chunks {
            scanner.feed(chunk, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn whole_stream() {
        assert_eq!(scan(&[STREAM], 100), Ok(expected()));
    }

    #[test]
    fn stream_split_at_every_offset() {
        for split in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(split);
            assert_eq!(scan(&[a, b], 100), Ok(expected()), "split at {split}");
        }
    }

    #[test]
    fn stream_fed_byte_by_byte() {
        let chunks: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(scan(&chunks, 100), Ok(expected()));
    }

    #[test]
    fn events_are_emitted_when_a_message_completes() {
        let mut scanner = FrontendScanner::new(1024, 100);
        let mut out = Vec::new();
        scanner.feed(&STREAM[..13], &mut out).unwrap();
        assert!(out.is_empty());
        scanner.feed(&STREAM[13..14], &mut out).unwrap();
        assert_eq!(out, [FrontendEvent::Query("SELECT 1".into())]);
    }

    #[test]
    fn query_text_is_capped() {
        let events = scan(&[STREAM], 4).unwrap();
        assert_eq!(
            events[..3],
            [
                FrontendEvent::Query("SELE".into()),
                FrontendEvent::Parse {
                    statement: "s1".into(),
                    query: "SELE".into()
                },
                FrontendEvent::Parse {
                    statement: String::new(),
                    query: "SELE".into()
                },
            ]
        );
        // The cap holds at every split too.
        for split in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(split);
            assert_eq!(scan(&[a, b], 4), Ok(events.clone()), "split at {split}");
        }
        assert_eq!(
            scan(&[STREAM], 0).unwrap()[0],
            FrontendEvent::Query(String::new())
        );
    }

    #[test]
    fn large_messages_are_skipped_and_capped_across_chunks() {
        let query = "SELECT '".to_owned() + &"x".repeat(100_000) + "'";
        let mut stream = Vec::new();
        stream.extend_from_slice(b"d\0\x01\x86\xa4");
        stream.resize(stream.len() + 100_000, b'y');
        stream.push(b'Q');
        stream.extend_from_slice(&(query.len() as i32 + 5).to_be_bytes());
        stream.extend_from_slice(query.as_bytes());
        stream.push(0);

        let mut scanner = FrontendScanner::new(1 << 20, 16);
        let mut out = Vec::new();
        for chunk in stream.chunks(4096) {
            scanner.feed(chunk, &mut out).unwrap();
        }
        assert_eq!(out, [FrontendEvent::Query("SELECT 'xxxxxxxx".into())]);
    }

    #[test]
    fn query_exactly_at_the_cap_is_whole() {
        assert_eq!(
            scan(&[STREAM], 8).unwrap()[0],
            FrontendEvent::Query("SELECT 1".into())
        );
    }

    #[test]
    fn truncation_does_not_split_a_character() {
        // "é" is two bytes; a cap of 2 would cut it after one.
        let stream = b"Q\0\0\0\x08a\xc3\xa9\0";
        assert_eq!(
            scan(&[stream], 2),
            Ok(vec![FrontendEvent::Query("a".into())])
        );
        assert_eq!(
            scan(&[stream], 3),
            Ok(vec![FrontendEvent::Query("aé".into())])
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let stream = b"Q\0\0\0\x07a\xff\0";
        assert_eq!(
            scan(&[stream], 100),
            Ok(vec![FrontendEvent::Query("a\u{fffd}".into())])
        );
    }

    #[test]
    fn unterminated_query_reports_what_was_seen() {
        let stream = b"Q\0\0\0\x07abc";
        assert_eq!(
            scan(&[stream], 100),
            Ok(vec![FrontendEvent::Query("abc".into())])
        );
    }

    #[test]
    fn bad_lengths_are_errors_and_stay_errors() {
        let mut scanner = FrontendScanner::new(1024, 100);
        let mut out = Vec::new();
        let too_short = Err(ProtocolError::MessageTooShort { tag: b'Q', len: 3 });
        assert_eq!(scanner.feed(b"S\0\0\0\x04Q\0\0", &mut out), Ok(()));
        assert_eq!(scanner.feed(b"\0\x03", &mut out), too_short);
        assert_eq!(scanner.feed(b"X\0\0\0\x04", &mut out), too_short);
        assert!(out.is_empty());

        assert_eq!(
            scan(&[b"d\xff\xff\xff\xfe"], 100),
            Err(ProtocolError::NegativeLength(-2))
        );
        assert_eq!(
            scan(&[b"d\0\0\x04\x05"], 100),
            Err(ProtocolError::MessageTooLarge {
                tag: b'd',
                len: 1025,
                max: 1024
            })
        );
        assert_eq!(scan(&[b"d\0\0\x04\x04"], 100), Ok(vec![]));
    }
}
