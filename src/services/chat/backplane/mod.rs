//! The engine's [`Backplane`](super::engine::Backplane), twice over: rooms, names,
//! direct messages and `list` across
//!
//! - [`loops`]: the loops of one process (`switchboard chat --threads N`), through
//!   their inboxes and a shared registry;
//! - [`redis`]: the nodes of a cluster (`switchboard chat --redis URL`), through one
//!   connection to Redis per node (feature `redis`).
//!
//! Each takes what the engine tells it and queues what it hears from elsewhere as
//! [`Remote`](super::engine::Remote) events; neither touches the reactor.

pub mod loops;
#[cfg(feature = "redis")]
pub mod redis;

use super::engine::{Alone, Backplane};
use super::{Chat, ChatLoops, ChatSettings, ChatStatsHandle};
use crate::LoopInfo;

/// The backplane of one loop: Redis when the settings name a cluster (each loop is a
/// node of its own, so its rooms reach the other loops through Redis too), the other
/// loops of the pool when there are any, or none.
pub fn for_loop(
    settings: &ChatSettings,
    info: Option<LoopInfo<Chat>>,
    shared: &ChatLoops,
    stats: &ChatStatsHandle,
) -> Box<dyn Backplane> {
    #[cfg(feature = "redis")]
    if let (Some(cluster), Some(info)) = (&settings.redis, &info) {
        return Box::new(redis::node::Node::new(cluster.clone(), info.index));
    }
    #[cfg(not(feature = "redis"))]
    let _ = settings;
    match info.filter(|info| info.count > 1) {
        Some(info) => Box::new(loops::LoopLink::new(
            info.index,
            info.peers,
            shared.clone(),
            stats.clone(),
        )),
        None => Box::new(Alone),
    }
}
