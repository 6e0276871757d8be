//! The chat engine: names, rooms, history and what each request does, with no I/O.
//!
//! ```text
//!   transport: address -> MemberId, bytes -> Request
//!         |
//!         v
//!   Engine::handle(io, member, request) --> Directory (names, rooms, history)
//!         |                             \-> io.out: deliver / send / close / gone
//!         |                             \-> io.backplane: claim, publish, direct, list
//!   Engine::settle(io) <-- Remote events the backplane heard from other loops or nodes
//! ```
//!
//! The engine takes the time, a member id and a request, and pushes outputs through
//! its two ports ([`Outputs`], [`Backplane`], in `ports.rs`); it never sees a socket,
//! a connection or a timer, so it is tested by calling it and reading what it pushed
//! (`tests`). A member's address is a type the transports choose (`A`): the engine
//! stores it and hands it back. It is public so that a chat over transports of one's
//! own can be built on it, as `service.rs` builds this one.
//!
//! - [`protocol`]: the JSON messages and the name rules.
//! - `directory`: who is where (pure bookkeeping), with the room limit.
//! - `event_bytes`: one event encoded once for every recipient.
//! - `requests`: what each request does.
//! - `ports`: the [`Outputs`] and [`Backplane`] traits, and the [`Remote`] events.
//!
//! Every event to a room is pushed for all its members within one call, so every
//! member sees a room's events in the same order.

mod directory;
mod event_bytes;
mod ports;
pub mod protocol;
mod requests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use crate::throttle::Throttle;

use super::stats::ChatStatsHandle;
pub use directory::{Directory, Form, Member, MemberId};
pub use event_bytes::{EventBytes, Framing, Serialized};
pub use ports::{
    Alone, Backplane, Claim, Delivery, Io, Listing, Outputs, Remote, RoomChange, Route, Settled,
    Transmit,
};
use protocol::{to_json, Event, NameMsgReply, Request, SERVER_NAME};
pub use requests::HELLO_FIRST_SHORT;

/// The least time between two log lines about one kind of event that hostile input
/// can repeat at will (a refused join, a withheld answer, a turned-away newcomer).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The engine's limits, from the chat's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest `text` accepted, in bytes.
    pub max_text: usize,
    /// Messages kept per room and replayed to a member who joins it.
    pub history: usize,
    /// Rooms with more members than this do not announce joins, leaves and renames
    /// to everyone (only to the member concerned).
    pub presence_limit: usize,
    /// The most rooms one member may be in at once.
    pub max_rooms: usize,
}

/// The chat engine. See the module docs.
#[derive(Debug)]
pub struct Engine<A> {
    limits: Limits,
    /// Members, names, rooms.
    directory: Directory<A>,
    /// Requests of members whose name claim waits for the backplane, in order.
    waiting: BTreeMap<MemberId, VecDeque<Request>>,
    /// Joins refused at the room limit, for the log.
    room_limit_log: Throttle,
    stats: ChatStatsHandle,
}

impl<A> Engine<A> {
    /// An engine with no members, counting into `stats`.
    pub fn new(limits: Limits, stats: ChatStatsHandle) -> Self {
        Engine {
            limits,
            directory: Directory::default(),
            waiting: BTreeMap::new(),
            room_limit_log: Throttle::new(LOG_INTERVAL),
            stats,
        }
    }

    /// A new member, nameless and in no room, reached at `address`.
    pub fn add(&mut self, address: A, form: Form, can_wait: bool) -> MemberId {
        self.directory.add(address, form, can_wait)
    }

    /// The member `id`, if present.
    pub fn member(&self, id: MemberId) -> Option<&Member<A>> {
        self.directory.member(id)
    }

    /// Records the form a UDP member spoke in last.
    pub fn set_form(&mut self, id: MemberId, form: Form) {
        if let Some(member) = self.directory.member_mut(id) {
            member.form = form;
        }
    }

    /// The member's name, for the log.
    pub fn name_of(&self, id: MemberId) -> &str {
        self.directory
            .member(id)
            .and_then(|m| m.name.as_deref())
            .unwrap_or("(no name)")
    }

    /// Every name held here with its holder's rooms: what a backplane claims again
    /// when its link comes back.
    pub fn held_names(&self) -> Vec<(String, Vec<String>)> {
        self.directory
            .named_with_rooms()
            .map(|(name, rooms)| (name.to_owned(), rooms.to_vec()))
            .collect()
    }

    /// The counters.
    pub fn stats(&self) -> &ChatStatsHandle {
        &self.stats
    }

    /// Publishes the member and room counts after a call changed them.
    pub fn count_population(&self) {
        self.stats
            .set_population(self.directory.named_members(), self.directory.room_count());
    }

    /// Removes a member and tells its rooms, here and elsewhere, that it left.
    pub fn remove(&mut self, io: &mut Io<'_, A>, id: MemberId) {
        let Some(member) = self.directory.remove(id) else {
            return;
        };
        self.waiting.remove(&id);
        io.out.gone(&member.address);
        // A name/msg member's comings and goings are not announced (see `announce`).
        if let Some(name) = member.name.as_ref().filter(|_| !member.speaks_name_msg()) {
            for room in &member.rooms {
                self.announce(io, room, None, &Event::Left { room, name });
            }
        }
        let emptied: Vec<&str> = member
            .rooms
            .iter()
            .map(String::as_str)
            .filter(|room| self.directory.room(room).is_none())
            .collect();
        io.backplane
            .gone(io.now, member.name.as_deref(), &member.rooms, &emptied);
    }

    /// Sends a presence event to `room`: to everyone while the room is within the
    /// presence limit, otherwise only to `subject` (the member it is about, when it is
    /// still in the room).
    ///
    /// A name/msg member's comings and goings are not announced: it receives no
    /// presence events, and a name/msg datagram from a new port is a join, so
    /// announcing them would let a flood of new ports send an event to every member
    /// of the lobby for each datagram. Its messages carry its name.
    fn announce(
        &mut self,
        io: &mut Io<'_, A>,
        room: &str,
        subject: Option<MemberId>,
        event: &Event<'_>,
    ) {
        if subject.is_some_and(|id| {
            self.directory
                .member(id)
                .is_some_and(|m| m.speaks_name_msg())
        }) {
            return;
        }
        // A subject that has gone already still counts toward the room's size (and the
        // room may be gone here, with members left on other loops). The size is the
        // room's across loops and nodes, as far as the backplane knows it: presence
        // from elsewhere stops at the same limit (see `deliver_remote`).
        let local = self.members_here(room);
        let size = (local + usize::from(subject.is_none())).max(self.room_size(io, room));
        if size <= self.limits.presence_limit {
            let event = EventBytes::new(event, None);
            if local > 0 {
                self.broadcast(io, room, &event);
            }
            io.backplane.publish(io.now, room, &event, local, false);
        } else if let Some(id) = subject {
            self.reply(io, id, event);
        }
    }

    /// The members of `room` on this loop.
    fn members_here(&self, room: &str) -> usize {
        self.directory
            .room(room)
            .map_or(0, |entry| entry.members().len())
    }

    /// The members of `room` across loops and nodes, as far as the backplane knows.
    fn room_size(&mut self, io: &mut Io<'_, A>, room: &str) -> usize {
        let here = self.members_here(room);
        io.backplane.room_size(room, here).max(here)
    }

    /// Delivers one event to every member of `room` here. Returns how many got it.
    fn broadcast(&mut self, io: &mut Io<'_, A>, room: &str, event: &EventBytes) -> u64 {
        let (mut sent, mut cut) = (0, 0);
        self.directory
            .for_each_in(room, |member| match deliver(&mut *io.out, member, event) {
                Delivery::Sent => sent += 1,
                Delivery::CutOff => cut += 1,
                Delivery::Skipped => {}
            });
        self.stats.slow_consumers_cut(cut);
        sent
    }

    /// Delivers one event to one member. Returns 1 if it got it, else 0.
    fn send_event(&mut self, io: &mut Io<'_, A>, id: MemberId, event: &EventBytes) -> u64 {
        let Some(member) = self.directory.member_mut(id) else {
            return 0;
        };
        match deliver(&mut *io.out, member, event) {
            Delivery::Sent => 1,
            Delivery::CutOff => {
                self.stats.slow_consumers_cut(1);
                0
            }
            Delivery::Skipped => 0,
        }
    }

    /// Answers one member (welcome, error, rooms, pong...). Name/msg members get only
    /// errors, in their own form, so that a client waiting for one reply per message
    /// is answered.
    fn reply(&mut self, io: &mut Io<'_, A>, id: MemberId, event: &Event<'_>) {
        let Some(member) = self.directory.member(id) else {
            return;
        };
        if let Some(bytes) = answer_in_form(member.form, event) {
            io.out.send(&member.address, &bytes);
        }
    }

    /// Tells one member something that is not about a room.
    fn notify(&mut self, io: &mut Io<'_, A>, id: MemberId, text: &str) {
        self.reply(io, id, &Event::Notice { text });
    }

    /// Carries out what the backplane heard from elsewhere, until it has nothing more
    /// (carrying one out may make it hear more).
    pub fn settle(&mut self, io: &mut Io<'_, A>) {
        loop {
            let remote = io.backplane.take_remote();
            if remote.is_empty() {
                break;
            }
            for event in remote {
                self.carry_out(io, event);
            }
        }
        self.count_population();
    }

    fn carry_out(&mut self, io: &mut Io<'_, A>, remote: Remote) {
        match remote {
            Remote::Room {
                room,
                event,
                remember,
            } => self.deliver_remote(io, &room, event, remember),
            Remote::Direct { to, event } => self.direct_remote(io, &to, event),
            Remote::NameSettled {
                member,
                name,
                outcome,
            } => self.name_settled(io, member, &name, outcome),
            Remote::DirectSettled { member, to, event } => {
                self.direct_settled(io, member, &to, event)
            }
            Remote::Listed { member, rooms } => self.answer_list(io, member, rooms),
            Remote::ListLocally { member } => self.list_local(io, member),
            Remote::Refuse { member, reason } => self.refuse(io, member, &reason),
            Remote::NoticeAll { text } => {
                let ids: Vec<MemberId> = self.directory.member_ids().collect();
                for id in ids {
                    self.notify(io, id, &text);
                }
            }
            Remote::NoticeTo { name, text } => {
                if let Some(id) = self.directory.by_name(&name) {
                    self.notify(io, id, &text);
                }
            }
            Remote::Unclaim { name } => {
                if self.directory.by_name(&name).is_none() {
                    io.backplane.unclaim(io.now, &name);
                }
            }
        }
    }

    /// Delivers another loop's (or node's) room event to the members of the room here.
    fn deliver_remote(&mut self, io: &mut Io<'_, A>, room: &str, event: Serialized, keep: bool) {
        if self.directory.room(room).is_none() {
            return; // its last member here left while the event was on its way
        }
        // A join, leave or rename from elsewhere in a room past the presence limit:
        // not for anyone here, as it would not be for a member of the same loop.
        if !keep && self.room_size(io, room) > self.limits.presence_limit {
            return;
        }
        let event = Rc::new(EventBytes::from_serialized(event));
        let sent = self.broadcast(io, room, &event);
        if keep {
            self.stats.delivered(sent);
            let history = self.limits.history;
            if let Some(entry) = self.directory.room_mut(room) {
                entry.remember(event, history);
            }
        }
    }

    /// Delivers another loop's (or node's) direct message to the member here called
    /// `to`.
    fn direct_remote(&mut self, io: &mut Io<'_, A>, to: &str, event: Serialized) {
        let Some(recipient) = self.directory.by_name(to) else {
            return; // gone while the message was on its way
        };
        let event = EventBytes::from_serialized(event);
        let sent = self.send_event(io, recipient, &event);
        self.stats.delivered(sent);
    }
}

/// Sends one shared event to one member, unless it is cut off or the event has no
/// form it reads; marks it cut off if this delivery left it too far behind.
fn deliver<A>(out: &mut dyn Outputs<A>, member: &mut Member<A>, event: &EventBytes) -> Delivery {
    if member.cut_off || (member.form == Form::NameMsg && event.name_msg().is_none()) {
        return Delivery::Skipped;
    }
    let delivery = out.deliver(&member.address, member.form, event);
    if delivery == Delivery::CutOff {
        member.cut_off = true;
    }
    delivery
}

/// An answer's bytes in the form its member reads: typed JSON, or for a name/msg
/// member an error signed by the server (and nothing else).
pub fn answer_in_form(form: Form, event: &Event<'_>) -> Option<Vec<u8>> {
    match (form, event) {
        (Form::Typed, _) => Some(to_json(event)),
        (Form::NameMsg, Event::Error { reason }) => Some(name_msg_error(reason)),
        (Form::NameMsg, _) => None,
    }
}

/// An error in the name/msg form, signed by the server.
pub fn name_msg_error(reason: &str) -> Vec<u8> {
    let msg = format!("error: {reason}");
    to_json(&NameMsgReply {
        name: SERVER_NAME,
        msg: &msg,
    })
}
