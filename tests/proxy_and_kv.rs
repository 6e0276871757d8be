//! End-to-end tests of the proxy and key-value examples, run as the programs
//! they are (`cargo test` builds them): the TCP proxy (byte-exact relaying, slow
//! readers and writers on either side, bounded memory, half-close, an unreachable
//! upstream) and the key-value server with logins (login flow, refusals before login,
//! the two idle timeouts, shutdown on SIGTERM).

mod common;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    ask, connect, example_path, is_closed, wait_until, ChildServer, TestServer, IO_TIMEOUT,
};
use switchboard::services::Echo;
use switchboard::{Config, RawCodec};

/// A scratch directory for one test (the example's log), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-examples-{}-{test}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn log(&self) -> PathBuf {
        self.0.join("server.log")
    }

    /// What the example has written to stderr so far.
    fn read_log(&self) -> String {
        fs::read_to_string(self.log()).unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the example's log:\n{}", self.read_log());
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running example, and the directory holding its log.
struct Running {
    server: ChildServer,
    addr: SocketAddr,
    /// Removed once the server (dropped first) has stopped.
    scratch: Scratch,
}

/// Starts example `name` listening on a free port (`listen_flag ADDR`) with `args`,
/// its stderr in a log file, and waits until the port accepts connections.
#[track_caller]
fn start_example(test: &str, name: &str, listen_flag: &str, args: &[&str]) -> Running {
    let scratch = Scratch::new(test);
    let addr = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let child = Command::new(example_path(name))
        .arg(listen_flag)
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(scratch.log()).unwrap())
        .spawn()
        .expect("spawn the example");
    let server = ChildServer { child };
    assert!(
        wait_until(IO_TIMEOUT, || TcpStream::connect(addr).is_ok()),
        "{name} did not listen on {addr}: {}",
        scratch.read_log()
    );
    Running {
        server,
        addr,
        scratch,
    }
}

// ---- proxy ----

/// An echo server for raw bytes, in this process.
fn raw_echo() -> TestServer<Echo<RawCodec>> {
    let mut config = Config::default();
    config.tcp.push("127.0.0.1:0".parse().unwrap());
    TestServer::start(config, || (Echo::<RawCodec>::default(), RawCodec))
}

/// The proxy in front of `upstream`, with extra flags.
fn start_proxy(test: &str, upstream: SocketAddr, args: &[&str]) -> Running {
    let upstream = upstream.to_string();
    let mut all = vec!["--upstream", &upstream];
    all.extend_from_slice(args);
    start_example(test, "proxy", "--listen", &all)
}

/// `len` bytes of a deterministic pseudo-random stream (xorshift), so a byte lost,
/// repeated or reordered anywhere shows.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Writes `data` on a thread of its own, then shuts the write side.
fn write_then_shut(stream: &TcpStream, data: Vec<u8>) -> JoinHandle<io::Result<()>> {
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        writer.write_all(&data)?;
        writer.shutdown(Shutdown::Write)
    })
}

/// Reads until EOF in pieces of at most `piece` bytes, pausing `pause` after each
/// (a slow reader when it is not zero).
fn read_to_eof(stream: &mut TcpStream, piece: usize, pause: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = vec![0u8; piece];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("read failed after {} bytes: {e}", received.len()),
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}

/// Sends `data` through the proxy at `addr` while reading the replies (in pieces of
/// `piece` bytes, pausing `pause` after each), and returns them once the proxy closes.
fn round_trip(addr: SocketAddr, data: &[u8], piece: usize, pause: Duration) -> Vec<u8> {
    let mut stream = connect(addr);
    let writer = write_then_shut(&stream, data.to_vec());
    let received = read_to_eof(&mut stream, piece, pause);
    writer.join().unwrap().expect("the writer");
    received
}

/// Asserts two long byte strings are equal, saying where they first differ.
#[track_caller]
fn assert_same_bytes(received: &[u8], sent: &[u8]) {
    let first_difference = received.iter().zip(sent).position(|(a, b)| a != b);
    assert!(
        received.len() == sent.len() && first_difference.is_none(),
        "received {} of {} bytes; first difference at {first_difference:?}",
        received.len(),
        sent.len()
    );
}

#[test]
fn the_proxy_relays_many_mebibytes_byte_exact() {
    let echo = raw_echo();
    let proxy = start_proxy("proxy-bulk", echo.tcp(), &[]);
    let sent = pseudo_random(32 << 20, 1);
    let received = round_trip(proxy.addr, &sent, 64 << 10, Duration::ZERO);
    assert_same_bytes(&received, &sent);
    assert_eq!(echo.stop().bytes_in, sent.len() as u64);
}

#[test]
fn a_slow_reader_gets_everything_while_the_proxy_holds_the_upstream_back() {
    let echo = raw_echo();
    let args = ["--write-limit", "262144", "--log-level", "debug"];
    let proxy = start_proxy("proxy-slow-reader", echo.tcp(), &args);
    let sent = pseudo_random(more_than_the_kernel_holds(), 2);
    // At most 16 KiB a millisecond: far slower than the writer and the echo.
    let received = round_trip(proxy.addr, &sent, 16 << 10, Duration::from_millis(1));
    assert_same_bytes(&received, &sent);
    let log = proxy.scratch.read_log();
    assert!(log.contains("paused") && log.contains("resumed"), "{log}");
}

/// A byte count that the kernel's socket buffers on the way cannot absorb on their own,
/// so a slow peer makes the proxy queue and pause: a send buffer grows up to
/// `tcp_wmem`'s maximum, which differs between machines (4 MiB by default).
fn more_than_the_kernel_holds() -> usize {
    let largest_send_buffer = fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|text| text.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    (2 * largest_send_buffer + (4 << 20)).max(8 << 20)
}

/// A listener on 127.0.0.1 whose connections have small kernel buffers both ways, so
/// what a slow peer does not take piles up in the proxy rather than in the kernel.
fn small_buffer_listener() -> TcpListener {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // Set before listen(): accepted sockets inherit it, and the window is sized from it.
    socket.set_recv_buffer_size(SMALL_BUFFER).unwrap();
    socket.set_send_buffer_size(SMALL_BUFFER).unwrap();
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any_port.into()).unwrap();
    socket.listen(16).unwrap();
    socket.into()
}

/// Kernel buffer size for the slow peers' sockets (the kernel doubles it).
const SMALL_BUFFER: usize = 32 << 10;

/// An upstream that reads slowly, in small pieces with pauses, and echoes what it
/// reads; it closes once the client has closed its side and everything is echoed.
fn slow_echo_upstream() -> (SocketAddr, JoinHandle<u64>) {
    let listener = small_buffer_listener();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        // The proxy's readiness probe (if it got through) relays nothing.
        let mut echoed = 0;
        while echoed == 0 {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut buf = [0u8; 16 << 10];
            // (The probe's connection may end with EOF or, closed early, an error.)
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                stream.write_all(&buf[..n]).unwrap();
                echoed += n as u64;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        echoed
    });
    (addr, thread)
}

#[test]
fn a_slow_upstream_gets_everything_while_the_proxy_holds_the_client_back() {
    let (upstream, echoed) = slow_echo_upstream();
    let args = ["--write-limit", "262144", "--log-level", "debug"];
    let proxy = start_proxy("proxy-slow-upstream", upstream, &args);
    let sent = pseudo_random(more_than_the_kernel_holds(), 3);
    let received = round_trip(proxy.addr, &sent, 64 << 10, Duration::ZERO);
    assert_same_bytes(&received, &sent);
    assert_eq!(echoed.join().unwrap(), sent.len() as u64);
    let log = proxy.scratch.read_log();
    assert!(log.contains("paused") && log.contains("resumed"), "{log}");
}

/// The largest queue the proxy logged when it paused a side ("paused: N bytes queued").
fn largest_queue_at_a_pause(log: &str) -> usize {
    log.lines()
        .filter_map(|line| line.split_once("paused: ")?.1.split_once(' '))
        .map(|(bytes, _)| bytes.parse::<usize>().unwrap())
        .max()
        .unwrap_or(0)
}

#[cfg(target_os = "linux")]
#[test]
fn a_client_that_never_reads_holds_about_a_write_limit_queued_per_side() {
    const WRITE_LIMIT: usize = 1 << 20;
    const PUSHED: usize = 64 << 20;
    let echo = raw_echo();
    let limit = WRITE_LIMIT.to_string();
    let args = ["--write-limit", &limit, "--log-level", "debug"];
    let proxy = start_proxy("proxy-memory", echo.tcp(), &args);
    let pid = proxy.server.child.id();
    // Warm up: the loop's read buffer and a pair's buffers exist before measuring.
    let warm_up = pseudo_random(1 << 20, 4);
    let back = round_trip(proxy.addr, &warm_up, 64 << 10, Duration::ZERO);
    assert_same_bytes(&back, &warm_up);
    let before = common::rss_kib(pid);

    // Push 64 MiB that the echo sends back, and never read: the proxy must stop
    // reading this client, and the writes stall once every buffer on the way is full
    // (a write that makes no progress for two seconds).
    let mut stream = connect(proxy.addr);
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let chunk = pseudo_random(64 << 10, 5);
    let mut pushed = 0;
    let stalled = loop {
        if pushed >= PUSHED {
            break false;
        }
        match stream.write(&chunk) {
            Ok(n) => pushed += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break true
            }
            Err(e) => panic!("write failed after {pushed} bytes: {e}"),
        }
    };
    let grown = common::rss_kib(pid).saturating_sub(before) as usize;
    let largest = largest_queue_at_a_pause(&proxy.scratch.read_log());
    eprintln!(
        "proxy memory: {before} KiB before, grew by {grown} KiB; largest queue {} KiB; \
         {} KiB pushed before the stall",
        largest >> 10,
        pushed >> 10
    );
    assert!(
        stalled,
        "all {PUSHED} bytes went through a client that never reads"
    );
    // Each side's queue stops one read past the write limit...
    let one_read = Config::default().read_buffer_size;
    assert!(largest > WRITE_LIMIT, "the proxy never paused a side");
    assert!(
        largest <= WRITE_LIMIT + one_read,
        "a queue of {largest} bytes"
    );
    // ...so the process grows by the storage of two such queues, not by what was
    // pushed. (Storage grows by doubling and is zero-filled, so a queue's resident
    // memory can be twice its content; the allocator may keep a freed smaller block.)
    let bound_kib = 4 * (WRITE_LIMIT + one_read) / 1024 + 2048;
    assert!(
        grown <= bound_kib,
        "the proxy grew by {grown} KiB with a {WRITE_LIMIT}-byte write limit"
    );
    // Only that pair is held back: another client is served meanwhile.
    let other = pseudo_random(256 << 10, 6);
    assert_same_bytes(
        &round_trip(proxy.addr, &other, 64 << 10, Duration::ZERO),
        &other,
    );
}

/// An upstream that answers only once the client has said it is done: it reads
/// requests (lines) until EOF, then sends one reply per request and closes.
fn answer_after_eof_upstream(clients: usize) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut served = 0;
        while served < clients {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut requests = String::new();
            if stream.read_to_string(&mut requests).is_err() || requests.is_empty() {
                continue; // the proxy's readiness probe
            }
            for line in requests.lines() {
                stream
                    .write_all(format!("reply to {line}\n").as_bytes())
                    .unwrap();
            }
            served += 1;
        }
    });
    (addr, thread)
}

#[test]
fn a_half_closed_client_still_gets_every_reply_then_eof() {
    const CLIENTS: usize = 20;
    let (upstream, answered) = answer_after_eof_upstream(CLIENTS);
    let proxy = start_proxy("proxy-half-close", upstream, &[]);
    // Each client writes its requests and shuts its side at once, before the proxy's
    // own connection to the upstream is likely to be up.
    for client in 0..CLIENTS {
        let mut stream = connect(proxy.addr);
        let requests: String = (0..50).map(|i| format!("request {client}.{i}\n")).collect();
        stream.write_all(requests.as_bytes()).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut replies = String::new();
        stream.read_to_string(&mut replies).unwrap(); // to EOF
        let expected: String = requests
            .lines()
            .map(|l| format!("reply to {l}\n"))
            .collect();
        assert_eq!(replies, expected, "client {client}");
    }
    answered.join().unwrap();
}

#[test]
fn a_client_is_closed_when_the_upstream_cannot_be_reached() {
    // Below the ephemeral range and free: nothing listens there, so connects are refused.
    let nowhere = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let proxy = start_proxy("proxy-unreachable", nowhere, &["--log-level", "warn"]);
    let mut stream = connect(proxy.addr);
    stream.write_all(b"anyone there?").unwrap();
    assert!(is_closed(&mut stream));
    let log = proxy.scratch.read_log();
    assert!(log.contains("cannot reach"), "{log}");
}

// ---- kv ----

/// The key-value example with `args`.
fn start_kv(test: &str, args: &[&str]) -> Running {
    start_example(test, "kv", "--addr", args)
}

#[test]
fn kv_logs_in_and_serves_a_shared_store() {
    let kv = start_kv("kv-login", &["--password", "hunter2"]);
    let mut alice = connect(kv.addr);
    assert_eq!(ask(&mut alice, "AUTH secret"), "ERROR wrong password");
    assert_eq!(ask(&mut alice, "AUTH alice hunter2"), "OK alice");
    assert_eq!(ask(&mut alice, "SET greeting hello  world"), "OK");
    assert_eq!(ask(&mut alice, "GET greeting"), "VALUE hello  world");
    assert_eq!(ask(&mut alice, "set counter 1"), "OK");

    // Another client, logged in as the default user, shares the store.
    let mut other = connect(kv.addr);
    assert_eq!(ask(&mut other, "AUTH hunter2"), "OK default");
    assert_eq!(ask(&mut other, "GET greeting"), "VALUE hello  world");
    assert_eq!(ask(&mut other, "KEYS"), "KEYS counter greeting");
    assert_eq!(ask(&mut other, "DEL counter"), "DELETED");
    assert_eq!(ask(&mut other, "DEL counter"), "NOT_FOUND");
    assert_eq!(ask(&mut alice, "GET counter"), "NOT_FOUND");
    assert!(ask(&mut alice, "FLY me").starts_with("ERROR unknown command"));

    // Each connection counts its own requests (refused ones too).
    assert_eq!(ask(&mut alice, "WHOAMI"), "USER alice 8");
    assert_eq!(ask(&mut other, "WHOAMI"), "USER default 6");
    assert_eq!(ask(&mut alice, "QUIT"), "BYE");
    assert!(is_closed(&mut alice));
}

#[test]
fn kv_refuses_everything_but_auth_and_quit_before_login() {
    let kv = start_kv("kv-refusals", &[]);
    let mut stranger = connect(kv.addr);
    for request in [
        "GET greeting",
        "SET greeting hi",
        "DEL greeting",
        "KEYS",
        "WHOAMI",
    ] {
        assert_eq!(
            ask(&mut stranger, request),
            "ERROR login first",
            "{request}"
        );
    }
    assert_eq!(ask(&mut stranger, "QUIT"), "BYE");
    assert!(is_closed(&mut stranger));

    // Nothing was stored, and three wrong passwords end the connection.
    let mut guesser = connect(kv.addr);
    assert_eq!(ask(&mut guesser, "AUTH one"), "ERROR wrong password");
    assert_eq!(ask(&mut guesser, "AUTH two"), "ERROR wrong password");
    assert_eq!(
        ask(&mut guesser, "AUTH three"),
        "ERROR wrong password; goodbye"
    );
    assert!(is_closed(&mut guesser));
    let mut user = connect(kv.addr);
    assert_eq!(ask(&mut user, "AUTH secret"), "OK default");
    assert_eq!(ask(&mut user, "KEYS"), "KEYS");
}

#[test]
fn kv_closes_a_stranger_after_the_login_timeout_but_not_a_logged_in_client() {
    let args = ["--login-timeout", "1", "--idle-timeout", "30"];
    let kv = start_kv("kv-timeouts", &args);
    // The logged-in client goes quiet first: were it still under the login timeout,
    // it would be closed before the stranger, who connects after it.
    let mut member = connect(kv.addr);
    assert_eq!(ask(&mut member, "AUTH secret"), "OK default");
    let quiet_since = Instant::now();
    let mut stranger = connect(kv.addr);
    // A read that waits (at most IO_TIMEOUT) for the close.
    assert!(is_closed(&mut stranger));
    let waited = quiet_since.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "the stranger was closed after {waited:?}"
    );
    assert_eq!(ask(&mut member, "WHOAMI"), "USER default 2");
}

#[test]
fn kv_stops_on_sigterm_and_prints_its_summary() {
    let kv = start_kv("kv-sigterm", &[]);
    let mut client = connect(kv.addr);
    assert_eq!(ask(&mut client, "AUTH secret"), "OK default");
    assert_eq!(ask(&mut client, "SET k v"), "OK");
    kv.server.signal("TERM");
    // The open connection is closed by the shutdown.
    assert!(is_closed(&mut client));
    let Running {
        server, scratch, ..
    } = kv;
    let (code, _) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0));
    let log = scratch.read_log();
    let summary = log
        .lines()
        .find(|l| l.starts_with("kv: stopped:"))
        .unwrap_or_else(|| panic!("no summary in {log:?}"));
    assert!(
        summary.contains("1 keys, 1 logins, 0 refused, 2 requests"),
        "{summary}"
    );
    assert!(summary.contains("conns: 0 active"), "{summary}");
}
