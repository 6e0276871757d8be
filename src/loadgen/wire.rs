//! The bytes of one client connection: an input buffer that reassembles messages from
//! the stream, an output buffer that batches messages into one write, and the payload
//! pattern every message is built from and checked against.
//!
//! A payload of `size` bytes is the message's sequence number (8 bytes, little-endian)
//! followed by `pattern[offset + 8 .. offset + size]`, where the offset depends on the
//! connection and the sequence number. Checking a reply is then two comparisons (a
//! `memcmp` for the body), and a reply that belongs to another message or another
//! connection differs from the expected one.

use std::io::{self, Read, Write};

/// Bytes of the length header in switchboard's wire format.
pub const HEADER: usize = 4;

/// Offsets into the pattern cycle through this many values.
const OFFSETS: usize = 251;

/// Pseudo-random bytes that payloads are cut from. Shared by all connections.
#[derive(Debug)]
pub struct Pattern {
    bytes: Box<[u8]>,
    size: usize,
}

impl Pattern {
    /// A pattern for payloads of `size` bytes (at least 8).
    pub fn new(size: usize) -> Self {
        // xorshift64: fixed seed, so runs are reproducible; any corruption shows.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let bytes = (0..size + OFFSETS)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        Pattern { bytes, size }
    }

    /// Payload size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The body (everything after the sequence number) of message `seq` on `conn`.
    fn body(&self, conn: usize, seq: u64) -> &[u8] {
        let offset = (conn.wrapping_mul(31) as u64).wrapping_add(seq) % OFFSETS as u64;
        let offset = offset as usize;
        &self.bytes[offset + 8..offset + self.size]
    }

    /// Appends the payload of message `seq` on `conn` to `out`.
    pub fn append(&self, conn: usize, seq: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(self.body(conn, seq));
    }

    /// The sequence number a payload claims, if it is long enough to have one.
    pub fn seq_of(payload: &[u8]) -> Option<u64> {
        let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    }

    /// True when `payload` is exactly message `seq` of `conn`.
    pub fn matches(&self, conn: usize, seq: u64, payload: &[u8]) -> bool {
        payload.len() == self.size
            && Self::seq_of(payload) == Some(seq)
            && &payload[8..] == self.body(conn, seq)
    }
}

/// What a read did to an [`Inbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// New bytes arrived; the socket may hold more.
    More(usize),
    /// New bytes arrived and the socket is drained (a short read).
    Drained(usize),
    /// Nothing to read now.
    WouldBlock,
    /// The peer closed the connection.
    Closed,
}

/// Received bytes not yet consumed. Its storage is allocated once.
#[derive(Debug)]
pub struct Inbox {
    buf: Box<[u8]>,
    /// First unconsumed byte.
    start: usize,
    /// One past the last received byte.
    end: usize,
}

impl Inbox {
    /// An inbox holding at most `capacity` unconsumed bytes.
    pub fn new(capacity: usize) -> Self {
        Inbox {
            buf: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The received bytes not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` pending bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes sure a message of `len` bytes can be held whole (grows, rarely: only for
    /// a chat frame bigger than any seen before).
    pub fn reserve_message(&mut self, len: usize) {
        if len > self.buf.len() {
            let mut bigger = vec![0; len].into_boxed_slice();
            bigger[..self.end - self.start].copy_from_slice(self.pending());
            self.end -= self.start;
            self.start = 0;
            self.buf = bigger;
        }
    }

    /// One read from `source` into the free space (after moving a partial message to
    /// the front, if the free space at the end is used up).
    pub fn fill(&mut self, source: &mut impl Read) -> io::Result<Filled> {
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let spare = &mut self.buf[self.end..];
        let wanted = spare.len();
        loop {
            return match source.read(spare) {
                Ok(0) => Ok(Filled::Closed),
                Ok(n) => {
                    self.end += n;
                    Ok(if n < wanted {
                        Filled::Drained(n)
                    } else {
                        Filled::More(n)
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Filled::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }
}

/// Where the next message in a byte stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A whole message: payload at `pending[start..start + len]`, `used` bytes in all.
    Message {
        start: usize,
        len: usize,
        used: usize,
    },
    /// A header announced this payload length, and the rest has not arrived yet.
    Partial { len: usize },
    /// Not even a header yet.
    Nothing,
}

/// Finds the first length-prefixed frame in `pending`.
pub fn next_frame(pending: &[u8]) -> Next {
    let Some(header) = pending.get(..HEADER) else {
        return Next::Nothing;
    };
    let mut len = [0u8; HEADER];
    len.copy_from_slice(header);
    let len = u32::from_be_bytes(len) as usize;
    if pending.len() < HEADER + len {
        return Next::Partial { len };
    }
    Next::Message {
        start: HEADER,
        len,
        used: HEADER + len,
    }
}

/// Bytes to send, batched so one `write` carries every message queued in a turn. Its
/// storage is allocated once.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    sent: usize,
}

impl Outbox {
    /// An outbox that holds `capacity` bytes without growing.
    pub fn new(capacity: usize) -> Self {
        Outbox {
            buf: Vec::with_capacity(capacity),
            sent: 0,
        }
    }

    /// The buffer to append messages to. Written bytes are dropped from its front
    /// first, so the storage does not grow while the socket keeps up.
    pub fn append(&mut self) -> &mut Vec<u8> {
        if self.sent > 0 {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
        &mut self.buf
    }

    /// Appends a length header for a payload of `len` bytes.
    pub fn header(&mut self, len: usize) {
        self.append().extend_from_slice(&(len as u32).to_be_bytes());
    }

    /// True when everything appended has been written.
    pub fn is_empty(&self) -> bool {
        self.sent == self.buf.len()
    }

    /// Writes until everything is sent or the socket is full. Returns true when
    /// everything was sent.
    pub fn flush(&mut self, sink: &mut impl Write) -> io::Result<bool> {
        while self.sent < self.buf.len() {
            match sink.write(&self.buf[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.sent = 0;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_matches_only_its_own_message() {
        let pattern = Pattern::new(64);
        let mut payload = Vec::new();
        pattern.append(3, 17, &mut payload);
        assert_eq!(payload.len(), 64);
        assert_eq!(Pattern::seq_of(&payload), Some(17));
        assert!(pattern.matches(3, 17, &payload));
        assert!(!pattern.matches(3, 18, &payload), "another sequence number");
        assert!(!pattern.matches(4, 17, &payload), "another connection");
        payload[40] ^= 1;
        assert!(!pattern.matches(3, 17, &payload), "a flipped bit");
        assert!(!pattern.matches(3, 17, &payload[..63]), "a short payload");
    }

    #[test]
    fn frames_are_found_whole_or_reported_partial() {
        let wire = [0, 0, 0, 2, b'h', b'i', 0, 0, 0, 5, b'x'];
        assert_eq!(
            next_frame(&wire),
            Next::Message {
                start: 4,
                len: 2,
                used: 6
            }
        );
        assert_eq!(next_frame(&wire[6..]), Next::Partial { len: 5 });
        assert_eq!(next_frame(&wire[6..8]), Next::Nothing);
    }

    #[test]
    fn inbox_reads_and_compacts_a_partial_message() {
        let mut inbox = Inbox::new(8);
        let mut source: &[u8] = b"abcdefghij";
        assert_eq!(inbox.fill(&mut source).unwrap(), Filled::More(8));
        inbox.consume(6);
        assert_eq!(inbox.pending(), b"gh");
        assert_eq!(inbox.fill(&mut source).unwrap(), Filled::Drained(2));
        assert_eq!(inbox.pending(), b"ghij");
        assert_eq!(inbox.fill(&mut source).unwrap(), Filled::Closed);
    }

    #[test]
    fn inbox_grows_for_a_bigger_message() {
        let mut inbox = Inbox::new(4);
        let mut source: &[u8] = b"abcd";
        inbox.fill(&mut source).unwrap();
        inbox.consume(1);
        inbox.reserve_message(10);
        assert_eq!(inbox.pending(), b"bcd");
    }

    #[test]
    fn outbox_keeps_what_a_full_socket_did_not_take() {
        struct Takes(usize, Vec<u8>);
        impl Write for Takes {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                self.1.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut outbox = Outbox::new(16);
        outbox.header(2);
        outbox.append().extend_from_slice(b"hi");
        let mut sink = Takes(3, Vec::new());
        assert!(!outbox.flush(&mut sink).unwrap());
        assert!(!outbox.is_empty());
        outbox.append().extend_from_slice(b"!");
        sink.0 = 100;
        assert!(outbox.flush(&mut sink).unwrap());
        assert_eq!(sink.1, [0, 0, 0, 2, b'h', b'i', b'!']);
    }
}
