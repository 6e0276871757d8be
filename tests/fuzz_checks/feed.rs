//! A connection's input path as the reactor runs it (`src/reactor/read.rs`), without
//! sockets: each read is appended behind the partial frame held from the reads before,
//! [`Codec::scan`] finds the complete frames, the service walks them with
//! [`Frames::payloads`], they are consumed, and only the incomplete tail is kept, in
//! the connection's [`LazyBuffer`] from a [`BufferPool`]. One codec state lives for the
//! whole stream, as the reactor keeps one per connection.
//!
//! On the way it asserts what must hold after every read: the tight scan finds what
//! one decode per frame finds, the service sees exactly the frames the scan counted,
//! and the codec says "incomplete" about the tail it leaves.

use switchboard::frame::scan_by_decode;
use switchboard::{Buffer, BufferPool, Codec, Decode, FrameError, Frames, LazyBuffer};

/// What a stream fed read by read came to.
#[derive(Debug, Default)]
pub struct Fed {
    /// The payloads the service was handed, in order.
    pub frames: Vec<Vec<u8>>,
    /// The framing error that stopped the connection, if one did.
    pub error: Option<FrameError>,
    /// The partial frame held at the end (empty after an error: the connection closes).
    pub tail: Vec<u8>,
    /// The most bytes held between reads.
    pub most_held: usize,
    /// The most bytes one scan looked at (the held tail plus one read).
    pub most_scanned: usize,
}

/// Feeds `reads` to `codec` as the reactor feeds one connection's reads to it.
pub fn feed<'a, C: Codec>(codec: &C, reads: impl IntoIterator<Item = &'a [u8]>) -> Fed {
    let mut pool = BufferPool::default();
    let mut held = LazyBuffer::default();
    let mut state = C::State::default();
    let mut scratch = Buffer::new();
    let mut fed = Fed::default();
    for read in reads {
        // The held tail in front of the new bytes, so frames decode in one place.
        scratch.clear();
        scratch.extend_from_slice(held.readable());
        scratch.extend_from_slice(read);
        let bytes = scratch.readable();
        fed.most_scanned = fed.most_scanned.max(bytes.len());

        let before = state.clone();
        let scan = codec.scan(&mut state, bytes);
        let by_decode = scan_by_decode(codec, &mut before.clone(), bytes);
        assert_eq!(scan, by_decode, "scan and decode-by-decode disagree");
        assert!(
            scan.complete <= bytes.len(),
            "scan past the buffer: {scan:?}"
        );

        let frames = Frames::new(&bytes[..scan.complete], scan.count, codec, before);
        let payloads: Vec<Vec<u8>> = frames.payloads().map(<[u8]>::to_vec).collect();
        assert_eq!(
            payloads.len(),
            scan.count,
            "the service sees a different count"
        );
        fed.frames.extend(payloads);
        scratch.consume(scan.complete);

        if let Some(error) = scan.error {
            fed.error = Some(error);
            return fed;
        }
        if !scratch.is_empty() {
            // What is left is one partial frame, and the codec says so, from the state
            // the scan left behind.
            let again = codec.decode(&mut state.clone(), scratch.readable());
            assert!(
                matches!(again, Ok(Decode::Incomplete { .. })),
                "the tail left by a scan decodes as {again:?}"
            );
        }
        if let Some(buffer) = held.as_mut() {
            buffer.clear();
        }
        if !scratch.is_empty() {
            held.get_mut(&mut pool)
                .extend_from_slice(scratch.readable());
        }
        held.release_if_empty(&mut pool);
        assert_eq!(
            held.has_storage(),
            !held.is_empty(),
            "an empty tail keeps storage"
        );
        fed.most_held = fed.most_held.max(held.len());
    }
    fed.tail = held.readable().to_vec();
    fed
}
