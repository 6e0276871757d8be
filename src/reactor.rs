//! The event loop: one `mio::Poll`, every socket registered with it, and the dispatch
//! from readiness events to reads, writes, accepts and service callbacks.
//!
//! One turn of the loop:
//!
//! ```text
//!   poll(timeout = next timer deadline, or 0 if work is left over)
//!     -> for each event: accept / read+decode+on_frame / write / recv_from+on_datagram
//!        then carry out what callbacks queued: flush output, close connections
//!     -> serve the ready-again list (readiness left unused by the per-turn budgets)
//!     -> fire due timers (idle, frame deadline, service timers, stats report)
//! ```
//!
//! mio is edge-triggered: an event says readiness *changed*, and no new event comes
//! until the socket has been drained to `WouldBlock`. So each handler reads, writes or
//! accepts until `WouldBlock`, or, to be fair to other sockets, stops after a budget
//! and puts the socket on the ready-again list, which the next turn serves with a zero
//! poll timeout. A short read or short write also proves the kernel buffer was drained
//! or filled, which saves the extra syscall that would only return `WouldBlock`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use crate::buffer::Buffer;
use crate::config::Config;
use crate::connection::{ConnId, ConnState, Connection, NO_FRAME};
use crate::endpoint::{bind_tcp, bind_udp, bind_unix, BoundAddr, Listener};
use crate::error::Error;
use crate::frame::{Codec, Decode, FrameError};
use crate::hub::{Hub, Limits, TimerEvent};
use crate::service::{Context, Service};
use crate::stats::{CloseReason, Stats};
use crate::udp::{UdpEndpoint, UdpId};

/// Wakes the loop from another thread (shutdown).
const WAKER: Token = Token(0);
/// Listener `i` has token `LISTENER_BASE + i`.
const LISTENER_BASE: usize = 1;
/// UDP socket `i` has token `UDP_BASE + i`. Connection tokens are all >= 2^32.
const UDP_BASE: usize = 1 << 16;
/// Events taken from the kernel per `poll`.
const EVENTS_CAPACITY: usize = 1024;
/// Connections accepted per listener per turn before others get a turn.
const ACCEPT_BUDGET: usize = 256;
/// Datagrams received per UDP socket per turn before others get a turn.
const DATAGRAM_BUDGET: usize = 64;
/// Pause before accepting again after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Rate limit for repeated warnings (max-conns rejections, accept failures).
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// Stops a running reactor from any thread.
///
/// ```no_run
/// # use switchboard::{Config, LengthCodec, Reactor, services::Echo};
/// # let mut config = Config::default();
/// # config.tcp.push("127.0.0.1:0".parse().unwrap());
/// let reactor = Reactor::bind(config, Echo, LengthCodec::new(1 << 20)).unwrap();
/// let handle = reactor.handle();
/// std::thread::spawn(move || handle.shutdown());
/// let stats = reactor.run().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Handle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Handle {
    /// Asks the reactor to stop accepting, flush what is queued (within the grace
    /// period) and return from [`Reactor::run`].
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            log::error!("cannot wake the event loop: {e}");
        }
    }
}

/// A listener and whether accepting on it is paused.
#[derive(Debug)]
struct ListenerSlot {
    listener: Listener,
    /// Accepting paused after running out of file descriptors; a timer resumes it.
    paused: bool,
}

/// The single-threaded server: sockets, connections, timers and one [`Service`],
/// driven by one `mio::Poll`. See the module docs for the shape of a turn.
pub struct Reactor<S: Service, C: Codec> {
    poll: Poll,
    events: Events,
    hub: Hub,
    listeners: Vec<ListenerSlot>,
    service: S,
    codec: C,
    /// The loop's shared read buffer: every read lands here unless a frame too large
    /// for it is being received, so idle connections need no buffer of their own.
    scratch: Buffer,
    config: Config,
    bound: Vec<BoundAddr>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    /// Set once shutdown has begun: the time by which everything must be closed.
    shutdown_deadline: Option<Instant>,
    /// When each rate-limited warning was last logged.
    last_reject_warning: Option<Instant>,
    last_accept_warning: Option<Instant>,
}

impl<S: Service, C: Codec> std::fmt::Debug for Reactor<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("endpoints", &self.bound)
            .field("connections", &self.hub.conns.len())
            .finish()
    }
}

impl<S: Service, C: Codec> Reactor<S, C> {
    /// Validates `config`, binds every endpoint and registers it with a new `Poll`.
    /// Logs one line per endpoint with its real address.
    pub fn bind(config: Config, service: S, codec: C) -> Result<Self, Error> {
        config.validate()?;
        let poll = Poll::new().map_err(Error::Poll)?;
        let registry = poll.registry().try_clone().map_err(Error::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(Error::Poll)?);
        let limits = Limits {
            write_limit: config.write_limit,
            idle_timeout: config.idle_timeout.filter(|d| !d.is_zero()),
            frame_timeout: config.frame_timeout.filter(|d| !d.is_zero()),
        };
        let mut reactor = Reactor {
            hub: Hub::new(registry, limits),
            events: Events::with_capacity(EVENTS_CAPACITY),
            listeners: Vec::new(),
            service,
            codec,
            scratch: Buffer::from_storage(Vec::with_capacity(config.read_buffer_size)),
            bound: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            shutdown_deadline: None,
            last_reject_warning: None,
            last_accept_warning: None,
            poll,
            config,
        };
        reactor.bind_endpoints()?;
        if let Some(interval) = reactor.config.stats_interval.filter(|d| !d.is_zero()) {
            reactor
                .hub
                .timers
                .insert(Instant::now() + interval, TimerEvent::StatsReport);
        }
        Ok(reactor)
    }

    fn bind_endpoints(&mut self) -> Result<(), Error> {
        let bind_error = |endpoint: String| move |source| Error::Bind { endpoint, source };
        for addr in self.config.tcp.clone() {
            let listener = bind_tcp(addr, self.config.backlog, self.config.reuse_port)
                .map_err(bind_error(format!("tcp {addr}")))?;
            let local = listener
                .local_addr()
                .map_err(bind_error(format!("tcp {addr}")))?;
            self.add_listener(Listener::Tcp(listener), BoundAddr::Tcp(local))?;
        }
        for path in self.config.unix.clone() {
            let listener =
                bind_unix(&path).map_err(bind_error(format!("unix {}", path.display())))?;
            self.add_listener(
                Listener::Unix(listener, path.clone()),
                BoundAddr::Unix(path.clone()),
            )?;
        }
        for addr in self.config.udp.clone() {
            let mut socket = bind_udp(addr).map_err(bind_error(format!("udp {addr}")))?;
            let local = socket
                .local_addr()
                .map_err(bind_error(format!("udp {addr}")))?;
            let token = Token(UDP_BASE + self.hub.udp.len());
            self.poll
                .registry()
                .register(&mut socket, token, Interest::READABLE)
                .map_err(Error::Poll)?;
            self.hub.udp.push(UdpEndpoint::new(socket, token));
            self.announce(BoundAddr::Udp(local));
        }
        Ok(())
    }

    fn add_listener(&mut self, mut listener: Listener, bound: BoundAddr) -> Result<(), Error> {
        let token = Token(LISTENER_BASE + self.listeners.len());
        self.poll
            .registry()
            .register(listener.source(), token, Interest::READABLE)
            .map_err(Error::Poll)?;
        self.listeners.push(ListenerSlot {
            listener,
            paused: false,
        });
        self.announce(bound);
        Ok(())
    }

    fn announce(&mut self, bound: BoundAddr) {
        log::info!("listening on {bound}");
        self.bound.push(bound);
    }

    /// The endpoints bound, with their real addresses, in the order: TCP, Unix, UDP.
    pub fn endpoints(&self) -> &[BoundAddr] {
        &self.bound
    }

    /// A handle that stops the reactor from another thread.
    pub fn handle(&self) -> Handle {
        Handle {
            stop: Arc::clone(&self.stop),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Runs the loop until [`Handle::shutdown`] is called and the shutdown completes.
    /// Returns the final counters, which are also logged.
    pub fn run(mut self) -> Result<Stats, Error> {
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut self.events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Poll(e));
            }
            self.hub.now = Instant::now();
            self.dispatch_events();
            self.serve_ready_again();
            self.fire_timers();
            if self.stop.load(Ordering::SeqCst) && self.shutdown_deadline.is_none() {
                self.begin_shutdown();
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.hub.conns.is_empty() || self.hub.now >= deadline {
                    break;
                }
            }
        }
        self.finish_shutdown();
        Ok(self.hub.stats)
    }

    /// How long `poll` may block: not at all if work is left over, else until the
    /// next deadline (a timer, or the quietest connection becoming idle), else for ever.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.hub.ready_again.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let timer = self.hub.timers.poll_timeout(now);
        let idle = self.hub.next_idle_deadline().map(|deadline| {
            // Round up to whole milliseconds, as the timer queue does, so the loop
            // does not wake a hair early and spin until the deadline.
            let wait = deadline.saturating_duration_since(now);
            Duration::from_millis(wait.as_nanos().div_ceil(1_000_000) as u64)
        });
        match (timer, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn dispatch_events(&mut self) {
        // The event list is moved out for the loop so the handlers may borrow `self`.
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        log::trace!("turn: {} events", events.iter().count());
        for event in events.iter() {
            let token = event.token();
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            let writable = event.is_writable() || event.is_error();
            log::trace!(
                "event token {:#x}: {}{}{}",
                token.0,
                if event.is_readable() { "R" } else { "" },
                if event.is_writable() { "W" } else { "" },
                if event.is_read_closed() {
                    " read-closed"
                } else {
                    ""
                },
            );
            if let Some(id) = ConnId::from_token(token) {
                self.connection_event(id, readable, writable, event.is_read_closed());
            } else if token.0 >= UDP_BASE {
                self.udp_event(token.0 - UDP_BASE, readable, writable);
            } else if token.0 >= LISTENER_BASE {
                self.accept(token.0 - LISTENER_BASE);
            }
            self.carry_out_requests();
        }
        self.events = events;
    }

    fn connection_event(&mut self, id: ConnId, readable: bool, writable: bool, read_closed: bool) {
        if self.hub.conn(id).is_none() {
            // An event for a connection that closed earlier in this batch (its slot may
            // already hold a newcomer, which the generation tells apart).
            log::trace!("{id}: stale event ignored");
            return;
        }
        if writable {
            self.hub.flush(id);
        }
        if readable {
            self.read_connection(id, read_closed);
        }
    }

    /// Reads and decodes until the socket is drained, the read budget is spent, or the
    /// connection stops reading (closing, or paused by backpressure).
    fn read_connection(&mut self, id: ConnId, read_to_eof: bool) {
        for _ in 0..self.config.read_budget {
            let Some(conn) = self.hub.conn_mut(id) else {
                return;
            };
            if conn.state != ConnState::Open {
                return;
            }
            if conn.read_paused {
                conn.read_pending = true;
                return;
            }
            if conn.output.len() > self.config.write_limit {
                log::debug!(
                    "{id}: {} bytes queued, over the write limit: pausing reads",
                    conn.output.len()
                );
                conn.read_paused = true;
                conn.read_pending = true;
                return;
            }
            match self.read_once(id, read_to_eof) {
                ReadOutcome::Drained | ReadOutcome::Stopped => return,
                ReadOutcome::More => {}
            }
        }
        // Budget spent and the socket may hold more: come back next turn.
        self.hub.list_ready_again(id);
    }

    /// One `read` into the shared buffer (or into the connection's own buffer when a
    /// frame too big for the shared one is arriving), then decode and dispatch.
    fn read_once(&mut self, id: ConnId, read_to_eof: bool) -> ReadOutcome {
        let Some(conn) = self.hub.conn_mut(id) else {
            return ReadOutcome::Stopped;
        };
        let frame_len = match conn.input.is_empty() {
            true => None,
            false => match self.codec.decode(conn.input.readable()) {
                Ok(Decode::Incomplete { frame_len }) => frame_len,
                _ => None,
            },
        };
        let pending = frame_len.unwrap_or(conn.input.len());
        let direct = pending > self.scratch.capacity() / 2;
        let mut buf = if direct {
            std::mem::take(&mut conn.input)
        } else {
            // Small tail: copy it in front of the new bytes so frames decode in one place.
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            scratch.extend_from_slice(conn.input.readable());
            scratch
        };
        let min_read = match frame_len {
            Some(len) if direct => len - buf.len() + 16 * 1024,
            _ => 16 * 1024,
        };
        let spare = buf.spare_mut(min_read);
        let requested = spare.len();
        let result = conn.stream.read(spare);
        if let Ok(n @ 1..) = result {
            buf.commit(n);
            self.hub.touch(id);
        }
        let outcome = match result {
            Ok(0) => {
                log::trace!("{id}: read EOF");
                self.hub.close_after_flush(id, CloseReason::PeerClosed);
                ReadOutcome::Stopped
            }
            Ok(n) => {
                log::trace!("{id}: read {n} bytes");
                self.hub.stats.bytes_in += n as u64;
                match self.dispatch_frames(id, &mut buf) {
                    Err(e) => {
                        self.protocol_error(id, &e);
                        ReadOutcome::Stopped
                    }
                    Ok(()) if n < requested && !read_to_eof => ReadOutcome::Drained,
                    Ok(()) => ReadOutcome::More,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                log::trace!("{id}: read WouldBlock");
                ReadOutcome::Drained
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => ReadOutcome::More,
            Err(e) => {
                log::debug!("{id}: read error: {e}");
                self.hub.request_close(id, CloseReason::Error(e.kind()));
                ReadOutcome::Stopped
            }
        };
        self.keep_tail(id, buf, direct);
        outcome
    }

    /// Hands every complete frame in `buf` to the service and consumes it, leaving only
    /// the incomplete tail. Stops early if the service closes the connection.
    fn dispatch_frames(&mut self, id: ConnId, buf: &mut Buffer) -> Result<(), FrameError> {
        let bytes = buf.readable();
        let mut used = 0;
        while let Decode::Frame { payload, consumed } = self.codec.decode(&bytes[used..])? {
            self.hub.stats.frames_in += 1;
            let payload = &bytes[used + payload.start..used + payload.end];
            let mut ctx = Context::new(&mut self.hub, &self.codec);
            self.service.on_frame(&mut ctx, id, payload);
            used += consumed;
            if !self.hub.conn(id).is_some_and(Connection::is_open) {
                break;
            }
        }
        buf.consume(used);
        if used > 0 {
            if let Some(conn) = self.hub.conn_mut(id) {
                // Any tail now is the start of a new frame.
                conn.frame_started = NO_FRAME;
            }
        }
        Ok(())
    }

    /// Stores what is left of the input in the connection (or releases its buffer when
    /// nothing is left) and returns the shared buffer, emptied, to the reactor.
    fn keep_tail(&mut self, id: ConnId, mut buf: Buffer, direct: bool) {
        let now = self.hub.now;
        let now_millis = self.hub.now_millis();
        let frame_timeout = self.hub.limits.frame_timeout;
        let hub = &mut self.hub;
        if let Some(conn) = hub
            .conns
            .get_mut(id.index())
            .filter(|c| c.generation == id.generation())
        {
            if direct {
                conn.input = buf;
                buf = Buffer::new();
            } else {
                conn.input.clear();
                if !buf.is_empty() {
                    if conn.input.capacity() == 0 {
                        conn.input = hub.pool.take();
                    }
                    conn.input.extend_from_slice(buf.readable());
                }
            }
            if conn.input.is_empty() {
                conn.frame_started = NO_FRAME;
                if conn.input.capacity() > 0 {
                    hub.pool.give_back(&mut conn.input);
                }
            } else if conn.frame_started == NO_FRAME {
                conn.frame_started = now_millis;
                if let (Some(timeout), false) = (frame_timeout, conn.frame_timer_armed) {
                    conn.frame_timer_armed = true;
                    hub.timers
                        .insert(now + timeout, TimerEvent::FrameDeadline(id));
                }
            }
        }
        if !direct {
            buf.clear();
            self.scratch = buf;
        }
    }

    fn protocol_error(&mut self, id: ConnId, error: &FrameError) {
        let peer = self.hub.conn(id).and_then(|c| c.stream.peer_addr());
        match peer {
            Some(peer) => log::warn!("{id} from {peer}: {error}; closing"),
            None => log::warn!("{id}: {error}; closing"),
        }
        self.hub.stats.protocol_errors += 1;
        self.hub.request_close(id, CloseReason::Protocol);
    }

    /// Accepts until `WouldBlock` (or the budget), registering each new connection.
    fn accept(&mut self, index: usize) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(slot) = self.listeners.get(index).filter(|slot| !slot.paused) else {
                return;
            };
            match slot.listener.accept() {
                Ok((stream, peer)) => {
                    if self.hub.conns.len() >= self.config.max_conns {
                        // Accept and close at once, so the backlog does not fill up
                        // with connections that would wait for ever.
                        drop(stream);
                        self.hub.stats.rejected += 1;
                        if rate_limit(&mut self.last_reject_warning, self.hub.now) {
                            log::warn!(
                                "max-conns ({}) reached: rejecting connections ({} so far, latest from {peer})",
                                self.config.max_conns,
                                self.hub.stats.rejected
                            );
                        }
                        continue;
                    }
                    log::debug!("accepted {peer}");
                    self.register_connection(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.hub.stats.accept_errors += 1;
                    if is_resource_exhaustion(&e) {
                        // Out of file descriptors: the pending connection stays in the
                        // backlog and accept would fail again at once. Pause instead
                        // of spinning, and retry when some have been closed.
                        if rate_limit(&mut self.last_accept_warning, self.hub.now) {
                            log::warn!("accept: {e}; pausing accepts for {ACCEPT_RETRY:?}");
                        }
                        self.listeners[index].paused = true;
                        let at = self.hub.now + ACCEPT_RETRY;
                        self.hub.timers.insert(at, TimerEvent::AcceptRetry(index));
                        return;
                    }
                    log::debug!("accept: {e}");
                }
            }
        }
        self.hub.ready_again.push(Token(LISTENER_BASE + index));
    }

    fn register_connection(&mut self, mut stream: crate::connection::Stream) {
        let generation = self.hub.next_generation();
        let now = self.hub.now_millis();
        let entry = self.hub.conns.vacant_entry();
        let id = ConnId::new(entry.key(), generation);
        if let Err(e) = self
            .hub
            .registry
            .register(&mut stream, id.token(), Interest::READABLE)
        {
            log::error!("cannot register a new connection: {e}");
            return;
        }
        entry.insert(Connection::new(stream, generation, now));
        if self.hub.limits.idle_timeout.is_some() {
            self.hub.idle.push_back(&mut self.hub.conns, id.index());
        }
        self.hub.stats.accepted += 1;
        self.hub.stats.active += 1;
        let mut ctx = Context::new(&mut self.hub, &self.codec);
        self.service.on_connect(&mut ctx, id);
        self.carry_out_requests();
    }

    fn udp_event(&mut self, index: usize, readable: bool, writable: bool) {
        if writable {
            if let Some(endpoint) = self.hub.udp.get_mut(index) {
                endpoint.flush(&self.hub.registry, &mut self.hub.stats);
            }
        }
        if readable {
            self.receive_datagrams(index);
        }
    }

    /// Receives datagrams until `WouldBlock` (or the budget), handing each to the service.
    fn receive_datagrams(&mut self, index: usize) {
        let socket = UdpId(index);
        for _ in 0..DATAGRAM_BUDGET {
            let Some(endpoint) = self.hub.udp.get(index) else {
                return;
            };
            let buf = self.scratch.spare_mut(self.config.read_buffer_size);
            match endpoint.socket.recv_from(buf) {
                Ok((n, peer)) => {
                    log::trace!("{socket}: recv_from {peer}: {n} bytes");
                    self.hub.stats.datagrams_in += 1;
                    let mut ctx = Context::new(&mut self.hub, &self.codec);
                    self.service.on_datagram(&mut ctx, socket, peer, &buf[..n]);
                    self.carry_out_requests();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // E.g. ECONNREFUSED left by an ICMP error for an earlier send: that
                // concerns one peer only, keep serving the others.
                Err(e) => log::debug!("{socket}: recv_from: {e}"),
            }
        }
        self.hub.ready_again.push(Token(UDP_BASE + index));
    }

    /// Closes the connections that callbacks (or errors) asked to close and flushes the
    /// ones they queued output for, until neither list has anything left. Closes come
    /// first: output queued for a connection closed with `CloseMode::Now` is discarded,
    /// not written.
    fn carry_out_requests(&mut self) {
        loop {
            if let Some((id, reason)) = self.hub.to_close.pop() {
                self.close_connection(id, reason);
            } else if let Some(id) = self.hub.to_flush.pop() {
                self.hub.flush(id);
            } else {
                return;
            }
        }
    }

    fn close_connection(&mut self, id: ConnId, reason: CloseReason) {
        if self.hub.conn(id).is_none() {
            return; // closed already (a second request for the same connection)
        }
        self.hub.idle.unlink(&mut self.hub.conns, id.index());
        let mut conn = self.hub.conns.remove(id.index());
        if let Err(e) = self.hub.registry.deregister(&mut conn.stream) {
            log::debug!("{id}: deregister: {e}");
        }
        if matches!(conn.state, ConnState::Draining(_)) {
            // Everything owed was written: say so with a FIN before the close.
            conn.stream.shutdown_write();
        }
        if conn.input.capacity() > 0 {
            conn.input.clear();
            self.hub.pool.give_back(&mut conn.input);
        }
        drop(conn);
        self.hub.stats.active -= 1;
        self.hub.stats.closed[reason.index()] += 1;
        log::debug!("{id}: closed: {reason}");
        let mut ctx = Context::new(&mut self.hub, &self.codec);
        self.service.on_close(&mut ctx, id, reason);
    }

    /// Serves sockets whose readiness a budget left unused in an earlier turn.
    fn serve_ready_again(&mut self) {
        let tokens = std::mem::take(&mut self.hub.ready_again);
        for token in tokens {
            if let Some(id) = ConnId::from_token(token) {
                let Some(conn) = self.hub.conn_mut(id) else {
                    continue;
                };
                conn.queued_again = false;
                self.read_connection(id, false);
            } else if token.0 >= UDP_BASE {
                self.receive_datagrams(token.0 - UDP_BASE);
            } else if token.0 >= LISTENER_BASE {
                self.accept(token.0 - LISTENER_BASE);
            }
            self.carry_out_requests();
        }
    }

    fn fire_timers(&mut self) {
        self.close_idle_connections();
        self.carry_out_requests();
        while let Some((timer, event)) = self.hub.timers.pop_due(self.hub.now) {
            match event {
                TimerEvent::FrameDeadline(id) => self.check_frame_deadline(id),
                TimerEvent::Service(value) => {
                    log::trace!("timer fired: service timer {value}");
                    let mut ctx = Context::new(&mut self.hub, &self.codec);
                    self.service.on_timer(&mut ctx, timer, value);
                }
                TimerEvent::AcceptRetry(index) => {
                    if let Some(slot) = self.listeners.get_mut(index) {
                        slot.paused = false;
                        self.accept(index);
                    }
                }
                TimerEvent::StatsReport => {
                    log::info!("stats: {}", self.hub.stats);
                    if let Some(interval) = self.config.stats_interval {
                        self.hub
                            .timers
                            .insert(self.hub.now + interval, TimerEvent::StatsReport);
                    }
                }
                TimerEvent::ShutdownDeadline => {}
            }
            self.carry_out_requests();
        }
    }

    /// Closes every connection that has been quiet for the idle timeout: they are at
    /// the front of the idle list, so this looks at no connection that is not due.
    fn close_idle_connections(&mut self) {
        let Some(timeout) = self.hub.limits.idle_timeout else {
            return;
        };
        while let Some(key) = self.hub.idle.front() {
            let conn = &self.hub.conns[key];
            if self.hub.instant(conn.last_active) + timeout > self.hub.now {
                return;
            }
            let id = ConnId::new(key, conn.generation);
            log::info!("{id}: idle for {timeout:?}, closing");
            // Out of the list now, so the loop moves on while the close is pending.
            self.hub.idle.unlink(&mut self.hub.conns, key);
            self.hub.request_close(id, CloseReason::IdleTimeout);
        }
    }

    /// Closes a connection whose partial frame has been arriving for too long.
    fn check_frame_deadline(&mut self, id: ConnId) {
        let now = self.hub.now;
        let Some(timeout) = self.hub.limits.frame_timeout else {
            return;
        };
        let Some(started) = self.hub.conn(id).map(|c| self.hub.instant(c.frame_started)) else {
            return;
        };
        let Some(conn) = self.hub.conn_mut(id) else {
            return;
        };
        conn.frame_timer_armed = false;
        if conn.frame_started == NO_FRAME {
            return;
        }
        if started + timeout <= now {
            log::warn!(
                "{id}: frame not completed within {timeout:?} ({} bytes received); closing",
                conn.input.len()
            );
            self.hub.request_close(id, CloseReason::FrameTimeout);
        } else {
            conn.frame_timer_armed = true;
            self.hub
                .timers
                .insert(started + timeout, TimerEvent::FrameDeadline(id));
        }
    }

    /// Stops accepting and reading; open connections drain their output and close.
    fn begin_shutdown(&mut self) {
        log::info!(
            "shutting down: {} connections to drain (at most {:?})",
            self.hub.conns.len(),
            self.config.shutdown_grace
        );
        for slot in &mut self.listeners {
            let _ = self.poll.registry().deregister(slot.listener.source());
        }
        self.listeners.clear();
        let deadline = self.hub.now + self.config.shutdown_grace;
        self.shutdown_deadline = Some(deadline);
        self.hub
            .timers
            .insert(deadline, TimerEvent::ShutdownDeadline);
        let ids: Vec<ConnId> = self
            .hub
            .conns
            .iter()
            .map(|(key, conn)| ConnId::new(key, conn.generation))
            .collect();
        for id in ids {
            self.hub.close_after_flush(id, CloseReason::Shutdown);
        }
        self.carry_out_requests();
    }

    /// Closes whatever the grace period did not drain, and logs the summary.
    fn finish_shutdown(&mut self) {
        let ids: Vec<ConnId> = self
            .hub
            .conns
            .iter()
            .map(|(key, conn)| ConnId::new(key, conn.generation))
            .collect();
        if !ids.is_empty() {
            log::warn!(
                "{} connections still had output queued at the deadline",
                ids.len()
            );
        }
        for id in ids {
            self.close_connection(id, CloseReason::Shutdown);
        }
        for endpoint in &mut self.hub.udp {
            endpoint.flush(&self.hub.registry, &mut self.hub.stats);
        }
        log::info!("served: {}", self.hub.stats);
    }
}

/// What one read did.
enum ReadOutcome {
    /// The socket has nothing more for now (WouldBlock, or a short read).
    Drained,
    /// The read filled the buffer: there may be more.
    More,
    /// The connection stopped reading (EOF, error, protocol error, service closed it).
    Stopped,
}

/// True when `accept` failed for lack of file descriptors or memory: conditions that
/// last, unlike a connection aborted before it was accepted.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE (24) and ENFILE (23) are the same on Linux, the BSDs and macOS; ENOMEM is 12.
    matches!(e.raw_os_error(), Some(23) | Some(24) | Some(12))
}

/// True (and records `now`) if the last warning of this kind is old enough.
fn rate_limit(last: &mut Option<Instant>, now: Instant) -> bool {
    match last {
        Some(at) if now.duration_since(*at) < WARN_INTERVAL => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}
