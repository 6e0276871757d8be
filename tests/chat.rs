//! End-to-end tests of the chat service over real loopback sockets: TCP members
//! (framed JSON), typed UDP members, seed-style name/msg UDP members, limits, the
//! slow-consumer cut-off, and a room of 1,000 members.
#![cfg(feature = "chat")]

mod chat_support;
mod common;

use std::time::Duration;

use serde_json::json;
use switchboard::services::chat::{Chat, ChatSettings, ChatStatsHandle};

use chat_support::members::{drains_to_eof, small_receive_buffer_client, Member, Peer};
use chat_support::{start, start_clocked, stats_when, MAX_FRAME};
use common::{
    header, is_closed, local_config, udp_client, wait_until, write_frame, ChildServer, TestServer,
    IO_TIMEOUT,
};

fn start_default() -> (TestServer<Chat>, ChatStatsHandle) {
    start(local_config(), ChatSettings::default())
}

#[test]
fn two_tcp_members_talk_in_a_room() {
    let (server, stats) = start_default();
    let mut alice = Member::named(server.tcp(), "alice");
    let mut bob = Member::named(server.tcp(), "bob");
    alice.join("lobby");
    bob.join("lobby");
    alice.expect(json!({"type": "joined", "room": "lobby", "name": "bob"}));

    alice.say("lobby", "hi bob");
    alice.expect_msg("lobby", "alice", "hi bob");
    bob.expect_msg("lobby", "alice", "hi bob");
    bob.say("lobby", "hi alice 你好");
    bob.expect_msg("lobby", "bob", "hi alice 你好");
    alice.expect_msg("lobby", "bob", "hi alice 你好");

    let counted = stats_when(&stats, |s| s.deliveries_out >= 4);
    assert_eq!((counted.members, counted.rooms), (2, 1));
    assert_eq!((counted.messages_in, counted.deliveries_out), (2, 4));
}

#[test]
fn every_member_sees_one_order_of_a_rooms_messages() {
    let (server, _stats) = start_default();
    let mut alice = Member::named(server.tcp(), "alice");
    let mut bob = Member::named(server.tcp(), "bob");
    alice.join("r");
    bob.join("r");
    alice.next(); // bob joined
                  // Both send at once, from two threads, so their messages interleave at the server.
    let mut writers = Vec::new();
    for member in [&alice, &bob] {
        let mut writer = member.writer.try_clone().unwrap();
        let name = member.name.clone();
        writers.push(std::thread::spawn(move || {
            for i in 0..200 {
                let say = json!({"type": "say", "room": "r", "text": format!("{name} {i}")});
                write_frame(&mut writer, say.to_string().as_bytes()).unwrap();
            }
        }));
    }
    for writer in writers {
        writer.join().unwrap();
    }
    let texts = |member: &mut Member| -> Vec<String> {
        (0..400)
            .map(|_| member.next()["text"].as_str().unwrap().to_string())
            .collect()
    };
    let seen_by_alice = texts(&mut alice);
    let seen_by_bob = texts(&mut bob);
    assert_eq!(seen_by_alice, seen_by_bob);
    for name in ["alice", "bob"] {
        let own: Vec<_> = seen_by_alice
            .iter()
            .filter(|t| t.starts_with(name))
            .collect();
        let sent: Vec<_> = (0..200).map(|i| format!("{name} {i}")).collect();
        assert_eq!(
            own,
            sent.iter().collect::<Vec<_>>(),
            "{name}'s messages in order"
        );
    }
}

#[test]
fn a_newcomer_gets_the_rooms_recent_history() {
    let settings = ChatSettings {
        history: 2,
        ..ChatSettings::default()
    };
    let (server, _stats) = start(local_config(), settings);
    let mut alice = Member::named(server.tcp(), "alice");
    alice.join("r");
    for text in ["one", "two", "three"] {
        alice.say("r", text);
        alice.expect_msg("r", "alice", text);
    }
    let mut bob = Member::named(server.tcp(), "bob");
    bob.join("r");
    // The replay is marked as such; what is said afterwards is not.
    for text in ["two", "three"] {
        let replayed =
            json!({"type": "msg", "room": "r", "from": "alice", "text": text, "history": true});
        bob.expect(replayed);
    }
    bob.expect_nothing_more();
    alice.expect(json!({"type": "joined", "room": "r", "name": "bob"}));
    alice.say("r", "four");
    alice.expect_msg("r", "alice", "four");
    bob.expect_msg("r", "alice", "four");
}

#[test]
fn udp_and_tcp_members_share_a_room() {
    let (server, stats) = start_default();
    let mut alice = Member::named(server.tcp(), "alice");
    alice.join("lobby");
    let udp = Peer::new(server.udp());
    udp.send(json!({"type": "hello", "name": "carol"}));
    udp.expect(json!({"type": "welcome", "name": "carol"}));
    udp.send(json!({"type": "join", "room": "lobby"}));
    udp.expect(json!({"type": "joined", "room": "lobby", "name": "carol"}));
    alice.expect(json!({"type": "joined", "room": "lobby", "name": "carol"}));

    udp.send(json!({"type": "say", "room": "lobby", "text": "from udp"}));
    udp.expect(json!({"type": "msg", "room": "lobby", "from": "carol", "text": "from udp"}));
    alice.expect_msg("lobby", "carol", "from udp");
    alice.say("lobby", "from tcp");
    alice.expect_msg("lobby", "alice", "from tcp");
    udp.expect(json!({"type": "msg", "room": "lobby", "from": "alice", "text": "from tcp"}));
    assert_eq!(stats_when(&stats, |s| s.members == 2).members, 2);
}

#[test]
fn direct_messages_reach_only_their_recipient_and_the_sender() {
    let (server, _stats) = start_default();
    let mut alice = Member::named(server.tcp(), "alice");
    let mut bob = Member::named(server.tcp(), "bob");
    let mut carol = Member::named(server.tcp(), "carol");
    alice.send(json!({"type": "dm", "to": "bob", "text": "psst"}));
    let dm = json!({"type": "dm", "from": "alice", "to": "bob", "text": "psst"});
    bob.expect(dm.clone());
    alice.expect(dm);
    carol.expect_nothing_more();

    let udp = Peer::new(server.udp());
    udp.send(json!({"type": "hello", "name": "dave"}));
    udp.expect(json!({"type": "welcome", "name": "dave"}));
    bob.send(json!({"type": "dm", "to": "dave", "text": "over udp"}));
    udp.expect(json!({"type": "dm", "from": "bob", "to": "dave", "text": "over udp"}));

    alice.send(json!({"type": "dm", "to": "nobody", "text": "hello?"}));
    alice.expect_error("no member named nobody");
}

#[test]
fn joins_leaves_and_renames_are_announced() {
    let (server, _stats) = start_default();
    let mut alice = Member::named(server.tcp(), "alice");
    let mut bob = Member::named(server.tcp(), "bob");
    alice.join("r");
    bob.join("r");
    alice.expect(json!({"type": "joined", "room": "r", "name": "bob"}));

    bob.hello("robert");
    alice.expect(json!({"type": "renamed", "room": "r", "old": "bob", "name": "robert"}));
    bob.expect(json!({"type": "renamed", "room": "r", "old": "bob", "name": "robert"}));

    bob.send(json!({"type": "leave", "room": "r"}));
    let left = json!({"type": "left", "room": "r", "name": "robert"});
    bob.expect(left.clone());
    alice.expect(left);
    bob.send(json!({"type": "list"}));
    bob.expect(json!({"type": "rooms", "rooms": [{"room": "r", "members": ["alice"]}]}));
    bob.send(json!({"type": "leave", "room": "r"}));
    bob.expect_error("not in room r");
    alice.expect_nothing_more();
}

#[test]
fn rooms_over_the_presence_limit_announce_only_to_the_member_concerned() {
    let settings = ChatSettings {
        presence_limit: 2,
        ..ChatSettings::default()
    };
    let (server, _stats) = start(local_config(), settings);
    let mut alice = Member::named(server.tcp(), "alice");
    let mut bob = Member::named(server.tcp(), "bob");
    let mut carol = Member::named(server.tcp(), "carol");
    alice.join("r");
    bob.join("r");
    alice.expect(json!({"type": "joined", "room": "r", "name": "bob"}));
    carol.join("r"); // a third member: over the limit, only carol hears of it
    alice.expect_nothing_more();
    bob.expect_nothing_more();
}

#[test]
fn names_are_unique_across_tcp_and_udp() {
    let (server, _stats) = start_default();
    let mut alice = Member::named(server.tcp(), "alice");
    let mut other = Member::anonymous(server.tcp());
    other.send(json!({"type": "hello", "name": "alice"}));
    other.expect_error("name alice is taken");
    other.hello("alice2");

    let udp = Peer::new(server.udp());
    udp.send(json!({"type": "hello", "name": "alice"}));
    let error = udp.next();
    assert_eq!(error["type"], "error");
    udp.send(json!({"type": "hello", "name": "udp-alice"}));
    udp.expect(json!({"type": "welcome", "name": "udp-alice"}));
    other.send(json!({"type": "hello", "name": "udp-alice"}));
    other.expect_error("is taken");
    alice.expect_nothing_more();
}

#[test]
fn each_bad_input_is_answered_with_an_error_and_the_connection_continues() {
    let settings = ChatSettings {
        max_text: 16,
        ..ChatSettings::default()
    };
    let (server, _stats) = start(local_config(), settings);
    let mut anonymous = Member::anonymous(server.tcp());
    anonymous.send(json!({"type": "join", "room": "r"}));
    anonymous.expect_error("say hello first");

    let _taken = Member::named(server.tcp(), "taken");
    let mut member = Member::named(server.tcp(), "m");
    member.join("r");
    let cases: [(&[u8], &str); 9] = [
        (b"{\"type\": \"ping\"", "invalid JSON"),
        (
            b"{\"type\":\"say\",\"room\":\"r\",\"text\":\"\xff\xfe\"}",
            "invalid UTF-8",
        ),
        (
            br#"{"type":"shout","text":"hi"}"#,
            "unknown variant `shout`",
        ),
        (br#"{"text":"no type"}"#, "missing field `type`"),
        (br#"{"type":"say","room":"r"}"#, "missing field `text`"),
        (br#"{"type":"hello","name":"taken"}"#, "name taken is taken"),
        (br#"{"type":"hello","name":"has space"}"#, "spaces"),
        (
            br#"{"type":"say","room":"r","text":"seventeen bytes!!"}"#,
            "over the limit",
        ),
        (
            br#"{"type":"say","room":"elsewhere","text":"hi"}"#,
            "not in room elsewhere",
        ),
    ];
    for (input, words) in cases {
        member.send_raw(input);
        member.expect_error(words);
    }
    member.say("r", "still here");
    member.expect_msg("r", "m", "still here");

    // A UDP member is answered like a TCP one. A UDP source that holds no name is not
    // answered at all (it may be a forged address: tests/chat_hostile.rs): the pong
    // is the next datagram it gets.
    let udp = Peer::new(server.udp());
    udp.send_raw(b"not json");
    udp.send(json!({"type": "ping"}));
    udp.expect(json!({"type": "pong"}));
    udp.send(json!({"type": "hello", "name": "u"}));
    udp.expect(json!({"type": "welcome", "name": "u"}));
    udp.send_raw(b"not json");
    assert_eq!(udp.next()["type"], "error");
}

#[test]
fn an_oversize_frame_closes_the_connection() {
    let (server, _stats) = start_default();
    let mut member = Member::named(server.tcp(), "big");
    std::io::Write::write_all(&mut member.writer, &header(MAX_FRAME as u32 + 1)).unwrap();
    assert!(is_closed(member.reader.get_mut()));
    // The name is free again.
    Member::named(server.tcp(), "big");
}

#[test]
fn a_seed_style_datagram_makes_a_name_msg_member_answered_in_its_own_form() {
    let (server, _stats) = start_default();
    let seed = udp_client();
    seed.send_to(
        r#"{"name": "clinet1", "msg": "你好"}"#.as_bytes(),
        server.udp(),
    )
    .unwrap();
    let mut buf = [0u8; 1024];
    let (n, _) = seed.recv_from(&mut buf).unwrap();
    // Exactly the seed form: the seed client prints reply["name"] and reply["msg"].
    assert_eq!(&buf[..n], r#"{"name":"clinet1","msg":"你好"}"#.as_bytes());

    // A second name/msg client with the same name is told so, in the form it reads.
    let impostor = Peer::new(server.udp());
    impostor.send(json!({"name": "clinet1", "msg": "me too"}));
    impostor.expect(json!({"name": "switchboard", "msg": "error: name clinet1 is taken"}));
}

#[test]
fn name_msg_and_typed_members_in_the_lobby_see_each_others_messages() {
    let (server, _stats) = start_default();
    let mut alice = Member::named(server.tcp(), "alice");
    alice.join("lobby");
    let seed = Peer::new(server.udp());
    seed.send(json!({"name": "clinet1", "msg": "hello all"}));
    seed.expect(json!({"name": "clinet1", "msg": "hello all"}));
    // A name/msg member's arrival is not announced (tests/chat_hostile.rs says why):
    // its message is what the lobby sees.
    alice.expect_msg("lobby", "clinet1", "hello all");

    // Presence is not sent to a name/msg member: the next datagram it gets is a message.
    let mut bob = Member::named(server.tcp(), "bob");
    bob.join("lobby");
    alice.say("lobby", "hi clinet1");
    seed.expect(json!({"name": "alice", "msg": "hi clinet1"}));
    bob.send(json!({"type": "dm", "to": "clinet1", "text": "private"}));
    seed.expect(json!({"name": "bob", "msg": "private"}));
    seed.send(json!({"name": "clinet1", "msg": "bye"}));
    seed.expect(json!({"name": "clinet1", "msg": "bye"}));
}

#[test]
fn a_slow_consumer_is_cut_off_while_a_fast_member_gets_everything_in_order() {
    let mut config = local_config();
    config.write_limit = 64 * 1024;
    let (server, stats) = start(config, ChatSettings::default());
    let mut slow = Member::over(small_receive_buffer_client(server.tcp()));
    slow.hello("slow");
    slow.join("r");
    let mut fast = Member::named(server.tcp(), "fast");
    fast.join("r");
    slow.next(); // fast joined; from now on `slow` reads nothing

    // Send in windows of 16 messages, each window read back before the next, so the
    // fast member's queue never nears the limit while the slow one's grows.
    let padding = "x".repeat(1000);
    let (mut sent, mut received, mut saw_slow_leave) = (0, 0, false);
    while stats.get().slow_consumers == 0 {
        assert!(sent < 40_000, "the slow consumer was never cut off");
        for _ in 0..16 {
            fast.say("r", &format!("{sent:06} {padding}"));
            sent += 1;
        }
        while received < sent {
            let event = fast.next();
            if event["type"] == "left" {
                assert_eq!(event["name"], "slow");
                saw_slow_leave = true;
                continue;
            }
            let number: usize = event["text"].as_str().unwrap()[..6].parse().unwrap();
            assert_eq!(number, received, "messages arrive in order, none missing");
            received += 1;
        }
    }
    if !saw_slow_leave {
        fast.expect(json!({"type": "left", "room": "r", "name": "slow"}));
    }
    fast.say("r", "after");
    fast.expect_msg("r", "fast", "after");
    assert_eq!(
        stats_when(&stats, |s| s.slow_consumers >= 1).slow_consumers,
        1
    );
    assert_eq!(stats_when(&stats, |s| s.members == 1).members, 1);
    assert!(
        drains_to_eof(slow.reader.get_mut()),
        "the slow consumer was closed"
    );
}

#[test]
fn a_room_of_1000_members_all_receive_a_broadcast() {
    // Presence off for this room size: 1,000 joins would mean 500,000 `joined` events
    // to read before the broadcast, which is not what this test is about.
    let settings = ChatSettings {
        presence_limit: 0,
        ..ChatSettings::default()
    };
    let (server, stats) = start(local_config(), settings);
    let mut members: Vec<Member> = (0..1000)
        .map(|i| {
            let mut member = Member::named(server.tcp(), &format!("m{i}"));
            member.join("big");
            member
        })
        .collect();
    members[0].say("big", "to all");
    for member in &mut members {
        member.expect_msg("big", "m0", "to all");
    }
    let counted = stats_when(&stats, |s| s.deliveries_out >= 1000);
    assert_eq!(counted.members, 1000);
    assert_eq!(counted.deliveries_out, 1000);
}

#[test]
fn a_disconnect_frees_the_name_and_the_room_hears_of_it() {
    let (server, stats) = start_default();
    let mut alice = Member::named(server.tcp(), "alice");
    let mut bob = Member::named(server.tcp(), "bob");
    alice.join("a");
    alice.join("b");
    bob.join("a");
    bob.join("b");
    alice.expect(json!({"type": "joined", "room": "a", "name": "bob"}));
    alice.expect(json!({"type": "joined", "room": "b", "name": "bob"}));
    drop(bob);
    alice.expect(json!({"type": "left", "room": "a", "name": "bob"}));
    alice.expect(json!({"type": "left", "room": "b", "name": "bob"}));
    let _bob_again = Member::named(server.tcp(), "bob");
    assert!(wait_until(IO_TIMEOUT, || stats.get().members == 2));
}

#[test]
fn bye_leaves_the_chat_and_frees_the_name_at_once() {
    let (server, stats) = start_default();
    let mut alice = Member::named(server.tcp(), "alice");
    alice.join("lobby");
    let udp = Peer::new(server.udp());
    udp.send(json!({"type": "hello", "name": "carol"}));
    udp.next();
    udp.send(json!({"type": "join", "room": "lobby"}));
    udp.next();
    alice.next(); // carol joined
    udp.send(json!({"type": "bye"}));
    alice.expect(json!({"type": "left", "room": "lobby", "name": "carol"}));

    let mut bob = Member::named(server.tcp(), "bob");
    bob.join("lobby");
    alice.next(); // bob joined
    bob.send(json!({"type": "bye"}));
    alice.expect(json!({"type": "left", "room": "lobby", "name": "bob"}));
    assert!(is_closed(bob.reader.get_mut()));
    let _carol = Member::named(server.tcp(), "carol");
    let _bob = Member::named(server.tcp(), "bob");
    assert_eq!(stats_when(&stats, |s| s.members == 3).members, 3);
}

#[test]
fn a_silent_udp_member_expires() {
    let settings = ChatSettings {
        udp_expiry: Duration::from_millis(500),
        ..ChatSettings::default()
    };
    // On a virtual clock: the silence is measured to the millisecond, without sleeping.
    let (server, stats) = start_clocked(settings);
    let mut alice = Member::named(server.tcp(), "alice");
    alice.join("lobby");
    let carol = Peer::new(server.udp());
    carol.send(json!({"type": "hello", "name": "carol"}));
    carol.expect(json!({"type": "welcome", "name": "carol"}));
    carol.send(json!({"type": "join", "room": "lobby"}));
    carol.expect(json!({"type": "joined", "room": "lobby", "name": "carol"}));
    alice.expect(json!({"type": "joined", "room": "lobby", "name": "carol"}));
    // A datagram within the period keeps it: 300 ms on, it pings; its first expiry
    // check (at 500 ms) finds it heard from since and looks again 500 ms after the ping.
    server.advance(Duration::from_millis(300));
    carol.send(json!({"type": "ping"}));
    carol.expect(json!({"type": "pong"}));
    server.advance(Duration::from_millis(200));
    server.advance(Duration::from_millis(299));
    assert_eq!(stats.get().members, 2, "expired before its time");
    server.advance(Duration::from_millis(1));
    alice.expect(json!({"type": "left", "room": "lobby", "name": "carol"}));
    assert_eq!(stats_when(&stats, |s| s.members == 1).members, 1);

    // A name/msg member expires the same way, as silently as it came.
    let seed = Peer::new(server.udp());
    seed.send(json!({"name": "clinet1", "msg": "hi"}));
    seed.next();
    alice.expect_msg("lobby", "clinet1", "hi");
    assert_eq!(stats_when(&stats, |s| s.members == 2).members, 2);
    server.advance(Duration::from_millis(500));
    assert_eq!(stats_when(&stats, |s| s.members == 1).members, 1);
    alice.expect_nothing_more();
}

#[test]
fn the_chat_command_serves_tcp_and_udp_with_its_limits() {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = ChildServer::start(
        &["chat", "--tcp", &addr, "--udp", &addr, "--max-text", "5"],
        Some(port),
    );
    let mut alice = Member::named(addr.parse().unwrap(), "alice");
    alice.join("lobby");
    alice.say("lobby", "toolong");
    alice.expect_error("over the limit of 5 bytes");
    let seed = Peer::new(addr.parse().unwrap());
    seed.send(json!({"name": "clinet1", "msg": "hey"}));
    seed.expect(json!({"name": "clinet1", "msg": "hey"}));
    alice.expect_msg("lobby", "clinet1", "hey");
    server.signal("TERM");
    let (code, stderr) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("chat served:"), "{stderr}");
    assert!(
        stderr.contains("messages in 1, deliveries out 2"),
        "{stderr}"
    );
}
