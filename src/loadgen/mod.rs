//! The load generator behind `switchboard bench`: one mio event loop driving many
//! client connections against an echo (or chat) server, checking every reply and
//! measuring throughput and latency.
//!
//! ```text
//!  probe ──> open sockets (paced, optional source IPs) ──> workload setup (chat: join)
//!        ──> warm-up (not counted) ──> measured window ──> drain in-flight ──> Summary
//! ```
//!
//! Every message carries its sequence number, and the rest of its payload is a slice of
//! a pseudo-random pattern chosen by connection and sequence, so a reply that is
//! corrupted, reordered, duplicated or meant for another connection is counted as an
//! error rather than as throughput. Buffers are sized once per connection; sending and
//! checking a message allocates nothing, because the generator shares two cores with
//! the server it measures.
//!
//! Module map:
//! - `options`: what to run ([`Options`], [`Mode`]) and its validation.
//! - `connect`: the reachability probe and opening the client sockets.
//! - `driver`: the event loop and the run's phases (warm-up, measure, drain).
//! - `pace`: when a message may be sent: closed loop, fixed rate, message budget.
//! - `wire`: per-connection input and output buffers, framing, the payload pattern.
//! - `stream`: the `framed` and `raw` TCP workloads.
//! - `udp`: the `udp` workload.
//! - `chat`: the `chat` workload (join a room, publish, measure deliveries).
//! - `report`: counters, the latency histogram, progress lines, the [`Summary`].
//! - `procstat`: the server's CPU time and memory, read from `/proc`.

mod chat;
mod connect;
mod driver;
mod options;
mod pace;
mod procstat;
mod report;
mod stream;
mod udp;
mod wire;

use std::fmt;
use std::io;
use std::net::SocketAddr;

pub use driver::run;
pub use options::{Mode, Options};
pub use report::{Latency, ServerUsage, Summary};

/// Why a run could not be carried out (as opposed to a run that found errors, which
/// returns a [`Summary`] whose [`Summary::failed`] is true).
#[derive(Debug)]
pub enum LoadError {
    /// The options cannot describe a run.
    Options(String),
    /// Nothing answers at the server's address.
    Unreachable {
        /// The address tried.
        addr: SocketAddr,
        /// What the operating system said (or a timeout).
        source: io::Error,
    },
    /// Not one connection could be opened.
    NoConnections {
        /// How many were attempted.
        attempted: usize,
        /// The first failure.
        source: io::Error,
    },
    /// The chat setup (hello, join) did not finish in time.
    Setup(String),
    /// The event loop itself failed.
    Io(io::Error),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Options(why) => write!(f, "invalid options: {why}"),
            LoadError::Unreachable { addr, source } => {
                write!(f, "cannot reach {addr}: {source} (is the server running?)")
            }
            LoadError::NoConnections { attempted, source } => {
                write!(
                    f,
                    "none of {attempted} connections could be opened: {source}"
                )
            }
            LoadError::Setup(why) => write!(f, "setup failed: {why}"),
            LoadError::Io(e) => write!(f, "event loop failure: {e}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Unreachable { source, .. } | LoadError::NoConnections { source, .. } => {
                Some(source)
            }
            LoadError::Io(e) => Some(e),
            LoadError::Options(_) | LoadError::Setup(_) => None,
        }
    }
}
