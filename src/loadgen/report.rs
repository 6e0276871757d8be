//! What a run counts and how it reports: the [`Recorder`] the workloads feed, the
//! once-a-second progress line, and the final [`Summary`] (human-readable or JSON).
//!
//! Counting is split in two. Faults (a wrong reply, a dropped connection) are counted
//! for the whole run, warm-up and drain included: an error is an error whenever it
//! happens. Throughput and latency are counted only inside the measured window.
//!
//! The progress line says which is which, the same way in every mode: the phase, the
//! rate over the last second whatever the phase (so warm-up and drain show their
//! traffic too), then what the measured window has counted so far, with its p99:
//!
//! ```text
//! bench:    2s warmup   conns 4  msgs/s 41022 (last 1 s)  measured 0 msgs, p99 -  errors 0
//! bench:    3s measure  conns 20  deliveries/s 9120 (last 1 s)  measured 9120 deliveries, p99 310us  errors 0
//! ```

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::Options;

/// Highest latency the histogram tracks exactly (larger values are clamped): 60 s.
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Error descriptions kept for the summary; the rest are only counted.
const KEEP_ERRORS: usize = 5;

/// Counters and the latency histogram of a run.
#[derive(Debug)]
pub struct Recorder {
    /// Latencies in nanoseconds, measured window only.
    histogram: Histogram<u64>,
    /// True inside the measured window.
    measuring: bool,
    /// Replies received inside the measured window (chat: deliveries).
    pub messages: u64,
    /// Payload bytes received inside the measured window.
    pub bytes: u64,
    /// Replies received over the whole run.
    pub messages_total: u64,
    /// Replies that were not what was sent (content, order, size, error frames).
    pub mismatches: u64,
    /// Connections the server closed or reset during the run.
    pub disconnects: u64,
    /// Chat: sequence numbers skipped (messages lost), over every member and sender.
    pub gaps: u64,
    /// Chat: messages that came after a later one from the same sender.
    pub reorders: u64,
    /// Chat: messages published inside the measured window.
    pub published: u64,
    /// UDP: datagrams with no reply in time (resent, not an error).
    pub lost: u64,
    /// The first few fault descriptions.
    pub first_errors: Vec<String>,
    /// Replies at the last progress line.
    progress_mark: u64,
}

impl Recorder {
    /// An empty recorder, not yet measuring.
    pub fn new() -> Self {
        Recorder {
            // 3 significant digits: p99.9 is exact to 0.1%.
            histogram: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("constant histogram bounds are valid"),
            measuring: false,
            messages: 0,
            bytes: 0,
            messages_total: 0,
            mismatches: 0,
            disconnects: 0,
            gaps: 0,
            reorders: 0,
            published: 0,
            lost: 0,
            first_errors: Vec::new(),
            progress_mark: 0,
        }
    }

    /// Starts or stops counting throughput and latency.
    pub fn set_measuring(&mut self, on: bool) {
        self.measuring = on;
    }

    /// True inside the measured window.
    pub fn measuring(&self) -> bool {
        self.measuring
    }

    /// A correct reply of `bytes` payload bytes that took `latency`.
    #[inline]
    pub fn reply(&mut self, bytes: usize, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.reply_ns(bytes, ns);
    }

    /// [`Recorder::reply`] with the latency in nanoseconds.
    #[inline]
    pub fn reply_ns(&mut self, bytes: usize, latency_ns: u64) {
        self.messages_total += 1;
        if self.measuring {
            self.messages += 1;
            self.bytes += bytes as u64;
            self.histogram
                .saturating_record(latency_ns.clamp(1, MAX_LATENCY_NS));
        }
    }

    /// A delivery counted but not timed (chat, a counting listener), its text
    /// `bytes` long.
    #[inline]
    pub fn delivery(&mut self, bytes: usize) {
        self.messages_total += 1;
        if self.measuring {
            self.messages += 1;
            self.bytes += bytes as u64;
        }
    }

    /// A message published (chat).
    pub fn publish(&mut self) {
        if self.measuring {
            self.published += 1;
        }
    }

    /// A reply that was not the one expected.
    pub fn mismatch(&mut self, what: impl FnOnce() -> String) {
        self.mismatches += 1;
        self.keep_error(what);
    }

    /// A connection lost during the run.
    pub fn disconnect(&mut self, what: impl FnOnce() -> String) {
        self.disconnects += 1;
        self.keep_error(what);
    }

    /// Chat: `lost` sequence numbers skipped.
    pub fn gap(&mut self, lost: u64, what: impl FnOnce() -> String) {
        self.gaps += lost;
        self.keep_error(what);
    }

    /// Chat: a message that came after a later one from its sender.
    pub fn reorder(&mut self, what: impl FnOnce() -> String) {
        self.reorders += 1;
        self.keep_error(what);
    }

    fn keep_error(&mut self, what: impl FnOnce() -> String) {
        if self.first_errors.len() < KEEP_ERRORS {
            self.first_errors.push(what());
        }
    }

    /// Faults so far.
    pub fn faults(&self) -> u64 {
        self.mismatches + self.disconnects + self.gaps + self.reorders
    }

    /// The progress line at `elapsed` into the run, `interval` after the last one:
    /// `unit` (msgs, deliveries) per second over that interval, counted in any phase,
    /// then the measured window's count and p99 so far.
    pub fn progress_line(
        &mut self,
        elapsed: Duration,
        interval: Duration,
        conns: usize,
        phase: &str,
        unit: &str,
    ) -> String {
        let done = self.messages_total - self.progress_mark;
        self.progress_mark = self.messages_total;
        let rate = done as f64 / interval.as_secs_f64().max(1e-3);
        let p99 = if self.histogram.is_empty() {
            "-".to_string()
        } else {
            format_us(self.histogram.value_at_quantile(0.99))
        };
        format!(
            "bench: {:>4.0}s {phase:<8} conns {conns}  {unit}/s {rate:.0} (last 1 s)  \
             measured {} {unit}, p99 {p99}  errors {}",
            elapsed.as_secs_f64(),
            self.messages,
            self.faults()
        )
    }

    /// The latency percentiles, in microseconds; `None` when nothing was measured (a
    /// run interrupted before its window), rather than percentiles of nothing that
    /// would read as zero latency.
    pub fn latency(&self) -> Option<Latency> {
        let h = &self.histogram;
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        })
    }
}

/// The latency histogram's buckets, `[nanoseconds, count]` for each value recorded: what
/// [`Latency::from_buckets`] merges the histograms of several runs from.
pub fn buckets(rec: &Recorder) -> Vec<[u64; 2]> {
    rec.histogram
        .iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect()
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// `n` and the noun for it: "1 conn", "2 conns".
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn format_us(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.0}ms", ns as f64 / 1e6)
    } else {
        format!("{:.0}us", ns as f64 / 1e3)
    }
}

/// Latency percentiles of the measured window, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// The percentiles of several runs together, from their histograms' buckets
    /// (see `buckets`); `None` when there are none or a bucket is out of the
    /// histogram's range.
    pub fn from_buckets<'a>(all: impl IntoIterator<Item = &'a [u64; 2]>) -> Option<Latency> {
        let mut rec = Recorder::new();
        for [ns, count] in all {
            rec.histogram.record_n(*ns, *count).ok()?;
        }
        rec.latency()
    }
}

/// The server's resource use, read from `/proc/PID`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerUsage {
    /// CPU seconds (user + system, all threads) the server used in the measured window.
    pub cpu_secs: f64,
    /// The part of `cpu_secs` spent in user space (the rest is the kernel's).
    pub user_cpu_secs: f64,
    /// Replies in the window per server CPU-second: the efficiency figure.
    pub msgs_per_cpu_sec: f64,
    /// Resident memory before any connection was opened, KiB.
    pub rss_before_kib: u64,
    /// Resident memory once every connection was open (before load), KiB.
    pub rss_connected_kib: u64,
    /// Resident memory at the end of the window, KiB.
    pub rss_end_kib: u64,
    /// Peak resident memory so far, KiB.
    pub hwm_kib: u64,
}

/// The TLS side of a run (`--tls`): its handshakes, each timed from the TCP connect
/// to the end of the handshake.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsSummary {
    /// Handshakes done over the whole run (warm-up and drain included).
    pub handshakes: u64,
    /// Connections whose handshake failed or did not finish in time (also counted
    /// among the connect failures).
    pub handshake_failures: u64,
    /// Handshake times over every handshake of the run, in microseconds; null when
    /// none was done.
    pub handshake: Option<Latency>,
    /// `--mode handshakes`: handshakes done inside the measured window, per second.
    pub handshakes_per_sec: Option<f64>,
    /// The protocol version agreed (`TLSv1_3`), as the first handshake found it.
    pub protocol: Option<String>,
    /// The cipher suite agreed (`TLS13_AES_256_GCM_SHA384`), likewise.
    pub cipher_suite: Option<String>,
    /// The handshake-time histogram's buckets, `[ns, count]` (with `--histogram`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handshake_buckets: Vec<[u64; 2]>,
}

impl TlsSummary {
    /// From the run's handshakes (a recorder of their own: one "reply" a handshake).
    pub(crate) fn new(handshakes: &Recorder, failures: u64, histogram: bool) -> TlsSummary {
        TlsSummary {
            handshakes: handshakes.messages_total,
            handshake_failures: failures,
            handshake: handshakes.latency(),
            handshake_buckets: match histogram {
                true => buckets(handshakes),
                false => Vec::new(),
            },
            ..TlsSummary::default()
        }
    }

    /// Adds another worker's handshakes to these; the times are merged from both
    /// histograms in [`Summary::merge`].
    fn add(&mut self, other: &TlsSummary) {
        self.handshakes += other.handshakes;
        self.handshake_failures += other.handshake_failures;
        self.handshakes_per_sec = match (self.handshakes_per_sec, other.handshakes_per_sec) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.protocol = self.protocol.take().or_else(|| other.protocol.clone());
        self.cipher_suite = (self.cipher_suite.take()).or_else(|| other.cipher_suite.clone());
        (self.handshake_buckets).extend_from_slice(&other.handshake_buckets);
    }
}

impl fmt::Display for TlsSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "  tls: {} {}, {} ({} failed)",
            self.protocol.as_deref().unwrap_or("-"),
            self.cipher_suite.as_deref().unwrap_or("-"),
            count(self.handshakes, "handshake", "handshakes"),
            self.handshake_failures
        )?;
        match &self.handshake {
            Some(h) => write!(
                f,
                "; handshake us: p50 {:.1}  p99 {:.1}  max {:.1}",
                h.p50_us, h.p99_us, h.max_us
            ),
            None => Ok(()),
        }
    }
}

/// Connect failures of one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectErrors {
    /// The first of them: the server, and what the system said.
    pub error: String,
    /// How many.
    pub count: u64,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The workload.
    pub mode: String,
    /// The server.
    pub addr: String,
    /// Active connections requested.
    pub conns: usize,
    /// Active connections that were opened (and, for chat, joined).
    pub connected: usize,
    /// Idle connections held.
    pub idle: usize,
    /// Connections that could not be opened.
    pub connect_failures: u64,
    /// Why the first of them failed (with the server it was for).
    pub first_connect_error: Option<String>,
    /// Connect failures by kind: the first reason of each, and how many.
    pub connect_errors: Vec<ConnectErrors>,
    /// Messages in flight per connection.
    pub depth: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Length of the measured window, seconds.
    pub seconds: f64,
    /// Replies (chat: deliveries) in the window.
    pub messages: u64,
    /// Replies (chat: deliveries) per second.
    pub msgs_per_sec: f64,
    /// Payload megabytes (10^6) received per second.
    pub mb_per_sec: f64,
    /// Chat: messages published in the window.
    pub published: u64,
    /// Chat: the room.
    pub room: Option<String>,
    /// Chat: this run's id (in its member names and sender ids).
    pub run_id: Option<String>,
    /// Chat: how the members that only listen took their deliveries: `check` (parsed,
    /// order checked, timed) or `count` (`msg` frames counted, not parsed: no order
    /// check, latency from the senders alone).
    #[serde(default)]
    pub listeners: Option<String>,
    /// Chat: members whose join the server announced.
    pub members_joined: usize,
    /// Chat: seconds from the first member's connect to the last member's `joined`.
    pub join_seconds: f64,
    /// Chat: runs that said they were ready in the room (this one included; with
    /// `--runs`).
    pub runs_ready: usize,
    /// Chat: senders heard of, this run's and other runs' in the same room.
    pub senders_heard: usize,
    /// Replies (chat: deliveries) over the whole run, warm-up and drain included:
    /// with a message budget, every one of them.
    pub deliveries: u64,
    /// Chat: sequence numbers skipped (lost messages), all members and senders.
    pub gaps: u64,
    /// Chat: messages that came after a later one from the same sender.
    pub reorders: u64,
    /// Latency percentiles; null when nothing was measured (interrupted before the
    /// window).
    pub latency: Option<Latency>,
    /// The median latency in milliseconds (the same as `latency.p50_us`).
    pub latency_p50_ms: Option<f64>,
    /// The 99th percentile latency in milliseconds.
    pub latency_p99_ms: Option<f64>,
    /// The latency histogram's buckets, `[ns, count]` (with `--histogram`), to merge
    /// the latencies of several runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_buckets: Vec<[u64; 2]>,
    /// Faults: mismatched replies + disconnects + gaps + reorders + unanswered
    /// messages.
    pub errors: u64,
    /// Replies that were not what was sent.
    pub mismatches: u64,
    /// Connections lost during the run.
    pub disconnects: u64,
    /// Messages never answered (TCP; counted as errors). Not counted when the run was
    /// interrupted before the replies in flight had drained: they were not awaited.
    pub unanswered: u64,
    /// UDP datagrams with no reply in time (expected under overload; not errors).
    pub lost: u64,
    /// The first few faults, described.
    pub first_errors: Vec<String>,
    /// The server's CPU and memory, when its process id was given.
    pub server: Option<ServerUsage>,
    /// A signal ended the run early: the window (`seconds`) and every figure cover
    /// only what was measured until then (nothing, if it came before the load).
    pub interrupted: bool,
    /// The handshakes, with `--tls`; null without.
    #[serde(default)]
    pub tls: Option<TlsSummary>,
}

impl Summary {
    /// Builds the summary from a finished run's recorder.
    pub(crate) fn new(options: &Options, rec: &Recorder, window: Duration) -> Summary {
        let seconds = window.as_secs_f64();
        // An empty window (a run interrupted before it) has no rate.
        let per_sec = |count: f64| if seconds > 0.0 { count / seconds } else { 0.0 };
        let latency = rec.latency();
        let addrs: Vec<String> = options.servers().iter().map(|a| a.to_string()).collect();
        Summary {
            mode: options.mode.name().to_string(),
            addr: addrs.join(","),
            conns: options.conns,
            connected: 0,
            idle: options.idle,
            connect_failures: 0,
            first_connect_error: None,
            connect_errors: Vec::new(),
            depth: options.depth,
            size: options.size,
            seconds,
            messages: rec.messages,
            msgs_per_sec: per_sec(rec.messages as f64),
            mb_per_sec: per_sec(rec.bytes as f64) / 1e6,
            published: rec.published,
            room: None,
            run_id: None,
            listeners: None,
            members_joined: 0,
            join_seconds: 0.0,
            runs_ready: 0,
            senders_heard: 0,
            deliveries: rec.messages_total,
            gaps: rec.gaps,
            reorders: rec.reorders,
            latency,
            latency_p50_ms: latency.map(|l| l.p50_us / 1000.0),
            latency_p99_ms: latency.map(|l| l.p99_us / 1000.0),
            latency_buckets: if options.histogram {
                buckets(rec)
            } else {
                Vec::new()
            },
            errors: rec.faults(),
            mismatches: rec.mismatches,
            disconnects: rec.disconnects,
            unanswered: 0,
            lost: rec.lost,
            first_errors: rec.first_errors.clone(),
            server: None,
            interrupted: false,
            tls: None,
        }
    }

    /// One summary for a run carried out by several workers (`--procs`): counts are
    /// summed, rates too (the workers measure the same window), join time and window
    /// are the longest, latency comes from the workers' histograms merged (their
    /// `latency_buckets`), and the server's usage from the worker that measured it.
    pub fn merge(parts: &[Summary]) -> Summary {
        let Some(first) = parts.first() else {
            return Summary::new(&Options::default(), &Recorder::new(), Duration::ZERO);
        };
        let mut all = first.clone();
        for part in &parts[1..] {
            all.add(part);
        }
        let buckets = parts.iter().flat_map(|p| p.latency_buckets.iter());
        all.latency = Latency::from_buckets(buckets);
        all.latency_p50_ms = all.latency.map(|l| l.p50_us / 1000.0);
        all.latency_p99_ms = all.latency.map(|l| l.p99_us / 1000.0);
        all.latency_buckets = Vec::new();
        all.first_connect_error = parts.iter().find_map(|p| p.first_connect_error.clone());
        all.server = parts.iter().find_map(|p| p.server).map(|mut usage| {
            usage.msgs_per_cpu_sec = all.messages as f64 / usage.cpu_secs.max(1e-9);
            usage
        });
        if let Some(tls) = &mut all.tls {
            tls.handshake = Latency::from_buckets(&tls.handshake_buckets);
            tls.handshake_buckets = Vec::new();
        }
        all
    }

    /// Adds another worker's figures to these.
    fn add(&mut self, other: &Summary) {
        self.conns += other.conns;
        self.connected += other.connected;
        self.idle += other.idle;
        self.connect_failures += other.connect_failures;
        for kind in &other.connect_errors {
            match self
                .connect_errors
                .iter_mut()
                .find(|k| k.error == kind.error)
            {
                Some(seen) => seen.count += kind.count,
                None => self.connect_errors.push(kind.clone()),
            }
        }
        self.seconds = self.seconds.max(other.seconds);
        self.messages += other.messages;
        self.msgs_per_sec += other.msgs_per_sec;
        self.mb_per_sec += other.mb_per_sec;
        self.published += other.published;
        self.members_joined += other.members_joined;
        self.join_seconds = self.join_seconds.max(other.join_seconds);
        self.runs_ready = self.runs_ready.max(other.runs_ready);
        self.senders_heard = self.senders_heard.max(other.senders_heard);
        self.deliveries += other.deliveries;
        self.gaps += other.gaps;
        self.reorders += other.reorders;
        self.errors += other.errors;
        self.mismatches += other.mismatches;
        self.disconnects += other.disconnects;
        self.unanswered += other.unanswered;
        self.lost += other.lost;
        let room = KEEP_ERRORS.saturating_sub(self.first_errors.len());
        (self.first_errors).extend(other.first_errors.iter().take(room).cloned());
        self.interrupted |= other.interrupted;
        match (&mut self.tls, &other.tls) {
            (Some(tls), Some(theirs)) => tls.add(theirs),
            (None, Some(theirs)) => self.tls = Some(theirs.clone()),
            _ => {}
        }
    }

    /// True when the run found any fault or could not open every connection.
    pub fn failed(&self) -> bool {
        self.errors > 0 || self.connect_failures > 0
    }

    /// The summary as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mode == "handshakes" {
            return self.fmt_handshakes(f);
        }
        writeln!(
            f,
            "{} to {}: {} (+{} idle) x depth {}, {} B, {:.2} s measured{}",
            self.mode,
            self.addr,
            count(self.connected as u64, "conn", "conns"),
            self.idle,
            self.depth,
            self.size,
            self.seconds,
            if self.interrupted {
                " (interrupted: cut short by a signal)"
            } else {
                ""
            }
        )?;
        if self.mode == "chat" {
            writeln!(
                f,
                "  room {}: {} joined in {:.2} s; senders heard {}{}",
                self.room.as_deref().unwrap_or("-"),
                count(self.members_joined as u64, "member", "members"),
                self.join_seconds,
                self.senders_heard,
                match self.runs_ready {
                    0 => String::new(),
                    runs => format!("; runs ready {runs}"),
                }
            )?;
            if self.listeners.as_deref() == Some("count") {
                writeln!(
                    f,
                    "  listeners counted msg frames without parsing them: no order check \
                     for them, latency from the senders alone"
                )?;
            }
            writeln!(
                f,
                "  throughput: {:.0} deliveries/s, {:.2} MB/s ({} delivered, {} published; \
                 {} in all)",
                self.msgs_per_sec,
                self.mb_per_sec,
                self.messages,
                self.published,
                count(self.deliveries, "delivery", "deliveries")
            )?;
        } else {
            writeln!(
                f,
                "  throughput: {:.0} msgs/s, {:.2} MB/s ({})",
                self.msgs_per_sec,
                self.mb_per_sec,
                count(self.messages, "message", "messages")
            )?;
        }
        match &self.latency {
            Some(l) => writeln!(
                f,
                "  latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
            )?,
            None => writeln!(
                f,
                "  latency: nothing measured (no reply in the measured window)"
            )?,
        }
        write!(
            f,
            "  errors: {} (mismatches {}, disconnects {}, unanswered {}); connect failures: {}",
            self.errors, self.mismatches, self.disconnects, self.unanswered, self.connect_failures
        )?;
        if self.mode == "chat" {
            write!(f, "; gaps: {}, reorders: {}", self.gaps, self.reorders)?;
        }
        if self.mode == "udp" {
            write!(f, "; lost datagrams: {}", self.lost)?;
        }
        for kind in &self.connect_errors {
            write!(f, "\n  connect failed {} times: {}", kind.count, kind.error)?;
        }
        if let Some(tls) = &self.tls {
            write!(f, "\n{tls}")?;
        }
        self.fmt_server_and_errors(f)
    }
}

impl Summary {
    /// A handshakes run: how many at a time, handshakes per second, their times.
    fn fmt_handshakes(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "handshakes to {}: {} at a time, {:.2} s measured{}",
            self.addr,
            self.conns,
            self.seconds,
            if self.interrupted {
                " (interrupted: cut short by a signal)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  throughput: {:.0} handshakes/s ({} in the window)",
            self.msgs_per_sec, self.messages
        )?;
        if let Some(tls) = &self.tls {
            writeln!(f, "{tls}")?;
        }
        write!(
            f,
            "  errors: {} (disconnects {}); connect failures: {}",
            self.errors, self.disconnects, self.connect_failures
        )?;
        for kind in &self.connect_errors {
            write!(f, "\n  connect failed {} times: {}", kind.count, kind.error)?;
        }
        self.fmt_server_and_errors(f)
    }

    /// The server's usage (with its process id) and the first faults.
    fn fmt_server_and_errors(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.server {
            write!(
                f,
                "\n  server: {:.2} CPU s ({:.2} user), {:.0} {} per CPU-second, RSS {} KiB (before {} KiB, connected {} KiB), HWM {} KiB",
                s.cpu_secs, s.user_cpu_secs, s.msgs_per_cpu_sec, self.unit(), s.rss_end_kib, s.rss_before_kib, s.rss_connected_kib, s.hwm_kib
            )?;
        }
        for e in &self.first_errors {
            write!(f, "\n  error: {e}")?;
        }
        Ok(())
    }

    /// What the server's CPU time is divided among.
    fn unit(&self) -> &'static str {
        match self.mode.as_str() {
            "handshakes" => "handshakes",
            _ => "msgs",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_measured_window_counts_toward_throughput() {
        let mut rec = Recorder::new();
        rec.reply(64, Duration::from_micros(10));
        rec.set_measuring(true);
        rec.reply(64, Duration::from_micros(20));
        rec.reply(64, Duration::from_micros(40));
        assert_eq!(rec.messages_total, 3);
        assert_eq!(rec.messages, 2);
        assert_eq!(rec.bytes, 128);
        let latency = rec.latency().expect("two replies measured");
        assert!((latency.p50_us - 20.0).abs() < 0.1, "{latency:?}");
        assert!((latency.max_us - 40.0).abs() < 0.1, "{latency:?}");
    }

    #[test]
    fn faults_count_whenever_they_happen_and_keep_a_few_descriptions() {
        let mut rec = Recorder::new();
        for i in 0..10 {
            rec.mismatch(|| format!("bad {i}"));
        }
        rec.disconnect(|| "gone".into());
        assert_eq!(rec.faults(), 11);
        assert_eq!(rec.first_errors.len(), KEEP_ERRORS);
        let summary = Summary::new(&Options::default(), &rec, Duration::from_secs(1));
        assert!(summary.failed());
        let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
        assert_eq!(json["errors"], 11);
        assert_eq!(json["mode"], "framed");
    }

    #[test]
    fn the_progress_line_rates_the_last_second_and_counts_only_the_window() {
        let mut rec = Recorder::new();
        let second = Duration::from_secs(1);
        for _ in 0..30 {
            rec.reply(64, Duration::from_micros(10));
        }
        let warmup = rec.progress_line(second, second, 4, "warmup", "msgs");
        assert_eq!(
            warmup,
            "bench:    1s warmup   conns 4  msgs/s 30 (last 1 s)  measured 0 msgs, p99 -  errors 0"
        );
        rec.set_measuring(true);
        for _ in 0..10 {
            rec.reply(64, Duration::from_micros(250));
        }
        // Half a second since the last line: 10 in 0.5 s is 20 a second.
        let half = Duration::from_millis(500);
        let measure = rec.progress_line(second + half, half, 4, "measure", "deliveries");
        assert_eq!(
            measure,
            "bench:    2s measure  conns 4  deliveries/s 20 (last 1 s)  measured 10 deliveries, p99 250us  errors 0"
        );
    }

    #[test]
    fn a_chat_summary_counts_deliveries_and_an_interrupted_one_says_so() {
        let mut rec = Recorder::new();
        rec.set_measuring(true);
        rec.publish();
        for _ in 0..20 {
            rec.reply(100, Duration::from_micros(30));
        }
        let options = Options {
            mode: super::super::Mode::Chat,
            ..Options::default()
        };
        let mut summary = Summary::new(&options, &rec, Duration::from_secs(2));
        let text = summary.to_string();
        assert!(
            text.contains(
                "throughput: 10 deliveries/s, 0.00 MB/s (20 delivered, 1 published; 20 \
                 deliveries in all)"
            ),
            "{text}"
        );
        assert!(text.contains("gaps: 0, reorders: 0"), "{text}");
        assert!(
            !text.contains("msgs/s") && !text.contains("interrupted"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
        assert_eq!(json["interrupted"], false);
        assert_eq!(json["msgs_per_sec"], 10.0);
        assert_eq!(json["deliveries"], 20);
        assert_eq!(json["gaps"], 0);
        assert!(
            (json["latency_p50_ms"].as_f64().unwrap() - 0.03).abs() < 1e-4,
            "{json}"
        );
        assert!(
            json.get("latency_buckets").is_none(),
            "only with --histogram"
        );

        summary.interrupted = true;
        assert!(summary.to_string().contains("2.00 s measured (interrupted"));
        let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
        assert_eq!(json["interrupted"], true);
    }

    #[test]
    fn gaps_and_reorders_are_faults() {
        let mut rec = Recorder::new();
        rec.gap(3, || "lost".into());
        rec.reorder(|| "late".into());
        assert_eq!((rec.gaps, rec.reorders, rec.faults()), (3, 1, 4));
        assert_eq!(rec.first_errors, ["lost", "late"]);
    }

    /// Two recorders of one window: 98 replies at 100 us, and 2 at 50 ms, so that
    /// merged, the median is the first's and the 99th percentile the second's.
    fn fast_and_slow() -> (Recorder, Recorder) {
        let mut fast = Recorder::new();
        let mut slow = Recorder::new();
        fast.set_measuring(true);
        slow.set_measuring(true);
        for _ in 0..98 {
            fast.reply(8, Duration::from_micros(100));
        }
        for _ in 0..2 {
            slow.reply(8, Duration::from_millis(50));
        }
        (fast, slow)
    }

    #[test]
    fn latencies_of_several_runs_merge_from_their_buckets() {
        let (fast, slow) = fast_and_slow();
        let (a, b) = (buckets(&fast), buckets(&slow));
        let merged = Latency::from_buckets(a.iter().chain(&b)).unwrap();
        assert!((merged.p50_us - 100.0).abs() < 0.1, "{merged:?}");
        assert!((merged.p99_us - 50_000.0).abs() < 50.0, "{merged:?}");
        let options = Options {
            histogram: true,
            ..Options::default()
        };
        let summary = Summary::new(&options, &fast, Duration::from_secs(1));
        let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
        assert_eq!(json["latency_buckets"][0][1], 98, "{json}");
    }

    #[test]
    fn workers_summaries_merge_into_one() {
        let (fast, mut slow) = fast_and_slow();
        slow.gap(2, || "lost".into());
        let options = Options {
            mode: super::super::Mode::Chat,
            conns: 10,
            histogram: true,
            ..Options::default()
        };
        let mut a = Summary::new(&options, &fast, Duration::from_secs(1));
        let mut b = Summary::new(&options, &slow, Duration::from_secs(2));
        a.connect_failures = 1;
        a.connect_errors.push(ConnectErrors {
            error: "x: refused".into(),
            count: 1,
        });
        b.connect_failures = 3;
        b.first_connect_error = Some("x: refused".into());
        b.connect_errors.push(ConnectErrors {
            error: "x: refused".into(),
            count: 3,
        });
        // Through JSON, as the workers report.
        let read = |s: &Summary| serde_json::from_str::<Summary>(&s.to_json()).unwrap();
        let all = Summary::merge(&[read(&a), read(&b)]);
        assert_eq!((all.conns, all.deliveries, all.messages), (20, 100, 100));
        assert_eq!((all.gaps, all.errors), (2, 2));
        assert_eq!(all.seconds, 2.0);
        assert_eq!(all.connect_failures, 4);
        assert_eq!(all.connect_errors[0].count, 4);
        assert_eq!(all.first_connect_error.as_deref(), Some("x: refused"));
        let latency = all.latency.expect("merged latency");
        assert!((latency.p50_us - 100.0).abs() < 0.1, "{all:?}");
        assert!((all.latency_p99_ms.unwrap() - 50.0).abs() < 0.05, "{all:?}");
        assert!(all.latency_buckets.is_empty());
        assert_eq!(all.first_errors, ["lost"]);
    }

    #[test]
    fn an_empty_window_has_no_rate_and_no_latency() {
        let mut rec = Recorder::new();
        // Warm-up replies only: nothing inside the window.
        rec.reply(64, Duration::from_micros(10));
        let mut summary = Summary::new(&Options::default(), &rec, Duration::ZERO);
        summary.connected = 1;
        assert_eq!(summary.seconds, 0.0);
        assert_eq!(summary.msgs_per_sec, 0.0);
        assert_eq!(summary.mb_per_sec, 0.0);
        assert_eq!(summary.latency, None);
        let text = summary.to_string();
        assert!(text.contains(": 1 conn (+0 idle)"), "{text}");
        assert!(text.contains("(0 messages)"), "{text}");
        assert!(text.contains("latency: nothing measured"), "{text}");
        assert!(!text.contains("p50"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
        assert!(json["latency"].is_null(), "{json}");
        assert!(json["latency_p50_ms"].is_null(), "{json}");
        assert!(json["latency_p99_ms"].is_null(), "{json}");
        // A worker's summary without latency reads back the same (`--procs`).
        let back: Summary = serde_json::from_str(&summary.to_json()).unwrap();
        assert_eq!(back, summary);
    }
}
