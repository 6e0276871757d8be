//! `switchboard bench`: the load generator's flags, and running it.
//!
//! Exit codes: 0 when every reply was correct and every connection opened; 1 when the
//! run found errors or could not run at all (server unreachable, bad options, a server
//! that answers nothing or speaks another protocol); 130 when Ctrl-C (SIGINT, or
//! SIGTERM) cut the run short, after printing the summary of what was measured.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::loadgen::{self, Listeners, LoadError, Mode, Options, TlsOptions};

/// The exit code of a run cut short by a signal: 128 + SIGINT, as shells report it.
const INTERRUPTED: u8 = 130;

/// `switchboard bench`: drive load at a server and check every reply.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The server to load [default: 127.0.0.1:9000 (`switchboard echo`); with --mode
    /// chat, 127.0.0.1:9001 (`switchboard chat`)]
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<SocketAddr>,
    /// Several servers: connections are dealt to them round robin (the nodes of a chat
    /// cluster, or servers sharing a port with --reuse-port on other addresses).
    #[arg(
        long,
        value_name = "ADDR,ADDR,...",
        value_delimiter = ',',
        conflicts_with = "addr"
    )]
    pub addrs: Vec<SocketAddr>,
    /// What to send.
    #[arg(long, value_enum, default_value_t = BenchMode::Framed)]
    pub mode: BenchMode,
    /// Active connections (udp: sockets; chat: room members).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub conns: usize,
    /// Messages in flight per connection (chat: per sender).
    #[arg(long, value_name = "D", default_value_t = 1)]
    pub depth: usize,
    /// Payload bytes per message (chat: text bytes), at least 8.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub size: usize,
    /// Seconds of measured load.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of load before measuring, not counted.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub warmup: f64,
    /// Extra connections held idle for the whole run.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub idle: usize,
    /// Spread client sockets over 127.0.0.1 ..= 127.0.0.K (past ~28,000 connections).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub src_ips: u8,
    /// Messages per second per connection (open loop); default: as fast as replies come.
    #[arg(long, value_name = "MSGS")]
    pub rate: Option<f64>,
    /// Stop once this many messages are answered (no warm-up; for instruction counts).
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,
    /// Chat: how many members publish; the others only listen (0: all of them, with
    /// --room).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub senders: usize,
    /// Chat: how the members that only listen take their deliveries. `check` parses
    /// each one, checks every sender's order and times it; `count` counts `msg` frames
    /// by their first and last bytes, without parsing them (no order check and no
    /// latency for the listeners: latency comes from the senders, which still check
    /// everything), to measure a fan-out faster than JSON parsing here can follow.
    /// Each counting listener compares its count with what was published at the end.
    /// `count` needs the run's own room (no --room, --runs or --procs).
    #[arg(long, value_enum, default_value_t = ListenersArg::Check)]
    pub listeners: ListenersArg,
    /// Chat: join this room, which other runs may share [default: a room of the
    /// run's own].
    #[arg(long, value_name = "NAME")]
    pub room: Option<String>,
    /// Chat: how many runs (processes) share --room. Each waits until all have their
    /// members in before it sends, and until every sender's last message has come
    /// before it leaves.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub runs: usize,
    /// Chat: the run's id, in its member names and sender ids [default: from the
    /// process id and the time].
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// With --json: the latency histogram's buckets too ([ns, count] pairs), to merge
    /// the latencies of several runs.
    #[arg(long)]
    pub histogram: bool,
    /// Seconds a connection may take to open before it counts as a connect failure.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Speak TLS on every connection (framed, raw, handshakes): each is dialled, its
    /// handshake timed from the TCP connect to its end, and the summary says how long
    /// handshakes took. Full handshakes only: no session resumption.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: trust the CA certificates in this PEM file, besides the system's.
    #[arg(long, value_name = "PATH", requires = "tls")]
    pub tls_ca: Option<PathBuf>,
    /// With --tls: the name the server's certificate must be for [default: the
    /// server's IP address].
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_name: Option<String>,
    /// The server's process id: report its CPU time and memory (Linux /proc).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Spread the run over N worker processes, each under its own open-file limit and
    /// with its share of --conns, --idle, --senders and --messages, and print one
    /// summary merged from theirs. Chat workers share the room: --runs counts bench
    /// commands (each with the same --procs), the workers wait for each other.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub procs: usize,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// Length-prefixed frames (switchboard's wire format).
    Framed,
    /// Unframed stream echo (a `--framing raw` server).
    Raw,
    /// UDP datagrams.
    Udp,
    /// Chat: members join one room, senders publish.
    Chat,
    /// TLS handshakes (needs --tls): --conns connections at a time, each opened,
    /// taken through its handshake and closed, then replaced; counts handshakes/s.
    Handshakes,
}

/// `--listeners` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListenersArg {
    /// Parse, check and time every delivery.
    Check,
    /// Count `msg` frames without parsing them.
    Count,
}

impl BenchArgs {
    /// The load generator's options.
    pub fn options(&self) -> Result<Options, String> {
        let seconds = |name: &str, s: f64| {
            Duration::try_from_secs_f64(s).map_err(|_| format!("--{name} {s}: not a duration"))
        };
        let mode = match self.mode {
            BenchMode::Framed => Mode::Framed,
            BenchMode::Raw => Mode::Raw,
            BenchMode::Udp => Mode::Udp,
            BenchMode::Chat => Mode::Chat,
            BenchMode::Handshakes => Mode::Handshakes,
        };
        let (addr, more_addrs) = match self.addrs.split_first() {
            Some((first, rest)) => (*first, rest.to_vec()),
            None => (self.addr.unwrap_or_else(|| mode.default_addr()), Vec::new()),
        };
        Ok(Options {
            addr,
            more_addrs,
            mode,
            conns: self.conns,
            depth: self.depth,
            size: self.size,
            duration: seconds("duration", self.duration)?,
            warmup: seconds("warmup", self.warmup)?,
            idle: self.idle,
            src_ips: self.src_ips,
            rate: self.rate,
            messages: self.messages,
            senders: self.senders,
            listeners: match self.listeners {
                ListenersArg::Check => Listeners::Check,
                ListenersArg::Count => Listeners::Count,
            },
            room: self.room.clone(),
            runs: self.runs,
            run_id: self.run_id.clone(),
            histogram: self.histogram,
            connect_timeout: seconds("connect-timeout", self.connect_timeout)?,
            server_pid: self.server_pid,
            progress: !self.quiet,
            tls: self.tls.then(|| TlsOptions {
                ca: self.tls_ca.clone(),
                name: self.tls_name.clone(),
            }),
        })
    }
}

impl BenchArgs {
    /// The command lines of the workers that carry out this run (`--procs`): each
    /// takes its share of the connections, senders and message budget, a run id of
    /// its own (`{run}w{k}`), and chat workers the one room, waiting for each other.
    fn worker_commands(&self, options: &Options) -> Result<Vec<Command>, String> {
        let program =
            std::env::current_exe().map_err(|e| format!("cannot find its own program: {e}"))?;
        let chat = options.mode == Mode::Chat;
        let spread = if chat {
            self.conns
        } else {
            self.conns + self.idle
        };
        let n = self.procs.min(spread).max(1);
        let share = |total: usize, k: usize| total / n + usize::from(k < total % n);
        let run = options.run_id.clone().unwrap_or_else(loadgen::new_run_id);
        let room = options
            .room
            .clone()
            .unwrap_or_else(|| format!("bench-{run}"));
        let servers: Vec<String> = options.servers().iter().map(|a| a.to_string()).collect();
        let mode = options.mode.name();
        let mut commands = Vec::with_capacity(n);
        for k in 0..n {
            let mut args: Vec<String> = vec!["bench".into(), "--mode".into(), mode.into()];
            let mut flag = |name: &str, value: String| {
                args.push(format!("--{name}"));
                args.push(value);
            };
            flag("addrs", servers.join(","));
            flag("conns", share(self.conns, k).to_string());
            flag("idle", share(self.idle, k).to_string());
            flag("depth", self.depth.to_string());
            flag("size", self.size.to_string());
            flag("duration", self.duration.to_string());
            flag("warmup", self.warmup.to_string());
            flag("src-ips", self.src_ips.to_string());
            flag("connect-timeout", self.connect_timeout.to_string());
            if let Some(rate) = self.rate {
                flag("rate", rate.to_string());
            }
            if let Some(messages) = self.messages {
                let messages = usize::try_from(messages).unwrap_or(usize::MAX);
                flag("messages", share(messages, k).to_string());
            }
            if chat {
                flag("senders", share(self.senders, k).to_string());
                flag("room", room.clone());
                flag("runs", (self.runs * n).to_string());
                flag("run-id", format!("{run}w{k}"));
            }
            if let (0, Some(pid)) = (k, self.server_pid) {
                flag("server-pid", pid.to_string());
            }
            if let Some(ca) = &self.tls_ca {
                flag("tls-ca", ca.display().to_string());
            }
            if let Some(name) = &self.tls_name {
                flag("tls-name", name.clone());
            }
            if self.tls {
                args.push("--tls".into());
            }
            args.extend(["--json".into(), "--histogram".into()]);
            // The first worker's progress lines stand for the run's.
            if k > 0 || self.quiet {
                args.push("--quiet".into());
            }
            let mut command = Command::new(&program);
            command.args(args);
            commands.push(command);
        }
        Ok(commands)
    }
}

/// Runs the load generator (itself, or its workers) and prints its summary.
pub fn run_bench(args: BenchArgs) -> ExitCode {
    let options = match args.options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("switchboard bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if args.procs > 1 {
        run_workers(&args, &options)
    } else {
        // Every connection is a descriptor, here as in the server.
        if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
            log::warn!("cannot raise the open-file limit: {e}");
        }
        loadgen::run_interruptible(&options)
    };
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("switchboard bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{}", summary.to_json());
    } else {
        println!("{summary}");
    }
    if summary.failed() {
        eprintln!(
            "switchboard bench: FAILED: {} errors, {} connect failures",
            summary.errors, summary.connect_failures
        );
    }
    if summary.interrupted {
        if summary.seconds > 0.0 {
            eprintln!(
                "switchboard bench: interrupted: the summary covers the {:.2} s measured before the signal",
                summary.seconds
            );
        } else {
            eprintln!("switchboard bench: interrupted before the measured window began");
        }
        return ExitCode::from(INTERRUPTED);
    }
    if summary.failed() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `--procs`: checks the run's options, then has the workers carry it out.
fn run_workers(args: &BenchArgs, options: &Options) -> Result<loadgen::Summary, LoadError> {
    options.validate()?;
    if options.listeners == Listeners::Count {
        return Err(LoadError::Options(
            "--listeners count takes one process: --procs workers share a room, and a \
             member that counts frames cannot tell their messages apart"
                .into(),
        ));
    }
    let commands = args.worker_commands(options).map_err(LoadError::Worker)?;
    loadgen::run_workers(commands)
}
