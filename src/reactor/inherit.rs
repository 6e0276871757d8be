//! Listeners handed over already open: a service manager (systemd socket activation,
//! `systemfd` in development) binds the socket once and passes it to each server it
//! starts, so a restart never closes it. Connections that arrive while no server runs
//! wait in the socket's backlog, and the next server accepts them.
//!
//! An adopted listener is served exactly like one [`Reactor::listen`] opened: the same
//! accept path, budget and backoff, an endpoint with its own codec, closed at shutdown.
//! Closing it here closes this process's descriptor only; the socket lives on in the
//! process that handed it over.

use std::path::PathBuf;

use mio::net::{TcpListener, UnixListener};

use super::Reactor;
use crate::endpoint::{BoundAddr, EndpointId, Listener};
use crate::error::Error;
use crate::service::Service;

impl<S: Service> Reactor<S> {
    /// Serves a TCP listener that is already bound and listening (one inherited from a
    /// service manager), framed by `codec`: it is made non-blocking and registered like
    /// the listeners [`Reactor::listen`] opens, and logged as
    /// `listening on tcp ADDR (inherited)`. Returns the endpoint the service will see
    /// in [`crate::Origin::Accepted`].
    ///
    /// ```
    /// # use switchboard::{Config, LengthCodec, Reactor, services::Echo};
    /// let codec = LengthCodec::new(1 << 20);
    /// let mut reactor = Reactor::bind(Config::default(), Echo::default(), codec.clone())?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let endpoint = reactor.adopt_tcp(listener, codec)?;
    /// assert_eq!(reactor.listener_endpoints()[0].0, endpoint);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn adopt_tcp(
        &mut self,
        listener: std::net::TcpListener,
        codec: S::Codec,
    ) -> Result<EndpointId, Error> {
        let unusable = |source| Error::Inherited {
            endpoint: "tcp listener".to_string(),
            source,
        };
        listener.set_nonblocking(true).map_err(unusable)?;
        let local = listener.local_addr().map_err(unusable)?;
        let listener = Listener::Tcp(TcpListener::from_std(listener));
        self.serve_listener(listener, BoundAddr::Tcp(local), codec, " (inherited)")
    }

    /// Serves a Unix-domain stream listener that is already bound and listening, as
    /// [`Reactor::adopt_tcp`] does a TCP one. Its socket file is left in place when the
    /// listener closes: it belongs to whoever made it.
    pub fn adopt_unix(
        &mut self,
        listener: std::os::unix::net::UnixListener,
        codec: S::Codec,
    ) -> Result<EndpointId, Error> {
        let unusable = |source| Error::Inherited {
            endpoint: "unix listener".to_string(),
            source,
        };
        listener.set_nonblocking(true).map_err(unusable)?;
        let local = listener.local_addr().map_err(unusable)?;
        let path = local
            .as_pathname()
            .map_or_else(|| PathBuf::from("(unnamed)"), PathBuf::from);
        let listener = Listener::Unix(UnixListener::from_std(listener), None);
        self.serve_listener(listener, BoundAddr::Unix(path), codec, " (inherited)")
    }
}
