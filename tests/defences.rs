//! The reactor's defences against peers that misbehave, each over real loopback
//! sockets: idle counts only the peer's silence and a send timeout watches stalled
//! output (also after the peer half-closed), closes for cause reset the connection,
//! a memory budget resets the biggest holders, pipelined requests with large answers
//! wait in the read buffer while the output is over the write limit, and a storm of
//! connects is accepted a bounded number per turn. Timed cases run on a virtual clock
//! ([`Driven`]), so minutes pass in microseconds and nothing sleeps.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use switchboard::frame::wire;
use switchboard::services::Echo;
use switchboard::{CloseReason, ConnId, Context, Handle, LengthCodec, Service};

const MAX_FRAME: usize = 1 << 20;

/// A service whose requests are sizes: a request "N" is answered with N bytes, the
/// first eight of them the answer's number on its connection (big-endian), so a client
/// can tell that every answer came, in order.
#[derive(Debug, Default)]
struct Answers {
    /// Requests handled, over all connections.
    handled: usize,
    /// The most output ever queued for one connection right after an answer was sent.
    most_queued: usize,
}

impl Service for Answers {
    type Codec = LengthCodec;
    /// Answers sent on this connection so far.
    type Conn = u64;
    type Timer = ();

    fn on_frame(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        sent: &mut u64,
        payload: &[u8],
    ) {
        let size: usize = std::str::from_utf8(payload)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(8)
            .max(8);
        let mut answer = vec![b'.'; size];
        answer[..8].copy_from_slice(&sent.to_be_bytes());
        *sent += 1;
        self.handled += 1;
        if ctx.send(conn, &answer).is_ok() {
            let queued = ctx.queued_output(conn).unwrap_or(0);
            self.most_queued = self.most_queued.max(queued);
        }
    }
}

fn answers_codec() -> LengthCodec {
    LengthCodec::new(64 << 20)
}

/// Asks the running service something on its own loop.
fn ask_service<S: Service, R: Send + 'static>(
    handle: &Handle<S>,
    question: impl FnOnce(&mut S) -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    handle
        .post(move |service, _| {
            let _ = tx.send(question(service));
        })
        .expect("post");
    rx.recv_timeout(IO_TIMEOUT).expect("the loop answered")
}

/// Connects a client to a driven reactor and turns until it is accepted.
#[track_caller]
fn driven_client<S: Service>(server: &mut Driven<S>) -> TcpStream {
    let accepted = server.reactor.stats().accepted;
    let client = connect(server.tcp());
    server.turn_until("accepted", |r| r.stats().accepted > accepted);
    client
}

/// Reads `stream` until it ends, and says whether it ended with a reset (true) or a
/// plain end of stream (false).
#[track_caller]
fn ends_with_a_reset(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) => panic!("neither data, an end nor a reset: {e}"),
        }
    }
}

/// Whether the peer has reset `stream`, without waiting. Reading the reset consumes
/// it: the socket reads as ended afterwards.
fn was_reset_now(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let reset =
        matches!(stream.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::ConnectionReset);
    stream.set_nonblocking(false).unwrap();
    reset
}

/// Writes echo frames from `client` (never reading) until the driven server has
/// stopped reading it: its output is over the write limit and every kernel buffer on
/// the way is full.
#[track_caller]
fn push_until_the_server_stops_reading(server: &mut Driven<Echo>, client: &mut TcpStream) {
    client.set_nonblocking(true).unwrap();
    let mut chunk = Vec::new();
    for _ in 0..64 {
        wire::write_frame(&mut chunk, &[7u8; 1020]).unwrap();
    }
    let (mut offset, mut quiet_turns, mut last_read) = (0, 0, 0);
    for _ in 0..100_000 {
        match client.write(&chunk[offset..]) {
            Ok(n) => offset = (offset + n) % chunk.len(),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("the client's write failed: {e}"),
        }
        server.turn();
        let read = server.reactor.stats().bytes_in;
        quiet_turns = if read == last_read {
            quiet_turns + 1
        } else {
            0
        };
        last_read = read;
        if quiet_turns == 50 {
            return;
        }
    }
    panic!("the server never stopped reading a client that does not read");
}

#[test]
fn a_client_sending_without_reading_is_not_idle_but_its_stalled_output_times_out() {
    let mut config = local_config();
    config.idle_timeout = Some(Duration::from_secs(10));
    config.send_timeout = Some(Duration::from_secs(60));
    config.write_limit = 64 << 10;
    let mut server = Driven::start(config, Echo::default(), LengthCodec::new(MAX_FRAME));
    let mut client = driven_client(&mut server);
    push_until_the_server_stops_reading(&mut server, &mut client);
    let stalled_since = server.now;

    // Three idle timeouts pass: the client was sending all along, so it stays.
    for _ in 0..6 {
        server.advance(Duration::from_secs(5));
    }
    let stats = server.reactor.stats();
    assert_eq!(stats.closed[CloseReason::IdleTimeout.index()], 0);
    assert_eq!(stats.active, 1, "closed while its peer was still sending");

    // Its output has made no progress for the send timeout: reset.
    server.advance_to(stalled_since + Duration::from_secs(59));
    assert_eq!(
        server.reactor.stats().active,
        1,
        "reset before the send timeout"
    );
    server.advance_to(stalled_since + Duration::from_secs(61));
    server.turn_until("the stalled connection closed", |r| r.stats().active == 0);
    let stats = server.reactor.stats();
    assert_eq!(stats.closed[CloseReason::WriteStalled.index()], 1);
    assert_eq!(stats.buffered_bytes, 0, "its buffers were given back");
    client.set_nonblocking(false).unwrap();
    assert!(
        ends_with_a_reset(&mut client),
        "a stalled connection is reset"
    );
}

#[test]
fn a_quiet_client_is_still_closed_as_idle() {
    let mut config = local_config();
    config.idle_timeout = Some(Duration::from_secs(10));
    let mut server = Driven::start(config, Echo::default(), LengthCodec::new(MAX_FRAME));
    let mut client = driven_client(&mut server);
    for _ in 0..3 {
        server.advance(Duration::from_secs(5));
    }
    server.turn_until("the idle connection closed", |r| r.stats().active == 0);
    assert_eq!(
        server.reactor.stats().closed[CloseReason::IdleTimeout.index()],
        1
    );
    assert!(!ends_with_a_reset(&mut client), "an idle close is graceful");
}

#[test]
fn a_half_closed_peer_that_never_reads_is_reset_after_the_send_timeout() {
    let mut config = local_config();
    config.idle_timeout = None;
    config.send_timeout = Some(Duration::from_secs(60));
    let mut server = Driven::start(config, Answers::default(), answers_codec());
    let mut client = driven_client(&mut server);
    // One request for 32 MiB, more than the kernel buffers hold, then the client's FIN.
    wire::write_frame(&mut client, b"33554432").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    server.turn_until("the answer queued", |r| r.service().handled == 1);
    for _ in 0..50 {
        server.turn();
    }
    let stalled_since = server.now;
    let held = server.reactor.stats().buffered_bytes;
    assert!(held > 0, "part of the answer waits in the server");
    assert!(held <= 33 << 20, "holds {held} bytes for a 32 MiB answer");

    server.advance_to(stalled_since + Duration::from_secs(30));
    assert_eq!(
        server.reactor.stats().active,
        1,
        "closed before the send timeout"
    );
    server.advance_to(stalled_since + Duration::from_secs(61));
    server.turn_until("the half-closed peer closed", |r| r.stats().active == 0);
    let stats = server.reactor.stats();
    assert_eq!(stats.closed[CloseReason::WriteStalled.index()], 1);
    assert_eq!(stats.buffered_bytes, 0);
    assert!(ends_with_a_reset(&mut client));
}

#[test]
fn an_oversized_frame_resets_the_connection_and_others_are_served() {
    let server = TestServer::start(local_config(), || {
        (Echo::default(), LengthCodec::new(MAX_FRAME))
    });
    let mut good = connect(server.tcp());
    let mut bad = connect(server.tcp());
    bad.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
        .unwrap();
    assert!(
        ends_with_a_reset(&mut bad),
        "a protocol error is answered with a reset"
    );
    wire::write_frame(&mut good, b"still here").unwrap();
    assert_eq!(wire::read_frame(&mut good).unwrap(), b"still here");
    let stats = server.stop();
    assert_eq!(stats.closed[CloseReason::Protocol.index()], 1);
}

#[test]
fn over_the_memory_budget_the_biggest_holders_are_reset_and_small_ones_stay() {
    const BUDGET: usize = 1 << 20;
    let mut config = local_config();
    config.memory_budget = Some(BUDGET);
    let mut server = Driven::start(config, Echo::default(), LengthCodec::new(MAX_FRAME));
    let mut small = driven_client(&mut server);
    wire::write_frame(&mut small, b"hello").unwrap();
    server.turn_until("the small client's echo", |r| r.stats().frames_out == 1);
    assert_eq!(wire::read_frame(&mut small).unwrap(), b"hello");
    // A little held by the small client: half a frame.
    let mut half = Vec::new();
    wire::write_frame(&mut half, &[1u8; 2048]).unwrap();
    small.write_all(&half[..1024]).unwrap();

    // Eight clients announce a 1 MiB frame and send a quarter of it: 2 MiB in all.
    let mut withholders = Vec::new();
    for _ in 0..8 {
        let mut client = driven_client(&mut server);
        client.write_all(&(MAX_FRAME as u32).to_be_bytes()).unwrap();
        client.write_all(&vec![2u8; 256 << 10]).unwrap();
        withholders.push(client);
    }
    server.turn_until("resets for the budget", |r| {
        r.stats().closed[CloseReason::OverBudget.index()] >= 4
            && r.stats().buffered_bytes <= (BUDGET as u64) * 7 / 8
    });
    for _ in 0..20 {
        server.turn();
    }
    let stats = server.reactor.stats();
    let reset = stats.closed[CloseReason::OverBudget.index()];
    assert!(
        (4..=6).contains(&reset),
        "{reset} reset for a budget of 1 MiB"
    );
    assert!(
        stats.buffered_bytes <= BUDGET as u64,
        "{} buffered",
        stats.buffered_bytes
    );
    assert_eq!(
        stats.active,
        9 - reset,
        "only budget resets closed anything"
    );

    // The small client finishes its frame and is served.
    small.write_all(&half[1024..]).unwrap();
    server.turn_until("the small client's second echo", |r| {
        r.stats().frames_out == 2
    });
    assert_eq!(wire::read_frame(&mut small).unwrap(), vec![1u8; 2048]);
    // (A reset is reported once: the peek that sees it is the only look taken.)
    let resets = withholders
        .iter()
        .filter(|client| was_reset_now(client))
        .count();
    assert_eq!(
        resets as u64, reset,
        "every client evicted sees a reset, not a FIN"
    );
}

#[test]
fn a_withheld_large_frame_holds_what_arrived_not_what_its_header_announced() {
    let mut config = local_config();
    config.memory_budget = None;
    let mut server = Driven::start(config, Echo::default(), LengthCodec::new(MAX_FRAME));
    let mut client = driven_client(&mut server);
    // A 1 MiB frame announced, then a few bytes in reads of their own.
    client.write_all(&(MAX_FRAME as u32).to_be_bytes()).unwrap();
    client.write_all(&[1u8; 100]).unwrap();
    let mut expected_in = 104;
    for _ in 0..3 {
        server.turn_until("the bytes were read", |r| r.stats().bytes_in == expected_in);
        client.write_all(&[2u8; 100]).unwrap();
        expected_in += 100;
    }
    server.turn_until("the bytes were read", |r| r.stats().bytes_in == expected_in);
    let held = server.reactor.stats().buffered_bytes;
    assert!(held > 0, "the partial frame is held");
    assert!(
        held <= 128 << 10,
        "{held} bytes held for 404 bytes of an announced 1 MiB frame"
    );
}

#[test]
fn pipelined_requests_with_large_answers_wait_while_the_output_is_over_the_limit() {
    const WRITE_LIMIT: usize = 256 << 10;
    const ANSWER: usize = 64 << 10;
    const REQUESTS: u64 = 2000;
    let mut config = local_config();
    config.write_limit = WRITE_LIMIT;
    let server = TestServer::start_returning(config, || (Answers::default(), answers_codec()));
    let mut client = connect(server.tcp());
    // 2,000 requests in one write: 18 KB asking for 125 MiB of answers.
    let mut requests = Vec::new();
    for _ in 0..REQUESTS {
        wire::write_frame(&mut requests, ANSWER.to_string().as_bytes()).unwrap();
    }
    client.write_all(&requests).unwrap();

    // Not read yet: the server stops answering once the output passes the limit.
    let handle = server.handle();
    assert!(wait_until(IO_TIMEOUT, || {
        let before = ask_service(&handle, |s| s.handled);
        std::thread::sleep(Duration::from_millis(50));
        before > 0 && ask_service(&handle, |s| s.handled) == before
    }));
    let (handled, most_queued) = ask_service(&handle, |s| (s.handled, s.most_queued));
    assert!(
        handled < REQUESTS as usize / 4,
        "{handled} of {REQUESTS} answered for a client that reads nothing"
    );
    assert!(
        most_queued <= WRITE_LIMIT + ANSWER + 4,
        "{most_queued} bytes queued at once, over the write limit plus one answer"
    );

    // Now the client reads: every answer comes, in order.
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    for number in 0..REQUESTS {
        let answer = wire::read_frame(&mut client).unwrap();
        assert_eq!(answer.len(), ANSWER);
        assert_eq!(
            answer[..8],
            number.to_be_bytes(),
            "answer {number} out of order"
        );
    }
    let stopped = server.stop();
    assert!(stopped.stats.frames_held > 0, "the holds are counted");
    assert_eq!(
        stopped.stats.frames_in, REQUESTS,
        "each frame counted once, when handled"
    );
    assert_eq!(stopped.service.handled, REQUESTS as usize);
    assert!(stopped.service.most_queued <= WRITE_LIMIT + ANSWER + 4);
}

#[test]
fn a_storm_of_connects_is_accepted_a_budget_per_turn() {
    let mut config = local_config();
    config.accept_budget = 4;
    let mut server = Driven::start(config, Echo::default(), LengthCodec::new(MAX_FRAME));
    let mut established = driven_client(&mut server);
    let storm: Vec<TcpStream> = (0..20).map(|_| connect(server.tcp())).collect();
    wire::write_frame(&mut established, b"ping").unwrap();
    server.turn();
    assert_eq!(server.reactor.stats().accepted, 1 + 4, "one turn's accepts");
    let mut turns = 1;
    while server.reactor.stats().accepted < 21 {
        server.turn();
        turns += 1;
        assert!(turns <= 100, "the rest of the storm never got accepted");
    }
    assert!(turns >= 5, "20 connects at 4 a turn took {turns} turns");
    server.turn_until("the established client served", |r| {
        r.stats().frames_out == 1
    });
    assert_eq!(wire::read_frame(&mut established).unwrap(), b"ping");
    drop(storm);
}
