//! The run, as a service on the library's own reactor: the load generator is a client
//! built like any other program on switchboard. Its connections are dialled with
//! [`Context::connect`], framed by the reactor's codec, and each one's bookkeeping
//! (what it sent, what it expects) is its per-connection state ([`Line`]).
//!
//! ```text
//!   dial (paced) ──> setup (chat: join) ──> [wait for the other runs] ──> warm-up
//!     ──> measure ──> drain ──> close ──> shutdown
//! ```
//!
//! Warm-up load is sent but not counted. The measured window ends after `duration`
//! (or, with a message budget, once every message is answered, or at a signal: see
//! [`Bench::interrupt`]); then nothing new is sent, and the drain phase waits for the
//! replies still in flight, so that they are checked too: [`DRAIN_LIMIT`] after the
//! last thing heard, [`DRAIN_MOST`] at most. Then every connection shuts its side
//! (chat members say `bye` first) and reads until the server closes, so the server
//! sees an orderly close and no connection is left with output queued or unread input
//! when the loop shuts down. Every phase has a deadline, a timer of the reactor's: a
//! run always ends by itself.
//!
//! Before the load is under way the run also checks that the server speaks the mode's
//! protocol (the rules are in [`super::check`]): the chat setup's deadline is
//! [`QUIET_LIMIT`] after the last frame received, and an echo workload's first replies
//! are due within [`QUIET_LIMIT`] of its first messages.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::chat::{ChatWork, MemberLine};
use super::check::{describe, Hearing, QUIET_LIMIT};
use super::handshakes::HandshakeWork;
use super::procstat::{CpuTime, ServerProcess};
use super::report::{ConnectErrors, Recorder, ServerUsage, Summary, TlsSummary};
use super::stream::{StreamLine, StreamWork};
use super::tls::TlsDials;
use super::udp::UdpWork;
use super::wire::LoadCodec;
use super::{LoadError, Mode, Options};
use crate::{
    CloseMode, CloseReason, ConnId, Context, Dial, Frames, Origin, Service, TimerId, UdpId,
};

/// Longest silence while waiting for replies still in flight when the window ends.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Longest drain, however much still arrives (a room other runs keep busy).
const DRAIN_MOST: Duration = Duration::from_secs(30);
/// Longest wait for the server to close the connections once they have shut their
/// side (a large room's members leave one by one).
const CLOSE_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait, once this run's members are all in, for the other runs sharing the
/// room (`--runs`): they may be started by hand, on other machines.
const RUNS_LIMIT: Duration = Duration::from_secs(60);
/// Pause before reading the server's memory once every connection is open.
const SETTLE: Duration = Duration::from_millis(300);
/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Connections being opened at once: a burst of 20,000 SYNs would overflow the
/// server's accept backlog, and a dropped SYN is retried by the kernel only after a
/// second or more.
const MAX_PENDING: usize = 256;

/// The load generator's state for one connection.
#[derive(Debug, Default)]
pub enum Line {
    /// Held open and silent for the whole run (`--idle`).
    #[default]
    Idle,
    /// A `framed` or `raw` connection carrying load.
    Stream(StreamLine),
    /// A chat member.
    Member(MemberLine),
    /// A connection of the handshakes workload: it closes once its handshake is done.
    Handshake,
}

/// What the load generator's timers are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Print the progress line (repeating).
    Progress,
    /// The current phase's time is up.
    PhaseEnd,
    /// Open-loop sends (and UDP loss checks) are due.
    Pace,
    /// The first reply to an echo workload is overdue.
    FirstReply,
    /// A connection's TLS handshake did not finish within the connect timeout.
    HandshakeDue,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    /// Every connection is open; waiting for the server to settle before reading its
    /// memory.
    Settling,
    Setup,
    /// This run's members are all in; waiting for the other runs sharing the room.
    Waiting,
    /// Setup is complete; the load starts at once, from a timer (so no connection's
    /// state is taken to the callback that starts it).
    Starting,
    Warmup,
    Measure,
    Drain,
    /// Every connection has shut its side; waiting for the server to close them.
    Closing,
    Done,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Connecting | Phase::Settling => "connect",
            Phase::Setup | Phase::Starting => "setup",
            Phase::Waiting => "waiting",
            Phase::Warmup => "warmup",
            Phase::Measure => "measure",
            Phase::Drain => "drain",
            Phase::Closing => "closing",
            Phase::Done => "done",
        }
    }
}

/// The workload a run drives.
#[derive(Debug)]
pub enum Work {
    Stream(StreamWork),
    /// Boxed: a chat run's bookkeeping is the largest by far.
    Chat(Box<ChatWork>),
    Udp(UdpWork),
    Handshakes(HandshakeWork),
}

/// A dial in flight: connecting, then (TLS) handshaking.
#[derive(Debug)]
struct Dialling {
    /// The server it goes to, to name it if the dial fails.
    server: SocketAddr,
    /// When its TCP connect completed (and its handshake began).
    tcp_up: Option<Instant>,
    /// The timer that closes it if its handshake takes longer than the connect
    /// timeout.
    deadline: Option<TimerId>,
    /// Its handshake did not finish in time, and it was closed for that.
    overdue: bool,
}

/// Opening the connections, a bounded number at a time.
#[derive(Debug, Default)]
struct Dialer {
    /// Connections to open: `idle` idle ones first, then the workload's.
    total: usize,
    idle: usize,
    /// The next connection number to dial.
    next: usize,
    /// Dials in flight.
    pending: usize,
    /// Idle connections open now.
    idle_open: usize,
    /// Workload connections that came up.
    connected: usize,
    failures: u64,
    first_failure: Option<io::Error>,
    /// Failures by kind: the first of each kind described, and how many.
    failure_kinds: Vec<(io::ErrorKind, ConnectErrors)>,
    /// Of the failures, the TLS handshakes that failed or did not finish in time.
    handshake_failures: u64,
    /// The dials in flight (with TLS, until their handshake is done).
    dialling: HashMap<ConnId, Dialling>,
    /// When the first connect began.
    first_dial: Option<Instant>,
}

/// The load generator. See the module docs.
#[derive(Debug)]
pub struct Bench {
    options: Options,
    work: Work,
    rec: Recorder,
    phase: Phase,
    /// The timer ending the current phase.
    phase_timer: Option<TimerId>,
    /// The pacing timer, while one is set, and when it is due.
    pace_timer: Option<(TimerId, Instant)>,
    dialer: Dialer,
    /// Every workload connection that came up, to close them in order at the end.
    conns: Vec<ConnId>,
    /// Every idle connection that came up.
    idle_conns: Vec<ConnId>,
    /// Connections open now (idle and workload).
    open_conns: usize,
    /// When the drain began.
    drain_start: Option<Instant>,
    server: Option<ServerProcess>,
    rss_before: u64,
    rss_connected: u64,
    started: Instant,
    measure_start: Option<Instant>,
    cpu_start: CpuTime,
    window: Window,
    /// When the last progress line was printed (or the run started).
    last_progress: Instant,
    /// What the server has sent before the load is under way.
    hearing: Hearing,
    /// An echo workload's first-reply check, while it waits: its timer.
    first_reply: Option<TimerId>,
    /// A signal (or a shutdown from outside) ended the run early.
    interrupted: bool,
    /// The drain ended by itself: every reply came, or its deadline passed. When it
    /// did not (a signal during the drain, a second signal), replies still in flight
    /// were not awaited and are not counted as unanswered.
    drained: bool,
    /// Why the run could not be carried out, if it could not.
    failure: Option<LoadError>,
    /// With `--tls`: what the dials trust and check.
    tls: Option<TlsDials>,
    /// Every TLS handshake's time (its own recorder, always counting: one "reply" a
    /// handshake).
    handshakes: Recorder,
    /// The protocol version and cipher suite the first handshake agreed on.
    agreed: Option<(String, String)>,
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

impl Bench {
    /// A run of `options` (validated, the server probed) with its workload, dialling
    /// over TLS with `tls`.
    pub fn new(options: Options, tls: Option<TlsDials>) -> Self {
        let work = match options.mode {
            Mode::Framed | Mode::Raw => Work::Stream(StreamWork::new(&options)),
            Mode::Chat => Work::Chat(Box::new(ChatWork::new(&options))),
            Mode::Udp => Work::Udp(UdpWork::new(&options)),
            Mode::Handshakes => Work::Handshakes(HandshakeWork::new(options.conns)),
        };
        let server = options.server_pid.map(ServerProcess::new);
        let mut handshakes = Recorder::new();
        handshakes.set_measuring(true);
        Bench {
            dialer: Dialer {
                total: options.idle + options.lasting_conns(),
                idle: options.idle,
                ..Dialer::default()
            },
            rss_before: server.and_then(|s| s.memory_kib()).map_or(0, |m| m.0),
            server,
            work,
            conns: Vec::new(),
            idle_conns: Vec::new(),
            open_conns: 0,
            drain_start: None,
            rec: Recorder::new(),
            phase: Phase::Connecting,
            phase_timer: None,
            pace_timer: None,
            rss_connected: 0,
            started: Instant::now(),
            measure_start: None,
            cpu_start: CpuTime::default(),
            window: Window::default(),
            last_progress: Instant::now(),
            hearing: Hearing::new(&options, Instant::now()),
            first_reply: None,
            interrupted: false,
            drained: false,
            failure: None,
            tls,
            handshakes,
            agreed: None,
            options,
        }
    }

    /// The codec the run's connections speak.
    pub fn codec(options: &Options) -> LoadCodec {
        match options.mode {
            Mode::Raw => LoadCodec::Fixed(options.size),
            _ => LoadCodec::Length(crate::LengthCodec::new(super::MAX_FRAME)),
        }
    }

    /// Gives the UDP workload the sockets bound for it.
    pub fn set_udp_sockets(&mut self, sockets: Vec<UdpId>) {
        if let Work::Udp(udp) = &mut self.work {
            udp.set_sockets(sockets, self.options.addr);
        }
    }

    /// The run's result, once the loop has returned.
    pub fn into_summary(mut self) -> Result<Summary, LoadError> {
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        let unanswered = self.work_finish();
        if self.first_reply.is_some() && unanswered > 0 && !self.interrupted {
            // The run ended (a short window) before the first-reply check could.
            return Err(self.hearing.silent(Instant::now()));
        }
        let mut summary = Summary::new(&self.options, &self.rec, self.window.length);
        summary.connected = match &self.work {
            Work::Udp(_) => self.options.conns,
            Work::Handshakes(_) => self.handshakes.messages_total as usize,
            _ => self.dialer.connected,
        };
        summary.connect_failures = self.dialer.failures;
        summary.first_connect_error =
            (self.dialer.failure_kinds.first()).map(|(_, kind)| kind.error.clone());
        summary.connect_errors = (self.dialer.failure_kinds.iter())
            .map(|(_, kind)| kind.clone())
            .collect();
        if let Work::Chat(chat) = &self.work {
            let (joined, last_joined) = chat.joined();
            summary.members_joined = joined;
            summary.join_seconds = match (self.dialer.first_dial, last_joined) {
                (Some(first), Some(last)) => last.saturating_duration_since(first).as_secs_f64(),
                _ => 0.0,
            };
            summary.room = Some(chat.room().to_string());
            summary.run_id = Some(chat.run_id().to_string());
            summary.listeners = Some(chat.listeners().name().to_string());
            summary.runs_ready = chat.runs_count().0;
            summary.senders_heard = chat.senders_heard();
        }
        summary.interrupted = self.interrupted;
        if self.drained || !self.interrupted {
            summary.unanswered = unanswered;
        }
        summary.lost = self.rec.lost;
        summary.errors += summary.unanswered;
        summary.tls = self
            .tls
            .as_ref()
            .map(|_| self.tls_summary(summary.msgs_per_sec));
        let window = &self.window;
        summary.server = self.server.map(|s| {
            let cpu = window.server_cpu.user + window.server_cpu.system;
            ServerUsage {
                cpu_secs: cpu,
                user_cpu_secs: window.server_cpu.user,
                msgs_per_cpu_sec: summary.messages as f64 / cpu.max(1e-9),
                rss_before_kib: self.rss_before,
                rss_connected_kib: self.rss_connected,
                rss_end_kib: window.server_memory.0,
                hwm_kib: s.memory_kib().map_or(window.server_memory.1, |m| m.1),
            }
        });
        Ok(summary)
    }

    /// The TLS part of the summary; `per_sec`: the window's rate (handshakes, in the
    /// handshakes workload).
    fn tls_summary(&self, per_sec: f64) -> TlsSummary {
        let histogram = self.options.histogram;
        let mut tls = TlsSummary::new(&self.handshakes, self.dialer.handshake_failures, histogram);
        tls.handshakes_per_sec = matches!(self.work, Work::Handshakes(_)).then_some(per_sec);
        (tls.protocol, tls.cipher_suite) = self.agreed.clone().unzip();
        tls
    }

    fn work_finish(&mut self) -> u64 {
        match &mut self.work {
            Work::Stream(w) => w.finish(),
            Work::Chat(w) => w.finish(),
            Work::Udp(w) => w.finish(&mut self.rec),
            // A handshake cut short by the end of the run is not the server's fault.
            Work::Handshakes(_) => 0,
        }
    }

    fn outstanding(&self) -> u64 {
        match &self.work {
            Work::Stream(w) => w.outstanding(),
            Work::Chat(w) => w.outstanding(),
            Work::Udp(w) => w.outstanding(),
            Work::Handshakes(w) => w.outstanding(),
        }
    }

    fn open(&self) -> usize {
        match &self.work {
            Work::Stream(w) => w.open(),
            Work::Chat(w) => w.open(),
            Work::Udp(w) => w.open(),
            Work::Handshakes(w) => w.open(),
        }
    }

    /// True once nothing more is awaited (chat: every sender's last word heard).
    fn settled(&self) -> bool {
        match &self.work {
            Work::Chat(w) => w.settled(),
            _ => self.outstanding() == 0,
        }
    }

    fn spent(&self) -> bool {
        match &self.work {
            Work::Stream(w) => w.spent(),
            Work::Chat(w) => w.spent(),
            Work::Udp(w) => w.spent(),
            Work::Handshakes(_) => false,
        }
    }

    /// Dials until `MAX_PENDING` dials are in flight or every connection is dialled.
    fn dial_more(&mut self, ctx: &mut Context<'_, Self>) {
        while self.dialer.next < self.dialer.total && self.dialer.pending < MAX_PENDING {
            let number = self.dialer.next;
            self.dialer.next += 1;
            let line = match number.checked_sub(self.dialer.idle) {
                None => Line::Idle,
                Some(index) => match &self.work {
                    Work::Stream(w) => Line::Stream(w.line(index)),
                    Work::Chat(w) => Line::Member(w.line(index)),
                    Work::Udp(_) | Work::Handshakes(_) => Line::Idle,
                },
            };
            self.dial(ctx, number, line);
        }
        self.connected_all(ctx);
    }

    /// Dials connection `number` (it picks the server and the source address) with
    /// `line` as its state: true when the dial is under way.
    fn dial(&mut self, ctx: &mut Context<'_, Self>, number: usize, line: Line) -> bool {
        let server = self.options.server_for(number);
        let mut dial = Dial::tcp(server).timeout(self.options.connect_timeout);
        if let Some(source) = self.options.source_ip(number) {
            dial = dial.bind(source);
        }
        if let Some(tls) = &self.tls {
            dial = match tls.dial(dial, server) {
                Ok(dial) => dial,
                Err(e) => {
                    self.dial_failed(e, server);
                    return false;
                }
            };
        }
        self.dialer.first_dial.get_or_insert_with(Instant::now);
        match ctx.connect(dial, line) {
            Ok(conn) => {
                self.dialer.pending += 1;
                let dialling = Dialling {
                    server,
                    tcp_up: None,
                    deadline: None,
                    overdue: false,
                };
                self.dialer.dialling.insert(conn, dialling);
                true
            }
            Err(e) => {
                self.dial_failed(e.error, server);
                false
            }
        }
    }

    /// The handshakes workload: dials until `conns` connections are under way.
    fn dial_handshakes(&mut self, ctx: &mut Context<'_, Self>) {
        loop {
            let Work::Handshakes(w) = &mut self.work else {
                return;
            };
            let Some(number) = w.want() else {
                return;
            };
            if !self.dial(ctx, number, Line::Handshake) {
                // Counted; the slot is tried again when another connection closes (a
                // dial that fails at once, out of ports say, must not spin here).
                return;
            }
            if let Work::Handshakes(w) = &mut self.work {
                w.dialled();
            }
        }
    }

    /// A connection to `server` could not be opened: counted, and the first failure
    /// of each kind kept with its reason.
    fn dial_failed(&mut self, error: io::Error, server: SocketAddr) {
        let dialer = &mut self.dialer;
        dialer.failures += 1;
        let kind = error.kind();
        match dialer.failure_kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, seen)) => seen.count += 1,
            None => dialer.failure_kinds.push((
                kind,
                ConnectErrors {
                    error: format!("{server}: {error}"),
                    count: 1,
                },
            )),
        }
        dialer.first_failure.get_or_insert(error);
    }

    /// Once every dial has settled: fail the run if nothing connected, else let the
    /// server settle (when its memory is measured) and set up the workload.
    fn connected_all(&mut self, ctx: &mut Context<'_, Self>) {
        let dialer = &self.dialer;
        if self.phase != Phase::Connecting || dialer.next < dialer.total || dialer.pending > 0 {
            return;
        }
        if dialer.total > 0 && dialer.connected == 0 && dialer.idle_open == 0 {
            let source = dialer.first_failure.as_ref().map_or_else(
                || io::Error::other("unknown"),
                |e| io::Error::new(e.kind(), e.to_string()),
            );
            let attempted = dialer.total;
            return self.fail(ctx, LoadError::NoConnections { attempted, source });
        }
        // Let the server accept what is still in its backlog before reading its
        // memory; either way, go on from a timer, with no connection's state taken.
        let settle = match self.server {
            Some(_) => SETTLE,
            None => Duration::ZERO,
        };
        self.enter(ctx, Phase::Settling, Some(settle));
    }

    /// Moves to `phase`, with a deadline `limit` from now.
    fn enter(&mut self, ctx: &mut Context<'_, Self>, phase: Phase, limit: Option<Duration>) {
        self.phase = phase;
        if let Some(timer) = self.phase_timer.take() {
            ctx.cancel_timer(timer);
        }
        self.phase_timer = limit.map(|limit| ctx.set_timer(limit, Tick::PhaseEnd));
    }

    /// Sends whatever setup the workload needs (chat: hello, join, ping), then waits
    /// for it to be ready.
    fn setup(&mut self, ctx: &mut Context<'_, Self>) {
        if let Some(server) = self.server {
            self.rss_connected = server.memory_kib().map_or(0, |m| m.0);
        }
        self.hearing.wait_from(ctx.now());
        self.enter(ctx, Phase::Setup, Some(QUIET_LIMIT));
        if let Work::Chat(chat) = &mut self.work {
            chat.start(ctx);
        }
        self.check_ready(ctx);
    }

    /// Once setup is complete (and, with `--runs`, every run sharing the room is
    /// ready), starts the load from a timer; fails it if the server answered in
    /// another protocol.
    fn check_ready(&mut self, ctx: &mut Context<'_, Self>) {
        if !matches!(self.phase, Phase::Setup | Phase::Waiting) {
            return;
        }
        let ready = match &mut self.work {
            Work::Chat(chat) => {
                if let Some(what) = chat.take_foreign() {
                    return self.fail(ctx, self.hearing.wrong_protocol(what));
                }
                if self.phase == Phase::Setup && chat.members_ready() {
                    chat.announce(ctx);
                    if !chat.runs_ready() {
                        return self.enter(ctx, Phase::Waiting, Some(RUNS_LIMIT));
                    }
                }
                chat.members_ready() && chat.runs_ready()
            }
            _ => true,
        };
        if ready {
            self.enter(ctx, Phase::Starting, Some(Duration::ZERO));
        }
    }

    /// The setup's quiet deadline passed: go on waiting if the server spoke since,
    /// else fail.
    fn setup_quiet(&mut self, ctx: &mut Context<'_, Self>) {
        let now = ctx.now();
        if let Some(left) = self.hearing.quiet_left(now) {
            return self.enter(ctx, Phase::Setup, Some(left));
        }
        let failure = match &self.work {
            Work::Chat(chat) => {
                self.hearing
                    .setup_stalled(now, chat.members_ready_count(), chat.open())
            }
            _ => self.hearing.silent(now),
        };
        self.fail(ctx, failure);
    }

    /// Starts the load: warm-up first.
    fn begin(&mut self, ctx: &mut Context<'_, Self>) {
        let now = Instant::now();
        if let (Work::Stream(_), 1..) = (&self.work, self.open()) {
            self.hearing.wait_from(now);
            // (UDP needs no such check: the probe had its datagram echoed.)
            self.first_reply = Some(ctx.set_timer(QUIET_LIMIT, Tick::FirstReply));
        }
        let budgeted = self.options.messages.is_some();
        let warmup = if budgeted {
            Duration::ZERO
        } else {
            self.options.warmup
        };
        if warmup.is_zero() {
            // Measured from the first message on.
            self.measure(ctx);
        } else {
            self.enter(ctx, Phase::Warmup, Some(warmup));
        }
        match &mut self.work {
            Work::Stream(w) => w.begin(ctx, now, &mut self.rec),
            Work::Chat(w) => w.begin(ctx, now, &mut self.rec),
            Work::Udp(w) => w.begin(ctx, now, &mut self.rec),
            Work::Handshakes(w) => w.begin(),
        }
        self.dial_handshakes(ctx);
        self.schedule_pace(ctx, Some(now));
    }

    /// The current phase's deadline passed.
    fn phase_over(&mut self, ctx: &mut Context<'_, Self>) {
        self.phase_timer = None;
        match self.phase {
            Phase::Connecting | Phase::Done => {}
            Phase::Settling => self.setup(ctx),
            Phase::Setup => self.setup_quiet(ctx),
            Phase::Waiting => self.runs_missing(ctx),
            Phase::Starting => self.begin(ctx),
            Phase::Warmup => self.measure(ctx),
            Phase::Measure => self.drain(ctx),
            Phase::Drain => self.drain_quiet(ctx),
            // The server did not close them all in time: the loop's shutdown does.
            Phase::Closing => self.done(ctx),
        }
    }

    /// The other runs sharing the room did not all say they were ready in time.
    fn runs_missing(&mut self, ctx: &mut Context<'_, Self>) {
        let Work::Chat(chat) = &self.work else {
            return;
        };
        let (ready, wanted) = chat.runs_count();
        let failure = LoadError::Setup(format!(
            "{ready} of {wanted} runs were ready in room {} after {} s (--runs {wanted}: \
             are the other runs started, with the same --room, on servers that share rooms?)",
            chat.room(),
            RUNS_LIMIT.as_secs()
        ));
        self.fail(ctx, failure);
    }

    /// The drain's quiet deadline passed: go on while something still arrives (up to
    /// [`DRAIN_MOST`]), else what is still in flight is unanswered.
    fn drain_quiet(&mut self, ctx: &mut Context<'_, Self>) {
        let now = ctx.now();
        let heard = self.hearing.last_heard();
        let started = self.drain_start.unwrap_or(now);
        let left = (heard + DRAIN_LIMIT).saturating_duration_since(now);
        let most = (started + DRAIN_MOST).saturating_duration_since(now);
        if !left.is_zero() && !most.is_zero() {
            return self.enter(ctx, Phase::Drain, Some(left.min(most)));
        }
        self.drained = true;
        self.close_all(ctx);
    }

    fn measure(&mut self, ctx: &mut Context<'_, Self>) {
        self.measure_start = Some(Instant::now());
        self.cpu_start = self.server.and_then(|s| s.cpu_secs()).unwrap_or_default();
        self.rec.set_measuring(true);
        let duration = self.options.duration.max(Duration::from_millis(1));
        self.enter(ctx, Phase::Measure, Some(duration));
        self.check_budget(ctx);
    }

    /// With a message budget, the window ends once every message is answered.
    fn check_budget(&mut self, ctx: &mut Context<'_, Self>) {
        let budgeted = self.options.messages.is_some();
        if self.phase == Phase::Measure && budgeted && self.spent() && self.outstanding() == 0 {
            self.drain(ctx);
        }
    }

    fn drain(&mut self, ctx: &mut Context<'_, Self>) {
        self.close_window(ctx);
        self.drain_start = Some(ctx.now());
        self.enter(ctx, Phase::Drain, Some(DRAIN_LIMIT));
        self.check_drained(ctx);
    }

    /// Ends the measured window (if it is open) and sends nothing new from now on.
    fn close_window(&mut self, ctx: &mut Context<'_, Self>) {
        if self.rec.measuring() {
            self.rec.set_measuring(false);
            if let Some(start) = self.measure_start {
                self.window.length = start.elapsed();
            }
            if let Some(s) = self.server {
                self.window.server_cpu = s.cpu_secs().unwrap_or_default() - self.cpu_start;
                self.window.server_memory = s.memory_kib().unwrap_or_default();
            }
        }
        match &mut self.work {
            Work::Stream(w) => w.stop(),
            Work::Chat(w) => w.stop(ctx),
            Work::Udp(w) => w.stop(),
            Work::Handshakes(w) => w.stop(),
        }
    }

    fn check_drained(&mut self, ctx: &mut Context<'_, Self>) {
        if self.phase == Phase::Drain && self.settled() {
            self.drained = true;
            self.close_all(ctx);
        }
    }

    /// The run is over: every workload connection shuts its side (chat members say
    /// `bye` first) and reads until the server closes it. Closing first would leave
    /// the server writing to a closed socket (a reset), and our own unread input would
    /// make the kernel send one. Idle connections, to which nothing is sent, close at
    /// once (a FIN, and the reactor's short linger for the server's).
    fn close_all(&mut self, ctx: &mut Context<'_, Self>) {
        self.enter(ctx, Phase::Closing, Some(CLOSE_LIMIT));
        if let Work::Chat(chat) = &mut self.work {
            chat.leave(ctx);
        }
        for conn in std::mem::take(&mut self.conns) {
            ctx.shutdown_write(conn);
        }
        for conn in std::mem::take(&mut self.idle_conns) {
            ctx.close(conn, CloseMode::Flush);
        }
        self.check_closed(ctx);
    }

    fn check_closed(&mut self, ctx: &mut Context<'_, Self>) {
        if self.phase == Phase::Closing && self.open_conns == 0 {
            self.done(ctx);
        }
    }

    /// A signal asks the run to end early (see [`super::run_interruptible`]): the
    /// measured window closes now and the replies in flight drain, so the summary
    /// covers what was measured. Before the load, the run just ends; during the drain,
    /// it ends without waiting for the rest.
    #[cfg(feature = "signals")]
    pub fn interrupt(&mut self, ctx: &mut Context<'_, Self>) {
        if self.interrupted || self.phase == Phase::Done {
            return;
        }
        self.interrupted = true;
        match self.phase {
            Phase::Warmup | Phase::Measure => self.drain(ctx),
            Phase::Drain => self.close_all(ctx),
            Phase::Closing => {}
            _ => self.done(ctx),
        }
    }

    /// The first reply to an echo workload is overdue: fail, unless nothing has been
    /// sent yet (an open loop's first message not yet due).
    fn first_reply_due(&mut self, ctx: &mut Context<'_, Self>) {
        self.first_reply = None;
        if self.phase == Phase::Done || self.interrupted || self.hearing.has_heard() {
            return;
        }
        if self.outstanding() == 0 {
            self.first_reply = Some(ctx.set_timer(QUIET_LIMIT, Tick::FirstReply));
            return;
        }
        self.fail(ctx, self.hearing.silent(ctx.now()));
    }

    /// After an echo workload's replies, while the first one is awaited: a correct
    /// one ends the check; a wrong one (`mismatched`) means another protocol.
    fn check_first_reply(
        &mut self,
        ctx: &mut Context<'_, Self>,
        mismatched: bool,
        first: Option<String>,
    ) {
        if self.rec.messages_total > 0 {
            if let Some(timer) = self.first_reply.take() {
                ctx.cancel_timer(timer);
            }
        } else if mismatched {
            let first = first.unwrap_or_default();
            let what = format!("its first reply was not an echo of what was sent: {first}");
            self.fail(ctx, self.hearing.wrong_protocol(what));
        }
    }

    fn done(&mut self, ctx: &mut Context<'_, Self>) {
        self.enter(ctx, Phase::Done, None);
        ctx.shutdown();
    }

    fn fail(&mut self, ctx: &mut Context<'_, Self>, failure: LoadError) {
        self.failure = Some(failure);
        self.done(ctx);
    }

    /// After replies or closes: has the phase's work finished early?
    fn progressed(&mut self, ctx: &mut Context<'_, Self>) {
        let answering = self.phase != Phase::Setup && self.first_reply.is_none();
        let all_closed = self.dialer.connected > 0 && self.open() == 0;
        if !answering && all_closed && self.phase != Phase::Done {
            let failure = self.hearing.all_closed(self.phase == Phase::Setup);
            return self.fail(ctx, failure);
        }
        match self.phase {
            Phase::Setup | Phase::Waiting => self.check_ready(ctx),
            Phase::Measure => self.check_budget(ctx),
            Phase::Drain => self.check_drained(ctx),
            Phase::Closing => self.check_closed(ctx),
            _ => {}
        }
        let loading = matches!(self.phase, Phase::Warmup | Phase::Measure | Phase::Drain);
        if loading && self.open() == 0 {
            // Every workload connection is gone: nothing more can be measured.
            if self.phase != Phase::Drain {
                self.drain(ctx);
            }
            if self.phase != Phase::Closing {
                self.close_all(ctx);
            }
        }
    }

    /// Sets the pacing timer for `at` (open loop, UDP loss checks), unless one is set
    /// for then already.
    fn schedule_pace(&mut self, ctx: &mut Context<'_, Self>, at: Option<Instant>) {
        let Some(at) = at else {
            return;
        };
        if self.pace_timer.is_some_and(|(_, due)| due <= at) {
            return;
        }
        if let Some((timer, _)) = self.pace_timer.take() {
            ctx.cancel_timer(timer);
        }
        // At least the clock's resolution: work that keeps reporting itself due in the
        // past must not turn the timer loop into a spin.
        let delay = at
            .saturating_duration_since(ctx.now())
            .max(Duration::from_millis(1));
        self.pace_timer = Some((ctx.set_timer(delay, Tick::Pace), at));
    }

    fn pace(&mut self, ctx: &mut Context<'_, Self>) {
        self.pace_timer = None;
        let now = Instant::now();
        let next = match &mut self.work {
            Work::Stream(w) => w.tick(ctx, now, &mut self.rec),
            Work::Chat(w) => w.tick(ctx, now, &mut self.rec),
            Work::Udp(w) => w.tick(ctx, now, &mut self.rec),
            Work::Handshakes(_) => None,
        };
        self.schedule_pace(ctx, next);
        self.progressed(ctx);
    }

    fn progress(&mut self) {
        let now = Instant::now();
        let interval = now.saturating_duration_since(self.last_progress);
        self.last_progress = now;
        if !self.options.progress {
            return;
        }
        let open = self.open() + self.dialer.idle_open;
        let line = self.rec.progress_line(
            now.saturating_duration_since(self.started),
            interval,
            open,
            self.phase.name(),
            self.options.mode.unit(),
        );
        eprintln!("{line}");
    }

    /// Connection `conn` is up: connected, and with TLS its handshake done.
    fn up(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, line: &mut Line) {
        self.dialer.pending -= 1;
        self.dialer.dialling.remove(&conn);
        self.open_conns += 1;
        match line {
            Line::Idle => self.idle_conns.push(conn),
            // It closes by itself.
            Line::Handshake => {}
            _ => self.conns.push(conn),
        }
        match line {
            Line::Idle => self.dialer.idle_open += 1,
            Line::Stream(line) => {
                self.dialer.connected += 1;
                if let Work::Stream(w) = &mut self.work {
                    w.connected(line, conn);
                }
            }
            Line::Member(line) => {
                self.dialer.connected += 1;
                if let Work::Chat(w) = &mut self.work {
                    w.connected(line, conn);
                }
            }
            Line::Handshake => {}
        }
        self.dial_more(ctx);
    }

    /// A dial ended before its connection was up: the connect failed or timed out, or
    /// (TLS) the handshake failed or did not finish in time. Counted as a connect
    /// failure, unless the run itself is ending; then the next dial.
    fn never_up(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        line: Line,
        dialling: Dialling,
        reason: CloseReason,
    ) {
        self.dialer.pending -= 1;
        let ending = self.phase == Phase::Done || reason == CloseReason::Shutdown;
        if !ending {
            let error = match (reason, dialling.tcp_up) {
                (CloseReason::ConnectFailed(kind), _) => io::Error::from(kind),
                (CloseReason::ConnectTimeout, _) => {
                    io::Error::new(io::ErrorKind::TimedOut, "connect did not finish in time")
                }
                (reason, _) => {
                    self.dialer.handshake_failures += 1;
                    let words = crate::tls::failure(ctx, conn);
                    handshake_failure(reason, dialling.overdue, words)
                }
            };
            self.dial_failed(error, dialling.server);
        }
        if let (Line::Handshake, Work::Handshakes(w)) = (line, &mut self.work) {
            w.closed(true);
            self.dial_handshakes(ctx);
            return self.progressed(ctx);
        }
        self.dial_more(ctx);
    }
}

/// Why a TLS handshake failed, as a connect error: in rustls's words when TLS ended
/// it (`words`, which the reactor keeps for `on_close`), else the close's reason.
fn handshake_failure(reason: CloseReason, overdue: bool, words: Option<String>) -> io::Error {
    if overdue {
        return io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake did not finish in time",
        );
    }
    let kind = match reason {
        CloseReason::Error(kind) => kind,
        CloseReason::Reset => io::ErrorKind::ConnectionReset,
        _ => io::ErrorKind::UnexpectedEof,
    };
    let why = words.unwrap_or_else(|| {
        format!("{reason} (does the server speak TLS, with a certificate for --tls-name that --tls-ca trusts?)")
    });
    io::Error::new(kind, format!("TLS handshake failed: {why}"))
}

impl Service for Bench {
    type Conn = Line;
    type Timer = Tick;
    type Codec = LoadCodec;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        self.started = Instant::now();
        self.last_progress = self.started;
        ctx.set_repeating(PROGRESS_EVERY, Tick::Progress);
        if self.dialer.total == 0 {
            // UDP only: nothing to dial.
            return self.enter(ctx, Phase::Settling, Some(Duration::ZERO));
        }
        self.dial_more(ctx);
    }

    /// A dialled connection's TCP connect completed: it is up, or with TLS its
    /// handshake begins, timed from now and given the connect timeout again.
    fn on_connect(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        line: &mut Line,
        _: Origin,
    ) {
        if self.tls.is_none() {
            return self.up(ctx, conn, line);
        }
        let deadline = ctx.set_conn_timer(conn, self.options.connect_timeout, Tick::HandshakeDue);
        if let Some(dialling) = self.dialer.dialling.get_mut(&conn) {
            dialling.tcp_up = Some(Instant::now());
            dialling.deadline = Some(deadline);
        }
    }

    /// A dialled connection's TLS handshake is done: timed, and the connection is up
    /// (a handshakes workload's closes now).
    fn on_tls_ready(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, line: &mut Line) {
        let now = Instant::now();
        let Some(dialling) = self.dialer.dialling.get(&conn) else {
            return;
        };
        if let Some(timer) = dialling.deadline {
            ctx.cancel_timer(timer);
        }
        let took = now.saturating_duration_since(dialling.tcp_up.unwrap_or(now));
        self.handshakes.reply(0, took);
        if self.agreed.is_none() {
            self.agreed = TlsDials::agreed(ctx, conn);
        }
        self.up(ctx, conn, line);
        if let (Line::Handshake, Work::Handshakes(w)) = (line, &mut self.work) {
            w.shaken();
            self.rec.reply(0, took);
            self.hearing.heard(now);
            // Its last word: close_notify and a FIN; the server's close comes back.
            ctx.shutdown_write(conn);
            self.progressed(ctx);
        }
    }

    fn on_frames(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        line: &mut Line,
        frames: Frames<'_, LoadCodec>,
    ) {
        // The clock is read here, not taken from the turn: a reply to a message sent
        // earlier in this same turn must not count as taking no time.
        let now = Instant::now();
        if self.phase == Phase::Closing {
            // The run is over: what still comes is read (so no reset) and let go.
            return;
        }
        match (line, &mut self.work) {
            (Line::Stream(line), Work::Stream(w)) => {
                let checking = self.first_reply.is_some();
                let first = checking.then(|| frames.payloads().next().map(describe));
                let mismatches = self.rec.mismatches;
                w.replies(ctx, conn, line, &frames, now, &mut self.rec);
                self.hearing.heard(now);
                if checking {
                    let mismatched = self.rec.mismatches > mismatches;
                    self.check_first_reply(ctx, mismatched, first.flatten());
                }
            }
            (Line::Member(line), Work::Chat(w)) => {
                w.frames(ctx, conn, line, &frames, now, &mut self.rec);
                self.hearing.heard(now);
            }
            (line, _) => {
                let count = frames.len();
                let which = match line {
                    Line::Handshake => "handshake",
                    _ => "idle",
                };
                self.rec
                    .mismatch(|| format!("{which} {conn}: {count} unexpected frames"));
            }
        }
        self.progressed(ctx);
    }

    fn on_datagram(
        &mut self,
        ctx: &mut Context<'_, Self>,
        socket: UdpId,
        peer: SocketAddr,
        datagram: &[u8],
    ) {
        if let Work::Udp(w) = &mut self.work {
            w.datagram(ctx, socket, peer, datagram, &mut self.rec);
            self.progressed(ctx);
        }
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        line: Line,
        reason: CloseReason,
    ) {
        if let Some(dialling) = self.dialer.dialling.remove(&conn) {
            return self.never_up(ctx, conn, line, dialling, reason);
        }
        self.open_conns -= 1;
        let ending =
            matches!(self.phase, Phase::Closing | Phase::Done) || reason == CloseReason::Shutdown;
        if !ending && matches!(line, Line::Stream(_) | Line::Member(_)) {
            self.hearing.closed(reason);
        }
        match line {
            Line::Idle => {
                self.dialer.idle_open -= 1;
                if !ending {
                    self.rec
                        .disconnect(|| format!("idle {conn}: closed by the server ({reason})"));
                }
            }
            Line::Stream(line) => {
                if let Work::Stream(w) = &mut self.work {
                    w.closed(&line, ending, reason, &mut self.rec);
                }
            }
            Line::Member(line) => {
                if let Work::Chat(w) = &mut self.work {
                    w.closed(&line, ending, reason, &mut self.rec);
                }
            }
            Line::Handshake => {
                if !ending && reason != CloseReason::PeerClosed {
                    self.rec
                        .disconnect(|| format!("{conn}, after its handshake: {reason}"));
                }
                if let Work::Handshakes(w) = &mut self.work {
                    w.closed(false);
                }
                self.dial_handshakes(ctx);
            }
        }
        if !ending {
            self.progressed(ctx);
        } else {
            self.check_closed(ctx);
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: TimerId, tick: Tick) {
        match tick {
            Tick::Progress => self.progress(),
            Tick::PhaseEnd => self.phase_over(ctx),
            Tick::Pace => self.pace(ctx),
            Tick::FirstReply => self.first_reply_due(ctx),
            Tick::HandshakeDue => {}
        }
    }

    fn on_conn_timer(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        _: &mut Line,
        _: TimerId,
        tick: Tick,
    ) {
        if tick != Tick::HandshakeDue {
            return;
        }
        if let Some(dialling) = self.dialer.dialling.get_mut(&conn) {
            dialling.overdue = true;
            ctx.close(conn, CloseMode::Abort);
        }
    }

    /// A shutdown from outside (a [`crate::Handle`], or a signal when the loop's inbox
    /// is full): the run ends where it is, with what it measured.
    fn on_stop(&mut self, ctx: &mut Context<'_, Self>) {
        if self.phase != Phase::Done {
            self.interrupted = true;
            self.close_window(ctx);
            self.phase = Phase::Done;
        }
    }
}
