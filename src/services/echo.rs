//! The echo service: every frame goes back to its sender unchanged, every datagram back
//! to its sender. With the reactor doing all the I/O, this is the whole protocol.

use std::net::SocketAddr;

use crate::{ConnId, Context, Frames, Service, UdpId};

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
    fn on_frames(&mut self, ctx: &mut Context<'_>, conn: ConnId, frames: Frames<'_>) {
        // Every frame goes back exactly as it came, so the whole run is copied to the
        // output at once instead of being re-encoded frame by frame. Fails only if the
        // connection is already closing: nothing to echo to then.
        let _ = ctx.forward(conn, &frames);
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
