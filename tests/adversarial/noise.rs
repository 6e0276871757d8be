//! Peers that are loud or make no sense: garbage streams, a pipeliner flooding the
//! loop beside a hundred ping clients, and a UDP flood beside TCP.

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    closed_within, connect_from, frame, one_at_a_time, percentile, ping_clients, report,
    round_trip, Rng, Scale, Server,
};

/// The p99 round trip ping clients must keep beside a flood: generous for a loaded
/// 2-core machine, far below what a starved loop gives (seconds).
const P99_BOUND: Duration = Duration::from_millis(50);

/// Streams of random bytes, some after a valid frame: every one announces a frame
/// over `--max-frame`, so each is closed as a protocol error, and the server serves
/// the next client and returns to its baseline descriptors.
#[test]
fn garbage_streams_are_closed_as_protocol_errors() {
    let _serial = one_at_a_time();
    let peers = Scale::get().pick(300, 3_000);
    let server = Server::start(&["--max-frame", "65536"]);
    let fds = server.fds();
    let threads = 4;
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let addr = server.addr;
            thread::spawn(move || {
                let mut rng = Rng::new(7 + t as u64);
                let mut slowest = Duration::ZERO;
                for i in (t..peers).step_by(threads) {
                    let mut stream = connect_from(i, addr).unwrap();
                    if i % 2 == 0 {
                        let (reply, _) = round_trip(&mut stream, b"valid first").unwrap();
                        assert_eq!(reply, b"valid first");
                    }
                    let len = 1 + rng.below(8192) as usize;
                    let mut garbage = rng.bytes(len);
                    // A first byte over 0 announces at least 16 MiB: over the limit.
                    garbage[0] |= 1;
                    let sent = Instant::now();
                    // The server may reset before it all went in.
                    let _ = stream.write_all(&garbage);
                    assert!(
                        closed_within(&mut stream, Duration::from_secs(5)),
                        "garbage peer {i} was never closed"
                    );
                    slowest = slowest.max(sent.elapsed());
                }
                slowest
            })
        })
        .collect();
    let slowest = workers
        .into_iter()
        .map(|w| w.join().expect("garbage peers"))
        .max()
        .unwrap();
    let mut probe = connect_from(0, server.addr).unwrap();
    let (reply, _) = round_trip(&mut probe, b"sane").expect("served after the garbage");
    assert_eq!(reply, b"sane");
    drop(probe);
    server.wait_fds_at_most(fds + 2, Duration::from_secs(10));
    let summary = server.stop();
    report(
        "garbage streams",
        format!(
            "{peers} garbage peers in {:?}: slowest close {slowest:?}; protocol {}",
            start.elapsed(),
            summary.closed("protocol")
        ),
    );
    assert_eq!(summary.closed("protocol"), peers as u64, "{}", summary.line);
}

/// One client pipelines 64 KiB frames as fast as it can (reading its echoes on
/// another thread) while 100 clients ping: their p99 stays under 50 ms.
#[test]
fn flooding_pipeliner_does_not_starve_pingers() {
    let _serial = one_at_a_time();
    let window = Scale::get().pick(Duration::from_secs(3), Duration::from_secs(20));
    let server = Server::start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let flood = connect_from(7, server.addr).unwrap();
    let mut flood_reader = flood.try_clone().unwrap();
    let writer = {
        let (stop, mut flood) = (stop.clone(), flood);
        thread::spawn(move || {
            let batch: Vec<u8> = (0..8).flat_map(|_| frame(&[0xf1; 64 * 1024])).collect();
            while !stop.load(Ordering::Relaxed) {
                flood.write_all(&batch).expect("flood write");
            }
            flood
        })
    };
    let reader = {
        let (stop, echoed) = (stop.clone(), echoed.clone());
        thread::spawn(move || {
            let mut sink = vec![0u8; 256 * 1024];
            flood_reader
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = flood_reader.read(&mut sink) {
                    echoed.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let pings = ping_clients(
        server.addr,
        100,
        10,
        Duration::from_millis(20),
        stop.clone(),
    );
    let start = Instant::now();
    wait_for_window(window);
    stop.store(true, Ordering::Relaxed);
    let mut rtts = pings.join().expect("ping clients");
    let flood = writer.join().expect("flood writer");
    drop(flood);
    reader.join().unwrap();
    let mb = echoed.load(Ordering::Relaxed) as f64 / 1e6;
    let (p50, p99) = (percentile(&mut rtts, 50.0), percentile(&mut rtts, 99.0));
    report(
        "flooding pipeliner",
        format!(
            "flood echoed {:.0} MB/s; {} pings from 100 clients: p50 {p50:?}, p99 {p99:?}, max {:?}",
            mb / start.elapsed().as_secs_f64(),
            rtts.len(),
            percentile(&mut rtts, 100.0)
        ),
    );
    assert!(mb > 10.0, "the flood moved only {mb:.1} MB");
    assert!(p99 < P99_BOUND, "ping p99 {p99:?} beside the flood");
    server.stop();
}

/// A UDP flood into the server's UDP port beside 20 TCP ping clients: TCP p99 stays
/// under 50 ms, every TCP echo is right, and the server's memory does not grow with
/// the flood (the flooder never reads its replies).
#[test]
fn udp_flood_beside_tcp() {
    let _serial = one_at_a_time();
    let window = Scale::get().pick(Duration::from_secs(3), Duration::from_secs(20));
    let server = Server::start(&[]);
    let rss = server.rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let (stop, addr) = (stop.clone(), server.addr);
        thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
            let datagram = [0xd6u8; 1024];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if socket.send_to(&datagram, addr).is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    };
    let pings = ping_clients(server.addr, 20, 4, Duration::from_millis(10), stop.clone());
    wait_for_window(window);
    let grown = server.rss_kib().saturating_sub(rss);
    stop.store(true, Ordering::Relaxed);
    let mut rtts = pings.join().expect("ping clients");
    let sent = flooder.join().unwrap();
    let summary = server.stop();
    let p99 = percentile(&mut rtts, 99.0);
    report(
        "udp flood",
        format!(
            "{sent} datagrams sent, {} received by the server; {} TCP pings p99 {p99:?}; RSS +{grown} KiB",
            summary.datagrams_in,
            rtts.len()
        ),
    );
    assert!(summary.datagrams_in > 10_000, "{}", summary.line);
    assert!(p99 < P99_BOUND, "TCP ping p99 {p99:?} beside the UDP flood");
    assert!(grown < 8 * 1024, "RSS grew {grown} KiB under the flood");
}

/// Lets a measuring window pass (the pingers and flooders work meanwhile).
fn wait_for_window(window: Duration) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        thread::sleep(Duration::from_millis(50));
    }
}
