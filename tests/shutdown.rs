//! What a graceful shutdown does with the requests its connections have already sent:
//! every one that is in the server's sockets when the shutdown begins is answered
//! before the connection closes, whatever the order of the loop's events; a partial
//! frame is not; an idle connection just closes.
//!
//! Most tests drive the reactor turn by turn (`Driven`), so the order of the events is
//! the test's to choose: the shutdown's waker comes ahead of the readiness of the
//! connections it must still read. The last runs the loop on its own thread, as a
//! program does.

mod common;

use std::net::TcpStream;

use common::*;
use switchboard::services::Echo;
use switchboard::{CloseReason, LengthCodec, Stats};

/// Clients in each test.
const CLIENTS: usize = 8;

fn start() -> Driven<Echo> {
    let mut config = local_config();
    config.udp.clear();
    Driven::start(config, Echo::default(), LengthCodec::new(1 << 20))
}

fn request(i: usize) -> Vec<u8> {
    format!("request {i}").into_bytes()
}

/// Turns a reactor that is shutting down until every client has its answer or an
/// end (the data is on loopback by the end of the turn that wrote it).
#[track_caller]
fn turn_until_answered_or_closed(server: &mut Driven<Echo>, clients: &[TcpStream]) {
    server.turn_until("every client has its answer or an end", |_| {
        clients
            .iter()
            .all(|c| available_now(c) > 0 || is_closed_now(c))
    });
}

/// Each client reads its answer, then EOF (a clean close: no reset). Then the clients
/// close, the reactor finishes, and its counters come back.
#[track_caller]
fn assert_answered_then_closed(mut server: Driven<Echo>, mut clients: Vec<TcpStream>) -> Stats {
    turn_until_answered_or_closed(&mut server, &clients);
    for (i, client) in clients.iter_mut().enumerate() {
        match read_frame(client) {
            Ok(answer) => assert_eq!(answer, request(i), "client {i}"),
            Err(e) => panic!("client {i}: no answer to a request sent before the shutdown: {e}"),
        }
        assert!(is_closed(client), "client {i}: EOF after the answer");
    }
    drop(clients);
    server.turn_until("finished", |r| r.is_finished());
    let stats = server.reactor.finish().stats;
    assert_eq!(stats.closed[CloseReason::Shutdown.index()], CLIENTS as u64);
    stats
}

/// The connections are accepted in the very turn that begins the shutdown: the
/// listener's event comes first, then the waker's. Their requests are in their sockets
/// already, and their readiness is reported only after the waker, in the next turn.
#[test]
fn requests_of_connections_accepted_as_the_shutdown_begins_are_answered() {
    let server = start();
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(server.tcp())).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        write_frame(client, &request(i)).unwrap();
    }
    server.reactor.handle().shutdown();
    let stats = assert_answered_then_closed(server, clients);
    assert_eq!(stats.accepted, CLIENTS as u64);
    let clients = CLIENTS as u64;
    assert_eq!((stats.frames_in, stats.frames_out), (clients, clients));
}

/// The connections were accepted long before; their requests arrive after the
/// shutdown was asked for and before the loop turns: the waker is reported ahead of
/// them.
#[test]
fn requests_sent_as_the_shutdown_is_asked_for_are_answered() {
    let mut server = start();
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(server.tcp())).collect();
    server.turn_until("accepted", |r| r.stats().accepted == CLIENTS as u64);
    server.reactor.handle().shutdown();
    for (i, client) in clients.iter_mut().enumerate() {
        write_frame(client, &request(i)).unwrap();
    }
    assert_answered_then_closed(server, clients);
}

/// The complete frames in front of a partial one are answered; the partial one is not
/// (it is no request yet), and the connection still closes cleanly.
#[test]
fn a_partial_frame_is_not_answered_and_the_frames_before_it_are() {
    let mut server = start();
    let mut client = connect(server.tcp());
    server.turn_until("accepted", |r| r.stats().accepted == 1);
    let mut bytes = frame(b"first");
    bytes.extend_from_slice(&frame(b"second"));
    let third = frame(b"third, cut short");
    bytes.extend_from_slice(&third[..third.len() - 3]);
    server.reactor.handle().shutdown();
    std::io::Write::write_all(&mut client, &bytes).unwrap();
    turn_until_answered_or_closed(&mut server, std::slice::from_ref(&client));
    assert_eq!(read_frame(&mut client).unwrap(), b"first");
    assert_eq!(read_frame(&mut client).unwrap(), b"second");
    assert!(is_closed(&mut client), "EOF after the complete frames");
    drop(client);
    server.turn_until("finished", |r| r.is_finished());
    assert_eq!(server.reactor.finish().stats.frames_in, 2);
}

/// A connection that sent nothing closes at once, with nothing written to it.
#[test]
fn idle_connections_close_with_nothing_written() {
    let mut server = start();
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(server.tcp())).collect();
    server.turn_until("accepted", |r| r.stats().accepted == CLIENTS as u64);
    server.reactor.handle().shutdown();
    turn_until_answered_or_closed(&mut server, &clients);
    for client in &mut clients {
        assert!(is_closed(client), "EOF and no data");
    }
    drop(clients);
    server.turn_until("finished", |r| r.is_finished());
    assert_eq!(server.reactor.finish().stats.bytes_out, 0);
}

/// The loop on its own thread, stopped from another through its `Handle`, as a program
/// does: clients whose connections are up send a request and the shutdown follows at
/// once; every one is answered, then closed.
#[test]
fn a_running_loop_answers_requests_sent_just_before_its_shutdown() {
    const RUNNING_CLIENTS: usize = 64;
    let mut config = local_config();
    config.udp.clear();
    let server = TestServer::start(config, || (Echo::default(), LengthCodec::new(1 << 20)));
    let mut clients: Vec<TcpStream> = (0..RUNNING_CLIENTS)
        .map(|i| {
            // A round trip first: the connection is accepted (a connection still in the
            // backlog of a listener that closes is reset by the kernel).
            let mut client = connect(server.tcp());
            write_frame(&mut client, b"hello").unwrap();
            assert_eq!(read_frame(&mut client).unwrap(), b"hello", "client {i}");
            client
        })
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        write_frame(client, &request(i)).unwrap();
    }
    let stats = server.stop();
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_frame(client).unwrap(), request(i), "client {i}");
        assert!(is_closed(client), "client {i}: EOF after the answer");
    }
    let expected = 2 * RUNNING_CLIENTS as u64;
    assert_eq!((stats.frames_in, stats.frames_out), (expected, expected));
}
