//! The `udp` workload: `conns` UDP sockets of the reactor's own, each keeping `depth`
//! datagrams in flight to the server, each echo checked. (UDP sockets are not
//! connections: their bookkeeping is the workload's, by socket.)
//!
//! Unlike TCP, UDP may drop or reorder datagrams, so each socket keeps a slot per
//! in-flight datagram. Slot `s` sends sequence numbers `s, s + depth, s + 2 depth, ...`,
//! so a reply's sequence number names its slot. A datagram unanswered for
//! [`LOSS_TIMEOUT`] counts as lost (not an error: the kernel drops datagrams when a
//! socket buffer is full) and its slot sends a new one; a reply arriving after that is
//! late and ignored.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::bench::Bench;
use super::pace::Gate;
use super::report::Recorder;
use super::wire::Pattern;
use super::Options;
use crate::{Context, UdpId};

/// A datagram with no reply after this long is lost.
const LOSS_TIMEOUT: Duration = Duration::from_millis(500);
/// How often slots are checked for lost datagrams.
const LOSS_CHECK: Duration = Duration::from_millis(100);

/// One in-flight position of a socket.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Sequence number of the datagram last sent from this slot.
    seq: u64,
    sent_at: Instant,
    /// True while that datagram awaits its echo.
    busy: bool,
    /// True once the slot has sent anything (`seq` is meaningful).
    used: bool,
}

/// One socket's slots.
#[derive(Debug)]
struct Sock {
    id: UdpId,
    slots: Box<[Slot]>,
}

/// The UDP echo workload.
#[derive(Debug)]
pub struct UdpWork {
    socks: Vec<Sock>,
    server: Option<SocketAddr>,
    pattern: Pattern,
    depth: usize,
    gate: Gate,
    outstanding: u64,
    /// Send buffer, reused for every datagram.
    outgoing: Vec<u8>,
    next_loss_check: Option<Instant>,
}

impl UdpWork {
    /// The workload `options` describe; its sockets come with [`UdpWork::set_sockets`].
    pub fn new(options: &Options) -> Self {
        UdpWork {
            socks: Vec::new(),
            server: None,
            pattern: Pattern::new(options.size),
            depth: options.depth,
            gate: Gate::new(options.messages, options.rate, options.conns),
            outstanding: 0,
            outgoing: Vec::with_capacity(options.size),
            next_loss_check: None,
        }
    }

    /// The sockets bound for the run, in order, and the server they talk to.
    pub fn set_sockets(&mut self, sockets: Vec<UdpId>, server: SocketAddr) {
        let now = Instant::now();
        let slot = Slot {
            seq: 0,
            sent_at: now,
            busy: false,
            used: false,
        };
        self.socks = sockets
            .into_iter()
            .map(|id| Sock {
                id,
                slots: vec![slot; self.depth].into_boxed_slice(),
            })
            .collect();
        self.server = Some(server);
    }

    /// Sends the next datagram from slot `s` of socket `i`, if the gate allows.
    fn issue(&mut self, ctx: &mut Context<'_, Bench>, i: usize, s: usize, now: Instant) {
        let depth = self.depth as u64;
        let slot = self.socks[i].slots[s];
        let Some(server) = self.server else {
            return;
        };
        if slot.busy || !self.gate.take() {
            return;
        }
        let seq = if slot.used {
            slot.seq + depth
        } else {
            s as u64
        };
        self.outgoing.clear();
        self.pattern.append(i, seq, &mut self.outgoing);
        // A datagram the socket cannot take is dropped by the reactor and, here,
        // counted lost once its echo is overdue: UDP's own terms.
        if ctx
            .send_to(self.socks[i].id, server, &self.outgoing)
            .is_err()
        {
            self.gate.refund();
            return;
        }
        self.socks[i].slots[s] = Slot {
            seq,
            sent_at: now,
            busy: true,
            used: true,
        };
        self.outstanding += 1;
    }

    fn top_up(&mut self, ctx: &mut Context<'_, Bench>, i: usize, now: Instant) {
        for s in 0..self.depth {
            self.issue(ctx, i, s, now);
        }
    }

    /// Starts the load: every socket fills its slots (closed loop).
    pub fn begin(&mut self, ctx: &mut Context<'_, Bench>, now: Instant, _rec: &mut Recorder) {
        self.gate.begin(now);
        self.next_loss_check = Some(now + LOSS_CHECK);
        if self.gate.closed_loop() {
            for i in 0..self.socks.len() {
                self.top_up(ctx, i, now);
            }
        }
    }

    /// One echo arrived.
    pub fn datagram(
        &mut self,
        ctx: &mut Context<'_, Bench>,
        socket: UdpId,
        _peer: SocketAddr,
        payload: &[u8],
        rec: &mut Recorder,
    ) {
        // The clock is read per datagram: the echo of a datagram sent earlier in this
        // turn can arrive before it ends, and with the turn's time for both it would
        // count as taking no time.
        let now = Instant::now();
        // The run binds its sockets itself, in order: a socket's index is its number.
        let i = socket.index();
        if self.socks.get(i).is_none_or(|s| s.id != socket) {
            return;
        }
        if let Some(s) = self.check(i, payload, now, rec) {
            if self.gate.closed_loop() {
                self.issue(ctx, i, s, now);
            }
        }
    }

    /// Checks one echo; returns the slot it freed, if any.
    fn check(
        &mut self,
        i: usize,
        payload: &[u8],
        now: Instant,
        rec: &mut Recorder,
    ) -> Option<usize> {
        let depth = self.depth as u64;
        let n = payload.len();
        let Some(seq) = Pattern::seq_of(payload) else {
            rec.mismatch(|| format!("socket {i}: a {n}-byte datagram"));
            return None;
        };
        let s = (seq % depth) as usize;
        let slot = &mut self.socks[i].slots[s];
        if !slot.busy || slot.seq != seq {
            if !(slot.used && seq <= slot.seq) {
                // Not a late echo of something this slot sent: corrupt or foreign.
                rec.mismatch(|| format!("socket {i}: echo with unknown seq {seq}"));
            }
            return None;
        }
        slot.busy = false;
        self.outstanding -= 1;
        if self.pattern.matches(i, seq, payload) {
            rec.reply(n, now.saturating_duration_since(slot.sent_at));
        } else {
            rec.mismatch(|| format!("socket {i}: echo {seq} differs from what was sent"));
        }
        Some(s)
    }

    /// Frees slots whose datagram is overdue, counting them lost, and resends.
    fn check_losses(&mut self, ctx: &mut Context<'_, Bench>, now: Instant, rec: &mut Recorder) {
        for i in 0..self.socks.len() {
            for s in 0..self.depth {
                let slot = &mut self.socks[i].slots[s];
                if slot.busy && now.saturating_duration_since(slot.sent_at) >= LOSS_TIMEOUT {
                    slot.busy = false;
                    self.outstanding -= 1;
                    rec.lost += 1;
                    if self.gate.closed_loop() {
                        self.issue(ctx, i, s, now);
                    }
                }
            }
        }
    }

    /// Open-loop sends and loss checks; returns when they are next due.
    pub fn tick(
        &mut self,
        ctx: &mut Context<'_, Bench>,
        now: Instant,
        rec: &mut Recorder,
    ) -> Option<Instant> {
        let n = self.socks.len() as u64;
        for k in self.gate.due(now) {
            let i = (k % n) as usize;
            if let Some(s) = self.socks[i].slots.iter().position(|s| !s.busy) {
                self.issue(ctx, i, s, now);
            }
        }
        if self.next_loss_check.is_some_and(|at| at <= now) {
            self.check_losses(ctx, now, rec);
            self.next_loss_check = Some(now + LOSS_CHECK);
        }
        match (self.gate.next_due(), self.next_loss_check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends nothing new from now on.
    pub fn stop(&mut self) {
        self.gate.stop();
    }

    /// Datagrams sent and not yet answered (nor counted lost).
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }

    /// Sockets in use (a UDP socket does not close under the run).
    pub fn open(&self) -> usize {
        self.socks.len()
    }

    /// True when the message budget is used up.
    pub fn spent(&self) -> bool {
        self.gate.spent()
    }

    /// Unanswered datagrams at the end are lost, like any other; none is an error.
    pub fn finish(&mut self, rec: &mut Recorder) -> u64 {
        rec.lost += self.outstanding;
        0
    }
}
