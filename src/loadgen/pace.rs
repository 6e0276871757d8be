//! When a workload may send: the [`Gate`] every workload asks before sending a message.
//!
//! Two disciplines. Closed loop (the default): every reply frees a slot and the slot is
//! refilled at once, so each connection keeps `depth` messages in flight and the run
//! measures the most the server can do. Open loop (`--rate`): messages are due at fixed
//! times, spread evenly over the connections, whatever the replies do; it measures
//! latency at a given load (for example 19,500 connections at 1 message per second).
//!
//! Time is passed in, so the schedule is tested without sleeping.

use std::ops::Range;
use std::time::{Duration, Instant};

/// Decides whether another message may be sent now.
#[derive(Debug)]
pub struct Gate {
    /// Messages that may still be sent in all (`--messages`), if limited.
    budget: Option<u64>,
    /// Set once the run's window is over: nothing new is sent.
    stopped: bool,
    /// The open-loop schedule, if `--rate` was given.
    pacer: Option<Pacer>,
}

impl Gate {
    /// A gate for `budget` messages in all (unlimited when `None`), paced at
    /// `rate_per_conn` messages per second on each of `conns` connections, or closed
    /// loop when `rate_per_conn` is `None`.
    pub fn new(budget: Option<u64>, rate_per_conn: Option<f64>, conns: usize) -> Self {
        Gate {
            budget,
            stopped: false,
            pacer: rate_per_conn.map(|r| Pacer::new(r * conns as f64)),
        }
    }

    /// True when sending is driven by replies (no `--rate`).
    pub fn closed_loop(&self) -> bool {
        self.pacer.is_none()
    }

    /// Takes permission to send one message; false once stopped or out of budget.
    pub fn take(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        match &mut self.budget {
            Some(0) => false,
            Some(left) => {
                *left -= 1;
                true
            }
            None => true,
        }
    }

    /// Gives back a permission taken for a send that did not happen (the socket was
    /// full), so a budgeted run still sends exactly its budget.
    pub fn refund(&mut self) {
        if let Some(left) = &mut self.budget {
            *left += 1;
        }
    }

    /// True once the message budget is used up.
    pub fn spent(&self) -> bool {
        self.budget == Some(0)
    }

    /// No new messages from now on.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Starts the open-loop schedule (if any) at `now`.
    pub fn begin(&mut self, now: Instant) {
        if let Some(pacer) = &mut self.pacer {
            pacer.begin(now);
        }
    }

    /// Open loop: the global numbers of the messages due by `now` and not yet taken.
    /// Message `k` goes to connection `k % conns`. Empty in closed loop.
    pub fn due(&mut self, now: Instant) -> Range<u64> {
        match (&mut self.pacer, self.stopped) {
            (Some(pacer), false) => pacer.due(now),
            _ => 0..0,
        }
    }

    /// Open loop: when the next message is due (never, once stopped).
    pub fn next_due(&self) -> Option<Instant> {
        match self.stopped {
            true => None,
            false => self.pacer.as_ref().and_then(Pacer::next_at),
        }
    }
}

/// A fixed-rate schedule: message `k` is due `k / rate` seconds after the start.
#[derive(Debug)]
struct Pacer {
    /// Messages per second, all connections together.
    rate: f64,
    start: Option<Instant>,
    /// Messages handed out so far.
    taken: u64,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        Pacer {
            rate,
            start: None,
            taken: 0,
        }
    }

    fn begin(&mut self, now: Instant) {
        self.start = Some(now);
        self.taken = 0;
    }

    fn due(&mut self, now: Instant) -> Range<u64> {
        let Some(start) = self.start else {
            return 0..0;
        };
        // Message k is due at k / rate: so by `now`, messages 0 ..= elapsed * rate.
        let due = (now.duration_since(start).as_secs_f64() * self.rate) as u64 + 1;
        let range = self.taken..due.max(self.taken);
        self.taken = range.end;
        range
    }

    fn next_at(&self) -> Option<Instant> {
        let start = self.start?;
        Some(start + Duration::from_secs_f64(self.taken as f64 / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_exactly_that_many_messages() {
        let mut gate = Gate::new(Some(2), None, 1);
        assert!(gate.take() && gate.take());
        assert!(!gate.take());
        assert!(gate.spent());
    }

    #[test]
    fn a_stopped_gate_has_nothing_due_ever() {
        let t0 = Instant::now();
        let mut gate = Gate::new(None, Some(100.0), 1);
        gate.begin(t0);
        assert!(gate.next_due().is_some());
        gate.stop();
        assert_eq!(gate.due(t0 + Duration::from_secs(5)), 0..0);
        assert_eq!(
            gate.next_due(),
            None,
            "a stopped schedule is not due in the past"
        );
    }

    #[test]
    fn a_stopped_gate_allows_nothing() {
        let mut gate = Gate::new(None, None, 1);
        assert!(gate.closed_loop());
        gate.stop();
        assert!(!gate.take());
    }

    #[test]
    fn open_loop_spreads_messages_evenly_over_time() {
        // 2 connections x 5 msgs/s = one message every 100 ms.
        let mut gate = Gate::new(None, Some(5.0), 2);
        let t0 = Instant::now();
        gate.begin(t0);
        assert_eq!(gate.due(t0), 0..1, "message 0 is due at once");
        assert_eq!(gate.due(t0 + Duration::from_millis(50)), 1..1);
        assert_eq!(gate.next_due(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(gate.due(t0 + Duration::from_millis(350)), 1..4);
        gate.stop();
        assert_eq!(gate.due(t0 + Duration::from_secs(9)), 0..0);
    }
}
