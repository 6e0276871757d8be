//! The event loop: one `mio::Poll`, every socket registered with it, and the dispatch
//! from readiness events to reads, writes, accepts, connects and service callbacks.
//!
//! One turn of the loop, [`Reactor::turn`]:
//!
//! ```text
//!   poll(timeout = next deadline, or 0 if work is left over)
//!     -> at `now`: for each event: accept / connect / read+decode+on_frames / write /
//!        recv_from+on_datagram / jobs from other threads; after each, carry out what
//!        the callbacks queued: closes, flushes, on_drained
//!     -> serve the ready-again list (readiness left unused by the per-turn budgets)
//!     -> fire due timers (idle, frame deadline, connect, linger, service timers)
//! ```
//!
//! Time comes in: the turn takes `now` as a parameter and every deadline is measured
//! against it, and [`Reactor::next_deadline`] says when the loop next has something to
//! do. [`Reactor::run`] passes the real clock; a test passes a virtual one and never
//! sleeps.
//!
//! mio is edge-triggered: an event says readiness *changed*, and no new event comes
//! until the socket has been drained to `WouldBlock`. So each handler reads, writes or
//! accepts until `WouldBlock`, or, to be fair to other sockets, stops after a budget
//! and puts the socket on the ready-again list: once every socket with an event has
//! had its turn, the list is served (once more in the same turn; whatever is still
//! left then waits for the next turn, which polls with a zero timeout). A short read or short write also proves the kernel buffer was drained
//! or filled, which saves the extra syscall that would only return `WouldBlock`.
//!
//! The parts: `read.rs` and `write.rs` (the two data paths), `lifecycle.rs` (every
//! state a connection goes through), `accept.rs`, `timers.rs`, `handle.rs` (the way in
//! from other threads), `inherit.rs` (listeners handed over already open).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use crate::buffer::Buffer;
use crate::config::Config;
use crate::connection::{ConnId, ConnState, Flag, Millis};
use crate::context::Context;
use crate::endpoint::{
    bind_tcp, bind_udp, bind_unix, BoundAddr, Dial, DialError, EndpointId, EndpointKind, Endpoints,
    ListenAddr, Listener,
};
use crate::error::Error;
use crate::hub::{Hub, Limits, TimerEvent};
use crate::service::Service;
use crate::stats::{CloseReason, Stats};
use crate::udp::{UdpEndpoint, UdpId};

mod accept;
mod admin;
mod budget;
mod handle;
mod handover;
mod inherit;
mod lifecycle;
mod pool;
mod protocol;
mod read;
mod timers;
mod write;

pub(crate) use write::{set_writable_interest, GATHER};

pub use handle::{Handle, Job, PostError};
use handle::{Inbox, Shared};
use handover::{Dealt, Handover, KeptBecause};
pub use pool::{LoopInfo, Peers, Pool, Running, Spread};

/// Wakes the loop from another thread (jobs, shutdown).
const WAKER: Token = Token(0);
/// Listener `i` has token `LISTENER_BASE + i`.
const LISTENER_BASE: usize = 1;
/// Watched source `i` (see [`Reactor::watch`]) has token `WATCH_BASE + i`.
const WATCH_BASE: usize = 1 << 15;
/// UDP socket `i` has token `UDP_BASE + i`. Connection tokens are all >= 2^32.
const UDP_BASE: usize = 1 << 16;
/// Events taken from the kernel per `poll`.
const EVENTS_CAPACITY: usize = 1024;
/// Datagrams received per UDP socket per turn before others get a turn.
const DATAGRAM_BUDGET: usize = 64;
/// Jobs from other threads run per turn before the sockets get a turn.
const JOB_BUDGET: usize = 256;
/// Jobs run between two flushes of what they queued.
const JOBS_PER_FLUSH: usize = 32;
/// Pause before accepting again after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Rate limit for repeated warnings (max-conns rejections, accept failures).
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// A listener, its endpoint, and whether accepting on it is paused.
#[derive(Debug)]
struct ListenerSlot {
    listener: Listener,
    endpoint: EndpointId,
    /// Accepting paused after running out of file descriptors; a timer resumes it.
    paused: bool,
}

/// What [`Reactor::run`] gives back: the service, as the loop left it, and the final
/// counters.
#[derive(Debug)]
pub struct Stopped<S> {
    /// The service.
    pub service: S,
    /// The reactor's counters at the end.
    pub stats: Stats,
    /// True when the stop was forced ([`Handle::stop_now`]) rather than graceful.
    pub forced: bool,
}

/// The single-threaded server: sockets, connections, timers and one [`Service`],
/// driven by one `mio::Poll`. See the module docs for the shape of a turn.
pub struct Reactor<S: Service> {
    poll: Poll,
    /// Taken out for the duration of a turn (the handlers borrow the reactor).
    events: Option<Events>,
    hub: Hub<S>,
    /// Stream endpoints and their codecs.
    endpoints: Endpoints<S::Codec>,
    listeners: Vec<ListenerSlot>,
    /// Outside sources the loop watches (e.g. a signal pipe), each with its handler.
    watched: Vec<Box<dyn FnMut()>>,
    service: S,
    /// The loop's shared read buffer: reads land here (all but the ends of large
    /// frames left partial by a slow peer), so idle connections need no buffer of
    /// their own.
    scratch: Buffer,
    pub(crate) config: Config,
    bound: Vec<BoundAddr>,
    shared: Arc<Shared>,
    inbox: Inbox<S>,
    /// Connections handed over by another loop of a pool, and, on a pool's accepting
    /// loop, the loops to deal accepted connections to.
    handover: Handover,
    /// `on_start` has run.
    started: bool,
    /// Set once shutdown has begun: the time by which everything must be closed.
    shutdown_deadline: Option<Instant>,
    /// When each rate-limited warning was last logged.
    last_reject_warning: Option<Instant>,
    last_accept_warning: Option<Instant>,
    /// Warnings about resets for the memory budget.
    budget_warning: crate::throttle::Throttle,
    /// The admin endpoint (`Config::admin`), when it is on.
    admin: Option<Box<admin::Admin>>,
    /// A pool with an admin endpoint: publish the counters after every turn.
    publish_counters: bool,
    /// Something looks at every turn when it ends (the admin endpoint's histograms, the
    /// counters a pool's loop 0 adds up): one test per turn for both, off the common
    /// path.
    observe_turns: bool,
    /// On a pool's loop 0 with an admin endpoint: every loop's published counters.
    pool_counters: Vec<Arc<Shared>>,
    /// Which loop of a pool this is, said before each of its own log lines (nothing
    /// for a reactor alone).
    label: LoopLabel,
    /// `listening on` lines of endpoints opened before the loop started: logged when
    /// it starts, so that a server whose later endpoint (or setup) fails to bind has
    /// not claimed to be listening first.
    unannounced: Vec<String>,
}

/// Which loop of a pool a reactor is, as its log lines begin: `loop 1 of 2: `.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LoopLabel(Option<(usize, usize)>);

impl LoopLabel {
    /// Loop `index` (from 0, as the pool numbers its loops) of `count`.
    pub(crate) fn of(index: usize, count: usize) -> LoopLabel {
        LoopLabel(Some((index, count)))
    }
}

impl std::fmt::Display for LoopLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some((index, count)) => write!(f, "loop {index} of {count}: "),
            None => Ok(()),
        }
    }
}

impl<S: Service> std::fmt::Debug for Reactor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("endpoints", &self.bound)
            .field("connections", &self.hub.conns.len())
            .finish()
    }
}

impl<S: Service> Reactor<S> {
    /// Validates `config`, binds every endpoint it lists (each framed by `codec`) and
    /// registers it with a new `Poll`. `codec` also frames dialled connections unless a
    /// dial names another endpoint. Logs one line per endpoint with its real address
    /// when the loop starts (an endpoint added later is logged then, so nothing is
    /// said to be listening before everything is bound).
    pub fn bind(config: Config, service: S, codec: S::Codec) -> Result<Self, Error>
    where
        S::Codec: Clone,
    {
        Reactor::bind_as(config, service, codec, Listen::Bind, LoopLabel::default())
    }

    /// [`Reactor::bind`], with the stream listeners either bound, or (on a loop of a
    /// pool that is handed its connections) only mirrored as endpoints; `label` says
    /// which loop of a pool it is in the log.
    pub(crate) fn bind_as(
        config: Config,
        service: S,
        codec: S::Codec,
        listen: Listen<'_>,
        label: LoopLabel,
    ) -> Result<Self, Error>
    where
        S::Codec: Clone,
    {
        config.validate()?;
        let poll = Poll::new().map_err(Error::Poll)?;
        let registry = poll.registry().try_clone().map_err(Error::Poll)?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(Error::Poll)?;
        let limits = Limits {
            write_limit: config.write_limit,
            low_water: config.low_water_mark(),
            idle_timeout_millis: config
                .idle_timeout
                .filter(|d| !d.is_zero())
                .map(|d| d.as_millis().max(1) as Millis),
            frame_timeout: config.frame_timeout.filter(|d| !d.is_zero()),
            admin_timeout: config.admin_timeout,
            connect_timeout: config.connect_timeout,
            send_timeout: config.send_timeout.filter(|d| !d.is_zero()),
            memory_budget_kib: config.memory_budget.map(|b| (b as u64).div_ceil(1024)),
        };
        let (sender, receiver) = mpsc::sync_channel(config.inbox_capacity);
        let mut reactor = Reactor {
            hub: Hub::new(registry, limits),
            endpoints: Endpoints {
                list: Vec::new(),
                default_codec: codec.clone(),
                default_outbound: EndpointId(0),
            },
            events: Some(Events::with_capacity(EVENTS_CAPACITY)),
            listeners: Vec::new(),
            watched: Vec::new(),
            service,
            scratch: Buffer::with_zeroed_capacity(read::shared_buffer_size(
                config.read_buffer_size,
            )),
            bound: Vec::new(),
            shared: Arc::new(Shared {
                wake_pending: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                stop_now: AtomicBool::new(false),
                counters: std::sync::Mutex::new(Stats::default()),
                waker,
            }),
            inbox: Inbox { receiver, sender },
            // Only a loop that is dealt connections needs room for them (a bounded
            // channel allocates its capacity up front).
            handover: Handover::new(match listen {
                Listen::Mirror(_) => config.backlog.max(1) as usize,
                Listen::Bind => 0,
            }),
            started: false,
            shutdown_deadline: None,
            last_reject_warning: None,
            last_accept_warning: None,
            budget_warning: crate::throttle::Throttle::new(budget::WARN_EVERY),
            admin: None,
            publish_counters: false,
            observe_turns: false,
            pool_counters: Vec::new(),
            label,
            unannounced: Vec::new(),
            poll,
            config,
        };
        match listen {
            Listen::Bind => reactor.bind_endpoints(&codec)?,
            Listen::Mirror(listeners) => reactor.mirror_endpoints(listeners, &codec)?,
        }
        reactor.endpoints.default_outbound = reactor.outbound(codec);
        reactor.open_admin()?;
        if let Some(interval) = reactor.config.stats_interval.filter(|d| !d.is_zero()) {
            reactor
                .hub
                .timers
                .insert(Instant::now() + interval, TimerEvent::StatsReport);
        }
        Ok(reactor)
    }

    fn bind_endpoints(&mut self, codec: &S::Codec) -> Result<(), Error>
    where
        S::Codec: Clone,
    {
        for addr in self.config.tcp.clone() {
            self.listen(ListenAddr::Tcp(addr), codec.clone())?;
        }
        for path in self.config.unix.clone() {
            self.listen(ListenAddr::Unix(path), codec.clone())?;
        }
        #[cfg(feature = "tls")]
        for addr in self.config.tls_tcp.clone() {
            let endpoint = self.listen_noted(ListenAddr::Tcp(addr), codec.clone(), " (TLS)")?;
            self.serve_config_tls(endpoint);
        }
        for addr in self.config.udp.clone() {
            self.bind_udp(addr)?;
        }
        Ok(())
    }

    /// Serves a TLS listener of the configuration with its certificate.
    #[cfg(feature = "tls")]
    fn serve_config_tls(&mut self, endpoint: EndpointId) {
        if let Some(tls) = self.config.tls.clone() {
            self.serve_tls(endpoint, tls);
        }
    }

    /// Serves the connections accepted on `endpoint` over TLS from now on (feature
    /// `tls`): the reactor reads ciphertext, its codec and service see plaintext. Call it
    /// on every loop that accepts on the endpoint.
    #[cfg(feature = "tls")]
    pub fn serve_tls(&mut self, endpoint: EndpointId, tls: crate::tls::TlsServer) {
        if let Some(entry) = self.endpoints.list.get_mut(endpoint.index()) {
            entry.tls = Some(tls);
        }
    }

    /// Numbers the stream endpoints as the accepting loop of a pool numbers its
    /// listeners, without opening them: the connections it hands over arrive with its
    /// endpoint ids. Binds the UDP sockets of the configuration.
    fn mirror_endpoints(&mut self, listeners: &[BoundAddr], codec: &S::Codec) -> Result<(), Error>
    where
        S::Codec: Clone,
    {
        for bound in listeners {
            self.endpoints
                .add(EndpointKind::Listener(bound.clone()), codec.clone());
        }
        // The configuration's TLS listeners come after its plain ones, here as there.
        #[cfg(feature = "tls")]
        {
            let first = self.config.tcp.len() + self.config.unix.len();
            for index in first..first + self.config.tls_tcp.len() {
                self.serve_config_tls(EndpointId(index as u16));
            }
        }
        for addr in self.config.udp.clone() {
            self.bind_udp(addr)?;
        }
        Ok(())
    }

    /// Opens one more stream listener, framed by `codec`: one reactor can serve length
    /// frames on one port and lines on another. Returns the endpoint the service will
    /// see in [`crate::Origin::Accepted`].
    pub fn listen(&mut self, addr: ListenAddr, codec: S::Codec) -> Result<EndpointId, Error> {
        self.listen_noted(addr, codec, "")
    }

    /// [`Reactor::listen`], announced with `note` after the address.
    fn listen_noted(
        &mut self,
        addr: ListenAddr,
        codec: S::Codec,
        note: &str,
    ) -> Result<EndpointId, Error> {
        let bind_error = |endpoint: String| move |source| Error::Bind { endpoint, source };
        let (listener, bound) = match addr {
            ListenAddr::Tcp(addr) => {
                let listener = bind_tcp(addr, self.config.backlog, self.config.reuse_port)
                    .map_err(bind_error(format!("tcp {addr}")))?;
                let local = listener
                    .local_addr()
                    .map_err(bind_error(format!("tcp {addr}")))?;
                (Listener::Tcp(listener), BoundAddr::Tcp(local))
            }
            ListenAddr::Unix(path) => {
                let listener =
                    bind_unix(&path).map_err(bind_error(format!("unix {}", path.display())))?;
                let bound = BoundAddr::Unix(path.clone());
                (Listener::Unix(listener, Some(path)), bound)
            }
        };
        self.serve_listener(listener, bound, codec, note)
    }

    /// Makes an open listener a new endpoint framed by `codec`, registers it, and
    /// announces it (`listening on ADDR` followed by `note`).
    fn serve_listener(
        &mut self,
        listener: Listener,
        bound: BoundAddr,
        codec: S::Codec,
        note: &str,
    ) -> Result<EndpointId, Error> {
        let endpoint = self
            .endpoints
            .add(EndpointKind::Listener(bound.clone()), codec);
        self.add_listener(listener, endpoint)?;
        self.announce(bound, note);
        Ok(endpoint)
    }

    /// Adds an outbound endpoint framed by `codec`, for dials that speak another
    /// protocol than the reactor's default ([`Dial::endpoint`]).
    pub fn outbound(&mut self, codec: S::Codec) -> EndpointId {
        self.endpoints.add(EndpointKind::Outbound, codec)
    }

    /// The endpoint dials go through unless they name another.
    pub fn default_outbound(&self) -> EndpointId {
        self.endpoints.default_outbound
    }

    /// Opens one more UDP socket, served like those in [`Config::udp`]; the service
    /// sends from it with the returned id.
    pub fn bind_udp(&mut self, addr: std::net::SocketAddr) -> Result<UdpId, Error> {
        let bind_error = |source| Error::Bind {
            endpoint: format!("udp {addr}"),
            source,
        };
        let mut socket = bind_udp(addr, self.config.reuse_port).map_err(bind_error)?;
        let local = socket.local_addr().map_err(bind_error)?;
        let index = self.hub.udp.len();
        let token = Token(UDP_BASE + index);
        self.poll
            .registry()
            .register(&mut socket, token, Interest::READABLE)
            .map_err(Error::Poll)?;
        self.hub.udp.push(UdpEndpoint::new(socket, token));
        self.announce(BoundAddr::Udp(local), "");
        Ok(UdpId(index))
    }

    fn add_listener(&mut self, mut listener: Listener, endpoint: EndpointId) -> Result<(), Error> {
        let token = Token(LISTENER_BASE + self.listeners.len());
        self.poll
            .registry()
            .register(listener.source(), token, Interest::READABLE)
            .map_err(Error::Poll)?;
        self.listeners.push(ListenerSlot {
            listener,
            endpoint,
            paused: false,
        });
        Ok(())
    }

    /// Records an endpoint bound, and logs `listening on ADDR` followed by `note` (once
    /// the loop has started: see `unannounced`).
    fn announce(&mut self, bound: BoundAddr, note: &str) {
        let line = format!("{}listening on {bound}{note}", self.label);
        if self.started {
            log::info!("{line}");
        } else {
            self.unannounced.push(line);
        }
        self.bound.push(bound);
    }

    /// Dials an outbound connection before the loop runs (a client), exactly as
    /// [`Context::connect`] does from a callback.
    pub fn connect(&mut self, dial: Dial, state: S::Conn) -> Result<ConnId, DialError<S::Conn>> {
        self.hub.set_now(Instant::now());
        self.hub.dial(dial, state, &self.endpoints)
    }

    /// Watches an outside event source from the loop's own thread: `on_ready` runs
    /// each time `source` becomes readable. Like every socket here the source is
    /// registered edge-triggered, so `on_ready` must drain it (read until `WouldBlock`)
    /// or it will not be called again.
    ///
    /// The `switchboard` binary watches its signal pipe this way, so the process runs
    /// no thread besides the loop (and the C library skips the bookkeeping it does
    /// around every system call once a second thread exists).
    pub fn watch<Src>(
        &mut self,
        mut source: Src,
        mut on_ready: impl FnMut(&mut Src) + 'static,
    ) -> Result<(), Error>
    where
        Src: mio::event::Source + 'static,
    {
        if WATCH_BASE + self.watched.len() >= admin::ADMIN_BASE {
            return Err(Error::Poll(io::Error::other("too many watched sources")));
        }
        let token = Token(WATCH_BASE + self.watched.len());
        self.poll
            .registry()
            .register(&mut source, token, Interest::READABLE)
            .map_err(Error::Poll)?;
        self.watched.push(Box::new(move || on_ready(&mut source)));
        Ok(())
    }

    /// The endpoints bound, with their real addresses, in the order they were bound:
    /// the configured TCP, Unix and UDP ones, then any added with [`Reactor::listen`]
    /// or [`Reactor::bind_udp`].
    pub fn endpoints(&self) -> &[BoundAddr] {
        &self.bound
    }

    /// Each listener's endpoint and address, in the order they were opened (the
    /// configured TCP listeners, then the Unix ones, then any added with
    /// [`Reactor::listen`]).
    pub fn listener_endpoints(&self) -> Vec<(EndpointId, BoundAddr)> {
        self.endpoints
            .list
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.kind {
                EndpointKind::Listener(addr) => Some((EndpointId(i as u16), addr.clone())),
                EndpointKind::Outbound => None,
            })
            .collect()
    }

    /// A handle that reaches the reactor from another thread.
    pub fn handle(&self) -> Handle<S> {
        Handle {
            shared: Arc::clone(&self.shared),
            inbox: self.inbox.sender.clone(),
            handover: self.handover.sender.clone(),
        }
    }

    /// The service, between turns.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The service, mutably, between turns.
    pub fn service_mut(&mut self) -> &mut S {
        &mut self.service
    }

    /// The reactor's counters so far.
    pub fn stats(&self) -> &Stats {
        &self.hub.stats
    }

    /// Runs the loop on the real clock until it is shut down ([`Handle::shutdown`],
    /// [`Context::shutdown`], or a signal with `Reactor::stop_on_signals`, feature
    /// `signals`) and the shutdown completes. Returns the service and the final
    /// counters, which are also logged.
    pub fn run(mut self) -> Result<Stopped<S>, Error> {
        // A local, not the field: the handlers borrow the reactor while the turn walks
        // the events.
        let mut events = self
            .events
            .take()
            .unwrap_or_else(|| Events::with_capacity(EVENTS_CAPACITY));
        while !self.is_finished() {
            let wait = self.poll_timeout();
            self.turn_with(&mut events, wait, Instant::now)?;
        }
        Ok(self.finish())
    }

    /// One turn of the loop: waits up to `wait` for readiness (`None`: until something
    /// happens), then handles what happened at time `now`. Timers and timeouts follow
    /// `now`, whatever the real clock says, so a test drives a virtual clock with
    /// `turn(t0 + 301 s, Some(Duration::ZERO))` instead of sleeping 301 seconds.
    pub fn turn(&mut self, now: Instant, wait: Option<Duration>) -> Result<(), Error> {
        let Some(mut events) = self.events.take() else {
            return Ok(());
        };
        let turned = self.turn_with(&mut events, wait, || now);
        self.events = Some(events);
        turned
    }

    /// Polls into `events` for `wait`, then serves the turn at the time `clock` gives
    /// after the wait.
    #[inline(always)]
    fn turn_with(
        &mut self,
        events: &mut Events,
        wait: Option<Duration>,
        clock: impl FnOnce() -> Instant,
    ) -> Result<(), Error> {
        log::trace!("poll: timeout {}", describe_timeout(wait));
        match self.poll.poll(events, wait) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Poll(e)),
            Ok(()) => {}
        }
        self.hub.set_now(clock());
        if !self.started {
            self.start();
        }
        // Taken before this turn's events, so that what a budget leaves over now waits
        // for the next turn instead of being served again in this one.
        // (Checked first: the list is nearly always empty, and taking it costs more.)
        let left_over =
            (!self.hub.ready_again.is_empty()).then(|| std::mem::take(&mut self.hub.ready_again));
        self.dispatch_events(events);
        if let Some(left_over) = left_over {
            self.serve_ready_again(left_over);
        }
        self.fire_timers();
        if self.hub.udp_burst_pending {
            self.send_udp_bursts();
        }
        if self.hub.stop_requested && self.shutdown_deadline.is_none() {
            self.begin_shutdown();
        }
        if self.observe_turns {
            self.observe_turn(events);
        }
        Ok(())
    }

    /// True once a shutdown has begun and every connection is closed (or the grace
    /// period is over): [`Reactor::finish`] may be called.
    pub fn is_finished(&self) -> bool {
        match self.shutdown_deadline {
            Some(deadline) => self.hub.conns.is_empty() || self.hub.now >= deadline,
            None => false,
        }
    }

    /// Closes whatever is still open, logs the summary and gives the service back.
    pub fn finish(mut self) -> Stopped<S> {
        self.finish_shutdown();
        Stopped {
            forced: self.shared.stop_now.load(Ordering::SeqCst),
            service: self.service,
            stats: self.hub.stats,
        }
    }

    /// When the loop next has timed work to do, if ever: the earliest timer or idle
    /// deadline (or the current turn's time, if work is left over from it).
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.poll_timeout().map(|wait| self.hub.now + wait)
    }

    /// Logs the endpoints bound so far and calls `on_start`, once, before the first
    /// events are handled.
    fn start(&mut self) {
        self.started = true;
        for line in std::mem::take(&mut self.unannounced) {
            log::info!("{line}");
        }
        self.service
            .on_start(&mut Context::new(&mut self.hub, &self.endpoints));
        self.carry_out_requests();
    }

    /// How long `poll` may block: not at all if work is left over, else until the
    /// next deadline (a timer, or the quietest connection becoming idle), else for ever.
    fn poll_timeout(&mut self) -> Option<Duration> {
        if !self.hub.ready_again.is_empty() || !self.started {
            return Some(Duration::ZERO);
        }
        // Measured from the start of this turn: reading the clock again costs more
        // than the turn's few microseconds of lateness. In whole milliseconds, the
        // unit of both kinds of deadline and of epoll's timeout.
        let timer = self.hub.timers.poll_timeout_millis(self.hub.now);
        let now_millis = self.hub.now_millis();
        let idle = self
            .hub
            .next_idle_deadline()
            .map(|deadline| deadline.saturating_sub(now_millis));
        let wait = match (timer, idle) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        Some(Duration::from_millis(wait))
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
            } else if event.token.0 >= admin::ADMIN_BASE {
                self.admin_event(event.token.0);
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

    /// The waker fired: another thread posted jobs, or asked the loop to stop. The
    /// stop flag is only looked at here, not every turn: a handle always sets it before
    /// it wakes the loop.
    fn woken(&mut self) {
        self.take_handed_over();
        self.run_jobs();
        if self.shared.stop.load(Ordering::SeqCst) && self.shutdown_deadline.is_none() {
            self.begin_shutdown();
        }
        if self.shared.stop_now.load(Ordering::SeqCst) {
            // Let `is_finished` see the grace period as over.
            self.shutdown_deadline = Some(self.hub.now);
        }
    }

    /// Registers the connections another loop of the pool handed over, up to the accept
    /// budget (the rest next turn).
    fn take_handed_over(&mut self) {
        for _ in 0..self.config.accept_budget {
            let Ok(arrival) = self.handover.receiver.try_recv() else {
                return;
            };
            if self.shutdown_deadline.is_some() {
                continue; // shutting down: closed, like a connection not yet accepted
            }
            self.register_connection(arrival.stream, arrival.endpoint);
        }
        self.hub.ready_again.push(WAKER);
    }

    /// Runs the jobs other threads posted, up to the budget (the rest next turn).
    ///
    /// What the jobs queue is carried out after every [`JOBS_PER_FLUSH`] of them rather
    /// than after each: jobs that each send to the same connections (another loop's
    /// room events, say) then leave in one write per connection, as the frames of one
    /// read do.
    fn run_jobs(&mut self) {
        // Cleared before the inbox is read: a post from now on wakes the loop again.
        self.shared.wake_pending.store(false, Ordering::SeqCst);
        for done in 1..=JOB_BUDGET {
            let Ok(job) = self.inbox.receiver.try_recv() else {
                self.carry_out_requests();
                return;
            };
            job(
                &mut self.service,
                &mut Context::new(&mut self.hub, &self.endpoints),
            );
            if done % JOBS_PER_FLUSH == 0 {
                self.carry_out_requests();
            }
        }
        self.carry_out_requests();
        self.hub.ready_again.push(WAKER);
    }

    fn connection_event(&mut self, id: ConnId, readable: bool, writable: bool, read_closed: bool) {
        // An event for a connection that closed earlier in this batch finds nothing:
        // both handlers look the id up, and its generation tells a newcomer in the
        // same slot apart.
        if writable {
            match self.hub.conn(id).map(|c| c.state) {
                Some(ConnState::Connecting) => {
                    if !self.connect_event(id) {
                        return;
                    }
                }
                Some(_) => {
                    self.hub.flush(id);
                    // A flush that drained a congested queue owes the service its
                    // on_drained before the input this same event brings is read: the
                    // frames read next (and what the service sends for them) come after.
                    if !self.hub.drained.is_empty() {
                        self.carry_out_requests();
                    }
                }
                None => return,
            }
        }
        // (A connect's outcome comes as writable, or as an error, which counts as
        // writable too; the read path checks once more, off its hot path.)
        if readable {
            if read_closed {
                if let Some(conn) = self.hub.conn_mut(id) {
                    conn.flags.set(Flag::FinReported, true);
                }
            }
            self.read_connection(id, read_closed);
        }
    }

    /// A dial's socket said it is writable: the connect's outcome. True when the
    /// connection is now open, so a readable event that came with it is read on: what
    /// the peer sent at once (a server that speaks first, or one that is not speaking
    /// TLS to a TLS dial) came with this event, and edge-triggered readiness will not
    /// report it again.
    #[cold]
    fn connect_event(&mut self, id: ConnId) -> bool {
        self.complete_connect(id);
        let state = self.hub.conn(id).map(|c| c.state);
        matches!(state, Some(state) if state != ConnState::Connecting)
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
                    let mut ctx = Context::new(&mut self.hub, &self.endpoints);
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

    /// Closes the connections that callbacks (or errors) asked to close, flushes the
    /// ones they queued output for, and tells the service of drained queues, until
    /// nothing is left. Closes come first: output queued for a connection closed with
    /// `CloseMode::Now` is discarded, not written.
    #[inline(always)]
    fn carry_out_requests(&mut self) {
        let hub = &self.hub;
        if hub.to_close.is_empty()
            && hub.to_flush.is_empty()
            && hub.drained.is_empty()
            && !hub.over_budget
        {
            return;
        }
        self.carry_out_pending();
    }

    #[inline(never)]
    fn carry_out_pending(&mut self) {
        loop {
            if self.hub.over_budget {
                self.enforce_memory_budget();
            }
            if let Some((id, reason)) = self.hub.to_close.pop() {
                self.close_connection(id, reason);
            } else if let Some(id) = self.hub.to_flush.pop() {
                if self
                    .hub
                    .conn(id)
                    .is_some_and(|c| c.flags.get(Flag::WritableArmed))
                {
                    // The socket is full and WRITABLE is armed: a write now would only
                    // hear WouldBlock; the writable event will flush.
                    if let Some(conn) = self.hub.conn_mut(id) {
                        conn.flags.set(Flag::QueuedFlush, false);
                    }
                    continue;
                }
                self.hub.flush(id);
            } else if let Some(id) = self.hub.drained.pop() {
                self.drained(id);
            } else {
                return;
            }
        }
    }

    /// Tells the service that `id`'s output drained to the low-water mark.
    fn drained(&mut self, id: ConnId) {
        let Some(slot) = self.hub.slot_mut(id) else {
            return;
        };
        let mut state = std::mem::take(&mut slot.state);
        log::trace!("{id}: output drained to the low-water mark");
        let ctx = &mut Context::new(&mut self.hub, &self.endpoints).lending(id);
        self.service.on_drained(ctx, id, &mut state);
        self.give_back_state(id, state);
    }

    /// Serves sockets whose readiness a budget left unused in the last turn.
    fn serve_ready_again(&mut self, tokens: Vec<Token>) {
        for token in tokens {
            if let Some(id) = ConnId::from_token(token) {
                let Some(conn) = self.hub.conn_mut(id) else {
                    continue;
                };
                conn.flags.set(Flag::QueuedAgain, false);
                let read_to_eof = conn.flags.get(Flag::FinReported);
                self.read_connection(id, read_to_eof);
            } else if token == WAKER {
                self.woken();
            } else if token.0 >= UDP_BASE {
                self.receive_datagrams(token.0 - UDP_BASE);
            } else if token.0 >= admin::ADMIN_BASE {
                self.admin_event(token.0);
            } else if token.0 >= LISTENER_BASE {
                self.accept(token.0 - LISTENER_BASE);
            }
            self.carry_out_requests();
        }
    }

    /// The end of a turn, for those who watch turns: the admin endpoint counts it in its
    /// histograms; in a pool with an admin endpoint, the counters are copied where
    /// loop 0 reads them.
    #[cold]
    #[inline(never)]
    fn observe_turn(&mut self, events: &Events) {
        if self.publish_counters {
            if let Ok(mut published) = self.shared.counters.lock() {
                published.clone_from(&self.hub.stats);
            }
        }
        if self.admin.is_some() {
            self.record_turn(events);
        }
    }

    /// Stops accepting, answers what the connections have already sent, lets the
    /// service say goodbye, and has every connection drain its output and close.
    ///
    /// The listeners close first: on a socket inherited from a service manager, the
    /// connections still in its backlog then wait there for the next server instead of
    /// being accepted only to be closed. Then every connection is read once (see
    /// [`Reactor::read_before_closing`]): a request that reached the server before it
    /// began to shut down is answered, not thrown away. `on_stop` comes after that
    /// read, so no frame reaches the service after its goodbye.
    fn begin_shutdown(&mut self) {
        log::info!(
            "{}shutting down: {} connections to drain (at most {:?})",
            self.label,
            self.hub.conns.len(),
            self.config.shutdown_grace
        );
        for slot in &mut self.listeners {
            let _ = self.poll.registry().deregister(slot.listener.source());
        }
        self.listeners.clear();
        self.close_admin();
        let deadline = self.hub.now + self.config.shutdown_grace;
        self.shutdown_deadline = Some(deadline);
        self.hub
            .timers
            .insert(deadline, TimerEvent::ShutdownDeadline);
        for id in self.hub.conn_ids() {
            self.read_before_closing(id);
        }
        self.service
            .on_stop(&mut Context::new(&mut self.hub, &self.endpoints));
        self.carry_out_requests();
        for id in self.hub.conn_ids() {
            self.hub.close_after_flush(id, CloseReason::Shutdown);
        }
        self.carry_out_requests();
    }

    /// Closes whatever the grace period did not drain, and logs the summary.
    fn finish_shutdown(&mut self) {
        let ids = self.hub.conn_ids();
        if !ids.is_empty() {
            log::warn!(
                "{}{} connections still had output queued at the deadline",
                self.label,
                ids.len()
            );
        }
        for id in ids {
            self.close_connection(id, CloseReason::Shutdown);
        }
        self.hub.to_close.clear();
        self.send_udp_bursts();
        for endpoint in &mut self.hub.udp {
            endpoint.flush(&self.hub.registry, &mut self.hub.stats);
        }
        log::info!("{}served: {}", self.label, self.hub.stats);
    }
}

/// How a reactor comes by its stream listeners.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Listen<'a> {
    /// Binds those of its configuration.
    Bind,
    /// Binds none: numbers endpoints after these listeners of another loop, which
    /// hands it their connections.
    Mirror(&'a [BoundAddr]),
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
            None if self.token.0 >= admin::ADMIN_BASE => {
                format!("admin {}", self.token.0 - admin::ADMIN_BASE)
            }
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
