//! The chat's transports: each maps its own addresses to the engine's member ids,
//! turns its bytes into requests, and nothing more.
//!
//! - [`stream`]: members over TCP, Unix sockets and WebSocket (through the core's
//!   WebSocket codec): a connection is a member for as long as it is open.
//! - [`udp`]: members over UDP, one per source address: the guard against forged
//!   sources ([`guard`], with the token buckets of `bucket`), the join rate and member
//!   limit, expiry, and both message forms.

mod bucket;
pub mod guard;
pub mod stream;
pub mod udp;

use std::net::SocketAddr;

use super::engine::{Framing, MemberId};
use crate::{ConnId, UdpId};

/// Where a member is reached: the engine's address type, read only here and in the
/// service's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    /// A stream connection: events are frames of its endpoint's codec.
    Stream {
        /// The connection.
        conn: ConnId,
        /// How its endpoint frames events.
        framing: Framing,
    },
    /// A UDP peer: events are datagrams.
    Datagram {
        /// The server socket it talks to.
        socket: UdpId,
        /// Its address.
        peer: SocketAddr,
    },
}

/// What one of the chat's connections is: the chat's per-connection state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A length-framed connection that is no member: after `bye` (nothing more is
    /// taken from it).
    #[default]
    Outside,
    /// A member's length-framed connection (TCP, Unix).
    Member(MemberId),
    /// A WebSocket connection: a member once its upgrade is done, until `bye`.
    WebSocket(Option<MemberId>),
    /// The node's link to the other nodes (Redis), not a member's.
    Backplane,
}
