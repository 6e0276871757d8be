//! Chat across the loops of one process, over real sockets: a pool of chat loops with
//! connections dealt round robin (so the test knows which loop holds whom). Rooms span
//! loops, each sender's order holds on every loop, names are unique across loops,
//! direct messages and `list` cross them, and the slow-consumer cut-off applies per
//! member to traffic from another loop.
#![cfg(feature = "chat")]

#[allow(dead_code)]
mod chat_support;
mod common;

use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};

use serde_json::json;
use switchboard::services::chat::{Chat, ChatCodec, ChatLoops, ChatSettings, ChatStatsHandle};
use switchboard::{BoundAddr, Config, LoopInfo, Pool, Running, Spread};

use chat_support::members::{drains_to_eof, small_receive_buffer_client, Member};
use chat_support::{stats_when, MAX_FRAME};
use common::{local_config, wait_until, IO_TIMEOUT};

/// A chat pool of `threads` loops and each loop's counters, in loop order.
struct ChatPool {
    running: Option<Running<Chat, ()>>,
    tcp: SocketAddr,
    stats: Vec<ChatStatsHandle>,
}

impl ChatPool {
    fn start(config: Config, threads: usize) -> ChatPool {
        ChatPool::start_with(config, threads, ChatSettings::default())
    }

    fn start_with(config: Config, threads: usize, settings: ChatSettings) -> ChatPool {
        let shared = ChatLoops::default();
        let (stats_tx, stats_rx) = mpsc::channel();
        let stats_tx = Arc::new(Mutex::new(stats_tx));
        let make = move |info: LoopInfo<Chat>| {
            let index = info.index;
            let chat = Chat::on_loop(settings.clone(), info, &shared);
            let _ = stats_tx.lock().unwrap().send((index, chat.stats().clone()));
            chat
        };
        let running = Pool::new(config, threads)
            .spread(Spread::Handoff)
            .start(ChatCodec::length(MAX_FRAME), make, |_| ())
            .expect("the pool starts");
        let mut stats: Vec<(usize, ChatStatsHandle)> =
            (0..threads).map(|_| stats_rx.recv().unwrap()).collect();
        stats.sort_by_key(|(index, _)| *index);
        let tcp = running
            .endpoints()
            .iter()
            .find_map(|b| match b {
                BoundAddr::Tcp(addr) => Some(*addr),
                _ => None,
            })
            .unwrap();
        ChatPool {
            running: Some(running),
            tcp,
            stats: stats.into_iter().map(|(_, s)| s).collect(),
        }
    }
}

impl Drop for ChatPool {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
            let _ = running.wait();
        }
    }
}

#[test]
fn a_room_spans_loops_and_every_sender_keeps_its_order_everywhere() {
    let pool = ChatPool::start(local_config(), 2);
    // Dealt round robin: alice and carol on loop 0, bob on loop 1.
    let mut alice = Member::named(pool.tcp, "alice");
    let mut bob = Member::named(pool.tcp, "bob");
    let mut carol = Member::named(pool.tcp, "carol");
    alice.join("r");
    bob.join("r");
    alice.expect(json!({"type": "joined", "room": "r", "name": "bob"}));
    carol.join("r");
    alice.expect(json!({"type": "joined", "room": "r", "name": "carol"}));
    bob.expect(json!({"type": "joined", "room": "r", "name": "carol"}));

    // Both loops send at once; each member sees each sender's messages in its order.
    let mut writers = Vec::new();
    for member in [&alice, &bob] {
        let mut writer = member.writer.try_clone().unwrap();
        let name = member.name.clone();
        writers.push(std::thread::spawn(move || {
            for i in 0..300 {
                let say = json!({"type": "say", "room": "r", "text": format!("{name} {i}")});
                common::write_frame(&mut writer, say.to_string().as_bytes()).unwrap();
            }
        }));
    }
    for writer in writers {
        writer.join().unwrap();
    }
    for member in [&mut alice, &mut bob, &mut carol] {
        let texts: Vec<String> = (0..600)
            .map(|_| member.next()["text"].as_str().unwrap().to_string())
            .collect();
        for sender in ["alice", "bob"] {
            let own: Vec<&String> = texts.iter().filter(|t| t.starts_with(sender)).collect();
            let sent: Vec<String> = (0..300).map(|i| format!("{sender} {i}")).collect();
            assert_eq!(own, sent.iter().collect::<Vec<_>>(), "{sender}'s order");
        }
        member.expect_nothing_more();
    }
    // The leave of a member on loop 1 reaches loop 0.
    drop(bob);
    alice.expect(json!({"type": "left", "room": "r", "name": "bob"}));
    carol.expect(json!({"type": "left", "room": "r", "name": "bob"}));
}

#[test]
fn names_are_unique_across_loops_and_freed_when_their_holder_goes() {
    let pool = ChatPool::start(local_config(), 2);
    let alice = Member::named(pool.tcp, "alice"); // loop 0
    let mut other = Member::anonymous(pool.tcp); // loop 1
    other.send(json!({"type": "hello", "name": "alice"}));
    other.expect_error("name alice is taken");
    // A rename frees the old name on every loop.
    let mut alice = alice;
    alice.hello("alicia");
    other.hello("alice");
    drop(alice);
    let mut third = Member::anonymous(pool.tcp); // loop 0
    let freed = wait_until(IO_TIMEOUT, || {
        third.send(json!({"type": "hello", "name": "alicia"}));
        third.next()["type"] == "welcome"
    });
    assert!(freed, "a gone member's name is free on the other loop");
}

#[test]
fn direct_messages_and_list_cross_loops() {
    let pool = ChatPool::start(local_config(), 2);
    let mut alice = Member::named(pool.tcp, "alice"); // loop 0
    let mut bob = Member::named(pool.tcp, "bob"); // loop 1
    alice.join("a-room");
    bob.join("b-room");
    bob.join("a-room");
    alice.expect(json!({"type": "joined", "room": "a-room", "name": "bob"}));

    alice.send(json!({"type": "dm", "to": "bob", "text": "psst"}));
    let dm = json!({"type": "dm", "from": "alice", "to": "bob", "text": "psst"});
    alice.expect(dm.clone());
    bob.expect(dm);
    bob.send(json!({"type": "dm", "to": "alice", "text": "back"}));
    alice.expect(json!({"type": "dm", "from": "bob", "to": "alice", "text": "back"}));
    bob.next();
    alice.send(json!({"type": "dm", "to": "nobody", "text": "?"}));
    alice.expect_error("no member named nobody");

    for member in [&mut alice, &mut bob] {
        member.send(json!({"type": "list"}));
        member.expect(json!({"type": "rooms", "rooms": [
            {"room": "a-room", "members": ["alice", "bob"]},
            {"room": "b-room", "members": ["bob"]},
        ]}));
    }
}

#[test]
fn a_member_too_slow_for_another_loops_traffic_is_cut_off_alone() {
    let mut config = local_config();
    config.write_limit = 64 * 1024;
    let pool = ChatPool::start(config, 2);
    let mut talker = Member::named(pool.tcp, "talker"); // loop 0
    let mut slow = Member::over(small_receive_buffer_client(pool.tcp)); // loop 1
    let _spare = Member::named(pool.tcp, "spare"); // loop 0
    let mut fast = Member::named(pool.tcp, "fast"); // loop 1
    slow.hello("slow");
    slow.join("r");
    fast.join("r");
    talker.join("r");
    fast.expect(json!({"type": "joined", "room": "r", "name": "talker"}));
    slow.next(); // fast joined
    slow.next(); // talker joined; from now on `slow` reads nothing

    let padding = "x".repeat(1000);
    let (mut sent, mut received) = (0, 0);
    while pool.stats[1].get().slow_consumers == 0 {
        assert!(sent < 40_000, "the slow consumer was never cut off");
        for _ in 0..16 {
            talker.say("r", &format!("{sent:06} {padding}"));
            sent += 1;
        }
        while received < sent {
            let event = fast.next();
            if event["type"] == "left" {
                continue;
            }
            let number: usize = event["text"].as_str().unwrap()[..6].parse().unwrap();
            assert_eq!(number, received, "in order, none missing");
            received += 1;
        }
        while talker.next()["type"] != "msg" {}
        // (the talker reads its own messages too, so it never falls behind)
        for _ in 1..16 {
            talker.next();
        }
    }
    assert_eq!(
        stats_when(&pool.stats[1], |s| s.slow_consumers >= 1).slow_consumers,
        1
    );
    assert_eq!(pool.stats[0].get().slow_consumers, 0);
    assert!(
        drains_to_eof(slow.reader.get_mut()),
        "the slow member was closed"
    );
    talker.say("r", "after");
    // The room hears that the slow member left, now or before; then the message.
    let mut event = fast.next();
    while event["type"] == "left" {
        assert_eq!(event["name"], "slow");
        event = fast.next();
    }
    assert_eq!(
        (&event["type"], &event["text"]),
        (&json!("msg"), &json!("after"))
    );
}

#[test]
fn a_full_inbox_drops_and_counts_what_another_loop_sends_and_blocks_no_one() {
    let mut config = local_config();
    config.inbox_capacity = 4;
    let settings = ChatSettings {
        history: 0,
        ..ChatSettings::default()
    };
    let pool = ChatPool::start_with(config, 2, settings);
    let mut talker = Member::named(pool.tcp, "talker"); // loop 0
    let mut listener = Member::named(pool.tcp, "listener"); // loop 1
    listener.join("r");
    talker.join("r");
    // Loop 0 knows loop 1 has a member in "r": it sent it the join.
    listener.expect(json!({"type": "joined", "room": "r", "name": "talker"}));
    // 500 messages in one write: loop 0 posts them to loop 1 far faster than loop 1 is
    // woken to take them from an inbox of four.
    let mut burst = Vec::new();
    for i in 0..500 {
        let say = json!({"type": "say", "room": "r", "text": format!("{i}")});
        burst.extend(common::frame(say.to_string().as_bytes()));
    }
    std::io::Write::write_all(&mut talker.writer, &burst).unwrap();
    for i in 0..500 {
        let event = talker.next();
        assert_eq!(
            event["text"],
            format!("{i}"),
            "the sender's own loop misses nothing"
        );
    }
    let dropped = stats_when(&pool.stats[0], |s| s.cross_loop_dropped > 0).cross_loop_dropped;
    // What reached loop 1 arrives in order, and loop 1 still answers at once.
    listener.send(json!({"type": "ping"}));
    let mut last = -1i64;
    loop {
        let event = listener.next();
        if event["type"] == "pong" {
            break;
        }
        if event["type"] == "joined" {
            continue;
        }
        let n: i64 = event["text"].as_str().unwrap().parse().unwrap();
        assert!(n > last, "in order: {n} after {last}");
        last = n;
    }
    assert!(dropped < 500, "some got through: dropped {dropped}");
}

#[test]
fn the_presence_limit_counts_the_room_on_every_loop() {
    let settings = ChatSettings {
        presence_limit: 3,
        ..ChatSettings::default()
    };
    let pool = ChatPool::start_with(local_config(), 2, settings);
    // Dealt round robin: a and c on loop 0, b and d on loop 1.
    let mut a = Member::named(pool.tcp, "a");
    let mut b = Member::named(pool.tcp, "b");
    let mut c = Member::named(pool.tcp, "c");
    let mut d = Member::named(pool.tcp, "d");
    a.join("r");
    b.join("r");
    a.expect(json!({"type": "joined", "room": "r", "name": "b"}));
    c.join("r");
    a.expect(json!({"type": "joined", "room": "r", "name": "c"}));
    b.expect(json!({"type": "joined", "room": "r", "name": "c"}));
    // The fourth member passes the limit across the loops: only it hears of its join,
    // on its own loop and on the other (each loop has but two members).
    d.join("r");
    drop(c); // a leave past the limit, from loop 0
    d.say("r", "after");
    for member in [&mut a, &mut b, &mut d] {
        member.expect_msg("r", "d", "after");
    }
    a.expect_nothing_more();
    b.expect_nothing_more();
    // Its size, on request, from either loop.
    for member in [&mut a, &mut b] {
        member.send(json!({"type": "count", "room": "r"}));
        member.expect(json!({"type": "members", "room": "r", "count": 3}));
    }
}
