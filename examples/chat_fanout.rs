//! Measures chat fan-out: N members in one room, one of them says K messages, and every
//! member counts what it receives. Prints deliveries per second.
//!
//! ```text
//! cargo run --release -- chat --presence-limit 1000 &     # the server, in its own process
//! cargo run --release --example chat_fanout -- --members 10000 --messages 200
//! ```
//!
//! All members live in this one process, on one mio `Poll` (each is a socket, so
//! 10,000 members need 10,000 file descriptors here and as many in the server). The
//! sender keeps at most `--window` messages in flight (sent but not yet back to
//! itself), so the measurement is of steady fan-out, not of queues filling up.
//! Bounded: it gives up after `--timeout` seconds and says how far it got.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use switchboard::frame::wire;
use switchboard::{Codec, Decode, LengthCodec};

/// Command-line options, with their defaults.
struct Options {
    addr: SocketAddr,
    members: usize,
    messages: usize,
    size: usize,
    window: usize,
    timeout: Duration,
}

/// One member's socket and the bytes of a frame not complete yet.
struct Member {
    stream: mio::net::TcpStream,
    pending: Vec<u8>,
    /// Set once the member has seen its own `joined` event.
    joined: bool,
    /// `msg` events received.
    messages: usize,
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("chat_fanout: {message}");
            eprintln!(
                "usage: chat_fanout [--addr HOST:PORT] [--members N] [--messages K] \
                 [--size BYTES] [--window W] [--timeout SECS]"
            );
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat_fanout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        addr: "127.0.0.1:9001".parse().expect("an address literal"),
        members: 1000,
        messages: 1000,
        size: 32,
        window: 32,
        timeout: Duration::from_secs(120),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--addr" => options.addr = value.parse().map_err(|e| format!("--addr: {e}"))?,
            "--members" => options.members = number()?.max(1),
            "--messages" => options.messages = number()?.max(1),
            "--size" => options.size = number()?,
            "--window" => options.window = number()?.max(1),
            "--timeout" => options.timeout = Duration::from_secs(number()? as u64),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(options)
}

fn run(options: &Options) -> io::Result<()> {
    let deadline = Instant::now() + options.timeout;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let started = Instant::now();
    let mut members = connect_members(options, &poll)?;
    let connected = started.elapsed().as_secs_f64();
    wait_until_joined(&mut poll, &mut events, &mut members, deadline)?;
    println!(
        "setup: {} members connected in {connected:.2} s, all joined room \"fanout\" after {:.2} s",
        members.len(),
        started.elapsed().as_secs_f64()
    );

    let expected = members.len() * options.messages;
    let text_padding = "x".repeat(options.size.saturating_sub(8));
    let (mut sent, mut delivered) = (0, 0);
    let start = Instant::now();
    while delivered < expected {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out: {delivered} of {expected} deliveries"),
            ));
        }
        // The sender is member 0: it gets its own messages back like everyone else.
        while sent < options.messages && sent - members[0].messages < options.window {
            let text = format!("{sent:07} {text_padding}");
            let say = json!({"type": "say", "room": "fanout", "text": text});
            send_frame(&mut members[0].stream, say.to_string().as_bytes())?;
            sent += 1;
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for event in events.iter() {
            delivered += read_member(&mut members[event.token().0])?;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let short = members
        .iter()
        .filter(|m| m.messages != options.messages)
        .count();
    println!(
        "fan-out: {} members x {} messages of {} bytes = {expected} deliveries in {elapsed:.2} s: \
         {:.0} deliveries/s, {:.0} messages/s{}",
        members.len(),
        options.messages,
        options.size,
        expected as f64 / elapsed,
        options.messages as f64 / elapsed,
        if short == 0 {
            String::new()
        } else {
            format!(" ({short} members got a different count!)")
        }
    );
    Ok(())
}

/// Connects every member, each sending `hello` and `join` at once.
fn connect_members(options: &Options, poll: &Poll) -> io::Result<Vec<Member>> {
    let mut members = Vec::with_capacity(options.members);
    for i in 0..options.members {
        let mut stream = TcpStream::connect(options.addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("member {i}: cannot connect to {}: {e}", options.addr),
            )
        })?;
        stream.set_nodelay(true)?;
        let hello = json!({"type": "hello", "name": format!("f{i}")});
        let join = json!({"type": "join", "room": "fanout"});
        for request in [hello, join] {
            wire::write_frame(&mut stream, request.to_string().as_bytes())?;
        }
        stream.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        members.push(Member {
            stream,
            pending: Vec::new(),
            joined: false,
            messages: 0,
        });
    }
    Ok(members)
}

/// Reads until every member has seen its own `joined` event.
fn wait_until_joined(
    poll: &mut Poll,
    events: &mut Events,
    members: &mut [Member],
    deadline: Instant,
) -> io::Result<()> {
    let mut joined = 0;
    while joined < members.len() {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("only {joined} of {} members joined in time", members.len()),
            ));
        }
        poll.poll(events, Some(Duration::from_millis(100)))?;
        for event in events.iter() {
            let member = &mut members[event.token().0];
            let before = member.joined;
            read_member(member)?;
            joined += usize::from(member.joined && !before);
        }
    }
    Ok(())
}

/// Reads what the socket holds and counts complete frames. Returns the `msg` events.
fn read_member(member: &mut Member) -> io::Result<usize> {
    let mut buf = [0u8; 64 * 1024];
    let mut messages = 0;
    loop {
        match member.stream.read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed a member's connection (cut off as a slow consumer?)",
                ))
            }
            Ok(n) => {
                member.pending.extend_from_slice(&buf[..n]);
                messages += count_frames(member);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(messages),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Consumes the complete frames in `member.pending`: counts `msg` events, and notes the
/// member's own `joined`. That is the first `joined` it can see: before its own join
/// it is in no room, so it hears of no one else's.
fn count_frames(member: &mut Member) -> usize {
    // No limit but the format's own: this counts whatever the server sends.
    let codec = LengthCodec::new(u32::MAX as usize);
    let mut at = 0;
    let mut messages = 0;
    loop {
        let rest = &member.pending[at..];
        let Ok(Decode::Frame { payload, consumed }) = codec.decode(&mut (), rest) else {
            break;
        };
        let payload = &rest[payload];
        if payload.starts_with(br#"{"type":"msg""#) {
            messages += 1;
        } else if payload.starts_with(br#"{"type":"joined""#) {
            member.joined = true;
        }
        at += consumed;
    }
    member.pending.drain(..at);
    member.messages += messages;
    messages
}

/// Writes one frame, waiting out a full socket buffer (rare: the window is small).
fn send_frame(stream: &mut mio::net::TcpStream, payload: &[u8]) -> io::Result<()> {
    let frame = wire::frame(payload);
    let mut written = 0;
    while written < frame.len() {
        match stream.write(&frame[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(50))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
