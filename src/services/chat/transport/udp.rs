//! UDP members: one member per source address, in either message form (typed JSON,
//! or the seeds' two-field `{"name","msg"}`), expiring when silent.
//!
//! A datagram's source is only what its sender wrote on it, so everything sent back
//! goes through the [`UdpGuard`] (in the service's outputs), and a newcomer becomes a
//! member only if the join rate and the member limit allow. A source that holds no
//! name gets short answers: `ping` is answered, `hello` makes it a member (undone if
//! the name is refused), anything else is told to say hello first.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::guard::{UdpGuard, REFLECTION_WINDOW};
use super::Address;
use crate::services::chat::engine::protocol::{
    is_own_output, parse, to_json, Event, Incoming, NameMsg, NameMsgForm, Request,
};
use crate::services::chat::engine::{
    name_msg_error, Backplane, Engine, Form, Io, MemberId, Outputs, HELLO_FIRST_SHORT,
};
use crate::{TimerId, UdpId};

/// One UDP member's liveness, kept by its address.
#[derive(Debug)]
struct Record {
    id: MemberId,
    /// When its last datagram arrived; it expires a fixed time after that.
    last_seen: Instant,
    /// The timer that checks for its expiry.
    expiry_timer: Option<TimerId>,
    /// A name/msg member's last echo of its own message: a hash of the datagram, and
    /// when it was sent. The same bytes back soon after are a reflection.
    last_echo: Option<(u64, Instant)>,
}

/// The UDP members by address, and the rules for what may be sent back.
#[derive(Debug)]
pub struct UdpMembers {
    by_peer: HashMap<(UdpId, SocketAddr), Record>,
    /// What may be sent back to UDP sources.
    pub guard: UdpGuard,
    /// A member that sends nothing for this long leaves.
    expiry: Duration,
}

/// The outputs a UDP member's datagram needs besides the engine's: this transport's
/// own state (taken back by the service while it holds it for the outputs) and the
/// expiry timers.
pub trait DatagramOutputs: Outputs<Address> {
    /// The UDP members.
    fn udp(&mut self) -> &mut UdpMembers;
    /// Sets the timer that checks member `id`'s expiry after `after`.
    fn set_expiry_timer(&mut self, id: MemberId, after: Duration) -> TimerId;
}

impl UdpMembers {
    /// No members yet; members expire after `expiry`.
    pub fn new(guard: UdpGuard, expiry: Duration) -> Self {
        UdpMembers {
            by_peer: HashMap::new(),
            guard,
            expiry,
        }
    }

    /// A member left the chat: forgets its address. Returns its expiry timer, for the
    /// caller to cancel (a flood of refused `hello`s would otherwise leave one timer
    /// per datagram for the whole expiry period).
    pub fn forget(&mut self, socket: UdpId, peer: SocketAddr) -> Option<TimerId> {
        self.by_peer.remove(&(socket, peer))?.expiry_timer
    }

    /// True if a name/msg member's datagram is the echo of its own message that the
    /// server just sent it, come back: an echo service, or a second chat server,
    /// reflecting it. Answering would echo it again, for ever. A member repeating
    /// itself sends its own bytes, which match only if it writes JSON exactly as the
    /// server does and repeats itself within [`REFLECTION_WINDOW`].
    fn is_reflected_echo(&self, now: Instant, key: (UdpId, SocketAddr), datagram: &[u8]) -> bool {
        self.by_peer
            .get(&key)
            .and_then(|record| record.last_echo)
            .is_some_and(|(hash, at)| {
                now.saturating_duration_since(at) < REFLECTION_WINDOW && hash == hash_of(datagram)
            })
    }
}

/// One datagram, from a member or not.
pub fn datagram<O: DatagramOutputs>(
    engine: &mut Engine<Address>,
    (now, backplane): (Instant, &mut dyn Backplane),
    out: &mut O,
    (socket, peer): (UdpId, SocketAddr),
    datagram: &[u8],
) {
    if is_own_output(datagram) {
        return out.udp().guard.reflected(now, peer);
    }
    let key = (socket, peer);
    let known = out.udp().by_peer.get(&key).map(|record| record.id);
    let named = known.is_some_and(|id| engine.member(id).is_some_and(|m| m.name.is_some()));
    out.udp().guard.begin(socket, peer, datagram.len(), named);
    let mut sender = Sender {
        engine,
        now,
        backplane,
        key,
    };
    match (parse(datagram, NameMsgForm::Accepted), known) {
        (Ok(Incoming::NameMsg(_)), Some(_)) if out.udp().is_reflected_echo(now, key, datagram) => {
            out.udp().guard.reflected(now, peer);
        }
        (Ok(Incoming::NameMsg(message)), Some(id)) => {
            sender.touch(out, id, Form::NameMsg);
            sender.speak(out, id, message);
        }
        (Ok(Incoming::NameMsg(message)), None) => sender.name_msg_newcomer(out, message),
        (Ok(Incoming::Typed(request)), Some(id)) => {
            sender.touch(out, id, Form::Typed);
            let (engine, mut io) = sender.parts(out);
            engine.handle(&mut io, id, request);
        }
        (Ok(Incoming::Typed(request)), None) => sender.stranger(out, request),
        (Err(e), Some(id)) => {
            let (engine, mut io) = sender.parts(out);
            engine.refuse(&mut io, id, &e.to_string());
        }
        // Not answered: an error for input that is not a request would answer
        // another server's errors, which would answer ours.
        (Err(_), None) => out.udp().guard.unanswered(now, peer),
    }
    out.udp().guard.end();
}

/// Expires member `id` if it has been silent for the whole expiry period, or checks
/// again when it would be (one timer per member, re-armed lazily rather than on
/// every datagram).
pub fn check_expiry<O: DatagramOutputs>(
    engine: &mut Engine<Address>,
    (now, backplane): (Instant, &mut dyn Backplane),
    out: &mut O,
    timer: TimerId,
    id: MemberId,
) {
    let Some(&Address::Datagram { socket, peer }) = engine.member(id).map(|m| &m.address) else {
        return;
    };
    let expiry = out.udp().expiry;
    let Some(record) = out.udp().by_peer.get(&(socket, peer)) else {
        return;
    };
    if record.expiry_timer != Some(timer) {
        return; // a timer of an earlier member in the same slot
    }
    let due = record.last_seen + expiry;
    if due > now {
        let timer = out.set_expiry_timer(id, due - now);
        if let Some(record) = out.udp().by_peer.get_mut(&(socket, peer)) {
            record.expiry_timer = Some(timer);
        }
        return;
    }
    log::info!(
        "chat: UDP member {} at {peer} sent nothing for {expiry:?}: expired",
        engine.name_of(id),
    );
    let mut io = Io {
        now,
        out,
        backplane,
    };
    engine.remove(&mut io, id);
}

/// The datagram being handled: who sent it, and what handles it.
struct Sender<'a> {
    engine: &'a mut Engine<Address>,
    now: Instant,
    backplane: &'a mut dyn Backplane,
    key: (UdpId, SocketAddr),
}

impl Sender<'_> {
    /// The engine, and its ports for one call.
    fn parts<'o>(
        &'o mut self,
        out: &'o mut dyn Outputs<Address>,
    ) -> (&'o mut Engine<Address>, Io<'o, Address>) {
        let io = Io {
            now: self.now,
            out,
            backplane: &mut *self.backplane,
        };
        (&mut *self.engine, io)
    }

    fn address(&self) -> Address {
        Address::Datagram {
            socket: self.key.0,
            peer: self.key.1,
        }
    }

    /// Records the time of a member's datagram and the form it speaks.
    fn touch(&mut self, out: &mut impl DatagramOutputs, id: MemberId, form: Form) {
        if let Some(record) = out.udp().by_peer.get_mut(&self.key) {
            record.last_seen = self.now;
        }
        self.engine.set_form(id, form);
    }

    /// A name/msg message from a member; remembers the echo it was sent, to know it
    /// if it comes back.
    fn speak(&mut self, out: &mut impl DatagramOutputs, id: MemberId, message: NameMsg) {
        let (engine, mut io) = self.parts(out);
        let echo = engine.name_msg(&mut io, id, message);
        let echo = echo.as_deref().and_then(|e| e.name_msg()).map(hash_of);
        let now = self.now;
        if let Some(record) = out.udp().by_peer.get_mut(&self.key) {
            record.last_echo = echo.map(|hash| (hash, now));
        }
    }

    /// A name/msg datagram from a new source: it becomes a member if admitted and its
    /// name is free, then speaks.
    fn name_msg_newcomer(&mut self, out: &mut impl DatagramOutputs, message: NameMsg) {
        let Some(id) = self.admit(out, Form::NameMsg) else {
            return;
        };
        let (engine, mut io) = self.parts(out);
        if !engine.hello(&mut io, id, &message.name) {
            // A UDP member without a name would have proved nothing: undo the admission.
            return engine.remove(&mut io, id);
        }
        self.speak(out, id, message);
    }

    /// A typed request from a source that is not a member: `hello` makes it one (if
    /// admitted); `ping` needs no membership; the rest, the room list included, need
    /// a name first, which is said in as few bytes as possible (see `guard`).
    fn stranger(&mut self, out: &mut impl DatagramOutputs, request: Request) {
        match request {
            Request::Hello { .. } => {
                let Some(id) = self.admit(out, Form::Typed) else {
                    return;
                };
                let (engine, mut io) = self.parts(out);
                engine.handle(&mut io, id, request);
                if engine.member(id).is_some_and(|m| m.name.is_none()) {
                    engine.remove(&mut io, id); // as for a name/msg newcomer
                }
            }
            Request::Ping => out.send(&self.address(), &to_json(&Event::Pong)),
            _ => {
                let reason = HELLO_FIRST_SHORT;
                out.send(&self.address(), &to_json(&Event::Error { reason }));
            }
        }
    }

    /// Makes the source a member, if the join rate and the member limit allow;
    /// otherwise tells it so (briefly, in its own form) and returns `None`.
    fn admit(&mut self, out: &mut impl DatagramOutputs, form: Form) -> Option<MemberId> {
        let members = out.udp().by_peer.len();
        if let Err(turned) = out.udp().guard.admit(self.now, self.key.1, members) {
            let reason = turned.reason();
            let answer = match form {
                Form::Typed => to_json(&Event::Error { reason }),
                Form::NameMsg => name_msg_error(reason),
            };
            out.send(&self.address(), &answer);
            return None;
        }
        let id = self.engine.add(self.address(), form, false);
        let expiry = out.udp().expiry;
        let timer = out.set_expiry_timer(id, expiry);
        let record = Record {
            id,
            last_seen: self.now,
            expiry_timer: Some(timer),
            last_echo: None,
        };
        out.udp().by_peer.insert(self.key, record);
        Some(id)
    }
}

/// A hash of a datagram, to recognise it later without keeping it.
fn hash_of(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}
