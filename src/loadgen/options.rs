//! What a load-generator run does: the workload, its shape, and how long it lasts.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::LoadError;

/// Smallest payload: every message carries its 8-byte sequence number.
pub const MIN_SIZE: usize = 8;

/// The kind of traffic a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Length-prefixed frames (switchboard's wire format), echoed one for one.
    Framed,
    /// An unframed byte stream, echoed as it arrives (a `--framing raw` server).
    Raw,
    /// Datagrams, each echoed by the server.
    Udp,
    /// The chat protocol: members join one room, senders publish to it.
    Chat,
}

impl Mode {
    /// The name used on the command line and in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Framed => "framed",
            Mode::Raw => "raw",
            Mode::Udp => "udp",
            Mode::Chat => "chat",
        }
    }

    /// Where the server this mode loads listens by default: `switchboard chat` on
    /// 127.0.0.1:9001, `switchboard echo` (TCP and UDP) on 127.0.0.1:9000.
    ///
    /// ```
    /// use switchboard::loadgen::Mode;
    /// assert_eq!(Mode::Chat.default_addr().port(), 9001);
    /// assert_eq!(Mode::Udp.default_addr().port(), 9000);
    /// ```
    pub fn default_addr(self) -> SocketAddr {
        let port = match self {
            Mode::Chat => 9001,
            Mode::Framed | Mode::Raw | Mode::Udp => 9000,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// What a run of this mode counts: replies, or (chat) deliveries to members.
    pub fn unit(self) -> &'static str {
        match self {
            Mode::Chat => "deliveries",
            Mode::Framed | Mode::Raw | Mode::Udp => "msgs",
        }
    }

    /// The protocol the server must speak, as error messages name it.
    pub(crate) fn protocol(self) -> &'static str {
        match self {
            Mode::Framed => "framed echo protocol",
            Mode::Raw => "raw (unframed) echo protocol",
            Mode::Udp => "UDP echo protocol",
            Mode::Chat => "chat protocol",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A run's parameters. [`Options::default`] is a short framed run against
/// 127.0.0.1:9000 ([`Mode::default_addr`] gives each mode's usual server).
///
/// ```
/// use switchboard::loadgen::{Mode, Options};
/// let options = Options { mode: Mode::Udp, conns: 4, ..Options::default() };
/// assert!(options.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    /// The server.
    pub addr: SocketAddr,
    /// The workload.
    pub mode: Mode,
    /// Active connections (UDP: sockets; chat: room members).
    pub conns: usize,
    /// Messages in flight per connection (chat: per sender).
    pub depth: usize,
    /// Payload bytes per message (chat: bytes of each message's text).
    pub size: usize,
    /// Length of the measured window.
    pub duration: Duration,
    /// Load sent before the measured window starts, not counted.
    pub warmup: Duration,
    /// Extra connections opened first and held idle for the whole run.
    pub idle: usize,
    /// Spread client sockets over source addresses 127.0.0.1 ..= 127.0.0.K (K >= 1).
    pub src_ips: u8,
    /// Messages per second per connection; `None` sends as fast as replies come back.
    pub rate: Option<f64>,
    /// Stop after this many messages have been answered (warm-up then counts too).
    pub messages: Option<u64>,
    /// Chat: how many of the members publish.
    pub senders: usize,
    /// Process id of the server, to report its CPU time and memory from `/proc`.
    pub server_pid: Option<u32>,
    /// Print a progress line to stderr once a second.
    pub progress: bool,
    /// Most time allowed for opening every connection.
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addr: Mode::Framed.default_addr(),
            mode: Mode::Framed,
            conns: 1,
            depth: 1,
            size: 64,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            idle: 0,
            src_ips: 1,
            rate: None,
            messages: None,
            senders: 1,
            server_pid: None,
            progress: false,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

impl Options {
    /// Checks that the options describe a run that can be carried out.
    pub fn validate(&self) -> Result<(), LoadError> {
        let fail = |why: String| Err(LoadError::Options(why));
        if self.conns == 0 && self.idle == 0 {
            return fail("--conns and --idle are both 0: nothing to do".into());
        }
        if self.depth == 0 {
            return fail("--depth must be at least 1".into());
        }
        if self.size < MIN_SIZE {
            return fail(format!(
                "--size must be at least {MIN_SIZE}: every message carries its sequence number"
            ));
        }
        if self.mode == Mode::Udp && self.size > crate::MAX_DATAGRAM {
            return fail(format!(
                "--size {} exceeds the largest datagram ({})",
                self.size,
                crate::MAX_DATAGRAM
            ));
        }
        if self.src_ips == 0 {
            return fail("--src-ips must be at least 1".into());
        }
        if self.src_ips > 1 && !self.addr.ip().is_loopback() {
            return fail(
                "--src-ips spreads sockets over 127.0.0.x: the server must be on loopback".into(),
            );
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return fail("--rate must be a positive number".into());
        }
        if self.mode == Mode::Chat && (self.senders == 0 || self.senders > self.conns) {
            return fail("--senders must be between 1 and --conns".into());
        }
        if self.duration.is_zero() && self.messages.is_none() {
            return fail("--duration must be positive".into());
        }
        Ok(())
    }

    /// The source address for client socket number `index`, when sockets are spread
    /// over several loopback addresses (each has its own ~28,000 ephemeral ports).
    pub(crate) fn source_ip(&self, index: usize) -> Option<SocketAddr> {
        if self.src_ips <= 1 {
            return None;
        }
        let last = 1 + (index % usize::from(self.src_ips)) as u8;
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            0,
        ))
    }

    /// True for the workloads that open TCP connections (every one but UDP).
    pub(crate) fn uses_tcp(&self) -> bool {
        self.mode != Mode::Udp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(Options::default().validate().is_ok());
    }

    #[test]
    fn refuses_payloads_too_small_for_a_sequence_number() {
        let options = Options {
            size: 7,
            ..Options::default()
        };
        let err = options.validate().unwrap_err().to_string();
        assert!(err.contains("--size must be at least 8"), "{err}");
    }

    #[test]
    fn refuses_an_empty_run() {
        let options = Options {
            conns: 0,
            ..Options::default()
        };
        assert!(options.validate().is_err());
        let idle_only = Options {
            conns: 0,
            idle: 10,
            ..Options::default()
        };
        assert!(idle_only.validate().is_ok());
    }

    #[test]
    fn source_addresses_cycle_over_the_loopback_range() {
        let options = Options {
            src_ips: 3,
            ..Options::default()
        };
        let ips: Vec<String> = (0..4)
            .map(|i| options.source_ip(i).unwrap().ip().to_string())
            .collect();
        assert_eq!(ips, ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"]);
        assert_eq!(Options::default().source_ip(5), None);
    }

    #[test]
    fn chat_needs_senders_among_the_members() {
        let options = Options {
            mode: Mode::Chat,
            conns: 2,
            senders: 3,
            ..Options::default()
        };
        assert!(options.validate().is_err());
    }
}
