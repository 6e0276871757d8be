//! What each request does: check it, change the [`Directory`](super::Directory), tell
//! the backplane, and push the events that follow. Every refusal is an `error` event
//! to the sender; nothing here closes a connection but `bye`.

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::directory::{MemberId, Refusal};
use super::event_bytes::{EventBytes, Serialized};
use super::ports::{Claim, Io, Listing, Route, Settled};
use super::protocol::{
    check_name, Event, NameMsg, NameMsgReply, Request, RoomInfo, LOBBY, SERVER_NAME,
};
use super::{Engine, RoomChange};

/// The answer to a request that needs a name before a `hello` gave one.
pub const HELLO_FIRST: &str = "say hello first: send {\"type\":\"hello\",\"name\":...}";
/// The same to a UDP source that holds no name, which gets at most three times its
/// datagram's size back: as short as it can be said.
pub const HELLO_FIRST_SHORT: &str = "say hello first";
/// Requests a member may send while its name waits for the backplane.
const MAX_WAITING_REQUESTS: usize = 64;

impl<A> Engine<A> {
    /// Carries out one typed request from member `id`.
    pub fn handle(&mut self, io: &mut Io<'_, A>, id: MemberId, request: Request) {
        // A member whose `hello` waits for the backplane's answer: its requests wait too.
        if let Some(queue) = self.waiting.get_mut(&id) {
            if queue.len() < MAX_WAITING_REQUESTS {
                queue.push_back(request);
            } else {
                let reason = "too many requests while the name is being checked: wait for welcome";
                self.refuse(io, id, reason);
            }
            return;
        }
        match request {
            Request::Hello { name } => {
                self.hello(io, id, &name);
            }
            Request::Join { room } => self.join(io, id, &room),
            Request::Leave { room } => self.leave(io, id, &room),
            Request::Say { room, text } => {
                self.say(io, id, &room, &text);
            }
            Request::Dm { to, text } => self.dm(io, id, &to, &text),
            Request::List => self.list(io, id),
            Request::Count { room } => self.count(io, id, &room),
            Request::Ping => self.reply(io, id, &Event::Pong),
            Request::Bye => self.bye(io, id),
        }
    }

    /// A name/msg message from member `id`: `hello name` if the name is new to it,
    /// join the lobby if not in it (silently: see `announce`), `say` there. Returns
    /// the message as sent, if it was.
    pub fn name_msg(
        &mut self,
        io: &mut Io<'_, A>,
        id: MemberId,
        message: NameMsg,
    ) -> Option<Rc<EventBytes>> {
        let has_name = self
            .directory
            .member(id)
            .is_some_and(|m| m.name.as_deref() == Some(message.name.as_str()));
        if !has_name && !self.hello(io, id, &message.name) {
            return None;
        }
        if !self.directory.is_in(id, LOBBY) {
            self.join(io, id, LOBBY);
        }
        self.say(io, id, LOBBY, &message.msg)
    }

    /// Answers member `id` with an `error`.
    pub fn refuse(&mut self, io: &mut Io<'_, A>, id: MemberId, reason: &str) {
        self.reply(io, id, &Event::Error { reason });
    }

    /// Sets or changes the name. Returns true if the member now holds `name`; false
    /// if refused, or if the backplane's answer is awaited.
    pub fn hello(&mut self, io: &mut Io<'_, A>, id: MemberId, name: &str) -> bool {
        if let Err(reason) = check_name("name", name) {
            self.refuse(io, id, &reason);
            return false;
        }
        if name == SERVER_NAME {
            self.refuse(io, id, &format!("name {name} is reserved"));
            return false;
        }
        let Some(member) = self.directory.member(id) else {
            return false;
        };
        // A name held here is the directory's to refuse (or already this member's).
        if self.directory.by_name(name).is_none() {
            let claim = io.backplane.claim(
                io.now,
                id,
                name,
                member.name.as_deref(),
                &member.rooms,
                member.can_wait,
            );
            match claim {
                Claim::Free => {}
                Claim::Taken => {
                    self.refuse(io, id, &format!("name {name} is taken"));
                    return false;
                }
                Claim::Pending => {
                    self.waiting.entry(id).or_default();
                    return false;
                }
            }
        }
        self.take_name(io, id, name)
    }

    /// Gives member `id` the name (free as far as the caller knows), welcomes it, and
    /// tells its rooms of a rename. Returns true if it now holds `name`.
    fn take_name(&mut self, io: &mut Io<'_, A>, id: MemberId, name: &str) -> bool {
        let old = match self.directory.rename(id, name) {
            Ok(old) => old,
            Err(Refusal::NameTaken) => {
                self.refuse(io, id, &format!("name {name} is taken"));
                return false;
            }
            Err(_) => return false,
        };
        self.reply(io, id, &Event::Welcome { name });
        if old.as_deref() != Some(name) {
            let rooms = self.rooms_held(id);
            io.backplane.named(io.now, name, old.as_deref(), rooms);
        }
        if let Some(old) = old.filter(|old| old != name) {
            for room in &self.rooms_of(id) {
                let event = Event::Renamed {
                    room,
                    old: &old,
                    name,
                };
                self.announce(io, room, Some(id), &event);
            }
        }
        true
    }

    /// A claim the backplane took time over is settled: take the name or refuse it,
    /// then carry out the requests that waited.
    pub(super) fn name_settled(
        &mut self,
        io: &mut Io<'_, A>,
        id: MemberId,
        name: &str,
        outcome: Settled,
    ) {
        let waiting = self.waiting.remove(&id).unwrap_or_default();
        if self.directory.member(id).is_none() {
            // Gone meanwhile: give the name back.
            if matches!(outcome, Settled::Granted | Settled::Unchecked) {
                io.backplane.unclaim(io.now, name);
            }
            return;
        }
        match outcome {
            Settled::Granted | Settled::Unchecked => {
                self.take_name(io, id, name);
            }
            Settled::Taken => self.refuse(io, id, &format!("name {name} is taken")),
            Settled::Refused(reason) => self.refuse(io, id, &reason),
        }
        for request in waiting {
            if self.directory.member(id).is_none() {
                break;
            }
            self.handle(io, id, request);
        }
    }

    /// Enters a room, announces it, and replays the room's history to the newcomer.
    pub fn join(&mut self, io: &mut Io<'_, A>, id: MemberId, room: &str) {
        let Some(name) = self.name_required(io, id) else {
            return;
        };
        if let Err(reason) = check_name("room", room) {
            return self.refuse(io, id, &reason);
        }
        match self.directory.join(id, room, self.limits.max_rooms) {
            Ok(()) => {}
            Err(Refusal::RoomLimit) => return self.refuse_room(io, id, room),
            Err(_) => return self.refuse(io, id, &format!("already in room {room}")),
        }
        let first = self
            .directory
            .room(room)
            .is_some_and(|r| r.members().len() == 1);
        io.backplane.moved(
            io.now,
            RoomChange {
                name: Some(&name),
                room,
                entered: true,
                rooms: self.rooms_held(id),
                first_or_last: first,
            },
        );
        self.announce(io, room, Some(id), &Event::Joined { room, name: &name });
        // Name/msg clients expect exactly one reply per message they send: no replay.
        if self
            .directory
            .member(id)
            .is_some_and(|m| m.speaks_name_msg())
        {
            return;
        }
        let history: Vec<Rc<EventBytes>> = match self.directory.room(room) {
            Some(entry) => entry.history().cloned().collect(),
            None => Vec::new(),
        };
        let mut sent = 0;
        for message in &history {
            sent += self.send_event(io, id, &message.as_history());
        }
        self.stats.delivered(sent);
    }

    /// Refuses a join at the room limit: counted, logged now and then (one member
    /// could ask thousands of times), and answered with what to do instead.
    fn refuse_room(&mut self, io: &mut Io<'_, A>, id: MemberId, room: &str) {
        let max = self.limits.max_rooms;
        self.stats.count_room_limit();
        if let Some(count) = self.room_limit_log.note(io.now) {
            log::info!(
                "chat: {} may not join {room}: in {max} rooms already (--max-rooms); \
                 {count} joins refused at the room limit since the last such line",
                self.name_of(id)
            );
        }
        let reason =
            format!("in {max} rooms already, the most one member may be in: leave one first");
        self.refuse(io, id, &reason);
    }

    /// Leaves a room, after telling it (the leaver included).
    pub fn leave(&mut self, io: &mut Io<'_, A>, id: MemberId, room: &str) {
        if !self.directory.is_in(id, room) {
            return self.refuse(io, id, &format!("not in room {room}"));
        }
        let name = self.directory.member(id).and_then(|m| m.name.clone());
        let shown = name.as_deref().unwrap_or("(no name)");
        self.announce(io, room, Some(id), &Event::Left { room, name: shown });
        let _ = self.directory.leave(id, room);
        io.backplane.moved(
            io.now,
            RoomChange {
                name: name.as_deref(),
                room,
                entered: false,
                rooms: self.rooms_held(id),
                first_or_last: self.directory.room(room).is_none(),
            },
        );
    }

    /// Says `text` in `room`: one `msg` event, encoded once, to every member here and
    /// to the backplane. Returns the event as sent, if it was.
    pub fn say(
        &mut self,
        io: &mut Io<'_, A>,
        id: MemberId,
        room: &str,
        text: &str,
    ) -> Option<Rc<EventBytes>> {
        if !self.directory.is_in(id, room) {
            self.refuse(io, id, &format!("not in room {room}: join it first"));
            return None;
        }
        if let Err(reason) = self.check_text(text) {
            self.refuse(io, id, &reason);
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
        let name_msg = NameMsgReply {
            name: from,
            msg: text,
        };
        let event = Rc::new(EventBytes::new(&event, Some(name_msg)));
        let sent = self.broadcast(io, room, &event);
        self.stats.delivered(sent);
        let here = self.members_here(room);
        io.backplane.publish(io.now, room, &event, here, true);
        if let Some(entry) = self.directory.room_mut(room) {
            entry.remember(Rc::clone(&event), self.limits.history);
        }
        Some(event)
    }

    /// Sends `text` to the member called `to` (here, or wherever the backplane finds
    /// it), and a copy to the sender.
    pub fn dm(&mut self, io: &mut Io<'_, A>, id: MemberId, to: &str, text: &str) {
        let Some(from) = self.name_required(io, id) else {
            return;
        };
        if let Err(reason) = self.check_text(text) {
            return self.refuse(io, id, &reason);
        }
        let event = Event::Dm {
            from: &from,
            to,
            text,
            ts: unix_millis(),
        };
        let name_msg = NameMsgReply {
            name: &from,
            msg: text,
        };
        let event = EventBytes::new(&event, Some(name_msg));
        let mut sent = 0;
        if let Some(recipient) = self.directory.by_name(to) {
            self.stats.message_in();
            sent += self.send_event(io, recipient, &event);
            if recipient == id {
                return self.stats.delivered(sent);
            }
        } else {
            match io.backplane.direct(io.now, id, to, &event) {
                Route::Sent => self.stats.message_in(),
                // The sender's copy follows once a node has taken it.
                Route::Pending => return self.stats.message_in(),
                Route::Unknown => return self.refuse(io, id, &format!("no member named {to}")),
            }
        }
        sent += self.send_event(io, id, &event);
        self.stats.delivered(sent);
    }

    /// A DM handed on with [`Route::Pending`] is settled.
    pub(super) fn direct_settled(
        &mut self,
        io: &mut Io<'_, A>,
        id: MemberId,
        to: &str,
        event: Option<Serialized>,
    ) {
        match event {
            Some(event) => {
                let event = EventBytes::from_serialized(event);
                let sent = self.send_event(io, id, &event);
                self.stats.delivered(sent);
            }
            None => self.refuse(io, id, &format!("no member named {to}")),
        }
    }

    /// Answers `list`: every room with its members, on every loop (and node).
    fn list(&mut self, io: &mut Io<'_, A>, id: MemberId) {
        match io.backplane.list(io.now, id) {
            Listing::Rooms(rooms) => self.answer_list(io, id, rooms),
            Listing::Pending => {}
            Listing::Local => self.list_local(io, id),
        }
    }

    /// Answers `list` with the rooms here.
    pub(super) fn list_local(&mut self, io: &mut Io<'_, A>, id: MemberId) {
        let Some(member) = self.directory.member(id) else {
            return;
        };
        let rooms = self.directory.room_list();
        if let Some(bytes) = super::answer_in_form(member.form, &Event::Rooms { rooms }) {
            io.out.send(&member.address, &bytes);
        }
    }

    /// Sends member `id` the answer to `list`: rooms and their members' names.
    pub(super) fn answer_list(
        &mut self,
        io: &mut Io<'_, A>,
        id: MemberId,
        everywhere: Vec<(String, Vec<String>)>,
    ) {
        let rooms = everywhere
            .iter()
            .map(|(room, members)| RoomInfo {
                room,
                members: members.iter().map(String::as_str).collect(),
            })
            .collect();
        self.reply(io, id, &Event::Rooms { rooms });
    }

    /// Answers `count`: the room's size across loops and nodes, as the backplane knows
    /// it.
    fn count(&mut self, io: &mut Io<'_, A>, id: MemberId, room: &str) {
        if let Err(reason) = check_name("room", room) {
            return self.refuse(io, id, &reason);
        }
        let count = self.room_size(io, room);
        self.reply(io, id, &Event::Members { room, count });
    }

    /// Leaves the chat at once: rooms are told, the name is free. A stream member's
    /// connection then closes once its queued output is written.
    fn bye(&mut self, io: &mut Io<'_, A>, id: MemberId) {
        if let Some(member) = self.directory.member(id) {
            io.out.close(&member.address);
        }
        self.remove(io, id);
    }

    /// The member's name, or an `error` saying to send `hello` first.
    fn name_required(&mut self, io: &mut Io<'_, A>, id: MemberId) -> Option<String> {
        let name = self.directory.member(id).and_then(|m| m.name.clone());
        if name.is_none() {
            self.refuse(io, id, HELLO_FIRST);
        }
        name
    }

    fn check_text(&self, text: &str) -> Result<(), String> {
        let max = self.limits.max_text;
        match text.len() {
            len if len > max => Err(format!(
                "text is {len} bytes, over the limit of {max} bytes"
            )),
            _ => Ok(()),
        }
    }

    /// The member's rooms, borrowed (for the backplane, which copies what it keeps).
    fn rooms_held(&self, id: MemberId) -> &[String] {
        self.directory.member(id).map_or(&[], |m| &m.rooms)
    }

    pub(super) fn rooms_of(&self, id: MemberId) -> Vec<String> {
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
