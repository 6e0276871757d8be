//! Timers and idle timeouts on a virtual clock: the reactor runs on the test's thread
//! ([`Driven`]) and the test moves its clock, so every deadline is checked to the
//! millisecond without sleeping. Typed service timers, a connection's own timers (they
//! see its state and die with it), repeating timers that do not drift, cancelling, and
//! idle timeouts: the reactor's, and a connection's own.

mod common;

use std::time::{Duration, Instant};

use common::*;
use switchboard::{CloseReason, Config, ConnId, Context, LengthCodec, Origin, Service, TimerId};

/// What the tests' timers carry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Alarm {
    Wake(u32),
    Named(&'static str),
    /// A repeating timer that cancels itself in its third round.
    ThreeTimes,
    /// A connection's one-shot and repeating timers.
    Once,
    Every,
    /// Re-arms itself with no delay every time it fires.
    Spin,
}

/// A connection's state: its name, and how many of its timers fired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Line {
    name: String,
    rounds: u32,
}

/// Records every firing with the virtual time it came at. A connection's first frame
/// names it; "arm" sets its timers; "idle MS" / "idle none" set its own idle timeout.
#[derive(Default)]
struct Clock {
    /// Service timers: (when, id, value).
    fired: Vec<(Instant, TimerId, Alarm)>,
    /// Connection timers: (when, connection, its name and rounds then, value).
    conn_fired: Vec<(Instant, ConnId, Line, Alarm)>,
    /// Timers armed by "arm": the connection's one-shot and repeating ones.
    armed: Vec<(TimerId, TimerId)>,
    /// Closes: (when, name, reason).
    closed: Vec<(Instant, String, CloseReason)>,
    /// Connections, in the order they came.
    conns: Vec<ConnId>,
}

impl Service for Clock {
    type Conn = Line;
    type Timer = Alarm;
    type Codec = LengthCodec;

    fn on_connect(&mut self, _: &mut Context<'_, Self>, conn: ConnId, _: &mut Line, _: Origin) {
        self.conns.push(conn);
    }

    fn on_frame(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        line: &mut Line,
        payload: &[u8],
    ) {
        let text = String::from_utf8_lossy(payload).into_owned();
        if line.name.is_empty() {
            line.name = text;
        } else if text == "arm" {
            let once = ctx.set_conn_timer(conn, Duration::from_secs(1), Alarm::Once);
            let every = ctx.set_conn_repeating(conn, Duration::from_millis(250), Alarm::Every);
            self.armed.push((once, every));
        } else if text == "idle none" {
            ctx.set_idle_timeout(conn, None);
        } else if text == "idle default" {
            ctx.reset_idle_timeout(conn);
        } else if text == "spin" {
            ctx.set_timer(Duration::ZERO, Alarm::Spin);
        } else if let Some(ms) = text.strip_prefix("idle ") {
            let ms = ms.parse().unwrap();
            ctx.set_idle_timeout(conn, Some(Duration::from_millis(ms)));
        }
        ctx.send(conn, b"ok").unwrap();
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, timer: TimerId, value: Alarm) {
        self.fired.push((ctx.now(), timer, value.clone()));
        if value == Alarm::Spin {
            // Re-arms itself at no delay, for ever.
            ctx.set_timer(Duration::ZERO, Alarm::Spin);
        }
        if value == Alarm::ThreeTimes {
            let rounds = self.fired.iter().filter(|f| f.2 == value).count();
            if rounds == 3 {
                assert!(
                    ctx.cancel_timer(timer),
                    "a repeating timer cancels in its round"
                );
            }
        }
    }

    fn on_conn_timer(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        line: &mut Line,
        _: TimerId,
        value: Alarm,
    ) {
        line.rounds += 1;
        self.conn_fired
            .push((ctx.now(), conn, line.clone(), value.clone()));
        let _ = ctx.send(conn, format!("{value:?} {}", line.rounds).as_bytes());
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<'_, Self>,
        _: ConnId,
        line: Line,
        reason: CloseReason,
    ) {
        self.closed.push((ctx.now(), line.name, reason));
    }
}

fn start(config: Config) -> Driven<Clock> {
    Driven::start(config, Clock::default(), LengthCodec::new(1024))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Connects a client named `name` (its first frame) and returns it once the server
/// has answered: the server's clock stands still meanwhile.
#[track_caller]
fn named_client(server: &mut Driven<Clock>, name: &str) -> std::net::TcpStream {
    let mut client = connect(server.tcp());
    send(server, &mut client, name);
    client
}

/// Sends one frame and reads the server's "ok".
#[track_caller]
fn send(server: &mut Driven<Clock>, client: &mut std::net::TcpStream, text: &str) {
    let before = server.reactor.stats().frames_in;
    write_frame(client, text.as_bytes()).unwrap();
    server.turn_until("the frame arrived", |r| r.stats().frames_in > before);
    assert_eq!(read_frame(client).unwrap(), b"ok");
}

#[test]
fn typed_timers_fire_once_each_with_their_values_when_due() {
    let mut server = start(local_config());
    let t0 = server.now;
    let ids = server.with_context(|_, ctx| {
        [
            ctx.set_timer(ms(2000), Alarm::Named("two seconds")),
            ctx.set_timer(ms(1000), Alarm::Wake(1)),
            ctx.set_timer(ms(1000), Alarm::Wake(2)),
            ctx.set_timer(Duration::ZERO, Alarm::Wake(0)),
        ]
    });
    // Due at once: fired in the turn that set it.
    let fired = |server: &Driven<Clock>| {
        let service = server.reactor.service();
        service
            .fired
            .iter()
            .map(|f| f.2.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(fired(&server), [Alarm::Wake(0)]);
    server.advance_to(t0 + ms(999));
    assert_eq!(fired(&server), [Alarm::Wake(0)]);
    server.advance_to(t0 + ms(1000));
    // Two with one deadline: in the order they were set.
    assert_eq!(
        fired(&server),
        [Alarm::Wake(0), Alarm::Wake(1), Alarm::Wake(2)]
    );
    server.advance_to(t0 + ms(1999));
    assert_eq!(fired(&server).len(), 3);
    server.advance_to(t0 + ms(2000));
    server.advance_to(t0 + Duration::from_secs(3600));
    let service = server.reactor.service();
    let expected = [
        (t0, ids[3], Alarm::Wake(0)),
        (t0 + ms(1000), ids[1], Alarm::Wake(1)),
        (t0 + ms(1000), ids[2], Alarm::Wake(2)),
        (t0 + ms(2000), ids[0], Alarm::Named("two seconds")),
    ];
    assert_eq!(
        service.fired, expected,
        "each once, at its time, with its id"
    );
    assert_eq!(ids[0].deadline(), t0 + ms(2000));
}

#[test]
fn a_connections_timers_see_its_state_and_die_with_it() {
    let mut server = start(local_config());
    let mut client = named_client(&mut server, "kim");
    let conn = server.reactor.service().conns[0];
    send(&mut server, &mut client, "arm");
    let t0 = server.now;
    for round in 1..=3 {
        server.advance_to(t0 + ms(250) * round);
        assert_eq!(
            read_frame(&mut client).unwrap(),
            format!("Every {round}").as_bytes()
        );
    }
    let service = server.reactor.service();
    let seen: Vec<_> = service
        .conn_fired
        .iter()
        .map(|(at, id, line, value)| (*at, *id, line.name.as_str(), line.rounds, value.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (t0 + ms(250), conn, "kim", 1, Alarm::Every),
            (t0 + ms(500), conn, "kim", 2, Alarm::Every),
            (t0 + ms(750), conn, "kim", 3, Alarm::Every),
        ]
    );
    // The client leaves before the one-shot timer (at 1 s) is due.
    drop(client);
    server.turn_until("closed", |r| r.service().closed.len() == 1);
    // A newcomer takes the slot; the old connection's timers must not reach it.
    let mut newcomer = named_client(&mut server, "lee");
    let newcomer_id = server.reactor.service().conns[1];
    assert_eq!(newcomer_id.index(), conn.index(), "the slot was reused");
    for step in 1..=40 {
        server.advance_to(t0 + ms(250) * (3 + step));
    }
    let service = server.reactor.service();
    assert_eq!(service.conn_fired.len(), 3, "nothing fired after the close");
    assert!(service.fired.is_empty());
    assert_eq!(
        available_now(&newcomer),
        0,
        "nothing was sent to the newcomer"
    );
    send(&mut server, &mut newcomer, "still served");
}

#[test]
fn a_repeating_timer_counts_its_rounds_from_the_first_deadline() {
    let mut server = start(local_config());
    let t0 = server.now;
    let id = server.with_context(|_, ctx| ctx.set_repeating(ms(1000), Alarm::Wake(7)));
    let times = |server: &Driven<Clock>| {
        let service = server.reactor.service();
        service.fired.iter().map(|f| f.0).collect::<Vec<_>>()
    };
    server.advance_to(t0 + ms(999));
    assert!(times(&server).is_empty());
    // Three and a half rounds in one step: one firing; the missed rounds are skipped,
    // not bunched.
    server.advance_to(t0 + ms(3500));
    assert_eq!(times(&server), [t0 + ms(3500)]);
    // The next round is at 4 s, counted from the first deadline: not at 4.5 s (one
    // interval after it fired late).
    server.advance_to(t0 + ms(3999));
    assert_eq!(times(&server).len(), 1);
    server.advance_to(t0 + ms(4000));
    assert_eq!(times(&server), [t0 + ms(3500), t0 + ms(4000)]);
    // Late again, by 300 ms: the round after it is still on the whole second.
    server.advance_to(t0 + ms(5300));
    server.advance_to(t0 + ms(5999));
    assert_eq!(times(&server).len(), 3);
    server.advance_to(t0 + ms(6000));
    // On time from then on, in small steps.
    while server.now < t0 + ms(10_000) {
        server.advance(ms(250));
    }
    assert_eq!(
        times(&server),
        [
            t0 + ms(3500),
            t0 + ms(4000),
            t0 + ms(5300),
            t0 + ms(6000),
            t0 + ms(7000),
            t0 + ms(8000),
            t0 + ms(9000),
            t0 + ms(10_000),
        ]
    );
    let service = server.reactor.service();
    assert!(service
        .fired
        .iter()
        .all(|f| f.1 == id && f.2 == Alarm::Wake(7)));
}

#[test]
fn a_cancelled_repeating_timer_stops() {
    let mut server = start(local_config());
    let t0 = server.now;
    let id = server.with_context(|_, ctx| ctx.set_repeating(ms(1000), Alarm::Wake(1)));
    // One that cancels itself in its third round.
    server.with_context(|_, ctx| ctx.set_repeating(ms(400), Alarm::ThreeTimes));
    let count = |server: &Driven<Clock>, alarm: Alarm| {
        let service = server.reactor.service();
        service.fired.iter().filter(|f| f.2 == alarm).count()
    };
    server.advance_to(t0 + ms(1000));
    server.advance_to(t0 + ms(2000));
    assert_eq!(count(&server, Alarm::Wake(1)), 2);
    assert!(server.with_context(move |_, ctx| ctx.cancel_timer(id)));
    for step in 1..=80 {
        server.advance_to(t0 + ms(2000) + ms(100) * step);
    }
    assert_eq!(
        count(&server, Alarm::Wake(1)),
        2,
        "no round after the cancel"
    );
    assert!(
        !server.with_context(move |_, ctx| ctx.cancel_timer(id)),
        "cancelling twice reports false"
    );
    assert_eq!(count(&server, Alarm::ThreeTimes), 3);
}

#[test]
fn the_reactor_idle_timeout_closes_a_quiet_connection_exactly_when_due() {
    let mut config = local_config();
    config.idle_timeout = Some(Duration::from_secs(10));
    let mut server = start(config);
    let quiet = named_client(&mut server, "quiet");
    let mut chatty = named_client(&mut server, "chatty");
    let t0 = server.now;
    // Activity five seconds in restarts the chatty one's count.
    server.advance_to(t0 + ms(5000));
    send(&mut server, &mut chatty, "hello");

    server.advance_to(t0 + ms(9999));
    assert!(!is_closed_now(&quiet), "closed before its time");
    assert!(server.reactor.service().closed.is_empty());
    server.advance_to(t0 + ms(10_000));
    assert!(is_closed_now(&quiet), "not closed when due");
    server.advance_to(t0 + ms(14_999));
    assert!(!is_closed_now(&chatty));
    server.advance_to(t0 + ms(15_000));
    assert!(is_closed_now(&chatty));
    let service = server.reactor.service();
    assert_eq!(
        service.closed,
        [
            (
                t0 + ms(10_000),
                "quiet".to_string(),
                CloseReason::IdleTimeout
            ),
            (
                t0 + ms(15_000),
                "chatty".to_string(),
                CloseReason::IdleTimeout
            ),
        ]
    );
}

#[test]
fn a_connections_own_idle_timeout_replaces_the_reactors() {
    let mut config = local_config();
    config.idle_timeout = Some(Duration::from_secs(10));
    let mut server = start(config);
    let mut long = named_client(&mut server, "long");
    let mut short = named_client(&mut server, "short");
    let mut never = named_client(&mut server, "never");
    let plain = named_client(&mut server, "plain");
    let t0 = server.now;
    send(&mut server, &mut long, "idle 30000");
    send(&mut server, &mut short, "idle 2000");
    send(&mut server, &mut never, "idle none");
    let closes = |server: &Driven<Clock>| {
        let service = server.reactor.service();
        service
            .closed
            .iter()
            .map(|(at, name, reason)| {
                assert_eq!(*reason, CloseReason::IdleTimeout, "{name}");
                (at.duration_since(t0), name.clone())
            })
            .collect::<Vec<_>>()
    };
    server.advance_to(t0 + ms(1999));
    assert!(closes(&server).is_empty());
    server.advance_to(t0 + ms(2000));
    assert_eq!(closes(&server), [(ms(2000), "short".to_string())]);
    assert!(is_closed_now(&short));
    server.advance_to(t0 + ms(9999));
    assert_eq!(closes(&server).len(), 1);
    server.advance_to(t0 + ms(10_000));
    assert_eq!(closes(&server)[1], (ms(10_000), "plain".to_string()));
    assert!(is_closed_now(&plain));
    // Counted from the last activity: a frame at 20 s moves the long one's end to 50 s.
    server.advance_to(t0 + ms(20_000));
    send(&mut server, &mut long, "still here");
    server.advance_to(t0 + ms(49_999));
    assert_eq!(closes(&server).len(), 2);
    assert!(!is_closed_now(&long));
    server.advance_to(t0 + ms(50_000));
    assert_eq!(closes(&server)[2], (ms(50_000), "long".to_string()));
    // Never idle: a day later it is still served.
    server.advance_to(t0 + Duration::from_secs(86_400));
    assert!(!is_closed_now(&never));
    send(&mut server, &mut never, "a day later");
    assert_eq!(closes(&server).len(), 3);
}

#[test]
fn a_connection_can_go_back_to_the_reactors_idle_timeout() {
    let mut config = local_config();
    config.idle_timeout = Some(Duration::from_secs(10));
    let mut server = start(config);
    let mut client = named_client(&mut server, "back");
    let t0 = server.now;
    send(&mut server, &mut client, "idle none");
    server.advance_to(t0 + Duration::from_secs(3600));
    assert!(!is_closed_now(&client), "never idle meanwhile");
    // Back to the reactor's 10 s, counted from the reset.
    let reset_at = server.now;
    send(&mut server, &mut client, "idle default");
    server.advance_to(reset_at + ms(9_999));
    assert!(!is_closed_now(&client));
    server.advance_to(reset_at + ms(10_000));
    assert!(is_closed_now(&client));
    let closed = &server.reactor.service().closed;
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].2, CloseReason::IdleTimeout);
}

#[test]
fn a_timer_rearming_itself_at_no_delay_cannot_starve_the_sockets() {
    let mut server = start(local_config());
    let mut spinner = named_client(&mut server, "spinner");
    write_frame(&mut spinner, b"spin").unwrap();
    // The spinning timer fires once per turn, and every turn still serves the sockets:
    // a new client is accepted and answered while it spins.
    let mut other = connect(server.tcp());
    write_frame(&mut other, b"other").unwrap();
    server.turn_until("the other client was answered", |r| {
        r.stats().frames_out >= 3
    });
    assert_eq!(read_frame(&mut other).unwrap(), b"ok");
    let spins = server.reactor.service().fired.len();
    assert!(spins >= 1, "the timer fired");
    server.turn();
    let after_one_turn = server.reactor.service().fired.len();
    assert_eq!(after_one_turn, spins + 1, "once per turn, not in a loop");
}
