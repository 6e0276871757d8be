//! N loops on N threads: [`Pool`]. Each loop is a whole [`Reactor`] of its own (its
//! `Poll`, slab, buffers, timers and service instance), and nothing is shared on the
//! per-message path; loops reach each other only through their [`Handle`]s (a bounded
//! inbox and a waker each). The single loop stays the reference: a pool of one is a
//! reactor on a thread, and `switchboard --threads 1` runs no pool at all.
//!
//! ```text
//!   Spread::ReusePort (default)            Spread::Handoff
//!   kernel: one SO_REUSEPORT listener       loop 0: the only listener; accepts, deals
//!   per loop, spread by a hash of the       round robin: own turn -> keeps it; else
//!   4-tuple                                 handover queue of loop i + its waker
//!     |        |        |                     |          |           |
//!   loop 0   loop 1   loop N-1              loop 0     loop 1  ...  loop N-1
//!   UDP: one SO_REUSEPORT socket per loop (both ways), spread by source address
//! ```
//!
//! Ending: a graceful shutdown ([`Handle::shutdown`] on each loop, or SIGINT/SIGTERM
//! with [`Pool::stop_on_signals`]) drains every loop. A loop that ends for any reason
//! shuts the others down too, so a pool never runs on with a loop missing; one that
//! panics stops them at once, and [`Running::wait`] returns [`Error::LoopPanicked`]
//! (with `panic = "abort"`, as in the `dist` profile, the process ends at the panic).
//!
//! Limits that are about the whole process are divided between the loops: the memory
//! budget and `max_conns` each loop enforces are the configured ones over N (rounded
//! up). Unix-domain listeners cannot be shared with SO_REUSEPORT: with
//! [`Spread::ReusePort`] only loop 0 listens on them.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};

use super::handover::Recipient;
use super::{Handle, Listen, LoopLabel, Reactor, Stopped};
use crate::config::Config;
use crate::endpoint::BoundAddr;
use crate::error::Error;
use crate::service::Service;

/// How a pool spreads connections over its loops. docs/scaling.md compares the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spread {
    /// One SO_REUSEPORT listener per loop: the kernel picks a loop for each connection
    /// by a hash of its addresses. Nothing is handed between threads, but a few
    /// clients can land unevenly, and a loop's backlog goes with its listener.
    #[default]
    ReusePort,
    /// Loop 0 alone listens and deals accepted connections round robin to every loop
    /// (exactly even), at the cost of a queue push and a wake-up per connection.
    Handoff,
}

impl std::str::FromStr for Spread {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reuseport" => Ok(Spread::ReusePort),
            "handoff" => Ok(Spread::Handoff),
            _ => Err(format!("'{s}' is not a spread: reuseport or handoff")),
        }
    }
}

/// The handles of every loop of a pool, in order, for services that talk to the other
/// loops. Filled in once every loop has bound, before any of them runs.
pub struct Peers<S: Service> {
    handles: Arc<OnceLock<Vec<Handle<S>>>>,
}

impl<S: Service> Clone for Peers<S> {
    fn clone(&self) -> Self {
        Peers {
            handles: Arc::clone(&self.handles),
        }
    }
}

impl<S: Service> std::fmt::Debug for Peers<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Peers({} loops)", self.all().len())
    }
}

impl<S: Service> Peers<S> {
    /// Peers of a lone reactor: none.
    pub fn none() -> Self {
        Peers {
            handles: Arc::new(OnceLock::new()),
        }
    }

    /// Every loop's handle, this loop's included (empty until the pool runs).
    pub fn all(&self) -> &[Handle<S>] {
        self.handles.get().map_or(&[], Vec::as_slice)
    }
}

/// What a loop's service is told when the pool makes it.
#[derive(Debug)]
pub struct LoopInfo<S: Service> {
    /// This loop, from 0.
    pub index: usize,
    /// How many loops the pool has.
    pub count: usize,
    /// Every loop's handle, once the pool runs.
    pub peers: Peers<S>,
}

/// N reactors on N threads serving one configuration. See the module docs.
///
/// ```no_run
/// use switchboard::{services::Echo, Config, LengthCodec, Pool};
/// let mut config = Config::default();
/// config.tcp.push("127.0.0.1:9000".parse().unwrap());
/// let running = Pool::new(config, 2)
///     .start(LengthCodec::new(1 << 20), |_loop| Echo::default(), |stopped| stopped.stats)
///     .unwrap();
/// println!("serving on {:?}", running.endpoints());
/// let per_loop = running.wait().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Pool {
    config: Config,
    threads: usize,
    spread: Spread,
    signals: bool,
}

/// A pool whose loops are running.
#[derive(Debug)]
pub struct Running<S: Service, R> {
    threads: Vec<JoinHandle<Result<R, Error>>>,
    handles: Vec<Handle<S>>,
    endpoints: Vec<BoundAddr>,
}

/// What a loop thread tells the pool once it has bound (or failed to).
struct Bound<S: Service> {
    /// Which loop.
    index: usize,
    handle: Handle<S>,
    /// Every endpoint, with its real address.
    endpoints: Vec<BoundAddr>,
    /// The stream listeners, in endpoint order.
    listeners: Vec<BoundAddr>,
}

/// The pool's word to a bound loop.
enum Go<S: Service> {
    /// Run: with the loops to deal accepted connections to (the accepting loop of
    /// [`Spread::Handoff`]), and the loops to stop on signals (loop 0 watches them).
    Run {
        deal_to: Option<Vec<Option<Recipient>>>,
        signals_for: Option<Vec<Handle<S>>>,
        /// With an admin endpoint: every loop publishes its counters, and loop 0 is
        /// given the loops whose counters its `/metrics` adds up.
        counters: Option<Vec<Handle<S>>>,
    },
    /// Another loop failed to bind: stop.
    Abort,
}

impl Pool {
    /// A pool of `threads` loops (at least one) serving `config`.
    pub fn new(config: Config, threads: usize) -> Pool {
        Pool {
            config,
            threads: threads.max(1),
            spread: Spread::default(),
            signals: false,
        }
    }

    /// How connections are spread over the loops.
    pub fn spread(mut self, spread: Spread) -> Pool {
        self.spread = spread;
        self
    }

    /// The first SIGINT or SIGTERM shuts every loop down gracefully, a second stops
    /// them at once (as [`Reactor::stop_on_signals`] does for one loop).
    #[cfg(feature = "signals")]
    pub fn stop_on_signals(mut self) -> Pool {
        self.signals = true;
        self
    }

    /// Starts the pool and waits for it to end: [`Pool::start`], then [`Running::wait`].
    pub fn run<S, R>(
        self,
        codec: S::Codec,
        make: impl Fn(LoopInfo<S>) -> S + Send + Sync + 'static,
        finish: impl Fn(Stopped<S>) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, Error>
    where
        S: Service + 'static,
        S::Codec: Clone + Send + 'static,
        R: Send + 'static,
    {
        self.start(codec, make, finish)?.wait()
    }

    /// Starts one thread per loop; each makes its service with `make` and binds. Loop 0
    /// binds first (so a port 0 becomes a real port the others then share); once
    /// every loop has bound, they all run. A bind failure anywhere stops them all and
    /// is returned. When a loop stops, `finish` turns what it gives back into the
    /// value [`Running::wait`] returns for it.
    pub fn start<S, R>(
        self,
        codec: S::Codec,
        make: impl Fn(LoopInfo<S>) -> S + Send + Sync + 'static,
        finish: impl Fn(Stopped<S>) -> R + Send + Sync + 'static,
    ) -> Result<Running<S, R>, Error>
    where
        S: Service + 'static,
        S::Codec: Clone + Send + 'static,
        R: Send + 'static,
    {
        self.start_with(codec, make, |_| Ok(()), finish)
    }

    /// [`Pool::start`], with `setup` run on each loop's reactor once it has bound and
    /// before it runs: to add endpoints ([`Reactor::outbound`], [`Reactor::listen`])
    /// and tell the service about them. An error from it stops the pool like a bind
    /// failure.
    pub fn start_with<S, R>(
        self,
        codec: S::Codec,
        make: impl Fn(LoopInfo<S>) -> S + Send + Sync + 'static,
        setup: impl Fn(&mut Reactor<S>) -> Result<(), Error> + Send + Sync + 'static,
        finish: impl Fn(Stopped<S>) -> R + Send + Sync + 'static,
    ) -> Result<Running<S, R>, Error>
    where
        S: Service + 'static,
        S::Codec: Clone + Send + 'static,
        R: Send + 'static,
    {
        self.config.validate()?;
        let make = Arc::new(make);
        let setup = Arc::new(setup);
        let finish = Arc::new(finish);
        let peers = Peers::<S>::none();
        let (bound_tx, bound_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(self.threads);
        let mut go = Vec::with_capacity(self.threads);
        let mut loops = Vec::with_capacity(self.threads);

        let leader_config = self.loop_config::<S>(None);
        let spawned = self.spawn_loop(
            0,
            leader_config,
            Vec::new(),
            &codec,
            (&make, &setup, &finish),
            &peers,
            &bound_tx,
        );
        let leader = match spawned {
            Ok((thread, go_tx)) => {
                threads.push(thread);
                go.push(go_tx);
                bound_rx.recv().unwrap_or(Err(Error::Thread(lost_thread())))
            }
            Err(e) => Err(e),
        };
        let leader = match leader {
            Ok(bound) => bound,
            Err(e) => return Err(abort(threads, go, e)),
        };
        for index in 1..self.threads {
            let config = self.loop_config(Some(&leader));
            let mirrored = match self.spread {
                Spread::Handoff => leader.listeners.clone(),
                Spread::ReusePort => Vec::new(),
            };
            match self.spawn_loop(
                index,
                config,
                mirrored,
                &codec,
                (&make, &setup, &finish),
                &peers,
                &bound_tx,
            ) {
                Ok((thread, go_tx)) => {
                    threads.push(thread);
                    go.push(go_tx);
                }
                Err(e) => return Err(abort(threads, go, e)),
            }
        }
        loops.push(leader);
        for _ in 1..self.threads {
            match bound_rx.recv().unwrap_or(Err(Error::Thread(lost_thread()))) {
                Ok(bound) => loops.push(bound),
                Err(e) => return Err(abort(threads, go, e)),
            }
        }
        // The reports of loops 1.. arrive in any order: put the handles in loop order.
        loops[1..].sort_by_key(|bound| bound.index);
        let handles: Vec<Handle<S>> = loops.iter().map(|b| b.handle.clone()).collect();
        let _ = peers.handles.set(handles.clone());
        for (index, go_tx) in go.iter().enumerate() {
            let deal_to =
                (index == 0 && self.spread == Spread::Handoff).then(|| recipients(&handles));
            let signals_for = (index == 0 && self.signals).then(|| handles.clone());
            let counters = self.config.admin.is_some().then(|| match index {
                0 => handles.clone(),
                _ => Vec::new(),
            });
            let _ = go_tx.send(Go::Run {
                deal_to,
                signals_for,
                counters,
            });
        }
        log::info!(
            "{} loops running, connections spread by {}",
            self.threads,
            match self.spread {
                Spread::ReusePort => "SO_REUSEPORT",
                Spread::Handoff => "handoff from loop 0",
            }
        );
        Ok(Running {
            threads,
            handles,
            endpoints: loops.swap_remove(0).endpoints,
        })
    }

    /// The configuration of one loop: the leader's (`leader` is `None`) binds what the
    /// pool was given; the others bind the leader's real addresses (port 0 resolved).
    fn loop_config<S: Service>(&self, leader: Option<&Bound<S>>) -> Config {
        let count = self.threads;
        let mut config = self.config.clone();
        config.reuse_port = count > 1 || config.reuse_port;
        config.max_conns = config.max_conns.div_ceil(count);
        config.memory_budget = config.memory_budget.map(|b| b.div_ceil(count));
        if let Some(leader) = leader {
            let (mut tcp, mut udp) = (Vec::new(), Vec::new());
            for bound in &leader.endpoints {
                match bound {
                    BoundAddr::Tcp(addr) => tcp.push(*addr),
                    BoundAddr::Udp(addr) => udp.push(*addr),
                    BoundAddr::Unix(_) => {}
                }
            }
            config.tcp = if self.spread == Spread::ReusePort {
                tcp
            } else {
                Vec::new()
            };
            config.udp = udp;
            config.unix = Vec::new();
            // Only loop 0 serves the admin endpoint (every loop's counters added up).
            config.admin = None;
        }
        config
    }

    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::type_complexity)]
    fn spawn_loop<S, R>(
        &self,
        index: usize,
        config: Config,
        mirrored: Vec<BoundAddr>,
        codec: &S::Codec,
        (make, setup, finish): (
            &Arc<impl Fn(LoopInfo<S>) -> S + Send + Sync + 'static>,
            &Arc<impl Fn(&mut Reactor<S>) -> Result<(), Error> + Send + Sync + 'static>,
            &Arc<impl Fn(Stopped<S>) -> R + Send + Sync + 'static>,
        ),
        peers: &Peers<S>,
        bound_tx: &Sender<Result<Bound<S>, Error>>,
    ) -> Result<(JoinHandle<Result<R, Error>>, Sender<Go<S>>), Error>
    where
        S: Service + 'static,
        S::Codec: Clone + Send + 'static,
        R: Send + 'static,
    {
        let (go_tx, go_rx) = mpsc::channel();
        let (codec, make, finish) = (codec.clone(), Arc::clone(make), Arc::clone(finish));
        let setup = Arc::clone(setup);
        let (peers, bound_tx, count) = (peers.clone(), bound_tx.clone(), self.threads);
        let thread = thread::Builder::new()
            .name(format!("loop-{index}"))
            .spawn(move || {
                let info = LoopInfo {
                    index,
                    count,
                    peers: peers.clone(),
                };
                let service = make(info);
                let listen = match index {
                    0 => Listen::Bind,
                    _ if mirrored.is_empty() => Listen::Bind,
                    _ => Listen::Mirror(&mirrored),
                };
                let label = LoopLabel::of(index, count);
                let bound = Reactor::bind_as(config, service, codec, listen, label)
                    .and_then(|mut reactor| setup(&mut reactor).map(|()| reactor));
                let reactor = match bound {
                    Ok(reactor) => reactor,
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return Err(Error::Thread(lost_thread()));
                    }
                };
                let bound = Bound {
                    index,
                    handle: reactor.handle(),
                    endpoints: reactor.endpoints().to_vec(),
                    listeners: reactor
                        .listener_endpoints()
                        .into_iter()
                        .map(|(_, addr)| addr)
                        .collect(),
                };
                let _ = bound_tx.send(Ok(bound));
                drop(bound_tx);
                run_loop(index, reactor, go_rx, &peers, &*finish)
            })
            .map_err(Error::Thread)?;
        Ok((thread, go_tx))
    }
}

/// The body of a loop thread once it has bound: waits for the word, runs, and on the
/// way out (normal or a panic) tells the other loops to end too.
fn run_loop<S: Service + 'static, R>(
    index: usize,
    mut reactor: Reactor<S>,
    go: Receiver<Go<S>>,
    peers: &Peers<S>,
    finish: &dyn Fn(Stopped<S>) -> R,
) -> Result<R, Error> {
    let (deal_to, signals_for, counters) = match go.recv() {
        Ok(Go::Run {
            deal_to,
            signals_for,
            counters,
        }) => (deal_to, signals_for, counters),
        Ok(Go::Abort) | Err(_) => return Err(Error::Thread(lost_thread())),
    };
    if let Some(loops) = counters {
        reactor.publish_counters = true;
        reactor.observe_turns = true;
        reactor.pool_counters = loops.iter().map(|h| Arc::clone(&h.shared)).collect();
    }
    if let Some(recipients) = deal_to {
        reactor.handover.deal_to(recipients);
    }
    if let Some(loops) = signals_for {
        watch_signals(&mut reactor, loops)?;
    }
    let alarm = EndAlarm { index, peers };
    let outcome = reactor.run().map(finish);
    drop(alarm);
    outcome
}

#[cfg(feature = "signals")]
fn watch_signals<S: Service + 'static>(
    reactor: &mut Reactor<S>,
    loops: Vec<Handle<S>>,
) -> Result<(), Error> {
    reactor.stop_loops_on_signals(loops)
}

#[cfg(not(feature = "signals"))]
fn watch_signals<S: Service + 'static>(
    _reactor: &mut Reactor<S>,
    _loops: Vec<Handle<S>>,
) -> Result<(), Error> {
    Ok(())
}

/// Ends the other loops when this one ends: gracefully after a normal end, at once
/// when it is dropped by a panic unwinding the loop's thread.
struct EndAlarm<'a, S: Service> {
    index: usize,
    peers: &'a Peers<S>,
}

impl<S: Service> Drop for EndAlarm<'_, S> {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        if panicking {
            log::error!("loop {} panicked: stopping every loop", self.index);
        }
        for (other, handle) in self.peers.all().iter().enumerate() {
            if other == self.index {
                continue;
            }
            if panicking {
                handle.stop_now();
            } else {
                handle.shutdown();
            }
        }
    }
}

/// Every loop but the first, as recipients of connections loop 0 deals.
fn recipients<S: Service>(handles: &[Handle<S>]) -> Vec<Option<Recipient>> {
    handles
        .iter()
        .enumerate()
        .map(|(index, handle)| {
            (index != 0).then(|| Recipient {
                queue: handle.handover.clone(),
                shared: Arc::clone(&handle.shared),
            })
        })
        .collect()
}

/// Tells every loop that bound to stop, joins them, and gives back `error`.
fn abort<R, S: Service>(
    threads: Vec<JoinHandle<Result<R, Error>>>,
    go: Vec<Sender<Go<S>>>,
    error: Error,
) -> Error {
    for go_tx in go {
        let _ = go_tx.send(Go::Abort);
    }
    for thread in threads {
        let _ = thread.join();
    }
    error
}

fn lost_thread() -> std::io::Error {
    std::io::Error::other("a loop's thread ended before it bound")
}

impl<S: Service, R> Running<S, R> {
    /// The endpoints with their real addresses (loop 0's: the others share them).
    pub fn endpoints(&self) -> &[BoundAddr] {
        &self.endpoints
    }

    /// Every loop's handle, in order.
    pub fn handles(&self) -> &[Handle<S>] {
        &self.handles
    }

    /// Shuts every loop down gracefully (the pool then ends: see [`Running::wait`]).
    pub fn shutdown(&self) {
        self.handles.iter().for_each(Handle::shutdown);
    }

    /// Waits for every loop to end, and returns what `finish` made of each, in loop
    /// order; or the first loop's panic, or its failure.
    pub fn wait(self) -> Result<Vec<R>, Error> {
        let mut results = Vec::with_capacity(self.threads.len());
        let mut failure = None;
        for (index, thread) in self.threads.into_iter().enumerate() {
            match thread.join() {
                Ok(Ok(result)) => results.push(result),
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(payload) => {
                    let message = panic_message(&payload);
                    log::error!("loop {index} panicked: {message}");
                    failure.get_or_insert(Error::LoopPanicked { index, message });
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(results),
        }
    }
}

/// What a panic said, from its payload.
fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}
