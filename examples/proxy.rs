//! A TCP proxy: every client accepted on `--listen` gets a connection of its own to
//! `--upstream`, and bytes flow both ways untouched until either side is done.
//!
//! It shows outbound connections ([`Context::connect`]) living in the same reactor as
//! accepted ones, with the same buffers and limits; per-connection state that pairs
//! them (each side knows its peer's [`ConnId`], so the service keeps no table of
//! connections); and flow control across a pair:
//!
//! - Backpressure: when one side's queued output passes the write limit, the proxy
//!   stops reading the other side, whose bytes then wait in the kernel (TCP slows that
//!   sender down); it reads again once the congested side has drained
//!   ([`Service::on_drained`]). The congested side itself is still read
//!   ([`Context::keep_reading_when_congested`]): its replies must keep flowing, or an
//!   upstream that answers before it reads more would never drain its queue. A client
//!   that sends without reading has at most about a write limit queued on each side
//!   of its pair, however much it sends.
//! - Half-close: a client that shuts its sending side (`shutdown(SHUT_WR)`, "that was
//!   my last request") has that passed on to the upstream as a FIN, and still gets
//!   every reply until the upstream closes; then the client is closed once everything
//!   owed to it is written. The same holds the other way round.
//! - What a client sends before the upstream is connected waits in the reactor's queue
//!   for the upstream connection and is written as soon as it is up. A client whose
//!   upstream cannot be reached is closed.
//!
//! Bytes are relayed with [`RawCodec`] on both sides: the proxy never looks for frames.
//!
//! ```text
//! cargo run --release -- echo --framing raw --tcp 127.0.0.1:9000 --udp off   # an upstream
//! cargo run --release --example proxy -- --listen 127.0.0.1:9400 --upstream 127.0.0.1:9000
//! nc 127.0.0.1 9400            # each line typed comes back from the echo server
//! ```
//!
//! Flags: `--listen ADDR` (default 127.0.0.1:9400), `--upstream ADDR` (required),
//! `--write-limit BYTES` (per connection, default 4 MiB), `--idle-timeout SECS` (each
//! side, 0 = never, default 300), `--log-level LEVEL` and `--trace`. SIGINT or SIGTERM
//! stops it gracefully.

use std::fmt;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchboard::cli::{serve, LogArgs};
use switchboard::{
    CloseMode, CloseReason, Config, ConnId, Context, Dial, Frames, Origin, RawCodec, Service,
};

/// Relays TCP connections to an upstream server.
#[derive(Debug, Parser)]
#[command(name = "proxy")]
struct Args {
    /// TCP address to accept clients on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9400")]
    listen: SocketAddr,
    /// The server every client is relayed to.
    #[arg(long, value_name = "ADDR")]
    upstream: SocketAddr,
    /// Output queued for one side above which the proxy stops reading the other side.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    write_limit: u64,
    /// Close a side (and so its pair) after this long without traffic; 0 = never.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    idle_timeout: u64,
    /// Logging (--log-level, --trace).
    #[command(flatten)]
    log: LogArgs,
}

/// The proxy: where clients are relayed to. Everything else lives with the connections.
struct Proxy {
    upstream: SocketAddr,
}

/// What the proxy keeps for one connection: which side of a pair it is, and how much
/// it has relayed (for the log line when it closes).
#[derive(Debug, Default)]
struct Leg {
    side: Side,
    /// Bytes read from this connection and passed on to its peer.
    relayed: u64,
}

/// Which side of a pair a connection is, and its peer.
#[derive(Debug, Default, Clone, Copy)]
enum Side {
    /// Just accepted: its upstream is dialled in `on_connect` (or could not be).
    #[default]
    Unpaired,
    /// A client, relayed to this upstream connection.
    Client { upstream: ConnId },
    /// The upstream connection made for this client.
    Upstream { client: ConnId },
}

impl Leg {
    /// The other connection of the pair, once there is one.
    fn peer(&self) -> Option<ConnId> {
        match self.side {
            Side::Unpaired => None,
            Side::Client { upstream } => Some(upstream),
            Side::Upstream { client } => Some(client),
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Side::Unpaired => f.write_str("client (unpaired)"),
            Side::Client { upstream } => write!(f, "client (upstream {upstream})"),
            Side::Upstream { client } => write!(f, "upstream (client {client})"),
        }
    }
}

impl Service for Proxy {
    type Conn = Leg;
    type Timer = ();
    type Codec = RawCodec;

    fn on_connect(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        leg: &mut Leg,
        origin: Origin,
    ) {
        if origin.is_dialled() {
            log::debug!("{conn}: connected to {}, {}", self.upstream, leg.side);
            return;
        }
        // The upstream's state names this client; the client learns the upstream's id
        // at once, though the connect completes later. Until then, what the client
        // sends is queued for the upstream connection.
        let upstream = Leg {
            side: Side::Upstream { client: conn },
            relayed: 0,
        };
        match ctx.connect(Dial::tcp(self.upstream), upstream) {
            Ok(upstream) => {
                // Each side's output comes from the other, so the reactor must not stop
                // reading a side whose own queue is full (its replies would stop too):
                // the proxy paces the feeding side itself.
                ctx.keep_reading_when_congested(conn);
                ctx.keep_reading_when_congested(upstream);
                leg.side = Side::Client { upstream };
                log::debug!(
                    "{conn}: client accepted, dialling {} as {upstream}",
                    self.upstream
                );
            }
            Err(e) => {
                log::warn!(
                    "{conn}: cannot dial {}: {e}; closing the client",
                    self.upstream
                );
                ctx.close(conn, CloseMode::Now);
            }
        }
    }

    fn on_frames(
        &mut self,
        ctx: &mut Context<'_, Self>,
        from: ConnId,
        leg: &mut Leg,
        frames: Frames<'_, RawCodec>,
    ) {
        let Some(to) = leg.peer() else {
            return;
        };
        leg.relayed += frames.wire().len() as u64;
        // Raw bytes on both sides: what arrived goes out as it is, no copy when the
        // peer's queue is empty.
        if let Err(e) = ctx.forward(to, &frames) {
            log::debug!("{from}: cannot relay to {to}: {e}; closing the pair");
            close_pair(ctx, from, to);
            return;
        }
        let queued = ctx.queued_output(to).unwrap_or(0);
        if queued > ctx.write_limit() {
            // The peer cannot keep up: stop reading this side until it drains.
            log::debug!("{from}: paused: {queued} bytes queued for {to}");
            ctx.pause_reading(from);
        }
    }

    fn on_drained(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, leg: &mut Leg) {
        if let Some(peer) = leg.peer() {
            log::debug!("{peer}: resumed: {conn} has drained");
            ctx.resume_reading(peer);
        }
    }

    fn on_peer_closed(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, leg: &mut Leg) {
        match leg.peer() {
            // Pass the half-close on, and keep relaying the other way: the peer sees a
            // FIN once what this side sent has been written to it. When the peer
            // closes too, its `on_close` closes this side.
            Some(peer) => {
                log::debug!("{conn}: {} half-closed; shutting {peer}'s side", leg.side);
                ctx.shutdown_write(peer);
            }
            None => ctx.close(conn, CloseMode::Flush),
        }
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        leg: Leg,
        reason: CloseReason,
    ) {
        match (leg.side, reason) {
            (
                Side::Upstream { client },
                CloseReason::ConnectFailed(_) | CloseReason::ConnectTimeout,
            ) => {
                log::warn!(
                    "{client}: cannot reach {}: {reason}; closing the client",
                    self.upstream
                );
                ctx.close(client, CloseMode::Flush);
            }
            (side, _) => {
                log::debug!(
                    "{conn}: {side} closed ({reason}) after relaying {} bytes",
                    leg.relayed
                );
                // Whatever is still queued for the peer is written before it closes
                // (nothing, if it has already closed).
                if let Some(peer) = leg.peer() {
                    ctx.close(peer, CloseMode::Flush);
                }
            }
        }
    }
}

/// Closes both sides of a pair, each once its queued output is written.
fn close_pair(ctx: &mut Context<'_, Proxy>, a: ConnId, b: ConnId) {
    ctx.close(a, CloseMode::Flush);
    ctx.close(b, CloseMode::Flush);
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    let config = Config {
        tcp: vec![args.listen],
        idle_timeout: (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout)),
        // Raw bytes have no frames that could be left unfinished.
        frame_timeout: None,
        write_limit: args.write_limit as usize,
        ..Config::default()
    };
    let proxy = Proxy {
        upstream: args.upstream,
    };
    serve(config, proxy, RawCodec)
}
