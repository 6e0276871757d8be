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
//! - [`reactor`]: the event loop: poll, dispatch, shutdown; the read and write paths
//!   (`reactor/read.rs`, `write.rs`), a connection's life cycle (`lifecycle.rs`),
//!   accepting, timers, and the [`Handle`] into the loop from other threads; [`Pool`]:
//!   N such loops on N threads sharing nothing (`reactor/pool.rs`, docs/scaling.md).
//! - `hub`: the loop's state that services act on: connections, timers, work lists.
//! - `connection`: one stream connection: socket, buffers, state; [`ConnId`].
//! - [`buffer`]: the byte buffer with read/write regions, and the buffer pool.
//! - `outqueue`: a connection's pending output, owned bytes and [`SharedFrame`]s.
//! - [`frame`]: framing codecs: [`LengthCodec`] (our wire format, or any length-prefixed
//!   one), lines, raw, and [`frame::AnyCodec`] to pick one per endpoint.
//! - [`protocol`]: the protocol layer: a codec that processes its units in place,
//!   answers the peer itself and hands the service decoded units ([`Unit`]), inside
//!   the reactor's buffers and limits (`reactor/protocol.rs` reads for it).
//! - [`service`]: the [`Service`] trait; `context`: the [`Context`] it acts through.
//! - `endpoint`: endpoints and their codecs, opening listeners, sockets and
//!   outbound connections ([`Dial`]).
//! - `udp`: UDP endpoints.
//! - `http`: the whole HTTP responses the admin endpoint and the chat page write.
//! - `throttle`: log lines a flood cannot multiply (one per interval, with a count).
//! - [`timer`]: the deadline queue behind every timer.
//! - `idle`: connections ordered by last activity, for the idle timeout.
//! - [`config`]: endpoints and limits, validated. [`stats`]: counters.
//! - [`metrics`]: the counters in the Prometheus text format, as the admin endpoint
//!   (`Config::admin`, `reactor/admin.rs`) serves them.
//! - `signals` (feature `signals`): graceful shutdown on SIGINT/SIGTERM.
//! - [`services`]: the services the binary runs (echo; chat, whose rooms span the loops
//!   of a pool, and with feature `redis` the servers of a cluster).
//!
//! A whole server:
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
mod udp;

pub use buffer::{Buffer, BufferPool, LazyBuffer};
pub use config::{Config, ConfigError, MAX_DATAGRAM};
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
pub use reactor::{
    Handle, Job, LoopInfo, Peers, Pool, PostError, Reactor, Running, Spread, Stopped,
};
pub use service::{Frames, Origin, Payloads, Service};
pub use stats::{CloseReason, Stats};
pub use timer::TimerId;
pub use udp::UdpId;
