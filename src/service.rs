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
use crate::udp::UdpId;

/// A protocol served by the reactor. Every method has a default that does nothing, so a
/// service implements only what it uses.
///
/// A service using every callback: it greets each connection, answers frames with
/// their length, echoes datagrams, and closes connections after a minute.
///
/// ```
/// use std::collections::HashMap;
/// use std::net::SocketAddr;
/// use std::time::Duration;
/// use switchboard::{CloseMode, CloseReason, ConnId, Context, Service, TimerId, UdpId};
///
/// #[derive(Default)]
/// struct Counter {
///     /// The timer that ends each connection's minute.
///     deadlines: HashMap<ConnId, TimerId>,
///     /// Which connection a timer value stands for.
///     by_value: HashMap<u64, ConnId>,
///     next_value: u64,
/// }
///
/// impl Service for Counter {
///     fn on_connect(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
///         let _ = ctx.send(conn, b"hello");
///         self.next_value += 1;
///         let timer = ctx.set_timer(Duration::from_secs(60), self.next_value);
///         self.deadlines.insert(conn, timer);
///         self.by_value.insert(self.next_value, conn);
///     }
///
///     fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, payload: &[u8]) {
///         let _ = ctx.send(conn, payload.len().to_string().as_bytes());
///     }
///
///     fn on_datagram(&mut self, ctx: &mut Context<'_>, socket: UdpId, peer: SocketAddr, datagram: &[u8]) {
///         let _ = ctx.send_to(socket, peer, datagram);
///     }
///
///     fn on_close(&mut self, ctx: &mut Context<'_>, conn: ConnId, reason: CloseReason) {
///         if let Some(timer) = self.deadlines.remove(&conn) {
///             ctx.cancel_timer(timer);
///         }
///         self.by_value.retain(|_, c| *c != conn);
///         log::debug!("{conn} closed: {reason}");
///     }
///
///     fn on_timer(&mut self, ctx: &mut Context<'_>, _timer: TimerId, value: u64) {
///         if let Some(conn) = self.by_value.remove(&value) {
///             self.deadlines.remove(&conn);
///             let _ = ctx.send(conn, b"time is up");
///             ctx.close(conn, CloseMode::Flush);
///         }
///     }
/// }
/// ```
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
///
/// ```
/// use switchboard::{CloseMode, ConnId, Context, Service};
///
/// struct Goodbye;
///
/// impl Service for Goodbye {
///     fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, payload: &[u8]) {
///         match payload {
///             // The farewell is written before the connection closes.
///             b"quit" => {
///                 let _ = ctx.send(conn, b"bye");
///                 ctx.close(conn, CloseMode::Flush);
///             }
///             // Whatever is still queued for it is dropped.
///             b"abort" => ctx.close(conn, CloseMode::Now),
///             _ => {}
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// Stop reading, write what is queued, then close.
    Flush,
    /// Close now, discarding output the socket has not taken yet.
    Now,
}

/// Why a send did not happen.
///
/// ```
/// use switchboard::{ConnId, Context, SendError, Service};
///
/// struct Relay {
///     to: Option<ConnId>,
/// }
///
/// impl Service for Relay {
///     fn on_frame(&mut self, ctx: &mut Context<'_>, _conn: ConnId, payload: &[u8]) {
///         let Some(to) = self.to else { return };
///         match ctx.send(to, payload) {
///             Ok(()) => {}
///             // The other side has gone: forget it.
///             Err(SendError::Closed) => self.to = None,
///             Err(e) => log::warn!("not relayed: {e}"),
///         }
///     }
/// }
/// ```
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
    ///
    /// ```
    /// # use switchboard::{ConnId, Context, Service};
    /// struct Hello;
    /// impl Service for Hello {
    ///     fn on_connect(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
    ///         // Err only if the connection is already closing.
    ///         let _ = ctx.send(conn, b"hello");
    ///     }
    /// }
    /// ```
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
    ///
    /// A relay that passes every run of frames from one peer to the other, untouched:
    ///
    /// ```
    /// use switchboard::{ConnId, Context, Frames, Service};
    ///
    /// #[derive(Default)]
    /// struct Pair {
    ///     peers: Vec<ConnId>,
    /// }
    ///
    /// impl Service for Pair {
    ///     fn on_connect(&mut self, _ctx: &mut Context<'_>, conn: ConnId) {
    ///         self.peers.push(conn);
    ///     }
    ///     fn on_frames(&mut self, ctx: &mut Context<'_>, from: ConnId, frames: Frames<'_>) {
    ///         for &to in self.peers.iter().filter(|&&to| to != from) {
    ///             let _ = ctx.forward(to, &frames);
    ///         }
    ///     }
    /// }
    /// ```
    #[inline]
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
    ///
    /// A broadcast to every connection:
    ///
    /// ```
    /// use switchboard::{CloseReason, ConnId, Context, Service};
    ///
    /// #[derive(Default)]
    /// struct Broadcast {
    ///     members: Vec<ConnId>,
    /// }
    ///
    /// impl Service for Broadcast {
    ///     fn on_connect(&mut self, _ctx: &mut Context<'_>, conn: ConnId) {
    ///         self.members.push(conn);
    ///     }
    ///     fn on_frame(&mut self, ctx: &mut Context<'_>, _from: ConnId, payload: &[u8]) {
    ///         let Ok(frame) = ctx.shared_frame(payload) else { return };
    ///         for &member in &self.members {
    ///             let _ = ctx.send_shared(member, &frame);
    ///         }
    ///     }
    ///     fn on_close(&mut self, _ctx: &mut Context<'_>, conn: ConnId, _reason: CloseReason) {
    ///         self.members.retain(|&m| m != conn);
    ///     }
    /// }
    /// ```
    pub fn shared_frame(&self, payload: &[u8]) -> Result<SharedFrame, FrameError> {
        let mut wire = Buffer::new();
        self.codec.encode(payload, &mut wire)?;
        Ok(SharedFrame::from_wire_bytes(wire.readable()))
    }

    /// Queues a frame made by [`Context::shared_frame`] for `conn`. The bytes are shared,
    /// not copied, and written when the callback returns, together with whatever else
    /// this turn queued for `conn`. See [`Context::shared_frame`] for an example.
    pub fn send_shared(&mut self, conn: ConnId, frame: &SharedFrame) -> Result<(), SendError> {
        match self.hub.send_shared(conn, frame) {
            true => Ok(()),
            false => Err(SendError::Closed),
        }
    }

    /// Closes `conn`; [`Service::on_close`] follows once the callback returns (with
    /// [`CloseMode::Flush`], once the queued output is written). See [`CloseMode`] for
    /// an example.
    pub fn close(&mut self, conn: ConnId, mode: CloseMode) {
        match mode {
            CloseMode::Flush => self.hub.close_after_flush(conn, CloseReason::Service),
            CloseMode::Now => self.hub.request_close(conn, CloseReason::Service),
        }
    }

    /// Sends one datagram from a UDP socket. Datagrams sent while the loop serves one
    /// burst of events leave together when the burst ends, before the loop waits again;
    /// on Linux a run of same-size datagrams to one peer goes out in one system call
    /// (UDP segmentation offload), and arrives as the same separate datagrams.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use switchboard::{Context, Service, UdpId};
    /// struct Pong;
    /// impl Service for Pong {
    ///     fn on_datagram(&mut self, ctx: &mut Context<'_>, socket: UdpId, peer: SocketAddr, datagram: &[u8]) {
    ///         if datagram == b"ping" {
    ///             let _ = ctx.send_to(socket, peer, b"pong");
    ///         }
    ///     }
    /// }
    /// ```
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
        // A datagram the socket cannot take, nor queue, is dropped and counted: UDP
        // promises no delivery, and the sender's protocol deals with loss.
        endpoint.send_to(
            peer,
            datagram,
            hub.limits.write_limit,
            &hub.registry,
            &mut hub.stats,
        );
        hub.udp_burst_pending = true;
        Ok(())
    }

    /// Calls [`Service::on_timer`] with `value` after `delay`. The value is the service's
    /// own: an index, a connection's slot, a kind of work.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use switchboard::{ConnId, Context, Service, TimerId};
    /// /// Sends a heartbeat to the first client every second.
    /// struct Heartbeat {
    ///     client: Option<ConnId>,
    /// }
    /// impl Service for Heartbeat {
    ///     fn on_connect(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
    ///         if self.client.is_none() {
    ///             self.client = Some(conn);
    ///             ctx.set_timer(Duration::from_secs(1), 0);
    ///         }
    ///     }
    ///     fn on_timer(&mut self, ctx: &mut Context<'_>, _timer: TimerId, _value: u64) {
    ///         if let Some(conn) = self.client.filter(|&c| ctx.is_open(c)) {
    ///             let _ = ctx.send(conn, b"beat");
    ///             ctx.set_timer(Duration::from_secs(1), 0);
    ///         }
    ///     }
    /// }
    /// ```
    pub fn set_timer(&mut self, delay: Duration, value: u64) -> TimerId {
        let deadline = self.hub.now + delay;
        self.hub.timers.insert(deadline, TimerEvent::Service(value))
    }

    /// Cancels a timer; returns false if it already fired or was cancelled.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use switchboard::{ConnId, Context, Service, TimerId};
    /// /// Closes a connection that has not sent anything within 5 s of connecting.
    /// #[derive(Default)]
    /// struct Login {
    ///     waiting: Option<(ConnId, TimerId)>,
    /// }
    /// impl Service for Login {
    ///     fn on_connect(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
    ///         let timer = ctx.set_timer(Duration::from_secs(5), conn.index() as u64);
    ///         self.waiting = Some((conn, timer));
    ///     }
    ///     fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, _payload: &[u8]) {
    ///         if let Some((_, timer)) = self.waiting.take().filter(|(c, _)| *c == conn) {
    ///             ctx.cancel_timer(timer);
    ///         }
    ///     }
    ///     fn on_timer(&mut self, ctx: &mut Context<'_>, _timer: TimerId, _value: u64) {
    ///         if let Some((conn, _)) = self.waiting.take() {
    ///             ctx.close(conn, switchboard::CloseMode::Now);
    ///         }
    ///     }
    /// }
    /// ```
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
    ///
    /// ```
    /// # use switchboard::{ConnId, Context, PeerAddr, Service};
    /// struct WhoAmI;
    /// impl Service for WhoAmI {
    ///     fn on_connect(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
    ///         let answer = match ctx.peer_addr(conn) {
    ///             Some(PeerAddr::Tcp(addr)) => format!("you are {addr}"),
    ///             _ => "you are local".to_owned(),
    ///         };
    ///         let _ = ctx.send(conn, answer.as_bytes());
    ///     }
    /// }
    /// ```
    pub fn peer_addr(&self, conn: ConnId) -> Option<PeerAddr> {
        self.hub.conn(conn).and_then(|c| c.stream.peer_addr())
    }

    /// True while `conn` is open (not closed, not closing). See [`Context::set_timer`]
    /// for an example.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.hub.conn(conn).is_some_and(|c| c.is_open())
    }

    /// Bytes queued for `conn` that its peer has not taken yet, or `None` if it is gone.
    /// A service can compare it with [`Context::write_limit`] to cut off slow consumers.
    ///
    /// ```
    /// # use switchboard::{CloseMode, ConnId, Context, Service};
    /// /// Sends a feed to a subscriber, dropping it if it falls too far behind.
    /// struct Feed {
    ///     subscriber: ConnId,
    /// }
    /// impl Feed {
    ///     fn publish(&self, ctx: &mut Context<'_>, item: &[u8]) {
    ///         let behind = ctx.queued_output(self.subscriber).unwrap_or(0);
    ///         if behind > ctx.write_limit() / 2 {
    ///             ctx.close(self.subscriber, CloseMode::Now);
    ///         } else {
    ///             let _ = ctx.send(self.subscriber, item);
    ///         }
    ///     }
    /// }
    /// # impl Service for Feed {}
    /// ```
    pub fn queued_output(&self, conn: ConnId) -> Option<usize> {
        self.hub.conn(conn).map(|c| c.output.len())
    }

    /// The configured per-connection write limit. See [`Context::queued_output`] for an
    /// example.
    pub fn write_limit(&self) -> usize {
        self.hub.limits.write_limit
    }

    /// The reactor's counters.
    ///
    /// ```
    /// # use switchboard::{ConnId, Context, Service};
    /// struct Status;
    /// impl Service for Status {
    ///     fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, payload: &[u8]) {
    ///         if payload == b"stats" {
    ///             let report = ctx.stats().to_string();
    ///             let _ = ctx.send(conn, report.as_bytes());
    ///         }
    ///     }
    /// }
    /// ```
    pub fn stats(&self) -> &Stats {
        &self.hub.stats
    }

    /// The time at the start of this turn of the loop: cheaper than `Instant::now()`,
    /// and the same for every callback in one turn.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use switchboard::{ConnId, Context, Service};
    /// struct Uptime {
    ///     started: Option<Instant>,
    /// }
    /// impl Service for Uptime {
    ///     fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, _payload: &[u8]) {
    ///         let started = *self.started.get_or_insert(ctx.now());
    ///         let up = ctx.now() - started;
    ///         let _ = ctx.send(conn, format!("{up:?}").as_bytes());
    ///     }
    /// }
    /// ```
    pub fn now(&self) -> Instant {
        self.hub.now
    }
}
