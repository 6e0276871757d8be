//! Opening the sockets the reactor serves: TCP listeners (through socket2, for
//! SO_REUSEADDR, SO_REUSEPORT and an explicit backlog), Unix-domain listeners and UDP
//! sockets, all non-blocking.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mio::net::{TcpListener, UdpSocket, UnixListener};
use socket2::{Domain, Protocol, Socket, Type};

use crate::connection::{PeerAddr, Stream};

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
/// server silently share the port instead of reporting it in use.
pub(crate) fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
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
    Unix(UnixListener, PathBuf),
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
        if let Listener::Unix(_, path) = self {
            // The socket file outlives the socket; leave no stale file behind.
            let _ = std::fs::remove_file(path);
        }
    }
}
