//! Helpers shared by the end-to-end tests: a server running in-process on its own
//! thread (bound to 127.0.0.1:0), a child-process server for the binary's own tests,
//! and blocking clients with timeouts so a failing test cannot hang.
#![allow(dead_code)]

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchboard::{BoundAddr, Config, Context, Handle, Reactor, Service, Stats, Stopped};

/// How long any single blocking socket call in a test may wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A config with TCP and UDP on 127.0.0.1 with OS-chosen ports.
pub fn local_config() -> Config {
    let mut config = Config::default();
    config.tcp.push("127.0.0.1:0".parse().unwrap());
    config.udp.push("127.0.0.1:0".parse().unwrap());
    config
}

/// A reactor running on a thread of this test process, started and stopped the way a
/// user's program does it (`Reactor::bind`, `run`, `Handle::shutdown`). A panic in the
/// server thread fails the test. `stop` returns what the thread made of the reactor's
/// [`Stopped`]: its counters, unless the test asked for more
/// ([`TestServer::start_returning`]).
pub struct TestServer<S: Service, Out = Stats> {
    pub endpoints: Vec<BoundAddr>,
    handle: Handle<S>,
    thread: Option<JoinHandle<Out>>,
}

impl<S: Service + 'static> TestServer<S> {
    /// Binds `config` and runs the service and codec `make` builds, on a new thread.
    /// (The reactor is built on that thread: it is not `Send`.)
    #[track_caller]
    pub fn start<F>(config: Config, make: F) -> TestServer<S>
    where
        S::Codec: Clone,
        F: FnOnce() -> (S, S::Codec) + Send + 'static,
    {
        Self::start_with(config, make, |_| ()).0
    }

    /// Like [`TestServer::start`], and runs `setup` on the bound reactor before its
    /// loop starts (to listen on more endpoints, say); what `setup` returns comes back
    /// with the server.
    #[track_caller]
    pub fn start_with<F, G, R>(config: Config, make: F, setup: G) -> (TestServer<S>, R)
    where
        S::Codec: Clone,
        F: FnOnce() -> (S, S::Codec) + Send + 'static,
        G: FnOnce(&mut Reactor<S>) -> R + Send + 'static,
        R: Send + 'static,
    {
        TestServer::spawn(config, make, setup, |stopped| stopped.stats)
    }
}

impl<S: Service + Send + 'static> TestServer<S, Stopped<S>> {
    /// Like [`TestServer::start`], but `stop` returns everything `run` gave back: the
    /// service as the loop left it, the counters, and whether the stop was forced.
    #[track_caller]
    pub fn start_returning<F>(config: Config, make: F) -> TestServer<S, Stopped<S>>
    where
        S::Codec: Clone,
        F: FnOnce() -> (S, S::Codec) + Send + 'static,
    {
        TestServer::spawn(config, make, |_| (), |stopped| stopped).0
    }

    /// Waits (at most `limit`) for the loop to end by itself (a service that shuts it
    /// down, a [`Handle::stop_now`]) and returns what `run` gave back.
    #[track_caller]
    pub fn join(mut self, limit: Duration) -> Stopped<S> {
        let thread = self.thread.take().expect("running");
        assert!(
            wait_until(limit, || thread.is_finished()),
            "the server did not stop within {limit:?}"
        );
        match thread.join() {
            Ok(stopped) => stopped,
            Err(panic) => panic!("the server thread panicked: {}", panic_message(&panic)),
        }
    }
}

impl<S: Service + 'static, Out: Send + 'static> TestServer<S, Out> {
    #[track_caller]
    fn spawn<F, G, R>(
        config: Config,
        make: F,
        setup: G,
        finish: fn(Stopped<S>) -> Out,
    ) -> (TestServer<S, Out>, R)
    where
        S::Codec: Clone,
        F: FnOnce() -> (S, S::Codec) + Send + 'static,
        G: FnOnce(&mut Reactor<S>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let (service, codec) = make();
            let mut reactor = Reactor::bind(config, service, codec).expect("bind");
            let made = setup(&mut reactor);
            tx.send((reactor.endpoints().to_vec(), reactor.handle(), made))
                .unwrap();
            finish(reactor.run().expect("run"))
        });
        let (endpoints, handle, made) = rx.recv_timeout(IO_TIMEOUT).expect("server started");
        let server = TestServer {
            endpoints,
            handle,
            thread: Some(thread),
        };
        (server, made)
    }

    /// The first TCP listener's address.
    pub fn tcp(&self) -> SocketAddr {
        first(&self.endpoints, Transport::Tcp)
    }

    /// Every TCP listener's address, in the order they were bound.
    pub fn tcp_all(&self) -> Vec<SocketAddr> {
        addrs(&self.endpoints, Transport::Tcp).collect()
    }

    /// The first UDP socket's address.
    pub fn udp(&self) -> SocketAddr {
        first(&self.endpoints, Transport::Udp)
    }

    /// A handle that reaches the server from any thread.
    pub fn handle(&self) -> Handle<S> {
        self.handle.clone()
    }

    /// Shuts the server down and returns its final counters (or, for a server started
    /// with [`TestServer::start_returning`], all that `run` gave back).
    #[track_caller]
    pub fn stop(mut self) -> Out {
        self.handle.shutdown();
        let thread = self.thread.take().expect("running");
        match thread.join() {
            Ok(stats) => stats,
            Err(panic) => panic!("the server thread panicked: {}", panic_message(&panic)),
        }
    }
}

impl<S: Service, Out> Drop for TestServer<S, Out> {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.handle.shutdown();
        if let Err(panic) = thread.join() {
            let message = panic_message(&panic);
            if std::thread::panicking() {
                // The test is failing already (perhaps because of this): say why.
                eprintln!("the server thread panicked: {message}");
            } else {
                panic!("the server thread panicked: {message}");
            }
        }
    }
}

/// The text of a panic's payload.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".to_string(),
    }
}

/// A blocking TCP client with read and write timeouts.
#[track_caller]
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A blocking UDP client on 127.0.0.1 with a read timeout.
pub fn udp_client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket
}

#[allow(unused_imports)]
pub use switchboard::frame::wire::{announced, frame, header, read_frame, write_frame};

/// True when the peer has closed the connection: a read returns EOF or a reset
/// (rather than data or a timeout).
pub fn is_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        ),
    }
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

/// The `switchboard` binary as a child process, killed when dropped.
pub struct ChildServer {
    pub child: Child,
}

impl ChildServer {
    /// Starts `switchboard ARGS...` with stderr captured, and waits until `ready_port`
    /// on 127.0.0.1 accepts TCP connections (when given).
    pub fn start(args: &[&str], ready_port: Option<u16>) -> ChildServer {
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchboard");
        let server = ChildServer { child };
        if let Some(port) = ready_port {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            assert!(
                wait_until(IO_TIMEOUT, || TcpStream::connect(addr).is_ok()),
                "server did not start listening on {addr}"
            );
        }
        server
    }

    /// Sends a signal by name (TERM, INT) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit (at most `limit`) and returns its exit code and
    /// everything it wrote to stderr.
    pub fn wait(mut self, limit: Duration) -> (Option<i32>, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return (status.code(), stderr);
            }
            assert!(
                start.elapsed() < limit,
                "server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Everything a child server writes to stderr, collected by a thread as it comes, so
/// a test can wait for a log line while the server runs (instead of sleeping and
/// hoping the server got there). Takes the child's stderr: [`ChildServer::wait`] then
/// returns an empty string, and [`StderrLog::finish`] the whole log.
pub struct StderrLog {
    text: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl StderrLog {
    /// Starts collecting `server`'s stderr.
    pub fn capture(server: &mut ChildServer) -> StderrLog {
        let mut pipe = server.child.stderr.take().expect("stderr is piped");
        let text = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        StderrLog {
            text,
            reader: Some(reader),
        }
    }

    /// The log so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }

    /// Waits (at most `limit`) until the log satisfies `condition`; panics with the
    /// log if it never does.
    #[track_caller]
    pub fn wait_for(&self, what: &str, limit: Duration, condition: impl Fn(&str) -> bool) {
        if !wait_until(limit, || condition(&self.text())) {
            panic!("never logged: {what}\n{}", self.text());
        }
    }

    /// The whole log, once the child has exited (its stderr closed).
    pub fn finish(mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.text()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1, free for TCP and UDP a moment ago, for a server a test starts
/// as a child process.
///
/// It comes from below the ephemeral range (32768-60999 here), never from the kernel's
/// port 0: an ephemeral port handed to a test can be taken, before its server binds it,
/// as the source port of a client socket in a test running in parallel; and a probing
/// `connect` to an ephemeral port nobody listens on can connect the socket to itself.
/// A counter keeps this process's tests apart; the process id keeps concurrent test
/// processes apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 50) as u16 * 200;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 200;
        let tcp_free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if tcp_free && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A reactor driven by the test itself, on the test's thread, on a virtual clock: each
/// turn handles real socket events, but timers follow `now`, which only the test
/// moves. Timer tests advance it by minutes in microseconds, and never sleep.
pub struct Driven<S: Service> {
    pub reactor: Reactor<S>,
    /// The virtual time of the next turn.
    pub now: Instant,
}

impl<S: Service> Driven<S> {
    /// Binds `config` with `service` and `codec`; the clock starts now.
    #[track_caller]
    pub fn start(config: Config, service: S, codec: S::Codec) -> Driven<S>
    where
        S::Codec: Clone,
    {
        let reactor = Reactor::bind(config, service, codec).expect("bind");
        let mut driven = Driven {
            reactor,
            now: Instant::now(),
        };
        driven.turn();
        driven
    }

    /// The first TCP listener's address.
    pub fn tcp(&self) -> SocketAddr {
        first(self.reactor.endpoints(), Transport::Tcp)
    }

    /// One turn at the current virtual time, waiting at most a few milliseconds (real
    /// time) for socket events.
    #[track_caller]
    pub fn turn(&mut self) {
        self.reactor
            .turn(self.now, Some(Duration::from_millis(2)))
            .expect("turn");
    }

    /// Moves the virtual clock forward by `by`, then turns.
    #[track_caller]
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.turn();
    }

    /// Moves the virtual clock forward to `at`, then turns.
    #[track_caller]
    pub fn advance_to(&mut self, at: Instant) {
        assert!(at >= self.now, "the virtual clock only moves forward");
        self.now = at;
        self.turn();
    }

    /// Runs `job` on the loop with the service and a context, at the current virtual
    /// time, and returns what it returns. The job goes in through the reactor's
    /// [`Handle`], as another thread's would; the clock stands still meanwhile.
    #[track_caller]
    pub fn with_context<R: Send + 'static>(
        &mut self,
        job: impl FnOnce(&mut S, &mut Context<'_, S>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = mpsc::channel();
        self.reactor
            .handle()
            .post(move |service, ctx| {
                let _ = tx.send(job(service, ctx));
            })
            .expect("post");
        let mut result = None;
        self.turn_until("the job ran", |_| {
            result = rx.try_recv().ok();
            result.is_some()
        });
        result.unwrap()
    }

    /// Turns (the virtual clock standing still) until `done` holds, for at most
    /// `IO_TIMEOUT` of real time; panics if it never does.
    #[track_caller]
    pub fn turn_until(&mut self, what: &str, mut done: impl FnMut(&mut Reactor<S>) -> bool) {
        let start = Instant::now();
        while !done(&mut self.reactor) {
            assert!(start.elapsed() < IO_TIMEOUT, "never happened: {what}");
            self.turn();
        }
    }
}

/// How many bytes (up to 64 KiB) are waiting to be read on `stream`, without waiting.
/// On loopback, what a [`Driven`] reactor wrote during its last turn is there already.
pub fn available_now(stream: &TcpStream) -> usize {
    stream.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let available = stream.peek(&mut buf).unwrap_or(0);
    stream.set_nonblocking(false).unwrap();
    available
}

/// Whether the peer has closed `stream` (EOF or reset) with nothing left unread,
/// without waiting.
pub fn is_closed_now(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let closed = match stream.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// A reactor on a thread of its own, like [`TestServer`] (so blocking clients work),
/// but turning on a virtual clock that only the test moves, like [`Driven`]: a test
/// of timed behaviour with blocking clients calls [`ClockedServer::advance`] instead
/// of sleeping.
pub struct ClockedServer<S: Service> {
    pub endpoints: Vec<BoundAddr>,
    handle: Handle<S>,
    clock: std::sync::Arc<std::sync::Mutex<Instant>>,
    /// Turns completed so far.
    turns: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<JoinHandle<Stats>>,
}

impl<S: Service + 'static> ClockedServer<S> {
    /// Binds `config` and runs the service and codec `make` builds on a new thread,
    /// its clock standing still at the moment it starts.
    #[track_caller]
    pub fn start<F>(config: Config, make: F) -> ClockedServer<S>
    where
        S::Codec: Clone,
        F: FnOnce() -> (S, S::Codec) + Send + 'static,
    {
        use std::sync::atomic::Ordering;
        let clock = std::sync::Arc::new(std::sync::Mutex::new(Instant::now()));
        let turns = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let (clock, turns) = (clock.clone(), turns.clone());
            std::thread::spawn(move || {
                let (service, codec) = make();
                let mut reactor = Reactor::bind(config, service, codec).expect("bind");
                tx.send((reactor.endpoints().to_vec(), reactor.handle()))
                    .unwrap();
                while !reactor.is_finished() {
                    let now = *clock.lock().unwrap();
                    reactor
                        .turn(now, Some(Duration::from_millis(2)))
                        .expect("turn");
                    turns.fetch_add(1, Ordering::SeqCst);
                }
                reactor.finish().stats
            })
        };
        let (endpoints, handle) = rx.recv_timeout(IO_TIMEOUT).expect("server started");
        ClockedServer {
            endpoints,
            handle,
            clock,
            turns,
            thread: Some(thread),
        }
    }

    /// The first TCP listener's address.
    pub fn tcp(&self) -> SocketAddr {
        first(&self.endpoints, Transport::Tcp)
    }

    /// The first UDP socket's address.
    pub fn udp(&self) -> SocketAddr {
        first(&self.endpoints, Transport::Udp)
    }

    /// The virtual time now.
    pub fn now(&self) -> Instant {
        *self.clock.lock().unwrap()
    }

    /// Moves the virtual clock forward by `by` and returns once the loop has completed
    /// a whole turn at the new time (its due timers have fired, and what they sent is
    /// in the sockets).
    #[track_caller]
    pub fn advance(&self, by: Duration) {
        use std::sync::atomic::Ordering;
        *self.clock.lock().unwrap() += by;
        // The turn under way may have read the old time: wait for the one after it.
        let seen = self.turns.load(Ordering::SeqCst);
        assert!(
            wait_until(IO_TIMEOUT, || self.turns.load(Ordering::SeqCst) >= seen + 2),
            "the loop stopped turning"
        );
    }

    /// Shuts the server down and returns its final counters. Once the shutdown has
    /// begun, the clock jumps a day ahead, so whatever still lingers or drains is over.
    #[track_caller]
    pub fn stop(mut self) -> Stats {
        let thread = self.thread.take().expect("running");
        self.shut_down(&thread);
        match thread.join() {
            Ok(stats) => stats,
            Err(panic) => panic!("the server thread panicked: {}", panic_message(&panic)),
        }
    }
}

impl<S: Service> ClockedServer<S> {
    /// Asks for a shutdown, waits until the loop has begun it (two turns later), then
    /// moves the clock past any grace period.
    fn shut_down(&self, thread: &JoinHandle<Stats>) {
        use std::sync::atomic::Ordering;
        self.handle.shutdown();
        let seen = self.turns.load(Ordering::SeqCst);
        wait_until(IO_TIMEOUT, || {
            thread.is_finished() || self.turns.load(Ordering::SeqCst) >= seen + 2
        });
        *self.clock.lock().unwrap() += Duration::from_secs(86_400);
    }
}

impl<S: Service> Drop for ClockedServer<S> {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shut_down(&thread);
        if let Err(panic) = thread.join() {
            let message = panic_message(&panic);
            if std::thread::panicking() {
                eprintln!("the server thread panicked: {message}");
            } else {
                panic!("the server thread panicked: {message}");
            }
        }
    }
}

/// Which kind of socket an endpoint lookup wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP listeners.
    Tcp,
    /// UDP sockets.
    Udp,
}

/// The addresses of the `transport` endpoints among `endpoints`, in the order they
/// were bound.
pub fn addrs(
    endpoints: &[BoundAddr],
    transport: Transport,
) -> impl Iterator<Item = SocketAddr> + '_ {
    endpoints.iter().filter_map(move |e| match (transport, e) {
        (Transport::Tcp, BoundAddr::Tcp(a)) | (Transport::Udp, BoundAddr::Udp(a)) => Some(*a),
        _ => None,
    })
}

/// The first `transport` endpoint among `endpoints`.
#[track_caller]
pub fn first(endpoints: &[BoundAddr], transport: Transport) -> SocketAddr {
    addrs(endpoints, transport)
        .next()
        .unwrap_or_else(|| panic!("no {transport:?} endpoint among {endpoints:?}"))
}

/// Sends `line` (a newline is added) and returns the one-line reply.
pub fn ask(stream: &mut TcpStream, line: &str) -> String {
    use std::io::Write;
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    read_line(stream)
}

/// Reads one line, terminator removed.
pub fn read_line(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        stream.read_exact(&mut byte).unwrap();
        reply.push(byte[0]);
    }
    reply.pop();
    String::from_utf8(reply).unwrap()
}

/// The path of example `name`, with every example built up to date first (once per
/// test binary): `cargo test` builds them all, but `cargo test --test NAME` does not.
pub fn example_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    // .../target/<profile>/ holds the binary these tests were built with.
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_switchboard"))
        .parent()
        .unwrap();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--quiet", "--examples", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(profile_dir.parent().unwrap());
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build of the examples failed");
    });
    profile_dir.join("examples").join(name)
}

/// Process `pid`'s resident memory now, in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
