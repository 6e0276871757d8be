//! `switchboard chat`: the chat service on TCP and UDP (default 127.0.0.1:9001), with
//! the chat limits as flags.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::server::{serve_loops, take_inherited, ServerArgs};
use crate::services::chat::redis::node::{prepare, RedisSettings};
use crate::services::chat::redis::url::Password;
use crate::services::chat::ChatCodec;
use crate::services::chat::{Chat, ChatLoops, ChatSettings};
use crate::Reactor;

/// `switchboard chat`.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// Endpoints and limits.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Longest message text accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub max_text: usize,
    /// Messages kept per room and replayed to a member who joins it.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub history: usize,
    /// A UDP member that sends nothing for this long leaves the chat.
    #[arg(long, value_name = "SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub udp_expiry: u64,
    /// Rooms with more members than this announce joins and leaves only to the member
    /// concerned (N joins would otherwise cost N²/2 deliveries).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub presence_limit: usize,
    /// The most rooms one member may be in at once.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_rooms: usize,
    /// Bytes a second one UDP source address may be sent in answer to its datagrams
    /// (bursts of twice that); 0 = no limit. Bounds what a forged source reflects.
    #[arg(long, value_name = "BYTES", default_value_t = 65536)]
    pub udp_reply_rate: u64,
    /// UDP sources the reply rate keeps track of at once; the oldest are forgotten
    /// first.
    #[arg(long, value_name = "N", default_value_t = 16384,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub udp_reply_sources: u64,
    /// New UDP members admitted per second (bursts of as many); 0 = no limit.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub udp_join_rate: u32,
    /// The most UDP members at once.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_udp_members: usize,
    /// Serve WebSocket members at ws://ADDR/ws and the chat page at http://ADDR/ (a bare
    /// port means 127.0.0.1:PORT; tls://ADDR for wss:// and https://, with --tls-cert
    /// and --tls-key); messages up to --max-frame bytes.
    #[arg(long, value_name = "ADDR")]
    pub ws: Option<super::TlsAddr>,
    /// Join a cluster of chat servers through this Redis:
    /// `redis://USER:PASSWORD@HOST:PORT/DB`, all but HOST optional (`redis://HOST`,
    /// `redis://:PASSWORD@HOST`; port 6379, the default user and database 0 unless
    /// given; percent-encode @ : / % in USER and PASSWORD). Rooms,
    /// names, direct messages and `list` then span every server (each loop is a node).
    /// `rediss://...` speaks TLS to Redis: its certificate must name HOST and chain to
    /// the system's root certificates or to --tls-ca.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Trust the CA certificates (PEM) in this file too, for a rediss:// --redis URL.
    #[arg(long, value_name = "PATH", requires = "redis")]
    pub tls_ca: Option<PathBuf>,
    /// Present this certificate chain (PEM) to a rediss:// Redis that asks its clients
    /// for one (tls-auth-clients yes, Redis's default).
    #[arg(long, value_name = "PATH", requires = "redis_tls_key")]
    pub redis_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --redis-tls-cert.
    #[arg(long, value_name = "PATH", requires = "redis_tls_cert")]
    pub redis_tls_key: Option<PathBuf>,
    /// Read the Redis password from this file (its content, less one trailing
    /// newline), not from the command line. Which password wins: this file, then the
    /// environment variable SWITCHBOARD_REDIS_PASSWORD, then the --redis URL's.
    #[arg(long, value_name = "PATH", requires = "redis")]
    pub redis_password_file: Option<PathBuf>,
    /// How long a node's heartbeat lives in Redis without a refresh (the node refreshes
    /// it a third of the way through): a server that dies has its members' names freed
    /// by the others after this.
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_ttl: u64,
    /// The most bytes queued for Redis: past it, room events to the other servers are
    /// dropped (and counted) until Redis takes them again, and the members told. Bytes,
    /// or with a suffix (KiB, MiB).
    #[arg(long, value_name = "SIZE", default_value = "4MiB",
          value_parser = super::server::parse_size)]
    pub redis_max_queued: u64,
    /// How long a member waits for an answer that needs Redis (`hello`, a DM to
    /// another server, `list`) before it is told the cluster did not answer.
    #[arg(long, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_reply_timeout: u64,
}

/// Runs the chat service until SIGINT/SIGTERM.
pub fn run(args: ChatArgs) -> ExitCode {
    let inherited = match take_inherited(&args.server) {
        Ok(inherited) => inherited,
        Err(code) => return code,
    };
    let mut config = match args.server.config_with(9001, &inherited) {
        Ok(config) => config,
        Err(e) => return super::server::usage_error(&e),
    };
    if args.server.threads > 1 {
        // Every room event for members on another loop is one job in its inbox: room
        // for bursts of them while that loop is busy.
        config.inbox_capacity = config.inbox_capacity.max(CROSS_LOOP_INBOX);
    }
    let settings = ChatSettings {
        max_text: args.max_text,
        history: args.history,
        udp_expiry: Duration::from_secs(args.udp_expiry),
        presence_limit: args.presence_limit,
        stats_interval: config.stats_interval,
        max_rooms: args.max_rooms,
        udp_reply_rate: args.udp_reply_rate,
        udp_reply_sources: usize::try_from(args.udp_reply_sources).unwrap_or(usize::MAX),
        udp_join_rate: args.udp_join_rate,
        max_udp_members: args.max_udp_members,
        redis: None,
    };
    let settings = match args.redis.as_deref().map(|url| redis_settings(&args, url)) {
        None => settings,
        Some(Ok(redis)) => ChatSettings {
            redis: Some(redis),
            ..settings
        },
        Some(Err(e)) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(2);
        }
    };
    let (redis, ws, max_message) = (
        settings.redis.is_some(),
        args.ws,
        args.server.max_frame as usize,
    );
    let ws_tls = match ws.filter(|ws| ws.tls).map(|_| config.tls.clone()) {
        Some(None) => {
            return super::server::usage_error("--ws tls://: needs --tls-cert and --tls-key")
        }
        Some(Some(tls)) => Some(tls),
        None => None,
    };
    let setup = move |reactor: &mut Reactor<Chat>| {
        if redis {
            prepare(reactor)?;
        }
        if let Some(addr) = ws {
            let opened = match ws_tls.clone() {
                Some(tls) => {
                    crate::services::chat::ws::listen_tls(reactor, addr.addr, max_message, tls)
                }
                None => crate::services::chat::ws::listen(reactor, addr.addr, max_message),
            };
            opened.map_err(|e| {
                // Named by its flag, as the other endpoints are by their kind.
                match e {
                    crate::Error::Bind { source, .. } => crate::Error::Bind {
                        endpoint: format!("--ws {addr}"),
                        source,
                    },
                    other => other,
                }
            })?;
        }
        Ok(())
    };
    let codec = ChatCodec::length(args.server.max_frame as usize);
    let shared = ChatLoops::default();
    let make = move |info| Chat::on_loop(settings.clone(), info, &shared);
    serve_loops(
        &args.server,
        config,
        inherited,
        codec,
        make,
        setup,
        |stopped| {
            let chat = &stopped.service;
            log::info!("{}chat served: {}", chat.label(), chat.stats().get())
        },
    )
}

/// The inbox of each loop of a chat pool, in jobs.
const CROSS_LOOP_INBOX: usize = 64 * 1024;

/// The environment variable the Redis password may come from.
const PASSWORD_ENV: &str = "SWITCHBOARD_REDIS_PASSWORD";

/// The largest password file read: more is a file named by mistake, not a password.
const MAX_PASSWORD_FILE: u64 = 64 * 1024;

/// `--redis` and its limits, with the password from where it wins: the password file,
/// then the environment, then the URL. An error names the flag at fault.
fn redis_settings(args: &ChatArgs, url: &str) -> Result<RedisSettings, String> {
    let ttl = Duration::from_secs(args.redis_ttl);
    let mut redis = RedisSettings::parse(url, ttl).map_err(|e| format!("--redis: {e}"))?;
    trust_tls_ca(&mut redis, args.tls_ca.as_deref())?;
    present_client_certificate(&mut redis, args)?;
    let (password, source) = match &args.redis_password_file {
        Some(path) => (Some(read_password_file(path)?), "--redis-password-file"),
        None => match std::env::var_os(PASSWORD_ENV).filter(|value| !value.is_empty()) {
            Some(value) => (
                Some(Password::new(value.into_encoded_bytes())),
                PASSWORD_ENV,
            ),
            None => (redis.password.clone(), "the --redis URL"),
        },
    };
    let redis = RedisSettings {
        max_queued: usize::try_from(args.redis_max_queued).unwrap_or(usize::MAX),
        reply_timeout: Duration::from_secs(args.redis_reply_timeout),
        password,
        ..redis
    };
    match (&redis.user, &redis.password) {
        (Some(user), None) => Err(format!(
            "--redis: user {user} has no password: give it in the URL, with \
             --redis-password-file or in {PASSWORD_ENV}"
        )),
        (_, Some(_)) => {
            log::info!("chat: the Redis password comes from {source}");
            Ok(redis)
        }
        (None, None) => Ok(redis),
    }
}

/// What a rediss:// link trusts: the system's root certificates, and `--tls-ca`'s.
/// An error when `--tls-ca` cannot be read or is given with a redis:// URL, or when
/// nothing at all is trusted.
fn trust_tls_ca(redis: &mut RedisSettings, ca: Option<&Path>) -> Result<(), String> {
    match (redis.tls.as_mut(), ca) {
        (_, None) => {}
        (None, Some(path)) => {
            return Err(format!(
                "--tls-ca {}: only a rediss:// --redis URL speaks TLS (this one is \
                 redis://)",
                path.display()
            ))
        }
        (Some(tls), Some(path)) => tls
            .trust(path)
            .map_err(|e| format!("--tls-ca {}: {e}", path.display()))?,
    }
    match &redis.tls {
        Some(tls) if tls.trusts_nothing() => Err(
            "--redis rediss://: no CA to check Redis's certificate against (the system \
             has none): give one with --tls-ca"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// `--redis-tls-cert` and `--redis-tls-key`: what a rediss:// link presents to a Redis
/// that asks for a client certificate. An error when they cannot be read or are given
/// with a redis:// URL.
fn present_client_certificate(redis: &mut RedisSettings, args: &ChatArgs) -> Result<(), String> {
    let (Some(cert), Some(key)) = (&args.redis_tls_cert, &args.redis_tls_key) else {
        return Ok(());
    };
    let flags = format!(
        "--redis-tls-cert {} --redis-tls-key {}",
        cert.display(),
        key.display()
    );
    match redis.tls.as_mut() {
        None => Err(format!(
            "{flags}: only a rediss:// --redis URL speaks TLS (this one is redis://)"
        )),
        Some(tls) => tls.present(cert, key).map_err(|e| format!("{flags}: {e}")),
    }
}

/// The password in `path`: the file's content less one trailing newline (`\n` or
/// `\r\n`).
fn read_password_file(path: &Path) -> Result<Password, String> {
    let flag = format!("--redis-password-file {}", path.display());
    let unreadable = |e: std::io::Error| format!("{flag}: cannot read it: {e}");
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_PASSWORD_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_PASSWORD_FILE {
        return Err(format!(
            "{flag}: longer than {MAX_PASSWORD_FILE} bytes, not a password"
        ));
    }
    let password = match bytes.strip_suffix(b"\n") {
        Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
        None => &bytes,
    };
    if password.is_empty() {
        return Err(format!("{flag}: the file is empty"));
    }
    Ok(Password::new(password))
}
