//! Deadlines for the event loop: frame deadlines, connect timeouts, lingering windows,
//! service timers (one-shot and repeating).
//!
//! The loop never sleeps on a timer thread. It asks [`TimerQueue::poll_timeout`] how
//! long it may block in `poll`, and after each wake-up pops whatever is due with
//! [`TimerQueue::pop_due`]. Time is always passed *in* (`now`), so every rule here is
//! tested without sleeping.
//!
//! A repeating timer is re-armed under the same [`TimerId`] ([`TimerQueue::rearm`]) for
//! its previous deadline plus the interval, not for "now plus the interval", so it does
//! not drift however late the loop gets to it.
//!
//! Idle timeouts are not here: the reactor keeps connections in a list ordered by
//! activity (`idle.rs`), which needs one deadline for all of them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The longest delay a timer takes: longer ones (up to `Duration::MAX`) wait this
/// long, which is as good as never. Delays often come from the wire (a client's
/// `EXPIRE`, a member's chosen timeout), and `Instant + Duration` panics when the sum
/// cannot be represented, so no deadline is computed without [`deadline_after`].
pub const MAX_DELAY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// When a timer of `delay` set at `now` is due: `now + delay`, with `delay` capped at
/// [`MAX_DELAY`], so it never panics however large `delay` is.
///
/// ```
/// use std::time::{Duration, Instant};
/// use switchboard::timer::{deadline_after, MAX_DELAY};
/// let now = Instant::now();
/// assert_eq!(deadline_after(now, Duration::from_secs(5)), now + Duration::from_secs(5));
/// assert_eq!(deadline_after(now, Duration::MAX), now + MAX_DELAY);
/// ```
pub fn deadline_after(now: Instant, delay: Duration) -> Instant {
    let mut delay = delay.min(MAX_DELAY);
    // An `Instant` near the end of its platform's range could overflow even with the
    // capped delay: then the furthest deadline that fits (halving ends at zero).
    loop {
        if let Some(deadline) = now.checked_add(delay) {
            return deadline;
        }
        delay /= 2;
    }
}

/// Names one scheduled timer, so it can be cancelled; a repeating timer keeps its id
/// for every round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId {
    /// When it was first due.
    deadline: Instant,
    /// Tie-breaker that keeps entries with one deadline apart, in insertion order.
    seq: u64,
}

impl TimerId {
    /// When this timer was first due (for a repeating timer: its first round).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// Entries ordered by deadline, each carrying a value of type `T`.
#[derive(Debug)]
pub struct TimerQueue<T> {
    /// Keyed by the entry's current deadline (and sequence number).
    entries: BTreeMap<TimerId, T>,
    /// Re-armed entries whose current deadline differs from their id's: by sequence
    /// number, (first deadline, current deadline).
    moved: HashMap<u64, (Instant, Instant)>,
    next_seq: u64,
    /// No entry is due before this (`None`: the queue is empty). A bound, kept cheaply:
    /// a cancel may leave it early, which costs one look at the queue, never a late
    /// timer. The loop asks it every turn instead of walking the tree.
    earliest: Option<Instant>,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue {
            entries: BTreeMap::new(),
            moved: HashMap::new(),
            next_seq: 0,
            earliest: None,
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
        self.lower_bound(deadline);
        id
    }

    fn lower_bound(&mut self, deadline: Instant) {
        if self.earliest.is_none_or(|earliest| deadline < earliest) {
            self.earliest = Some(deadline);
        }
    }

    /// Whether anything may be due at `now` (cheap: no look at the tree).
    #[inline(always)]
    pub fn maybe_due(&self, now: Instant) -> bool {
        self.earliest.is_some_and(|earliest| earliest <= now)
    }

    /// Schedules `value` again under `id` (which [`TimerQueue::pop_due`] returned), due
    /// at `deadline`: a repeating timer's next round. `cancel(id)` still finds it.
    pub fn rearm(&mut self, id: TimerId, deadline: Instant, value: T) {
        let key = TimerId {
            deadline,
            seq: id.seq,
        };
        if deadline != id.deadline {
            self.moved.insert(id.seq, (id.deadline, deadline));
        }
        self.entries.insert(key, value);
        self.lower_bound(deadline);
    }

    /// Removes an entry; returns its value if it was still scheduled.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let key = match self.moved.remove(&id.seq) {
            Some((_, current)) => TimerId {
                deadline: current,
                seq: id.seq,
            },
            None => id,
        };
        self.entries.remove(&key)
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.keys().next().map(|id| id.deadline)
    }

    /// How long `poll` may block at `now`: until the earliest deadline (rounded up to
    /// whole milliseconds, so the loop does not wake a hair early and spin), or for ever.
    /// (From the kept bound: at worst a wake-up that finds nothing due, after which
    /// [`TimerQueue::pop_due`] has made the bound exact again.)
    #[inline]
    pub fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        self.poll_timeout_millis(now).map(Duration::from_millis)
    }

    /// [`TimerQueue::poll_timeout`] in whole milliseconds (rounded up).
    #[inline]
    pub fn poll_timeout_millis(&self, now: Instant) -> Option<u64> {
        self.earliest.map(|deadline| {
            let wait = deadline.saturating_duration_since(now);
            wait.as_secs() * 1000 + u64::from(wait.subsec_nanos().div_ceil(1_000_000))
        })
    }

    /// A mark for [`TimerQueue::pop_due_before`]: entries scheduled from now on are
    /// after it.
    pub fn mark(&self) -> u64 {
        self.next_seq
    }

    /// Removes and returns the earliest entry if it is due at `now`, with the id it
    /// was scheduled under.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerId, T)> {
        self.pop_due_before(now, u64::MAX)
    }

    /// Like [`TimerQueue::pop_due`], but only entries scheduled before `mark`: a loop
    /// firing what is due stops at what its own callbacks scheduled for "now", which
    /// waits for the next turn (a timer that re-arms itself with no delay cannot keep
    /// the loop from polling its sockets).
    pub fn pop_due_before(&mut self, now: Instant, mark: u64) -> Option<(TimerId, T)> {
        let Some(first) = self.entries.first_entry() else {
            self.earliest = None;
            return None;
        };
        if first.key().deadline > now || first.key().seq >= mark {
            // The bound becomes exact: the earliest entry is this one.
            self.earliest = Some(first.key().deadline);
            return None;
        }
        let (mut id, value) = first.remove_entry();
        if !self.moved.is_empty() {
            if let Some((original, _)) = self.moved.remove(&id.seq) {
                id.deadline = original;
            }
        }
        Some((id, value))
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
    fn entries_scheduled_after_a_mark_wait_for_the_next_round() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.insert(t0, "old");
        let mark = q.mark();
        q.insert(t0, "new, due at once");
        assert_eq!(q.pop_due_before(t0, mark).map(|e| e.1), Some("old"));
        assert_eq!(q.pop_due_before(t0, mark), None, "scheduled after the mark");
        assert_eq!(q.pop_due(t0).map(|e| e.1), Some("new, due at once"));
    }

    #[test]
    fn the_bound_may_be_early_after_a_cancel_but_is_exact_after_a_look() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let early = q.insert(t0 + Duration::from_secs(1), "early");
        q.insert(t0 + Duration::from_secs(5), "late");
        q.cancel(early);
        // Still bounded by the cancelled one: a wake-up at 1 s finds nothing due...
        assert_eq!(q.poll_timeout(t0), Some(Duration::from_secs(1)));
        assert_eq!(q.pop_due(t0 + Duration::from_secs(1)), None);
        // ...and after that look the bound is the real next deadline.
        assert_eq!(q.poll_timeout(t0), Some(Duration::from_secs(5)));
        assert_eq!(
            q.pop_due(t0 + Duration::from_secs(5)).map(|e| e.1),
            Some("late")
        );
        assert_eq!(q.pop_due(t0 + Duration::from_secs(5)), None);
        assert_eq!(q.poll_timeout(t0), None, "empty again");
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
    fn a_rearmed_entry_keeps_its_id_and_can_be_cancelled() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut q = TimerQueue::new();
        let id = q.insert(t0 + second, "tick");
        let (popped, value) = q.pop_due(t0 + second).unwrap();
        assert_eq!(popped, id);
        q.rearm(popped, t0 + 2 * second, value);
        assert_eq!(
            q.pop_due(t0 + second),
            None,
            "not due before its next round"
        );
        let (again, value) = q.pop_due(t0 + 2 * second).unwrap();
        assert_eq!(again, id, "the same id every round");
        q.rearm(again, t0 + 3 * second, value);
        assert_eq!(q.cancel(id), Some("tick"));
        assert!(q.is_empty());
        assert_eq!(q.pop_due(t0 + 10 * second), None);
    }

    #[test]
    fn poll_timeout_rounds_up_and_is_none_when_empty() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        assert_eq!(q.poll_timeout(t0), None);
        assert!(!q.maybe_due(t0 + Duration::from_secs(9)));
        q.insert(t0 + Duration::from_micros(1500), ());
        assert!(!q.maybe_due(t0));
        assert!(q.maybe_due(t0 + Duration::from_millis(2)));
        assert_eq!(q.poll_timeout(t0), Some(Duration::from_millis(2)));
        assert_eq!(
            q.poll_timeout(t0 + Duration::from_secs(1)),
            Some(Duration::ZERO)
        );
    }
}
