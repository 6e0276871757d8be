//! The hub: everything the event loop owns except the service itself. Connections, UDP
//! sockets, timers, counters, the buffer pool, and the lists of work the loop must do
//! before it next blocks.
//!
//! A service acts on the hub through a [`crate::Context`], which only ever *queues*
//! work: output is appended to a connection's queue and the connection put on the
//! `to_flush` list; a close is put on the `to_close` list. The reactor carries both lists
//! out after every callback. That keeps callbacks from re-entering each other (closing a
//! connection calls `on_close`, which must not run in the middle of `on_frame`), and it
//! lets one `write` carry every frame queued for a connection during one turn.

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::buffer::{Buffer, BufferPool};
use crate::connection::{ConnId, ConnState, Connection, Millis};
use crate::idle::IdleList;
use crate::outqueue::{SharedFrame, MAX_IOVECS};
use crate::stats::{CloseReason, Stats};
use crate::timer::TimerQueue;
use crate::udp::UdpEndpoint;

/// What a timer entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerEvent {
    /// Check whether a connection's partial frame is past its deadline.
    FrameDeadline(ConnId),
    /// A timer a service set, with the service's value.
    Service(u64),
    /// Try accepting on a listener again after running out of file descriptors.
    AcceptRetry(usize),
    /// Log the counters.
    StatsReport,
    /// Shutdown's grace period is over: close whatever is still open.
    ShutdownDeadline,
    /// End of a lingering connection's quiet window: close it, unless input came.
    LingerDeadline(ConnId),
}

/// A lingering connection closes once this long passes with no input from the peer.
pub(crate) const LINGER_QUIET: Duration = Duration::from_millis(250);

/// Quiet windows a peer that keeps sending can extend the linger by (8 x 250 ms: at
/// most 2 s in all).
pub(crate) const LINGER_ROUNDS: u8 = 8;

/// Limits the hub enforces, copied from [`crate::Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub write_limit: usize,
    /// In milliseconds, the unit of [`Millis`] timestamps (so the loop's per-turn
    /// idle check is one addition and one comparison).
    pub idle_timeout_millis: Option<Millis>,
    pub frame_timeout: Option<Duration>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Hub {
    /// For changing a socket's interests (a clone of the `Poll`'s registry).
    pub registry: Registry,
    /// Open and draining connections; the key is half of each [`ConnId`].
    pub conns: Slab<Connection>,
    /// Generation for the next connection; never 0.
    next_generation: u32,
    /// UDP sockets, indexed by [`crate::UdpId`].
    pub udp: Vec<UdpEndpoint>,
    /// Every deadline: idle checks, frame deadlines, service timers, housekeeping.
    pub timers: TimerQueue<TimerEvent>,
    /// Counters.
    pub stats: Stats,
    /// Storage for connection buffers, recycled.
    pub pool: BufferPool,
    /// Connections with output queued this turn, to be written before the loop blocks.
    pub to_flush: Vec<ConnId>,
    /// Where `Context::send` frames a payload before writing it (kept between calls
    /// so framing never allocates).
    pub encode_buf: Buffer,
    /// A callback sent a datagram: some UDP socket has a burst to send before the
    /// loop blocks.
    pub udp_burst_pending: bool,
    /// Connections to close before the loop blocks, and why.
    pub to_close: Vec<(ConnId, CloseReason)>,
    /// Sockets whose readiness was not used up (read budget spent, or reading resumed
    /// after backpressure): served again on the next turn without waiting for an event.
    pub ready_again: Vec<Token>,
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
}

impl Hub {
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
            udp_burst_pending: false,
            to_close: Vec::new(),
            ready_again: Vec::new(),
            now: epoch,
            now_millis: 1,
            epoch,
            next_millisecond: epoch + Duration::from_millis(1),
            idle: IdleList::default(),
            idle_not_before: 0,
            limits,
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
        Some(self.conns[key].last_active + timeout)
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
            .map(|(key, conn)| ConnId::new(key, conn.generation))
            .collect()
    }

    /// The connection `id` names, if it is still there (same slot *and* generation).
    pub(crate) fn conn(&self, id: ConnId) -> Option<&Connection> {
        self.conns
            .get(id.index())
            .filter(|conn| conn.generation == id.generation())
    }

    /// Mutable access to the connection `id` names, if it is still there.
    pub(crate) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        connection_mut(&mut self.conns, id)
    }

    /// Sends `bytes` (already framed) on a connection: straight to the socket when
    /// nothing is queued ahead of them, so the common case costs one `write` and no
    /// copy; whatever the socket does not take is queued, in order, and flushed when it
    /// becomes writable. Returns false if the connection is gone or closing.
    #[inline]
    pub(crate) fn write_or_queue(&mut self, id: ConnId, bytes: &[u8], frames: u64) -> bool {
        let now = self.now_millis;
        // (The slab alone, not `conn_mut`: the pool and counters are used alongside.)
        let Some(conn) = connection_mut(&mut self.conns, id).filter(|c| c.is_open()) else {
            return false;
        };
        self.stats.frames_out += frames;
        let mut written = 0;
        let write_at_once = conn.output.is_empty() && !bytes.is_empty();
        if write_at_once {
            match write_now(conn, bytes) {
                Ok(n) => written = n,
                Err(e) => {
                    log::debug!("{id}: write error: {e}");
                    self.to_close.push((id, CloseReason::Error(e.kind())));
                    return true;
                }
            }
            log::trace!("{id}: write {written} of {}", bytes.len());
            self.stats.bytes_out += written as u64;
        }
        let moved_in_idle_list = written > 0 && conn.mark_active(now);
        if written < bytes.len() {
            let rest = &bytes[written..];
            conn.output
                .owned_for_append(&mut self.pool)
                .extend_from_slice(rest);
            if write_at_once {
                // The write came up short: the socket is full. Wait for WRITABLE rather
                // than list a flush that would only hear WouldBlock.
                set_writable_interest(&self.registry, conn, id, true);
            } else {
                self.list_for_flush(id);
            }
        }
        if moved_in_idle_list {
            self.idle.touch(&mut self.conns, id.index());
        }
        true
    }

    /// Queues a shared frame on a connection, to be written when the callback returns.
    /// Shared frames are for fan-out: when one read brings several messages for a room,
    /// each member's frames then go out together in one `writev` instead of one `write`
    /// per frame per member. Returns false if the connection is gone or closing.
    pub(crate) fn send_shared(&mut self, id: ConnId, frame: &SharedFrame) -> bool {
        let Some(conn) = self.conn_mut(id).filter(|c| c.is_open()) else {
            return false;
        };
        conn.output.push_shared(frame.clone());
        self.stats.frames_out += 1;
        self.list_for_flush(id);
        true
    }

    /// Puts a connection on the flush list once.
    pub(crate) fn list_for_flush(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id) {
            if !conn.queued_flush {
                conn.queued_flush = true;
                self.to_flush.push(id);
            }
        }
    }

    /// Puts a connection on the ready-again list once.
    pub(crate) fn list_ready_again(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id) {
            if !conn.queued_again {
                conn.queued_again = true;
                self.ready_again.push(id.token());
            }
        }
    }

    /// Asks for a connection to be closed with `reason` once the loop gets to it.
    pub(crate) fn request_close(&mut self, id: ConnId, reason: CloseReason) {
        self.to_close.push((id, reason));
    }

    /// Logs a framing violation with the peer's address and closes the connection.
    pub(crate) fn protocol_error(&mut self, id: ConnId, error: &crate::frame::FrameError) {
        match self.conn(id).and_then(|c| c.stream.peer_addr()) {
            Some(peer) => log::warn!("{id} from {peer}: {error}; closing"),
            None => log::warn!("{id}: {error}; closing"),
        }
        self.stats.protocol_errors += 1;
        self.request_close(id, CloseReason::Protocol);
    }

    /// Stops reading from a connection and closes it with `reason` once its output is
    /// written (at once if nothing is queued).
    pub(crate) fn close_after_flush(&mut self, id: ConnId, reason: CloseReason) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if conn.state == ConnState::Open {
            conn.state = ConnState::Draining(reason);
        }
        if conn.output.is_empty() {
            self.finish_draining(id, reason);
        } else {
            self.list_for_flush(id);
        }
    }

    /// Output flushed: a connection whose peer already closed its side closes now;
    /// any other sends a FIN and lingers (see [`ConnState::Lingering`]) until the peer
    /// closes or goes quiet for [`LINGER_QUIET`].
    pub(crate) fn finish_draining(&mut self, id: ConnId, reason: CloseReason) {
        let now = self.now;
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if reason == CloseReason::PeerClosed || matches!(conn.state, ConnState::Lingering(_)) {
            self.request_close(id, reason);
            return;
        }
        conn.stream.shutdown_write();
        conn.state = ConnState::Lingering(reason);
        conn.peer_still_sending = false;
        conn.linger_rounds = 0;
        log::trace!("{id}: output flushed, FIN sent; lingering until the peer closes");
        self.timers
            .insert(now + LINGER_QUIET, TimerEvent::LingerDeadline(id));
        // Input may be waiting already, and its readiness edge may be long gone.
        self.list_ready_again(id);
    }

    /// Writes as much queued output as the socket takes, then adjusts WRITABLE interest,
    /// backpressure and draining. Errors are turned into close requests.
    pub(crate) fn flush(&mut self, id: ConnId) {
        let Some(conn) = connection_mut(&mut self.conns, id) else {
            return;
        };
        conn.queued_flush = false;
        let mut socket_full = false;
        let mut progressed = false;
        while !conn.output.is_empty() {
            let (result, attempted) = write_some(conn);
            match result {
                Ok(0) => {
                    self.to_close
                        .push((id, CloseReason::Error(io::ErrorKind::WriteZero)));
                    return;
                }
                Ok(written) => {
                    log::trace!("{id}: write {written} of {attempted}");
                    self.stats.bytes_out += written as u64;
                    progressed = true;
                    conn.output.advance(written, &mut self.pool);
                    // A short write means the kernel's send buffer is full: no need to
                    // try again only to be told WouldBlock.
                    if written < attempted {
                        socket_full = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    log::trace!("{id}: write WouldBlock");
                    socket_full = true;
                    break;
                }
                Err(e) => {
                    log::debug!("{id}: write error: {e}");
                    self.to_close.push((id, CloseReason::Error(e.kind())));
                    return;
                }
            }
        }
        set_writable_interest(&self.registry, conn, id, socket_full);
        if conn.read_paused && conn.output.len() <= self.limits.write_limit / 2 {
            log::debug!("{id}: output drained below half the write limit, reading again");
            conn.read_paused = false;
            if std::mem::take(&mut conn.read_pending) {
                self.list_ready_again(id);
            }
        } else if let (true, ConnState::Draining(reason)) = (conn.output.is_empty(), conn.state) {
            self.finish_draining(id, reason);
        }
        if progressed {
            self.touch(id);
        }
    }
}

/// The connection `id` names in `conns`, if it is still there: same slot *and* same
/// generation, so an id never reaches a newcomer that reused the slot. A function of
/// the slab alone, for callers that also borrow other parts of the hub.
pub(crate) fn connection_mut(conns: &mut Slab<Connection>, id: ConnId) -> Option<&mut Connection> {
    conns
        .get_mut(id.index())
        .filter(|conn| conn.generation == id.generation())
}

/// One `write` of `bytes`, retried if interrupted: how many bytes the socket took
/// (0 when it is full).
#[inline]
fn write_now(conn: &mut Connection, bytes: &[u8]) -> io::Result<usize> {
    loop {
        match conn.stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

/// One `write` (or `writev` when shared frames are queued) of the connection's output.
/// Returns the outcome and how many bytes were offered.
fn write_some(conn: &mut Connection) -> (io::Result<usize>, usize) {
    if conn.output.is_owned_only() {
        let bytes = conn.output.owned_bytes();
        let attempted = bytes.len();
        (conn.stream.write(bytes), attempted)
    } else {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let (used, attempted) = conn.output.gather(&mut slices);
        (conn.stream.write_vectored(&slices[..used]), attempted)
    }
}

/// Registers WRITABLE only while output waits for room in the socket, so an idle
/// connection is never woken for writability it has no use for.
fn set_writable_interest(registry: &Registry, conn: &mut Connection, id: ConnId, wanted: bool) {
    if conn.writable_armed == wanted {
        return;
    }
    let interest = if wanted {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    match registry.reregister(&mut conn.stream, id.token(), interest) {
        Ok(()) => {
            log::trace!(
                "{id}: interest {}",
                if wanted { "READ|WRITE" } else { "READ" }
            );
            conn.writable_armed = wanted;
        }
        Err(e) => log::error!("{id}: reregister: {e}"),
    }
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
            idle_timeout_millis: None,
            frame_timeout: None,
        };
        let mut hub = Hub::new(poll.registry().try_clone().unwrap(), limits);
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
