//! Framing: how a TCP byte stream is cut into messages, and how a message is put back
//! on the wire.
//!
//! TCP delivers a stream of bytes, not messages: one `read` may return half a message,
//! or three and a half (the "sticky packet" problem). A [`Codec`] looks at the bytes
//! received so far and says either "here is one complete frame, and it used this many
//! bytes" or "incomplete, wait for more". Incomplete is not an error: the reactor keeps
//! the partial tail and asks again after the next read.
//!
//! Decoding is done in two phases, cheapest first: peek at the header to learn the frame
//! length (no copy), and only when the whole frame is present hand out the payload as a
//! range of the caller's buffer, so the payload is never copied by the decoder.
//!
//! The codecs here:
//! - [`LengthCodec`]: a length header, then the payload. The default, [`LengthCodec::new`],
//!   is switchboard's wire format: 4-byte big-endian payload length, then the payload;
//!   [`LengthCodec::builder`] describes other length-prefixed formats (field width,
//!   byte order, signedness, bytes before the field, what the length counts).
//! - [`LinesCodec`]: newline-terminated lines.
//! - [`RawCodec`]: no framing; every chunk that arrives is one "frame" (a plain stream).
//! - [`AnyCodec`]: any of these, chosen per endpoint at run time.
//!
//! [`wire`] writes and reads switchboard's format over blocking `std::io` streams.

mod length;
pub mod wire;

use std::fmt;
use std::ops::Range;

use crate::buffer::Buffer;

pub use length::{
    Endian, LengthCodec, LengthCodecBuilder, LengthCodecError, LengthCovers, Payload, Signedness,
    DEFAULT_MAX_PAYLOAD,
};

/// What a codec found at the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decode {
    /// One complete frame: its payload is `buf[payload]`, and the frame, header
    /// included, used the first `consumed` bytes of the buffer.
    Frame {
        /// Where the payload sits in the buffer that was decoded.
        payload: Range<usize>,
        /// How many bytes the whole frame occupies, from the start of the buffer.
        consumed: usize,
    },
    /// Not enough bytes yet. `frame_len`, when the header has been seen, is the whole
    /// frame's length, so the caller can make room for it in one go.
    Incomplete {
        /// Total length of the frame being received, when already known.
        frame_len: Option<usize>,
    },
}

/// A framing violation: the peer sent something the codec cannot accept. The
/// connection it came from is closed; nothing else is affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A frame announced (or a line reached) more bytes than the configured maximum.
    TooLarge {
        /// The length announced or reached.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The header cannot describe a valid frame (for example a length smaller than the
    /// header itself when the length counts the header).
    Malformed(&'static str),
    /// Where a length header was expected came text: a too-large "length" whose bytes
    /// are printable characters. A peer speaking another protocol: a person typing into
    /// `nc`, or (`http`) an HTTP client.
    NotFrames {
        /// The length those bytes would announce.
        len: u64,
        /// The configured maximum.
        max: usize,
        /// The text is the start of an HTTP request line (`GET `, `POST`, ...).
        http: bool,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            FrameError::Malformed(why) => write!(f, "malformed frame: {why}"),
            FrameError::NotFrames { len, max, http } => write!(
                f,
                "frame of {len} bytes exceeds the maximum of {max}: the bytes are {}, \
                 not a length (this port speaks length-prefixed frames)",
                if *http { "an HTTP request" } else { "text" }
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// Cuts a byte stream into frames and writes frames back.
///
/// `decode` is called with everything received on a connection and not yet consumed,
/// from the start of the first incomplete frame, and with that connection's
/// [`Codec::State`]. A stateless codec (the length codecs) has `()` for state; a codec
/// that scans (lines) keeps how far it got, so a long partial line is scanned once
/// however many reads it takes; a protocol whose framing changes over a connection's
/// life (a handshake, then frames) keeps its phase there.
///
/// ```
/// use switchboard::{Codec, Decode, LengthCodec};
/// let codec = LengthCodec::new(1024);
/// let wire = [0, 0, 0, 2, b'h', b'i', 0, 0];
/// assert_eq!(
///     codec.decode(&mut (), &wire).unwrap(),
///     Decode::Frame { payload: 4..6, consumed: 6 }
/// );
/// assert_eq!(codec.decode(&mut (), &wire[6..]).unwrap(), Decode::Incomplete { frame_len: None });
/// ```
///
/// A codec of your own is any type implementing the two methods; the reactor takes
/// whichever codec it is given. Netstrings (`5:hello,`), for example:
///
/// ```
/// use switchboard::{Buffer, Codec, Decode, FrameError};
///
/// struct Netstrings;
///
/// impl Codec for Netstrings {
///     type State = ();
///
///     fn decode(&self, _state: &mut (), buf: &[u8]) -> Result<Decode, FrameError> {
///         // At most 7 digits (payloads under 10 MB), then ':'.
///         let Some(colon) = buf.iter().take(8).position(|&b| b == b':') else {
///             return match buf.len() {
///                 0..=7 => Ok(Decode::Incomplete { frame_len: None }),
///                 _ => Err(FrameError::Malformed("netstring length too long")),
///             };
///         };
///         let len: usize = std::str::from_utf8(&buf[..colon])
///             .ok()
///             .and_then(|digits| digits.parse().ok())
///             .ok_or(FrameError::Malformed("netstring length is not a number"))?;
///         let frame_len = colon + 1 + len + 1;
///         match buf.get(frame_len - 1) {
///             None => Ok(Decode::Incomplete { frame_len: Some(frame_len) }),
///             Some(b',') => Ok(Decode::Frame { payload: colon + 1..frame_len - 1, consumed: frame_len }),
///             Some(_) => Err(FrameError::Malformed("netstring without its ','")),
///         }
///     }
///
///     fn encode(&self, payload: &[u8], out: &mut Buffer) -> Result<(), FrameError> {
///         out.extend_from_slice(format!("{}:", payload.len()).as_bytes());
///         out.extend_from_slice(payload);
///         out.extend_from_slice(b",");
///         Ok(())
///     }
/// }
///
/// let (frames, used) = switchboard::frame::decode_all(&Netstrings, b"5:hello,0:,3:ab").unwrap();
/// assert_eq!(frames, vec![b"hello".to_vec(), vec![]]);
/// assert_eq!(used, 11); // "5:hello," and "0:,"; "3:ab" waits for more
/// ```
pub trait Codec {
    /// What the codec remembers about one connection between calls: `()` for a
    /// stateless format. The reactor keeps one per connection, beside it in the slab,
    /// starting from `Default`. It is cloned when a service walks a batch of frames
    /// again ([`crate::Frames::payloads`]), so it should be small.
    type State: Default + Clone;

    /// Looks for one complete frame at the start of `buf`.
    fn decode(&self, state: &mut Self::State, buf: &[u8]) -> Result<Decode, FrameError>;

    /// Appends `payload`, framed, to `out`.
    fn encode(&self, payload: &[u8], out: &mut Buffer) -> Result<(), FrameError>;

    /// Finds every complete frame at the start of `buf`, the way the reactor walks a
    /// read's bytes before handing them to the service. The default calls
    /// [`Codec::decode`] once per frame; a codec may walk faster (the length codec's
    /// own format does, in the tightest loop of the server).
    #[inline]
    fn scan(&self, state: &mut Self::State, buf: &[u8]) -> Scan {
        scan_by_decode(self, state, buf)
    }

    /// A peer broke the format (`decode` returned `error`): the last words it gets, in
    /// the protocol, appended to `out` (RESP's `-ERR Protocol error`, an HTTP `400`, a
    /// WebSocket close with 1002). They are written after whatever was queued before,
    /// then the connection closes gracefully (a FIN, the peer's last bytes read and
    /// dropped), so the peer reads them rather than losing them to a reset. By default
    /// nothing: the connection is reset, as a peer that broke the framing is owed
    /// nothing more. The length codec answers an HTTP request on a framed port with a
    /// `400` saying what the port speaks.
    fn error_reply(&self, error: &FrameError, out: &mut Buffer) {
        let _ = (error, out);
    }

    /// A peer broke the format (`decode` returned `error`): advice for the log, for
    /// whoever reads it, on serving such a peer, in the words of whoever built the
    /// codec (the same codec serves several programs, each with its own way to do
    /// that). By default none; see [`LengthCodec::with_text_hint`].
    fn error_hint(&self, error: &FrameError) -> Option<&str> {
        let _ = error;
        None
    }

    /// True when some values of this type are protocols ([`Codec::is_protocol`]):
    /// false for framing codecs, so their connections take the reactor's fastest read
    /// path without asking. A codec type that is always a protocol sets this alone.
    const PROTOCOL: bool = false;

    /// Whether this codec is a protocol (see [`crate::protocol`]): its units are
    /// decoded once, in place, by [`Codec::process`], and may answer the peer
    /// themselves. By default, [`Codec::PROTOCOL`]; an enum of codecs where only some
    /// are protocols (the chat's, say) answers per value.
    #[inline(always)]
    fn is_protocol(&self) -> bool {
        Self::PROTOCOL
    }

    /// For a protocol ([`Codec::is_protocol`]): processes the unit at the start of
    /// `buf` (a request head, a frame, a message in fragments), which it may change in
    /// place (unmask it, move fragments together), as [`Codec::decode`] says where a
    /// frame is. It may answer the peer, name the unit's kind and parts, or keep the
    /// unit for itself through `io`. Called once per unit: the reactor hands the
    /// service what it found, and never decodes those bytes again. A unit that is not
    /// complete yet is `Incomplete`, with everything from its start kept for the next
    /// call (the state remembers how far it got). Replies written before an `Err` are
    /// the peer's last words, with [`Codec::error_reply`]'s.
    fn process(
        &self,
        state: &mut Self::State,
        buf: &mut [u8],
        io: &mut crate::protocol::ProtocolIo<'_>,
    ) -> Result<Decode, FrameError> {
        let _ = io;
        self.decode(state, buf)
    }
}

/// The complete frames at the start of a buffer, as [`Codec::scan`] finds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Bytes the complete frames use, from the start of the buffer.
    pub complete: usize,
    /// How many complete frames there are.
    pub count: usize,
    /// The framing error that stopped the walk, if one did (the frames before it are
    /// still good).
    pub error: Option<FrameError>,
}

/// [`Codec::scan`] by one [`Codec::decode`] per frame.
#[inline(always)]
pub fn scan_by_decode<C: Codec + ?Sized>(codec: &C, state: &mut C::State, buf: &[u8]) -> Scan {
    let mut complete = 0;
    let mut count = 0;
    loop {
        let error = match codec.decode(state, &buf[complete..]) {
            // A codec that consumes nothing would make this loop spin for ever.
            Ok(Decode::Frame { consumed: 0, .. }) => {
                FrameError::Malformed("codec consumed no bytes")
            }
            Ok(Decode::Frame { consumed, .. }) => {
                complete += consumed;
                count += 1;
                continue;
            }
            Ok(Decode::Incomplete { .. }) => {
                return Scan {
                    complete,
                    count,
                    error: None,
                }
            }
            Err(e) => e,
        };
        return Scan {
            complete,
            count,
            error: Some(error),
        };
    }
}

/// Newline-terminated lines. The payload excludes the `\n` (and a `\r` before it);
/// encoding appends `\n`. A line longer than the maximum is a [`FrameError::TooLarge`].
///
/// The codec remembers, per connection, how much of a partial line it has already
/// searched for a newline ([`LinesState`]), so a line that arrives over many reads is
/// scanned once, not once per read.
///
/// ```
/// use switchboard::frame::LinesState;
/// use switchboard::{Codec, Decode, LinesCodec};
/// let codec = LinesCodec::new(64);
/// let mut state = LinesState::default();
/// assert_eq!(codec.decode(&mut state, b"hel").unwrap(), Decode::Incomplete { frame_len: None });
/// // The next call, with more bytes behind the same start, resumes after "hel".
/// assert_eq!(
///     codec.decode(&mut state, b"hello\n").unwrap(),
///     Decode::Frame { payload: 0..5, consumed: 6 }
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinesCodec {
    /// Longest line accepted, terminator excluded.
    max_line: usize,
}

impl LinesCodec {
    /// Lines of at most `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LinesCodec { max_line }
    }

    /// Whether `partial`, a line without its newline yet, can still end within the
    /// maximum: it is no longer than that, or one byte longer with that byte a `\r`
    /// (the first half of a `\r\n`).
    fn may_still_fit(&self, partial: &[u8]) -> bool {
        partial.len() <= self.max_line
            || (partial.len() - 1 == self.max_line && partial.last() == Some(&b'\r'))
    }

    /// The shortest prefix of `partial` (a line without its newline that cannot fit)
    /// that already could not: one byte over the maximum, or two when that byte is a
    /// `\r`.
    fn known_too_long(&self, partial: &[u8]) -> usize {
        match partial.get(self.max_line) {
            Some(b'\r') => self.max_line.saturating_add(2),
            _ => self.max_line.saturating_add(1),
        }
    }

    /// The error for a line that reached `len` bytes.
    fn too_large(&self, len: usize) -> FrameError {
        FrameError::TooLarge {
            len: len as u64,
            max: self.max_line,
        }
    }
}

/// How far [`LinesCodec`] has searched the partial line at the front of a connection's
/// input: those bytes hold no newline, so the next search starts behind them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinesState {
    /// Bytes from the start of the partial line known to hold no `\n`.
    scanned: usize,
}

impl Codec for LinesCodec {
    type State = LinesState;

    fn decode(&self, state: &mut LinesState, buf: &[u8]) -> Result<Decode, FrameError> {
        // Only look as far as a maximal line and its "\r\n" could reach: a peer that
        // never sends a newline is caught as soon as its line can no longer fit.
        // (Saturating: `usize::MAX` is a way to say "no limit".)
        let window = &buf[..buf.len().min(self.max_line.saturating_add(2))];
        let from = state.scanned.min(window.len());
        match window[from..].iter().position(|&b| b == b'\n') {
            Some(found) => {
                let newline = from + found;
                let end = if newline > 0 && window[newline - 1] == b'\r' {
                    newline - 1
                } else {
                    newline
                };
                if end > self.max_line {
                    return Err(self.too_large(end));
                }
                state.scanned = 0;
                Ok(Decode::Frame {
                    payload: 0..end,
                    consumed: newline + 1,
                })
            }
            // Reported as the length at which the line became too long, not as what
            // happens to be buffered, so the error does not depend on how reads fell.
            None if !self.may_still_fit(buf) => Err(self.too_large(self.known_too_long(buf))),
            None => {
                state.scanned = window.len();
                Ok(Decode::Incomplete { frame_len: None })
            }
        }
    }

    fn encode(&self, payload: &[u8], out: &mut Buffer) -> Result<(), FrameError> {
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\n");
        Ok(())
    }
}

/// No framing at all: whatever bytes have arrived form one frame, and sending writes
/// the bytes as they are. For plain stream protocols (`nc`, the seeds' raw clients) and
/// for protocols that parse the stream themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawCodec;

impl Codec for RawCodec {
    type State = ();

    fn decode(&self, _state: &mut (), buf: &[u8]) -> Result<Decode, FrameError> {
        if buf.is_empty() {
            Ok(Decode::Incomplete { frame_len: None })
        } else {
            Ok(Decode::Frame {
                payload: 0..buf.len(),
                consumed: buf.len(),
            })
        }
    }

    fn encode(&self, payload: &[u8], out: &mut Buffer) -> Result<(), FrameError> {
        out.extend_from_slice(payload);
        Ok(())
    }
}

/// One of the built-in codecs, chosen per endpoint at run time: a reactor whose
/// service declares `type Codec = AnyCodec` can serve length frames on one port and
/// lines on another. (A service mixing a codec of its own with these writes an enum
/// like this one.)
///
/// ```
/// use switchboard::frame::{AnyCodec, AnyState};
/// use switchboard::{Codec, Decode, LengthCodec, LinesCodec};
/// let lines = AnyCodec::Lines(LinesCodec::new(80));
/// let mut state = AnyState::default();
/// assert!(matches!(lines.decode(&mut state, b"hi\n"), Ok(Decode::Frame { consumed: 3, .. })));
/// let length = AnyCodec::Length(LengthCodec::new(80));
/// assert!(matches!(length.decode(&mut AnyState::default(), &[0, 0, 0, 0]), Ok(Decode::Frame { .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyCodec {
    /// A length header, then the payload.
    Length(LengthCodec),
    /// Newline-terminated lines.
    Lines(LinesCodec),
    /// No framing.
    Raw(RawCodec),
}

/// [`AnyCodec`]'s per-connection state: the lines codec's scan position (the others
/// keep none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnyState {
    lines: LinesState,
}

impl Codec for AnyCodec {
    type State = AnyState;

    #[inline]
    fn decode(&self, state: &mut AnyState, buf: &[u8]) -> Result<Decode, FrameError> {
        match self {
            AnyCodec::Length(codec) => codec.decode(&mut (), buf),
            AnyCodec::Lines(codec) => codec.decode(&mut state.lines, buf),
            AnyCodec::Raw(codec) => codec.decode(&mut (), buf),
        }
    }

    fn encode(&self, payload: &[u8], out: &mut Buffer) -> Result<(), FrameError> {
        match self {
            AnyCodec::Length(codec) => codec.encode(payload, out),
            AnyCodec::Lines(codec) => codec.encode(payload, out),
            AnyCodec::Raw(codec) => codec.encode(payload, out),
        }
    }

    fn error_reply(&self, error: &FrameError, out: &mut Buffer) {
        match self {
            AnyCodec::Length(codec) => codec.error_reply(error, out),
            AnyCodec::Lines(codec) => codec.error_reply(error, out),
            AnyCodec::Raw(codec) => codec.error_reply(error, out),
        }
    }

    fn error_hint(&self, error: &FrameError) -> Option<&str> {
        match self {
            AnyCodec::Length(codec) => codec.error_hint(error),
            AnyCodec::Lines(codec) => codec.error_hint(error),
            AnyCodec::Raw(codec) => codec.error_hint(error),
        }
    }

    #[inline]
    fn scan(&self, state: &mut AnyState, buf: &[u8]) -> Scan {
        match self {
            AnyCodec::Length(codec) => codec.scan(&mut (), buf),
            AnyCodec::Lines(codec) => codec.scan(&mut state.lines, buf),
            AnyCodec::Raw(codec) => codec.scan(&mut (), buf),
        }
    }
}

/// Decodes every complete frame in `buf`, in order, for tests and tools: returns the
/// payloads and how many bytes they used.
pub fn decode_all<C: Codec>(codec: &C, buf: &[u8]) -> Result<(Vec<Vec<u8>>, usize), FrameError> {
    let mut frames = Vec::new();
    let mut pos = 0;
    let mut state = C::State::default();
    while let Decode::Frame { payload, consumed } = codec.decode(&mut state, &buf[pos..])? {
        frames.push(buf[pos + payload.start..pos + payload.end].to_vec());
        pos += consumed;
    }
    Ok((frames, pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(super) fn encode_all<C: Codec>(codec: &C, frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Buffer::new();
        for f in frames {
            codec.encode(f, &mut out).unwrap();
        }
        out.readable().to_vec()
    }

    #[test]
    fn golden_bytes_of_the_default_format() {
        let wire = encode_all(&LengthCodec::new(16), &[b"abc".to_vec(), vec![]]);
        assert_eq!(wire, [0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0]);
    }

    #[test]
    fn header_split_is_incomplete_without_a_length() {
        let codec = LengthCodec::new(16);
        for cut in 0..4 {
            assert_eq!(
                codec
                    .decode(&mut Default::default(), &[0, 0, 0, 3][..cut])
                    .unwrap(),
                Decode::Incomplete { frame_len: None }
            );
        }
    }

    #[test]
    fn body_split_reports_the_frame_length() {
        let codec = LengthCodec::new(16);
        assert_eq!(
            codec
                .decode(&mut Default::default(), &[0, 0, 0, 3, b'a'])
                .unwrap(),
            Decode::Incomplete { frame_len: Some(7) }
        );
    }

    #[test]
    fn zero_length_frame_is_a_frame() {
        assert_eq!(
            LengthCodec::new(16)
                .decode(&mut Default::default(), &[0, 0, 0, 0])
                .unwrap(),
            Decode::Frame {
                payload: 4..4,
                consumed: 4
            }
        );
    }

    #[test]
    fn exactly_max_is_accepted_one_more_is_not() {
        let codec = LengthCodec::new(3);
        assert!(matches!(
            codec.decode(&mut Default::default(), &[0, 0, 0, 3, 1, 2, 3]),
            Ok(Decode::Frame { .. })
        ));
        assert_eq!(
            codec.decode(&mut Default::default(), &[0, 0, 0, 4]),
            Err(FrameError::TooLarge { len: 4, max: 3 })
        );
    }

    #[test]
    fn four_gib_announcement_is_rejected_from_the_header_alone() {
        assert_eq!(
            LengthCodec::new(1 << 20).decode(&mut Default::default(), &[0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge {
                len: u32::MAX as u64,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn encoding_more_than_max_is_refused() {
        let mut out = Buffer::new();
        assert!(LengthCodec::new(2).encode(b"abc", &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn lines_strip_terminators_and_limit_length() {
        let codec = LinesCodec::new(5);
        let (frames, used) = decode_all(&codec, b"ab\r\ncd\n\nxy").unwrap();
        assert_eq!(frames, vec![b"ab".to_vec(), b"cd".to_vec(), vec![]]);
        assert_eq!(used, 8);
        assert!(codec.decode(&mut Default::default(), b"abcdef").is_err());
        assert!(codec.decode(&mut Default::default(), b"abcde").is_ok());
    }

    #[test]
    fn a_long_line_is_scanned_once_however_it_arrives() {
        let codec = LinesCodec::new(1 << 20);
        let mut state = LinesState::default();
        let mut line = vec![b'x'; 10_000];
        for end in (1000..=10_000).step_by(1000) {
            assert_eq!(
                codec.decode(&mut state, &line[..end]).unwrap(),
                Decode::Incomplete { frame_len: None }
            );
            // Everything given so far has been searched.
            assert_eq!(state.scanned, end);
        }
        line.push(b'\n');
        assert_eq!(
            codec.decode(&mut state, &line).unwrap(),
            Decode::Frame {
                payload: 0..10_000,
                consumed: 10_001
            }
        );
        assert_eq!(state, LinesState::default(), "a frame resets the scan");
    }

    #[test]
    fn lines_without_a_limit_decode() {
        // Found by the lines_codec fuzz target: `max_line + 1` overflowed, a panic in
        // debug builds and, wrapped to 0 in release, a window that never held a line.
        let codec = LinesCodec::new(usize::MAX);
        let (frames, used) = decode_all(&codec, b"no limit\nat all\n").unwrap();
        assert_eq!(frames, vec![b"no limit".to_vec(), b"at all".to_vec()]);
        assert_eq!(used, 16);
    }

    #[test]
    fn a_maximal_line_may_end_in_crlf() {
        // Found by the lines_codec fuzz target: a line of exactly the maximum followed
        // by "\r\n" was refused, the '\r' counted against the limit.
        let codec = LinesCodec::new(5);
        let (frames, used) = decode_all(&codec, b"abcde\r\nabcde\n").unwrap();
        assert_eq!(frames, vec![b"abcde".to_vec(), b"abcde".to_vec()]);
        assert_eq!(used, 13);
        // Until the '\n' comes, the '\r' may still be the first half of "\r\n" ...
        let mut state = LinesState::default();
        assert_eq!(
            codec.decode(&mut state, b"abcde\r"),
            Ok(Decode::Incomplete { frame_len: None })
        );
        assert_eq!(
            codec.decode(&mut state, b"abcde\r\n"),
            Ok(Decode::Frame {
                payload: 0..5,
                consumed: 7
            })
        );
        // ... and anything else after the maximum is too long.
        let too_large = |len| Err(FrameError::TooLarge { len, max: 5 });
        let decode = |bytes: &[u8]| codec.decode(&mut LinesState::default(), bytes);
        assert_eq!(decode(b"abcdef"), too_large(6));
        assert_eq!(decode(b"abcde\rx"), too_large(7));
        assert_eq!(decode(b"abcdef\n"), too_large(6));
        assert_eq!(decode(b"abcdef\r\n"), too_large(6));
        assert_eq!(decode(b"abcde\r\r\n"), too_large(7));
        // The length reported is where the line became too long, however much is
        // buffered: the same for every split of the stream.
        assert_eq!(decode(b"abcdefghijklmnop"), too_large(6));
    }

    #[test]
    fn raw_takes_everything() {
        assert_eq!(
            RawCodec.decode(&mut Default::default(), b"xyz").unwrap(),
            Decode::Frame {
                payload: 0..3,
                consumed: 3
            }
        );
        assert_eq!(
            RawCodec.decode(&mut Default::default(), b"").unwrap(),
            Decode::Incomplete { frame_len: None }
        );
    }

    /// Feeds `wire` to the codec in the given chunk sizes, the way the reactor does:
    /// append, decode every complete frame, keep the tail.
    pub(super) fn decode_in_chunks<C: Codec>(
        codec: &C,
        wire: &[u8],
        chunks: &[usize],
    ) -> Vec<Vec<u8>> {
        let mut buf = Buffer::new();
        let mut frames = Vec::new();
        let mut fed = 0;
        let mut sizes = chunks.iter().cycle();
        // One state for the whole stream, as the reactor keeps one per connection.
        let mut state = C::State::default();
        while fed < wire.len() {
            let n = (*sizes.next().unwrap()).clamp(1, wire.len() - fed);
            buf.extend_from_slice(&wire[fed..fed + n]);
            fed += n;
            while let Decode::Frame { payload, consumed } =
                codec.decode(&mut state, buf.readable()).unwrap()
            {
                frames.push(buf.readable()[payload].to_vec());
                buf.consume(consumed);
            }
        }
        assert!(buf.is_empty(), "a whole stream leaves no tail");
        frames
    }

    proptest! {
        #[test]
        fn any_split_yields_the_frames_sent(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            chunks in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let codec = LengthCodec::new(300);
            let wire = encode_all(&codec, &frames);
            prop_assert_eq!(decode_in_chunks(&codec, &wire, &chunks), frames);
        }

        #[test]
        fn any_split_of_lines_yields_the_lines_sent(
            lines in proptest::collection::vec("[a-z ]{0,40}", 0..20),
            chunks in proptest::collection::vec(1usize..16, 1..8),
        ) {
            let codec = LinesCodec::new(64);
            let frames: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
            let wire = encode_all(&codec, &frames);
            prop_assert_eq!(decode_in_chunks(&codec, &wire, &chunks), frames);
        }
    }
}
