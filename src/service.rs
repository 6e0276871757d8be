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
use crate::frame::{Codec, Decode, FrameError};
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

    /// Every complete frame that one read brought on `conn`, in order. The default
    /// hands each payload to [`Service::on_frame`] (and stops if the service closes
    /// the connection). A service that can treat a run of frames at once overrides it:
    /// echo sends the whole run back with one [`Context::forward`], one copy for all.
    fn on_frames(&mut self, ctx: &mut Context<'_>, conn: ConnId, frames: Frames<'_>) {
        for payload in frames.payloads() {
            self.on_frame(ctx, conn, payload);
            if !ctx.is_open(conn) {
                break;
            }
        }
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

/// A run of complete frames from one read of one connection, exactly as they arrived.
///
/// ```
/// use switchboard::{Frames, LengthCodec};
/// let wire = [0, 0, 0, 1, b'a', 0, 0, 0, 2, b'b', b'c'];
/// let codec = LengthCodec::new(16);
/// let frames = Frames::new(&wire, 2, &codec);
/// let payloads: Vec<&[u8]> = frames.payloads().collect();
/// assert_eq!(payloads, [&b"a"[..], &b"bc"[..]]);
/// assert_eq!(frames.wire(), &wire);
/// ```
#[derive(Clone, Copy)]
pub struct Frames<'a> {
    wire: &'a [u8],
    count: usize,
    codec: &'a dyn Codec,
}

impl fmt::Debug for Frames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frames")
            .field("count", &self.count)
            .field("bytes", &self.wire.len())
            .finish()
    }
}

impl<'a> Frames<'a> {
    /// `count` complete frames making up all of `wire`, in `codec`'s format.
    pub fn new(wire: &'a [u8], count: usize, codec: &'a dyn Codec) -> Self {
        Frames { wire, count, codec }
    }

    /// The frames' bytes as received: headers (or terminators) included.
    pub fn wire(&self) -> &'a [u8] {
        self.wire
    }

    /// How many frames there are.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The payloads, in order.
    pub fn payloads(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (wire, codec) = (self.wire, self.codec);
        let mut pos = 0;
        std::iter::from_fn(move || match codec.decode(&wire[pos..]) {
            Ok(Decode::Frame { payload, consumed }) if consumed > 0 => {
                let frame = &wire[pos + payload.start..pos + payload.end];
                pos += consumed;
                Some(frame)
            }
            _ => None,
        })
    }
}

/// How [`Context::close`] closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// Stop reading, write what is queued, then close.
    Flush,
    /// Close now, discarding output the socket has not taken yet.
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
        if !self.is_open(conn) {
            return Err(SendError::Closed);
        }
        let mut framed = std::mem::take(&mut self.hub.encode_buf);
        framed.clear();
        let encoded = self.codec.encode(payload, &mut framed);
        let result = match encoded {
            Ok(()) => {
                self.hub.write_or_queue(conn, framed.readable(), 1);
                Ok(())
            }
            Err(e) => Err(SendError::Frame(e)),
        };
        self.hub.encode_buf = framed;
        result
    }

    /// Sends `frames` to `conn` exactly as they arrived: no re-encoding, and written
    /// straight from the read buffer when nothing is queued (echo sends a connection's
    /// frames back to it this way).
    pub fn forward(&mut self, conn: ConnId, frames: &Frames<'_>) -> Result<(), SendError> {
        match self
            .hub
            .write_or_queue(conn, frames.wire(), frames.len() as u64)
        {
            true => Ok(()),
            false => Err(SendError::Closed),
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
        match self.hub.send_shared(conn, frame) {
            true => Ok(()),
            false => Err(SendError::Closed),
        }
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
