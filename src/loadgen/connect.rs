//! Reaching the server: a blocking probe first (so "nothing listens" is one clear
//! error, not thousands of failed connections), then every client socket opened
//! without blocking, a bounded number at a time.
//!
//! Opening is paced because a burst of 20,000 SYNs overflows the server's accept
//! backlog; a dropped SYN is retried by the kernel only after a second or more, which
//! would turn a fast setup into a slow one.

use std::io;
use std::net::{SocketAddr, TcpStream as StdTcpStream, UdpSocket};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{LoadError, Mode, Options};

/// How long the probe waits for the server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections being opened at once (well under the usual backlog of 1024).
const MAX_PENDING: usize = 256;

/// Checks that the server answers: a TCP connect, or for UDP one datagram echoed.
pub fn probe(options: &Options) -> Result<(), LoadError> {
    let unreachable = |source| LoadError::Unreachable {
        addr: options.addr,
        source,
    };
    if options.mode == Mode::Udp {
        return probe_udp(options).map_err(unreachable);
    }
    StdTcpStream::connect_timeout(&options.addr, PROBE_TIMEOUT)
        .map(drop)
        .map_err(unreachable)
}

fn probe_udp(options: &Options) -> io::Result<()> {
    let local: SocketAddr = match options.addr {
        SocketAddr::V4(_) => ([127, 0, 0, 1], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(options.addr)?;
    socket.set_read_timeout(Some(PROBE_TIMEOUT))?;
    socket.send(b"switchboard bench probe")?;
    let mut reply = [0u8; 64];
    match socket.recv(&mut reply) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no UDP echo within {PROBE_TIMEOUT:?}"),
            ))
        }
        Err(e) => Err(e),
    }
}

/// The connections a run opened.
#[derive(Debug, Default)]
pub struct Opened {
    /// Connected sockets for the workload, in order (some may be missing on failure).
    pub active: Vec<TcpStream>,
    /// Connected sockets to hold idle.
    pub idle: Vec<TcpStream>,
    /// Sockets that could not be connected.
    pub failures: u64,
    /// The first failure, for the error message.
    pub first_failure: Option<io::Error>,
}

/// One socket being opened.
struct Pending {
    stream: TcpStream,
    /// Its number: idle sockets come first, then active ones.
    index: usize,
}

/// Opens `idle` then `active` connections to the server, registering each with `poll`
/// under its index, and returns once all are connected or failed, or the options'
/// connect timeout passes.
pub fn open_all(
    poll: &mut Poll,
    events: &mut Events,
    options: &Options,
    idle: usize,
    active: usize,
) -> io::Result<Opened> {
    let total = idle + active;
    let deadline = Instant::now() + options.connect_timeout;
    let mut opened = Opened::default();
    let mut slots: Vec<Option<Pending>> = (0..total).map(|_| None).collect();
    let mut next = 0;
    let mut pending = 0;
    while next < total || pending > 0 {
        while next < total && pending < MAX_PENDING {
            match start_connect(options, next) {
                Ok(mut stream) => {
                    poll.registry()
                        .register(&mut stream, Token(next), Interest::WRITABLE)?;
                    slots[next] = Some(Pending {
                        stream,
                        index: next,
                    });
                    pending += 1;
                }
                Err(e) => opened.fail(e),
            }
            next += 1;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        poll.poll(events, Some(deadline - now))?;
        for event in events.iter() {
            let Some(slot) = slots.get_mut(event.token().0) else {
                continue;
            };
            if let Some(done) = finish_connect(slot) {
                pending -= 1;
                opened.settle(done, idle);
            }
        }
    }
    for slot in slots.iter_mut().filter(|s| s.is_some()) {
        *slot = None;
        opened.fail(io::Error::new(
            io::ErrorKind::TimedOut,
            "connect did not finish in time",
        ));
    }
    Ok(opened)
}

impl Opened {
    fn fail(&mut self, e: io::Error) {
        self.failures += 1;
        self.first_failure.get_or_insert(e);
    }

    fn settle(&mut self, done: Result<Pending, io::Error>, idle: usize) {
        match done {
            Ok(p) if p.index < idle => self.idle.push(p.stream),
            Ok(p) => self.active.push(p.stream),
            Err(e) => self.fail(e),
        }
    }
}

/// Starts a non-blocking connect for socket number `index`.
fn start_connect(options: &Options, index: usize) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(options.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(source) = options.source_ip(index) {
        socket.bind(&SockAddr::from(source))?;
    }
    match socket.connect(&SockAddr::from(options.addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(StdTcpStream::from(socket)))
}

/// EINPROGRESS: a non-blocking connect has started (std has no stable `ErrorKind`
/// for it yet).
#[cfg(target_os = "linux")]
const EINPROGRESS: i32 = 115;
#[cfg(not(target_os = "linux"))]
const EINPROGRESS: i32 = 36;

/// Checks a socket that reported writable: `Some(Ok)` once connected, `Some(Err)` when
/// the connect failed, `None` while still in progress (a spurious wakeup).
fn finish_connect(slot: &mut Option<Pending>) -> Option<Result<Pending, io::Error>> {
    let pending = slot.as_ref()?;
    if let Ok(Some(e)) | Err(e) = pending.stream.take_error() {
        slot.take();
        return Some(Err(e));
    }
    match pending.stream.peer_addr() {
        Ok(_) => slot.take().map(Ok),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
        Err(e) => {
            slot.take();
            Some(Err(e))
        }
    }
}
