//! A key-value server over lines of text whose clients must log in first, built on
//! the library alone: no command-line helpers, no logger, only the `signals` feature
//! for a graceful shutdown on SIGINT/SIGTERM.
//!
//! It shows per-connection state kept by the reactor (`type Conn`: who the client
//! logged in as, how many requests it made, its failed logins), a store shared by
//! every connection without a lock (one thread owns it), and an idle timeout per
//! connection ([`Context::set_idle_timeout`]): a stranger is closed after a short
//! silence, a logged-in client may stay quiet much longer.
//!
//! ```text
//! cargo run --release --example kv -- --password hunter2   # on 127.0.0.1:9500
//! nc 127.0.0.1 9500
//! GET greeting                  -> ERROR login first
//! AUTH wrong                    -> ERROR wrong password
//! AUTH alice hunter2            -> OK alice      (AUTH hunter2 logs in as "default")
//! SET greeting hello world      -> OK
//! GET greeting                  -> VALUE hello world
//! KEYS                          -> KEYS greeting (every key, sorted; "KEYS" alone if none)
//! DEL greeting                  -> DELETED       (NOT_FOUND if there was none)
//! WHOAMI                        -> USER alice 8  (name, and requests so far)
//! QUIT                          -> BYE, and the server closes the connection
//! ```
//!
//! Before login only `AUTH` and `QUIT` are accepted; anything else is answered
//! `ERROR login first`, and three wrong passwords close the connection. Replies are
//! one line each; empty lines are ignored; lines over 64 KiB close the connection.
//!
//! Flags: `--addr ADDR` (default 127.0.0.1:9500), `--password PASSWORD` (default
//! `secret`), `--login-timeout SECS` (a stranger is closed after this long without a
//! request; default 10), `--idle-timeout SECS` (the same once logged in, 0 = never;
//! default 300). Seconds may have a fraction. On SIGINT or SIGTERM it stops accepting,
//! writes what is queued, prints a summary line to stderr and exits 0 (130 if a second
//! signal cut the shutdown short).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use switchboard::{
    CloseMode, Config, ConnId, Context, LinesCodec, Origin, Reactor, SendError, Service,
};

/// The longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// Wrong passwords a connection may try before it is closed.
const MAX_FAILED_LOGINS: u32 = 3;

const USAGE: &str = "usage: kv [--addr ADDR] [--password PASSWORD] \
                     [--login-timeout SECS] [--idle-timeout SECS]";

/// The command line.
#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    password: String,
    login_timeout: Duration,
    /// `None`: a logged-in client is never closed for being quiet.
    idle_timeout: Option<Duration>,
}

impl Args {
    /// Parses `--flag VALUE` and `--flag=VALUE` pairs; `Err` holds what to print.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args {
            addr: SocketAddr::from(([127, 0, 0, 1], 9500)),
            password: "secret".to_owned(),
            login_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
        };
        while let Some(arg) = args.next() {
            let (flag, value) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), value.to_owned()),
                None => {
                    let value = args.next().ok_or(format!("{arg} needs a value"))?;
                    (arg, value)
                }
            };
            match flag.as_str() {
                "--addr" => {
                    parsed.addr = value.parse().map_err(|e| format!("--addr {value}: {e}"))?
                }
                "--password" => parsed.password = value,
                "--login-timeout" => match seconds(&flag, &value)? {
                    Some(timeout) => parsed.login_timeout = timeout,
                    None => return Err("--login-timeout must be more than 0".to_owned()),
                },
                "--idle-timeout" => parsed.idle_timeout = seconds(&flag, &value)?,
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(parsed)
    }
}

/// A number of seconds, fractions allowed; 0 is `None`.
fn seconds(flag: &str, value: &str) -> Result<Option<Duration>, String> {
    let secs: f64 = value.parse().map_err(|e| format!("{flag} {value}: {e}"))?;
    let duration = Duration::try_from_secs_f64(secs).map_err(|e| format!("{flag} {value}: {e}"))?;
    Ok((!duration.is_zero()).then_some(duration))
}

/// The store, shared by every connection, and the server's own counters.
struct Kv {
    password: String,
    login_timeout: Duration,
    idle_timeout: Option<Duration>,
    store: BTreeMap<String, String>,
    logins: u64,
    failed_logins: u64,
    requests: u64,
}

/// What the server knows about one connection.
#[derive(Debug, Default)]
struct Session {
    /// Who it logged in as; `None` until it has.
    user: Option<String>,
    /// Requests it has made, refused ones included.
    requests: u64,
    /// Wrong passwords so far.
    failed_logins: u32,
}

impl Service for Kv {
    type Conn = Session;
    type Timer = ();
    type Codec = LinesCodec;

    fn on_connect(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        _: &mut Session,
        _: Origin,
    ) {
        // A stranger gets a short while to log in; AUTH lengthens it.
        ctx.set_idle_timeout(conn, Some(self.login_timeout));
    }

    fn on_frame(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        session: &mut Session,
        line: &[u8],
    ) {
        let Ok(line) = std::str::from_utf8(line) else {
            reply(ctx, conn, "ERROR not UTF-8");
            return;
        };
        let mut words = line.split_whitespace();
        let Some(command) = words.next() else {
            return; // an empty line asks nothing
        };
        session.requests += 1;
        self.requests += 1;
        let command = command.to_ascii_uppercase();
        let reply = match (command.as_str(), &session.user) {
            ("QUIT", _) => {
                self::reply(ctx, conn, "BYE");
                ctx.close(conn, CloseMode::Flush);
                return;
            }
            ("AUTH", _) => self.auth(ctx, conn, session, words.collect()),
            (_, None) => "ERROR login first".to_owned(),
            (_, Some(user)) => self.command(&command, words, line, user, session.requests),
        };
        self::reply(ctx, conn, &reply);
        if session.failed_logins >= MAX_FAILED_LOGINS {
            ctx.close(conn, CloseMode::Flush);
        }
    }
}

impl Kv {
    /// `AUTH PASSWORD` (user "default") or `AUTH USER PASSWORD`.
    fn auth(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        session: &mut Session,
        words: Vec<&str>,
    ) -> String {
        let (user, password) = match words[..] {
            [password] => ("default", password),
            [user, password] => (user, password),
            _ => return "ERROR usage: AUTH [USER] PASSWORD".to_owned(),
        };
        if password != self.password {
            session.failed_logins += 1;
            self.failed_logins += 1;
            return match session.failed_logins >= MAX_FAILED_LOGINS {
                true => "ERROR wrong password; goodbye".to_owned(),
                false => "ERROR wrong password".to_owned(),
            };
        }
        self.logins += 1;
        session.user = Some(user.to_owned());
        // Logged in: the long idle timeout from now on.
        ctx.set_idle_timeout(conn, self.idle_timeout);
        format!("OK {user}")
    }

    /// A command of a logged-in client.
    fn command<'a>(
        &mut self,
        command: &str,
        mut words: impl Iterator<Item = &'a str>,
        line: &str,
        user: &str,
        requests: u64,
    ) -> String {
        match (command, words.next()) {
            ("SET", Some(key)) => {
                let value = value_after(line, key);
                self.store.insert(key.to_owned(), value.to_owned());
                "OK".to_owned()
            }
            ("GET", Some(key)) => match self.store.get(key) {
                Some(value) => format!("VALUE {value}"),
                None => "NOT_FOUND".to_owned(),
            },
            ("DEL", Some(key)) => match self.store.remove(key) {
                Some(_) => "DELETED".to_owned(),
                None => "NOT_FOUND".to_owned(),
            },
            ("KEYS", None) => self.store.keys().fold("KEYS".to_owned(), |mut all, key| {
                all.push(' ');
                all.push_str(key);
                all
            }),
            ("WHOAMI", None) => format!("USER {user} {requests}"),
            _ => format!("ERROR unknown command: {line}"),
        }
    }
}

/// Sends one reply line.
fn reply(ctx: &mut Context<'_, Kv>, conn: ConnId, line: &str) {
    match ctx.send(conn, line.as_bytes()) {
        Ok(()) => {}
        // Closing already (after QUIT, say, or its peer gone): no one to answer.
        Err(SendError::Closed) => {}
        // Lines are never refused by the codec; should that change, say so.
        Err(e) => eprintln!("kv: {conn}: cannot reply: {e}"),
    }
}

/// What follows the command and the key in `line`: the value, spaces inside it kept.
fn value_after<'a>(line: &'a str, key: &str) -> &'a str {
    let line = line.trim_start();
    let after_command = line.find(char::is_whitespace).map_or("", |at| &line[at..]);
    let after_key = after_command.trim_start().get(key.len()..).unwrap_or("");
    after_key.trim()
}

fn main() -> ExitCode {
    if std::env::args().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("kv: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut config = Config::default();
    config.tcp.push(args.addr);
    config.idle_timeout = args.idle_timeout;
    let kv = Kv {
        password: args.password,
        login_timeout: args.login_timeout,
        idle_timeout: args.idle_timeout,
        store: BTreeMap::new(),
        logins: 0,
        failed_logins: 0,
        requests: 0,
    };
    let mut reactor = match Reactor::bind(config, kv, LinesCodec::new(MAX_LINE)) {
        Ok(reactor) => reactor,
        Err(e) => {
            eprintln!("kv: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = reactor.stop_on_signals() {
        eprintln!("kv: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    for endpoint in reactor.endpoints() {
        eprintln!("kv: listening on {endpoint}");
    }
    let stopped = match reactor.run() {
        Ok(stopped) => stopped,
        Err(e) => {
            eprintln!("kv: {e}");
            return ExitCode::FAILURE;
        }
    };
    let kv = &stopped.service;
    eprintln!(
        "kv: stopped: {} keys, {} logins, {} refused, {} requests; {}",
        kv.store.len(),
        kv.logins,
        kv.failed_logins,
        kv.requests,
        stopped.stats
    );
    match stopped.forced {
        true => ExitCode::from(130),
        false => ExitCode::SUCCESS,
    }
}
