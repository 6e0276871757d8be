//! Errors of setting up and running a reactor.

use std::fmt;
use std::io;

use crate::config::ConfigError;

/// Why a reactor could not start or stopped running.
#[derive(Debug)]
pub enum Error {
    /// The configuration cannot work.
    Config(ConfigError),
    /// An endpoint could not be opened (address in use, permission denied, ...).
    Bind {
        /// The endpoint, as `tcp 127.0.0.1:9000`, `udp ...` or `unix /path`.
        endpoint: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// The poller itself failed.
    Poll(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "invalid configuration: {e}"),
            Error::Bind { endpoint, source } => write!(f, "cannot bind {endpoint}: {source}"),
            Error::Poll(e) => write!(f, "event loop failure: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Bind { source, .. } => Some(source),
            Error::Poll(e) => Some(e),
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}
