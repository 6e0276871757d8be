//! The `switchboard` command line: flags, logging, signals, and starting a reactor.
//! The binary (`src/main.rs`) only calls [`main`].
//!
//! Exit codes: 0 after a clean shutdown, 1 when the server cannot start (for example an
//! address in use), 2 for a bad flag (clap's usage error), 130 when a second signal
//! cut the shutdown short.

mod bench;
mod chat;
mod inherit;
mod server;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use log::LevelFilter;

pub use chat::ChatArgs;
pub use inherit::{Inherited, NotAListener};
pub use server::{usage_error, EchoArgs, Framing, ServerArgs, TlsAddr};
// For servers built on the library (the protocol examples): flags, signals, exit codes.
pub use server::{serve, serve_then};

/// switchboard: one thread, thousands of connections.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
pub struct Cli {
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The logging flags, shared by the binary and the examples built on the library.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log level: off, error, warn, info, debug or trace (RUST_LOG is used when absent).
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<LevelFilter>,
    /// Log every turn of the event loop: events, reads, writes, interest changes,
    /// timers (the same as --log-level trace).
    #[arg(long, global = true)]
    pub trace: bool,
}

impl LogArgs {
    /// Sets up `simple_logger` at the level these flags (or `RUST_LOG`) ask for.
    pub fn init(&self) {
        self.init_with(LevelFilter::Trace);
    }

    /// Like [`LogArgs::init`], but the reactor's own lines are kept at or below
    /// `reactor_level` unless the flags ask for more than info: a client (the load
    /// generator) has no use for a server's "listening on" and "served" lines.
    pub fn init_with(&self, reactor_level: LevelFilter) {
        let from_env = std::env::var("RUST_LOG").ok().and_then(|v| v.parse().ok());
        let level = if self.trace {
            LevelFilter::Trace
        } else {
            self.log_level.or(from_env).unwrap_or(LevelFilter::Info)
        };
        let reactor = if level > LevelFilter::Info {
            level
        } else {
            level.min(reactor_level)
        };
        // mio's own trace lines (registrations) would drown the loop's; keep them at debug.
        let logger = simple_logger::SimpleLogger::new()
            .with_level(level)
            .with_module_level("switchboard::reactor", reactor)
            .with_module_level("mio", level.min(LevelFilter::Debug));
        if let Err(e) = logger.init() {
            eprintln!("cannot set up logging: {e}");
        }
    }
}

/// The subcommands.
// (Parsed once at start: the size of its largest variant costs nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Framed TCP echo plus UDP echo (default 127.0.0.1:9000).
    #[command(mut_args = |c| server::with_default_port(c, 9000))]
    Echo(EchoArgs),
    /// Chat rooms, names and direct messages over TCP and UDP (default 127.0.0.1:9001).
    #[command(mut_args = |c| server::with_default_port(c, 9001))]
    Chat(chat::ChatArgs),
    /// Load generator: drive echo or chat traffic at a server and check every reply.
    Bench(bench::BenchArgs),
}

/// Parses the command line, sets up logging, runs the chosen command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(_) => cli.log.init_with(LevelFilter::Warn),
        _ => cli.log.init(),
    }
    match cli.command {
        Command::Echo(args) => server::run_echo(args),
        Command::Chat(args) => chat::run(args),
        Command::Bench(args) => bench::run_bench(args),
    }
}
