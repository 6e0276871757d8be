//! What a load-generator run does: the workload, its shape, and how long it lasts.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::LoadError;

/// Smallest payload: every message carries its 8-byte sequence number.
pub const MIN_SIZE: usize = 8;
/// Longest `--run-id`: member names (`b{run}-{index}`) must stay within a chat name's
/// 32 characters.
pub const MAX_RUN_ID: usize = 20;

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
    /// TLS handshakes (with `--tls`): each connection is opened, handshakes, and
    /// closes, and another takes its place; a handshake is what a run counts.
    Handshakes,
}

impl Mode {
    /// The name used on the command line and in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Framed => "framed",
            Mode::Raw => "raw",
            Mode::Udp => "udp",
            Mode::Chat => "chat",
            Mode::Handshakes => "handshakes",
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
            Mode::Framed | Mode::Raw | Mode::Udp | Mode::Handshakes => 9000,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// What a run of this mode counts: replies, or (chat) deliveries to members.
    pub fn unit(self) -> &'static str {
        match self {
            Mode::Chat => "deliveries",
            Mode::Handshakes => "handshakes",
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
            Mode::Handshakes => "TLS protocol",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a chat run's listen-only members (every member but the senders) take their
/// deliveries. The senders always parse and check theirs.
///
/// ```
/// use switchboard::loadgen::{Listeners, Mode, Options};
/// let counting = Options {
///     mode: Mode::Chat,
///     conns: 1000,
///     listeners: Listeners::Count,
///     ..Options::default()
/// };
/// assert!(counting.validate().is_ok());
/// // A counting member could not tell another run's messages from this one's.
/// let shared = Options { room: Some("lobby".into()), ..counting };
/// assert!(shared.validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Listeners {
    /// Parse every frame as JSON, check each sender's order (gaps, reorders) and time
    /// every delivery.
    #[default]
    Check,
    /// Count `msg` frames by a look at their bytes, without parsing them: no per-member
    /// order check and no latency (that comes from the senders alone); each member
    /// compares its count with what was published once every sender's last word has
    /// come. It measures the server's fan-out past what JSON parsing in the load
    /// generator can keep up with.
    Count,
}

impl Listeners {
    /// The name used on the command line and in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Listeners::Check => "check",
            Listeners::Count => "count",
        }
    }
}

impl fmt::Display for Listeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Dialling over TLS (`--tls`): what the run trusts besides the system's roots, and
/// the name each server's certificate must be for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA certificates (PEM) trusted besides the system's roots.
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must be for; `None`: the server's IP address,
    /// written out (`127.0.0.1`), which a certificate names in its subjectAltName.
    pub name: Option<String>,
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
    /// Chat: how many of the members publish (0: all listen, with a shared `room`).
    pub senders: usize,
    /// More servers: connection `i` goes to `servers()[i % n]`, where the list is
    /// `addr` followed by these (nodes of one chat cluster, say).
    pub more_addrs: Vec<SocketAddr>,
    /// Chat: how listen-only members take their deliveries.
    pub listeners: Listeners,
    /// Chat: the room to join, shared with other runs; `None`: a private room.
    pub room: Option<String>,
    /// Chat: how many runs (processes) share `room`; each waits until all have joined
    /// before it publishes, and for every sender's last message before it leaves.
    pub runs: usize,
    /// What names this run's members and senders; `None`: made from the process id
    /// and the time.
    pub run_id: Option<String>,
    /// Put the latency histogram's buckets in the JSON summary (to merge runs).
    pub histogram: bool,
    /// Process id of the server, to report its CPU time and memory from `/proc`.
    pub server_pid: Option<u32>,
    /// Print a progress line to stderr once a second.
    pub progress: bool,
    /// Most time allowed for opening every connection (with TLS: for its TCP connect,
    /// and then again for its handshake).
    pub connect_timeout: Duration,
    /// Speak TLS on every connection (feature `tls`): the echo modes, and
    /// [`Mode::Handshakes`], which needs it.
    pub tls: Option<TlsOptions>,
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
            more_addrs: Vec::new(),
            listeners: Listeners::Check,
            room: None,
            runs: 1,
            run_id: None,
            histogram: false,
            server_pid: None,
            progress: false,
            connect_timeout: Duration::from_secs(30),
            tls: None,
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
        if self.src_ips > 1 && !self.servers().iter().all(|a| a.ip().is_loopback()) {
            return fail(
                "--src-ips spreads sockets over 127.0.0.x: the server must be on loopback".into(),
            );
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return fail("--rate must be a positive number".into());
        }
        if self.mode == Mode::Chat && self.senders > self.conns {
            return fail("--senders must be at most --conns".into());
        }
        if self.mode == Mode::Chat && self.senders == 0 && self.room.is_none() {
            return fail("--senders 0 (members that only listen) needs a shared --room".into());
        }
        if self.listeners == Listeners::Count {
            self.check_counting()?;
        }
        if self.mode == Mode::Udp && !self.more_addrs.is_empty() {
            return fail("--addrs spreads TCP connections: --mode udp takes one --addr".into());
        }
        if self.runs == 0 {
            return fail("--runs must be at least 1".into());
        }
        if self.runs > 1 && (self.mode != Mode::Chat || self.room.is_none()) {
            return fail("--runs counts the chat runs sharing a --room: give one".into());
        }
        if let Some(room) = &self.room {
            check_token("--room", room, 32)?;
        }
        if let Some(run) = &self.run_id {
            check_token("--run-id", run, MAX_RUN_ID)?;
        }
        if self.duration.is_zero() && self.messages.is_none() {
            return fail("--duration must be positive".into());
        }
        self.check_tls()
    }

    /// TLS is for the stream echo modes and the handshakes mode, which needs it.
    fn check_tls(&self) -> Result<(), LoadError> {
        let fail = |why: &str| Err(LoadError::Options(why.into()));
        let Some(_) = &self.tls else {
            return match self.mode {
                Mode::Handshakes => fail("--mode handshakes needs --tls"),
                _ => Ok(()),
            };
        };
        if !cfg!(feature = "tls") {
            return fail("--tls: built without the `tls` feature");
        }
        match self.mode {
            Mode::Udp | Mode::Chat => {
                fail("--tls is for the echo modes (framed, raw) and --mode handshakes")
            }
            Mode::Handshakes if self.rate.is_some() || self.messages.is_some() => fail(
                "--mode handshakes runs as many handshakes as --conns at a time allow: \
                 no --rate or --messages",
            ),
            _ => Ok(()),
        }
    }

    /// Counting listeners cannot tell this run's messages from another's (they do not
    /// read the sender), so the room must be the run's own.
    fn check_counting(&self) -> Result<(), LoadError> {
        let why = if self.mode != Mode::Chat {
            "is for --mode chat"
        } else if self.room.is_some() || self.runs > 1 {
            "needs the run's own room (no --room, --runs or --procs): a member that \
             counts frames cannot tell another run's messages from this one's"
        } else {
            return Ok(());
        };
        Err(LoadError::Options(format!("--listeners count {why}")))
    }

    /// Every server, in the order connections are dealt to them: `addr` first.
    pub fn servers(&self) -> Vec<SocketAddr> {
        let mut all = vec![self.addr];
        all.extend_from_slice(&self.more_addrs);
        all
    }

    /// The server connection number `index` goes to (round robin over
    /// [`Options::servers`]).
    pub(crate) fn server_for(&self, index: usize) -> SocketAddr {
        match index % (1 + self.more_addrs.len()) {
            0 => self.addr,
            k => self.more_addrs[k - 1],
        }
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

    /// The workload connections dialled once, before the load: none for UDP, and
    /// none for handshakes, whose connections come and go under the load.
    pub(crate) fn lasting_conns(&self) -> usize {
        match self.mode {
            Mode::Udp | Mode::Handshakes => 0,
            Mode::Framed | Mode::Raw | Mode::Chat => self.conns,
        }
    }
}

/// Checks a name the run writes into JSON and chat texts unescaped: 1 to `max`
/// letters, digits, `-` or `_` (no `:` or `.`, which separate the fields of a text).
fn check_token(flag: &str, value: &str, max: usize) -> Result<(), LoadError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if value.is_empty() || value.len() > max || !value.chars().all(allowed) {
        return Err(LoadError::Options(format!(
            "{flag} {value:?}: 1 to {max} letters, digits, '-' or '_'"
        )));
    }
    Ok(())
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
        let listeners = Options {
            mode: Mode::Chat,
            senders: 0,
            ..Options::default()
        };
        assert!(listeners.validate().is_err(), "nobody to listen to");
        let shared = Options {
            room: Some("big".into()),
            ..listeners
        };
        assert!(shared.validate().is_ok());
    }

    #[test]
    fn counting_listeners_need_a_chat_run_of_its_own() {
        let counting = Options {
            mode: Mode::Chat,
            conns: 10,
            listeners: Listeners::Count,
            ..Options::default()
        };
        assert!(counting.validate().is_ok());
        let refused = |options: Options| options.validate().unwrap_err().to_string();
        let shared = refused(Options {
            room: Some("big".into()),
            ..counting.clone()
        });
        assert!(
            shared.contains("--listeners count needs the run's own room"),
            "{shared}"
        );
        let runs = refused(Options {
            room: Some("big".into()),
            runs: 2,
            ..counting.clone()
        });
        assert!(runs.contains("own room"), "{runs}");
        let echo = refused(Options {
            mode: Mode::Framed,
            ..counting.clone()
        });
        assert!(echo.contains("is for --mode chat"), "{echo}");
    }

    #[test]
    fn connections_are_dealt_round_robin_over_the_servers() {
        let options = Options {
            addr: "127.0.0.1:1".parse().unwrap(),
            more_addrs: vec!["127.0.0.1:2".parse().unwrap()],
            ..Options::default()
        };
        let ports: Vec<u16> = (0..4).map(|i| options.server_for(i).port()).collect();
        assert_eq!(ports, [1, 2, 1, 2]);
        assert_eq!(options.servers().len(), 2);
    }

    #[test]
    fn room_and_run_names_are_plain_tokens() {
        let with_room = |room: &str| Options {
            mode: Mode::Chat,
            room: Some(room.into()),
            ..Options::default()
        };
        assert!(with_room("big-room_1").validate().is_ok());
        for bad in ["", "a b", "a:b", "a\"b", &"x".repeat(33)] {
            assert!(with_room(bad).validate().is_err(), "{bad:?}");
        }
    }
}
