//! The chat as a reactor [`Service`]: the one file of the chat that uses [`Context`].
//! It wires each endpoint to its transport, the transports to the engine, and carries
//! out what the engine and the backplane ask for:
//!
//! ```text
//!   on_frames / on_frame --> transport::stream --+
//!   on_datagram ----------> transport::udp ------+--> Engine (Io: Wiring, backplane)
//!   on_close, on_timer, posts from other loops --+
//!   then finish(): the backplane's remote events to the engine; its connection's
//!   bytes, dial and close; its timer
//! ```
//!
//! [`Wiring`] is the engine's [`Outputs`] on a `Context`: an event is framed once per
//! framing and shared by every stream member it goes to, a member over the write limit
//! and a quarter is cut off, and every datagram passes the UDP guard.

use std::net::SocketAddr;
use std::time::Duration;

use log::warn;

use super::backplane;
use super::engine::{
    Backplane, Delivery, Engine, EventBytes, Form, Framing, Io, Limits, MemberId, Outputs,
};
use super::transport::guard::UdpGuard;
use super::transport::udp::{self, DatagramOutputs, UdpMembers};
use super::transport::{stream, Address, Role};
use super::{ChatCodec, ChatLoops, ChatSettings, ChatStatsHandle};
use crate::{
    CloseMode, CloseReason, ConnId, Context, EndpointId, Frames, LoopInfo, Origin, Service,
    SharedFrame, TimerId, UdpId,
};

/// What the chat service waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTimer {
    /// Time to log the counters (repeating).
    Stats,
    /// Time to check whether this UDP member has gone quiet.
    Expiry(MemberId),
    /// The backplane's timer: redial and refresh (Redis), or post again what a full
    /// inbox refused (loops).
    Backplane,
}

/// The chat service. See the module docs.
pub struct Chat {
    engine: Engine<Address>,
    /// The other loops or nodes.
    backplane: Box<dyn Backplane>,
    /// UDP members by address, and the guard on what goes back to UDP sources.
    udp: UdpMembers,
    /// Log the counters this often.
    stats_interval: Option<Duration>,
    /// The WebSocket listener (feature `ws`), whose connections are members once
    /// upgraded.
    pub(super) websocket: Option<EndpointId>,
    /// "loop I of N: " in a pool of several loops, for the log; else empty.
    label: String,
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat")
            .field("engine", &self.engine)
            .field("udp", &self.udp)
            .finish_non_exhaustive()
    }
}

impl Chat {
    /// A chat service with no members yet.
    pub fn new(settings: ChatSettings) -> Self {
        Chat::with_stats(settings, ChatStatsHandle::default())
    }

    /// A chat service that counts into `stats`, which the caller keeps to read them
    /// from another thread while the service runs.
    pub fn with_stats(settings: ChatSettings, stats: ChatStatsHandle) -> Self {
        Chat::build(settings, stats, None, &ChatLoops::default())
    }

    /// The chat service of one loop of a [`crate::Pool`]: its rooms span every loop
    /// that was given a clone of the same `shared` (see `backplane::loops`). With one
    /// loop, the same as [`Chat::new`].
    ///
    /// With a Redis cluster in the settings, each loop is a node of its own: its rooms
    /// span the cluster through Redis, and so the other loops too.
    pub fn on_loop(settings: ChatSettings, info: LoopInfo<Chat>, shared: &ChatLoops) -> Self {
        Chat::build(settings, ChatStatsHandle::default(), Some(info), shared)
    }

    fn build(
        settings: ChatSettings,
        stats: ChatStatsHandle,
        info: Option<LoopInfo<Chat>>,
        shared: &ChatLoops,
    ) -> Self {
        let label = match &info {
            Some(info) if info.count > 1 => format!("loop {} of {}: ", info.index, info.count),
            _ => String::new(),
        };
        let limits = Limits {
            max_text: settings.max_text,
            history: settings.history,
            presence_limit: settings.presence_limit,
            max_rooms: settings.max_rooms,
        };
        Chat {
            backplane: backplane::for_loop(&settings, info, shared, &stats),
            udp: UdpMembers::new(UdpGuard::new(&settings, stats.clone()), settings.udp_expiry),
            engine: Engine::new(limits, stats),
            stats_interval: settings.stats_interval,
            websocket: None,
            label,
        }
    }

    /// "loop I of N: " when this chat is one loop of several, else empty: what its log
    /// lines begin with.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The counters, shareable with other threads.
    pub fn stats(&self) -> &ChatStatsHandle {
        self.engine.stats()
    }

    /// The outbound endpoint the backplane's own connection (Redis) goes through.
    pub fn use_backplane_endpoint(&mut self, endpoint: EndpointId) {
        self.backplane.set_endpoint(endpoint);
    }

    /// Runs `f` on the backplane with what another loop posted, then carries out what
    /// it heard.
    pub(super) fn heard_on_backplane(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        f: impl FnOnce(&mut dyn Backplane),
    ) {
        f(self.backplane.as_mut());
        self.finish(ctx);
    }

    /// The engine's ports on `ctx`, and the engine, for one call.
    fn wired<'a, 'c>(
        &'a mut self,
        ctx: &'a mut Context<'c, Chat>,
    ) -> (
        &'a mut Engine<Address>,
        &'a mut dyn Backplane,
        Wiring<'a, 'c>,
    ) {
        let wiring = Wiring {
            ctx,
            udp: &mut self.udp,
        };
        (&mut self.engine, self.backplane.as_mut(), wiring)
    }

    /// After every callback: what the backplane heard goes to the engine, then its
    /// connection gets what it queued (or is dialled, or closed), and its timer is set.
    fn finish(&mut self, ctx: &mut Context<'_, Chat>) {
        let now = ctx.now();
        let (engine, backplane, mut wiring) = self.wired(ctx);
        engine.settle(&mut Io {
            now,
            out: &mut wiring,
            backplane,
        });
        if let Some((conn, transmit)) = self.backplane.transmit() {
            if !transmit.bytes.is_empty() {
                if let Err(e) = ctx.send(conn, &transmit.bytes) {
                    log::debug!("chat: cannot write to the backplane's connection: {e}");
                }
            }
            if transmit.close {
                ctx.close(conn, CloseMode::Abort);
            }
            self.backplane
                .note_queued(ctx.queued_output(conn).unwrap_or(0));
        }
        if let Some(dial) = self.backplane.dial_due(now) {
            match ctx.connect(dial, Role::Backplane) {
                Ok(conn) => self.backplane.dialling(conn),
                Err(e) => self.backplane.dial_failed(now, &e),
            }
        }
        if let Some(after) = self.backplane.timer() {
            ctx.set_timer(after, ChatTimer::Backplane);
        }
    }
}

impl Service for Chat {
    type Conn = Role;
    type Timer = ChatTimer;
    /// Length frames for members, WebSocket for the page's members, a plain stream
    /// for the backplane's connection.
    type Codec = ChatCodec;

    fn metrics(&self, out: &mut String) {
        self.stats().get().write_metrics(out);
        self.backplane.write_metrics(out);
    }

    /// Unhealthy while the backplane (the link to Redis) is down or not answering.
    fn health(&self) -> Result<(), String> {
        self.backplane.health()
    }

    fn on_start(&mut self, ctx: &mut Context<'_, Chat>) {
        if let Some(interval) = self.stats_interval.filter(|d| !d.is_zero()) {
            ctx.set_repeating(interval, ChatTimer::Stats);
        }
        self.backplane.start();
        if let Some(every) = self.backplane.every() {
            ctx.set_repeating(every, ChatTimer::Backplane);
        }
        self.finish(ctx);
    }

    fn on_connect(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        conn: ConnId,
        role: &mut Role,
        origin: Origin,
    ) {
        if *role == Role::Backplane {
            let held = self.engine.held_names();
            self.backplane.connected(ctx.now(), held);
        } else if self.websocket == Some(origin.endpoint()) {
            *role = Role::WebSocket(None); // a member once its upgrade is done
        } else {
            *role = stream::opened(&mut self.engine, conn);
        }
        self.finish(ctx);
    }

    fn on_frames(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        conn: ConnId,
        role: &mut Role,
        frames: Frames<'_, ChatCodec>,
    ) {
        let now = ctx.now();
        match *role {
            Role::Backplane => {
                for unit in frames.units() {
                    self.backplane.input(now, unit.payload);
                }
            }
            Role::WebSocket(_) => {
                let (engine, backplane, mut wiring) = self.wired(ctx);
                let mut io = Io {
                    now,
                    out: &mut wiring,
                    backplane,
                };
                for unit in frames.units() {
                    stream::websocket_unit(engine, &mut io, conn, role, unit);
                }
            }
            // One at a time, each checked against the write limit (see `each_frame`).
            Role::Member(_) | Role::Outside => {
                crate::service::each_frame(self, ctx, conn, role, frames)
            }
        }
        // Once per run of frames, not per frame: what the backplane heard meanwhile,
        // and its connection's bytes.
        self.finish(ctx);
    }

    fn on_frame(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        _conn: ConnId,
        role: &mut Role,
        payload: &[u8],
    ) {
        let now = ctx.now();
        let (engine, backplane, mut wiring) = self.wired(ctx);
        let mut io = Io {
            now,
            out: &mut wiring,
            backplane,
        };
        stream::frame(engine, &mut io, role, payload);
        // (`on_frames` finishes once the run of frames is handled.)
    }

    fn on_datagram(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        socket: UdpId,
        peer: SocketAddr,
        datagram: &[u8],
    ) {
        let now = ctx.now();
        let (engine, backplane, mut wiring) = self.wired(ctx);
        udp::datagram(
            engine,
            (now, backplane),
            &mut wiring,
            (socket, peer),
            datagram,
        );
        self.finish(ctx);
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        conn: ConnId,
        role: Role,
        reason: CloseReason,
    ) {
        let now = ctx.now();
        if role == Role::Backplane {
            let tls_failure = crate::tls::failure(ctx, conn);
            self.backplane.closed(now, reason, tls_failure);
        } else {
            let (engine, backplane, mut wiring) = self.wired(ctx);
            let mut io = Io {
                now,
                out: &mut wiring,
                backplane,
            };
            stream::closed(engine, &mut io, conn, role, &reason);
        }
        self.finish(ctx);
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Chat>, timer: TimerId, value: ChatTimer) {
        let now = ctx.now();
        match value {
            ChatTimer::Stats => log::info!("{}chat: {}", self.label, self.stats().get()),
            ChatTimer::Expiry(id) => {
                let (engine, backplane, mut wiring) = self.wired(ctx);
                udp::check_expiry(engine, (now, backplane), &mut wiring, timer, id);
            }
            ChatTimer::Backplane => {
                let engine = &self.engine;
                self.backplane.tick(now, &|| engine.held_names());
            }
        }
        self.finish(ctx);
    }
}

/// The engine's outputs on the reactor's `Context`. See the module docs.
struct Wiring<'a, 'c> {
    ctx: &'a mut Context<'c, Chat>,
    udp: &'a mut UdpMembers,
}

impl Wiring<'_, '_> {
    /// Sends a datagram unless the UDP guard withholds it. True if it was handed to
    /// the socket.
    fn send_datagram(&mut self, socket: UdpId, peer: SocketAddr, bytes: &[u8]) -> bool {
        let now = self.ctx.now();
        if !self.udp.guard.allow(now, socket, peer, bytes.len()) {
            return false;
        }
        match self.ctx.send_to(socket, peer, bytes) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("chat: cannot send to {peer}: {e}");
                false
            }
        }
    }

    /// The event framed for a stream member's endpoint, made once per framing.
    fn frame<'e>(
        &self,
        conn: ConnId,
        framing: Framing,
        event: &'e EventBytes,
    ) -> Option<&'e SharedFrame> {
        let ctx = &*self.ctx;
        event.framed(framing, |json| {
            let framed = match framing {
                Framing::Length => ctx.shared_frame(json),
                // Framed by the endpoint's codec: a text message.
                Framing::WebSocket => ctx.shared_frame_for(ctx.endpoint(conn)?, json),
            };
            framed
                .map_err(|e| warn!("chat: an event cannot be framed for stream members: {e}"))
                .ok()
        })
    }
}

impl Outputs<Address> for Wiring<'_, '_> {
    /// A shared frame for a stream member, cutting it off if that leaves it more than
    /// the write limit and a quarter behind; a datagram for a UDP member.
    fn deliver(&mut self, to: &Address, form: Form, event: &EventBytes) -> Delivery {
        let (conn, framing) = match *to {
            Address::Stream { conn, framing } => (conn, framing),
            Address::Datagram { socket, peer } => {
                let bytes = match form {
                    Form::Typed => event.json(),
                    Form::NameMsg => event.name_msg().unwrap_or_default(),
                };
                // A datagram the socket cannot take now is queued or dropped by the
                // reactor, as UDP allows; either way the room moves on.
                return match self.send_datagram(socket, peer, bytes) {
                    true => Delivery::Sent,
                    false => Delivery::Skipped,
                };
            }
        };
        let Some(frame) = self.frame(conn, framing, event) else {
            return Delivery::Skipped;
        };
        if self.ctx.send_shared(conn, frame).is_err() {
            return Delivery::Skipped;
        }
        let queued = self.ctx.queued_output(conn).unwrap_or(0);
        let limit = cut_off_at(self.ctx.write_limit());
        if queued <= limit {
            return Delivery::Sent;
        }
        warn!(
            "chat: {conn} has {queued} bytes queued, over the slow-consumer limit of \
             {limit} (the write limit and a quarter): disconnecting it"
        );
        self.ctx.close(conn, CloseMode::Abort);
        Delivery::CutOff
    }

    fn send(&mut self, to: &Address, bytes: &[u8]) {
        match *to {
            // Framed by the connection's codec: a length frame, or a WebSocket message.
            Address::Stream { conn, .. } => {
                if let Err(e) = self.ctx.send(conn, bytes) {
                    log::debug!("chat: cannot answer {conn}: {e}");
                }
            }
            Address::Datagram { socket, peer } => {
                self.send_datagram(socket, peer, bytes);
            }
        }
    }

    fn close(&mut self, to: &Address) {
        if let Address::Stream { conn, .. } = *to {
            self.ctx.close(conn, CloseMode::Flush);
        }
    }

    fn gone(&mut self, to: &Address) {
        if let Address::Datagram { socket, peer } = *to {
            if let Some(timer) = self.udp.forget(socket, peer) {
                self.ctx.cancel_timer(timer);
            }
        }
    }
}

impl DatagramOutputs for Wiring<'_, '_> {
    fn udp(&mut self) -> &mut UdpMembers {
        self.udp
    }

    fn set_expiry_timer(&mut self, id: MemberId, after: Duration) -> TimerId {
        self.ctx.set_timer(after, ChatTimer::Expiry(id))
    }
}

/// The queued output past which a room event cuts a stream member off: the write
/// limit and a quarter more. The reactor stops handing a member its own requests once
/// their answers put its output over the write limit, so the output of a member that
/// pipelines requests and reads later rests just above the write limit; were that the
/// cut-off, any room event would cut such a member off, though everything it asked
/// for would arrive once it read. The quarter is room traffic's share above it: a
/// member that reads nothing is still cut off once that fills.
pub fn cut_off_at(write_limit: usize) -> usize {
    write_limit.saturating_add(write_limit / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_off_leaves_room_traffic_a_quarter_above_the_write_limit() {
        assert_eq!(cut_off_at(4 << 20), 5 << 20);
        assert_eq!(cut_off_at(64 * 1024), 80 * 1024);
        assert_eq!(cut_off_at(0), 0);
        assert_eq!(cut_off_at(usize::MAX), usize::MAX, "no overflow");
        // A member held at the write limit by its own answers, plus one more answer,
        // is not cut off by the next room event.
        let held = 64 * 1024 + 2 * 1024;
        assert!(held + 200 <= cut_off_at(64 * 1024));
    }
}
