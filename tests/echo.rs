//! End-to-end tests of the echo service on an in-process reactor: framing however the
//! bytes arrive, limits, misbehaving peers, UDP, timers and backpressure.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use switchboard::services::Echo;
use switchboard::{CloseReason, Config, LengthCodec, MAX_DATAGRAM};

const MAX_FRAME: usize = 1 << 20;

fn echo_server(config: Config) -> TestServer<Echo> {
    TestServer::start(config, || (Echo::default(), LengthCodec::new(MAX_FRAME)))
}

/// An echo reactor driven on the test's thread, on a virtual clock.
fn driven_echo(config: Config) -> Driven<Echo> {
    Driven::start(config, Echo::default(), LengthCodec::new(MAX_FRAME))
}

/// Connects a client to a driven reactor and turns until it is accepted.
#[track_caller]
fn driven_client<S: switchboard::Service>(server: &mut Driven<S>) -> TcpStream {
    let accepted = server.reactor.stats().accepted;
    let client = connect(server.tcp());
    server.turn_until("accepted", |r| r.stats().accepted > accepted);
    client
}

/// Writes `bytes` and turns until the driven reactor has read them all.
#[track_caller]
fn write_and_read_by<S: switchboard::Service>(
    server: &mut Driven<S>,
    client: &mut TcpStream,
    bytes: &[u8],
) {
    let target = server.reactor.stats().bytes_in + bytes.len() as u64;
    client.write_all(bytes).unwrap();
    server.turn_until("the bytes were read", |r| r.stats().bytes_in >= target);
}

#[test]
fn echoes_one_frame() {
    let server = echo_server(local_config());
    let mut client = connect(server.tcp());
    write_frame(&mut client, b"hello").unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), b"hello");
}

#[test]
fn frame_delivered_byte_by_byte_is_decoded_whole() {
    let mut server = driven_echo(local_config());
    let mut client = driven_client(&mut server);
    let wire = frame(b"one byte at a time");
    // Each byte is read by itself before the next is sent.
    for (i, &byte) in wire.iter().enumerate() {
        write_and_read_by(&mut server, &mut client, &[byte]);
        let complete = u64::from(i == wire.len() - 1);
        assert_eq!(server.reactor.stats().frames_in, complete);
    }
    assert_eq!(read_frame(&mut client).unwrap(), b"one byte at a time");
}

#[test]
fn thousand_frames_in_one_write_come_back_in_order() {
    let server = echo_server(local_config());
    let mut client = connect(server.tcp());
    let mut wire = Vec::new();
    for i in 0..1000u32 {
        wire.extend_from_slice(&frame(format!("frame {i}").as_bytes()));
    }
    client.write_all(&wire).unwrap();
    for i in 0..1000u32 {
        assert_eq!(
            read_frame(&mut client).unwrap(),
            format!("frame {i}").as_bytes()
        );
    }
}

#[test]
fn zero_length_frames_are_echoed() {
    let server = echo_server(local_config());
    let mut client = connect(server.tcp());
    client
        .write_all(&[frame(b""), frame(b"x"), frame(b"")].concat())
        .unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), b"");
    assert_eq!(read_frame(&mut client).unwrap(), b"x");
    assert_eq!(read_frame(&mut client).unwrap(), b"");
}

#[test]
fn frame_of_exactly_the_maximum_size_is_echoed() {
    let server = echo_server(local_config());
    let mut client = connect(server.tcp());
    let payload: Vec<u8> = (0..MAX_FRAME).map(|i| (i * 7 % 251) as u8).collect();
    let writer = {
        let mut client = client.try_clone().unwrap();
        let payload = payload.clone();
        std::thread::spawn(move || write_frame(&mut client, &payload))
    };
    assert_eq!(read_frame(&mut client).unwrap(), payload);
    writer.join().unwrap().unwrap();
}

/// Peak resident memory of this test process, from /proc (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn oversized_and_4gib_frames_close_only_that_connection_without_allocating() {
    let server = echo_server(local_config());
    let mut bystander = connect(server.tcp());
    write_frame(&mut bystander, b"before").unwrap();
    assert_eq!(read_frame(&mut bystander).unwrap(), b"before");

    let peak_before = peak_rss_kib();
    let mut oversize = connect(server.tcp());
    oversize.write_all(&header(MAX_FRAME as u32 + 1)).unwrap();
    assert!(
        is_closed(&mut oversize),
        "oversized frame must close the connection"
    );

    let mut huge = connect(server.tcp());
    let announcement = [&header(u32::MAX)[..], &[1, 2, 3]].concat();
    huge.write_all(&announcement).unwrap();
    assert!(
        is_closed(&mut huge),
        "a 4 GiB announcement must close the connection"
    );
    if let (Some(before), Some(after)) = (peak_before, peak_rss_kib()) {
        assert!(
            after - before < 64 * 1024,
            "peak RSS grew by {} KiB",
            after - before
        );
    }

    write_frame(&mut bystander, b"after").unwrap();
    assert_eq!(read_frame(&mut bystander).unwrap(), b"after");
    let stats = server.stop();
    assert_eq!(stats.protocol_errors, 2);
    assert_eq!(stats.closed[CloseReason::Protocol.index()], 2);
}

#[test]
fn hundreds_of_concurrent_clients_are_served() {
    let server = echo_server(local_config());
    let mut clients: Vec<TcpStream> = (0..300).map(|_| connect(server.tcp())).collect();
    for round in 0..3 {
        for (i, client) in clients.iter_mut().enumerate() {
            write_frame(client, format!("{i}/{round}").as_bytes()).unwrap();
        }
        for (i, client) in clients.iter_mut().enumerate() {
            assert_eq!(
                read_frame(client).unwrap(),
                format!("{i}/{round}").as_bytes()
            );
        }
    }
    drop(clients);
    let stats = server.stop();
    assert_eq!(stats.accepted, 300);
    assert_eq!(stats.frames_in, 900);
}

#[test]
fn peer_reset_mid_frame_closes_only_that_connection() {
    let mut server = driven_echo(local_config());
    let mut bystander = driven_client(&mut server);
    let mut victim = driven_client(&mut server);
    write_and_read_by(&mut server, &mut victim, &frame(b"complete"));
    assert_eq!(read_frame(&mut victim).unwrap(), b"complete");
    // The server holds this partial frame when the reset comes.
    let partial = [&header(100)[..], &[1, 2, 3]].concat();
    write_and_read_by(&mut server, &mut victim, &partial);
    // SO_LINGER 0: close() sends a RST instead of a FIN.
    socket2::SockRef::from(&victim)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(victim);
    let reset = CloseReason::Reset.index();
    server.turn_until("the reset", |r| r.stats().closed[reset] == 1);

    write_and_read_by(&mut server, &mut bystander, &frame(b"still here"));
    assert_eq!(read_frame(&mut bystander).unwrap(), b"still here");
    drop(bystander);
    server.turn_until("both closed", |r| r.stats().active == 0);
    let stats = server.reactor.stats();
    assert_eq!(stats.closed[reset], 1);
    assert_eq!(stats.closed[CloseReason::PeerClosed.index()], 1);
}

#[test]
fn half_close_gets_every_echo_then_eof() {
    let server = echo_server(local_config());
    let mut client = connect(server.tcp());
    for i in 0..50u32 {
        write_frame(&mut client, &i.to_be_bytes()).unwrap();
    }
    client.shutdown(Shutdown::Write).unwrap();
    for i in 0..50u32 {
        assert_eq!(read_frame(&mut client).unwrap(), i.to_be_bytes());
    }
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "EOF after the last echo");
    let stats = server.stop();
    assert_eq!(stats.closed[CloseReason::PeerClosed.index()], 1);
}

#[test]
fn udp_datagrams_of_1_1400_and_65507_bytes_are_echoed() {
    let server = echo_server(local_config());
    let client = udp_client();
    let mut reply = vec![0u8; 70_000];
    for size in [1, 1400, MAX_DATAGRAM] {
        let datagram: Vec<u8> = (0..size).map(|i| (i % 256) as u8).collect();
        client.send_to(&datagram, server.udp()).unwrap();
        let (n, from) = client.recv_from(&mut reply).unwrap();
        assert_eq!(from, server.udp());
        assert_eq!(&reply[..n], &datagram[..], "datagram of {size} bytes");
    }
}

#[test]
fn udp_serves_many_peers_at_once() {
    let server = echo_server(local_config());
    let peers: Vec<_> = (0..50).map(|_| udp_client()).collect();
    for (i, peer) in peers.iter().enumerate() {
        peer.send_to(format!("peer {i}").as_bytes(), server.udp())
            .unwrap();
    }
    let mut reply = [0u8; 64];
    for (i, peer) in peers.iter().enumerate() {
        let (n, _) = peer.recv_from(&mut reply).unwrap();
        assert_eq!(&reply[..n], format!("peer {i}").as_bytes());
    }
}

#[test]
fn idle_timeout_closes_idle_connections_and_spares_active_ones() {
    let mut config = local_config();
    config.idle_timeout = Some(Duration::from_millis(400));
    // On a virtual clock: the idle one closes exactly at 400 ms, without sleeping.
    let mut server = driven_echo(config);
    let idle = driven_client(&mut server);
    let mut active = driven_client(&mut server);
    let t0 = server.now;
    for at in [
        100, 200, 300, 399, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200,
    ] {
        server.advance_to(t0 + Duration::from_millis(at));
        assert_eq!(
            is_closed_now(&idle),
            at >= 400,
            "idle connection at {at} ms"
        );
        write_and_read_by(&mut server, &mut active, &frame(b"tick"));
        assert_eq!(read_frame(&mut active).unwrap(), b"tick");
    }
    write_and_read_by(&mut server, &mut active, &frame(b"alive"));
    assert_eq!(read_frame(&mut active).unwrap(), b"alive");
    assert_eq!(
        server.reactor.stats().closed[CloseReason::IdleTimeout.index()],
        1
    );
}

#[test]
fn client_that_never_reads_is_paused_and_others_are_served() {
    let mut config = local_config();
    config.write_limit = 256 * 1024;
    let mut server = driven_echo(config);
    let mut hog = driven_client(&mut server);
    hog.set_nonblocking(true).unwrap();
    let payload = vec![0xab; 64 * 1024];
    let chunk = frame(&payload);
    let mut sent = 0usize;
    // Push without ever reading until the server stops taking bytes: a turn that
    // reads nothing although the hog's writes are blocked (so its bytes wait at the
    // server) means the server has paused reading it.
    loop {
        loop {
            match hog.write(&chunk[sent % chunk.len()..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        let before = server.reactor.stats().bytes_in;
        server.turn();
        if server.reactor.stats().bytes_in == before {
            break;
        }
        assert!(
            sent < 32 << 20,
            "server kept reading a client that never reads ({sent} bytes)"
        );
    }

    let mut other = driven_client(&mut server);
    write_and_read_by(&mut server, &mut other, &frame(b"served"));
    assert_eq!(read_frame(&mut other).unwrap(), b"served");

    // Nothing was lost: reading now returns every whole frame that was sent.
    hog.set_nonblocking(false).unwrap();
    let whole_frames = sent / chunk.len();
    let reader = std::thread::spawn(move || {
        for i in 0..whole_frames {
            assert_eq!(read_frame(&mut hog).unwrap(), payload, "frame {i}");
        }
    });
    server.turn_until("the hog read every frame", |_| reader.is_finished());
    reader.join().unwrap();
}

#[test]
fn max_conns_rejects_extra_connections_until_one_closes() {
    let mut config = local_config();
    config.max_conns = 3;
    let server = echo_server(config);
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(server.tcp())).collect();
    for client in &mut held {
        write_frame(client, b"in").unwrap();
        assert_eq!(read_frame(client).unwrap(), b"in");
    }
    let mut extra = connect(server.tcp());
    assert!(
        is_closed(&mut extra),
        "the fourth connection is closed at once"
    );

    drop(held.pop());
    let mut again = None;
    assert!(
        wait_until(IO_TIMEOUT, || {
            let mut client = connect(server.tcp());
            let ok = write_frame(&mut client, b"room").is_ok()
                && read_frame(&mut client).is_ok_and(|p| p == b"room");
            again = Some(client);
            ok
        }),
        "a slot frees when a connection closes"
    );
    drop((held, again));
    let stats = server.stop();
    assert!(stats.rejected >= 1);
}

#[test]
fn unix_domain_listener_echoes() {
    let dir = std::env::temp_dir().join(format!("switchboard-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let mut config = Config::default();
    config.unix.push(path.clone());
    let server = echo_server(config);
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write_frame(&mut client, b"over a file").unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), b"over a file");
    drop(client);
    server.stop();
    assert!(!path.exists(), "the socket file is removed at shutdown");
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn ipv6_loopback_echoes_when_available() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine: skipped");
        return;
    }
    let mut config = Config::default();
    config.tcp.push("[::1]:0".parse().unwrap());
    let server = echo_server(config);
    let mut client = connect(server.tcp());
    write_frame(&mut client, b"v6").unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), b"v6");
}

#[test]
fn a_flooding_client_does_not_starve_others() {
    let server = echo_server(local_config());
    let addr = server.tcp();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flooding_tx, flooding) = std::sync::mpsc::channel();
    let flooder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut flood = connect(addr);
            let mut reader = flood.try_clone().unwrap();
            let drain = std::thread::spawn(move || {
                let mut sink = vec![0u8; 1 << 16];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            });
            let burst = frame(&vec![1u8; 60_000]).repeat(16);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if flood.write_all(&burst).is_err() {
                    break;
                }
                let _ = flooding_tx.send(());
            }
            let _ = flood.shutdown(Shutdown::Both);
            let _ = drain.join();
        })
    };
    // The flood is on: a first burst has been written (and more follow).
    flooding.recv_timeout(IO_TIMEOUT).unwrap();
    let mut polite = connect(addr);
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let sent = Instant::now();
        write_frame(&mut polite, b"ping").unwrap();
        assert_eq!(read_frame(&mut polite).unwrap(), b"ping");
        worst = worst.max(sent.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flooder.join().unwrap();
    // Generous bound: starvation would mean waiting for the flood to end (never).
    assert!(worst < Duration::from_secs(2), "worst round trip {worst:?}");
}

#[test]
fn raw_framing_echoes_the_stream_as_it_arrives() {
    let server = TestServer::start(local_config(), || (Echo::default(), switchboard::RawCodec));
    let mut client = connect(server.tcp());
    // What the tutorials' clients do: plain text, no length prefix.
    for message in ["hello", "a longer line of text", "x"] {
        client.write_all(message.as_bytes()).unwrap();
        let mut echo = vec![0u8; message.len()];
        client.read_exact(&mut echo).unwrap();
        assert_eq!(echo, message.as_bytes());
    }
}

#[test]
fn lines_framing_echoes_each_line_and_limits_its_length() {
    let codec = switchboard::LinesCodec::new(16);
    let mut server = Driven::start(local_config(), Echo::default(), codec);
    let mut client = driven_client(&mut server);
    // "second" arrives in two reads.
    write_and_read_by(&mut server, &mut client, b"first\nsec");
    write_and_read_by(&mut server, &mut client, b"ond\r\n\nthird\n");
    let mut reader = std::io::BufReader::new(client.try_clone().unwrap());
    let mut lines = Vec::new();
    for _ in 0..4 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        lines.push(line);
    }
    assert_eq!(lines, ["first\n", "second\r\n", "\n", "third\n"]);

    // A line longer than the maximum is a protocol error for that connection only.
    let mut long = driven_client(&mut server);
    long.write_all(&[b'z'; 40]).unwrap();
    server.turn_until("closed", |r| r.stats().protocol_errors == 1);
    assert!(is_closed(&mut long));
    write_and_read_by(&mut server, &mut client, b"still fine\n");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert_eq!(line, "still fine\n");
}

/// Bytes the server has read so far, asked through a job on its loop.
fn bytes_read_by(handle: &switchboard::Handle<Echo>) -> u64 {
    let (tx, rx) = std::sync::mpsc::channel();
    handle
        .post(move |_, ctx| tx.send(ctx.stats().bytes_in).unwrap())
        .unwrap();
    rx.recv_timeout(IO_TIMEOUT).unwrap()
}

/// Frames of many sizes around the large-frame threshold (16 KiB) and the read size
/// (128 KiB), each with its own content, sent from another thread in pieces of `chunk`
/// bytes; after every `settle_every` pieces the sender waits until the server has read
/// all it sent, so the server is left holding whatever partial frame the pieces end
/// in. Returns once every frame came back; panics on the first one that differs.
fn large_frames_echo_intact(chunk: usize, settle_every: usize) {
    let server = echo_server(local_config());
    let handle = server.handle();
    let mut client = connect(server.tcp());
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let sizes = [
        20_000, 16_385, 70_000, 131_068, 131_069, 200_000, 40_000, 0, 100, 250_000, 65_536, 16_384,
        99_999, 262_140, 33_000,
    ];
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|b| (b * 31 + i * 7) as u8).collect())
        .collect();
    let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
    let mut writer = client.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut written = 0;
        for (n, piece) in wire.chunks(chunk).enumerate() {
            writer.write_all(piece).unwrap();
            written += piece.len() as u64;
            if settle_every > 0 && n % settle_every == 0 {
                assert!(
                    wait_until(IO_TIMEOUT, || bytes_read_by(&handle) >= written),
                    "the server never read piece {n}"
                );
            }
        }
    });
    for (i, payload) in payloads.iter().enumerate() {
        let echoed = read_frame(&mut client).unwrap();
        assert!(
            echoed == *payload,
            "frame {i} ({} bytes) came back as {} different bytes",
            payload.len(),
            echoed.len()
        );
    }
    sender.join().unwrap();
}

#[test]
fn large_frames_written_at_once_come_back_intact() {
    // Reads fill the shared buffer and end inside large frames: the rest of each is
    // read in place behind it.
    large_frames_echo_intact(1 << 20, 0);
}

#[test]
fn large_frames_trickling_in_come_back_intact() {
    // Pieces ending in odd places, each read before the sender goes on, leave partial
    // large frames with the connection, which completes them in a buffer of its own.
    large_frames_echo_intact(7_919, 3);
}
