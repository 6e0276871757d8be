//! The backplane across the loops of one process (`switchboard chat --threads N`): a
//! room spans loops, names are unique across them, and direct messages and `list`
//! reach members on every loop.
//!
//! ```text
//!   loop A: say in "r" --encode once--> A's members of "r"
//!                          |  Arc of the JSON, posted (bounded inbox + waker) to each
//!                          |  loop that has members in "r" (and only those)
//!                          v
//!   loop B: job --frame once--> B's members of "r"  (and B's history of "r")
//! ```
//!
//! - Each loop knows which other loops have members in which rooms: a loop tells every
//!   other when its first member enters a room and when its last one leaves
//!   ([`Notice::RoomOpened`], [`Notice::RoomClosed`]). A room event is sent to exactly
//!   those loops, serialized once by the sender and framed once by each receiving loop.
//! - Posts from one loop to another arrive in the order they were made, so members on
//!   every loop see one sender's events in that sender's order. A full inbox is not
//!   waited on: the event is dropped for that loop and counted
//!   (`cross_loop_dropped`). A room notice is not dropped: it is posted again, in
//!   order, a moment later ([`LOOP_RETRY`]).
//! - Names and room memberships across loops live in one [`LoopRegistry`] behind a
//!   mutex. It is taken when a member names itself, joins, leaves or goes, for `list`,
//!   and for a direct message to a member of another loop: never for a room message.
//!
//! A member who joins a room gets the history its own loop has of it: the messages its
//! loop saw while it had members in the room.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::{Duration, Instant};

use crate::services::chat::engine::{
    Backplane, Claim, EventBytes, Listing, MemberId, Remote, RoomChange, Route, Serialized,
    LOG_INTERVAL,
};
use crate::services::chat::{Chat, ChatStatsHandle};
use crate::throttle::Throttle;
use crate::{Peers, PostError};

/// How long refused room notices wait before they are posted again.
pub const LOOP_RETRY: Duration = Duration::from_millis(10);

/// Names and room members across every loop of a process.
#[derive(Debug, Default)]
pub struct LoopRegistry {
    /// Every name held, and the loop of its holder.
    names: HashMap<String, usize>,
    /// Every room with members on any loop, and their names (sorted, for `list`).
    rooms: BTreeMap<String, BTreeSet<String>>,
}

/// What the chat loops of one pool share: give a clone to each loop's
/// [`Chat::on_loop`].
#[derive(Debug, Clone, Default)]
pub struct ChatLoops {
    registry: Arc<Mutex<LoopRegistry>>,
}

/// What one loop posts to another.
#[derive(Debug, Clone)]
pub enum Notice {
    /// `from` now has members in `room`.
    RoomOpened { room: String, from: usize },
    /// `from` has no members left in `room`.
    RoomClosed { room: String, from: usize },
    /// An event of a room, one copy shared by every loop it is posted to.
    Room(Arc<RoomEvent>),
    /// A direct message for the member called `to`.
    Direct { to: String, event: Serialized },
}

/// A room event on its way to the loops with members in the room.
#[derive(Debug)]
pub struct RoomEvent {
    room: String,
    event: Serialized,
    /// A `msg`: the receiving loop keeps it in the room's history.
    remember: bool,
}

/// One loop's link to the others.
#[derive(Debug)]
pub struct LoopLink {
    /// This loop.
    index: usize,
    peers: Peers<Chat>,
    shared: ChatLoops,
    /// The other loops with members in each room.
    remote_rooms: HashMap<String, Vec<usize>>,
    /// Log lines about full inboxes.
    full_log: Throttle,
    /// Room notices a full inbox refused, in order, to post again: unlike a room event,
    /// a lost notice would leave another loop wrong about where a room's members are.
    unsent: VecDeque<(usize, Notice)>,
    /// A timer to post them again is set.
    retry_armed: bool,
    /// What the other loops posted, for the engine.
    heard: Vec<Remote>,
    stats: ChatStatsHandle,
}

impl LoopLink {
    /// Loop `index`'s link to its `peers`, through the registry in `shared`.
    pub fn new(
        index: usize,
        peers: Peers<Chat>,
        shared: ChatLoops,
        stats: ChatStatsHandle,
    ) -> Self {
        LoopLink {
            index,
            peers,
            shared,
            remote_rooms: HashMap::new(),
            full_log: Throttle::new(LOG_INTERVAL),
            unsent: VecDeque::new(),
            retry_armed: false,
            heard: Vec::new(),
            stats,
        }
    }

    fn registry(&self) -> MutexGuard<'_, LoopRegistry> {
        // A loop that panicked while holding the lock stops the whole pool; the data is
        // still consistent enough for the others to finish their shutdown.
        self.shared
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes `name` for a member of this loop, giving up `old`; false if a member of
    /// another loop holds it. `rooms` are the member's rooms, whose lists change name.
    fn claim_name(&self, name: &str, old: Option<&str>, rooms: &[String]) -> bool {
        let mut registry = self.registry();
        if registry.names.contains_key(name) {
            return false;
        }
        registry.names.insert(name.to_owned(), self.index);
        if let Some(old) = old {
            registry.names.remove(old);
        }
        for room in rooms {
            if let Some(members) = registry.rooms.get_mut(room) {
                if let Some(old) = old {
                    members.remove(old);
                }
                members.insert(name.to_owned());
            }
        }
        true
    }

    /// A member of this loop called `name` (if named) has gone from `rooms`, and from
    /// the chat when `gone`.
    fn forget(&self, name: Option<&str>, rooms: &[String], gone: bool) {
        let mut registry = self.registry();
        let Some(name) = name else {
            return;
        };
        for room in rooms {
            if let Some(members) = registry.rooms.get_mut(room) {
                members.remove(name);
                if members.is_empty() {
                    registry.rooms.remove(room);
                }
            }
        }
        if gone {
            registry.names.remove(name);
        }
    }

    /// A member of this loop called `name` entered `room`.
    fn entered(&self, name: &str, room: &str) {
        self.registry()
            .rooms
            .entry(room.to_owned())
            .or_default()
            .insert(name.to_owned());
    }

    /// The loop of the member called `name`, if any holds it.
    fn loop_of(&self, name: &str) -> Option<usize> {
        self.registry().names.get(name).copied()
    }

    /// Every room and its members' names, across loops: `list`.
    fn room_list(&self) -> Vec<(String, Vec<String>)> {
        self.registry()
            .rooms
            .iter()
            .map(|(room, members)| (room.clone(), members.iter().cloned().collect()))
            .collect()
    }

    /// Tells every other loop that this one opened or closed `room`.
    fn room_changed(&mut self, room: &str, open: bool) {
        for to in 0..self.peers.all().len() {
            if to == self.index {
                continue;
            }
            let (room, from) = (room.to_owned(), self.index);
            let notice = match open {
                true => Notice::RoomOpened { room, from },
                false => Notice::RoomClosed { room, from },
            };
            self.unsent.push_back((to, notice));
        }
        self.post_unsent();
    }

    /// Posts the room notices not yet taken, in order, until an inbox is full.
    fn post_unsent(&mut self) {
        while let Some((to, notice)) = self.unsent.pop_front() {
            let retry = notice.clone();
            if send(&self.peers, to, notice).is_err() {
                self.unsent.push_front((to, retry));
                return;
            }
        }
    }

    /// True once when room notices wait for another try and no retry is set: the
    /// caller sets a timer of [`LOOP_RETRY`], then calls [`LoopLink::retried`].
    fn needs_retry(&mut self) -> bool {
        let needs = !self.unsent.is_empty() && !self.retry_armed;
        self.retry_armed |= needs;
        needs
    }

    /// The retry timer fired.
    fn retried(&mut self) {
        self.retry_armed = false;
        self.post_unsent();
    }

    /// Sends a room event to every other loop with members in `room`.
    fn post_room_event(&mut self, room: &str, event: &EventBytes, remember: bool) {
        let Some(loops) = self.remote_rooms.get(room).filter(|l| !l.is_empty()) else {
            return;
        };
        let event = Arc::new(RoomEvent {
            room: room.to_owned(),
            event: event.serialized().clone(),
            remember,
        });
        let mut refused = None;
        for &to in loops {
            if let Err(e) = send(&self.peers, to, Notice::Room(Arc::clone(&event))) {
                refused = Some((to, e));
                self.stats.count_cross_loop_dropped();
            }
        }
        if let Some((to, e)) = refused {
            self.log_dropped(to, e);
        }
    }

    /// Records what another loop said of its rooms.
    fn note_room(&mut self, room: String, from: usize, open: bool) {
        let loops = self.remote_rooms.entry(room.clone()).or_default();
        loops.retain(|&l| l != from);
        if open {
            loops.push(from);
        } else if loops.is_empty() {
            self.remote_rooms.remove(&room);
        }
    }

    /// Logs (now and then) that an event for loop `to` was dropped.
    fn log_dropped(&mut self, to: usize, e: PostError) {
        if let Some(count) = self.full_log.note(std::time::Instant::now()) {
            log::warn!(
                "chat: an event for loop {to} was dropped: {e} \
                 ({count} dropped since the last such line)"
            );
        }
    }
}

/// Posts `notice` into loop `to`'s inbox: every message between chat loops goes this way.
fn send(peers: &Peers<Chat>, to: usize, notice: Notice) -> Result<(), PostError> {
    let Some(handle) = peers.all().get(to) else {
        return Ok(());
    };
    handle.post(move |chat, ctx| {
        chat.heard_on_backplane(ctx, |backplane| {
            if let Some(link) = backplane.as_any().downcast_mut::<LoopLink>() {
                link.receive(notice);
            }
        })
    })
}

impl LoopLink {
    /// Takes in what another loop posted: its rooms for this link, its events for the
    /// engine (see [`Backplane::take_remote`]).
    pub fn receive(&mut self, notice: Notice) {
        match notice {
            Notice::RoomOpened { room, from } => self.note_room(room, from, true),
            Notice::RoomClosed { room, from } => self.note_room(room, from, false),
            Notice::Room(event) => {
                // The last loop to take it (with two loops, the only one) takes the bytes
                // rather than copying them.
                let (room, event, remember) = match Arc::try_unwrap(event) {
                    Ok(own) => (own.room, own.event, own.remember),
                    Err(shared) => (shared.room.clone(), shared.event.clone(), shared.remember),
                };
                self.heard.push(Remote::Room {
                    room,
                    event,
                    remember,
                });
            }
            Notice::Direct { to, event } => self.heard.push(Remote::Direct { to, event }),
        }
    }
}

impl Backplane for LoopLink {
    fn claim(
        &mut self,
        _now: Instant,
        _member: MemberId,
        name: &str,
        old: Option<&str>,
        rooms: &[String],
        _can_wait: bool,
    ) -> Claim {
        match self.claim_name(name, old, rooms) {
            true => Claim::Free,
            false => Claim::Taken,
        }
    }

    /// Nothing more: the claim moved the name in the registry.
    fn named(&mut self, _now: Instant, _name: &str, _old: Option<&str>, _rooms: &[String]) {}

    fn moved(&mut self, _now: Instant, change: RoomChange<'_>) {
        match (change.entered, change.name) {
            (true, Some(name)) => self.entered(name, change.room),
            (false, name) => self.forget(name, &[change.room.to_owned()], false),
            (true, None) => {}
        }
        if change.first_or_last {
            self.room_changed(change.room, change.entered);
        }
    }

    fn gone(&mut self, _now: Instant, name: Option<&str>, rooms: &[String], emptied: &[&str]) {
        self.forget(name, rooms, true);
        for room in emptied {
            self.room_changed(room, false);
        }
    }

    fn publish(&mut self, _now: Instant, room: &str, event: &EventBytes, _: usize, remember: bool) {
        self.post_room_event(room, event, remember);
    }

    /// Exact: the registry lists every loop's members of the room.
    fn room_size(&mut self, room: &str, here: usize) -> usize {
        let everywhere = self.registry().rooms.get(room).map_or(0, BTreeSet::len);
        everywhere.max(here)
    }

    fn direct(&mut self, _now: Instant, _member: MemberId, to: &str, event: &EventBytes) -> Route {
        let Some(at) = self.loop_of(to) else {
            return Route::Unknown;
        };
        let notice = Notice::Direct {
            to: to.to_owned(),
            event: event.serialized().clone(),
        };
        if let Err(e) = send(&self.peers, at, notice) {
            self.stats.count_cross_loop_dropped();
            self.log_dropped(at, e);
        }
        Route::Sent
    }

    fn list(&mut self, _now: Instant, _member: MemberId) -> Listing {
        Listing::Rooms(self.room_list())
    }

    fn unclaim(&mut self, _now: Instant, name: &str) {
        self.forget(Some(name), &[], true);
    }

    fn take_remote(&mut self) -> Vec<Remote> {
        std::mem::take(&mut self.heard)
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }

    /// A retry of the room notices a full inbox refused, when some wait.
    fn timer(&mut self) -> Option<Duration> {
        self.needs_retry().then_some(LOOP_RETRY)
    }

    fn tick(&mut self, _now: Instant, _held: &dyn Fn() -> Vec<(String, Vec<String>)>) {
        self.retried();
    }
}
