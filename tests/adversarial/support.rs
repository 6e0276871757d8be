//! What the adversarial cases share: the scale they run at, the release binary as a
//! child process with its figures read from `/proc` (descriptors, resident memory, CPU
//! time) and its shutdown summary parsed, and blocking clients that connect from any
//! 127.0.0.x, reset, and wait on conditions with deadlines.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use switchboard::frame::wire;

use crate::common::{free_port, wait_until};
/// The wire format's own frame and header builders, for the cases.
pub use switchboard::frame::wire::{frame, header};

/// How big a run is: `SWITCHBOARD_ADVERSARIAL=long` for the sizes, anything
/// else (or nothing) for the short run `cargo test` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Short,
    Long,
}

impl Scale {
    /// The scale the environment asks for.
    pub fn get() -> Scale {
        match std::env::var("SWITCHBOARD_ADVERSARIAL").as_deref() {
            Ok("long") => Scale::Long,
            _ => Scale::Short,
        }
    }

    /// `short` or `long`, whichever this scale is.
    pub fn pick<T>(self, short: T, long: T) -> T {
        match self {
            Scale::Short => short,
            Scale::Long => long,
        }
    }
}

/// One case at a time: each case measures CPU time, memory and latency of its own
/// server, which a neighbouring case would disturb. Held for the whole case; a case
/// that panicked leaves the lock usable.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Prints a case's figure, so a run (`--nocapture`) shows what was measured.
pub fn report(case: &str, figure: impl std::fmt::Display) {
    eprintln!("[adversarial {:?}] {case}: {figure}", Scale::get());
}

/// `switchboard echo` as a child process on a port of its own (TCP and UDP), logging
/// at info level with the counters every second; stderr is collected as it comes.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts `switchboard echo` with `flags` and waits until it listens.
    #[track_caller]
    pub fn start(flags: &[&str]) -> Server {
        Server::start_with_nofile(flags, None)
    }

    /// Like [`Server::start`], with the open-file limit (soft and hard: the server raises
    /// its soft limit to the hard one) set to `nofile` before it runs.
    #[track_caller]
    pub fn start_with_nofile(flags: &[&str], nofile: Option<u64>) -> Server {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let endpoint = addr.to_string();
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command
            .args(["echo", "--tcp", &endpoint, "--udp", &endpoint])
            .args(["--log-level", "info", "--stats-interval", "1"])
            .args(["--shutdown-grace", "1"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(limit) = nofile {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit is async-signal-safe, and runs in the forked child
            // before exec with a value that lives on this stack.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command.spawn().expect("spawn switchboard");
        let mut pipe = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let mut server = Server {
            child,
            addr,
            log,
            reader: Some(reader),
        };
        // The log says when the listener is up; a probing connect would count as a
        // connection of its own.
        let wanted = format!("listening on tcp {addr}");
        let started = wait_until(Duration::from_secs(10), || {
            server.log().contains(&wanted) || server.exited()
        });
        assert!(
            started && !server.exited(),
            "server did not start listening on {addr}:\n{}",
            server.log()
        );
        server
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// Open file descriptors, from `/proc/PID/fd`.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    /// Resident memory in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// CPU time used so far (user + system), from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/PID/stat");
        // The command name may hold spaces: fields are counted after its ')'.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_micros(ticks * 1_000_000 / per_second)
    }

    /// Waits until the server holds at most `fds` descriptors; returns how long it took.
    #[track_caller]
    pub fn wait_fds_at_most(&self, fds: usize, limit: Duration) -> Duration {
        let start = Instant::now();
        let done = wait_until(limit, || self.fds() <= fds);
        assert!(
            done,
            "server still holds {} fds after {limit:?}, wanted at most {fds}",
            self.fds()
        );
        start.elapsed()
    }

    /// Asks for a graceful stop (SIGTERM), waits for the exit and returns the summary
    /// it logged.
    #[track_caller]
    pub fn stop(mut self) -> Summary {
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let exited = wait_until(Duration::from_secs(15), || self.exited());
        assert!(exited, "server did not exit after SIGTERM:\n{}", self.log());
        self.reader.take().unwrap().join().unwrap();
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find_map(|line| line.split_once("served: ").map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no summary in the log:\n{log}"));
        Summary::parse(line)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The counters the server logs as it stops (`served: conns: ...`).
#[derive(Debug)]
pub struct Summary {
    pub line: String,
    /// Closes by reason (`peer_closed`, `reset`, `frame_timeout`, ...).
    pub closed: HashMap<String, u64>,
    pub accepted: u64,
    pub datagrams_in: u64,
    pub accept_errors: u64,
}

impl Summary {
    fn parse(line: &str) -> Summary {
        let number_before = |word: &str| -> u64 {
            line.split(", ")
                .flat_map(|part| part.split("; "))
                .find_map(|part| part.trim().strip_suffix(word))
                .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                .unwrap_or(0)
        };
        let mut closed = HashMap::new();
        if let Some((_, rest)) = line.split_once("closed (") {
            let inner = &rest[..rest.find(')').unwrap_or(rest.len())];
            for part in inner.split(", ").filter(|p| !p.is_empty()) {
                if let Some((name, count)) = part.rsplit_once(' ') {
                    closed.insert(name.to_owned(), count.parse().unwrap_or(0));
                }
            }
        }
        let after = |key: &str| -> u64 {
            line.split_once(key)
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let datagrams_in = line
            .split_once("datagrams in/out ")
            .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
            .unwrap_or(0);
        Summary {
            line: line.to_owned(),
            closed,
            accepted: number_before(" accepted"),
            datagrams_in,
            accept_errors: after("accept errors "),
        }
    }

    /// Connections closed for `reason`.
    pub fn closed(&self, reason: &str) -> u64 {
        self.closed.get(reason).copied().unwrap_or(0)
    }
}

/// A connection to `server` from 127.0.0.`1 + source % 8`, so tens of thousands of
/// connects do not run out of one address's ephemeral ports.
pub fn connect_from(source: usize, server: SocketAddr) -> io::Result<TcpStream> {
    connect_with(source, server, None)
}

/// A connection like [`connect_from`] for a peer that will not read: its receive
/// buffer is fixed small (64 KiB, doubled by the kernel) before the connect, so it
/// cannot grow to `tcp_rmem`'s maximum (32 MiB here) and swallow the echo; what the
/// peer does not read then piles up in the server, where the test wants it.
pub fn connect_non_reader(source: usize, server: SocketAddr) -> io::Result<TcpStream> {
    connect_with(source, server, Some(64 * 1024))
}

fn connect_with(source: usize, server: SocketAddr, rcvbuf: Option<usize>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    let ip = Ipv4Addr::new(127, 0, 0, 1 + (source % 8) as u8);
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())?;
    socket.connect_timeout(&server.into(), Duration::from_secs(10))?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Closes `stream` with a reset (SO_LINGER 0) instead of a FIN.
pub fn reset(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Sends `payload` as one frame and returns the reply and the round trip.
pub fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> io::Result<(Vec<u8>, Duration)> {
    let start = Instant::now();
    stream.write_all(&frame(payload))?;
    let reply = wire::read_frame(stream)?;
    Ok((reply, start.elapsed()))
}

/// Reads and discards until the server closes `stream` (EOF or reset); false if it is
/// still open after `limit`.
pub fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut sink = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Half-closes `stream`'s sending side, ignoring a peer that is already gone.
pub fn shut_write(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
}

/// A small deterministic generator (xorshift64*), so a failing run can be repeated.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The `p`-th percentile (0..=100) of `samples`, which it sorts.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// Pings `clients` connections, each once every `every`, until `stop` is set; returns
/// every round trip. `threads` threads share the connections, so a hundred clients do
/// not need a hundred threads competing with the server for two cores.
pub fn ping_clients(
    server: SocketAddr,
    clients: usize,
    threads: usize,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> JoinHandle<Vec<Duration>> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let workers: Vec<JoinHandle<Vec<Duration>>> = (0..threads)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut conns: Vec<TcpStream> = (t..clients)
                        .step_by(threads)
                        .map(|i| connect_from(i, server).expect("ping client connects"))
                        .collect();
                    let mut samples = Vec::new();
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let round = Instant::now();
                        for conn in &mut conns {
                            seq += 1;
                            let payload = format!("ping {t} {seq}").into_bytes();
                            let (reply, rtt) = round_trip(conn, &payload).expect("ping answered");
                            assert_eq!(reply, payload, "a ping came back changed");
                            samples.push(rtt);
                        }
                        if let Some(rest) = every.checked_sub(round.elapsed()) {
                            std::thread::sleep(rest);
                        }
                    }
                    samples
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("ping worker"))
            .collect()
    })
}

/// Writes `chunk` over and over (resuming a partial write where it stopped, so the
/// frames stay whole) until a write makes no progress for the stream's write timeout
/// or `cap` bytes went in; returns how many did.
pub fn write_until_stalled(stream: &mut TcpStream, chunk: &[u8], cap: usize) -> usize {
    let (mut sent, mut offset) = (0, 0);
    while sent < cap {
        match stream.write(&chunk[offset..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                sent += n;
                offset = (offset + n) % chunk.len();
            }
        }
    }
    sent
}
