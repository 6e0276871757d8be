//! What each request does: check it, change the [`Directory`](super::rooms::Directory),
//! and send the events that follow. Every refusal is an `error` event to the sender;
//! nothing here closes a connection.

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::fanout::{self, Encoded};
use super::protocol::{check_name, Event, LegacyReply, Request, RoomInfo, SERVER_NAME};
use super::rooms::{Link, MemberId, Refusal};
use super::Chat;
use crate::{CloseMode, Context};

/// The answer to a request that needs a name before a `hello` gave one.
pub const HELLO_FIRST: &str = "say hello first: send {\"type\":\"hello\",\"name\":...}";
/// The same to a UDP source that holds no name, which gets at most three times its
/// datagram's size back: as short as it can be said.
pub const HELLO_FIRST_SHORT: &str = "say hello first";

impl Chat {
    /// Carries out one typed request from member `id`.
    pub(super) fn handle(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId, request: Request) {
        // A member whose `hello` waits for the cluster's answer: its requests wait too.
        #[cfg(feature = "redis")]
        let Some(request) = self.wait_for_name(ctx, id, request) else {
            return;
        };
        match request {
            Request::Hello { name } => {
                self.hello(ctx, id, &name);
            }
            Request::Join { room } => self.join(ctx, id, &room),
            Request::Leave { room } => self.leave(ctx, id, &room),
            Request::Say { room, text } => {
                self.say(ctx, id, &room, &text);
            }
            Request::Dm { to, text } => self.dm(ctx, id, &to, &text),
            Request::List => self.list(ctx, id),
            Request::Ping => self.reply(ctx, id, &Event::Pong),
            Request::Bye => self.bye(ctx, id),
        }
    }

    /// Answers member `id` with an `error`.
    pub(super) fn refuse(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId, reason: &str) {
        self.reply(ctx, id, &Event::Error { reason });
    }

    /// Sets or changes the name. Returns true if the member now holds `name`.
    pub(super) fn hello(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId, name: &str) -> bool {
        if let Err(reason) = check_name("name", name) {
            self.refuse(ctx, id, &reason);
            return false;
        }
        if name == SERVER_NAME {
            self.refuse(ctx, id, &format!("name {name} is reserved"));
            return false;
        }
        if !self.claim_across_loops(id, name) {
            self.refuse(ctx, id, &format!("name {name} is taken"));
            return false;
        }
        #[cfg(feature = "redis")]
        if self.claim_in_cluster(ctx, id, name) {
            return false; // settled when Redis answers
        }
        self.take_name(ctx, id, name)
    }

    /// Gives member `id` the name (free as far as the caller knows), welcomes it, and
    /// tells its rooms of a rename. Returns true if it now holds `name`.
    pub(super) fn take_name(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        id: MemberId,
        name: &str,
    ) -> bool {
        let old = match self.directory.rename(id, name) {
            Ok(old) => old,
            Err(Refusal::NameTaken) => {
                self.refuse(ctx, id, &format!("name {name} is taken"));
                return false;
            }
            Err(_) => return false,
        };
        self.reply(ctx, id, &Event::Welcome { name });
        #[cfg(feature = "redis")]
        if old.as_deref() != Some(name) {
            if let Some(old) = &old {
                self.release_in_cluster(ctx, old);
            }
            self.named_in_cluster(ctx, id);
        }
        if let Some(old) = old.filter(|old| old != name) {
            let rooms = self.rooms_of(id);
            for room in &rooms {
                let event = Event::Renamed {
                    room,
                    old: &old,
                    name,
                };
                self.announce(ctx, room, Some(id), &event);
            }
        }
        true
    }

    /// Enters a room, announces it, and replays the room's history to the newcomer.
    pub(super) fn join(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId, room: &str) {
        let Some(name) = self.name_required(ctx, id) else {
            return;
        };
        if let Err(reason) = check_name("room", room) {
            return self.refuse(ctx, id, &reason);
        }
        match self.directory.join(id, room, self.settings.max_rooms) {
            Ok(()) => {}
            Err(Refusal::RoomLimit) => return self.refuse_room(ctx, id, room),
            Err(_) => return self.refuse(ctx, id, &format!("already in room {room}")),
        }
        if let Some(link) = &mut self.loops {
            link.entered(&name, room);
            if self
                .directory
                .room(room)
                .is_some_and(|r| r.members().len() == 1)
            {
                link.room_changed(room, true);
            }
        }
        self.arm_loop_retry(ctx);
        #[cfg(feature = "redis")]
        self.rooms_changed_in_cluster(ctx, Some(id), room);
        self.announce(ctx, room, Some(id), &Event::Joined { room, name: &name });
        // Legacy clients expect exactly one reply per message they send: no replay.
        if self.directory.member(id).is_some_and(|m| m.is_legacy()) {
            return;
        }
        let history: Vec<Rc<Encoded>> = match self.directory.room(room) {
            Some(entry) => entry.history().cloned().collect(),
            None => Vec::new(),
        };
        let mut sent = 0;
        for message in &history {
            sent += self.send_event(ctx, id, &message.as_history(ctx));
        }
        self.stats.delivered(sent);
    }

    /// Refuses a join at the room limit: counted, logged now and then (one member
    /// could ask thousands of times), and answered with what to do instead.
    fn refuse_room(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId, room: &str) {
        let max = self.settings.max_rooms;
        self.stats.count_room_limit();
        if let Some(count) = self.room_limit_log.note(ctx.now()) {
            log::info!(
                "chat: {} may not join {room}: in {max} rooms already (--max-rooms); \
                 {count} joins refused at the room limit since the last such line",
                self.name_of(id)
            );
        }
        let reason =
            format!("in {max} rooms already, the most one member may be in: leave one first");
        self.refuse(ctx, id, &reason);
    }

    /// Leaves a room, after telling it (the leaver included).
    pub(super) fn leave(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId, room: &str) {
        if !self.directory.is_in(id, room) {
            return self.refuse(ctx, id, &format!("not in room {room}"));
        }
        let name = self.name_of(id).to_owned();
        self.announce(ctx, room, Some(id), &Event::Left { room, name: &name });
        let _ = self.directory.leave(id, room);
        if let Some(link) = &mut self.loops {
            link.forget(Some(&name), &[room.to_owned()], false);
            if self.directory.room(room).is_none() {
                link.room_changed(room, false);
            }
        }
        self.arm_loop_retry(ctx);
        #[cfg(feature = "redis")]
        self.rooms_changed_in_cluster(ctx, Some(id), room);
    }

    /// Says `text` in `room`: one `msg` event, encoded once, to every member.
    /// Returns the event as sent, if it was.
    pub(super) fn say(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        id: MemberId,
        room: &str,
        text: &str,
    ) -> Option<Rc<Encoded>> {
        if !self.directory.is_in(id, room) {
            self.refuse(ctx, id, &format!("not in room {room}: join it first"));
            return None;
        }
        if let Err(reason) = self.check_text(text) {
            self.refuse(ctx, id, &reason);
            return None;
        }
        self.stats.message_in();
        let from = self.name_of(id);
        let event = Event::Msg {
            room,
            from,
            text,
            ts: unix_millis(),
            history: false,
        };
        let legacy = LegacyReply {
            name: from,
            msg: text,
        };
        let encoded = Rc::new(Encoded::new(ctx, &event, Some(legacy)));
        let sent = self.broadcast(ctx, room, &encoded);
        self.stats.delivered(sent);
        if let Some(link) = &mut self.loops {
            link.publish(room, &encoded, true, &self.stats);
        }
        #[cfg(feature = "redis")]
        self.publish_to_cluster(ctx, room, &encoded, true);
        if let Some(entry) = self.directory.room_mut(room) {
            entry.remember(Rc::clone(&encoded), self.settings.history);
        }
        Some(encoded)
    }

    /// Sends `text` to the member called `to`, and a copy to the sender.
    pub(super) fn dm(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId, to: &str, text: &str) {
        let Some(from) = self.name_required(ctx, id) else {
            return;
        };
        if let Err(reason) = self.check_text(text) {
            return self.refuse(ctx, id, &reason);
        }
        let recipient = self.directory.by_name(to);
        let remote = match recipient {
            Some(_) => None,
            None => self.loops.as_ref().and_then(|link| link.loop_of(to)),
        };
        #[cfg(feature = "redis")]
        let in_cluster = recipient.is_none() && remote.is_none() && self.cluster_is_up();
        #[cfg(not(feature = "redis"))]
        let in_cluster = false;
        if recipient.is_none() && remote.is_none() && !in_cluster {
            return self.refuse(ctx, id, &format!("no member named {to}"));
        }
        self.stats.message_in();
        let event = Event::Dm {
            from: &from,
            to,
            text,
            ts: unix_millis(),
        };
        let legacy = LegacyReply {
            name: &from,
            msg: text,
        };
        let encoded = Encoded::new(ctx, &event, Some(legacy));
        #[cfg(feature = "redis")]
        if in_cluster {
            // The sender's copy follows once a node has taken it.
            if !self.direct_to_cluster(ctx, id, to, &encoded) {
                self.refuse(ctx, id, &format!("no member named {to}"));
            }
            return;
        }
        let mut sent = 0;
        match (recipient, remote, &mut self.loops) {
            (Some(recipient), _, _) => {
                sent += self.send_event(ctx, recipient, &encoded);
            }
            (None, Some(at), Some(link)) => link.direct(at, to, &encoded, &self.stats),
            _ => {}
        }
        if recipient != Some(id) {
            sent += self.send_event(ctx, id, &encoded);
        }
        self.stats.delivered(sent);
    }

    /// Answers `list`: every room with its members, on every loop (and node).
    fn list(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId) {
        #[cfg(feature = "redis")]
        if self.list_in_cluster(ctx, id) {
            return; // answered when Redis has
        }
        self.list_local(ctx, id);
    }

    /// Answers `list` with the rooms of this process.
    pub(super) fn list_local(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId) {
        let Some(member) = self.directory.member(id) else {
            return;
        };
        let Some(link) = &self.loops else {
            // Borrowed from the directory while the guard sends it.
            let rooms = self.directory.room_list();
            return fanout::reply(ctx, &mut self.guard, member, &Event::Rooms { rooms });
        };
        let everywhere = link.room_list();
        self.answer_list(ctx, id, everywhere);
    }

    /// Sends member `id` the answer to `list`: rooms and their members' names.
    pub(super) fn answer_list(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        id: MemberId,
        everywhere: Vec<(String, Vec<String>)>,
    ) {
        let Some(member) = self.directory.member(id) else {
            return;
        };
        let rooms = everywhere
            .iter()
            .map(|(room, members)| RoomInfo {
                room,
                members: members.iter().map(String::as_str).collect(),
            })
            .collect();
        fanout::reply(ctx, &mut self.guard, member, &Event::Rooms { rooms });
    }

    /// Takes `name` across the loops of the pool for member `id` (true at once with no
    /// other loops, or when the member holds it already); false if a member of another
    /// loop holds it. A name held by another member of this loop is left for the
    /// directory to refuse.
    fn claim_across_loops(&mut self, id: MemberId, name: &str) -> bool {
        let (Some(link), Some(member)) = (&self.loops, self.directory.member(id)) else {
            return true;
        };
        if self.directory.by_name(name).is_some() {
            return true;
        }
        link.claim(name, member.name.as_deref(), &member.rooms)
    }

    /// Leaves the chat at once: rooms are told, the name is free. A TCP member's
    /// connection then closes once its queued output is written.
    fn bye(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId) {
        let tcp = match self.directory.member(id).map(|m| &m.link) {
            Some(Link::Tcp(conn) | Link::Ws(conn)) => Some(*conn),
            Some(Link::Udp(_)) => None,
            None => return,
        };
        // (The connection's own state forgets the member once this request is done:
        // see `on_frame`.)
        self.remove_member(ctx, id);
        if let Some(conn) = tcp {
            ctx.close(conn, CloseMode::Flush);
        }
        self.count_population();
    }

    /// The member's name, or an `error` saying to send `hello` first.
    fn name_required(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId) -> Option<String> {
        let name = self.directory.member(id).and_then(|m| m.name.clone());
        if name.is_none() {
            self.refuse(ctx, id, HELLO_FIRST);
        }
        name
    }

    fn check_text(&self, text: &str) -> Result<(), String> {
        let max = self.settings.max_text;
        match text.len() {
            len if len > max => Err(format!(
                "text is {len} bytes, over the limit of {max} bytes"
            )),
            _ => Ok(()),
        }
    }

    fn rooms_of(&self, id: MemberId) -> Vec<String> {
        self.directory
            .member(id)
            .map(|m| m.rooms.clone())
            .unwrap_or_default()
    }
}

/// Milliseconds since the Unix epoch: the `ts` of messages.
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
