//! Endpoints, each with its own codec: one reactor serving length frames on one TCP
//! port and lines on another (`type Codec = AnyCodec`, `Reactor::listen`), every
//! client framed by its own port's codec, the service learning which endpoint each
//! connection came through; and the lines codec resuming its scan when a long line
//! arrives in many pieces.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use switchboard::{
    AnyCodec, BoundAddr, CloseReason, Config, ConnId, Context, EndpointId, EndpointKind,
    LengthCodec, LinesCodec, ListenAddr, Origin, Service,
};

/// Greets each connection with where it came from; answers each frame with its
/// endpoint and the payload. "all:TEXT" sends TEXT to every connection, each in its
/// own codec; "shared:TEXT" does the same with one shared frame per endpoint.
#[derive(Default)]
struct Switch {
    conns: Vec<ConnId>,
    /// Every line or frame seen: (endpoint, payload length).
    seen: Vec<(EndpointId, usize)>,
}

impl Service for Switch {
    /// The endpoint on_connect was told.
    type Conn = Option<EndpointId>;
    type Timer = ();
    type Codec = AnyCodec;

    fn on_connect(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        endpoint: &mut Option<EndpointId>,
        origin: Origin,
    ) {
        *endpoint = Some(origin.endpoint());
        self.conns.push(conn);
        let kind = match ctx.endpoint_kind(origin.endpoint()) {
            Some(EndpointKind::Listener(bound)) => bound.to_string(),
            other => format!("{other:?}"),
        };
        let asked = ctx.endpoint(conn).unwrap();
        let welcome = format!("{origin}; ctx.endpoint: {asked}; {kind}");
        ctx.send(conn, welcome.as_bytes()).unwrap();
    }

    fn on_frame(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        endpoint: &mut Option<EndpointId>,
        payload: &[u8],
    ) {
        let endpoint = endpoint.unwrap();
        assert_eq!(ctx.endpoint(conn), Some(endpoint));
        self.seen.push((endpoint, payload.len()));
        if let Some(text) = payload.strip_prefix(b"all:") {
            for &to in &self.conns {
                ctx.send(to, text).unwrap();
            }
        } else if let Some(text) = payload.strip_prefix(b"shared:") {
            for &to in &self.conns {
                let theirs = ctx.endpoint(to).unwrap();
                let frame = ctx.shared_frame_for(theirs, text).unwrap();
                ctx.send_shared(to, &frame).unwrap();
            }
        } else {
            let mut reply = format!("{endpoint}: ").into_bytes();
            reply.extend_from_slice(payload);
            ctx.send(conn, &reply).unwrap();
        }
    }

    fn on_close(&mut self, _: &mut Context<'_, Self>, conn: ConnId, _: Self::Conn, _: CloseReason) {
        self.conns.retain(|&c| c != conn);
    }
}

/// A client of the lines port: writes lines, reads lines.
struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    fn connect(addr: SocketAddr) -> LineClient {
        let stream = connect(addr);
        LineClient {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    #[track_caller]
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }
}

fn length_codec() -> AnyCodec {
    AnyCodec::Length(LengthCodec::new(1 << 20))
}

fn lines_codec() -> AnyCodec {
    AnyCodec::Lines(LinesCodec::new(1 << 20))
}

#[test]
fn each_port_frames_its_clients_with_its_own_codec() {
    let mut config = Config::default();
    config.tcp.push("127.0.0.1:0".parse().unwrap());
    let (server, lines) = TestServer::start_with(
        config,
        || (Switch::default(), length_codec()),
        |reactor| {
            let any = "127.0.0.1:0".parse().unwrap();
            let lines = reactor.listen(ListenAddr::Tcp(any), lines_codec()).unwrap();
            (lines, reactor.listener_endpoints())
        },
    );
    let (lines, listeners) = lines;
    let [length_addr, lines_addr] = server.tcp_all()[..] else {
        panic!("two TCP listeners: {:?}", server.endpoints)
    };
    // Every listener's endpoint, with its address: the configured one first.
    assert_eq!(listeners.len(), 2, "{listeners:?}");
    assert_eq!(listeners[0].1, BoundAddr::Tcp(length_addr));
    assert_eq!(listeners[1], (lines, BoundAddr::Tcp(lines_addr)));
    let length = listeners[0].0.to_string();
    assert_ne!(lines, listeners[0].0);

    let mut framed = connect(length_addr);
    assert_eq!(
        String::from_utf8(read_frame(&mut framed).unwrap()).unwrap(),
        format!("accepted on {length}; ctx.endpoint: {length}; tcp {length_addr}")
    );
    let mut plain = LineClient::connect(lines_addr);
    assert_eq!(
        plain.line(),
        format!("accepted on {lines}; ctx.endpoint: {lines}; tcp {lines_addr}\n")
    );

    // Each is answered in its own framing.
    write_frame(&mut framed, b"a frame\nwith a newline in it").unwrap();
    assert_eq!(
        read_frame(&mut framed).unwrap(),
        format!("{length}: a frame\nwith a newline in it").as_bytes()
    );
    plain.writer.write_all(b"one line\r\ntwo\n").unwrap();
    assert_eq!(plain.line(), format!("{lines}: one line\n"));
    assert_eq!(plain.line(), format!("{lines}: two\n"));

    // One payload sent to both: each connection's codec frames it for that client.
    plain.writer.write_all(b"all:news\n").unwrap();
    assert_eq!(read_frame(&mut framed).unwrap(), b"news");
    assert_eq!(plain.line(), "news\n");
    write_frame(&mut framed, b"all:back").unwrap();
    assert_eq!(read_frame(&mut framed).unwrap(), b"back");
    assert_eq!(plain.line(), "back\n");
    // The same with a shared frame made per endpoint.
    write_frame(&mut framed, b"shared:once").unwrap();
    assert_eq!(read_frame(&mut framed).unwrap(), b"once");
    assert_eq!(plain.line(), "once\n");

    drop((framed, plain));
    let stats = server.stop();
    assert_eq!(stats.accepted, 2);
    assert_eq!(stats.frames_in, 6);
    assert_eq!(stats.protocol_errors, 0);
}

#[test]
fn a_long_line_in_many_small_pieces_is_decoded_whole() {
    let mut server = Driven::start(local_config(), Switch::default(), lines_codec());
    let mut client = connect(server.tcp());
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut welcome = String::new();
    server.turn_until("accepted", |r| r.stats().accepted == 1);
    reader.read_line(&mut welcome).unwrap();

    // 200 KB without a newline, in pieces of assorted sizes (some a single byte), each
    // read by the server before the next is sent; it ends with "\r" in one piece and
    // "\n" in the next.
    let line: Vec<u8> = (0..200_000).map(|i| b'a' + (i % 26) as u8).collect();
    let mut pieces: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    for size in [1, 1, 2, 700, 1, 16_000, 400, 1, 3_000, 1, 1] {
        pieces.push(&line[at..at + size]);
        at += size;
    }
    while at < line.len() {
        let size = (line.len() - at).min(9_973);
        pieces.push(&line[at..at + size]);
        at += size;
    }
    pieces.push(b"\r");
    pieces.push(b"\n");
    let count = pieces.len();
    for piece in pieces {
        let before = server.reactor.stats().bytes_in;
        client.write_all(piece).unwrap();
        server.turn_until("the piece was read", |r| r.stats().bytes_in > before);
        if piece != b"\n" {
            assert_eq!(
                server.reactor.stats().frames_in,
                0,
                "no line before its end"
            );
        }
    }
    assert!(count > 30);
    assert_eq!(server.reactor.stats().frames_in, 1);
    let mut echoed = String::new();
    reader.read_line(&mut echoed).unwrap();
    let expected = format!("endpoint 0: {}\n", String::from_utf8(line).unwrap());
    assert!(echoed == expected, "the long line came back different");

    // The scan starts afresh for the next line: a short one split in two, then two
    // whole lines and the start of a third in one piece.
    for piece in [&b"x"[..], b"y\n", b"first\nsecond\nthi", b"rd\n"] {
        let before = server.reactor.stats().bytes_in;
        client.write_all(piece).unwrap();
        server.turn_until("the piece was read", |r| r.stats().bytes_in > before);
    }
    for expected in ["xy", "first", "second", "third"] {
        let mut echoed = String::new();
        reader.read_line(&mut echoed).unwrap();
        assert_eq!(echoed, format!("endpoint 0: {expected}\n"));
    }
    let lengths: Vec<usize> = server.reactor.service().seen.iter().map(|s| s.1).collect();
    assert_eq!(lengths, [200_000, 2, 5, 6, 5]);
}

/// A protocol whose framing changes over a connection's life: a greeting line first,
/// then length frames (the shape of an HTTP upgrade). The phase is the codec's state,
/// one per connection.
#[derive(Debug, Clone)]
struct Upgrade;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Greeting,
    Framed,
}

impl switchboard::Codec for Upgrade {
    type State = Phase;

    fn decode(
        &self,
        phase: &mut Phase,
        buf: &[u8],
    ) -> Result<switchboard::Decode, switchboard::FrameError> {
        match phase {
            Phase::Greeting => {
                let decoded = LinesCodec::new(100).decode(&mut Default::default(), buf)?;
                if matches!(decoded, switchboard::Decode::Frame { .. }) {
                    *phase = Phase::Framed;
                }
                Ok(decoded)
            }
            Phase::Framed => LengthCodec::new(100).decode(&mut (), buf),
        }
    }

    fn encode(
        &self,
        payload: &[u8],
        out: &mut switchboard::Buffer,
    ) -> Result<(), switchboard::FrameError> {
        LengthCodec::new(100).encode(payload, out)
    }
}

/// Answers each message with what it was, in order.
struct Tell;

impl Service for Tell {
    type Conn = ();
    type Timer = ();
    type Codec = Upgrade;

    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
        let answer = format!("got {}", String::from_utf8_lossy(payload));
        ctx.send(conn, answer.as_bytes()).unwrap();
    }
}

#[test]
fn a_codec_whose_framing_changes_keeps_its_phase_per_connection() {
    let server = TestServer::start(local_config(), || (Tell, Upgrade));
    // Two clients, each greeting and framing in one write: the switch happens inside
    // one read, and the frames after it are decoded (and walked again) in the new phase.
    let mut clients: Vec<_> = (0..2).map(|_| connect(server.tcp())).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let mut wire = format!("HELLO {i}\n").into_bytes();
        wire.extend_from_slice(&frame(b"one"));
        wire.extend_from_slice(&frame(b"two\nwith a newline"));
        client.write_all(&wire).unwrap();
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            read_frame(client).unwrap(),
            format!("got HELLO {i}").as_bytes()
        );
        assert_eq!(read_frame(client).unwrap(), b"got one");
        assert_eq!(read_frame(client).unwrap(), b"got two\nwith a newline");
    }
    // A later frame on the first connection is still in the framed phase.
    write_frame(&mut clients[0], b"HELLO again\n").unwrap();
    assert_eq!(read_frame(&mut clients[0]).unwrap(), b"got HELLO again\n");
}
