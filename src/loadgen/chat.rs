//! The `chat` workload: every connection is a member of one room; the first `senders`
//! members publish to it, and every delivery to every member is checked and timed.
//!
//! Setup: each member sends `hello` (a unique name), `join` (a room unique to this
//! run, so no history is replayed) and `ping`, in one send; the server answers in
//! order, so the `pong` proves the join took effect. Load starts once every member has
//! its pong. What a member has seen of each sender is its own state ([`MemberLine`]).
//! A frame during setup that no chat server sends (not JSON, or one of the run's own
//! requests coming back, as from an echo server) is kept ([`ChatWork::take_foreign`]):
//! the run fails at once, naming it, instead of waiting for pongs that never come.
//!
//! A published text is `SENDER:SEQ:NANOS:` padded with `x` to `--size` bytes, where
//! NANOS is the send time on this process's clock; every member is in this process, so
//! a delivery's latency is its arrival time minus NANOS. Each sender keeps `depth`
//! messages in flight: one is complete when the room delivers it back to its sender
//! (a room delivers to every member, sender included, in one order). Every member
//! expects each sender's sequence numbers in order without gaps, which checks the
//! room's total order and that no delivery was lost.

use std::borrow::Cow;
use std::io::Write;
use std::time::Instant;

use serde::Deserialize;

use super::bench::{Bench, Line};
use super::pace::Gate;
use super::report::Recorder;
use super::wire::LoadCodec;
use super::Options;
use crate::{Buffer, CloseReason, Codec, ConnId, Context, Frames};

/// The request types the workload sends, which a chat server never sends back.
const REQUESTS: [&str; 4] = ["hello", "join", "ping", "say"];

/// A server → client message; only the fields the workload reads.
///
/// `room` and `text` borrow from the frame, so checking a delivery allocates nothing
/// (serde borrows `&str` but not an `Option<Cow<str>>`). The run's own room names and
/// texts never need JSON escapes; a delivery that does is not this run's and fails to
/// parse, which counts as an error.
#[derive(Debug, Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    room: Option<&'a str>,
    #[serde(default)]
    text: Option<&'a str>,
    /// Error reasons may hold escapes: copied (rare).
    #[serde(default)]
    reason: Option<String>,
}

/// One member's bookkeeping.
#[derive(Debug)]
pub struct MemberLine {
    /// Its number: member `i` is named `{prefix}{i}`; the first `senders` publish.
    index: usize,
    /// The pong that ends setup has arrived.
    ready: bool,
    /// The next sequence number expected from each sender.
    expect: Box<[u64]>,
    /// A sender's messages published and not yet delivered back to it.
    in_flight: u64,
}

/// The chat workload.
#[derive(Debug)]
pub struct ChatWork {
    /// The members, by number, once connected.
    members: Vec<Option<ConnId>>,
    /// How many messages each sender has published (the room's sequence numbers).
    published: Vec<u64>,
    room: String,
    /// Prefix of member names; member `i` is `{prefix}{i}`.
    prefix: String,
    /// Bytes of each published text.
    size: usize,
    depth: u64,
    gate: Gate,
    /// The clock that text timestamps count from.
    epoch: Instant,
    /// Deliveries owed: every message published is owed to every member open at the
    /// time; the run drains until none is left.
    undelivered: u64,
    /// Deliveries still owed to members when the run ended (errors).
    never_delivered: u64,
    open: usize,
    ready: usize,
    codec: LoadCodec,
    /// One request's JSON, then a batch of encoded requests for one send.
    json: Vec<u8>,
    batch: Buffer,
    batched: u64,
    /// The first frame during setup that was not from a chat server, described.
    foreign: Option<String>,
}

impl ChatWork {
    /// The workload `options` describe; its members are dialled by the run.
    pub fn new(options: &Options) -> Self {
        let senders = options.senders.min(options.conns);
        let epoch = Instant::now();
        let tag = format!(
            "{:x}{:x}",
            std::process::id(),
            epoch.elapsed().as_nanos() as u16
        );
        ChatWork {
            members: vec![None; options.conns],
            published: vec![0; senders],
            room: format!("bench-{tag}"),
            prefix: format!("b{tag}-"),
            size: options.size,
            depth: options.depth as u64,
            gate: Gate::new(options.messages, options.rate, senders),
            epoch,
            undelivered: 0,
            never_delivered: 0,
            open: 0,
            ready: 0,
            codec: Bench::codec(options),
            json: Vec::new(),
            batch: Buffer::new(),
            batched: 0,
            foreign: None,
        }
    }

    /// The state member `index` starts with.
    pub fn line(&self, index: usize) -> MemberLine {
        MemberLine {
            index,
            ready: false,
            expect: vec![0; self.published.len()].into_boxed_slice(),
            in_flight: 0,
        }
    }

    /// Member `line.index` is connected.
    pub fn connected(&mut self, line: &MemberLine, conn: ConnId) {
        self.members[line.index] = Some(conn);
        self.open += 1;
    }

    /// Adds one request, its JSON written by `body`, to the batch.
    fn request(&mut self, body: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) {
        self.json.clear();
        // Writing to a Vec cannot fail.
        let _ = body(&mut self.json);
        if self.codec.encode(&self.json, &mut self.batch).is_ok() {
            self.batched += 1;
        }
    }

    /// Sends the batch to `conn`.
    fn send_batch(&mut self, ctx: &mut Context<'_, Bench>, conn: ConnId) {
        if self.batched > 0 {
            // Fails only for a member already closing; its close is counted then.
            let _ = ctx.send_encoded(conn, self.batch.readable(), self.batched);
        }
        self.batch.clear();
        self.batched = 0;
    }

    /// Every member says hello, joins the run's room, and pings.
    pub fn start(&mut self, ctx: &mut Context<'_, Bench>, _rec: &mut Recorder) {
        for i in 0..self.members.len() {
            let Some(conn) = self.members[i] else {
                continue;
            };
            let (prefix, room) = (self.prefix.clone(), self.room.clone());
            self.request(|o| write!(o, r#"{{"type":"hello","name":"{prefix}{i}"}}"#));
            self.request(|o| write!(o, r#"{{"type":"join","room":"{room}"}}"#));
            self.request(|o| write!(o, r#"{{"type":"ping"}}"#));
            self.send_batch(ctx, conn);
        }
    }

    /// True once every open member has its pong.
    pub fn ready(&self) -> bool {
        self.ready == self.open
    }

    /// Members that have their pong.
    pub fn members_ready(&self) -> usize {
        self.ready
    }

    /// What the server sent during setup that a chat server never sends, if it did.
    pub fn take_foreign(&mut self) -> Option<String> {
        self.foreign.take()
    }

    /// Adds one message from the sender `line` to the batch, if it has room and the
    /// gate allows.
    fn publish(&mut self, line: &mut MemberLine, now: Instant, rec: &mut Recorder) -> bool {
        let s = line.index;
        if s >= self.published.len() || line.in_flight >= self.depth || !self.gate.take() {
            return false;
        }
        let seq = self.published[s];
        let nanos = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let (room, size) = (std::mem::take(&mut self.room), self.size);
        self.request(|out| {
            write!(out, r#"{{"type":"say","room":"{room}","text":""#)?;
            let text_at = out.len();
            write!(out, "{s}:{seq}:{nanos}:")?;
            let pad = size.saturating_sub(out.len() - text_at);
            out.resize(out.len() + pad, b'x');
            out.extend_from_slice(br#""}"#);
            Ok(())
        });
        self.room = room;
        self.published[s] += 1;
        line.in_flight += 1;
        self.undelivered += self.open as u64;
        rec.publish();
        true
    }

    /// Every sender fills its pipeline (closed loop).
    pub fn begin(&mut self, ctx: &mut Context<'_, Bench>, now: Instant, rec: &mut Recorder) {
        self.gate.begin(now);
        if !self.gate.closed_loop() {
            return;
        }
        for s in 0..self.published.len() {
            self.publish_on(ctx, s, now, rec, usize::MAX);
        }
    }

    /// Sender `s` publishes up to `most` messages (it is not the callback's own
    /// connection, so its state is looked up).
    fn publish_on(
        &mut self,
        ctx: &mut Context<'_, Bench>,
        s: usize,
        now: Instant,
        rec: &mut Recorder,
        most: usize,
    ) {
        let Some(conn) = self.members.get(s).copied().flatten() else {
            return;
        };
        if let Some(Line::Member(line)) = ctx.state_mut(conn) {
            let mut sent = 0;
            while sent < most && self.publish(line, now, rec) {
                sent += 1;
            }
        }
        self.send_batch(ctx, conn);
    }

    /// Every frame one read brought to a member.
    pub fn frames(
        &mut self,
        ctx: &mut Context<'_, Bench>,
        conn: ConnId,
        line: &mut MemberLine,
        frames: &Frames<'_, LoadCodec>,
        now: Instant,
        rec: &mut Recorder,
    ) {
        for payload in frames.payloads() {
            self.handle(line, payload, now, rec);
        }
        self.send_batch(ctx, conn);
    }

    /// One frame from the server to member `line`.
    fn handle(&mut self, line: &mut MemberLine, payload: &[u8], now: Instant, rec: &mut Recorder) {
        let i = line.index;
        let message: Incoming = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => {
                if !line.ready && self.foreign.is_none() {
                    self.foreign =
                        Some(format!("it sent a frame that is not a chat message ({e})"));
                }
                return rec.mismatch(|| format!("member {i}: not a chat message: {e}"));
            }
        };
        if !line.ready && REQUESTS.contains(&message.kind.as_ref()) && self.foreign.is_none() {
            // A chat server never sends requests: this is our own, sent back.
            let kind = &message.kind;
            self.foreign = Some(format!(
                "it sent our own `{kind}` request back, as an echo server does"
            ));
        }
        match message.kind.as_ref() {
            "msg" if message.room == Some(self.room.as_str()) => {
                self.delivery(line, message.text.unwrap_or(""), now, rec);
            }
            "pong" if !line.ready => {
                line.ready = true;
                self.ready += 1;
            }
            "error" => {
                let reason = message.reason.unwrap_or_default();
                rec.mismatch(|| format!("member {i}: server error: {reason}"));
            }
            // welcome, joined, left, rooms, dm, another room's msg: not measured.
            _ => {}
        }
    }

    /// A room message delivered to member `line`: check its order, time it, and if it
    /// is the member's own, let it publish the next one.
    fn delivery(&mut self, line: &mut MemberLine, text: &str, now: Instant, rec: &mut Recorder) {
        let i = line.index;
        let Some((s, seq, nanos)) = parse_text(text).filter(|(s, ..)| *s < self.published.len())
        else {
            return rec.mismatch(|| format!("member {i}: a message not sent by this run"));
        };
        let expected = &mut line.expect[s];
        if seq != *expected {
            let want = *expected;
            rec.mismatch(|| format!("member {i}: from sender {s} got #{seq}, expected #{want}"));
        } else {
            let sent = self.epoch + std::time::Duration::from_nanos(nanos);
            rec.reply(text.len(), now.saturating_duration_since(sent));
        }
        if seq >= *expected {
            // Skipped ones (a gap, counted above) will not come: stop waiting for them.
            self.undelivered = self.undelivered.saturating_sub(seq + 1 - *expected);
            *expected = seq + 1;
        }
        if i == s && line.in_flight > 0 {
            line.in_flight -= 1;
            if self.gate.closed_loop() {
                self.publish(line, now, rec);
            }
        }
    }

    /// A member left: unless the run is ending, that is a fault; what it was owed is
    /// no longer awaited.
    pub fn closed(
        &mut self,
        line: &MemberLine,
        ending: bool,
        reason: CloseReason,
        rec: &mut Recorder,
    ) {
        if self.members[line.index].take().is_none() {
            return;
        }
        self.open -= 1;
        if line.ready {
            self.ready -= 1;
        }
        let owed: u64 = (self.published.iter().zip(line.expect.iter()))
            .map(|(published, got)| published.saturating_sub(*got))
            .sum();
        self.undelivered = self.undelivered.saturating_sub(owed);
        if ending {
            self.never_delivered += owed;
        } else {
            let i = line.index;
            rec.disconnect(|| format!("member {i}: {reason}"));
        }
    }

    /// Open loop: the senders publish what is now due.
    pub fn tick(
        &mut self,
        ctx: &mut Context<'_, Bench>,
        now: Instant,
        rec: &mut Recorder,
    ) -> Option<Instant> {
        let n = self.published.len() as u64;
        for k in self.gate.due(now) {
            self.publish_on(ctx, (k % n) as usize, now, rec, 1);
        }
        self.gate.next_due()
    }

    /// Publishes nothing new from now on.
    pub fn stop(&mut self) {
        self.gate.stop();
    }

    /// Deliveries owed.
    pub fn outstanding(&self) -> u64 {
        self.undelivered
    }

    /// Members connected and open.
    pub fn open(&self) -> usize {
        self.open
    }

    /// True when the message budget is used up.
    pub fn spent(&self) -> bool {
        self.gate.spent()
    }

    /// Deliveries never made: every member still there at the end should have
    /// received everything every sender published.
    pub fn finish(&mut self) -> u64 {
        self.never_delivered
    }
}

/// `SENDER:SEQ:NANOS:padding` → its three numbers.
fn parse_text(text: &str) -> Option<(usize, u64, u64)> {
    let mut parts = text.splitn(4, ':');
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let nanos = parts.next()?.parse().ok()?;
    Some((sender, seq, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_carry_sender_sequence_and_time() {
        assert_eq!(parse_text("2:17:123456:xxxx"), Some((2, 17, 123456)));
        assert_eq!(parse_text("2:17:123456:"), Some((2, 17, 123456)));
        assert_eq!(parse_text("hello there"), None);
    }

    #[test]
    fn server_messages_are_read_without_copying_plain_strings() {
        let m: Incoming = serde_json::from_slice(
            br#"{"type":"msg","room":"r","from":"a","text":"0:1:2:","ts":5}"#,
        )
        .unwrap();
        assert!(matches!(m.kind, Cow::Borrowed("msg")));
        assert_eq!(m.text, Some("0:1:2:"));
        let e: Incoming = serde_json::from_slice(br#"{"type":"error","reason":"no"}"#).unwrap();
        assert_eq!(e.reason.as_deref(), Some("no"));
    }
}
