//! Outbound connections end to end: a reactor dials a real server (TCP and Unix), its
//! service learns the outcome (connected, refused, timed out), and a dialled connection
//! carries frames, state and closes exactly like an accepted one.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use switchboard::services::Echo;
use switchboard::{
    CloseReason, Config, ConnId, Context, Dial, LengthCodec, Origin, Reactor, Service,
};

/// A client: dials every target when the loop starts, sends `hello` on each (queued
/// until the connect completes), and records everything that happens.
#[derive(Default)]
struct Client {
    targets: Vec<Dial>,
    /// What happened, in order.
    log: Vec<String>,
    /// Frames received.
    received: Vec<Vec<u8>>,
    /// Stops the loop once this many connections have closed.
    stop_after_closes: usize,
    closes: usize,
    /// How long `on_start` holds the loop after dialling (before its first poll).
    pause_after_dialling: Duration,
}

/// What the client keeps per connection: which target it is, and frames seen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Line {
    target: usize,
    frames: usize,
}

impl Service for Client {
    type Conn = Line;
    type Timer = ();
    type Codec = LengthCodec;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        for (target, dial) in self.targets.clone().into_iter().enumerate() {
            let frames = 0;
            match ctx.connect(dial, Line { target, frames }) {
                Ok(conn) => ctx.send(conn, b"hello").unwrap(),
                Err(e) => self
                    .log
                    .push(format!("dial {target} failed at once: {}", e.error)),
            }
        }
        std::thread::sleep(self.pause_after_dialling);
    }

    fn on_connect(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        line: &mut Line,
        origin: Origin,
    ) {
        assert!(origin.is_dialled());
        assert!(ctx.peer_addr(conn).is_some());
        self.log.push(format!("connected {}", line.target));
    }

    fn on_frame(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        line: &mut Line,
        payload: &[u8],
    ) {
        line.frames += 1;
        self.received.push(payload.to_vec());
        ctx.close(conn, switchboard::CloseMode::Flush);
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<'_, Self>,
        _: ConnId,
        line: Line,
        reason: CloseReason,
    ) {
        self.log.push(format!(
            "closed {} after {} frames: {reason}",
            line.target, line.frames
        ));
        self.closes += 1;
        if self.closes == self.stop_after_closes {
            ctx.shutdown();
        }
    }
}

/// Runs `client` on a reactor with no listeners of its own, to its end.
fn run_client(mut client: Client) -> Client {
    client.stop_after_closes = client.targets.len();
    let reactor = Reactor::bind(Config::default(), client, LengthCodec::new(1024)).unwrap();
    reactor.run().unwrap().service
}

#[test]
fn a_dialled_connection_exchanges_frames_and_closes_with_its_state() {
    let server = TestServer::start(local_config(), || (Echo::default(), LengthCodec::new(1024)));
    let client = run_client(Client {
        targets: vec![Dial::tcp(server.tcp())],
        ..Client::default()
    });
    assert_eq!(client.received, vec![b"hello".to_vec()]);
    assert_eq!(
        client.log,
        ["connected 0", "closed 0 after 1 frames: service"]
    );
    let stats = server.stop();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.frames_in, 1);
}

#[test]
fn a_refused_dial_is_reported_through_on_close() {
    // A port nobody listens on: bound, then closed.
    let refused: SocketAddr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let server = TestServer::start(local_config(), || (Echo::default(), LengthCodec::new(1024)));
    let client = run_client(Client {
        targets: vec![Dial::tcp(refused), Dial::tcp(server.tcp())],
        ..Client::default()
    });
    assert!(
        client
            .log
            .contains(&"closed 0 after 0 frames: connect failed (connection refused)".to_string()),
        "{:?}",
        client.log
    );
    assert!(!client.log.contains(&"connected 0".to_string()));
    // The other dial is unaffected.
    assert!(client.log.contains(&"connected 1".to_string()));
    assert_eq!(client.received, vec![b"hello".to_vec()]);
}

#[test]
fn a_unix_socket_can_be_dialled_and_a_missing_one_fails_at_once() {
    let dir = std::env::temp_dir().join(format!("switchboard-dial-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let mut config = Config::default();
    config.unix.push(path.clone());
    let server = TestServer::start(config, || (Echo::default(), LengthCodec::new(1024)));
    let mut client = Client {
        targets: vec![Dial::unix(&path), Dial::unix(dir.join("nobody.sock"))],
        ..Client::default()
    };
    // The missing socket never becomes a connection: only one close to wait for.
    client.stop_after_closes = 1;
    let reactor = Reactor::bind(Config::default(), client, LengthCodec::new(1024)).unwrap();
    let client = reactor.run().unwrap().service;
    assert_eq!(client.received, vec![b"hello".to_vec()]);
    assert!(
        client.log[0].starts_with("dial 1 failed at once"),
        "{:?}",
        client.log
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dial_that_gets_no_answer_times_out_on_the_virtual_clock() {
    // A listener whose backlog is full and which never accepts: the kernel drops
    // further SYNs, so a connect to it neither succeeds nor fails.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_nonblocking(true).unwrap();
        let _ = socket.connect(&addr.into());
        fillers.push(socket);
    }
    std::thread::sleep(Duration::from_millis(50)); // let the handshakes settle
    let client = Client {
        targets: vec![Dial::tcp(addr).timeout(Duration::from_secs(3))],
        stop_after_closes: 1,
        ..Client::default()
    };
    let mut driven = Driven::start(Config::default(), client, LengthCodec::new(1024));
    driven.advance(Duration::from_millis(2900));
    assert!(
        driven.reactor.service().log.is_empty(),
        "{:?}",
        driven.reactor.service().log
    );
    driven.advance(Duration::from_millis(100));
    assert_eq!(
        driven.reactor.service().log,
        ["closed 0 after 0 frames: connect_timeout"]
    );
    assert_eq!(driven.reactor.stats().dialled, 1);
}

/// A dial made before the loop runs (a client's first connection).
#[test]
fn a_client_can_dial_before_running_the_loop() {
    let server = TestServer::start(local_config(), || (Echo::default(), LengthCodec::new(1024)));
    let client = Client {
        stop_after_closes: 1,
        ..Client::default()
    };
    let mut reactor = Reactor::bind(Config::default(), client, LengthCodec::new(1024)).unwrap();
    let line = Line {
        target: 7,
        frames: 0,
    };
    let conn = reactor.connect(Dial::tcp(server.tcp()), line).unwrap();
    let (tx, rx) = mpsc::channel();
    reactor
        .handle()
        .post(move |_, ctx| {
            ctx.send(conn, b"posted").unwrap();
            tx.send(()).unwrap();
        })
        .unwrap();
    let client = reactor.run().unwrap().service;
    rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(client.received, vec![b"posted".to_vec()]);
    assert_eq!(
        client.log,
        ["connected 7", "closed 7 after 1 frames: service"]
    );
}

/// A server that speaks first: its greeting is already waiting when the reactor first
/// hears of the connect, so readiness for both comes in one event (edge-triggered: no
/// second one comes for the greeting), while the client's own first frame waits to be
/// written. The connect completes, the frame goes out, and the greeting is read.
#[test]
fn a_greeting_that_arrives_with_the_connect_is_read() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut accepted, _) = listener.accept().unwrap();
        std::io::Write::write_all(&mut accepted, &frame(b"greeting")).unwrap();
        read_frame(&mut accepted).unwrap()
    });
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let client = Client {
            targets: vec![Dial::tcp(addr)],
            stop_after_closes: 1,
            // Long enough for the greeting to arrive before the loop first polls.
            pause_after_dialling: Duration::from_millis(200),
            ..Client::default()
        };
        let reactor = Reactor::bind(Config::default(), client, LengthCodec::new(1024)).unwrap();
        let _ = done.send(reactor.run().unwrap().service);
    });
    let client = finished
        .recv_timeout(Duration::from_secs(5))
        .expect("the greeting that came with the connect was never read");
    assert_eq!(client.received, vec![b"greeting".to_vec()]);
    assert_eq!(
        client.log,
        ["connected 0", "closed 0 after 1 frames: service"]
    );
    assert_eq!(server.join().unwrap(), b"hello", "the client's frame");
}
