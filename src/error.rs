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
    /// A listener handed over already open (inherited from a service manager) cannot
    /// be used: it could not be made non-blocking or has no address.
    Inherited {
        /// The listener, as `tcp listener` or `unix listener`.
        endpoint: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// The poller itself failed.
    Poll(io::Error),
    /// A loop of a [`crate::Pool`] panicked; the others were stopped.
    LoopPanicked {
        /// Which loop, from 0.
        index: usize,
        /// What the panic said.
        message: String,
    },
    /// A thread for a loop of a [`crate::Pool`] could not be started.
    Thread(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "invalid configuration: {e}"),
            Error::Bind { endpoint, source } => write!(f, "cannot bind {endpoint}: {source}"),
            Error::Inherited { endpoint, source } => {
                write!(f, "cannot use the inherited {endpoint}: {source}")
            }
            Error::Poll(e) => write!(f, "event loop failure: {e}"),
            Error::LoopPanicked { index, message } => {
                write!(
                    f,
                    "loop {index} panicked ({message}); every loop was stopped"
                )
            }
            Error::Thread(e) => write!(f, "cannot start a loop's thread: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Bind { source, .. } | Error::Inherited { source, .. } => Some(source),
            Error::Poll(e) | Error::Thread(e) => Some(e),
            Error::LoopPanicked { .. } => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}
