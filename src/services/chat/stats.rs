//! The chat service's counters: members, rooms, messages in, deliveries out and
//! slow-consumer disconnects.
//!
//! The loop's own counters ([`crate::Stats`]) are plain integers read on the loop's
//! thread. These are relaxed atomics instead, behind a cloneable [`ChatStatsHandle`],
//! so that whoever built the service (a test, a monitor) can read them from another
//! thread while the loop runs. Fan-out adds to them once per event, not once per
//! recipient, so they cost nothing measurable.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A snapshot of the chat counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatStats {
    /// Members holding a name now (TCP and UDP).
    pub members: u64,
    /// Rooms with at least one member now.
    pub rooms: u64,
    /// Messages accepted: `say`, `dm` and legacy messages.
    pub messages_in: u64,
    /// `msg` and `dm` events handed to members (one per recipient).
    pub deliveries_out: u64,
    /// Members disconnected because their queued output passed the write limit.
    pub slow_consumers: u64,
}

impl fmt::Display for ChatStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} members, {} rooms, messages in {}, deliveries out {}, slow consumers cut off {}",
            self.members, self.rooms, self.messages_in, self.deliveries_out, self.slow_consumers
        )
    }
}

#[derive(Debug, Default)]
struct Counters {
    members: AtomicU64,
    rooms: AtomicU64,
    messages_in: AtomicU64,
    deliveries_out: AtomicU64,
    slow_consumers: AtomicU64,
}

/// Shared access to a chat service's counters.
///
/// ```
/// use switchboard::services::chat::ChatStatsHandle;
/// let handle = ChatStatsHandle::default();
/// assert_eq!(handle.get().messages_in, 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ChatStatsHandle(Arc<Counters>);

impl ChatStatsHandle {
    /// The counters now.
    pub fn get(&self) -> ChatStats {
        let c = &self.0;
        ChatStats {
            members: c.members.load(Ordering::Relaxed),
            rooms: c.rooms.load(Ordering::Relaxed),
            messages_in: c.messages_in.load(Ordering::Relaxed),
            deliveries_out: c.deliveries_out.load(Ordering::Relaxed),
            slow_consumers: c.slow_consumers.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_population(&self, members: usize, rooms: usize) {
        self.0.members.store(members as u64, Ordering::Relaxed);
        self.0.rooms.store(rooms as u64, Ordering::Relaxed);
    }

    pub(crate) fn message_in(&self) {
        self.0.messages_in.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn delivered(&self, count: u64) {
        self.0.deliveries_out.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn slow_consumers_cut(&self, count: u64) {
        self.0.slow_consumers.fetch_add(count, Ordering::Relaxed);
    }
}
