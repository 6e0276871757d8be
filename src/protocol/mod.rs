//! The protocol layer: codecs that are state machines over the connection's own bytes,
//! in the style of rustls and tungstenite, with the reactor's limits kept.
//!
//! A framing codec ([`crate::LengthCodec`], lines) only says where a frame ends; the
//! reactor reads it on its fastest path and may walk the frames twice. A protocol
//! (WebSocket, say) needs more: it unmasks payloads in place, answers the peer itself
//! (an HTTP `101`, a pong, a close frame), changes phase (an HTTP head, then frames),
//! and puts fragments together into one message. Such a codec says so
//! ([`Codec::is_protocol`]) and implements [`Codec::process`]; the reactor then:
//!
//! ```text
//!   socket --read--> the connection's own input buffer (counted in the memory budget;
//!                    a partial unit there has the frame deadline)
//!            process(state, &mut bytes, io), once per unit, in place:
//!              io.reply(..)  -> the connection's output queue, in order, before the
//!                               service's answers (a 101 comes before a welcome)
//!              io.kind(..), io.part(..)  -> what the service is handed with the unit
//!              io.skip()     -> the protocol's own unit (a ping): nothing handed over
//!              io.close()    -> close once the replies are written
//!              Err(e)        -> replies written so far, then `error_reply`, are the
//!                               peer's last words before a graceful close
//!            on_frames(Frames): each unit decoded once; `Frames::units()` gives its
//!              payload, kind and parts (a RESP request's arguments, say)
//! ```
//!
//! Nothing of a connection's input lives outside the reactor's buffers, so the memory
//! budget, the frame deadline and the size limits hold for protocols as for frames,
//! however the bytes arrive. Units of a protocol are handed over whole: a service
//! cannot leave some for later ([`crate::Payloads::hold_rest`]); the reactor's
//! backpressure acts between reads instead (a connection whose output is over the
//! write limit is not read).
//!
//! [`Codec::is_protocol`]: crate::Codec::is_protocol
//! [`Codec::process`]: crate::Codec::process

use std::ops::Range;

use crate::buffer::Buffer;

#[cfg(feature = "admin")]
pub mod http;
#[cfg(feature = "websocket")]
pub mod websocket;

/// The kinds of the units [`websocket::WebSocketCodec`](crate::protocol) hands over
/// ([`Unit::kind`]). Declared outside the `websocket` feature, so that a service with
/// WebSocket and other endpoints tells their units apart with no feature gate of its
/// own.
pub mod websocket_kinds {
    /// The upgrade is done: the connection is a WebSocket from now on. No payload.
    pub const OPEN: u32 = 1;
    /// A text message (its payload is UTF-8).
    pub const TEXT: u32 = 2;
    /// A binary message.
    pub const BINARY: u32 = 3;
}

/// What a protocol codec may do while it processes one unit ([`crate::Codec::process`]):
/// answer the peer, say what the unit is, or keep it for itself.
#[derive(Debug)]
pub struct ProtocolIo<'a> {
    /// Bytes for the peer, queued on the connection in order.
    replies: &'a mut Buffer,
    /// Parts of this unit's payload, for the service (in the coordinates of the bytes
    /// given to `process`), after those of earlier units.
    parts: &'a mut Vec<Range<usize>>,
    /// Where this unit's parts begin in `parts`.
    first_part: usize,
    kind: u32,
    skip: bool,
    close: bool,
    /// Reply bytes that still fit under the connection's write limit, counted from
    /// before this read's replies.
    room: usize,
}

impl<'a> ProtocolIo<'a> {
    /// An io for one unit, writing replies to `replies` and parts to `parts`.
    pub fn new(replies: &'a mut Buffer, parts: &'a mut Vec<Range<usize>>) -> Self {
        let first_part = parts.len();
        ProtocolIo {
            replies,
            parts,
            first_part,
            kind: 0,
            skip: false,
            close: false,
            room: usize::MAX,
        }
    }

    /// Limits the replies to `room` bytes (what the connection's output may still
    /// take under the write limit).
    pub(crate) fn with_room(mut self, room: usize) -> Self {
        self.room = room;
        self
    }

    /// How many more reply bytes fit under the connection's write limit: a protocol
    /// that answers on its own (a pong per ping) stops answering a peer that sends
    /// faster than it reads, so its output cannot grow past the limit.
    pub fn room(&self) -> usize {
        self.room.saturating_sub(self.replies.len())
    }

    /// Queues `bytes` for the peer (a handshake answer, a pong): they go out before
    /// whatever the service answers to the units of this read.
    pub fn reply(&mut self, bytes: &[u8]) {
        self.replies.extend_from_slice(bytes);
    }

    /// The reply buffer itself, for a codec that writes its answer in place.
    pub fn replies(&mut self) -> &mut Buffer {
        self.replies
    }

    /// Says what the unit is, for the service (a WebSocket message's opcode, say):
    /// [`Unit::kind`]. 0 unless set.
    pub fn kind(&mut self, kind: u32) {
        self.kind = kind;
    }

    /// Marks `range` of the unit's bytes (as given to `process`) as one of its parts
    /// (a RESP request's arguments): [`Unit::parts`].
    pub fn part(&mut self, range: Range<usize>) {
        self.parts.push(range);
    }

    /// The unit is the protocol's own (a ping it answered, a close): nothing is handed
    /// to the service.
    pub fn skip(&mut self) {
        self.skip = true;
    }

    /// Close the connection once the replies are written (a page served, a close
    /// handshake answered). Nothing after this unit is processed.
    pub fn close(&mut self) {
        self.close = true;
    }

    /// Whether every part named for this unit lies within its first `len` bytes: a
    /// codec's mistake must not send the reactor past the unit.
    pub(crate) fn parts_within(&self, len: usize) -> bool {
        self.parts[self.first_part..]
            .iter()
            .all(|part| part.start <= part.end && part.end <= len)
    }

    /// Forgets the parts named for a unit that turned out incomplete (or broken).
    pub(crate) fn abandon(self) {
        self.parts.truncate(self.first_part);
    }

    /// Whether the codec asked for a close.
    pub fn closing(&self) -> bool {
        self.close
    }

    /// The unit's outcome, for the reactor: its kind and its parts' range in the part
    /// list, shifted by `offset` (where the unit's bytes began in the read's bytes),
    /// or `None` when skipped.
    pub(crate) fn finish(self, offset: usize) -> Option<(u32, Range<usize>)> {
        let first = self.first_part;
        if self.skip {
            self.parts.truncate(first);
            return None;
        }
        for part in &mut self.parts[first..] {
            *part = part.start + offset..part.end + offset;
        }
        Some((self.kind, first..self.parts.len()))
    }
}

/// One unit a protocol handed over, as the reactor recorded it: where its payload is
/// in the read's bytes, its kind, and its parts in the part list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitRecord {
    pub payload: Range<usize>,
    pub kind: u32,
    pub parts: Range<usize>,
}

/// The units of one read of a protocol connection, recorded once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Units<'a> {
    pub records: &'a [UnitRecord],
    pub parts: &'a [Range<usize>],
}

/// One unit handed to the service: its payload, what it is, and its parts.
///
/// For a framing codec every unit is a frame: kind 0, no parts.
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    /// The unit's payload (a message, a request).
    pub payload: &'a [u8],
    kind: u32,
    /// The read's bytes, which the part ranges index.
    wire: &'a [u8],
    parts: &'a [Range<usize>],
}

impl<'a> Unit<'a> {
    /// A unit of `payload` with no kind and no parts.
    pub(crate) fn plain(payload: &'a [u8]) -> Self {
        Unit {
            payload,
            kind: 0,
            wire: payload,
            parts: &[],
        }
    }

    pub(crate) fn recorded(wire: &'a [u8], record: &UnitRecord, parts: &'a [Range<usize>]) -> Self {
        Unit {
            payload: &wire[record.payload.clone()],
            kind: record.kind,
            wire,
            parts: &parts[record.parts.clone()],
        }
    }

    /// What the protocol said the unit is ([`ProtocolIo::kind`]).
    pub fn kind(&self) -> u32 {
        self.kind
    }

    /// How many parts it has.
    pub fn part_count(&self) -> usize {
        self.parts.len()
    }

    /// Part `i`, if there is one.
    pub fn part(&self, i: usize) -> Option<&'a [u8]> {
        self.parts.get(i).map(|range| &self.wire[range.clone()])
    }

    /// Its parts, in order ([`ProtocolIo::part`]).
    pub fn parts(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let wire = self.wire;
        self.parts.iter().map(move |range| &wire[range.clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_shifted_to_the_read_and_dropped_for_a_skipped_unit() {
        let mut replies = Buffer::new();
        let mut parts = Vec::new();
        parts.push(0..1);
        let mut io = ProtocolIo::new(&mut replies, &mut parts);
        io.part(2..4);
        io.kind(7);
        assert_eq!(io.finish(10), Some((7, 1..2)));
        assert_eq!(parts, vec![0..1, 12..14]);
        let mut io = ProtocolIo::new(&mut replies, &mut parts);
        io.part(0..1);
        io.reply(b"pong");
        io.skip();
        assert_eq!(io.finish(20), None);
        assert_eq!(parts.len(), 2);
        assert_eq!(replies.readable(), b"pong");
    }

    #[test]
    fn a_recorded_unit_hands_out_its_payload_kind_and_parts() {
        let wire = b"*2 GET key";
        let parts = [3..6, 7..10];
        let record = UnitRecord {
            payload: 0..10,
            kind: 1,
            parts: 0..2,
        };
        let unit = Unit::recorded(wire, &record, &parts);
        assert_eq!(unit.kind(), 1);
        assert_eq!(unit.part(1), Some(&b"key"[..]));
        assert_eq!(unit.parts().collect::<Vec<_>>(), [&b"GET"[..], b"key"]);
        assert_eq!(unit.payload, wire);
    }
}
