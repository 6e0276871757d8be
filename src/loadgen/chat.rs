//! The `chat` workload: every connection is a member of one room; the first `senders`
//! members publish to it, and every delivery to every member is checked and timed.
//!
//! Setup: each member sends `hello` (a unique name, `b{run}-{index}`), `join` and
//! `ping`, in one send; the server answers in order, so the `pong` proves the join
//! took effect. The room is the run's own (`bench-{run}`), or with `--room` one that
//! other runs share, on this server or (`--addrs`) across the nodes of a cluster.
//! With `--runs N`, a run whose members have all joined says so in the room and waits
//! until N runs have (see [`super::sequence`]): no sender begins before every member of
//! every run is in, so every member can expect every message. A run that hears of a
//! run new to it says its own word again, for the one that came in after it spoke.
//! A frame during setup that no chat server sends (not JSON, or one of the run's own
//! requests coming back, as from an echo server) is kept ([`ChatWork::take_foreign`]):
//! the run fails at once, naming it, instead of waiting for pongs that never come.
//!
//! Texts name their sender, number and wall-clock time ([`super::sequence`]); each
//! member checks every sender's order, this run's or another's, and times every
//! delivery from the stamp, so members in other processes measure too. Each sender
//! keeps `depth` messages in flight: one is complete when the room delivers it back to
//! its sender. When the load ends, each sender says its last word (how many it
//! published) and the run drains until every member has heard every sender's, so the
//! last messages are checked too; then each member says `bye` and shuts its side,
//! and the server closes first: no member leaves with output unread.
//!
//! With counting listeners ([`Listeners::Count`]), the members that only listen take
//! no JSON apart once they are set up: each counts the `msg` frames it receives by a
//! look at their bytes ([`super::glance`]), with no order check and no latency, and
//! once every sender's last word has come compares its count with what the senders
//! published. The senders still parse, check and time everything they receive.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use serde::Deserialize;

use super::bench::{Bench, Line};
use super::check::describe;
use super::glance::{glance, Glance};
use super::pace::Gate;
use super::report::Recorder;
use super::sequence::{self, Expect, Senders, Text, Verdict};
use super::wire::LoadCodec;
use super::{Listeners, Options};
use crate::{Buffer, CloseReason, Codec, ConnId, Context, Frames};

/// The request types the workload sends, which a chat server never sends back.
const REQUESTS: [&str; 5] = ["hello", "join", "ping", "say", "bye"];

/// A server → client message; only the fields the workload reads.
///
/// `room`, `name` and `text` borrow from the frame, so checking a delivery allocates
/// nothing (serde borrows `&str` but not an `Option<Cow<str>>`). The run's own room
/// names and texts never need JSON escapes; a delivery that does is not a bench run's
/// and fails to parse, which counts as an error.
#[derive(Debug, Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    room: Option<&'a str>,
    #[serde(default)]
    text: Option<&'a str>,
    /// Who joined (a `joined` event).
    #[serde(default)]
    name: Option<&'a str>,
    /// A replay of the room's past to a member who just joined: not checked.
    #[serde(default)]
    history: bool,
    /// Error reasons may hold escapes: copied (rare).
    #[serde(default)]
    reason: Option<String>,
}

/// One member's bookkeeping.
#[derive(Debug)]
pub struct MemberLine {
    /// Its number: member `i` is named `{prefix}{i}`; the first `senders` publish.
    index: usize,
    /// The server announced this member's own join.
    joined: bool,
    /// The pong that ends setup has arrived.
    ready: bool,
    /// The next sequence number expected from each sender.
    expect: Expect,
    /// Senders whose last word this member has heard.
    ends: u64,
    /// A sender's messages published and not yet delivered back to it.
    in_flight: u64,
    /// A counting listener's `msg` frames that carried a message.
    counted: u64,
}

/// The chat workload.
#[derive(Debug)]
pub struct ChatWork {
    /// The members, by number, once connected.
    members: Vec<Option<ConnId>>,
    /// How many messages each of this run's senders has published.
    published: Vec<u64>,
    /// This run's id: in its member names and its senders' ids.
    run: String,
    room: String,
    /// Prefix of member names; member `i` is `{prefix}{i}`.
    prefix: String,
    /// Bytes of each published text.
    size: usize,
    /// How the members that only listen take their deliveries.
    listeners: Listeners,
    depth: u64,
    gate: Gate,
    /// Every sender heard of, this run's first.
    senders: Senders,
    /// Runs that said all their members are in (this one included), with their
    /// number of senders; only when runs wait for each other.
    runs_ready: HashMap<String, usize>,
    /// How many runs to wait for (`--runs`).
    runs_wanted: usize,
    /// This run has said that all its members are in.
    announced: bool,
    /// The senders have said their last word.
    ended: bool,
    /// Members say `bye`: what arrives now is not checked.
    leaving: bool,
    /// Deliveries owed by this run's senders: every message published is owed to
    /// every member open at the time; the run drains until none is left.
    undelivered: u64,
    /// Deliveries still owed to members when the run ended (errors).
    never_delivered: u64,
    /// Last words heard, summed over the open members.
    ends_heard: u64,
    open: usize,
    ready: usize,
    /// Members whose own join the server announced, and when the last one was.
    joined: usize,
    last_joined: Option<Instant>,
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
        let run = options.run_id.clone().unwrap_or_else(new_run_id);
        let mut gate = Gate::new(options.messages, options.rate, senders);
        if senders == 0 {
            // Members that only listen: nothing is ever due.
            gate.stop();
        }
        ChatWork {
            members: vec![None; options.conns],
            published: vec![0; senders],
            room: options
                .room
                .clone()
                .unwrap_or_else(|| format!("bench-{run}")),
            prefix: format!("b{run}-"),
            senders: Senders::new(&run, senders),
            run,
            size: options.size,
            listeners: options.listeners,
            depth: options.depth as u64,
            gate,
            runs_ready: HashMap::new(),
            runs_wanted: options.runs,
            announced: false,
            ended: false,
            leaving: false,
            undelivered: 0,
            never_delivered: 0,
            ends_heard: 0,
            open: 0,
            ready: 0,
            joined: 0,
            last_joined: None,
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
            joined: false,
            ready: false,
            expect: Expect::new(self.published.len()),
            ends: 0,
            in_flight: 0,
            counted: 0,
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

    /// Adds a `say` to the run's room, its text written by `text`, to the batch.
    fn say(&mut self, text: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) {
        let room = std::mem::take(&mut self.room);
        self.request(|out| {
            out.extend_from_slice(br#"{"type":"say","room":""#);
            out.extend_from_slice(room.as_bytes());
            out.extend_from_slice(br#"","text":""#);
            text(out)?;
            out.extend_from_slice(br#""}"#);
            Ok(())
        });
        self.room = room;
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

    /// Every member says hello, joins the room, and pings.
    pub fn start(&mut self, ctx: &mut Context<'_, Bench>) {
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
    pub fn members_ready(&self) -> bool {
        self.ready == self.open
    }

    /// Members that have their pong.
    pub fn members_ready_count(&self) -> usize {
        self.ready
    }

    /// Says in the room that this run's members are all in, once (only when runs
    /// wait for each other).
    pub fn announce(&mut self, ctx: &mut Context<'_, Bench>) {
        if self.runs_wanted <= 1 || self.announced {
            return;
        }
        self.announced = true;
        self.runs_ready
            .insert(self.run.clone(), self.published.len());
        if let Some(conn) = self.members.iter().flatten().next().copied() {
            self.say_ready();
            self.send_batch(ctx, conn);
        }
    }

    fn say_ready(&mut self) {
        let (run, senders) = (self.run.clone(), self.published.len());
        self.say(|out| sequence::write_ready(out, &run, senders));
    }

    /// True once every run this one waits for has said its members are in.
    pub fn runs_ready(&self) -> bool {
        self.runs_wanted <= 1 || self.runs_ready.len() >= self.runs_wanted
    }

    /// Runs heard ready (this one included), and how many are awaited.
    pub fn runs_count(&self) -> (usize, usize) {
        (self.runs_ready.len(), self.runs_wanted)
    }

    /// The room's name.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// What the server sent during setup that a chat server never sends, if it did.
    pub fn take_foreign(&mut self) -> Option<String> {
        self.foreign.take()
    }

    /// Adds one message from the sender `line` to the batch, if it has room and the
    /// gate allows.
    fn publish(&mut self, line: &mut MemberLine, rec: &mut Recorder) -> bool {
        let s = line.index;
        if s >= self.published.len() || line.in_flight >= self.depth || !self.gate.take() {
            return false;
        }
        let seq = self.published[s];
        let (run, size) = (std::mem::take(&mut self.run), self.size);
        let sent_us = sequence::unix_micros();
        self.say(|out| sequence::write_data(out, &run, s, seq, sent_us, size));
        self.run = run;
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
            self.publish_on(ctx, s, rec, usize::MAX);
        }
    }

    /// Sender `s` publishes up to `most` messages (it is not the callback's own
    /// connection, so its state is looked up).
    fn publish_on(
        &mut self,
        ctx: &mut Context<'_, Bench>,
        s: usize,
        rec: &mut Recorder,
        most: usize,
    ) {
        let Some(conn) = self.members.get(s).copied().flatten() else {
            return;
        };
        if let Some(Line::Member(line)) = ctx.state_mut(conn) {
            let mut sent = 0;
            while sent < most && self.publish(line, rec) {
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
        if self.leaving {
            return;
        }
        if self.counts(line) {
            return self.count_frames(line, frames, now, rec);
        }
        // One clock reading for the read: its frames arrived together.
        let now_us = sequence::unix_micros();
        for payload in frames.payloads() {
            self.handle(line, payload, now, now_us, rec);
        }
        self.send_batch(ctx, conn);
    }

    /// True when member `line` counts its deliveries rather than parsing them: a
    /// member that only listens, in a run with counting listeners, once set up.
    fn counts(&self, line: &MemberLine) -> bool {
        self.listeners == Listeners::Count && line.ready && line.index >= self.published.len()
    }

    /// Every frame one read brought to a counting listener: `msg` events are counted
    /// from a look at their bytes; any other event is parsed as usual. A listener
    /// sends nothing in return.
    fn count_frames(
        &mut self,
        line: &mut MemberLine,
        frames: &Frames<'_, LoadCodec>,
        now: Instant,
        rec: &mut Recorder,
    ) {
        for payload in frames.payloads() {
            match glance(payload) {
                Glance::Data { text_len } => {
                    line.counted += 1;
                    self.undelivered = self.undelivered.saturating_sub(1);
                    rec.delivery(text_len);
                }
                Glance::End => self.counted_end(line, rec),
                Glance::Unreadable => {
                    let (i, what) = (line.index, describe(payload));
                    rec.mismatch(|| format!("member {i}: a msg event it cannot count: {what}"));
                }
                Glance::NotMsg => self.handle(line, payload, now, sequence::unix_micros(), rec),
            }
        }
    }

    /// A sender's last word reached counting listener `line`. Each sender's words
    /// arrive in the order it said them, so after the last of these every message has
    /// come that ever will: the count must be what the senders published.
    fn counted_end(&mut self, line: &mut MemberLine, rec: &mut Recorder) {
        line.ends += 1;
        self.ends_heard += 1;
        if line.ends != self.published.len() as u64 {
            return;
        }
        let (i, counted) = (line.index, line.counted);
        let published: u64 = self.published.iter().sum();
        if counted < published {
            let lost = published - counted;
            // They will not come: stop waiting for them.
            self.undelivered = self.undelivered.saturating_sub(lost);
            rec.gap(lost, || {
                format!("member {i}: counted {counted} of the {published} messages published")
            });
        } else if counted > published {
            rec.mismatch(|| {
                format!("member {i}: counted {counted} messages, {published} were published")
            });
        }
    }

    /// One frame from the server to member `line`.
    fn handle(
        &mut self,
        line: &mut MemberLine,
        payload: &[u8],
        now: Instant,
        now_us: u64,
        rec: &mut Recorder,
    ) {
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
        let ours = message.room == Some(self.room.as_str());
        match message.kind.as_ref() {
            "msg" if ours && !message.history => {
                self.said(line, message.text.unwrap_or(""), now_us, rec);
            }
            "joined" if ours && !line.joined && self.is_own_name(i, message.name) => {
                line.joined = true;
                self.joined += 1;
                self.last_joined = Some(now);
            }
            "pong" if !line.ready => {
                line.ready = true;
                self.ready += 1;
            }
            "error" => {
                let reason = message.reason.unwrap_or_default();
                rec.mismatch(|| format!("member {i}: server error: {reason}"));
            }
            // welcome, others' joins, left, rooms, dm, history, another room's msg:
            // not measured.
            _ => {}
        }
    }

    /// True when `name` is member `i`'s own.
    fn is_own_name(&self, i: usize, name: Option<&str>) -> bool {
        name.and_then(|n| n.strip_prefix(self.prefix.as_str()))
            .and_then(|index| index.parse::<usize>().ok())
            == Some(i)
    }

    /// A text said in the room, delivered to member `line`.
    fn said(&mut self, line: &mut MemberLine, text: &str, now_us: u64, rec: &mut Recorder) {
        match Text::parse(text) {
            Some(Text::Data {
                sender,
                seq,
                sent_us,
            }) => {
                let latency_ns = now_us.saturating_sub(sent_us).saturating_mul(1_000);
                rec.reply_ns(text.len(), latency_ns);
                let slot = self.senders.slot(sender);
                let (verdict, settled) = line.expect.check(slot, seq);
                self.settle(slot, settled);
                judge(line.index, sender, seq, verdict, rec);
                if slot == line.index && self.senders.is_own(slot) && line.in_flight > 0 {
                    line.in_flight -= 1;
                    if self.gate.closed_loop() {
                        self.publish(line, rec);
                    }
                }
            }
            Some(Text::End { sender, count }) => {
                let slot = self.senders.slot(sender);
                let (verdict, settled) = line.expect.check_end(slot, count);
                self.settle(slot, settled);
                judge(line.index, sender, count, verdict, rec);
                line.ends += 1;
                self.ends_heard += 1;
            }
            Some(Text::Ready { run, senders }) => {
                if self.runs_wanted > 1 && !self.runs_ready.contains_key(run) {
                    self.runs_ready.insert(run.to_string(), senders);
                    if self.announced {
                        // It may have come in after this run spoke: say it again.
                        self.say_ready();
                    }
                }
            }
            None => {
                let i = line.index;
                rec.mismatch(|| format!("member {i}: a message no bench run sent: {text:?}"));
            }
        }
    }

    /// Numbers from one of this run's senders settled: no longer owed.
    fn settle(&mut self, slot: usize, settled: u64) {
        if self.senders.is_own(slot) {
            // Skipped ones (a gap) will not come: stop waiting for them too.
            self.undelivered = self.undelivered.saturating_sub(settled);
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
        self.ends_heard = self.ends_heard.saturating_sub(line.ends);
        let owed: u64 = if self.counts(line) {
            self.owed_to_counter(line)
        } else {
            (self.published.iter().enumerate())
                .map(|(s, published)| published.saturating_sub(line.expect.next(s).unwrap_or(0)))
                .sum()
        };
        self.undelivered = self.undelivered.saturating_sub(owed);
        if ending {
            self.never_delivered += owed;
        } else {
            let i = line.index;
            rec.disconnect(|| format!("member {i}: {reason}"));
        }
    }

    /// Deliveries still owed to counting listener `line`: none once it has heard
    /// every sender's last word (what was missing then is counted lost).
    fn owed_to_counter(&self, line: &MemberLine) -> u64 {
        if line.ends >= self.published.len() as u64 {
            return 0;
        }
        let published: u64 = self.published.iter().sum();
        published.saturating_sub(line.counted)
    }

    /// Open loop: the senders publish what is now due.
    pub fn tick(
        &mut self,
        ctx: &mut Context<'_, Bench>,
        now: Instant,
        rec: &mut Recorder,
    ) -> Option<Instant> {
        let n = self.published.len() as u64;
        if n == 0 {
            return None;
        }
        for k in self.gate.due(now) {
            self.publish_on(ctx, (k % n) as usize, rec, 1);
        }
        self.gate.next_due()
    }

    /// Publishes nothing new from now on: each sender says its last word.
    pub fn stop(&mut self, ctx: &mut Context<'_, Bench>) {
        self.gate.stop();
        if self.ended {
            return;
        }
        self.ended = true;
        for s in 0..self.published.len() {
            let Some(conn) = self.members[s] else {
                continue;
            };
            let (run, count) = (self.run.clone(), self.published[s]);
            self.say(|out| sequence::write_end(out, &run, s, count));
            self.send_batch(ctx, conn);
        }
    }

    /// The run is over: every member says `bye` and shuts its side; the server
    /// closes first, so nothing it sent is left unread.
    pub fn leave(&mut self, ctx: &mut Context<'_, Bench>) {
        self.leaving = true;
        for i in 0..self.members.len() {
            let Some(conn) = self.members[i] else {
                continue;
            };
            self.request(|o| o.write_all(br#"{"type":"bye"}"#));
            self.send_batch(ctx, conn);
            ctx.shutdown_write(conn);
        }
    }

    /// Deliveries this run's senders still owe its members.
    pub fn outstanding(&self) -> u64 {
        self.undelivered
    }

    /// True once nothing more is awaited: every delivery of this run's senders made,
    /// and every member has heard the last word of every sender it waits for (this
    /// run's, and with `--runs`, those of every run that said it was ready).
    pub fn settled(&self) -> bool {
        let senders = if self.runs_wanted > 1 {
            self.runs_ready.values().sum::<usize>()
        } else {
            self.published.len()
        };
        self.undelivered == 0 && self.ends_heard >= (self.open * senders) as u64
    }

    /// Members connected and open.
    pub fn open(&self) -> usize {
        self.open
    }

    /// True when the message budget is used up.
    pub fn spent(&self) -> bool {
        self.gate.spent()
    }

    /// Members whose own join the server announced, and when the last of them was.
    pub fn joined(&self) -> (usize, Option<Instant>) {
        (self.joined, self.last_joined)
    }

    /// Senders heard of, this run's included.
    pub fn senders_heard(&self) -> usize {
        self.senders.len()
    }

    /// This run's id.
    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// How the members that only listen took their deliveries.
    pub fn listeners(&self) -> Listeners {
        self.listeners
    }

    /// Deliveries never made: every member still there at the end should have
    /// received everything every sender published.
    pub fn finish(&mut self) -> u64 {
        self.never_delivered
    }
}

/// Counts what a check of message `seq` from `sender` to member `i` found.
fn judge(i: usize, sender: &str, seq: u64, verdict: Verdict, rec: &mut Recorder) {
    match verdict {
        Verdict::InOrder | Verdict::First => {}
        Verdict::Gap(lost) => rec.gap(lost, || {
            format!("member {i}: from sender {sender} got #{seq}, {lost} before it missing")
        }),
        Verdict::Reorder => {
            rec.reorder(|| format!("member {i}: from sender {sender} got #{seq} after a later one"))
        }
    }
}

/// A run id unique enough among runs started on one machine or several: the process
/// id and the clock's microseconds, in hex.
pub fn new_run_id() -> String {
    let micros = sequence::unix_micros() & 0xff_ffff;
    format!("{:x}{micros:06x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_are_read_without_copying_plain_strings() {
        let m: Incoming = serde_json::from_slice(
            br#"{"type":"msg","room":"r","from":"a","text":"r.0:1:2:","ts":5}"#,
        )
        .unwrap();
        assert!(matches!(m.kind, Cow::Borrowed("msg")));
        assert_eq!(m.text, Some("r.0:1:2:"));
        assert!(!m.history);
        let replay: Incoming =
            serde_json::from_slice(br#"{"type":"msg","room":"r","text":"t","history":true}"#)
                .unwrap();
        assert!(replay.history);
        let e: Incoming = serde_json::from_slice(br#"{"type":"error","reason":"no"}"#).unwrap();
        assert_eq!(e.reason.as_deref(), Some("no"));
    }

    #[test]
    fn run_ids_fit_in_a_member_name() {
        let run = new_run_id();
        assert!(run.len() <= super::super::options::MAX_RUN_ID, "{run}");
        assert!(run.chars().all(|c| c.is_ascii_hexdigit()), "{run}");
    }
}
