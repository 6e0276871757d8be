//! The protocol layer over real sockets, with a small protocol of its own shaped like
//! WebSocket: a handshake line, then masked frames that may come in fragments, pings
//! the protocol answers itself, and requests with arguments. Each unit is processed
//! once, in place, in the connection's own buffer; the service gets decoded units
//! (kind, payload, parts); the protocol's replies come before the service's; a broken
//! unit gets last words; a partial unit has the frame deadline and counts in the
//! memory budget.
//!
//! The wire: `HELLO\n` (answered `WELCOME\n`), then frames of
//! `[op][len][mask][payload XOR mask]`: `T` a text message (or its last fragment), `t`
//! a fragment with more to come, `P` a ping (answered with an `O` frame carrying the
//! same payload), `A` a request whose space-separated words are its parts. Messages
//! are at most 64 bytes, all fragments together.

mod common;
mod tls_support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use switchboard::{
    Buffer, Codec, Config, ConnId, Context, Decode, FrameError, Frames, ProtocolIo, Service,
};

const MAX_MESSAGE: usize = 64;
/// Unit kinds.
const OPEN: u32 = 1;
const TEXT: u32 = 2;
const REQUEST: u32 = 3;

#[derive(Debug, Clone, Copy, Default)]
struct Toy;

/// Where a connection is: before the handshake, or in frames with a fragmented
/// message in progress (its bytes so far at the unit's start, the next frame after).
#[derive(Debug, Clone, Default)]
struct ToyState {
    open: bool,
    assembled: usize,
    next: usize,
}

impl Codec for Toy {
    type State = ToyState;

    fn decode(&self, _: &mut ToyState, _: &[u8]) -> Result<Decode, FrameError> {
        Err(FrameError::Malformed("processed, never decoded"))
    }

    /// The service's answers: a line each.
    fn encode(&self, payload: &[u8], out: &mut Buffer) -> Result<(), FrameError> {
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\n");
        Ok(())
    }

    fn error_reply(&self, error: &FrameError, out: &mut Buffer) {
        out.extend_from_slice(format!("ERR {error}\n").as_bytes());
    }

    const PROTOCOL: bool = true;

    fn process(
        &self,
        state: &mut ToyState,
        buf: &mut [u8],
        io: &mut ProtocolIo<'_>,
    ) -> Result<Decode, FrameError> {
        if !state.open {
            return handshake(state, buf, io);
        }
        loop {
            let at = state.next;
            let Some(&[op, len, mask]) = buf.get(at..at + 3) else {
                return Ok(Decode::Incomplete { frame_len: None });
            };
            let (start, len) = (at + 3, usize::from(len));
            if state.assembled + len > MAX_MESSAGE {
                return Err(FrameError::TooLarge {
                    len: (state.assembled + len) as u64,
                    max: MAX_MESSAGE,
                });
            }
            let end = start + len;
            if buf.len() < end {
                return Ok(Decode::Incomplete {
                    frame_len: Some(end),
                });
            }
            for byte in &mut buf[start..end] {
                *byte ^= mask;
            }
            match op {
                b'P' => {
                    let mut pong = vec![b'O', len as u8, 0];
                    pong.extend_from_slice(&buf[start..end]);
                    io.reply(&pong);
                    state.next = end;
                    if state.assembled == 0 && at == 0 {
                        io.skip();
                        state.next = 0;
                        return Ok(Decode::Frame {
                            payload: 0..0,
                            consumed: end,
                        });
                    }
                }
                b't' | b'T' => {
                    buf.copy_within(start..end, state.assembled);
                    state.assembled += len;
                    state.next = end;
                    if op == b'T' {
                        io.kind(TEXT);
                        let payload = 0..state.assembled;
                        *state = ToyState {
                            open: true,
                            ..ToyState::default()
                        };
                        return Ok(Decode::Frame {
                            payload,
                            consumed: end,
                        });
                    }
                }
                b'A' if state.assembled == 0 && at == 0 => {
                    io.kind(REQUEST);
                    let mut word_start = start;
                    for word in buf[start..end].split(|&b| b == b' ') {
                        io.part(word_start..word_start + word.len());
                        word_start += word.len() + 1;
                    }
                    state.next = 0;
                    return Ok(Decode::Frame {
                        payload: start..end,
                        consumed: end,
                    });
                }
                _ => return Err(FrameError::Malformed("unknown op")),
            }
        }
    }
}

fn handshake(
    state: &mut ToyState,
    buf: &[u8],
    io: &mut ProtocolIo<'_>,
) -> Result<Decode, FrameError> {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        return match buf.len() {
            0..=16 => Ok(Decode::Incomplete { frame_len: None }),
            _ => Err(FrameError::Malformed("handshake too long")),
        };
    };
    if &buf[..newline] != b"HELLO" {
        io.reply(b"GO AWAY\n");
        io.close();
        io.skip();
    } else {
        io.reply(b"WELCOME\n");
        io.kind(OPEN);
        state.open = true;
    }
    Ok(Decode::Frame {
        payload: 0..0,
        consumed: newline + 1,
    })
}

/// Answers every unit with a line saying what it got (and, over TLS, says when the
/// handshake is done).
#[derive(Default)]
struct Describe {
    units: u64,
}

impl Service for Describe {
    type Conn = ();
    type Timer = ();
    type Codec = Toy;

    fn on_tls_ready(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut ()) {
        ctx.send(conn, b"TLS ready").unwrap();
    }

    fn on_frames(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        _: &mut (),
        frames: Frames<'_, Toy>,
    ) {
        for unit in frames.units() {
            self.units += 1;
            let parts: Vec<String> = unit
                .parts()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            let line = format!(
                "{} {} [{}]",
                unit.kind(),
                String::from_utf8_lossy(unit.payload),
                parts.join(",")
            );
            ctx.send(conn, line.as_bytes()).unwrap();
        }
    }
}

fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mask = 0x5a;
    let mut out = vec![op, payload.len() as u8, mask];
    out.extend(payload.iter().map(|b| b ^ mask));
    out
}

fn start() -> TestServer<Describe> {
    let config = Config {
        udp: Vec::new(),
        ..local_config()
    };
    TestServer::start(config, || (Describe::default(), Toy))
}

fn open(server: &TestServer<Describe>) -> TcpStream {
    let mut client = connect(server.tcp());
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.write_all(b"HELLO\n").unwrap();
    assert_eq!(read_exactly(&mut client, 8), b"WELCOME\n");
    assert_eq!(read_line_of(&mut client), "1  []");
    client
}

fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    stream.read_exact(&mut bytes).unwrap();
    bytes
}

fn read_line_of(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stream.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

#[test]
fn units_are_unmasked_in_place_and_handed_over_with_kind_and_parts() {
    let server = start();
    let mut client = open(&server);
    let mut batch = frame(b'T', b"hello");
    batch.extend(frame(b'A', b"SET key value"));
    client.write_all(&batch).unwrap();
    assert_eq!(read_line_of(&mut client), "2 hello []");
    assert_eq!(read_line_of(&mut client), "3 SET key value [SET,key,value]");
    let stats = server.stop();
    assert_eq!(stats.frames_in, 3, "open, text, request");
}

#[test]
fn fragments_become_one_message_however_the_bytes_arrive() {
    let server = start();
    let mut client = open(&server);
    let mut wire = frame(b't', b"frag");
    wire.extend(frame(b'P', b"are you there"));
    wire.extend(frame(b't', b"men"));
    wire.extend(frame(b'T', b"ted"));
    wire.extend(frame(b'T', b"next"));
    // A byte at a time: every unit is processed once all the same.
    client.set_nodelay(true).unwrap();
    for byte in &wire {
        client.write_all(&[*byte]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    // The protocol's pong first (its ping came before the message ended).
    let pong = read_exactly(&mut client, 3 + 13);
    assert_eq!(&pong[..3], [b'O', 13, 0]);
    assert_eq!(&pong[3..], b"are you there");
    assert_eq!(read_line_of(&mut client), "2 fragmented []");
    assert_eq!(read_line_of(&mut client), "2 next []");
    let stats = server.stop();
    assert_eq!(
        stats.frames_in, 3,
        "open and two messages; the ping was the protocol's"
    );
}

#[test]
fn a_broken_unit_gets_last_words_and_others_are_served() {
    let server = start();
    let mut bystander = open(&server);
    let mut client = open(&server);
    // A message that grows past the maximum in its second fragment.
    let mut wire = frame(b't', &[b'x'; 40]);
    wire.extend(frame(b'T', &[b'y'; 40]));
    client.write_all(&wire).unwrap();
    let mut rest = String::new();
    client.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "ERR frame of 80 bytes exceeds the maximum of 64\n");
    bystander.write_all(&frame(b'T', b"still here")).unwrap();
    assert_eq!(read_line_of(&mut bystander), "2 still here []");
    // A refused handshake: the protocol's own answer, then a clean close.
    let mut stranger = connect(server.tcp());
    stranger.write_all(b"HI\n").unwrap();
    let mut answer = String::new();
    stranger.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "GO AWAY\n");
    let stats = server.stop();
    assert_eq!(stats.protocol_errors, 1);
}

#[test]
fn a_partial_unit_is_held_in_counted_buffers_and_meets_the_frame_deadline() {
    let config = Config {
        udp: Vec::new(),
        frame_timeout: Some(Duration::from_secs(30)),
        ..local_config()
    };
    let mut server = Driven::start(config, Describe::default(), Toy);
    let mut client = connect(server.tcp());
    client.write_all(b"HELLO\n").unwrap();
    // Half of a fragmented message: the unit stays in the connection's buffer.
    let mut wire = frame(b't', b"half");
    wire.extend_from_slice(&frame(b'T', b"never finished")[..5]);
    client.write_all(&wire).unwrap();
    server.turn_until("the partial unit is held", |r| {
        r.stats().frames_in == 1 && r.stats().buffered_bytes > 0
    });
    server.advance(Duration::from_secs(29));
    assert!(!is_closed_now(&client), "closed before the deadline");
    server.advance(Duration::from_secs(2));
    server.turn_until("closed at the deadline", |r| r.stats().active == 0);
    assert_eq!(server.reactor.stats().buffered_bytes, 0);
    let mut rest = Vec::new();
    let ended = client.read_to_end(&mut rest);
    assert!(
        ended.is_ok() || ended.is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "closed"
    );
}

/// Over TLS, the protocol path tells the service the handshake is done before the
/// units of the records that came with its end: the client's `HELLO`, written before
/// its handshake completed, leaves in the same flight as its Finished.
#[test]
fn over_tls_the_handshake_is_told_before_the_first_units() {
    let certs = tls_support::Certs::make("protocol");
    let mut config = Config {
        udp: Vec::new(),
        ..local_config()
    };
    config.tcp.clear();
    config.tls_tcp.push("127.0.0.1:0".parse().unwrap());
    let tls = switchboard::tls::TlsServer::from_pem_files(&certs.cert, &certs.key, None);
    config.tls = Some(tls.unwrap());
    let server = TestServer::start(config, || (Describe::default(), Toy));
    let mut client =
        tls_support::tls_connect(server.tcp(), certs.client_config(false), "localhost");
    // Into rustls before the handshake: sent right behind the client's Finished.
    let mut first = b"HELLO\n".to_vec();
    first.extend(frame(b'T', b"hi"));
    client.conn.writer().write_all(&first).unwrap();
    client.flush().unwrap();
    let mut lines = Vec::new();
    let mut line = Vec::new();
    let mut byte = [0u8];
    while lines.len() < 4 && client.read(&mut byte).unwrap() == 1 {
        match byte[0] {
            b'\n' => lines.push(String::from_utf8(std::mem::take(&mut line)).unwrap()),
            b => line.push(b),
        }
    }
    assert_eq!(lines, ["TLS ready", "WELCOME", "1  []", "2 hi []"]);
    server.stop();
}
