//! The `framed` and `raw` workloads: TCP connections, each keeping `depth` messages in
//! flight, each reply checked against what was sent.
//!
//! Replies on a TCP connection come back in the order sent, so a connection needs no
//! table of outstanding messages: the next reply must be message `next_reply`, and its
//! send time is in a ring of `depth` slots, in the connection's own state
//! ([`StreamLine`]). The messages one batch of replies frees are encoded together and
//! leave in one send.

use std::time::Instant;

use super::bench::{Bench, Line};
use super::pace::Gate;
use super::report::Recorder;
use super::wire::{LoadCodec, Pattern};
use super::Options;
use crate::{Buffer, CloseMode, CloseReason, ConnId, Context, Frames};

/// One connection's bookkeeping.
#[derive(Debug)]
pub struct StreamLine {
    /// Its number among the workload's connections (the payload pattern depends on it).
    index: usize,
    /// When each in-flight message was sent (nanoseconds since the workload's epoch),
    /// at `seq % depth`.
    sent_at: Box<[u64]>,
    /// Sequence number of the next message to send.
    next_send: u64,
    /// Sequence number of the next reply expected.
    next_reply: u64,
}

impl StreamLine {
    fn in_flight(&self) -> u64 {
        self.next_send - self.next_reply
    }
}

/// The framed or raw echo workload.
#[derive(Debug)]
pub struct StreamWork {
    /// The connections, by number, once up (for the open loop's round robin).
    conns: Vec<Option<ConnId>>,
    codec: LoadCodec,
    pattern: Pattern,
    depth: usize,
    gate: Gate,
    /// Messages sent and not answered, over all connections.
    outstanding: u64,
    /// Messages still unanswered by connections open when the run ended.
    never_answered: u64,
    /// Connections up and not closed.
    open: usize,
    /// The batch of encoded messages for one send.
    batch: Buffer,
    /// The clock send and reply times count from (nanoseconds: a subtraction per
    /// reply, not a `Duration`).
    epoch: Instant,
}

impl StreamWork {
    /// The workload `options` describe; its connections are dialled by the run.
    pub fn new(options: &Options) -> Self {
        StreamWork {
            conns: vec![None; options.conns],
            codec: Bench::codec(options),
            pattern: Pattern::new(options.size),
            depth: options.depth,
            gate: Gate::new(options.messages, options.rate, options.conns),
            outstanding: 0,
            never_answered: 0,
            open: 0,
            batch: Buffer::new(),
            epoch: Instant::now(),
        }
    }

    /// The state connection `index` starts with.
    pub fn line(&self, index: usize) -> StreamLine {
        StreamLine {
            index,
            sent_at: vec![0; self.depth].into_boxed_slice(),
            next_send: 0,
            next_reply: 0,
        }
    }

    /// Connection `line.index` is up.
    pub fn connected(&mut self, line: &StreamLine, conn: ConnId) {
        self.conns[line.index] = Some(conn);
        self.open += 1;
    }

    /// Encodes one more message for `line` into the batch, if the gate allows.
    fn issue(&mut self, line: &mut StreamLine, now_ns: u64) -> bool {
        if line.in_flight() >= self.depth as u64 || !self.gate.take() {
            return false;
        }
        let seq = line.next_send;
        let framed = self
            .pattern
            .append_framed(&self.codec, line.index, seq, &mut self.batch);
        if framed.is_err() {
            self.gate.refund();
            return false;
        }
        line.sent_at[(seq % self.depth as u64) as usize] = now_ns;
        line.next_send += 1;
        self.outstanding += 1;
        true
    }

    /// Closed loop: refills `line` to `depth` messages in flight; returns how many
    /// messages the batch holds.
    fn top_up(&mut self, line: &mut StreamLine, now_ns: u64) -> u64 {
        let mut issued = 0;
        while self.issue(line, now_ns) {
            issued += 1;
        }
        issued
    }

    /// Sends the batch on `conn`.
    fn send_batch(&mut self, ctx: &mut Context<'_, Bench>, conn: ConnId, count: u64) {
        if count > 0 {
            // Fails only for a connection already closing; its close is counted then.
            let _ = ctx.send_encoded(conn, self.batch.readable(), count);
        }
        self.batch.clear();
    }

    /// Starts the load: every connection fills its pipeline (closed loop).
    pub fn begin(&mut self, ctx: &mut Context<'_, Bench>, now: Instant, _rec: &mut Recorder) {
        self.gate.begin(now);
        if !self.gate.closed_loop() {
            return;
        }
        let now_ns = self.nanos(now);
        for i in 0..self.conns.len() {
            let Some(conn) = self.conns[i] else {
                continue;
            };
            let count = match ctx.state_mut(conn) {
                Some(Line::Stream(line)) => self.top_up(line, now_ns),
                _ => continue,
            };
            self.send_batch(ctx, conn, count);
        }
    }

    /// Checks every reply of one read, then (closed loop) sends as many new messages.
    pub fn replies(
        &mut self,
        ctx: &mut Context<'_, Bench>,
        conn: ConnId,
        line: &mut StreamLine,
        frames: &Frames<'_, LoadCodec>,
        now: Instant,
        rec: &mut Recorder,
    ) {
        let size = self.pattern.size();
        let now_ns = self.nanos(now);
        for payload in frames.payloads() {
            let i = line.index;
            if payload.len() != size {
                let len = payload.len();
                let why = format!("reply of {len} bytes, expected {size}: stream out of step");
                rec.mismatch(|| format!("connection {i}: {why}"));
                return ctx.close(conn, CloseMode::Now);
            }
            if line.in_flight() == 0 {
                rec.mismatch(|| format!("connection {i}: a reply to nothing"));
                return ctx.close(conn, CloseMode::Now);
            }
            let seq = line.next_reply;
            if self.pattern.matches(i, seq, payload) {
                let sent = line.sent_at[(seq % self.depth as u64) as usize];
                rec.reply_ns(size, now_ns.saturating_sub(sent));
            } else {
                let got = Pattern::seq_of(payload);
                rec.mismatch(|| {
                    format!("connection {i}: reply {seq} differs from what was sent (it claims seq {got:?})")
                });
            }
            line.next_reply += 1;
            self.outstanding -= 1;
        }
        if self.gate.closed_loop() {
            let count = self.top_up(line, now_ns);
            self.send_batch(ctx, conn, count);
        }
    }

    /// `at` as nanoseconds since the workload's epoch.
    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// A connection closed: unless the run is ending, that is a fault.
    pub fn closed(
        &mut self,
        line: &StreamLine,
        ending: bool,
        reason: CloseReason,
        rec: &mut Recorder,
    ) {
        if self.conns[line.index].take().is_none() {
            return;
        }
        self.open -= 1;
        self.outstanding -= line.in_flight();
        if ending {
            self.never_answered += line.in_flight();
        } else {
            let i = line.index;
            rec.disconnect(|| format!("connection {i}: {reason}"));
        }
    }

    /// Open loop: sends the messages now due, round robin over the connections.
    pub fn tick(
        &mut self,
        ctx: &mut Context<'_, Bench>,
        now: Instant,
        _rec: &mut Recorder,
    ) -> Option<Instant> {
        let n = self.conns.len() as u64;
        let now_ns = self.nanos(now);
        for k in self.gate.due(now) {
            let Some(conn) = self.conns[(k % n) as usize] else {
                continue;
            };
            let count = match ctx.state_mut(conn) {
                Some(Line::Stream(line)) => u64::from(self.issue(line, now_ns)),
                _ => continue,
            };
            self.send_batch(ctx, conn, count);
        }
        self.gate.next_due()
    }

    /// Sends nothing new from now on.
    pub fn stop(&mut self) {
        self.gate.stop();
    }

    /// Messages sent and not yet answered.
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }

    /// Connections up and open.
    pub fn open(&self) -> usize {
        self.open
    }

    /// True when the message budget is used up.
    pub fn spent(&self) -> bool {
        self.gate.spent()
    }

    /// What is still unanswered at the end: TCP does not lose messages, so each is
    /// the server's fault.
    pub fn finish(&mut self) -> u64 {
        self.never_answered
    }
}
