//! The smallest custom protocol: every message comes back upper-cased, over TCP and UDP.
//! The tutorials' first server (`conn.send(msg.upper())`), as a switchboard service.
//!
//! It shows that a protocol is one `impl Service` with a callback or two, and that the
//! framing is chosen apart from it: the same service runs over switchboard's
//! length-prefixed frames, over newline-terminated lines, or over a raw byte stream
//! (its codec is an [`AnyCodec`], picked at run time).
//!
//! ```text
//! cargo run --example uppercase -- --framing raw            # TCP and UDP on 127.0.0.1:9100
//! python3 tcp_upper_client.py 127.0.0.1 9100                # prints LINHAIFENG NB
//! echo hello | python3 udp_upper_client.py 127.0.0.1 9100   # prints HELLO ('127.0.0.1', 9100)
//! cargo run --example uppercase -- --framing lines          # then: nc 127.0.0.1 9100
//! ```
//!
//! Every flag of `switchboard echo` works here too (`--tcp`, `--udp`, `--max-frame`,
//! `--trace`, ...); `--help` lists them.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use switchboard::cli::{serve, Framing, LogArgs, ServerArgs};
use switchboard::{AnyCodec, ConnId, Context, LengthCodec, LinesCodec, RawCodec, Service, UdpId};

/// Answers every message upper-cased.
#[derive(Debug, Parser)]
#[command(name = "uppercase")]
struct Args {
    /// Endpoints and limits (default port 9100).
    #[command(flatten)]
    server: ServerArgs,
    /// How TCP bytes are cut into messages.
    #[arg(long, value_enum, default_value_t = Framing::Length)]
    framing: Framing,
    /// Logging (--log-level, --trace).
    #[command(flatten)]
    log: LogArgs,
}

/// The protocol: one reply per message, the message upper-cased.
struct Uppercase {
    /// With raw framing a "message" is whatever one read returned, which may end in
    /// the middle of a multi-byte character: only ASCII can be upper-cased safely then.
    framing: Framing,
}

impl Service for Uppercase {
    type Conn = ();
    type Timer = ();
    type Codec = AnyCodec;

    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
        let reply = match self.framing {
            Framing::Raw => payload.to_ascii_uppercase(),
            Framing::Length | Framing::Lines => upper(payload),
        };
        // Fails when the connection is already closing (no one to answer then), or
        // when upper-casing made a message longer than the largest frame.
        if let Err(e) = ctx.send(conn, &reply) {
            log::debug!("{conn}: no reply: {e}");
        }
    }

    fn on_datagram(
        &mut self,
        ctx: &mut Context<'_, Self>,
        socket: UdpId,
        peer: SocketAddr,
        data: &[u8],
    ) {
        // A datagram is always whole. Upper-casing may lengthen it ("ß" -> "SS"); one
        // that no longer fits in a datagram is dropped, as UDP would drop it anyway.
        if let Err(e) = ctx.send_to(socket, peer, &upper(data)) {
            log::debug!("no reply to {peer}: {e}");
        }
    }
}

/// A whole message upper-cased as Python's `str.upper` does, or byte by byte (ASCII
/// only) when it is not UTF-8.
fn upper(message: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(message) {
        Ok(text) => text.to_uppercase().into_bytes(),
        Err(_) => message.to_ascii_uppercase(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    let config = match args.server.config(9100) {
        Ok(config) => config,
        Err(e) => return switchboard::cli::usage_error(&e),
    };
    let max = args.server.max_frame as usize;
    let service = Uppercase {
        framing: args.framing,
    };
    let codec = match args.framing {
        Framing::Length => AnyCodec::Length(LengthCodec::new(max)),
        Framing::Lines => AnyCodec::Lines(LinesCodec::new(max)),
        Framing::Raw => AnyCodec::Raw(RawCodec),
    };
    serve(config, service, codec)
}
