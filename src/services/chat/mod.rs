//! The chat service: named members in rooms, over TCP, Unix sockets, UDP and
//! WebSocket, with direct messages, presence events, history, cheap fan-out, and rooms
//! that span the loops of a process or the nodes of a cluster. `switchboard chat` runs
//! it; `docs/chat.md` describes the protocol.
//!
//! It is built in layers, each of which knows only the one below:
//!
//! ```text
//!   reactor callbacks --> service.rs (the one file that uses Context)
//!                           |  endpoint -> transport
//!                           v
//!   transport/  stream (TCP, Unix, WebSocket) | udp (guard, expiry, both forms)
//!                           |  address -> member id, bytes -> Request
//!                           v
//!   engine/     Engine::handle(io, member, request): directory, rooms, names,
//!               history; no I/O --> io.out (deliver, send, close, gone)
//!                                \-> io.backplane (claim, publish, direct, list)
//!                           ^
//!   backplane/  loops (the loops of one process) | redis (the nodes of a cluster)
//!               what they hear comes back as engine::Remote events
//! ```
//!
//! - [`protocol`]: the JSON messages and the name rules (in `engine`).
//! - `engine`: the sans-I/O chat, unit-tested without sockets.
//! - `transport`: one adapter per kind of member address.
//! - `backplane`: one trait of the engine's (`engine::Backplane`), two
//!   implementations.
//! - `service`: [`Chat`], the [`crate::Service`] that wires them to the reactor.
//! - `codec`: how each endpoint is framed; `ws`: the WebSocket endpoint and the page;
//!   `stats`: the counters.
//!
//! ```no_run
//! use switchboard::services::chat::{Chat, ChatCodec, ChatSettings};
//! use switchboard::{Config, Reactor};
//! let mut config = Config::default();
//! config.tcp.push("127.0.0.1:9001".parse().unwrap());
//! config.udp.push("127.0.0.1:9001".parse().unwrap());
//! let chat = Chat::new(ChatSettings::default());
//! let codec = ChatCodec::length(1 << 20);
//! let stopped = Reactor::bind(config, chat, codec).unwrap().run().unwrap();
//! println!("chat served: {}", stopped.service.stats().get());
//! ```

mod backplane;
mod codec;
pub mod engine;
mod service;
mod stats;
mod transport;
#[cfg(feature = "ws")]
pub mod ws;

use std::time::Duration;

pub use backplane::loops::{ChatLoops, LoopRegistry};
#[cfg(feature = "redis")]
pub use backplane::redis;
pub use codec::{ChatCodec, ChatCodecState};
pub use engine::protocol;
pub use engine::MemberId;
pub use protocol::{parse, BadInput, Event, Incoming, NameMsg, NameMsgForm, Request};
pub use service::{Chat, ChatTimer};
pub use stats::{ChatStats, ChatStatsHandle};
pub use transport::Role;

/// The chat limits, from `switchboard chat`'s flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatSettings {
    /// Longest `text` accepted, in bytes.
    pub max_text: usize,
    /// Messages kept per room and replayed to a member who joins it.
    pub history: usize,
    /// A UDP member that sends nothing for this long leaves the chat.
    pub udp_expiry: Duration,
    /// Rooms with more members than this do not announce joins, leaves and renames
    /// to everyone (only to the member concerned): in a room of N, N joins would
    /// otherwise cost N²/2 deliveries.
    pub presence_limit: usize,
    /// Log the chat counters this often. `None`: only at shutdown.
    pub stats_interval: Option<Duration>,
    /// Join a cluster of chat servers through this Redis (feature `redis`).
    #[cfg(feature = "redis")]
    pub redis: Option<redis::node::RedisSettings>,
    /// The most rooms one member may be in at once: what one member can make the
    /// directory hold stays bounded.
    pub max_rooms: usize,
    /// Bytes a second that one UDP source may be sent in answer to its datagrams,
    /// with bursts of twice that; 0: no limit. Bounds what a forged source can
    /// reflect onto the address it names.
    pub udp_reply_rate: u64,
    /// How many UDP sources the reply rate keeps track of; past that, the oldest are
    /// forgotten (and start again with a full allowance).
    pub udp_reply_sources: usize,
    /// New UDP members admitted per second, with bursts of as many; 0: no limit. A
    /// flood of new source ports is otherwise a flood of lobby messages.
    pub udp_join_rate: u32,
    /// The most UDP members at once (each one is sent all its rooms' traffic).
    pub max_udp_members: usize,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            max_text: 4096,
            history: 20,
            udp_expiry: Duration::from_secs(300),
            presence_limit: 1000,
            stats_interval: None,
            #[cfg(feature = "redis")]
            redis: None,
            max_rooms: 100,
            udp_reply_rate: 64 * 1024,
            udp_reply_sources: 16 * 1024,
            udp_join_rate: 20,
            max_udp_members: 1000,
        }
    }
}
