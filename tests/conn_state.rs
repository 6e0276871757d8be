//! The service's state per connection, end to end: the reactor creates it (`Default`)
//! when a connection is accepted, lends it to every callback about that connection,
//! and hands it back in `on_close`; a slab slot reused by a newcomer never carries the
//! old connection's state. The reactor runs on the test's thread ([`Driven`]), so the
//! test reads the service's records directly.

mod common;

use std::io::Read;
use std::net::Shutdown;
use std::time::Duration;

use common::*;
use switchboard::{
    BoundAddr, CloseMode, CloseReason, Config, ConnId, Context, EndpointKind, LengthCodec, Origin,
    Service, TimerId,
};

/// What the service keeps per connection: something from every callback.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Record {
    /// The id and origin on_connect saw.
    id: Option<ConnId>,
    origin: Option<Origin>,
    /// What the endpoint it came through is.
    listener: Option<EndpointKind>,
    /// The name the client gave in its first frame.
    name: Option<String>,
    /// Frames and payload bytes seen by on_frame.
    frames: u32,
    bytes: usize,
    /// on_conn_timer rounds, on_drained calls, on_peer_closed calls.
    timer_rounds: u32,
    drained: u32,
    peer_closed: u32,
    /// Every callback, in order.
    calls: Vec<&'static str>,
}

/// Asks each client its name; answers each frame with what its record holds; "tick"
/// sets a timer for the connection, "flood" sends more than the write limit, "bye"
/// closes it. Every state handed back is kept, with its reason.
#[derive(Default)]
struct Registry {
    /// on_connect: whether the state lent was the Default.
    fresh: Vec<bool>,
    /// on_close: the id, the state handed back, and why.
    closed: Vec<(ConnId, Record, CloseReason)>,
}

impl Service for Registry {
    type Conn = Record;
    type Timer = ();
    type Codec = LengthCodec;

    fn on_connect(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        record: &mut Record,
        origin: Origin,
    ) {
        self.fresh.push(*record == Record::default());
        record.id = Some(conn);
        record.origin = Some(origin);
        record.listener = ctx.endpoint_kind(origin.endpoint()).cloned();
        record.calls.push("connect");
    }

    fn on_frame(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        record: &mut Record,
        payload: &[u8],
    ) {
        assert_eq!(record.id, Some(conn), "the state lent is this connection's");
        record.frames += 1;
        record.bytes += payload.len();
        record.calls.push("frame");
        match payload {
            b"tick" => drop(ctx.set_conn_timer(conn, Duration::from_secs(1), ())),
            b"flood" => {
                for _ in 0..128 {
                    ctx.send(conn, &[b'f'; 64 * 1024]).unwrap();
                }
                assert!(ctx.queued_output(conn).unwrap() > ctx.write_limit());
            }
            b"bye" => {}
            name if record.name.is_none() => {
                record.name = Some(String::from_utf8_lossy(name).into_owned());
            }
            _ => {}
        }
        let reply = format!(
            "{} frames {} bytes {} ticks {}",
            record.name.as_deref().unwrap_or("?"),
            record.frames,
            record.bytes,
            record.timer_rounds
        );
        ctx.send(conn, reply.as_bytes()).unwrap();
        if payload == b"bye" {
            ctx.close(conn, CloseMode::Flush);
        }
    }

    fn on_conn_timer(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        record: &mut Record,
        _: TimerId,
        _: (),
    ) {
        assert_eq!(record.id, Some(conn));
        record.timer_rounds += 1;
        record.calls.push("timer");
        ctx.send(conn, b"tock").unwrap();
    }

    fn on_drained(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, record: &mut Record) {
        assert_eq!(record.id, Some(conn));
        record.drained += 1;
        record.calls.push("drained");
        ctx.send(conn, b"drained").unwrap();
    }

    fn on_peer_closed(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, record: &mut Record) {
        assert_eq!(record.id, Some(conn));
        record.peer_closed += 1;
        record.calls.push("peer closed");
        ctx.send(conn, b"so long").unwrap();
        ctx.close(conn, CloseMode::Flush);
    }

    fn on_close(
        &mut self,
        _: &mut Context<'_, Self>,
        conn: ConnId,
        mut record: Record,
        reason: CloseReason,
    ) {
        record.calls.push("close");
        self.closed.push((conn, record, reason));
    }
}

fn start(config: Config) -> Driven<Registry> {
    Driven::start(config, Registry::default(), LengthCodec::new(1 << 20))
}

/// Sends `payload` and returns the server's reply (the reactor is turned until the
/// frame was read; the reply is on loopback by the end of that turn).
#[track_caller]
fn ask(server: &mut Driven<Registry>, client: &mut std::net::TcpStream, payload: &[u8]) -> String {
    let before = server.reactor.stats().frames_in;
    write_frame(client, payload).unwrap();
    server.turn_until("the frame arrived", |r| r.stats().frames_in > before);
    String::from_utf8(read_frame(client).unwrap()).unwrap()
}

#[test]
fn state_lives_from_connect_to_close_and_every_callback_sees_it() {
    let mut config = local_config();
    // Small, so "flood" passes it and on_drained follows once the client reads.
    config.write_limit = 64 * 1024;
    let mut server = start(config);
    let mut client = connect(server.tcp());
    server.turn_until("accepted", |r| r.stats().accepted == 1);

    assert_eq!(
        ask(&mut server, &mut client, b"ada"),
        "ada frames 1 bytes 3 ticks 0"
    );
    assert_eq!(
        ask(&mut server, &mut client, b"tick"),
        "ada frames 2 bytes 7 ticks 0"
    );
    server.advance(Duration::from_secs(1));
    assert_eq!(read_frame(&mut client).unwrap(), b"tock");
    assert_eq!(
        ask(&mut server, &mut client, b"again"),
        "ada frames 3 bytes 12 ticks 1"
    );

    // Eight MiB queued for a client that is not reading: far past the write limit.
    write_frame(&mut client, b"flood").unwrap();
    server.turn_until("flood queued", |r| r.stats().frames_in == 4);
    let reader = {
        let mut client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut frames = Vec::new();
            loop {
                let payload = read_frame(&mut client).unwrap();
                let last = payload == b"drained";
                frames.push(payload);
                if last {
                    return frames;
                }
            }
        })
    };
    server.turn_until("drained", |r| {
        r.service().closed.is_empty() && reader.is_finished()
    });
    let frames = reader.join().unwrap();
    assert_eq!(
        frames.len(),
        128 + 2,
        "the flood, its reply, then on_drained's"
    );
    assert!(frames[..128].iter().all(|f| f == &vec![b'f'; 64 * 1024]));
    assert_eq!(frames[128], b"ada frames 4 bytes 17 ticks 1");

    // Half-close: on_peer_closed says goodbye and closes.
    client.shutdown(Shutdown::Write).unwrap();
    server.turn_until("closed", |r| !r.service().closed.is_empty());
    assert_eq!(read_frame(&mut client).unwrap(), b"so long");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    let service = server.reactor.service();
    assert_eq!(service.fresh, [true]);
    let (id, record, reason) = &service.closed[0];
    assert_eq!(*reason, CloseReason::PeerClosed);
    assert_eq!(record.id, Some(*id));
    // Accepted on the first configured listener: endpoint 0, bound where we connected.
    let origin = record.origin.unwrap();
    assert!(!origin.is_dialled());
    assert_eq!(origin.endpoint().index(), 0);
    assert_eq!(
        record.listener,
        Some(EndpointKind::Listener(BoundAddr::Tcp(server.tcp())))
    );
    assert_eq!(record.name.as_deref(), Some("ada"));
    assert_eq!(record.frames, 4);
    assert_eq!(record.bytes, 3 + 4 + 5 + 5);
    assert_eq!(record.timer_rounds, 1);
    assert_eq!(record.drained, 1);
    assert_eq!(record.peer_closed, 1);
    assert_eq!(
        record.calls,
        [
            "connect",
            "frame",
            "frame",
            "timer",
            "frame",
            "frame",
            "drained",
            "peer closed",
            "close"
        ]
    );
}

#[test]
fn a_reused_slot_starts_from_default_and_never_sees_the_old_state() {
    let mut server = start(local_config());
    let mut alice = connect(server.tcp());
    assert_eq!(
        ask(&mut server, &mut alice, b"alice"),
        "alice frames 1 bytes 5 ticks 0"
    );
    assert_eq!(
        ask(&mut server, &mut alice, b"xx"),
        "alice frames 2 bytes 7 ticks 0"
    );
    assert_eq!(
        ask(&mut server, &mut alice, b"bye"),
        "alice frames 3 bytes 10 ticks 0"
    );
    // The server's FIN, then ours: the lingering close ends.
    assert!(is_closed(&mut alice));
    drop(alice);
    server.turn_until("alice closed", |r| r.service().closed.len() == 1);
    assert_eq!(server.reactor.service().closed[0].2, CloseReason::Service);
    let (alice_id, ..) = server.reactor.service().closed[0].clone();

    // The newcomer gets alice's slot, but a new generation and a fresh state.
    let mut bob = connect(server.tcp());
    assert_eq!(
        ask(&mut server, &mut bob, b"bob"),
        "bob frames 1 bytes 3 ticks 0"
    );
    drop(bob);
    server.turn_until("bob closed", |r| r.service().closed.len() == 2);
    let service = server.reactor.service();
    assert_eq!(service.fresh, [true, true]);
    let (bob_id, bob_record, reason) = &service.closed[1];
    assert_eq!(bob_id.index(), alice_id.index(), "the slot was reused");
    assert_ne!(*bob_id, alice_id);
    assert_eq!(*reason, CloseReason::PeerClosed);
    assert_eq!(bob_record.name.as_deref(), Some("bob"));
    assert_eq!((bob_record.frames, bob_record.bytes), (1, 3));
    let alice_record = &service.closed[0].1;
    assert_eq!(alice_record.name.as_deref(), Some("alice"));
    assert_eq!((alice_record.frames, alice_record.bytes), (3, 10));
}

#[test]
fn many_connections_coming_and_going_each_keep_their_own_state() {
    let mut server = start(local_config());
    // Rounds of: open some, talk on all, close every other one. Slots are reused all
    // the time; every reply must count only its own connection's frames.
    let mut open: Vec<(String, std::net::TcpStream, u32, usize)> = Vec::new();
    let mut next = 0;
    let mut closed = 0;
    for _round in 0..6 {
        for _ in 0..5 {
            let name = format!("c{next}");
            next += 1;
            let mut client = connect(server.tcp());
            let reply = ask(&mut server, &mut client, name.as_bytes());
            let bytes = name.len();
            assert_eq!(reply, format!("{name} frames 1 bytes {bytes} ticks 0"));
            open.push((name, client, 1, bytes));
        }
        for (name, client, frames, bytes) in &mut open {
            let reply = ask(&mut server, client, b"more");
            *frames += 1;
            *bytes += 4;
            assert_eq!(
                reply,
                format!("{name} frames {frames} bytes {bytes} ticks 0")
            );
        }
        let mut keep = Vec::new();
        for (i, entry) in open.drain(..).enumerate() {
            if i % 2 == 0 {
                drop(entry.1);
                closed += 1;
            } else {
                keep.push(entry);
            }
        }
        open = keep;
        server.turn_until("closes seen", |r| r.service().closed.len() == closed);
    }
    let service = server.reactor.service();
    assert_eq!(service.fresh.len(), next);
    assert!(
        service.fresh.iter().all(|&fresh| fresh),
        "every state began as Default"
    );
    // Every state handed back is the one its connection built, whatever slot it had.
    for (id, record, reason) in &service.closed {
        assert_eq!(record.id, Some(*id));
        assert_eq!(*reason, CloseReason::PeerClosed);
        let name = record.name.as_deref().unwrap();
        assert_eq!(record.bytes, name.len() + 4 * (record.frames as usize - 1));
    }
    let reused = service
        .closed
        .iter()
        .map(|(id, ..)| id.index())
        .max()
        .unwrap();
    assert!(reused < next - 1, "slots were reused ({reused} < {next})");
}
