//! The Prometheus text exposition format (version 0.0.4): the reactor's counters, the
//! histograms of its turns, and whatever the service adds, as the admin endpoint
//! serves them at `GET /metrics` (docs/operations.md lists every metric).
//!
//! Writing the text needs no library: each metric is a `# HELP` line, a `# TYPE` line
//! and its samples. Histograms are fixed arrays of counts, one per bucket, so
//! recording a turn is an index search and two additions.

mod process;

use std::fmt::Write;
use std::time::Duration;

use crate::stats::{CloseReason, Stats};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Upper bounds of the turn-duration buckets, in seconds (10 µs .. 1 s).
pub const TURN_SECONDS_BUCKETS: [f64; 11] = [
    0.00001, 0.000025, 0.0001, 0.00025, 0.001, 0.0025, 0.01, 0.025, 0.1, 0.25, 1.0,
];

/// Upper bounds of the events-per-turn buckets (1 .. 1024, the most one poll returns).
pub const EVENTS_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// A histogram with fixed buckets: a count per bucket (not cumulative), the
/// observations above the last bound, their sum and their number.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64; 11],
    counts: [u64; 11],
    over: u64,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (ascending).
    pub const fn new(bounds: &'static [f64; 11]) -> Histogram {
        Histogram {
            bounds,
            counts: [0; 11],
            over: 0,
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one observation.
    pub fn observe(&mut self, value: f64) {
        match self.bounds.iter().position(|&bound| value <= bound) {
            Some(i) => self.counts[i] += 1,
            None => self.over += 1,
        }
        self.sum += value;
        self.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Writes the histogram as `name_bucket{le=..}` (cumulative), `name_sum` and
    /// `name_count`, after its `# HELP` and `# TYPE` lines.
    pub fn write(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, "histogram", help);
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// What the loop measures of itself while the admin endpoint is on: how long each
/// turn's work took (from the end of its poll to the end of the turn), and how many
/// events each poll brought.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopMetrics {
    /// Seconds of work per turn.
    pub turn_seconds: Histogram,
    /// Readiness events per turn.
    pub events: Histogram,
}

impl Default for LoopMetrics {
    fn default() -> Self {
        LoopMetrics {
            turn_seconds: Histogram::new(&TURN_SECONDS_BUCKETS),
            events: Histogram::new(&EVENTS_BUCKETS),
        }
    }
}

impl LoopMetrics {
    /// Counts one turn that took `work` and handled `events` events.
    pub fn record_turn(&mut self, work: Duration, events: usize) {
        self.turn_seconds.observe(work.as_secs_f64());
        self.events.observe(events as f64);
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one unlabelled counter (`name` ends in `_total`) or gauge.
pub fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Writes one unlabelled counter or gauge whose value is not a whole number (or is
/// infinite: `+Inf`).
pub fn sample_f64(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    header(out, name, kind, help);
    if value == f64::INFINITY {
        let _ = writeln!(out, "{name} +Inf");
    } else {
        let _ = writeln!(out, "{name} {value}");
    }
}

/// Writes `switchboard_build_info{version="..."} 1`: the version serving, as a label,
/// the way Prometheus exporters say what is deployed.
pub fn write_build_info(out: &mut String) {
    let name = "switchboard_build_info";
    header(
        out,
        name,
        "gauge",
        "The switchboard version serving, as a label; always 1.",
    );
    let _ = writeln!(out, "{name}{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
}

/// Writes the conventional `process_*` metrics of this process: CPU seconds, resident
/// memory, open and maximum file descriptors, start time. Read from `/proc` on Linux;
/// on other systems nothing is written.
///
/// ```
/// let mut out = String::new();
/// switchboard::metrics::write_process(&mut out);
/// if cfg!(target_os = "linux") {
///     assert!(out.contains("\nprocess_open_fds "));
/// }
/// ```
pub fn write_process(out: &mut String) {
    process::write(out);
}

/// Writes the reactor's counters, as `switchboard_*` metrics.
///
/// ```
/// let mut out = String::new();
/// switchboard::metrics::write_stats(&mut out, &switchboard::Stats::default());
/// assert!(out.contains("switchboard_frames_in_total 0"));
/// ```
pub fn write_stats(out: &mut String, stats: &Stats) {
    let (counter, gauge) = ("counter", "gauge");
    let p = "switchboard_";
    sample(
        out,
        &format!("{p}connections"),
        gauge,
        "Connections open now.",
        stats.active,
    );
    let counters = [
        (
            "connections_accepted_total",
            "Connections accepted and kept.",
            stats.accepted,
        ),
        (
            "connections_rejected_total",
            "Connections closed at once at max-conns.",
            stats.rejected,
        ),
        (
            "connections_dialled_total",
            "Outbound connections dialled.",
            stats.dialled,
        ),
        (
            "accept_errors_total",
            "accept failures other than WouldBlock.",
            stats.accept_errors,
        ),
        (
            "bytes_in_total",
            "Bytes read from stream sockets.",
            stats.bytes_in,
        ),
        (
            "bytes_out_total",
            "Bytes written to stream sockets.",
            stats.bytes_out,
        ),
        (
            "queued_writes_total",
            "write and writev calls that wrote queued output (gathered answers, output a \
             full socket held back).",
            stats.queued_writes,
        ),
        (
            "frames_in_total",
            "Frames decoded from stream connections.",
            stats.frames_in,
        ),
        (
            "frames_out_total",
            "Frames queued for sending.",
            stats.frames_out,
        ),
        (
            "decode_errors_total",
            "Connections closed for breaking the framing.",
            stats.protocol_errors,
        ),
        (
            "write_pauses_total",
            "Times a connection's reading paused because its output passed the write limit.",
            stats.write_pauses,
        ),
        (
            "frames_held_total",
            "Times a read's remaining frames waited for the output to drain.",
            stats.frames_held,
        ),
        (
            "datagrams_in_total",
            "UDP datagrams received.",
            stats.datagrams_in,
        ),
        (
            "datagrams_out_total",
            "UDP datagrams sent.",
            stats.datagrams_out,
        ),
        (
            "datagrams_dropped_total",
            "UDP datagrams dropped: the send queue was over the write limit.",
            stats.datagrams_dropped,
        ),
        (
            "datagrams_refused_total",
            "UDP datagrams not sent for where they were going.",
            stats.datagrams_refused,
        ),
    ];
    for (name, help, value) in counters {
        sample(out, &format!("{p}{name}"), counter, help, value);
    }
    sample(
        out,
        &format!("{p}buffered_bytes"),
        gauge,
        "Bytes of buffer memory the connections hold, input and queued output; each \
         connection's share is rounded up to a multiple of 1024, as the memory budget \
         counts it.",
        stats.buffered_bytes,
    );
    let name = format!("{p}connections_closed_total");
    header(out, &name, counter, "Connections closed, by reason.");
    for (reason, count) in CloseReason::KINDS.iter().zip(stats.closed) {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
    }
}

/// Writes the loop's histograms.
pub fn write_loop(out: &mut String, metrics: &LoopMetrics) {
    metrics.turn_seconds.write(
        out,
        "switchboard_loop_turn_seconds",
        "Time the loop spent working per turn (poll's wait excluded).",
    );
    metrics.events.write(
        out,
        "switchboard_loop_events",
        "Readiness events handled per turn.",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inf_counts_all() {
        let mut h = Histogram::new(&EVENTS_BUCKETS);
        for value in [1.0, 3.0, 3.0, 5000.0] {
            h.observe(value);
        }
        let mut out = String::new();
        h.write(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"4\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1024\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
        assert!(
            out.starts_with("# HELP x help\n# TYPE x histogram\n"),
            "{out}"
        );
    }

    #[test]
    fn every_close_reason_is_a_labelled_sample() {
        let mut stats = Stats::default();
        stats.closed[CloseReason::Protocol.index()] = 3;
        let mut out = String::new();
        write_stats(&mut out, &stats);
        assert!(out.contains("switchboard_connections_closed_total{reason=\"protocol\"} 3\n"));
        let labelled = out.matches("switchboard_connections_closed_total{").count();
        assert_eq!(labelled, CloseReason::KINDS.len());
    }
}
