//! What a reactor is told to do: its endpoints and its limits, with validation.
//!
//! [`Config::default`] has no endpoints; the binary fills them in from its flags, and
//! tests bind `127.0.0.1:0`. Every limit has a default an operator would expect.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Endpoints and limits of one reactor.
///
/// ```
/// use switchboard::Config;
/// let mut config = Config::default();
/// config.tcp.push("127.0.0.1:0".parse().unwrap());
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP listeners to open.
    pub tcp: Vec<SocketAddr>,
    /// UDP sockets to open.
    pub udp: Vec<SocketAddr>,
    /// Unix-domain stream listeners to open (file system paths).
    pub unix: Vec<PathBuf>,
    /// `listen()` backlog for stream listeners (the kernel caps it at somaxconn).
    pub backlog: i32,
    /// Set SO_REUSEPORT on TCP listeners, so several processes or loops can share a port.
    pub reuse_port: bool,
    /// Close a connection after this long without receiving anything. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Close a connection that started a frame and did not finish it in this time,
    /// however steadily it trickles bytes. `None`: no deadline.
    pub frame_timeout: Option<Duration>,
    /// Connections held at most; beyond it new ones are accepted and closed at once.
    pub max_conns: usize,
    /// Output queued for one connection above which the reactor stops reading from it
    /// until the queue drains below half (backpressure).
    pub write_limit: usize,
    /// Log the counters this often. `None`: never.
    pub stats_interval: Option<Duration>,
    /// How long shutdown waits for queued output to drain before closing regardless.
    pub shutdown_grace: Duration,
    /// Reads done for one connection per turn of the loop before others get a turn.
    pub read_budget: usize,
    /// Size of the loop's shared read buffer, and so of the largest single read.
    pub read_buffer_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tcp: Vec::new(),
            udp: Vec::new(),
            unix: Vec::new(),
            backlog: 1024,
            reuse_port: false,
            idle_timeout: Some(Duration::from_secs(300)),
            frame_timeout: Some(Duration::from_secs(30)),
            max_conns: 100_000,
            write_limit: 4 * 1024 * 1024,
            stats_interval: None,
            shutdown_grace: Duration::from_secs(5),
            read_budget: 8,
            read_buffer_size: 128 * 1024,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Neither a TCP, UDP nor Unix endpoint was given.
    NoEndpoints,
    /// A limit that must be positive is zero (or negative).
    NotPositive(&'static str),
    /// The read buffer cannot hold one whole datagram of the maximum UDP size.
    ReadBufferTooSmall(usize),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoEndpoints => {
                f.write_str("no endpoint to serve: give a TCP, UDP or Unix address")
            }
            ConfigError::NotPositive(what) => write!(f, "{what} must be greater than zero"),
            ConfigError::ReadBufferTooSmall(size) => write!(
                f,
                "read buffer of {size} bytes cannot hold a {MAX_DATAGRAM}-byte datagram"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The largest UDP payload over IPv4: 65535 - 8 (UDP header) - 20 (IP header).
pub const MAX_DATAGRAM: usize = 65_507;

impl Config {
    /// Checks that the configuration can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tcp.is_empty() && self.udp.is_empty() && self.unix.is_empty() {
            return Err(ConfigError::NoEndpoints);
        }
        let positive = [
            ("backlog", self.backlog.max(0) as usize),
            ("max_conns", self.max_conns),
            ("write_limit", self.write_limit),
            ("read_budget", self.read_budget),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::NotPositive(name));
            }
        }
        if self.read_buffer_size < MAX_DATAGRAM {
            return Err(ConfigError::ReadBufferTooSmall(self.read_buffer_size));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_tcp() -> Config {
        let mut config = Config::default();
        config.tcp.push("127.0.0.1:0".parse().unwrap());
        config
    }

    #[test]
    fn defaults_with_an_endpoint_are_valid() {
        assert_eq!(with_tcp().validate(), Ok(()));
    }

    #[test]
    fn no_endpoint_is_refused() {
        assert_eq!(Config::default().validate(), Err(ConfigError::NoEndpoints));
    }

    #[test]
    fn zero_limits_are_refused() {
        let mut config = with_tcp();
        config.write_limit = 0;
        assert_eq!(
            config.validate(),
            Err(ConfigError::NotPositive("write_limit"))
        );
        let mut config = with_tcp();
        config.backlog = -1;
        assert_eq!(config.validate(), Err(ConfigError::NotPositive("backlog")));
    }

    #[test]
    fn read_buffer_must_hold_a_datagram() {
        let mut config = with_tcp();
        config.read_buffer_size = 1024;
        assert!(config.validate().unwrap_err().to_string().contains("65507"));
    }
}
