//! Where messages end in a relayed stream, without holding on to it.
//!
//! A proxy that must add a message of its own to a stream it relays (a
//! FATAL ErrorResponse when it ends a session) may only do so between two
//! messages. [`Boundaries`] follows the 5-byte headers of the stream as
//! chunks pass through and says where the message in progress ends.
//! It also notes each ReadyForQuery it passes, which is how a proxy tells a
//! running statement from an idle session (and an idle transaction).

use crate::ProtocolError;
use crate::message::{HEADER_LEN, body_len};

/// Follows message boundaries in a stream of regular (tagged) messages.
#[derive(Debug, Default)]
pub struct Boundaries {
    header: [u8; HEADER_LEN],
    /// Header bytes collected so far (0 between messages or inside a body).
    have: usize,
    /// Body bytes of the current message still to come.
    remaining: usize,
    /// Tag of the message in progress (or the last one).
    tag: u8,
    /// ReadyForQuery messages passed since [`Boundaries::take_ready`].
    ready: Ready,
}

/// The ReadyForQuery messages a stream passed since the last look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// How many.
    pub count: u32,
    /// The transaction status byte of the last one: `I` idle, `T` in a
    /// transaction, `E` in a failed transaction.
    pub status: u8,
}

impl Boundaries {
    /// Whether the bytes seen so far end exactly after a whole message.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Returns the ReadyForQuery messages passed since the last call and
    /// forgets them; `None` when there were none.
    pub fn take_ready(&mut self) -> Option<Ready> {
        let ready = std::mem::take(&mut self.ready);
        (ready.count > 0).then_some(ready)
    }

    /// Follows all of `chunk`.
    pub fn advance(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        let mut rest = chunk;
        while !rest.is_empty() {
            rest = &rest[self.step(rest)?..];
        }
        Ok(())
    }

    /// Follows `chunk` up to the end of the message in progress and returns
    /// how many of its bytes that took (0 when already at a boundary), or
    /// `None` when the chunk ends before the message does (all of it was
    /// followed).
    pub fn until_boundary(&mut self, chunk: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let mut used = 0;
        while !self.at_boundary() {
            if used == chunk.len() {
                return Ok(None);
            }
            used += self.step(&chunk[used..])?;
        }
        Ok(Some(used))
    }

    /// Follows the next part of `bytes` (header bytes, or body bytes) and
    /// returns how many were used; `bytes` is not empty.
    fn step(&mut self, bytes: &[u8]) -> Result<usize, ProtocolError> {
        if self.remaining > 0 {
            let take = self.remaining.min(bytes.len());
            self.remaining -= take;
            if self.tag == b'Z' && self.remaining == 0 {
                // The status is the last (and only) byte of the body.
                self.ready.count += 1;
                self.ready.status = bytes[take - 1];
            }
            return Ok(take);
        }
        let take = (HEADER_LEN - self.have).min(bytes.len());
        self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
        self.have += take;
        if self.have == HEADER_LEN {
            let [tag, a, b, c, d] = self.header;
            // Only the framing matters here, not a size limit: the bytes
            // are relayed, never buffered.
            self.remaining = body_len(tag, i32::from_be_bytes([a, b, c, d]), usize::MAX)?;
            self.have = 0;
            self.tag = tag;
        }
        Ok(take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two messages: `Z` (6 bytes) and `D` (15 bytes).
    const STREAM: &[u8] = b"Z\0\0\0\x05ID\0\0\0\x0e\0\x01\0\0\0\x04abcd";

    #[test]
    fn follows_messages_split_anywhere() {
        for split in 0..=STREAM.len() {
            let mut b = Boundaries::default();
            b.advance(&STREAM[..split]).unwrap();
            b.advance(&STREAM[split..]).unwrap();
            assert!(b.at_boundary(), "split at {split}");
        }
        let mut b = Boundaries::default();
        assert!(b.at_boundary());
        b.advance(&STREAM[..3]).unwrap();
        assert!(!b.at_boundary(), "inside a header");
        b.advance(&STREAM[3..8]).unwrap();
        assert!(!b.at_boundary(), "inside a body");
        b.advance(&STREAM[8..]).unwrap();
        assert!(b.at_boundary());
    }

    #[test]
    fn finds_where_the_message_in_progress_ends() {
        let mut b = Boundaries::default();
        assert_eq!(b.until_boundary(STREAM), Ok(Some(0)));
        b.advance(&STREAM[..2]).unwrap();
        // The first message ends at byte 6: 4 more bytes of this chunk.
        assert_eq!(b.until_boundary(&STREAM[2..]), Ok(Some(4)));
        assert!(b.at_boundary());

        let mut b = Boundaries::default();
        b.advance(&STREAM[..8]).unwrap();
        assert_eq!(b.until_boundary(&STREAM[8..12]), Ok(None));
        assert_eq!(b.until_boundary(&STREAM[12..]), Ok(Some(STREAM.len() - 12)));
    }

    #[test]
    fn notes_each_ready_for_query_and_its_status() {
        let stream = [STREAM, b"Z\0\0\0\x05T", b"C\0\0\0\x05Z"].concat();
        for split in 0..=stream.len() {
            let mut b = Boundaries::default();
            b.advance(&stream[..split]).unwrap();
            let first = b.take_ready();
            b.advance(&stream[split..]).unwrap();
            let second = b.take_ready();
            let count = first.map_or(0, |r| r.count) + second.map_or(0, |r| r.count);
            assert_eq!(count, 2, "split at {split}");
            let last = second.or(first).unwrap();
            assert_eq!(last.status, b'T', "split at {split}");
            assert_eq!(b.take_ready(), None);
        }
    }

    #[test]
    fn broken_framing_is_an_error() {
        let mut b = Boundaries::default();
        assert_eq!(
            b.advance(b"D\xff\xff\xff\xff"),
            Err(ProtocolError::NegativeLength(-1))
        );
        let mut b = Boundaries::default();
        assert!(b.advance(b"D\0\0\0\x03").is_err());
    }
}
