//! Before the load is under way: does the server speak the mode's protocol?
//!
//! A wrong address is the usual mistake (chat mode aimed at the echo port), and a run
//! against it must not spin at 0 msgs/s: it fails within seconds with an error that
//! names the likely cause. The run ([`super::bench`]) tells [`Hearing`] what arrives and
//! when; [`Hearing`] says how long the server has been quiet and builds the error.
//! Time comes in as an argument, so the rules are tested without sleeping.
//!
//! The rules: the chat setup fails once the server has sent nothing for
//! [`QUIET_LIMIT`] (a setup that keeps making progress, thousands of members joining,
//! is never cut short); an echo workload fails when its first messages get no reply
//! within [`QUIET_LIMIT`]; either fails at once when the server sends what the mode's
//! server never would (a chat member's own requests coming back, a first reply that
//! is not an echo) or closes every connection before it has answered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{LoadError, Mode, Options};
use crate::CloseReason;

/// Longest silence from the server before the load is under way: during the chat
/// setup, since the last frame received; for an echo workload, from the first
/// messages sent to their first reply. A server that speaks the protocol answers in
/// far less, even under load; one that does not never answers at all.
pub const QUIET_LIMIT: Duration = Duration::from_secs(3);

/// What the run has heard from the server while it waits for a first answer.
#[derive(Debug)]
pub struct Hearing {
    addr: SocketAddr,
    mode: Mode,
    /// When the current wait began (the setup, or the load).
    since: Instant,
    /// When the server last sent anything on a workload connection, or the wait began.
    last_heard: Instant,
    /// The server has sent something on a workload connection.
    heard: bool,
    /// Why the last workload connection that closed under the run was closed.
    last_close: Option<CloseReason>,
}

impl Hearing {
    /// Nothing heard yet from the server `options` name.
    pub fn new(options: &Options, now: Instant) -> Self {
        Hearing {
            addr: options.addr,
            mode: options.mode,
            since: now,
            last_heard: now,
            heard: false,
            last_close: None,
        }
    }

    /// A wait starts at `now`: the setup's, or (echo workloads) the first replies'.
    pub fn wait_from(&mut self, now: Instant) {
        self.since = now;
        self.last_heard = now;
    }

    /// The server sent something at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.heard = true;
        self.last_heard = now;
    }

    /// When the server last sent anything (or the current wait began).
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// True once the server has sent anything.
    pub fn has_heard(&self) -> bool {
        self.heard
    }

    /// A workload connection closed under the run, for `reason`.
    pub fn closed(&mut self, reason: CloseReason) {
        self.last_close = Some(reason);
    }

    /// How much longer the server may stay quiet, as of `now`; `None` once it has been
    /// quiet for [`QUIET_LIMIT`].
    pub fn quiet_left(&self, now: Instant) -> Option<Duration> {
        let quiet = now.saturating_duration_since(self.last_heard);
        QUIET_LIMIT
            .checked_sub(quiet)
            .filter(|left| !left.is_zero())
    }

    /// The error for a server that has answered nothing since the wait began.
    pub fn silent(&self, now: Instant) -> LoadError {
        LoadError::Silent {
            addr: self.addr,
            mode: self.mode,
            waited: now.saturating_duration_since(self.since),
        }
    }

    /// The error for a chat setup that went quiet: silent, or stalled part way with
    /// `ready` of `open` members joined.
    pub fn setup_stalled(&self, now: Instant, ready: usize, open: usize) -> LoadError {
        if !self.heard {
            return self.silent(now);
        }
        let quiet = now.saturating_duration_since(self.last_heard);
        LoadError::Setup(format!(
            "{ready} of {open} members joined, then nothing came from the server at {} for {:.1} s",
            self.addr,
            quiet.as_secs_f64()
        ))
    }

    /// The error for a server that sent `what`, which the mode's server never would.
    pub fn wrong_protocol(&self, what: String) -> LoadError {
        LoadError::WrongProtocol {
            addr: self.addr,
            mode: self.mode,
            what,
        }
    }

    /// The error for a server that closed every connection before it answered (or,
    /// `in_setup`, during the chat setup).
    pub fn all_closed(&self, in_setup: bool) -> LoadError {
        let when = if in_setup {
            "during the setup"
        } else {
            "before it answered"
        };
        let last = match self.last_close {
            Some(reason) => format!(", the last as {reason}"),
            None => String::new(),
        };
        self.wrong_protocol(format!("every connection closed {when}{last}"))
    }
}

/// A frame as an error message shows it: its length and first characters, text or
/// not (control characters as dots).
pub fn describe(payload: &[u8]) -> String {
    const SHOWN: usize = 48;
    let shown = &payload[..payload.len().min(SHOWN)];
    let text: String = String::from_utf8_lossy(shown)
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    let more = if payload.len() > SHOWN { "..." } else { "" };
    format!("{} bytes, `{text}{more}`", payload.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_at_echo_port() -> Options {
        Options {
            mode: Mode::Chat,
            ..Options::default()
        }
    }

    #[test]
    fn the_quiet_limit_counts_from_the_last_thing_heard() {
        let start = Instant::now();
        let mut hearing = Hearing::new(&chat_at_echo_port(), start);
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(hearing.quiet_left(at(1_000)), Some(Duration::from_secs(2)));
        // A frame at 2.5 s: another 3 s from then.
        hearing.heard(at(2_500));
        assert_eq!(
            hearing.quiet_left(at(5_000)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(hearing.quiet_left(at(5_500)), None);
        assert_eq!(hearing.quiet_left(at(9_000)), None);
    }

    #[test]
    fn a_silent_setup_and_a_stalled_one_are_told_apart() {
        let start = Instant::now();
        let mut hearing = Hearing::new(&chat_at_echo_port(), start);
        let later = start + Duration::from_secs(3);
        let silent = hearing.setup_stalled(later, 0, 10);
        assert!(
            matches!(silent, LoadError::Silent { waited, .. } if waited == Duration::from_secs(3)),
            "{silent:?}"
        );
        hearing.heard(start + Duration::from_secs(1));
        let stalled = hearing
            .setup_stalled(start + Duration::from_secs(4), 7, 10)
            .to_string();
        assert_eq!(
            stalled,
            "setup failed: 7 of 10 members joined, then nothing came from the server at \
             127.0.0.1:9000 for 3.0 s"
        );
    }

    #[test]
    fn closing_every_connection_names_the_last_reason() {
        let mut hearing = Hearing::new(&Options::default(), Instant::now());
        hearing.closed(CloseReason::PeerClosed);
        let message = hearing.all_closed(false).to_string();
        assert!(
            message.contains("every connection closed before it answered, the last as peer_closed"),
            "{message}"
        );
    }

    #[test]
    fn a_foreign_frame_is_shown_by_its_length_and_first_characters() {
        assert_eq!(
            describe(b"{\"type\":\"error\"}"),
            r#"16 bytes, `{"type":"error"}`"#
        );
        let binary = [0u8, 0, 0, 7, b'a', 0xff, b'\n'];
        assert_eq!(describe(&binary), "7 bytes, `....a\u{fffd}.`");
        let long = [b'x'; 100];
        assert_eq!(
            describe(&long),
            format!("100 bytes, `{}...`", "x".repeat(48))
        );
    }
}
