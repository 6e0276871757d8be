//! Chat across machines through Redis (feature `redis`): the chat engine's backplane
//! as one connection per node to Redis, with no socket of its own: the node says what
//! to write, when to dial and when to close, and the chat service (`service.rs`) does
//! it on a connection of the reactor like any other.
//!
//! Each chat node (one reactor loop) speaks RESP3 on that connection: after `HELLO 3`,
//! pub/sub messages arrive as push frames beside ordinary replies, so one connection
//! both subscribes to rooms and runs commands.
//!
//! ```text
//!   bytes from Redis --ReplyReader--> Reply --Link--+--> LinkEvent::Reply { tag, reply }
//!                                                   +--> LinkEvent::Message { channel, payload }
//!   Link::command / subscribe --resp::command--> bytes to Redis
//! ```
//!
//! - [`resp`]: RESP3 through `redis-protocol`: commands encoded, replies decoded into
//!   [`resp::Reply`], pushes classified.
//! - [`node`]: the engine's `Backplane` on the link: rooms as channels, names in a hash,
//!   DMs to the node holding the name, `list`, the login, and riding out a Redis
//!   restart.
//! - `names`: names unique across the cluster; `liveness`: a heartbeat per node, and
//!   the names of a dead node freed by the others; `list`: `list` across the cluster.
//! - `limits`: the bound on what waits for Redis, the deadline on its replies, and
//!   what the node says of the link (warnings, notices, `/healthz`, `/metrics`).
//! - [`link`]: the connection's life (down, connecting, up), the reconnect backoff, the
//!   subscriptions kept across reconnects, and which reply answers which command. Pure:
//!   time comes in as an `Instant`, bytes go out as `Vec<u8>`.
//! - [`url`]: `--redis`'s URL: host, port, user, password (never shown) and database.
//! - `tls`: `rediss://`, Redis over TLS: what a node trusts ([`RedisTls`]), and why a
//!   handshake failed, in words (without the `tls` feature, `tls_off.rs`: refused).

mod limits;
pub mod link;
mod list;
mod liveness;
mod names;
pub mod node;
pub mod resp;
#[cfg(feature = "tls")]
mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
mod tls;
pub mod url;

pub use tls::RedisTls;
