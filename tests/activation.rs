//! Socket activation: the test plays the service manager. It binds a listener, passes
//! it to `switchboard echo` as descriptor 3 with `LISTEN_FDS=1` and `LISTEN_PID` set to
//! the child's own pid (as systemd and `systemfd` do), and restarts the server on the
//! same socket while clients keep connecting: no connect is refused, and every
//! connection is either served or closed cleanly.

mod common;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// What happened to the clients' connections.
#[derive(Default)]
struct Tally {
    /// Connects that succeeded.
    connects: AtomicU64,
    /// Connects refused (or failed any other way).
    refused: AtomicU64,
    /// Frames echoed.
    echoes: AtomicU64,
    /// Connections that had every frame echoed.
    served: AtomicU64,
    /// Connections the server closed cleanly (a FIN, no reset) during its shutdown,
    /// after `served_before` echoes.
    drained: AtomicU64,
    /// Of the drained ones, those closed before their first echo.
    drained_unserved: AtomicU64,
    /// Anything else: a reset, a wrong echo, a timeout; the first is kept.
    failed: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_failure.lock().unwrap().get_or_insert(what);
    }
}

/// Frames each client connection sends, one at a time, before it closes.
const FRAMES_PER_CONNECTION: usize = 3;

/// One client connection: connect, echo a few frames, close. Every outcome is counted.
fn one_connection(addr: SocketAddr, n: u64, tally: &Tally) {
    let mut stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(e) => {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            tally.fail(format!("connect {n}: {e}"));
            return;
        }
    };
    tally.connects.fetch_add(1, Ordering::Relaxed);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    for i in 0..FRAMES_PER_CONNECTION {
        let payload = format!("connection {n} frame {i}");
        let outcome =
            write_frame(&mut stream, payload.as_bytes()).and_then(|()| read_frame(&mut stream));
        match outcome {
            Ok(echo) if echo == payload.as_bytes() => {
                tally.echoes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => {
                return tally.fail(format!("connection {n}: echo {other:?} for {payload:?}"));
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                tally.drained.fetch_add(1, Ordering::Relaxed);
                if i == 0 {
                    tally.drained_unserved.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Err(e) => return tally.fail(format!("connection {n} frame {i}: {e}")),
        }
    }
    tally.served.fetch_add(1, Ordering::Relaxed);
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

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let (tally, stop) = (tally.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = c * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    one_connection(addr, n, &tally);
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
        server.signal("TERM");
        let (code, _) = server.wait(IO_TIMEOUT);
        let old_log = log.finish();
        assert_eq!(code, Some(0), "{old_log}");
        // Between the two servers nobody accepts: the kernel queues the connects in
        // the backlog of the socket this test still holds.
        std::thread::sleep(Duration::from_millis(50));
        (server, log) = start_activated(&listener, &args);
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
        "{connects} connects, {} echoes, {served} served, {drained} drained ({} before \
         their first echo), {} refused, {} failed",
        get(&tally.echoes),
        get(&tally.drained_unserved),
        get(&tally.refused),
        get(&tally.failed),
    );
    assert_eq!(get(&tally.refused), 0, "{:?}", tally.first_failure);
    assert_eq!(get(&tally.failed), 0, "{:?}", tally.first_failure);
    assert_eq!(connects, served + drained);
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
