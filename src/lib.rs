//! # switchboard
//!
//! A single-threaded, readiness-based server. Like an operator at a telephone
//! switchboard, one thread serves thousands of lines: one `mio::Poll` (epoll on Linux,
//! kqueue on the BSDs and macOS) holds the listeners, the UDP sockets and every
//! connection, and nothing ever blocks.
//!
//! ```text
//!             +--------------------- Reactor (one thread) -----------------------+
//!  kernel     |  poll(timeout = next deadline)        turn(now): time comes in   |
//!  readiness ---> events --+-> listener  : accept until WouldBlock -> slab slot  |
//!  events     |            +-> dialled   : connect done? -> on_connect           |
//!             |            +-> connection: read -> codec.decode -> on_frames --+ |
//!             |            |               write queued output <---------------+ |
//!             |            +-> udp socket: recv_from -> on_datagram -> send_to   |
//!             |            +-> waker     : jobs posted by other threads (Handle) |
//!             |  timers (idle, frame deadline, connect, service) -> on_timer     |
//!             +-----------------------------------------------------------------+
//!                 slab slot = connection + codec state + the service's state
//!                                   |  Context: send / connect / close / timers
//!                                   v
//!                           your Service (echo, chat, a proxy, a client ...)
//! ```
//!
//! Connections both ways are the same kind of thing: accepted on a listener or
//! dialled with [`Context::connect`], each gets the same buffers, codec, backpressure,
//! timeouts and counters, and the service's own state beside it in the slab.
//!
//! ## Module map
//! The public modules, each with its page:
//! - [`reactor`]: the event loop: poll, dispatch, shutdown; the read and write paths,
//!   a connection's life cycle, accepting, timers, and the [`Handle`] into the loop
//!   from other threads; [`Pool`]: N such loops on N threads sharing nothing.
//! - [`service`]: the [`Service`] trait, and what its callbacks are handed ([`Frames`],
//!   [`Origin`]); they act through a [`Context`].
//! - [`config`]: endpoints and limits, validated ([`Config`]).
//! - [`frame`]: framing codecs: [`LengthCodec`] (our wire format, or any
//!   length-prefixed one), [`LinesCodec`], [`RawCodec`], and [`AnyCodec`] to pick one
//!   per endpoint.
//! - [`protocol`]: the protocol layer: a codec that processes its units in place,
//!   answers the peer itself and hands the service decoded units ([`Unit`]), inside
//!   the reactor's buffers and limits.
//! - [`buffer`]: the byte buffer with read/write regions, and the buffer pool.
//! - [`timer`]: the deadline queue behind every timer.
//! - [`tls`]: TLS as a layer between a connection's socket and its codec (feature
//!   `tls`: certificates and keys for listeners, trust for dials; without it, the
//!   module is empty).
//! - [`stats`]: the counters; [`metrics`]: the same counters in the Prometheus text
//!   format, as the admin endpoint (`Config::admin`) serves them.
//! - [`services`]: the services the binary runs: echo, and the chat in layers (a
//!   sans-I/O engine; stream and UDP transports; the loops of a pool or, with feature
//!   `redis`, the servers of a cluster as its backplane; one file that wires them to
//!   the reactor).
//! - `cli` (feature `cli`): the command line of the `switchboard` binary.
//! - `loadgen` (feature `loadgen`): the load generator behind `switchboard bench`.
//!
//! Inside the crate, private (read them in the source; their public types are
//! re-exported at the top):
//! - src/connection.rs: one stream connection: socket, buffers, state; its [`ConnId`].
//! - src/context.rs: the [`Context`] a service acts through.
//! - src/hub.rs: the loop's state that services act on: connections, timers, work
//!   lists.
//! - src/outqueue.rs: a connection's pending output, owned bytes and [`SharedFrame`]s.
//! - src/endpoint.rs: endpoints and their codecs, opening listeners, sockets and
//!   outbound connections ([`Dial`]).
//! - src/udp.rs: UDP endpoints.
//! - src/http.rs: the whole HTTP responses the admin endpoint and the chat page write.
//! - src/throttle.rs: log lines a flood cannot multiply (one per interval, with a
//!   count).
//! - src/idle.rs: connections ordered by last activity, for the idle timeout.
//! - src/signals.rs (feature `signals`): graceful shutdown on SIGINT/SIGTERM.
//! - src/reactor/: read.rs and write.rs (the paths), lifecycle.rs (a connection's life
//!   cycle), protocol.rs (reading for the protocol layer), admin.rs (the admin
//!   endpoint), pool.rs (N loops).
//!
//! ## Features
//!
//! | feature | what it adds | dependencies |
//! |---|---|---|
//! | *(none)* | the core: reactor, pool, codecs, protocol layer, buffers, timers, echo, metrics text | mio, slab, socket2, log |
//! | `default` | = `cli` | |
//! | `chat` | the chat service (`services::chat`): JSON messages, rooms; line editing for `examples/chat_client.rs` | serde, serde_json, rustyline |
//! | `redis` | chat across machines through Redis: the RESP3 codec and the link a node keeps to Redis | `chat`, redis-protocol |
//! | `websocket` | the WebSocket protocol codec (`protocol::websocket`), sans-I/O | httparse, tungstenite (frame pieces only) |
//! | `ws` | WebSocket chat members and the chat page | `chat`, `websocket` |
//! | `admin` | the admin endpoint (`Config::admin`): `GET /metrics`, `GET /healthz` | httparse |
//! | `signals` | graceful shutdown on SIGINT/SIGTERM (`Reactor::stop_on_signals`) | signal-hook, signal-hook-mio |
//! | `loadgen` | the load generator: latency histograms, JSON summaries | hdrhistogram, serde, serde_json, nix (Linux) |
//! | `tls` | TLS as a layer between socket and codec on any stream endpoint or dial ([`tls`]; `Config::tls_tcp`, `Reactor::serve_tls`, `Dial::tls`, `Context::tls`) | rustls (ring provider), rustls-native-certs |
//! | `cli` | the `switchboard` binary: flags, logging, inherited listeners | `chat`, `redis`, `ws`, `admin`, `loadgen`, `signals`, `tls`, clap, simple_logger, rlimit, listenfd |
//! | `tokio-peer` | only builds `examples/tokio_peer.rs`, the comparison peer | tokio, tokio-util, futures-util, bytes, rlimit |
//!
//! ## A service of your own
//!
//! A service says what happens on each event; the reactor owns the sockets. This one
//! answers every line in upper case; the client below talks to it and then stops the
//! loop through its [`Handle`]:
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::net::TcpStream;
//! use switchboard::{BoundAddr, Config, ConnId, Context, LinesCodec, Reactor, Service};
//!
//! struct Upper;
//!
//! impl Service for Upper {
//!     type Conn = ();
//!     type Timer = ();
//!     type Codec = LinesCodec;
//!
//!     fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), line: &[u8]) {
//!         let _ = ctx.send(conn, &line.to_ascii_uppercase());
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = Config::default();
//! config.tcp.push("127.0.0.1:0".parse()?); // port 0: the kernel picks a free one
//! let reactor = Reactor::bind(config, Upper, LinesCodec::new(1024))?;
//! let Some(&BoundAddr::Tcp(addr)) = reactor.endpoints().first() else {
//!     return Err("no TCP listener".into());
//! };
//!
//! let handle = reactor.handle();
//! let client = std::thread::spawn(move || -> std::io::Result<String> {
//!     let mut stream = TcpStream::connect(addr)?;
//!     stream.write_all(b"hello\n")?;
//!     let mut answer = String::new();
//!     BufReader::new(stream).read_line(&mut answer)?;
//!     handle.shutdown();
//!     Ok(answer)
//! });
//!
//! let stopped = reactor.run()?; // until the client's shutdown
//! assert_eq!(client.join().expect("client thread")?, "HELLO\n");
//! println!("{}", stopped.stats);
//! # Ok(())
//! # }
//! ```
//!
//! The built-in echo service, the same way:
//!
//! ```no_run
//! use switchboard::{services::Echo, Config, LengthCodec, Reactor};
//!
//! let mut config = Config::default();
//! config.tcp.push("127.0.0.1:9000".parse().unwrap());
//! let reactor = Reactor::bind(config, Echo::default(), LengthCodec::new(1 << 20)).unwrap();
//! let stopped = reactor.run().unwrap();
//! println!("{}", stopped.stats);
//! ```
//!
//! ## Guides
//!
//! Beside the code, in the repository's `docs/` (rustdoc cannot link outside the
//! crate, so they are named here):
//! - docs/readiness.md: from a blocking loop to a reactor, step by step.
//! - docs/architecture.md: the event flow, the read and write paths, shutdown.
//! - docs/extending.md: writing a protocol on switchboard (codec, service, protocol
//!   layer).
//! - docs/protocol.md: the wire formats (frames, datagrams, chat messages).
//! - docs/chat.md: the chat service, its rooms and clients.
//! - docs/scaling.md: N loops, and chat across machines through Redis.
//! - docs/operations.md: running under a service manager, the admin endpoint and its
//!   metrics.
//! - docs/reliability.md: serving well-behaved clients while others misbehave.
//! - docs/benchmarks.md: measured figures, with the commands that produced them.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod buffer;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
mod connection;
mod context;
mod endpoint;
mod error;
pub mod frame;
mod http;
mod hub;
mod idle;
#[cfg(feature = "loadgen")]
pub mod loadgen;
pub mod metrics;
mod outqueue;
pub mod protocol;
pub mod reactor;
pub mod service;
pub mod services;
#[cfg(feature = "signals")]
mod signals;
pub mod stats;
mod throttle;
pub mod timer;
pub mod tls;
mod udp;

pub use buffer::{Buffer, BufferPool, LazyBuffer};
#[doc(inline)]
pub use config::Config;
pub use config::{ConfigError, MAX_DATAGRAM};
pub use connection::{ConnId, PeerAddr};
pub use context::{CloseMode, Context, SendError};
pub use endpoint::{BoundAddr, Dial, DialError, EndpointId, EndpointKind, ListenAddr, Target};
pub use error::Error;
pub use frame::{
    AnyCodec, Codec, Decode, Endian, FrameError, LengthCodec, LengthCodecError, LinesCodec,
    RawCodec,
};
pub use outqueue::SharedFrame;
pub use protocol::{ProtocolIo, Unit};
#[doc(inline)]
pub use reactor::{Handle, Pool, Reactor};
pub use reactor::{Job, LoopInfo, Peers, PostError, Running, Spread, Stopped};
#[doc(inline)]
pub use service::Service;
pub use service::{Frames, Origin, Payloads};
pub use stats::{CloseReason, Stats};
pub use timer::TimerId;
pub use udp::UdpId;
