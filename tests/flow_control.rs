//! Flow control end to end: a service pausing and resuming a connection's reading, the
//! write limit and `on_drained`, half-closed connections (the peer's, closed after the
//! replies by default or kept open by the service) and `shutdown_write` (ours).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::*;
use switchboard::{
    CloseMode, CloseReason, Config, ConnId, Context, LengthCodec, Origin, SendError, Service,
    TimerId,
};

/// What both test services record. Clients are numbered in the order they connect.
#[derive(Debug, Default)]
struct Log {
    conns: Vec<ConnId>,
    /// Frames received: (client, payload).
    received: Vec<(usize, Vec<u8>)>,
    /// on_drained: (client, output still queued then).
    drained: Vec<(usize, usize)>,
    /// on_peer_closed: the client.
    peer_closed: Vec<usize>,
    /// on_close: (client, reason).
    closed: Vec<(usize, CloseReason)>,
    /// Replies refused: (client, why).
    refused: Vec<(usize, SendError)>,
}

impl Log {
    /// The payloads received from `client`.
    fn from(&self, client: usize) -> Vec<&[u8]> {
        let from_client = self.received.iter().filter(|(c, _)| *c == client);
        from_client.map(|(_, p)| p.as_slice()).collect()
    }
}

/// How the services answer a frame from `me`:
/// - "pause": stop reading me; "resume N": read client N again;
/// - "tell N TEXT": send TEXT to client N;
/// - "flood": queue 8 MiB of 64 KiB frames for me; "bulk N": one frame of N bytes;
/// - "last": reply, then shut our side (FIN after the reply), reading on;
/// - "later": in a second, send "from the timer" and close after flushing;
/// - "sink ...": no reply;
/// - anything else: reply "got " and the payload.
fn on_frame<S: Service<Timer = ()>>(
    log: &mut Log,
    ctx: &mut Context<'_, S>,
    conn: ConnId,
    me: usize,
    payload: &[u8],
) {
    log.received.push((me, payload.to_vec()));
    let text = String::from_utf8_lossy(payload).into_owned();
    let mut words = text.splitn(3, ' ');
    let reply = match (words.next().unwrap(), words.next(), words.next()) {
        ("pause", None, None) => {
            ctx.pause_reading(conn);
            "paused".to_string()
        }
        ("resume", Some(n), None) => {
            ctx.resume_reading(log.conns[n.parse::<usize>().unwrap()]);
            "resumed".to_string()
        }
        ("tell", Some(n), Some(rest)) => {
            let to = log.conns[n.parse::<usize>().unwrap()];
            ctx.send(to, rest.as_bytes()).unwrap();
            "told".to_string()
        }
        ("flood", None, None) => {
            for _ in 0..128 {
                ctx.send(conn, &[b'f'; 64 * 1024]).unwrap();
            }
            assert!(ctx.queued_output(conn).unwrap() > ctx.write_limit());
            return;
        }
        ("bulk", Some(n), None) => {
            ctx.send(conn, &vec![b'b'; n.parse().unwrap()]).unwrap();
            return;
        }
        ("last", None, None) => {
            ctx.send(conn, b"ok").unwrap();
            ctx.shutdown_write(conn);
            return;
        }
        ("sink", _, _) => return,
        ("later", None, None) => {
            ctx.set_conn_timer(conn, Duration::from_secs(1), ());
            "timer set".to_string()
        }
        _ => format!("got {text}"),
    };
    if let Err(e) = ctx.send(conn, reply.as_bytes()) {
        log.refused.push((me, e));
    }
}

/// The two services: `Valve` leaves `on_peer_closed` to the default (close once the
/// replies are written); `HalfOpen` keeps the connection and says it is still there.
macro_rules! flow_service {
    ($name:ident { $($extra:tt)* }) => {
        #[derive(Debug, Default)]
        struct $name {
            log: Log,
        }

        impl Service for $name {
            /// The client's number.
            type Conn = usize;
            type Timer = ();
            type Codec = LengthCodec;

            fn on_connect(&mut self, _: &mut Context<'_, Self>, conn: ConnId, me: &mut usize, _: Origin) {
                *me = self.log.conns.len();
                self.log.conns.push(conn);
            }

            fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, me: &mut usize, payload: &[u8]) {
                on_frame(&mut self.log, ctx, conn, *me, payload);
            }

            fn on_drained(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, me: &mut usize) {
                let queued = ctx.queued_output(conn).unwrap();
                self.log.drained.push((*me, queued));
                ctx.send(conn, b"drained").unwrap();
            }

            fn on_conn_timer(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut usize, _: TimerId, _: ()) {
                ctx.send(conn, b"from the timer").unwrap();
                ctx.close(conn, CloseMode::Flush);
            }

            fn on_close(&mut self, _: &mut Context<'_, Self>, _: ConnId, me: usize, reason: CloseReason) {
                self.log.closed.push((me, reason));
            }

            $($extra)*
        }
    };
}

flow_service!(Valve {});

flow_service!(HalfOpen {
    fn on_peer_closed(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, me: &mut usize) {
        self.log.peer_closed.push(*me);
        ctx.send(conn, b"still here").unwrap();
    }
});

fn driven<S: Service<Codec = LengthCodec> + Default>(config: Config) -> Driven<S> {
    Driven::start(config, S::default(), LengthCodec::new(1 << 20))
}

/// Connects the next client and waits until the server has it.
#[track_caller]
fn client<S: Service>(server: &mut Driven<S>) -> TcpStream {
    let accepted = server.reactor.stats().accepted;
    let stream = connect(server.tcp());
    server.turn_until("accepted", |r| r.stats().accepted > accepted);
    stream
}

/// Sends a frame and turns until the server has read it.
#[track_caller]
fn send<S: Service>(server: &mut Driven<S>, stream: &mut TcpStream, payload: &[u8]) {
    let before = server.reactor.stats().frames_in;
    write_frame(stream, payload).unwrap();
    server.turn_until("the frame arrived", |r| r.stats().frames_in > before);
}

#[test]
fn paused_reading_holds_frames_back_until_resumed_and_loses_none() {
    let mut server = driven::<Valve>(local_config());
    let mut paused = client(&mut server);
    let mut other = client(&mut server);
    send(&mut server, &mut paused, b"pause");
    assert_eq!(read_frame(&mut paused).unwrap(), b"paused");

    // Frames sent now wait in the kernel; more follow from a thread, as many as TCP
    // lets it write while nobody reads.
    for i in 0..3 {
        write_frame(&mut paused, format!("early {i}").as_bytes()).unwrap();
    }
    let writer = {
        let mut stream = paused.try_clone().unwrap();
        std::thread::spawn(move || {
            for i in 0..2000 {
                let mut payload = format!("bulk {i} ").into_bytes();
                payload.resize(1024, b'.');
                write_frame(&mut stream, &payload).unwrap();
            }
        })
    };
    // The other connection's frame is read after the early ones were in the socket:
    // had the paused connection been read, its frames would have arrived by now.
    send(&mut server, &mut other, b"ping");
    for _ in 0..20 {
        server.turn();
    }
    assert_eq!(server.reactor.service().log.from(0), [b"pause"]);
    assert_eq!(read_frame(&mut other).unwrap(), b"got ping");

    // Resumed by the other connection: every frame arrives, in order.
    send(&mut server, &mut other, b"resume 0");
    server.turn_until("all frames arrived", |r| {
        r.service().log.from(0).len() == 1 + 3 + 2000
    });
    writer.join().unwrap();
    let log = &server.reactor.service().log;
    let frames = log.from(0);
    for i in 0..3 {
        assert_eq!(frames[1 + i], format!("early {i}").as_bytes());
    }
    for i in 0..2000 {
        let frame = frames[4 + i];
        assert!(frame.starts_with(format!("bulk {i} ").as_bytes()) && frame.len() == 1024);
    }
}

#[test]
fn on_drained_follows_each_time_output_passed_the_write_limit_and_drained() {
    let mut config = local_config();
    config.write_limit = 64 * 1024; // low-water mark: half of it
    let mut server = driven::<Valve>(config);
    let mut slow = client(&mut server);
    let mut other = client(&mut server);
    // Replies within the limit: nothing to drain.
    for i in 0..10 {
        send(&mut server, &mut slow, format!("small {i}").as_bytes());
        assert_eq!(
            read_frame(&mut slow).unwrap(),
            format!("got small {i}").as_bytes()
        );
    }
    assert!(server.reactor.service().log.drained.is_empty());

    for round in 1..=2 {
        send(&mut server, &mut slow, b"flood");
        // While 8 MiB wait for the client, the server stops reading it (backpressure)
        // and there is nothing drained yet.
        write_frame(&mut slow, format!("during {round}").as_bytes()).unwrap();
        send(&mut server, &mut other, b"ping");
        assert_eq!(read_frame(&mut other).unwrap(), b"got ping");
        for _ in 0..20 {
            server.turn();
        }
        let log = &server.reactor.service().log;
        assert_eq!(
            log.drained.len(),
            round - 1,
            "drained before the client read"
        );
        assert_eq!(
            log.from(0).last().unwrap(),
            b"flood",
            "read while congested"
        );

        // The client reads it all: the queue drains, on_drained says so (after the
        // flood), and reading resumes.
        let reader = {
            let mut stream = slow.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut frames = Vec::new();
                while frames.len() < 128 + 2 {
                    frames.push(read_frame(&mut stream).unwrap());
                }
                frames
            })
        };
        server.turn_until("the client read everything", |_| reader.is_finished());
        let frames = reader.join().unwrap();
        assert!(frames[..128].iter().all(|f| f == &vec![b'f'; 64 * 1024]));
        assert_eq!(frames[128], b"drained");
        assert_eq!(frames[129], format!("got during {round}").as_bytes());
        let log = &server.reactor.service().log;
        assert_eq!(log.drained.len(), round);
        let (who, queued) = log.drained[round - 1];
        assert_eq!(who, 0);
        assert!(queued <= 32 * 1024, "{queued} bytes queued at on_drained");
    }
}

#[test]
fn a_half_closed_client_gets_its_replies_then_eof_by_default() {
    let server = TestServer::start_returning(local_config(), || {
        (Valve::default(), LengthCodec::new(8 << 20))
    });
    let mut client = connect(server.tcp());
    // 4 MB of reply: more than the socket buffers take, so the close must wait for
    // the client to read.
    write_frame(&mut client, b"bulk 4000000").unwrap();
    write_frame(&mut client, b"tail").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), vec![b'b'; 4_000_000]);
    assert_eq!(read_frame(&mut client).unwrap(), b"got tail");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "EOF after the last reply");
    drop(client);
    let stopped = server.stop();
    let log = stopped.service.log;
    assert_eq!(log.closed, [(0, CloseReason::PeerClosed)]);
    assert!(log.refused.is_empty());
}

#[test]
fn a_service_can_keep_a_half_closed_connection_and_send_to_it_later() {
    let mut server = driven::<HalfOpen>(local_config());
    let mut half = client(&mut server);
    let mut other = client(&mut server);
    send(&mut server, &mut half, b"later");
    half.shutdown(Shutdown::Write).unwrap();
    server.turn_until("the peer's FIN", |r| {
        !r.service().log.peer_closed.is_empty()
    });
    assert_eq!(read_frame(&mut half).unwrap(), b"timer set");
    assert_eq!(read_frame(&mut half).unwrap(), b"still here");
    assert!(!is_closed_now(&half), "kept open");

    // Another connection's frame reaches it...
    send(&mut server, &mut other, b"tell 0 hello from 1");
    assert_eq!(read_frame(&mut half).unwrap(), b"hello from 1");
    server.advance(Duration::from_millis(999));
    assert!(!is_closed_now(&half));
    // ... and so does the timer's goodbye, before EOF.
    server.advance(Duration::from_millis(1));
    assert_eq!(read_frame(&mut half).unwrap(), b"from the timer");
    let mut rest = Vec::new();
    half.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    server.turn_until("closed", |r| !r.service().log.closed.is_empty());
    let log = &server.reactor.service().log;
    assert_eq!(log.peer_closed, [0]);
    assert_eq!(log.closed, [(0, CloseReason::PeerClosed)]);
}

#[test]
fn shutdown_write_sends_eof_after_the_last_reply_and_reading_goes_on() {
    let mut server = driven::<Valve>(local_config());
    let mut client = client(&mut server);
    send(&mut server, &mut client, b"first");
    send(&mut server, &mut client, b"last");
    assert_eq!(read_frame(&mut client).unwrap(), b"got first");
    assert_eq!(read_frame(&mut client).unwrap(), b"ok");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "EOF right after the last reply");

    // Our side is shut, theirs is not: the server still reads what the client sends,
    // and refuses to send more.
    send(&mut server, &mut client, b"after 1");
    send(&mut server, &mut client, b"after 2");
    let log = &server.reactor.service().log;
    assert_eq!(
        log.from(0),
        [&b"first"[..], b"last", b"after 1", b"after 2"]
    );
    assert_eq!(
        log.refused,
        [(0, SendError::Closed), (0, SendError::Closed)]
    );
    assert!(log.closed.is_empty());
    // The client closes too: now the connection does.
    drop(client);
    server.turn_until("closed", |r| !r.service().log.closed.is_empty());
    assert_eq!(
        server.reactor.service().log.closed,
        [(0, CloseReason::PeerClosed)]
    );
}

#[test]
fn a_paused_connection_is_not_closed_for_a_frame_it_is_not_let_finish() {
    let mut config = local_config();
    config.frame_timeout = Some(Duration::from_secs(1));
    let mut server = driven::<Valve>(config);
    let mut paused = client(&mut server);
    let mut other = client(&mut server);
    // "pause", and the start of the next frame in the same write: the server holds
    // that partial frame when it stops reading.
    let next = frame(b"0123456789");
    let mut wire = frame(b"pause");
    wire.extend_from_slice(&next[..7]);
    let before = server.reactor.stats().bytes_in;
    paused.write_all(&wire).unwrap();
    server.turn_until("read", |r| r.stats().bytes_in >= before + wire.len() as u64);
    assert_eq!(read_frame(&mut paused).unwrap(), b"paused");
    // The rest waits in the kernel while the service keeps the connection paused,
    // far longer than the frame deadline.
    paused.write_all(&next[7..]).unwrap();
    let t0 = server.now;
    while server.now < t0 + Duration::from_secs(5) {
        server.advance(Duration::from_millis(250));
    }
    assert!(server.reactor.service().log.closed.is_empty());
    assert!(!is_closed_now(&paused), "closed while paused");
    // Resumed: the frame completes at once.
    send(&mut server, &mut other, b"resume 0");
    server.turn_until("the frame", |r| r.service().log.from(0).len() == 2);
    assert_eq!(read_frame(&mut paused).unwrap(), b"got 0123456789");
    // Reading, the deadline applies again: a frame begun now and never finished is
    // closed a second later.
    let before = server.reactor.stats().bytes_in;
    paused.write_all(&next[..7]).unwrap();
    server.turn_until("read", |r| r.stats().bytes_in > before);
    server.advance(Duration::from_millis(999));
    assert!(server.reactor.service().log.closed.is_empty());
    server.advance(Duration::from_millis(1));
    assert_eq!(
        server.reactor.service().log.closed,
        [(0, CloseReason::FrameTimeout)]
    );
}

#[test]
fn a_half_close_behind_more_input_than_one_turn_reads_is_noticed() {
    let mut config = local_config();
    // One read per connection per turn: the input below takes several turns.
    config.read_budget = 1;
    let mut server = driven::<HalfOpen>(config);
    let mut client = client(&mut server);
    // Small frames without replies: reads that come up short, and no writes whose
    // events might report the FIN again.
    let mut payload = b"sink ".to_vec();
    payload.resize(1000, b'x');
    let wire: Vec<u8> = (0..500).flat_map(|_| frame(&payload)).collect();
    client.write_all(&wire).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    server.turn_until("the peer's FIN", |r| {
        !r.service().log.peer_closed.is_empty()
    });
    assert_eq!(server.reactor.service().log.from(0).len(), 500);
    assert_eq!(read_frame(&mut client).unwrap(), b"still here");
}

#[test]
fn a_half_close_that_came_while_paused_is_noticed_on_resuming() {
    let mut server = driven::<HalfOpen>(local_config());
    let mut paused = client(&mut server);
    let mut other = client(&mut server);
    send(&mut server, &mut paused, b"pause");
    assert_eq!(read_frame(&mut paused).unwrap(), b"paused");
    write_frame(&mut paused, b"last words").unwrap();
    paused.shutdown(Shutdown::Write).unwrap();
    // Read after the paused connection's frame and FIN were in its socket.
    send(&mut server, &mut other, b"ping");
    assert!(server.reactor.service().log.peer_closed.is_empty());
    send(&mut server, &mut other, b"resume 0");
    server.turn_until("the peer's FIN", |r| {
        !r.service().log.peer_closed.is_empty()
    });
    assert_eq!(
        server.reactor.service().log.from(0),
        [&b"pause"[..], b"last words"]
    );
    assert_eq!(read_frame(&mut paused).unwrap(), b"got last words");
    assert_eq!(read_frame(&mut paused).unwrap(), b"still here");
}
