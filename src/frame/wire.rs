//! switchboard's wire format for blocking `std::io` peers: tests, examples, tools.
//! Each helper goes through [`LengthCodec`], so the format has one home.
//!
//! ```
//! use switchboard::frame::wire;
//! let bytes = wire::frame(b"hi");
//! assert_eq!(bytes, [0, 0, 0, 2, b'h', b'i']);
//! let mut reader = &bytes[..];
//! assert_eq!(wire::read_frame(&mut reader).unwrap(), b"hi");
//! ```

use std::io::{self, Read, Write};

use super::{Codec, Decode, LengthCodec};
use crate::buffer::Buffer;

/// The codec for frames of any size the format describes.
fn codec() -> LengthCodec {
    LengthCodec::new(u32::MAX as usize)
}

/// `payload` in switchboard's wire format: 4-byte big-endian length, then the bytes.
/// Payloads over 4 GiB - 1 cannot be framed; this panics for them.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Buffer::new();
    codec()
        .encode(payload, &mut out)
        .expect("a payload the 4-byte length describes");
    out.readable().to_vec()
}

/// The 4-byte header announcing a `len`-byte payload, alone: for a peer that streams
/// the payload itself, and for tests that announce what they never send.
///
/// ```
/// assert_eq!(switchboard::frame::wire::header(258), [0, 0, 1, 2]);
/// ```
pub fn header(len: u32) -> [u8; 4] {
    let mut out = Buffer::new();
    codec()
        .encode_header(len as usize, &mut out)
        .expect("any u32 length fits the 4-byte field");
    let mut header = [0u8; 4];
    header.copy_from_slice(out.readable());
    header
}

/// The payload length a 4-byte header announces.
///
/// ```
/// use switchboard::frame::wire;
/// assert_eq!(wire::announced(wire::header(70_000)), 70_000);
/// ```
pub fn announced(header: [u8; 4]) -> u32 {
    match codec().decode(&mut (), &header) {
        Ok(Decode::Incomplete {
            frame_len: Some(len),
        }) => (len - header.len()) as u32,
        // Only a zero-length frame is whole with its header alone.
        _ => 0,
    }
}

/// Sends one frame.
pub fn write_frame(stream: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    stream.write_all(&frame(payload))
}

/// Reads one frame and returns its payload.
pub fn read_frame(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let frame_len = match codec().decode(&mut (), &header) {
        Ok(Decode::Frame { consumed, .. }) => consumed,
        Ok(Decode::Incomplete {
            frame_len: Some(len),
        }) => len,
        Ok(Decode::Incomplete { frame_len: None }) | Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad frame header",
            ))
        }
    };
    let mut payload = vec![0u8; frame_len - header.len()];
    stream.read_exact(&mut payload)?;
    Ok(payload)
}
