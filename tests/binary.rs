//! Tests of the `switchboard` binary as a user runs it: exit codes, messages, signals,
//! restart on a port in TIME_WAIT, and behaviour when file descriptors run out.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// `switchboard echo` on TCP 127.0.0.1:`port` only, with `extra` flags, once it serves.
fn tcp_echo(port: u16, extra: &[&str]) -> ChildServer {
    let tcp = addr(port);
    let mut args = vec!["echo", "--tcp", &tcp, "--udp", "off"];
    args.extend_from_slice(extra);
    let server = ChildServer::start(&args, Some(port));
    wait_until_served(port);
    server
}

/// Returns once the echo server on `port` answers a frame: its loop is running, so
/// its signal handling is in place (a listener accepts from the moment it is bound,
/// a little before that).
#[track_caller]
fn wait_until_served(port: u16) {
    let mut client = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    write_frame(&mut client, b"ready?").unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), b"ready?");
}

/// The port that the log's `listening on TRANSPORT 127.0.0.1:PORT` line names, once
/// it is there.
fn logged_port(log: &str, transport: &str) -> Option<u16> {
    let line = log
        .lines()
        .find(|l| l.contains(&format!("listening on {transport} 127.0.0.1:")))?;
    line.rsplit(':').next()?.trim().parse().ok()
}

/// Sends `payload` to the UDP echo on `port` and checks that it comes back.
#[track_caller]
fn assert_udp_echo(port: u16, payload: &[u8]) {
    let client = udp_client();
    client.send_to(payload, ("127.0.0.1", port)).unwrap();
    let mut reply = vec![0u8; payload.len() + 1];
    let (n, _) = client.recv_from(&mut reply).unwrap();
    assert_eq!(&reply[..n], payload);
}

/// SIGTERM, then the exit status must be 0 (the log is shown if not).
#[track_caller]
fn term_exits_zero(server: ChildServer, log: StderrLog) {
    server.signal("TERM");
    let (code, _) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{}", log.finish());
}

#[test]
fn sigterm_exits_zero_after_logging_a_summary() {
    let port = free_port();
    let server = tcp_echo(port, &[]);
    let mut client = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    write_frame(&mut client, b"hi").unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), b"hi");
    server.signal("TERM");
    let (code, stderr) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("served: conns"), "{stderr}");
    // The readiness probe's frame and the client's.
    assert!(stderr.contains("frames in/out 2/2"), "{stderr}");
}

#[test]
fn sigint_also_shuts_down_cleanly() {
    let port = free_port();
    let server = tcp_echo(port, &[]);
    server.signal("INT");
    let (code, stderr) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_second_signal_exits_at_once_even_with_connections_draining() {
    let port = free_port();
    let mut server = tcp_echo(port, &["--shutdown-grace", "30"]);
    let log = StderrLog::capture(&mut server);
    // A client that never reads: its echoes fill both socket buffers and stay queued,
    // so the graceful shutdown would wait out the whole 30 s grace period.
    let mut client = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    client
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while write_frame(&mut client, &chunk).is_ok() {}
    server.signal("TERM");
    // The first signal starts a graceful shutdown, which waits for that output.
    log.wait_for("the drain", IO_TIMEOUT, |log| {
        log.contains("shutting down: 1 connections to drain")
    });
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the first signal must drain, not exit"
    );
    server.signal("TERM");
    let (code, _) = server.wait(IO_TIMEOUT);
    let stderr = log.finish();
    // 130, not 0: the second signal found it still draining.
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("again: stopping now"), "{stderr}");
}

/// Signals come through a pipe the loop watches, not a signal thread: the process
/// has exactly one thread (which also keeps the C library's system-call wrappers on
/// their single-threaded fast path).
#[cfg(target_os = "linux")]
#[test]
fn the_server_process_runs_a_single_thread() {
    let port = free_port();
    let server = tcp_echo(port, &[]);
    let mut client = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    write_frame(&mut client, b"one thread").unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), b"one thread");
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.child.id()))
        .unwrap()
        .count();
    assert_eq!(tasks, 1);
    server.signal("TERM");
    let (code, stderr) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn startup_logs_each_endpoint_with_its_real_port() {
    let mut server = ChildServer::start(
        &["echo", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
        None,
    );
    let log = StderrLog::capture(&mut server);
    log.wait_for("both endpoints", IO_TIMEOUT, |log| {
        logged_port(log, "tcp").is_some() && logged_port(log, "udp").is_some()
    });
    let text = log.text();
    let (tcp, udp) = (
        logged_port(&text, "tcp").unwrap(),
        logged_port(&text, "udp").unwrap(),
    );
    assert_ne!(tcp, 0, "{text}");
    assert_ne!(udp, 0, "{text}");
    // The real ports are the ones served.
    wait_until_served(tcp);
    assert_udp_echo(udp, b"ping");
    term_exits_zero(server, log);
}

#[test]
fn port_in_use_exits_1_with_one_clear_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for command in ["echo", "chat"] {
        let server = ChildServer::start(&[command, "--tcp", &addr(port), "--udp", "off"], None);
        let (code, stderr) = server.wait(IO_TIMEOUT);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("cannot bind tcp 127.0.0.1:{port}")),
            "{stderr}"
        );
        assert!(stderr.contains("in use"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        // Nothing ran, so nothing is summed up.
        assert!(!stderr.contains("served"), "{command}: {stderr}");
    }
}

#[test]
fn bad_flags_are_usage_errors_with_exit_2() {
    for args in [
        &["echo", "--max-frame", "lots"][..],
        &["echo", "--tcp", "not-an-address"],
        &["echo", "--udp", "127.0.0.1"],
        &["echo", "--max-conns", "0"],
        &["echo", "--accept-budget", "0"],
        &["echo", "--memory-budget", "lots"],
        &["echo", "--send-timeout", "-1"],
        &["echo", "--framing", "morse"],
        &["echo", "--no-such-flag"],
    ] {
        let server = ChildServer::start(args, None);
        let (code, stderr) = server.wait(IO_TIMEOUT);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn tcp_off_serves_udp_alone_and_both_off_is_refused() {
    let mut server = ChildServer::start(&["echo", "--tcp", "off", "--udp", "127.0.0.1:0"], None);
    let log = StderrLog::capture(&mut server);
    log.wait_for("the udp endpoint", IO_TIMEOUT, |log| {
        log.contains("listening on udp 127.0.0.1:")
    });
    let text = log.text();
    assert!(!text.contains("listening on tcp"), "{text}");
    assert_udp_echo(logged_port(&text, "udp").unwrap(), b"alone");
    term_exits_zero(server, log);

    let server = ChildServer::start(&["echo", "--tcp", "off", "--udp", "off"], None);
    let (code, stderr) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("nothing to serve"), "{stderr}");
}

#[test]
fn restart_binds_at_once_while_old_connections_sit_in_time_wait() {
    let port = free_port();
    let args = [
        "echo",
        "--tcp",
        &addr(port),
        "--udp",
        "off",
        "--idle-timeout",
        "1",
    ];
    let server = ChildServer::start(&args, Some(port));
    // The server closes these idle connections first, so the TIME_WAIT state is on
    // its side of the port: exactly what SO_REUSEADDR must cope with.
    let mut clients: Vec<TcpStream> = (0..5)
        .map(|_| connect(SocketAddr::from(([127, 0, 0, 1], port))))
        .collect();
    for client in &mut clients {
        assert!(is_closed(client));
    }
    server.signal("TERM");
    assert_eq!(server.wait(IO_TIMEOUT).0, Some(0));
    let again = ChildServer::start(&args, Some(port));
    let mut client = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    write_frame(&mut client, b"back").unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), b"back");
    drop(again);
}

/// CPU time (user + system) a process has used, from /proc/PID/stat, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn running_out_of_file_descriptors_neither_spins_nor_stops_the_server() {
    let port = free_port();
    let server = std::process::Command::new("prlimit")
        .args(["--nofile=48:48", env!("CARGO_BIN_EXE_switchboard")])
        .args([
            "echo",
            "--tcp",
            &addr(port),
            "--udp",
            "off",
            "--log-level",
            "warn",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("prlimit");
    let mut server = ChildServer { child: server };
    let log = StderrLog::capture(&mut server);
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(wait_until(IO_TIMEOUT, || TcpStream::connect(target).is_ok()));
    // More connections than the server has descriptors: the kernel completes them
    // (backlog), the server cannot accept them all.
    let flood: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(target).ok())
        .collect();
    log.wait_for("accepts paused", IO_TIMEOUT, |log| {
        log.contains("pausing accepts")
    });
    let before = cpu_ticks(server.child.id());
    let start = Instant::now();
    // This sleep stays: it is the span over which the server's CPU use is measured,
    // in real time (a child process has no virtual clock to drive).
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(server.child.id()) - before;
    // A spinning loop would use ~100 ticks per second; backing off uses almost none.
    assert!(
        used < 30,
        "server used {used} ticks in {:?} while out of fds",
        start.elapsed()
    );

    drop(flood);
    let mut client = None;
    assert!(
        wait_until(IO_TIMEOUT, || {
            let Ok(mut c) = TcpStream::connect(target) else {
                return false;
            };
            c.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let ok = write_frame(&mut c, b"recovered").is_ok()
                && read_frame(&mut c).is_ok_and(|p| p == b"recovered");
            client = Some(c);
            ok
        }),
        "the server serves again once descriptors are free"
    );
    term_exits_zero(server, log);
}

#[test]
fn framing_flag_selects_lines_for_plain_text_clients() {
    let port = free_port();
    let args = [
        "echo",
        "--tcp",
        &addr(port),
        "--udp",
        "off",
        "--framing",
        "lines",
    ];
    let server = ChildServer::start(&args, Some(port));
    let mut client = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    std::io::Write::write_all(&mut client, b"typed in nc\n").unwrap();
    let mut reader = std::io::BufReader::new(client);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert_eq!(line, "typed in nc\n");
    drop(server);
}

#[test]
fn stats_interval_logs_the_counters_periodically() {
    let port = free_port();
    let args = [
        "echo",
        "--tcp",
        &addr(port),
        "--udp",
        "off",
        "--stats-interval",
        "1",
    ];
    let mut server = ChildServer::start(&args, Some(port));
    let log = StderrLog::capture(&mut server);
    let started = Instant::now();
    // A report each second: the second one within about two seconds of the start.
    log.wait_for("two reports", IO_TIMEOUT, |log| {
        log.matches("stats: conns:").count() >= 2
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "two reports took {:?}",
        started.elapsed()
    );
    term_exits_zero(server, log);
}

/// `--trace` tells a learner why each read stopped: a short read that drained the
/// socket (and why no read to `WouldBlock` follows), or the peer's EOF.
#[test]
fn trace_says_why_each_read_stopped() {
    let port = free_port();
    let mut server = tcp_echo(port, &["--trace"]);
    let log = StderrLog::capture(&mut server);
    let mut client = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    write_frame(&mut client, b"why did you stop?").unwrap();
    assert_eq!(read_frame(&mut client).unwrap(), b"why did you stop?");
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut rest).unwrap();
    log.wait_for("the EOF's trace", IO_TIMEOUT, |log| {
        log.contains("read EOF")
    });
    let text = log.text();
    assert!(
        text.contains("read 21 of") && text.contains("a short read, so the socket is drained"),
        "{text}"
    );
    assert!(text.contains("no read to WouldBlock needed"), "{text}");
    assert!(
        text.contains("read EOF: the peer closed its side"),
        "{text}"
    );
    assert!(text.contains("poll: timeout"), "{text}");
}

/// Text typed into the length-framed port (`nc`, then "hello") is named as text, with
/// the flag that serves text; an HTTP client gets an HTTP answer saying what the port
/// speaks. Both log lines name the peer.
#[test]
fn text_or_http_on_the_framed_port_is_told_what_the_port_speaks() {
    use std::io::{Read, Write};
    let port = free_port();
    let mut server = tcp_echo(port, &[]);
    let log = StderrLog::capture(&mut server);
    let at = SocketAddr::from(([127, 0, 0, 1], port));

    let mut typist = connect(at);
    typist.write_all(b"hello\n").unwrap();
    assert!(is_closed(&mut typist), "closed after the text");
    let local = typist.local_addr().unwrap();
    log.wait_for("the hint", IO_TIMEOUT, |log| {
        log.contains("the bytes are text")
    });
    let line = log
        .text()
        .lines()
        .find(|l| l.contains("the bytes are text"))
        .map(str::to_string)
        .unwrap();
    assert!(line.contains("--framing lines"), "{line}");
    assert!(line.contains(&format!("from {local}")), "{line}");

    let mut browser = connect(at);
    browser
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    browser.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("not HTTP.\n"), "{answer}");
    log.wait_for("the HTTP line", IO_TIMEOUT, |log| {
        log.contains("the bytes are an HTTP request")
    });
}

/// Text typed into the chat port (length-framed too) is named as text, with no advice
/// about a flag of another command: `chat` has no `--framing`.
#[test]
fn text_on_the_chat_port_gets_no_advice_meant_for_echo() {
    use std::io::Write;
    let port = free_port();
    let tcp = addr(port);
    let mut server = ChildServer::start(&["chat", "--tcp", &tcp, "--udp", "off"], Some(port));
    let log = StderrLog::capture(&mut server);
    let mut typist = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    typist.write_all(b"hello\n").unwrap();
    assert!(is_closed(&mut typist), "closed after the text");
    log.wait_for("the text named", IO_TIMEOUT, |log| {
        log.contains("the bytes are text")
    });
    let text = log.text();
    let line = text
        .lines()
        .find(|l| l.contains("the bytes are text"))
        .unwrap();
    assert!(line.contains("length-prefixed frames"), "{line}");
    assert!(!line.contains("--framing"), "{line}");
    assert!(!line.contains("switchboard echo"), "{line}");
}

/// `--help` shows each server's real default address, and a bare port is an address on
/// 127.0.0.1 (a bad one says what is expected).
#[test]
fn addresses_take_a_bare_port_and_help_shows_the_real_defaults() {
    let help = |command: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(help("echo").contains("[default: 127.0.0.1:9000]"));
    assert!(help("chat").contains("[default: 127.0.0.1:9001]"));
    assert!(!help("chat").contains("PORT]"));

    let port = free_port();
    let mut server = ChildServer::start(
        &["echo", "--tcp", &port.to_string(), "--udp", "off"],
        Some(port),
    );
    wait_until_served(port);
    let log = StderrLog::capture(&mut server);
    server.signal("TERM");
    let (code, _) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0));
    assert!(log
        .finish()
        .contains(&format!("listening on tcp 127.0.0.1:{port}")));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["echo", "--tcp", "localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expected IP:PORT"), "{stderr}");
}

/// `--threads 3`: three loop threads besides the main one, connections over all of
/// them, and SIGTERM drains every loop and sums their counters.
#[cfg(target_os = "linux")]
#[test]
fn threads_runs_that_many_loops_and_sigterm_drains_them_all() {
    let port = free_port();
    let server = tcp_echo(port, &["--threads", "3", "--spread", "handoff"]);
    let mut clients: Vec<TcpStream> = (0..5)
        .map(|_| connect(SocketAddr::from(([127, 0, 0, 1], port))))
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        write_frame(client, format!("on a loop {i}").as_bytes()).unwrap();
        assert_eq!(
            read_frame(client).unwrap(),
            format!("on a loop {i}").as_bytes()
        );
    }
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.child.id()))
        .unwrap()
        .count();
    assert_eq!(tasks, 4, "the main thread and three loops");
    server.signal("TERM");
    let (code, stderr) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("3 loops running"), "{stderr}");
    // Two readiness probes and five clients, dealt round robin (3/2/2), summed.
    assert!(
        stderr.contains("served by 3 loops: conns: 0 active, 7 accepted"),
        "{stderr}"
    );
    let per_loop: Vec<u64> = stderr
        .lines()
        .filter_map(|line| line.split("served: conns: 0 active, ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect();
    per_loop_is_round_robin(per_loop, &stderr);
}

/// `--threads 2`: the lines each loop logs for itself say which loop they are from.
#[cfg(target_os = "linux")]
#[test]
fn each_loops_log_lines_name_the_loop() {
    let port = free_port();
    let server = tcp_echo(port, &["--threads", "2"]);
    server.signal("TERM");
    let (code, stderr) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}");
    for index in 0..2 {
        for line in [
            format!("loop {index} of 2: listening on tcp 127.0.0.1:{port}"),
            format!("loop {index} of 2: served: conns: 0 active, "),
        ] {
            assert!(stderr.contains(&line), "no {line:?} in\n{stderr}");
        }
    }
    for line in stderr.lines() {
        for said in ["listening on", "served:"] {
            if let Some((before, _)) = line.split_once(said) {
                assert!(before.ends_with(" of 2: "), "which loop? {line}");
            }
        }
    }
    assert!(stderr.contains("served by 2 loops: "), "{stderr}");
}

#[test]
fn each_chat_loops_summary_names_the_loop() {
    let port = free_port();
    let tcp = addr(port);
    let server = ChildServer::start(
        &["chat", "--tcp", &tcp, "--udp", "off", "--threads", "2"],
        Some(port),
    );
    // Served once a member is welcomed: the loops are running, signals handled.
    let mut member = connect(SocketAddr::from(([127, 0, 0, 1], port)));
    write_frame(&mut member, br#"{"type":"hello","name":"ann"}"#).unwrap();
    let welcome = read_frame(&mut member).unwrap();
    assert!(welcome.starts_with(br#"{"type":"welcome""#));
    server.signal("TERM");
    let (code, stderr) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}");
    for index in 0..2 {
        let line = format!("loop {index} of 2: chat served: ");
        assert!(stderr.contains(&line), "no {line:?} in\n{stderr}");
    }
}

#[track_caller]
fn per_loop_is_round_robin(mut per_loop: Vec<u64>, log: &str) {
    per_loop.sort();
    assert_eq!(per_loop, vec![2, 2, 3], "{log}");
}

#[test]
fn threads_zero_is_a_usage_error() {
    let server = ChildServer::start(&["echo", "--threads", "0"], None);
    let (code, stderr) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--threads"), "{stderr}");
}
