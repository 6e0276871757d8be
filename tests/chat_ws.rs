//! WebSocket chat members over real sockets, driven by a well-kept client library
//! (tungstenite): they share rooms with TCP members; fragmented messages, ping, the
//! close handshake, an oversized message, a binary message and bad handshakes are each
//! answered per RFC 6455, and the server goes on serving.
#![cfg(feature = "ws")]

#[allow(dead_code)]
mod chat_support;
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::{Message, WebSocket};

use chat_support::members::Member;
use common::{free_port, ChildServer, IO_TIMEOUT};

/// The largest WebSocket message the test server takes (`--max-frame`).
const MAX_MESSAGE: usize = 2048;

struct Server {
    server: ChildServer,
    tcp: SocketAddr,
    ws: SocketAddr,
}

fn start() -> Server {
    start_with(&[])
}

/// [`start`] with more flags.
fn start_with(extra: &[&str]) -> Server {
    start_taking(MAX_MESSAGE, extra)
}

/// [`start_with`], for messages of up to `max_message` bytes.
fn start_taking(max_message: usize, extra: &[&str]) -> Server {
    let (tcp, ws) = (free_port(), free_port());
    let (max, tcp_port, ws_port) = (max_message.to_string(), tcp.to_string(), ws.to_string());
    let mut args = vec![
        "chat",
        "--tcp",
        &tcp_port,
        "--udp",
        "off",
        "--ws",
        &ws_port,
        "--max-frame",
        &max,
    ];
    args.extend_from_slice(extra);
    let server = ChildServer::start(&args, Some(tcp));
    let ws_addr = SocketAddr::from(([127, 0, 0, 1], ws));
    assert!(common::wait_until(IO_TIMEOUT, || TcpStream::connect(
        ws_addr
    )
    .is_ok()));
    Server {
        server,
        tcp: SocketAddr::from(([127, 0, 0, 1], tcp)),
        ws: ws_addr,
    }
}

/// `--ws` on a port already taken: the server exits at once, naming the flag, and
/// has not said it was listening on the ports it did bind.
#[test]
fn a_taken_ws_port_is_named_by_its_flag() {
    let taken = std::net::TcpListener::bind(("127.0.0.1", free_port())).unwrap();
    let ws = taken.local_addr().unwrap().to_string();
    for threads in ["1", "2"] {
        let tcp = free_port().to_string();
        let args = [
            "chat",
            "--tcp",
            &tcp,
            "--udp",
            "off",
            "--ws",
            &ws,
            "--threads",
            threads,
        ];
        let server = ChildServer::start(&args, None);
        let (code, stderr) = server.wait(IO_TIMEOUT);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("cannot bind --ws {ws}: ")),
            "--threads {threads}: {stderr}"
        );
        assert!(
            !stderr.contains("listening on"),
            "--threads {threads}: {stderr}"
        );
    }
}

type Ws = WebSocket<TcpStream>;

fn ws_connect(addr: SocketAddr) -> Ws {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let (socket, response) = tungstenite::client(format!("ws://{addr}/ws"), stream).unwrap();
    assert_eq!(response.status(), 101);
    socket
}

fn send(socket: &mut Ws, request: Value) {
    socket.send(Message::text(request.to_string())).unwrap();
}

/// The next chat event (text message), parsed.
fn next(socket: &mut Ws) -> Value {
    loop {
        match socket.read().unwrap() {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

fn named(addr: SocketAddr, name: &str) -> Ws {
    let mut socket = ws_connect(addr);
    send(&mut socket, json!({"type": "hello", "name": name}));
    assert_eq!(next(&mut socket), json!({"type": "welcome", "name": name}));
    socket
}

/// The close frame the server sent, after which it closes the connection.
fn close_code(socket: &mut Ws) -> u16 {
    loop {
        match socket.read() {
            Ok(Message::Close(Some(frame))) => return frame.code.into(),
            Ok(Message::Close(None)) => return 1005,
            Ok(_) => {}
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}

#[test]
fn websocket_and_tcp_members_share_a_room() {
    let server = start();
    let mut alice = named(server.ws, "alice");
    let mut bob = Member::named(server.tcp, "bob");
    send(&mut alice, json!({"type": "join", "room": "r"}));
    assert_eq!(
        next(&mut alice),
        json!({"type": "joined", "room": "r", "name": "alice"})
    );
    bob.join("r");
    assert_eq!(
        next(&mut alice),
        json!({"type": "joined", "room": "r", "name": "bob"})
    );
    send(
        &mut alice,
        json!({"type": "say", "room": "r", "text": "from a browser"}),
    );
    bob.expect_msg("r", "alice", "from a browser");
    bob.say("r", "from a terminal");
    let mut seen = next(&mut alice);
    seen.as_object_mut().unwrap().remove("ts");
    assert_eq!(seen["text"], "from a browser");
    let mut seen = next(&mut alice);
    seen.as_object_mut().unwrap().remove("ts");
    assert_eq!(
        seen,
        json!({"type": "msg", "room": "r", "from": "bob", "text": "from a terminal"})
    );
    bob.expect_msg("r", "bob", "from a terminal");
    send(
        &mut alice,
        json!({"type": "dm", "to": "bob", "text": "psst"}),
    );
    assert_eq!(next(&mut alice)["type"], "dm");
    assert_eq!(bob.next()["text"], "psst");
}

#[test]
fn a_fragmented_message_is_one_request_and_pings_are_answered_between_fragments() {
    let server = start();
    let mut socket = ws_connect(server.ws);
    let parts: [&[u8]; 3] = [br#"{"type":"hel"#, br#"lo","name":"#, br#""frag"}"#];
    let fragment = |socket: &mut Ws, part: &[u8], opcode: Data, last: bool| {
        let frame = Frame::message(part.to_vec(), OpCode::Data(opcode), last);
        socket.send(Message::Frame(frame)).unwrap();
    };
    fragment(&mut socket, parts[0], Data::Text, false);
    fragment(&mut socket, parts[1], Data::Continue, false);
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    fragment(&mut socket, parts[2], Data::Continue, true);
    // The pong comes first (it answers a frame before the last fragment).
    match socket.read().unwrap() {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected the pong, got {other:?}"),
    }
    assert_eq!(
        next(&mut socket),
        json!({"type": "welcome", "name": "frag"})
    );
}

#[test]
fn the_close_handshake_is_echoed_then_the_connection_ends() {
    let server = start();
    let mut socket = named(server.ws, "leaving");
    socket
        .close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .unwrap();
    assert_eq!(close_code(&mut socket), 1000);
    // The name is free again once the member has gone.
    let mut other = Member::anonymous(server.tcp);
    let freed = common::wait_until(IO_TIMEOUT, || {
        other.send(json!({"type": "hello", "name": "leaving"}));
        other.next()["type"] == "welcome"
    });
    assert!(freed);
}

#[test]
fn oversized_and_binary_messages_close_with_their_codes_and_the_server_goes_on() {
    let server = start();
    let mut big = named(server.ws, "big");
    send(
        &mut big,
        json!({"type": "say", "room": "r", "text": "x".repeat(MAX_MESSAGE)}),
    );
    assert_eq!(close_code(&mut big), 1009, "message too big");
    let mut binary = named(server.ws, "binary");
    binary.send(Message::binary(b"\x00\x01".to_vec())).unwrap();
    assert_eq!(close_code(&mut binary), 1003, "unsupported data");
    let mut fine = named(server.ws, "fine");
    send(&mut fine, json!({"type": "ping"}));
    assert_eq!(next(&mut fine), json!({"type": "pong"}));
}

/// Sends a raw HTTP request and returns the status line of the answer.
fn status_of(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

#[test]
fn bad_handshakes_get_http_errors_and_the_page_is_served() {
    let server = start();
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    assert_eq!(
        status_of(
            server.ws,
            &format!("GET /ws HTTP/1.1\r\n{upgrade}Sec-WebSocket-Version: 13\r\n\r\n")
        ),
        "HTTP/1.1 400 Bad Request",
        "no key"
    );
    assert_eq!(
        status_of(
            server.ws,
            &format!("GET /ws HTTP/1.1\r\n{upgrade}Sec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\nSec-WebSocket-Version: 8\r\n\r\n")
        ),
        "HTTP/1.1 426 Upgrade Required"
    );
    assert_eq!(
        status_of(server.ws, "GET /ws HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(
        status_of(server.ws, "GET /other HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        status_of(server.ws, "PUT / HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    let mut page = TcpStream::connect(server.ws).unwrap();
    page.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    page.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"));
    // (wss:// when the page was loaded over https://.)
    assert!(answer.contains("new WebSocket(`${scheme}://${location.host}/ws`)"));
    // Unharmed.
    let mut after = named(server.ws, "after");
    send(&mut after, json!({"type": "ping"}));
    assert_eq!(next(&mut after), json!({"type": "pong"}));
}

/// A client frame as a browser sends it: FIN set, masked (with a fixed key).
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Sends a close frame with `payload` on a fresh member's socket and returns the
/// close payload the server answers with.
fn answer_to_close(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut socket = ws_connect(addr);
    let stream = socket.get_mut();
    stream.write_all(&masked_frame(0x8, payload)).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert_eq!(answer[0], 0x88, "a close frame: {answer:?}");
    let len = usize::from(answer[1]);
    answer[2..2 + len].to_vec()
}

#[test]
fn close_codes_are_checked_and_only_valid_ones_are_sent_back() {
    let server = start();
    let code = |payload: &[u8]| {
        let answer = answer_to_close(server.ws, payload);
        (answer.len() >= 2).then(|| u16::from_be_bytes([answer[0], answer[1]]))
    };
    assert_eq!(code(&1000u16.to_be_bytes()), Some(1000));
    assert_eq!(code(&4000u16.to_be_bytes()), Some(4000));
    assert_eq!(code(b""), None, "an empty close gets an empty close");
    // Never sent: reserved for reporting, reserved, or no code at all.
    for invalid in [999u16, 1005, 1006, 1015, 5000] {
        assert_eq!(code(&invalid.to_be_bytes()), Some(1002), "{invalid}");
    }
    assert_eq!(code(&[0x03]), Some(1002), "a one-byte payload");
    assert_eq!(
        code(&[0x03, 0xe8, 0xc3, 0x28]),
        Some(1007),
        "a reason not UTF-8"
    );
}

/// End to end through the chat. (Whether the server reads the 64 KiB in one read or
/// several depends on timing; the codec's unit test feeds the whole head at once.)
#[test]
fn an_upgrade_request_over_the_limit_is_refused() {
    let server = start();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\n\
         X-Padding: {}\r\n\r\n",
        "p".repeat(64 * 1024)
    );
    assert_eq!(
        status_of(server.ws, &request),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
}

/// Reads until the server closes; panics if it does not within `limit`.
#[track_caller]
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!("not closed within {limit:?}: {e}"),
        }
    }
}

#[test]
fn a_trickled_upgrade_and_a_partial_frame_meet_the_frame_deadline() {
    let server = start_with(&["--frame-timeout", "1"]);
    // The upgrade request a byte every 100 ms: it would take 15 s.
    let mut slow = TcpStream::connect(server.ws).unwrap();
    let request = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\n\r\n";
    let started = Instant::now();
    let mut cut = false;
    for byte in request.as_bytes() {
        if slow.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(4) {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        slow.set_nonblocking(true).unwrap();
        let mut probe = [0u8; 1];
        let closed = matches!(slow.read(&mut probe), Ok(0));
        slow.set_nonblocking(false).unwrap();
        if closed {
            cut = true;
            break;
        }
    }
    assert!(cut, "the trickled upgrade was never cut off");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "cut too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "cut too late: {elapsed:?}"
    );
    // A member that starts a frame and never finishes it.
    let mut member = ws_connect(server.ws);
    let stream = member.get_mut();
    let mut partial = masked_frame(0x1, &[b'x'; 100]);
    partial.truncate(20);
    stream.write_all(&partial).unwrap();
    let took = closed_within(stream, Duration::from_secs(4));
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // Others are served meanwhile and after.
    let mut fine = named(server.ws, "fine");
    send(&mut fine, json!({"type": "ping"}));
    assert_eq!(next(&mut fine), json!({"type": "pong"}));
}

#[test]
fn messages_held_unfinished_stay_within_the_memory_budget() {
    // 200 members each send all but the last 16 bytes of a 1 MiB message: 200 MiB
    // announced, against a budget of 32 MiB.
    const MESSAGE: usize = 1 << 20;
    let server = start_taking(MESSAGE, &["--memory-budget", "32MiB"]);
    let pid = server.server.child.id();
    let before = common::rss_kib(pid);
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(MESSAGE as u64).to_be_bytes());
    header.extend_from_slice(&[0; 4]); // mask: all zero, the payload as it is
    let body = vec![b'x'; MESSAGE - 16];
    let mut members = Vec::new();
    let mut cut = 0;
    for _ in 0..200 {
        let mut member = ws_connect(server.ws);
        let stream = member.get_mut();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        // A member reset for the budget may fail its write: that is the defence.
        if stream
            .write_all(&header)
            .and_then(|_| stream.write_all(&body))
            .is_err()
        {
            cut += 1;
        }
        members.push(member);
    }
    // The budget resets the biggest holders: memory stays near the budget, not 200 MiB.
    let grown_mib = common::rss_kib(pid).saturating_sub(before) / 1024;
    assert!(grown_mib < 96, "the server grew by {grown_mib} MiB");
    // (The server may still be reading the last ones: look again until it is done.)
    // (A member whose write failed, `cut` of them, reads as closed too.)
    let mut open: Vec<&mut TcpStream> = members.iter_mut().map(|m| m.get_mut()).collect();
    let mut closed = cut;
    common::wait_until(IO_TIMEOUT, || {
        open.retain_mut(|stream| {
            stream
                .set_read_timeout(Some(Duration::from_millis(1)))
                .unwrap();
            let mut byte = [0u8; 1];
            match stream.read(&mut byte) {
                Ok(0) => false,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
                _ => true, // still open (a read timeout)
            }
        });
        closed = 200 - open.len();
        closed >= 150
    });
    assert!(closed >= 150, "only {closed} of 200 members were cut off");
    // The node still serves.
    let mut fine = named(server.ws, "fine");
    send(&mut fine, json!({"type": "ping"}));
    assert_eq!(next(&mut fine), json!({"type": "pong"}));
}
