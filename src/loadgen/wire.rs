//! The load generator's bytes: the codec its connections speak (the library's length
//! framing, or fixed-size raw messages), and the payload pattern every message is built
//! from and checked against. Framing itself is the reactor's: replies arrive as whole
//! frames, however the stream was cut.
//!
//! A payload of `size` bytes is the message's sequence number (8 bytes, little-endian)
//! followed by `pattern[offset + 8 .. offset + size]`, where the offset depends on the
//! connection and the sequence number. Checking a reply is then two comparisons (a
//! `memcmp` for the body), and a reply that belongs to another message or another
//! connection differs from the expected one.

use crate::frame::Scan;
use crate::{Buffer, Codec, Decode, FrameError, LengthCodec};

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

    /// Appends message `seq` on `conn`, framed by `codec`, to `out`: its header, then
    /// its payload built in place (no copy through a payload buffer).
    pub fn append_framed(
        &self,
        codec: &LoadCodec,
        conn: usize,
        seq: u64,
        out: &mut Buffer,
    ) -> Result<(), FrameError> {
        if let LoadCodec::Length(codec) = codec {
            codec.encode_header(self.size, out)?;
        }
        // Written straight into the buffer's spare room: one bounds check, two copies.
        let payload = &mut out.spare_mut(self.size)[..self.size];
        payload[..8].copy_from_slice(&seq.to_le_bytes());
        payload[8..].copy_from_slice(self.body(conn, seq));
        out.commit(self.size);
        Ok(())
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

/// How the load generator frames its connections: switchboard's length framing, or,
/// against a raw echo server, none at all (a reply is every `size` bytes of the
/// stream, however the reads cut it).
#[derive(Debug, Clone)]
pub enum LoadCodec {
    /// 4-byte big-endian length, then the payload.
    Length(LengthCodec),
    /// Fixed-size messages with no header.
    Fixed(usize),
}

impl Codec for LoadCodec {
    type State = ();

    #[inline]
    fn decode(&self, state: &mut (), buf: &[u8]) -> Result<Decode, FrameError> {
        match self {
            LoadCodec::Length(codec) => codec.decode(state, buf),
            LoadCodec::Fixed(size) if buf.len() >= *size => Ok(Decode::Frame {
                payload: 0..*size,
                consumed: *size,
            }),
            LoadCodec::Fixed(size) => Ok(Decode::Incomplete {
                frame_len: Some(*size),
            }),
        }
    }

    #[inline]
    fn scan(&self, state: &mut (), buf: &[u8]) -> Scan {
        match self {
            LoadCodec::Length(codec) => codec.scan(state, buf),
            LoadCodec::Fixed(_) => crate::frame::scan_by_decode(self, state, buf),
        }
    }

    fn encode(&self, payload: &[u8], out: &mut Buffer) -> Result<(), FrameError> {
        match self {
            LoadCodec::Length(codec) => codec.encode(payload, out),
            LoadCodec::Fixed(_) => {
                out.extend_from_slice(payload);
                Ok(())
            }
        }
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
}
