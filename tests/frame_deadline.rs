//! The frame deadline, end to end: a peer that announces a large frame and then
//! trickles it byte by byte is closed when the deadline passes, although it is never
//! idle long enough for the idle timeout; peers that finish their frames in time are
//! not affected.

mod common;

use std::io::{self, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{connect, frame, local_config, read_frame, write_frame, TestServer};
use switchboard::{services::Echo, CloseReason, LengthCodec};

/// The deadline these tests run with.
const DEADLINE: Duration = Duration::from_secs(1);
/// How often the slow peers send a byte: well inside the idle timeout.
const TRICKLE: Duration = Duration::from_millis(100);

fn start() -> TestServer {
    let mut config = local_config();
    config.frame_timeout = Some(DEADLINE);
    config.idle_timeout = Some(Duration::from_secs(60));
    TestServer::start(config, || (Echo, LengthCodec::new(1 << 20)))
}

/// Sends one byte, waits [`TRICKLE`], and tells whether the server has closed the
/// connection by then (without consuming anything it sent).
fn trickle_one(stream: &mut TcpStream, byte: u8) -> bool {
    if stream.write_all(&[byte]).is_err() {
        return true;
    }
    std::thread::sleep(TRICKLE);
    stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let closed = match stream.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    };
    stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    closed
}

#[test]
fn a_trickling_peer_is_closed_at_the_deadline_and_others_are_served() {
    let server = start();
    let mut trickler = connect(server.tcp());
    let mut normal = connect(server.tcp());
    // Announce 1000 bytes, then send them one every 100 ms: 100 s for the frame.
    trickler.write_all(&1000u32.to_be_bytes()).unwrap();
    let started = Instant::now();
    let mut closed_after = None;
    while started.elapsed() < 3 * DEADLINE {
        if trickle_one(&mut trickler, b'x') {
            closed_after = Some(started.elapsed());
            break;
        }
        // The other peer's frames go on being echoed meanwhile.
        write_frame(&mut normal, b"still here").unwrap();
        assert_eq!(read_frame(&mut normal).unwrap(), b"still here");
    }
    let closed_after = closed_after.expect("the trickling peer was closed");
    assert!(
        closed_after >= DEADLINE - TRICKLE,
        "closed early, after {closed_after:?}"
    );
    assert!(
        closed_after < DEADLINE * 2,
        "closed late, after {closed_after:?}"
    );
    // And after it.
    normal.write_all(&frame(b"after")).unwrap();
    assert_eq!(read_frame(&mut normal).unwrap(), b"after");
    let stats = server.stop();
    assert_eq!(stats.closed[CloseReason::FrameTimeout.index()], 1);
    assert_eq!(stats.closed[CloseReason::IdleTimeout.index()], 0);
}

#[test]
fn the_deadline_is_per_frame_not_per_connection() {
    let server = start();
    let mut slow = connect(server.tcp());
    // Two 7-byte frames at one byte per 100 ms: each completes in 0.7 s, within the
    // deadline, though together they take longer than it.
    let wire = [frame(b"abc"), frame(b"def")].concat();
    let started = Instant::now();
    for &byte in &wire {
        assert!(
            !trickle_one(&mut slow, byte),
            "closed after {:?}",
            started.elapsed()
        );
    }
    assert!(started.elapsed() > DEADLINE);
    assert_eq!(read_frame(&mut slow).unwrap(), b"abc");
    assert_eq!(read_frame(&mut slow).unwrap(), b"def");
    let stats = server.stop();
    assert_eq!(stats.closed[CloseReason::FrameTimeout.index()], 0);
}
