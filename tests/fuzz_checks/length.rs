//! `LengthCodec` in every configuration, against a reference decoder.
//!
//! The input's first bytes choose a configuration: field width, byte order,
//! signedness, what the length counts, what the payload is, the offset, the maximum
//! (from 0 up: the header-only edge, small maxima, the field's own limit and one past
//! it) and whether [`LengthCodec::new`] or the builder makes it. Then come the read
//! sizes, then the stream.
//!
//! The check: the builder refuses exactly the configurations the reference refuses,
//! with the same error; otherwise the stream, fed read by read as the reactor feeds it
//! ([`super::feed`]), gives the reference's frames in order and its error or its tail;
//! an oversized announcement is refused from its header, as `TooLarge`, or `NotFrames`
//! when the header is text; the bytes held between reads stay under the largest frame
//! the configuration allows (maximum payload plus header); and encoding the frames
//! again gives the bytes they came from.

use switchboard::frame::{Endian, LengthCodecError, LengthCovers, Payload, Signedness};
use switchboard::{Buffer, Codec, Decode, FrameError, LengthCodec};

use super::feed::feed;
use super::input::{split, Input};

/// A length-prefixed format, described independently of the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// Bytes before the length field.
    pub offset: usize,
    /// Width of the length field: 1, 2, 4 or 8.
    pub width: usize,
    /// Big-endian field.
    pub big_endian: bool,
    /// Signed field.
    pub signed: bool,
    /// The length counts header and body (else the body).
    pub covers_whole: bool,
    /// The payload is the whole frame (else the body).
    pub payload_whole: bool,
    /// The maximum payload asked for.
    pub max: usize,
    /// Made with `LengthCodec::new` (only for switchboard's own format).
    pub by_new: bool,
}

impl Format {
    /// switchboard's own format with the maximum `max`, made with `LengthCodec::new`.
    pub fn standard(max: usize) -> Format {
        Format {
            offset: 0,
            width: 4,
            big_endian: true,
            signed: false,
            covers_whole: false,
            payload_whole: false,
            max,
            by_new: true,
        }
    }

    /// Reads a format from the front of the input.
    pub fn read(input: &mut Input<'_>) -> Format {
        let flags = input.byte();
        let offset_byte = input.byte();
        let max_byte = input.byte();
        let max_low = input.u16();
        let mut format = Format {
            offset: 0,
            width: [1, 2, 4, 8][usize::from(flags & 3)],
            big_endian: flags & 4 == 0,
            signed: flags & 8 != 0,
            covers_whole: flags & 16 != 0,
            payload_whole: flags & 32 != 0,
            max: 0,
            by_new: false,
        };
        format.offset = match format.payload_whole {
            true => usize::from(offset_byte % 4),
            // Bytes before the field with body payloads: refused, once in a while.
            false => usize::from(offset_byte == 0xff),
        };
        format.by_new = flags & 64 != 0 && format.is_standard();
        let header = format.header();
        let floor = if format.payload_whole { header } else { 0 };
        let max_low = usize::from(max_low);
        format.max = match max_byte % 4 {
            // From the smallest a configuration allows: 0, or the header alone.
            0 | 1 => floor + max_low % 512,
            // Around the header: below it is refused for whole-frame payloads.
            2 => max_low % (header + 2),
            // Around the largest the field describes, and past it.
            _ => {
                let limit = match format.by_new {
                    true => u32::MAX as usize,
                    false => usize::try_from(format.payload_limit()).unwrap_or(usize::MAX),
                };
                limit
                    .saturating_sub(max_low % 4)
                    .saturating_add((max_low >> 2) % 3)
            }
        };
        format
    }

    /// Header length: the offset plus the field.
    pub fn header(&self) -> usize {
        self.offset + self.width
    }

    /// switchboard's own format: 4-byte big-endian unsigned body length, no offset.
    pub fn is_standard(&self) -> bool {
        (self.offset, self.width, self.big_endian, self.signed) == (0, 4, true, false)
            && !self.covers_whole
            && !self.payload_whole
    }

    /// The largest number the field holds.
    pub fn field_limit(&self) -> u128 {
        (1u128 << (8 * self.width - usize::from(self.signed))) - 1
    }

    /// The largest payload the field can describe (the field's limit, less the header
    /// if the length counts it, plus the header if the payload includes it).
    pub fn payload_limit(&self) -> u128 {
        let header = self.header() as u128;
        let body = match self.covers_whole {
            true => self.field_limit().saturating_sub(header),
            false => self.field_limit(),
        };
        match self.payload_whole {
            true => body + header,
            false => body,
        }
    }

    /// The maximum the codec works with: `LengthCodec::new` lowers it to what 4 bytes
    /// describe.
    pub fn effective_max(&self) -> usize {
        match self.by_new {
            true => self.max.min(u32::MAX as usize),
            false => self.max,
        }
    }

    /// The longest frame, header included, the format accepts.
    pub fn max_frame(&self) -> u128 {
        let max = self.effective_max() as u128;
        match self.payload_whole {
            true => max,
            false => max + self.header() as u128,
        }
    }

    /// Why the builder must refuse this format, if it must.
    pub fn refusal(&self) -> Option<LengthCodecError> {
        if self.by_new {
            return None;
        }
        let header = self.header();
        if self.offset > 0 && !self.payload_whole {
            return Some(LengthCodecError::OffsetNeedsWholeFrame {
                offset: self.offset,
            });
        }
        let field_limit = u64::try_from(self.field_limit()).unwrap();
        if self.covers_whole && self.field_limit() < header as u128 {
            return Some(LengthCodecError::HeaderExceedsField {
                header,
                field_limit,
            });
        }
        let payload_limit = self.payload_limit().min(u64::MAX as u128);
        if self.max as u128 > payload_limit {
            return Some(LengthCodecError::MaxTooLarge {
                max: self.max,
                field_limit: payload_limit as u64,
            });
        }
        if self.payload_whole && self.max < header {
            return Some(LengthCodecError::MaxBelowHeader {
                max: self.max,
                header,
            });
        }
        None
    }

    /// The codec for this format, or the builder's refusal.
    pub fn codec(&self) -> Result<LengthCodec, LengthCodecError> {
        if self.by_new {
            return Ok(LengthCodec::new(self.max));
        }
        LengthCodec::builder()
            .length_offset(self.offset)
            .length_width(self.width)
            .endian(match self.big_endian {
                true => Endian::Big,
                false => Endian::Little,
            })
            .signedness(match self.signed {
                true => Signedness::Signed,
                false => Signedness::Unsigned,
            })
            .length_covers(match self.covers_whole {
                true => LengthCovers::WholeFrame,
                false => LengthCovers::Body,
            })
            .payload(match self.payload_whole {
                true => Payload::WholeFrame,
                false => Payload::Body,
            })
            .max_payload(self.max)
            .build()
    }

    /// The field's number in `field`, sign-extended when signed.
    fn field_value(&self, field: &[u8]) -> i128 {
        let mut value: u128 = 0;
        let mut bytes = field.to_vec();
        if !self.big_endian {
            bytes.reverse();
        }
        for byte in bytes {
            value = value << 8 | u128::from(byte);
        }
        let bits = 8 * self.width as u32;
        if self.signed && value >> (bits - 1) == 1 {
            value as i128 - (1i128 << bits)
        } else {
            value as i128
        }
    }

    /// The reference decoder: the whole stream at once, frame by frame, each
    /// length worked out in wide integers so nothing can overflow.
    pub fn reference(&self, stream: &[u8]) -> Reference {
        let header = self.header();
        let max = self.effective_max() as u128;
        let mut frames = Vec::new();
        let mut pos = 0;
        loop {
            let rest = &stream[pos..];
            if rest.len() < header {
                return Reference::tail(frames, rest.len(), None);
            }
            let value = self.field_value(&rest[self.offset..header]);
            if value < 0 {
                return Reference::error(frames, FrameError::Malformed("negative length"));
            }
            let body = match self.covers_whole {
                true if value < header as i128 => {
                    let why = "length smaller than the header";
                    return Reference::error(frames, FrameError::Malformed(why));
                }
                true => value as u128 - header as u128,
                false => value as u128,
            };
            let payload = match self.payload_whole {
                true => body + header as u128,
                false => body,
            };
            let frame = header as u128 + body;
            let len = payload.min(u64::MAX as u128) as u64;
            let max = max as usize;
            if payload > max as u128 {
                let error = oversized(&rest[..header], len, max);
                return Reference::error(frames, error);
            }
            if frame > usize::MAX as u128 {
                return Reference::error(frames, FrameError::TooLarge { len, max });
            }
            let frame = frame as usize;
            if rest.len() < frame {
                return Reference::tail(frames, rest.len(), Some(frame));
            }
            let start = if self.payload_whole { 0 } else { header };
            frames.push(rest[start..frame].to_vec());
            pos += frame;
        }
    }
}

/// The error for an announcement over the maximum: `NotFrames` when every header byte
/// is printable ASCII or a space (`http` when they begin an HTTP method), else
/// `TooLarge`.
fn oversized(header: &[u8], len: u64, max: usize) -> FrameError {
    if !header.iter().all(|&b| (b' '..=b'~').contains(&b)) {
        return FrameError::TooLarge { len, max };
    }
    let methods = [
        "GET ", "POST", "HEAD", "PUT ", "DELE", "OPTI", "PATC", "CONN", "TRAC",
    ];
    let http = methods.iter().any(|m| header.starts_with(m.as_bytes()));
    FrameError::NotFrames { len, max, http }
}

/// What the reference decoder made of a whole stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The payloads, in order.
    pub frames: Vec<Vec<u8>>,
    /// How the stream ends.
    pub end: End,
}

/// How a stream ends after its complete frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A framing error.
    Error(FrameError),
    /// A partial frame of `held` bytes, whose whole length is known once its header
    /// is in.
    Tail {
        /// Bytes of the partial frame.
        held: usize,
        /// The frame's length, header included, when the header is complete.
        frame_len: Option<usize>,
    },
}

impl Reference {
    fn tail(frames: Vec<Vec<u8>>, held: usize, frame_len: Option<usize>) -> Reference {
        let end = End::Tail { held, frame_len };
        Reference { frames, end }
    }

    fn error(frames: Vec<Vec<u8>>, error: FrameError) -> Reference {
        let end = End::Error(error);
        Reference { frames, end }
    }
}

/// The `length_codec` fuzz target's check.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let format = Format::read(&mut input);
    let sizes = input.chunk_sizes();
    check_stream(&format, input.rest(), &sizes);
}

/// Checks one format on one stream cut into reads of `sizes`.
pub fn check_stream(format: &Format, stream: &[u8], sizes: &[usize]) {
    let codec = match (format.codec(), format.refusal()) {
        (Ok(codec), None) => codec,
        (Err(refused), Some(expected)) => {
            assert_eq!(refused, expected, "{format:?}");
            return;
        }
        (built, expected) => panic!("{format:?}: built {built:?}, expected {expected:?}"),
    };
    assert_eq!(codec.header_len(), format.header(), "{format:?}");
    assert_eq!(codec.max_payload(), format.effective_max(), "{format:?}");

    let reference = format.reference(stream);
    let fed = feed(&codec, split(stream, sizes));
    assert_eq!(fed.frames, reference.frames, "{format:?}: frames");
    let consumed = match &reference.end {
        End::Error(error) => {
            assert_eq!(fed.error.as_ref(), Some(error), "{format:?}: the error");
            None
        }
        End::Tail { held, frame_len } => {
            assert_eq!(
                fed.error, None,
                "{format:?}: an error the reference has not"
            );
            assert_eq!(fed.tail.len(), *held, "{format:?}: the tail");
            let tail = codec.decode(&mut (), &fed.tail);
            let expected = if fed.tail.is_empty() {
                Decode::Incomplete { frame_len: None }
            } else {
                Decode::Incomplete {
                    frame_len: *frame_len,
                }
            };
            assert_eq!(tail, Ok(expected), "{format:?}: the tail's frame length");
            if let Some(frame_len) = frame_len {
                assert!(*frame_len as u128 <= format.max_frame(), "{format:?}");
            }
            Some(stream.len() - held)
        }
    };
    // Memory: between reads a connection holds at most one partial frame, shorter than
    // the longest frame the format allows.
    assert!(
        (fed.most_held as u128) < format.max_frame().max(1),
        "{format:?}: held {} bytes, the longest frame is {}",
        fed.most_held,
        format.max_frame()
    );
    if let Some(consumed) = consumed {
        check_encoding(format, &codec, &reference.frames, &stream[..consumed]);
    }
}

/// Encoding the decoded frames again gives the bytes they were decoded from: the
/// length field is a function of the payload, and whole-frame payloads carry their
/// own offset bytes. `encode_header` and the maximum agree with `encode`.
fn check_encoding(format: &Format, codec: &LengthCodec, frames: &[Vec<u8>], wire: &[u8]) {
    let mut out = Buffer::new();
    for frame in frames {
        codec
            .encode(frame, &mut out)
            .expect("a decoded frame encodes");
    }
    assert_eq!(out.readable(), wire, "{format:?}: encoded again");
    let header_alone = format.offset == 0 && !format.payload_whole;
    for frame in frames.iter().take(4) {
        let mut by_parts = Buffer::new();
        let header = codec.encode_header(frame.len(), &mut by_parts);
        match header_alone {
            true => {
                assert_eq!(header, Ok(()), "{format:?}");
                by_parts.extend_from_slice(frame);
                let mut whole = Buffer::new();
                codec.encode(frame, &mut whole).unwrap();
                assert_eq!(by_parts.readable(), whole.readable(), "{format:?}");
            }
            false => assert!(header.is_err(), "{format:?}: encode_header with an offset"),
        }
    }
    let max = format.effective_max();
    if max < 4096 {
        let over = vec![0u8; max + 1];
        let mut out = Buffer::new();
        let refused = codec.encode(&over, &mut out);
        assert_eq!(
            refused,
            Err(FrameError::TooLarge {
                len: max as u64 + 1,
                max
            }),
            "{format:?}"
        );
        assert!(
            out.is_empty(),
            "{format:?}: a refused frame left bytes behind"
        );
    }
}
