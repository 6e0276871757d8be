//! Endpoints: where connections come from and go to, each with its codec; and opening
//! the sockets behind them, all non-blocking: TCP listeners (through socket2, for
//! SO_REUSEADDR, SO_REUSEPORT and an explicit backlog), Unix-domain listeners, UDP
//! sockets, and outbound connections ([`Dial`]).
//!
//! A stream endpoint is a listener, or an *outbound* endpoint that dialled connections
//! go through. Either way its [`EndpointId`] names the codec that frames its
//! connections, and the service learns it in [`crate::Service::on_connect`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::connection::{PeerAddr, Stream};

/// Names one stream endpoint of a reactor: a listener, or an outbound endpoint (see
/// [`crate::Reactor::outbound`]). Its codec frames every connection made through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub(crate) u16);

impl EndpointId {
    /// Position among the reactor's stream endpoints, from 0, in the order they were
    /// added: the configured TCP listeners, then the Unix ones, then the default
    /// outbound endpoint, then whatever was added later.
    pub fn index(&self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint {}", self.0)
    }
}

/// What an endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointKind {
    /// A listener at this address: its connections are accepted.
    Listener(BoundAddr),
    /// Connections the service dials go through it.
    Outbound,
}

/// A stream endpoint: what it is and the codec of its connections.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint<C> {
    pub kind: EndpointKind,
    pub codec: C,
    /// What its accepted connections are served over TLS with, if they are.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsServer>,
}

/// Every stream endpoint of a reactor, and its default codec. Kept apart from the hub,
/// so the read path can hold a connection's codec while it lends the hub to the service.
#[derive(Debug)]
pub(crate) struct Endpoints<C> {
    /// Indexed by [`EndpointId`].
    pub list: Vec<Endpoint<C>>,
    /// The codec given to `Reactor::bind`: [`crate::Context::shared_frame`] uses it.
    pub default_codec: C,
    /// Where dials go when they name no endpoint.
    pub default_outbound: EndpointId,
}

impl<C> Endpoints<C> {
    /// The codec of the endpoint with this index.
    #[inline(always)]
    pub(crate) fn codec(&self, index: u16) -> &C {
        &self.list[index as usize].codec
    }

    /// Adds an endpoint; its id is its position.
    pub(crate) fn add(&mut self, kind: EndpointKind, codec: C) -> EndpointId {
        let id = EndpointId(self.list.len() as u16);
        self.list.push(Endpoint {
            kind,
            codec,
            #[cfg(feature = "tls")]
            tls: None,
        });
        id
    }
}

/// A stream address to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP listener (port 0: the system picks one).
    Tcp(SocketAddr),
    /// A Unix-domain stream listener at this path.
    Unix(PathBuf),
}

/// Where to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix-domain socket path.
    Unix(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "tcp {addr}"),
            Target::Unix(path) => write!(f, "unix {}", path.display()),
        }
    }
}

/// An outbound connection to open with [`crate::Context::connect`] (or
/// [`crate::Reactor::connect`] before the loop runs).
///
/// ```
/// use std::time::Duration;
/// use switchboard::Dial;
/// let dial = Dial::tcp("127.0.0.1:6379".parse().unwrap())
///     .timeout(Duration::from_secs(2))
///     .bind("127.0.0.2:0".parse().unwrap());
/// assert_eq!(dial.target().to_string(), "tcp 127.0.0.1:6379");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    pub(crate) target: Target,
    /// The outbound endpoint whose codec frames it; `None`: the reactor's default.
    pub(crate) endpoint: Option<EndpointId>,
    /// How long the connect may take; `None`: the configured connect timeout.
    pub(crate) timeout: Option<Duration>,
    /// The local address to connect from (TCP only).
    pub(crate) local: Option<SocketAddr>,
    /// Speak TLS over the connection, checking the server's certificate against this
    /// name.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::DialTls>,
}

impl Dial {
    /// A TCP connection to `addr`.
    pub fn tcp(addr: SocketAddr) -> Dial {
        Dial::to(Target::Tcp(addr))
    }

    /// A Unix-domain connection to the socket at `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Dial {
        Dial::to(Target::Unix(path.into()))
    }

    fn to(target: Target) -> Dial {
        Dial {
            target,
            endpoint: None,
            timeout: None,
            local: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Speaks TLS over the connection (feature `tls`): trusting what `client` trusts,
    /// and checking the server's certificate against `server_name` (a DNS name or an
    /// IP address; it is also sent as SNI when it is a name). The service sends and
    /// receives plaintext as on any connection; what it sends before the handshake
    /// completes waits for it.
    #[cfg(feature = "tls")]
    pub fn tls(
        mut self,
        client: &crate::tls::TlsClient,
        server_name: &str,
    ) -> Result<Dial, crate::tls::TlsError> {
        self.tls = Some(crate::tls::DialTls::new(client, server_name)?);
        Ok(self)
    }

    /// Frames the connection with this outbound endpoint's codec (see
    /// [`crate::Reactor::outbound`]) instead of the reactor's default one.
    pub fn endpoint(mut self, endpoint: EndpointId) -> Dial {
        self.endpoint = Some(endpoint);
        self
    }

    /// Gives up, with [`crate::CloseReason::ConnectTimeout`], if the connection is not
    /// up within `timeout` (default: [`crate::Config::connect_timeout`]).
    pub fn timeout(mut self, timeout: Duration) -> Dial {
        self.timeout = Some(timeout);
        self
    }

    /// Connects from this local address (TCP; port 0 lets the system pick; on Linux with
    /// feature `loadgen`, at connect time, so a port is shared by connections to
    /// different peers): a load
    /// generator spreads its connections over 127.0.0.x this way, beyond the ephemeral
    /// ports of one address.
    pub fn bind(mut self, local: SocketAddr) -> Dial {
        self.local = Some(local);
        self
    }

    /// Where it dials.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

/// A dial that failed before it began: no socket could be made, or (Unix) nothing
/// listens at the path. The service's state for the connection comes back with it.
/// Failures after the connect began (refused, timed out) arrive instead as
/// [`crate::Service::on_close`].
#[derive(Debug)]
pub struct DialError<T> {
    /// What the operating system said.
    pub error: io::Error,
    /// The state that was to go with the connection.
    pub state: T,
}

impl<T> fmt::Display for DialError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot dial: {}", self.error)
    }
}

impl<T: fmt::Debug> std::error::Error for DialError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Starts a non-blocking connect. `Ok` means the connect is in flight (or done): the
/// loop learns the outcome from the socket's first writable event.
pub(crate) fn start_connect(dial: &Dial) -> io::Result<Stream> {
    match &dial.target {
        Target::Tcp(addr) => {
            let socket = Socket::new(
                Domain::for_address(*addr),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            socket.set_nonblocking(true)?;
            // Frames are whole messages written in one call: Nagle would only delay them.
            socket.set_tcp_nodelay(true)?;
            if let Some(local) = dial.local {
                if local.port() == 0 {
                    defer_port_choice(&socket);
                }
                socket.bind(&local.into())?;
            }
            match socket.connect(&SockAddr::from(*addr)) {
                Ok(()) => {}
                Err(e) if is_in_progress(&e) => {}
                Err(e) => return Err(e),
            }
            Ok(Stream::Tcp(TcpStream::from_std(socket.into())))
        }
        Target::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path)?)),
    }
}

/// Lets `connect` pick the port of a socket bound to a source address with port 0
/// (IP_BIND_ADDRESS_NO_PORT): a port picked at `bind` must be free on that address
/// for every peer, so tens of thousands of dials (and the TIME_WAIT sockets of a
/// previous run) exhaust the ephemeral range; at `connect`, only the 4-tuple must be
/// unique. Where the option is missing, the bind picks the port as before.
#[cfg(all(target_os = "linux", feature = "loadgen"))]
fn defer_port_choice(socket: &Socket) {
    use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
    if let Err(e) = setsockopt(socket, IpBindAddressNoPort, &true) {
        log::debug!("IP_BIND_ADDRESS_NO_PORT not set: {e}");
    }
}

#[cfg(not(all(target_os = "linux", feature = "loadgen")))]
fn defer_port_choice(_: &Socket) {}

/// EINPROGRESS (a TCP connect under way) or EAGAIN/WouldBlock (a Unix listener's
/// backlog is full for now).
fn is_in_progress(e: &io::Error) -> bool {
    // EINPROGRESS is 115 on Linux, 36 on the BSDs and macOS.
    const EINPROGRESS: i32 = if cfg!(target_os = "linux") { 115 } else { 36 };
    e.raw_os_error() == Some(EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock
}

/// An endpoint the reactor has bound, with its real address (port 0 resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundAddr {
    /// A TCP listener.
    Tcp(SocketAddr),
    /// A UDP socket.
    Udp(SocketAddr),
    /// A Unix-domain stream listener.
    Unix(PathBuf),
}

impl fmt::Display for BoundAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundAddr::Tcp(addr) => write!(f, "tcp {addr}"),
            BoundAddr::Udp(addr) => write!(f, "udp {addr}"),
            BoundAddr::Unix(path) => write!(f, "unix {}", path.display()),
        }
    }
}

/// Opens a TCP listener: SO_REUSEADDR (so a restarted server binds at once while old
/// connections sit in TIME_WAIT), optionally SO_REUSEPORT, non-blocking, `listen(backlog)`.
pub(crate) fn bind_tcp(
    addr: SocketAddr,
    backlog: i32,
    reuse_port: bool,
) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // Serve exactly the address asked for; `[::]` does not also take IPv4 traffic.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Opens a UDP socket. No SO_REUSEADDR here: for UDP on Linux it would let a second
/// server silently share the port instead of reporting it in use. SO_REUSEPORT only
/// when asked for (the loops of a pool share a port that way, and the kernel spreads
/// datagrams over them by a hash of the source address).
pub(crate) fn bind_udp(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// Opens a Unix-domain listener at `path`. A socket file left behind by a server that
/// is gone is removed first; one that a live server answers on is "address in use".
pub(crate) fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "a server is already listening on this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    UnixListener::bind(path)
}

/// A listening socket of either family.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    /// With the socket file this reactor created, removed when the listener closes;
    /// `None` for an inherited listener, whose file belongs to whoever made it (a
    /// service manager keeps it across restarts).
    Unix(UnixListener, Option<PathBuf>),
}

impl Listener {
    /// Accepts one connection, with TCP_NODELAY set on TCP streams: our frames are
    /// complete messages written in one call, so Nagle's delay would only add latency.
    pub(crate) fn accept(&self) -> io::Result<(Stream, PeerAddr)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept()?;
                if let Err(e) = stream.set_nodelay(true) {
                    log::debug!("TCP_NODELAY on {peer}: {e}");
                }
                Ok((Stream::Tcp(stream), PeerAddr::Tcp(peer)))
            }
            Listener::Unix(listener, _) => {
                let (stream, _) = listener.accept()?;
                Ok((Stream::Unix(stream), PeerAddr::Unix))
            }
        }
    }

    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listener::Tcp(l) => l,
            Listener::Unix(l, _) => l,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, Some(path)) = self {
            // The socket file outlives the socket; leave no stale file behind.
            let _ = std::fs::remove_file(path);
        }
    }
}
