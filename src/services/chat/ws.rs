//! WebSocket members (`switchboard chat --ws ADDR`, feature `ws`) and the chat page
//! served at `GET /`. The WebSocket protocol itself (the upgrade, frames, pings, the
//! close handshake, every limit) is the core's codec,
//! [`crate::protocol::websocket::WebSocketCodec`]: its bytes live in the reactor's
//! buffers, under the memory budget and the frame deadline. What is left here is the
//! chat's part: the upgrade makes a member, each text message is one chat request,
//! answered like a TCP member's, and events are sent as text messages (the endpoint's
//! codec frames them).

use super::codec::ChatCodec;
use super::protocol::{parse, Incoming, Legacy};
use super::rooms::Link;
use super::{Chat, Seat};
use crate::protocol::websocket::{WebSocketCodec, OPEN, TEXT};
use crate::{ConnId, Context, ListenAddr, Reactor, Unit};

/// The chat page served at `GET /`.
pub const PAGE: &str = include_str!("page.html");

/// Where the upgrade is asked for.
pub const UPGRADE_PATH: &str = "/ws";

/// Opens the WebSocket listener at `addr` on `reactor`, for messages up to
/// `max_message` bytes (text only: chat requests are JSON).
pub fn listen(
    reactor: &mut Reactor<Chat>,
    addr: std::net::SocketAddr,
    max_message: usize,
) -> Result<(), crate::Error> {
    let codec = WebSocketCodec::new(UPGRADE_PATH, max_message)
        .with_page(PAGE)
        .text_only();
    let endpoint = reactor.listen(ListenAddr::Tcp(addr), ChatCodec::WebSocket(codec))?;
    log::info!("chat: WebSocket members at ws://{addr}/ws, the chat page at http://{addr}/");
    reactor.service_mut().ws = Some(endpoint);
    Ok(())
}

impl Chat {
    /// One unit from a WebSocket connection: the upgrade (a member from now on), or a
    /// text message, which is one chat request.
    pub(super) fn ws_unit(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        conn: ConnId,
        seat: &mut Seat,
        unit: Unit<'_>,
    ) {
        match (unit.kind(), seat.member) {
            (OPEN, None) => seat.member = Some(self.directory.add(Link::Ws(conn))),
            (TEXT, Some(id)) => {
                match parse(unit.payload, Legacy::Refused) {
                    Ok(Incoming::Typed(request)) => self.handle(ctx, id, request),
                    Ok(Incoming::Legacy(_)) => self.refuse(ctx, id, "a typed request is expected"),
                    Err(e) => self.refuse(ctx, id, &e.to_string()),
                }
                if self.directory.member(id).is_none() {
                    seat.member = None; // it said `bye`
                }
            }
            // After `bye`: nothing more is taken.
            _ => {}
        }
        self.count_population();
    }
}
