//! Stream members: TCP and Unix connections sending length-prefixed frames, and
//! WebSocket connections (their upgrade, then text messages). A connection's
//! [`Role`] holds its member id; each frame or text message is one typed request.

use super::{Address, Role};
use crate::protocol::websocket_kinds::{OPEN, TEXT};
use crate::services::chat::engine::protocol::{parse, Incoming, NameMsgForm};
use crate::services::chat::engine::{Engine, Form, Framing, Io, MemberId};
use crate::{ConnId, Unit};

/// A length-framed member's connection opened: a member from now on, nameless.
pub fn opened(engine: &mut Engine<Address>, conn: ConnId) -> Role {
    Role::Member(add(engine, conn, Framing::Length))
}

fn add(engine: &mut Engine<Address>, conn: ConnId, framing: Framing) -> MemberId {
    engine.add(Address::Stream { conn, framing }, Form::Typed, true)
}

/// One frame from a length-framed connection: one typed request.
pub fn frame(
    engine: &mut Engine<Address>,
    io: &mut Io<'_, Address>,
    role: &mut Role,
    bytes: &[u8],
) {
    if let Role::Member(id) = *role {
        if !request(engine, io, id, bytes) {
            *role = Role::Outside;
        }
    }
}

/// One unit from a WebSocket connection: the upgrade makes it a member; a text
/// message is one typed request.
pub fn websocket_unit(
    engine: &mut Engine<Address>,
    io: &mut Io<'_, Address>,
    conn: ConnId,
    role: &mut Role,
    unit: Unit<'_>,
) {
    match (unit.kind(), *role) {
        (OPEN, Role::WebSocket(None)) => {
            *role = Role::WebSocket(Some(add(engine, conn, Framing::WebSocket)))
        }
        (TEXT, Role::WebSocket(Some(id))) if !request(engine, io, id, unit.payload) => {
            *role = Role::WebSocket(None);
        }
        // After `bye`: nothing more is taken.
        _ => {}
    }
}

/// Carries out one request of member `id`. False if it is no longer a member (it
/// said `bye`: the connection closes without one).
fn request(
    engine: &mut Engine<Address>,
    io: &mut Io<'_, Address>,
    id: MemberId,
    bytes: &[u8],
) -> bool {
    match parse(bytes, NameMsgForm::Refused) {
        Ok(Incoming::Typed(request)) => engine.handle(io, id, request),
        // Not produced when the name/msg form is refused; answered like any bad input.
        Ok(Incoming::NameMsg(_)) => engine.refuse(io, id, "a typed request is expected"),
        Err(e) => engine.refuse(io, id, &e.to_string()),
    }
    engine.member(id).is_some()
}

/// A member's connection closed: it leaves the chat.
pub fn closed(
    engine: &mut Engine<Address>,
    io: &mut Io<'_, Address>,
    conn: ConnId,
    role: Role,
    reason: &dyn std::fmt::Display,
) {
    if let Role::Member(id) | Role::WebSocket(Some(id)) = role {
        log::debug!("chat: {conn} ({}) gone: {reason}", engine.name_of(id));
        engine.remove(io, id);
    }
}
