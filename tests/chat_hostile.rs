//! End-to-end tests of the chat's defences against hostile clients, over real loopback
//! sockets: what a UDP source that holds no name gets back, the reply rate per source,
//! a flood of new seed-style peers, the server's own output sent back, the room limit,
//! the slow-consumer reset, and a member pipelining far more requests than it reads.
//! Each test asserts a figure that the undefended server did not meet (docs/chat.md,
//! "Hostile clients").
//!
//! The timed rules (reply rate, join rate) run on a [`ClockedServer`], whose clock
//! stands still unless the test moves it, so their figures are exact.
#![cfg(feature = "chat")]

mod chat_support;
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard::services::chat::ChatSettings;

use chat_support::{start, start_clocked, stats_when};
use common::{
    connect, frame, local_config, read_frame, udp_client, wait_until, write_frame, IO_TIMEOUT,
};

/// A TCP member speaking framed JSON.
struct Member {
    stream: TcpStream,
}

impl Member {
    #[track_caller]
    fn named(addr: SocketAddr, name: &str) -> Member {
        Member::hello_over(connect(addr), name)
    }

    #[track_caller]
    fn hello_over(stream: TcpStream, name: &str) -> Member {
        let mut member = Member { stream };
        member.send(json!({"type": "hello", "name": name}));
        assert_eq!(member.next(), json!({"type": "welcome", "name": name}));
        member
    }

    fn send(&mut self, request: Value) {
        write_frame(&mut self.stream, request.to_string().as_bytes()).expect("send a frame");
    }

    #[track_caller]
    fn next(&mut self) -> Value {
        let payload = read_frame(&mut self.stream).expect("an event within the timeout");
        serde_json::from_slice(&payload).expect("an event is JSON")
    }

    /// Sends a ping and reads up to its pong; returns the events before it.
    #[track_caller]
    fn ping(&mut self) -> Vec<Value> {
        self.send(json!({"type": "ping"}));
        let mut before = Vec::new();
        loop {
            let event = self.next();
            if event == json!({"type": "pong"}) {
                return before;
            }
            before.push(event);
        }
    }
}

/// Sends `datagram` from `socket` and returns the answer, if one comes within
/// `within`.
fn ask(socket: &UdpSocket, server: SocketAddr, datagram: &[u8], within: Duration) -> Vec<u8> {
    socket.send_to(datagram, server).unwrap();
    receive(socket, within).unwrap_or_default()
}

/// The next datagram on `socket` within `within`, if any.
fn receive(socket: &UdpSocket, within: Duration) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = vec![0u8; 1 << 17];
    let got = socket
        .recv_from(&mut buf)
        .ok()
        .map(|(n, _)| buf[..n].to_vec());
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    got
}

/// Every datagram already waiting on `socket`.
fn drain(socket: &UdpSocket) -> Vec<Vec<u8>> {
    socket.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 1 << 17];
    let mut got = Vec::new();
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    socket.set_nonblocking(false).unwrap();
    got
}

#[test]
fn a_non_members_datagram_gets_at_most_three_times_its_size_back() {
    let (server, stats) = start(local_config(), ChatSettings::default());
    // Enough rooms that the room list is far larger than the question.
    let mut host = Member::named(server.tcp(), "host");
    for i in 0..40 {
        host.send(json!({"type": "join", "room": format!("a-rather-long-room-name-{i:03}")}));
    }
    let before_pong = host.ping();
    assert_eq!(before_pong.len(), 40, "every join acknowledged");
    host.send(json!({"type": "list"}));
    let rooms = host.next();
    let member_answer = rooms.to_string().len();
    assert!(member_answer > 1000, "a member gets the whole list");

    let stranger = udp_client();
    for question in [
        &br#"{"type":"list"}"#[..],
        br#"{"type":"join","room":"r"}"#,
        br#"{"type":"say","room":"lobby","text":"x"}"#,
        br#"{"type":"ping"}"#,
    ] {
        let answer = ask(&stranger, server.udp(), question, IO_TIMEOUT);
        assert!(
            !answer.is_empty() && answer.len() <= 3 * question.len(),
            "{} bytes back for {}",
            answer.len(),
            String::from_utf8_lossy(question)
        );
    }
    // The list itself was not sent in pieces either: nothing else came.
    assert!(drain(&stranger).is_empty());
    assert_eq!(stats.get().udp_unanswered, 0, "short errors were sent");
}

#[test]
fn a_one_byte_garbage_datagram_gets_no_answer() {
    let (server, stats) = start(local_config(), ChatSettings::default());
    let stranger = udp_client();
    for garbage in [&b"x"[..], b"\0", b"not json at all!", b"{\"type\":"] {
        stranger.send_to(garbage, server.udp()).unwrap();
    }
    stats_when(&stats, |s| s.udp_unanswered == 4);
    // The next thing to arrive is the pong of a ping sent after the garbage.
    let pong = ask(&stranger, server.udp(), br#"{"type":"ping"}"#, IO_TIMEOUT);
    assert_eq!(pong, br#"{"type":"pong"}"#);
    assert!(drain(&stranger).is_empty());
}

#[test]
fn the_reply_rate_per_source_holds_over_a_burst() {
    // 300 bytes a second, bursts of 600: 15-byte pongs, so at most 40 in a burst.
    let settings = ChatSettings {
        udp_reply_rate: 300,
        ..ChatSettings::default()
    };
    let (server, stats) = start_clocked(settings);
    let member = udp_client();
    let welcome = ask(
        &member,
        server.udp(),
        br#"{"type":"hello","name":"m"}"#,
        IO_TIMEOUT,
    );
    assert_eq!(welcome, br#"{"type":"welcome","name":"m"}"#);
    let allowance = 600 - welcome.len();
    const BURST: usize = 200;
    for _ in 0..BURST {
        member.send_to(br#"{"type":"ping"}"#, server.udp()).unwrap();
    }
    // Every ping is answered or counted as over the rate.
    let mut pongs = 0;
    let settled = wait_until(IO_TIMEOUT, || {
        pongs += drain(&member).len();
        pongs + stats.get().udp_rate_limited as usize == BURST
    });
    assert!(settled, "{pongs} pongs, {:?}", stats.get());
    assert_eq!(
        pongs,
        allowance / 15,
        "the burst allowance, on a clock standing still"
    );

    // A second later the source has earned 300 bytes: 20 pongs.
    server.advance(Duration::from_secs(1));
    let limited = stats.get().udp_rate_limited as usize;
    for _ in 0..BURST {
        member.send_to(br#"{"type":"ping"}"#, server.udp()).unwrap();
    }
    let mut more = 0;
    let settled = wait_until(IO_TIMEOUT, || {
        more += drain(&member).len();
        more + stats.get().udp_rate_limited as usize == limited + BURST
    });
    assert!(settled, "{more} pongs, {:?}", stats.get());
    assert_eq!(more, (allowance % 15 + 300) / 15);
    server.stop();
}

#[test]
fn a_flood_of_new_seed_style_peers_is_admitted_only_at_the_join_rate() {
    let settings = ChatSettings {
        udp_join_rate: 20,
        ..ChatSettings::default()
    };
    let (server, stats) = start_clocked(settings);
    let mut alice = Member::named(server.tcp(), "alice");
    alice.send(json!({"type": "join", "room": "lobby"}));
    assert_eq!(alice.next()["type"], "joined");

    const PEERS: usize = 300;
    let peers: Vec<UdpSocket> = (0..PEERS)
        .map(|i| {
            let peer = udp_client();
            let seed = format!(r#"{{"name": "p{i:04}", "msg": "hi from {i}"}}"#);
            peer.send_to(seed.as_bytes(), server.udp()).unwrap();
            peer
        })
        .collect();
    let counted = stats_when(&stats, |s| {
        s.messages_in + s.udp_turned_away == PEERS as u64
    });
    assert_eq!(counted.messages_in, 20, "one burst of the join rate");
    assert_eq!(counted.udp_turned_away, PEERS as u64 - 20);
    assert_eq!(counted.members, 21, "alice and the admitted peers");

    // Alice heard one message per admitted peer and nothing for the rest.
    let heard = alice.ping();
    assert_eq!(heard.len(), 20, "{heard:?}");
    assert!(heard
        .iter()
        .all(|e| e["type"] == "msg" && e["room"] == "lobby"));

    // A newcomer turned away is told so in its own form, briefly.
    let last = peers.last().unwrap();
    let refusal = receive(last, IO_TIMEOUT).expect("an answer to a turned-away peer");
    let refusal: Value = serde_json::from_slice(&refusal).unwrap();
    assert_eq!(refusal["name"], "switchboard");
    assert!(
        refusal["msg"].as_str().unwrap().contains("busy"),
        "{refusal}"
    );

    // A second later, the join rate admits newcomers again.
    server.advance(Duration::from_secs(1));
    last.send_to(br#"{"name": "late", "msg": "again"}"#, server.udp())
        .unwrap();
    stats_when(&stats, |s| s.messages_in == 21);
    let heard = alice.ping();
    assert_eq!(heard.len(), 1);
    assert_eq!(heard[0]["from"], "late");
    drop(peers);
    server.stop();
}

#[test]
fn the_join_past_the_room_limit_is_refused_and_the_member_stays() {
    let (server, stats) = start(local_config(), ChatSettings::default());
    let mut member = Member::named(server.tcp(), "hoarder");
    for i in 0..101 {
        member.send(json!({"type": "join", "room": format!("r{i:03}")}));
    }
    let answers = member.ping();
    assert_eq!(answers.len(), 101);
    assert!(answers[..100].iter().all(|e| e["type"] == "joined"));
    assert_eq!(answers[100]["type"], "error", "{}", answers[100]);
    let reason = answers[100]["reason"].as_str().unwrap();
    assert!(reason.contains("in 100 rooms already"), "{reason}");
    assert_eq!(
        stats_when(&stats, |s| s.rooms == 100).room_limit_refusals,
        1
    );
    // Still a member: it talks in its rooms, and leaving one makes room for another.
    member.send(json!({"type": "say", "room": "r000", "text": "still here"}));
    assert_eq!(member.next()["text"], "still here");
    member.send(json!({"type": "leave", "room": "r000"}));
    member.send(json!({"type": "join", "room": "r100"}));
    let answers = member.ping();
    assert_eq!(answers[0]["type"], "left");
    assert_eq!(answers[1]["type"], "joined");
}

/// A client whose kernel receive buffer is tiny, so that output queues at the server.
fn small_receive_buffer_client(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

#[test]
fn a_slow_consumer_cut_off_is_reset_not_drained() {
    let mut config = local_config();
    config.write_limit = 256 * 1024;
    let (server, stats) = start(config, ChatSettings::default());
    let mut slow = Member::hello_over(small_receive_buffer_client(server.tcp()), "slow");
    slow.send(json!({"type": "join", "room": "r"}));
    assert_eq!(slow.next()["type"], "joined");
    let mut fast = Member::named(server.tcp(), "fast");
    fast.send(json!({"type": "join", "room": "r"}));
    assert_eq!(fast.next()["type"], "joined");
    // From now on `slow` reads nothing until it is cut off.

    let text = "x".repeat(4000);
    let mut said = 0;
    while stats.get().slow_consumers == 0 {
        assert!(said < 10_000, "the slow consumer was never cut off");
        for _ in 0..16 {
            fast.send(json!({"type": "say", "room": "r", "text": text}));
        }
        said += 16;
        fast.ping();
    }
    let started = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    let mut drained = 0;
    let ended = loop {
        match slow.stream.read(&mut buf) {
            Ok(0) => break "EOF",
            Ok(n) => drained += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("reading the cut-off member: {e}"),
        }
    };
    let took = started.elapsed();
    assert_eq!(ended, "reset", "after {drained} bytes");
    assert!(took < Duration::from_secs(2), "the end took {took:?}");
    // At most what its own receive buffer held: the server's queue and its socket's
    // send buffer were thrown away.
    assert!(drained < 256 * 1024, "{drained} bytes drained");
    assert_eq!(stats.get().slow_consumers, 1);
}

#[test]
fn a_pipelining_member_keeps_the_servers_output_bounded_and_others_fast() {
    let mut config = local_config();
    config.write_limit = 64 * 1024;
    let write_limit = config.write_limit;
    let (server, stats) = start(config, ChatSettings::default());
    let mut host = Member::named(server.tcp(), "host");
    for i in 0..20 {
        host.send(json!({"type": "join", "room": format!("a-rather-long-room-name-{i:03}")}));
    }
    host.send(json!({"type": "join", "room": "talk"}));
    assert_eq!(host.ping().len(), 21);

    // About 128 KiB of requests in one write: nine `list`s, then a `leave` that is
    // answered with an error naming its number, so the order can be checked.
    let mut pipe = Member::hello_over(small_receive_buffer_client(server.tcp()), "pipe");
    pipe.send(json!({"type": "join", "room": "talk"}));
    assert_eq!(pipe.next()["type"], "joined");
    assert_eq!(host.next()["type"], "joined");
    let list = frame(br#"{"type":"list"}"#);
    let mut requests = Vec::new();
    let mut groups = 0;
    while requests.len() < 128 * 1024 {
        for _ in 0..9 {
            requests.extend_from_slice(&list);
        }
        let leave = json!({"type": "leave", "room": format!("q{groups:05}")});
        requests.extend_from_slice(&frame(leave.to_string().as_bytes()));
        groups += 1;
    }
    pipe.stream.write_all(&requests).unwrap();

    // While `pipe` reads nothing, another member's round trips stay fast and the
    // server's buffers stay small.
    let handle = server.handle();
    let buffered = move || {
        let (tx, rx) = mpsc::channel();
        handle
            .post(move |_, ctx| tx.send(ctx.stats().buffered_bytes).unwrap())
            .unwrap();
        rx.recv_timeout(IO_TIMEOUT).unwrap()
    };
    let mut other = Member::named(server.tcp(), "other");
    let (mut most, mut slowest) = (0, Duration::ZERO);
    for i in 0..50 {
        if i == 25 {
            // A room event for `pipe` while its output rests at the write limit.
            host.send(json!({"type": "say", "room": "talk", "text": "while held"}));
            assert_eq!(host.next()["text"], "while held");
        }
        let sent = Instant::now();
        assert!(other.ping().is_empty());
        slowest = slowest.max(sent.elapsed());
        most = most.max(buffered());
    }
    eprintln!("pipelining: server buffers at most {most} bytes, slowest ping {slowest:?}");
    assert!(
        slowest < Duration::from_millis(300),
        "another member waited {slowest:?}"
    );
    // The write limit, one answer over it, the held requests in the read buffer (128
    // KiB), and the other members' small buffers, counted in whole KiB.
    let bound = (write_limit + 128 * 1024 + 64 * 1024) as u64;
    assert!(most <= bound, "{most} bytes buffered, over {bound}");
    assert!(most > 0);

    // Every answer arrives, in order, once it reads, and the room's message among them:
    // a member held by its own requests is not a slow consumer.
    pipe.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut room_messages = 0;
    let mut next_answer = || loop {
        let event = pipe.next();
        if event["type"] != "msg" {
            return event;
        }
        assert_eq!(event["text"], "while held");
        room_messages += 1;
    };
    for group in 0..groups {
        for _ in 0..9 {
            let rooms = next_answer();
            assert_eq!(rooms["type"], "rooms", "group {group}: {rooms}");
        }
        let error = next_answer();
        let want = format!("not in room q{group:05}");
        assert_eq!(error["reason"], want.as_str(), "group {group}");
    }
    assert_eq!(room_messages, 1);
    assert!(pipe.ping().is_empty());
    assert_eq!(stats.get().slow_consumers, 0);
}

#[test]
fn the_servers_own_output_sent_back_is_not_answered() {
    let (server, stats) = start_clocked(ChatSettings::default());
    let mut alice = Member::named(server.tcp(), "alice");
    alice.send(json!({"type": "join", "room": "lobby"}));
    assert_eq!(alice.next()["type"], "joined");

    // Events and a name/msg error, as an echo service given a forged source would send
    // them back: dropped, so the next thing the sender gets is the pong it asks for.
    let stranger = udp_client();
    for output in [
        &br#"{"type":"pong"}"#[..],
        br#"{"type":"error","reason":"say hello first"}"#,
        br#"{"name":"switchboard","msg":"error: server busy: try again later"}"#,
    ] {
        stranger.send_to(output, server.udp()).unwrap();
    }
    stats_when(&stats, |s| s.udp_reflections == 3);
    let pong = ask(&stranger, server.udp(), br#"{"type":"ping"}"#, IO_TIMEOUT);
    assert_eq!(pong, br#"{"type":"pong"}"#);
    assert!(drain(&stranger).is_empty());
    assert_eq!(stats.get().udp_unanswered, 0, "counted as reflections only");

    // A name/msg member's echo of its own message, come straight back, is not said again.
    let seed = udp_client();
    let said = br#"{"name":"seed","msg":"hi"}"#;
    let echo = ask(&seed, server.udp(), said, IO_TIMEOUT);
    assert_eq!(echo, said, "compact JSON: the echo is the same bytes");
    seed.send_to(&echo, server.udp()).unwrap();
    let counted = stats_when(&stats, |s| s.udp_reflections == 4);
    assert_eq!(counted.messages_in, 1);
    assert!(receive(&seed, Duration::from_millis(100)).is_none());
    assert_eq!(alice.ping().len(), 1, "the lobby heard it once");

    // Past the window (2 s) the same bytes are the member speaking again.
    server.advance(Duration::from_secs(2));
    assert_eq!(ask(&seed, server.udp(), said, IO_TIMEOUT), said);
    assert_eq!(
        stats_when(&stats, |s| s.messages_in == 2).udp_reflections,
        4
    );
    assert_eq!(alice.ping().len(), 1);
    server.stop();
}

#[test]
fn room_traffic_to_other_members_is_not_held_by_the_reply_rate() {
    // 300 bytes a second, bursts of 600, on a clock standing still. Every loopback
    // client is 127.0.0.1, one source: the speaker's own echoes soon go over the rate,
    // but the same messages to another member are room traffic, not answers.
    let settings = ChatSettings {
        udp_reply_rate: 300,
        ..ChatSettings::default()
    };
    let (server, stats) = start_clocked(settings);
    let member = |name: &str| {
        let peer = udp_client();
        for request in [
            json!({"type": "hello", "name": name}),
            json!({"type": "join", "room": "r"}),
        ] {
            let answer = ask(
                &peer,
                server.udp(),
                request.to_string().as_bytes(),
                IO_TIMEOUT,
            );
            assert!(!answer.is_empty(), "no answer to {request}");
        }
        peer
    };
    let listener = member("listener");
    let speaker = member("speaker");
    assert_eq!(drain(&listener).len(), 1, "the speaker's arrival");

    const SAID: usize = 40;
    let say = json!({"type": "say", "room": "r", "text": "x".repeat(20)}).to_string();
    for _ in 0..SAID {
        speaker.send_to(say.as_bytes(), server.udp()).unwrap();
    }
    let mut heard = 0;
    let all_heard = wait_until(IO_TIMEOUT, || {
        heard += drain(&listener).len();
        heard == SAID
    });
    assert!(all_heard, "the listener heard {heard} of {SAID}");
    let echoes = drain(&speaker).len();
    assert!(echoes < SAID / 2, "{echoes} echoes: the rate did not hold");
    assert_eq!(
        stats_when(&stats, |s| s.messages_in == SAID as u64).udp_rate_limited,
        (SAID - echoes) as u64
    );
    server.stop();
}
