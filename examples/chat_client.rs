//! An interactive terminal client for `switchboard chat`: type to talk, and see what
//! others say as it arrives.
//!
//! ```text
//! cargo run --release -- chat                                   # the server
//! cargo run --release --example chat_client -- --name alice     # TCP
//! cargo run --release --example chat_client -- --name bob --udp # UDP
//! ```
//!
//! Plain lines go to the current room (`lobby` at first). Commands: `/nick NAME`,
//! `/join ROOM` (also makes it the current room), `/leave [ROOM]`, `/msg NAME TEXT`,
//! `/list`, `/quit`. Empty lines are skipped.
//!
//! Two threads, so that reading the keyboard never holds up incoming messages: the
//! main thread reads stdin and sends requests; a second thread reads the socket and
//! prints every event the moment it arrives. When the server goes away, that thread
//! says so and ends the program.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use switchboard::frame::wire;

/// How often a UDP client pings when idle, well within the server's expiry (300 s by
/// default), so that it stays a member while its user only reads.
const UDP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Set when the user quits, so that the connection closing is not reported.
static QUITTING: AtomicBool = AtomicBool::new(false);

/// Command-line options.
struct Options {
    addr: SocketAddr,
    name: String,
    udp: bool,
}

/// The connection to the server, seen from the sending side.
enum Link {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

impl Link {
    /// Opens the connection, or explains why it could not be opened.
    fn open(options: &Options) -> Result<Link, String> {
        let addr = options.addr;
        if options.udp {
            let local: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().expect("an address literal")
            } else {
                "[::]:0".parse().expect("an address literal")
            };
            let socket =
                UdpSocket::bind(local).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
            // Connected, so that an ICMP "port unreachable" comes back as an error.
            socket
                .connect(addr)
                .map_err(|e| format!("cannot reach {addr}: {e}"))?;
            udp_handshake(&socket).map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    format!("no answer from {addr} over UDP (is `switchboard chat` running there?)")
                }
                _ => format!("no chat server at {addr} over UDP: {e}"),
            })?;
            return Ok(Link::Udp(socket));
        }
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| {
            format!("cannot connect to {addr}: {e} (is `switchboard chat` running there?)")
        })?;
        stream.set_nodelay(true).ok();
        Ok(Link::Tcp(stream))
    }

    /// Sends one request: a length-prefixed frame over TCP, a datagram over UDP.
    fn send(&mut self, request: &Value) -> io::Result<()> {
        let payload = request.to_string().into_bytes();
        match self {
            Link::Tcp(stream) => {
                let len = u32::try_from(payload.len())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
                stream.write_all(&[&wire::header(len)[..], &payload].concat())
            }
            Link::Udp(socket) => socket.send(&payload).map(|_| ()),
        }
    }

    /// A second handle on the same socket, for the receiving thread.
    fn try_clone(&self) -> io::Result<Link> {
        Ok(match self {
            Link::Tcp(stream) => Link::Tcp(stream.try_clone()?),
            Link::Udp(socket) => Link::Udp(socket.try_clone()?),
        })
    }
}

/// UDP has no connection to fail: a ping answered by a pong is the proof that a chat
/// server is there.
fn udp_handshake(socket: &UdpSocket) -> io::Result<()> {
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send(json!({"type": "ping"}).to_string().as_bytes())?;
    let mut buf = [0u8; 1024];
    socket.recv(&mut buf).map(|_| ())
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("chat_client: {message}");
            eprintln!("usage: chat_client [--addr HOST:PORT] [--name NAME] [--udp]");
            return ExitCode::from(2);
        }
    };
    let mut link = match Link::open(&options) {
        Ok(link) => link,
        Err(message) => {
            eprintln!("chat_client: {message}");
            return ExitCode::FAILURE;
        }
    };
    let receiver = match link.try_clone() {
        Ok(receiver) => receiver,
        Err(e) => {
            eprintln!("chat_client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = options.addr;
    std::thread::spawn(move || receive(receiver, addr));
    let transport = if options.udp { "UDP" } else { "TCP" };
    println!("* connected to {addr} over {transport}; /quit to leave");
    match talk(&mut link, &options.name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat_client: lost the connection to {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        addr: "127.0.0.1:9001".parse().expect("an address literal"),
        name: std::env::var("USER").unwrap_or_else(|_| "guest".into()),
        udp: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                let value = args.next().ok_or("--addr needs HOST:PORT")?;
                options.addr = value.parse().map_err(|e| format!("--addr {value}: {e}"))?;
            }
            "--name" => options.name = args.next().ok_or("--name needs a name")?,
            "--udp" => options.udp = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

/// Says hello, joins the lobby, then turns each line typed into a request until
/// `/quit` or the end of input.
fn talk(link: &mut Link, name: &str) -> io::Result<()> {
    link.send(&json!({"type": "hello", "name": name}))?;
    let mut room = Some("lobby".to_string());
    link.send(&json!({"type": "join", "room": "lobby"}))?;
    for line in io::stdin().lock().lines() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match command(line, &mut room) {
            Action::Send(request) => link.send(&request)?,
            Action::Say(text) => match &room {
                Some(current) => {
                    link.send(&json!({"type": "say", "room": current, "text": text}))?
                }
                None => println!("* you are in no room: /join ROOM first"),
            },
            Action::Print(text) => println!("{text}"),
            Action::Quit => break,
        }
    }
    // Frees the name at once (over UDP it would otherwise be held until expiry). The
    // server then closes a TCP connection: that is expected, not news to report.
    QUITTING.store(true, Ordering::SeqCst);
    link.send(&json!({"type": "bye"}))
}

/// What one typed line asks for.
enum Action {
    Send(Value),
    Say(String),
    Print(String),
    Quit,
}

const HELP: &str =
    "* commands: /nick NAME, /join ROOM, /leave [ROOM], /msg NAME TEXT, /list, /quit";

/// Turns a typed line into an action, updating the current room.
fn command(line: &str, room: &mut Option<String>) -> Action {
    let Some(rest) = line.strip_prefix('/') else {
        return Action::Say(line.to_string());
    };
    let (verb, argument) = rest.split_once(' ').unwrap_or((rest, ""));
    let argument = argument.trim();
    match (verb, argument) {
        ("quit", _) => Action::Quit,
        ("list", _) => Action::Send(json!({"type": "list"})),
        ("nick", name) if !name.is_empty() => Action::Send(json!({"type": "hello", "name": name})),
        ("join", target) if !target.is_empty() => {
            *room = Some(target.to_string());
            Action::Send(json!({"type": "join", "room": target}))
        }
        ("leave", target) => {
            let target = match (target, room.as_deref()) {
                ("", Some(current)) => current.to_string(),
                ("", None) => return Action::Print("* you are in no room".into()),
                (named, _) => named.to_string(),
            };
            if room.as_deref() == Some(target.as_str()) {
                *room = None;
            }
            Action::Send(json!({"type": "leave", "room": target}))
        }
        ("msg", rest) => match rest.split_once(' ') {
            Some((to, text)) if !text.trim().is_empty() => {
                Action::Send(json!({"type": "dm", "to": to, "text": text.trim()}))
            }
            _ => Action::Print("* usage: /msg NAME TEXT".into()),
        },
        _ => Action::Print(HELP.into()),
    }
}

/// The receiving thread: prints events until the connection ends, then ends the
/// program with a message saying why.
fn receive(link: Link, addr: SocketAddr) {
    let reason = match link {
        Link::Tcp(stream) => receive_frames(stream),
        Link::Udp(socket) => receive_datagrams(socket),
    };
    if QUITTING.load(Ordering::SeqCst) {
        std::process::exit(0);
    }
    println!("* disconnected from {addr}: {reason}");
    std::process::exit(1);
}

fn receive_frames(stream: TcpStream) -> String {
    let mut reader = BufReader::new(stream);
    loop {
        let mut header = [0u8; 4];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return "the server closed the connection".into()
            }
            Err(e) => return e.to_string(),
        }
        let mut payload = vec![0u8; wire::announced(header) as usize];
        if let Err(e) = reader.read_exact(&mut payload) {
            return format!("connection lost mid-message: {e}");
        }
        show(&payload);
    }
}

fn receive_datagrams(socket: UdpSocket) -> String {
    // Wake up now and then to ping, so that the server keeps this member.
    if let Err(e) = socket.set_read_timeout(Some(UDP_KEEPALIVE)) {
        return e.to_string();
    }
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => show(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if let Err(e) = socket.send(json!({"type": "ping"}).to_string().as_bytes()) {
                    return e.to_string();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return "no chat server answers there (connection refused)".into()
            }
            Err(e) => return e.to_string(),
        }
    }
}

/// Prints one event as a line of the conversation.
fn show(payload: &[u8]) {
    let event: Value = match serde_json::from_slice(payload) {
        Ok(event) => event,
        Err(_) => {
            println!("? {}", String::from_utf8_lossy(payload));
            return;
        }
    };
    let field = |key: &str| event[key].as_str().unwrap_or("").to_string();
    let line = match event["type"].as_str().unwrap_or("") {
        "msg" => format!("[{}] {}: {}", field("room"), field("from"), field("text")),
        "dm" => format!(
            "(dm {} -> {}) {}",
            field("from"),
            field("to"),
            field("text")
        ),
        "joined" => format!("* {} joined {}", field("name"), field("room")),
        "left" => format!("* {} left {}", field("name"), field("room")),
        "renamed" => format!(
            "* {} is now {} in {}",
            field("old"),
            field("name"),
            field("room")
        ),
        "welcome" => format!("* you are {}", field("name")),
        "error" => format!("! {}", field("reason")),
        "rooms" => rooms_line(&event),
        "pong" => return,
        _ => format!("? {event}"),
    };
    println!("{line}");
}

/// `* rooms: lobby (2: alice, bob); dev (1: carol)`
fn rooms_line(event: &Value) -> String {
    let rooms = event["rooms"].as_array().cloned().unwrap_or_default();
    if rooms.is_empty() {
        return "* no rooms".into();
    }
    let described: Vec<String> = rooms
        .iter()
        .map(|room| {
            let members: Vec<&str> = room["members"]
                .as_array()
                .map(|m| m.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!(
                "{} ({}: {})",
                room["room"].as_str().unwrap_or("?"),
                members.len(),
                members.join(", ")
            )
        })
        .collect();
    format!("* rooms: {}", described.join("; "))
}
