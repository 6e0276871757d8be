//! Helpers shared by the end-to-end tests: a server running in-process on its own
//! thread (bound to 127.0.0.1:0), a child-process server for the binary's own tests,
//! and blocking clients with timeouts so a failing test cannot hang.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchboard::{BoundAddr, Codec, Config, Handle, Reactor, Service, Stats};

/// How long any single blocking socket call in a test may wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A config with TCP and UDP on 127.0.0.1 with OS-chosen ports.
pub fn local_config() -> Config {
    let mut config = Config::default();
    config.tcp.push("127.0.0.1:0".parse().unwrap());
    config.udp.push("127.0.0.1:0".parse().unwrap());
    config
}

/// A reactor running on a thread of this test process.
pub struct TestServer {
    pub endpoints: Vec<BoundAddr>,
    handle: Handle,
    thread: Option<JoinHandle<Stats>>,
}

impl TestServer {
    /// Binds `config` and runs the service and codec `make` builds, on a new thread.
    /// (The reactor is built on that thread: it is not `Send`.)
    #[track_caller]
    pub fn start<S, C, F>(config: Config, make: F) -> TestServer
    where
        S: Service + 'static,
        C: Codec + 'static,
        F: FnOnce() -> (S, C) + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let (service, codec) = make();
            let reactor = Reactor::bind(config, service, codec).expect("bind");
            tx.send((reactor.endpoints().to_vec(), reactor.handle()))
                .unwrap();
            reactor.run().expect("run")
        });
        let (endpoints, handle) = rx.recv_timeout(IO_TIMEOUT).expect("server started");
        TestServer {
            endpoints,
            handle,
            thread: Some(thread),
        }
    }

    /// The first TCP listener's address.
    pub fn tcp(&self) -> SocketAddr {
        self.endpoints
            .iter()
            .find_map(|e| match e {
                BoundAddr::Tcp(a) => Some(*a),
                _ => None,
            })
            .expect("a TCP endpoint")
    }

    /// The first UDP socket's address.
    pub fn udp(&self) -> SocketAddr {
        self.endpoints
            .iter()
            .find_map(|e| match e {
                BoundAddr::Udp(a) => Some(*a),
                _ => None,
            })
            .expect("a UDP endpoint")
    }

    /// A handle that stops the server from any thread.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Shuts the server down and returns its final counters.
    pub fn stop(mut self) -> Stats {
        self.handle.shutdown();
        self.thread.take().unwrap().join().expect("server thread")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.shutdown();
            let _ = thread.join();
        }
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

/// `payload` in switchboard's wire format: 4-byte big-endian length, then the bytes.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut wire = (payload.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(payload);
    wire
}

/// Reads one frame in switchboard's wire format.
pub fn read_frame(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload)?;
    Ok(payload)
}

/// Sends one frame.
pub fn write_frame(stream: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    stream.write_all(&frame(payload))
}

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
