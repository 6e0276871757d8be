//! Writes gathered per callback: a service that answers each pipelined request with
//! its own `ctx.send`, the plain way, costs one `write` per read, not one per answer
//! (`Stats::queued_writes` counts the calls): sends to the connection a callback is about are
//! written together when it returns. The answers still arrive whole and in order,
//! large ones among small ones, and a `forward` mixed with sends keeps its place.
//!
//! The reactor runs on the test's thread ([`Driven`]): one turn takes in what one
//! client `write` brought (on loopback, one read) and answers it.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::*;
use switchboard::frame::wire;
use switchboard::{ConnId, Context, Frames, LengthCodec, Service};

/// Answers every request with its own send: "big" with 100 KiB, "fwd" with the whole
/// batch forwarded as it came (after whatever was sent before it), anything else with
/// itself and a prefix.
struct Answers;

impl Service for Answers {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_frames(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        _: &mut (),
        frames: Frames<'_, LengthCodec>,
    ) {
        for request in frames.payloads() {
            match request {
                b"big" => ctx.send(conn, &big()).unwrap(),
                b"fwd" => ctx.forward(conn, &frames).unwrap(),
                other => ctx.send(conn, &[b"re: ", other].concat()).unwrap(),
            }
        }
    }
}

fn big() -> Vec<u8> {
    (0..100 * 1024).map(|i| (i % 251) as u8).collect()
}

fn start() -> (Driven<Answers>, TcpStream) {
    let mut server = Driven::start(local_config(), Answers, LengthCodec::new(1 << 20));
    let client = connect(server.tcp());
    server.turn_until("the connection is accepted", |r| r.stats().accepted == 1);
    (server, client)
}

/// Writes `requests` as one batch (one `write`), turns until `answers` frames came
/// back, and returns them with the server's `write` calls meanwhile.
#[track_caller]
fn batch(
    server: &mut Driven<Answers>,
    client: &mut TcpStream,
    requests: &[&[u8]],
    answers: usize,
) -> (Vec<Vec<u8>>, u64) {
    let mut bytes = Vec::new();
    for request in requests {
        wire::write_frame(&mut bytes, request).unwrap();
    }
    let writes_before = server.reactor.stats().queued_writes;
    let frames_before = server.reactor.stats().frames_in;
    client.write_all(&bytes).unwrap();
    server.turn_until("the batch is handled", |r| {
        r.stats().frames_in == frames_before + requests.len() as u64
    });
    // (Large answers may need more turns to drain.)
    let mut got = Vec::new();
    client.set_nonblocking(false).unwrap();
    while got.len() < answers {
        while available_now(client) == 0 {
            server.turn();
        }
        got.push(wire::read_frame(client).unwrap());
    }
    (got, server.reactor.stats().queued_writes - writes_before)
}

#[test]
fn sixteen_pipelined_answers_cost_one_write() {
    let (mut server, mut client) = start();
    for round in 0..10u8 {
        let requests: Vec<Vec<u8>> = (0..16u8).map(|i| vec![round, i]).collect();
        let refs: Vec<&[u8]> = requests.iter().map(Vec::as_slice).collect();
        let (answers, writes) = batch(&mut server, &mut client, &refs, 16);
        for (answer, request) in answers.iter().zip(&requests) {
            assert_eq!(answer, &[b"re: ", request.as_slice()].concat());
        }
        assert_eq!(writes, 1, "round {round}: one write for sixteen answers");
    }
    assert_eq!(server.reactor.stats().frames_out, 160);
}

#[test]
fn large_answers_among_small_ones_keep_their_order() {
    let (mut server, mut client) = start();
    let requests: [&[u8]; 5] = [b"a", b"big", b"b", b"big", b"c"];
    let (answers, writes) = batch(&mut server, &mut client, &requests, 5);
    assert_eq!(answers[0], b"re: a");
    assert_eq!(answers[1], big());
    assert_eq!(answers[2], b"re: b");
    assert_eq!(answers[3], big());
    assert_eq!(answers[4], b"re: c");
    // The small answers are gathered (the large ones go out at once and are not
    // counted): at least one gathered write, at most one per small answer.
    assert!((1..=3).contains(&writes), "{writes} gathered writes");
}

#[test]
fn a_forward_after_sends_keeps_its_place() {
    let (mut server, mut client) = start();
    let requests: [&[u8]; 3] = [b"x", b"fwd", b"y"];
    let (answers, writes) = batch(&mut server, &mut client, &requests, 5);
    let expected: [&[u8]; 5] = [b"re: x", b"x", b"fwd", b"y", b"re: y"];
    assert_eq!(answers, expected);
    assert_eq!(writes, 1);
}
