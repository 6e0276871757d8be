//! A pool of loops over real sockets: connections and datagrams spread over every
//! loop (by SO_REUSEPORT, and dealt by loop 0), a graceful shutdown that drains every
//! loop, a bind failure reported, and a panic in one loop that stops them all.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use switchboard::services::Echo;
use switchboard::{
    BoundAddr, ConnId, Context, Error, LengthCodec, LoopInfo, Pool, Running, Service, Spread, Stats,
};

type EchoPool = Running<Echo, Stats>;

fn echo_pool(threads: usize, spread: Spread) -> EchoPool {
    Pool::new(local_config(), threads)
        .spread(spread)
        .start(
            LengthCodec::new(1 << 16),
            |_: LoopInfo<Echo>| Echo::default(),
            |stopped| stopped.stats,
        )
        .expect("the pool starts")
}

fn address(pool_endpoints: &[BoundAddr], udp: bool) -> SocketAddr {
    pool_endpoints
        .iter()
        .find_map(|bound| match bound {
            BoundAddr::Tcp(addr) if !udp => Some(*addr),
            BoundAddr::Udp(addr) if udp => Some(*addr),
            _ => None,
        })
        .expect("an endpoint of that kind")
}

/// Opens `count` connections, each echoing one frame; returns them still open.
fn echo_clients(addr: SocketAddr, count: usize) -> Vec<std::net::TcpStream> {
    (0..count)
        .map(|i| {
            let mut client = connect(addr);
            let payload = format!("client {i}");
            write_frame(&mut client, payload.as_bytes()).unwrap();
            assert_eq!(read_frame(&mut client).unwrap(), payload.as_bytes());
            client
        })
        .collect()
}

/// Shuts the pool down and returns each loop's counters, within a time limit.
fn stop(pool: EchoPool) -> Vec<Stats> {
    pool.shutdown();
    wait_bounded(pool).expect("a graceful end")
}

fn wait_bounded<S: Service + 'static, R: Send + 'static>(
    pool: Running<S, R>,
) -> Result<Vec<R>, Error>
where
    Running<S, R>: Send,
{
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(pool.wait());
    });
    done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the pool ends within 20 s")
}

#[test]
fn reuseport_spreads_connections_and_datagrams_over_every_loop() {
    let pool = echo_pool(2, Spread::ReusePort);
    let tcp = address(pool.endpoints(), false);
    let clients = echo_clients(tcp, 40);
    // Datagrams from many source ports: the kernel hashes them over both sockets.
    for i in 0..40 {
        let socket = udp_client();
        let payload = format!("datagram {i}");
        socket
            .send_to(payload.as_bytes(), address(pool.endpoints(), true))
            .unwrap();
        let mut reply = [0u8; 64];
        let (len, _) = socket.recv_from(&mut reply).unwrap();
        assert_eq!(&reply[..len], payload.as_bytes());
    }
    drop(clients);
    let loops = stop(pool);
    assert_eq!(loops.len(), 2);
    let accepted: Vec<u64> = loops.iter().map(|s| s.accepted).collect();
    assert_eq!(accepted.iter().sum::<u64>(), 40, "{accepted:?}");
    // 40 connections all hashed to one of two loops: a chance of 2 in 2^40.
    assert!(
        accepted.iter().all(|&n| n > 0),
        "every loop served: {accepted:?}"
    );
    let datagrams: Vec<u64> = loops.iter().map(|s| s.datagrams_in).collect();
    assert_eq!(datagrams.iter().sum::<u64>(), 40);
    assert!(datagrams.iter().all(|&n| n > 0), "{datagrams:?}");
}

#[test]
fn handoff_deals_connections_evenly() {
    let pool = echo_pool(3, Spread::Handoff);
    let clients = echo_clients(address(pool.endpoints(), false), 9);
    drop(clients);
    let loops = stop(pool);
    let accepted: Vec<u64> = loops.iter().map(|s| s.accepted).collect();
    assert_eq!(accepted, vec![3, 3, 3], "round robin over three loops");
    assert_eq!(loops[0].handed_over, 6);
    assert_eq!(loops[0].handover_full, 0);
}

#[test]
fn shutdown_drains_every_loop() {
    let pool = echo_pool(2, Spread::Handoff);
    let tcp = address(pool.endpoints(), false);
    let mut clients = echo_clients(tcp, 4);
    // A frame in flight on every connection when the shutdown begins: each is answered
    // before its loop closes the connection.
    for (i, client) in clients.iter_mut().enumerate() {
        write_frame(client, format!("last {i}").as_bytes()).unwrap();
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_frame(client).unwrap(), format!("last {i}").as_bytes());
    }
    pool.shutdown();
    for client in &mut clients {
        assert!(is_closed(client), "every loop closes its connections");
    }
    let loops = wait_bounded(pool).expect("a graceful end");
    assert!(loops.iter().all(|s| s.accepted == 2), "both loops had two");
}

#[test]
fn a_port_in_use_is_reported_and_nothing_is_left_running() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = switchboard::Config::default();
    config.tcp.push(taken.local_addr().unwrap());
    let started = Pool::new(config, 2).start(
        LengthCodec::new(64),
        |_: LoopInfo<Echo>| Echo::default(),
        |stopped| stopped.stats,
    );
    match started {
        Err(Error::Bind { endpoint, .. }) => assert!(endpoint.starts_with("tcp ")),
        other => panic!("expected a bind error, got {other:?}"),
    }
}

/// An echo that panics on the frame `boom`.
#[derive(Default)]
struct Fragile;

impl Service for Fragile {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
        assert!(payload != b"boom", "told to panic");
        let _ = ctx.send(conn, payload);
    }
}

#[test]
fn a_panic_in_one_loop_stops_every_loop_with_a_clear_error() {
    let pool = Pool::new(local_config(), 2)
        .spread(Spread::Handoff)
        .start(
            LengthCodec::new(64),
            |_: LoopInfo<Fragile>| Fragile,
            |stopped| stopped.stats,
        )
        .unwrap();
    let tcp = address(pool.endpoints(), false);
    // Dealt round robin: the first to loop 0, the second to loop 1.
    let mut on_loop_0 = connect(tcp);
    write_frame(&mut on_loop_0, b"hi").unwrap();
    assert_eq!(read_frame(&mut on_loop_0).unwrap(), b"hi");
    let mut on_loop_1 = connect(tcp);
    write_frame(&mut on_loop_1, b"boom").unwrap();
    match wait_bounded(pool) {
        Err(Error::LoopPanicked { index, message }) => {
            assert_eq!(index, 1);
            assert!(message.contains("told to panic"), "{message}");
        }
        other => panic!("expected the panic, got {:?}", other.map(|v| v.len())),
    }
    assert!(
        is_closed(&mut on_loop_0),
        "the healthy loop was stopped too"
    );
}
