//! The fuzzer's bytes as a test case: settings first, then split points, then the
//! stream itself.
//!
//! Every check reads its settings with [`Input`] from the front of the bytes, so any
//! input is a valid case (missing bytes read as zero) and a mutation of one setting
//! byte changes one setting. The split points come next ([`Input::chunk_sizes`]): the
//! stream is cut into reads of those sizes, taken in turn, so the input decides how
//! the bytes arrive as much as what they are.

/// A cursor over the fuzzer's bytes.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    /// The next byte, or 0 once the input is used up.
    pub fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&first, rest)) => {
                self.bytes = rest;
                first
            }
            None => 0,
        }
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Read sizes: a count (0 to 7), then that many sizes of 1 to 256 bytes each. No
    /// sizes means the whole stream arrives in one read.
    pub fn chunk_sizes(&mut self) -> Vec<usize> {
        let count = self.byte() % 8;
        (0..count).map(|_| usize::from(self.byte()) + 1).collect()
    }

    /// What is left: the stream.
    pub fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// `stream` cut into reads of `sizes`, taken in turn (the last read may be shorter);
/// one read of everything when `sizes` is empty.
pub fn split<'a>(stream: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![stream];
    }
    let mut reads = Vec::new();
    let mut rest = stream;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (read, after) = rest.split_at(size.clamp(1, rest.len()));
        reads.push(read);
        rest = after;
    }
    reads
}
