//! WebSocket members (`switchboard chat --ws ADDR`, feature `ws`): the HTTP upgrade at
//! `/ws` and RFC 6455 framing, as a sans-I/O state machine fed with the bytes of an
//! unframed connection; and the chat page served at `GET /`.
//!
//! ```text
//!   bytes --> Request: httparse -> GET /    -> 200 + the page, close
//!                                  GET /ws  -> 101 (Sec-WebSocket-Accept), Open
//!                                  else     -> 400 / 404 / 405 / 426, close
//!         --> Open: tungstenite's FrameHeader::parse -> unmask -> by opcode:
//!               text (+ continuations) -> one message (a chat request, UTF-8)
//!               ping -> pong, pong -> nothing, close -> close echoed, then closed
//!               binary -> close 1003; too large -> 1009; bad UTF-8 -> 1007;
//!               anything malformed (unmasked, reserved bits or opcodes, a long or
//!               fragmented control frame) -> 1002
//! ```
//!
//! httparse reads the request and tungstenite's frame pieces read and write frame
//! headers and derive the accept key: both are the standard crates, and neither does
//! I/O here, so our own buffers and the reactor's backpressure stay in charge.

use std::io::Cursor;
use std::time::Instant;

use tungstenite::handshake::derive_accept_key;

use super::protocol::{parse, Incoming, Legacy};
use super::rooms::Link;
use super::{Chat, ChatTimer, Seat};
use crate::http::response;
use crate::timer::deadline_after;
use crate::{AnyCodec, CloseMode, ConnId, Context, ListenAddr, RawCodec, Reactor};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The chat page served at `GET /`.
pub const PAGE: &str = include_str!("page.html");

/// The largest request head accepted before the upgrade.
const MAX_REQUEST: usize = 8 * 1024;

/// One WebSocket connection's state between reads.
#[derive(Debug)]
pub struct WsConn {
    phase: Phase,
    /// Bytes read and not yet understood: a partial request or frame (after `done`).
    input: Vec<u8>,
    /// How much of `input` the frames handled in this read used: dropped once, when
    /// the read's frames are all handled, rather than once per frame.
    done: usize,
    /// The text message being reassembled from fragments.
    message: Vec<u8>,
    /// A fragmented message has begun and awaits continuations.
    fragmented: bool,
    /// The largest message accepted (all fragments together).
    max_message: usize,
    /// Units (the request head, frames) completed so far: a change says the unit
    /// now pending, if any, is a new one.
    units: u64,
    /// When the unit now pending began to arrive (for the deadline).
    unit_started: Option<Instant>,
    /// A timer watches the pending unit's deadline.
    deadline_armed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the HTTP request.
    Request,
    /// Upgraded: frames.
    Open,
    /// A close was sent: nothing more is read.
    Closed,
}

/// What the connection asks of the chat after some bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum WsAction {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Write this pong, unless the connection's output is over the write limit: a
    /// peer that pings without reading gets no more (RFC 6455 5.5.3 lets a pong
    /// answer only the latest ping), so a ping flood cannot grow our output.
    Pong(Vec<u8>),
    /// The upgrade is done: a member from now on.
    Opened,
    /// A complete text message: one chat request.
    Message(Vec<u8>),
    /// Close once what is queued is written (an answer or a close frame is queued).
    Close,
}

impl WsConn {
    /// A connection that has sent nothing yet, taking messages up to `max_message`.
    pub fn new(max_message: usize) -> WsConn {
        WsConn {
            phase: Phase::Request,
            input: Vec::new(),
            done: 0,
            message: Vec::new(),
            fragmented: false,
            max_message,
            units: 0,
            unit_started: None,
            deadline_armed: false,
        }
    }

    /// True while part of a unit has arrived and not the rest: a request head, a
    /// frame, or a fragmented message.
    fn pending(&self) -> bool {
        self.phase != Phase::Closed && (!self.input.is_empty() || self.fragmented)
    }

    /// True once the upgrade is done (the connection is a chat member).
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Takes bytes read from the connection; what to do follows in `actions`.
    pub fn feed(&mut self, bytes: &[u8], actions: &mut Vec<WsAction>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.input.extend_from_slice(bytes);
        if self.phase == Phase::Request {
            self.request(actions);
        }
        while self.phase == Phase::Open && self.frame(actions) {}
        self.input.drain(..self.done.min(self.input.len()));
        self.done = 0;
    }

    /// Reads the HTTP request, if it is all there.
    fn request(&mut self, actions: &mut Vec<WsAction>) {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        let head = match request.parse(&self.input) {
            // The limit holds however the bytes came: in one write too.
            Ok(httparse::Status::Complete(head)) if head > MAX_REQUEST => {
                return self.refuse(actions, "431 Request Header Fields Too Large", "")
            }
            Ok(httparse::Status::Complete(head)) => head,
            Ok(httparse::Status::Partial) if self.input.len() <= MAX_REQUEST => return,
            Ok(httparse::Status::Partial) => {
                return self.refuse(actions, "431 Request Header Fields Too Large", "")
            }
            Err(_) => return self.refuse(actions, "400 Bad Request", ""),
        };
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let has_token = |name: &str, token: &str| {
            header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        if request.method != Some("GET") {
            return self.refuse(actions, "405 Method Not Allowed", "Allow: GET\r\n");
        }
        match request.path {
            Some("/") => {
                let answer = response("200 OK", "text/html; charset=utf-8", PAGE.as_bytes(), "");
                actions.push(WsAction::Send(answer));
                actions.push(WsAction::Close);
                self.phase = Phase::Closed;
            }
            Some("/ws") => {
                if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
                    return self.refuse(actions, "400 Bad Request", "");
                }
                if header("sec-websocket-version").as_deref().map(str::trim) != Some("13") {
                    let extra = "Sec-WebSocket-Version: 13\r\n";
                    return self.refuse(actions, "426 Upgrade Required", extra);
                }
                let Some(key) = header("sec-websocket-key") else {
                    return self.refuse(actions, "400 Bad Request", "");
                };
                let accept = derive_accept_key(key.trim().as_bytes());
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                actions.push(WsAction::Send(answer.into_bytes()));
                actions.push(WsAction::Opened);
                self.input.drain(..head);
                self.phase = Phase::Open;
                self.units += 1;
            }
            _ => self.refuse(actions, "404 Not Found", ""),
        }
    }

    /// Answers the request with an error status and closes.
    fn refuse(&mut self, actions: &mut Vec<WsAction>, status: &str, extra: &str) {
        let body = format!("{status}\n");
        actions.push(WsAction::Send(response(
            status,
            "text/plain",
            body.as_bytes(),
            extra,
        )));
        actions.push(WsAction::Close);
        self.phase = Phase::Closed;
        self.input.clear();
    }

    /// Handles one frame, if it is all there. False when more bytes are needed (or the
    /// connection is closing).
    fn frame(&mut self, actions: &mut Vec<WsAction>) -> bool {
        let mut cursor = Cursor::new(&self.input[self.done..]);
        let (header, length) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return false,
            Err(_) => return self.fail(actions, CloseCode::Protocol, "malformed frame"),
        };
        let start = self.done + cursor.position() as usize;
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return self.fail(actions, CloseCode::Protocol, "reserved bits set");
        }
        let Some(mask) = header.mask else {
            return self.fail(actions, CloseCode::Protocol, "client frames must be masked");
        };
        let control = matches!(header.opcode, OpCode::Control(_));
        if control && (length > 125 || !header.is_final) {
            return self.fail(actions, CloseCode::Protocol, "bad control frame");
        }
        if !control && self.message.len() as u64 + length > self.max_message as u64 {
            return self.fail(actions, CloseCode::Size, "message too large");
        }
        let end = start + length as usize;
        if self.input.len() < end {
            return false;
        }
        let mut payload = self.input[start..end].to_vec();
        self.done = end;
        self.units += 1;
        unmask(&mut payload, mask);
        self.payload(actions, header, payload)
    }

    /// Acts on one complete frame's unmasked payload.
    fn payload(
        &mut self,
        actions: &mut Vec<WsAction>,
        header: FrameHeader,
        payload: Vec<u8>,
    ) -> bool {
        match header.opcode {
            OpCode::Data(Data::Text) if self.fragmented => self.fail(
                actions,
                CloseCode::Protocol,
                "a new message inside a fragmented one",
            ),
            OpCode::Data(Data::Text) => {
                self.message = payload;
                self.fragmented = !header.is_final;
                !header.is_final || self.message_done(actions)
            }
            OpCode::Data(Data::Continue) if !self.fragmented => self.fail(
                actions,
                CloseCode::Protocol,
                "a continuation with no message",
            ),
            OpCode::Data(Data::Continue) => {
                self.message.extend_from_slice(&payload);
                self.fragmented = !header.is_final;
                !header.is_final || self.message_done(actions)
            }
            OpCode::Data(Data::Binary) => {
                self.fail(actions, CloseCode::Unsupported, "chat messages are text")
            }
            OpCode::Control(Control::Ping) => {
                actions.push(WsAction::Pong(server_frame(
                    OpCode::Control(Control::Pong),
                    &payload,
                )));
                true
            }
            OpCode::Control(Control::Pong) => true,
            OpCode::Control(Control::Close) => self.peer_closes(actions, &payload),
            _ => self.fail(actions, CloseCode::Protocol, "reserved opcode"),
        }
    }

    /// The peer's close frame: answered with a close echoing its code (RFC 6455
    /// 5.5.1), or with no code when it gave none, then closed. A close that breaks the
    /// rules of section 7.4 is a protocol error instead: a 1-byte payload, or a code
    /// that may not be sent (1005, 1006 and 1015 are for reporting only, others are
    /// reserved or undefined) gets 1002, a reason that is not UTF-8 gets 1007; so an
    /// invalid code is never sent back.
    fn peer_closes(&mut self, actions: &mut Vec<WsAction>, payload: &[u8]) -> bool {
        let answer = match payload {
            [] => Vec::new(),
            [_] => return self.fail(actions, CloseCode::Protocol, "a close code of one byte"),
            [high, low, reason @ ..] => {
                let code = u16::from_be_bytes([*high, *low]);
                if !CloseCode::from(code).is_allowed() {
                    return self.fail(actions, CloseCode::Protocol, "a close code not allowed");
                }
                if std::str::from_utf8(reason).is_err() {
                    return self.fail(actions, CloseCode::Invalid, "a close reason not UTF-8");
                }
                code.to_be_bytes().to_vec()
            }
        };
        actions.push(WsAction::Send(server_frame(
            OpCode::Control(Control::Close),
            &answer,
        )));
        actions.push(WsAction::Close);
        self.phase = Phase::Closed;
        false
    }

    /// A whole text message arrived: hand it over if it is UTF-8.
    fn message_done(&mut self, actions: &mut Vec<WsAction>) -> bool {
        let message = std::mem::take(&mut self.message);
        if std::str::from_utf8(&message).is_err() {
            return self.fail(actions, CloseCode::Invalid, "text is not UTF-8");
        }
        actions.push(WsAction::Message(message));
        true
    }

    /// Closes with `code` and a reason, as RFC 6455 asks of a protocol violation.
    fn fail(&mut self, actions: &mut Vec<WsAction>, code: CloseCode, reason: &str) -> bool {
        log::debug!("chat: WebSocket closed with {code}: {reason}");
        actions.push(WsAction::Send(close_frame(code, reason)));
        actions.push(WsAction::Close);
        self.phase = Phase::Closed;
        self.input.clear();
        false
    }
}

/// A text frame from the server (servers do not mask): what members are sent.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    server_frame(OpCode::Data(Data::Text), payload)
}

/// A close frame with `code` and `reason`.
pub fn close_frame(code: CloseCode, reason: &str) -> Vec<u8> {
    let mut payload = u16::from(code).to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    server_frame(OpCode::Control(Control::Close), &payload)
}

fn server_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let mut out = Vec::with_capacity(header.len(payload.len() as u64) + payload.len());
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// The client's masking, undone (RFC 6455 5.3): each byte XORed with the key in turn.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// Opens the WebSocket listener at `addr` on `reactor` (unframed: the chat reads the
/// upgrade and the frames itself), for messages up to `max_message` bytes.
pub fn listen(
    reactor: &mut Reactor<Chat>,
    addr: std::net::SocketAddr,
    max_message: usize,
) -> Result<(), crate::Error> {
    let endpoint = reactor.listen(ListenAddr::Tcp(addr), AnyCodec::Raw(RawCodec))?;
    log::info!("chat: WebSocket members at ws://{addr}/ws, the chat page at http://{addr}/");
    reactor.service_mut().ws = Some((endpoint, max_message));
    Ok(())
}

impl Chat {
    /// Bytes from a WebSocket connection: the upgrade, then messages, each one chat
    /// request, answered like a TCP member's.
    pub(super) fn ws_input(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        conn: ConnId,
        seat: &mut Seat,
        bytes: &[u8],
    ) {
        let Some(ws) = seat.ws.as_mut() else {
            return;
        };
        let mut actions = Vec::new();
        let units = ws.units;
        ws.feed(bytes, &mut actions);
        if ws.units != units || !ws.pending() {
            ws.unit_started = ws.pending().then(|| ctx.now());
        } else if ws.unit_started.is_none() {
            ws.unit_started = Some(ctx.now());
        }
        if let (Some(timeout), true, false) = (ctx.frame_timeout(), ws.pending(), ws.deadline_armed)
        {
            ws.deadline_armed = true;
            ctx.set_conn_timer(conn, timeout, ChatTimer::WsDeadline);
        }
        for action in actions {
            match action {
                WsAction::Send(bytes) => {
                    if let Err(e) = ctx.send(conn, &bytes) {
                        log::debug!("chat: cannot answer {conn}: {e}");
                    }
                }
                WsAction::Pong(_) if ctx.over_write_limit(conn) => {
                    log::debug!("chat: {conn} pings faster than it reads: no pong");
                }
                WsAction::Pong(bytes) => {
                    let _ = ctx.send(conn, &bytes);
                }
                WsAction::Opened => seat.member = Some(self.directory.add(Link::Ws(conn))),
                WsAction::Message(text) => {
                    let Some(id) = seat.member else {
                        continue;
                    };
                    match parse(&text, Legacy::Refused) {
                        Ok(Incoming::Typed(request)) => self.handle(ctx, id, request),
                        Ok(Incoming::Legacy(_)) => {
                            self.refuse(ctx, id, "a typed request is expected")
                        }
                        Err(e) => self.refuse(ctx, id, &e.to_string()),
                    }
                    if self.directory.member(id).is_none() {
                        seat.member = None; // it said `bye`
                    }
                }
                WsAction::Close => ctx.close(conn, CloseMode::Flush),
            }
        }
        self.count_population();
    }
}

impl Chat {
    /// The deadline of a WebSocket connection's pending unit (the upgrade request, a
    /// frame, a fragmented message) may have passed: the frame timeout holds for them
    /// as for a length-framed member's frames. Closed when it has; else watched again
    /// until the unit's own deadline.
    pub(super) fn ws_deadline(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        conn: ConnId,
        seat: &mut Seat,
    ) {
        let (Some(ws), Some(timeout)) = (seat.ws.as_mut(), ctx.frame_timeout()) else {
            return;
        };
        ws.deadline_armed = false;
        let Some(started) = ws.unit_started.filter(|_| ws.pending()) else {
            return;
        };
        let due = deadline_after(started, timeout);
        if due <= ctx.now() {
            let what = if ws.phase == Phase::Request {
                "upgrade request"
            } else {
                "frame"
            };
            log::warn!("chat: {conn}: WebSocket {what} not completed within {timeout:?}; closing");
            ws.phase = Phase::Closed;
            ctx.close(conn, CloseMode::Now);
        } else {
            ws.deadline_armed = true;
            ctx.set_conn_timer(conn, due - ctx.now(), ChatTimer::WsDeadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![
            opcode | if fin { 0x80 } else { 0 },
            0x80 | payload.len() as u8,
        ];
        out.extend_from_slice(&mask);
        let mut masked = payload.to_vec();
        unmask(&mut masked, mask);
        out.extend(masked);
        out
    }

    fn open() -> WsConn {
        let mut ws = WsConn::new(1024);
        let mut actions = Vec::new();
        ws.feed(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            &mut actions,
        );
        let WsAction::Send(answer) = &actions[0] else {
            panic!("{actions:?}")
        };
        // The RFC's own example key and accept value.
        let answer = String::from_utf8_lossy(answer);
        assert!(answer.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{answer}");
        assert_eq!(actions[1], WsAction::Opened);
        ws
    }

    #[test]
    fn fragments_make_one_message_however_the_bytes_are_split() {
        let mut wire = client_frame(false, 0x1, br#"{"type":"#);
        wire.extend(client_frame(true, 0x9, b"hi")); // a ping between fragments
        wire.extend(client_frame(true, 0x0, br#""ping"}"#));
        for split in 0..wire.len() {
            let mut ws = open();
            let mut actions = Vec::new();
            ws.feed(&wire[..split], &mut actions);
            ws.feed(&wire[split..], &mut actions);
            assert_eq!(
                actions,
                vec![
                    WsAction::Pong(server_frame(OpCode::Control(Control::Pong), b"hi")),
                    WsAction::Message(br#"{"type":"ping"}"#.to_vec()),
                ]
            );
        }
    }

    #[test]
    fn violations_close_with_their_codes() {
        for (wire, code) in [
            (client_frame(true, 0x2, b"bin"), 1003u16),
            (client_frame(true, 0x0, b"cont"), 1002),
            (client_frame(true, 0x3, b"resv"), 1002),
            (client_frame(true, 0x1, &[0xff, 0xfe]), 1007),
            (vec![0x81, 0x02, b'h', b'i'], 1002), // unmasked
        ] {
            let mut ws = open();
            let mut actions = Vec::new();
            ws.feed(&wire, &mut actions);
            let WsAction::Send(frame) = &actions[0] else {
                panic!("{actions:?}")
            };
            assert_eq!(frame[0], 0x88, "a close frame");
            assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), code);
            assert_eq!(actions[1], WsAction::Close);
        }
    }

    /// The close code a close frame carries, or `None` for an empty close.
    fn close_code(frame: &[u8]) -> Option<u16> {
        assert_eq!(frame[0], 0x88, "a close frame");
        (frame[1] >= 2).then(|| u16::from_be_bytes([frame[2], frame[3]]))
    }

    #[test]
    fn close_codes_are_checked_as_rfc_6455_section_7_4_says() {
        let close = |payload: &[u8]| {
            let mut ws = open();
            let mut actions = Vec::new();
            ws.feed(&client_frame(true, 0x8, payload), &mut actions);
            let WsAction::Send(frame) = &actions[0] else {
                panic!("{actions:?}")
            };
            assert_eq!(actions[1], WsAction::Close);
            close_code(frame)
        };
        // Codes that may be sent are echoed; an empty close gets an empty close.
        for code in [1000u16, 1001, 1003, 1007, 1011, 1012, 1013, 3000, 4999] {
            assert_eq!(close(&code.to_be_bytes()), Some(code), "{code}");
        }
        assert_eq!(close(b""), None);
        let mut with_reason = 1000u16.to_be_bytes().to_vec();
        with_reason.extend_from_slice("au revoir, ça va".as_bytes());
        assert_eq!(close(&with_reason), Some(1000));
        // Codes that must never be sent, reserved or undefined ones: 1002.
        for code in [
            0u16, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, 65535,
        ] {
            assert_eq!(close(&code.to_be_bytes()), Some(1002), "{code}");
        }
        // A code of one byte: 1002. A reason that is not UTF-8: 1007.
        assert_eq!(close(&[0x03]), Some(1002));
        assert_eq!(close(&[0x03, 0xe8, 0xff, 0xfe]), Some(1007));
    }

    #[test]
    fn a_request_head_over_the_limit_is_refused_even_in_one_piece() {
        let padding = "x".repeat(64 * 1024);
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             X-Padding: {padding}\r\n\r\n"
        );
        let mut ws = WsConn::new(64);
        let mut actions = Vec::new();
        ws.feed(request.as_bytes(), &mut actions);
        let WsAction::Send(answer) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert!(answer.starts_with(b"HTTP/1.1 431"));
        assert_eq!(actions[1], WsAction::Close);
        assert!(!ws.is_open());
    }

    #[test]
    fn requests_other_than_the_upgrade_are_answered_and_closed() {
        for (request, status) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], "200 OK"),
            (b"GET /nope HTTP/1.1\r\n\r\n", "404"),
            (b"POST /ws HTTP/1.1\r\n\r\n", "405"),
            (
                b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                "426",
            ),
            (b"NOT HTTP\r\n\r\n", "400"),
        ] {
            let mut ws = WsConn::new(64);
            let mut actions = Vec::new();
            ws.feed(request, &mut actions);
            let WsAction::Send(answer) = &actions[0] else {
                panic!("{actions:?}")
            };
            let answer = String::from_utf8_lossy(answer);
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{answer}"
            );
            assert_eq!(actions[1], WsAction::Close);
        }
    }
}
