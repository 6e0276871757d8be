//! A small Redis-compatible server on the library: RESP2 requests, as `redis-cli` and
//! `redis-benchmark` send them, answered from an in-memory store shared by every
//! connection, with keys that expire on the reactor's timers and publish/subscribe.
//! Built on the library alone, with only the `signals` feature (like `kv.rs`).
//!
//! ```text
//! cargo run --release --example resp            # on 127.0.0.1:6380
//! redis-cli -p 6380 SET greeting hello EX 60    -> OK
//! redis-cli -p 6380 GET greeting                -> "hello"
//! redis-cli -p 6380 TTL greeting                -> (integer) 60
//! redis-cli -p 6380 SUBSCRIBE news             (another terminal)
//! redis-cli -p 6380 PUBLISH news hi            -> (integer) 1, and "hi" arrives above
//! redis-benchmark -p 6380 -t set,get,incr,ping -P 16 -q
//! ```
//!
//! Commands: `GET`, `SET key value [EX s|PX ms] [NX|XX]`, `DEL key...`, `INCR`,
//! `EXPIRE key s`, `TTL`, `PING [msg]`, `ECHO`, `PUBLISH`, `SUBSCRIBE`, `UNSUBSCRIBE`,
//! `SELECT 0`, `QUIT`, `CONFIG GET` (`save` and `appendonly`, what `redis-benchmark`
//! asks before it starts; nothing else) and `COMMAND` (an empty array). Requests are
//! arrays of bulk strings, or inline commands (`PING\r\n`, words split on spaces;
//! quotes are not interpreted).
//!
//! What it shows:
//! - A codec of its own, [`RespCodec`]: it finds where one request ends, resuming
//!   where it stopped ([`RespState`]), so a large request split over many reads is not
//!   scanned again from its start; numbers from the wire are parsed with checked
//!   arithmetic; a broken request is answered `-ERR Protocol error: ...` (its
//!   [`Codec::error_reply`]), then the reactor closes the connection gracefully.
//! - A protocol on the core's protocol layer (`switchboard::protocol`): the codec
//!   processes each request once ([`Codec::process`]) and records its arguments as
//!   the unit's parts; the service reads them from [`Unit::part`], never parsing the
//!   request again, and the reactor never runs the codec twice. (Inside the codec a
//!   request is still walked twice, to find its end, then to record its arguments:
//!   one walk could do both for a request that comes whole.)
//! - Replies the plain way: one `ctx.send` per reply. The reactor gathers the replies
//!   to one read's requests and writes them with one `write`. `--batch` answers a whole
//!   run of requests with one send instead, to measure what the plain way costs.
//! - Expiry on service timers: `EXPIRE` and `SET ... EX` arm a timer carrying the key;
//!   the timer's id is the expiry's generation, so the timer of an expiry that was
//!   replaced does nothing. Any expiry Redis accepts is accepted, however far off: the
//!   reactor caps a timer's delay (`switchboard::timer::MAX_DELAY`) instead of
//!   panicking.
//! - A bound per subscriber: one whose queued output passes the write limit
//!   (`--write-limit`) is cut off and logged, so a subscriber that does not read cannot
//!   grow the server's memory.
//!
//! Flags: `--addr ADDR` (default 127.0.0.1:6380), `--max-bulk BYTES` (longest bulk
//! string; default 8 MiB), `--max-request BYTES` (longest request; default 32 MiB),
//! `--write-limit BYTES` (queued output per connection; default 4 MiB), `--batch`. No
//! idle timeout, as Redis has none by default. On SIGINT or SIGTERM it stops, prints a
//! summary line to stderr and exits 0 (130 if a second signal cut the shutdown short).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use switchboard::{
    Buffer, CloseMode, CloseReason, Codec, Config, ConnId, Context, Decode, FrameError, Frames,
    ProtocolIo, Reactor, Service, TimerId, Unit,
};

const USAGE: &str = "usage: resp [--addr ADDR] [--max-bulk BYTES] [--max-request BYTES] \
                     [--write-limit BYTES] [--batch]";

/// Bulk strings one request may hold at most (Redis's own limit).
const MAX_ARGS: i64 = 1024 * 1024;

/// The longest inline command, as in Redis.
const MAX_INLINE: usize = 64 * 1024;

/// The longest number in a header line (`*3`, `$11`): an `i64` and its sign.
const MAX_DIGITS: usize = 20;

/// Output gathered by `--batch` before it is sent, so a pipeline of large replies is
/// not built whole in memory first.
const BATCH_FLUSH: usize = 64 * 1024;

/// The command line.
#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    max_bulk: usize,
    max_request: usize,
    write_limit: usize,
    batch: bool,
}

impl Args {
    /// Parses `--flag VALUE` and `--flag=VALUE` pairs; `Err` holds what to print.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args {
            addr: SocketAddr::from(([127, 0, 0, 1], 6380)),
            max_bulk: 8 * 1024 * 1024,
            max_request: 32 * 1024 * 1024,
            write_limit: Config::default().write_limit,
            batch: false,
        };
        while let Some(arg) = args.next() {
            if arg == "--batch" {
                parsed.batch = true;
                continue;
            }
            let (flag, value) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), value.to_owned()),
                None => {
                    let value = args.next().ok_or(format!("{arg} needs a value"))?;
                    (arg, value)
                }
            };
            let bytes = || match value.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{flag} {value}: a number of bytes above 0, please")),
            };
            match flag.as_str() {
                "--addr" => {
                    parsed.addr = value.parse().map_err(|e| format!("--addr {value}: {e}"))?
                }
                "--max-bulk" => parsed.max_bulk = bytes()?,
                "--max-request" => parsed.max_request = bytes()?,
                "--write-limit" => parsed.write_limit = bytes()?,
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(parsed)
    }
}

// ---- the codec: where one request ends ----

/// Finds one complete RESP2 request at the front of a connection's input: an array of
/// bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), or an inline command (a line
/// that does not start with `*`). The payload is the whole request; replies are
/// written as they are (a reply is already RESP).
#[derive(Debug, Clone)]
struct RespCodec {
    /// The longest bulk string accepted.
    max_bulk: usize,
    /// The longest request accepted, all its bulk strings together.
    max_request: usize,
}

/// How far [`RespCodec`] got into the partial request at the front of a connection's
/// input. Positions count from the start of that request, which stays put until the
/// request is complete, so the next call resumes there: a 4 MiB value arriving in a
/// hundred reads costs a look at one header per read, not a walk from the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum RespState {
    /// Nothing parsed yet.
    #[default]
    Start,
    /// An inline command whose first `scanned` bytes hold no `\n`.
    Inline { scanned: usize },
    /// An array whose header and first bulk strings are whole: the next bulk string's
    /// `$` header starts at `next`, and `left` bulk strings are still to come.
    Array { next: usize, left: usize },
}

impl Codec for RespCodec {
    type State = RespState;

    fn decode(&self, state: &mut RespState, buf: &[u8]) -> Result<Decode, FrameError> {
        match *state {
            RespState::Array { next, left } => self.bulk_strings(state, buf, next, left),
            RespState::Inline { scanned } => inline(state, buf, scanned),
            RespState::Start => match buf.first() {
                None => Ok(Decode::Incomplete { frame_len: None }),
                Some(b'*') => self.array(state, buf),
                Some(_) => inline(state, buf, 0),
            },
        }
    }

    fn encode(&self, reply: &[u8], out: &mut Buffer) -> Result<(), FrameError> {
        out.extend_from_slice(reply);
        Ok(())
    }

    /// A protocol on the core's protocol layer: each request is processed once, and
    /// handed to the service with its arguments as parts.
    const PROTOCOL: bool = true;

    /// Finds where the request ends ([`Codec::decode`], resuming where it stopped),
    /// then records its arguments as the unit's parts, so the service reads them
    /// without parsing the request again.
    fn process(
        &self,
        state: &mut RespState,
        buf: &mut [u8],
        io: &mut ProtocolIo<'_>,
    ) -> Result<Decode, FrameError> {
        let found = self.decode(state, buf)?;
        if let Decode::Frame { consumed, .. } = found {
            split_args(&buf[..consumed], |arg| io.part(arg));
        }
        Ok(found)
    }

    /// Redis's answer to a broken request; the reactor then closes the connection
    /// gracefully, so the client reads it.
    fn error_reply(&self, error: &FrameError, out: &mut Buffer) {
        let why = match error {
            FrameError::Malformed(why) => (*why).to_owned(),
            FrameError::TooLarge { len, max } => {
                format!("request of {len} bytes or more, over the maximum of {max}")
            }
            other => other.to_string(),
        };
        eprintln!("resp: protocol error: {why}; answered and closing");
        out.extend_from_slice(format!("-ERR Protocol error: {why}\r\n").as_bytes());
    }
}

impl RespCodec {
    /// A request starting `*N\r\n`.
    fn array(&self, state: &mut RespState, buf: &[u8]) -> Result<Decode, FrameError> {
        let invalid = "invalid multibulk length";
        let Some((count, next)) = header(buf, 1, invalid, "too big mbulk count string")? else {
            return Ok(Decode::Incomplete { frame_len: None });
        };
        if count <= 0 {
            // `*0` and `*-1` ask nothing; Redis skips them (the service does too).
            return Ok(Decode::Frame {
                payload: 0..next,
                consumed: next,
            });
        }
        if count > MAX_ARGS {
            return Err(FrameError::Malformed("invalid multibulk length"));
        }
        // (count is at most MAX_ARGS: it fits any usize.)
        self.bulk_strings(state, buf, next, count as usize)
    }

    /// The bulk strings of an array, from the one whose header starts at `next`, with
    /// `left` still to come.
    fn bulk_strings(
        &self,
        state: &mut RespState,
        buf: &[u8],
        mut next: usize,
        mut left: usize,
    ) -> Result<Decode, FrameError> {
        while left > 0 {
            *state = RespState::Array { next, left };
            let Some(&marker) = buf.get(next) else {
                return Ok(Decode::Incomplete { frame_len: None });
            };
            if marker != b'$' {
                return Err(FrameError::Malformed("expected '$'"));
            }
            let invalid = "invalid bulk length";
            let too_long = "too big bulk count string";
            let Some((len, data)) = header(buf, next + 1, invalid, too_long)? else {
                return Ok(Decode::Incomplete { frame_len: None });
            };
            let len = usize::try_from(len)
                .ok()
                .filter(|&len| len <= self.max_bulk)
                .ok_or(FrameError::Malformed(invalid))?;
            let end = data
                .checked_add(len)
                .and_then(|end| end.checked_add(2))
                .filter(|&end| end <= self.max_request)
                .ok_or(FrameError::TooLarge {
                    len: (data as u64).saturating_add(len as u64 + 2),
                    max: self.max_request,
                })?;
            if buf.len() < end {
                // The last bulk string's header says exactly where the request ends,
                // so the reactor can make room for the rest in one go.
                let frame_len = (left == 1).then_some(end);
                return Ok(Decode::Incomplete { frame_len });
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(FrameError::Malformed("bulk string not followed by CRLF"));
            }
            next = end;
            left -= 1;
        }
        *state = RespState::Start;
        Ok(Decode::Frame {
            payload: 0..next,
            consumed: next,
        })
    }
}

/// An inline command: a line, whose first `scanned` bytes are known to hold no `\n`.
fn inline(state: &mut RespState, buf: &[u8], scanned: usize) -> Result<Decode, FrameError> {
    let window = &buf[..buf.len().min(MAX_INLINE + 1)];
    let from = scanned.min(window.len());
    match window[from..].iter().position(|&b| b == b'\n') {
        Some(found) => {
            *state = RespState::Start;
            let end = from + found + 1;
            Ok(Decode::Frame {
                payload: 0..end,
                consumed: end,
            })
        }
        None if buf.len() > MAX_INLINE => Err(FrameError::Malformed("too big inline request")),
        None => {
            *state = RespState::Inline {
                scanned: window.len(),
            };
            Ok(Decode::Incomplete { frame_len: None })
        }
    }
}

/// The number on the header line starting at `from` (after its `*` or `$`), read in
/// one pass: the number, and where the line after it starts; `None` while its `\r\n`
/// has not arrived. Not a number, or one that does not fit an `i64` (checked
/// arithmetic: the digits come from the wire), is `invalid`; a line longer than any
/// number is `too_long`.
#[inline]
fn header(
    buf: &[u8],
    from: usize,
    invalid: &'static str,
    too_long: &'static str,
) -> Result<Option<(i64, usize)>, FrameError> {
    let line = buf.get(from..).unwrap_or_default();
    let negative = line.first() == Some(&b'-');
    let digits_from = usize::from(negative);
    let mut n: i64 = 0;
    let mut i = digits_from;
    while let Some(&byte) = line.get(i) {
        match byte {
            b'0'..=b'9' if i < MAX_DIGITS => {
                let digit = i64::from(byte - b'0');
                let shifted = n.checked_mul(10);
                let next = match negative {
                    true => shifted.and_then(|n| n.checked_sub(digit)),
                    false => shifted.and_then(|n| n.checked_add(digit)),
                };
                n = next.ok_or(FrameError::Malformed(invalid))?;
            }
            b'\r' if i > digits_from => {
                return match line.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some((n, from + i + 2))),
                    Some(_) => Err(FrameError::Malformed("header line without its \\n")),
                };
            }
            b'0'..=b'9' => return Err(FrameError::Malformed(too_long)),
            _ => return Err(FrameError::Malformed(invalid)),
        }
        i += 1;
    }
    Ok(None)
}

/// A decimal `i64` (`-` allowed), or `None` if it is not one or does not fit: checked
/// arithmetic, as the digits come from the wire.
fn number(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0i64, |n, &d| {
        let digit = i64::from(d.checked_sub(b'0').filter(|&d| d <= 9)?);
        let n = n.checked_mul(10)?;
        match negative {
            true => n.checked_sub(digit),
            false => n.checked_add(digit),
        }
    })
}

// ---- the service: a request's arguments, commands, replies ----

/// Splits a request the codec found whole into its arguments, as ranges of `request`,
/// each given to `arg` (the codec's second walk: see the module docs). The codec has
/// checked the format, so a mismatch only ends the list early; nothing here can panic.
fn split_args(request: &[u8], mut arg: impl FnMut(Range<usize>)) {
    if request.first() != Some(&b'*') {
        // Inline: words separated by spaces or tabs, the line's end dropped.
        let mut start = None;
        for (i, &b) in request.iter().enumerate() {
            match (start, matches!(b, b' ' | b'\t' | b'\r' | b'\n')) {
                (None, false) => start = Some(i),
                (Some(s), true) => {
                    arg(s..i);
                    start = None;
                }
                _ => {}
            }
        }
        return;
    }
    let Ok(Some((_, mut pos))) = header(request, 1, "", "") else {
        return;
    };
    while let Ok(Some((len, data))) = header(request, pos + 1, "", "") {
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|len| data.checked_add(len))
        else {
            return;
        };
        if end > request.len() {
            return;
        }
        arg(data..end);
        pos = end + 2;
    }
}

/// Reply builders: each appends one RESP2 reply to `out`.
mod reply {
    pub fn simple(out: &mut Vec<u8>, text: &str) {
        out.push(b'+');
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    pub fn error(out: &mut Vec<u8>, text: &str) {
        out.push(b'-');
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    pub fn integer(out: &mut Vec<u8>, n: i64) {
        out.push(b':');
        decimal(out, n);
        out.extend_from_slice(b"\r\n");
    }

    pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
        out.push(b'$');
        decimal(out, bytes.len() as i64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }

    pub fn nil(out: &mut Vec<u8>) {
        out.extend_from_slice(b"$-1\r\n");
    }

    pub fn array(out: &mut Vec<u8>, len: usize) {
        out.push(b'*');
        decimal(out, len as i64);
        out.extend_from_slice(b"\r\n");
    }

    /// `n` in decimal, without going through `fmt` (it is on every reply's path).
    pub fn decimal(out: &mut Vec<u8>, n: i64) {
        if n < 0 {
            out.push(b'-');
        }
        let mut digits = [0u8; 20];
        let mut rest = n.unsigned_abs();
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[at..]);
    }
}

/// One key's value, and when it expires.
#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expiry: Option<Expiry>,
}

/// A key's time to live.
#[derive(Debug, Clone, Copy)]
struct Expiry {
    /// When the key expires, in milliseconds since the server started (as Redis keeps
    /// it in milliseconds since the Unix epoch; an `i64`, so any expiry Redis accepts
    /// fits).
    at_ms: i64,
    /// The timer that removes it, and the expiry's generation: the timer of an expiry
    /// that was replaced (or cancelled too late) finds another id here and does nothing.
    timer: TimerId,
}

/// The loop's time, for the expiry of one request's keys.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// This turn's time ([`Context::now`]).
    now: Instant,
    /// When the server started: expiry times count from here.
    epoch: Instant,
}

impl Clock {
    /// Milliseconds since the server started. Worked out only when a key has an
    /// expiry to compare it with: most requests never need it.
    fn ms(&self) -> i64 {
        let elapsed = self.now.saturating_duration_since(self.epoch);
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
    }
}

/// What a timer is for: the key it expires.
#[derive(Debug, Clone)]
struct Expire(Vec<u8>);

/// What the server knows about one connection: the channels it subscribed to.
#[derive(Debug, Default)]
struct Client {
    channels: HashSet<Vec<u8>>,
}

/// `SET`'s options.
#[derive(Debug, Default)]
struct SetOptions {
    /// Milliseconds to live (`EX`, `PX`).
    ttl_ms: Option<i64>,
    /// `NX`: only if the key is absent; `XX`: only if present.
    only_if: Option<bool>,
}

/// The store, the channels, and the server's counters.
struct Resp {
    store: HashMap<Vec<u8>, Entry>,
    /// Who listens on each channel.
    channels: HashMap<Vec<u8>, Vec<ConnId>>,
    /// Expiry times count from here.
    epoch: Instant,
    /// `--batch`: a whole run of requests answered with one send.
    batch: bool,
    /// The reply being built (kept to reuse its allocation).
    out: Vec<u8>,
    requests: u64,
    expired: u64,
    cut_off: u64,
}

impl Service for Resp {
    type Conn = Client;
    type Timer = Expire;
    type Codec = RespCodec;

    fn on_frames(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        client: &mut Client,
        frames: Frames<'_, RespCodec>,
    ) {
        if !self.batch {
            // The plain way: one send per reply (the reactor writes the replies to
            // one read's requests with one `write`).
            for request in frames.units() {
                self.out.clear();
                let then = self.request(ctx, conn, client, request);
                if !self.out.is_empty() {
                    if let Err(e) = ctx.send(conn, &self.out) {
                        log_unsent(conn, e);
                    }
                }
                if then == Then::Close {
                    return ctx.close(conn, CloseMode::Flush);
                }
            }
            return;
        }
        self.out.clear();
        let mut answered = 0;
        for request in frames.units() {
            let then = self.request(ctx, conn, client, request);
            answered += 1;
            if then == Then::Close {
                self.send_batch(ctx, conn, answered);
                return ctx.close(conn, CloseMode::Flush);
            }
            if self.out.len() >= BATCH_FLUSH {
                self.send_batch(ctx, conn, std::mem::take(&mut answered));
            }
        }
        self.send_batch(ctx, conn, answered);
    }

    fn on_close(
        &mut self,
        _: &mut Context<'_, Self>,
        conn: ConnId,
        client: Client,
        _: CloseReason,
    ) {
        for channel in client.channels {
            self.leave(&channel, conn);
        }
    }

    fn on_timer(&mut self, _: &mut Context<'_, Self>, timer: TimerId, Expire(key): Expire) {
        let current = self.store.get(&key).and_then(|entry| entry.expiry);
        if current.is_some_and(|expiry| expiry.timer == timer) {
            self.store.remove(&key);
            self.expired += 1;
        }
    }
}

impl Resp {
    /// Sends what `--batch` gathered: the replies to `answered` requests.
    fn send_batch(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, answered: u64) {
        if !self.out.is_empty() {
            if let Err(e) = ctx.send_encoded(conn, &self.out, answered) {
                log_unsent(conn, e);
            }
            self.out.clear();
        }
    }

    /// Answers one request into `self.out`; says whether the connection closes after.
    fn request(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        client: &mut Client,
        request: Unit<'_>,
    ) -> Then {
        let words = Words(request);
        match words.len() {
            0 => Then::Next, // an empty line, or `*0`: nothing asked
            _ => {
                self.requests += 1;
                self.command(ctx, client, conn, words)
            }
        }
    }

    /// Answers one command into `self.out`.
    fn command(
        &mut self,
        ctx: &mut Context<'_, Self>,
        client: &mut Client,
        conn: ConnId,
        args: Words<'_>,
    ) -> Then {
        let mut upper = [0u8; 16];
        let name = uppercase(args.get(0), &mut upper);
        if !client.channels.is_empty()
            && !matches!(name, b"SUBSCRIBE" | b"UNSUBSCRIBE" | b"PING" | b"QUIT")
        {
            let message = format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / \
                 QUIT / RESET are allowed in this context",
                printable(args.get(0)).to_lowercase()
            );
            reply::error(&mut self.out, &message);
            return Then::Next;
        }
        let now = Clock {
            now: ctx.now(),
            epoch: self.epoch,
        };
        let subscribed = !client.channels.is_empty();
        let out = &mut self.out;
        match (name, args.len()) {
            (b"GET", 2) => self.get(args.get(1), now),
            (b"SET", 3..) => self.set(ctx, args, now),
            (b"DEL", 2..) => {
                let removed = (1..args.len())
                    .filter(|&i| self.remove(ctx, args.get(i), now))
                    .count();
                reply::integer(&mut self.out, removed as i64);
            }
            (b"INCR", 2) => self.incr(args.get(1), now),
            (b"EXPIRE", 3) => self.expire(ctx, args, now),
            (b"TTL", 2) => self.ttl(args.get(1), now),
            (b"PUBLISH", 3) => self.publish(ctx, args.get(1), args.get(2)),
            (b"SUBSCRIBE", 2..) => {
                for i in 1..args.len() {
                    self.subscribe(conn, client, args.get(i));
                }
            }
            (b"UNSUBSCRIBE", _) => self.unsubscribe(conn, client, args),
            (b"PING", 1) if !subscribed => reply::simple(out, "PONG"),
            (b"PING", 2) if !subscribed => reply::bulk(out, args.get(1)),
            // A subscriber's PING is answered as a push, as Redis does.
            (b"PING", 1 | 2) => {
                reply::array(out, 2);
                reply::bulk(out, b"pong");
                reply::bulk(out, args.get(1));
            }
            (b"ECHO", 2) => reply::bulk(out, args.get(1)),
            (b"CONFIG", 3) if args.get(1).eq_ignore_ascii_case(b"GET") => {
                config_get(out, args.get(2))
            }
            (b"COMMAND", _) => reply::array(out, 0),
            (b"SELECT", 2) if args.get(1) == b"0" => reply::simple(out, "OK"),
            (b"SELECT", 2) => reply::error(out, "ERR DB index is out of range"),
            (b"QUIT", 1) => {
                reply::simple(out, "OK");
                return Then::Close;
            }
            (
                b"GET" | b"SET" | b"DEL" | b"INCR" | b"EXPIRE" | b"TTL" | b"PUBLISH" | b"SUBSCRIBE"
                | b"PING" | b"ECHO" | b"CONFIG" | b"SELECT" | b"QUIT",
                _,
            ) => {
                let message = format!(
                    "ERR wrong number of arguments for '{}' command",
                    printable(args.get(0)).to_lowercase()
                );
                reply::error(out, &message);
            }
            _ => reply::error(out, &unknown_command(args)),
        }
        Then::Next
    }

    /// `GET key`: its value, or nil.
    fn get(&mut self, key: &[u8], now: Clock) {
        match live(&self.store, key, now) {
            Some(entry) => reply::bulk(&mut self.out, &entry.value),
            None => reply::nil(&mut self.out),
        }
    }

    /// `TTL key`: seconds left (rounded, as Redis does), -1 if it never expires, -2 if
    /// there is no such key.
    fn ttl(&mut self, key: &[u8], now: Clock) {
        let ttl = match live(&self.store, key, now).map(|entry| entry.expiry) {
            None => -2,
            Some(None) => -1,
            Some(Some(expiry)) => (expiry.at_ms - now.ms()).saturating_add(500) / 1000,
        };
        reply::integer(&mut self.out, ttl);
    }

    /// `SET key value [EX seconds | PX milliseconds] [NX | XX]`.
    fn set(&mut self, ctx: &mut Context<'_, Self>, args: Words<'_>, now: Clock) {
        let options = match set_options(args) {
            Ok(options) => options,
            Err(message) => return reply::error(&mut self.out, message),
        };
        let key = args.get(1);
        let at_ms = match options.ttl_ms.map(|ttl| ttl.checked_add(now.ms())) {
            None => None,
            Some(Some(at_ms)) => Some(at_ms),
            Some(None) => {
                return reply::error(&mut self.out, "ERR invalid expire time in 'set' command")
            }
        };
        if let Some(only_if_present) = options.only_if {
            if live(&self.store, key, now).is_some() != only_if_present {
                return reply::nil(&mut self.out);
            }
        }
        let expiry = at_ms.map(|at_ms| self.arm(ctx, key, at_ms, now));
        let value = args.get(2);
        match self.store.get_mut(key) {
            Some(entry) => {
                cancel(ctx, entry.expiry.take());
                entry.value.clear();
                entry.value.extend_from_slice(value);
                entry.expiry = expiry;
            }
            None => {
                let entry = Entry {
                    value: value.to_vec(),
                    expiry,
                };
                self.store.insert(key.to_vec(), entry);
            }
        }
        reply::simple(&mut self.out, "OK");
    }

    /// `INCR key`: the value as an `i64`, plus one; its time to live is kept.
    fn incr(&mut self, key: &[u8], now: Clock) {
        let current = match live(&self.store, key, now) {
            None => Some(0),
            Some(entry) => number(&entry.value),
        };
        let Some(current) = current else {
            return reply::error(&mut self.out, "ERR value is not an integer or out of range");
        };
        let Some(next) = current.checked_add(1) else {
            return reply::error(&mut self.out, "ERR increment or decrement would overflow");
        };
        let entry = self.store.entry(key.to_vec()).or_insert(Entry {
            value: Vec::new(),
            expiry: None,
        });
        entry.value.clear();
        reply::decimal(&mut entry.value, next);
        reply::integer(&mut self.out, next);
    }

    /// `EXPIRE key seconds`: 1 if the key exists (a time in the past removes it).
    fn expire(&mut self, ctx: &mut Context<'_, Self>, args: Words<'_>, now: Clock) {
        let key = args.get(1);
        let Some(seconds) = number(args.get(2)) else {
            return reply::error(&mut self.out, "ERR value is not an integer or out of range");
        };
        let Some(at_ms) = seconds
            .checked_mul(1000)
            .and_then(|ms| ms.checked_add(now.ms()))
        else {
            return reply::error(&mut self.out, "ERR invalid expire time in 'expire' command");
        };
        if live(&self.store, key, now).is_none() {
            return reply::integer(&mut self.out, 0);
        }
        if at_ms <= now.ms() {
            self.remove(ctx, key, now);
            return reply::integer(&mut self.out, 1);
        }
        let expiry = self.arm(ctx, key, at_ms, now);
        if let Some(entry) = self.store.get_mut(key) {
            cancel(ctx, entry.expiry.replace(expiry));
        }
        reply::integer(&mut self.out, 1);
    }

    /// A timer that expires `key` at `at_ms`. However far off: the reactor caps the
    /// delay (at a century) rather than panic.
    fn arm(&self, ctx: &mut Context<'_, Self>, key: &[u8], at_ms: i64, now: Clock) -> Expiry {
        let delay_ms = u64::try_from(at_ms.saturating_sub(now.ms())).unwrap_or(0);
        let timer = ctx.set_timer(Duration::from_millis(delay_ms), Expire(key.to_vec()));
        Expiry { at_ms, timer }
    }

    /// Removes `key`; true if it was there (and not expired).
    fn remove(&mut self, ctx: &mut Context<'_, Self>, key: &[u8], now: Clock) -> bool {
        let was_live = live(&self.store, key, now).is_some();
        if let Some(entry) = self.store.remove(key) {
            cancel(ctx, entry.expiry);
        }
        was_live
    }

    /// `PUBLISH channel message`: the message goes to every subscriber, framed once and
    /// shared. A subscriber whose queued output passes the write limit is cut off.
    fn publish(&mut self, ctx: &mut Context<'_, Self>, channel: &[u8], message: &[u8]) {
        let mut received = 0;
        let mut cut = 0;
        if let Some(subscribers) = self.channels.get(channel) {
            let mut push = Vec::with_capacity(message.len() + channel.len() + 32);
            reply::array(&mut push, 3);
            reply::bulk(&mut push, b"message");
            reply::bulk(&mut push, channel);
            reply::bulk(&mut push, message);
            match ctx.shared_frame(&push) {
                Ok(frame) => {
                    for &subscriber in subscribers {
                        if ctx.send_shared(subscriber, &frame).is_err() {
                            continue; // closing already
                        }
                        received += 1;
                        if ctx.over_write_limit(subscriber) {
                            cut_off(ctx, subscriber);
                            cut += 1;
                        }
                    }
                }
                Err(e) => eprintln!("resp: cannot frame a message: {e}"),
            }
        }
        self.cut_off += cut;
        reply::integer(&mut self.out, received);
    }

    /// One channel of `SUBSCRIBE`.
    fn subscribe(&mut self, conn: ConnId, client: &mut Client, channel: &[u8]) {
        if client.channels.insert(channel.to_vec()) {
            self.channels
                .entry(channel.to_vec())
                .or_default()
                .push(conn);
        }
        reply::array(&mut self.out, 3);
        reply::bulk(&mut self.out, b"subscribe");
        reply::bulk(&mut self.out, channel);
        reply::integer(&mut self.out, client.channels.len() as i64);
    }

    /// `UNSUBSCRIBE [channel...]`: the channels named, or all.
    fn unsubscribe(&mut self, conn: ConnId, client: &mut Client, args: Words<'_>) {
        let channels: Vec<Vec<u8>> = match args.len() {
            1 => client.channels.iter().cloned().collect(),
            _ => (1..args.len()).map(|i| args.get(i).to_vec()).collect(),
        };
        if channels.is_empty() {
            reply::array(&mut self.out, 3);
            reply::bulk(&mut self.out, b"unsubscribe");
            reply::nil(&mut self.out);
            reply::integer(&mut self.out, 0);
        }
        for channel in channels {
            if client.channels.remove(&channel) {
                self.leave(&channel, conn);
            }
            reply::array(&mut self.out, 3);
            reply::bulk(&mut self.out, b"unsubscribe");
            reply::bulk(&mut self.out, &channel);
            reply::integer(&mut self.out, client.channels.len() as i64);
        }
    }

    /// Takes `conn` off `channel`'s list.
    fn leave(&mut self, channel: &[u8], conn: ConnId) {
        if let Some(subscribers) = self.channels.get_mut(channel) {
            subscribers.retain(|&s| s != conn);
            if subscribers.is_empty() {
                self.channels.remove(channel);
            }
        }
    }
}

/// What follows a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// The next request.
    Next,
    /// Closing, once the replies are written (`QUIT`).
    Close,
}

/// A request's arguments: the parts the codec recorded.
#[derive(Clone, Copy)]
struct Words<'a>(Unit<'a>);

impl<'a> Words<'a> {
    fn len(&self) -> usize {
        self.0.part_count()
    }

    /// Argument `i` (the command is 0); empty past the end.
    fn get(&self, i: usize) -> &'a [u8] {
        self.0.part(i).unwrap_or_default()
    }
}

/// The options after `SET key value`.
fn set_options(args: Words<'_>) -> Result<SetOptions, &'static str> {
    let mut options = SetOptions::default();
    let mut i = 3;
    while i < args.len() {
        let option = args.get(i);
        if option.eq_ignore_ascii_case(b"NX") || option.eq_ignore_ascii_case(b"XX") {
            if options.only_if.is_some() {
                return Err("ERR syntax error");
            }
            options.only_if = Some(option.eq_ignore_ascii_case(b"XX"));
        } else if option.eq_ignore_ascii_case(b"EX") || option.eq_ignore_ascii_case(b"PX") {
            if options.ttl_ms.is_some() || i + 1 >= args.len() {
                return Err("ERR syntax error");
            }
            i += 1;
            let amount =
                number(args.get(i)).ok_or("ERR value is not an integer or out of range")?;
            let unit = if option.eq_ignore_ascii_case(b"EX") {
                1000
            } else {
                1
            };
            // Redis refuses a time that is not positive, or whose milliseconds overflow.
            let ms = Some(amount)
                .filter(|&amount| amount > 0)
                .and_then(|amount| amount.checked_mul(unit))
                .ok_or("ERR invalid expire time in 'set' command")?;
            options.ttl_ms = Some(ms);
        } else {
            return Err("ERR syntax error");
        }
        i += 1;
    }
    Ok(options)
}

/// The entry of `key` unless it is missing or its time is up (its timer may not have
/// fired yet in this turn).
fn live<'a>(store: &'a HashMap<Vec<u8>, Entry>, key: &[u8], now: Clock) -> Option<&'a Entry> {
    store
        .get(key)
        .filter(|entry| entry.expiry.is_none_or(|expiry| expiry.at_ms >= now.ms()))
}

/// Cancels an expiry's timer.
fn cancel(ctx: &mut Context<'_, Resp>, expiry: Option<Expiry>) {
    if let Some(expiry) = expiry {
        ctx.cancel_timer(expiry.timer);
    }
}

/// Cuts off a subscriber that does not keep up, and says so.
fn cut_off(ctx: &mut Context<'_, Resp>, subscriber: ConnId) {
    let queued = ctx.queued_output(subscriber).unwrap_or(0);
    let peer = ctx
        .peer_addr(subscriber)
        .map_or_else(|| "?".to_owned(), |peer| peer.to_string());
    eprintln!(
        "resp: {subscriber} ({peer}): subscriber cut off: {queued} bytes queued, over the \
         write limit of {}",
        ctx.write_limit()
    );
    ctx.close(subscriber, CloseMode::Abort);
}

/// `CONFIG GET parameter`: what `redis-benchmark` asks before it starts (it warns
/// unless both come back as name and value). This server neither saves nor keeps an
/// append-only file; any other parameter is unknown here (an empty array, as Redis
/// answers for a parameter it does not have).
fn config_get(out: &mut Vec<u8>, parameter: &[u8]) {
    let value: &[u8] = match parameter {
        p if p.eq_ignore_ascii_case(b"save") => b"",
        p if p.eq_ignore_ascii_case(b"appendonly") => b"no",
        _ => return reply::array(out, 0),
    };
    reply::array(out, 2);
    reply::bulk(out, parameter);
    reply::bulk(out, value);
}

/// `name` in capitals in `buf`; empty if it is longer than any command.
fn uppercase<'a>(name: &[u8], buf: &'a mut [u8; 16]) -> &'a [u8] {
    match buf.get_mut(..name.len()) {
        Some(upper) => {
            upper.copy_from_slice(name);
            upper.make_ascii_uppercase();
            upper
        }
        None => &[],
    }
}

/// Redis's answer to a command it does not know.
fn unknown_command(args: Words<'_>) -> String {
    let mut message = format!(
        "ERR unknown command '{}', with args beginning with: ",
        printable(args.get(0))
    );
    for i in 1..args.len().min(8) {
        message.push_str(&format!("'{}' ", printable(args.get(i))));
    }
    message
}

/// At most 128 bytes of `bytes` as text, for an error message (a line: no CR or LF).
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(128)]);
    text.replace(['\r', '\n'], " ")
}

/// A reply that could not be sent: the connection is closing (QUIT, its peer gone).
fn log_unsent(conn: ConnId, error: switchboard::SendError) {
    if !matches!(error, switchboard::SendError::Closed) {
        eprintln!("resp: {conn}: cannot reply: {error}");
    }
}

fn main() -> ExitCode {
    if std::env::args().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("resp: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut config = Config::default();
    config.tcp.push(args.addr);
    config.idle_timeout = None;
    config.write_limit = args.write_limit;
    let codec = RespCodec {
        max_bulk: args.max_bulk,
        max_request: args.max_request,
    };
    let service = Resp {
        store: HashMap::new(),
        channels: HashMap::new(),
        epoch: Instant::now(),
        batch: args.batch,
        out: Vec::new(),
        requests: 0,
        expired: 0,
        cut_off: 0,
    };
    let mut reactor = match Reactor::bind(config, service, codec) {
        Ok(reactor) => reactor,
        Err(e) => {
            eprintln!("resp: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = reactor.stop_on_signals() {
        eprintln!("resp: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    for endpoint in reactor.endpoints() {
        eprintln!("resp: listening on {endpoint}");
    }
    let stopped = match reactor.run() {
        Ok(stopped) => stopped,
        Err(e) => {
            eprintln!("resp: {e}");
            return ExitCode::FAILURE;
        }
    };
    let resp = &stopped.service;
    eprintln!(
        "resp: stopped: keys: {}, requests: {}, expired: {}, subscribers cut off: {}, \
         queued writes: {}; {}",
        resp.store.len(),
        resp.requests,
        resp.expired,
        resp.cut_off,
        stopped.stats.queued_writes,
        stopped.stats
    );
    match stopped.forced {
        true => ExitCode::from(130),
        false => ExitCode::SUCCESS,
    }
}
