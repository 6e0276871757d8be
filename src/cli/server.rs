//! Flags shared by every server subcommand, and running a reactor with them: raising
//! the file-descriptor limit, turning SIGINT/SIGTERM into a graceful shutdown, and
//! reporting bind failures as one clear line; listeners inherited from a service
//! manager take the place of the default TCP listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::inherit::Inherited;
use crate::services::Echo;
use crate::{
    Config, LengthCodec, LinesCodec, LoopInfo, Peers, Pool, RawCodec, Reactor, Service, Spread,
    Stats, Stopped,
};

/// Endpoints and limits, for any server subcommand.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// TCP address to listen on (a bare port means 127.0.0.1:PORT); repeatable; IPv6 as
    /// [::1]:9000; tls://ADDR serves TLS there (with --tls-cert and --tls-key); "off"
    /// disables TCP
    // The comment is also the flag's help, so the address stays bare rather than in
    // backticks; rustdoc would otherwise take `[::1]` for a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long = "tcp", value_name = "ADDR|off")]
    pub tcp: Vec<AddrOrOff>,
    /// UDP address to serve (a bare port means 127.0.0.1:PORT); repeatable; "off"
    /// disables UDP
    #[arg(long = "udp", value_name = "ADDR|off")]
    pub udp: Vec<AddrOrOff>,
    /// Also listen on a Unix-domain stream socket at this path; repeatable.
    #[arg(long = "unix", value_name = "PATH")]
    pub unix: Vec<PathBuf>,
    /// Serve Prometheus metrics (GET /metrics) and a health check (GET /healthz) over
    /// HTTP on this address (a bare port means 127.0.0.1:PORT; tls://ADDR for HTTPS);
    /// off by default
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<TlsAddr>,
    /// How long an admin request may take to arrive whole; an admin connection
    /// silent for longer is closed.
    #[arg(long, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub admin_timeout: u64,
    /// Largest frame payload accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u32).range(0..=1 << 30))]
    pub max_frame: u32,
    /// Close connections whose peer sends nothing for this long (time while a
    /// connection is not read, because its output is backed up, does not count);
    /// 0 = never.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub idle_timeout: u64,
    /// Reset connections whose queued output makes no progress for this long (the peer
    /// stopped reading); 0 = never.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub send_timeout: u64,
    /// Buffer memory of all connections together above which those holding the most
    /// are reset: bytes, or with a suffix (KiB, MiB, GiB); 0 = no budget.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub memory_budget: u64,
    /// Close connections that start a frame and do not finish it in this time; 0 = never.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub frame_timeout: u64,
    /// Most connections held at once; more are accepted and closed at once.
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_conns: u32,
    /// Connections accepted per listener per turn of the loop; the rest wait a turn, so
    /// a storm of connects cannot starve established connections.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub accept_budget: u32,
    /// Output queued per connection above which its reading pauses, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub write_limit: u64,
    /// listen() backlog of stream listeners.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub backlog: i32,
    /// Set SO_REUSEPORT on TCP listeners (several servers share a port).
    #[arg(long)]
    pub reuse_port: bool,
    /// Event loops, one thread each (1: the single loop on the main thread).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// How connections are spread over several loops: reuseport (one SO_REUSEPORT
    /// listener per loop, the kernel picks) or handoff (loop 0 accepts and deals them
    /// round robin).
    #[arg(long, value_name = "HOW", default_value = "reuseport")]
    pub spread: Spread,
    /// Log the counters this often; 0 = never.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub stats_interval: u64,
    /// On SIGINT/SIGTERM, wait at most this long for queued output to drain.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub shutdown_grace: u64,
    /// The certificate chain (PEM, leaf first) of every tls:// endpoint; read again on
    /// SIGHUP.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert; read again on SIGHUP.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Ask clients of tls:// endpoints for a certificate, and accept only those that
    /// chain to a CA in this PEM file.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// An address flag that may ask for TLS: `ADDR`, or `tls://ADDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsAddr {
    /// Where.
    pub addr: SocketAddr,
    /// Served over TLS.
    pub tls: bool,
}

impl FromStr for TlsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match strip_tls(s) {
            Some(rest) => parse_addr(rest).map(|addr| TlsAddr { addr, tls: true }),
            None => parse_addr(s).map(|addr| TlsAddr { addr, tls: false }),
        }
    }
}

impl std::fmt::Display for TlsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tls {
            true => write!(f, "tls://{}", self.addr),
            false => write!(f, "{}", self.addr),
        }
    }
}

/// The address behind a `tls://` prefix (any case), if there is one.
fn strip_tls(s: &str) -> Option<&str> {
    let prefix = s.get(..6)?;
    prefix.eq_ignore_ascii_case("tls://").then(|| &s[6..])
}

/// A `--tcp` or `--udp` value: an address, a `tls://` address (TCP), or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrOrOff {
    /// Serve here.
    Addr(SocketAddr),
    /// Serve TLS here.
    Tls(SocketAddr),
    /// Not this transport at all.
    Off,
}

impl FromStr for AddrOrOff {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(AddrOrOff::Off);
        }
        if let Some(rest) = strip_tls(s) {
            return parse_addr(rest).map(AddrOrOff::Tls);
        }
        parse_addr(s)
            .map(AddrOrOff::Addr)
            .map_err(|e| format!("{e}, or \"off\""))
    }
}

/// The plain and the `tls://` addresses one transport's flags ask for: `default`
/// (plain) when none is given, none at all when any of them is `off`.
fn addresses(flags: &[AddrOrOff], default: SocketAddr) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    if flags.is_empty() {
        return (vec![default], Vec::new());
    }
    let (mut plain, mut tls) = (Vec::new(), Vec::new());
    for flag in flags {
        match flag {
            AddrOrOff::Addr(addr) => plain.push(*addr),
            AddrOrOff::Tls(addr) => tls.push(*addr),
            AddrOrOff::Off => return (Vec::new(), Vec::new()),
        }
    }
    (plain, tls)
}

/// An address flag: `IP:PORT`, `[IPv6]:PORT`, or a bare port on 127.0.0.1.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        format!("'{s}' is not an address: expected IP:PORT (127.0.0.1:9000, [::1]:9000) or a port")
    })
}

/// A size flag: bytes, or a number with a binary suffix (`KiB`, `MiB`, `GiB`; also
/// `K`, `M`, `G`, in either case).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = match s[digits.len()..].to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{s}': use bytes, or KiB, MiB or GiB"
            ))
        }
    };
    let number: u64 = digits.trim().parse().map_err(|_| {
        format!("'{s}' is not a size: expected bytes, or a number with KiB, MiB or GiB")
    })?;
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Says in `--help` which address a server subcommand serves when given none: `arg`
/// (each of the subcommand's flags in turn), with the real default for `--tcp` and
/// `--udp`.
pub fn with_default_port(arg: clap::Arg, port: u16) -> clap::Arg {
    if !matches!(arg.get_id().as_str(), "tcp" | "udp") {
        return arg;
    }
    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    arg.help(format!("{help} [default: 127.0.0.1:{port}]"))
}

impl ServerArgs {
    /// The reactor configuration these flags describe, with `default_port` on
    /// 127.0.0.1 for TCP and UDP when no address is given.
    pub fn config(&self, default_port: u16) -> Result<Config, String> {
        self.config_with(default_port, &Inherited::default())
    }

    /// [`ServerArgs::config`] for a process that inherited `inherited`: inherited
    /// listeners take the place of the default TCP listener, so without `--tcp` the
    /// configuration has no TCP address; an explicit `--tcp` adds to them. UDP is
    /// unaffected.
    ///
    /// An error (to show as it is) when `--tls-cert`, `--tls-key` or `--tls-client-ca`
    /// cannot be read, or a `tls://` endpoint has no certificate.
    pub fn config_with(&self, default_port: u16, inherited: &Inherited) -> Result<Config, String> {
        let default = SocketAddr::from(([127, 0, 0, 1], default_port));
        let (mut tcp, tls_tcp) = addresses(&self.tcp, default);
        if self.tcp.is_empty() && !inherited.is_empty() {
            tcp.clear(); // the inherited sockets are the listeners
        }
        let (udp, udp_tls) = addresses(&self.udp, default);
        if !udp_tls.is_empty() {
            return Err("--udp tls://: TLS is for stream endpoints (DTLS is not served)".into());
        }
        let tls = self.tls_server()?;
        let tls_asked = tls_tcp.first().map(|addr| format!("--tcp tls://{addr}"));
        let tls_asked = tls_asked.or_else(|| {
            let admin = self.admin.filter(|admin| admin.tls)?;
            Some(format!("--admin {admin}"))
        });
        if let (Some(flag), None) = (tls_asked, &tls) {
            return Err(format!(
                "{flag}: a TLS endpoint needs a certificate and key (--tls-cert and --tls-key)"
            ));
        }
        let seconds = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        Ok(Config {
            tls_tcp,
            admin_tls: self.admin.is_some_and(|admin| admin.tls),
            tls,
            send_timeout: seconds(self.send_timeout),
            memory_budget: (self.memory_budget > 0)
                .then(|| usize::try_from(self.memory_budget).unwrap_or(usize::MAX)),
            tcp,
            udp,
            unix: self.unix.clone(),
            backlog: self.backlog,
            reuse_port: self.reuse_port,
            idle_timeout: seconds(self.idle_timeout),
            frame_timeout: seconds(self.frame_timeout),
            max_conns: self.max_conns as usize,
            accept_budget: self.accept_budget as usize,
            write_limit: self.write_limit as usize,
            stats_interval: seconds(self.stats_interval),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            admin: self.admin.map(|admin| admin.addr),
            admin_timeout: Duration::from_secs(self.admin_timeout),
            ..Config::default()
        })
    }

    /// The certificate and key of `--tls-cert` and `--tls-key`, if given.
    pub fn tls_server(&self) -> Result<Option<crate::tls::TlsServer>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        crate::tls::TlsServer::from_pem_files(cert, key, self.tls_client_ca.as_deref())
            .map(Some)
            .map_err(|e| format!("--tls-cert/--tls-key: {e}"))
    }
}

/// How TCP bytes are cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Framing {
    /// 4-byte big-endian payload length, then the payload (switchboard's format).
    Length,
    /// No framing: bytes are handed to the service as they arrive (for nc and plain
    /// stream clients).
    Raw,
    /// Newline-terminated lines (at most --max-frame bytes each).
    Lines,
}

/// `switchboard echo`.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Endpoints and limits.
    #[command(flatten)]
    pub server: ServerArgs,
    /// How TCP bytes are cut into messages.
    #[arg(long, value_enum, default_value_t = Framing::Length)]
    pub framing: Framing,
}

/// Runs the echo service with the framing chosen.
pub fn run_echo(args: EchoArgs) -> ExitCode {
    let inherited = match take_inherited(&args.server) {
        Ok(inherited) => inherited,
        Err(code) => return code,
    };
    let config = match args.server.config_with(9000, &inherited) {
        Ok(config) => config,
        Err(e) => return usage_error(&e),
    };
    let max = args.server.max_frame as usize;
    let (server, fds) = (&args.server, inherited);
    match args.framing {
        Framing::Length => {
            let codec = LengthCodec::new(max).with_text_hint(
                "for lines of text, serve it with `switchboard echo --framing lines`",
            );
            serve_loops(server, config, fds, codec, echo, no_setup, |_| {})
        }
        Framing::Raw => serve_loops(server, config, fds, RawCodec, echo, no_setup, |_| {}),
        Framing::Lines => {
            let codec = LinesCodec::new(max);
            serve_loops(server, config, fds, codec, echo, no_setup, |_| {})
        }
    }
}

/// The listeners inherited from a service manager (none without `LISTEN_FDS`), or the
/// exit code when they cannot be served: 1 for a descriptor that is not a stream
/// listener, 2 (a usage error) for `--threads` above 1, since the loops of a pool
/// each open listeners of their own.
pub fn take_inherited(server: &ServerArgs) -> Result<Inherited, ExitCode> {
    let inherited = Inherited::from_env().map_err(|e| {
        eprintln!("switchboard: {e}");
        ExitCode::FAILURE
    })?;
    if !inherited.is_empty() && server.threads > 1 {
        eprintln!("switchboard: inherited sockets need --threads 1");
        return Err(ExitCode::from(2));
    }
    Ok(inherited)
}

/// For services whose reactors need nothing besides their configuration.
pub fn no_setup<S: Service>(_: &mut Reactor<S>) -> Result<(), crate::Error> {
    Ok(())
}

/// Each loop's echo service.
fn echo<C: crate::Codec>(_: LoopInfo<Echo<C>>) -> Echo<C> {
    Echo::default()
}

/// Serves `config` with `--threads` loops: the single loop on this thread when there
/// is one ([`serve_then`]), else a [`Pool`] spread as `--spread` says, stopped by
/// SIGINT/SIGTERM. `inherited` listeners are served by the single loop (see
/// [`take_inherited`]). `make` makes each loop's service; `setup` runs on each loop's
/// reactor once it has bound (see [`Pool::start_with`]); `report` runs on each loop's
/// thread with what the loop gave back.
pub fn serve_loops<S>(
    server: &ServerArgs,
    config: Config,
    inherited: Inherited,
    codec: S::Codec,
    make: impl Fn(LoopInfo<S>) -> S + Send + Sync + 'static,
    setup: impl Fn(&mut Reactor<S>) -> Result<(), crate::Error> + Send + Sync + 'static,
    report: impl Fn(&Stopped<S>) + Send + Sync + 'static,
) -> ExitCode
where
    S: Service + 'static,
    S::Codec: Clone + Send + 'static,
{
    if server.threads <= 1 {
        let service = make(LoopInfo {
            index: 0,
            count: 1,
            peers: Peers::none(),
        });
        return serve_prepared(config, inherited, service, codec, setup, report);
    }
    if nothing_to_serve(&config, &inherited) {
        return ExitCode::from(2);
    }
    raise_fd_limit();
    let pool = Pool::new(config, usize::from(server.threads))
        .spread(server.spread)
        .stop_on_signals();
    let finish = move |stopped: Stopped<S>| {
        report(&stopped);
        (stopped.stats, stopped.forced)
    };
    pool.start_with(codec, make, setup, finish)
        .and_then(|running| running.wait())
        .map(|loops| {
            let mut total = Stats::default();
            loops.iter().for_each(|(stats, _)| total.add(stats));
            log::info!("served by {} loops: {total}", loops.len());
            loops.iter().any(|(_, forced)| *forced)
        })
        .map_or_else(failed, stop_code)
}

/// True (after saying so) when the flags leave no endpoint at all and none was
/// inherited.
fn nothing_to_serve(config: &Config, inherited: &Inherited) -> bool {
    let nothing = config.tcp.is_empty()
        && config.tls_tcp.is_empty()
        && config.udp.is_empty()
        && config.unix.is_empty()
        && inherited.is_empty();
    if nothing {
        eprintln!(
            "switchboard: nothing to serve: --tcp off and --udp off, no --unix path, and no inherited socket"
        );
    }
    nothing
}

/// Binds, installs the signal handlers, runs until SIGINT/SIGTERM, and maps the
/// outcome to an exit code.
pub fn serve<S>(config: Config, service: S, codec: S::Codec) -> ExitCode
where
    S: Service + 'static,
    S::Codec: Clone,
{
    serve_then(config, service, codec, |_| {})
}

/// [`serve`], then `report` on what the run gave back (a service's own summary).
/// Exit codes: 0 after a graceful shutdown, 130 after a second signal cut it short,
/// 1 when the server cannot start or its loop fails, 2 when the flags leave nothing
/// to serve.
pub fn serve_then<S>(
    config: Config,
    service: S,
    codec: S::Codec,
    report: impl FnOnce(&Stopped<S>),
) -> ExitCode
where
    S: Service + 'static,
    S::Codec: Clone,
{
    serve_prepared(
        config,
        Inherited::default(),
        service,
        codec,
        no_setup,
        report,
    )
}

/// [`serve_then`], with the `inherited` listeners adopted and then `setup` run on the
/// reactor once it has bound.
fn serve_prepared<S>(
    config: Config,
    inherited: Inherited,
    service: S,
    codec: S::Codec,
    setup: impl FnOnce(&mut Reactor<S>) -> Result<(), crate::Error>,
    report: impl FnOnce(&Stopped<S>),
) -> ExitCode
where
    S: Service + 'static,
    S::Codec: Clone,
{
    if nothing_to_serve(&config, &inherited) {
        return ExitCode::from(2);
    }
    raise_fd_limit();
    let adopted = codec.clone();
    let bound = Reactor::bind(config, service, codec)
        .and_then(|mut reactor| inherited.adopt(&mut reactor, &adopted).map(|()| reactor))
        .and_then(|mut reactor| setup(&mut reactor).map(|()| reactor));
    let mut reactor = match bound {
        Ok(reactor) => reactor,
        Err(e) => return failed(e),
    };
    if let Err(e) = reactor.stop_on_signals() {
        eprintln!("switchboard: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    match reactor.run() {
        Ok(stopped) => {
            report(&stopped);
            stop_code(stopped.forced)
        }
        Err(e) => failed(e),
    }
}

/// Says what is wrong with the flags; exit code 2, as clap's own usage errors.
pub fn usage_error(message: &str) -> ExitCode {
    eprintln!("switchboard: {message}");
    ExitCode::from(2)
}

/// The exit code after a shutdown: 130 when a second signal cut it short, else 0.
fn stop_code(forced: bool) -> ExitCode {
    if forced {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    }
}

/// Says why the server could not run, and exits 1.
fn failed(e: crate::Error) -> ExitCode {
    eprintln!("switchboard: {e}");
    ExitCode::FAILURE
}

/// Raises the soft open-file limit to the hard limit: every connection is a descriptor.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::debug!("open-file limit: {limit}"),
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_bytes_or_a_binary_suffix() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
