//! `LinesCodec` and its resumable scan, against a split on `\n`.
//!
//! The input's first bytes choose the maximum line length (0 up to a few thousand
//! bytes, or one near `usize::MAX`: "no limit"), then the read sizes, then the stream.
//!
//! The contract the reference states: a line is the bytes before a `\n`, less one
//! `\r` right before it; a line longer than the maximum, terminator excluded, is
//! `TooLarge`, and so is a partial line that already cannot end within the maximum
//! (more than the maximum, not counting one `\r` that a `\n` may still follow). The
//! stream fed read by read as the reactor feeds it ([`super::feed`]), with one scan
//! state carried across reads, must give the same lines, the same verdict and the
//! same tail, and hold no more between reads than a maximal line and its `\r`.

use switchboard::{Buffer, Codec, FrameError, LinesCodec};

use super::feed::feed;
use super::input::{split, Input};

/// What the reference makes of a whole stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The lines, terminators stripped.
    pub lines: Vec<Vec<u8>>,
    /// The stream has a line over the maximum (after the lines above).
    pub too_large: bool,
    /// The partial line at the end, when there is no error.
    pub tail: Vec<u8>,
}

/// The reference: `stream` split on `\n` with lines of at most `max` bytes.
pub fn reference(stream: &[u8], max: usize) -> Reference {
    let mut lines = Vec::new();
    let mut pieces = stream.split(|&b| b == b'\n').peekable();
    while let Some(piece) = pieces.next() {
        if pieces.peek().is_none() {
            // No `\n` after it: the partial line. It may still end within the maximum
            // only if it is no longer than that, or one byte longer with that byte a
            // `\r`.
            let within = piece.len() <= max
                || (piece.len() == max.saturating_add(1) && piece.last() == Some(&b'\r'));
            return Reference {
                lines,
                too_large: !within,
                tail: if within { piece.to_vec() } else { Vec::new() },
            };
        }
        let line = piece.strip_suffix(b"\r").unwrap_or(piece);
        if line.len() > max {
            return Reference {
                lines,
                too_large: true,
                tail: Vec::new(),
            };
        }
        lines.push(line.to_vec());
    }
    unreachable!("split yields at least one piece")
}

/// The maximum line length, from the front of the input.
pub fn read_max(input: &mut Input<'_>) -> usize {
    let mode = input.byte();
    let value = usize::from(input.u16());
    match mode % 8 {
        // Near usize::MAX: a codec made with "no limit" in mind.
        7 => usize::MAX - value % 4,
        _ => value % 4096,
    }
}

/// The `lines_codec` fuzz target's check.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let max = read_max(&mut input);
    let sizes = input.chunk_sizes();
    check_stream(max, input.rest(), &sizes);
}

/// Checks lines of at most `max` bytes on one stream cut into reads of `sizes`.
pub fn check_stream(max: usize, stream: &[u8], sizes: &[usize]) {
    let codec = LinesCodec::new(max);
    let expected = reference(stream, max);
    let fed = feed(&codec, split(stream, sizes));
    assert_eq!(fed.frames, expected.lines, "max {max}: lines");
    match (&fed.error, expected.too_large) {
        (None, false) => assert_eq!(fed.tail, expected.tail, "max {max}: the tail"),
        (Some(FrameError::TooLarge { len, max: said }), true) => {
            assert_eq!(*said, max, "the error's maximum");
            assert!(*len > max as u64, "TooLarge for {len} bytes, max {max}");
        }
        (error, too_large) => {
            panic!("max {max}: error {error:?}, reference too large: {too_large}")
        }
    }
    // Memory: between reads at most one partial line that may still fit is held.
    assert!(
        fed.most_held <= max.saturating_add(1),
        "max {max}: held {} bytes",
        fed.most_held
    );
    // Lines encode to one `\n`-terminated line each, which decodes to the same lines
    // (except a line ending in `\r`, which the terminator would swallow).
    if !expected.too_large {
        let plain: Vec<Vec<u8>> = expected
            .lines
            .into_iter()
            .filter(|line| !line.ends_with(b"\r"))
            .collect();
        let mut wire = Buffer::new();
        for line in &plain {
            codec.encode(line, &mut wire).unwrap();
        }
        let again = feed(&codec, split(wire.readable(), sizes));
        assert_eq!(again.frames, plain, "max {max}: encoded again");
        assert_eq!(again.error, None, "max {max}: encoded again");
    }
}
