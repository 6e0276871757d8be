//! Graceful shutdown on SIGINT and SIGTERM, for any program built on the reactor
//! (feature `signals`; the command line uses it too).
//!
//! The signals arrive through a self-pipe that the reactor watches like a socket
//! ([`Reactor::watch`]), not through a signal thread: with a single thread the C library
//! skips its cancellation bookkeeping around every `recv`, `send` and `epoll_wait` (see
//! docs/benchmarks.md for what that saves).

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::{Error, Reactor, Service};

impl<S: Service + 'static> Reactor<S> {
    /// The first SIGINT or SIGTERM starts a graceful shutdown (stop accepting, call
    /// `on_stop`, drain within the grace period); a second one stops at once
    /// ([`crate::Handle::stop_now`]), and [`crate::Stopped::forced`] says so.
    ///
    /// ```no_run
    /// use switchboard::{services::Echo, Config, LengthCodec, Reactor};
    /// let mut config = Config::default();
    /// config.tcp.push("127.0.0.1:9000".parse().unwrap());
    /// let mut reactor = Reactor::bind(config, Echo::default(), LengthCodec::new(1 << 20)).unwrap();
    /// reactor.stop_on_signals().unwrap();
    /// let stopped = reactor.run().unwrap(); // returns after Ctrl-C
    /// ```
    pub fn stop_on_signals(&mut self) -> Result<(), Error> {
        let handle = self.handle();
        self.stop_loops_on_signals(vec![handle])
    }

    /// [`Reactor::stop_on_signals`] for every loop of a pool: this loop watches the
    /// signals, and shuts down (or stops) each of `loops`, itself included.
    pub(crate) fn stop_loops_on_signals(
        &mut self,
        loops: Vec<crate::Handle<S>>,
    ) -> Result<(), Error> {
        // With TLS endpoints, SIGHUP reads their certificate and key again.
        #[cfg(feature = "tls")]
        let reload = self.config.tls.clone();
        #[cfg(not(feature = "tls"))]
        let reload: Option<std::convert::Infallible> = None;
        let mut watched = vec![SIGINT, SIGTERM];
        if reload.is_some() {
            watched.push(signal_hook::consts::SIGHUP);
        }
        let signals = Signals::new(watched).map_err(Error::Poll)?;
        let mut received = 0;
        self.watch(signals, move |signals| {
            for signal in signals.pending() {
                if signal == signal_hook::consts::SIGHUP {
                    #[cfg(feature = "tls")]
                    if let Some(tls) = &reload {
                        reload_certificate(tls);
                    }
                    continue;
                }
                received += 1;
                if received == 1 {
                    // Shut down first: if logging fails (stderr a closed pipe), the
                    // server must still stop.
                    loops.iter().for_each(|handle| handle.shutdown());
                    log::info!("signal {signal}: shutting down (again to stop at once)");
                } else {
                    loops.iter().for_each(|handle| handle.stop_now());
                    log::warn!("signal {signal} again: stopping now");
                }
            }
        })
    }
}

/// SIGHUP: the TLS endpoints' certificate and key, read again. New handshakes use
/// them; connections made before keep theirs. A file that cannot be read (or a key
/// that does not match) leaves the ones in use in place.
#[cfg(feature = "tls")]
fn reload_certificate(tls: &crate::tls::TlsServer) {
    match tls.reload() {
        Ok(()) => log::info!("SIGHUP: TLS certificate and key reloaded; new connections use them"),
        Err(e) => log::error!("SIGHUP: TLS certificate not reloaded, the one in use stays: {e}"),
    }
}
