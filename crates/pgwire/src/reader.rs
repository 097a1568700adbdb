//! A bounds-checked cursor over a message body, so decoders never index out of range.

use crate::ProtocolError;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, ProtocolError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<4>()
            .ok_or(ProtocolError::Malformed(what))?;
        self.buf = rest;
        Ok(i32::from_be_bytes(*head))
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(ProtocolError::Malformed(what))?;
        self.buf = rest;
        Ok(b)
    }

    /// A NUL-terminated string, without its terminator.
    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::Malformed(what))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// A NUL-terminated string that must be UTF-8.
    pub(crate) fn utf8_cstr(&mut self, what: &'static str) -> Result<&'a str, ProtocolError> {
        std::str::from_utf8(self.cstr(what)?).map_err(|_| ProtocolError::Malformed(what))
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], ProtocolError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(ProtocolError::Malformed(what))?;
        self.buf = rest;
        Ok(*head)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Trailing bytes mean the peer and we disagree about the layout; refuse rather than guess.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Malformed(what))
        }
    }
}
