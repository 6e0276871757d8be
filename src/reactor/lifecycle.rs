//! A connection's life, in one place: every change of [`ConnState`] happens here.
//!
//! ```text
//!        dial (Context::connect)                       accept
//!              |                                          |
//!              v          connected: on_connect           v
//!        +------------+ ------------------------------> +------+ <-- pause / resume
//!        | Connecting |                                 | Open |     reading (service,
//!        +------------+                                 +------+     or backpressure)
//!              | refused / timed out         peer FIN   |    |  shutdown_write
//!              v                          +-------------+    +-------------+
//!            closed                       v                                v
//!                                 +------------+ on_peer_closed    +-----------+
//!                                 | PeerClosed | (default: close)  | WriteShut | FIN once
//!                                 +------------+                   +-----------+ written;
//!                                   |  close(Flush), shutdown_write      |  reads on
//!                                   v                                    | peer FIN
//!   Open, WriteShut -- close(Flush), shutdown --> +----------+ <---------+
//!                                                 | Draining |  no reading; writes
//!                                                 +----------+  what is queued
//!                                  output written |        | output written, and
//!                                  FIN sent       v        | the peer already closed
//!                                       +-----------+      v
//!                                       | Lingering | -> closed: peer FIN, or a quiet
//!                                       +-----------+    window, or 2.25 s at most
//!
//!   any state: a socket error, a protocol error, close(Now), close(Abort), the idle
//!   timeout, the frame deadline, the send timeout, the memory budget -> closed.
//!   closed: the slot is freed, on_close gets the state. Closes for cause (a protocol
//!   error, close(Abort), the send timeout, the memory budget) are resets: SO_LINGER
//!   0, so the kernel drops what it still holds for the peer.
//! ```
//!
//! A dial whose side the service shuts while it is still connecting goes straight to
//! WriteShut once it is up: what was queued for it is written, then the FIN.
//!
//! Lingering exists because closing a socket with unread input makes the kernel send a
//! RST, and a RST can destroy output the peer has not read yet: after our FIN we read
//! and discard until the peer closes, within limits.

use std::io;

use mio::Interest;

use super::write::set_writable_interest;
use super::Reactor;
use crate::connection::{ConnId, ConnState, Connection, Flag, IdleRule, Slot, Stream};
use crate::context::Context;
use crate::endpoint::{start_connect, Dial, DialError, EndpointId, Endpoints};
use crate::hub::{connection_mut, Hub, TimerEvent, LINGER_QUIET, LINGER_ROUNDS};
use crate::service::{Origin, Service};
use crate::stats::CloseReason;
use crate::timer::deadline_after;

impl<S: Service> Hub<S> {
    /// Puts a new connection in the slab and registers its socket; `Connecting` ones
    /// also wait for WRITABLE (how a connect reports its outcome).
    pub(crate) fn insert_connection(
        &mut self,
        stream: Stream,
        endpoint: EndpointId,
        state: S::Conn,
        connecting: bool,
    ) -> Result<ConnId, (io::Error, S::Conn)> {
        let interest = match connecting {
            true => Interest::READABLE | Interest::WRITABLE,
            false => Interest::READABLE,
        };
        let id = self.insert_slot(stream, endpoint.0, state, interest, |conn| {
            if connecting {
                conn.state = ConnState::Connecting;
                conn.flags.set(Flag::Dialled, true);
                conn.flags.set(Flag::WritableArmed, true);
            }
        })?;
        self.stats.active += 1;
        if !connecting {
            self.watch_idle(id);
        }
        Ok(id)
    }

    /// Puts a socket in the slab, registered for `interest` under its new id, with
    /// `prepare` setting its first state: what every connection's start shares (the
    /// service's, and the admin endpoint's).
    pub(crate) fn insert_slot(
        &mut self,
        mut stream: Stream,
        endpoint: u16,
        state: S::Conn,
        interest: Interest,
        prepare: impl FnOnce(&mut Connection),
    ) -> Result<ConnId, (io::Error, S::Conn)> {
        let generation = self.next_generation();
        let now = self.now_millis();
        let entry = self.conns.vacant_entry();
        let id = ConnId::new(entry.key(), generation);
        if let Err(e) = self.registry.register(&mut stream, id.token(), interest) {
            return Err((e, state));
        }
        let mut conn = Connection::new(stream, generation, endpoint, now);
        prepare(&mut conn);
        entry.insert(Slot {
            conn,
            decode: Default::default(),
            state,
        });
        Ok(id)
    }

    /// Starts an outbound connection (see [`crate::Context::connect`]).
    pub(crate) fn dial(
        &mut self,
        dial: Dial,
        state: S::Conn,
        endpoints: &Endpoints<S::Codec>,
    ) -> Result<ConnId, DialError<S::Conn>> {
        let endpoint = dial.endpoint.unwrap_or(endpoints.default_outbound);
        if endpoint.index() >= endpoints.list.len() {
            let error = io::Error::new(io::ErrorKind::InvalidInput, "no such endpoint");
            return Err(DialError { error, state });
        }
        let stream = match start_connect(&dial) {
            Ok(stream) => stream,
            Err(error) => {
                log::debug!("dial {}: {error}", dial.target);
                return Err(DialError { error, state });
            }
        };
        let id = self
            .insert_connection(stream, endpoint, state, true)
            .map_err(|(error, state)| DialError { error, state })?;
        self.stats.dialled += 1;
        #[cfg(feature = "tls")]
        if let Some(tls) = &dial.tls {
            let made = crate::tls::TlsLayer::client(tls.client.config(), tls.server_name.clone());
            self.add_tls_layer(id, made);
        }
        let timeout = dial.timeout.unwrap_or(self.limits.connect_timeout);
        self.timers.insert(
            deadline_after(self.now, timeout),
            TimerEvent::ConnectDeadline(id),
        );
        log::debug!("{id}: dialling {}", dial.target);
        Ok(id)
    }

    /// Enters a connection into the shared idle list, when the reactor's idle timeout
    /// applies to it.
    fn watch_idle(&mut self, id: ConnId) {
        let applies = self.limits.idle_timeout_millis.is_some()
            && self
                .conn(id)
                .is_some_and(|c| c.idle_rule == IdleRule::REACTOR);
        if applies {
            self.idle.push_back(&mut self.conns, id.index());
        }
    }

    /// Stops reading from a connection and closes it with `reason` once its output is
    /// written (at once if nothing is queued).
    pub(crate) fn close_after_flush(&mut self, id: ConnId, reason: CloseReason) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        match conn.state {
            ConnState::Draining(_) | ConnState::Lingering(_) => return,
            // Nothing was ever sent on it: there is nothing to flush.
            ConnState::Connecting => return self.request_close(id, reason),
            ConnState::Open
            | ConnState::PeerClosed
            | ConnState::WriteShut { .. }
            | ConnState::AdminRequest => {}
        }
        // A connection whose FIN is out already lingers at once.
        let fin_sent = conn.state == ConnState::WriteShut { fin_sent: true };
        conn.state = ConnState::Draining(reason);
        if conn.output.is_empty() || fin_sent {
            self.finish_draining(id, reason);
        } else {
            self.list_for_flush(id);
        }
    }

    /// The service shuts our side: FIN once the queue is written; reading goes on.
    pub(crate) fn shutdown_write(&mut self, id: ConnId) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        match conn.state {
            ConnState::Open => {
                conn.state = ConnState::WriteShut { fin_sent: false };
                if conn.output.is_empty() {
                    self.output_written(id);
                }
            }
            // Both sides done: close once the output is written.
            ConnState::PeerClosed => self.close_after_flush(id, CloseReason::PeerClosed),
            // Not up yet: the FIN follows the connect and what was queued for it.
            ConnState::Connecting => conn.flags.set(Flag::ShutOnceConnected, true),
            // (The service never holds an admin connection's id.)
            ConnState::WriteShut { .. }
            | ConnState::Draining(_)
            | ConnState::Lingering(_)
            | ConnState::AdminRequest => {}
        }
    }

    /// A connection's queue has just been written out: what its state does next.
    pub(crate) fn output_written(&mut self, id: ConnId) {
        if !self.close_notify_written(id) {
            return; // the socket is full: WRITABLE brings us back
        }
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        match conn.state {
            ConnState::Draining(reason) => self.finish_draining(id, reason),
            ConnState::WriteShut { fin_sent: false } => {
                conn.stream.shutdown_write();
                conn.state = ConnState::WriteShut { fin_sent: true };
                log::trace!("{id}: output written, FIN sent; reading until the peer closes");
            }
            _ => {}
        }
    }

    /// Before a FIN on a TLS connection: its `close_notify` alert, so the peer can
    /// tell the end of the stream from a cut. True when the FIN may follow (nothing to
    /// send, or all of it written); false while the alert waits for the socket, or when
    /// writing it failed (the connection closes).
    fn close_notify_written(&mut self, id: ConnId) -> bool {
        let Some(conn) = connection_mut(&mut self.conns, id) else {
            return true;
        };
        let fin_next = matches!(
            conn.state,
            ConnState::Draining(_) | ConnState::WriteShut { fin_sent: false }
        );
        let Some(layer) = self.tls.get_mut(id).filter(|_| fin_next) else {
            return true;
        };
        match layer.close_notify(&mut conn.stream) {
            Ok(true) => true,
            Ok(false) => {
                set_writable_interest(&self.registry, conn, id, true);
                self.arm_send_deadline(id);
                false
            }
            Err(e) => {
                log::debug!("{id}: TLS close_notify: {e}");
                self.request_close(id, CloseReason::from_io(e.kind()));
                false
            }
        }
    }

    /// Output flushed while draining: a connection whose peer already closed its side
    /// closes now; any other sends a FIN and lingers until the peer closes or goes
    /// quiet for [`LINGER_QUIET`].
    pub(crate) fn finish_draining(&mut self, id: ConnId, reason: CloseReason) {
        let now = self.now;
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if reason == CloseReason::PeerClosed || matches!(conn.state, ConnState::Lingering(_)) {
            self.request_close(id, reason);
            return;
        }
        conn.stream.shutdown_write();
        conn.state = ConnState::Lingering(reason);
        conn.flags.set(Flag::PeerStillSending, false);
        conn.linger_rounds = 0;
        log::trace!("{id}: output flushed, FIN sent; lingering until the peer closes");
        self.timers
            .insert(now + LINGER_QUIET, TimerEvent::LingerDeadline(id));
        // Input may be waiting already, and its readiness edge may be long gone.
        self.list_ready_again(id);
    }
}

impl<S: Service> Reactor<S> {
    /// A connection is up (accepted, or a dial that connected): the service hears
    /// `on_connect`, then whatever it queued meanwhile is written.
    pub(super) fn connection_opened(&mut self, id: ConnId, origin: Origin) {
        let Some(slot) = self.hub.slot_mut(id) else {
            return;
        };
        let mut state = std::mem::take(&mut slot.state);
        let ctx = &mut Context::new(&mut self.hub, &self.endpoints).lending(id);
        self.service.on_connect(ctx, id, &mut state, origin);
        self.give_back_state(id, state);
        self.carry_out_requests();
    }

    /// A shutdown has begun: reads what the peer has sent so far and hands its complete
    /// frames to the service, whose answers are written before the connection closes.
    ///
    /// What is read is what the socket holds now: until `WouldBlock` (or a short read),
    /// within the read budget. The read is made here, not left to a readiness event:
    /// mio is edge-triggered, and the event of input that arrived before the shutdown
    /// may still be on its way (a connection accepted in this turn or the last is
    /// reported after the waker that started the shutdown); by then the connection is
    /// lingering, and what it reads is thrown away. What arrives after this read,
    /// crossing our FIN, is thrown away, and the peer sees EOF with no answer to it.
    ///
    /// Only connections that are reading are read: not one that is connecting,
    /// closing already, or paused (by the service, or by its own output over the write
    /// limit: that output drains within the grace period, its unread input is not
    /// read).
    pub(super) fn read_before_closing(&mut self, id: ConnId) {
        let Some(conn) = self.hub.conn(id) else {
            return;
        };
        if !matches!(conn.state, ConnState::Open | ConnState::WriteShut { .. }) {
            return;
        }
        let read_to_eof = conn.flags.get(Flag::FinReported);
        self.read_connection(id, read_to_eof);
        self.carry_out_requests();
    }

    /// A `Connecting` connection's socket reported readiness: the connect has
    /// succeeded, failed, or (a spurious event) is still in flight.
    pub(super) fn complete_connect(&mut self, id: ConnId) {
        let Some(conn) = connection_mut(&mut self.hub.conns, id) else {
            return;
        };
        let outcome = match conn.stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => conn.stream.is_connected(),
        };
        match outcome {
            Ok(false) => {} // not yet
            Err(e) => {
                log::debug!("{id}: connect failed: {e}");
                self.hub
                    .request_close(id, CloseReason::ConnectFailed(e.kind()));
                self.carry_out_requests();
            }
            Ok(true) => {
                let shut = conn.flags.get(Flag::ShutOnceConnected);
                conn.state = match shut {
                    true => ConnState::WriteShut { fin_sent: false },
                    false => ConnState::Open,
                };
                // (A TLS client's first flight waits in its layer.)
                let tls_owes = self.hub.tls.get(id).is_some_and(|l| l.has_pending());
                let queued = !conn.output.is_empty() || tls_owes;
                // Keep WRITABLE only if output is waiting for the new connection.
                set_writable_interest(&self.hub.registry, conn, id, queued);
                let endpoint = EndpointId(conn.endpoint);
                log::debug!("{id}: connected");
                self.hub.touch(id);
                self.hub.watch_idle(id);
                self.connection_opened(id, Origin::Dialled(endpoint));
                if queued {
                    self.hub.flush(id);
                    self.carry_out_requests();
                } else if shut {
                    self.hub.output_written(id); // nothing to write first: the FIN now
                }
            }
        }
    }

    /// Removes a connection, frees its slot and tells the service, with its state.
    pub(super) fn close_connection(&mut self, id: ConnId, reason: CloseReason) {
        if self.hub.conn(id).is_none() {
            return; // closed already (a second request for the same connection)
        }
        self.hub.idle.unlink(&mut self.hub.conns, id.index());
        let Slot {
            conn: mut closing,
            state,
            ..
        } = self.hub.conns.remove(id.index());
        if let Err(e) = self.hub.registry.deregister(&mut closing.stream) {
            log::debug!("{id}: deregister: {e}");
        }
        let mut tls = self.hub.tls.remove(id);
        if closing.flags.get(Flag::ResetOnClose) {
            closing.stream.reset_on_close();
        } else {
            // Not a reset: an established TLS connection says it ends (close_notify,
            // best effort) before its FIN, whatever closes it (the idle timeout, the
            // service, a shutdown), so the peer can tell the end from a cut.
            if let Some(layer) = tls.as_mut().filter(|layer| layer.is_established()) {
                let _ = layer.close_notify(&mut closing.stream);
            }
            if matches!(closing.state, ConnState::Draining(_)) {
                // Everything owed was written: say so with a FIN before the close.
                closing.stream.shutdown_write();
            }
        }
        if let Some(layer) = &tls {
            self.hub.buffered_kib -= layer.charge_kib();
        }
        if let Some(input) = closing.input.take() {
            self.hub.pool.give_back(input);
        }
        self.hub.buffered_kib -= closing.accounted.kib();
        self.hub.stats.buffered_bytes = self.hub.buffered_kib * 1024;
        drop(closing);
        if self.forget_admin_connection(id) {
            log::debug!("{id}: admin connection closed: {reason}");
            return; // the reactor's own: no counters, no service
        }
        self.hub.stats.active -= 1;
        self.hub.stats.closed[reason.index()] += 1;
        log::debug!("{id}: closed: {reason}");
        self.hub.tls.keep_while_closing(id, tls);
        let ctx = &mut Context::new(&mut self.hub, &self.endpoints);
        self.service.on_close(ctx, id, state, reason);
        self.hub.tls.keep_while_closing(id, None);
    }

    /// A dial's connect timeout passed: give up if it is still connecting.
    pub(super) fn check_connect_deadline(&mut self, id: ConnId) {
        if self
            .hub
            .conn(id)
            .is_some_and(|c| c.state == ConnState::Connecting)
        {
            log::debug!("{id}: connect timed out");
            self.hub.request_close(id, CloseReason::ConnectTimeout);
        }
    }

    /// A lingering connection's quiet window is over: if the peer sent nothing during
    /// it, close; if it is still sending, give it another window, up to the limit.
    pub(super) fn end_linger_window(&mut self, id: ConnId) {
        let now = self.hub.now;
        let Some(conn) = self.hub.conn_mut(id) else {
            return;
        };
        let ConnState::Lingering(reason) = conn.state else {
            return;
        };
        if conn.flags.get(Flag::PeerStillSending) && conn.linger_rounds < LINGER_ROUNDS {
            conn.flags.set(Flag::PeerStillSending, false);
            conn.linger_rounds += 1;
            let at = now + LINGER_QUIET;
            self.hub.timers.insert(at, TimerEvent::LingerDeadline(id));
        } else {
            log::trace!("{id}: lingering over");
            self.hub.request_close(id, reason);
        }
    }

    /// Puts a connection's state back in its slot after a callback borrowed it (the
    /// slot is still there: closes wait until callbacks return).
    #[inline(always)]
    pub(super) fn give_back_state(&mut self, id: ConnId, state: S::Conn) {
        if let Some(slot) = self.hub.slot_mut(id) {
            slot.state = state;
        }
    }
}

/// The peer sent EOF on a connection that was reading. `state` is the service's state
/// for it, which the read path has borrowed.
pub(super) fn peer_closed<S: Service>(
    hub: &mut Hub<S>,
    endpoints: &Endpoints<S::Codec>,
    service: &mut S,
    id: ConnId,
    state: &mut S::Conn,
) {
    let Some(conn) = hub.conn_mut(id) else {
        return;
    };
    match conn.state {
        ConnState::Open => conn.state = ConnState::PeerClosed,
        // Our side is shut too: nothing is left to do but write what is queued.
        ConnState::WriteShut { .. } => return hub.close_after_flush(id, CloseReason::PeerClosed),
        _ => return,
    }
    log::trace!("{id}: the peer closed its side");
    service.on_peer_closed(&mut Context::new(hub, endpoints).lending(id), id, state);
}

/// Whether `conn` may read now, and what becomes of what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reading {
    Allowed,
    /// Lingering: what arrives is read and thrown away.
    Discard(CloseReason),
    /// Connecting, draining, half-closed by the peer, or paused.
    Stopped,
    /// An admin connection waiting for its request: the reactor reads it itself.
    Admin,
}

/// Whether `conn` may read now; pauses it (and notes the missed readiness) when its
/// queued output is over the write limit, and counts the pause in `write_pauses`.
#[inline(always)]
pub(super) fn may_read(
    conn: &mut Connection,
    id: ConnId,
    write_limit: usize,
    write_pauses: &mut u64,
) -> Reading {
    match conn.state {
        ConnState::Open | ConnState::WriteShut { .. } => {}
        ConnState::Lingering(reason) => return Reading::Discard(reason),
        ConnState::AdminRequest => return Reading::Admin,
        ConnState::Draining(_) | ConnState::PeerClosed | ConnState::Connecting => {
            return Reading::Stopped
        }
    }
    if conn.reading_paused() {
        conn.flags.set(Flag::ReadPending, true);
        return Reading::Stopped;
    }
    if conn.over_write_limit(write_limit) {
        log::debug!(
            "{id}: {} bytes queued, over the write limit: pausing reads",
            conn.output.len()
        );
        *write_pauses += 1;
        conn.flags.set(Flag::ReadPaused, true);
        conn.flags.set(Flag::Congested, true);
        conn.flags.set(Flag::ReadPending, true);
        return Reading::Stopped;
    }
    Reading::Allowed
}
