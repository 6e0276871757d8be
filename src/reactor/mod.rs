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
use crate::connection::{ConnId, ConnState, Millis};
use crate::endpoint::{bind_tcp, bind_udp, bind_unix, BoundAddr, Listener};
use crate::error::Error;
use crate::frame::Codec;
use crate::hub::{Hub, Limits, TimerEvent};
use crate::service::{Context, Service};
use crate::stats::{CloseReason, Stats};
use crate::udp::{UdpEndpoint, UdpId};

mod accept;
mod read;
mod timers;

/// Wakes the loop from another thread (shutdown).
const WAKER: Token = Token(0);
/// Listener `i` has token `LISTENER_BASE + i`.
const LISTENER_BASE: usize = 1;
/// Watched source `i` (see [`Reactor::watch`]) has token `WATCH_BASE + i`.
const WATCH_BASE: usize = 1 << 15;
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
    hub: Hub,
    listeners: Vec<ListenerSlot>,
    /// Outside sources the loop watches (e.g. a signal pipe), each with its handler.
    watched: Vec<Box<dyn FnMut()>>,
    service: S,
    codec: C,
    /// The loop's shared read buffer: reads land here (all but the ends of large
    /// frames left partial by a slow peer), so idle connections need no buffer of
    /// their own.
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
            idle_timeout_millis: config
                .idle_timeout
                .filter(|d| !d.is_zero())
                .map(|d| d.as_millis().max(1) as Millis),
            frame_timeout: config.frame_timeout.filter(|d| !d.is_zero()),
        };
        let mut reactor = Reactor {
            hub: Hub::new(registry, limits),
            listeners: Vec::new(),
            watched: Vec::new(),
            service,
            codec,
            scratch: Buffer::from_storage(Vec::with_capacity(read::shared_buffer_size(
                config.read_buffer_size,
            ))),
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

    /// Watches an outside event source from the loop's own thread: `on_ready` runs
    /// each time `source` becomes readable. Like every socket here the source is
    /// registered edge-triggered, so `on_ready` must drain it (read until `WouldBlock`)
    /// or it will not be called again.
    ///
    /// The `switchboard` binary watches its signal pipe this way, so the process runs
    /// no thread besides the loop (and the C library skips the bookkeeping it does
    /// around every system call once a second thread exists).
    ///
    /// ```no_run
    /// # use std::io::Read;
    /// # use switchboard::{Config, LengthCodec, Reactor, services::Echo};
    /// # let mut config = Config::default();
    /// # config.tcp.push("127.0.0.1:0".parse().unwrap());
    /// let mut reactor = Reactor::bind(config, Echo, LengthCodec::new(1 << 20)).unwrap();
    /// let (control, mut remote) = mio::net::UnixStream::pair().unwrap();
    /// let handle = reactor.handle();
    /// reactor
    ///     .watch(control, move |control| {
    ///         let mut byte = [0u8; 64];
    ///         // Drained to WouldBlock (or EOF): any byte, or the other end closing,
    ///         // stops the server.
    ///         while matches!(control.read(&mut byte), Ok(n) if n > 0) {}
    ///         handle.shutdown();
    ///     })
    ///     .unwrap();
    /// # std::io::Write::write_all(&mut remote, b"x").unwrap();
    /// reactor.run().unwrap();
    /// ```
    pub fn watch<Src>(
        &mut self,
        mut source: Src,
        mut on_ready: impl FnMut(&mut Src) + 'static,
    ) -> Result<(), Error>
    where
        Src: mio::event::Source + 'static,
    {
        let token = Token(WATCH_BASE + self.watched.len());
        self.poll
            .registry()
            .register(&mut source, token, Interest::READABLE)
            .map_err(Error::Poll)?;
        self.watched.push(Box::new(move || on_ready(&mut source)));
        Ok(())
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
        // A local, not a field: the handlers borrow `self` mutably while the loop
        // walks the events.
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = self.poll_timeout();
            log::trace!("poll: timeout {}", describe_timeout(timeout));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Poll(e));
            }
            self.hub.set_now(Instant::now());
            self.dispatch_events(&events);
            if !self.hub.ready_again.is_empty() {
                self.serve_ready_again();
            }
            self.fire_timers();
            if self.hub.udp_burst_pending {
                self.send_udp_bursts();
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
    fn poll_timeout(&mut self) -> Option<Duration> {
        if !self.hub.ready_again.is_empty() {
            return Some(Duration::ZERO);
        }
        // Measured from the start of this turn: reading the clock again costs more
        // than the turn's few microseconds of lateness.
        let timer = self.hub.timers.poll_timeout(self.hub.now);
        let now_millis = self.hub.now_millis();
        let idle = self
            .hub
            .next_idle_deadline()
            .map(|deadline| Duration::from_millis(deadline.saturating_sub(now_millis)));
        match (timer, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn dispatch_events(&mut self, events: &Events) {
        log::trace!("turn: {} events", events.iter().count());
        for event in events {
            let event = Readiness::of(event);
            log::trace!("event {event}");
            if let Some(id) = ConnId::from_token(event.token) {
                self.connection_event(id, event.readable, event.writable, event.read_closed);
            } else if event.token.0 >= UDP_BASE {
                self.udp_event(event.token.0 - UDP_BASE, event.readable, event.writable);
            } else if event.token.0 >= WATCH_BASE {
                if let Some(on_ready) = self.watched.get_mut(event.token.0 - WATCH_BASE) {
                    on_ready();
                }
            } else if event.token.0 >= LISTENER_BASE {
                self.accept(event.token.0 - LISTENER_BASE);
            } else {
                self.woken();
            }
            self.carry_out_requests();
        }
    }

    /// The waker fired: another thread (or a handler on this one) called
    /// [`Handle::shutdown`]. The flag is only looked at here, not every turn: the
    /// handle always sets it before it wakes the loop.
    fn woken(&mut self) {
        if self.stop.load(Ordering::SeqCst) && self.shutdown_deadline.is_none() {
            self.begin_shutdown();
        }
    }

    fn connection_event(&mut self, id: ConnId, readable: bool, writable: bool, read_closed: bool) {
        // An event for a connection that closed earlier in this batch finds nothing:
        // both handlers look the id up, and its generation tells a newcomer in the
        // same slot apart.
        if writable {
            self.hub.flush(id);
        }
        if readable {
            self.read_connection(id, read_closed);
        }
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

    /// Receives datagrams until `WouldBlock` (or the budget), handing each to the
    /// service, then sends the burst of replies they made.
    fn receive_datagrams(&mut self, index: usize) {
        self.receive_datagram_burst(index);
        self.send_udp_bursts();
    }

    /// Receives datagrams until `WouldBlock` (or the budget), handing each to the service.
    fn receive_datagram_burst(&mut self, index: usize) {
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

    /// Sends the datagrams callbacks sent since the last call (see `udp.rs`: bursts
    /// go out together, and before the loop waits).
    fn send_udp_bursts(&mut self) {
        let hub = &mut self.hub;
        hub.udp_burst_pending = false;
        for endpoint in hub.udp.iter_mut().filter(|e| e.has_burst()) {
            endpoint.send_burst(hub.limits.write_limit, &hub.registry, &mut hub.stats);
        }
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
                if self.hub.conn(id).is_some_and(|c| c.writable_armed) {
                    // The socket is full and WRITABLE is armed: a write now would only
                    // hear WouldBlock; the writable event will flush.
                    if let Some(conn) = self.hub.conn_mut(id) {
                        conn.queued_flush = false;
                    }
                    continue;
                }
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
        let ids = self.hub.conn_ids();
        for id in ids {
            self.hub.close_after_flush(id, CloseReason::Shutdown);
        }
        self.carry_out_requests();
    }

    /// Closes whatever the grace period did not drain, and logs the summary.
    fn finish_shutdown(&mut self) {
        let ids = self.hub.conn_ids();
        if !ids.is_empty() {
            log::warn!(
                "{} connections still had output queued at the deadline",
                ids.len()
            );
        }
        for id in ids {
            self.close_connection(id, CloseReason::Shutdown);
        }
        self.send_udp_bursts();
        for endpoint in &mut self.hub.udp {
            endpoint.flush(&self.hub.registry, &mut self.hub.stats);
        }
        log::info!("served: {}", self.hub.stats);
    }
}

/// A poll timeout as the trace shows it.
fn describe_timeout(timeout: Option<Duration>) -> String {
    match timeout {
        None => "none (nothing due)".to_string(),
        Some(t) if t.is_zero() => "0 (work left over)".to_string(),
        Some(t) => format!("{} ms", t.as_millis()),
    }
}

/// What an event reported, copied out of mio's event list.
#[derive(Debug, Clone, Copy)]
struct Readiness {
    token: Token,
    /// Readable, or the peer closed its side, or an error is pending: any of these is
    /// found out by reading.
    readable: bool,
    /// Writable, or an error is pending (found out by writing).
    writable: bool,
    /// The peer closed its side: read on until EOF even after a short read.
    read_closed: bool,
}

impl Readiness {
    fn of(event: &mio::event::Event) -> Self {
        Readiness {
            token: event.token(),
            readable: event.is_readable() || event.is_read_closed() || event.is_error(),
            writable: event.is_writable() || event.is_error(),
            read_closed: event.is_read_closed(),
        }
    }
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match ConnId::from_token(self.token) {
            Some(id) => id.to_string(),
            None if self.token == WAKER => "waker".to_string(),
            None if self.token.0 >= UDP_BASE => format!("udp {}", self.token.0 - UDP_BASE),
            None if self.token.0 >= WATCH_BASE => format!("watched {}", self.token.0 - WATCH_BASE),
            None => format!("listener {}", self.token.0 - LISTENER_BASE),
        };
        write!(
            f,
            "{target}:{}{}{}",
            if self.readable { " readable" } else { "" },
            if self.writable { " writable" } else { "" },
            if self.read_closed { " read-closed" } else { "" }
        )
    }
}
