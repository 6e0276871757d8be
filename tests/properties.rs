//! Properties of the codecs and the buffer, checked with proptest on generated
//! streams, each fed the way the reactor feeds a connection's reads
//! (`tests/fuzz_checks/feed.rs`: append, scan, consume the complete frames, keep the
//! tail):
//!
//! - decoding does not depend on how the stream is split into reads (`LengthCodec` in
//!   every configuration, `LinesCodec` with its resumable scan), and agrees with the
//!   reference decoders of the fuzz targets;
//! - encoding then decoding is the identity: the `frame::wire` helpers, `encode`, and
//!   `encode_header` followed by the payload, for many frames, empty ones and ones of
//!   exactly the maximum;
//! - the bytes a connection holds between reads never reach the longest frame the
//!   codec allows (maximum payload plus header), whatever arrives; and a `Buffer`'s
//!   storage follows the bytes it held, at most twice the most it ever held.
//!
//! The reference decoders and the feeding live in `tests/fuzz_checks/`, shared with
//! the fuzz targets. Case counts keep the whole file to a few seconds.

mod fuzz_checks;

use std::collections::VecDeque;

use proptest::collection::vec;
use proptest::prelude::*;
use switchboard::frame::wire;
use switchboard::{Buffer, Codec, LengthCodec, LinesCodec};

use fuzz_checks::feed::{feed, Fed};
use fuzz_checks::input::split;
use fuzz_checks::length::{End, Format};

/// Any length-prefixed format the builder accepts, with a maximum from the smallest
/// the format allows (0, or the header alone for whole-frame payloads) up to a few
/// dozen bytes.
fn formats() -> impl Strategy<Value = Format> {
    (
        (0usize..4, any::<bool>(), any::<bool>()),
        (any::<bool>(), any::<bool>(), 0usize..4),
        (0usize..48, any::<bool>()),
    )
        .prop_map(
            |(
                (width, big_endian, signed),
                (covers_whole, payload_whole, offset),
                (extra, by_new),
            )| {
                let mut format = Format {
                    offset: if payload_whole { offset } else { 0 },
                    width: [1, 2, 4, 8][width],
                    big_endian,
                    signed,
                    covers_whole,
                    payload_whole,
                    max: 0,
                    by_new: false,
                };
                format.by_new = by_new && format.is_standard();
                format.max = extra + if payload_whole { format.header() } else { 0 };
                format
            },
        )
}

/// Read sizes, taken in turn, as the fuzz targets take them.
fn reads() -> impl Strategy<Value = Vec<usize>> {
    vec(1usize..64, 1..8)
}

/// Frame bodies: empty, as long as the maximum allows, or anything up to that.
fn bodies() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    vec((0u8..4, vec(any::<u8>(), 0..48)), 0..12)
}

/// The codec of a format the strategy made (always accepted).
fn codec(format: &Format) -> LengthCodec {
    assert_eq!(format.refusal(), None, "{format:?}");
    format.codec().unwrap()
}

/// The payloads the service would hand to `encode` for `bodies` (cut or stretched to
/// the format's limits), and the wire they make.
fn frames_of(format: &Format, bodies: &[(u8, Vec<u8>)]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let codec = codec(format);
    let header = format.header();
    let body_max = match format.payload_whole {
        true => format.max - header,
        false => format.max,
    };
    let mut payloads = Vec::new();
    let mut out = Buffer::new();
    for (kind, body) in bodies {
        let body = match kind {
            0 => Vec::new(),
            1 => vec![body.first().copied().unwrap_or(7); body_max],
            _ => body[..body.len().min(body_max)].to_vec(),
        };
        let payload = match format.payload_whole {
            // The service's own bytes before the field, room for the field, the body.
            true => [vec![*kind; format.offset], vec![0; format.width], body].concat(),
            false => body,
        };
        let start = out.len();
        codec.encode(&payload, &mut out).unwrap();
        payloads.push(match format.payload_whole {
            // Whole frames come back as they were sent: the field filled in.
            true => out.readable()[start..].to_vec(),
            false => payload,
        });
    }
    (payloads, out.readable().to_vec())
}

/// Both feeds came to the same frames, error and tail.
fn same(a: &Fed, b: &Fed) -> Result<(), TestCaseError> {
    prop_assert_eq!(&a.frames, &b.frames);
    prop_assert_eq!(&a.error, &b.error);
    prop_assert_eq!(&a.tail, &b.tail);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn length_decoding_does_not_depend_on_the_split(
        format in formats(),
        bodies in bodies(),
        garbage in vec(any::<u8>(), 0..16),
        (first, second) in (reads(), reads()),
    ) {
        let (payloads, mut stream) = frames_of(&format, &bodies);
        stream.extend_from_slice(&garbage);
        let codec = codec(&format);
        let whole = feed(&codec, [&stream[..]]);
        same(&whole, &feed(&codec, split(&stream, &first)))?;
        same(&whole, &feed(&codec, split(&stream, &second)))?;
        // The frames sent come first, then whatever the garbage makes.
        prop_assert!(whole.frames.len() >= payloads.len());
        prop_assert_eq!(&whole.frames[..payloads.len()], &payloads[..]);
        let reference = format.reference(&stream);
        prop_assert_eq!(&whole.frames, &reference.frames);
        match reference.end {
            End::Error(error) => prop_assert_eq!(whole.error, Some(error)),
            End::Tail { held, .. } => prop_assert_eq!(whole.tail.len(), held),
        }
    }

    #[test]
    fn lines_decoding_does_not_depend_on_the_split(
        stream in vec(prop_oneof![Just(b'a'), Just(b'\r'), Just(b'\n'), any::<u8>()], 0..200),
        max in 0usize..24,
        (first, second) in (reads(), reads()),
    ) {
        let codec = LinesCodec::new(max);
        let whole = feed(&codec, [&stream[..]]);
        same(&whole, &feed(&codec, split(&stream, &first)))?;
        same(&whole, &feed(&codec, split(&stream, &second)))?;
        let reference = fuzz_checks::lines::reference(&stream, max);
        prop_assert_eq!(&whole.frames, &reference.lines);
        prop_assert_eq!(whole.error.is_some(), reference.too_large);
    }

    #[test]
    fn the_wire_helpers_round_trip(
        payloads in vec(prop_oneof![Just(Vec::new()), vec(any::<u8>(), 0..600)], 0..16),
        announced in any::<u32>(),
    ) {
        let mut stream = Vec::new();
        for payload in &payloads {
            wire::write_frame(&mut stream, payload).unwrap();
        }
        let frames: Vec<u8> = payloads.iter().flat_map(|p| wire::frame(p)).collect();
        prop_assert_eq!(&stream, &frames);
        let mut reader = &stream[..];
        for payload in &payloads {
            prop_assert_eq!(&wire::read_frame(&mut reader).unwrap(), payload);
        }
        prop_assert!(reader.is_empty());
        let header = wire::header(announced);
        prop_assert_eq!(header, announced.to_be_bytes());
        prop_assert_eq!(wire::announced(header), announced);
    }

    #[test]
    fn encode_then_decode_is_the_identity(
        format in formats(),
        bodies in bodies(),
        reads in reads(),
    ) {
        let (payloads, stream) = frames_of(&format, &bodies);
        let codec = codec(&format);
        let fed = feed(&codec, split(&stream, &reads));
        prop_assert_eq!(&fed.frames, &payloads);
        prop_assert_eq!(fed.error, None);
        prop_assert!(fed.tail.is_empty());
        if format.offset == 0 && !format.payload_whole {
            // The header alone, then the payload appended by the caller: the same wire.
            let mut by_parts = Buffer::new();
            for payload in &payloads {
                codec.encode_header(payload.len(), &mut by_parts).unwrap();
                by_parts.extend_from_slice(payload);
            }
            prop_assert_eq!(by_parts.readable(), &stream[..]);
        }
    }

    #[test]
    fn held_bytes_stay_under_the_longest_frame(
        format in formats(),
        bodies in bodies(),
        cut in any::<prop::sample::Index>(),
        noise in vec(any::<u8>(), 0..64),
        reads in reads(),
    ) {
        let codec = codec(&format);
        // Frames cut anywhere (a peer that stops mid-frame), and noise alone.
        let (_, frames) = frames_of(&format, &bodies);
        let cut = &frames[..cut.index(frames.len() + 1)];
        let longest = format.max_frame() as usize;
        let largest_read = reads.iter().max().copied().unwrap_or(0);
        for stream in [cut, &noise[..]] {
            let fed = feed(&codec, split(stream, &reads));
            prop_assert!(fed.most_held < longest, "held {} of {:?}", fed.most_held, format);
            prop_assert!(fed.most_scanned < longest + largest_read);
        }
        let lines = LinesCodec::new(format.max);
        let fed = feed(&lines, split(&noise, &reads));
        prop_assert!(fed.most_held <= format.max + 1, "held {} as lines", fed.most_held);
    }

    #[test]
    fn buffer_storage_follows_the_bytes_held(
        steps in vec((any::<bool>(), 0usize..300, any::<prop::sample::Index>()), 0..40),
    ) {
        let mut buffer = Buffer::new();
        let mut model = VecDeque::new();
        let mut most = 0;
        let mut next = 0u8;
        for (append, len, share) in steps {
            if append {
                let bytes: Vec<u8> = (0..len).map(|_| { next = next.wrapping_add(1); next }).collect();
                buffer.extend_from_slice(&bytes);
                model.extend(bytes);
            } else {
                let n = share.index(model.len() + 1);
                buffer.consume(n);
                model.drain(..n);
            }
            most = most.max(model.len());
            prop_assert_eq!(buffer.readable(), &model.iter().copied().collect::<Vec<_>>()[..]);
            prop_assert!(
                buffer.capacity() <= (2 * most).max(64),
                "{} bytes of storage, at most {} bytes held", buffer.capacity(), most
            );
        }
    }
}

#[test]
fn the_reference_decoders_know_the_golden_bytes() {
    // The references are checks of their own: pin them to bytes worked out by hand.
    let standard = Format::standard(16).reference(&[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0]);
    assert_eq!(standard.frames, vec![b"abc".to_vec()]);
    assert_eq!(
        standard.end,
        End::Tail {
            held: 3,
            frame_len: None
        }
    );
    let http = Format::standard(16).reference(b"GET / HTTP/1.1\r\n");
    assert_eq!(
        http.end,
        End::Error(switchboard::FrameError::NotFrames {
            len: u32::from_be_bytes(*b"GET ") as u64,
            max: 16,
            http: true
        })
    );
    let lines = fuzz_checks::lines::reference(b"ab\r\n\ncd\r\r\nxy", 3);
    assert_eq!(lines.lines, vec![b"ab".to_vec(), vec![], b"cd\r".to_vec()]);
    assert_eq!(lines.tail, b"xy");
    assert!(fuzz_checks::lines::reference(b"abcd", 3).too_large);
    assert!(!fuzz_checks::lines::reference(b"abc\r", 3).too_large);
    assert!(fuzz_checks::lines::reference(b"abc\r\r", 3).too_large);
    // The codecs agree on them too.
    let codec = LengthCodec::new(16);
    let fed = feed(&codec, [&[0u8, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0][..]]);
    assert_eq!(fed.tail, [0, 0, 0]);
    let lines = feed(&LinesCodec::new(3), [&b"abc\r\nd"[..]]);
    assert_eq!(
        (lines.frames, lines.tail),
        (vec![b"abc".to_vec()], b"d".to_vec())
    );
}
