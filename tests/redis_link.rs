//! `Link` against a real `redis-server` (see `redis_support`), over blocking sockets:
//! the handshake, replies matched to their tags, pub/sub between two links, a server
//! killed and restarted under a link that resubscribes, and one frozen past the reply
//! timeout whose late replies still match their commands. Then a fake server over a
//! real socket whose reply nests without end: an error, not a crash.

mod redis_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use redis_support::RedisServer;
use switchboard::services::chat::redis::link::{self, Link, LinkEvent, LinkState, MIN_BACKOFF};
use switchboard::services::chat::redis::resp::{Reply, RespError, MAX_DEPTH};

/// How long a test waits for what it expects from Redis.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A `Link` and the blocking socket under it: what the reactor will do, minus the
/// reactor.
struct Client {
    link: Link<u32>,
    stream: Option<TcpStream>,
}

impl Client {
    fn new() -> Client {
        Client {
            link: Link::new(Instant::now(), 1 << 20),
            stream: None,
        }
    }

    /// Dials `addr` and sends what `connected` asks for.
    #[track_caller]
    fn connect(&mut self, addr: SocketAddr) {
        self.link.connecting();
        let stream = TcpStream::connect(addr).expect("connect to redis-server");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        self.stream = Some(stream);
        let hello = self.link.connected(Instant::now());
        self.send(&hello);
    }

    #[track_caller]
    fn send(&mut self, bytes: &[u8]) {
        self.stream.as_mut().unwrap().write_all(bytes).unwrap();
    }

    /// Sends a command tagged `tag`; the link must be up.
    #[track_caller]
    fn command(&mut self, tag: u32, args: &[&[u8]]) {
        let bytes = self
            .link
            .command(Instant::now(), tag, args)
            .expect("the link is up");
        self.send(&bytes);
    }

    #[track_caller]
    fn subscribe(&mut self, channel: &[u8]) {
        let bytes = self
            .link
            .subscribe(channel)
            .expect("a new channel, link up");
        self.send(&bytes);
    }

    /// Reads once and gives the bytes to the link: what it made of them.
    #[track_caller]
    fn read_once(&mut self) -> Result<Vec<LinkEvent<u32>>, RespError> {
        let mut buf = vec![0u8; 1 << 20];
        let len = self.stream.as_mut().unwrap().read(&mut buf).expect("read");
        assert!(len > 0, "the server closed the connection");
        self.link.input(&buf[..len])
    }

    /// Reads until the link has made `n` events of the input, failing after `TIMEOUT`.
    #[track_caller]
    fn events(&mut self, n: usize) -> Vec<LinkEvent<u32>> {
        let deadline = Instant::now() + TIMEOUT;
        let mut events = Vec::new();
        let mut buf = [0u8; 4096];
        while events.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {events:?} within {TIMEOUT:?}"
            );
            let read = self.stream.as_mut().unwrap().read(&mut buf);
            match read {
                Ok(0) => panic!("redis-server closed the connection after {events:?}"),
                Ok(len) => events.extend(self.link.input(&buf[..len]).unwrap()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e} after {events:?}"),
            }
        }
        assert_eq!(events.len(), n, "more events than expected: {events:?}");
        events
    }

    /// Sends `PING` with `tag` and waits for its `PONG`: once it is back, Redis has
    /// carried out everything sent before it (a `SUBSCRIBE`, say).
    #[track_caller]
    fn sync(&mut self, tag: u32) {
        self.command(tag, &[b"PING"]);
        assert_eq!(self.events(1), vec![reply(tag, simple(b"PONG"))]);
    }

    /// Reads until the server's end of the connection is gone (end of stream or reset).
    #[track_caller]
    fn wait_closed(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        let mut buf = [0u8; 4096];
        loop {
            assert!(Instant::now() < deadline, "the connection is still open");
            match self.stream.as_mut().unwrap().read(&mut buf) {
                Ok(0) => break,
                Ok(len) => panic!("unexpected bytes: {:?}", &buf[..len]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        self.stream = None;
    }
}

fn reply(tag: u32, reply: Reply) -> LinkEvent<u32> {
    LinkEvent::Reply { tag, reply }
}

fn simple(bytes: &[u8]) -> Reply {
    Reply::Simple(bytes.to_vec())
}

fn message(channel: &[u8], payload: &[u8]) -> LinkEvent<u32> {
    LinkEvent::Message {
        channel: channel.to_vec(),
        payload: payload.to_vec(),
    }
}

#[test]
fn replies_come_back_with_their_tags() {
    let redis = RedisServer::start();
    let mut client = Client::new();
    client.connect(redis.addr());
    assert_eq!(client.link.state(), LinkState::Up);

    // Sent together, before the HELLO reply is read: it is the link's, not ours.
    client.command(1, &[b"SET", b"greeting", b"hello"]);
    client.command(2, &[b"GET", b"greeting"]);
    client.command(3, &[b"GET", b"missing"]);
    client.command(4, &[b"INCRBY", b"counter", b"5"]);
    client.command(5, &[b"NO-SUCH-COMMAND"]);
    let events = client.events(5);
    assert_eq!(
        events[..4].to_vec(),
        vec![
            reply(1, simple(b"OK")),
            reply(2, Reply::Blob(b"hello".to_vec())),
            reply(3, Reply::Null),
            reply(4, Reply::Number(5)),
        ]
    );
    assert!(
        matches!(&events[4], LinkEvent::Reply { tag: 5, reply: Reply::Error(e) } if e.starts_with(b"ERR")),
        "{:?}",
        events[4]
    );
    assert_eq!(client.link.pending(), 0);
}

#[test]
fn a_published_message_reaches_the_subscriber() {
    let redis = RedisServer::start();
    let mut subscriber = Client::new();
    subscriber.connect(redis.addr());
    subscriber.subscribe(b"room:lobby");
    // The subscription's confirmation is a push: the PING's tag gets the PONG.
    subscriber.sync(1);

    let mut publisher = Client::new();
    publisher.connect(redis.addr());
    publisher.command(7, &[b"PUBLISH", b"room:lobby", b"hi there"]);
    assert_eq!(publisher.events(1), vec![reply(7, Reply::Number(1))]);

    assert_eq!(
        subscriber.events(1),
        vec![message(b"room:lobby", b"hi there")]
    );

    // A subscribed RESP3 connection still runs ordinary commands.
    subscriber.command(2, &[b"SET", b"k", b"v"]);
    assert_eq!(subscriber.events(1), vec![reply(2, simple(b"OK"))]);
}

#[test]
fn a_restarted_server_gets_the_subscriptions_back() {
    let mut redis = RedisServer::start();
    let mut subscriber = Client::new();
    subscriber.connect(redis.addr());
    subscriber.subscribe(b"room:a");
    subscriber.subscribe(b"room:b");
    subscriber.sync(1);
    // A command that will never be answered: it blocks until the server is gone.
    subscriber.command(2, &[b"BLPOP", b"empty-list", b"0"]);
    subscriber.command(3, &[b"PING"]);

    redis.stop();
    subscriber.wait_closed();
    let now = Instant::now();
    let (retry_at, tags) = subscriber.link.closed(now);
    assert_eq!(tags, vec![2, 3], "the unanswered commands, oldest first");
    assert_eq!(retry_at, now + MIN_BACKOFF);
    assert!(!subscriber.link.due(now));
    assert!(
        subscriber.link.command(now, 4, &[b"PING"]).is_none(),
        "down"
    );

    redis.restart();
    assert!(subscriber.link.due(retry_at));
    subscriber.connect(redis.addr());
    // connected() sent HELLO and one SUBSCRIBE for both channels; once this PONG is
    // back, both are in effect on the new server.
    subscriber.sync(5);

    let mut publisher = Client::new();
    publisher.connect(redis.addr());
    publisher.command(1, &[b"PUBLISH", b"room:b", b"after the restart"]);
    assert_eq!(publisher.events(1), vec![reply(1, Reply::Number(1))]);
    publisher.command(2, &[b"PUBLISH", b"room:a", b"and here"]);
    assert_eq!(publisher.events(1), vec![reply(2, Reply::Number(1))]);

    assert_eq!(
        subscriber.events(2),
        vec![
            message(b"room:b", b"after the restart"),
            message(b"room:a", b"and here"),
        ]
    );
}

#[test]
fn late_replies_from_a_frozen_server_still_match_their_commands() {
    let redis = RedisServer::start();
    let mut client = Client::new();
    client.connect(redis.addr());
    client.command(1, &[b"SET", b"k", b"v"]);
    assert_eq!(client.events(1), vec![reply(1, simple(b"OK"))]);
    assert!(client.link.is_answering());

    redis.pause();
    client.command(2, &[b"GET", b"k"]);
    client.command(3, &[b"INCR", b"n"]);
    // Past the timeout, both tags are given back, once, and the link is not answering.
    let overdue = Instant::now() + link::DEFAULT_REPLY_TIMEOUT;
    assert_eq!(client.link.expire(overdue), vec![2, 3]);
    assert_eq!(client.link.expire(overdue), Vec::<u32>::new());
    assert!(!client.link.is_answering());

    redis.resume();
    client.command(4, &[b"INCR", b"n"]);
    assert_eq!(
        client.events(3),
        vec![
            LinkEvent::Late {
                tag: 2,
                reply: Reply::Blob(b"v".to_vec())
            },
            LinkEvent::Late {
                tag: 3,
                reply: Reply::Number(1)
            },
            reply(4, Reply::Number(2)),
        ]
    );
    assert!(client.link.is_answering());
    assert_eq!(client.link.pending(), 0);
}

#[test]
fn a_reply_nested_without_end_is_refused_not_a_crash() {
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = Client::new();
    client.connect(fake.local_addr().unwrap());
    let (mut server, _) = fake.accept().unwrap();
    server.write_all(b"%0\r\n").unwrap(); // HELLO's answer
    server.write_all(&b"*1\r\n".repeat(200_000)).unwrap();
    client.command(1, &[b"PING"]);
    let deadline = Instant::now() + TIMEOUT;
    let err = loop {
        assert!(Instant::now() < deadline, "no error within {TIMEOUT:?}");
        match client.read_once() {
            Ok(events) => assert_eq!(events, vec![]),
            Err(e) => break e,
        }
    };
    assert_eq!(err, RespError::TooDeep { limit: MAX_DEPTH });
    // The caller closes the connection; the link redials later, with a clean reader.
    let (retry_at, tags) = client.link.closed(Instant::now());
    assert_eq!(tags, vec![1]);
    assert!(client.link.due(retry_at));
}
