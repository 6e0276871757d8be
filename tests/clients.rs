//! End-to-end tests of the interactive clients, driven the way a person drives them:
//! each client runs in a terminal of its own (a detached tmux session, 100x30), the
//! test types into it with `tmux send-keys` and reads the screen with `tmux
//! capture-pane`, against a real `switchboard chat` or `switchboard echo` that the
//! test starts. Every wait is on what the screen shows, with a deadline.
//!
//! Skipped, with a message saying so, where tmux is not installed.
//!
//! What `chat_client` prints of the server's first answers is checked without a
//! terminal too: through pipes, as a script would run it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{example_path, free_port, wait_until, ChildServer, StderrLog, IO_TIMEOUT};

/// Whether tmux can be run; says why the test is skipped when it cannot.
fn have_tmux() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        eprintln!("skipped: tmux is not installed, and these tests type into a terminal");
    }
    found
}

/// A terminal running one program: a tmux server of its own (its own socket, in the
/// temporary directory, so that tests running at the same time stay apart), with one 100x30 window, in which a shell
/// runs the program, then prints its exit status as `[exited with status N]` and
/// stays, so that the program's last words and status can be read. (tmux's own
/// record of a dead pane is not relied on: it misses now and then that a program
/// has ended.) Dropping the terminal ends the tmux server and the program.
struct Terminal {
    socket: PathBuf,
}

/// Runs the program (`$0`, with its arguments), says how it ended, and waits.
const SHELL_WRAPPER: &str = r#""$0" "$@"; echo "[exited with status $?]"; exec sleep 3600"#;

impl Terminal {
    /// Starts `program` with `args` in a new terminal.
    #[track_caller]
    fn run(program: &Path, args: &[&str]) -> Terminal {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let socket = std::env::temp_dir().join(format!(
            "switchboard-clients-{}-{}.tmux",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let terminal = Terminal { socket };
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&terminal.socket)
            .args(["-f", "/dev/null"])
            .args(["new-session", "-d", "-x", "100", "-y", "30", "-s", "main"])
            .args(["sh", "-c", SHELL_WRAPPER])
            .arg(program)
            .args(args)
            .output()
            .expect("run tmux");
        assert!(out.status.success(), "tmux failed: {}", stderr(&out));
        terminal
    }

    fn tmux(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", stderr(&out));
        out
    }

    /// Types `text` without pressing Enter.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "main", "-l", text]);
    }

    /// Types `line` and presses Enter.
    fn type_line(&self, line: &str) {
        self.type_text(line);
        self.tmux(&["send-keys", "-t", "main", "Enter"]);
    }

    /// Everything the terminal shows and has scrolled off, one string per line, with
    /// long lines joined back together and trailing blank lines dropped.
    fn lines(&self) -> Vec<String> {
        let out = self.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", "main"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }

    /// Waits for an empty prompt, then types `line` and presses Enter.
    #[track_caller]
    fn enter(&self, line: &str) {
        self.wait_for_prompt();
        self.type_line(line);
    }

    /// Waits (at most `IO_TIMEOUT`) until the screen satisfies `condition`; panics
    /// with the screen if it never does.
    #[track_caller]
    fn wait_for(&self, what: &str, condition: impl Fn(&[String]) -> bool) -> Vec<String> {
        let mut lines = Vec::new();
        let seen = wait_until(IO_TIMEOUT, || {
            lines = self.lines();
            condition(&lines)
        });
        assert!(seen, "never on screen: {what}\n{}", lines.join("\n"));
        lines
    }

    /// Waits until some line of the screen is exactly `line`.
    #[track_caller]
    fn wait_for_line(&self, line: &str) -> Vec<String> {
        self.wait_for(line, |lines| lines.iter().any(|l| l == line))
    }

    /// Waits until the line editor waits for input with nothing typed: the last line
    /// is the bare prompt.
    #[track_caller]
    fn wait_for_prompt(&self) {
        self.wait_for("an empty prompt", |lines| {
            lines.last().is_some_and(|l| l == ">")
        });
    }

    /// Waits (at most `limit`) for the program to exit, and returns its exit status.
    #[track_caller]
    fn wait_for_exit(&self, limit: Duration) -> i32 {
        let mut status = None;
        let exited = wait_until(limit, || {
            status = self.lines().iter().rev().find_map(|line| {
                line.strip_prefix("[exited with status ")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            });
            status.is_some()
        });
        assert!(
            exited,
            "still running after {limit:?}:\n{}",
            self.lines().join("\n")
        );
        status.unwrap()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the terminal showed:\n{}", self.lines().join("\n"));
        }
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
        // tmux leaves its socket behind.
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `switchboard chat` or `switchboard echo` on a free port, TCP only, and its log
/// (drained, so that the server never blocks on a full pipe).
struct Server {
    _log: StderrLog,
    server: ChildServer,
    addr: String,
}

impl Server {
    /// Starts `switchboard SERVICE` for a test, or says the test is skipped and
    /// returns `None` where tmux is not installed.
    fn start(service: &str) -> Option<Server> {
        if !have_tmux() {
            return None;
        }
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let args = [
            service,
            "--tcp",
            &addr,
            "--udp",
            "off",
            "--log-level",
            "warn",
        ];
        let mut server = ChildServer::start(&args, Some(port));
        Some(Server {
            _log: StderrLog::capture(&mut server),
            server,
            addr,
        })
    }

    /// A chat client called `name` in a terminal of its own, connected and in the
    /// lobby (or with its first name refused, when `name` is taken).
    #[track_caller]
    fn client(&self, name: &str) -> Terminal {
        let client = example_path("chat_client");
        Terminal::run(&client, &["--addr", &self.addr, "--name", name])
    }

    /// A client called `name`, in the lobby, waiting at an empty prompt.
    #[track_caller]
    fn member(&self, name: &str) -> Terminal {
        let terminal = self.client(name);
        terminal.wait_for_line("* you joined lobby; what you type now goes there");
        terminal.wait_for_prompt();
        terminal
    }
}

#[test]
fn chat_client_help_prints_the_usage_and_succeeds() {
    if !have_tmux() {
        return;
    }
    let terminal = Terminal::run(&example_path("chat_client"), &["--help"]);
    assert_eq!(terminal.wait_for_exit(IO_TIMEOUT), 0);
    let lines = terminal.lines();
    assert!(lines[0].starts_with("usage: chat_client"), "{lines:?}");
    for option in [
        "--addr HOST:PORT",
        "--name NAME",
        "--udp",
        "--help",
        "/help",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(option)),
            "{option} not in the help: {lines:?}"
        );
    }
}

#[test]
fn chat_client_banner_names_help_which_lists_the_commands_and_unknown_ones_are_named() {
    let Some(chat) = Server::start("chat") else {
        return;
    };
    let alice = chat.member("alice");
    let lines = alice.lines();
    assert!(
        lines[0].starts_with(&format!("* connected to {}", chat.addr))
            && lines[0].contains("/help"),
        "the banner: {lines:?}"
    );

    alice.type_line("/help");
    let lines = alice.wait_for_line("*   /help           this list");
    for command in [
        "/nick NAME",
        "/join ROOM",
        "/leave [ROOM]",
        "/msg NAME TEXT",
        "/list",
        "/quit",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("*   {command} "))),
            "{command} not in /help: {lines:?}"
        );
    }

    alice.enter("/frobnicate now");
    alice.wait_for_line("! unknown command /frobnicate; /help lists the commands");
}

#[test]
fn a_message_arriving_while_typing_goes_above_the_half_typed_line() {
    let Some(chat) = Server::start("chat") else {
        return;
    };
    let alice = chat.member("alice");
    let bob = chat.member("bob");
    alice.wait_for_line("* bob joined lobby");

    bob.type_text("half a thought");
    bob.wait_for("the typed text", |lines| {
        lines.last().is_some_and(|l| l == "> half a thought")
    });
    alice.enter("hello from alice");
    let lines = bob.wait_for_line("[lobby] alice: hello from alice");
    // The message has a line of its own, above the prompt, which still holds exactly
    // what was typed.
    let prompt = lines.len() - 1;
    assert_eq!(lines[prompt], "> half a thought", "{lines:?}");
    assert_eq!(
        lines[prompt - 1],
        "[lobby] alice: hello from alice",
        "{lines:?}"
    );
    assert!(
        !lines[..prompt].iter().any(|l| l.contains("half a thought")),
        "the typed text was printed before the message: {lines:?}"
    );

    // And the editor kept it whole: finishing the line sends all of it.
    bob.type_line(", finished");
    alice.wait_for_line("[lobby] bob: half a thought, finished");
}

#[test]
fn a_taken_name_says_to_choose_another_with_nick_and_then_the_member_can_chat() {
    let Some(chat) = Server::start("chat") else {
        return;
    };
    let alice = chat.member("alice");
    let second = chat.client("alice");
    second.wait_for_line("! the name alice is taken; choose another with /nick NAME");

    second.enter("anyone here?");
    second.wait_for_line("! you have no name yet; choose one with /nick NAME");
    second.enter("/nick bob");
    second.wait_for_line("* you are bob");
    second.wait_for_line("* you joined lobby; what you type now goes there");
    second.enter("hello, I am bob");
    alice.wait_for_line("[lobby] bob: hello, I am bob");

    let lines = second.lines();
    assert!(
        !lines.iter().any(|l| l.contains("{\"type\"")),
        "the wire format on screen: {lines:?}"
    );
}

#[test]
fn join_of_the_current_room_neither_switches_nor_says_it_did() {
    let Some(chat) = Server::start("chat") else {
        return;
    };
    let carol = chat.member("carol");

    carol.type_line("/join lobby");
    carol.wait_for_line("* you are already in lobby, and talking there");
    carol.wait_for_prompt();
    let lines = carol.lines();
    let joins = lines
        .iter()
        .filter(|l| l.starts_with("* you joined"))
        .count();
    assert_eq!(joins, 1, "{lines:?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with('!') || l.contains("now talking")),
        "{lines:?}"
    );

    // A room joined earlier that is not the current one: switching back to it is
    // said, and nothing is asked of the server.
    carol.type_line("/join dev");
    carol.wait_for_line("* you joined dev; what you type now goes there");
    carol.enter("/join lobby");
    carol.wait_for_line("* now talking in lobby");
    carol.enter("back in the lobby");
    let lines = carol.wait_for_line("[lobby] carol: back in the lobby");
    assert!(!lines.iter().any(|l| l.starts_with('!')), "{lines:?}");

    carol.enter("/quit");
    assert_eq!(carol.wait_for_exit(IO_TIMEOUT), 0);
}

#[test]
fn replayed_history_is_marked_as_history() {
    let Some(chat) = Server::start("chat") else {
        return;
    };
    let alice = chat.member("alice");
    alice.type_line("said before bob came");
    alice.wait_for_line("[lobby] alice: said before bob came");

    let bob = chat.member("bob");
    bob.wait_for_line("(history) [lobby] alice: said before bob came");
    alice.enter("said after bob came");
    let lines = bob.wait_for_line("[lobby] alice: said after bob came");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("(history)") && l.contains("after")),
        "{lines:?}"
    );
}

#[test]
fn chat_client_reports_a_server_that_goes_away() {
    let Some(chat) = Server::start("chat") else {
        return;
    };
    let alice = chat.member("alice");
    alice.type_text("unsent");
    chat.server.signal("TERM");
    let started = Instant::now();
    alice.wait_for_line("* run chat_client again to reconnect");
    assert_eq!(alice.wait_for_exit(IO_TIMEOUT), 1);
    assert!(started.elapsed() < Duration::from_secs(3));
    let lines = alice.lines();
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "* disconnected from {}: the server closed the connection",
            chat.addr
        ))),
        "{lines:?}"
    );
}

#[test]
fn echo_client_reports_a_server_close_without_a_keypress() {
    let Some(echo) = Server::start("echo") else {
        return;
    };
    let addr = &echo.addr;
    let client = Terminal::run(&example_path("echo_client"), &["--addr", addr]);
    client.wait_for(&format!("connected to {addr}"), |lines| {
        lines
            .iter()
            .any(|l| l.starts_with(&format!("connected to {addr}")))
    });
    client.type_line("are you there");
    client.wait_for("the echo", |lines| {
        lines.iter().filter(|l| *l == "are you there").count() == 2
    });

    echo.server.signal("TERM");
    let started = Instant::now();
    client.wait_for_line(&format!(
        "echo_client: {addr}: the server closed the connection"
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "reported after {:?}",
        started.elapsed()
    );
    assert_eq!(client.wait_for_exit(IO_TIMEOUT), 1);
}

/// `chat_client ARGS` with stdin, stdout and stderr as pipes (no terminal: it reads
/// and prints plain lines).
fn piped_chat_client(args: &[&str]) -> Child {
    Command::new(example_path("chat_client"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chat_client")
}

/// Waits (at most `IO_TIMEOUT`) for `client` to end, its stdin still open; returns
/// its exit code, stdout and stderr.
#[track_caller]
fn ended(mut client: Child) -> (Option<i32>, String, String) {
    let exited = wait_until(IO_TIMEOUT, || client.try_wait().unwrap().is_some());
    if !exited {
        let _ = client.kill();
    }
    let out = client.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(exited, "chat_client did not end:\n{stdout}\n{stderr}");
    (out.status.code(), stdout, stderr)
}

#[test]
fn chat_client_pointed_at_an_echo_server_says_so_and_fails() {
    // Built (when it has to be) before any clock starts.
    example_path("chat_client");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    for transport in [&[][..], &["--udp"][..]] {
        let echo = ChildServer::start(&["echo", "--tcp", &addr, "--udp", &addr], Some(port));
        let started = Instant::now();
        let mut args = vec!["--addr", &addr, "--name", "alice"];
        args.extend_from_slice(transport);
        let (code, stdout, stderr) = ended(piped_chat_client(&args));
        assert_eq!(code, Some(1), "{transport:?}: {stdout}\n{stderr}");
        assert!(
            stderr.contains(&format!(
                "chat_client: {addr} answered with our own request: this is an echo server, \
                 not a chat server"
            )),
            "{transport:?}: {stderr}"
        );
        // At once, not after the wait for a name.
        assert!(started.elapsed() < Duration::from_secs(3), "{stderr}");
        assert!(!stdout.contains("hello"), "{stdout}");
        drop(echo);
    }
}

#[test]
fn chat_client_prints_notices_as_text() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // A chat server whose Redis is not there tells each member so, in a notice.
    let redis = format!("redis://127.0.0.1:{}", free_port());
    let args = ["chat", "--tcp", &addr, "--udp", "off", "--redis", &redis];
    let mut chat = ChildServer::start(&args, Some(port));
    let log = StderrLog::capture(&mut chat);
    log.wait_for("the link down", IO_TIMEOUT, |log| {
        log.contains("cannot reach Redis")
    });
    let mut client = piped_chat_client(&["--addr", &addr, "--name", "alice"]);
    // Said once the start has settled: everything before it has been printed.
    let mut input = client.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, b"/quit\n").unwrap();
    drop(input);
    let (code, stdout, stderr) = ended(client);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.lines().any(|l| l
            == "*** the link to the other chat nodes is down: rooms reach this server's \
                members only until it is back"),
        "{stdout}"
    );
    assert!(!stdout.lines().any(|l| l.starts_with("? ")), "{stdout}");
}
