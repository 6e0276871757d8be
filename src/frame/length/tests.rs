//! Golden bytes for every [`LengthCodec`] option, the builder's refusals, and random
//! splitting of the stream for each option.

use proptest::prelude::*;

use super::*;
use crate::frame::tests::{decode_in_chunks, encode_all};

fn frame_of(codec: &LengthCodec, payload: &[u8]) -> Vec<u8> {
    encode_all(codec, &[payload.to_vec()])
}

fn build(builder: LengthCodecBuilder) -> LengthCodec {
    builder.build().expect("a configuration that works")
}

/// Encodes `body` with `codec`, checks the wire against `golden`, and checks that
/// decoding `golden` gives `body` back.
#[track_caller]
fn assert_golden(codec: &LengthCodec, body: &[u8], golden: &[u8]) {
    assert_eq!(frame_of(codec, body), golden, "encoded");
    let header = golden.len() - body.len();
    assert_eq!(
        codec.decode(&mut (), golden).unwrap(),
        Decode::Frame {
            payload: header..golden.len(),
            consumed: golden.len()
        },
        "decoded"
    );
}

/// A header followed by `body`.
fn with_header(header: &[u8], body: &[u8]) -> Vec<u8> {
    [header, body].concat()
}

#[test]
fn width_and_byte_order_golden_bytes() {
    // 258 = 0x0102, so the two byte orders differ.
    let body = vec![b'x'; 258];
    let cases: [(usize, Endian, &[u8]); 6] = [
        (2, Endian::Big, &[1, 2]),
        (2, Endian::Little, &[2, 1]),
        (4, Endian::Big, &[0, 0, 1, 2]),
        (4, Endian::Little, &[2, 1, 0, 0]),
        (8, Endian::Big, &[0, 0, 0, 0, 0, 0, 1, 2]),
        (8, Endian::Little, &[2, 1, 0, 0, 0, 0, 0, 0]),
    ];
    for (width, endian, header) in cases {
        let codec = build(LengthCodec::builder().length_width(width).endian(endian));
        assert_golden(&codec, &body, &with_header(header, &body));
    }
    let one_byte = build(LengthCodec::builder().length_width(1));
    assert_golden(&one_byte, &[b'y'; 200], &with_header(&[200], &[b'y'; 200]));
}

#[test]
fn length_covering_the_whole_frame() {
    let codec = build(
        LengthCodec::builder()
            .length_width(2)
            .length_covers(LengthCovers::WholeFrame),
    );
    assert_golden(&codec, b"hi", &[0, 4, b'h', b'i']);
    assert_eq!(
        codec.decode(&mut (), &[0, 2]).unwrap(),
        Decode::Frame {
            payload: 2..2,
            consumed: 2
        }
    );
    assert_eq!(
        codec.decode(&mut (), &[0, 1]),
        Err(FrameError::Malformed("length smaller than the header"))
    );
}

#[test]
fn offset_bytes_travel_with_whole_frame_payloads() {
    let codec = build(
        LengthCodec::builder()
            .length_offset(2)
            .length_width(2)
            .payload(Payload::WholeFrame),
    );
    // The service writes its two header bytes and leaves room for the length.
    let wire = frame_of(&codec, &[0xab, 0xcd, 0, 0, b'h', b'i']);
    assert_eq!(wire, [0xab, 0xcd, 0, 2, b'h', b'i']);
    assert_eq!(
        codec.decode(&mut (), &wire).unwrap(),
        Decode::Frame {
            payload: 0..6,
            consumed: 6
        }
    );
    // The offset bytes are not mistaken for the length: two bytes are not a header yet.
    assert_eq!(
        codec.decode(&mut (), &[0, 9]).unwrap(),
        Decode::Incomplete { frame_len: None }
    );
    assert_eq!(
        codec.decode(&mut (), &[0, 9, 0, 2, b'h']).unwrap(),
        Decode::Incomplete { frame_len: Some(6) }
    );
}

#[test]
fn whole_frame_payload_shorter_than_the_header_is_refused() {
    let codec = build(
        LengthCodec::builder()
            .length_offset(1)
            .payload(Payload::WholeFrame),
    );
    let mut out = Buffer::new();
    assert_eq!(
        codec.encode(&[1, 0, 0], &mut out),
        Err(FrameError::Malformed("payload shorter than the header"))
    );
    assert!(out.is_empty());
}

#[test]
fn the_tutorials_struct_pack_i_header() {
    // Python: struct.pack("i", 17) on x86 == b"\x11\x00\x00\x00".
    let codec = build(
        LengthCodec::builder()
            .endian(Endian::Little)
            .signedness(Signedness::Signed),
    );
    let json = br#"{"file_size": 3}"#;
    assert_eq!(json.len(), 16);
    assert_golden(&codec, json, &with_header(&[16, 0, 0, 0], json));
}

#[test]
fn negative_signed_lengths_are_malformed() {
    let signed = |width| {
        build(
            LengthCodec::builder()
                .length_width(width)
                .endian(Endian::Little)
                .signedness(Signedness::Signed),
        )
    };
    let negative = Err(FrameError::Malformed("negative length"));
    assert_eq!(
        signed(4).decode(&mut (), &[0xff, 0xff, 0xff, 0xff]),
        negative
    );
    assert_eq!(signed(4).decode(&mut (), &[0, 0, 0, 0x80]), negative);
    assert_eq!(signed(1).decode(&mut (), &[0x80]), negative);
    assert_eq!(signed(8).decode(&mut (), &[0xff; 8]), negative);
    assert_eq!(
        signed(1).decode(&mut (), &[0x7f]).unwrap(),
        Decode::Incomplete {
            frame_len: Some(128)
        }
    );
    // The same bytes unsigned are a (too) large length, not a negative one.
    let unsigned = build(LengthCodec::builder().endian(Endian::Little));
    assert_eq!(
        unsigned.decode(&mut (), &[0xff, 0xff, 0xff, 0xff]),
        Err(FrameError::TooLarge {
            len: u32::MAX as u64,
            max: DEFAULT_MAX_PAYLOAD
        })
    );
}

#[test]
fn maximum_counts_the_payload_as_the_service_sees_it() {
    let body_max = build(LengthCodec::builder().length_width(2).max_payload(3));
    assert!(matches!(
        body_max.decode(&mut (), &[0, 3, 1, 2, 3]),
        Ok(Decode::Frame { .. })
    ));
    assert_eq!(
        body_max.decode(&mut (), &[0, 4]),
        Err(FrameError::TooLarge { len: 4, max: 3 })
    );

    let whole_max = build(
        LengthCodec::builder()
            .length_width(2)
            .payload(Payload::WholeFrame)
            .max_payload(5),
    );
    assert!(matches!(
        whole_max.decode(&mut (), &[0, 3, 1, 2, 3]),
        Ok(Decode::Frame { .. })
    ));
    assert_eq!(
        whole_max.decode(&mut (), &[0, 4]),
        Err(FrameError::TooLarge { len: 6, max: 5 })
    );
    let mut out = Buffer::new();
    assert!(whole_max.encode(&[0; 6], &mut out).is_err());
}

#[test]
fn the_builder_refuses_what_cannot_work() {
    for width in [0, 3, 5, 16] {
        assert_eq!(
            LengthCodec::builder().length_width(width).build(),
            Err(LengthCodecError::Width(width))
        );
    }
    assert_eq!(
        LengthCodec::builder().length_offset(1).build(),
        Err(LengthCodecError::OffsetNeedsWholeFrame { offset: 1 })
    );
    assert_eq!(
        LengthCodec::builder()
            .length_width(1)
            .max_payload(256)
            .build(),
        Err(LengthCodecError::MaxTooLarge {
            max: 256,
            field_limit: 255
        })
    );
    assert_eq!(
        LengthCodec::builder()
            .length_width(1)
            .signedness(Signedness::Signed)
            .max_payload(128)
            .build(),
        Err(LengthCodecError::MaxTooLarge {
            max: 128,
            field_limit: 127
        })
    );
    assert_eq!(
        LengthCodec::builder()
            .length_width(1)
            .length_offset(255)
            .payload(Payload::WholeFrame)
            .length_covers(LengthCovers::WholeFrame)
            .build(),
        Err(LengthCodecError::HeaderExceedsField {
            header: 256,
            field_limit: 255
        })
    );
    assert_eq!(
        LengthCodec::builder()
            .payload(Payload::WholeFrame)
            .max_payload(3)
            .build(),
        Err(LengthCodecError::MaxBelowHeader { max: 3, header: 4 })
    );
    // The limits themselves are fine.
    assert!(LengthCodec::builder()
        .length_width(1)
        .max_payload(255)
        .build()
        .is_ok());
    assert!(LengthCodec::builder()
        .payload(Payload::WholeFrame)
        .max_payload(4)
        .build()
        .is_ok());
}

#[test]
fn refusals_explain_themselves() {
    let error = LengthCodec::builder().length_offset(2).build().unwrap_err();
    assert!(error.to_string().contains("Payload::WholeFrame"), "{error}");
    let error = LengthCodec::builder()
        .length_width(2)
        .max_payload(70_000)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("at most 65535"), "{error}");
    let _: &dyn std::error::Error = &error;
}

#[test]
fn defaults_are_switchboards_format() {
    assert_eq!(
        LengthCodec::builder().build(),
        Ok(LengthCodec::new(DEFAULT_MAX_PAYLOAD))
    );
    // A narrow field lowers the default maximum instead of refusing it.
    assert_eq!(
        build(LengthCodec::builder().length_width(2)).max_payload(),
        65_535
    );
    assert_eq!(
        LengthCodec::new(usize::MAX).max_payload(),
        u32::MAX as usize
    );
}

/// Configurations covering each option, for random splitting.
fn every_option() -> Vec<LengthCodec> {
    let b = LengthCodec::builder;
    vec![
        build(b()),
        build(b().length_width(1)),
        build(b().length_width(2).endian(Endian::Little)),
        build(b().length_width(8)),
        build(b().endian(Endian::Little).signedness(Signedness::Signed)),
        build(b().length_width(2).length_covers(LengthCovers::WholeFrame)),
        build(
            b().length_width(8)
                .endian(Endian::Little)
                .payload(Payload::WholeFrame),
        ),
        build(
            b().length_offset(3)
                .endian(Endian::Little)
                .length_covers(LengthCovers::WholeFrame)
                .payload(Payload::WholeFrame),
        ),
    ]
}

/// What the service hands to `encode` for `body`: the body itself, or, for whole-frame
/// payloads, `prefix` bytes, room for the length field, then the body.
fn payload_for(codec: &LengthCodec, prefix: u8, body: &[u8]) -> Vec<u8> {
    match codec.payload {
        Payload::Body => body.to_vec(),
        Payload::WholeFrame => {
            let mut payload = vec![prefix; codec.offset];
            payload.resize(codec.header_len(), 0);
            payload.extend_from_slice(body);
            payload
        }
    }
}

proptest! {
    #[test]
    fn any_split_yields_the_frames_sent_for_every_option(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..12),
        chunks in proptest::collection::vec(1usize..40, 1..6),
        prefix in any::<u8>(),
    ) {
        for codec in every_option() {
            let payloads: Vec<Vec<u8>> =
                bodies.iter().map(|body| payload_for(&codec, prefix, body)).collect();
            let wire = encode_all(&codec, &payloads);
            let decoded = decode_in_chunks(&codec, &wire, &chunks);
            prop_assert_eq!(decoded.len(), bodies.len());
            let header = codec.header_len();
            for (frame, body) in decoded.iter().zip(&bodies) {
                match codec.payload {
                    Payload::Body => prop_assert_eq!(frame, body),
                    Payload::WholeFrame => {
                        prop_assert_eq!(&frame[..codec.offset], &vec![prefix; codec.offset][..]);
                        prop_assert_eq!(&frame[header..], &body[..]);
                    }
                }
            }
            if codec.payload == Payload::WholeFrame {
                // Whole frames are the wire itself, length fields included.
                prop_assert_eq!(decoded.concat(), wire);
            }
        }
    }
}

#[test]
fn the_default_format_takes_the_fast_path_and_built_equivalents_do_too() {
    assert!(LengthCodec::new(1024).standard);
    assert!(build(LengthCodec::builder()).standard);
    assert!(!build(LengthCodec::builder().endian(Endian::Little)).standard);
}

proptest! {
    /// The straight-line decoder for the default format answers exactly as the general
    /// one does, for any bytes: frames, incomplete headers and bodies, oversized lengths.
    #[test]
    fn fast_and_general_decoders_agree(
        bytes in proptest::collection::vec(any::<u8>(), 0..40),
        small_lengths in any::<bool>(),
        max in 0usize..64,
    ) {
        let mut bytes = bytes;
        if small_lengths && bytes.len() >= 4 {
            // Make the announced length small enough to be a frame sometimes.
            bytes[..3].fill(0);
        }
        let fast = LengthCodec::new(max);
        let mut general = fast.clone();
        general.standard = false;
        prop_assert_eq!(fast.decode(&mut (), &bytes), general.decode(&mut (), &bytes));
    }
}

proptest! {
    /// The tight scan of the default format finds exactly the frames, the bytes and the
    /// error that one decode per frame finds, however the frames and garbage lie.
    #[test]
    fn the_fast_scan_agrees_with_decoding_frame_by_frame(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..12),
        tail in proptest::collection::vec(any::<u8>(), 0..10),
        max in 0usize..24,
    ) {
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            wire.extend_from_slice(frame);
        }
        wire.extend_from_slice(&tail);
        let codec = LengthCodec::new(max);
        prop_assert!(codec.standard);
        let by_decode = crate::frame::scan_by_decode(&codec, &mut (), &wire);
        prop_assert_eq!(codec.scan(&mut (), &wire), by_decode);
    }
}

#[test]
fn a_header_encoded_alone_is_the_header_encode_writes() {
    let codecs = [
        LengthCodec::new(1000),
        build(
            LengthCodec::builder()
                .length_width(2)
                .endian(Endian::Little),
        ),
        build(LengthCodec::builder().length_width(8)),
        build(LengthCodec::builder().length_covers(LengthCovers::WholeFrame)),
    ];
    for codec in &codecs {
        for len in [0, 1, 255, 256, 999] {
            let payload = vec![7u8; len];
            let mut by_parts = Buffer::new();
            codec.encode_header(len, &mut by_parts).unwrap();
            by_parts.extend_from_slice(&payload);
            assert_eq!(
                by_parts.readable(),
                &frame_of(codec, &payload)[..],
                "{codec:?} {len}"
            );
        }
    }
    let offset = build(
        LengthCodec::builder()
            .length_offset(1)
            .payload(Payload::WholeFrame),
    );
    assert!(offset.encode_header(3, &mut Buffer::new()).is_err());
    assert!(LengthCodec::new(4)
        .encode_header(5, &mut Buffer::new())
        .is_err());
}

/// The HTTP answer is well formed: its Content-Length is its body's length.
#[test]
fn the_answer_to_an_http_client_is_a_whole_http_response() {
    let mut out = Buffer::new();
    let not_http = FrameError::NotFrames {
        len: 0x4745_5420,
        max: 1 << 20,
        http: true,
    };
    LengthCodec::new(1 << 20).error_reply(&not_http, &mut out);
    let text = std::str::from_utf8(out.readable()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 400 "));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len());
    // Any other framing error: no last words, a reset.
    let mut out = Buffer::new();
    let too_large = FrameError::TooLarge { len: 9, max: 8 };
    LengthCodec::new(8).error_reply(&too_large, &mut out);
    assert!(out.is_empty());
}
