//! # switchboard
//!
//! A single-threaded, readiness-based server. Like an operator at a telephone
//! switchboard, one thread serves thousands of lines: one `mio::Poll` (epoll on Linux,
//! kqueue on the BSDs and macOS) holds the listeners, the UDP sockets and every
//! connection, and nothing ever blocks.
//!
//! ```text
//!             +--------------------- Reactor (one thread) ----------------------+
//!  kernel     |  poll(timeout = next deadline)                                  |
//!  readiness ---> events --+-> listener  : accept until WouldBlock -> slab      |
//!  events     |            +-> connection: read -> Codec::decode -> on_frame -+ |
//!             |            |               write queued output <--------------+ |
//!             |            +-> udp socket: recv_from -> on_datagram -> send_to  |
//!             |  timers (idle, frame deadline, service) -> on_timer / close     |
//!             +----------------------------------------------------------------+
//!                                   |  Context: send / send_shared / close
//!                                   v
//!                           your Service (echo, chat, ...)
//! ```
//!
//! ## Module map
//! - [`reactor`]: the event loop: poll, dispatch, shutdown; its read path, accept and
//!   timer handling in `reactor/read.rs`, `accept.rs`, `timers.rs`.
//! - `hub`: the loop's state that services act on: connections, output flushing.
//! - `connection`: one stream connection: socket, buffers, life cycle; [`ConnId`].
//! - [`buffer`]: the byte buffer with read/write regions, and the buffer pool.
//! - `outqueue`: a connection's pending output, owned bytes and [`SharedFrame`]s.
//! - [`frame`]: framing codecs: [`LengthCodec`] (our wire format, or any length-prefixed
//!   one), lines, raw.
//! - [`service`]: the [`Service`] trait and the [`Context`] it acts through.
//! - `udp`: UDP endpoints.
//! - `endpoint`: opening listeners and sockets (socket2: SO_REUSEADDR, backlog).
//! - [`timer`]: the deadline queue behind frame deadlines and service timers.
//! - `idle`: connections ordered by last activity, for the idle timeout.
//! - [`config`]: endpoints and limits, validated. [`stats`]: counters.
//! - [`services`]: the services the binary runs.
//!
//! A whole server:
//!
//! ```no_run
//! use switchboard::{services::Echo, Config, LengthCodec, Reactor};
//!
//! let mut config = Config::default();
//! config.tcp.push("127.0.0.1:9000".parse().unwrap());
//! let reactor = Reactor::bind(config, Echo, LengthCodec::new(1 << 20)).unwrap();
//! reactor.run().unwrap();
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod buffer;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
mod connection;
mod endpoint;
mod error;
pub mod frame;
mod hub;
mod idle;
#[cfg(feature = "loadgen")]
pub mod loadgen;
mod outqueue;
pub mod reactor;
pub mod service;
pub mod services;
pub mod stats;
pub mod timer;
mod udp;

pub use buffer::{Buffer, BufferPool};
pub use config::{Config, ConfigError, MAX_DATAGRAM};
pub use connection::{ConnId, PeerAddr};
pub use endpoint::BoundAddr;
pub use error::Error;
pub use frame::{
    Codec, Decode, Endian, FrameError, LengthCodec, LengthCodecError, LinesCodec, RawCodec,
};
pub use outqueue::SharedFrame;
pub use reactor::{Handle, Reactor};
pub use service::{CloseMode, Context, Frames, SendError, Service};
pub use stats::{CloseReason, Stats};
pub use timer::TimerId;
pub use udp::UdpId;
