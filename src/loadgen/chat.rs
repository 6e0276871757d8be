//! The `chat` workload: every connection is a member of one room; the first `senders`
//! members publish to it, and every delivery to every member is checked and timed.
//!
//! Setup: each member sends `hello` (a unique name), `join` (a room unique to this
//! run, so no history is replayed) and `ping`; the server answers in order, so the
//! `pong` proves the join took effect. Load starts once every member has its pong.
//!
//! A published text is `SENDER:SEQ:NANOS:` padded with `x` to `--size` bytes, where
//! NANOS is the send time on this process's clock; every member is in this process, so
//! a delivery's latency is its arrival time minus NANOS. Each sender keeps `depth`
//! messages in flight: one is complete when the room delivers it back to its sender
//! (a room delivers to every member, sender included, in one order). Every member
//! expects each sender's sequence numbers in order without gaps, which checks the
//! room's total order and that no delivery was lost.

use std::borrow::Cow;
use std::io::{self, Write};
use std::time::Instant;

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use serde::Deserialize;

use super::driver::Workload;
use super::pace::Gate;
use super::report::Recorder;
use super::wire::{next_frame, Filled, Inbox, Next, Outbox, HEADER};
use super::Options;

/// Initial input buffer per member; grows for a larger frame.
const INBOX: usize = 16 * 1024;
/// A frame larger than this is taken as a broken stream.
const MAX_FRAME: usize = 16 << 20;

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

/// One member's connection.
#[derive(Debug)]
struct Member {
    stream: TcpStream,
    inbox: Inbox,
    outbox: Outbox,
    /// The pong that ends setup has arrived.
    ready: bool,
    closed: bool,
    /// The next sequence number expected from each sender.
    expect: Box<[u64]>,
}

/// A publishing member's progress.
#[derive(Debug, Clone, Copy, Default)]
struct Sender {
    /// Sequence number of the next message to publish.
    next_seq: u64,
    /// Published and not yet delivered back to this sender.
    in_flight: u64,
}

/// The chat workload.
#[derive(Debug)]
pub struct ChatWorkload {
    members: Vec<Member>,
    senders: Vec<Sender>,
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
    open: usize,
    ready: usize,
}

impl ChatWorkload {
    /// A workload whose members are the connected `streams`.
    pub fn new(options: &Options, streams: Vec<TcpStream>) -> Self {
        let senders = options.senders.min(streams.len());
        let members: Vec<Member> = streams
            .into_iter()
            .map(|stream| Member {
                stream,
                inbox: Inbox::new(INBOX),
                outbox: Outbox::new(INBOX),
                ready: false,
                closed: false,
                expect: vec![0; senders].into_boxed_slice(),
            })
            .collect();
        let epoch = Instant::now();
        let tag = format!(
            "{:x}{:x}",
            std::process::id(),
            epoch.elapsed().as_nanos() as u16
        );
        ChatWorkload {
            open: members.len(),
            gate: Gate::new(options.messages, options.rate, senders),
            members,
            senders: vec![Sender::default(); senders],
            room: format!("bench-{tag}"),
            prefix: format!("b{tag}-"),
            size: options.size,
            depth: options.depth as u64,
            epoch,
            undelivered: 0,
            ready: 0,
        }
    }

    /// Appends one length-prefixed frame whose payload `body` writes.
    fn frame(outbox: &mut Outbox, body: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) {
        let out = outbox.append();
        let at = out.len();
        out.extend_from_slice(&[0; HEADER]);
        // Writing to a Vec cannot fail.
        let _ = body(out);
        let len = (out.len() - at - HEADER) as u32;
        out[at..at + HEADER].copy_from_slice(&len.to_be_bytes());
    }

    /// Publishes one message from sender `s`, if it has room and the gate allows.
    fn publish(&mut self, s: usize, now: Instant, rec: &mut Recorder) -> bool {
        if self.members[s].closed || self.senders[s].in_flight >= self.depth || !self.gate.take() {
            return false;
        }
        let seq = self.senders[s].next_seq;
        let nanos = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let (room, size) = (&self.room, self.size);
        Self::frame(&mut self.members[s].outbox, |out| {
            write!(out, r#"{{"type":"say","room":"{room}","text":""#)?;
            let text_at = out.len();
            write!(out, "{s}:{seq}:{nanos}:")?;
            let pad = size.saturating_sub(out.len() - text_at);
            out.resize(out.len() + pad, b'x');
            out.extend_from_slice(br#""}"#);
            Ok(())
        });
        self.senders[s].next_seq += 1;
        self.senders[s].in_flight += 1;
        self.undelivered += self.open as u64;
        rec.publish();
        true
    }

    fn flush(&mut self, i: usize, rec: &mut Recorder) {
        let member = &mut self.members[i];
        if member.closed || member.outbox.is_empty() {
            return;
        }
        if let Err(e) = member.outbox.flush(&mut member.stream) {
            self.close(i, rec, &e);
        }
    }

    fn close(&mut self, i: usize, rec: &mut Recorder, why: &dyn std::fmt::Display) {
        let member = &mut self.members[i];
        if member.closed {
            return;
        }
        member.closed = true;
        self.open -= 1;
        if member.ready {
            self.ready -= 1;
        }
        let owed: u64 = (self.senders.iter().zip(member.expect.iter()))
            .map(|(sender, got)| sender.next_seq.saturating_sub(*got))
            .sum();
        self.undelivered = self.undelivered.saturating_sub(owed);
        if let Some(sender) = self.senders.get_mut(i) {
            sender.in_flight = 0;
        }
        rec.disconnect(|| format!("member {i}: {why}"));
    }

    fn read(&mut self, i: usize, now: Instant, rec: &mut Recorder) {
        loop {
            let filled = {
                let member = &mut self.members[i];
                member.inbox.fill(&mut member.stream)
            };
            match filled {
                Ok(Filled::More(_)) => self.take_frames(i, now, rec),
                Ok(Filled::Drained(_)) => return self.take_frames(i, now, rec),
                Ok(Filled::WouldBlock) => return,
                Ok(Filled::Closed) => return self.close(i, rec, &"closed by the server"),
                Err(e) => return self.close(i, rec, &e),
            }
            if self.members[i].closed {
                return;
            }
        }
    }

    /// Handles every complete frame in member `i`'s inbox.
    fn take_frames(&mut self, i: usize, now: Instant, rec: &mut Recorder) {
        loop {
            let inbox = &mut self.members[i].inbox;
            let (start, len, used) = match next_frame(inbox.pending()) {
                Next::Message { start, len, used } => (start, len, used),
                Next::Partial { len } if len > MAX_FRAME => {
                    rec.mismatch(|| format!("member {i}: a frame of {len} bytes"));
                    return self.close(i, rec, &"broken stream");
                }
                Next::Partial { len } => return inbox.reserve_message(HEADER + len),
                Next::Nothing => return,
            };
            let inbox = std::mem::replace(&mut self.members[i].inbox, Inbox::new(0));
            self.handle(i, &inbox.pending()[start..start + len], now, rec);
            let member = &mut self.members[i];
            member.inbox = inbox;
            member.inbox.consume(used);
            if member.closed {
                return;
            }
        }
    }

    /// One frame from the server to member `i`.
    fn handle(&mut self, i: usize, payload: &[u8], now: Instant, rec: &mut Recorder) {
        let message: Incoming = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => return rec.mismatch(|| format!("member {i}: not a chat message: {e}")),
        };
        match message.kind.as_ref() {
            "msg" if message.room == Some(self.room.as_str()) => {
                self.delivery(i, message.text.unwrap_or(""), now, rec);
            }
            "pong" if !self.members[i].ready => {
                self.members[i].ready = true;
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

    /// A room message delivered to member `i`: check its order, time it, and if it
    /// is `i`'s own, let `i` publish the next one.
    fn delivery(&mut self, i: usize, text: &str, now: Instant, rec: &mut Recorder) {
        let Some((s, seq, nanos)) = parse_text(text).filter(|(s, ..)| *s < self.senders.len())
        else {
            return rec.mismatch(|| format!("member {i}: a message not sent by this run"));
        };
        let expected = &mut self.members[i].expect[s];
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
        if i == s && self.senders[s].in_flight > 0 {
            self.senders[s].in_flight -= 1;
            if self.gate.closed_loop() {
                self.publish(s, now, rec);
            }
        }
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

impl Workload for ChatWorkload {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        for (i, member) in self.members.iter_mut().enumerate() {
            registry.reregister(
                &mut member.stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
        }
        Ok(())
    }

    fn start(&mut self, _now: Instant, rec: &mut Recorder) {
        for i in 0..self.members.len() {
            let (prefix, room) = (&self.prefix, &self.room);
            let outbox = &mut self.members[i].outbox;
            Self::frame(outbox, |o| {
                write!(o, r#"{{"type":"hello","name":"{prefix}{i}"}}"#)
            });
            Self::frame(outbox, |o| {
                write!(o, r#"{{"type":"join","room":"{room}"}}"#)
            });
            Self::frame(outbox, |o| write!(o, r#"{{"type":"ping"}}"#));
            self.flush(i, rec);
        }
    }

    fn ready(&self) -> bool {
        self.ready == self.open
    }

    fn begin(&mut self, now: Instant, rec: &mut Recorder) {
        self.gate.begin(now);
        if self.gate.closed_loop() {
            for s in 0..self.senders.len() {
                while self.publish(s, now, rec) {}
                self.flush(s, rec);
            }
        }
    }

    fn event(&mut self, token: usize, event: &Event, now: Instant, rec: &mut Recorder) {
        if self.members.get(token).is_none_or(|m| m.closed) {
            return;
        }
        if event.is_writable() {
            self.flush(token, rec);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read(token, now, rec);
            self.flush(token, rec);
        }
    }

    fn tick(&mut self, now: Instant, rec: &mut Recorder) -> Option<Instant> {
        let n = self.senders.len() as u64;
        let due = self.gate.due(now);
        let any = !due.is_empty();
        for k in due {
            self.publish((k % n) as usize, now, rec);
        }
        if any {
            for s in 0..self.senders.len() {
                self.flush(s, rec);
            }
        }
        self.gate.next_due()
    }

    fn stop(&mut self) {
        self.gate.stop();
    }

    fn outstanding(&self) -> u64 {
        self.undelivered
    }

    fn open(&self) -> usize {
        self.open
    }

    fn spent(&self) -> bool {
        self.gate.spent()
    }

    fn finish(&mut self, _rec: &mut Recorder) -> u64 {
        // Every open member should have received everything every sender published.
        let published: Vec<u64> = self.senders.iter().map(|s| s.next_seq).collect();
        self.members
            .iter()
            .filter(|m| !m.closed)
            .flat_map(|m| m.expect.iter().zip(&published))
            .map(|(got, sent)| sent.saturating_sub(*got))
            .sum()
    }
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
