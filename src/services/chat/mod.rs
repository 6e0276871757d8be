//! The chat service: named members in rooms, over TCP and UDP, with direct messages,
//! presence events, history, and cheap fan-out. `switchboard chat` runs it;
//! `docs/chat.md` describes the protocol.
//!
//! ```text
//!   frame / datagram --parse--> Request --+--> Directory (names, rooms, history)
//!                                         +--> Event --encode once--> every member
//! ```
//!
//! - [`protocol`]: the JSON messages and the name rules.
//! - `rooms`: who is where (pure bookkeeping, no I/O), with the room limit.
//! - `fanout`: one event encoded once, delivered to TCP and UDP members alike; the
//!   slow-consumer cut-off.
//! - `requests`: what each request does.
//! - `guard`: what may be sent back to a UDP source, whose address may be forged: at
//!   most 3x to non-members, a reply rate per source, newcomers admitted at a rate,
//!   the server's own output never answered; `bucket` holds its token buckets.
//! - `stats`: the counters. What a flood could repeat is logged through
//!   `crate::throttle`, one line per `LOG_INTERVAL` and kind.
//!
//! Every event to a room is queued for all its members within one callback, on the
//! loop's single thread, so every member sees a room's events in the same order.
//!
//! ```no_run
//! use switchboard::services::chat::{Chat, ChatCodec, ChatSettings};
//! use switchboard::{Config, Reactor};
//! let mut config = Config::default();
//! config.tcp.push("127.0.0.1:9001".parse().unwrap());
//! config.udp.push("127.0.0.1:9001".parse().unwrap());
//! let chat = Chat::new(ChatSettings::default());
//! let codec = ChatCodec::length(1 << 20);
//! let stopped = Reactor::bind(config, chat, codec).unwrap().run().unwrap();
//! println!("chat served: {}", stopped.service.stats().get());
//! ```

mod bucket;
mod codec;
mod fanout;
mod guard;
mod loops;
pub mod protocol;
#[cfg(feature = "redis")]
pub mod redis;
mod requests;
mod rooms;
mod stats;
#[cfg(feature = "ws")]
pub mod ws;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::time::Duration;

use crate::throttle::Throttle;
pub use codec::{ChatCodec, ChatCodecState};

use crate::{CloseReason, ConnId, Context, Frames, LoopInfo, Origin, Service, TimerId, UdpId};
use fanout::{legacy_error, reply_to_peer, Delivery, Encoded};
use guard::{UdpGuard, REFLECTION_WINDOW};
use loops::LoopLink;
use protocol::{is_own_output, LOBBY};
use rooms::{Directory, Form, Link, MemberId, UdpLink};

pub use loops::{ChatLoops, LoopRegistry};
pub use protocol::{parse, BadInput, Event, Incoming, Legacy, LegacyMessage, Request};
pub use stats::{ChatStats, ChatStatsHandle};

/// The least time between two log lines about one kind of event that hostile input
/// can repeat at will (a refused join, a withheld answer, a turned-away newcomer).
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The chat limits, from `switchboard chat`'s flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatSettings {
    /// Longest `text` accepted, in bytes.
    pub max_text: usize,
    /// Messages kept per room and replayed to a member who joins it.
    pub history: usize,
    /// A UDP member that sends nothing for this long leaves the chat.
    pub udp_expiry: Duration,
    /// Rooms with more members than this do not announce joins, leaves and renames
    /// to everyone (only to the member concerned): in a room of N, N joins would
    /// otherwise cost N²/2 deliveries.
    pub presence_limit: usize,
    /// Log the chat counters this often. `None`: only at shutdown.
    pub stats_interval: Option<Duration>,
    /// Join a cluster of chat servers through this Redis (feature `redis`).
    #[cfg(feature = "redis")]
    pub redis: Option<redis::node::RedisSettings>,
    /// The most rooms one member may be in at once: what one member can make the
    /// directory hold stays bounded.
    pub max_rooms: usize,
    /// Bytes a second that one UDP source may be sent in answer to its datagrams,
    /// with bursts of twice that; 0: no limit. Bounds what a forged source can
    /// reflect onto the address it names.
    pub udp_reply_rate: u64,
    /// How many UDP sources the reply rate keeps track of; past that, the oldest are
    /// forgotten (and start again with a full allowance).
    pub udp_reply_sources: usize,
    /// New UDP members admitted per second, with bursts of as many; 0: no limit. A
    /// flood of new source ports is otherwise a flood of lobby messages.
    pub udp_join_rate: u32,
    /// The most UDP members at once (each one is sent all its rooms' traffic).
    pub max_udp_members: usize,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            max_text: 4096,
            history: 20,
            udp_expiry: Duration::from_secs(300),
            presence_limit: 1000,
            stats_interval: None,
            #[cfg(feature = "redis")]
            redis: None,
            max_rooms: 100,
            udp_reply_rate: 64 * 1024,
            udp_reply_sources: 16 * 1024,
            udp_join_rate: 20,
            max_udp_members: 1000,
        }
    }
}

/// What the chat service waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTimer {
    /// Time to log the counters (repeating).
    Stats,
    /// Time to check whether this UDP member has gone quiet.
    Expiry(MemberId),
    /// Time to look at the link to the cluster (feature `redis`): redial, refresh.
    Cluster,
    /// Time to post again the room notices another loop's full inbox refused.
    LoopRetry,
}

/// The chat's state for one TCP connection: the member it carries.
#[derive(Debug, Default)]
pub struct Seat {
    member: Option<MemberId>,
    /// The connection is the node's link to Redis, not a member's.
    redis: bool,
    /// The connection is a WebSocket (feature `ws`): its units are the upgrade, then
    /// messages.
    ws: bool,
}

impl Seat {
    /// The seat of the Redis connection.
    #[cfg(feature = "redis")]
    pub(crate) fn redis() -> Seat {
        Seat {
            member: None,
            redis: true,
            ..Seat::default()
        }
    }
}

/// The chat service. See the module docs.
#[derive(Debug)]
pub struct Chat {
    settings: ChatSettings,
    /// Members, names, rooms.
    directory: Directory,
    /// UDP members by the socket they use and their address (a TCP member's id is in
    /// its connection's [`Seat`]).
    by_peer: HashMap<(UdpId, SocketAddr), MemberId>,
    /// What may be sent back to UDP sources.
    guard: UdpGuard,
    /// Joins refused at the room limit, for the log.
    room_limit_log: Throttle,
    stats: ChatStatsHandle,
    /// The other loops of the pool, when there are any.
    loops: Option<LoopLink>,
    /// The link to the other nodes of a cluster through Redis.
    #[cfg(feature = "redis")]
    redis: Option<redis::node::Node>,
    /// The WebSocket listener (feature `ws`).
    ws: Option<crate::EndpointId>,
}

impl Chat {
    /// A chat service with no members yet.
    pub fn new(settings: ChatSettings) -> Self {
        Chat::with_stats(settings, ChatStatsHandle::default())
    }

    /// A chat service that counts into `stats`, which the caller keeps to read them
    /// from another thread while the service runs.
    pub fn with_stats(settings: ChatSettings, stats: ChatStatsHandle) -> Self {
        Chat {
            guard: UdpGuard::new(&settings, stats.clone()),
            settings,
            directory: Directory::default(),
            by_peer: HashMap::new(),
            room_limit_log: Throttle::new(LOG_INTERVAL),
            stats,
            loops: None,
            #[cfg(feature = "redis")]
            redis: None,
            ws: None,
        }
    }

    /// The chat service of one loop of a [`crate::Pool`]: its rooms span every loop
    /// that was given a clone of the same `shared` (see `loops`). With one loop, the
    /// same as [`Chat::new`].
    ///
    /// With a Redis cluster in the settings, each loop is a node of its own: its rooms
    /// span the cluster through Redis, and so the other loops too.
    pub fn on_loop(settings: ChatSettings, info: LoopInfo<Chat>, shared: &ChatLoops) -> Self {
        #[cfg(feature = "redis")]
        let cluster = settings.redis.clone();
        let mut chat = Chat::new(settings);
        #[cfg(feature = "redis")]
        if let Some(cluster) = cluster {
            chat.redis = Some(redis::node::Node::new(cluster, info.index));
            return chat;
        }
        if info.count > 1 {
            chat.loops = Some(LoopLink::new(info.index, info.peers, shared.clone()));
        }
        chat
    }

    /// Sets the timer that posts refused room notices again, if some wait for it.
    fn arm_loop_retry(&mut self, ctx: &mut Context<'_, Chat>) {
        if self.loops.as_mut().is_some_and(LoopLink::needs_retry) {
            ctx.set_timer(loops::LOOP_RETRY, ChatTimer::LoopRetry);
        }
    }

    /// Tells every member something that is not about a room.
    #[cfg(feature = "redis")]
    fn notify_all(&mut self, ctx: &mut Context<'_, Chat>, text: &str) {
        let ids: Vec<MemberId> = self.directory.member_ids().collect();
        for id in ids {
            self.notify(ctx, id, text);
        }
    }

    /// Tells one member something that is not about a room.
    #[cfg(feature = "redis")]
    fn notify(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId, text: &str) {
        self.reply(ctx, id, &Event::Notice { text });
    }

    /// The counters, shareable with other threads.
    pub fn stats(&self) -> &ChatStatsHandle {
        &self.stats
    }

    /// Records the time of a known UDP peer's datagram and the form it speaks.
    fn touch_udp(&mut self, ctx: &Context<'_, Chat>, id: MemberId, form: Form) {
        if let Some(Link::Udp(udp)) = self.directory.member_mut(id).map(|m| &mut m.link) {
            udp.last_seen = ctx.now();
            udp.form = form;
        }
    }

    fn add_udp_member(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        socket: UdpId,
        peer: SocketAddr,
        form: Form,
    ) -> MemberId {
        let id = self.directory.add(Link::Udp(UdpLink {
            socket,
            peer,
            form,
            last_seen: ctx.now(),
            expiry_timer: None,
            last_echo: None,
        }));
        let timer = ctx.set_timer(self.settings.udp_expiry, ChatTimer::Expiry(id));
        self.set_expiry_timer(id, timer);
        self.by_peer.insert((socket, peer), id);
        id
    }

    fn set_expiry_timer(&mut self, id: MemberId, timer: TimerId) {
        if let Some(Link::Udp(udp)) = self.directory.member_mut(id).map(|m| &mut m.link) {
            udp.expiry_timer = Some(timer);
        }
    }

    /// Makes a UDP newcomer a member, if the join rate and the member limit allow;
    /// otherwise tells it so (briefly, in its own form) and returns `None`.
    fn admit(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        socket: UdpId,
        peer: SocketAddr,
        form: Form,
    ) -> Option<MemberId> {
        if let Err(turned) = self.guard.admit(ctx.now(), peer, self.by_peer.len()) {
            let reason = turned.reason();
            match form {
                Form::Typed => {
                    reply_to_peer(ctx, &mut self.guard, socket, peer, &Event::Error { reason })
                }
                Form::Legacy => legacy_error(ctx, &mut self.guard, socket, peer, reason),
            }
            return None;
        }
        Some(self.add_udp_member(ctx, socket, peer, form))
    }

    /// A seed-style datagram from a new peer: it becomes a legacy member if admitted
    /// and its name is free, then speaks.
    fn legacy_newcomer(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        socket: UdpId,
        peer: SocketAddr,
        message: LegacyMessage,
    ) {
        let Some(id) = self.admit(ctx, socket, peer, Form::Legacy) else {
            return;
        };
        if !self.hello(ctx, id, &message.name) {
            // A UDP member without a name would have proved nothing: undo the admission.
            return self.remove_member(ctx, id);
        }
        self.legacy_message(ctx, id, message);
    }

    /// A seed-style datagram from a member: `hello name` if the name is new to it,
    /// join the lobby if not in it (silently: see [`Chat::announce`]), `say` there.
    fn legacy_message(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        id: MemberId,
        message: LegacyMessage,
    ) {
        let has_name = self
            .directory
            .member(id)
            .is_some_and(|m| m.name.as_deref() == Some(message.name.as_str()));
        if !has_name && !self.hello(ctx, id, &message.name) {
            return;
        }
        if !self.directory.is_in(id, LOBBY) {
            self.join(ctx, id, LOBBY);
        }
        let echo = self.say(ctx, id, LOBBY, &message.msg);
        let echo = echo.as_deref().and_then(Encoded::legacy_bytes).map(hash_of);
        if let Some(Link::Udp(udp)) = self.directory.member_mut(id).map(|m| &mut m.link) {
            udp.last_echo = echo.map(|hash| (hash, ctx.now()));
        }
    }

    /// True if a legacy member's datagram is the echo of its own message that the
    /// server just sent it, come back: an echo service, or a second chat server,
    /// reflecting it. Answering would echo it again, for ever. A member repeating
    /// itself sends its own bytes, which match only if it writes JSON exactly as the
    /// server does and repeats itself within [`REFLECTION_WINDOW`].
    fn is_reflected_echo(&self, ctx: &Context<'_, Chat>, id: MemberId, datagram: &[u8]) -> bool {
        let Some(Link::Udp(udp)) = self.directory.member(id).map(|m| &m.link) else {
            return false;
        };
        udp.last_echo.is_some_and(|(hash, at)| {
            ctx.now().saturating_duration_since(at) < REFLECTION_WINDOW && hash == hash_of(datagram)
        })
    }

    /// A typed request from a UDP peer that is not a member: `hello` makes it one (if
    /// admitted); `ping` needs no membership; the rest, the room list included, need
    /// a name first, which is said in as few bytes as possible (see `guard`).
    fn stranger_request(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        socket: UdpId,
        peer: SocketAddr,
        request: Request,
    ) {
        match request {
            Request::Hello { .. } => {
                let Some(id) = self.admit(ctx, socket, peer, Form::Typed) else {
                    return;
                };
                self.handle(ctx, id, request);
                if self.directory.member(id).is_some_and(|m| m.name.is_none()) {
                    self.remove_member(ctx, id); // as for a legacy newcomer
                }
            }
            Request::Ping => reply_to_peer(ctx, &mut self.guard, socket, peer, &Event::Pong),
            _ => {
                let reason = requests::HELLO_FIRST_SHORT;
                reply_to_peer(ctx, &mut self.guard, socket, peer, &Event::Error { reason });
            }
        }
    }

    /// Removes a member (with its expiry timer, if a UDP one) and tells its rooms it left.
    pub(super) fn remove_member(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId) {
        let Some(member) = self.directory.remove(id) else {
            return;
        };
        if let Link::Udp(udp) = &member.link {
            self.by_peer.remove(&(udp.socket, udp.peer));
            // Not left to fire for nothing: a flood of refused `hello`s would otherwise
            // leave one timer per datagram for the whole expiry period.
            if let Some(timer) = udp.expiry_timer {
                ctx.cancel_timer(timer);
            }
        }
        // Legacy members cause no presence events (see `announce`).
        if let Some(name) = member.name.as_ref().filter(|_| !member.is_legacy()) {
            for room in &member.rooms {
                self.announce(ctx, room, None, &Event::Left { room, name });
            }
        }
        if let Some(link) = &mut self.loops {
            link.forget(member.name.as_deref(), &member.rooms, true);
            for room in &member.rooms {
                if self.directory.room(room).is_none() {
                    link.room_changed(room, false);
                }
            }
        }
        self.arm_loop_retry(ctx);
        #[cfg(feature = "redis")]
        {
            if let Some(node) = &mut self.redis {
                node.waiting.remove(&id);
            }
            for room in &member.rooms {
                self.rooms_changed_in_cluster(ctx, None, room);
            }
            if let Some(name) = &member.name {
                self.release_in_cluster(ctx, name);
            }
        }
    }

    /// Sends a presence event to `room`: to everyone while the room is within the
    /// presence limit, otherwise only to `subject` (the member it is about, when it is
    /// still in the room).
    ///
    /// A legacy member's comings and goings are not announced: it receives no
    /// presence events, and a seed-style datagram from a new port is a join, so
    /// announcing them would let a flood of new ports send an event to every member
    /// of the lobby for each datagram. Its messages carry its name.
    fn announce(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        room: &str,
        subject: Option<MemberId>,
        event: &Event<'_>,
    ) {
        if subject.is_some_and(|id| self.directory.member(id).is_some_and(|m| m.is_legacy())) {
            return;
        }
        // A subject that has gone already still counts toward the room's size (and the
        // room may be gone here, with members left on other loops).
        let local = self
            .directory
            .room(room)
            .map_or(0, |entry| entry.members().len());
        let size = local + usize::from(subject.is_none());
        if size <= self.settings.presence_limit {
            let encoded = Encoded::new(ctx, event, None);
            if local > 0 {
                self.broadcast(ctx, room, &encoded);
            }
            if let Some(link) = &mut self.loops {
                link.publish(room, &encoded, false, &self.stats);
            }
            #[cfg(feature = "redis")]
            self.publish_to_cluster(ctx, room, &encoded, false);
        } else if let Some(id) = subject {
            self.reply(ctx, id, event);
        }
    }

    /// Delivers one encoded event to every member of `room`. Returns how many got it.
    fn broadcast(&mut self, ctx: &mut Context<'_, Chat>, room: &str, event: &Encoded) -> u64 {
        let (mut sent, mut cut) = (0, 0);
        let guard = &mut self.guard;
        self.directory.for_each_in(room, |member| {
            match fanout::deliver(ctx, guard, member, event) {
                Delivery::Sent => sent += 1,
                Delivery::CutOff => cut += 1,
                Delivery::Skipped => {}
            }
        });
        self.stats.slow_consumers_cut(cut);
        sent
    }

    /// Delivers one encoded event to one member. Returns 1 if it got it, else 0.
    fn send_event(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId, event: &Encoded) -> u64 {
        let Some(member) = self.directory.member_mut(id) else {
            return 0;
        };
        match fanout::deliver(ctx, &mut self.guard, member, event) {
            Delivery::Sent => 1,
            Delivery::CutOff => {
                self.stats.slow_consumers_cut(1);
                0
            }
            Delivery::Skipped => 0,
        }
    }

    /// Answers one member.
    fn reply(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId, event: &Event<'_>) {
        if let Some(member) = self.directory.member(id) {
            fanout::reply(ctx, &mut self.guard, member, event);
        }
    }

    /// Expires a UDP member silent for the whole expiry period, or checks again when
    /// it would be (one timer per member, re-armed lazily rather than on every
    /// datagram).
    fn check_expiry(&mut self, ctx: &mut Context<'_, Chat>, timer: TimerId, id: MemberId) {
        let expiry = self.settings.udp_expiry;
        let Some(Link::Udp(udp)) = self.directory.member(id).map(|m| &m.link) else {
            return;
        };
        if udp.expiry_timer != Some(timer) {
            return; // a timer of an earlier member in the same slot
        }
        let due = udp.last_seen + expiry;
        if due > ctx.now() {
            let timer = ctx.set_timer(due - ctx.now(), ChatTimer::Expiry(id));
            self.set_expiry_timer(id, timer);
            return;
        }
        log::info!(
            "chat: UDP member {} at {} sent nothing for {expiry:?}: expired",
            self.name_of(id),
            udp.peer
        );
        self.remove_member(ctx, id);
    }

    fn name_of(&self, id: MemberId) -> &str {
        self.directory
            .member(id)
            .and_then(|m| m.name.as_deref())
            .unwrap_or("(no name)")
    }

    /// Publishes the member and room counts after a callback changed them.
    fn count_population(&self) {
        self.stats
            .set_population(self.directory.named_members(), self.directory.room_count());
    }
}

impl Service for Chat {
    fn metrics(&self, out: &mut String) {
        self.stats.get().write_metrics(out);
        #[cfg(feature = "redis")]
        if let Some(node) = &self.redis {
            node.write_metrics(out);
        }
    }

    /// Unhealthy while a node's link to Redis is down or not answering.
    fn health(&self) -> Result<(), String> {
        #[cfg(feature = "redis")]
        if let Some(node) = &self.redis {
            return node.health();
        }
        Ok(())
    }

    type Conn = Seat;
    type Timer = ChatTimer;
    /// Length frames for members; the Redis link (feature `redis`) is unframed.
    type Codec = ChatCodec;

    fn on_start(&mut self, ctx: &mut Context<'_, Chat>) {
        if let Some(interval) = self.settings.stats_interval.filter(|d| !d.is_zero()) {
            ctx.set_repeating(interval, ChatTimer::Stats);
        }
        #[cfg(feature = "redis")]
        self.start_cluster(ctx);
    }

    fn on_connect(
        &mut self,
        _ctx: &mut Context<'_, Chat>,
        conn: ConnId,
        seat: &mut Seat,
        _origin: Origin,
    ) {
        if self
            .ws
            .is_some_and(|endpoint| _origin == Origin::Accepted(endpoint))
        {
            // A member once its upgrade is done.
            seat.ws = true;
            return;
        }
        if seat.redis {
            #[cfg(feature = "redis")]
            self.cluster_connected(_ctx);
            return;
        }
        seat.member = Some(self.directory.add(Link::Tcp(conn)));
    }

    fn on_frames(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        conn: ConnId,
        seat: &mut Seat,
        frames: Frames<'_, ChatCodec>,
    ) {
        if seat.ws {
            #[cfg(feature = "ws")]
            for unit in frames.units() {
                self.ws_unit(ctx, conn, seat, unit);
            }
        } else {
            crate::service::each_frame(self, ctx, conn, seat, frames);
        }
    }

    fn on_frame(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        _conn: ConnId,
        seat: &mut Seat,
        payload: &[u8],
    ) {
        if seat.redis {
            #[cfg(feature = "redis")]
            self.cluster_input(ctx, _conn, payload);
            return;
        }
        let Some(id) = seat.member else {
            return;
        };
        match parse(payload, Legacy::Refused) {
            Ok(Incoming::Typed(request)) => self.handle(ctx, id, request),
            // Not produced when the legacy form is refused; answered like any bad input.
            Ok(Incoming::Legacy(_)) => self.refuse(ctx, id, "a typed request is expected"),
            Err(e) => self.refuse(ctx, id, &e.to_string()),
        }
        if self.directory.member(id).is_none() {
            // It said `bye`: the connection closes without a member.
            seat.member = None;
        }
        self.count_population();
    }

    fn on_datagram(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        socket: UdpId,
        peer: SocketAddr,
        datagram: &[u8],
    ) {
        if is_own_output(datagram) {
            return self.guard.reflected(ctx.now(), peer);
        }
        let known = self.by_peer.get(&(socket, peer)).copied();
        let named =
            known.is_some_and(|id| self.directory.member(id).is_some_and(|m| m.name.is_some()));
        self.guard.begin(socket, peer, datagram.len(), named);
        match (parse(datagram, Legacy::Accepted), known) {
            (Ok(Incoming::Legacy(_)), Some(id)) if self.is_reflected_echo(ctx, id, datagram) => {
                self.guard.reflected(ctx.now(), peer);
            }
            (Ok(Incoming::Legacy(message)), Some(id)) => {
                self.touch_udp(ctx, id, Form::Legacy);
                self.legacy_message(ctx, id, message);
            }
            (Ok(Incoming::Legacy(message)), None) => {
                self.legacy_newcomer(ctx, socket, peer, message)
            }
            (Ok(Incoming::Typed(request)), Some(id)) => {
                self.touch_udp(ctx, id, Form::Typed);
                self.handle(ctx, id, request);
            }
            (Ok(Incoming::Typed(request)), None) => {
                self.stranger_request(ctx, socket, peer, request)
            }
            (Err(e), Some(id)) => self.refuse(ctx, id, &e.to_string()),
            // Not answered: an error for input that is not a request would answer
            // another server's errors, which would answer ours.
            (Err(_), None) => self.guard.unanswered(ctx.now(), peer),
        }
        self.guard.end();
        self.count_population();
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        conn: ConnId,
        seat: Seat,
        reason: CloseReason,
    ) {
        if seat.redis {
            #[cfg(feature = "redis")]
            self.cluster_closed(ctx, reason);
            return;
        }
        let Some(id) = seat.member else {
            return;
        };
        log::debug!("chat: {conn} ({}) gone: {reason}", self.name_of(id));
        self.remove_member(ctx, id);
        self.count_population();
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Chat>, timer: TimerId, value: ChatTimer) {
        match value {
            ChatTimer::Stats => log::info!("chat: {}", self.stats.get()),
            ChatTimer::Expiry(id) => {
                self.check_expiry(ctx, timer, id);
                self.count_population();
            }
            ChatTimer::Cluster => {
                #[cfg(feature = "redis")]
                self.cluster_tick(ctx);
            }
            ChatTimer::LoopRetry => {
                if let Some(link) = &mut self.loops {
                    link.retried();
                }
                self.arm_loop_retry(ctx);
            }
        }
    }
}

/// A hash of a datagram, to recognise it later without keeping it.
fn hash_of(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}
