//! WebSocket (RFC 6455) as a protocol codec (feature `websocket`): the HTTP upgrade,
//! then frames, processed in the connection's own buffer.
//!
//! ```text
//!   Request phase: httparse on the head (8 KiB at most, however it arrives)
//!       GET <upgrade path> + valid upgrade -> 101, unit OPEN, frames from now on
//!       GET <page path>                   -> 200 + the page, close
//!       else                              -> 400 / 404 / 405 / 426 / 431, close
//!   Open phase: tungstenite's FrameHeader::parse -> unmasked in place -> by opcode:
//!       text / binary (+ continuations)   -> one unit TEXT / BINARY; fragments are
//!                                            moved together in place, behind the
//!                                            message's start
//!       ping -> pong (while the output has room), pong -> nothing
//!       close -> close echoed (a valid code) or 1002/1007 (RFC 6455 7.4), closed
//!       too large -> 1009; binary on a text-only endpoint -> 1003; text not UTF-8
//!       -> 1007; anything malformed (unmasked, reserved bits or opcodes, a long or
//!       fragmented control frame) -> 1002
//! ```
//!
//! A message in fragments stays one unit until its last fragment: the reactor keeps
//! its bytes in the connection's input buffer (counted in the memory budget, under
//! the frame deadline), and [`WsState`] remembers how far it got. A close the codec
//! sends for a violation is the peer's last words before a graceful close.

use std::io::Cursor;
use std::str;

use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::ProtocolIo;
use crate::buffer::Buffer;
use crate::frame::{Codec, Decode, FrameError};
use crate::http::response;

pub use super::websocket_kinds::{BINARY, OPEN, TEXT};

/// The largest request head accepted before the upgrade.
pub const MAX_HEAD: usize = 8 * 1024;

/// Serves WebSocket connections: the upgrade at one path, and (optionally) one page.
#[derive(Debug, Clone)]
pub struct WebSocketCodec {
    max_message: usize,
    upgrade_path: &'static str,
    /// A page served at `GET /` (the chat page), if any.
    page: Option<&'static str>,
    /// Binary messages are refused with 1003.
    text_only: bool,
}

impl WebSocketCodec {
    /// Upgrades at `path`, taking messages of up to `max_message` bytes (all fragments
    /// together), text and binary.
    pub fn new(path: &'static str, max_message: usize) -> Self {
        WebSocketCodec {
            max_message,
            upgrade_path: path,
            page: None,
            text_only: false,
        }
    }

    /// Serves `html` at `GET /` too.
    pub fn with_page(mut self, html: &'static str) -> Self {
        self.page = Some(html);
        self
    }

    /// Refuses binary messages (close 1003).
    pub fn text_only(mut self) -> Self {
        self.text_only = true;
        self
    }
}

/// Where one connection is: its phase, and the message in fragments, if any (its
/// bytes so far at the start of the unit, its next frame's header at `next`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WsState {
    phase: Phase,
    /// The message's kind (TEXT or BINARY) while one is in fragments, else 0.
    message: u8,
    /// Bytes of the message so far, moved together at the unit's start.
    assembled: u32,
    /// Where the next frame of the unit begins.
    next: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    /// Waiting for the HTTP request.
    #[default]
    Request,
    /// Upgraded: frames.
    Open,
    /// A close was sent: nothing more is read.
    Closed,
}

impl Codec for WebSocketCodec {
    type State = WsState;

    /// Not used: a protocol's units are processed ([`Codec::process`]).
    fn decode(&self, _: &mut WsState, _: &[u8]) -> Result<Decode, FrameError> {
        Err(FrameError::Malformed(
            "a WebSocket is processed, not decoded",
        ))
    }

    /// A text message from the server (servers do not mask).
    fn encode(&self, payload: &[u8], out: &mut Buffer) -> Result<(), FrameError> {
        server_frame(OpCode::Data(Data::Text), payload, out);
        Ok(())
    }

    const PROTOCOL: bool = true;

    fn process(
        &self,
        state: &mut WsState,
        buf: &mut [u8],
        io: &mut ProtocolIo<'_>,
    ) -> Result<Decode, FrameError> {
        match state.phase {
            Phase::Request => self.request(state, buf, io),
            Phase::Open => self.frames(state, buf, io),
            Phase::Closed => {
                io.skip();
                Ok(Decode::Frame {
                    payload: 0..0,
                    consumed: buf.len(),
                })
            }
        }
    }
}

impl WebSocketCodec {
    /// The HTTP request, if it is all there.
    fn request(
        &self,
        state: &mut WsState,
        buf: &[u8],
        io: &mut ProtocolIo<'_>,
    ) -> Result<Decode, FrameError> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        let head = match request.parse(buf) {
            // The limit holds however the bytes came: in one write too.
            Ok(httparse::Status::Complete(head)) if head <= MAX_HEAD => head,
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {
                return Ok(Decode::Incomplete { frame_len: None })
            }
            Ok(_) => return refuse(state, io, "431 Request Header Fields Too Large", ""),
            Err(_) => return refuse(state, io, "400 Bad Request", ""),
        };
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| str::from_utf8(h.value).ok())
        };
        let has_token = |name: &str, token: &str| {
            header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        let done = |state: &mut WsState, io: &mut ProtocolIo<'_>, answer: &[u8]| {
            io.reply(answer);
            io.close();
            io.skip();
            state.phase = Phase::Closed;
            Ok(Decode::Frame {
                payload: 0..0,
                consumed: head,
            })
        };
        if request.method != Some("GET") {
            let answer = response(
                "405 Method Not Allowed",
                "text/plain",
                b"",
                "Allow: GET\r\n",
            );
            return done(state, io, &answer);
        }
        let path = request.path.unwrap_or_default();
        if let (Some(page), "/") = (self.page, path) {
            let answer = response("200 OK", "text/html; charset=utf-8", page.as_bytes(), "");
            return done(state, io, &answer);
        }
        if path != self.upgrade_path {
            let answer = response("404 Not Found", "text/plain", b"404 Not Found\n", "");
            return done(state, io, &answer);
        }
        if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
            return refuse(state, io, "400 Bad Request", "");
        }
        if header("sec-websocket-version").map(str::trim) != Some("13") {
            let extra = "Sec-WebSocket-Version: 13\r\n";
            return refuse(state, io, "426 Upgrade Required", extra);
        }
        let Some(key) = header("sec-websocket-key") else {
            return refuse(state, io, "400 Bad Request", "");
        };
        let accept = derive_accept_key(key.trim().as_bytes());
        io.reply(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        );
        io.kind(OPEN);
        state.phase = Phase::Open;
        Ok(Decode::Frame {
            payload: 0..0,
            consumed: head,
        })
    }

    /// Frames until a unit is complete (a message, or a control frame outside one),
    /// or more bytes are needed.
    fn frames(
        &self,
        state: &mut WsState,
        buf: &mut [u8],
        io: &mut ProtocolIo<'_>,
    ) -> Result<Decode, FrameError> {
        loop {
            let at = state.next as usize;
            let mut cursor = Cursor::new(&buf[at..]);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(Decode::Incomplete { frame_len: None }),
                Err(_) => return fail(state, io, CloseCode::Protocol, "malformed frame"),
            };
            let start = at + cursor.position() as usize;
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return fail(state, io, CloseCode::Protocol, "reserved bits set");
            }
            let Some(mask) = header.mask else {
                return fail(
                    state,
                    io,
                    CloseCode::Protocol,
                    "client frames must be masked",
                );
            };
            let control = matches!(header.opcode, OpCode::Control(_));
            if control && (length > 125 || !header.is_final) {
                return fail(state, io, CloseCode::Protocol, "bad control frame");
            }
            // (Saturating: the length comes from the wire, as large as 2^64 - 1.)
            let assembled = u64::from(state.assembled).saturating_add(length);
            if !control && assembled > self.max_message as u64 {
                return fail(state, io, CloseCode::Size, "message too large");
            }
            // (Fits: at most the largest message past `start`.)
            let end = start + length as usize;
            if buf.len() < end {
                return Ok(Decode::Incomplete {
                    frame_len: Some(end),
                });
            }
            unmask(&mut buf[start..end], mask);
            state.next = end as u32;
            let alone = state.message == 0;
            match header.opcode {
                OpCode::Control(Control::Ping) => {
                    self.pong(&buf[start..end], io);
                    if alone {
                        return Ok(skipped(state, io, end));
                    }
                }
                OpCode::Control(Control::Pong) if alone => return Ok(skipped(state, io, end)),
                OpCode::Control(Control::Pong) => {}
                OpCode::Control(Control::Close) => {
                    return peer_closes(state, io, &buf[start..end], end)
                }
                OpCode::Data(Data::Text | Data::Binary) if !alone => {
                    return fail(
                        state,
                        io,
                        CloseCode::Protocol,
                        "a new message inside a fragmented one",
                    )
                }
                OpCode::Data(Data::Binary) if self.text_only => {
                    return fail(
                        state,
                        io,
                        CloseCode::Unsupported,
                        "only text messages are taken",
                    )
                }
                OpCode::Data(Data::Continue) if alone => {
                    return fail(
                        state,
                        io,
                        CloseCode::Protocol,
                        "a continuation with no message",
                    )
                }
                OpCode::Data(data @ (Data::Text | Data::Binary | Data::Continue)) => {
                    if data != Data::Continue {
                        state.message = if data == Data::Text {
                            TEXT as u8
                        } else {
                            BINARY as u8
                        };
                    }
                    // Behind the fragments so far: the message stays one piece.
                    let assembled = state.assembled as usize;
                    buf.copy_within(start..end, assembled);
                    state.assembled += length as u32;
                    if header.is_final {
                        return message(state, io, buf, end);
                    }
                }
                _ => return fail(state, io, CloseCode::Protocol, "reserved opcode"),
            }
        }
    }

    /// Answers a ping, if the output has room for it: a peer that pings faster than it
    /// reads gets no more (RFC 6455 5.5.3 lets a pong answer only the latest ping).
    fn pong(&self, payload: &[u8], io: &mut ProtocolIo<'_>) {
        // A control frame's payload is at most 125 bytes: a 2-byte header.
        if 2 + payload.len() <= io.room() {
            server_frame(OpCode::Control(Control::Pong), payload, io.replies());
        } else {
            log::debug!("WebSocket: pings come faster than pongs are read: no pong");
        }
    }
}

/// A control frame outside a message: the protocol's own, nothing for the service.
fn skipped(state: &mut WsState, io: &mut ProtocolIo<'_>, end: usize) -> Decode {
    io.skip();
    state.next = 0;
    Decode::Frame {
        payload: 0..0,
        consumed: end,
    }
}

/// The last fragment of a message (or a whole one) arrived: one unit, if a text
/// message is UTF-8.
fn message(
    state: &mut WsState,
    io: &mut ProtocolIo<'_>,
    buf: &[u8],
    end: usize,
) -> Result<Decode, FrameError> {
    let (kind, length) = (u32::from(state.message), state.assembled as usize);
    if kind == TEXT && str::from_utf8(&buf[..length]).is_err() {
        return fail(state, io, CloseCode::Invalid, "text is not UTF-8");
    }
    io.kind(kind);
    *state = WsState {
        phase: Phase::Open,
        ..WsState::default()
    };
    Ok(Decode::Frame {
        payload: 0..length,
        consumed: end,
    })
}

/// The peer's close frame: answered with a close echoing its code (RFC 6455 5.5.1),
/// or with no code when it gave none, then closed. A close that breaks the rules of
/// section 7.4 is a protocol error instead: a 1-byte payload, or a code that may not
/// be sent (1005, 1006 and 1015 are for reporting only, others are reserved or
/// undefined) gets 1002, a reason that is not UTF-8 gets 1007; so an invalid code is
/// never sent back.
fn peer_closes(
    state: &mut WsState,
    io: &mut ProtocolIo<'_>,
    payload: &[u8],
    end: usize,
) -> Result<Decode, FrameError> {
    let code = match payload {
        [] => None,
        [_] => return fail(state, io, CloseCode::Protocol, "a close code of one byte"),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !CloseCode::from(code).is_allowed() {
                return fail(state, io, CloseCode::Protocol, "a close code not allowed");
            }
            if str::from_utf8(reason).is_err() {
                return fail(state, io, CloseCode::Invalid, "a close reason not UTF-8");
            }
            Some(code)
        }
    };
    let payload = code.map(u16::to_be_bytes);
    server_frame(
        OpCode::Control(Control::Close),
        payload.as_ref().map_or(&[][..], |p| &p[..]),
        io.replies(),
    );
    io.close();
    state.phase = Phase::Closed;
    Ok(skipped(state, io, end))
}

/// Answers the request with an error status: a protocol error, closed after it.
fn refuse(
    state: &mut WsState,
    io: &mut ProtocolIo<'_>,
    status: &'static str,
    extra: &str,
) -> Result<Decode, FrameError> {
    let body = format!("{status}\n");
    io.reply(&response(status, "text/plain", body.as_bytes(), extra));
    state.phase = Phase::Closed;
    Err(FrameError::Malformed(status))
}

/// Closes with `code` and a reason, as RFC 6455 asks of a protocol violation: the
/// close frame is the peer's last words.
fn fail(
    state: &mut WsState,
    io: &mut ProtocolIo<'_>,
    code: CloseCode,
    reason: &'static str,
) -> Result<Decode, FrameError> {
    let mut payload = u16::from(code).to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    server_frame(OpCode::Control(Control::Close), &payload, io.replies());
    state.phase = Phase::Closed;
    Err(FrameError::Malformed(reason))
}

/// A frame from the server, appended to `out`: its header formatted on the stack (a
/// text message to every member passes here, so no allocation per frame).
pub fn server_frame(opcode: OpCode, payload: &[u8], out: &mut Buffer) {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    // At most 2 bytes, 8 of length and 4 of mask (which a server never sends).
    let mut head = [0u8; 14];
    let mut cursor = Cursor::new(&mut head[..]);
    // Fits: the largest header is 14 bytes.
    let _ = header.format(payload.len() as u64, &mut cursor);
    let used = cursor.position() as usize;
    out.extend_from_slice(&head[..used]);
    out.extend_from_slice(payload);
}

/// The client's masking, undone (RFC 6455 5.3): each byte XORed with the key in turn.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests;
