//! Deadlines for the event loop: idle timeouts, frame deadlines, service timers.
//!
//! The loop never sleeps on a timer thread. It asks [`TimerQueue::next_deadline`] how
//! long it may block in `poll`, and after each wake-up pops whatever is due with
//! [`TimerQueue::pop_due`]. Time is always passed *in* (`now`), so every rule here is
//! tested without sleeping.
//!
//! Idle timeouts are lazy: a connection has one entry, armed for `last_activity +
//! timeout`. Activity only updates a timestamp in the connection (no timer work per
//! frame); when the entry comes due the reactor compares the timestamp and re-arms the
//! entry if the connection was active in the meantime. So each connection costs one
//! timer operation per timeout period at most, however busy it is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Names one scheduled entry, so it can be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId {
    /// When it is due.
    deadline: Instant,
    /// Tie-breaker that keeps entries with one deadline apart, in insertion order.
    seq: u64,
}

impl TimerId {
    /// When this timer is due.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// Entries ordered by deadline, each carrying a value of type `T`.
#[derive(Debug)]
pub struct TimerQueue<T> {
    entries: BTreeMap<TimerId, T>,
    next_seq: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue {
            entries: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

impl<T> TimerQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `value` for `deadline`.
    pub fn insert(&mut self, deadline: Instant, value: T) -> TimerId {
        let id = TimerId {
            deadline,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.entries.insert(id, value);
        id
    }

    /// Removes an entry; returns its value if it was still scheduled.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        self.entries.remove(&id)
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.keys().next().map(|id| id.deadline)
    }

    /// How long `poll` may block at `now`: until the earliest deadline (rounded up to
    /// whole milliseconds, so the loop does not wake a hair early and spin), or for ever.
    #[inline]
    pub fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.entries.is_empty() {
            return None;
        }
        self.next_deadline().map(|deadline| {
            let wait = deadline.saturating_duration_since(now);
            let millis = wait.as_nanos().div_ceil(1_000_000);
            Duration::from_millis(millis as u64)
        })
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerId, T)> {
        let first = self.entries.first_entry()?;
        if first.key().deadline <= now {
            Some(first.remove_entry())
        } else {
            None
        }
    }

    /// Number of scheduled entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.insert(t0 + Duration::from_secs(2), "b");
        q.insert(t0 + Duration::from_secs(1), "a");
        assert_eq!(q.pop_due(t0), None);
        assert_eq!(
            q.pop_due(t0 + Duration::from_secs(1)).map(|e| e.1),
            Some("a")
        );
        assert_eq!(q.pop_due(t0 + Duration::from_secs(1)), None);
        assert_eq!(
            q.pop_due(t0 + Duration::from_secs(5)).map(|e| e.1),
            Some("b")
        );
        assert!(q.is_empty());
    }

    #[test]
    fn equal_deadlines_keep_insertion_order() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.insert(t0, 1);
        q.insert(t0, 2);
        assert_eq!(q.pop_due(t0).map(|e| e.1), Some(1));
        assert_eq!(q.pop_due(t0).map(|e| e.1), Some(2));
    }

    #[test]
    fn cancelled_entries_never_fire() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let id = q.insert(t0, "x");
        assert_eq!(q.cancel(id), Some("x"));
        assert_eq!(q.cancel(id), None);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn poll_timeout_rounds_up_and_is_none_when_empty() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        assert_eq!(q.poll_timeout(t0), None);
        q.insert(t0 + Duration::from_micros(1500), ());
        assert_eq!(q.poll_timeout(t0), Some(Duration::from_millis(2)));
        assert_eq!(
            q.poll_timeout(t0 + Duration::from_secs(1)),
            Some(Duration::ZERO)
        );
    }
}
