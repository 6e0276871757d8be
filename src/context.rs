//! The [`Context`]: how a service acts on the reactor during a callback.
//!
//! Context calls never block and never call back into the service; they queue work the
//! reactor carries out as soon as the callback returns. A send to a connection with
//! nothing queued is written at once (one `write`, no copy); anything else is queued and
//! flushed before the loop waits again. A close, a dial's outcome, a drained queue: each
//! comes back as a callback of its own, after the current one has returned.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::buffer::Buffer;
use crate::config::MAX_DATAGRAM;
use crate::connection::{ConnId, PeerAddr};
use crate::endpoint::{Dial, DialError, EndpointId, EndpointKind, Endpoints};
use crate::frame::{Codec, FrameError};
use crate::hub::{Hub, TimerEvent};
use crate::outqueue::SharedFrame;
use crate::reactor::GATHER;
use crate::service::{Frames, Service};
use crate::stats::{CloseReason, Stats};
use crate::timer::TimerId;
use crate::udp::UdpId;

/// How [`Context::close`] closes a connection.
///
/// ```
/// use switchboard::{CloseMode, ConnId, Context, LengthCodec, Service};
///
/// struct Goodbye;
///
/// impl Service for Goodbye {
///     type Conn = ();
///     type Timer = ();
///     type Codec = LengthCodec;
///
///     fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
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
    /// Close now, discarding output the socket has not taken yet; what the kernel
    /// holds already still goes out, then a FIN.
    Now,
    /// Reset the connection now (SO_LINGER 0, then close: a RST): our queued output
    /// and whatever the kernel still holds for the peer are dropped at once. For a
    /// peer cut off for cause, such as a consumer too slow to keep up, so that it
    /// neither costs memory nor keeps receiving.
    Abort,
}

/// See [`Context::after_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFrame {
    /// Hand over the next frame.
    Next,
    /// The connection is closing or gone: no more frames.
    Stop,
    /// Its output is over the write limit: leave the rest for later.
    Hold,
}

/// Why a send did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closed or closing, or its side is shut.
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
pub struct Context<'a, S: Service> {
    hub: &'a mut Hub<S>,
    endpoints: &'a Endpoints<S::Codec>,
    /// The connection whose state this callback was taken (it is out of its slot).
    taken: Option<ConnId>,
}

impl<S: Service> fmt::Debug for Context<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("connections", &self.hub.conns.len())
            .finish()
    }
}

impl<'a, S: Service> Context<'a, S> {
    pub(crate) fn new(hub: &'a mut Hub<S>, endpoints: &'a Endpoints<S::Codec>) -> Self {
        Context {
            hub,
            endpoints,
            taken: None,
        }
    }

    /// A context for a callback about `conn`, whose state the callback holds.
    #[inline(always)]
    pub(crate) fn lending(mut self, conn: ConnId) -> Self {
        self.taken = Some(conn);
        self
    }

    /// Sends framed bytes. Sends to the connection the callback is about are gathered
    /// and written together when it returns: the answers to a read's pipelined
    /// requests, one send each, cost one `write` (see `reactor/write.rs`).
    #[inline(always)]
    fn send_framed(&mut self, conn: ConnId, bytes: &[u8], frames: u64) -> bool {
        match self.taken == Some(conn) {
            true => self.hub.gather(conn, bytes, frames),
            false => self.hub.write_or_queue(conn, bytes, frames),
        }
    }

    /// Frames `payload` with `conn`'s codec and sends it. Frames sent to one
    /// connection arrive in the order they were sent. A connection still connecting
    /// keeps what it is sent until it is up.
    pub fn send(&mut self, conn: ConnId, payload: &[u8]) -> Result<(), SendError> {
        let Some(endpoint) = self
            .hub
            .conn(conn)
            .filter(|c| c.may_send())
            .map(|c| c.endpoint)
        else {
            return Err(SendError::Closed);
        };
        let codec = self.endpoints.codec(endpoint);
        if self.taken == Some(conn) && payload.len() < GATHER {
            // Gathered: framed straight into the connection's queue. (A larger one is
            // written at once, below, as `Hub::gather` does.)
            let gathered = self
                .hub
                .gather_with(conn, 1, |out| codec.encode(payload, out));
            return match gathered {
                Some(encoded) => encoded.map_err(SendError::Frame),
                None => Err(SendError::Closed),
            };
        }
        let mut framed = std::mem::take(&mut self.hub.encode_buf);
        framed.clear();
        let encoded = codec.encode(payload, &mut framed);
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

    /// Sends bytes that are already frames in `conn`'s format (each made with its
    /// codec's [`Codec::encode`], say, into one buffer), as one send: a client queuing
    /// several requests at once sends them together instead of in one `write` each.
    /// `frames` is how many frames the bytes hold (for the counters).
    ///
    /// ```
    /// use switchboard::{Buffer, Codec, ConnId, Context, LengthCodec, Origin, Service};
    ///
    /// /// Pipelines three requests on every new connection.
    /// struct Pipeliner;
    ///
    /// impl Service for Pipeliner {
    ///     type Conn = ();
    ///     type Timer = ();
    ///     type Codec = LengthCodec;
    ///
    ///     fn on_connect(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), _: Origin) {
    ///         let codec = LengthCodec::new(1024);
    ///         let mut wire = Buffer::new();
    ///         for request in [&b"one"[..], b"two", b"three"] {
    ///             codec.encode(request, &mut wire).unwrap();
    ///         }
    ///         if let Err(e) = ctx.send_encoded(conn, wire.readable(), 3) {
    ///             log::debug!("{conn}: {e}");
    ///         }
    ///     }
    /// }
    /// ```
    #[inline]
    pub fn send_encoded(
        &mut self,
        conn: ConnId,
        wire: &[u8],
        frames: u64,
    ) -> Result<(), SendError> {
        match self.send_framed(conn, wire, frames) {
            true => Ok(()),
            false => Err(SendError::Closed),
        }
    }

    /// The service's state for another connection than the one this callback is about
    /// (that one's state is the callback's own argument): `None` if `conn` is gone, or
    /// is that connection. A load generator's timer sends on many connections this way.
    pub fn state_mut(&mut self, conn: ConnId) -> Option<&mut S::Conn> {
        if self.taken == Some(conn) {
            return None;
        }
        self.hub.slot_mut(conn).map(|slot| &mut slot.state)
    }

    /// Sends `frames` to `conn` exactly as they arrived: no re-encoding, and written
    /// straight from the read buffer when nothing is queued (echo sends a connection's
    /// frames back to it this way). Both connections should speak the same framing.
    ///
    /// A relay that passes every run of frames from one peer to the other, untouched:
    ///
    /// ```
    /// use switchboard::{ConnId, Context, Frames, LengthCodec, Origin, Service};
    ///
    /// #[derive(Default)]
    /// struct Pair {
    ///     peers: Vec<ConnId>,
    /// }
    ///
    /// impl Service for Pair {
    ///     type Conn = ();
    ///     type Timer = ();
    ///     type Codec = LengthCodec;
    ///
    ///     fn on_connect(&mut self, _: &mut Context<'_, Self>, conn: ConnId, _: &mut (), _: Origin) {
    ///         self.peers.push(conn);
    ///     }
    ///     fn on_frames(&mut self, ctx: &mut Context<'_, Self>, from: ConnId, _: &mut (), frames: Frames<'_, LengthCodec>) {
    ///         for &to in self.peers.iter().filter(|&&to| to != from) {
    ///             let _ = ctx.forward(to, &frames);
    ///         }
    ///     }
    /// }
    /// ```
    #[inline]
    pub fn forward<C: Codec>(
        &mut self,
        conn: ConnId,
        frames: &Frames<'_, C>,
    ) -> Result<(), SendError> {
        match self
            .hub
            .write_or_queue(conn, frames.wire(), frames.len() as u64)
        {
            true => Ok(()),
            false => Err(SendError::Closed),
        }
    }

    /// Frames `payload` once with the reactor's codec (the one given to
    /// [`crate::Reactor::bind`]), for sending to many connections with
    /// [`Context::send_shared`] without copying it for each.
    ///
    /// ```
    /// use switchboard::{CloseReason, ConnId, Context, LengthCodec, Origin, Service};
    ///
    /// #[derive(Default)]
    /// struct Broadcast {
    ///     members: Vec<ConnId>,
    /// }
    ///
    /// impl Service for Broadcast {
    ///     type Conn = ();
    ///     type Timer = ();
    ///     type Codec = LengthCodec;
    ///
    ///     fn on_connect(&mut self, _: &mut Context<'_, Self>, conn: ConnId, _: &mut (), _: Origin) {
    ///         self.members.push(conn);
    ///     }
    ///     fn on_frame(&mut self, ctx: &mut Context<'_, Self>, _from: ConnId, _: &mut (), payload: &[u8]) {
    ///         let Ok(frame) = ctx.shared_frame(payload) else { return };
    ///         for &member in &self.members {
    ///             let _ = ctx.send_shared(member, &frame);
    ///         }
    ///     }
    ///     fn on_close(&mut self, _: &mut Context<'_, Self>, conn: ConnId, _: (), _: CloseReason) {
    ///         self.members.retain(|&m| m != conn);
    ///     }
    /// }
    /// ```
    pub fn shared_frame(&self, payload: &[u8]) -> Result<SharedFrame, FrameError> {
        encode_shared(&self.endpoints.default_codec, payload)
    }

    /// Frames `payload` once with `endpoint`'s codec, for [`Context::send_shared`] to
    /// that endpoint's connections.
    pub fn shared_frame_for(
        &self,
        endpoint: EndpointId,
        payload: &[u8],
    ) -> Result<SharedFrame, FrameError> {
        match self.endpoints.list.get(endpoint.index()) {
            Some(entry) => encode_shared(&entry.codec, payload),
            None => Err(FrameError::Malformed("no such endpoint")),
        }
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

    /// True when `conn`'s queued output is over the write limit, so that reading it
    /// is paused until the output drains (false once the service chose
    /// [`Context::keep_reading_when_congested`] for it, or for a connection that is
    /// gone). The default [`crate::Service::on_frames`] stops handling a read's frames
    /// at this point and leaves the rest for later.
    pub fn over_write_limit(&self, conn: ConnId) -> bool {
        let limit = self.hub.limits.write_limit;
        self.hub
            .conn(conn)
            .is_some_and(|c| c.over_write_limit(limit))
    }

    /// What the default [`crate::Service::on_frames`] does after a frame, from one
    /// look at the connection: go on, stop (closing or gone), or hold the rest
    /// ([`Context::over_write_limit`]).
    #[inline]
    pub(crate) fn after_frame(&self, conn: ConnId) -> AfterFrame {
        match self.hub.conn(conn) {
            Some(c) if !c.is_open() => AfterFrame::Stop,
            Some(c) if c.over_write_limit(self.hub.limits.write_limit) => AfterFrame::Hold,
            Some(_) => AfterFrame::Next,
            None => AfterFrame::Stop,
        }
    }

    /// Closes `conn`; [`crate::Service::on_close`] follows once the callback returns
    /// (with [`CloseMode::Flush`], once the queued output is written). See
    /// [`CloseMode`] for an example.
    pub fn close(&mut self, conn: ConnId, mode: CloseMode) {
        // A connection whose peer has already gone closes because of that.
        let reason = match self.hub.conn(conn).map(|c| c.state) {
            Some(crate::connection::ConnState::PeerClosed) => CloseReason::PeerClosed,
            _ => CloseReason::Service,
        };
        match mode {
            CloseMode::Flush => self.hub.close_after_flush(conn, reason),
            CloseMode::Now => self.hub.request_close(conn, reason),
            CloseMode::Abort => self.hub.reset(conn, reason),
        }
    }

    /// Shuts our side of `conn` once its queued output is written (a FIN), and keeps
    /// reading until the peer closes too: how a client says "that was my last request"
    /// and still gets every reply. Sending is refused from now on. A connection still
    /// connecting sends its FIN once it is up and what was queued for it is written.
    pub fn shutdown_write(&mut self, conn: ConnId) {
        self.hub.shutdown_write(conn);
    }

    /// Stops reading `conn` until [`Context::resume_reading`]: its peer's bytes wait in
    /// the kernel, and TCP's own flow control slows the peer down. A proxy pauses one
    /// side while the other cannot keep up.
    pub fn pause_reading(&mut self, conn: ConnId) {
        self.hub.set_paused_by_service(conn, true);
    }

    /// Reads `conn` again after [`Context::pause_reading`] (bytes that arrived
    /// meanwhile are read in the next turn).
    pub fn resume_reading(&mut self, conn: ConnId) {
        self.hub.set_paused_by_service(conn, false);
    }

    /// Keeps reading `conn` while its own queued output is over the write limit.
    ///
    /// By default the reactor stops reading such a connection until its output drains:
    /// right when what a connection is sent answers what it sends (echo, a server),
    /// wrong for a relay, whose output to `conn` comes from another connection. Not
    /// reading `conn` there holds back its replies, and a peer that writes its replies
    /// before it reads more never drains the queue: the pair deadlocks. A relay calls
    /// this for both sides and paces the side that feeds a congested one instead:
    /// [`Context::pause_reading`] when the queue passes [`Context::write_limit`],
    /// [`Context::resume_reading`] in [`crate::Service::on_drained`], which still comes.
    pub fn keep_reading_when_congested(&mut self, conn: ConnId) {
        self.hub.keep_reading_when_congested(conn);
    }

    /// Opens an outbound connection and returns its id at once; the connect completes
    /// in the loop. Then [`crate::Service::on_connect`] follows with
    /// [`crate::Origin::Dialled`], or, if it fails or times out,
    /// [`crate::Service::on_close`] with [`CloseReason::ConnectFailed`] or
    /// [`CloseReason::ConnectTimeout`]. `state` is the service's state for it from now
    /// on. Only a dial that cannot even begin fails here.
    ///
    /// ```
    /// use switchboard::{CloseReason, ConnId, Context, Dial, LengthCodec, Origin, Service};
    ///
    /// /// Says hello to a server as soon as the loop starts.
    /// struct Client {
    ///     server: std::net::SocketAddr,
    /// }
    ///
    /// impl Service for Client {
    ///     type Conn = ();
    ///     type Timer = ();
    ///     type Codec = LengthCodec;
    ///
    ///     fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
    ///         match ctx.connect(Dial::tcp(self.server), ()) {
    ///             // Queued until the connection is up.
    ///             Ok(conn) => drop(ctx.send(conn, b"hello")),
    ///             Err(e) => log::error!("{e}"),
    ///         }
    ///     }
    ///     fn on_close(&mut self, ctx: &mut Context<'_, Self>, _: ConnId, _: (), reason: CloseReason) {
    ///         log::info!("gone: {reason}");
    ///         ctx.shutdown();
    ///     }
    /// }
    /// ```
    pub fn connect(&mut self, dial: Dial, state: S::Conn) -> Result<ConnId, DialError<S::Conn>> {
        self.hub.dial(dial, state, self.endpoints)
    }

    /// Sends one datagram from a UDP socket. Datagrams sent while the loop serves one
    /// burst of events leave together when the burst ends, before the loop waits again;
    /// on Linux a run of same-size datagrams to one peer goes out in one system call
    /// (UDP segmentation offload), and arrives as the same separate datagrams.
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

    /// Calls [`crate::Service::on_timer`] with `value` once, after `delay`.
    pub fn set_timer(&mut self, delay: Duration, value: S::Timer) -> TimerId {
        self.hub.add_timer(delay, value, None, None)
    }

    /// Calls [`crate::Service::on_timer`] with `value` every `interval`, first after one
    /// interval, until cancelled. Rounds are counted from the first deadline, not from
    /// when the loop got to the previous one, so they do not drift; rounds the loop was
    /// too busy for are skipped, not bunched.
    pub fn set_repeating(&mut self, interval: Duration, value: S::Timer) -> TimerId {
        self.hub.add_timer(interval, value, None, Some(interval))
    }

    /// Calls [`crate::Service::on_conn_timer`] with `conn`, its state and `value` once,
    /// after `delay`; never if `conn` closes first.
    pub fn set_conn_timer(&mut self, conn: ConnId, delay: Duration, value: S::Timer) -> TimerId {
        self.hub.add_timer(delay, value, Some(conn), None)
    }

    /// Like [`Context::set_repeating`], for `conn`: stops when `conn` closes.
    pub fn set_conn_repeating(
        &mut self,
        conn: ConnId,
        interval: Duration,
        value: S::Timer,
    ) -> TimerId {
        self.hub
            .add_timer(interval, value, Some(conn), Some(interval))
    }

    /// Cancels a timer; returns false if it already fired (a one-shot timer) or was
    /// cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        match self.hub.timers.cancel(timer) {
            Some(TimerEvent::Service { .. }) => true,
            Some(other) => {
                // Not a service timer: put it back untouched.
                self.hub.timers.rearm(timer, timer.deadline(), other);
                false
            }
            None => false,
        }
    }

    /// Gives `conn` its own idle timeout (`None`: never idle) instead of the reactor's:
    /// a server may allow a logged-in client a longer silence than a stranger. Counted
    /// from the connection's last activity.
    pub fn set_idle_timeout(&mut self, conn: ConnId, timeout: Option<Duration>) {
        self.hub.set_idle_timeout(conn, timeout);
    }

    /// Gives `conn` the reactor's idle timeout again after
    /// [`Context::set_idle_timeout`], counted from now.
    pub fn reset_idle_timeout(&mut self, conn: ConnId) {
        self.hub.reset_idle_timeout(conn);
    }

    /// Where `conn` comes from (or, for a dialled one, where it goes), while it is
    /// connected.
    pub fn peer_addr(&self, conn: ConnId) -> Option<PeerAddr> {
        self.hub.conn(conn).and_then(|c| c.stream.peer_addr())
    }

    /// Whether `conn` speaks TLS, and if so what was agreed: the SNI name asked for,
    /// the peer's certificates, the version and cipher suite (feature `tls`); and in
    /// `on_close`, why TLS failed if it did (`failure`). `None` for a plain connection
    /// (or one closed before).
    #[cfg(feature = "tls")]
    pub fn tls(&self, conn: ConnId) -> Option<crate::tls::TlsInfo> {
        self.hub.tls.get_or_closing(conn).map(|layer| layer.info())
    }

    /// The endpoint `conn` was accepted on or dialled through.
    pub fn endpoint(&self, conn: ConnId) -> Option<EndpointId> {
        self.hub.conn(conn).map(|c| EndpointId(c.endpoint))
    }

    /// What an endpoint is: a listener (with its address), or outbound.
    pub fn endpoint_kind(&self, endpoint: EndpointId) -> Option<&EndpointKind> {
        self.endpoints.list.get(endpoint.index()).map(|e| &e.kind)
    }

    /// True while `conn` is there and not closing (connecting and half-closed
    /// connections are open).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.hub.conn(conn).is_some_and(|c| c.is_open())
    }

    /// Bytes queued for `conn` that its peer has not taken yet, or `None` if it is gone.
    /// A service can compare it with [`Context::write_limit`] to cut off slow consumers.
    pub fn queued_output(&self, conn: ConnId) -> Option<usize> {
        self.hub.conn(conn).map(|c| c.output.len())
    }

    /// The configured per-connection write limit (the high-water mark).
    pub fn write_limit(&self) -> usize {
        self.hub.limits.write_limit
    }

    /// The reactor's counters.
    pub fn stats(&self) -> &Stats {
        &self.hub.stats
    }

    /// The time of this turn of the loop: cheaper than `Instant::now()`, the same for
    /// every callback in one turn, and the clock the reactor's timers follow.
    pub fn now(&self) -> Instant {
        self.hub.now
    }

    /// Starts a graceful shutdown once this callback returns: stop accepting, call
    /// [`crate::Service::on_stop`], drain, and return from [`crate::Reactor::run`]. A
    /// client built on the reactor ends its run this way.
    pub fn shutdown(&mut self) {
        self.hub.stop_requested = true;
    }
}

/// `payload` framed by `codec`, as a shared frame.
fn encode_shared<C: Codec>(codec: &C, payload: &[u8]) -> Result<SharedFrame, FrameError> {
    let mut wire = Buffer::new();
    codec.encode(payload, &mut wire)?;
    Ok(SharedFrame::from_wire_bytes(wire.readable()))
}
