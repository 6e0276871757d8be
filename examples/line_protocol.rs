//! A text protocol over newline-terminated lines: a small in-memory key-value store
//! that every connection shares, with keys that can expire.
//!
//! It shows that the decoder is pluggable: the service below never sees a length
//! prefix, because the reactor runs it with [`LinesCodec`], and the same `Service` API
//! serves text as well as binary frames. It also shows state shared by all connections
//! without a lock (one thread owns it), and typed service timers: each carries the key
//! it expires.
//!
//! ```text
//! cargo run --example line_protocol            # on 127.0.0.1:9200
//! nc 127.0.0.1 9200
//! SET greeting hello world      -> OK
//! GET greeting                  -> VALUE hello world
//! EXPIRE greeting 5             -> OK            (gone in 5 seconds)
//! DEL greeting                  -> DELETED
//! COUNT                         -> 0
//! QUIT                          -> BYE, and the server closes the connection
//! ```
//!
//! Replies are one line each. Empty lines are ignored; lines longer than 64 KiB are a
//! protocol error and close the connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchboard::cli::{serve, LogArgs};
use switchboard::{CloseMode, Config, ConnId, Context, LinesCodec, Service, TimerId};

/// The longest command line accepted.
const MAX_LINE: usize = 64 * 1024;

/// A shared key-value store spoken in lines of text.
#[derive(Debug, Parser)]
#[command(name = "line_protocol")]
struct Args {
    /// TCP address to listen on.
    #[arg(long, default_value = "127.0.0.1:9200")]
    addr: SocketAddr,
    /// Logging (--log-level, --trace).
    #[command(flatten)]
    log: LogArgs,
}

/// The store and the timers that expire its keys.
#[derive(Default)]
struct KeyValue {
    values: HashMap<String, String>,
    /// The pending expiry of a key, to cancel when the key is set again or deleted.
    expiries: HashMap<String, TimerId>,
}

/// What a timer is for: the key it expires.
#[derive(Debug, Clone)]
struct Expire(String);

impl Service for KeyValue {
    type Conn = ();
    type Timer = Expire;
    type Codec = LinesCodec;

    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), line: &[u8]) {
        let Ok(line) = std::str::from_utf8(line) else {
            reply(ctx, conn, "ERROR not UTF-8");
            return;
        };
        let mut words = line.split_whitespace();
        let Some(command) = words.next() else {
            return; // an empty line asks nothing
        };
        let reply = match (command.to_ascii_uppercase().as_str(), words.next()) {
            ("SET", Some(key)) => {
                let value = value_after(line, command, key);
                self.cancel_expiry(ctx, key);
                self.values.insert(key.to_owned(), value.to_owned());
                "OK".to_owned()
            }
            ("GET", Some(key)) => match self.values.get(key) {
                Some(value) => format!("VALUE {value}"),
                None => "NOT_FOUND".to_owned(),
            },
            ("DEL", Some(key)) => {
                self.cancel_expiry(ctx, key);
                match self.values.remove(key) {
                    Some(_) => "DELETED".to_owned(),
                    None => "NOT_FOUND".to_owned(),
                }
            }
            ("EXPIRE", Some(key)) => self.expire(ctx, key, words.next()),
            ("COUNT", None) => self.values.len().to_string(),
            ("QUIT", None) => {
                reply(ctx, conn, "BYE");
                ctx.close(conn, CloseMode::Flush);
                return;
            }
            _ => format!("ERROR unknown command: {line}"),
        };
        self::reply(ctx, conn, &reply);
    }

    fn on_timer(&mut self, _ctx: &mut Context<'_, Self>, timer: TimerId, Expire(key): Expire) {
        // Only the key's current expiry counts (one cancelled late is not it).
        if self.expiries.get(&key) == Some(&timer) {
            log::debug!("{key} expired");
            self.expiries.remove(&key);
            self.values.remove(&key);
        }
    }
}

/// Sends one reply line; a connection that is already closing gets none.
fn reply(ctx: &mut Context<'_, KeyValue>, conn: ConnId, line: &str) {
    if let Err(e) = ctx.send(conn, line.as_bytes()) {
        log::debug!("{conn}: no reply: {e}");
    }
}

impl KeyValue {
    /// `EXPIRE key SECONDS`: removes the key after that many seconds.
    fn expire(&mut self, ctx: &mut Context<'_, Self>, key: &str, seconds: Option<&str>) -> String {
        let Some(seconds) = seconds.and_then(|s| s.parse::<f64>().ok()) else {
            return "ERROR usage: EXPIRE key SECONDS".to_owned();
        };
        let Ok(delay) = Duration::try_from_secs_f64(seconds) else {
            return "ERROR usage: EXPIRE key SECONDS".to_owned();
        };
        if !self.values.contains_key(key) {
            return "NOT_FOUND".to_owned();
        }
        self.cancel_expiry(ctx, key);
        let timer = ctx.set_timer(delay, Expire(key.to_owned()));
        self.expiries.insert(key.to_owned(), timer);
        "OK".to_owned()
    }

    fn cancel_expiry(&mut self, ctx: &mut Context<'_, Self>, key: &str) {
        if let Some(timer) = self.expiries.remove(key) {
            ctx.cancel_timer(timer);
        }
    }
}

/// What follows the command and the key in `line`: the value, spaces inside it kept.
fn value_after<'a>(line: &'a str, command: &str, key: &str) -> &'a str {
    let after_command = line.trim_start().get(command.len()..).unwrap_or("");
    let after_key = after_command.trim_start().get(key.len()..).unwrap_or("");
    after_key.trim()
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    let mut config = Config::default();
    config.tcp.push(args.addr);
    serve(config, KeyValue::default(), LinesCodec::new(MAX_LINE))
}
