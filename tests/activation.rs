//! Socket activation: the test plays the service manager. It binds a listener, passes
//! it to `switchboard echo` as descriptor 3 with `LISTEN_FDS=1` and `LISTEN_PID` set to
//! the child's own pid (as systemd and `systemfd` do), and restarts the server on the
//! same socket while clients keep connecting: no connect is refused, and no request is
//! lost: every request that reached a server before it began to shut down is answered
//! by it, and one that crossed its close gets a clean EOF and is answered by the next.

mod common;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// `switchboard ARGS...` with `listener` as its descriptor 3, announced by
/// `LISTEN_FDS=1` and `LISTEN_PID`. The pid is set by a shell that then `exec`s the
/// server, so `$$` is the server's own pid.
fn activated(listener: &impl AsRawFd, args: &[&str]) -> Command {
    let fd = listener.as_raw_fd();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env_remove("LISTEN_FDS_FIRST_FD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the closure calls only dup2 and fcntl, which are
    // async-signal-safe, and touches no memory of the parent but the copied fd number.
    unsafe {
        command.pre_exec(move || {
            // std's sockets are close-on-exec; dup2 makes a copy that is not. When the
            // listener already is descriptor 3, dup2 does nothing: clear the flag.
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, 3) == 3
            };
            if ok {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    command
}

/// Starts the server [`activated`] describes, and waits until it has logged its
/// inherited listener.
fn start_activated(listener: &impl AsRawFd, args: &[&str]) -> (ChildServer, StderrLog) {
    let child = activated(listener, args)
        .spawn()
        .expect("spawn switchboard");
    let mut server = ChildServer { child };
    let log = StderrLog::capture(&mut server);
    log.wait_for("the inherited listener", IO_TIMEOUT, |l| {
        l.contains("(inherited)")
    });
    (server, log)
}

/// What happened to the clients' requests and connections.
///
/// A request ends one of three ways. Answered. Refused cleanly: the server closed the
/// connection (EOF, no reset) before answering a request it may never have seen, one
/// written once it had begun to shut down (so it may have crossed the server's close
/// in flight); the client sends it again on a new connection. Or lost: anything else,
/// and in particular EOF before the answer to a request that was in the server's
/// socket before the server began to shut down.
///
/// Which of the two an unanswered request was, the client finds out from `/proc`:
/// right after writing it, it looks whether the server still holds the listener (a
/// server closes it first thing when it begins to shut down, before it reads its
/// connections one last time).
struct Tally {
    /// The process id of the server running now (0 before the first).
    server: AtomicU32,
    /// The listener as `/proc/PID/fd` names it: `socket:[INODE]`.
    listener: PathBuf,
    /// Requests written (answered or not).
    written: AtomicU64,
    /// Connects that succeeded.
    connects: AtomicU64,
    /// Connects refused (or failed any other way).
    refused: AtomicU64,
    /// Requests answered (each echoed, byte for byte).
    echoes: AtomicU64,
    /// Connections that had every request answered.
    served: AtomicU64,
    /// Connections a shutdown closed cleanly before it answered a request written
    /// once it had begun (that request is sent again on the next connection).
    drained: AtomicU64,
    /// Requests sent again after such a close.
    retried: AtomicU64,
    /// Requests in the server's socket before it began to shut down, and closed
    /// unanswered.
    lost: AtomicU64,
    /// Anything else: a reset, a wrong echo, a timeout. Lost ones count here too;
    /// the first failure is kept.
    failed: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn new(listener: &TcpListener) -> Tally {
        let fd = listener.as_raw_fd();
        Tally {
            server: AtomicU32::new(0),
            listener: std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap(),
            written: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            echoes: AtomicU64::new(0),
            served: AtomicU64::new(0),
            drained: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_failure: std::sync::Mutex::new(None),
        }
    }

    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_failure.lock().unwrap().get_or_insert(what);
    }

    /// Whether server `pid` still holds the listener (as descriptor 3, where
    /// [`activated`] put it): then it has not begun to shut down.
    fn still_listening(&self, pid: u32) -> bool {
        std::fs::read_link(format!("/proc/{pid}/fd/3")).is_ok_and(|at| at == self.listener)
    }
}

/// Requests each client connection sends, one at a time, before it closes (besides one
/// refused on the connection before, sent again first).
const FRAMES_PER_CONNECTION: usize = 3;

/// One client connection: connect, send a few requests one at a time (first `retry`,
/// the request a shutdown refused on the last connection, if any), each answered before
/// the next; close. Every outcome is counted. Returns the request a shutdown refused
/// cleanly on this connection, to be sent again.
fn one_connection(
    addr: SocketAddr,
    n: u64,
    tally: &Tally,
    retry: Option<String>,
) -> Option<String> {
    // The server running when the connect is made: it accepts this connection, or
    // leaves it in the backlog for the next one when it shuts down.
    let server = tally.server.load(Ordering::SeqCst);
    let mut stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(e) => {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            tally.fail(format!("connect {n}: {e}"));
            return None;
        }
    };
    tally.connects.fetch_add(1, Ordering::Relaxed);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    if retry.is_some() {
        tally.retried.fetch_add(1, Ordering::Relaxed);
    }
    let fresh = (0..FRAMES_PER_CONNECTION).map(|i| format!("connection {n} request {i}"));
    for payload in retry.into_iter().chain(fresh) {
        if let Err(e) = write_frame(&mut stream, payload.as_bytes()) {
            tally.fail(format!("{payload}: write: {e}"));
            return None;
        }
        let sent_before_shutdown = tally.still_listening(server);
        tally.written.fetch_add(1, Ordering::SeqCst);
        match read_frame(&mut stream) {
            Ok(echo) if echo == payload.as_bytes() => {
                tally.echoes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => {
                tally.fail(format!("{payload}: echo {other:?}"));
                return None;
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                if sent_before_shutdown {
                    tally.lost.fetch_add(1, Ordering::Relaxed);
                    tally.fail(format!(
                        "{payload}: in the server's socket before it began to shut \
                         down, closed unanswered"
                    ));
                    return None;
                }
                tally.drained.fetch_add(1, Ordering::Relaxed);
                return Some(payload);
            }
            Err(e) => {
                tally.fail(format!("{payload}: {e}"));
                return None;
            }
        }
    }
    tally.served.fetch_add(1, Ordering::Relaxed);
    None
}

/// Clients in a burst that comes with each signal.
const BURST: usize = 16;

/// Starts [`BURST`] clients at once, each making one connection (and another if a
/// shutdown refuses its request), and returns once half as many requests as it has
/// clients have been written since (by it, or by the steady clients): the moment to
/// send the signal.
fn connect_burst(addr: SocketAddr, tally: &Arc<Tally>) -> Vec<std::thread::JoinHandle<()>> {
    static NEXT: AtomicU64 = AtomicU64::new(1 << 40);
    let written = tally.written.load(Ordering::SeqCst);
    let start = Arc::new(std::sync::Barrier::new(BURST + 1));
    let clients = (0..BURST)
        .map(|_| {
            let (tally, start) = (tally.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut retry = None;
                loop {
                    let n = NEXT.fetch_add(1, Ordering::Relaxed);
                    retry = one_connection(addr, n, &tally, retry);
                    if retry.is_none() {
                        return;
                    }
                }
            })
        })
        .collect();
    start.wait();
    // (Spinning, not sleeping: the signal is to land among the burst's requests.)
    let deadline = Instant::now() + IO_TIMEOUT;
    while tally.written.load(Ordering::SeqCst) < written + BURST as u64 / 2 {
        assert!(Instant::now() < deadline, "the burst wrote nothing");
        std::hint::spin_loop();
    }
    clients
}

#[test]
fn restarts_on_an_inherited_socket_refuse_no_one() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let args = ["echo", "--udp", "off", "--shutdown-grace", "5"];
    let (mut server, mut log) = start_activated(&listener, &args);
    assert!(
        log.text()
            .contains(&format!("listening on tcp {addr} (inherited)")),
        "{}",
        log.text()
    );

    let tally = Arc::new(Tally::new(&listener));
    tally.server.store(server.child.id(), Ordering::SeqCst);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let (tally, stop) = (tally.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = c * 1_000_000;
                let mut retry = None;
                // A refused request is sent again even once the test is stopping.
                while !stop.load(Ordering::Relaxed) || retry.is_some() {
                    retry = one_connection(addr, n, &tally, retry);
                    n += 1;
                }
            })
        })
        .collect();

    const RESTARTS: usize = 3;
    /// How long each server serves the load before it is restarted.
    const GENERATION: Duration = Duration::from_millis(500);
    for restart in 0..RESTARTS {
        // The server is serving (echoes go on rising); let it serve a while.
        let echoes = tally.echoes.load(Ordering::Relaxed);
        let until = Instant::now() + GENERATION;
        assert!(
            wait_until(IO_TIMEOUT, || {
                tally.echoes.load(Ordering::Relaxed) > echoes + 20 && Instant::now() >= until
            }),
            "restart {restart}: no echoes\n{}",
            log.text()
        );
        // A burst of new clients, and the signal in the middle of it: the server has
        // accepted some of them and not yet read their requests when it begins to
        // shut down.
        let burst = connect_burst(addr, &tally);
        server.signal("TERM");
        let (code, _) = server.wait(IO_TIMEOUT);
        let old_log = log.finish();
        assert_eq!(code, Some(0), "{old_log}");
        // Between the two servers nobody accepts: the kernel queues the connects in
        // the backlog of the socket this test still holds.
        std::thread::sleep(Duration::from_millis(50));
        (server, log) = start_activated(&listener, &args);
        tally.server.store(server.child.id(), Ordering::SeqCst);
        for client in burst {
            client.join().unwrap();
        }
    }
    let echoes = tally.echoes.load(Ordering::Relaxed);
    assert!(wait_until(IO_TIMEOUT, || {
        tally.echoes.load(Ordering::Relaxed) > echoes + 20
    }));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    server.signal("TERM");
    let (code, _) = server.wait(IO_TIMEOUT);
    let last_log = log.finish();
    assert_eq!(code, Some(0), "{last_log}");

    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let (connects, served, drained) = (
        get(&tally.connects),
        get(&tally.served),
        get(&tally.drained),
    );
    eprintln!(
        "{connects} connects, {} requests answered, {served} connections served, \
         {drained} closed cleanly before answering a request written once the server \
         had begun to shut down ({} such requests sent again), {} lost, {} refused, {} failed",
        get(&tally.echoes),
        get(&tally.retried),
        get(&tally.lost),
        get(&tally.refused),
        get(&tally.failed),
    );
    assert_eq!(get(&tally.refused), 0, "{:?}", tally.first_failure);
    assert_eq!(get(&tally.lost), 0, "{:?}", tally.first_failure);
    assert_eq!(get(&tally.failed), 0, "{:?}", tally.first_failure);
    assert_eq!(connects, served + drained);
    // Every request a shutdown refused was sent again, and answered.
    assert_eq!(get(&tally.retried), drained);
    assert!(served > 0 && get(&tally.echoes) >= served * FRAMES_PER_CONNECTION as u64);
}

/// The pause between two servers is served later: connects made while no server runs
/// wait in the backlog and are echoed by the next server.
#[test]
fn connects_made_between_two_servers_are_served_by_the_next() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let args = ["echo", "--udp", "off"];
    let (server, _log) = start_activated(&listener, &args);
    server.signal("TERM");
    assert_eq!(server.wait(IO_TIMEOUT).0, Some(0));

    // No server now: the connects still complete, in the kernel.
    let mut waiting: Vec<TcpStream> = (0..5).map(|_| connect(addr)).collect();
    for (i, stream) in waiting.iter_mut().enumerate() {
        write_frame(stream, format!("queued {i}").as_bytes()).unwrap();
    }
    let started = Instant::now();
    let (_server, _log) = start_activated(&listener, &args);
    for (i, stream) in waiting.iter_mut().enumerate() {
        assert_eq!(
            read_frame(stream).unwrap(),
            format!("queued {i}").as_bytes()
        );
    }
    assert!(started.elapsed() < IO_TIMEOUT);
}

#[test]
fn an_explicit_tcp_adds_to_the_inherited_listeners() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let inherited = listener.local_addr().unwrap();
    let port = free_port();
    let explicit = format!("127.0.0.1:{port}");
    let args = ["echo", "--udp", "off", "--tcp", &explicit];
    let (server, log) = start_activated(&listener, &args);
    log.wait_for("the --tcp listener", IO_TIMEOUT, |l| {
        l.contains(&format!("listening on tcp {explicit}"))
    });
    for addr in [inherited, explicit.parse().unwrap()] {
        let mut client = connect(addr);
        write_frame(&mut client, b"both").unwrap();
        assert_eq!(read_frame(&mut client).unwrap(), b"both");
    }
    server.signal("TERM");
    assert_eq!(server.wait(IO_TIMEOUT).0, Some(0));
    let text = log.finish();
    let inherited_lines: Vec<_> = text.lines().filter(|l| l.contains("(inherited)")).collect();
    assert_eq!(inherited_lines.len(), 1, "{text}");
    assert!(
        inherited_lines[0].contains(&format!("listening on tcp {inherited} (inherited)")),
        "{text}"
    );
    assert!(
        !text.contains(&format!("listening on tcp {explicit} (inherited)")),
        "{text}"
    );
    // Without --tcp the default 127.0.0.1:9000 is not opened beside the inherited one.
    assert!(!text.contains("127.0.0.1:9000"), "{text}");
}

#[test]
fn inherited_sockets_need_a_single_loop() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut command = activated(&listener, &["echo", "--udp", "off", "--threads", "2"]);
    let output = command.output().expect("run switchboard");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("inherited sockets need --threads 1"),
        "{stderr}"
    );
}

#[test]
fn an_inherited_unix_listener_is_served_and_its_file_left_in_place() {
    let dir = std::env::temp_dir().join(format!("switchboard-activation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (server, log) = start_activated(&listener, &["echo", "--udp", "off"]);
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write_frame(&mut client, b"over unix").unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), b"over unix");
    server.signal("TERM");
    assert_eq!(server.wait(IO_TIMEOUT).0, Some(0));
    let text = log.finish();
    let line = format!("listening on unix {} (inherited)", path.display());
    assert!(text.contains(&line), "{text}");
    // The socket file belongs to whoever made the socket.
    assert!(path.exists());
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
}
