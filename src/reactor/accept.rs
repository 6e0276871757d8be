//! Accepting connections: draining the listener's backlog, the `--max-conns` limit,
//! and backing off instead of spinning when file descriptors run out.

use std::io;
use std::time::Instant;

use mio::Token;

use super::{Dealt, KeptBecause, Reactor, ACCEPT_RETRY, LISTENER_BASE, WARN_INTERVAL};
use crate::connection::Stream;
use crate::endpoint::EndpointId;
use crate::hub::TimerEvent;
use crate::service::{Origin, Service};

impl<S: Service> Reactor<S> {
    /// Accepts until `WouldBlock` or the accept budget, registering each new
    /// connection. With the budget spent, the listener waits on the ready-again list
    /// for the next turn: the connections that already have events are served first,
    /// so a storm of connects slows new arrivals, not the established clients.
    pub(super) fn accept(&mut self, index: usize) {
        for _ in 0..self.config.accept_budget {
            let Some(slot) = self.listeners.get(index).filter(|slot| !slot.paused) else {
                return;
            };
            match slot.listener.accept() {
                Ok((stream, peer)) => {
                    if self.hub.conns.len() >= self.config.max_conns {
                        // Accept and close at once, so the backlog does not fill up
                        // with connections that would wait for ever.
                        drop(stream);
                        self.hub.stats.rejected += 1;
                        if rate_limit(&mut self.last_reject_warning, self.hub.now) {
                            log::warn!(
                                "max-conns ({}) reached: rejecting connections ({} so far, latest from {peer})",
                                self.config.max_conns,
                                self.hub.stats.rejected
                            );
                        }
                        continue;
                    }
                    log::debug!("accepted {peer}");
                    let endpoint = slot.endpoint;
                    match self.handover.deal(stream, endpoint) {
                        Dealt::Passed => self.hub.stats.handed_over += 1,
                        Dealt::Kept(stream, why) => {
                            if why == KeptBecause::Full {
                                self.hub.stats.handover_full += 1;
                            }
                            self.register_connection(stream, endpoint);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.hub.stats.accept_errors += 1;
                    if is_resource_exhaustion(&e) {
                        // Out of file descriptors: the pending connection stays in the
                        // backlog and accept would fail again at once. Pause instead
                        // of spinning, and retry when some have been closed.
                        if rate_limit(&mut self.last_accept_warning, self.hub.now) {
                            log::warn!("accept: {e}; pausing accepts for {ACCEPT_RETRY:?}");
                        }
                        self.listeners[index].paused = true;
                        let at = self.hub.now + ACCEPT_RETRY;
                        self.hub.timers.insert(at, TimerEvent::AcceptRetry(index));
                        return;
                    }
                    log::debug!("accept: {e}");
                }
            }
        }
        log::trace!(
            "listener {index}: accept budget of {} spent: the rest wait for the next turn",
            self.config.accept_budget
        );
        self.hub.ready_again.push(Token(LISTENER_BASE + index));
    }

    pub(super) fn register_connection(&mut self, stream: Stream, endpoint: EndpointId) {
        match self
            .hub
            .insert_connection(stream, endpoint, S::Conn::default(), false)
        {
            Ok(id) => {
                self.hub.stats.accepted += 1;
                #[cfg(feature = "tls")]
                if let Some(server) = &self.endpoints.list[endpoint.index()].tls {
                    let made = crate::tls::TlsLayer::server(server.config());
                    self.hub.add_tls_layer(id, made);
                }
                self.connection_opened(id, Origin::Accepted(endpoint));
            }
            Err((e, _)) => log::error!("cannot register a new connection: {e}"),
        }
    }
}

/// True when `accept` failed for lack of file descriptors or memory: conditions that
/// last, unlike a connection aborted before it was accepted.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE (24) and ENFILE (23) are the same on Linux, the BSDs and macOS; ENOMEM is 12.
    matches!(e.raw_os_error(), Some(23) | Some(24) | Some(12))
}

/// True (and records `now`) if the last warning of this kind is old enough.
fn rate_limit(last: &mut Option<Instant>, now: Instant) -> bool {
    match last {
        Some(at) if now.duration_since(*at) < WARN_INTERVAL => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}
