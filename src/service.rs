//! The protocol side of the server: the [`Service`] trait a protocol implements.
//!
//! The reactor owns the sockets and calls the service when something happens: the loop
//! starts, a connection is up (accepted or dialled), a frame is complete, a datagram
//! arrives, a peer half-closes, queued output drains, a connection closes, a timer
//! fires, the loop stops. The service answers through the [`Context`]: send, close,
//! dial, set timers, pause reading.
//!
//! A service declares three types:
//! - `Conn`, its state for one connection. The reactor keeps it in the slab beside the
//!   connection, creates it (`Default`) when a connection is accepted or takes the one
//!   given to [`Context::connect`], lends it to every callback about that connection,
//!   and hands it back in [`Service::on_close`]. No `HashMap<ConnId, _>` needed.
//! - `Timer`, what its timers carry (an enum of the things it waits for).
//! - `Codec`, how its connections are framed. Each endpoint has a value of this type, so
//!   one reactor can serve length frames on one port and lines on another
//!   ([`crate::frame::AnyCodec`]).
//!
//! The whole echo service:
//!
//! ```
//! use std::net::SocketAddr;
//! use switchboard::{ConnId, Context, LengthCodec, Service, UdpId};
//!
//! struct Echo;
//!
//! impl Service for Echo {
//!     type Conn = ();
//!     type Timer = ();
//!     type Codec = LengthCodec;
//!
//!     fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
//!         let _ = ctx.send(conn, payload);
//!     }
//!     fn on_datagram(&mut self, ctx: &mut Context<'_, Self>, socket: UdpId, peer: SocketAddr, datagram: &[u8]) {
//!         let _ = ctx.send_to(socket, peer, datagram);
//!     }
//! }
//! ```

use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;

use crate::connection::ConnId;
use crate::context::{AfterFrame, CloseMode, Context};
use crate::endpoint::EndpointId;
use crate::frame::{Codec, Decode};
use crate::protocol::{Unit, Units};
use crate::stats::CloseReason;
use crate::timer::TimerId;
use crate::udp::UdpId;

/// A protocol served by the reactor. Every callback has a default, so a service
/// implements only what it uses.
///
/// A service with state per connection and a timer per connection: each client must
/// say its name within ten seconds, and is greeted by it from then on.
///
/// ```
/// use std::time::Duration;
/// use switchboard::{CloseMode, CloseReason, ConnId, Context, LinesCodec, Origin, Service, TimerId};
///
/// #[derive(Default)]
/// struct Visitor {
///     name: Option<String>,
/// }
///
/// #[derive(Clone)]
/// enum Wait {
///     ForName,
/// }
///
/// struct Greeter;
///
/// impl Service for Greeter {
///     type Conn = Visitor;
///     type Timer = Wait;
///     type Codec = LinesCodec;
///
///     fn on_connect(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut Visitor, _: Origin) {
///         let _ = ctx.send(conn, b"who are you?");
///         // Dies with the connection if it closes first.
///         ctx.set_conn_timer(conn, Duration::from_secs(10), Wait::ForName);
///     }
///
///     fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, visitor: &mut Visitor, line: &[u8]) {
///         let name = visitor.name.get_or_insert_with(|| String::from_utf8_lossy(line).into_owned());
///         let _ = ctx.send(conn, format!("hello, {name}").as_bytes());
///     }
///
///     fn on_conn_timer(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, visitor: &mut Visitor, _: TimerId, _: Wait) {
///         if visitor.name.is_none() {
///             let _ = ctx.send(conn, b"too slow");
///             ctx.close(conn, CloseMode::Flush);
///         }
///     }
///
///     fn on_close(&mut self, _ctx: &mut Context<'_, Self>, _conn: ConnId, visitor: Visitor, reason: CloseReason) {
///         log::debug!("{:?} left: {reason}", visitor.name);
///     }
/// }
/// ```
pub trait Service: Sized {
    /// The service's state for one connection: created with `Default` for accepted
    /// connections (or given to [`Context::connect`] for dialled ones), taken with every
    /// callback about the connection, handed back by [`Service::on_close`]. `()` when
    /// the service keeps none.
    type Conn: Default;

    /// What the service's timers carry: usually an enum of the things it waits for.
    /// `Clone` because a repeating timer hands out its value every round.
    type Timer: Clone;

    /// How the service's connections are framed. Each endpoint has its own value.
    type Codec: Codec;

    /// The loop is about to run: set timers, dial out.
    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        let _ = ctx;
    }

    /// A connection is up: accepted on a listener, or dialled and connected. `origin`
    /// says which, and through which endpoint.
    fn on_connect(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        state: &mut Self::Conn,
        origin: Origin,
    ) {
        let _ = (ctx, conn, state, origin);
    }

    /// A complete frame arrived on `conn`. `payload` borrows the reactor's read buffer:
    /// copy what must outlive the call.
    fn on_frame(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        state: &mut Self::Conn,
        payload: &[u8],
    ) {
        let _ = (ctx, conn, state, payload);
    }

    /// Every complete frame that one read brought on `conn`, in order. The default
    /// hands each payload to [`Service::on_frame`] (and stops if the service closes
    /// the connection). A service that can treat a run of frames at once overrides it:
    /// echo sends the whole run back with one [`Context::forward`], one copy for all.
    ///
    /// The default also stops once the answers put `conn`'s queued output over the
    /// write limit ([`Context::over_write_limit`]): the frames not handled yet wait in
    /// the connection's read buffer ([`Payloads::hold_rest`]) and come again once the
    /// output drains, so a client that pipelines many requests with large answers
    /// cannot make the server queue all the answers at once.
    fn on_frames(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        state: &mut Self::Conn,
        frames: Frames<'_, Self::Codec>,
    ) {
        each_frame(self, ctx, conn, state, frames);
    }

    /// A datagram arrived on a UDP socket.
    fn on_datagram(
        &mut self,
        ctx: &mut Context<'_, Self>,
        socket: UdpId,
        peer: SocketAddr,
        datagram: &[u8],
    ) {
        let _ = (ctx, socket, peer, datagram);
    }

    /// The peer shut its side (EOF): nothing more will arrive on `conn`, but it may
    /// still read what the service sends. The default closes once the queued output
    /// is written. A service that still owes replies (a proxy passing the half-close
    /// on, say) keeps the connection and closes it, or shuts its own side with
    /// [`Context::shutdown_write`], when it is done.
    fn on_peer_closed(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        state: &mut Self::Conn,
    ) {
        let _ = state;
        ctx.close(conn, CloseMode::Flush);
    }

    /// `conn`'s queued output passed the write limit earlier and has now drained to the
    /// low-water mark: a good time to resume whatever was paused for it.
    fn on_drained(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, state: &mut Self::Conn) {
        let _ = (ctx, conn, state);
    }

    /// `conn`'s TLS handshake is done (feature `tls`; only for connections of a TLS
    /// endpoint or dial): [`Context::tls`] tells what was agreed. Output sent before
    /// now was held until this moment and is on its way. Called before the frames of
    /// any record that arrived with the end of the handshake.
    fn on_tls_ready(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, state: &mut Self::Conn) {
        let _ = (ctx, conn, state);
    }

    /// `conn` is closed (or its connect failed); its id will never name a connection
    /// again. The state comes back to the service.
    fn on_close(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        state: Self::Conn,
        reason: CloseReason,
    ) {
        let _ = (ctx, conn, state, reason);
    }

    /// A timer set with [`Context::set_timer`] or [`Context::set_repeating`] is due.
    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, timer: TimerId, value: Self::Timer) {
        let _ = (ctx, timer, value);
    }

    /// A timer set with [`Context::set_conn_timer`] (or [`Context::set_conn_repeating`])
    /// is due, and its connection is still there.
    fn on_conn_timer(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        state: &mut Self::Conn,
        timer: TimerId,
        value: Self::Timer,
    ) {
        let _ = (ctx, conn, state, timer, value);
    }

    /// The loop is shutting down: what the service sends now (a goodbye) is still
    /// written while the connections drain, within the grace period.
    fn on_stop(&mut self, ctx: &mut Context<'_, Self>) {
        let _ = ctx;
    }

    /// The admin endpoint is answering `GET /metrics`: append the service's own
    /// metrics to `out`, in the Prometheus text format (`# HELP`, `# TYPE`, then the
    /// samples; names prefixed `switchboard_`, counters ending in `_total`), after the
    /// reactor's. [`crate::metrics::sample`] writes one. By default, nothing.
    fn metrics(&self, out: &mut String) {
        let _ = out;
    }

    /// The admin endpoint is answering `GET /healthz`: `Ok` for `200 ok`, or why the
    /// service cannot do its work now (a link it depends on is down, say), for a `503`
    /// with the reason as the body. By default, healthy.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// What [`Service::on_frames`] does by default, for a service that overrides it for
/// some connections only: each payload to [`Service::on_frame`], stopping if the
/// service closes the connection, and leaving the rest for later once the answers put
/// the output over the write limit (see [`Service::on_frames`]).
pub fn each_frame<S: Service>(
    service: &mut S,
    ctx: &mut Context<'_, S>,
    conn: ConnId,
    state: &mut S::Conn,
    frames: Frames<'_, S::Codec>,
) {
    let mut payloads = frames.payloads();
    while let Some(payload) = payloads.next() {
        service.on_frame(ctx, conn, state, payload);
        match ctx.after_frame(conn) {
            AfterFrame::Next => {}
            AfterFrame::Stop => break,
            AfterFrame::Hold if payloads.can_hold() => {
                payloads.hold_rest();
                break;
            }
            // A protocol's units are handed over whole (see `crate::protocol`).
            AfterFrame::Hold => {}
        }
    }
}

/// How a connection came to be: accepted on a listener, or dialled by the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Accepted on this listener endpoint.
    Accepted(EndpointId),
    /// Dialled with [`Context::connect`] through this outbound endpoint.
    Dialled(EndpointId),
}

impl Origin {
    /// The endpoint, either way.
    pub fn endpoint(&self) -> EndpointId {
        match *self {
            Origin::Accepted(endpoint) | Origin::Dialled(endpoint) => endpoint,
        }
    }

    /// True for a dialled connection.
    pub fn is_dialled(&self) -> bool {
        matches!(self, Origin::Dialled(_))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Accepted(endpoint) => write!(f, "accepted on {endpoint}"),
            Origin::Dialled(endpoint) => write!(f, "dialled through {endpoint}"),
        }
    }
}

/// A run of complete frames from one read of one connection, exactly as they arrived.
///
/// ```
/// use switchboard::{Frames, LengthCodec};
/// let wire = [0, 0, 0, 1, b'a', 0, 0, 0, 2, b'b', b'c'];
/// let codec = LengthCodec::new(16);
/// let frames = Frames::new(&wire, 2, &codec, ());
/// let payloads: Vec<&[u8]> = frames.payloads().collect();
/// assert_eq!(payloads, [&b"a"[..], &b"bc"[..]]);
/// // A framing codec's frames as units: kind 0, no parts.
/// let units: Vec<_> = frames.units().map(|u| (u.kind(), u.part_count(), u.payload)).collect();
/// assert_eq!(units, [(0, 0, &b"a"[..]), (0, 0, &b"bc"[..])]);
/// assert_eq!(frames.wire(), &wire);
/// ```
pub struct Frames<'a, C: Codec> {
    wire: &'a [u8],
    count: usize,
    codec: &'a C,
    /// The codec's state before the first of these frames: walking them again from
    /// it finds the same frames.
    start: C::State,
    /// Where the reactor hears what the service left for later
    /// ([`Payloads::hold_rest`]); `None` for frames made outside the reactor.
    held_back: Option<&'a HeldBack<C::State>>,
    /// A protocol's units, recorded as they were processed (see `crate::protocol`):
    /// walked instead of decoding the bytes again. (By reference: one word more for
    /// the frames of a framing codec, which are handed over on the hottest path.)
    units: Option<&'a Units<'a>>,
}

/// What a service left unhandled of a run of frames ([`Payloads::hold_rest`]), for
/// the reactor to keep: where the rest begins and the codec's state there.
pub(crate) struct HeldBack<S> {
    /// Bytes of the run left, from the end (0: everything was handled).
    pub bytes: Cell<usize>,
    /// Frames handled before the rest.
    pub taken: Cell<usize>,
    /// The codec's state at the first frame left.
    pub state: Cell<Option<S>>,
}

impl<S> Default for HeldBack<S> {
    fn default() -> Self {
        HeldBack {
            bytes: Cell::new(0),
            taken: Cell::new(0),
            state: Cell::new(None),
        }
    }
}

impl<C: Codec> Clone for Frames<'_, C> {
    fn clone(&self) -> Self {
        Frames {
            wire: self.wire,
            count: self.count,
            codec: self.codec,
            start: self.start.clone(),
            held_back: self.held_back,
            units: self.units,
        }
    }
}

impl<C: Codec> fmt::Debug for Frames<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frames")
            .field("count", &self.count)
            .field("bytes", &self.wire.len())
            .finish()
    }
}

impl<'a, C: Codec> Frames<'a, C> {
    /// `count` complete frames making up all of `wire`, in `codec`'s format, which
    /// `codec` decodes starting from `state`.
    pub fn new(wire: &'a [u8], count: usize, codec: &'a C, state: C::State) -> Self {
        Frames {
            wire,
            count,
            codec,
            start: state,
            held_back: None,
            units: None,
        }
    }

    /// A protocol's units of one read, recorded by the reactor as it processed them.
    pub(crate) fn from_units(wire: &'a [u8], units: &'a Units<'a>, codec: &'a C) -> Self {
        Frames {
            units: Some(units),
            ..Frames::new(wire, units.records.len(), codec, C::State::default())
        }
    }

    /// The units, in order, with their kinds and parts: a protocol's as it decoded
    /// them (see [`crate::protocol`]), or a framing codec's frames (kind 0, no parts).
    pub fn units(&self) -> impl Iterator<Item = Unit<'a>> + 'a {
        let wire = self.wire;
        // One of the two is empty: a protocol's records, or a framing codec's frames.
        let recorded = self.units.into_iter().flat_map(move |units| {
            let record = move |record| Unit::recorded(wire, record, units.parts);
            units.records.iter().map(record)
        });
        let framed = self
            .units
            .is_none()
            .then(|| self.payloads().map(Unit::plain));
        recorded.chain(framed.into_iter().flatten())
    }

    /// [`Frames::new`], for the reactor: the service may leave frames for later, and
    /// `held_back` says how many bytes it left.
    pub(crate) fn holdable(
        wire: &'a [u8],
        count: usize,
        codec: &'a C,
        state: C::State,
        held_back: &'a HeldBack<C::State>,
    ) -> Self {
        Frames {
            held_back: Some(held_back),
            ..Frames::new(wire, count, codec, state)
        }
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
    pub fn payloads(&self) -> Payloads<'a, C> {
        Payloads {
            wire: self.wire,
            codec: self.codec,
            state: self.start.clone(),
            pos: 0,
            taken: 0,
            held_back: self.held_back,
            units: self.units,
        }
    }
}

/// The payloads of [`Frames`], in order; [`Payloads::hold_rest`] leaves the ones not
/// taken yet for later.
pub struct Payloads<'a, C: Codec> {
    wire: &'a [u8],
    codec: &'a C,
    state: C::State,
    /// Bytes of `wire` walked so far.
    pos: usize,
    /// Payloads yielded so far.
    taken: usize,
    held_back: Option<&'a HeldBack<C::State>>,
    /// A protocol's recorded units, walked instead of decoding.
    units: Option<&'a Units<'a>>,
}

impl<C: Codec> Payloads<'_, C> {
    /// Whether [`Payloads::hold_rest`] can leave frames for later: true for a framing
    /// codec's frames from the reactor, false for a protocol's units (handed over
    /// whole) and for frames made outside the reactor.
    pub fn can_hold(&self) -> bool {
        self.held_back.is_some() && self.units.is_none()
    }

    /// Leaves the frames not taken yet unhandled: the reactor keeps them in the
    /// connection's read buffer, reads nothing more from it meanwhile, and hands them
    /// to [`Service::on_frames`] again once the connection's queued output has drained
    /// to the low-water mark. For a service whose answers cannot keep up with its
    /// requests ([`Context::over_write_limit`]). Does nothing for frames not made by
    /// the reactor, nor for a protocol's units ([`Payloads::can_hold`]).
    pub fn hold_rest(self) {
        if let Some(held_back) = self.held_back {
            held_back.bytes.set(self.wire.len() - self.pos);
            held_back.taken.set(self.taken);
            held_back.state.set(Some(self.state));
        }
    }
}

impl<'a, C: Codec> Iterator for Payloads<'a, C> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let wire = self.wire;
        if let Some(units) = self.units {
            let record = units.records.get(self.taken)?;
            self.taken += 1;
            return Some(&wire[record.payload.clone()]);
        }
        match self.codec.decode(&mut self.state, &wire[self.pos..]) {
            Ok(Decode::Frame { payload, consumed }) if consumed > 0 => {
                let frame = &wire[self.pos + payload.start..self.pos + payload.end];
                self.pos += consumed;
                self.taken += 1;
                Some(frame)
            }
            _ => None,
        }
    }
}

impl<C: Codec> fmt::Debug for Payloads<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payloads")
            .field("walked", &self.pos)
            .field("bytes", &self.wire.len())
            .finish()
    }
}
