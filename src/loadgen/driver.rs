//! The run: one `mio::Poll` for every client socket, and the phases a run goes through.
//!
//! ```text
//!   connect ──> setup (until the workload is ready) ──> warm-up ──> measure ──> drain
//! ```
//!
//! Warm-up load is sent but not counted. The measured window ends after `duration`
//! (or, with a message budget, once every message is answered); then nothing new is
//! sent, and the drain phase waits a little for the replies still in flight, so that
//! they are checked too. Every phase has a deadline: a run always ends by itself.
//!
//! The workload (framed, raw, udp, chat) owns its sockets and is driven through the
//! [`Workload`] trait; idle connections are held here.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};

use super::chat::ChatWorkload;
use super::connect::{self, Opened};
use super::procstat::{CpuTime, ServerProcess};
use super::report::{Recorder, ServerUsage, Summary};
use super::stream::StreamWorkload;
use super::udp::UdpWorkload;
use super::{LoadError, Mode, Options};

/// Idle connection `i` has token `IDLE_BASE + i`; workload sockets have small tokens.
const IDLE_BASE: usize = 1 << 40;
/// Longest wait for replies still in flight when the window ends.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Longest wait for the workload's setup (chat: every member joined).
const SETUP_LIMIT: Duration = Duration::from_secs(60);
/// Pause before reading the server's memory once every connection is open.
const SETTLE: Duration = Duration::from_millis(300);
/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What the driver needs from a workload. Every method is called on the loop's thread
/// with the time of the current turn; none blocks.
pub trait Workload {
    /// Registers the workload's sockets with tokens equal to their indexes.
    fn register(&mut self, registry: &Registry) -> io::Result<()>;
    /// Sends whatever setup the workload needs before load.
    fn start(&mut self, _now: Instant, _rec: &mut Recorder) {}
    /// True once setup is complete.
    fn ready(&self) -> bool {
        true
    }
    /// Starts sending load.
    fn begin(&mut self, now: Instant, rec: &mut Recorder);
    /// A readiness event for the socket with this token.
    fn event(&mut self, token: usize, event: &Event, now: Instant, rec: &mut Recorder);
    /// Timed work (open-loop sends, loss checks); returns when it is next due.
    fn tick(&mut self, now: Instant, rec: &mut Recorder) -> Option<Instant>;
    /// Sends nothing new from now on.
    fn stop(&mut self);
    /// Messages sent and not yet answered.
    fn outstanding(&self) -> u64;
    /// Sockets still open.
    fn open(&self) -> usize;
    /// True when the message budget is used up.
    fn spent(&self) -> bool;
    /// Accounts for what is still unanswered at the end; returns how many of those
    /// are errors.
    fn finish(&mut self, rec: &mut Recorder) -> u64;
}

/// Runs the load the options describe and returns its summary.
///
/// Fails only when the run cannot be carried out (bad options, server unreachable, no
/// connection opened); errors found in the replies are in the summary
/// ([`Summary::failed`]).
pub fn run(options: &Options) -> Result<Summary, LoadError> {
    options.validate()?;
    connect::probe(options)?;
    let server = options.server_pid.map(ServerProcess::new);
    let rss_before = server.and_then(|s| s.memory_kib()).map_or(0, |m| m.0);
    let mut poll = Poll::new().map_err(LoadError::Io)?;
    let mut events = Events::with_capacity(1024);
    let tcp_conns = if options.uses_tcp() { options.conns } else { 0 };
    let opened = connect::open_all(&mut poll, &mut events, options, options.idle, tcp_conns)
        .map_err(LoadError::Io)?;
    check_opened(&opened, options.idle + tcp_conns)?;
    let connect_failures = opened.failures;
    let connected = if options.uses_tcp() {
        opened.active.len()
    } else {
        options.conns
    };
    let work = workload(options, opened.active)?;
    let mut run = Run::new(poll, events, options, work, opened.idle)?;
    run.setup()?;
    if server.is_some() {
        // Let the server accept what is still in its backlog before reading its memory.
        run.run_until(Instant::now() + SETTLE, "settle", |_| false);
    }
    let rss_connected = server.and_then(|s| s.memory_kib()).map_or(0, |m| m.0);
    let window = run.load(server);
    let mut summary = Summary::new(options, &run.rec, window.length);
    summary.connected = connected;
    summary.connect_failures = connect_failures;
    summary.unanswered = run.work.finish(&mut run.rec);
    summary.lost = run.rec.lost;
    summary.errors += summary.unanswered;
    summary.server = server.map(|s| ServerUsage {
        cpu_secs: window.server_cpu.user + window.server_cpu.system,
        user_cpu_secs: window.server_cpu.user,
        msgs_per_cpu_sec: summary.messages as f64
            / (window.server_cpu.user + window.server_cpu.system).max(1e-9),
        rss_before_kib: rss_before,
        rss_connected_kib: rss_connected,
        rss_end_kib: window.server_memory.0,
        hwm_kib: s.memory_kib().map_or(window.server_memory.1, |m| m.1),
    });
    Ok(summary)
}

/// Fails the run when not a single connection could be opened.
fn check_opened(opened: &Opened, attempted: usize) -> Result<(), LoadError> {
    if attempted > 0 && opened.active.is_empty() && opened.idle.is_empty() {
        let source = opened.first_failure.as_ref().map_or_else(
            || io::Error::other("unknown"),
            |e| io::Error::new(e.kind(), e.to_string()),
        );
        return Err(LoadError::NoConnections { attempted, source });
    }
    Ok(())
}

fn workload(options: &Options, streams: Vec<TcpStream>) -> Result<Box<dyn Workload>, LoadError> {
    Ok(match options.mode {
        Mode::Framed | Mode::Raw => Box::new(StreamWorkload::new(options, streams)),
        Mode::Udp => Box::new(UdpWorkload::new(options).map_err(LoadError::Io)?),
        Mode::Chat => Box::new(ChatWorkload::new(options, streams)),
    })
}

/// The measured window as seen from outside.
#[derive(Debug, Default)]
struct Window {
    length: Duration,
    /// Server CPU time used during the window.
    server_cpu: CpuTime,
    /// Server VmRSS and VmHWM at the end of the window, KiB.
    server_memory: (u64, u64),
}

/// A run in progress.
struct Run<'a> {
    poll: Poll,
    events: Events,
    options: &'a Options,
    work: Box<dyn Workload>,
    /// Connections held idle; `None` once the server closed one.
    idle: Vec<Option<TcpStream>>,
    rec: Recorder,
    started: Instant,
    next_progress: Instant,
    /// When the workload next wants its `tick`.
    next_tick: Option<Instant>,
}

impl<'a> Run<'a> {
    fn new(
        poll: Poll,
        events: Events,
        options: &'a Options,
        mut work: Box<dyn Workload>,
        mut idle: Vec<TcpStream>,
    ) -> Result<Self, LoadError> {
        work.register(poll.registry()).map_err(LoadError::Io)?;
        for (i, stream) in idle.iter_mut().enumerate() {
            poll.registry()
                .reregister(stream, Token(IDLE_BASE + i), Interest::READABLE)
                .map_err(LoadError::Io)?;
        }
        let now = Instant::now();
        Ok(Run {
            poll,
            events,
            options,
            work,
            idle: idle.into_iter().map(Some).collect(),
            rec: Recorder::new(),
            started: now,
            next_progress: now + PROGRESS_EVERY,
            next_tick: None,
        })
    }

    /// Lets the workload set up, waiting until it is ready.
    fn setup(&mut self) -> Result<(), LoadError> {
        let now = Instant::now();
        self.work.start(now, &mut self.rec);
        let deadline = now + SETUP_LIMIT;
        while !self.work.ready() {
            if Instant::now() >= deadline {
                return Err(LoadError::Setup(format!(
                    "the workload was not ready after {SETUP_LIMIT:?}"
                )));
            }
            self.turn(deadline, "setup").map_err(LoadError::Io)?;
        }
        Ok(())
    }

    /// Warm-up, measured window and drain. Returns the window.
    fn load(&mut self, server: Option<ServerProcess>) -> Window {
        let budgeted = self.options.messages.is_some();
        let start = Instant::now();
        self.work.begin(start, &mut self.rec);
        self.next_tick = Some(start);
        let warm_end = start
            + if budgeted {
                Duration::ZERO
            } else {
                self.options.warmup
            };
        self.run_until(warm_end, "warmup", |_| false);
        let measure_start = Instant::now();
        let cpu_start = server.and_then(|s| s.cpu_secs()).unwrap_or_default();
        self.rec.set_measuring(true);
        let end = measure_start + self.options.duration.max(Duration::from_millis(1));
        self.run_until(end, "measure", |w| {
            budgeted && w.spent() && w.outstanding() == 0
        });
        self.rec.set_measuring(false);
        let mut window = Window {
            length: measure_start.elapsed(),
            ..Window::default()
        };
        if let Some(s) = server {
            window.server_cpu = s.cpu_secs().unwrap_or_default() - cpu_start;
            window.server_memory = s.memory_kib().unwrap_or_default();
        }
        self.work.stop();
        let drain_end = Instant::now() + DRAIN_LIMIT;
        self.run_until(drain_end, "drain", |w| w.outstanding() == 0);
        window
    }

    /// Turns the loop until `deadline`, until `done` says so, or until every workload
    /// socket has failed.
    fn run_until(&mut self, deadline: Instant, phase: &str, done: impl Fn(&dyn Workload) -> bool) {
        let had_sockets = self.work.open() > 0;
        while Instant::now() < deadline && !done(self.work.as_ref()) {
            if had_sockets && self.work.open() == 0 {
                return;
            }
            if let Err(e) = self.turn(deadline, phase) {
                self.rec.disconnect(|| format!("event loop: {e}"));
                return;
            }
        }
    }

    /// One turn: wait for events (or the next deadline), dispatch them, run timed work.
    fn turn(&mut self, deadline: Instant, phase: &str) -> io::Result<()> {
        let mut wake = deadline.min(self.next_progress);
        if let Some(tick) = self.next_tick {
            wake = wake.min(tick);
        }
        let timeout = wake.saturating_duration_since(Instant::now());
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
        let now = Instant::now();
        for event in self.events.iter() {
            let token = event.token().0;
            if token >= IDLE_BASE {
                idle_event(&mut self.idle, token - IDLE_BASE, &mut self.rec);
            } else {
                self.work.event(token, event, now, &mut self.rec);
            }
        }
        if self.next_tick.is_some_and(|at| at <= now) {
            self.next_tick = self.work.tick(now, &mut self.rec);
        }
        if now >= self.next_progress {
            self.next_progress = now + PROGRESS_EVERY;
            if self.options.progress {
                let open = self.work.open() + self.idle.iter().flatten().count();
                eprintln!(
                    "{}",
                    self.rec.progress_line(now - self.started, open, phase)
                );
            }
        }
        Ok(())
    }
}

/// An idle connection became readable: the server closed it (or sent something, which
/// an echo server never does unprompted).
fn idle_event(idle: &mut [Option<TcpStream>], i: usize, rec: &mut Recorder) {
    let Some(stream) = idle.get_mut(i).and_then(Option::as_mut) else {
        return;
    };
    let mut byte = [0u8; 64];
    match stream.read(&mut byte) {
        Ok(0) => rec.disconnect(|| format!("idle connection {i}: closed by the server")),
        Ok(n) => rec.mismatch(|| format!("idle connection {i}: {n} unexpected bytes")),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            return
        }
        Err(e) => rec.disconnect(|| format!("idle connection {i}: {e}")),
    }
    idle[i] = None;
}
