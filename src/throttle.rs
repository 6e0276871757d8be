//! Log lines for events that hostile input can repeat at will (a refused newcomer, an
//! unanswered datagram): one line at most every [`LOG_INTERVAL`], saying how many
//! events it stands for, so that a flood is reported without becoming a flood of log
//! lines. Time comes in as an argument.

use std::time::{Duration, Instant};

/// The least time between two log lines about one kind of event.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// When a kind of event was last logged, and how many happened since.
#[derive(Debug, Default)]
pub struct Throttle {
    /// When the last line was written.
    last: Option<Instant>,
    /// Events since then, not logged yet.
    pending: u64,
}

impl Throttle {
    /// Notes one event; returns how many events a line written now stands for, or
    /// `None` if no line is due yet.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < LOG_INTERVAL)
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
        let t0 = Instant::now();
        let mut throttle = Throttle::default();
        assert_eq!(
            throttle.note(t0),
            Some(1),
            "the first event is logged at once"
        );
        for i in 0..999 {
            assert_eq!(throttle.note(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(throttle.note(t0 + LOG_INTERVAL), Some(1000));
        assert_eq!(throttle.note(t0 + LOG_INTERVAL), None);
    }
}
