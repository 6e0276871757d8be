//! Length-prefixed framing, configurable so that existing protocols can be served as
//! they are.
//!
//! A frame is a header, then a body. The header is `offset` bytes the codec does not
//! interpret, then the length field:
//!
//! ```text
//!   +---------------------+--------------------------+----------------------+
//!   | offset bytes (0..)  | length field (1/2/4/8 B) | body                 |
//!   +---------------------+--------------------------+----------------------+
//!   |<-------------- header -------------------------->|
//!   |<- Payload::WholeFrame: what the service sees and sends ---------------->|
//!                                                     |<- Payload::Body ---->|
//!   length field = body length        (LengthCovers::Body, the default)
//!                = header + body      (LengthCovers::WholeFrame)
//! ```
//!
//! switchboard's own format, [`LengthCodec::new`], is the simplest case: no offset, a
//! 4-byte big-endian unsigned body length. [`LengthCodec::builder`] describes the
//! others, and refuses, with a [`LengthCodecError`], configurations that cannot work.

use std::fmt;

use super::{Codec, Decode, FrameError, Scan};
use crate::buffer::Buffer;

/// Byte order of a length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Most significant byte first (network order).
    Big,
    /// Least significant byte first (x86's native order).
    Little,
}

/// What the number in the length field counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthCovers {
    /// The body only (switchboard's format).
    Body,
    /// The whole frame: header (offset bytes and length field) plus body.
    WholeFrame,
}

/// How the length field's bytes are read as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signedness {
    /// An unsigned number.
    Unsigned,
    /// A two's complement number, as C's `int` or Python's `struct.pack("i")` write it.
    /// A negative length is a protocol error.
    Signed,
}

/// What a frame's payload is: what [`Codec::decode`] hands out and [`Codec::encode`]
/// takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The body: the codec strips the header when decoding and writes it when encoding.
    Body,
    /// The whole frame, header included, so the service can read fields that sit before
    /// the length field. When encoding, the service leaves room for the header and the
    /// codec fills in the length field.
    WholeFrame,
}

/// A [`LengthCodec`] configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LengthCodecError {
    /// The length field is not 1, 2, 4 or 8 bytes wide.
    Width(usize),
    /// Bytes before the length field were asked for with [`Payload::Body`]: the codec
    /// would have nothing to put in them when encoding.
    OffsetNeedsWholeFrame {
        /// The offset asked for.
        offset: usize,
    },
    /// The length field counts the header, but cannot count as high as the header is
    /// long.
    HeaderExceedsField {
        /// Header length in bytes.
        header: usize,
        /// The largest number the field holds.
        field_limit: u64,
    },
    /// The maximum payload is more than the length field can describe.
    MaxTooLarge {
        /// The maximum asked for.
        max: usize,
        /// The largest payload the field can describe.
        field_limit: u64,
    },
    /// Payloads are whole frames, yet the maximum is shorter than the header.
    MaxBelowHeader {
        /// The maximum asked for.
        max: usize,
        /// Header length in bytes.
        header: usize,
    },
}

impl fmt::Display for LengthCodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LengthCodecError::Width(width) => {
                write!(f, "length field of {width} bytes: must be 1, 2, 4 or 8")
            }
            LengthCodecError::OffsetNeedsWholeFrame { offset } => write!(
                f,
                "{offset} bytes before the length field need Payload::WholeFrame: \
                 with Payload::Body the codec cannot know what to write in them"
            ),
            LengthCodecError::HeaderExceedsField {
                header,
                field_limit,
            } => write!(
                f,
                "the length counts a {header}-byte header, but the field holds at most {field_limit}"
            ),
            LengthCodecError::MaxTooLarge { max, field_limit } => write!(
                f,
                "maximum payload of {max} bytes, but the length field describes at most {field_limit}"
            ),
            LengthCodecError::MaxBelowHeader { max, header } => write!(
                f,
                "maximum payload of {max} bytes cannot hold the {header}-byte header \
                 (payloads are whole frames)"
            ),
        }
    }
}

impl std::error::Error for LengthCodecError {}

/// The maximum payload when [`LengthCodecBuilder::max_payload`] is not called (lowered
/// to what the length field can describe, for narrow fields).
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// A length header followed by the body. [`LengthCodec::new`] gives switchboard's own
/// format: a 4-byte big-endian length of the payload, then the payload. See the module
/// docs for the frame layout and [`LengthCodec::builder`] for other formats.
///
/// ```
/// use switchboard::{Buffer, Codec, LengthCodec};
/// let mut out = Buffer::new();
/// LengthCodec::new(1024).encode(b"hi", &mut out).unwrap();
/// assert_eq!(out.readable(), &[0, 0, 0, 2, b'h', b'i']);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LengthCodec {
    /// Bytes before the length field, part of the header.
    offset: usize,
    /// Width of the length field in bytes: 1, 2, 4 or 8.
    width: usize,
    /// Byte order of the length field.
    endian: Endian,
    /// Whether the field is read as signed.
    signedness: Signedness,
    /// What the field's number counts.
    covers: LengthCovers,
    /// What the service sees and sends.
    payload: Payload,
    /// Largest payload accepted or sent, in bytes; never more than the field describes.
    max_payload: usize,
    /// The format is switchboard's own (4-byte big-endian unsigned length of the body,
    /// no offset): decoding takes a straight-line path, the hottest code in the server.
    standard: bool,
    /// What the log adds when text arrives instead of frames ([`Codec::error_hint`]):
    /// how the program that built the codec serves text, if it can.
    text_hint: Option<&'static str>,
}

impl LengthCodec {
    /// switchboard's format: 4-byte big-endian payload length, payloads up to
    /// `max_payload` bytes (lowered to 4 GiB - 1, the most 4 bytes describe).
    ///
    /// ```
    /// use switchboard::LengthCodec;
    /// assert_eq!(LengthCodec::new(1 << 20).max_payload(), 1 << 20);
    /// ```
    pub fn new(max_payload: usize) -> Self {
        LengthCodec {
            offset: 0,
            width: 4,
            endian: Endian::Big,
            signedness: Signedness::Unsigned,
            covers: LengthCovers::Body,
            payload: Payload::Body,
            max_payload: max_payload.min(u32::MAX as usize),
            standard: true,
            text_hint: None,
        }
    }

    /// The codec, with `hint` logged when a peer sends text instead of frames: how the
    /// program serving this port serves text instead (`switchboard echo` names its
    /// `--framing lines`; a program with no such choice sets none).
    ///
    /// ```
    /// use switchboard::{Codec, LengthCodec};
    /// let codec = LengthCodec::new(1024).with_text_hint("serve lines with --lines");
    /// let error = codec.decode(&mut (), b"hello\n").unwrap_err();
    /// assert_eq!(codec.error_hint(&error), Some("serve lines with --lines"));
    /// assert_eq!(LengthCodec::new(1024).error_hint(&error), None);
    /// ```
    pub fn with_text_hint(mut self, hint: &'static str) -> Self {
        self.text_hint = Some(hint);
        self
    }

    /// Starts describing another length-prefixed format; the defaults are
    /// switchboard's own, with a maximum of [`DEFAULT_MAX_PAYLOAD`].
    ///
    /// The header of the tutorials' file upload, `struct.pack("i", n)` on x86:
    ///
    /// ```
    /// use switchboard::frame::{Endian, LengthCodec, Signedness};
    /// use switchboard::{Codec, Decode};
    ///
    /// let codec = LengthCodec::builder()
    ///     .endian(Endian::Little)
    ///     .signedness(Signedness::Signed)
    ///     .max_payload(64 * 1024)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(
    ///     codec.decode(&mut (), &[2, 0, 0, 0, b'{', b'}']).unwrap(),
    ///     Decode::Frame { payload: 4..6, consumed: 6 }
    /// );
    /// // -1 as a signed 32-bit number: not a length.
    /// assert!(codec.decode(&mut (), &[0xff, 0xff, 0xff, 0xff]).is_err());
    /// ```
    pub fn builder() -> LengthCodecBuilder {
        LengthCodecBuilder::default()
    }

    /// The largest payload this codec accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Appends the header of a `payload_len`-byte payload that the caller appends
    /// right after it, for an encoder that builds payloads in place (one copy fewer).
    /// Only for formats whose header holds nothing but the length (no offset,
    /// [`Payload::Body`]); others answer [`FrameError::Malformed`].
    ///
    /// ```
    /// use switchboard::{Buffer, LengthCodec};
    /// let mut out = Buffer::new();
    /// LengthCodec::new(1024).encode_header(2, &mut out).unwrap();
    /// out.extend_from_slice(b"hi");
    /// assert_eq!(out.readable(), &[0, 0, 0, 2, b'h', b'i']);
    /// ```
    #[inline]
    pub fn encode_header(&self, payload_len: usize, out: &mut Buffer) -> Result<(), FrameError> {
        if payload_len > self.max_payload {
            return Err(FrameError::TooLarge {
                len: payload_len as u64,
                max: self.max_payload,
            });
        }
        if self.standard {
            // `max_payload` is at most u32::MAX for the standard format.
            out.extend_from_slice(&(payload_len as u32).to_be_bytes());
            return Ok(());
        }
        if self.offset > 0 || self.payload != Payload::Body {
            return Err(FrameError::Malformed(
                "the header holds more than the length",
            ));
        }
        let value = match self.covers {
            LengthCovers::Body => payload_len,
            LengthCovers::WholeFrame => self.header_len() + payload_len,
        };
        let field = field_bytes(value as u64, self.width, self.endian);
        out.extend_from_slice(&field[..self.width]);
        Ok(())
    }

    /// Bytes of header: the offset plus the length field.
    ///
    /// ```
    /// use switchboard::LengthCodec;
    /// assert_eq!(LengthCodec::new(16).header_len(), 4);
    /// ```
    pub fn header_len(&self) -> usize {
        self.offset + self.width
    }

    /// The body length the header announces, or why it cannot be one.
    fn body_len(&self, field: &[u8]) -> Result<u64, FrameError> {
        let raw = read_field(field, self.endian);
        let value = match self.signedness {
            Signedness::Unsigned => raw,
            Signedness::Signed => {
                // Sign-extend from the field's width to 64 bits.
                let unused = 64 - 8 * self.width as u32;
                let signed = ((raw << unused) as i64) >> unused;
                u64::try_from(signed).map_err(|_| FrameError::Malformed("negative length"))?
            }
        };
        match self.covers {
            LengthCovers::Body => Ok(value),
            LengthCovers::WholeFrame => value
                .checked_sub(self.header_len() as u64)
                .ok_or(FrameError::Malformed("length smaller than the header")),
        }
    }

    /// The payload length for a body of `body_len` bytes.
    fn payload_len(&self, body_len: u64) -> u64 {
        match self.payload {
            Payload::Body => body_len,
            Payload::WholeFrame => body_len.saturating_add(self.header_len() as u64),
        }
    }
}

/// Decodes switchboard's own format: what [`LengthCodec::decode`] does for it, without
/// the options.
#[inline]
fn decode_standard(buf: &[u8], max_payload: usize) -> Result<Decode, FrameError> {
    let Some(header) = buf.first_chunk::<4>() else {
        return Ok(Decode::Incomplete { frame_len: None });
    };
    let len = u32::from_be_bytes(*header) as usize;
    // Checked before any allocation: a 4 GiB announcement costs nothing.
    if len > max_payload {
        return Err(too_large(header, len as u64, max_payload));
    }
    let frame_len = 4 + len;
    if buf.len() < frame_len {
        return Ok(Decode::Incomplete {
            frame_len: Some(frame_len),
        });
    }
    Ok(Decode::Frame {
        payload: 4..frame_len,
        consumed: frame_len,
    })
}

/// The error for a header announcing `len` bytes, more than `max`: plain
/// [`FrameError::TooLarge`], or [`FrameError::NotFrames`] when the header's bytes are
/// printable text (a person, or an HTTP client, on a length-framed port).
#[cold]
fn too_large(header: &[u8], len: u64, max: usize) -> FrameError {
    let text = header.iter().all(|&b| b.is_ascii_graphic() || b == b' ');
    if !text {
        return FrameError::TooLarge { len, max };
    }
    const METHODS: [&[u8; 4]; 9] = [
        b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC",
    ];
    let http = METHODS.iter().any(|m| header.starts_with(&m[..]));
    FrameError::NotFrames { len, max, http }
}

/// Walks switchboard's own format: every complete frame at the start of `buf` in one
/// tight loop (the header read, two comparisons and two additions per frame).
#[inline(always)]
fn scan_standard(buf: &[u8], max_payload: usize) -> Scan {
    let (mut complete, mut count) = (0, 0);
    let mut rest = buf;
    while let Some(header) = rest.first_chunk::<4>() {
        let len = u32::from_be_bytes(*header) as usize;
        if len > max_payload {
            let error = too_large(header, len as u64, max_payload);
            return Scan {
                complete,
                count,
                error: Some(error),
            };
        }
        let Some(next) = rest.get(4 + len..) else {
            break;
        };
        rest = next;
        complete += 4 + len;
        count += 1;
    }
    Scan {
        complete,
        count,
        error: None,
    }
}

/// What an HTTP client that reaches a length-framed port is told.
const NOT_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Connection: close\r\n\
Content-Length: 112\r\n\
\r\n\
This port speaks switchboard's length-prefixed frames (a 4-byte big-endian length, \
then the payload), not HTTP.\n";

impl Codec for LengthCodec {
    type State = ();

    #[inline(always)]
    fn scan(&self, state: &mut (), buf: &[u8]) -> Scan {
        if self.standard {
            return scan_standard(buf, self.max_payload);
        }
        super::scan_by_decode(self, state, buf)
    }

    #[inline]
    fn decode(&self, _state: &mut (), buf: &[u8]) -> Result<Decode, FrameError> {
        if self.standard {
            return decode_standard(buf, self.max_payload);
        }
        let header_len = self.header_len();
        let Some(field) = buf.get(self.offset..header_len) else {
            return Ok(Decode::Incomplete { frame_len: None });
        };
        let body_len = self.body_len(field)?;
        let payload_len = self.payload_len(body_len);
        // Checked before any allocation: a 4 GiB announcement costs nothing.
        if payload_len > self.max_payload as u64 {
            return Err(too_large(&buf[..header_len], payload_len, self.max_payload));
        }
        // The body is at most `max_payload`, a usize; only the header could overflow it.
        let frame_len = header_len
            .checked_add(body_len as usize)
            .ok_or(FrameError::TooLarge {
                len: payload_len,
                max: self.max_payload,
            })?;
        if buf.len() < frame_len {
            return Ok(Decode::Incomplete {
                frame_len: Some(frame_len),
            });
        }
        let start = match self.payload {
            Payload::Body => header_len,
            Payload::WholeFrame => 0,
        };
        Ok(Decode::Frame {
            payload: start..frame_len,
            consumed: frame_len,
        })
    }

    /// An HTTP request on a framed port (a browser, curl) is told in HTTP what the
    /// port speaks; other framing errors get nothing (a reset).
    fn error_reply(&self, error: &FrameError, out: &mut Buffer) {
        if let FrameError::NotFrames { http: true, .. } = error {
            out.extend_from_slice(NOT_HTTP_ANSWER);
        }
    }

    fn error_hint(&self, error: &FrameError) -> Option<&str> {
        match error {
            FrameError::NotFrames { http: false, .. } => self.text_hint,
            _ => None,
        }
    }

    fn encode(&self, payload: &[u8], out: &mut Buffer) -> Result<(), FrameError> {
        if self.standard {
            self.encode_header(payload.len(), out)?;
            out.extend_from_slice(payload);
            return Ok(());
        }
        if payload.len() > self.max_payload {
            return Err(FrameError::TooLarge {
                len: payload.len() as u64,
                max: self.max_payload,
            });
        }
        let header_len = self.header_len();
        let (prefix, body) = match self.payload {
            Payload::Body => (&[][..], payload),
            Payload::WholeFrame if payload.len() < header_len => {
                return Err(FrameError::Malformed("payload shorter than the header"));
            }
            Payload::WholeFrame => (&payload[..self.offset], &payload[header_len..]),
        };
        let value = match self.covers {
            LengthCovers::Body => body.len(),
            LengthCovers::WholeFrame => header_len + body.len(),
        };
        // `build` made sure every payload up to the maximum has a length that fits the
        // field, and a non-negative one fits a signed field's bit pattern unchanged.
        let field = field_bytes(value as u64, self.width, self.endian);
        let total = header_len + body.len();
        let spare = out.spare_mut(total);
        spare[..prefix.len()].copy_from_slice(prefix);
        spare[self.offset..header_len].copy_from_slice(&field[..self.width]);
        spare[header_len..total].copy_from_slice(body);
        out.commit(total);
        Ok(())
    }
}

/// The field's bytes as an unsigned number.
fn read_field(field: &[u8], endian: Endian) -> u64 {
    let mut bytes = [0u8; 8];
    let width = field.len();
    match endian {
        Endian::Big => {
            bytes[8 - width..].copy_from_slice(field);
            u64::from_be_bytes(bytes)
        }
        Endian::Little => {
            bytes[..width].copy_from_slice(field);
            u64::from_le_bytes(bytes)
        }
    }
}

/// `value` as a `width`-byte field, in the first `width` bytes of the result.
fn field_bytes(value: u64, width: usize, endian: Endian) -> [u8; 8] {
    let mut field = [0u8; 8];
    match endian {
        Endian::Big => field[..width].copy_from_slice(&value.to_be_bytes()[8 - width..]),
        Endian::Little => field[..width].copy_from_slice(&value.to_le_bytes()[..width]),
    }
    field
}

/// Describes a [`LengthCodec`]; [`LengthCodecBuilder::build`] checks that it can work.
/// Every setting has switchboard's format as its default.
///
/// A protocol with a one-byte message type, then a 2-byte little-endian length that
/// counts the whole frame (as some game and device protocols do):
///
/// ```
/// use switchboard::frame::{Endian, LengthCodec, LengthCovers, Payload};
/// use switchboard::{Buffer, Codec};
///
/// let codec = LengthCodec::builder()
///     .length_offset(1)
///     .length_width(2)
///     .endian(Endian::Little)
///     .length_covers(LengthCovers::WholeFrame)
///     .payload(Payload::WholeFrame)
///     .max_payload(1024)
///     .build()
///     .unwrap();
/// let mut out = Buffer::new();
/// // Type 7, room for the length, body "ok": the codec fills in the length (5).
/// codec.encode(&[7, 0, 0, b'o', b'k'], &mut out).unwrap();
/// assert_eq!(out.readable(), &[7, 5, 0, b'o', b'k']);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LengthCodecBuilder {
    offset: usize,
    width: usize,
    endian: Endian,
    signedness: Signedness,
    covers: LengthCovers,
    payload: Payload,
    /// `None`: [`DEFAULT_MAX_PAYLOAD`], or less if the field cannot describe it.
    max_payload: Option<usize>,
}

impl Default for LengthCodecBuilder {
    fn default() -> Self {
        LengthCodecBuilder {
            offset: 0,
            width: 4,
            endian: Endian::Big,
            signedness: Signedness::Unsigned,
            covers: LengthCovers::Body,
            payload: Payload::Body,
            max_payload: None,
        }
    }
}

impl LengthCodecBuilder {
    /// Header bytes before the length field (default 0). Needs [`Payload::WholeFrame`].
    pub fn length_offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// Width of the length field in bytes: 1, 2, 4 (the default) or 8.
    pub fn length_width(mut self, width: usize) -> Self {
        self.width = width;
        self
    }

    /// Byte order of the length field (default [`Endian::Big`]).
    pub fn endian(mut self, endian: Endian) -> Self {
        self.endian = endian;
        self
    }

    /// Whether the length field is signed (default [`Signedness::Unsigned`]).
    pub fn signedness(mut self, signedness: Signedness) -> Self {
        self.signedness = signedness;
        self
    }

    /// What the length counts (default [`LengthCovers::Body`]).
    pub fn length_covers(mut self, covers: LengthCovers) -> Self {
        self.covers = covers;
        self
    }

    /// What the service sees and sends (default [`Payload::Body`]).
    pub fn payload(mut self, payload: Payload) -> Self {
        self.payload = payload;
        self
    }

    /// The largest payload accepted or sent (default [`DEFAULT_MAX_PAYLOAD`]). A larger
    /// frame from a peer is a protocol error, caught from its header alone.
    pub fn max_payload(mut self, max: usize) -> Self {
        self.max_payload = Some(max);
        self
    }

    /// The codec, or why this configuration cannot work.
    ///
    /// ```
    /// use switchboard::frame::{LengthCodec, LengthCodecError};
    /// let error = LengthCodec::builder().length_width(3).build().unwrap_err();
    /// assert_eq!(error, LengthCodecError::Width(3));
    /// assert_eq!(error.to_string(), "length field of 3 bytes: must be 1, 2, 4 or 8");
    /// ```
    pub fn build(self) -> Result<LengthCodec, LengthCodecError> {
        if ![1, 2, 4, 8].contains(&self.width) {
            return Err(LengthCodecError::Width(self.width));
        }
        if self.offset > 0 && self.payload == Payload::Body {
            return Err(LengthCodecError::OffsetNeedsWholeFrame {
                offset: self.offset,
            });
        }
        let header = self.offset + self.width;
        let field_limit = self.field_limit();
        let body_limit = match self.covers {
            LengthCovers::Body => field_limit,
            LengthCovers::WholeFrame => field_limit.checked_sub(header as u64).ok_or(
                LengthCodecError::HeaderExceedsField {
                    header,
                    field_limit,
                },
            )?,
        };
        let payload_limit = match self.payload {
            Payload::Body => body_limit,
            Payload::WholeFrame => body_limit.saturating_add(header as u64),
        };
        let max = match self.max_payload {
            Some(max) if max as u64 > payload_limit => {
                return Err(LengthCodecError::MaxTooLarge {
                    max,
                    field_limit: payload_limit,
                });
            }
            Some(max) => max,
            None => (DEFAULT_MAX_PAYLOAD as u64).min(payload_limit) as usize,
        };
        if self.payload == Payload::WholeFrame && max < header {
            return Err(LengthCodecError::MaxBelowHeader { max, header });
        }
        let standard = (
            self.offset,
            self.width,
            self.endian,
            self.signedness,
            self.covers,
            self.payload,
        ) == (
            0,
            4,
            Endian::Big,
            Signedness::Unsigned,
            LengthCovers::Body,
            Payload::Body,
        );
        Ok(LengthCodec {
            offset: self.offset,
            width: self.width,
            endian: self.endian,
            signedness: self.signedness,
            covers: self.covers,
            payload: self.payload,
            max_payload: max,
            standard,
            text_hint: None,
        })
    }

    /// The largest number the length field holds.
    fn field_limit(&self) -> u64 {
        let bits = 8 * self.width as u32 - u32::from(self.signedness == Signedness::Signed);
        u64::MAX >> (64 - bits)
    }
}

#[cfg(test)]
mod tests;
