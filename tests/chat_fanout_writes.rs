//! Room traffic is written once per member per turn: the events a turn queues for a
//! member (a burst of messages from a pipelining sender, say) leave in one `write`,
//! however many there are, and each one is a shared frame, not a copy per member.
//! `Stats::queued_writes` counts the calls. The reactor runs on the test's thread
//! ([`Driven`]): one turn takes in the sender's whole burst.
#![cfg(feature = "chat")]

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::*;
use switchboard::frame::wire;
use switchboard::services::chat::{Chat, ChatCodec, ChatSettings};

const MEMBERS: usize = 20;
const BURST: usize = 10;

/// Writes each of `requests` as a frame, all in one `write`.
fn send_all(client: &mut TcpStream, requests: &[String]) {
    let mut bytes = Vec::new();
    for request in requests {
        wire::write_frame(&mut bytes, request.as_bytes()).unwrap();
    }
    client.write_all(&bytes).unwrap();
}

/// Reads every frame `client` has now, with the reactor turning meanwhile, until
/// `count` have come; returns them.
fn read_frames(server: &mut Driven<Chat>, client: &mut TcpStream, count: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    client.set_nonblocking(false).unwrap();
    while frames.len() < count {
        while available_now(client) == 0 {
            server.turn();
        }
        frames.push(wire::read_frame(client).unwrap());
    }
    frames
}

#[test]
fn a_burst_of_room_messages_costs_one_write_per_member() {
    let settings = ChatSettings {
        presence_limit: 0, // the setup's joins out of the way
        ..ChatSettings::default()
    };
    let mut server = Driven::start(
        local_config(),
        Chat::new(settings),
        ChatCodec::length(1 << 16),
    );
    let mut members: Vec<TcpStream> = (0..MEMBERS).map(|_| connect(server.tcp())).collect();
    for (i, member) in members.iter_mut().enumerate() {
        let hello = format!(r#"{{"type":"hello","name":"m{i}"}}"#);
        let join = r#"{"type":"join","room":"r"}"#.to_string();
        send_all(member, &[hello, join]);
        read_frames(&mut server, member, 2); // welcome, its own joined
    }
    let burst: Vec<String> = (0..BURST)
        .map(|i| format!(r#"{{"type":"say","room":"r","text":"{i}"}}"#))
        .collect();
    let (writes, frames_out) = {
        let stats = server.reactor.stats();
        (stats.queued_writes, stats.frames_out)
    };
    send_all(&mut members[0], &burst);
    let frames_in = server.reactor.stats().frames_in;
    server.turn_until("the burst is taken in", |r| {
        r.stats().frames_in == frames_in + BURST as u64
    });
    for member in &mut members {
        let got = read_frames(&mut server, member, BURST);
        for (i, frame) in got.iter().enumerate() {
            let text = format!(r#""text":"{i}""#);
            assert!(String::from_utf8_lossy(frame).contains(&text), "in order");
        }
    }
    let stats = server.reactor.stats();
    assert_eq!(stats.frames_out - frames_out, (MEMBERS * BURST) as u64);
    let writes = stats.queued_writes - writes;
    assert_eq!(
        writes, MEMBERS as u64,
        "{BURST} messages to {MEMBERS} members: one write each, not one per message"
    );
}
