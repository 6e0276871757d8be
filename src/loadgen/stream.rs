//! The `framed` and `raw` workloads: TCP connections, each keeping `depth` messages in
//! flight, each reply checked against what was sent.
//!
//! Replies on a TCP connection come back in the order sent, so a connection needs no
//! table of outstanding messages: the next reply must be message `next_reply`, and its
//! send time is in a ring of `depth` slots. Messages queued in one turn (the replies a
//! read brought back are all answered at once) leave in one `write`.

use std::io;
use std::time::Instant;

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::driver::Workload;
use super::pace::Gate;
use super::report::Recorder;
use super::wire::{next_frame, Filled, Inbox, Next, Outbox, Pattern, HEADER};
use super::{Mode, Options};

/// Largest input buffer per connection; a connection never has more unanswered bytes
/// than `depth` messages, so this only caps deep pipelines of big messages.
const MAX_INBOX: usize = 256 * 1024;

/// How replies are cut out of the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// 4-byte length header, then the payload.
    Length,
    /// No framing: every `size` bytes are one message.
    Raw,
}

/// One client connection.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    inbox: Inbox,
    outbox: Outbox,
    /// When each in-flight message was sent, at `seq % depth`.
    sent_at: Box<[Instant]>,
    /// Sequence number of the next message to send.
    next_send: u64,
    /// Sequence number of the next reply expected.
    next_reply: u64,
    /// Set when the connection failed; it is then left alone.
    closed: bool,
}

impl Conn {
    fn in_flight(&self) -> u64 {
        self.next_send - self.next_reply
    }
}

/// The framed or raw echo workload.
#[derive(Debug)]
pub struct StreamWorkload {
    conns: Vec<Conn>,
    pattern: Pattern,
    framing: Framing,
    depth: usize,
    gate: Gate,
    /// Messages sent and not answered, over all connections.
    outstanding: u64,
    /// Connections not closed.
    open: usize,
    /// Connections with output queued this turn (open loop), reused every turn.
    dirty: Vec<usize>,
}

impl StreamWorkload {
    /// A workload over connected `streams`.
    pub fn new(options: &Options, streams: Vec<TcpStream>) -> Self {
        let framing = match options.mode {
            Mode::Raw => Framing::Raw,
            _ => Framing::Length,
        };
        let wire_len = options.size
            + if framing == Framing::Length {
                HEADER
            } else {
                0
            };
        let window = wire_len * options.depth;
        let now = Instant::now();
        let conns: Vec<Conn> = streams
            .into_iter()
            .map(|stream| Conn {
                stream,
                inbox: Inbox::new(window.min(MAX_INBOX).max(wire_len)),
                outbox: Outbox::new(window),
                sent_at: vec![now; options.depth].into_boxed_slice(),
                next_send: 0,
                next_reply: 0,
                closed: false,
            })
            .collect();
        StreamWorkload {
            open: conns.len(),
            dirty: Vec::with_capacity(conns.len()),
            gate: Gate::new(options.messages, options.rate, conns.len()),
            conns,
            pattern: Pattern::new(options.size),
            framing,
            depth: options.depth,
            outstanding: 0,
        }
    }

    /// Queues one more message on connection `i`, if the gate allows.
    fn issue(&mut self, i: usize, now: Instant) -> bool {
        if self.conns[i].in_flight() >= self.depth as u64 || !self.gate.take() {
            return false;
        }
        let conn = &mut self.conns[i];
        let seq = conn.next_send;
        if self.framing == Framing::Length {
            conn.outbox.header(self.pattern.size());
        }
        self.pattern.append(i, seq, conn.outbox.append());
        conn.sent_at[(seq % self.depth as u64) as usize] = now;
        conn.next_send += 1;
        self.outstanding += 1;
        true
    }

    /// Closed loop: refills connection `i` to `depth` messages in flight.
    fn top_up(&mut self, i: usize, now: Instant) {
        while self.issue(i, now) {}
    }

    fn flush(&mut self, i: usize, rec: &mut Recorder) {
        let conn = &mut self.conns[i];
        if conn.closed || conn.outbox.is_empty() {
            return;
        }
        if let Err(e) = conn.outbox.flush(&mut conn.stream) {
            self.close(i, rec, &e);
        }
    }

    fn close(&mut self, i: usize, rec: &mut Recorder, why: &dyn std::fmt::Display) {
        let conn = &mut self.conns[i];
        if conn.closed {
            return;
        }
        conn.closed = true;
        self.outstanding -= conn.in_flight();
        self.open -= 1;
        rec.disconnect(|| format!("connection {i}: {why}"));
    }

    /// Reads until the socket is drained, checking every complete reply.
    fn read(&mut self, i: usize, now: Instant, rec: &mut Recorder) {
        loop {
            let filled = {
                let conn = &mut self.conns[i];
                conn.inbox.fill(&mut conn.stream)
            };
            match filled {
                Ok(Filled::More(_)) => self.take_replies(i, now, rec),
                Ok(Filled::Drained(_)) => return self.take_replies(i, now, rec),
                Ok(Filled::WouldBlock) => return,
                Ok(Filled::Closed) => return self.close(i, rec, &"closed by the server"),
                Err(e) => return self.close(i, rec, &e),
            }
            if self.conns[i].closed {
                return;
            }
        }
    }

    /// Checks and consumes every complete reply in connection `i`'s inbox.
    fn take_replies(&mut self, i: usize, now: Instant, rec: &mut Recorder) {
        let size = self.pattern.size();
        loop {
            let conn = &mut self.conns[i];
            let next = match self.framing {
                Framing::Length => next_frame(conn.inbox.pending()),
                Framing::Raw if conn.inbox.pending().len() >= size => Next::Message {
                    start: 0,
                    len: size,
                    used: size,
                },
                Framing::Raw => Next::Nothing,
            };
            let (start, used) = match next {
                Next::Message { len, .. } | Next::Partial { len } if len != size => {
                    let why = format!("reply of {len} bytes, expected {size}: stream out of step");
                    rec.mismatch(|| format!("connection {i}: {why}"));
                    return self.close(i, rec, &why);
                }
                Next::Message { start, used, .. } => (start, used),
                Next::Partial { .. } | Next::Nothing => return,
            };
            if conn.in_flight() == 0 {
                rec.mismatch(|| format!("connection {i}: a reply to nothing"));
                return self.close(i, rec, &"unexpected data");
            }
            let seq = conn.next_reply;
            let payload = &conn.inbox.pending()[start..start + size];
            if self.pattern.matches(i, seq, payload) {
                let sent = conn.sent_at[(seq % self.depth as u64) as usize];
                rec.reply(size, now.saturating_duration_since(sent));
            } else {
                let got = Pattern::seq_of(payload);
                rec.mismatch(|| {
                    format!("connection {i}: reply {seq} differs from what was sent (it claims seq {got:?})")
                });
            }
            conn.next_reply += 1;
            conn.inbox.consume(used);
            self.outstanding -= 1;
        }
    }
}

impl Workload for StreamWorkload {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        for (i, conn) in self.conns.iter_mut().enumerate() {
            registry.reregister(
                &mut conn.stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
        }
        Ok(())
    }

    fn begin(&mut self, now: Instant, rec: &mut Recorder) {
        self.gate.begin(now);
        if self.gate.closed_loop() {
            for i in 0..self.conns.len() {
                self.top_up(i, now);
                self.flush(i, rec);
            }
        }
    }

    fn event(&mut self, token: usize, event: &Event, now: Instant, rec: &mut Recorder) {
        if self.conns.get(token).is_none_or(|c| c.closed) {
            return;
        }
        if event.is_writable() {
            self.flush(token, rec);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read(token, now, rec);
            if self.gate.closed_loop() && !self.conns[token].closed {
                self.top_up(token, now);
            }
            self.flush(token, rec);
        }
    }

    fn tick(&mut self, now: Instant, rec: &mut Recorder) -> Option<Instant> {
        let n = self.conns.len() as u64;
        for k in self.gate.due(now) {
            let i = (k % n) as usize;
            // A connection with output left over is flushed by its writable event.
            let first = self.conns[i].outbox.is_empty();
            if !self.conns[i].closed && self.issue(i, now) && first {
                self.dirty.push(i);
            }
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            self.flush(i, rec);
        }
        dirty.clear();
        self.dirty = dirty;
        self.gate.next_due()
    }

    fn stop(&mut self) {
        self.gate.stop();
    }

    fn outstanding(&self) -> u64 {
        self.outstanding
    }

    fn open(&self) -> usize {
        self.open
    }

    fn spent(&self) -> bool {
        self.gate.spent()
    }

    fn finish(&mut self, _rec: &mut Recorder) -> u64 {
        // TCP does not lose messages: one never answered is the server's fault.
        self.outstanding
    }
}
