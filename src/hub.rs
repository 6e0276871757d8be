//! The hub: everything the event loop owns except the service itself. Connections (in
//! their slab slots, with the service's state beside each), endpoints and their codecs,
//! UDP sockets, timers, counters, the buffer pool, and the lists of work the loop must
//! do before it next blocks.
//!
//! A service acts on the hub through a [`crate::Context`], which only ever *queues*
//! work: output is written or appended to a connection's queue and the connection put
//! on the `to_flush` list; a close is put on the `to_close` list. The reactor carries
//! both lists out after every callback. That keeps callbacks from re-entering each
//! other (closing a connection calls `on_close`, which must not run in the middle of
//! `on_frame`), and it lets one `write` carry every frame queued for a connection
//! during one turn.
//!
//! The hub's methods live beside the code they serve: the write path in
//! `reactor/write.rs`, the life cycle (dial, close, drain, linger) in
//! `reactor/lifecycle.rs`; this file keeps the data and its small helpers.

use std::time::{Duration, Instant};

use mio::{Registry, Token};
use slab::Slab;

use crate::buffer::{Buffer, BufferPool};
use crate::connection::{ConnId, Connection, Flag, IdleRule, Millis, Slot};
use crate::frame::{Codec, FrameError};
use crate::idle::IdleList;
use crate::service::Service;
use crate::stats::{CloseReason, Stats};
use crate::timer::{deadline_after, TimerId, TimerQueue};
use crate::tls::TlsTable;
use crate::udp::UdpEndpoint;

/// What a timer entry is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimerEvent<T> {
    /// Check whether a connection's partial frame is past its deadline.
    FrameDeadline(ConnId),
    /// A timer a service set.
    Service {
        /// The service's value.
        value: T,
        /// The connection it belongs to: it dies with it.
        conn: Option<ConnId>,
        /// Repeats with this interval.
        every: Option<Duration>,
    },
    /// Try accepting on a listener again after running out of file descriptors.
    AcceptRetry(usize),
    /// Log the counters.
    StatsReport,
    /// Shutdown's grace period is over: close whatever is still open.
    ShutdownDeadline,
    /// End of a lingering connection's quiet window: close it, unless input came.
    LingerDeadline(ConnId),
    /// A dialled connection that is still connecting by now has timed out.
    ConnectDeadline(ConnId),
    /// A connection with its own idle timeout may be idle by now (the number is the
    /// connection's idle epoch when the check was armed; a later rule makes it stale).
    IdleCheck(ConnId, u8),
    /// Check whether a connection's queued output is past its send deadline.
    SendDeadline(ConnId),
}

/// A lingering connection closes once this long passes with no input from the peer.
pub(crate) const LINGER_QUIET: Duration = Duration::from_millis(250);

/// Quiet windows a peer that keeps sending can extend the linger by (the first window
/// and 8 more of 250 ms: at most 2.25 s in all).
pub(crate) const LINGER_ROUNDS: u8 = 8;

/// Limits the hub enforces, copied from [`crate::Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub write_limit: usize,
    /// Output at or below which a paused or congested connection recovers.
    pub low_water: usize,
    /// In milliseconds, the unit of [`Millis`] timestamps (so the loop's per-turn
    /// idle check is one addition and one comparison).
    pub idle_timeout_millis: Option<Millis>,
    pub frame_timeout: Option<Duration>,
    /// How long an admin request may take to arrive (`Config::admin_timeout`).
    pub admin_timeout: Duration,
    pub connect_timeout: Duration,
    pub send_timeout: Option<Duration>,
    /// In KiB, the unit the budget is counted in.
    pub memory_budget_kib: Option<u64>,
}

/// See the module documentation.
pub(crate) struct Hub<S: Service> {
    /// For changing a socket's interests (a clone of the `Poll`'s registry).
    pub registry: Registry,
    /// Every connection from its accept or dial to its close; the key is half of each
    /// [`ConnId`].
    pub conns: Slab<Slot<S>>,
    /// Generation for the next connection; never 0.
    next_generation: u32,
    /// UDP sockets, indexed by [`crate::UdpId`].
    pub udp: Vec<UdpEndpoint>,
    /// Every deadline: frame deadlines, connects, lingering, service timers,
    /// housekeeping.
    pub timers: TimerQueue<TimerEvent<S::Timer>>,
    /// Counters.
    pub stats: Stats,
    /// Storage for connection buffers, recycled.
    pub pool: BufferPool,
    /// Connections with output queued this turn, to be written before the loop blocks.
    pub to_flush: Vec<ConnId>,
    /// Where `Context::send` frames a payload before writing it (kept between calls
    /// so framing never allocates).
    pub encode_buf: Buffer,
    /// A protocol connection's read, as processed (`reactor/protocol.rs`): the units
    /// found, their parts, and what the protocol answered. Kept between reads so that
    /// processing never allocates.
    pub protocol: ProtocolScratch,
    /// A callback sent a datagram: some UDP socket has a burst to send before the
    /// loop blocks.
    pub udp_burst_pending: bool,
    /// Connections to close before the loop blocks, and why.
    pub to_close: Vec<(ConnId, CloseReason)>,
    /// Sockets whose readiness was not used up (read budget spent, or reading resumed
    /// after backpressure): served again on the next turn without waiting for an event.
    pub ready_again: Vec<Token>,
    /// Connections whose output drained to the low-water mark after passing the write
    /// limit: the service hears `on_drained` once the current callback is over.
    pub drained: Vec<ConnId>,
    /// A callback asked the reactor to shut down.
    pub stop_requested: bool,
    /// The time at the start of this turn of the loop.
    pub now: Instant,
    /// The same time as [`Millis`]: read the clock once per turn, not per connection.
    now_millis: Millis,
    /// When the hub was created: the origin of [`Millis`] timestamps.
    epoch: Instant,
    /// Where the next millisecond of [`Millis`] begins: `now_millis` is recomputed only
    /// once a turn reaches it.
    next_millisecond: Instant,
    /// Connections ordered by last activity, for the idle timeout.
    pub idle: IdleList,
    /// No connection becomes idle before this time (0: unknown, look at the list).
    /// The front's deadline only ever moves later: activity sends the front to the
    /// back, a close removes it, and a newcomer joins at the back with the latest
    /// deadline of all. So the loop looks at the idle list once this time comes, not
    /// every turn; a bound that has become too early costs one wake-up that finds
    /// nothing to close.
    pub idle_not_before: Millis,
    /// Limits.
    pub limits: Limits,
    /// The buffer memory all connections hold, in KiB: the sum of their
    /// [`Connection::accounted`].
    pub buffered_kib: u64,
    /// `buffered_kib` passed the memory budget: the reactor resets the connections
    /// holding the most before the loop blocks.
    pub over_budget: bool,
    /// The TLS layers of the connections that have one (`crate::tls`).
    pub tls: TlsTable,
    /// TLS failures (handshakes with a plain-text client, a scanner, an untrusted
    /// certificate) are logged at most once per interval, with a count.
    tls_failures: crate::throttle::Throttle,
}

impl<S: Service> std::fmt::Debug for Hub<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &self.conns.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<S: Service> Hub<S> {
    pub(crate) fn new(registry: Registry, limits: Limits) -> Self {
        let epoch = Instant::now();
        Hub {
            registry,
            conns: Slab::new(),
            next_generation: 1,
            udp: Vec::new(),
            timers: TimerQueue::new(),
            stats: Stats::default(),
            pool: BufferPool::default(),
            to_flush: Vec::new(),
            encode_buf: Buffer::new(),
            protocol: ProtocolScratch::default(),
            udp_burst_pending: false,
            to_close: Vec::new(),
            ready_again: Vec::new(),
            drained: Vec::new(),
            stop_requested: false,
            now: epoch,
            now_millis: 1,
            epoch,
            next_millisecond: epoch + Duration::from_millis(1),
            idle: IdleList::default(),
            idle_not_before: 0,
            limits,
            buffered_kib: 0,
            over_budget: false,
            tls: TlsTable::default(),
            tls_failures: crate::throttle::Throttle::new(Duration::from_secs(10)),
        }
    }

    /// Starts a turn of the loop at `now`.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now;
        // A busy loop turns many times per millisecond, and comparing two `Instant`s
        // takes a few instructions where subtracting them takes about fifty: only a
        // turn that crosses into a new millisecond pays for the subtraction.
        if now < self.next_millisecond {
            return;
        }
        let since = now.saturating_duration_since(self.epoch);
        // u64 arithmetic: `as_millis` works in u128.
        let whole_millis = since.as_secs() * 1000 + u64::from(since.subsec_millis());
        self.now_millis = whole_millis + 1;
        self.next_millisecond = self.epoch + Duration::from_millis(whole_millis + 1);
    }

    /// This turn's time as [`Millis`].
    pub(crate) fn now_millis(&self) -> Millis {
        self.now_millis
    }

    /// The `Instant` a [`Millis`] timestamp stands for.
    pub(crate) fn instant(&self, millis: Millis) -> Instant {
        self.epoch + Duration::from_millis(millis.saturating_sub(1))
    }

    /// Records activity on a connection: it moves to the back of the idle list.
    pub(crate) fn touch(&mut self, id: ConnId) {
        let now = self.now_millis;
        if connection_mut(&mut self.conns, id).is_some_and(|conn| conn.mark_active(now)) {
            self.idle.touch(&mut self.conns, id.index());
        }
    }

    /// Schedules a service timer due after `delay` (repeating every `every`), owned by
    /// `conn` if given.
    pub(crate) fn add_timer(
        &mut self,
        delay: Duration,
        value: S::Timer,
        conn: Option<ConnId>,
        every: Option<Duration>,
    ) -> TimerId {
        // A zero interval would fire every turn for ever; a millisecond is the clock's
        // resolution anyway.
        let every = every.map(|d| d.max(Duration::from_millis(1)));
        let event = TimerEvent::Service { value, conn, every };
        self.timers.insert(deadline_after(self.now, delay), event)
    }

    /// Gives a connection its own idle timeout (`None`: never idle). It leaves the
    /// shared idle list (which assumes one timeout for all) and gets a check of its own.
    pub(crate) fn set_idle_timeout(&mut self, id: ConnId, timeout: Option<Duration>) {
        let Some(conn) = connection_mut(&mut self.conns, id) else {
            return;
        };
        conn.idle_rule = match timeout {
            None => IdleRule::NEVER,
            Some(d) => IdleRule::own(d.as_millis()),
        };
        conn.idle_epoch = conn.idle_epoch.wrapping_add(1);
        let (epoch, due) = (conn.idle_epoch, conn.last_active);
        self.idle.unlink(&mut self.conns, id.index());
        if let Some(d) = timeout {
            let at = deadline_after(self.instant(due), d);
            self.timers.insert(at, TimerEvent::IdleCheck(id, epoch));
        }
    }

    /// Gives a connection the reactor's idle timeout again, counted from now (it
    /// rejoins the shared idle list at the back, the place of the most recently active).
    pub(crate) fn reset_idle_timeout(&mut self, id: ConnId) {
        let now = self.now_millis;
        let Some(conn) = connection_mut(&mut self.conns, id) else {
            return;
        };
        if conn.idle_rule == IdleRule::REACTOR {
            return;
        }
        conn.idle_rule = IdleRule::REACTOR;
        conn.idle_epoch = conn.idle_epoch.wrapping_add(1);
        conn.last_active = now;
        if self.limits.idle_timeout_millis.is_some() && conn.is_open() {
            self.idle.push_back(&mut self.conns, id.index());
        }
    }

    /// Pauses or resumes reading a connection at the service's request.
    pub(crate) fn set_paused_by_service(&mut self, id: ConnId, paused: bool) {
        let now = self.now_millis;
        let Some(conn) = connection_mut(&mut self.conns, id) else {
            return;
        };
        if conn.flags.get(Flag::PausedByService) == paused {
            return;
        }
        conn.flags.set(Flag::PausedByService, paused);
        log::trace!(
            "{id}: reading {} by the service",
            if paused { "paused" } else { "resumed" }
        );
        if !paused && !conn.flags.get(Flag::ReadPaused) {
            conn.restart_frame_clock(now);
            if conn.flags.take(Flag::ReadPending) {
                self.list_ready_again(id);
            }
        }
    }

    /// Stops pausing a connection's reading for its own output (see
    /// [`crate::Context::keep_reading_when_congested`]), and reads it again if that
    /// pause was on.
    pub(crate) fn keep_reading_when_congested(&mut self, id: ConnId) {
        let Some(conn) = connection_mut(&mut self.conns, id) else {
            return;
        };
        conn.flags.set(Flag::ReadsIgnoreCongestion, true);
        if conn.flags.take(Flag::ReadPaused)
            && !conn.flags.get(Flag::PausedByService)
            && conn.flags.take(Flag::ReadPending)
        {
            self.list_ready_again(id);
        }
    }

    /// When the connection quiet the longest becomes idle, if there is one; or an
    /// earlier time, [`Hub::idle_not_before`], while that has not come yet.
    pub(crate) fn next_idle_deadline(&mut self) -> Option<Millis> {
        if self.now_millis < self.idle_not_before {
            return Some(self.idle_not_before);
        }
        let deadline = self.quietest_deadline();
        self.idle_not_before = deadline.unwrap_or(0);
        deadline
    }

    /// When the connection at the front of the idle list becomes idle.
    fn quietest_deadline(&self) -> Option<Millis> {
        let timeout = self.limits.idle_timeout_millis?;
        let key = self.idle.front()?;
        Some(self.conns[key].conn.last_active + timeout)
    }

    /// The next generation number, skipping 0 when it wraps.
    pub(crate) fn next_generation(&mut self) -> u32 {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.checked_add(1).unwrap_or(1);
        generation
    }

    /// The ids of every connection now open or draining.
    pub(crate) fn conn_ids(&self) -> Vec<ConnId> {
        // (Collected, because closing them changes the slab.)
        self.conns
            .iter()
            .map(|(key, slot)| ConnId::new(key, slot.conn.generation))
            .collect()
    }

    /// The connection `id` names, if it is still there (same slot *and* generation).
    #[inline]
    pub(crate) fn conn(&self, id: ConnId) -> Option<&Connection> {
        self.conns
            .get(id.index())
            .map(|slot| &slot.conn)
            .filter(|conn| conn.generation == id.generation())
    }

    /// The slab entry `id` names, if it is still there.
    #[inline]
    pub(crate) fn slot_mut(&mut self, id: ConnId) -> Option<&mut Slot<S>> {
        self.conns
            .get_mut(id.index())
            .filter(|slot| slot.conn.generation == id.generation())
    }

    /// Mutable access to the connection `id` names, if it is still there.
    pub(crate) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        connection_mut(&mut self.conns, id)
    }

    /// Puts a connection on the flush list once.
    pub(crate) fn list_for_flush(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id) {
            if !conn.flags.get(Flag::QueuedFlush) {
                conn.flags.set(Flag::QueuedFlush, true);
                self.to_flush.push(id);
            }
        }
    }

    /// Puts a connection on the ready-again list once.
    pub(crate) fn list_ready_again(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id) {
            if !conn.flags.get(Flag::QueuedAgain) {
                conn.flags.set(Flag::QueuedAgain, true);
                self.ready_again.push(id.token());
            }
        }
    }

    /// Asks for a connection to be closed with `reason` once the loop gets to it.
    pub(crate) fn request_close(&mut self, id: ConnId, reason: CloseReason) {
        self.to_close.push((id, reason));
    }

    /// Closes a connection for cause: with a reset, so the kernel drops whatever it
    /// still holds for the peer at once instead of trickling it out to a peer that
    /// misbehaved (see [`Flag::ResetOnClose`]).
    pub(crate) fn reset(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(conn) = self.conn_mut(id) {
            conn.flags.set(Flag::ResetOnClose, true);
        }
        self.request_close(id, reason);
    }

    /// Counts a connection's buffers again after they changed, into the total the
    /// memory budget watches; notes when the total passes the budget.
    #[inline]
    pub(crate) fn account(&mut self, id: ConnId) {
        let Some(conn) = connection_mut(&mut self.conns, id) else {
            return;
        };
        let passed = recount(conn, &mut self.buffered_kib, self.limits.memory_budget_kib);
        self.counted(passed);
    }

    /// Gives a connection its TLS layer (or closes it, should the layer not be made):
    /// counted for the memory budget, and the handshake timed by the frame deadline (it
    /// must be done within it, as a frame must be completed).
    #[cfg(feature = "tls")]
    pub(crate) fn add_tls_layer(
        &mut self,
        id: ConnId,
        made: std::io::Result<crate::tls::TlsLayer>,
    ) {
        let layer = match made {
            Ok(layer) => layer,
            Err(e) => {
                log::warn!("{}: TLS: {e}", self.who(id));
                return self.request_close(id, CloseReason::from_io(e.kind()));
            }
        };
        let (now, now_millis) = (self.now, self.now_millis());
        let frame_timeout = self.limits.frame_timeout;
        let Some(conn) = connection_mut(&mut self.conns, id) else {
            return;
        };
        start_frame_clock(conn, id, &mut self.timers, (now, now_millis), frame_timeout);
        self.buffered_kib += layer.charge_kib();
        let passed = self
            .limits
            .memory_budget_kib
            .is_some_and(|budget| self.buffered_kib > budget);
        self.counted(passed);
        self.tls.insert(id, layer);
    }

    /// After a TLS connection's reads: the end of its handshake (the frame clock
    /// stops, the budget's charge shrinks), and ciphertext the socket did not take
    /// (WRITABLE armed, and the send timeout watching it).
    /// True when the handshake has just completed.
    #[inline(never)]
    pub(crate) fn after_tls_io(&mut self, id: ConnId) -> bool {
        let now_millis = self.now_millis();
        let Some(layer) = self.tls.get_mut(id) else {
            return false;
        };
        let Some(conn) = connection_mut(&mut self.conns, id) else {
            return false;
        };
        let finished = layer.take_handshake_finished();
        // Output the service queued before the handshake (the layer takes none until
        // it is done, and the write path waits for no WRITABLE then): written now.
        let held_back = finished && !conn.output.is_empty();
        if held_back {
            // Its wait for the socket (which the send timeout measures) starts now.
            conn.write_progress = now_millis as u32;
        }
        if finished {
            // The handshake's time is over; a partial frame already held starts its own.
            // (An admin connection's deadline covers its handshake and request alike.)
            if conn.state != crate::connection::ConnState::AdminRequest {
                conn.frame_started = match conn.input.is_empty() {
                    true => crate::connection::NO_FRAME,
                    false => now_millis,
                };
            }
            log::debug!("{id}: TLS handshake done");
        }
        if layer.has_pending() && conn.state.may_write_now() {
            crate::reactor::set_writable_interest(&self.registry, conn, id, true);
            self.arm_send_deadline(id);
        }
        self.recount_tls(id);
        if held_back {
            self.flush(id);
        }
        finished
    }

    /// Counts `id`'s TLS layer again for the memory budget (its handshake ended, or
    /// ciphertext began or stopped waiting for the socket).
    pub(crate) fn recount_tls(&mut self, id: ConnId) {
        let Some(layer) = self.tls.get_mut(id) else {
            return;
        };
        let (before, now) = layer.recount();
        if before == now {
            return;
        }
        self.buffered_kib = self.buffered_kib + now - before;
        let passed = now > before
            && self
                .limits
                .memory_budget_kib
                .is_some_and(|budget| self.buffered_kib > budget);
        self.counted(passed);
    }

    /// A read of `id` failed with `error`: said, and the connection closes. A TLS
    /// failure, which any client can cause at will, is said at info level at most once
    /// per interval, with how many it stands for; the others at debug level.
    pub(crate) fn read_failed(&mut self, id: ConnId, error: &std::io::Error) {
        let tls = self.tls.get(id).is_some() && error.kind() == std::io::ErrorKind::InvalidData;
        match tls.then(|| self.tls_failures.note(self.now)).flatten() {
            Some(count) => log::info!(
                "{}: {error}; closing ({count} TLS failure(s) since the last such line)",
                self.who(id)
            ),
            None => log::debug!("{id}: read error: {error}"),
        }
        self.request_close(id, CloseReason::from_io(error.kind()));
    }

    /// After [`recount`]: the gauge follows the total, and a total that passed the
    /// budget is noted for the reactor.
    #[inline(always)]
    pub(crate) fn counted(&mut self, passed_budget: bool) {
        self.stats.buffered_bytes = self.buffered_kib * 1024;
        self.over_budget |= passed_budget;
    }

    /// Names a connection for a log line: its id and where it comes from (or goes to).
    pub(crate) fn who(&self, id: ConnId) -> Who {
        Who {
            id,
            peer: self.conn(id).and_then(|c| c.stream.peer_addr()),
        }
    }

    /// Logs a framing violation with the peer's address and ends the connection: with
    /// the codec's last words ([`Codec::error_reply`]) written after its queued output
    /// and a graceful close when the codec has any, or `answered` already (a protocol
    /// replied before it failed; a reset could destroy those before they are read),
    /// else with a reset.
    pub(crate) fn protocol_error<C: Codec>(
        &mut self,
        id: ConnId,
        error: &FrameError,
        codec: &C,
        answered: bool,
    ) {
        self.stats.protocol_errors += 1;
        let mut last_words = std::mem::take(&mut self.encode_buf);
        last_words.clear();
        codec.error_reply(error, &mut last_words);
        let hint = match codec.error_hint(error) {
            Some(hint) => format!("; {hint}"),
            None => String::new(),
        };
        if last_words.is_empty() && !answered {
            // A peer that broke the framing gets nothing more: a reset drops what the
            // kernel still holds for it.
            log::warn!("{}: {error}{hint}; resetting", self.who(id));
            self.reset(id, CloseReason::Protocol);
        } else {
            log::warn!("{}: {error}{hint}; answering it and closing", self.who(id));
            self.write_or_queue(id, last_words.readable(), 0);
            self.close_after_flush(id, CloseReason::Protocol);
        }
        self.encode_buf = last_words;
    }
}

/// What one read of a protocol connection found, kept between reads (its vectors and
/// buffer are reused).
#[derive(Debug, Default)]
pub(crate) struct ProtocolScratch {
    pub units: Vec<crate::protocol::UnitRecord>,
    pub parts: Vec<std::ops::Range<usize>>,
    pub replies: Buffer,
}

/// Counts `conn`'s buffers again into `total` (KiB over all connections), for a caller
/// that holds the connection already; says whether the total grew past `budget_kib`.
/// The caller then calls [`Hub::counted`].
#[inline(always)]
pub(crate) fn recount(conn: &mut Connection, total: &mut u64, budget_kib: Option<u64>) -> bool {
    let (before, now) = (conn.accounted.kib(), conn.buffered());
    conn.accounted = now;
    let now = now.kib();
    *total = *total - before + now;
    now > before && budget_kib.is_some_and(|budget| *total > budget)
}

/// Starts `conn`'s frame clock at `now` (a frame, or a TLS handshake, began to
/// arrive), with a frame-deadline timer unless one is armed already (it finds the
/// clock when it fires).
pub(crate) fn start_frame_clock<T>(
    conn: &mut Connection,
    id: ConnId,
    timers: &mut TimerQueue<TimerEvent<T>>,
    (now, now_millis): (Instant, Millis),
    frame_timeout: Option<Duration>,
) {
    conn.frame_started = now_millis;
    if let (Some(timeout), false) = (frame_timeout, conn.flags.get(Flag::FrameTimerArmed)) {
        conn.flags.set(Flag::FrameTimerArmed, true);
        timers.insert(deadline_after(now, timeout), TimerEvent::FrameDeadline(id));
    }
}

/// A connection named for a log line: `conn 3.7 from 127.0.0.1:50312`.
#[derive(Debug)]
pub(crate) struct Who {
    id: ConnId,
    peer: Option<crate::connection::PeerAddr>,
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.peer {
            Some(peer) => write!(f, "{} from {peer}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

/// The connection `id` names in `conns`, if it is still there: same slot *and* same
/// generation, so an id never reaches a newcomer that reused the slot. A function of
/// the slab alone, for callers that also borrow other parts of the hub.
#[inline(always)]
pub(crate) fn connection_mut<S: Service>(
    conns: &mut Slab<Slot<S>>,
    id: ConnId,
) -> Option<&mut Connection> {
    conns
        .get_mut(id.index())
        .map(|slot| &mut slot.conn)
        .filter(|conn| conn.generation == id.generation())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcut in `set_now` (skip the subtraction within a millisecond) must give
    /// exactly what the subtraction gives, at every step of the clock.
    #[test]
    fn millis_match_the_elapsed_time_however_the_clock_steps() {
        let poll = mio::Poll::new().unwrap();
        let limits = Limits {
            write_limit: 1 << 20,
            low_water: 1 << 19,
            idle_timeout_millis: None,
            frame_timeout: None,
            admin_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            send_timeout: None,
            memory_budget_kib: None,
        };
        let registry = poll.registry().try_clone().unwrap();
        let mut hub: Hub<crate::services::Echo> = Hub::new(registry, limits);
        let epoch = hub.epoch;
        let steps_us = [
            0, 1, 999, 1, 1, 250, 750, 1_000, 999_999, 3, 1, 5_000_000, 7,
        ];
        let mut elapsed_us: u64 = 0;
        for step in steps_us {
            elapsed_us += step;
            hub.set_now(epoch + Duration::from_micros(elapsed_us));
            assert_eq!(
                hub.now_millis(),
                elapsed_us / 1000 + 1,
                "at {elapsed_us} us"
            );
        }
    }
}
