//! Ending a run early on SIGINT or SIGTERM (feature `signals`), the way
//! [`crate::Reactor::stop_on_signals`] ends a server: the signal pipe is watched by the
//! run's own reactor, with no thread of its own.
//!
//! The difference is what the first signal does. A server shuts down; a run has a
//! measured window to close first, so the first signal asks the run to stop
//! ([`Bench::interrupt`]) and the run ends the window, drains the replies in flight and
//! shuts the loop down itself, leaving a summary of what was measured. A second signal
//! stops the loop at once, as it does for a server.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::bench::Bench;
use crate::{Error, Reactor};

/// Watches SIGINT and SIGTERM on `reactor`'s loop for the run it drives.
pub(super) fn on_signals(reactor: &mut Reactor<Bench>) -> Result<(), Error> {
    let signals = Signals::new([SIGINT, SIGTERM]).map_err(Error::Poll)?;
    let handle = reactor.handle();
    let mut received = 0;
    reactor.watch(signals, move |signals| {
        for _ in signals.pending() {
            received += 1;
            if received > 1 {
                handle.stop_now();
            } else if handle.post(|bench, ctx| bench.interrupt(ctx)).is_err() {
                // The inbox is full or the loop is ending: stop it from outside.
                handle.shutdown();
            }
        }
    })
}
