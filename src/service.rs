//! The protocol side of the server: the [`Service`] trait a protocol implements, and the
//! [`Context`] through which it acts.
//!
//! The reactor owns the sockets and calls the service when something happens: a
//! connection arrives, a frame is complete, a datagram arrives, a connection closes, a
//! timer fires. The service answers by calling the context: send a frame, send one
//! shared frame to many connections, close, set a timer. Context calls never block and
//! never call back into the service; they queue work the reactor carries out as soon as
//! the callback returns.
//!
//! The whole echo service:
//!
//! ```
//! use std::net::SocketAddr;
//! use switchboard::{ConnId, Context, Service, UdpId};
//!
//! struct Echo;
//!
//! impl Service for Echo {
//!     fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, payload: &[u8]) {
//!         let _ = ctx.send(conn, payload);
//!     }
//!     fn on_datagram(&mut self, ctx: &mut Context<'_>, socket: UdpId, peer: SocketAddr, datagram: &[u8]) {
//!         let _ = ctx.send_to(socket, peer, datagram);
//!     }
//! }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::buffer::Buffer;
use crate::config::MAX_DATAGRAM;
use crate::connection::{ConnId, PeerAddr};
use crate::frame::{Codec, FrameError};
use crate::hub::{Hub, TimerEvent};
use crate::outqueue::SharedFrame;
use crate::stats::{CloseReason, Stats};
use crate::timer::TimerId;
use crate::udp::{Sent, UdpId};

/// A protocol served by the reactor. Every method has a default that does nothing, so a
/// service implements only what it uses.
pub trait Service {
    /// A stream connection was accepted.
    fn on_connect(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        let _ = (ctx, conn);
    }

    /// A complete frame arrived on `conn`. `payload` borrows the reactor's read buffer:
    /// copy what must outlive the call.
    fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, payload: &[u8]) {
        let _ = (ctx, conn, payload);
    }

    /// A datagram arrived on a UDP socket.
    fn on_datagram(
        &mut self,
        ctx: &mut Context<'_>,
        socket: UdpId,
        peer: SocketAddr,
        datagram: &[u8],
    ) {
        let _ = (ctx, socket, peer, datagram);
    }

    /// `conn` is closed; its id will never name a connection again.
    fn on_close(&mut self, ctx: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
        let _ = (ctx, conn, reason);
    }

    /// A timer set with [`Context::set_timer`] is due.
    fn on_timer(&mut self, ctx: &mut Context<'_>, timer: TimerId, value: u64) {
        let _ = (ctx, timer, value);
    }
}

/// How [`Context::close`] closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// Stop reading, write what is queued, then close.
    Flush,
    /// Close now, discarding queued output.
    Now,
}

/// Why a send did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closed or closing.
    Closed,
    /// The codec refused the payload (for example larger than the maximum frame).
    Frame(FrameError),
    /// A datagram larger than UDP can carry.
    DatagramTooLarge(usize),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => f.write_str("connection closed"),
            SendError::Frame(e) => write!(f, "cannot frame payload: {e}"),
            SendError::DatagramTooLarge(len) => {
                write!(f, "datagram of {len} bytes exceeds {MAX_DATAGRAM}")
            }
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Frame(e) => Some(e),
            _ => None,
        }
    }
}

/// A service's handle on the reactor during a callback. See the module docs.
pub struct Context<'a> {
    hub: &'a mut Hub,
    codec: &'a dyn Codec,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("connections", &self.hub.conns.len())
            .finish()
    }
}

impl<'a> Context<'a> {
    pub(crate) fn new(hub: &'a mut Hub, codec: &'a dyn Codec) -> Self {
        Context { hub, codec }
    }

    /// Frames `payload` with the server's codec and queues it for `conn`. Frames sent to
    /// one connection arrive in the order they were sent.
    pub fn send(&mut self, conn: ConnId, payload: &[u8]) -> Result<(), SendError> {
        let codec = self.codec;
        match self
            .hub
            .queue_output(conn, |out| codec.encode(payload, out))
        {
            None => Err(SendError::Closed),
            Some(result) => result.map_err(SendError::Frame),
        }
    }

    /// Frames `payload` once, for sending to many connections with
    /// [`Context::send_shared`] without copying it for each.
    pub fn shared_frame(&self, payload: &[u8]) -> Result<SharedFrame, FrameError> {
        let mut wire = Buffer::new();
        self.codec.encode(payload, &mut wire)?;
        Ok(SharedFrame::from_wire_bytes(wire.readable()))
    }

    /// Queues a frame made by [`Context::shared_frame`] for `conn`. The bytes are shared,
    /// not copied.
    pub fn send_shared(&mut self, conn: ConnId, frame: &SharedFrame) -> Result<(), SendError> {
        let connection = self
            .hub
            .conn_mut(conn)
            .filter(|c| c.is_open())
            .ok_or(SendError::Closed)?;
        connection.output.push_shared(frame.clone());
        self.hub.stats.frames_out += 1;
        self.hub.list_for_flush(conn);
        Ok(())
    }

    /// Closes `conn`; [`Service::on_close`] follows once the callback returns (with
    /// [`CloseMode::Flush`], once the queued output is written).
    pub fn close(&mut self, conn: ConnId, mode: CloseMode) {
        match mode {
            CloseMode::Flush => self.hub.close_after_flush(conn, CloseReason::Service),
            CloseMode::Now => self.hub.request_close(conn, CloseReason::Service),
        }
    }

    /// Sends one datagram from a UDP socket.
    pub fn send_to(
        &mut self,
        socket: UdpId,
        peer: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), SendError> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(SendError::DatagramTooLarge(datagram.len()));
        }
        let hub = &mut *self.hub;
        let Some(endpoint) = hub.udp.get_mut(socket.0) else {
            return Err(SendError::Closed);
        };
        match endpoint.send_to(
            peer,
            datagram,
            hub.limits.write_limit,
            &hub.registry,
            &mut hub.stats,
        ) {
            Sent::Now | Sent::Queued | Sent::Dropped => Ok(()),
        }
    }

    /// Calls [`Service::on_timer`] with `value` after `delay`.
    pub fn set_timer(&mut self, delay: Duration, value: u64) -> TimerId {
        let deadline = self.hub.now + delay;
        self.hub.timers.insert(deadline, TimerEvent::Service(value))
    }

    /// Cancels a timer; returns false if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        match self.hub.timers.cancel(timer) {
            Some(TimerEvent::Service(_)) => true,
            Some(other) => {
                // Not a service timer: put it back untouched.
                self.hub.timers.insert(timer.deadline(), other);
                false
            }
            None => false,
        }
    }

    /// Where `conn` comes from, while it is connected.
    pub fn peer_addr(&self, conn: ConnId) -> Option<PeerAddr> {
        self.hub.conn(conn).and_then(|c| c.stream.peer_addr())
    }

    /// True while `conn` is open (not closed, not closing).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.hub.conn(conn).is_some_and(|c| c.is_open())
    }

    /// Bytes queued for `conn` that its peer has not taken yet, or `None` if it is gone.
    /// A service can compare it with [`Context::write_limit`] to cut off slow consumers.
    pub fn queued_output(&self, conn: ConnId) -> Option<usize> {
        self.hub.conn(conn).map(|c| c.output.len())
    }

    /// The configured per-connection write limit.
    pub fn write_limit(&self) -> usize {
        self.hub.limits.write_limit
    }

    /// The reactor's counters.
    pub fn stats(&self) -> &Stats {
        &self.hub.stats
    }

    /// The time at the start of this turn of the loop.
    pub fn now(&self) -> Instant {
        self.hub.now
    }
}
