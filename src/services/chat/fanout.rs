//! Getting events to members: an event is encoded once ([`Encoded`]) and the same bytes
//! go to every recipient, whatever the transport, with the slow-consumer cut-off
//! applied on the way.
//!
//! ```text
//!   Event --serialize once--> json ----------------> UDP typed members (send_to)
//!                              |--frame once--> SharedFrame --> TCP members (Rc clone)
//!   (msg, dm only) --------> legacy {"name","msg"} --> UDP legacy members
//! ```
//!
//! A TCP member whose queued output passes the write limit and a quarter
//! ([`cut_off_at`]) after an event is queued has stopped keeping up: it is reset at
//! once, with a logged reason, rather than letting its queue grow without bound or
//! slowing the room down (the way Redis drops pub/sub clients over their output limit). Members that keep up are unaffected, and
//! still see every event of the room in order.
//!
//! Datagrams go out through the [`UdpGuard`], which holds back what must not answer a
//! UDP source (see `guard`).

use log::warn;

use super::guard::UdpGuard;
use super::protocol::{mark_as_history, to_json, Event, LegacyReply, SERVER_NAME};
use super::rooms::{Form, Link, Member};
use super::Chat;
use crate::{CloseMode, Context, SharedFrame};

/// One event, serialized for every kind of recipient.
#[derive(Debug)]
pub struct Encoded {
    /// The typed JSON: a TCP frame's payload, a typed UDP member's datagram.
    json: Vec<u8>,
    /// `json` framed for TCP once; `None` if the codec refused it (too large).
    frame: Option<SharedFrame>,
    /// The `{"name","msg"}` form for legacy members; `None` for events they never get.
    legacy: Option<Vec<u8>>,
    /// `json` as a WebSocket text frame, made for the first WebSocket member it goes
    /// to and shared by the rest.
    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    ws: std::cell::OnceCell<Option<SharedFrame>>,
}

impl Encoded {
    /// Encodes `event`, and its legacy form when `legacy` is given.
    pub fn new(
        ctx: &Context<'_, Chat>,
        event: &Event<'_>,
        legacy: Option<LegacyReply<'_>>,
    ) -> Self {
        let json = to_json(event);
        let frame = match ctx.shared_frame(&json) {
            Ok(frame) => Some(frame),
            Err(e) => {
                log::warn!("chat: an event cannot be framed for TCP members: {e}");
                None
            }
        };
        Encoded {
            json,
            frame,
            legacy: legacy.map(|reply| to_json(&reply)),
            ws: std::cell::OnceCell::new(),
        }
    }

    /// A copy of this `msg` event marked as history, for replay to a newcomer. The
    /// legacy form has no field for it and stays as it is.
    pub fn as_history(&self, ctx: &Context<'_, Chat>) -> Self {
        let json = mark_as_history(&self.json);
        let frame = ctx.shared_frame(&json).ok();
        Encoded {
            json,
            frame,
            legacy: self.legacy.clone(),
            ws: std::cell::OnceCell::new(),
        }
    }

    /// The event's bytes, to hand to another loop.
    pub(super) fn to_wire(&self) -> super::loops::Wire {
        super::loops::Wire {
            json: self.json.clone(),
            legacy: self.legacy.clone(),
        }
    }

    /// An event another loop serialized, framed for this loop's TCP members.
    pub(super) fn from_wire(ctx: &Context<'_, Chat>, wire: super::loops::Wire) -> Self {
        Encoded {
            frame: ctx.shared_frame(&wire.json).ok(),
            json: wire.json,
            legacy: wire.legacy,
            ws: std::cell::OnceCell::new(),
        }
    }

    /// The event as a WebSocket text frame for `conn`'s (unframed) endpoint.
    #[cfg(feature = "ws")]
    fn ws_frame(&self, ctx: &Context<'_, Chat>, conn: crate::ConnId) -> Option<&SharedFrame> {
        self.ws
            .get_or_init(|| {
                // Framed by the endpoint's codec: a text message.
                let endpoint = ctx.endpoint(conn)?;
                ctx.shared_frame_for(endpoint, &self.json).ok()
            })
            .as_ref()
    }

    /// The bytes legacy members are sent, if they are sent this event.
    pub fn legacy_bytes(&self) -> Option<&[u8]> {
        self.legacy.as_deref()
    }

    /// The typed JSON bytes.
    #[cfg(any(test, feature = "redis"))]
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    #[cfg(test)]
    pub fn for_test(json: &[u8]) -> Self {
        Encoded {
            json: json.to_vec(),
            frame: None,
            legacy: None,
            ws: std::cell::OnceCell::new(),
        }
    }
}

/// What [`deliver`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued or sent.
    Sent,
    /// Not for this member (a typed event for a legacy member), or it is going away.
    Skipped,
    /// Queued, and that put the member over the write limit: it is being disconnected.
    CutOff,
}

/// Sends one encoded event to one member: a shared frame for TCP, a datagram for UDP.
pub fn deliver(
    ctx: &mut Context<'_, Chat>,
    guard: &mut UdpGuard,
    member: &mut Member,
    event: &Encoded,
) -> Delivery {
    match &member.link {
        Link::Tcp(conn) | Link::Ws(conn) => {
            let conn = *conn;
            let frame = match &member.link {
                #[cfg(feature = "ws")]
                Link::Ws(_) => event.ws_frame(ctx, conn),
                _ => event.frame.as_ref(),
            };
            let Some(frame) = frame else {
                return Delivery::Skipped;
            };
            if member.cut_off || ctx.send_shared(conn, frame).is_err() {
                return Delivery::Skipped;
            }
            let queued = ctx.queued_output(conn).unwrap_or(0);
            let limit = cut_off_at(ctx.write_limit());
            if queued <= limit {
                return Delivery::Sent;
            }
            warn!(
                "chat: {conn} ({}) has {queued} bytes queued, over the slow-consumer \
                 limit of {limit} (the write limit and a quarter): disconnecting it",
                member.name.as_deref().unwrap_or("no name"),
            );
            member.cut_off = true;
            ctx.close(conn, CloseMode::Abort);
            Delivery::CutOff
        }
        Link::Udp(udp) => {
            let bytes = match udp.form {
                Form::Typed => &event.json,
                Form::Legacy => match &event.legacy {
                    Some(bytes) => bytes,
                    None => return Delivery::Skipped,
                },
            };
            // A datagram the socket cannot take now is queued or dropped by the
            // reactor, as UDP allows; either way the room moves on.
            match guard.send(ctx, udp.socket, udp.peer, bytes) {
                true => Delivery::Sent,
                false => Delivery::Skipped,
            }
        }
    }
}

/// The queued output past which a room event cuts a TCP member off: the write limit
/// and a quarter more. The reactor stops handing a member its own requests once their
/// answers put its output over the write limit, so the output of a member that
/// pipelines requests and reads later rests just above the write limit; were that the
/// cut-off, any room event would cut such a member off, though everything it asked
/// for would arrive once it read. The quarter is room traffic's share above it: a
/// member that reads nothing is still cut off once that fills.
pub fn cut_off_at(write_limit: usize) -> usize {
    write_limit.saturating_add(write_limit / 4)
}

/// Answers one member (welcome, error, rooms, pong...), copying the bytes into its
/// queue: nothing to share with a single recipient. Legacy members get only errors,
/// in their own form, so that a client waiting for one reply per message is answered.
pub fn reply(
    ctx: &mut Context<'_, Chat>,
    guard: &mut UdpGuard,
    member: &Member,
    event: &Event<'_>,
) {
    match &member.link {
        // Framed by the connection's codec: a length frame, or a WebSocket message.
        Link::Tcp(conn) | Link::Ws(conn) => {
            let json = to_json(event);
            if let Err(e) = ctx.send(*conn, &json) {
                log::debug!("chat: cannot answer {conn}: {e}");
            }
        }
        Link::Udp(udp) => match (udp.form, event) {
            (Form::Typed, _) => reply_to_peer(ctx, guard, udp.socket, udp.peer, event),
            (Form::Legacy, Event::Error { reason }) => {
                legacy_error(ctx, guard, udp.socket, udp.peer, reason)
            }
            (Form::Legacy, _) => {}
        },
    }
}

/// Answers a UDP peer, member or not, with a typed event.
pub fn reply_to_peer(
    ctx: &mut Context<'_, Chat>,
    guard: &mut UdpGuard,
    socket: crate::UdpId,
    peer: std::net::SocketAddr,
    event: &Event<'_>,
) {
    guard.send(ctx, socket, peer, &to_json(event));
}

/// Answers a UDP peer speaking the legacy form with an error, signed by the server.
pub fn legacy_error(
    ctx: &mut Context<'_, Chat>,
    guard: &mut UdpGuard,
    socket: crate::UdpId,
    peer: std::net::SocketAddr,
    reason: &str,
) {
    let msg = format!("error: {reason}");
    let json = to_json(&LegacyReply {
        name: SERVER_NAME,
        msg: &msg,
    });
    guard.send(ctx, socket, peer, &json);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_off_leaves_room_traffic_a_quarter_above_the_write_limit() {
        assert_eq!(cut_off_at(4 << 20), 5 << 20);
        assert_eq!(cut_off_at(64 * 1024), 80 * 1024);
        assert_eq!(cut_off_at(0), 0);
        assert_eq!(cut_off_at(usize::MAX), usize::MAX, "no overflow");
        // A member held at the write limit by its own answers, plus one more answer,
        // is not cut off by the next room event.
        let held = 64 * 1024 + 2 * 1024;
        assert!(held + 200 <= cut_off_at(64 * 1024));
    }
}
