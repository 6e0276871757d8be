//! Who is in the chat and where: members (TCP connections and UDP peers alike), the
//! names they hold, the rooms they are in, and each room's recent history.
//!
//! This is pure bookkeeping, with no I/O: the service decides what to send, and the
//! [`Directory`] keeps the invariants:
//! - a name belongs to at most one member, and is freed when the member goes;
//! - a member is in a room exactly when the room lists it (both sides are updated
//!   together);
//! - a room exists only while it has members (its history goes with it);
//! - a member is in at most the room limit's number of rooms, so what one member can
//!   make the directory hold is bounded (names and room names are bounded by
//!   [`check_name`](super::protocol::check_name), texts by `--max-text`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use slab::Slab;

use super::event_bytes::EventBytes;
use super::protocol::RoomInfo;

/// A member's key in the `Directory`, the peer id every transport maps its own
/// addresses to; reused after the member goes.
pub type MemberId = usize;

/// The message form a member speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Typed JSON objects (every stream member; UDP members that send them).
    Typed,
    /// The seeds' two-field `{"name", "msg"}` (UDP only): the member receives only
    /// messages, and errors, in that form.
    NameMsg,
}

/// One member. `A` is its address, which only its transport reads.
#[derive(Debug)]
pub struct Member<A> {
    /// Set by `hello` (or a name/msg message); `None` until then.
    pub name: Option<String>,
    /// How its transport reaches it.
    pub address: A,
    /// Which form it speaks (a UDP member's may change with each datagram).
    pub form: Form,
    /// Its requests can wait, in order, for the backplane to settle its name: true
    /// for a stream member, whose connection holds them; a datagram member is
    /// answered at once.
    pub can_wait: bool,
    /// The rooms it is in, in the order it joined them.
    pub rooms: Vec<String>,
    /// Disconnected for falling behind: no more output is queued for it while the
    /// close is under way.
    pub cut_off: bool,
}

impl<A> Member<A> {
    /// True for a member speaking the name/msg form.
    pub fn speaks_name_msg(&self) -> bool {
        self.form == Form::NameMsg
    }
}

/// One room: its members and its latest messages.
#[derive(Debug, Default)]
pub struct Room {
    /// Members, in join order until a leave swaps the last one into the gap.
    members: Vec<MemberId>,
    /// Where each member sits in `members`, so that leaving is O(1).
    positions: HashMap<MemberId, usize>,
    /// The latest `msg` events, oldest first, replayed to members who join.
    history: VecDeque<Rc<EventBytes>>,
}

impl Room {
    /// The members.
    pub fn members(&self) -> &[MemberId] {
        &self.members
    }

    /// The latest messages, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Rc<EventBytes>> {
        self.history.iter()
    }

    /// Appends a message to the history, keeping at most `keep`.
    pub fn remember(&mut self, message: Rc<EventBytes>, keep: usize) {
        if keep == 0 {
            return;
        }
        if self.history.len() == keep {
            self.history.pop_front();
        }
        self.history.push_back(message);
    }

    fn add(&mut self, id: MemberId) {
        self.positions.insert(id, self.members.len());
        self.members.push(id);
    }

    fn remove(&mut self, id: MemberId) {
        if let Some(at) = self.positions.remove(&id) {
            self.members.swap_remove(at);
            if let Some(&moved) = self.members.get(at) {
                self.positions.insert(moved, at);
            }
        }
    }
}

/// A refused change of name or room membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another member holds the name.
    NameTaken,
    /// The member is already in the room.
    AlreadyIn,
    /// The member is not in the room.
    NotIn,
    /// No such member.
    NoMember,
    /// The member is in as many rooms as it may be.
    RoomLimit,
}

/// Members, names and rooms. See the module docs for its invariants.
#[derive(Debug)]
pub struct Directory<A> {
    members: Slab<Member<A>>,
    names: HashMap<String, MemberId>,
    /// By name, so that `list` comes out sorted.
    rooms: BTreeMap<String, Room>,
}

impl<A> Default for Directory<A> {
    fn default() -> Self {
        Directory {
            members: Slab::new(),
            names: HashMap::new(),
            rooms: BTreeMap::new(),
        }
    }
}

impl<A> Directory<A> {
    /// Adds a nameless member in no room.
    pub fn add(&mut self, address: A, form: Form, can_wait: bool) -> MemberId {
        self.members.insert(Member {
            name: None,
            address,
            form,
            can_wait,
            rooms: Vec::new(),
            cut_off: false,
        })
    }

    /// Removes a member from its rooms and frees its name. Returns it, so the caller
    /// can tell those rooms.
    pub fn remove(&mut self, id: MemberId) -> Option<Member<A>> {
        let member = self.members.try_remove(id)?;
        for room in &member.rooms {
            self.drop_from_room(id, room);
        }
        if let Some(name) = &member.name {
            self.names.remove(name);
        }
        Some(member)
    }

    /// Every member's id.
    pub fn member_ids(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.members.iter().map(|(id, _)| id)
    }

    /// The member `id`, if present.
    pub fn member(&self, id: MemberId) -> Option<&Member<A>> {
        self.members.get(id)
    }

    /// The member `id`, if present, to change.
    pub fn member_mut(&mut self, id: MemberId) -> Option<&mut Member<A>> {
        self.members.get_mut(id)
    }

    /// The member holding `name`.
    pub fn by_name(&self, name: &str) -> Option<MemberId> {
        self.names.get(name).copied()
    }

    /// Gives `id` the name `name` (already checked for form). Returns the name it held
    /// before, if any.
    pub fn rename(&mut self, id: MemberId, name: &str) -> Result<Option<String>, Refusal> {
        match self.names.get(name) {
            Some(&holder) if holder == id => return Ok(Some(name.to_owned())),
            Some(_) => return Err(Refusal::NameTaken),
            None => {}
        }
        let member = self.members.get_mut(id).ok_or(Refusal::NoMember)?;
        let old = member.name.replace(name.to_owned());
        if let Some(old) = &old {
            self.names.remove(old);
        }
        self.names.insert(name.to_owned(), id);
        Ok(old)
    }

    /// Puts `id` in `room`, creating the room if needed, unless it is in `max_rooms`
    /// rooms already.
    pub fn join(&mut self, id: MemberId, room: &str, max_rooms: usize) -> Result<(), Refusal> {
        let member = self.members.get_mut(id).ok_or(Refusal::NoMember)?;
        if member.rooms.iter().any(|r| r == room) {
            return Err(Refusal::AlreadyIn);
        }
        if member.rooms.len() >= max_rooms {
            return Err(Refusal::RoomLimit);
        }
        member.rooms.push(room.to_owned());
        self.rooms.entry(room.to_owned()).or_default().add(id);
        Ok(())
    }

    /// Takes `id` out of `room`, removing the room if it is left empty.
    pub fn leave(&mut self, id: MemberId, room: &str) -> Result<(), Refusal> {
        let member = self.members.get_mut(id).ok_or(Refusal::NoMember)?;
        let at = member
            .rooms
            .iter()
            .position(|r| r == room)
            .ok_or(Refusal::NotIn)?;
        member.rooms.remove(at);
        self.drop_from_room(id, room);
        Ok(())
    }

    fn drop_from_room(&mut self, id: MemberId, room: &str) {
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.remove(id);
            if entry.members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// True when `id` is in `room`.
    pub fn is_in(&self, id: MemberId, room: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.positions.contains_key(&id))
    }

    /// The room called `name`.
    pub fn room(&self, name: &str) -> Option<&Room> {
        self.rooms.get(name)
    }

    /// The room called `name`, to change its history.
    pub fn room_mut(&mut self, name: &str) -> Option<&mut Room> {
        self.rooms.get_mut(name)
    }

    /// Every room, by name.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, &Room)> {
        self.rooms.iter().map(|(name, room)| (name.as_str(), room))
    }

    /// Every room with its members' names: the answer to `list`.
    pub fn room_list(&self) -> Vec<RoomInfo<'_>> {
        self.rooms()
            .map(|(room, entry)| RoomInfo {
                room,
                members: entry
                    .members()
                    .iter()
                    .filter_map(|&m| self.member(m)?.name.as_deref())
                    .collect(),
            })
            .collect()
    }

    /// Calls `visit` for every member of `room`: the fan-out loop.
    pub fn for_each_in(&mut self, room: &str, mut visit: impl FnMut(&mut Member<A>)) {
        let Some(entry) = self.rooms.get(room) else {
            return;
        };
        for &id in &entry.members {
            if let Some(member) = self.members.get_mut(id) {
                visit(member);
            }
        }
    }

    /// Every name held, with its holder's rooms.
    pub fn named_with_rooms(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.names.iter().filter_map(|(name, &id)| {
            let member = self.members.get(id)?;
            Some((name.as_str(), member.rooms.as_slice()))
        })
    }

    /// Members holding a name.
    pub fn named_members(&self) -> usize {
        self.names.len()
    }

    /// Rooms with at least one member.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(dir: &mut Directory<u32>, name: &str) -> MemberId {
        let id = dir.add(0, Form::Typed, true);
        dir.rename(id, name).unwrap();
        id
    }

    #[test]
    fn names_are_unique_and_freed_on_rename_and_removal() {
        let mut dir = Directory::<u32>::default();
        let a = named(&mut dir, "alice");
        let b = dir.add(1, Form::Typed, true);
        assert_eq!(dir.rename(b, "alice"), Err(Refusal::NameTaken));
        assert_eq!(dir.rename(a, "alicia"), Ok(Some("alice".into())));
        assert_eq!(dir.rename(b, "alice"), Ok(None));
        assert_eq!(dir.by_name("alice"), Some(b));
        dir.remove(a);
        assert_eq!(dir.by_name("alicia"), None);
        assert_eq!(dir.named_members(), 1);
    }

    #[test]
    fn rooms_exist_while_they_have_members() {
        let mut dir = Directory::<u32>::default();
        let a = named(&mut dir, "a");
        let b = named(&mut dir, "b");
        dir.join(a, "r", 10).unwrap();
        dir.join(b, "r", 10).unwrap();
        assert_eq!(dir.join(a, "r", 10), Err(Refusal::AlreadyIn));
        assert_eq!(dir.room("r").unwrap().members(), &[a, b]);
        dir.leave(a, "r").unwrap();
        assert_eq!(dir.leave(a, "r"), Err(Refusal::NotIn));
        assert!(!dir.is_in(a, "r") && dir.is_in(b, "r"));
        let gone = dir.remove(b).unwrap();
        assert_eq!(gone.rooms, vec!["r".to_string()]);
        assert_eq!(dir.room_count(), 0);
    }

    #[test]
    fn leaving_from_the_middle_keeps_positions_right() {
        let mut dir = Directory::<u32>::default();
        let ids: Vec<_> = (0..4).map(|i| named(&mut dir, &i.to_string())).collect();
        for &id in &ids {
            dir.join(id, "r", 10).unwrap();
        }
        dir.leave(ids[1], "r").unwrap();
        dir.leave(ids[3], "r").unwrap();
        dir.leave(ids[0], "r").unwrap();
        assert_eq!(dir.room("r").unwrap().members(), &[ids[2]]);
        let mut seen = Vec::new();
        dir.for_each_in("r", |m| seen.push(m.name.clone().unwrap()));
        assert_eq!(seen, vec!["2".to_string()]);
    }

    #[test]
    fn a_member_is_in_at_most_the_room_limit() {
        let mut dir = Directory::<u32>::default();
        let a = named(&mut dir, "a");
        for i in 0..3 {
            dir.join(a, &i.to_string(), 3).unwrap();
        }
        assert_eq!(dir.join(a, "3", 3), Err(Refusal::RoomLimit));
        assert_eq!(dir.join(a, "0", 3), Err(Refusal::AlreadyIn), "said first");
        assert!(dir.room("3").is_none(), "a refused join creates no room");
        dir.leave(a, "1").unwrap();
        dir.join(a, "3", 3).unwrap();
        assert_eq!(dir.member(a).unwrap().rooms, vec!["0", "2", "3"]);
    }

    fn test_event(byte: u8) -> EventBytes {
        EventBytes::from_serialized(super::super::event_bytes::Serialized {
            json: vec![byte],
            name_msg: None,
        })
    }

    #[test]
    fn history_keeps_the_latest() {
        let mut room = Room::default();
        for i in 0..5u8 {
            room.remember(Rc::new(test_event(i)), 3);
        }
        let kept: Vec<u8> = room.history().map(|e| e.json()[0]).collect();
        assert_eq!(kept, vec![2, 3, 4]);
        room.remember(Rc::new(test_event(9)), 0);
        assert_eq!(room.history().count(), 3);
    }
}
