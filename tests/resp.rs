//! End-to-end tests of the Redis-compatible example (`examples/resp.rs`), run as the
//! program it is and driven by the real `redis-cli` and `redis-benchmark` (package
//! `redis-tools`; `.ci/run` installs it), plus raw sockets for what a well-behaved
//! client never sends: a broken request (answered `-ERR Protocol error`, then a clean
//! end of stream), expiry times far past what a timer can hold, a request arriving a
//! byte at a time, and a subscriber that stops reading (cut off, while the others
//! still get every message).

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::{connect, example_path, wait_until, ChildServer, StderrLog, IO_TIMEOUT};

/// The example on a free port, its stderr collected as it comes.
struct Server {
    server: ChildServer,
    log: StderrLog,
    port: u16,
}

impl Server {
    #[track_caller]
    fn start(extra: &[&str]) -> Server {
        let port = common::free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(example_path("resp"))
            .args(["--addr", &addr])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the resp example");
        let mut server = ChildServer { child };
        let log = StderrLog::capture(&mut server);
        assert!(
            wait_until(IO_TIMEOUT, || TcpStream::connect(local(port)).is_ok()),
            "resp did not listen on {addr}\n{}",
            log.text()
        );
        Server { server, log, port }
    }

    /// `redis-cli -p PORT ARGS...`: its output, trimmed; fails the test on an error exit.
    #[track_caller]
    fn cli(&self, args: &[&str]) -> String {
        let output = redis_cli(self.port)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn connect(&self) -> TcpStream {
        connect(local(self.port))
    }

    /// Stops it with SIGTERM; its exit code and whole log.
    fn stop(self) -> (Option<i32>, String) {
        self.server.signal("TERM");
        let (code, _) = self.server.wait(IO_TIMEOUT);
        (code, self.log.finish())
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A `redis-cli` command for `port`, or a failure that says what to install.
fn redis_cli(port: u16) -> Command {
    require("redis-cli");
    let mut command = Command::new("redis-cli");
    command.args(["-p", &port.to_string()]);
    command
}

/// Fails the test, clearly, when a tool from `redis-tools` is missing.
#[track_caller]
fn require(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "{tool} is not installed: these tests drive the server with the real Redis \
         clients (Debian/Ubuntu: apt-get install redis-tools; .ci/run installs it)"
    );
}

/// One request as `redis-cli` sends it: an array of bulk strings.
fn request(args: &[&[u8]]) -> Vec<u8> {
    let mut wire = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        wire.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        wire.extend_from_slice(arg);
        wire.extend_from_slice(b"\r\n");
    }
    wire
}

/// Reads exactly `expected.len()` bytes and compares them with `expected`.
#[track_caller]
fn expect(stream: &mut TcpStream, expected: &[u8]) {
    let mut got = vec![0u8; expected.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

/// Everything until the server closes: the bytes, and whether it ended with a clean
/// end of stream (rather than a reset).
fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (bytes, true),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("the server neither answered nor closed: {bytes:?}")
            }
            Err(_) => return (bytes, false),
        }
    }
}

// ---- with redis-cli ----

#[test]
fn redis_cli_sets_gets_increments_and_deletes() {
    let server = Server::start(&[]);
    assert_eq!(server.cli(&["PING"]), "PONG");
    assert_eq!(server.cli(&["SET", "greeting", "hello world"]), "OK");
    assert_eq!(server.cli(&["GET", "greeting"]), "hello world");
    assert_eq!(server.cli(&["ECHO", "line\r\nbreak"]), "line\r\nbreak");
    assert_eq!(server.cli(&["INCR", "visits"]), "1");
    assert_eq!(server.cli(&["INCR", "visits"]), "2");
    assert_eq!(
        server.cli(&["INCR", "greeting"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(server.cli(&["SET", "visits", "9223372036854775807"]), "OK");
    assert_eq!(
        server.cli(&["INCR", "visits"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(server.cli(&["SET", "greeting", "again", "NX"]), "");
    assert_eq!(server.cli(&["SET", "absent", "x", "XX"]), "");
    assert_eq!(server.cli(&["SET", "greeting", "hi", "XX"]), "OK");
    assert_eq!(server.cli(&["GET", "greeting"]), "hi");
    assert_eq!(server.cli(&["DEL", "greeting", "visits", "absent"]), "2");
    assert_eq!(server.cli(&["GET", "greeting"]), "");
    assert!(server
        .cli(&["NOSUCH", "a"])
        .starts_with("ERR unknown command 'NOSUCH', with args beginning with: 'a'"));
    assert_eq!(
        server.cli(&["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("resp: stopped: keys: 0,"), "{log}");
}

#[test]
fn expire_sets_a_time_to_live_that_a_timer_ends() {
    let server = Server::start(&[]);
    assert_eq!(server.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(server.cli(&["TTL", "k"]), "-1");
    assert_eq!(server.cli(&["TTL", "absent"]), "-2");
    assert_eq!(server.cli(&["EXPIRE", "k", "100"]), "1");
    assert_eq!(server.cli(&["TTL", "k"]), "100");
    assert_eq!(server.cli(&["EXPIRE", "absent", "100"]), "0");
    // SET without EX drops the time to live; INCR keeps it.
    assert_eq!(server.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(server.cli(&["TTL", "k"]), "-1");
    assert_eq!(server.cli(&["SET", "n", "1", "EX", "50"]), "OK");
    assert_eq!(server.cli(&["INCR", "n"]), "2");
    assert_eq!(server.cli(&["TTL", "n"]), "50");
    // A time in the past removes the key.
    assert_eq!(server.cli(&["EXPIRE", "n", "-1"]), "1");
    assert_eq!(server.cli(&["GET", "n"]), "");

    // A key replaced before its expiry keeps the new value: the old timer does
    // nothing. `later` expires after `short`'s old time, so once it is gone the old
    // timer has had its turn.
    assert_eq!(server.cli(&["SET", "short", "old", "PX", "100"]), "OK");
    assert_eq!(server.cli(&["SET", "later", "x", "PX", "300"]), "OK");
    assert_eq!(server.cli(&["SET", "short", "new"]), "OK");
    assert!(wait_until(IO_TIMEOUT, || server
        .cli(&["GET", "later"])
        .is_empty()));
    assert_eq!(server.cli(&["GET", "short"]), "new");
    assert_eq!(server.cli(&["TTL", "short"]), "-1");

    // Expiry by the timer (not only hidden when read): the count says so.
    assert_eq!(server.cli(&["SET", "gone", "soon", "PX", "50"]), "OK");
    assert!(wait_until(IO_TIMEOUT, || server
        .cli(&["GET", "gone"])
        .is_empty()));
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
    // `k` stays; `later` and `gone` were expired by their timers; `n` was removed.
    assert!(log.contains("resp: stopped: keys: 2,"), "{log}");
    assert!(log.contains("expired: 2,"), "{log}");
}

#[test]
fn expiry_times_past_any_timer_are_refused_or_capped_never_a_crash() {
    let server = Server::start(&[]);
    // Milliseconds that overflow an i64: refused, as Redis refuses them.
    for args in [
        ["SET", "k", "v", "EX", "9223372036854775807"],
        ["SET", "k", "v", "EX", "-9223372036854775808"],
        ["SET", "k", "v", "EX", "0"],
    ] {
        assert_eq!(
            server.cli(&args),
            "ERR invalid expire time in 'set' command"
        );
    }
    assert_eq!(
        server.cli(&["SET", "k", "v", "EX", "99999999999999999999"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(server.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(
        server.cli(&["EXPIRE", "k", "9223372036854775807"]),
        "ERR invalid expire time in 'expire' command"
    );
    // Accepted, far past the century a timer holds at most: the timer is capped, the
    // time to live is what was asked.
    assert_eq!(
        server.cli(&["SET", "k", "v", "EX", "9000000000000000"]),
        "OK"
    );
    assert_eq!(server.cli(&["TTL", "k"]), "9000000000000000");
    assert_eq!(server.cli(&["EXPIRE", "k", "9000000000000001"]), "1");
    assert_eq!(server.cli(&["TTL", "k"]), "9000000000000001");
    assert_eq!(
        server.cli(&["SET", "p", "v", "PX", "9000000000000000000"]),
        "OK"
    );
    assert_eq!(server.cli(&["TTL", "p"]), "9000000000000000");
    assert_eq!(server.cli(&["GET", "k"]), "v");
    assert_eq!(server.cli(&["PING"]), "PONG");
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn a_pipelined_batch_through_redis_cli_pipe_is_answered_in_order() {
    let server = Server::start(&[]);
    let mut input = Vec::new();
    for i in 0..10_000 {
        let (key, value) = (format!("key:{i}"), format!("value {i}"));
        input.extend(request(&[b"SET", key.as_bytes(), value.as_bytes()]));
    }
    input.extend(request(&[b"INCR", b"counter"]));
    // Inline commands mixed in, as `redis-cli --pipe` takes them too.
    input.extend_from_slice(b"INCR counter\r\nPING\r\n");
    let mut pipe = redis_cli(server.port)
        .arg("--pipe")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run redis-cli --pipe");
    pipe.stdin.take().unwrap().write_all(&input).unwrap();
    let output = pipe.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(text.contains("errors: 0, replies: 10003"), "{text}");
    assert_eq!(server.cli(&["GET", "key:0"]), "value 0");
    assert_eq!(server.cli(&["GET", "key:9999"]), "value 9999");
    assert_eq!(server.cli(&["GET", "counter"]), "2");

    // Many commands on redis-cli's stdin, one connection.
    let mut many = redis_cli(server.port)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run redis-cli");
    let commands: String = (0..100).map(|_| "INCR many\n").collect();
    many.stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    let output = many.wait_with_output().unwrap();
    let replies: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (1..=100).map(|n| n.to_string()).collect();
    assert_eq!(replies, expected);
}

#[test]
fn published_messages_reach_a_redis_cli_subscriber() {
    let server = Server::start(&[]);
    let mut subscriber = redis_cli(server.port)
        .args(["SUBSCRIBE", "news", "sport"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run redis-cli SUBSCRIBE");
    let lines = BufReader::new(subscriber.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut next_line = || {
        let line = rx.recv_timeout(IO_TIMEOUT).expect("a line from redis-cli");
        seen.push(line.clone());
        line
    };
    // Each reply element on a line of its own: subscribe, the channel, the count.
    for expected in ["subscribe", "news", "1", "subscribe", "sport", "2"] {
        assert_eq!(next_line(), expected);
    }
    assert_eq!(server.cli(&["PUBLISH", "news", "hello"]), "1");
    assert_eq!(server.cli(&["PUBLISH", "weather", "nobody"]), "0");
    assert_eq!(server.cli(&["PUBLISH", "sport", "goal"]), "1");
    for expected in ["message", "news", "hello", "message", "sport", "goal"] {
        assert_eq!(next_line(), expected);
    }
    let _ = subscriber.kill();
    let _ = subscriber.wait();
    // Its subscriptions end with its connection.
    assert!(wait_until(IO_TIMEOUT, || server
        .cli(&["PUBLISH", "news", "again"])
        == "0"));
}

#[test]
fn redis_benchmark_runs_its_tests_without_a_warning() {
    require("redis-benchmark");
    let server = Server::start(&[]);
    let output = Command::new("redis-benchmark")
        .args(["-p", &server.port.to_string()])
        .args([
            "-t",
            "set,get,incr,ping",
            "-n",
            "2000",
            "-c",
            "4",
            "-P",
            "4",
            "-q",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&output.stdout).replace('\r', "\n");
    assert!(output.status.success(), "{output:?}");
    assert!(!text.contains("WARNING"), "{text}");
    for test in ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR"] {
        assert!(
            text.contains(&format!("{test}: ")) && text.contains("requests per second"),
            "{test} missing: {text}"
        );
    }
    // Every INCR counted once: 2,000 of them.
    assert_eq!(server.cli(&["GET", "counter:__rand_int__"]), "2000");
}

// ---- raw sockets: what redis-cli never sends ----

#[test]
fn a_broken_request_is_answered_protocol_error_then_a_clean_end_of_stream() {
    let server = Server::start(&["--max-bulk", "1024"]);
    let cases: [(&[u8], &str); 6] = [
        (b"*1\r\n$x\r\n", "invalid bulk length"),
        (b"*1\r\n+PING\r\n", "expected '$'"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*99999999999999999999\r\n", "invalid multibulk length"),
        (b"*1\r\n$2000\r\n", "invalid bulk length"),
        (b"*1\r\n$4\r\nPINGxx", "bulk string not followed by CRLF"),
    ];
    for (wire, why) in cases {
        let mut stream = server.connect();
        // A good request first: its answer comes before the error.
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        stream.write_all(wire).unwrap();
        let (bytes, clean) = read_to_end(&mut stream);
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            format!("+PONG\r\n-ERR Protocol error: {why}\r\n"),
            "for {:?}",
            String::from_utf8_lossy(wire)
        );
        assert!(clean, "a reset instead of a clean close after {why}");
    }
    // An inline command without its end, too long to be one.
    let mut stream = server.connect();
    stream.write_all(&vec![b'a'; 70 * 1024]).unwrap();
    let (bytes, clean) = read_to_end(&mut stream);
    assert_eq!(bytes, b"-ERR Protocol error: too big inline request\r\n");
    assert!(clean);
    // The server is still there for everyone else, and said what happened.
    assert_eq!(server.cli(&["PING"]), "PONG");
    server
        .log
        .wait_for("a protocol error logged", IO_TIMEOUT, |log| {
            log.contains("resp: protocol error: invalid bulk length")
        });
}

#[test]
fn inline_commands_and_quit() {
    let server = Server::start(&[]);
    let mut stream = server.connect();
    stream
        .write_all(b"PING\r\nSET  k  inline\r\n\r\nGET k\nPING hello\r\n")
        .unwrap();
    expect(
        &mut stream,
        b"+PONG\r\n+OK\r\n$6\r\ninline\r\n$5\r\nhello\r\n",
    );
    stream.write_all(b"*0\r\nQUIT\r\nPING\r\n").unwrap();
    let (bytes, clean) = read_to_end(&mut stream);
    assert_eq!(bytes, b"+OK\r\n");
    assert!(clean);
}

#[test]
fn a_request_arriving_a_byte_at_a_time_is_answered_once() {
    let server = Server::start(&[]);
    let mut stream = server.connect();
    let value: Vec<u8> = (0..300).map(|i| b'a' + (i % 26) as u8).collect();
    let wire = [
        request(&[b"SET", b"slow", &value]),
        request(&[b"GET", b"slow"]),
    ]
    .concat();
    for byte in &wire {
        stream.write_all(std::slice::from_ref(byte)).unwrap();
    }
    let mut expected = b"+OK\r\n$300\r\n".to_vec();
    expected.extend_from_slice(&value);
    expected.extend_from_slice(b"\r\n");
    expect(&mut stream, &expected);

    // A 4 MiB value in 1,000 writes, and the request after it in the same write as
    // its end.
    let big: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    let wire = [request(&[b"SET", b"big", &big]), request(&[b"GET", b"big"])].concat();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for chunk in wire.chunks(wire.len() / 1000 + 1) {
                stream.write_all(chunk).unwrap();
            }
        })
    };
    let mut expected = format!("+OK\r\n${}\r\n", big.len()).into_bytes();
    expected.extend_from_slice(&big);
    expected.extend_from_slice(b"\r\n");
    let mut got = vec![0u8; expected.len()];
    stream.read_exact(&mut got).unwrap();
    assert!(got == expected, "the 4 MiB value came back changed");
    writer.join().unwrap();
}

#[test]
fn a_subscriber_that_stops_reading_is_cut_off_and_the_others_still_receive() {
    const MESSAGE: usize = 64 * 1024;
    let server = Server::start(&["--write-limit", "262144"]);
    let subscribe = request(&[b"SUBSCRIBE", b"feed"]);
    let subscribed = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nfeed\r\n:1\r\n";

    // The slow one: subscribes, then never reads again.
    let mut slow = server.connect();
    slow.write_all(&subscribe).unwrap();
    expect(&mut slow, subscribed);

    // The normal one reads everything, on a thread, and counts whole messages.
    let mut normal = server.connect();
    normal.write_all(&subscribe).unwrap();
    expect(&mut normal, subscribed);
    let payload = vec![b'm'; MESSAGE];
    let mut one_message = b"*3\r\n$7\r\nmessage\r\n$4\r\nfeed\r\n".to_vec();
    one_message.extend_from_slice(format!("${MESSAGE}\r\n").as_bytes());
    one_message.extend_from_slice(&payload);
    one_message.extend_from_slice(b"\r\n");
    let (counted_tx, counted) = mpsc::channel();
    let expected_message = one_message.clone();
    std::thread::spawn(move || {
        let mut message = vec![0u8; expected_message.len()];
        let mut count = 0u64;
        while normal.read_exact(&mut message).is_ok() {
            assert!(message == expected_message, "a message came changed");
            count += 1;
            if counted_tx.send(count).is_err() {
                break;
            }
        }
    });

    // Publish until only one subscriber is left (bounded: kernel buffers hold a few
    // MiB, far less than this).
    let mut publisher = server.connect();
    let publish = request(&[b"PUBLISH", b"feed", &payload]);
    let mut published = 0u64;
    let start = Instant::now();
    loop {
        publisher.write_all(&publish).unwrap();
        published += 1;
        let mut reply = [0u8; 4];
        publisher.read_exact(&mut reply).unwrap();
        match &reply {
            b":2\r\n" => {}
            b":1\r\n" => break,
            other => panic!("PUBLISH answered {:?}", String::from_utf8_lossy(other)),
        }
        assert!(
            published < 2_000 && start.elapsed() < IO_TIMEOUT,
            "the slow subscriber was never cut off ({published} messages)"
        );
    }
    server
        .log
        .wait_for("the cut-off logged", IO_TIMEOUT, |log| {
            log.contains("subscriber cut off") && log.contains("over the write limit of 262144")
        });
    // The message that cut it off went to both; the normal one got every one.
    let mut got = 0;
    while got < published {
        got = counted
            .recv_timeout(IO_TIMEOUT)
            .expect("the normal subscriber stalled");
    }
    // And one more after the cut.
    publisher.write_all(&publish).unwrap();
    expect(&mut publisher, b":1\r\n");
    assert_eq!(
        counted.recv_timeout(IO_TIMEOUT).unwrap(),
        published + 1,
        "the message after the cut"
    );
    // The slow one finds its connection gone once it reads again (a reset).
    slow.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let (_, _) = read_to_end(&mut slow);
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("subscribers cut off: 1,"), "{log}");
}
