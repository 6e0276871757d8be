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
//! - `rooms`: who is where (pure bookkeeping, no I/O).
//! - `fanout`: one event encoded once, delivered to TCP and UDP members alike; the
//!   slow-consumer cut-off.
//! - `requests`: what each request does.
//! - `stats`: the counters.
//!
//! Every event to a room is queued for all its members within one callback, on the
//! loop's single thread, so every member sees a room's events in the same order.
//!
//! ```no_run
//! use switchboard::services::chat::{Chat, ChatSettings};
//! use switchboard::{Config, LengthCodec, Reactor};
//! let mut config = Config::default();
//! config.tcp.push("127.0.0.1:9001".parse().unwrap());
//! config.udp.push("127.0.0.1:9001".parse().unwrap());
//! let chat = Chat::new(ChatSettings::default());
//! let stopped = Reactor::bind(config, chat, LengthCodec::new(1 << 20)).unwrap().run().unwrap();
//! println!("chat served: {}", stopped.service.stats().get());
//! ```

mod fanout;
pub mod protocol;
mod requests;
mod rooms;
mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::{CloseReason, ConnId, Context, LengthCodec, Origin, Service, TimerId, UdpId};
use fanout::{reply_to_peer, Delivery, Encoded};
use protocol::LOBBY;
use rooms::{Directory, Form, Link, MemberId, UdpLink};

pub use protocol::{parse, BadInput, Event, Incoming, Legacy, LegacyMessage, Request};
pub use stats::{ChatStats, ChatStatsHandle};

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
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            max_text: 4096,
            history: 20,
            udp_expiry: Duration::from_secs(300),
            presence_limit: 1000,
            stats_interval: None,
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
}

/// The chat's state for one TCP connection: the member it carries.
#[derive(Debug, Default)]
pub struct Seat {
    member: Option<MemberId>,
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
    stats: ChatStatsHandle,
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
            settings,
            directory: Directory::default(),
            by_peer: HashMap::new(),
            stats,
        }
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

    /// A seed-style datagram: `hello name`, join the lobby if not in it, `say` there.
    fn legacy_message(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        socket: UdpId,
        peer: SocketAddr,
        known: Option<MemberId>,
        message: LegacyMessage,
    ) {
        let id = match known {
            Some(id) => id,
            None => self.add_udp_member(ctx, socket, peer, Form::Legacy),
        };
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
        self.say(ctx, id, LOBBY, &message.msg);
    }

    /// A typed request from a UDP peer that is not a member: `hello` makes it one;
    /// `list` and `ping` need no membership; the rest need a name first.
    fn stranger_request(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        socket: UdpId,
        peer: SocketAddr,
        request: Request,
    ) {
        match request {
            Request::Hello { .. } => {
                let id = self.add_udp_member(ctx, socket, peer, Form::Typed);
                self.handle(ctx, id, request);
            }
            Request::Ping => reply_to_peer(ctx, socket, peer, &Event::Pong),
            Request::List => {
                let rooms = self.room_list();
                reply_to_peer(ctx, socket, peer, &Event::Rooms { rooms });
            }
            _ => reply_to_peer(
                ctx,
                socket,
                peer,
                &Event::Error {
                    reason: requests::HELLO_FIRST,
                },
            ),
        }
    }

    /// Removes a member and tells its rooms it left.
    pub(super) fn remove_member(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId) {
        let Some(member) = self.directory.remove(id) else {
            return;
        };
        if let Link::Udp(udp) = &member.link {
            self.by_peer.remove(&(udp.socket, udp.peer));
        }
        if let Some(name) = &member.name {
            for room in &member.rooms {
                self.announce(ctx, room, None, &Event::Left { room, name });
            }
        }
    }

    /// Sends a presence event to `room`: to everyone while the room is within the
    /// presence limit, otherwise only to `subject` (the member it is about, when it is
    /// still in the room).
    fn announce(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        room: &str,
        subject: Option<MemberId>,
        event: &Event<'_>,
    ) {
        let Some(entry) = self.directory.room(room) else {
            return;
        };
        // A subject that has gone already still counts toward the room's size.
        let size = entry.members().len() + usize::from(subject.is_none());
        if size <= self.settings.presence_limit {
            let encoded = Encoded::new(ctx, event, None);
            self.broadcast(ctx, room, &encoded);
        } else if let Some(id) = subject {
            self.reply(ctx, id, event);
        }
    }

    /// Delivers one encoded event to every member of `room`. Returns how many got it.
    fn broadcast(&mut self, ctx: &mut Context<'_, Chat>, room: &str, event: &Encoded) -> u64 {
        let (mut sent, mut cut) = (0, 0);
        self.directory
            .for_each_in(room, |member| match fanout::deliver(ctx, member, event) {
                Delivery::Sent => sent += 1,
                Delivery::CutOff => cut += 1,
                Delivery::Skipped => {}
            });
        self.stats.slow_consumers_cut(cut);
        sent
    }

    /// Delivers one encoded event to one member. Returns 1 if it got it, else 0.
    fn send_event(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId, event: &Encoded) -> u64 {
        let Some(member) = self.directory.member_mut(id) else {
            return 0;
        };
        match fanout::deliver(ctx, member, event) {
            Delivery::Sent => 1,
            Delivery::CutOff => {
                self.stats.slow_consumers_cut(1);
                0
            }
            Delivery::Skipped => 0,
        }
    }

    /// Answers one member.
    fn reply(&self, ctx: &mut Context<'_, Chat>, id: MemberId, event: &Event<'_>) {
        if let Some(member) = self.directory.member(id) {
            fanout::reply(ctx, member, event);
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
    type Conn = Seat;
    type Timer = ChatTimer;
    type Codec = LengthCodec;

    fn on_start(&mut self, ctx: &mut Context<'_, Chat>) {
        if let Some(interval) = self.settings.stats_interval.filter(|d| !d.is_zero()) {
            ctx.set_repeating(interval, ChatTimer::Stats);
        }
    }

    fn on_connect(
        &mut self,
        _ctx: &mut Context<'_, Chat>,
        conn: ConnId,
        seat: &mut Seat,
        _: Origin,
    ) {
        seat.member = Some(self.directory.add(Link::Tcp(conn)));
    }

    fn on_frame(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        _conn: ConnId,
        seat: &mut Seat,
        payload: &[u8],
    ) {
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
        let known = self.by_peer.get(&(socket, peer)).copied();
        match (parse(datagram, Legacy::Accepted), known) {
            (Ok(Incoming::Legacy(message)), _) => {
                if let Some(id) = known {
                    self.touch_udp(ctx, id, Form::Legacy);
                }
                self.legacy_message(ctx, socket, peer, known, message);
            }
            (Ok(Incoming::Typed(request)), Some(id)) => {
                self.touch_udp(ctx, id, Form::Typed);
                self.handle(ctx, id, request);
            }
            (Ok(Incoming::Typed(request)), None) => {
                self.stranger_request(ctx, socket, peer, request)
            }
            (Err(e), Some(id)) => self.refuse(ctx, id, &e.to_string()),
            (Err(e), None) => {
                let reason = e.to_string();
                reply_to_peer(ctx, socket, peer, &Event::Error { reason: &reason });
            }
        }
        self.count_population();
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        conn: ConnId,
        seat: Seat,
        reason: CloseReason,
    ) {
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
        }
    }
}
