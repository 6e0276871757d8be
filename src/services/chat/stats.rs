//! The chat service's counters: members, rooms, messages in, deliveries out,
//! slow-consumer disconnects, and what the defences against hostile input held back
//! (joins over the room limit, and the UDP rules of `guard`).
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
    /// Messages accepted: `say`, `dm` and name/msg messages.
    pub messages_in: u64,
    /// `msg` and `dm` events handed to members (one per recipient).
    pub deliveries_out: u64,
    /// Members disconnected because their queued output passed the write limit.
    pub slow_consumers: u64,
    /// Joins refused because the member was in `--max-rooms` rooms already.
    pub room_limit_refusals: u64,
    /// Datagrams from UDP sources that hold no name left unanswered: not a request,
    /// or an answer over three times the datagram's size.
    pub udp_unanswered: u64,
    /// Answers not sent because their source was over `--udp-reply-rate`.
    pub udp_rate_limited: u64,
    /// New UDP peers not made members: over `--udp-join-rate`, or at
    /// `--max-udp-members`.
    pub udp_turned_away: u64,
    /// Datagrams dropped because they were the server's own output sent back.
    pub udp_reflections: u64,
    /// Events for another loop of the pool dropped because its inbox was full.
    pub cross_loop_dropped: u64,
}

impl ChatStats {
    /// Writes the counters as Prometheus metrics (`switchboard_chat_*`), for the admin
    /// endpoint's `GET /metrics`.
    pub fn write_metrics(&self, out: &mut String) {
        use crate::metrics::sample;
        let p = "switchboard_chat_";
        sample(
            out,
            &format!("{p}members"),
            "gauge",
            "Chat members holding a name now.",
            self.members,
        );
        sample(
            out,
            &format!("{p}rooms"),
            "gauge",
            "Chat rooms with at least one member now.",
            self.rooms,
        );
        let counters = [
            (
                "messages_in_total",
                "Chat messages accepted (say, dm, name/msg).",
                self.messages_in,
            ),
            (
                "deliveries_out_total",
                "Chat msg and dm events handed to members.",
                self.deliveries_out,
            ),
            (
                "slow_consumers_total",
                "Chat members cut off because their output passed the write limit.",
                self.slow_consumers,
            ),
            (
                "room_limit_refusals_total",
                "Chat joins refused at the room limit.",
                self.room_limit_refusals,
            ),
            (
                "udp_unanswered_total",
                "Datagrams from UDP non-members left unanswered.",
                self.udp_unanswered,
            ),
            (
                "udp_rate_limited_total",
                "UDP answers not sent over the reply rate.",
                self.udp_rate_limited,
            ),
            (
                "udp_turned_away_total",
                "New UDP peers not made members.",
                self.udp_turned_away,
            ),
            (
                "udp_reflections_total",
                "Datagrams dropped as the server's own output sent back.",
                self.udp_reflections,
            ),
            (
                "cross_loop_dropped_total",
                "Events for another loop dropped, its inbox full.",
                self.cross_loop_dropped,
            ),
        ];
        for (name, help, value) in counters {
            sample(out, &format!("{p}{name}"), "counter", help, value);
        }
    }
}

impl fmt::Display for ChatStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} members, {} rooms, messages in {}, deliveries out {}, slow consumers cut off {}",
            self.members, self.rooms, self.messages_in, self.deliveries_out, self.slow_consumers
        )?;
        // The defences' counts only when they acted, so a quiet run's line stays short.
        let defences = [
            (self.room_limit_refusals, "joins over the room limit"),
            (self.udp_unanswered, "UDP non-members unanswered"),
            (self.udp_rate_limited, "UDP answers over the reply rate"),
            (self.udp_turned_away, "UDP newcomers turned away"),
            (self.udp_reflections, "UDP reflections dropped"),
            (
                self.cross_loop_dropped,
                "events for other loops dropped, inbox full",
            ),
        ];
        for (count, what) in defences {
            if count > 0 {
                write!(f, ", {what} {count}")?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Counters {
    members: AtomicU64,
    rooms: AtomicU64,
    messages_in: AtomicU64,
    deliveries_out: AtomicU64,
    slow_consumers: AtomicU64,
    room_limit_refusals: AtomicU64,
    udp_unanswered: AtomicU64,
    udp_rate_limited: AtomicU64,
    udp_turned_away: AtomicU64,
    udp_reflections: AtomicU64,
    cross_loop_dropped: AtomicU64,
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
            room_limit_refusals: c.room_limit_refusals.load(Ordering::Relaxed),
            udp_unanswered: c.udp_unanswered.load(Ordering::Relaxed),
            udp_rate_limited: c.udp_rate_limited.load(Ordering::Relaxed),
            udp_turned_away: c.udp_turned_away.load(Ordering::Relaxed),
            udp_reflections: c.udp_reflections.load(Ordering::Relaxed),
            cross_loop_dropped: c.cross_loop_dropped.load(Ordering::Relaxed),
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

    pub(crate) fn count_room_limit(&self) {
        self.0.room_limit_refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_unanswered(&self) {
        self.0.udp_unanswered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_rate_limited(&self) {
        self.0.udp_rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_turned_away(&self) {
        self.0.udp_turned_away.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_cross_loop_dropped(&self) {
        self.0.cross_loop_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_reflection(&self) {
        self.0.udp_reflections.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_defences_only_when_they_acted() {
        let quiet = ChatStats::default().to_string();
        assert_eq!(
            quiet,
            "0 members, 0 rooms, messages in 0, deliveries out 0, slow consumers cut off 0"
        );
        let stats = ChatStats {
            udp_turned_away: 4980,
            room_limit_refusals: 1,
            ..ChatStats::default()
        };
        assert_eq!(
            stats.to_string(),
            "0 members, 0 rooms, messages in 0, deliveries out 0, slow consumers cut off 0, \
             joins over the room limit 1, UDP newcomers turned away 4980"
        );
    }
}
