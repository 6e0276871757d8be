//! What a reactor is told to do: its endpoints and its limits, with validation.
//!
//! [`Config::default`] has no endpoints; the binary fills them in from its flags, and
//! tests bind `127.0.0.1:0`. A reactor with none at all is a client: it only dials.
//! Every limit has a default an operator would expect.

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
    /// Close a connection whose peer has sent nothing for this long. Only the peer's
    /// silence counts: what the server writes does not keep a connection alive, and
    /// time while the connection is not read (paused by the service, or by
    /// backpressure, when the peer may well be sending) does not count. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Reset a connection whose queued output has made no progress for this long: its
    /// peer stopped reading (reason `write_stalled`). It also bounds how long a peer
    /// that half-closed and never reads holds its buffers. `None`: never.
    pub send_timeout: Option<Duration>,
    /// Buffer memory (input and output, over all connections) above which the
    /// connections holding the most are reset (reason `over_budget`) until the total
    /// is back under seven eighths of it. `None`: no budget.
    pub memory_budget: Option<usize>,
    /// Connections accepted per listener per turn of the loop; the rest wait for the
    /// next turn, so a storm of connects cannot starve established connections.
    pub accept_budget: usize,
    /// Close a connection that started a frame and did not finish it in this time,
    /// however steadily it trickles bytes. Time while the connection is not read
    /// (paused by the service, or by backpressure) does not count: its frame's time
    /// starts over when reading resumes. `None`: no deadline.
    pub frame_timeout: Option<Duration>,
    /// Connections held at most; beyond it new ones are accepted and closed at once.
    pub max_conns: usize,
    /// Output queued for one connection above which the reactor stops reading from it
    /// until the queue drains to the low-water mark (backpressure).
    pub write_limit: usize,
    /// Queued output at or below which a connection that passed the write limit reads
    /// again, and its service hears [`crate::Service::on_drained`]. `None`: half the
    /// write limit.
    pub low_water: Option<usize>,
    /// How long a dialled connection may take to come up, unless its
    /// [`crate::Dial::timeout`] says otherwise.
    pub connect_timeout: Duration,
    /// Jobs other threads may have waiting for the loop ([`crate::Handle::post`]);
    /// beyond it, posting fails at once instead of blocking or growing a queue.
    pub inbox_capacity: usize,
    /// Log the counters this often. `None`: never.
    pub stats_interval: Option<Duration>,
    /// How long shutdown waits for queued output to drain before closing regardless.
    pub shutdown_grace: Duration,
    /// Reads done for one connection per turn of the loop before others get a turn.
    pub read_budget: usize,
    /// The largest single read (the loop's shared buffer is a little over twice this).
    /// The default, 256 KiB, takes a pipeline of four 64 KiB frames in one read, so
    /// their echo leaves in one write; the memory costs only what reads fill.
    pub read_buffer_size: usize,
    /// The admin endpoint: a TCP address where the reactor itself answers HTTP
    /// `GET /metrics` (Prometheus) and `GET /healthz`, for any service (feature
    /// `admin`). Its connections never reach the service. `None`: off.
    pub admin: Option<SocketAddr>,
    /// How long an admin request may take to arrive whole. Short (a scrape sends its
    /// request at once), so that silent connections give way quickly; when all admin
    /// connections are taken, the oldest still waiting for its request is closed for
    /// a newcomer anyway.
    pub admin_timeout: Duration,
    /// TCP listeners whose connections speak TLS (feature `tls`), served with
    /// [`Config::tls`]; opened after the plain ones, in this order.
    #[cfg(feature = "tls")]
    pub tls_tcp: Vec<SocketAddr>,
    /// The admin endpoint speaks TLS (`https://`), with [`Config::tls`].
    #[cfg(feature = "tls")]
    pub admin_tls: bool,
    /// The certificate and key of the TLS listeners. Reloaded with
    /// [`crate::tls::TlsServer::reload`] on any clone of it.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsServer>,
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
            send_timeout: Some(Duration::from_secs(60)),
            memory_budget: Some(256 * 1024 * 1024),
            accept_budget: 256,
            frame_timeout: Some(Duration::from_secs(30)),
            max_conns: 100_000,
            write_limit: 4 * 1024 * 1024,
            low_water: None,
            connect_timeout: Duration::from_secs(10),
            inbox_capacity: 1024,
            stats_interval: None,
            shutdown_grace: Duration::from_secs(5),
            read_budget: 8,
            read_buffer_size: 256 * 1024,
            admin: None,
            admin_timeout: Duration::from_secs(5),
            #[cfg(feature = "tls")]
            tls_tcp: Vec::new(),
            #[cfg(feature = "tls")]
            admin_tls: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A limit that must be positive is zero (or negative).
    NotPositive(&'static str),
    /// The read buffer cannot hold one whole datagram of the maximum UDP size.
    ReadBufferTooSmall(usize),
    /// The low-water mark is above the write limit.
    LowWaterAboveLimit {
        /// The low-water mark asked for.
        low_water: usize,
        /// The write limit.
        write_limit: usize,
    },
    /// The admin endpoint was asked for, but the library was built without the
    /// `admin` feature.
    AdminUnsupported,
    /// The admin endpoint's address is also a service listener's.
    AdminClash(SocketAddr),
    /// A TLS endpoint without a certificate and key to serve.
    TlsWithoutCertificate,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NotPositive(what) => write!(f, "{what} must be greater than zero"),
            ConfigError::ReadBufferTooSmall(size) => write!(
                f,
                "read buffer of {size} bytes cannot hold a {MAX_DATAGRAM}-byte datagram"
            ),
            ConfigError::LowWaterAboveLimit {
                low_water,
                write_limit,
            } => write!(
                f,
                "low-water mark of {low_water} bytes is above the write limit of {write_limit}"
            ),
            ConfigError::TlsWithoutCertificate => {
                f.write_str("a TLS endpoint needs a certificate and key (`tls`)")
            }
            ConfigError::AdminUnsupported => {
                f.write_str("the admin endpoint needs the `admin` feature")
            }
            ConfigError::AdminClash(addr) => {
                write!(f, "the admin endpoint {addr} is also a TCP listener")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// The largest UDP payload over IPv4: 65535 - 8 (UDP header) - 20 (IP header).
pub const MAX_DATAGRAM: usize = 65_507;

impl Config {
    /// Checks that the configuration can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("backlog", self.backlog.max(0) as usize),
            ("max_conns", self.max_conns),
            ("write_limit", self.write_limit),
            ("read_budget", self.read_budget),
            ("accept_budget", self.accept_budget),
            ("inbox_capacity", self.inbox_capacity),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::NotPositive(name));
            }
        }
        if self.read_buffer_size < MAX_DATAGRAM {
            return Err(ConfigError::ReadBufferTooSmall(self.read_buffer_size));
        }
        if let Some(low_water) = self.low_water.filter(|&low| low > self.write_limit) {
            return Err(ConfigError::LowWaterAboveLimit {
                low_water,
                write_limit: self.write_limit,
            });
        }
        if let Some(admin) = self.admin {
            if !cfg!(feature = "admin") {
                return Err(ConfigError::AdminUnsupported);
            }
            if admin.port() != 0 && self.tcp.contains(&admin) {
                return Err(ConfigError::AdminClash(admin));
            }
        }
        #[cfg(feature = "tls")]
        if (!self.tls_tcp.is_empty() || self.admin_tls) && self.tls.is_none() {
            return Err(ConfigError::TlsWithoutCertificate);
        }
        Ok(())
    }

    /// The low-water mark in effect: [`Config::low_water`], or half the write limit.
    pub fn low_water_mark(&self) -> usize {
        self.low_water.unwrap_or(self.write_limit / 2)
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
    fn an_admin_endpoint_on_a_service_port_is_refused() {
        let mut config = with_tcp();
        config.tcp = vec!["127.0.0.1:9000".parse().unwrap()];
        config.admin = Some("127.0.0.1:9000".parse().unwrap());
        let expected = if cfg!(feature = "admin") {
            ConfigError::AdminClash("127.0.0.1:9000".parse().unwrap())
        } else {
            ConfigError::AdminUnsupported
        };
        assert_eq!(config.validate(), Err(expected));
        config.admin = Some("127.0.0.1:9100".parse().unwrap());
        assert_eq!(config.validate().is_ok(), cfg!(feature = "admin"));
    }

    #[test]
    fn no_endpoint_is_a_client_and_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn low_water_above_the_limit_is_refused() {
        let mut config = with_tcp();
        config.low_water = Some(config.write_limit + 1);
        assert!(matches!(
            config.validate(),
            Err(ConfigError::LowWaterAboveLimit { .. })
        ));
        config.low_water = None;
        assert_eq!(config.low_water_mark(), config.write_limit / 2);
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
