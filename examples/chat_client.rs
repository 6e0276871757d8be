//! An interactive terminal client for `switchboard chat`: type to talk, and see what
//! others say as it arrives, printed above the line you are typing.
//!
//! ```text
//! cargo run --release -- chat                                   # the server
//! cargo run --release --example chat_client -- --name alice     # TCP
//! cargo run --release --example chat_client -- --name bob --udp # UDP
//! cargo run --release --example chat_client -- --help
//! ```
//!
//! Plain lines go to the current room (`lobby` at first); `/help` lists the commands.
//! Every error the client prints says what to do next.
//!
//! Two threads, so that reading the keyboard never holds up incoming messages: the
//! main thread edits the line being typed (with `rustyline`) and sends requests; a
//! second thread reads the socket and prints each event the moment it arrives. On a
//! terminal it prints through rustyline's external printer, which clears the prompt
//! line, prints the event, and draws the prompt again with the half-typed text, so
//! what arrives never lands inside what is being typed. Without a terminal (input
//! from a pipe), lines are read and printed plainly.
//!
//! A member who joins a room is sent the room's recent messages as `msg` events
//! with `"history": true`; the client prints them marked `(history)`. Notices (news
//! that is not about a room) are printed `*** text`; an event of a type the client
//! does not know is printed as it came, JSON after `?`.
//!
//! The first answer must be a chat event: a server that sends back the client's own
//! `hello` is an echo server, and the client says so and ends, rather than waiting
//! for a name that never comes.

use std::collections::BTreeSet;
use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};
use serde_json::{json, Value};
use switchboard::frame::wire;

/// How often the client pings, well within the server's UDP expiry and its idle
/// timeout (300 s each by default), so that it stays a member while its user only
/// reads: the server closes a connection whose peer sends nothing, however much it is
/// sent.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// How long the start (the first name, the lobby) may take before typed lines are
/// taken anyway.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `/quit` waits for what the server sent before it to be printed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Set when the user quits, so that the connection closing is not reported.
static QUITTING: AtomicBool = AtomicBool::new(false);

const USAGE: &str = "\
usage: chat_client [--addr HOST:PORT] [--name NAME] [--udp]

A terminal client for `switchboard chat`.

  --addr HOST:PORT  the server (default 127.0.0.1:9001)
  --name NAME       the name to chat under (default: $USER, else guest)
  --udp             talk over UDP instead of TCP
  -h, --help        print this help

Once connected, type a line to say it in the current room; /help lists the commands.
";

const HELP: &str = "\
* commands:
*   /nick NAME      change your name
*   /join ROOM      enter ROOM and talk there (or switch to a room you are in)
*   /leave [ROOM]   leave ROOM (the current room if none is named)
*   /msg NAME TEXT  send TEXT to NAME alone
*   /list           the rooms and who is in them
*   /help           this list
*   /quit           leave the chat (Ctrl-D does too)
* any other line is said in the current room";

/// The prompt; the current room is announced when it changes rather than shown here,
/// because the room changes when the server says so, while the prompt is on screen.
const PROMPT: &str = "> ";

/// Command-line options.
struct Options {
    /// The server.
    addr: SocketAddr,
    /// The name asked for first.
    name: String,
    /// UDP datagrams instead of TCP frames.
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

    /// Sends requests: over TCP as length-prefixed frames in one write (so that the
    /// server reads them together), over UDP as one datagram each.
    fn send(&mut self, requests: &[Value]) -> io::Result<()> {
        let payloads: Vec<Vec<u8>> = requests.iter().map(|r| r.to_string().into()).collect();
        match self {
            Link::Tcp(stream) => {
                let mut bytes = Vec::new();
                for payload in &payloads {
                    let len = u32::try_from(payload.len()).map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidInput, "message too long")
                    })?;
                    bytes.extend_from_slice(&wire::header(len));
                    bytes.extend_from_slice(payload);
                }
                stream.write_all(&bytes)
            }
            Link::Udp(socket) => payloads
                .iter()
                .try_for_each(|payload| socket.send(payload).map(|_| ())),
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

/// The request that enters `room`.
fn join_request(room: &str) -> [Value; 1] {
    [json!({"type": "join", "room": room})]
}

/// What the client knows of its place in the chat, and the way to the server: shared
/// by the thread that reads the keyboard and the one that reads the socket.
struct Chat {
    /// The sending side of the connection (the receiving thread reads a clone).
    link: Link,
    /// The name the server confirmed with `welcome`; `None` until it has.
    name: Option<String>,
    /// The rooms this member is in, as the server's `joined` and `left` for it say.
    rooms: BTreeSet<String>,
    /// Where plain lines go.
    current: Option<String>,
    /// Dropped once the start is settled (the first name taken and the lobby joined,
    /// or the first name refused), which lets the first typed line through: lines
    /// piped in are then said in the lobby, not refused for want of a name.
    started: Option<mpsc::Sender<()>>,
    /// Dropped when the next `pong` arrives: on `/quit`, the client pings and waits
    /// for it, so that everything the server sent before is printed.
    flushed: Option<mpsc::Sender<()>>,
    /// The first request (`hello`), until the server's first answer has been checked
    /// against it: a server that sends it back is no chat server.
    unanswered_hello: Option<Value>,
}

/// What one typed line comes to.
enum Typed {
    /// The client's own answer, such as the help or a usage line.
    Print(String),
    /// Requests went out; what comes back says how they went.
    Nothing,
    /// `/quit`.
    Quit,
}

impl Chat {
    /// Turns a typed line into requests, or an answer of the client's own.
    fn typed(&mut self, line: &str) -> io::Result<Typed> {
        let Some(rest) = line.strip_prefix('/') else {
            return self.say(line);
        };
        let (verb, argument) = rest.split_once(' ').unwrap_or((rest, ""));
        let argument = argument.trim();
        let request = match (verb, argument) {
            ("help", _) => return Ok(answer(HELP)),
            ("quit", _) => return Ok(Typed::Quit),
            ("list", _) => json!({"type": "list"}),
            ("nick", "") => return Ok(answer("* usage: /nick NAME")),
            ("nick", name) => json!({"type": "hello", "name": name}),
            ("join", "") => return Ok(answer("* usage: /join ROOM")),
            ("join", room) => return self.join(room),
            ("leave", room) => return self.leave(room),
            ("msg", rest) => match rest.split_once(' ') {
                Some((to, text)) if !text.trim().is_empty() => {
                    json!({"type": "dm", "to": to, "text": text.trim()})
                }
                _ => return Ok(answer("* usage: /msg NAME TEXT")),
            },
            _ => {
                return Ok(answer(format!(
                    "! unknown command /{verb}; /help lists the commands"
                )))
            }
        };
        self.link.send(&[request])?;
        Ok(Typed::Nothing)
    }

    fn say(&mut self, text: &str) -> io::Result<Typed> {
        if self.name.is_none() {
            return Ok(answer(NO_NAME));
        }
        let Some(room) = &self.current else {
            return Ok(answer("! you are in no room; enter one with /join ROOM"));
        };
        let request = json!({"type": "say", "room": room, "text": text});
        self.link.send(&[request])?;
        Ok(Typed::Nothing)
    }

    /// Joins `room`, or makes it the current room if this member is in it already.
    /// The room becomes the current one when the server confirms the join.
    fn join(&mut self, room: &str) -> io::Result<Typed> {
        if self.name.is_none() {
            return Ok(answer(NO_NAME));
        }
        if self.current.as_deref() == Some(room) {
            return Ok(answer(format!(
                "* you are already in {room}, and talking there"
            )));
        }
        if self.rooms.contains(room) {
            self.current = Some(room.to_string());
            return Ok(answer(format!("* now talking in {room}")));
        }
        self.link.send(&join_request(room))?;
        Ok(Typed::Nothing)
    }

    fn leave(&mut self, room: &str) -> io::Result<Typed> {
        let room = match (room, &self.current) {
            ("", Some(current)) => current.clone(),
            ("", None) => return Ok(answer("! you are in no room; /join ROOM enters one")),
            (named, _) => named.to_string(),
        };
        if !self.rooms.contains(&room) {
            return Ok(answer(format!(
                "! you are not in {room}; /list shows the rooms and who is in them"
            )));
        }
        self.link.send(&[json!({"type": "leave", "room": room})])?;
        Ok(Typed::Nothing)
    }

    /// Takes in one event from the server: updates what the client knows, sends what
    /// follows from it (the first `join`), and returns the line to print, if any.
    fn event(&mut self, event: &Value) -> io::Result<Option<String>> {
        let field = |key: &str| event[key].as_str().unwrap_or("").to_string();
        let mine = |name: &str| self.name.as_deref() == Some(name);
        let line = match event["type"].as_str().unwrap_or("") {
            "welcome" => return self.welcome(field("name")).map(Some),
            "joined" if mine(&field("name")) => {
                let room = field("room");
                self.rooms.insert(room.clone());
                self.current = Some(room.clone());
                self.started = None;
                format!("* you joined {room}; what you type now goes there")
            }
            "left" if mine(&field("name")) => self.left(field("room")),
            // Our own rename: `welcome` has said it already.
            "renamed" if mine(&field("name")) => return Ok(None),
            "msg" => {
                let room = field("room");
                let marker = if event["history"].as_bool() == Some(true) {
                    "(history) "
                } else {
                    ""
                };
                format!("{marker}[{room}] {}: {}", field("from"), field("text"))
            }
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
            "error" => {
                if self.name.is_none() {
                    self.started = None;
                }
                format!("! {}", advise(&field("reason")))
            }
            "rooms" => rooms_line(event),
            "notice" => format!("*** {}", field("text")),
            "pong" => {
                self.flushed = None;
                return Ok(None);
            }
            _ => format!("? {event}"),
        };
        Ok(Some(line))
    }

    /// What is wrong with the server, when `payload` is its first answer and not one a
    /// chat server gives: our own request sent back (an echo server), or no chat
    /// event at all. `None` for a chat event, and for every answer after the first.
    fn wrong_server(&mut self, payload: &[u8]) -> Option<String> {
        let hello = self.unanswered_hello.take()?;
        match serde_json::from_slice::<Value>(payload) {
            Ok(answer) if answer == hello => Some(
                "answered with our own request: this is an echo server, not a chat server".into(),
            ),
            Ok(answer) if answer["type"].is_string() => None,
            _ => Some(format!(
                "answered with something that is not a chat event ({}): is it a chat server?",
                shorten(&String::from_utf8_lossy(payload))
            )),
        }
    }

    /// The server confirmed a name: the first one also takes the member to the lobby.
    fn welcome(&mut self, name: String) -> io::Result<String> {
        if self.name.replace(name.clone()).is_some() {
            return Ok(format!("* you are now {name}"));
        }
        self.link.send(&join_request("lobby"))?;
        Ok(format!("* you are {name}"))
    }

    fn left(&mut self, room: String) -> String {
        self.rooms.remove(&room);
        if self.current.as_deref() != Some(room.as_str()) {
            return format!("* you left {room}");
        }
        self.current = self.rooms.iter().next().cloned();
        match &self.current {
            Some(next) => format!("* you left {room}; what you type now goes to {next}"),
            None => format!("* you left {room}; /join ROOM to talk again"),
        }
    }
}

const NO_NAME: &str = "! you have no name yet; choose one with /nick NAME";

/// At most the first 60 characters of `text`, for a message about it.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// The first request: asks for `name`.
fn hello_request(name: &str) -> Value {
    json!({"type": "hello", "name": name})
}

/// The client's own answer to a typed line.
fn answer(text: impl Into<String>) -> Typed {
    Typed::Print(text.into())
}

/// A server's error, with what to do about it (the reasons are listed in
/// docs/chat.md).
fn advise(reason: &str) -> String {
    if reason.starts_with("say hello first") {
        return NO_NAME[2..].to_string();
    }
    if let Some(rest) = reason.strip_prefix("not in room ") {
        let room = rest.split(':').next().unwrap_or(rest);
        return format!("you are not in {room}; enter it with /join {room}");
    }
    if let Some(room) = reason.strip_prefix("already in room ") {
        return format!("you are already in {room}");
    }
    if reason.starts_with("name ") {
        return format!("the {reason}; choose another with /nick NAME");
    }
    if reason.starts_with("room ") {
        return format!("the {reason}; choose another room name");
    }
    let advice = if reason.starts_with("no member named") {
        "/list shows who is in each room"
    } else if reason.starts_with("text is") {
        "send a shorter message"
    } else {
        "/help lists the commands"
    };
    format!("{reason}; {advice}")
}

/// Where the receiving thread prints.
enum Printer {
    /// Above the prompt and the half-typed line, which are drawn again below.
    AbovePrompt(Box<dyn ExternalPrinter + Send>),
    /// Plain lines on stdout (input is not a terminal).
    Plain,
}

impl Printer {
    fn line(&mut self, text: &str) {
        match self {
            Printer::AbovePrompt(printer) => {
                if printer.print(format!("{text}\n")).is_err() {
                    println!("{text}");
                }
            }
            Printer::Plain => println!("{text}"),
        }
    }
}

/// Where typed lines come from.
enum Input {
    /// A terminal: rustyline edits the line, with the usual keys and a history.
    Editor(Box<DefaultEditor>),
    /// A pipe or a file: plain lines.
    Plain(io::Lines<io::StdinLock<'static>>),
}

impl Input {
    /// The line editor when stdin and stdout are a terminal, plain lines otherwise;
    /// and the printer that goes with it.
    fn open() -> (Input, Printer) {
        if io::stdin().is_terminal() && io::stdout().is_terminal() {
            if let Ok(mut editor) = DefaultEditor::new() {
                if let Ok(printer) = editor.create_external_printer() {
                    save_terminal();
                    return (
                        Input::Editor(Box::new(editor)),
                        Printer::AbovePrompt(Box::new(printer)),
                    );
                }
            }
        }
        (Input::Plain(io::stdin().lines()), Printer::Plain)
    }

    /// The next line typed; `None` at the end of input, Ctrl-D or Ctrl-C.
    fn next_line(&mut self) -> io::Result<Option<String>> {
        match self {
            Input::Editor(editor) => match editor.readline(PROMPT) {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    Ok(Some(line))
                }
                Err(ReadlineError::Eof | ReadlineError::Interrupted) => Ok(None),
                Err(ReadlineError::Io(e)) => Err(e),
                Err(e) => Err(io::Error::other(e)),
            },
            Input::Plain(lines) => lines.next().transpose(),
        }
    }
}

/// The terminal's settings before the line editor changed them.
static TERMINAL: OnceLock<libc::termios> = OnceLock::new();

fn save_terminal() {
    // SAFETY: tcgetattr writes a termios struct, which is plain data, into `settings`.
    unsafe {
        let mut settings = std::mem::zeroed::<libc::termios>();
        if libc::tcgetattr(libc::STDIN_FILENO, &mut settings) == 0 {
            let _ = TERMINAL.set(settings);
        }
    }
}

/// Puts the terminal back as it was. The receiving thread ends the program while the
/// editor may be waiting for a key in raw mode, and the editor's own restoring, on
/// the main thread, would never run.
fn restore_terminal() {
    if let Some(settings) = TERMINAL.get() {
        // SAFETY: `settings` is a termios that tcgetattr filled in.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, settings);
        }
    }
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("chat_client: {message}");
            eprintln!("try chat_client --help");
            return ExitCode::from(2);
        }
    };
    let addr = options.addr;
    let (started, settled) = mpsc::channel();
    let (link, receiver) = match Link::open(&options).and_then(|link| {
        let receiver = link.try_clone().map_err(|e| e.to_string())?;
        Ok((link, receiver))
    }) {
        Ok(pair) => pair,
        Err(message) => {
            eprintln!("chat_client: {message}");
            return ExitCode::FAILURE;
        }
    };
    let chat = Arc::new(Mutex::new(Chat {
        link,
        name: None,
        rooms: BTreeSet::new(),
        current: None,
        started: Some(started),
        flushed: None,
        unanswered_hello: Some(hello_request(&options.name)),
    }));
    let (mut input, printer) = Input::open();
    let transport = if options.udp { "UDP" } else { "TCP" };
    println!("* connected to {addr} over {transport}; type to talk, /help lists the commands, /quit leaves");
    let shared = chat.clone();
    std::thread::spawn(move || receive(receiver, shared, printer, addr));
    if !options.udp {
        // (Over UDP the receiving thread pings when a read times out.)
        let pinger = chat.clone();
        std::thread::spawn(move || keep_alive(&pinger));
    }
    match talk(&chat, &mut input, &options.name, settled) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat_client: lost the connection to {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The options, or `None` when help was asked for.
fn parse_options() -> Result<Option<Options>, String> {
    let mut options = Options {
        addr: "127.0.0.1:9001".parse().expect("an address literal"),
        name: std::env::var("USER").unwrap_or_else(|_| "guest".into()),
        udp: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--addr" => {
                let value = args.next().ok_or("--addr needs HOST:PORT")?;
                options.addr = value.parse().map_err(|e| format!("--addr {value}: {e}"))?;
            }
            "--name" => options.name = args.next().ok_or("--name needs a name")?,
            "--udp" => options.udp = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Some(options))
}

/// Says hello (the lobby is joined once the name is confirmed), then turns each
/// line typed into requests until `/quit` or the end of input.
fn talk(
    chat: &Mutex<Chat>,
    input: &mut Input,
    name: &str,
    settled: mpsc::Receiver<()>,
) -> io::Result<()> {
    lock(chat).link.send(&[hello_request(name)])?;
    let _ = settled.recv_timeout(START_TIMEOUT);
    while let Some(line) = input.next_line()? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match lock(chat).typed(line)? {
            Typed::Print(text) => println!("{text}"),
            Typed::Nothing => {}
            Typed::Quit => break,
        }
    }
    let (flushed, pong) = mpsc::channel();
    {
        let mut chat = lock(chat);
        chat.flushed = Some(flushed);
        chat.link.send(&[json!({"type": "ping"})])?;
    }
    let _ = pong.recv_timeout(QUIT_TIMEOUT);
    // Frees the name at once (over UDP it would otherwise be held until expiry). The
    // server then closes a TCP connection: that is expected, not news to report.
    QUITTING.store(true, Ordering::SeqCst);
    lock(chat).link.send(&[json!({"type": "bye"})])
}

/// Pings every [`KEEPALIVE`] until the client quits or the connection fails (the
/// receiving thread reports that).
fn keep_alive(chat: &Mutex<Chat>) {
    loop {
        std::thread::sleep(KEEPALIVE);
        if QUITTING.load(Ordering::SeqCst) {
            return;
        }
        if lock(chat).link.send(&[json!({"type": "ping"})]).is_err() {
            return;
        }
    }
}

fn lock(chat: &Mutex<Chat>) -> std::sync::MutexGuard<'_, Chat> {
    chat.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The receiving thread: prints events until the connection ends; then, unless the
/// user quit, ends the program with a message saying why.
fn receive(link: Link, chat: Arc<Mutex<Chat>>, mut printer: Printer, addr: SocketAddr) {
    // The lock is not held while printing: a line printed above the prompt waits for
    // the editor to take it, and the editor's thread may be waiting for the lock.
    let mut show = |payload: &[u8]| -> io::Result<()> {
        if let Some(problem) = lock(&chat).wrong_server(payload) {
            not_a_chat_server(addr, &problem);
        }
        let line = match serde_json::from_slice::<Value>(payload) {
            Ok(event) => lock(&chat).event(&event)?,
            Err(_) => Some(format!("? {}", String::from_utf8_lossy(payload))),
        };
        if let Some(line) = line {
            printer.line(&line);
        }
        Ok(())
    };
    let reason = match link {
        Link::Tcp(stream) => receive_frames(stream, &mut show),
        Link::Udp(socket) => receive_datagrams(socket, &chat, &mut show),
    };
    if QUITTING.load(Ordering::SeqCst) {
        return;
    }
    // Straight to the terminal, after putting it back: a line handed to the editor
    // might not be drawn before the program ends.
    restore_terminal();
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "\n* disconnected from {addr}: {reason}");
    let _ = writeln!(out, "* run chat_client again to reconnect");
    let _ = out.flush();
    std::process::exit(1);
}

/// Ends the program: the server at `addr` is not a chat server, as `problem` says.
fn not_a_chat_server(addr: SocketAddr, problem: &str) -> ! {
    restore_terminal();
    eprintln!("chat_client: {addr} {problem}");
    eprintln!("chat_client: `switchboard chat` listens on 127.0.0.1:9001 by default");
    std::process::exit(1);
}

fn receive_frames(stream: TcpStream, show: &mut impl FnMut(&[u8]) -> io::Result<()>) -> String {
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
        if let Err(e) = show(&payload) {
            return e.to_string();
        }
    }
}

fn receive_datagrams(
    socket: UdpSocket,
    chat: &Mutex<Chat>,
    show: &mut impl FnMut(&[u8]) -> io::Result<()>,
) -> String {
    // Wake up now and then to ping, so that the server keeps this member.
    if let Err(e) = socket.set_read_timeout(Some(KEEPALIVE)) {
        return e.to_string();
    }
    let mut buf = vec![0u8; 65_536];
    loop {
        let result = match socket.recv(&mut buf) {
            Ok(n) => show(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                lock(chat).link.send(&[json!({"type": "ping"})])
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return "no chat server answers there (connection refused)".into()
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            return e.to_string();
        }
    }
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
