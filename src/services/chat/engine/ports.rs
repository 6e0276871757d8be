//! What the engine needs from the world, as two traits it is handed on every call
//! (smoltcp's `Device`, tungstenite's `additional_send`): the engine decides, the
//! caller does the I/O.
//!
//! - [`Outputs`]: get bytes to members. The chat's service implements it on the
//!   reactor's `Context` (frames, datagrams, closes); the engine's tests record what
//!   it is asked.
//! - [`Backplane`]: the other loops of the process, or the other nodes of a cluster.
//!   The engine tells it what changed here (names, rooms, events) and asks it what it
//!   knows (a name free elsewhere, the member a DM is for, every room for `list`).
//!   What the backplane hears from elsewhere comes back to the engine as [`Remote`]
//!   events, which [`super::Engine::settle`] carries out.

use std::any::Any;
use std::fmt::Display;
use std::time::{Duration, Instant};

use super::directory::{Form, MemberId};
use super::event_bytes::{EventBytes, Serialized};
use crate::{CloseReason, ConnId, Dial, EndpointId};

/// What the engine needs for one call: the time, and its two ports.
pub struct Io<'a, A> {
    /// Now, for the history's clock and the throttled logs.
    pub now: Instant,
    /// Where members' bytes go.
    pub out: &'a mut dyn Outputs<A>,
    /// The other loops or nodes.
    pub backplane: &'a mut dyn Backplane,
}

impl<A> std::fmt::Debug for Io<'_, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io").field("now", &self.now).finish()
    }
}

/// What [`Outputs::deliver`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued or sent.
    Sent,
    /// Not sent: the member is going away, or its transport could not take it.
    Skipped,
    /// Queued, and that put the member so far behind that it is being disconnected
    /// (the slow-consumer cut-off): the engine sends it nothing more.
    CutOff,
}

/// Where the engine's output goes. `A` is a member's address, which only the
/// transports understand: the engine stores it and hands it back here.
pub trait Outputs<A> {
    /// Sends one event shared by many recipients to the member at `to`, in `form`.
    fn deliver(&mut self, to: &A, form: Form, event: &EventBytes) -> Delivery;
    /// Sends `bytes` (one answer, already in the member's form) to `to`.
    fn send(&mut self, to: &A, bytes: &[u8]);
    /// Closes the member's connection once what is queued for it is written (after
    /// `bye`); nothing for a datagram member.
    fn close(&mut self, to: &A);
    /// The member at `to` has left the chat: its transport forgets the address.
    fn gone(&mut self, to: &A);
}

/// How the backplane answered a claim on a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Free as far as the backplane knows: the engine takes it.
    Free,
    /// Held elsewhere.
    Taken,
    /// Asked; the answer comes later as [`Remote::NameSettled`]. The member's next
    /// requests wait for it.
    Pending,
}

/// Where a direct message for a name no member here holds went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Handed to the loop or node whose member holds the name.
    Sent,
    /// Handed on; whether anyone holds the name comes back as
    /// [`Remote::DirectSettled`].
    Pending,
    /// Nobody elsewhere holds it, or there is nobody to ask.
    Unknown,
}

/// How the backplane answered `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// Every room with its members' names, across loops.
    Rooms(Vec<(String, Vec<String>)>),
    /// Asked; the answer comes later as [`Remote::Listed`].
    Pending,
    /// Nobody to ask: this loop's rooms are the answer.
    Local,
}

/// How a claim waited on came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The name is this member's.
    Granted,
    /// Another member holds it.
    Taken,
    /// Not checked elsewhere (the backplane went down meanwhile): taken here, as
    /// while it is down.
    Unchecked,
    /// Not taken; the reason the member is given.
    Refused(String),
}

/// What the backplane heard from elsewhere, for the engine to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// An event of `room` from another loop or node, for the members here.
    Room {
        /// The room.
        room: String,
        /// The event, as its sender serialized it.
        event: Serialized,
        /// A `msg`: kept in the room's history.
        remember: bool,
    },
    /// A direct message for the member here called `to`.
    Direct {
        /// The recipient's name.
        to: String,
        /// The `dm` event.
        event: Serialized,
    },
    /// A claim answered [`Claim::Pending`] is settled.
    NameSettled {
        /// The member that asked.
        member: MemberId,
        /// The name it asked for.
        name: String,
        /// How it came out.
        outcome: Settled,
    },
    /// A DM answered [`Route::Pending`] is settled.
    DirectSettled {
        /// The sender.
        member: MemberId,
        /// The recipient's name.
        to: String,
        /// The event if someone took it (the sender gets its copy), `None` if nobody
        /// holds the name.
        event: Option<Serialized>,
    },
    /// The answer to a `list` answered [`Listing::Pending`].
    Listed {
        /// The member that asked.
        member: MemberId,
        /// Every room with its members' names.
        rooms: Vec<(String, Vec<String>)>,
    },
    /// A `list` answered [`Listing::Pending`] is answered with this loop's rooms.
    ListLocally {
        /// The member that asked.
        member: MemberId,
    },
    /// Refuse a member's waiting request.
    Refuse {
        /// The member.
        member: MemberId,
        /// Why, for a person to read.
        reason: String,
    },
    /// Tell every member something (the link to the other nodes went down or came up).
    NoticeAll {
        /// For a person to read.
        text: String,
    },
    /// Tell one member here something.
    NoticeTo {
        /// The member's name.
        name: String,
        /// For a person to read.
        text: String,
    },
    /// A claim on `name` was granted after its member had been answered without it:
    /// give it back unless a member here holds it by now.
    Unclaim {
        /// The name.
        name: String,
    },
}

/// The other loops of the process, or the other nodes of a cluster. Every method
/// takes the time and does no I/O of its own beyond queueing: a backplane with a
/// connection keeps what it would write until the service asks for it.
pub trait Backplane: Any {
    /// A member wants `name`, giving up `old`; it is in `rooms`. `can_wait`: its
    /// requests can wait for an answer (a stream member's can; a datagram member's
    /// are answered at once).
    fn claim(
        &mut self,
        now: Instant,
        member: MemberId,
        name: &str,
        old: Option<&str>,
        rooms: &[String],
        can_wait: bool,
    ) -> Claim;
    /// A member here now holds `name` (instead of `old`) and is in `rooms`.
    fn named(&mut self, now: Instant, name: &str, old: Option<&str>, rooms: &[String]);
    /// A member here entered or left a room.
    fn moved(&mut self, now: Instant, change: RoomChange<'_>);
    /// A member here left the chat: its name (if any) is free, and `emptied` are the
    /// rooms it left with no member here any more.
    fn gone(&mut self, now: Instant, name: Option<&str>, rooms: &[String], emptied: &[&str]);
    /// Sends an event of `room` (with `here` members on this loop) to the loops or
    /// nodes with members in it.
    fn publish(
        &mut self,
        now: Instant,
        room: &str,
        event: &EventBytes,
        here: usize,
        remember: bool,
    );
    /// How many members `room` has across loops and nodes, `here` of them on this
    /// loop, as far as the backplane knows: what the presence limit is held to.
    fn room_size(&mut self, _room: &str, here: usize) -> usize {
        here
    }
    /// Sends a direct message to whoever holds `to` elsewhere.
    fn direct(&mut self, now: Instant, member: MemberId, to: &str, event: &EventBytes) -> Route;
    /// `list` across loops or nodes.
    fn list(&mut self, now: Instant, member: MemberId) -> Listing;
    /// Gives `name` up (see [`Remote::Unclaim`]).
    fn unclaim(&mut self, now: Instant, name: &str);
    /// What it heard from elsewhere since last asked, in order.
    fn take_remote(&mut self) -> Vec<Remote>;

    // What the service does for a backplane besides the engine's calls: its timer,
    // and the connection of one that keeps its own (Redis). The defaults are for one
    // that needs neither.

    /// Itself, for the code that posts to it from another loop.
    fn as_any(&mut self) -> &mut dyn Any;
    /// The service started: say where the backplane is.
    fn start(&mut self) {}
    /// A repeating timer it wants from the start ([`Backplane::tick`] each time).
    fn every(&self) -> Option<Duration> {
        None
    }
    /// A one-shot timer it wants now, if any ([`Backplane::tick`] when it fires).
    fn timer(&mut self) -> Option<Duration> {
        None
    }
    /// Its timer fired; `held` gives the names held here with their rooms.
    fn tick(&mut self, _now: Instant, _held: &dyn Fn() -> Vec<(String, Vec<String>)>) {}
    /// The outbound endpoint its connection is to go through.
    fn set_endpoint(&mut self, _endpoint: EndpointId) {}
    /// Its connection to dial now, if it keeps one and the time has come.
    fn dial_due(&mut self, _now: Instant) -> Option<Dial> {
        None
    }
    /// The dial is under way on `conn`.
    fn dialling(&mut self, _conn: ConnId) {}
    /// The dial could not even start.
    fn dial_failed(&mut self, _now: Instant, _error: &dyn Display) {}
    /// Its connection is up; `held` are the names held here with their rooms.
    fn connected(&mut self, _now: Instant, _held: Vec<(String, Vec<String>)>) {}
    /// Bytes arrived on its connection.
    fn input(&mut self, _now: Instant, _bytes: &[u8]) {}
    /// Its connection closed; `tls_failure` is why TLS ended it, in rustls's words,
    /// if it did.
    fn closed(&mut self, _now: Instant, _reason: CloseReason, _tls_failure: Option<String>) {}
    /// Its connection, if it has one, with what to write on it and whether to close
    /// it now (then [`Backplane::note_queued`]).
    fn transmit(&mut self) -> Option<(ConnId, Transmit)> {
        None
    }
    /// What waits unwritten on its connection, for its bound.
    fn note_queued(&mut self, _bytes: usize) {}
    /// Whether it does its work (`/healthz`).
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
    /// Its metrics (`/metrics`).
    fn write_metrics(&self, _out: &mut String) {}
}

/// What a backplane with a connection asks the service to do with it.
#[derive(Debug, Default)]
pub struct Transmit {
    /// Bytes to write, in order.
    pub bytes: Vec<u8>,
    /// Close the connection at once (it redials): what arrived cannot be read, or a
    /// change that cannot be dropped met a full queue.
    pub close: bool,
}

/// A member here entered or left a room.
#[derive(Debug, Clone, Copy)]
pub struct RoomChange<'a> {
    /// The member's name, if it has one.
    pub name: Option<&'a str>,
    /// The room.
    pub room: &'a str,
    /// True for a join, false for a leave.
    pub entered: bool,
    /// The member's rooms after the change.
    pub rooms: &'a [String],
    /// It was the first member here to enter the room, or the last to leave it.
    pub first_or_last: bool,
}

/// A process of one loop, with no cluster: nobody to tell, nobody to ask.
#[derive(Debug, Default)]
pub struct Alone;

impl Backplane for Alone {
    fn claim(
        &mut self,
        _: Instant,
        _: MemberId,
        _: &str,
        _: Option<&str>,
        _: &[String],
        _: bool,
    ) -> Claim {
        Claim::Free
    }
    fn named(&mut self, _: Instant, _: &str, _: Option<&str>, _: &[String]) {}
    fn moved(&mut self, _: Instant, _: RoomChange<'_>) {}
    fn gone(&mut self, _: Instant, _: Option<&str>, _: &[String], _: &[&str]) {}
    fn publish(&mut self, _: Instant, _: &str, _: &EventBytes, _: usize, _: bool) {}
    fn direct(&mut self, _: Instant, _: MemberId, _: &str, _: &EventBytes) -> Route {
        Route::Unknown
    }
    fn list(&mut self, _: Instant, _: MemberId) -> Listing {
        Listing::Local
    }
    fn unclaim(&mut self, _: Instant, _: &str) {}
    fn take_remote(&mut self) -> Vec<Remote> {
        Vec::new()
    }
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}
