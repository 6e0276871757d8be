//! End-to-end tests of the guarantees the reactor gives a service: connection ids are
//! never reused for a newcomer, timers fire and cancel, closes flush or not as asked,
//! shared frames reach every connection.

mod common;

use std::io::Read;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use switchboard::services::Echo;
use switchboard::{
    CloseMode, CloseReason, ConnId, Context, LengthCodec, Origin, SendError, Service, TimerId,
};

/// Remembers the first connection; when a later one arrives after it closed, tries to
/// send to the old id and reports what happened. Echoes frames.
struct SlotReuse {
    closed: Option<ConnId>,
    report: mpsc::Sender<(ConnId, ConnId, Result<(), SendError>)>,
    closed_tx: mpsc::Sender<()>,
}

impl Service for SlotReuse {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_connect(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), _: Origin) {
        if let Some(old) = self.closed {
            let ghost = ctx.send(old, b"ghost");
            let _ = self.report.send((old, conn, ghost));
        }
        let _ = ctx.send(conn, b"welcome");
    }
    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
        let _ = ctx.send(conn, payload);
    }
    fn on_close(&mut self, _: &mut Context<'_, Self>, conn: ConnId, _: (), _: CloseReason) {
        self.closed.get_or_insert(conn);
        let _ = self.closed_tx.send(());
    }
}

#[test]
fn a_closed_connections_id_never_reaches_the_newcomer_in_its_slot() {
    let (report, reports) = mpsc::channel();
    let (closed_tx, closed) = mpsc::channel();
    let server = TestServer::start(local_config(), move || {
        let service = SlotReuse {
            closed: None,
            report,
            closed_tx,
        };
        (service, LengthCodec::new(1024))
    });
    let mut first = connect(server.tcp());
    assert_eq!(read_frame(&mut first).unwrap(), b"welcome");
    drop(first);
    closed
        .recv_timeout(IO_TIMEOUT)
        .expect("first connection closed");

    let mut second = connect(server.tcp());
    let (old, new, ghost) = reports.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(old.index(), new.index(), "the slab slot was reused");
    assert_ne!(old, new);
    assert_eq!(ghost, Err(SendError::Closed));
    assert_eq!(read_frame(&mut second).unwrap(), b"welcome");
    // Had the ghost reached the newcomer, it would come before this echo.
    write_frame(&mut second, b"marker").unwrap();
    assert_eq!(
        read_frame(&mut second).unwrap(),
        b"marker",
        "nothing else, in particular no ghost"
    );
}

/// Sets two timers per connection, cancels the second, and reports each firing to the
/// connection that set it.
#[derive(Default)]
struct Timers {
    conns: Vec<ConnId>,
}

impl Service for Timers {
    type Conn = ();
    /// Which connection the timer answers.
    type Timer = usize;
    type Codec = LengthCodec;

    fn on_connect(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), _: Origin) {
        let value = self.conns.len();
        self.conns.push(conn);
        ctx.set_timer(Duration::from_millis(50), value);
        let cancelled = ctx.set_timer(Duration::from_millis(100), value);
        assert!(ctx.cancel_timer(cancelled));
        assert!(
            !ctx.cancel_timer(cancelled),
            "cancelling twice reports false"
        );
    }
    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: TimerId, value: usize) {
        let conn = self.conns[value];
        ctx.send(conn, format!("timer {value}").as_bytes()).unwrap();
    }
}

#[test]
fn timers_fire_once_and_cancelled_timers_never_fire() {
    let mut server = Driven::start(local_config(), Timers::default(), LengthCodec::new(1024));
    let mut client = connect(server.tcp());
    server.turn_until("accepted", |r| r.stats().accepted == 1);
    server.advance(Duration::from_millis(49));
    client.set_nonblocking(true).unwrap();
    assert!(read_frame(&mut client).is_err(), "not due yet");
    server.advance(Duration::from_millis(1));
    client.set_nonblocking(false).unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), b"timer 0");
    // Long past the cancelled timer's deadline: on loopback anything it sent would be
    // in the client's socket by the end of the turn.
    server.advance(Duration::from_secs(60));
    client.set_nonblocking(true).unwrap();
    assert!(
        read_frame(&mut client).is_err(),
        "the cancelled timer did not fire"
    );
    assert_eq!(server.reactor.stats().frames_out, 1);
}

/// "flush" -> reply then close after flushing; "now" -> reply then close at once;
/// anything else is sent to every connection as one shared frame.
#[derive(Default)]
struct Closer {
    conns: Vec<ConnId>,
}

impl Service for Closer {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_connect(&mut self, _: &mut Context<'_, Self>, conn: ConnId, _: &mut (), _: Origin) {
        self.conns.push(conn);
    }
    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
        match payload {
            b"flush" => {
                ctx.send(conn, &vec![b'f'; 200_000]).unwrap();
                ctx.close(conn, CloseMode::Flush);
                assert!(!ctx.is_open(conn));
                assert_eq!(ctx.send(conn, b"late"), Err(SendError::Closed));
            }
            b"now" => {
                // Far more than the socket buffers hold: most of it stays queued.
                ctx.send(conn, &vec![b'n'; 8 << 20]).unwrap();
                assert!(ctx.queued_output(conn).unwrap() > 0);
                ctx.close(conn, CloseMode::Now);
            }
            other => {
                let shared = ctx.shared_frame(other).unwrap();
                for &member in &self.conns {
                    let _ = ctx.send_shared(member, &shared);
                }
            }
        }
    }
    fn on_close(&mut self, _: &mut Context<'_, Self>, conn: ConnId, _: (), _: CloseReason) {
        self.conns.retain(|&c| c != conn);
    }
}

#[test]
fn close_after_flush_delivers_everything_then_eof() {
    let server = TestServer::start(local_config(), || {
        (Closer::default(), LengthCodec::new(1 << 20))
    });
    let mut client = connect(server.tcp());
    write_frame(&mut client, b"flush").unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), vec![b'f'; 200_000]);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn close_now_discards_queued_output() {
    let server = TestServer::start(local_config(), || {
        (Closer::default(), LengthCodec::new(16 << 20))
    });
    let mut client = connect(server.tcp());
    write_frame(&mut client, b"now").unwrap();
    let mut received = Vec::new();
    let _ = client.read_to_end(&mut received); // EOF or reset: either ends the stream
    assert!(
        received.len() < (8 << 20) + 4,
        "the queued rest was discarded, not sent ({} bytes arrived)",
        received.len()
    );
    let stats = server.stop();
    assert_eq!(stats.closed[CloseReason::Service.index()], 1);
}

#[test]
fn a_shared_frame_reaches_every_connection_in_order() {
    let server = TestServer::start(local_config(), || {
        (Closer::default(), LengthCodec::new(1024))
    });
    let mut members: Vec<_> = (0..20).map(|_| connect(server.tcp())).collect();
    // Every member is registered once the first broadcast reaches them all.
    write_frame(&mut members[0], b"sync").unwrap();
    for member in &mut members {
        assert_eq!(read_frame(member).unwrap(), b"sync");
    }
    for i in 0..10 {
        write_frame(&mut members[0], format!("m{i}").as_bytes()).unwrap();
    }
    for (n, member) in members.iter_mut().enumerate() {
        for i in 0..10 {
            assert_eq!(
                read_frame(member).unwrap(),
                format!("m{i}").as_bytes(),
                "member {n}"
            );
        }
    }
    let stats = server.stop();
    assert_eq!(stats.frames_out, 11 * 20);
}

/// Answers any frame with one 8 MiB frame: far more than the socket buffers hold, so
/// most of it waits in the server's queue.
struct Bulk;

const BULK: usize = 8 << 20;

impl Service for Bulk {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), _: &[u8]) {
        let _ = ctx.send(conn, &vec![b'b'; BULK]);
    }
}

#[test]
fn shutdown_flushes_queued_output_before_closing() {
    let server = TestServer::start(local_config(), || (Bulk, LengthCodec::new(16 << 20)));
    let mut client = connect(server.tcp());
    write_frame(&mut client, b"go").unwrap();
    // The header has arrived: the reply is queued in the server.
    let mut header = [0u8; 4];
    client.read_exact(&mut header).unwrap();
    assert_eq!(announced(header) as usize, BULK);

    let handle = server.handle();
    let stopper = std::thread::spawn(move || {
        handle.shutdown();
        server.stop()
    });
    let mut body = vec![0u8; BULK];
    client.read_exact(&mut body).unwrap();
    assert!(body.iter().all(|&b| b == b'b'));
    assert!(
        is_closed(&mut client),
        "closed once everything was delivered"
    );
    drop(client);
    let stats = stopper.join().unwrap();
    assert_eq!(stats.closed[CloseReason::Shutdown.index()], 1);
}

#[test]
fn a_peer_still_sending_when_the_server_closes_loses_nothing_it_was_sent() {
    // The server closes after flushing while the client is still sending: closing with
    // unread input would make the kernel send a RST, which can destroy the reply in
    // flight. The lingering close reads and discards instead, until the client closes.
    let server = TestServer::start(local_config(), || {
        (Closer::default(), LengthCodec::new(1 << 20))
    });
    let mut client = connect(server.tcp());
    write_frame(&mut client, b"flush").unwrap();
    for _ in 0..200 {
        if write_frame(&mut client, &[b'j'; 1000]).is_err() {
            break; // the server may have finished lingering: fine, the reply was sent
        }
    }
    assert_eq!(read_frame(&mut client).unwrap(), vec![b'f'; 200_000]);
    assert!(is_closed(&mut client));
}

/// `Reactor::watch`: an outside source (here one end of a Unix socket pair) is served
/// from the loop's thread, and its handler may stop the server.
#[test]
fn a_watched_source_runs_its_handler_on_the_loop() {
    use std::io::Write;
    use switchboard::{Config, Reactor};

    let mut config = Config::default();
    config.tcp.push("127.0.0.1:0".parse().unwrap());
    let (tx, rx) = mpsc::channel();
    // What the handler has read so far, each time it runs.
    let (seen_tx, seen_rx) = mpsc::channel();
    let (mut remote, ready_rx) = {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (control, remote) = std::os::unix::net::UnixStream::pair().unwrap();
        control.set_nonblocking(true).unwrap();
        let control = mio::net::UnixStream::from_std(control);
        std::thread::spawn(move || {
            let mut reactor =
                Reactor::bind(config, Echo::default(), LengthCodec::new(1024)).unwrap();
            let handle = reactor.handle();
            let mut seen = Vec::new();
            reactor
                .watch(control, move |control| {
                    let mut buf = [0u8; 16];
                    while let Ok(n @ 1..) = control.read(&mut buf) {
                        seen.extend_from_slice(&buf[..n]);
                    }
                    let _ = seen_tx.send(seen.len());
                    if seen.ends_with(b"stop") {
                        handle.shutdown();
                    }
                })
                .unwrap();
            ready_tx.send(reactor.handle()).unwrap();
            let stopped = reactor.run().unwrap();
            tx.send(stopped.stats.accepted).unwrap();
        });
        (remote, ready_rx)
    };
    let handle = ready_rx.recv_timeout(IO_TIMEOUT).unwrap();
    remote.write_all(b"not yet").unwrap();
    while seen_rx.recv_timeout(IO_TIMEOUT).unwrap() < 7 {}
    // The handler has taken "not yet" in; the loop still runs jobs after it.
    let (alive_tx, alive) = mpsc::channel();
    handle.post(move |_, _| alive_tx.send(()).unwrap()).unwrap();
    alive
        .recv_timeout(IO_TIMEOUT)
        .expect("the server stopped before it was told to");
    assert!(rx.try_recv().is_err());
    remote.write_all(b"stop").unwrap();
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), 0);
}

/// Answers a datagram `go` with a burst: replies of assorted sizes to the sender and to
/// a second peer, interleaved, sent from one callback. (Runs of same-size datagrams to
/// one peer leave in one segmented send on Linux; the peers must still see each
/// datagram whole and in order.)
struct Spray {
    other: std::net::SocketAddr,
}

/// The burst `Spray` sends: (to the other peer?, size), in order.
fn spray_plan() -> Vec<(bool, usize)> {
    let mut plan = Vec::new();
    plan.extend((0..10).map(|_| (false, 100)));
    plan.push((false, 30)); // a shorter last one ends a run
    plan.push((false, 100));
    plan.push((false, 0)); // empty datagrams are datagrams too
    plan.push((true, 100)); // another peer ends the run
    plan.extend((0..70).map(|_| (false, 7))); // longer than one segmented send carries
    plan.push((false, 1400));
    plan.push((false, 1400));
    plan.push((true, 5));
    plan
}

fn spray_datagram(index: usize, size: usize) -> Vec<u8> {
    (0..size).map(|i| (index * 31 + i) as u8).collect()
}

impl Service for Spray {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_datagram(
        &mut self,
        ctx: &mut Context<'_, Self>,
        socket: switchboard::UdpId,
        peer: std::net::SocketAddr,
        datagram: &[u8],
    ) {
        if datagram == b"go" {
            for (index, (to_other, size)) in spray_plan().into_iter().enumerate() {
                let to = if to_other { self.other } else { peer };
                ctx.send_to(socket, to, &spray_datagram(index, size))
                    .unwrap();
            }
        }
    }
}

#[test]
fn a_burst_of_datagrams_arrives_whole_and_in_order_at_each_peer() {
    let client = udp_client();
    let other = udp_client();
    let other_addr = other.local_addr().unwrap();
    let server = TestServer::start(local_config(), move || {
        (Spray { other: other_addr }, LengthCodec::new(1024))
    });
    client.send_to(b"go", server.udp()).unwrap();
    let mut buf = vec![0u8; 2048];
    for (index, (to_other, size)) in spray_plan().into_iter().enumerate() {
        let socket = if to_other { &other } else { &client };
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(from, server.udp());
        assert_eq!(n, size, "datagram {index}");
        assert_eq!(
            &buf[..n],
            &spray_datagram(index, size)[..],
            "datagram {index}"
        );
    }
    let stats = server.stop();
    assert_eq!(stats.datagrams_out, spray_plan().len() as u64);
    assert_eq!(stats.datagrams_dropped, 0);
}
