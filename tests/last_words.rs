//! A protocol error answered in the protocol: a codec's `error_reply` gives a peer that
//! broke the format its last words (as Redis answers `-ERR Protocol error`), which
//! arrive after every answer queued before them, followed by a clean end of stream,
//! not a reset; a codec without last words resets the peer as before; other clients
//! are not affected either way.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;

use common::*;
use switchboard::frame::Scan;
use switchboard::{
    Buffer, CloseReason, Codec, Config, ConnId, Context, Decode, FrameError, LinesCodec, Service,
};

/// Lines of at most 16 bytes; a longer one is answered `ERR ...` when `answers`.
#[derive(Clone)]
struct ShortLines {
    lines: LinesCodec,
    answers: bool,
}

impl Codec for ShortLines {
    type State = <LinesCodec as Codec>::State;

    fn decode(&self, state: &mut Self::State, buf: &[u8]) -> Result<Decode, FrameError> {
        self.lines.decode(state, buf)
    }

    fn encode(&self, payload: &[u8], out: &mut Buffer) -> Result<(), FrameError> {
        self.lines.encode(payload, out)
    }

    fn scan(&self, state: &mut Self::State, buf: &[u8]) -> Scan {
        self.lines.scan(state, buf)
    }

    fn error_reply(&self, error: &FrameError, out: &mut Buffer) {
        if self.answers {
            out.extend_from_slice(format!("ERR {error}\n").as_bytes());
        }
    }
}

/// Answers each line `+LINE`; remembers why connections closed.
#[derive(Default)]
struct Plus {
    closes: Vec<CloseReason>,
}

impl Service for Plus {
    type Conn = ();
    type Timer = ();
    type Codec = ShortLines;

    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), line: &[u8]) {
        let _ = ctx.send(conn, &[b"+", line].concat());
    }

    fn on_close(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: (), reason: CloseReason) {
        self.closes.push(reason);
    }
}

fn start(answers: bool) -> TestServer<Plus> {
    let config = Config {
        udp: Vec::new(),
        ..local_config()
    };
    TestServer::start(config, move || {
        let codec = ShortLines {
            lines: LinesCodec::new(16),
            answers,
        };
        (Plus::default(), codec)
    })
}

/// Two good lines and a bad one in one write; then whatever else the peer sends.
fn misbehave(stream: &mut TcpStream) {
    let bad = "x".repeat(40);
    stream
        .write_all(format!("one\ntwo\n{bad}\nafter\n").as_bytes())
        .unwrap();
}

#[test]
fn a_codec_with_last_words_answers_then_closes_cleanly() {
    let server = start(true);
    let mut bystander = connect(server.tcp());
    let mut client = connect(server.tcp());
    client
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    misbehave(&mut client);
    let mut everything = String::new();
    // A clean end of stream, not a reset: `read_to_string` ends with Ok.
    client.read_to_string(&mut everything).unwrap();
    let lines: Vec<&str> = everything.lines().collect();
    assert_eq!(lines.len(), 3, "{everything}");
    assert_eq!(&lines[..2], ["+one", "+two"]);
    assert!(
        lines[2].starts_with("ERR frame of 17 bytes exceeds the maximum of 16"),
        "{}",
        lines[2]
    );
    // Nobody else noticed.
    bystander.write_all(b"still here\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&mut bystander)
        .read_line(&mut answer)
        .unwrap();
    assert_eq!(answer, "+still here\n");
    drop(bystander);
    let stats = server.stop();
    assert_eq!(stats.protocol_errors, 1);
    assert_eq!(stats.closed[CloseReason::Protocol.index()], 1);
}

#[test]
fn a_codec_without_last_words_resets_the_peer() {
    let server = start(false);
    let mut client = connect(server.tcp());
    misbehave(&mut client);
    // The answers to the good lines may or may not arrive before the reset; the
    // stream ends in a reset either way, with no last words.
    let mut received = Vec::new();
    let ended = loop {
        let mut chunk = [0u8; 256];
        match client.read(&mut chunk) {
            Ok(0) => break ErrorKind::UnexpectedEof,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) => break e.kind(),
        }
    };
    assert_eq!(ended, ErrorKind::ConnectionReset);
    assert!(!String::from_utf8_lossy(&received).contains("ERR"));
    let stats = server.stop();
    assert_eq!(stats.protocol_errors, 1);
}
