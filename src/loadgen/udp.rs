//! The `udp` workload: `conns` connected UDP sockets, each keeping `depth` datagrams in
//! flight, each echo checked.
//!
//! Unlike TCP, UDP may drop or reorder datagrams, so each socket keeps a slot per
//! in-flight datagram. Slot `s` sends sequence numbers `s, s + depth, s + 2 depth, ...`,
//! so a reply's sequence number names its slot. A datagram unanswered for
//! [`LOSS_TIMEOUT`] counts as lost (not an error: the kernel drops datagrams when a
//! socket buffer is full) and its slot sends a new one; a reply arriving after that is
//! late and ignored.

use std::io;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use super::driver::Workload;
use super::pace::Gate;
use super::report::Recorder;
use super::wire::Pattern;
use super::Options;

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

#[derive(Debug)]
struct Sock {
    socket: UdpSocket,
    slots: Box<[Slot]>,
    /// A send hit a full socket buffer: top up again when writable.
    blocked: bool,
    closed: bool,
}

/// The UDP echo workload.
#[derive(Debug)]
pub struct UdpWorkload {
    socks: Vec<Sock>,
    pattern: Pattern,
    depth: usize,
    gate: Gate,
    outstanding: u64,
    open: usize,
    /// Receive buffer, one datagram at a time.
    incoming: Box<[u8]>,
    /// Send buffer, reused for every datagram.
    outgoing: Vec<u8>,
    next_loss_check: Option<Instant>,
}

impl UdpWorkload {
    /// Opens `options.conns` UDP sockets connected to the server.
    pub fn new(options: &Options) -> io::Result<Self> {
        let local = options.source_ip(0).unwrap_or_else(|| match options.addr {
            std::net::SocketAddr::V4(_) => ([127, 0, 0, 1], 0).into(),
            std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
        });
        let now = Instant::now();
        let slot = Slot {
            seq: 0,
            sent_at: now,
            busy: false,
            used: false,
        };
        let socks = (0..options.conns)
            .map(|i| {
                let bind = options.source_ip(i).unwrap_or(local);
                let socket = UdpSocket::bind(bind)?;
                socket.connect(options.addr)?;
                Ok(Sock {
                    socket,
                    slots: vec![slot; options.depth].into_boxed_slice(),
                    blocked: false,
                    closed: false,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(UdpWorkload {
            open: socks.len(),
            gate: Gate::new(options.messages, options.rate, socks.len()),
            socks,
            pattern: Pattern::new(options.size),
            depth: options.depth,
            outstanding: 0,
            incoming: vec![0; crate::MAX_DATAGRAM + 1].into_boxed_slice(),
            outgoing: Vec::with_capacity(options.size),
            next_loss_check: None,
        })
    }

    /// Sends the next datagram from slot `s` of socket `i`, if the gate allows.
    fn issue(&mut self, i: usize, s: usize, now: Instant, rec: &mut Recorder) {
        let depth = self.depth as u64;
        let slot = self.socks[i].slots[s];
        if slot.busy || self.socks[i].closed || !self.gate.take() {
            return;
        }
        let seq = if slot.used {
            slot.seq + depth
        } else {
            s as u64
        };
        self.outgoing.clear();
        self.pattern.append(i, seq, &mut self.outgoing);
        match self.socks[i].socket.send(&self.outgoing) {
            Ok(_) => {
                self.socks[i].slots[s] = Slot {
                    seq,
                    sent_at: now,
                    busy: true,
                    used: true,
                };
                self.outstanding += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.gate.refund();
                self.socks[i].blocked = true;
            }
            Err(e) => {
                self.gate.refund();
                self.close(i, rec, &e);
            }
        }
    }

    fn top_up(&mut self, i: usize, now: Instant, rec: &mut Recorder) {
        self.socks[i].blocked = false;
        for s in 0..self.depth {
            self.issue(i, s, now, rec);
        }
    }

    fn close(&mut self, i: usize, rec: &mut Recorder, why: &io::Error) {
        let sock = &mut self.socks[i];
        if sock.closed {
            return;
        }
        sock.closed = true;
        let busy = sock.slots.iter().filter(|s| s.busy).count() as u64;
        self.outstanding -= busy;
        self.open -= 1;
        rec.disconnect(|| format!("socket {i}: {why}"));
    }

    /// Receives until the socket is drained, checking each echo.
    fn receive(&mut self, i: usize, mut now: Instant, rec: &mut Recorder) {
        let mut first = true;
        loop {
            let n = match self.socks[i].socket.recv(&mut self.incoming) {
                // The clock is read again for every datagram after the first: the echo
                // of a datagram this loop sends can arrive before the loop ends, and
                // with the turn's time for both it would count as taking no time.
                Ok(n) if first => {
                    first = false;
                    n
                }
                Ok(n) => {
                    now = Instant::now();
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.close(i, rec, &e),
            };
            if let Some(s) = self.check(i, n, now, rec) {
                if self.gate.closed_loop() {
                    self.issue(i, s, now, rec);
                }
            }
        }
    }

    /// Checks one echo of `n` bytes; returns the slot it freed, if any.
    fn check(&mut self, i: usize, n: usize, now: Instant, rec: &mut Recorder) -> Option<usize> {
        let payload = &self.incoming[..n];
        let depth = self.depth as u64;
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
    fn check_losses(&mut self, now: Instant, rec: &mut Recorder) {
        for i in 0..self.socks.len() {
            for s in 0..self.depth {
                let slot = &mut self.socks[i].slots[s];
                if slot.busy && now.saturating_duration_since(slot.sent_at) >= LOSS_TIMEOUT {
                    slot.busy = false;
                    self.outstanding -= 1;
                    rec.lost += 1;
                    if self.gate.closed_loop() {
                        self.issue(i, s, now, rec);
                    }
                }
            }
        }
    }
}

impl Workload for UdpWorkload {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        for (i, sock) in self.socks.iter_mut().enumerate() {
            registry.register(
                &mut sock.socket,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
        }
        Ok(())
    }

    fn begin(&mut self, now: Instant, rec: &mut Recorder) {
        self.gate.begin(now);
        self.next_loss_check = Some(now + LOSS_CHECK);
        if self.gate.closed_loop() {
            for i in 0..self.socks.len() {
                self.top_up(i, now, rec);
            }
        }
    }

    fn event(&mut self, token: usize, event: &Event, now: Instant, rec: &mut Recorder) {
        if self.socks.get(token).is_none_or(|s| s.closed) {
            return;
        }
        if event.is_readable() || event.is_error() {
            self.receive(token, now, rec);
        }
        if event.is_writable() && self.socks[token].blocked && self.gate.closed_loop() {
            self.top_up(token, now, rec);
        }
    }

    fn tick(&mut self, now: Instant, rec: &mut Recorder) -> Option<Instant> {
        let n = self.socks.len() as u64;
        for k in self.gate.due(now) {
            let i = (k % n) as usize;
            if let Some(s) = self.socks[i].slots.iter().position(|s| !s.busy) {
                self.issue(i, s, now, rec);
            }
        }
        if self.next_loss_check.is_some_and(|at| at <= now) {
            self.check_losses(now, rec);
            self.next_loss_check = Some(now + LOSS_CHECK);
        }
        match (self.gate.next_due(), self.next_loss_check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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

    fn finish(&mut self, rec: &mut Recorder) -> u64 {
        // Unanswered datagrams at the end are lost, like any other.
        rec.lost += self.outstanding;
        0
    }
}
