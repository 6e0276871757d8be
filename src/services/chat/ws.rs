//! WebSocket members (`switchboard chat --ws ADDR`, feature `ws`) and the chat page
//! served at `GET /`. The WebSocket protocol itself (the upgrade, frames, pings, the
//! close handshake, every limit) is the core's codec,
//! [`crate::protocol::websocket::WebSocketCodec`]: its bytes live in the reactor's
//! buffers, under the memory budget and the frame deadline. What is left here is the
//! chat's part: the upgrade makes a member, each text message is one chat request,
//! answered like a TCP member's, and events are sent as text messages (the endpoint's
//! codec frames them).

use super::codec::ChatCodec;
use super::Chat;
use crate::protocol::websocket::WebSocketCodec;
use crate::{ListenAddr, Reactor};

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
) -> Result<crate::EndpointId, crate::Error> {
    let endpoint = open(reactor, addr, max_message)?;
    log::info!("chat: WebSocket members at ws://{addr}/ws, the chat page at http://{addr}/");
    Ok(endpoint)
}

/// [`listen`] over TLS: members at `wss://ADDR/ws`, the page at `https://ADDR/`.
#[cfg(feature = "tls")]
pub fn listen_tls(
    reactor: &mut Reactor<Chat>,
    addr: std::net::SocketAddr,
    max_message: usize,
    tls: crate::tls::TlsServer,
) -> Result<crate::EndpointId, crate::Error> {
    let endpoint = open(reactor, addr, max_message)?;
    reactor.serve_tls(endpoint, tls);
    log::info!("chat: WebSocket members at wss://{addr}/ws, the chat page at https://{addr}/");
    Ok(endpoint)
}

fn open(
    reactor: &mut Reactor<Chat>,
    addr: std::net::SocketAddr,
    max_message: usize,
) -> Result<crate::EndpointId, crate::Error> {
    let codec = WebSocketCodec::new(UPGRADE_PATH, max_message)
        .with_page(PAGE)
        .text_only();
    let endpoint = reactor.listen(ListenAddr::Tcp(addr), ChatCodec::WebSocket(codec))?;
    reactor.service_mut().websocket = Some(endpoint);
    Ok(endpoint)
}
