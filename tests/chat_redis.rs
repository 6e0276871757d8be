//! Chat across machines through a real `redis-server` (`.ci/run` installs it): three
//! `switchboard chat --redis` processes on loopback, members on each. Rooms span the
//! nodes in each sender's order, names are unique cluster-wide, direct messages and
//! `list` cross nodes; Redis killed and restarted mid-test: local rooms go on, members
//! are told, and traffic flows across nodes again after the restart; a node killed
//! outright loses its members from the cluster when their keys expire.
#![cfg(feature = "redis")]

#[allow(dead_code)]
mod chat_support;
mod common;
mod redis_support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use chat_support::members::Member;
use common::{free_port, wait_until, ChildServer, StderrLog, IO_TIMEOUT};
use redis_support::RedisServer;

/// One chat node: a `switchboard chat` process joined to `redis`.
struct Node {
    server: ChildServer,
    log: StderrLog,
    tcp: SocketAddr,
}

impl Node {
    fn start(redis: &RedisServer) -> Node {
        let port = free_port();
        let tcp = format!("127.0.0.1:{port}");
        let url = format!("redis://{}", redis.addr());
        let args = [
            "chat",
            "--tcp",
            &tcp,
            "--udp",
            "off",
            "--redis",
            &url,
            "--redis-ttl",
            "2",
        ];
        let mut server = ChildServer::start(&args, Some(port));
        let log = StderrLog::capture(&mut server);
        log.wait_for("the link to Redis", IO_TIMEOUT, |log| {
            log.contains("connected to Redis")
        });
        Node {
            server,
            log,
            tcp: tcp.parse().unwrap(),
        }
    }

    fn member(&self, name: &str) -> Member {
        Member::named(self.tcp, name)
    }
}

/// Reads events until one satisfies `wanted`, skipping presence events on the way.
#[track_caller]
fn next_such(member: &mut Member, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let event = member.next();
        if wanted(&event) {
            return event;
        }
        let kind = event["type"].as_str().unwrap_or_default();
        assert!(
            matches!(kind, "joined" | "left" | "renamed" | "notice"),
            "{} got {event} while waiting",
            member.name
        );
    }
}

/// A `list` round trip: its answer comes through the member's node's connection to
/// Redis, after every command the node sent before it (its subscriptions among them).
#[track_caller]
fn list(member: &mut Member) -> Value {
    member.send(json!({"type": "list"}));
    next_such(member, |e| e["type"] == "rooms")["rooms"].clone()
}

fn join_settled(member: &mut Member, room: &str) {
    member.join(room);
    list(member);
}

#[test]
fn three_nodes_share_rooms_names_dms_and_list_and_ride_out_a_redis_restart() {
    let mut redis = RedisServer::start();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&redis)).collect();
    let mut alice = nodes[0].member("alice");
    let mut dave = nodes[0].member("dave");
    let mut bob = nodes[1].member("bob");
    let mut carol = nodes[2].member("carol");

    // Names are unique across the cluster.
    let mut impostor = Member::anonymous(nodes[2].tcp);
    impostor.send(json!({"type": "hello", "name": "alice"}));
    impostor.expect_error("name alice is taken");
    // Requests sent right behind a `hello` wait for it, in order.
    impostor.send(json!({"type": "hello", "name": "eve"}));
    impostor.send(json!({"type": "ping"}));
    impostor.expect(json!({"type": "welcome", "name": "eve"}));
    impostor.expect(json!({"type": "pong"}));

    for member in [&mut alice, &mut dave, &mut bob, &mut carol] {
        join_settled(member, "r");
    }
    // A room spans the nodes, in each sender's order.
    for i in 0..50 {
        alice.say("r", &format!("alice {i}"));
        bob.say("r", &format!("bob {i}"));
    }
    for member in [&mut alice, &mut dave, &mut bob, &mut carol] {
        let (mut from_alice, mut from_bob) = (0, 0);
        while from_alice + from_bob < 100 {
            let event = next_such(member, |e| e["type"] == "msg");
            let text = event["text"].as_str().unwrap().to_string();
            if text.starts_with("alice") {
                assert_eq!(text, format!("alice {from_alice}"), "{}", member.name);
                from_alice += 1;
            } else {
                assert_eq!(text, format!("bob {from_bob}"), "{}", member.name);
                from_bob += 1;
            }
        }
    }

    // Direct messages cross nodes; the sender's copy comes once a node has it.
    alice.send(json!({"type": "dm", "to": "carol", "text": "psst"}));
    let dm = json!({"type": "dm", "from": "alice", "to": "carol", "text": "psst"});
    assert_eq!(
        common_without_ts(next_such(&mut carol, |e| e["type"] == "dm")),
        dm
    );
    assert_eq!(
        common_without_ts(next_such(&mut alice, |e| e["type"] == "dm")),
        dm
    );
    alice.send(json!({"type": "dm", "to": "nobody", "text": "?"}));
    alice.expect_error("no member named nobody");

    // `list` names every node's members.
    let rooms = list(&mut bob);
    assert_eq!(
        rooms,
        json!([{"room": "r", "members": ["alice", "bob", "carol", "dave"]}])
    );

    // Redis goes away: members hear of it, the node's own room goes on.
    redis.stop();
    for member in [&mut alice, &mut dave, &mut bob, &mut carol] {
        let notice = next_such(member, |e| e["type"] == "notice");
        assert!(
            notice["text"].as_str().unwrap().contains("down"),
            "{notice}"
        );
    }
    alice.say("r", "only here");
    alice.expect_msg("r", "alice", "only here");
    dave.expect_msg("r", "alice", "only here");

    // Redis is back: the nodes reconnect, and traffic crosses them again.
    redis.restart();
    for member in [&mut alice, &mut dave, &mut bob, &mut carol] {
        let notice = next_such(member, |e| e["type"] == "notice");
        assert!(notice["text"].as_str().unwrap().contains("up"), "{notice}");
        list(member); // its node's subscriptions are in place again
    }
    bob.say("r", "after the restart");
    for member in [&mut alice, &mut dave, &mut bob, &mut carol] {
        let event = next_such(member, |e| e["type"] == "msg");
        assert_eq!(event["text"], "after the restart", "{}", member.name);
    }
    // The names were taken again: still unique.
    let mut second = Member::anonymous(nodes[1].tcp);
    second.send(json!({"type": "hello", "name": "carol"}));
    second.expect_error("name carol is taken");
    for node in nodes {
        node.server.signal("TERM");
        let (code, _) = node.server.wait(IO_TIMEOUT);
        let log = node.log.finish();
        assert_eq!(code, Some(0), "{log}");
        assert!(log.contains("lost Redis"), "{log}");
    }
}

#[test]
fn a_dead_nodes_members_leave_the_cluster_when_their_keys_expire() {
    let redis = RedisServer::start();
    let (a, mut b) = (Node::start(&redis), Node::start(&redis));
    let mut alice = a.member("alice");
    join_settled(&mut alice, "r");
    let mut bob = b.member("bob");
    join_settled(&mut bob, "r");
    assert_eq!(
        list(&mut alice),
        json!([{"room": "r", "members": ["alice", "bob"]}])
    );
    // Killed outright: no goodbye reaches Redis.
    b.server.child.kill().unwrap();
    let _ = b.server.child.wait();
    let freed = wait_until(Duration::from_secs(10), || {
        list(&mut alice) == json!([{"room": "r", "members": ["alice"]}])
    });
    assert!(freed, "bob's key outlived its TTL");
    let mut new_bob = Member::anonymous(a.tcp);
    new_bob.hello("bob");
    drop(bob);
}

/// `event` without its `ts`.
fn common_without_ts(mut event: Value) -> Value {
    if let Some(object) = event.as_object_mut() {
        object.remove("ts");
    }
    event
}
