//! The echo service: every frame goes back to its sender unchanged, every datagram back
//! to its sender. With the reactor doing all the I/O, this is the whole protocol.

use std::net::SocketAddr;

use crate::{ConnId, Context, Service, UdpId};

/// Echoes frames and datagrams.
///
/// ```no_run
/// use switchboard::{services::Echo, Config, LengthCodec, Reactor};
/// let mut config = Config::default();
/// config.tcp.push("127.0.0.1:9000".parse().unwrap());
/// Reactor::bind(config, Echo, LengthCodec::new(1 << 20)).unwrap().run().unwrap();
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Service for Echo {
    fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, payload: &[u8]) {
        // Fails only if the connection is already closing: nothing to echo to then.
        let _ = ctx.send(conn, payload);
    }

    fn on_datagram(
        &mut self,
        ctx: &mut Context<'_>,
        socket: UdpId,
        peer: SocketAddr,
        datagram: &[u8],
    ) {
        let _ = ctx.send_to(socket, peer, datagram);
    }
}
