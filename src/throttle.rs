//! Log lines for events that hostile input can repeat at will (a refused destination,
//! an unanswered datagram, a refused newcomer): one line at most every interval,
//! saying how many events it stands for, so that a flood is reported without becoming
//! a flood of log lines. Time comes in as an argument.

use std::time::{Duration, Instant};

/// When a kind of event was last logged, and how many happened since.
#[derive(Debug)]
pub(crate) struct Throttle {
    /// The least time between two lines.
    interval: Duration,
    /// When the last line was written.
    last: Option<Instant>,
    /// Events since then, not logged yet.
    pending: u64,
}

impl Throttle {
    /// A throttle allowing one line per `interval`; the first event is logged at once.
    pub(crate) const fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            last: None,
            pending: 0,
        }
    }

    /// Notes one event; returns how many events a line written now stands for, or
    /// `None` if no line is due yet.
    pub(crate) fn note(&mut self, now: Instant) -> Option<u64> {
        self.note_many(now, 1)
    }

    /// Notes `events` events at once (one pass that acted several times).
    pub(crate) fn note_many(&mut self, now: Instant, events: u64) -> Option<u64> {
        self.pending += events;
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < self.interval)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_standing_for_every_event() {
        let interval = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut throttle = Throttle::new(interval);
        assert_eq!(
            throttle.note(t0),
            Some(1),
            "the first event is logged at once"
        );
        for i in 0..999 {
            assert_eq!(throttle.note(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(throttle.note(t0 + interval), Some(1000));
        assert_eq!(throttle.note(t0 + interval), None);
    }
}
