//! Counters the reactor keeps, and the one-line report they print as.
//!
//! Counters are plain `u64`s on the loop's own thread: no atomics, no locks. A service
//! reads them through [`crate::Context::stats`]; the reactor logs them every
//! `stats_interval` and once more at shutdown.

use std::fmt;

/// Why a connection was closed. Every close is counted under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The peer closed its side (EOF) and everything owed to it was flushed.
    PeerClosed,
    /// The peer reset the connection (or vanished: broken pipe, aborted): a client
    /// that went away without a goodbye, not a fault of the server's.
    Reset,
    /// Another socket error.
    Error(std::io::ErrorKind),
    /// The peer broke the framing (oversized or malformed frame).
    Protocol,
    /// The peer sent nothing for the idle timeout (time its connection was not read
    /// does not count).
    IdleTimeout,
    /// A frame was started and not completed before the frame deadline.
    FrameTimeout,
    /// The service asked for it (see [`crate::Context::close`]).
    Service,
    /// The server is shutting down.
    Shutdown,
    /// A dialled connection could not be made (refused, unreachable, ...).
    ConnectFailed(std::io::ErrorKind),
    /// A dialled connection was not up within its connect timeout.
    ConnectTimeout,
    /// Output was queued and none of it could be written for the send timeout: the
    /// peer stopped reading.
    WriteStalled,
    /// The buffered bytes of all connections passed the memory budget, and this
    /// connection held the most.
    OverBudget,
}

impl CloseReason {
    /// All the kinds, in the order [`Stats::closed`] counts them.
    pub const KINDS: [&'static str; 12] = [
        "peer_closed",
        "error",
        "protocol",
        "idle_timeout",
        "frame_timeout",
        "service",
        "shutdown",
        "connect_failed",
        "connect_timeout",
        "reset",
        "write_stalled",
        "over_budget",
    ];

    /// Index of this reason in [`Stats::closed`].
    pub fn index(&self) -> usize {
        match self {
            CloseReason::PeerClosed => 0,
            CloseReason::Error(_) => 1,
            CloseReason::Protocol => 2,
            CloseReason::IdleTimeout => 3,
            CloseReason::FrameTimeout => 4,
            CloseReason::Service => 5,
            CloseReason::Shutdown => 6,
            CloseReason::ConnectFailed(_) => 7,
            CloseReason::ConnectTimeout => 8,
            CloseReason::Reset => 9,
            CloseReason::WriteStalled => 10,
            CloseReason::OverBudget => 11,
        }
    }

    /// The reason for closing after a socket error of this kind: [`CloseReason::Reset`]
    /// for a peer that reset or vanished, [`CloseReason::Error`] for the rest.
    pub fn from_io(kind: std::io::ErrorKind) -> CloseReason {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
        match kind {
            ConnectionReset | ConnectionAborted | BrokenPipe => CloseReason::Reset,
            other => CloseReason::Error(other),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Error(kind) => write!(f, "error ({kind})"),
            CloseReason::ConnectFailed(kind) => write!(f, "connect failed ({kind})"),
            other => f.write_str(Self::KINDS[other.index()]),
        }
    }
}

/// What the reactor has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted and kept.
    pub accepted: u64,
    /// Outbound connections dialled (whether or not they came up).
    pub dialled: u64,
    /// Connections accepted and closed at once because `max_conns` was reached.
    pub rejected: u64,
    /// Connections open now (dialled ones from the moment their connect starts).
    pub active: u64,
    /// Closed connections, by [`CloseReason::index`].
    pub closed: [u64; 12],
    /// Frames decoded from TCP and Unix connections.
    pub frames_in: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// Bytes read from stream sockets.
    pub bytes_in: u64,
    /// Bytes written to stream sockets.
    pub bytes_out: u64,
    /// `write` and `writev` calls that wrote queued output: gathered answers (a
    /// pipelined batch of them should cost one), and what a full socket held back.
    /// (A send written at once, echo's way, is not counted: that path is kept to the
    /// fewest instructions.)
    pub queued_writes: u64,
    /// Connections closed for a framing violation (also counted in `closed`).
    pub protocol_errors: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams dropped because the socket's send queue was over the write limit.
    pub datagrams_dropped: u64,
    /// `accept` failures other than `WouldBlock` (e.g. out of file descriptors).
    pub accept_errors: u64,
    /// Datagrams not sent because of where they were going: port 0, an unspecified
    /// address, or the sending socket's own address (a loop or a reflection).
    pub datagrams_refused: u64,
    /// Times a connection's remaining frames were left in its read buffer, unhandled,
    /// because its queued output had passed the write limit (pipelined requests with
    /// large answers); they are handled once the output drains.
    pub frames_held: u64,
    /// Times a connection's reading paused because its queued output had passed the
    /// write limit (backpressure); it reads again once the output drains. Counts the
    /// pauses that hold frames back (`frames_held`) too.
    pub write_pauses: u64,
    /// Bytes of buffer memory the connections hold now (input buffers and queued
    /// output); each connection's share is rounded up to a multiple of 1024, as the
    /// memory budget sees it.
    pub buffered_bytes: u64,
    /// Accepted connections handed to another loop of a pool
    /// ([`crate::reactor::Spread::Handoff`]).
    pub handed_over: u64,
    /// Accepted connections kept by the accepting loop because the loop whose turn it
    /// was had a full handover queue.
    pub handover_full: u64,
}

impl Stats {
    /// Adds another loop's counters to these: the totals of a pool.
    pub fn add(&mut self, other: &Stats) {
        let Stats {
            accepted,
            dialled,
            rejected,
            active,
            closed,
            frames_in,
            frames_out,
            bytes_in,
            bytes_out,
            queued_writes,
            protocol_errors,
            datagrams_in,
            datagrams_out,
            datagrams_dropped,
            accept_errors,
            datagrams_refused,
            frames_held,
            write_pauses,
            buffered_bytes,
            handed_over,
            handover_full,
        } = other;
        for (total, count) in self.closed.iter_mut().zip(closed) {
            *total += count;
        }
        for (total, count) in [
            (&mut self.accepted, accepted),
            (&mut self.dialled, dialled),
            (&mut self.rejected, rejected),
            (&mut self.active, active),
            (&mut self.frames_in, frames_in),
            (&mut self.frames_out, frames_out),
            (&mut self.bytes_in, bytes_in),
            (&mut self.bytes_out, bytes_out),
            (&mut self.queued_writes, queued_writes),
            (&mut self.protocol_errors, protocol_errors),
            (&mut self.datagrams_in, datagrams_in),
            (&mut self.datagrams_out, datagrams_out),
            (&mut self.datagrams_dropped, datagrams_dropped),
            (&mut self.accept_errors, accept_errors),
            (&mut self.datagrams_refused, datagrams_refused),
            (&mut self.frames_held, frames_held),
            (&mut self.write_pauses, write_pauses),
            (&mut self.buffered_bytes, buffered_bytes),
            (&mut self.handed_over, handed_over),
            (&mut self.handover_full, handover_full),
        ] {
            *total += count;
        }
    }

    /// Total connections closed, for any reason.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conns: {} active, {} accepted, {} rejected, {} closed (",
            self.active,
            self.accepted,
            self.rejected,
            self.closed_total()
        )?;
        let mut first = true;
        for (name, count) in CloseReason::KINDS.iter().zip(self.closed) {
            if count > 0 {
                write!(f, "{}{name} {count}", if first { "" } else { ", " })?;
                first = false;
            }
        }
        write!(
            f,
            "); frames in/out {}/{}; bytes in/out {}/{}; datagrams in/out {}/{}",
            self.frames_in,
            self.frames_out,
            self.bytes_in,
            self.bytes_out,
            self.datagrams_in,
            self.datagrams_out
        )?;
        if self.protocol_errors > 0 {
            write!(f, "; protocol errors {}", self.protocol_errors)?;
        }
        if self.datagrams_dropped > 0 {
            write!(f, "; datagrams dropped {}", self.datagrams_dropped)?;
        }
        if self.dialled > 0 {
            write!(f, "; dialled {}", self.dialled)?;
        }
        if self.accept_errors > 0 {
            write!(f, "; accept errors {}", self.accept_errors)?;
        }
        if self.datagrams_refused > 0 {
            write!(f, "; datagrams refused {}", self.datagrams_refused)?;
        }
        if self.frames_held > 0 {
            write!(f, "; frames held back {} times", self.frames_held)?;
        }
        if self.handed_over > 0 || self.handover_full > 0 {
            write!(
                f,
                "; handed to other loops {} (kept, their queue full: {})",
                self.handed_over, self.handover_full
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_only_reasons_that_happened() {
        let mut stats = Stats::default();
        stats.closed[CloseReason::IdleTimeout.index()] = 2;
        stats.accepted = 2;
        let line = stats.to_string();
        assert!(line.contains("2 closed (idle_timeout 2)"), "{line}");
        assert!(!line.contains("protocol errors"));
    }

    #[test]
    fn a_peer_that_went_away_is_a_reset_not_an_error() {
        use std::io::ErrorKind;
        assert_eq!(
            CloseReason::from_io(ErrorKind::ConnectionReset),
            CloseReason::Reset
        );
        assert_eq!(
            CloseReason::from_io(ErrorKind::BrokenPipe),
            CloseReason::Reset
        );
        assert_eq!(
            CloseReason::from_io(ErrorKind::OutOfMemory),
            CloseReason::Error(ErrorKind::OutOfMemory)
        );
        let mut stats = Stats::default();
        stats.closed[CloseReason::Reset.index()] = 99;
        assert!(stats.to_string().contains("reset 99"), "{stats}");
    }

    #[test]
    fn error_reason_shows_its_kind() {
        let reason = CloseReason::Error(std::io::ErrorKind::ConnectionReset);
        assert_eq!(reason.to_string(), "error (connection reset)");
    }
}
