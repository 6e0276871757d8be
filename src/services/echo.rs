//! The echo service: every frame goes back to its sender unchanged, every datagram back
//! to its sender. With the reactor doing all the I/O, this is the whole protocol.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;

use crate::{Codec, ConnId, Context, Frames, LengthCodec, Service, UdpId};

/// Echoes frames and datagrams, framed by any codec `C` (switchboard's length framing
/// by default; the binary's `--framing` picks lines or raw bytes instead).
///
/// ```no_run
/// use switchboard::{services::Echo, Config, LengthCodec, Reactor};
/// let mut config = Config::default();
/// config.tcp.push("127.0.0.1:9000".parse().unwrap());
/// let echo = Echo::default();
/// Reactor::bind(config, echo, LengthCodec::new(1 << 20)).unwrap().run().unwrap();
/// ```
pub struct Echo<C = LengthCodec> {
    /// Echo keeps no state; the type only says which codec frames its connections.
    codec: PhantomData<fn() -> C>,
}

impl<C> Default for Echo<C> {
    fn default() -> Self {
        Echo { codec: PhantomData }
    }
}

impl<C> Clone for Echo<C> {
    fn clone(&self) -> Self {
        Echo::default()
    }
}

impl<C> fmt::Debug for Echo<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Echo")
    }
}

impl<C: Codec> Service for Echo<C> {
    type Conn = ();
    type Timer = ();
    type Codec = C;

    fn on_frames(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        _: &mut (),
        frames: Frames<'_, C>,
    ) {
        // Every frame goes back exactly as it came, so the whole run is copied to the
        // output at once instead of being re-encoded frame by frame. Fails only if the
        // connection is already closing: nothing to echo to then.
        let _ = ctx.forward(conn, &frames);
    }

    fn on_datagram(
        &mut self,
        ctx: &mut Context<'_, Self>,
        socket: UdpId,
        peer: SocketAddr,
        datagram: &[u8],
    ) {
        let _ = ctx.send_to(socket, peer, datagram);
    }
}
