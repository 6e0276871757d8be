//! Listening sockets inherited from a service manager: systemd socket activation and
//! `systemfd` pass them as descriptors 3, 4, ... with `LISTEN_FDS` (how many) and
//! `LISTEN_PID` (the process they are meant for), read here through `listenfd`.
//!
//! The manager keeps its own copy of each socket, so the socket outlives any one
//! server: a restart closes nothing, and connections that arrive between two servers
//! wait in the backlog for the next one (docs/operations.md).

use std::fmt;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;

use listenfd::ListenFd;

use crate::{Error, Reactor, Service};

/// The stream listeners this process was given, in descriptor order.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Each listener, with its position among the inherited descriptors (from 0).
    listeners: Vec<(usize, Socket)>,
}

/// One inherited listener.
#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// An inherited descriptor that is not a stream listener switchboard can serve.
#[derive(Debug)]
pub struct NotAListener {
    /// Its position among the inherited descriptors (from 0, usually descriptor 3).
    pub index: usize,
    /// Why `listenfd` refused it as a TCP listener.
    pub tcp: std::io::Error,
    /// Why it refused it as a Unix-domain one.
    pub unix: std::io::Error,
}

impl fmt::Display for NotAListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "inherited socket {} of LISTEN_FDS is neither a TCP nor a Unix stream socket ({}; {})",
            self.index, self.tcp, self.unix
        )
    }
}

impl std::error::Error for NotAListener {}

impl Inherited {
    /// Takes the listeners `LISTEN_FDS` announces for this process (none when it is
    /// unset, or `LISTEN_PID` names another process). `listenfd` clears both
    /// variables, so a process this one starts does not take the sockets too.
    pub fn from_env() -> Result<Inherited, NotAListener> {
        let mut fds = ListenFd::from_env();
        let mut listeners = Vec::with_capacity(fds.len());
        for index in 0..fds.len() {
            let socket = match fds.take_tcp_listener(index) {
                Ok(Some(tcp)) => Socket::Tcp(tcp),
                Ok(None) => continue,
                Err(tcp) => match fds.take_unix_listener(index) {
                    Ok(Some(unix)) => Socket::Unix(unix),
                    Ok(None) => continue,
                    Err(unix) => return Err(NotAListener { index, tcp, unix }),
                },
            };
            listeners.push((index, socket));
        }
        Ok(Inherited { listeners })
    }

    /// True when no listener was inherited.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// Hands every inherited listener to `reactor`, each framed by `codec`; the
    /// reactor logs one "listening on ... (inherited)" line for each.
    pub fn adopt<S>(self, reactor: &mut Reactor<S>, codec: &S::Codec) -> Result<(), Error>
    where
        S: Service,
        S::Codec: Clone,
    {
        for (index, socket) in self.listeners {
            log::debug!("adopting inherited socket {index}");
            match socket {
                Socket::Tcp(listener) => reactor.adopt_tcp(listener, codec.clone())?,
                Socket::Unix(listener) => reactor.adopt_unix(listener, codec.clone())?,
            };
        }
        Ok(())
    }
}
