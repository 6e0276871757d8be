//! No panic a client can reach: every public API that takes a duration a client could
//! choose (a `SET k v EX 9223372036854775807`, a member's own timeout) is driven with
//! extreme values over a real socket, and the server keeps serving.
//!
//! The service here takes its durations from the wire, as a key-value server takes an
//! `EXPIRE`: each frame is 8 bytes of seconds, 4 of nanoseconds (both big-endian) and
//! one byte saying which API gets the duration. The reactor runs on the test's thread
//! on a virtual clock ([`Driven`]), which the test then moves a thousand days on, so
//! every timer that can fire does.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use switchboard::frame::wire;
use switchboard::timer::MAX_DELAY;
use switchboard::{Config, ConnId, Context, Dial, LengthCodec, Service, TimerId};

/// Which API a frame's duration goes to.
const APIS: u8 = 6;

/// Sets whatever timer each frame asks for, with the duration it carries.
#[derive(Default)]
struct Expiry {
    /// Timers fired so far (service and connection timers).
    fired: u64,
}

impl Service for Expiry {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), frame: &[u8]) {
        let Some((delay, api)) = parse(frame) else {
            let _ = ctx.send(conn, b"bad request");
            return;
        };
        match api {
            0 => drop(ctx.set_timer(delay, ())),
            1 => drop(ctx.set_repeating(delay, ())),
            2 => drop(ctx.set_conn_timer(conn, delay, ())),
            3 => drop(ctx.set_conn_repeating(conn, delay, ())),
            4 => ctx.set_idle_timeout(conn, Some(delay)),
            _ => {
                // A dial whose connect timeout the client chose; nobody listens on
                // port 1, so it fails (refused) or times out, either way without harm.
                let dial = Dial::tcp("127.0.0.1:1".parse().unwrap()).timeout(delay);
                let _ = ctx.connect(dial, ());
            }
        }
        let _ = ctx.send(conn, b"ok");
    }

    fn on_timer(&mut self, _: &mut Context<'_, Self>, _: TimerId, _: ()) {
        self.fired += 1;
    }

    fn on_conn_timer(
        &mut self,
        _: &mut Context<'_, Self>,
        _: ConnId,
        _: &mut (),
        _: TimerId,
        _: (),
    ) {
        self.fired += 1;
    }
}

/// A frame's duration and API.
fn parse(frame: &[u8]) -> Option<(Duration, u8)> {
    let secs = u64::from_be_bytes(frame.get(..8)?.try_into().ok()?);
    let nanos = u32::from_be_bytes(frame.get(8..12)?.try_into().ok()?) % 1_000_000_000;
    Some((Duration::new(secs, nanos), *frame.get(12)? % APIS))
}

/// The frame that asks for `delay` on `api`.
fn request(delay: Duration, api: u8) -> Vec<u8> {
    let mut frame = delay.as_secs().to_be_bytes().to_vec();
    frame.extend_from_slice(&delay.subsec_nanos().to_be_bytes());
    frame.push(api);
    frame
}

/// Sends one request and turns the reactor until its answer arrives.
#[track_caller]
fn ask(server: &mut Driven<Expiry>, client: &mut TcpStream, delay: Duration, api: u8) {
    wire::write_frame(client, &request(delay, api)).unwrap();
    client.flush().unwrap();
    server.turn_until("the answer is written", |_| available_now(client) > 0);
    let answer = wire::read_frame(client).unwrap();
    assert_eq!(answer, b"ok", "{delay:?} on API {api}");
}

/// Durations at the edges: zero, one nanosecond, the cap and either side of it, the
/// largest `Duration`, and the seconds of `i64::MAX` (Redis's own largest `EX`).
fn extremes() -> Vec<Duration> {
    vec![
        Duration::ZERO,
        Duration::from_nanos(1),
        MAX_DELAY - Duration::from_nanos(1),
        MAX_DELAY,
        MAX_DELAY + Duration::from_nanos(1),
        Duration::from_secs(i64::MAX as u64),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ]
}

fn durations() -> impl Strategy<Value = Duration> {
    prop_oneof![
        proptest::sample::select(extremes()),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(secs, nanos)| Duration::new(secs, nanos)),
        (0u64..10_000).prop_map(Duration::from_millis),
    ]
}

#[test]
fn every_timer_api_takes_every_extreme_duration() {
    let mut server = Driven::start(local_config(), Expiry::default(), LengthCodec::new(64));
    let mut client = connect(server.tcp());
    for delay in extremes() {
        for api in 0..APIS {
            ask(&mut server, &mut client, delay, api);
        }
    }
    // A thousand days on, every timer that can be due has fired (the zero and
    // nanosecond ones), and the rest wait: the loop neither panics nor spins.
    server.advance(Duration::from_secs(1000 * 24 * 3600));
    server.advance(Duration::from_millis(1));
    assert!(server.reactor.service().fired > 0, "the short timers fired");
    let mut fresh = connect(server.tcp());
    ask(&mut server, &mut fresh, Duration::from_secs(1), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_duration_a_client_sends_is_taken(
        requests in proptest::collection::vec((durations(), 0..APIS), 1..12),
        later in 0u64..(5 * 365 * 24 * 3600),
    ) {
        let config = Config { idle_timeout: None, ..local_config() };
        let mut server = Driven::start(config, Expiry::default(), LengthCodec::new(64));
        let mut client = connect(server.tcp());
        for (delay, api) in requests {
            ask(&mut server, &mut client, delay, api);
        }
        server.advance(Duration::from_secs(later));
        server.advance(Duration::from_millis(1));
        let mut fresh = connect(server.tcp());
        ask(&mut server, &mut fresh, Duration::from_secs(1), 0);
    }
}
