//! The load generator behind `switchboard bench`: a client built on switchboard's own
//! reactor, driving many connections against an echo (or chat) server, checking every
//! reply and measuring throughput and latency. Its connections are dialled with
//! [`crate::Context::connect`] and framed by the reactor's codec; what each one sent and
//! expects is its per-connection state.
//!
//! ```text
//!  probe ──> dial (paced, optional source IPs) ──> workload setup (chat: join)
//!        ──> warm-up (not counted) ──> measured window ──> drain in-flight ──> Summary
//! ```
//!
//! A server that answers nothing, or answers in another protocol than the mode's
//! (chat against an echo server gets its own requests back), ends the run within
//! seconds with an error that names the likely cause ([`LoadError::Silent`],
//! [`LoadError::WrongProtocol`]). With [`run_interruptible`], Ctrl-C ends the measured
//! window early and the summary covers what was measured ([`Summary::interrupted`]).
//!
//! Every message carries its sequence number, and the rest of its payload is a slice of
//! a pseudo-random pattern chosen by connection and sequence, so a reply that is
//! corrupted, reordered, duplicated or meant for another connection is counted as an
//! error rather than as throughput. Buffers are sized once per connection; sending and
//! checking a message allocates nothing, because the generator shares two cores with
//! the server it measures.
//!
//! Module map:
//! - `options`: what to run ([`Options`], [`Mode`]) and its validation.
//! - `connect`: the reachability probe.
//! - `bench`: the run as a [`crate::Service`]: dialling, phases (warm-up, measure,
//!   drain), timers, the per-connection state.
//! - `pace`: when a message may be sent: closed loop, fixed rate, message budget.
//! - `wire`: the codec (length frames, or fixed-size raw messages) and the payload
//!   pattern.
//! - `stream`: the `framed` and `raw` TCP workloads.
//! - `udp`: the `udp` workload.
//! - `chat`: the `chat` workload (join a room, publish, measure deliveries).
//! - `glance`: what a counting listener (`--listeners count`) reads from a frame's
//!   bytes, without parsing it.
//! - `sequence`: what a chat text carries (sender, number, wall-clock stamp) and the
//!   per-sender order check every member makes.
//! - `check`: before the load, does the server speak the mode's protocol?
//! - `report`: counters, the latency histogram, progress lines, the [`Summary`].
//! - `interrupt`: SIGINT and SIGTERM end the run early (feature `signals`).
//! - `procstat`: the server's CPU time and memory, read from `/proc`.
//! - `procs`: one run over several worker processes (`--procs`), one summary merged
//!   from theirs (feature `signals`).
//! - `tls`: `--tls`, the run's dials over TLS: what they trust, the name they check,
//!   what was agreed (feature `tls`; `tls_off` stands in without it).
//! - `handshakes`: the `handshakes` workload (connect, handshake, close, again).

mod bench;
mod chat;
mod check;
mod connect;
mod glance;
mod handshakes;
#[cfg(feature = "signals")]
mod interrupt;
mod options;
mod pace;
#[cfg(feature = "signals")]
mod procs;
mod procstat;
mod report;
mod sequence;
mod stream;
#[cfg(feature = "tls")]
mod tls;
#[cfg(not(feature = "tls"))]
mod tls_off;
#[cfg(not(feature = "tls"))]
use tls_off as tls;
mod udp;
mod wire;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bench::Bench;
pub use chat::new_run_id;
pub use options::{Listeners, Mode, Options, TlsOptions};
#[cfg(feature = "signals")]
pub use procs::run_workers;
pub use report::{ConnectErrors, Latency, ServerUsage, Summary, TlsSummary};

/// Why a run could not be carried out (as opposed to a run that found errors, which
/// returns a [`Summary`] whose [`Summary::failed`] is true).
#[derive(Debug)]
pub enum LoadError {
    /// The options cannot describe a run.
    Options(String),
    /// Nothing answers at the server's address.
    Unreachable {
        /// The address tried.
        addr: SocketAddr,
        /// What the operating system said (or a timeout).
        source: io::Error,
    },
    /// Not one connection could be opened.
    NoConnections {
        /// How many were attempted.
        attempted: usize,
        /// The first failure.
        source: io::Error,
    },
    /// The server accepted the connections but sent nothing back before the load got
    /// under way (during the chat setup, or to the first messages).
    Silent {
        /// The server's address.
        addr: SocketAddr,
        /// The workload.
        mode: Mode,
        /// How long the run waited for a first answer.
        waited: Duration,
    },
    /// The server answered in another protocol than the mode's (an echo server
    /// sending a chat member's requests back, a chat server answering echo frames
    /// with errors).
    WrongProtocol {
        /// The server's address.
        addr: SocketAddr,
        /// The workload.
        mode: Mode,
        /// What the server sent.
        what: String,
    },
    /// The chat setup (hello, join) stopped making progress: some members joined,
    /// then the server went quiet.
    Setup(String),
    /// A worker process of a run spread over several (`--procs`) failed to report.
    Worker(String),
    /// The event loop itself failed.
    Io(io::Error),
}

/// The largest frame the load generator accepts from a server.
const MAX_FRAME: usize = 16 << 20;

/// Runs the load the options describe and returns its summary.
///
/// Fails only when the run cannot be carried out (bad options, server unreachable, no
/// connection opened, a server that answers nothing or speaks another protocol);
/// errors found in the replies are in the summary ([`Summary::failed`]).
pub fn run(options: &Options) -> Result<Summary, LoadError> {
    run_with(options, |_| Ok(()))
}

/// Like [`run`], but the first SIGINT or SIGTERM ends the run early: the measured
/// window closes at once, the replies in flight drain, and the summary covers what was
/// measured until then, with [`Summary::interrupted`] set. A second signal stops at
/// once (replies still in flight are then not awaited, and not counted as
/// unanswered). `switchboard bench` runs this way.
#[cfg(feature = "signals")]
pub fn run_interruptible(options: &Options) -> Result<Summary, LoadError> {
    run_with(options, interrupt::on_signals)
}

/// Runs `options` on a reactor that `prepare` may add to before the loop starts.
fn run_with(
    options: &Options,
    prepare: impl FnOnce(&mut crate::Reactor<Bench>) -> Result<(), crate::Error>,
) -> Result<Summary, LoadError> {
    options.validate()?;
    connect::probe(options)?;
    let config = crate::Config {
        idle_timeout: None,
        frame_timeout: None,
        connect_timeout: options.connect_timeout,
        // Room for whole pipelines of large messages in each connection's queue.
        write_limit: 64 << 20,
        shutdown_grace: Duration::from_secs(2),
        ..crate::Config::default()
    };
    let codec = Bench::codec(options);
    let tls = tls::TlsDials::new(options)?;
    let reactor_error = |e: crate::Error| LoadError::Io(io::Error::other(e.to_string()));
    let bench = Bench::new(options.clone(), tls);
    let mut reactor = crate::Reactor::bind(config, bench, codec).map_err(reactor_error)?;
    if options.mode == Mode::Udp {
        let mut sockets = Vec::with_capacity(options.conns);
        for i in 0..options.conns {
            let local = options
                .source_ip(i)
                .unwrap_or_else(|| loopback(options.addr));
            sockets.push(reactor.bind_udp(local).map_err(reactor_error)?);
        }
        reactor.service_mut().set_udp_sockets(sockets);
    }
    prepare(&mut reactor).map_err(reactor_error)?;
    let stopped = reactor.run().map_err(reactor_error)?;
    stopped.service.into_summary()
}

/// Port 0 on the loopback address of `addr`'s family.
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => ([127, 0, 0, 1], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Options(why) => write!(f, "invalid options: {why}"),
            LoadError::Unreachable { addr, source } => {
                write!(f, "cannot reach {addr}: {source} (is the server running?)")
            }
            LoadError::NoConnections { attempted, source } => {
                write!(
                    f,
                    "none of {attempted} connections could be opened: {source}"
                )
            }
            LoadError::Silent { addr, mode, waited } => write!(
                f,
                "the server at {addr} accepted the connections but answered nothing in {:.1} s: \
                 it does not seem to speak the {} ({})",
                waited.as_secs_f64(),
                mode.protocol(),
                silent_hint(*mode)
            ),
            LoadError::WrongProtocol { addr, mode, what } => write!(
                f,
                "the server at {addr} does not speak the {}: {what} ({})",
                mode.protocol(),
                wrong_protocol_hint(*mode)
            ),
            LoadError::Setup(why) => write!(f, "setup failed: {why}"),
            LoadError::Worker(why) => f.write_str(why),
            LoadError::Io(e) => write!(f, "event loop failure: {e}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Unreachable { source, .. } | LoadError::NoConnections { source, .. } => {
                Some(source)
            }
            LoadError::Io(e) => Some(e),
            LoadError::Options(_)
            | LoadError::Silent { .. }
            | LoadError::WrongProtocol { .. }
            | LoadError::Setup(_)
            | LoadError::Worker(_) => None,
        }
    }
}

/// What a server must do for `--tls`.
const TLS_HINT: &str =
    "is it a TLS server? `switchboard echo --tcp tls://ADDR --tls-cert .. --tls-key ..`";

/// The likely cause when a server answers nothing at all.
fn silent_hint(mode: Mode) -> String {
    let usual = mode.default_addr();
    match mode {
        Mode::Chat => {
            format!("is it a chat server? `switchboard chat` listens on {usual} by default")
        }
        Mode::Raw => {
            "is it an echo server? `--mode raw` needs `switchboard echo --framing raw`".into()
        }
        Mode::Framed | Mode::Udp => {
            format!("is it an echo server? `switchboard echo` listens on {usual} by default")
        }
        Mode::Handshakes => TLS_HINT.into(),
    }
}

/// The likely cause when a server answers in another protocol: the other service.
fn wrong_protocol_hint(mode: Mode) -> String {
    let usual = mode.default_addr();
    match mode {
        Mode::Chat => format!("is it `switchboard echo`? chat listens on {usual} by default"),
        Mode::Raw => "`--mode raw` needs an unframed echo, `switchboard echo --framing raw`".into(),
        Mode::Framed | Mode::Udp => {
            format!("is it `switchboard chat`? echo listens on {usual} by default")
        }
        Mode::Handshakes => TLS_HINT.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_before_the_load_name_the_likely_cause() {
        let echo: SocketAddr = ([127, 0, 0, 1], 9000).into();
        let wrong = LoadError::WrongProtocol {
            addr: echo,
            mode: Mode::Chat,
            what: "it sent our own `hello` request back, as an echo server does".into(),
        };
        assert_eq!(
            wrong.to_string(),
            "the server at 127.0.0.1:9000 does not speak the chat protocol: it sent our own \
             `hello` request back, as an echo server does (is it `switchboard echo`? chat \
             listens on 127.0.0.1:9001 by default)"
        );
        let silent = LoadError::Silent {
            addr: echo,
            mode: Mode::Framed,
            waited: Duration::from_millis(3_020),
        };
        assert_eq!(
            silent.to_string(),
            "the server at 127.0.0.1:9000 accepted the connections but answered nothing in \
             3.0 s: it does not seem to speak the framed echo protocol (is it an echo server? \
             `switchboard echo` listens on 127.0.0.1:9000 by default)"
        );
    }
}
