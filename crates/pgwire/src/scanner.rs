//! Watching a relayed client→server stream for statements, without holding on to it.
//!
//! The relay forwards every chunk as it arrives; the scanner only looks at
//! the message headers, keeps a bounded prefix of `Query` and `Parse` texts
//! (with the length and SHA-256 of a text it cut) and reads the function and
//! argument sizes of a `FunctionCall`. Formats:
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-QUERY>,
//! `#PROTOCOL-MESSAGE-FORMATS-PARSE` and `#PROTOCOL-MESSAGE-FORMATS-FUNCTIONCALL`.

use sha2::{Digest, Sha256};

use crate::ProtocolError;
use crate::message::{HEADER_LEN, body_len};

/// An auditable event found in the client→server stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontendEvent {
    /// A simple-protocol `Query`.
    Query(QueryText),
    /// An extended-protocol `Parse`.
    Parse {
        /// Prepared statement name; empty for the unnamed statement.
        statement: String,
        /// Query text.
        query: QueryText,
    },
    /// A `FunctionCall` (the fast-path interface): which function, and how
    /// large its arguments are, never their values.
    FunctionCall(FunctionCall),
    /// `Terminate`: the client ended the session.
    Terminate,
}

/// Statement text as kept for the audit: whole, or its first bytes with
/// what identifies the whole statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryText {
    /// The statement, or as many whole characters of it as the cap allows.
    pub text: String,
    /// Present when `text` was cut.
    pub cut: Option<Cut>,
}

/// The whole of a statement whose kept text was cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Length of the whole statement in bytes.
    pub len: usize,
    /// SHA-256 of the whole statement's bytes.
    pub sha256: [u8; 32],
}

/// What a `FunctionCall` message asks for.
///
/// Format: <https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-FUNCTIONCALL>.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionCall {
    /// Object ID of the function (`pg_proc.oid`).
    pub function: u32,
    /// Number of arguments the message declares.
    pub args: u16,
    /// Length in bytes of each argument, `-1` for NULL, as the message
    /// states it; of the first [`FUNCTION_ARGS_KEPT`] arguments only.
    pub arg_sizes: Vec<i32>,
}

/// Argument sizes kept per `FunctionCall`: PostgreSQL's `FUNC_MAX_ARGS`, so
/// any call the server would run is described whole.
pub const FUNCTION_ARGS_KEPT: usize = 100;

/// Incremental scanner of the regular messages a client sends after startup.
///
/// Chunks may split messages anywhere, headers included. Bodies are skipped
/// by counting; of `Query` and `Parse` at most `query_cap` bytes per text are
/// copied (a longer text is hashed as it passes), of `FunctionCall` only the
/// integers that say what is called.
#[derive(Debug)]
pub struct FrontendScanner {
    max_message: usize,
    query_cap: usize,
    state: State,
    requests: Requests,
}

/// What the client asked the server to run, as far as a proxy timing
/// statements needs to know: counted from each message's header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// Messages begun since the last look that the server answers with a
    /// ReadyForQuery: `Query`, `FunctionCall` and `Sync`.
    pub awaiting_ready: u32,
    /// Whether an extended-protocol batch (`Parse`, `Bind`, `Describe`,
    /// `Execute`, `Close`) is open: the server may be running it already,
    /// and its ReadyForQuery comes only after the client's `Sync`.
    pub batch_open: bool,
}

#[derive(Debug)]
enum State {
    /// Collecting the 5-byte header, which may arrive in pieces.
    Header { buf: [u8; HEADER_LEN], have: usize },
    /// Inside a body; `watched` is present only for messages we audit.
    Body {
        tag: u8,
        remaining: usize,
        watched: Option<Watched>,
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
            requests: Requests::default(),
        }
    }

    /// Returns what the client asked to run since the last call (with
    /// whether a batch is open now) and resets the count.
    pub fn take_requests(&mut self) -> Requests {
        let requests = self.requests;
        self.requests.awaiting_ready = 0;
        requests
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
                    self.requests.note(tag);
                    match body_len(tag, i32::from_be_bytes([a, b, c, d]), self.max_message) {
                        Ok(remaining) => {
                            self.state = State::Body {
                                tag,
                                remaining,
                                watched: Watched::for_tag(tag),
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
                    watched,
                } => {
                    // Also entered straight from the header, so an empty body (Sync,
                    // Terminate) completes without waiting for another chunk.
                    let n = (*remaining).min(chunk.len());
                    if let Some(watched) = watched {
                        watched.feed(&chunk[..n], self.query_cap);
                    }
                    *remaining -= n;
                    chunk = &chunk[n..];
                    if *remaining > 0 {
                        return Ok(());
                    }
                    let event = match (watched.take(), *tag) {
                        (Some(watched), _) => Some(watched.into_event()),
                        (None, b'X') => Some(FrontendEvent::Terminate),
                        (None, _) => None,
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

impl Requests {
    fn note(&mut self, tag: u8) {
        match tag {
            b'Q' | b'F' => self.awaiting_ready += 1,
            b'S' => {
                self.awaiting_ready += 1;
                self.batch_open = false;
            }
            b'P' | b'B' | b'D' | b'E' | b'C' => self.batch_open = true,
            _ => {}
        }
    }
}

/// What is kept of a body the audit looks into, while it passes.
///
/// A message cut short (of a NUL, of an argument) still yields what was
/// seen: the server will reject it, but the attempt belongs in the audit log.
#[derive(Debug)]
enum Watched {
    Query(Text),
    Parse { statement: Text, query: Text },
    Call(Call),
}

impl Watched {
    fn for_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            b'Q' => Watched::Query(Text::default()),
            b'P' => Watched::Parse {
                statement: Text::default(),
                query: Text::default(),
            },
            b'F' => Watched::Call(Call::default()),
            _ => return None,
        })
    }

    fn feed(&mut self, part: &[u8], cap: usize) {
        match self {
            Watched::Query(query) => {
                query.feed(part, cap);
            }
            Watched::Parse { statement, query } => {
                if let Some(rest) = statement.feed(part, cap) {
                    query.feed(rest, cap);
                }
            }
            Watched::Call(call) => call.feed(part),
        }
    }

    fn into_event(self) -> FrontendEvent {
        match self {
            Watched::Query(query) => FrontendEvent::Query(query.into_query()),
            Watched::Parse { statement, query } => FrontendEvent::Parse {
                statement: statement.into_query().text,
                query: query.into_query(),
            },
            Watched::Call(call) => FrontendEvent::FunctionCall(call.event),
        }
    }
}

/// A NUL-terminated field, of which at most the cap is copied; past the cap
/// only its length and digest are kept.
#[derive(Debug, Default)]
struct Text {
    bytes: Vec<u8>,
    /// Boxed: a hash state is large, and only cut texts need one.
    overflow: Option<Box<Overflow>>,
    /// Its NUL went by: later bytes belong to other fields.
    ended: bool,
}

/// The whole of a field that outgrew the cap, so far.
#[derive(Debug)]
struct Overflow {
    len: usize,
    sha256: Sha256,
}

impl Text {
    /// Takes the field's bytes from `part`; returns what follows the field
    /// if it ended here or before.
    fn feed<'p>(&mut self, part: &'p [u8], cap: usize) -> Option<&'p [u8]> {
        if self.ended {
            return Some(part);
        }
        let (field, rest) = match part.iter().position(|&b| b == 0) {
            Some(nul) => (&part[..nul], Some(&part[nul + 1..])),
            None => (part, None),
        };
        self.ended = rest.is_some();
        if let Some(overflow) = &mut self.overflow {
            overflow.len += field.len();
            overflow.sha256.update(field);
            return rest;
        }
        let room = cap.saturating_sub(self.bytes.len());
        if field.len() > room {
            // Hashing starts only here, so statements within the cap cost nothing.
            let mut sha256 = Sha256::new();
            sha256.update(&self.bytes);
            sha256.update(field);
            self.overflow = Some(Box::new(Overflow {
                len: self.bytes.len() + field.len(),
                sha256,
            }));
        }
        self.bytes
            .extend_from_slice(&field[..field.len().min(room)]);
        rest
    }

    fn into_query(self) -> QueryText {
        let mut bytes = self.bytes;
        let cut = self.overflow.map(|overflow| {
            trim_partial_char(&mut bytes);
            Cut {
                len: overflow.len,
                sha256: overflow.sha256.finalize().into(),
            }
        });
        // No second copy in the common case of valid UTF-8.
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned());
        QueryText { text, cut }
    }
}

/// A `FunctionCall` body read field by field: integers may arrive in
/// pieces, format codes and argument values are passed over by counting.
#[derive(Debug, Default)]
struct Call {
    event: FunctionCall,
    step: CallStep,
    /// The integer field being read, big-endian.
    field: [u8; 4],
    have: usize,
    /// Bytes still to pass over before the next field.
    skip: usize,
    args_left: u16,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum CallStep {
    #[default]
    Function,
    FormatCount,
    ArgCount,
    ArgSize,
    /// Only the result format code is left, which the audit does not need.
    Done,
}

impl Call {
    fn feed(&mut self, mut part: &[u8]) {
        loop {
            let n = self.skip.min(part.len());
            self.skip -= n;
            part = &part[n..];
            let width = match self.step {
                CallStep::Function | CallStep::ArgSize => 4,
                CallStep::FormatCount | CallStep::ArgCount => 2,
                CallStep::Done => return,
            };
            let n = (width - self.have).min(part.len());
            self.field[self.have..self.have + n].copy_from_slice(&part[..n]);
            self.have += n;
            part = &part[n..];
            if self.have < width {
                return;
            }
            self.have = 0;
            let [a, b, c, d] = self.field;
            let (int16, int32) = (u16::from_be_bytes([a, b]), [a, b, c, d]);
            self.step = match self.step {
                CallStep::Function => {
                    self.event.function = u32::from_be_bytes(int32);
                    CallStep::FormatCount
                }
                CallStep::FormatCount => {
                    self.skip = 2 * usize::from(int16);
                    CallStep::ArgCount
                }
                CallStep::ArgCount => {
                    self.event.args = int16;
                    self.args_left = int16;
                    CallStep::ArgSize
                }
                CallStep::ArgSize => {
                    let size = i32::from_be_bytes(int32);
                    if self.event.arg_sizes.len() < FUNCTION_ARGS_KEPT {
                        self.event.arg_sizes.push(size);
                    }
                    // -1 is NULL, with no value; PostgreSQL refuses other negatives.
                    self.skip = usize::try_from(size).unwrap_or(0);
                    self.args_left -= 1;
                    CallStep::ArgSize
                }
                CallStep::Done => unreachable!("returned above"),
            };
            if self.step == CallStep::ArgSize && self.args_left == 0 {
                self.step = CallStep::Done;
            }
        }
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
    use sha2::{Digest, Sha256};

    use super::*;

    /// A client session: simple query, extended protocol, COPY data, terminate.
    const STREAM: &[u8] = b"Q\0\0\0\x0dSELECT 1\0\
        P\0\0\0\x17s1\0SELECT $1\0\0\x01\0\0\0\x17\
        B\0\0\0\x0e\0s1\0\0\0\0\0\0\0\
        S\0\0\0\x04\
        d\0\0\0\x07abc\
        P\0\0\0\x10\0SELECT 2\0\0\0\
        X\0\0\0\x04";

    /// A statement kept whole.
    fn whole(text: &str) -> QueryText {
        QueryText {
            text: text.into(),
            cut: None,
        }
    }

    fn query(text: &str) -> FrontendEvent {
        FrontendEvent::Query(whole(text))
    }

    fn parse(statement: &str, text: &str) -> FrontendEvent {
        FrontendEvent::Parse {
            statement: statement.into(),
            query: whole(text),
        }
    }

    fn expected() -> Vec<FrontendEvent> {
        vec![
            query("SELECT 1"),
            parse("s1", "SELECT $1"),
            parse("", "SELECT 2"),
            FrontendEvent::Terminate,
        ]
    }

    /// One message: tag, length, body.
    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn scan(chunks: &[&[u8]], cap: usize) -> Result<Vec<FrontendEvent>, ProtocolError> {
        let mut scanner = FrontendScanner::new(1 << 20, cap);
        let mut out = Vec::new();
        for chunk in chunks {
            scanner.feed(chunk, &mut out)?;
        }
        Ok(out)
    }

    /// The events of `stream` fed in chunks of every size in `sizes`; all must agree.
    fn scan_chunked(stream: &[u8], cap: usize, sizes: &[usize]) -> Vec<FrontendEvent> {
        let whole = scan(&[stream], cap).unwrap();
        for &size in sizes {
            let chunks: Vec<&[u8]> = stream.chunks(size).collect();
            assert_eq!(scan(&chunks, cap).unwrap(), whole, "chunks of {size}");
        }
        whole
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
        assert_eq!(out, [query("SELECT 1")]);
    }

    #[test]
    fn query_text_is_capped() {
        let events = scan(&[STREAM], 4).unwrap();
        let texts: Vec<&str> = events[..3]
            .iter()
            .map(|e| match e {
                FrontendEvent::Query(q) | FrontendEvent::Parse { query: q, .. } => q.text.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["SELE", "SELE", "SELE"]);
        // The cap holds at every split too.
        for split in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(split);
            assert_eq!(scan(&[a, b], 4), Ok(events.clone()), "split at {split}");
        }
        let FrontendEvent::Query(q) = &scan(&[STREAM], 0).unwrap()[0] else {
            panic!("a query");
        };
        assert_eq!(q.text, "");
    }

    #[test]
    fn cut_statements_carry_the_whole_length_and_digest() {
        // Multi-byte characters, so the cut also has to respect them.
        let statement = format!("SELECT '{}'", "é".repeat(5000));
        let digest: [u8; 32] = Sha256::digest(statement.as_bytes()).into();
        let cut = Some(Cut {
            len: statement.len(),
            sha256: digest,
        });
        let mut parse_body = b"big\0".to_vec();
        parse_body.extend_from_slice(statement.as_bytes());
        parse_body.extend_from_slice(b"\0\0\x01\0\0\0\x19");
        let mut query_body = statement.as_bytes().to_vec();
        query_body.push(0);
        let stream = [message(b'P', &parse_body), message(b'Q', &query_body)].concat();

        // 4096 is the gateway's cap; 101 cuts "é" in half.
        for cap in [4096, 101] {
            let events = scan_chunked(&stream, cap, &[1, 7, 1000, 4096]);
            let mut kept = statement.as_bytes()[..cap].to_vec();
            if cap % 2 == 1 {
                kept.pop();
            }
            let kept = String::from_utf8(kept).unwrap();
            let expected = QueryText {
                text: kept,
                cut: cut.clone(),
            };
            assert_eq!(
                events,
                [
                    FrontendEvent::Parse {
                        statement: "big".into(),
                        query: expected.clone(),
                    },
                    FrontendEvent::Query(expected),
                ],
                "cap {cap}"
            );
        }
    }

    #[test]
    fn statements_within_the_cap_carry_no_digest() {
        // Exactly the cap: whole, nothing cut.
        assert_eq!(scan(&[STREAM], 8).unwrap()[0], query("SELECT 1"));
        assert_eq!(scan(&[STREAM], 9).unwrap()[1], parse("s1", "SELECT $1"));
    }

    #[test]
    fn large_messages_are_skipped_and_capped_across_chunks() {
        let statement = "SELECT '".to_owned() + &"x".repeat(100_000) + "'";
        let mut stream = Vec::new();
        stream.extend_from_slice(b"d\0\x01\x86\xa4");
        stream.resize(stream.len() + 100_000, b'y');
        stream.push(b'Q');
        stream.extend_from_slice(&(statement.len() as i32 + 5).to_be_bytes());
        stream.extend_from_slice(statement.as_bytes());
        stream.push(0);

        let events = scan_chunked(&stream, 16, &[4096]);
        assert_eq!(
            events,
            [FrontendEvent::Query(QueryText {
                text: "SELECT 'xxxxxxxx".into(),
                cut: Some(Cut {
                    len: statement.len(),
                    sha256: Sha256::digest(statement.as_bytes()).into(),
                }),
            })]
        );
    }

    /// A `FunctionCall` body: `function`, one binary format code, `args`
    /// (`None` for NULL), a text result.
    fn function_call(function: u32, args: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = function.to_be_bytes().to_vec();
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&(args.len() as u16).to_be_bytes());
        for arg in args {
            match arg {
                Some(value) => {
                    body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                    body.extend_from_slice(value);
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        body.extend_from_slice(&0u16.to_be_bytes());
        message(b'F', &body)
    }

    #[test]
    fn function_calls_report_the_function_and_argument_sizes_not_values() {
        // lo_put(oid, offset, bytea): the data argument can be anything, up to
        // the message limit; it must never reach the audit.
        let secret = b"s3cret-".repeat(500);
        let stream = [
            function_call(3252, &[Some(&16_385u32.to_be_bytes()), None, Some(&secret)]),
            message(b'S', b""),
            function_call(2147, &[]),
        ]
        .concat();
        let events = scan_chunked(&stream, 4096, &[1, 3, 5, 64, 4096]);
        assert_eq!(
            events,
            [
                FrontendEvent::FunctionCall(FunctionCall {
                    function: 3252,
                    args: 3,
                    arg_sizes: vec![4, -1, secret.len() as i32],
                }),
                FrontendEvent::FunctionCall(FunctionCall {
                    function: 2147,
                    args: 0,
                    arg_sizes: vec![],
                }),
            ]
        );
        assert!(!format!("{events:?}").contains("s3cret"));
    }

    #[test]
    fn function_call_argument_sizes_are_bounded() {
        let args = vec![None; FUNCTION_ARGS_KEPT + 50];
        let events = scan(&[&function_call(1, &args)], 4096).unwrap();
        assert_eq!(
            events,
            [FrontendEvent::FunctionCall(FunctionCall {
                function: 1,
                args: (FUNCTION_ARGS_KEPT + 50) as u16,
                arg_sizes: vec![-1; FUNCTION_ARGS_KEPT],
            })]
        );
    }

    #[test]
    fn counts_what_the_server_will_answer_with_ready_for_query() {
        let mut scanner = FrontendScanner::new(1024, 100);
        let mut out = Vec::new();
        let batch = [
            message(b'P', b"\0select 1\0\0\0"),
            message(b'B', b"\0\0\0\0\0\0\0\0"),
            message(b'E', b"\0\0\0\0\0"),
        ]
        .concat();
        scanner.feed(&batch, &mut out).unwrap();
        let open = Requests {
            awaiting_ready: 0,
            batch_open: true,
        };
        assert_eq!(scanner.take_requests(), open);
        let rest = [message(b'S', b""), message(b'Q', b"select 2\0")].concat();
        // Split inside the Query's header: it counts once, when whole.
        scanner.feed(&rest[..7], &mut out).unwrap();
        assert_eq!(scanner.take_requests().awaiting_ready, 1);
        scanner.feed(&rest[7..], &mut out).unwrap();
        let answered = Requests {
            awaiting_ready: 1,
            batch_open: false,
        };
        assert_eq!(scanner.take_requests(), answered);
        // CopyData and Terminate ask for nothing.
        scanner
            .feed(
                &[message(b'd', b"x"), message(b'X', b"")].concat(),
                &mut out,
            )
            .unwrap();
        assert_eq!(scanner.take_requests(), Requests::default());
    }

    #[test]
    fn truncation_does_not_split_a_character() {
        // "é" is two bytes; a cap of 2 would cut it after one.
        let stream = b"Q\0\0\0\x08a\xc3\xa9\0";
        let text = |cap| match &scan(&[stream], cap).unwrap()[0] {
            FrontendEvent::Query(q) => q.text.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(text(2), "a");
        assert_eq!(text(3), "aé");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let stream = b"Q\0\0\0\x07a\xff\0";
        assert_eq!(scan(&[stream], 100), Ok(vec![query("a\u{fffd}")]));
    }

    #[test]
    fn unterminated_query_reports_what_was_seen() {
        let stream = b"Q\0\0\0\x07abc";
        assert_eq!(scan(&[stream], 100), Ok(vec![query("abc")]));
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

        let scan = |chunk: &[u8]| {
            let mut scanner = FrontendScanner::new(1024, 100);
            scanner.feed(chunk, &mut Vec::new())
        };
        assert_eq!(
            scan(b"d\xff\xff\xff\xfe"),
            Err(ProtocolError::NegativeLength(-2))
        );
        assert_eq!(
            scan(b"d\0\0\x04\x05"),
            Err(ProtocolError::MessageTooLarge {
                tag: b'd',
                len: 1025,
                max: 1024
            })
        );
        assert_eq!(scan(b"d\0\0\x04\x04"), Ok(()));
    }
}
