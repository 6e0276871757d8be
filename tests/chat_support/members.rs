//! Chat clients for the tests: a TCP member (frames out, parsed JSON events in), a UDP
//! peer, and a client with a tiny receive buffer (a slow consumer).
#![allow(dead_code)]

use std::io::{BufReader, Read};
use std::net::{SocketAddr, TcpStream, UdpSocket};

use serde_json::{json, Value};

use crate::common::{connect, read_frame, udp_client, write_frame, IO_TIMEOUT};

/// A TCP member: frames out, parsed JSON events in.
pub struct Member {
    pub name: String,
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Member {
    /// Connects without saying hello.
    pub fn anonymous(addr: SocketAddr) -> Member {
        Member::over(connect(addr))
    }

    pub fn over(stream: TcpStream) -> Member {
        let writer = stream.try_clone().unwrap();
        Member {
            name: String::new(),
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Connects and takes `name`.
    #[track_caller]
    pub fn named(addr: SocketAddr, name: &str) -> Member {
        let mut member = Member::anonymous(addr);
        member.hello(name);
        member
    }

    #[track_caller]
    pub fn hello(&mut self, name: &str) {
        self.send(json!({"type": "hello", "name": name}));
        self.expect(json!({"type": "welcome", "name": name}));
        self.name = name.to_string();
    }

    /// Joins `room` and checks the server's acknowledgment.
    #[track_caller]
    pub fn join(&mut self, room: &str) {
        self.send(json!({"type": "join", "room": room}));
        let name = self.name.clone();
        self.expect(json!({"type": "joined", "room": room, "name": name}));
    }

    pub fn say(&mut self, room: &str, text: &str) {
        self.send(json!({"type": "say", "room": room, "text": text}));
    }

    pub fn send(&mut self, request: Value) {
        self.send_raw(request.to_string().as_bytes());
    }

    pub fn send_raw(&mut self, payload: &[u8]) {
        write_frame(&mut self.writer, payload).expect("send a frame");
    }

    /// The next event, parsed.
    #[track_caller]
    pub fn next(&mut self) -> Value {
        let payload = read_frame(&mut self.reader).expect("an event within the timeout");
        serde_json::from_slice(&payload).expect("an event is JSON")
    }

    /// Asserts the next event equals `want` (ignoring a `ts`, which must be a number).
    #[track_caller]
    pub fn expect(&mut self, want: Value) {
        let got = self.next();
        assert_eq!(without_ts(got), want, "{} received", self.name);
    }

    #[track_caller]
    pub fn expect_msg(&mut self, room: &str, from: &str, text: &str) {
        self.expect(json!({"type": "msg", "room": room, "from": from, "text": text}));
    }

    /// Asserts the next event is an error whose reason contains `words`.
    #[track_caller]
    pub fn expect_error(&mut self, words: &str) {
        let got = self.next();
        assert_eq!(got["type"], "error", "{got}");
        let reason = got["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(words), "reason {reason:?} lacks {words:?}");
    }

    /// Pings and expects the pong next: proves the connection still works and that
    /// nothing else was queued for it before.
    #[track_caller]
    pub fn expect_nothing_more(&mut self) {
        self.send(json!({"type": "ping"}));
        self.expect(json!({"type": "pong"}));
    }
}

/// `event` with its `ts` field removed, after checking it is a plausible time.
#[track_caller]
pub fn without_ts(mut event: Value) -> Value {
    if let Some(object) = event.as_object_mut() {
        if let Some(ts) = object.remove("ts") {
            assert!(
                ts.as_u64().is_some_and(|ms| ms > 1_600_000_000_000),
                "ts {ts}"
            );
        }
    }
    event
}

/// A UDP peer of the chat server.
pub struct Peer {
    pub socket: UdpSocket,
    pub server: SocketAddr,
}

impl Peer {
    pub fn new(server: SocketAddr) -> Peer {
        Peer {
            socket: udp_client(),
            server,
        }
    }

    pub fn send(&self, message: Value) {
        self.send_raw(message.to_string().as_bytes());
    }

    pub fn send_raw(&self, datagram: &[u8]) {
        self.socket.send_to(datagram, self.server).unwrap();
    }

    #[track_caller]
    pub fn next(&self) -> Value {
        let mut buf = [0u8; 65_536];
        let (n, from) = self.socket.recv_from(&mut buf).expect("a datagram in time");
        assert_eq!(from, self.server);
        serde_json::from_slice(&buf[..n]).expect("a datagram is JSON")
    }

    #[track_caller]
    pub fn expect(&self, want: Value) {
        assert_eq!(without_ts(self.next()), want);
    }
}

/// A client whose kernel receive buffer is tiny, so that output queues at the server.
pub fn small_receive_buffer_client(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Reads until EOF or reset: true if the peer closed the connection.
pub fn drains_to_eof(stream: &mut TcpStream) -> bool {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}
