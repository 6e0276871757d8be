//! The way into a running reactor from other threads, and the loop's start and stop:
//! jobs posted through a [`Handle`] run on the loop in order; a full inbox fails the
//! post at once; a stopped reactor refuses posts; `on_start` and `on_stop` run once
//! each (a goodbye sent from `on_stop` arrives before EOF); `run` gives the service
//! back; `stop_now` does not wait for queued output, a graceful shutdown does (within
//! the grace period).

mod common;

use std::io::Read;
use std::sync::mpsc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use common::*;
use switchboard::{CloseReason, Config, ConnId, Context, LengthCodec, Origin, PostError, Service};

/// Welcomes connections, says goodbye from on_stop, and records what ran.
#[derive(Debug, Default)]
struct Desk {
    starts: u32,
    stops: u32,
    /// The loop's thread, as on_start saw it.
    loop_thread: Option<ThreadId>,
    conns: Vec<ConnId>,
    /// Jobs run: (poster, sequence number).
    ran: Vec<(usize, usize)>,
}

impl Service for Desk {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_start(&mut self, _: &mut Context<'_, Self>) {
        self.starts += 1;
        self.loop_thread = Some(std::thread::current().id());
    }

    fn on_connect(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), _: Origin) {
        self.conns.push(conn);
        ctx.send(conn, b"welcome").unwrap();
    }

    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
        match payload {
            b"stop" => ctx.shutdown(),
            // Far more than the socket buffers hold: most of it stays queued.
            b"bulk" => ctx.send(conn, &vec![b'b'; 16 << 20]).unwrap(),
            _ => {}
        }
    }

    fn on_close(&mut self, _: &mut Context<'_, Self>, conn: ConnId, _: (), _: CloseReason) {
        self.conns.retain(|&c| c != conn);
    }

    fn on_stop(&mut self, ctx: &mut Context<'_, Self>) {
        self.stops += 1;
        for &conn in &self.conns {
            ctx.send(conn, b"goodbye").unwrap();
        }
    }
}

fn codec() -> LengthCodec {
    LengthCodec::new(32 << 20)
}

/// Connects and reads the welcome, so the server has registered the connection.
#[track_caller]
fn welcomed(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let mut client = connect(addr);
    assert_eq!(read_frame(&mut client).unwrap(), b"welcome");
    client
}

#[test]
fn jobs_posted_from_other_threads_run_on_the_loop_in_order() {
    let server = TestServer::start_returning(local_config(), || (Desk::default(), codec()));
    let mut client = welcomed(server.tcp());
    let posters: Vec<_> = (0..4)
        .map(|poster| {
            let handle = server.handle();
            std::thread::spawn(move || {
                for seq in 0..200 {
                    let job = move |desk: &mut Desk, ctx: &mut Context<'_, Desk>| {
                        assert_eq!(desk.loop_thread, Some(std::thread::current().id()));
                        desk.ran.push((poster, seq));
                        if seq == 199 {
                            let text = format!("poster {poster} done");
                            ctx.send(desk.conns[0], text.as_bytes()).unwrap();
                        }
                    };
                    // The inbox holds 1024: these 800 fit even if the loop lags.
                    handle.post(job).unwrap();
                }
            })
        })
        .collect();
    for poster in posters {
        poster.join().unwrap();
    }
    // The jobs' sends reach a real socket.
    let mut done: Vec<String> = (0..4)
        .map(|_| String::from_utf8(read_frame(&mut client).unwrap()).unwrap())
        .collect();
    done.sort();
    assert_eq!(
        done,
        [
            "poster 0 done",
            "poster 1 done",
            "poster 2 done",
            "poster 3 done"
        ]
    );
    drop(client);
    let desk = server.stop().service;
    assert_eq!(desk.ran.len(), 800);
    for poster in 0..4 {
        let seqs: Vec<usize> = desk
            .ran
            .iter()
            .filter(|(p, _)| *p == poster)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(
            seqs,
            (0..200).collect::<Vec<_>>(),
            "poster {poster}'s order"
        );
    }
}

#[test]
fn a_full_inbox_fails_the_post_at_once_and_never_blocks() {
    let mut config = local_config();
    config.inbox_capacity = 4;
    let server = TestServer::start_returning(config, || (Desk::default(), codec()));
    let handle = server.handle();
    // A job that holds the loop until the test lets it go.
    let (started_tx, started) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    handle
        .post(move |desk, _| {
            started_tx.send(()).unwrap();
            released.recv_timeout(IO_TIMEOUT).unwrap();
            desk.ran.push((0, 0));
        })
        .unwrap();
    started.recv_timeout(IO_TIMEOUT).unwrap();

    let (ran_tx, ran) = mpsc::channel();
    for seq in 1..=4 {
        let ran_tx = ran_tx.clone();
        let job = move |desk: &mut Desk, _: &mut Context<'_, Desk>| {
            desk.ran.push((0, seq));
            ran_tx.send(seq).unwrap();
        };
        assert_eq!(handle.post(job), Ok(()), "job {seq} fits");
    }
    let before = Instant::now();
    assert_eq!(handle.post(|_, _| {}), Err(PostError::Full));
    assert!(
        before.elapsed() < Duration::from_secs(1),
        "a full inbox answered at once"
    );

    release.send(()).unwrap();
    let order: Vec<usize> = (0..4)
        .map(|_| ran.recv_timeout(IO_TIMEOUT).unwrap())
        .collect();
    assert_eq!(order, [1, 2, 3, 4]);
    // Room again.
    let ran_tx = ran_tx.clone();
    handle
        .post(move |desk, _| {
            desk.ran.push((0, 5));
            ran_tx.send(5).unwrap();
        })
        .unwrap();
    assert_eq!(ran.recv_timeout(IO_TIMEOUT).unwrap(), 5);
    let desk = server.stop().service;
    assert_eq!(desk.ran, [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 5)]);
}

#[test]
fn posting_to_a_stopped_reactor_fails() {
    let server = TestServer::start_returning(local_config(), || (Desk::default(), codec()));
    let handle = server.handle();
    assert_eq!(handle.post(|_, _| {}), Ok(()));
    let stopped = server.stop();
    assert!(!stopped.forced);
    assert_eq!(handle.post(|_, _| {}), Err(PostError::Stopped));
}

#[test]
fn on_start_and_on_stop_run_once_and_the_goodbye_arrives_before_eof() {
    let server = TestServer::start_returning(local_config(), || (Desk::default(), codec()));
    let addr = server.tcp();
    let mut first = welcomed(addr);
    let mut second = welcomed(addr);
    // Two requests to stop: from the service (ctx.shutdown) and from outside.
    write_frame(&mut first, b"stop").unwrap();
    server.handle().shutdown();
    for client in [&mut first, &mut second] {
        assert_eq!(read_frame(client).unwrap(), b"goodbye");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "EOF right after the goodbye");
    }
    // No longer accepting.
    assert!(
        wait_until(IO_TIMEOUT, || std::net::TcpStream::connect(addr).is_err()),
        "the listener closed"
    );
    drop((first, second));
    let stopped = server.join(IO_TIMEOUT);
    assert!(!stopped.forced);
    assert_eq!((stopped.service.starts, stopped.service.stops), (1, 1));
    assert!(
        stopped.service.conns.is_empty(),
        "the service saw every close"
    );
    assert_eq!(stopped.stats.accepted, 2);
    assert_eq!(stopped.stats.closed[CloseReason::Shutdown.index()], 2);
}

#[test]
fn stop_now_returns_with_forced_while_output_is_still_queued() {
    let mut config = local_config();
    config.shutdown_grace = Duration::from_secs(600);
    let server = TestServer::start_returning(config, || (Desk::default(), codec()));
    let mut hog = welcomed(server.tcp());
    write_frame(&mut hog, b"bulk").unwrap();
    // Part of the reply has arrived: the rest is queued in the server.
    let mut header = [0u8; 4];
    hog.read_exact(&mut header).unwrap();
    assert_eq!(announced(header), 16 << 20);
    server.handle().stop_now();
    // Far within the grace period of ten minutes.
    let stopped = server.join(IO_TIMEOUT);
    assert!(stopped.forced);
    assert_eq!((stopped.service.starts, stopped.service.stops), (1, 1));
    assert_eq!(stopped.stats.closed[CloseReason::Shutdown.index()], 1);
    let mut received = Vec::new();
    let _ = hog.read_to_end(&mut received); // EOF or reset
    assert!(
        received.len() < 16 << 20,
        "the queued rest was dropped ({} bytes arrived)",
        received.len()
    );
}

/// A client that never reads its 16 MiB reply, on a reactor with a one-minute grace
/// period, driven on a virtual clock; returns the reactor once shutdown has begun.
fn shutting_down_with_output_queued() -> (Driven<Desk>, std::net::TcpStream) {
    let mut config = local_config();
    config.shutdown_grace = Duration::from_secs(60);
    // The hog's stalled output is left to the grace period, not to the send timeout.
    config.send_timeout = Some(Duration::from_secs(600));
    let mut server = Driven::start(config, Desk::default(), codec());
    let mut hog = connect(server.tcp());
    server.turn_until("accepted", |r| r.stats().accepted == 1);
    write_frame(&mut hog, b"bulk").unwrap();
    server.turn_until("the reply queued", |r| r.stats().frames_in == 1);
    server.reactor.handle().shutdown();
    server.turn_until("on_stop", |r| r.service().stops == 1);
    (server, hog)
}

#[test]
fn a_graceful_shutdown_waits_for_queued_output_until_the_grace_period_ends() {
    let (mut server, _hog) = shutting_down_with_output_queued();
    let t0 = server.now;
    server.advance_to(t0 + Duration::from_millis(59_999));
    assert!(!server.reactor.is_finished(), "the output is still queued");
    server.advance_to(t0 + Duration::from_secs(60));
    assert!(server.reactor.is_finished(), "the grace period is over");
    let stopped = server.reactor.finish();
    assert!(!stopped.forced);
    assert_eq!((stopped.service.starts, stopped.service.stops), (1, 1));
    assert_eq!(stopped.stats.closed[CloseReason::Shutdown.index()], 1);
}

#[test]
fn stop_now_ends_a_graceful_shutdown_that_is_waiting() {
    let (mut server, _hog) = shutting_down_with_output_queued();
    server.advance(Duration::from_secs(1));
    assert!(!server.reactor.is_finished());
    server.reactor.handle().stop_now();
    server.turn_until("finished", |r| r.is_finished());
    let stopped = server.reactor.finish();
    assert!(stopped.forced);
    assert_eq!(stopped.service.stops, 1, "on_stop once, though asked twice");
}

#[test]
fn a_reactor_with_no_endpoints_runs_and_stops_from_its_handle() {
    // A client-style reactor: nothing bound, stopped by a job it was posted.
    let reactor = switchboard::Reactor::bind(Config::default(), Desk::default(), codec()).unwrap();
    let handle = reactor.handle();
    handle
        .post(|desk, ctx| {
            desk.ran.push((9, 9));
            ctx.shutdown();
        })
        .unwrap();
    let stopped = reactor.run().unwrap();
    assert_eq!(stopped.service.ran, [(9, 9)]);
    assert_eq!((stopped.service.starts, stopped.service.stops), (1, 1));
    assert_eq!(handle.post(|_, _| {}), Err(PostError::Stopped));
}
