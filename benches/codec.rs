//! Micro-benchmarks of the frame decoder: how many frames per second
//! `LengthCodec::decode` + `Buffer` cut out of a byte stream, for 64 B, 1 KiB and
//! 64 KiB payloads.
//!
//! Two arrival patterns:
//! - `whole`: every frame of the batch arrives in one piece (one big read).
//! - `split`: the same bytes arrive 1,000 at a time, so frames are cut across reads
//!   and the decoder keeps meeting incomplete frames (the "sticky packet" case).
//!
//! Each iteration copies the arriving bytes into the buffer (as a read would) and
//! decodes and consumes every complete frame. Run with `cargo bench --bench codec`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard::frame::wire::frame;
use switchboard::{Buffer, Codec, Decode, LengthCodec};

/// Bytes per arrival in the `split` pattern.
const PIECE: usize = 1000;

/// `count` frames of `size`-byte payloads in switchboard's wire format.
fn wire(size: usize, count: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    frame(&payload).repeat(count)
}

/// Decodes and consumes every complete frame in `buf`; returns how many there were.
fn decode_available(codec: &LengthCodec, buf: &mut Buffer) -> usize {
    let mut frames = 0;
    while let Ok(Decode::Frame { payload, consumed }) = codec.decode(&mut (), buf.readable()) {
        black_box(&buf.readable()[payload]);
        buf.consume(consumed);
        frames += 1;
    }
    frames
}

/// Feeds `bytes` to the buffer in pieces of `piece` bytes, decoding after each.
fn arrive(codec: &LengthCodec, buf: &mut Buffer, bytes: &[u8], piece: usize) -> usize {
    bytes
        .chunks(piece)
        .map(|chunk| {
            buf.extend_from_slice(chunk);
            decode_available(codec, buf)
        })
        .sum()
}

fn decode(c: &mut Criterion) {
    let codec = LengthCodec::new(1 << 20);
    let mut group = c.benchmark_group("decode");
    // (payload size, frames per batch): batches of 64-256 KiB.
    for (size, count) in [(64, 1000), (1024, 100), (64 * 1024, 4)] {
        let bytes = wire(size, count);
        group.throughput(Throughput::Elements(count as u64));
        for (pattern, piece) in [("whole", bytes.len()), ("split", PIECE)] {
            let mut buf = Buffer::new();
            group.bench_with_input(BenchmarkId::new(pattern, size), &bytes, |b, bytes| {
                b.iter(|| {
                    let frames = arrive(&codec, &mut buf, bytes, piece);
                    assert_eq!(frames, count);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
