//! The engine driven by hand, with no socket, loop or clock: each test calls it and
//! reads what it pushed to a recording [`Outputs`] and [`Backplane`]. Addresses are
//! plain numbers.

use std::any::Any;
use std::time::Instant;

use super::protocol::{NameMsg, Request};
use super::*;

/// What the engine asked of its outputs, in order, as text.
#[derive(Debug, Default)]
struct Recorder {
    /// (address, bytes) of every delivery and answer.
    sent: Vec<(u32, String)>,
    closed: Vec<u32>,
    gone: Vec<u32>,
    /// Addresses that are cut off on their next delivery.
    slow: Vec<u32>,
}

impl Recorder {
    /// What `to` was sent, oldest first.
    fn to(&self, to: u32) -> Vec<&str> {
        self.sent
            .iter()
            .filter(|(a, _)| *a == to)
            .map(|(_, s)| s.as_str())
            .collect()
    }

    fn clear(&mut self) {
        self.sent.clear();
    }
}

impl Outputs<u32> for Recorder {
    fn deliver(&mut self, to: &u32, form: Form, event: &EventBytes) -> Delivery {
        let bytes = match form {
            Form::Typed => event.json(),
            Form::NameMsg => event
                .name_msg()
                .expect("the engine skips what it cannot read"),
        };
        self.sent
            .push((*to, String::from_utf8_lossy(bytes).into_owned()));
        match self.slow.contains(to) {
            true => Delivery::CutOff,
            false => Delivery::Sent,
        }
    }
    fn send(&mut self, to: &u32, bytes: &[u8]) {
        self.sent
            .push((*to, String::from_utf8_lossy(bytes).into_owned()));
    }
    fn close(&mut self, to: &u32) {
        self.closed.push(*to);
    }
    fn gone(&mut self, to: &u32) {
        self.gone.push(*to);
    }
}

/// A backplane that answers as it is told and records what it is told.
#[derive(Debug)]
struct Other {
    claims: Claim,
    route: Option<Route>,
    published: Vec<(String, String, bool)>,
    gone: Vec<(Option<String>, Vec<String>)>,
    heard: Vec<Remote>,
    /// Members of every room elsewhere.
    elsewhere: usize,
}

impl Backplane for Other {
    fn claim(
        &mut self,
        _: Instant,
        _: MemberId,
        _: &str,
        _: Option<&str>,
        _: &[String],
        _: bool,
    ) -> Claim {
        self.claims
    }
    fn named(&mut self, _: Instant, _: &str, _: Option<&str>, _: &[String]) {}
    fn moved(&mut self, _: Instant, _: RoomChange<'_>) {}
    fn gone(&mut self, _: Instant, name: Option<&str>, _: &[String], emptied: &[&str]) {
        let emptied = emptied.iter().map(|r| r.to_string()).collect();
        self.gone.push((name.map(str::to_owned), emptied));
    }
    fn publish(&mut self, _: Instant, room: &str, event: &EventBytes, _: usize, remember: bool) {
        let json = String::from_utf8_lossy(event.json()).into_owned();
        self.published.push((room.to_owned(), json, remember));
    }
    fn direct(&mut self, _: Instant, _: MemberId, _: &str, _: &EventBytes) -> Route {
        self.route.unwrap_or(Route::Unknown)
    }
    fn list(&mut self, _: Instant, _: MemberId) -> Listing {
        Listing::Local
    }
    fn unclaim(&mut self, _: Instant, _: &str) {}
    fn take_remote(&mut self) -> Vec<Remote> {
        std::mem::take(&mut self.heard)
    }
    fn room_size(&mut self, _: &str, here: usize) -> usize {
        here + self.elsewhere
    }
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

impl Default for Other {
    fn default() -> Self {
        Other {
            claims: Claim::Free,
            route: None,
            published: Vec::new(),
            gone: Vec::new(),
            heard: Vec::new(),
            elsewhere: 0,
        }
    }
}

/// An engine with its two recording ports.
struct Bench {
    engine: Engine<u32>,
    out: Recorder,
    other: Other,
}

impl Bench {
    fn new(presence_limit: usize) -> Self {
        let limits = Limits {
            max_text: 100,
            history: 2,
            presence_limit,
            max_rooms: 3,
        };
        Bench {
            engine: Engine::new(limits, Default::default()),
            out: Recorder::default(),
            other: Other::default(),
        }
    }

    fn io(&mut self) -> (&mut Engine<u32>, Io<'_, u32>) {
        let io = Io {
            now: Instant::now(),
            out: &mut self.out,
            backplane: &mut self.other,
        };
        (&mut self.engine, io)
    }

    fn ask(&mut self, id: MemberId, request: Request) {
        let (engine, mut io) = self.io();
        engine.handle(&mut io, id, request);
    }

    fn settle(&mut self) {
        let (engine, mut io) = self.io();
        engine.settle(&mut io);
    }

    /// A stream member at `address`, named and in `rooms`.
    fn member(&mut self, address: u32, name: &str, rooms: &[&str]) -> MemberId {
        let id = self.engine.add(address, Form::Typed, true);
        self.ask(id, hello(name));
        for room in rooms {
            self.ask(id, join(room));
        }
        id
    }
}

fn hello(name: &str) -> Request {
    Request::Hello { name: name.into() }
}

fn join(room: &str) -> Request {
    Request::Join { room: room.into() }
}

fn say(room: &str, text: &str) -> Request {
    Request::Say {
        room: room.into(),
        text: text.into(),
    }
}

#[test]
fn a_message_reaches_every_member_of_the_room_and_the_backplane_once() {
    let mut bench = Bench::new(10);
    let alice = bench.member(1, "alice", &["r"]);
    bench.member(2, "bob", &["r"]);
    bench.member(3, "carol", &["elsewhere"]);
    bench.out.clear();
    bench.ask(alice, say("r", "hi"));
    for to in [1, 2] {
        let got = bench.out.to(to);
        assert_eq!(got.len(), 1, "{to}: {got:?}");
        assert!(got[0].starts_with(r#"{"type":"msg","room":"r","from":"alice","text":"hi""#));
    }
    assert!(bench.out.to(3).is_empty());
    let said: Vec<_> = bench.other.published.iter().filter(|p| p.2).collect();
    assert_eq!(
        said.len(),
        1,
        "one publish of the message, marked to remember"
    );
    assert_eq!(bench.engine.stats().get().deliveries_out, 2);
}

#[test]
fn a_newcomer_is_replayed_the_latest_history_marked_as_such() {
    let mut bench = Bench::new(10);
    let alice = bench.member(1, "alice", &["r"]);
    for text in ["one", "two", "three"] {
        bench.ask(alice, say("r", text));
    }
    bench.member(2, "bob", &["r"]);
    let got = bench.out.to(2);
    let replayed: Vec<_> = got
        .iter()
        .filter(|s| s.contains(r#""history":true"#))
        .collect();
    assert_eq!(replayed.len(), 2, "history keeps 2: {got:?}");
    assert!(replayed[0].contains("two") && replayed[1].contains("three"));
}

#[test]
fn names_are_checked_reserved_and_unique() {
    let mut bench = Bench::new(10);
    bench.member(1, "alice", &[]);
    let other = bench.engine.add(2, Form::Typed, true);
    for (name, why) in [
        ("alice", "name alice is taken"),
        ("switchboard", "name switchboard is reserved"),
        ("", "name"),
    ] {
        bench.out.clear();
        bench.ask(other, hello(name));
        let got = bench.out.to(2);
        assert!(
            got[0].contains(r#""type":"error""#) && got[0].contains(why),
            "{got:?}"
        );
    }
    bench.ask(other, join("r"));
    assert!(bench.out.to(2).last().unwrap().contains("say hello first"));
}

/// The member at `joiner` heard of its own join; those at `others` heard nothing, and
/// nothing went to other loops or nodes.
#[track_caller]
fn only_the_joiner_heard(bench: &Bench, joiner: u32, others: &[u32]) {
    for other in others {
        assert!(bench.out.to(*other).is_empty(), "{other}");
    }
    let own = bench.out.to(joiner);
    assert!(
        own.iter().any(|s| s.contains(r#""type":"joined""#)),
        "{own:?}"
    );
    assert!(
        bench.other.published.is_empty(),
        "nothing for other loops either"
    );
}

#[test]
fn past_the_presence_limit_only_the_subject_hears_of_a_join() {
    let mut bench = Bench::new(2);
    bench.member(1, "a", &["r"]);
    bench.member(2, "b", &["r"]);
    bench.out.clear();
    bench.other.published.clear();
    bench.member(3, "c", &["r"]);
    only_the_joiner_heard(&bench, 3, &[1, 2]);
}

#[test]
fn a_name_msg_member_gets_messages_and_errors_in_its_form_and_no_presence() {
    let mut bench = Bench::new(10);
    let alice = bench.member(1, "alice", &["lobby"]);
    let udp = bench.engine.add(9, Form::NameMsg, false);
    bench.out.clear();
    let message = NameMsg::for_test("clinet1", "hi");
    let (engine, mut io) = bench.io();
    let echo = engine.name_msg(&mut io, udp, message);
    assert!(echo.is_some());
    assert_eq!(bench.out.to(9), vec![r#"{"name":"clinet1","msg":"hi"}"#]);
    let got = bench.out.to(1);
    assert_eq!(got.len(), 1, "alice sees the message, not a join: {got:?}");
    bench.out.clear();
    bench.ask(alice, say("lobby", "back"));
    assert_eq!(bench.out.to(9), vec![r#"{"name":"alice","msg":"back"}"#]);
    bench.ask(udp, say("nowhere", "x"));
    let error = bench.out.to(9).pop().unwrap();
    assert!(error.starts_with(r#"{"name":"switchboard","msg":"error: not in room nowhere"#));
}

#[test]
fn a_direct_message_goes_here_or_through_the_backplane_or_is_refused() {
    let mut bench = Bench::new(10);
    let alice = bench.member(1, "alice", &[]);
    bench.member(2, "bob", &[]);
    bench.out.clear();
    let dm = |to: &str| Request::Dm {
        to: to.into(),
        text: "psst".into(),
    };
    bench.ask(alice, dm("bob"));
    assert_eq!(bench.out.to(2).len(), 1);
    assert_eq!(bench.out.to(1).len(), 1, "the sender's copy");
    bench.out.clear();
    bench.ask(alice, dm("nobody"));
    assert!(bench.out.to(1)[0].contains("no member named nobody"));
    // Somewhere else: the copy waits for the backplane's word.
    bench.out.clear();
    bench.other.route = Some(Route::Pending);
    bench.ask(alice, dm("zed"));
    assert!(bench.out.to(1).is_empty());
    let event = Serialized {
        json: br#"{"type":"dm"}"#.to_vec(),
        name_msg: None,
    };
    bench.other.heard.push(Remote::DirectSettled {
        member: alice,
        to: "zed".into(),
        event: Some(event),
    });
    bench.settle();
    assert_eq!(bench.out.to(1), vec![r#"{"type":"dm"}"#]);
}

#[test]
fn requests_after_a_pending_name_wait_for_it_in_order() {
    let mut bench = Bench::new(10);
    bench.other.claims = Claim::Pending;
    let id = bench.engine.add(1, Form::Typed, true);
    bench.ask(id, hello("alice"));
    bench.ask(id, join("r"));
    bench.ask(id, say("r", "first"));
    assert!(bench.out.to(1).is_empty(), "nothing answered yet");
    bench.other.heard.push(Remote::NameSettled {
        member: id,
        name: "alice".into(),
        outcome: Settled::Granted,
    });
    bench.settle();
    let got = bench.out.to(1);
    assert!(got[0].contains("welcome"), "{got:?}");
    assert!(got[1].contains("joined"), "{got:?}");
    assert!(got[2].contains("first"), "{got:?}");
}

#[test]
fn a_name_taken_elsewhere_is_refused_and_what_waited_runs_without_it() {
    let mut bench = Bench::new(10);
    bench.other.claims = Claim::Pending;
    let id = bench.engine.add(1, Form::Typed, true);
    bench.ask(id, hello("alice"));
    bench.ask(id, join("r"));
    bench.other.heard.push(Remote::NameSettled {
        member: id,
        name: "alice".into(),
        outcome: Settled::Taken,
    });
    bench.settle();
    let got = bench.out.to(1);
    assert!(got[0].contains("name alice is taken"), "{got:?}");
    assert!(got[1].contains("say hello first"), "{got:?}");
}

#[test]
fn a_member_cut_off_is_sent_nothing_more() {
    let mut bench = Bench::new(10);
    let alice = bench.member(1, "alice", &["r"]);
    bench.member(2, "slow", &["r"]);
    bench.out.slow.push(2);
    bench.out.clear();
    bench.ask(alice, say("r", "one"));
    bench.ask(alice, say("r", "two"));
    assert_eq!(
        bench.out.to(2).len(),
        1,
        "the delivery that cut it off, then nothing"
    );
    assert_eq!(bench.engine.stats().get().slow_consumers, 1);
}

#[test]
fn leaving_tells_the_room_the_backplane_and_the_transport() {
    let mut bench = Bench::new(10);
    let alice = bench.member(1, "alice", &["r", "solo"]);
    bench.member(2, "bob", &["r"]);
    bench.out.clear();
    bench.ask(alice, Request::Bye);
    assert_eq!(bench.out.closed, vec![1]);
    assert_eq!(bench.out.gone, vec![1]);
    assert!(bench.out.to(2)[0].contains(r#""type":"left""#));
    let (name, emptied) = bench.other.gone.pop().unwrap();
    assert_eq!(name.as_deref(), Some("alice"));
    assert_eq!(emptied, vec!["solo".to_string()], "r still has bob here");
    assert!(bench.engine.member(alice).is_none());
}

#[test]
fn a_remote_room_event_reaches_the_members_here_and_their_history() {
    let mut bench = Bench::new(10);
    bench.member(1, "alice", &["r"]);
    bench.out.clear();
    let event = |text: &str| Serialized {
        json: format!(r#"{{"type":"msg","text":"{text}"}}"#).into_bytes(),
        name_msg: None,
    };
    bench.other.heard.push(Remote::Room {
        room: "r".into(),
        event: event("from afar"),
        remember: true,
    });
    bench.other.heard.push(Remote::Room {
        room: "empty-here".into(),
        event: event("dropped"),
        remember: true,
    });
    bench.settle();
    assert_eq!(bench.out.to(1).len(), 1);
    bench.member(2, "bob", &["r"]);
    assert!(
        bench.out.to(2).iter().any(|s| s.contains("from afar")),
        "kept in history"
    );
}

#[test]
fn the_presence_limit_holds_for_the_room_across_loops_and_nodes() {
    let mut bench = Bench::new(3);
    let a = bench.member(1, "a", &["r"]);
    bench.other.elsewhere = 1; // three with a and b: within the limit
    bench.member(2, "b", &["r"]);
    assert!(
        bench.out.to(1).iter().any(|s| s.contains(r#""name":"b""#)),
        "b's join is the room's third member"
    );
    bench.other.elsewhere = 10;
    bench.out.clear();
    bench.other.published.clear();
    bench.member(3, "c", &["r"]);
    only_the_joiner_heard(&bench, 3, &[1, 2]);
    // A join from elsewhere is not for anyone here either; a message still is.
    let event = |json: &str| Serialized {
        json: json.as_bytes().to_vec(),
        name_msg: None,
    };
    for (json, remember) in [(r#"{"type":"joined"}"#, false), (r#"{"type":"msg"}"#, true)] {
        bench.other.heard.push(Remote::Room {
            room: "r".into(),
            event: event(json),
            remember,
        });
    }
    bench.settle();
    assert_eq!(bench.out.to(1), vec![r#"{"type":"msg"}"#]);
    // The room's size on request.
    bench.out.clear();
    bench.ask(a, Request::Count { room: "r".into() });
    assert_eq!(
        bench.out.to(1),
        vec![r#"{"type":"members","room":"r","count":13}"#]
    );
}
