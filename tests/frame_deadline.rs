//! The frame deadline, end to end on a virtual clock: a peer that announces a large
//! frame and then trickles it byte by byte is closed when the deadline passes, although
//! it is never idle long enough for the idle timeout; peers that finish their frames in
//! time are not affected. The reactor runs on the test's thread and the test moves its
//! clock, so nothing sleeps.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{connect, frame, header, local_config, read_frame, write_frame, Driven};
use switchboard::{services::Echo, CloseReason, LengthCodec};

/// The deadline these tests run with.
const DEADLINE: Duration = Duration::from_secs(1);
/// How often the slow peers send a byte: well inside the idle timeout.
const TRICKLE: Duration = Duration::from_millis(100);

fn start() -> Driven<Echo> {
    let mut config = local_config();
    config.frame_timeout = Some(DEADLINE);
    config.idle_timeout = Some(Duration::from_secs(60));
    Driven::start(config, Echo::default(), LengthCodec::new(1 << 20))
}

/// Whether the server has closed `stream` (EOF or reset), without waiting: on loopback
/// a close made during the last turn has reached the socket by now.
fn is_closed_now(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let closed = match stream.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// Sends one byte, lets the server take it in, and moves the clock on by [`TRICKLE`].
fn trickle_one(server: &mut Driven<Echo>, stream: &mut TcpStream, byte: u8) {
    stream.write_all(&[byte]).unwrap();
    let before = server.reactor.stats().bytes_in;
    server.turn_until("the byte arrived", |r| r.stats().bytes_in > before);
    server.advance(TRICKLE);
}

#[test]
fn a_trickling_peer_is_closed_at_the_deadline_and_others_are_served() {
    let mut server = start();
    let mut trickler = connect(server.tcp());
    let mut normal = connect(server.tcp());
    server.turn_until("both accepted", |r| r.stats().accepted == 2);
    // Announce 1000 bytes, then send them one every 100 ms: 100 s for the frame.
    let announcement = header(1000);
    trickler.write_all(&announcement).unwrap();
    server.turn_until("the header arrived", |r| {
        r.stats().bytes_in == announcement.len() as u64
    });
    let mut elapsed = Duration::ZERO;
    while !is_closed_now(&mut trickler) {
        assert!(elapsed < DEADLINE, "still open after {elapsed:?}");
        trickle_one(&mut server, &mut trickler, b'x');
        elapsed += TRICKLE;
        // The other peer's frames go on being echoed meanwhile.
        let echoed = server.reactor.stats().frames_out;
        write_frame(&mut normal, b"still here").unwrap();
        server.turn_until("echoed", |r| r.stats().frames_out > echoed);
        assert_eq!(read_frame(&mut normal).unwrap(), b"still here");
    }
    // Closed exactly when the frame's second was up, not a trickle earlier.
    assert_eq!(elapsed, DEADLINE);
    // And the other peer is served after it.
    let echoed = server.reactor.stats().frames_out;
    normal.write_all(&frame(b"after")).unwrap();
    server.turn_until("echoed", |r| r.stats().frames_out > echoed);
    assert_eq!(read_frame(&mut normal).unwrap(), b"after");
    let mut rest = Vec::new();
    let _ = trickler.read_to_end(&mut rest);
    let stats = server.reactor.stats();
    assert_eq!(stats.closed[CloseReason::FrameTimeout.index()], 1);
    assert_eq!(stats.closed[CloseReason::IdleTimeout.index()], 0);
}

#[test]
fn the_deadline_is_per_frame_not_per_connection() {
    let mut server = start();
    let mut slow = connect(server.tcp());
    server.turn_until("accepted", |r| r.stats().accepted == 1);
    // Two 7-byte frames at one byte per 100 ms: each completes in 0.7 s, within the
    // deadline, though together they take 1.4 s, longer than it.
    let wire = [frame(b"abc"), frame(b"def")].concat();
    for &byte in &wire {
        trickle_one(&mut server, &mut slow, byte);
        assert!(!is_closed_now(&mut slow), "closed");
    }
    assert_eq!(read_frame(&mut slow).unwrap(), b"abc");
    assert_eq!(read_frame(&mut slow).unwrap(), b"def");
    assert_eq!(
        server.reactor.stats().closed[CloseReason::FrameTimeout.index()],
        0
    );
}
