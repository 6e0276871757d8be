//! Chat across machines through a real `redis-server` (`.ci/run` installs it): three
//! `switchboard chat --redis` processes on loopback, members on each. Rooms span the
//! nodes in each sender's order, names are unique cluster-wide, direct messages and
//! `list` cross nodes; Redis killed and restarted mid-test: local rooms go on, members
//! are told, and traffic flows across nodes again after the restart; a node killed
//! outright loses its members from the cluster when its heartbeat expires, and a node
//! frozen that long takes its names again when it runs again; a dead node's thousands
//! of names are freed once each, in bounded steps. At rest, the commands a node costs
//! Redis per second and its channels do not grow with its members, and a named member
//! costs Redis's memory at most 100 bytes.
//!
//! Then the node's defences against a Redis that misbehaves: frozen (SIGSTOP) under a
//! flooding member, the node's memory stays bounded and its members are told once;
//! frozen under a `hello`, the member is answered within the reply timeout; hostile
//! (replies nested without end), the node cuts the link and serves on; absent at the
//! start, `/healthz` and the link gauge say so until it comes.
#![cfg(feature = "redis")]

#[allow(dead_code)]
mod chat_support;
mod common;
mod redis_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use chat_support::cluster::{next_such, ChatNode as Node};
use chat_support::members::Member;
use common::{read_frame, wait_until, write_frame, IO_TIMEOUT};
use redis_support::RedisServer;

/// A chat node joined to a test's Redis: its key TTL short, so that a dead node's
/// names are freed within the test.
impl Node {
    /// A node joined to `redis`, once its link is up.
    fn start(redis: &RedisServer) -> Node {
        Node::start_with(redis.addr(), &[])
    }

    /// A node on Redis at `redis` with flags `extra`, once its link is up.
    fn start_with(redis: SocketAddr, extra: &[&str]) -> Node {
        Node::spawn_linked(&format!("redis://{redis}"), &with_ttl(extra), None)
    }

    /// A node on Redis at `redis` with flags `extra`, once it listens.
    fn launch(redis: SocketAddr, extra: &[&str]) -> Node {
        Node::spawn(&format!("redis://{redis}"), &with_ttl(extra), None)
    }

    /// The node's resident memory, in bytes (`VmRSS` in `/proc/PID/status`).
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.server.child.id()))
            .expect("the node is running");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in kB");
        kib * 1024
    }

    /// Asserts the node still runs.
    #[track_caller]
    fn assert_alive(&mut self) {
        let exited = self.server.child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "the node exited: {exited:?}\n{}",
            self.log.text()
        );
    }
}

/// `extra` with `--redis-ttl 2` unless it sets a TTL of its own.
fn with_ttl<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    match extra.contains(&"--redis-ttl") {
        true => extra.to_vec(),
        false => [&["--redis-ttl", "2"], extra].concat(),
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
fn a_dead_nodes_members_leave_the_cluster_when_its_heartbeat_stops() {
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
    assert!(freed, "bob's name outlived his node's heartbeat");
    let mut new_bob = Member::anonymous(a.tcp);
    new_bob.hello("bob");
    drop(bob);
}

#[test]
fn a_node_silent_longer_than_its_heartbeat_takes_its_names_again() {
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&redis), Node::start(&redis));
    let mut alice = a.member("alice");
    join_settled(&mut alice, "r");
    let mut bob = b.member("bob");
    join_settled(&mut bob, "r");

    // Frozen with its connection open: its heartbeat expires, and the other node
    // frees its member's name.
    b.server.signal("STOP");
    let freed = wait_until(Duration::from_secs(10), || {
        list(&mut alice) == json!([{"room": "r", "members": ["alice"]}])
    });
    b.server.signal("CONT");
    assert!(freed, "bob's name outlived his node's heartbeat");

    // Running again, it finds its heartbeat gone and takes its names again.
    let back = wait_until(Duration::from_secs(10), || {
        list(&mut alice) == json!([{"room": "r", "members": ["alice", "bob"]}])
    });
    assert!(
        back,
        "bob's node did not take his name again\n{}",
        b.log.text()
    );
    assert!(
        b.log.text().contains("heartbeat had expired"),
        "{}",
        b.log.text()
    );
    alice.send(json!({"type": "dm", "to": "bob", "text": "welcome back"}));
    let dm = next_such(&mut bob, |e| e["type"] == "dm");
    assert_eq!(dm["text"], "welcome back");
    let mut impostor = Member::anonymous(a.tcp);
    impostor.send(json!({"type": "hello", "name": "bob"}));
    impostor.expect_error("name bob is taken");
}

/// What one idle node costs Redis, per second, measured over `window`: the commands
/// run (scripts' own included) and the channels subscribed.
fn idle_cost(redis: &RedisServer, window: Duration) -> (f64, usize) {
    let before = redis.commands_processed();
    let started = Instant::now();
    // A measurement, not a wait for a condition: the node is left alone this long.
    thread::sleep(window);
    let after = redis.commands_processed();
    let elapsed = started.elapsed().as_secs_f64();
    let channels = redis.cli(&["PUBSUB", "CHANNELS", "*"]).lines().count();
    // Less the `INFO` that read the first count.
    ((after - before - 1) as f64 / elapsed, channels)
}

#[test]
fn commands_at_rest_do_not_grow_with_members() {
    let redis = RedisServer::start();
    let node = Node::start_with(redis.addr(), &["--redis-ttl", "1"]);
    let window = Duration::from_secs(4);
    let mut members: Vec<Member> = Vec::new();
    let mut costs = Vec::new();
    for count in [20, 300] {
        while members.len() < count {
            members.push(node.member(&format!("m{}", members.len())));
        }
        // The node's commands for the names are answered before the window opens.
        list(&mut members[0]);
        let (per_second, channels) = idle_cost(&redis, window);
        eprintln!("{count} named members at rest: {per_second:.1} commands/s, {channels} channels");
        costs.push((per_second, channels));
    }
    let [(few, few_channels), (many, many_channels)] = costs[..] else {
        unreachable!()
    };
    // Heartbeats and reaps only: the same work for 15 times the members, within one
    // beat's worth of the window's alignment.
    assert!(
        (many - few).abs() <= (few * 0.3).max(2.0),
        "{few:.1} commands/s for 20 members, {many:.1} for 300"
    );
    assert_eq!(
        (few_channels, many_channels),
        (1, 1),
        "one channel per node"
    );
}

/// `event` without its `ts`.
fn common_without_ts(mut event: Value) -> Value {
    if let Some(object) = event.as_object_mut() {
        object.remove("ts");
    }
    event
}

/// A member's events read on a thread of its own until a `msg` with text `last` (a
/// flooded member must keep reading, or it is cut off as a slow consumer).
struct Reader {
    /// Room messages read so far (recognised without being parsed).
    messages: Arc<AtomicUsize>,
    /// The texts of the notices read, once `last` came.
    thread: thread::JoinHandle<Vec<String>>,
}

/// Starts a [`Reader`] of `member`'s events.
fn collect_notices(member: &Member, last: &'static str) -> Reader {
    assert!(
        member.reader.buffer().is_empty(),
        "events already read ahead"
    );
    let mut reader = member.reader.get_ref().try_clone().unwrap();
    let last = format!("\"text\":\"{last}\"");
    let messages = Arc::new(AtomicUsize::new(0));
    let counted = messages.clone();
    let thread = thread::spawn(move || {
        let mut notices = Vec::new();
        loop {
            let payload = read_frame(&mut reader).expect("an event within the timeout");
            let text = String::from_utf8_lossy(&payload);
            if text.contains(&last) {
                return notices;
            }
            if text.contains("\"type\":\"msg\"") {
                counted.fetch_add(1, Ordering::Relaxed);
            } else if text.contains("\"type\":\"notice\"") {
                let event: Value = serde_json::from_slice(&payload).unwrap();
                notices.push(event["text"].as_str().unwrap_or_default().to_string());
            }
        }
    });
    Reader { messages, thread }
}

#[test]
fn a_frozen_redis_under_a_flood_bounds_the_queue_drops_publishes_and_tells_members_once() {
    let redis = RedisServer::start();
    let node = Node::start(&redis);
    let mut alice = node.member("alice");
    let mut bob = node.member("bob");
    join_settled(&mut alice, "r");
    join_settled(&mut bob, "r");
    next_such(&mut alice, |e| e["type"] == "joined" && e["name"] == "bob");

    redis.pause();
    let before = node.rss();
    let readers = [
        collect_notices(&alice, "last"),
        collect_notices(&bob, "last"),
    ];
    // 80 MB of room messages, each one published to the frozen Redis; in batches of
    // 2 MB that both members have read before the next, so that neither falls behind
    // by the write limit and is cut off as a slow consumer.
    let text = "x".repeat(4000);
    let say = json!({"type": "say", "room": "r", "text": text}).to_string();
    let started = Instant::now();
    let (batches, batch) = (40, 500);
    for sent in (1..=batches).map(|n| n * batch) {
        for _ in 0..batch {
            write_frame(&mut alice.writer, say.as_bytes()).unwrap();
        }
        let read = wait_until(IO_TIMEOUT, || {
            readers
                .iter()
                .all(|r| r.messages.load(Ordering::Relaxed) >= sent)
        });
        assert!(read, "the members did not read {sent} messages");
    }
    alice.say("r", "last");
    let [alice_notices, bob_notices] = readers.map(|r| r.thread.join().unwrap());
    let grown = node.rss().saturating_sub(before);
    eprintln!(
        "80 MB flooded in {:?} with Redis frozen: the node grew by {} KiB",
        started.elapsed(),
        grown / 1024
    );
    assert!(grown < 48 << 20, "the node grew by {} MiB", grown >> 20);
    assert!(node.metric("switchboard_redis_dropped_total") > 0.0);
    // The link's metrics: what waits for the frozen Redis, and what went out to it.
    assert!(node.metric("switchboard_redis_pending") > 0.0);
    let published = node.metric("switchboard_redis_published_total");
    assert!(published > 0.0);
    let events_in = node.metric("switchboard_redis_events_in_total");
    for notices in [&alice_notices, &bob_notices] {
        let backed_up = notices.iter().filter(|n| n.contains("backed up")).count();
        assert_eq!(backed_up, 1, "{notices:?}");
    }
    assert!(
        node.log.text().contains("--redis-max-queued"),
        "{}",
        node.log.text()
    );

    // Redis takes the queue again: the members hear that it drained, once.
    redis.resume();
    for member in [&mut alice, &mut bob] {
        let notice = next_such(member, |e| e["type"] == "notice");
        assert!(
            notice["text"].as_str().unwrap().contains("drained"),
            "{notice}"
        );
    }
    let dropped = node.metric("switchboard_redis_dropped_total");
    alice.say("r", "after");
    bob.expect_msg("r", "alice", "after");
    list(&mut bob);
    assert_eq!(node.metric("switchboard_redis_dropped_total"), dropped);
    assert!(node.metric("switchboard_redis_published_total") > published);
    // Redis answered every command at last, and sent the node its publishes back (its
    // own room's events, on the room's channel).
    let answered = wait_until(IO_TIMEOUT, || {
        node.metric("switchboard_redis_pending") == 0.0
    });
    assert!(
        answered,
        "{} commands still pending",
        node.metric("switchboard_redis_pending")
    );
    assert!(node.metric("switchboard_redis_events_in_total") > events_in);
}

#[test]
fn a_hello_that_redis_does_not_answer_is_refused_within_the_reply_timeout() {
    let redis = RedisServer::start();
    let node = Node::start_with(redis.addr(), &["--redis-reply-timeout", "1"]);
    let mut member = Member::anonymous(node.tcp);
    member.expect_nothing_more();

    redis.pause();
    let asked = Instant::now();
    member.send(json!({"type": "hello", "name": "bob"}));
    member.send(json!({"type": "ping"}));
    member.expect_error("the cluster did not answer within 1s");
    let waited = asked.elapsed();
    eprintln!("a hello with Redis frozen was refused after {waited:?}");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(2),
        "answered after {waited:?}"
    );
    // The request queued behind the `hello` is carried out right after it.
    member.expect(json!({"type": "pong"}));

    // Redis answers at last: the late grant of "bob" is given back, so the name is
    // free once Redis has answered what followed it (a `list`).
    redis.resume();
    list(&mut member);
    member.hello("bob");
    member.expect_nothing_more();
    let log = node.log.text();
    assert!(log.contains("did not answer within 1s"), "{log}");
}

/// A fake Redis: accepts one connection from the node and reads its `HELLO`.
#[track_caller]
fn accept_the_node(listener: &TcpListener) -> TcpStream {
    let (mut stream, _) = listener.accept().expect("the node dials");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let hello = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";
    let mut got = vec![0u8; hello.len()];
    stream.read_exact(&mut got).expect("HELLO from the node");
    assert_eq!(got, hello);
    stream
}

#[test]
fn a_redis_replying_with_endless_nesting_is_cut_off_and_the_node_serves_on() {
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut node = Node::launch(fake.local_addr().unwrap(), &[]);
    let mut early = Member::anonymous(node.tcp);
    let mut first = accept_the_node(&fake);

    // 800 KB of arrays in arrays: a decoder that recursed on it would overflow its stack.
    let (done, hostile_sent) = mpsc::channel();
    thread::spawn(move || {
        let _ = first.write_all(&b"*1\r\n".repeat(200_000));
        let _ = done.send(());
        // Held open until the node hangs up: its reconnect is its own decision.
        let _ = first.read_to_end(&mut Vec::new());
    });
    hostile_sent.recv_timeout(IO_TIMEOUT).unwrap();
    node.log.wait_for("the refused reply", IO_TIMEOUT, |log| {
        log.contains("a reply nested deeper than 32 levels")
    });
    node.assert_alive();
    // The link is dialled again; then Redis is gone for good.
    drop(accept_the_node(&fake));
    drop(fake);

    // The member connected all along is served (past the notices of the link's ups
    // and downs), and so is a newcomer.
    early.send(json!({"type": "ping"}));
    next_such(&mut early, |e| e["type"] == "pong");
    early.send(json!({"type": "hello", "name": "early"}));
    next_such(&mut early, |e| e["type"] == "welcome");
    early.name = "early".to_string();
    let mut late = node.member("late");
    for member in [&mut early, &mut late] {
        member.send(json!({"type": "join", "room": "r"}));
        let name = member.name.clone();
        next_such(member, |e| e["type"] == "joined" && e["name"] == name);
    }
    early.say("r", "still here");
    let said = next_such(&mut late, |e| e["type"] == "msg");
    assert_eq!(said["text"], "still here");
    node.assert_alive();
}

#[test]
fn healthz_and_the_link_gauge_follow_redis_from_an_unreachable_start() {
    let mut redis = RedisServer::not_started();
    let node = Node::launch(redis.addr(), &[]);
    node.log
        .wait_for("the unreachable Redis", IO_TIMEOUT, |log| {
            log.contains("WARN") && log.contains("cannot reach Redis")
        });
    let (status, body) = node.get("/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("link down"), "{body}");
    assert_eq!(node.metric("switchboard_redis_link_up"), 0.0);

    // A member arriving meanwhile is told its rooms are this server's only.
    let mut alice = Member::anonymous(node.tcp);
    alice.hello("alice");
    let notice = next_such(&mut alice, |e| e["type"] == "notice");
    assert!(
        notice["text"].as_str().unwrap().contains("down"),
        "{notice}"
    );

    redis.restart();
    let up = wait_until(IO_TIMEOUT, || {
        node.get("/healthz") == (200, "ok\n".to_string())
    });
    assert!(up, "/healthz: {:?}", node.get("/healthz"));
    assert_eq!(node.metric("switchboard_redis_link_up"), 1.0);
    assert!(node.metric("switchboard_redis_reconnects_total") >= 1.0);
    let notice = next_such(&mut alice, |e| e["type"] == "notice");
    assert!(notice["text"].as_str().unwrap().contains("up"), "{notice}");

    // And it follows Redis down again.
    redis.stop();
    let down = wait_until(IO_TIMEOUT, || node.get("/healthz").0 == 503);
    assert!(down, "/healthz: {:?}", node.get("/healthz"));
    assert_eq!(node.metric("switchboard_redis_link_up"), 0.0);
}

#[test]
fn the_presence_limit_counts_the_room_on_every_node() {
    let redis = RedisServer::start();
    let nodes = [
        Node::start_with(redis.addr(), &["--presence-limit", "2"]),
        Node::start_with(redis.addr(), &["--presence-limit", "2"]),
    ];
    let mut a = nodes[0].member("a");
    let mut b = nodes[0].member("b");
    join_settled(&mut a, "r");
    join_settled(&mut b, "r");
    a.expect(json!({"type": "joined", "room": "r", "name": "b"}));
    // The third member, on the other node, passes the limit: its join reaches only
    // itself. (Its node heard of nobody in the room before, so it publishes the
    // join; the first node knows the room's size and keeps it from its members.)
    let mut c = nodes[1].member("c");
    join_settled(&mut c, "r");
    a.say("r", "x");
    for member in [&mut a, &mut b, &mut c] {
        member.expect_msg("r", "a", "x");
    }
    a.expect_nothing_more();
    b.expect_nothing_more();
    // The room's size across the nodes, on request, from either node.
    for member in [&mut a, &mut c] {
        member.send(json!({"type": "count", "room": "r"}));
        member.expect(json!({"type": "members", "room": "r", "count": 3}));
    }
}

/// Redis's `used_memory`, in bytes.
#[track_caller]
fn used_memory(redis: &RedisServer) -> u64 {
    let info = redis.cli(&["INFO", "memory"]);
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no used_memory in\n{info}"))
}

/// How many members `list` shows in `room`.
fn listed_in(member: &mut Member, room: &str) -> usize {
    let rooms = list(member);
    let found = rooms.as_array().into_iter().flatten();
    let found = found.filter(|r| r["room"] == room);
    found
        .map(|r| r["members"].as_array().map_or(0, Vec::len))
        .sum()
}

#[test]
fn a_named_member_costs_redis_at_most_100_bytes() {
    const MEMBERS: usize = 5_000;
    let redis = RedisServer::start();
    let node = Node::start_with(redis.addr(), &["--presence-limit", "1"]);
    // One member first, so that what every name shares (the scripts Redis caches,
    // the room's channel, the node's registration) is counted before.
    let mut first = node.member("first");
    join_settled(&mut first, "big");
    let before = used_memory(&redis);
    // Named as the bench names them (`b{run}-{index}`), each in the one room.
    let members = many_members(&node, (MEMBERS, "b1234-"), "big", &mut first, 1);
    let per_member = (used_memory(&redis) - before) as f64 / MEMBERS as f64;
    eprintln!("Redis used_memory grew by {per_member:.1} bytes per named member");
    assert!(
        per_member <= 100.0,
        "{per_member:.1} bytes per named member"
    );
    // The scripts went once (SCRIPT LOAD), then by name: 5,000 names did not send
    // their source 5,000 times.
    let stats = redis.cli(&["INFO", "commandstats"]);
    let calls = |command: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    assert!(calls("evalsha") >= MEMBERS as u64, "{stats}");
    assert_eq!(calls("eval"), 0, "{stats}");
    drop(members);
}

/// `count` members of `node` named `{prefix}{i}`, each joining `room`, once `watcher`
/// (a member of `room` too) lists them all beside the room's `others` members.
#[track_caller]
fn many_members(
    node: &Node,
    (count, prefix): (usize, &str),
    room: &str,
    watcher: &mut Member,
    others: usize,
) -> Vec<Member> {
    let members: Vec<Member> = (0..count)
        .map(|i| {
            let mut member = Member::anonymous(node.tcp);
            member.send(json!({"type": "hello", "name": format!("{prefix}{i}")}));
            member.send(json!({"type": "join", "room": room}));
            member
        })
        .collect();
    let all = wait_until(Duration::from_secs(60), || {
        listed_in(watcher, room) == count + others
    });
    assert!(all, "{} of {count} listed", listed_in(watcher, room));
    members
}

/// The names a node's log says its `REAP` calls freed, a count per call.
fn freed_per_call(log: &str) -> Vec<usize> {
    log.lines()
        .filter_map(|line| line.split_once(": freed ")?.1.split(' ').next())
        .filter_map(|count| count.parse().ok())
        .collect()
}

#[test]
fn a_dead_nodes_many_names_are_freed_once_in_steps_by_two_survivors() {
    const NAMES: usize = 2_500;
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&redis), Node::start(&redis));
    let mut dead = Node::start(&redis);
    let mut alice = a.member("alice");
    join_settled(&mut alice, "r");
    let mut bob = b.member("bob");
    join_settled(&mut bob, "r");
    let members = many_members(&dead, (NAMES, "d"), "r", &mut alice, 2);

    dead.server.child.kill().unwrap();
    let _ = dead.server.child.wait();
    let freed = wait_until(Duration::from_secs(20), || listed_in(&mut alice, "r") == 2);
    assert!(freed, "{} still listed", listed_in(&mut alice, "r"));
    assert_eq!(
        list(&mut alice),
        json!([{"room": "r", "members": ["alice", "bob"]}])
    );
    // Each name freed once, over both survivors, a bounded step per call.
    let calls: Vec<usize> = [&a, &b]
        .iter()
        .flat_map(|node| freed_per_call(&node.log.text()))
        .collect();
    eprintln!("names freed per REAP call: {calls:?}");
    assert_eq!(calls.iter().sum::<usize>(), NAMES, "{calls:?}");
    assert!(calls.len() >= 3, "{calls:?}");
    assert!(calls.iter().all(|&n| n <= 1_200), "{calls:?}");
    // The pass is over: the dead node's number is gone, and its names free.
    assert_eq!(redis.cli(&["HLEN", "sb:numbers"]).trim(), "2");
    assert_eq!(redis.cli(&["EXISTS", "sb:reaping"]).trim(), "0");
    let mut again = Member::anonymous(b.tcp);
    again.hello("d0");
    drop(members);
}

#[test]
fn scripts_redis_forgot_are_loaded_again_by_a_reconnect() {
    let redis = RedisServer::start();
    let node = Node::start(&redis);
    let mut ann = node.member("ann");
    join_settled(&mut ann, "r");
    redis.cli(&["SCRIPT", "FLUSH"]);
    // The next name's script is unknown to Redis: the node reconnects, loading them.
    let mut ben = Member::anonymous(node.tcp);
    ben.send(json!({"type": "hello", "name": "ben"}));
    next_such(&mut ben, |e| e["type"] == "welcome");
    node.log.wait_for("a second connection", IO_TIMEOUT, |log| {
        log.matches("connected to Redis").count() >= 2
    });
    // Names go to the cluster again, through the scripts loaded anew.
    let mut carol = Member::anonymous(node.tcp);
    carol.send(json!({"type": "hello", "name": "carol"}));
    next_such(&mut carol, |e| e["type"] == "welcome");
    let listed = redis.cli(&["HKEYS", "sb:names"]);
    assert!(listed.contains("carol"), "{listed}");
}
