//! HTTP/1.1 request heads as a protocol codec (feature `admin`): each request head is
//! one unit, processed once in the connection's own buffer by httparse, with the method
//! and the path as its parts. The admin endpoint reads its requests with it; a service
//! can serve simple HTTP with it too (answers are written as they are given: whole
//! responses). Request bodies are not read.
//!
//! ```
//! use switchboard::protocol::http::HttpCodec;
//! use switchboard::{Buffer, Codec, Decode, ProtocolIo};
//!
//! let codec = HttpCodec::new(8 * 1024);
//! let mut request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
//! let (mut replies, mut parts) = (Buffer::new(), Vec::new());
//! let mut io = ProtocolIo::new(&mut replies, &mut parts);
//! let found = codec.process(&mut (), &mut request, &mut io).unwrap();
//! assert!(matches!(found, Decode::Frame { consumed: 34, .. }));
//! assert_eq!(&request[parts[1].clone()], b"/metrics");
//! ```

use super::ProtocolIo;
use crate::buffer::Buffer;
use crate::frame::{Codec, Decode, FrameError};
use crate::http::response;

/// The kind of a request unit ([`crate::Unit::kind`]); its parts are the method and
/// the path.
pub const REQUEST: u32 = 1;

/// Request heads of at most `max_head` bytes, however they arrive.
#[derive(Debug, Clone)]
pub struct HttpCodec {
    max_head: usize,
}

impl HttpCodec {
    /// Heads of at most `max_head` bytes (request line and headers).
    pub fn new(max_head: usize) -> Self {
        HttpCodec { max_head }
    }
}

impl Codec for HttpCodec {
    type State = ();

    /// Not used: a protocol's units are processed ([`Codec::process`]).
    fn decode(&self, _: &mut (), _: &[u8]) -> Result<Decode, FrameError> {
        Err(FrameError::Malformed("HTTP is processed, not decoded"))
    }

    /// Answers are whole responses, written as they are.
    fn encode(&self, payload: &[u8], out: &mut Buffer) -> Result<(), FrameError> {
        out.extend_from_slice(payload);
        Ok(())
    }

    /// A head over the limit gets 431, anything malformed 400.
    fn error_reply(&self, error: &FrameError, out: &mut Buffer) {
        let status = match error {
            FrameError::TooLarge { .. } => "431 Request Header Fields Too Large",
            _ => "400 Bad Request",
        };
        out.extend_from_slice(&response(status, "text/plain", b"bad request\n", ""));
    }

    const PROTOCOL: bool = true;

    fn process(
        &self,
        _: &mut (),
        buf: &mut [u8],
        io: &mut ProtocolIo<'_>,
    ) -> Result<Decode, FrameError> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        let too_large = |len: usize| FrameError::TooLarge {
            len: len as u64,
            max: self.max_head,
        };
        let head = match request.parse(buf) {
            // The limit holds however the bytes came: in one write too.
            Ok(httparse::Status::Complete(head)) if head > self.max_head => {
                return Err(too_large(head))
            }
            Ok(httparse::Status::Complete(head)) => head,
            Ok(httparse::Status::Partial) if buf.len() > self.max_head => {
                return Err(too_large(buf.len()))
            }
            Ok(httparse::Status::Partial) => return Ok(Decode::Incomplete { frame_len: None }),
            Err(_) => return Err(FrameError::Malformed("not an HTTP request")),
        };
        let (Some(method), Some(path)) = (request.method, request.path) else {
            return Err(FrameError::Malformed(
                "an HTTP request without its method or path",
            ));
        };
        // Where httparse's slices sit in `buf` (they borrow it): the parts' ranges.
        let start = buf.as_ptr() as usize;
        for text in [method, path] {
            let at = text.as_ptr() as usize - start;
            io.part(at..at + text.len());
        }
        io.kind(REQUEST);
        Ok(Decode::Frame {
            payload: 0..head,
            consumed: head,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes `bytes` as the reactor would: the outcome and the parts found.
    fn process(bytes: &[u8]) -> (Result<Decode, FrameError>, Vec<Vec<u8>>) {
        let mut buf = bytes.to_vec();
        let (mut replies, mut parts) = (Buffer::new(), Vec::new());
        let mut io = ProtocolIo::new(&mut replies, &mut parts);
        let found = HttpCodec::new(64).process(&mut (), &mut buf, &mut io);
        let parts = parts.iter().map(|r| buf[r.clone()].to_vec()).collect();
        (found, parts)
    }

    #[test]
    fn a_head_is_one_unit_with_its_method_and_path() {
        let (found, parts) = process(b"POST /a?b HTTP/1.1\r\nHost: x\r\n\r\nbody");
        assert_eq!(
            found,
            Ok(Decode::Frame {
                payload: 0..31,
                consumed: 31
            })
        );
        assert_eq!(parts, [b"POST".to_vec(), b"/a?b".to_vec()]);
    }

    #[test]
    fn a_partial_head_waits_and_the_limit_holds_however_it_arrives() {
        assert_eq!(
            process(b"GET / HTTP/1.1\r\nHo").0,
            Ok(Decode::Incomplete { frame_len: None })
        );
        let long = format!("GET /{} HTTP/1.1\r\n", "x".repeat(100));
        assert!(matches!(
            process(long.as_bytes()).0,
            Err(FrameError::TooLarge { .. })
        ));
        let whole = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "x".repeat(100));
        assert!(matches!(
            process(whole.as_bytes()).0,
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            process(b"\x01\x02 what\r\n\r\n").0,
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn errors_are_answered_400_or_431() {
        let codec = HttpCodec::new(64);
        let mut out = Buffer::new();
        codec.error_reply(&FrameError::TooLarge { len: 65, max: 64 }, &mut out);
        assert!(out.readable().starts_with(b"HTTP/1.1 431 "));
        let mut out = Buffer::new();
        codec.error_reply(&FrameError::Malformed("x"), &mut out);
        assert!(out.readable().starts_with(b"HTTP/1.1 400 "));
    }
}
