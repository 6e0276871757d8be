//! End-to-end tests of the load generator (`switchboard bench`) against servers running
//! in this process on 127.0.0.1: a correct echo server must give zero errors and a
//! plausible count; servers that corrupt, drop or close must be caught; an address
//! where nothing listens, a server that never answers and one that speaks another
//! protocol must each give one clear error within seconds; Ctrl-C must leave a summary
//! of what was measured. Each run lasts about a second (a failing one, at most a few).

mod common;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use switchboard::loadgen::{self, Listeners, LoadError, Mode, Options};
use switchboard::services::chat::{Chat, ChatSettings};
use switchboard::services::Echo;
use switchboard::{
    CloseMode, Config, ConnId, Context, LengthCodec, Origin, PeerAddr, RawCodec, Service,
};

const MAX_FRAME: usize = 1 << 20;

fn echo_server() -> TestServer<Echo> {
    TestServer::start(local_config(), || {
        (Echo::default(), LengthCodec::new(MAX_FRAME))
    })
}

/// A short run against `addr`.
fn quick(addr: SocketAddr, mode: Mode) -> Options {
    Options {
        addr,
        mode,
        conns: 4,
        depth: 8,
        size: 64,
        duration: Duration::from_millis(700),
        warmup: Duration::from_millis(200),
        ..Options::default()
    }
}

#[test]
fn framed_run_against_a_correct_server_has_no_errors() {
    let server = echo_server();
    let summary = loadgen::run(&quick(server.tcp(), Mode::Framed)).expect("run");
    assert_eq!(summary.errors, 0, "{summary}");
    assert!(!summary.failed());
    assert_eq!(summary.connected, 4);
    // Loopback echo does tens of thousands per second even in a debug build.
    assert!(summary.messages > 1_000, "{summary}");
    let latency = summary.latency.expect("latency measured");
    assert!(latency.p50_us > 0.0 && latency.p50_us <= latency.p99_us);
    assert!(latency.p99_us <= latency.max_us);
    let expected_mb = summary.msgs_per_sec * 64.0 / 1e6;
    assert!((summary.mb_per_sec - expected_mb).abs() < 1e-6);
}

/// Echoes frames, but flips one byte of every 100th.
struct Corrupting {
    seen: u64,
}

impl Service for Corrupting {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
        self.seen += 1;
        let mut reply = payload.to_vec();
        if self.seen.is_multiple_of(100) {
            let last = reply.len() - 1;
            reply[last] ^= 0x20;
        }
        let _ = ctx.send(conn, &reply);
    }
}

#[test]
fn corrupted_echoes_are_counted_as_errors() {
    let server = TestServer::start(local_config(), || {
        (Corrupting { seen: 0 }, LengthCodec::new(MAX_FRAME))
    });
    let summary = loadgen::run(&quick(server.tcp(), Mode::Framed)).expect("run");
    assert!(summary.mismatches > 0, "{summary}");
    assert!(summary.failed());
    // Only every 100th is wrong: the rest still count as throughput.
    assert!(summary.messages > summary.mismatches, "{summary}");
    assert!(summary.first_errors[0].contains("differs"), "{summary}");
}

#[test]
fn the_binary_exits_non_zero_when_echoes_are_wrong() {
    let server = TestServer::start(local_config(), || {
        (Corrupting { seen: 0 }, LengthCodec::new(MAX_FRAME))
    });
    let output = bench(&server.tcp().to_string(), "--json");
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert!(json["mismatches"].as_u64().unwrap() > 0, "{json}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("FAILED"));
}

#[test]
fn the_binary_exits_zero_and_prints_json_for_a_correct_server() {
    let server = echo_server();
    let output = bench(&server.tcp().to_string(), "--json");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is one JSON object");
    assert_eq!(json["errors"], 0);
    assert!(json["msgs_per_sec"].as_f64().unwrap() > 0.0);
    assert!(json["latency"]["p99_us"].as_f64().unwrap() > 0.0);
}

/// Runs `switchboard bench ARGS` to its end.
fn bench_output(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run switchboard bench")
}

/// Runs `switchboard bench --addr ADDR` for a short while with extra flags.
fn bench(addr: &str, extra: &str) -> std::process::Output {
    bench_output(&flags(&format!(
        "--addr {addr} --conns 2 --depth 4 --duration 0.5 --warmup 0.1 --quiet {extra}"
    )))
}

#[test]
fn nothing_listening_is_one_clear_error() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let err = loadgen::run(&quick(addr, Mode::Framed)).unwrap_err();
    assert!(matches!(err, LoadError::Unreachable { .. }), "{err:?}");
    let output = bench(&addr.to_string(), "");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot reach {addr}")) && stderr.contains("refused"),
        "{stderr}"
    );
}

/// Echoes frames but swallows the 500th: the reply never comes.
struct Dropping {
    seen: u64,
}

impl Service for Dropping {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
        self.seen += 1;
        if self.seen != 500 {
            let _ = ctx.send(conn, payload);
        }
    }
}

#[test]
fn a_reply_that_never_comes_is_an_error() {
    let server = TestServer::start(local_config(), || {
        (Dropping { seen: 0 }, LengthCodec::new(MAX_FRAME))
    });
    let options = Options {
        conns: 1,
        depth: 4,
        messages: Some(2_000),
        ..quick(server.tcp(), Mode::Framed)
    };
    let summary = loadgen::run(&options).expect("run");
    // The swallowed frame shifts every later reply on that connection by one.
    assert!(summary.failed(), "{summary}");
    assert!(
        summary.mismatches > 0 || summary.unanswered > 0,
        "{summary}"
    );
}

#[test]
fn a_message_budget_sends_exactly_that_many() {
    let server = echo_server();
    let options = Options {
        messages: Some(3_000),
        duration: Duration::from_secs(10),
        ..quick(server.tcp(), Mode::Framed)
    };
    let summary = loadgen::run(&options).expect("run");
    assert_eq!(summary.errors, 0, "{summary}");
    assert_eq!(summary.messages, 3_000);
    assert!(summary.seconds < 10.0, "ended when the budget was answered");
    let stats = server.stop();
    // The probe connection sends nothing; every frame is the budget's.
    assert_eq!(stats.frames_in, 3_000);
}

#[test]
fn raw_mode_checks_an_unframed_stream() {
    let server = TestServer::start(local_config(), || (Echo::default(), RawCodec));
    let options = Options {
        size: 1000,
        ..quick(server.tcp(), Mode::Raw)
    };
    let summary = loadgen::run(&options).expect("run");
    assert_eq!(summary.errors, 0, "{summary}");
    assert!(summary.messages > 100, "{summary}");
}

#[test]
fn udp_mode_echoes_datagrams() {
    let server = echo_server();
    let summary = loadgen::run(&quick(server.udp(), Mode::Udp)).expect("run");
    assert_eq!(summary.errors, 0, "{summary}");
    assert!(summary.messages > 1_000, "{summary}");
}

#[test]
fn udp_budget_accounts_for_every_datagram() {
    let server = echo_server();
    let options = Options {
        messages: Some(2_000),
        duration: Duration::from_secs(10),
        ..quick(server.udp(), Mode::Udp)
    };
    let summary = loadgen::run(&options).expect("run");
    assert_eq!(summary.errors, 0, "{summary}");
    assert_eq!(summary.messages + summary.lost, 2_000, "{summary}");
    // The server saw the probe and every datagram that was answered.
    assert!(server.stop().datagrams_in > summary.messages);
}

#[test]
fn open_loop_rate_sends_on_schedule() {
    let server = echo_server();
    // 10 connections x 200 msgs/s for 0.7 s: about 1,400 messages.
    let options = Options {
        conns: 10,
        rate: Some(200.0),
        ..quick(server.tcp(), Mode::Framed)
    };
    let summary = loadgen::run(&options).expect("run");
    assert_eq!(summary.errors, 0, "{summary}");
    let per_sec = summary.msgs_per_sec;
    assert!((1_600.0..=2_400.0).contains(&per_sec), "{summary}");
}

/// Echo, recording where each connection came from.
struct Recording {
    peers: Arc<Mutex<Vec<IpAddr>>>,
}

impl Service for Recording {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_connect(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), _: Origin) {
        if let Some(PeerAddr::Tcp(addr)) = ctx.peer_addr(conn) {
            self.peers.lock().unwrap().push(addr.ip());
        }
    }
    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
        let _ = ctx.send(conn, payload);
    }
}

#[test]
fn idle_connections_and_source_addresses() {
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&peers);
    let server = TestServer::start(local_config(), move || {
        (Recording { peers: seen }, LengthCodec::new(MAX_FRAME))
    });
    let options = Options {
        idle: 30,
        src_ips: 3,
        ..quick(server.tcp(), Mode::Framed)
    };
    let summary = loadgen::run(&options).expect("run");
    assert_eq!(summary.errors, 0, "{summary}");
    assert_eq!(summary.idle, 30);
    let peers = peers.lock().unwrap();
    // The probe, then 30 idle and 4 active connections spread over three addresses.
    assert_eq!(peers.len(), 1 + 30 + 4);
    for last in 1..=3u8 {
        let ip = IpAddr::from([127, 0, 0, last]);
        assert!(peers.contains(&ip), "no connection from {ip}: {peers:?}");
    }
}

#[test]
fn idle_connections_closed_by_the_server_are_reported() {
    let mut config = local_config();
    config.idle_timeout = Some(Duration::from_millis(300));
    let server = TestServer::start(config, || (Echo::default(), LengthCodec::new(MAX_FRAME)));
    let options = Options {
        idle: 5,
        ..quick(server.tcp(), Mode::Framed)
    };
    let summary = loadgen::run(&options).expect("run");
    assert_eq!(summary.disconnects, 5, "{summary}");
    assert!(summary.failed());
}

fn chat_server() -> TestServer<Chat> {
    let mut config = Config::default();
    config.tcp.push("127.0.0.1:0".parse().unwrap());
    TestServer::start(config, || {
        (
            Chat::new(ChatSettings::default()),
            switchboard::services::chat::ChatCodec::length(MAX_FRAME),
        )
    })
}

#[test]
fn chat_mode_measures_deliveries_to_every_member() {
    let server = chat_server();
    let options = Options {
        conns: 20,
        senders: 2,
        depth: 4,
        size: 100,
        ..quick(server.tcp(), Mode::Chat)
    };
    let summary = loadgen::run(&options).expect("run");
    assert_eq!(summary.errors, 0, "{summary}");
    assert!(summary.published > 10, "{summary}");
    // Every published message reaches all 20 members, in order (give or take the
    // window's edges: deliveries are counted when they arrive, publications when sent).
    let ratio = summary.messages as f64 / summary.published as f64;
    assert!((18.0..=22.0).contains(&ratio), "{summary}");
}

/// Listeners that count `msg` frames instead of parsing them still account for every
/// delivery: each member gets every message, and the report says how they counted.
#[test]
fn counting_listeners_count_every_delivery() {
    let server = chat_server();
    let (members, messages) = (40, 300);
    let options = Options {
        conns: members,
        senders: 2,
        depth: 8,
        size: 64,
        messages: Some(messages),
        listeners: Listeners::Count,
        ..quick(server.tcp(), Mode::Chat)
    };
    let summary = loadgen::run(&options).expect("run");
    assert_eq!(summary.errors, 0, "{summary}");
    assert_eq!(summary.published, messages, "{summary}");
    assert_eq!(summary.deliveries, members as u64 * messages, "{summary}");
    assert_eq!(summary.messages, summary.deliveries, "{summary}");
    // Text bytes are counted as the listeners find them: 64 each.
    let expected_mb = summary.msgs_per_sec * 64.0 / 1e6;
    assert!((summary.mb_per_sec - expected_mb).abs() < 1e-6, "{summary}");
    // The senders still time what they receive.
    assert!(summary.latency.is_some(), "{summary}");
    assert!(summary.to_string().contains("listeners counted msg frames"));
    let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
    assert_eq!(json["listeners"], "count", "{json}");
    assert_eq!(json["deliveries"], members * messages as usize, "{json}");

    let checking = Options {
        listeners: Listeners::Check,
        ..options
    };
    let summary = loadgen::run(&checking).expect("run");
    assert_eq!(summary.listeners.as_deref(), Some("check"), "{summary}");
    assert!(!summary.to_string().contains("listeners counted"));
}

/// The command line's `--listeners count` reaches the run, and is refused where a
/// counting member could not tell this run's messages from another's.
#[test]
fn the_listeners_flag_and_where_counting_is_refused() {
    let server = chat_server();
    let addr = server.tcp().to_string();
    let run = |extra: &str| {
        let args = flags(&format!(
            "--addr {addr} --mode chat --conns 6 --messages 50 --json --quiet {extra}"
        ));
        bench_to_end(&args, Duration::from_secs(30))
    };
    let json = json_of_success(run("--listeners count"));
    assert_eq!(json["listeners"], "count", "{json}");
    assert_eq!(json["deliveries"], 6 * 50, "{json}");
    for refused in [
        "--listeners count --room shared",
        "--listeners count --procs 2",
    ] {
        let (code, stdout, stderr) = run(refused);
        assert_eq!(code, Some(1), "{refused:?}: {stdout}\n{stderr}");
        assert!(
            stderr.contains("--listeners count"),
            "{refused:?}: {stderr}"
        );
    }
}

/// The fewest words of the chat protocol (join, ping, say, bye) in a server that
/// loses one message: the fifth said never reaches member `victim`.
struct LosingOne {
    members: Vec<(ConnId, usize)>,
    said: u64,
    victim: usize,
}

impl Service for LosingOne {
    /// The member's number, from its name (`b{run}-{i}`).
    type Conn = usize;
    type Timer = ();
    type Codec = LengthCodec;

    fn on_frame(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        i: &mut usize,
        payload: &[u8],
    ) {
        let request: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let field = |name: &str| request[name].as_str().unwrap_or_default().to_string();
        match field("type").as_str() {
            "hello" => *i = field("name").rsplit('-').next().unwrap().parse().unwrap(),
            "join" => self.members.push((conn, *i)),
            "ping" => drop(ctx.send(conn, br#"{"type":"pong"}"#)),
            "say" => {
                self.said += 1;
                let (room, text) = (field("room"), field("text"));
                let event = format!(
                    r#"{{"type":"msg","room":"{room}","from":"s","text":"{text}","ts":1}}"#
                );
                for &(member, index) in &self.members {
                    if !(self.said == 5 && index == self.victim) {
                        let _ = ctx.send(member, event.as_bytes());
                    }
                }
            }
            "bye" => ctx.close(conn, CloseMode::Flush),
            _ => {}
        }
    }
}

/// A counting listener that gets one message fewer than was published says so, though
/// it cannot say which.
#[test]
fn a_counting_listener_reports_a_lost_message() {
    let server = TestServer::start(local_config(), || {
        let service = LosingOne {
            members: Vec::new(),
            said: 0,
            victim: 9,
        };
        (service, LengthCodec::new(MAX_FRAME))
    });
    let options = Options {
        conns: 10,
        senders: 1,
        depth: 4,
        messages: Some(30),
        listeners: Listeners::Count,
        ..quick(server.tcp(), Mode::Chat)
    };
    let summary = loadgen::run(&options).expect("run");
    assert_eq!(summary.gaps, 1, "{summary}");
    assert_eq!(summary.errors, 1, "{summary}");
    assert_eq!(summary.deliveries, 10 * 30 - 1, "{summary}");
    assert_eq!(
        summary.first_errors,
        ["member 9: counted 29 of the 30 messages published"],
        "{summary}"
    );
}

/// Accepts connections and never answers.
struct Mute;

impl Service for Mute {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;
}

/// Runs `switchboard bench --addr ADDR` with a 30 s window, which a run that cannot
/// get going must not wait for.
fn bench_long(addr: &str, extra: &str) -> std::process::Output {
    bench_output(&flags(&format!(
        "--addr {addr} --duration 30 --quiet {extra}"
    )))
}

/// How long a run that cannot get going may take to say so: the three seconds of
/// silence it waits for, plus room for a machine shared with other tests.
const FAIL_FAST: Duration = Duration::from_secs(8);

#[test]
fn chat_mode_defaults_to_the_chat_port() {
    use clap::Parser;
    use switchboard::cli::{Cli, Command as Sub};
    let addr_for = |mode: &str| {
        let cli = Cli::try_parse_from(["switchboard", "bench", "--mode", mode]).unwrap();
        let Sub::Bench(args) = cli.command else {
            panic!("not a bench command");
        };
        args.options().unwrap().addr.to_string()
    };
    assert_eq!(addr_for("chat"), "127.0.0.1:9001");
    for mode in ["framed", "raw", "udp"] {
        assert_eq!(addr_for(mode), "127.0.0.1:9000", "{mode}");
    }
    // --help says so.
    let help = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["bench", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("127.0.0.1:9000") && help.contains("with --mode chat, 127.0.0.1:9001"),
        "{help}"
    );
    // And a run aims there: whatever answers on 9001 (nothing, usually: "cannot reach"),
    // the address it names is the chat port's.
    let output = bench_output(&flags(
        "--mode chat --duration 0.1 --warmup 0 --quiet --json",
    ));
    let all = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(all.contains("127.0.0.1:9001"), "{all}");
    assert!(!all.contains("127.0.0.1:9000"), "{all}");
}

#[test]
fn chat_mode_against_an_echo_server_fails_at_once_naming_the_cause() {
    let server = echo_server();
    let options = Options {
        duration: Duration::from_secs(30),
        ..quick(server.tcp(), Mode::Chat)
    };
    let start = Instant::now();
    let err = loadgen::run(&options).unwrap_err();
    assert!(start.elapsed() < FAIL_FAST, "took {:?}", start.elapsed());
    assert!(matches!(err, LoadError::WrongProtocol { .. }), "{err:?}");
    // The binary: exit 1, one line naming the likely cause.
    let start = Instant::now();
    let output = bench_long(&server.tcp().to_string(), "--mode chat");
    assert!(start.elapsed() < FAIL_FAST, "took {:?}", start.elapsed());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "the server at {} does not speak the chat protocol",
        server.tcp()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        stderr.contains("is it `switchboard echo`? chat listens on 127.0.0.1:9001"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "no summary for a run that never started"
    );
}

#[test]
fn framed_mode_against_a_chat_server_fails_at_once() {
    let server = chat_server();
    let start = Instant::now();
    let err = loadgen::run(&Options {
        duration: Duration::from_secs(30),
        ..quick(server.tcp(), Mode::Framed)
    })
    .unwrap_err();
    assert!(start.elapsed() < FAIL_FAST, "took {:?}", start.elapsed());
    let message = err.to_string();
    assert!(matches!(err, LoadError::WrongProtocol { .. }), "{err:?}");
    // What came back is shown: the chat server's error event.
    assert!(message.contains(r#"{"type":"error""#), "{message}");
    assert!(message.contains("is it `switchboard chat`?"), "{message}");
}

#[test]
fn a_server_that_accepts_but_never_answers_fails_within_seconds() {
    let server = TestServer::start(local_config(), || (Mute, LengthCodec::new(MAX_FRAME)));
    for mode in [Mode::Framed, Mode::Chat] {
        let options = Options {
            duration: Duration::from_secs(30),
            ..quick(server.tcp(), mode)
        };
        let start = Instant::now();
        let err = loadgen::run(&options).unwrap_err();
        assert!(
            start.elapsed() < FAIL_FAST,
            "{mode}: took {:?}",
            start.elapsed()
        );
        assert!(matches!(err, LoadError::Silent { .. }), "{mode}: {err:?}");
        let message = err.to_string();
        assert!(message.contains("answered nothing"), "{message}");
    }
    // The binary, with the default window: exit 1 and the error, no summary.
    let start = Instant::now();
    let output = bench_long(&server.tcp().to_string(), "");
    assert!(start.elapsed() < FAIL_FAST, "took {:?}", start.elapsed());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("accepted the connections but answered nothing"),
        "{stderr}"
    );
}

/// `switchboard bench ARGS` as a child process with its stderr collected as it comes.
fn bench_child(args: &[String]) -> (ChildServer, StderrLog) {
    let mut all = vec!["bench"];
    all.extend(args.iter().map(String::as_str));
    let mut child = ChildServer::start(&all, None);
    let log = StderrLog::capture(&mut child);
    (child, log)
}

/// Waits for the first progress line of the measured window, then sends SIGINT; returns
/// the exit code, stdout and stderr.
fn interrupt_when_measuring(child: ChildServer, log: StderrLog) -> (Option<i32>, String, String) {
    interrupt_in_phase(child, log, "measure")
}

/// Waits for the first progress line of `phase` (` warmup ` or ` measure `), then sends
/// SIGINT; returns the exit code, stdout and stderr.
fn interrupt_in_phase(
    child: ChildServer,
    log: StderrLog,
    phase: &str,
) -> (Option<i32>, String, String) {
    let wanted = format!(" {phase} ");
    log.wait_for("a progress line of the phase", IO_TIMEOUT, |text| {
        text.lines()
            .any(|l| l.starts_with("bench:") && l.contains(&wanted))
    });
    child.signal("INT");
    wait_for_end(child, log, IO_TIMEOUT)
}

/// Waits (at most `limit`) for a bench child to end; returns its exit code, its stdout
/// and its stderr.
fn wait_for_end(
    mut child: ChildServer,
    log: StderrLog,
    limit: Duration,
) -> (Option<i32>, String, String) {
    let mut pipe = child.child.stdout.take().expect("stdout is piped");
    let (code, _) = child.wait(limit);
    let mut stdout = String::new();
    pipe.read_to_string(&mut stdout).unwrap();
    (code, stdout, log.finish())
}

#[test]
fn sigint_prints_an_interrupted_summary_of_what_was_measured() {
    let server = echo_server();
    let addr = server.tcp().to_string();
    let started = Instant::now();
    let (child, log) = bench_child(&flags(&format!(
        "--addr {addr} --conns 2 --depth 4 --duration 60 --warmup 0 --json"
    )));
    let (code, stdout, stderr) = interrupt_when_measuring(child, log);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it ran to the end"
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(json["interrupted"], true, "{json}");
    assert!(json["messages"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    let seconds = json["seconds"].as_f64().unwrap();
    assert!((0.5..30.0).contains(&seconds), "{json}");
    assert!(
        stderr.contains("switchboard bench: interrupted"),
        "{stderr}"
    );
}

#[test]
fn sigint_during_a_chat_run_prints_deliveries_marked_interrupted() {
    let server = chat_server();
    let addr = server.tcp().to_string();
    let (child, log) = bench_child(&flags(&format!(
        "--addr {addr} --mode chat --conns 5 --duration 60 --warmup 0"
    )));
    let (code, stdout, stderr) = interrupt_when_measuring(child, log);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stdout.contains("measured (interrupted"), "{stdout}");
    let throughput = stdout
        .lines()
        .find(|l| l.contains("throughput:"))
        .unwrap_or_else(|| panic!("no throughput line: {stdout}"));
    assert!(
        throughput.contains("deliveries/s") && !throughput.contains("msgs/s"),
        "{throughput}"
    );
    assert!(stdout.contains("errors: 0"), "{stdout}");
}

/// Waits for the first progress line of the warm-up (every connection is open by
/// then), then sends SIGINT; returns the exit code, stdout and stderr.
fn interrupt_in_warmup(child: ChildServer, log: StderrLog) -> (Option<i32>, String, String) {
    interrupt_in_phase(child, log, "warmup")
}

#[test]
fn sigint_before_the_window_says_nothing_was_measured() {
    let server = echo_server();
    let addr = server.tcp().to_string();
    let run = |json: bool| {
        let mut args = flags(&format!("--addr {addr} --conns 1 --warmup 60"));
        if json {
            args.push("--json".into());
        }
        let (child, log) = bench_child(&args);
        interrupt_in_warmup(child, log)
    };

    let (code, stdout, stderr) = run(false);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stdout.contains(": 1 conn (+0 idle)"), "{stdout}");
    assert!(stdout.contains("(0 messages)"), "{stdout}");
    assert!(stdout.contains("latency: nothing measured"), "{stdout}");
    assert!(!stdout.contains("p50"), "percentiles of nothing: {stdout}");
    assert!(
        stderr.contains("interrupted before the measured window began"),
        "{stderr}"
    );

    let (code, stdout, stderr) = run(true);
    assert_eq!(code, Some(130), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(json["interrupted"], true, "{json}");
    assert_eq!(json["connected"], 1, "{json}");
    assert_eq!(json["messages"], 0, "{json}");
    for field in ["latency", "latency_p50_ms", "latency_p99_ms"] {
        assert!(json[field].is_null(), "{field} is not null: {json}");
    }
}

/// The progress lines of a run of `switchboard bench ARGS` (warm-up, then measuring).
fn progress_lines(args: &str) -> Vec<String> {
    let output = bench_output(&flags(&format!("{args} --warmup 1.5 --duration 1")));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.starts_with("bench:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn progress_lines_say_the_same_thing_in_every_mode() {
    let echo = echo_server();
    let chat = chat_server();
    let framed = progress_lines(&format!("--addr {} --conns 2", echo.tcp()));
    let members = progress_lines(&format!("--addr {} --mode chat", chat.tcp()));
    for (lines, unit) in [(&framed, "msgs"), (&members, "deliveries")] {
        let warmup = lines.iter().find(|l| l.contains(" warmup "));
        let measure = lines.iter().find(|l| l.contains(" measure "));
        let (Some(warmup), Some(measure)) = (warmup, measure) else {
            panic!("no warm-up and measure lines: {lines:#?}");
        };
        for line in [warmup, measure] {
            // The rate covers the last second in any phase; the count only the window.
            assert!(line.contains(&format!(" {unit}/s ")), "{line}");
            assert!(line.contains("(last 1 s)"), "{line}");
            assert!(line.contains(&format!(" {unit}, p99 ")), "{line}");
        }
        // Warm-up traffic shows in the rate, not in what was measured.
        assert!(!warmup.contains(&format!("{unit}/s 0 ")), "{warmup}");
        assert!(
            warmup.contains(&format!("measured 0 {unit}, p99 -")),
            "{warmup}"
        );
        assert!(
            !measure.contains(&format!("measured 0 {unit}")),
            "{measure}"
        );
    }
}

/// `switchboard bench ARGS` as a child process; waits (at most `limit`) for it to end
/// and returns its exit code, its stdout and its stderr.
fn bench_to_end(args: &[String], limit: Duration) -> (Option<i32>, String, String) {
    let (child, log) = bench_child(args);
    wait_for_end(child, log, limit)
}

/// The JSON summary of a run that exited 0, from its exit code, stdout and stderr.
#[track_caller]
fn json_of_success((code, stdout, stderr): (Option<i32>, String, String)) -> serde_json::Value {
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

/// Asserts that a JSON summary has a measured latency: a median above zero, no higher
/// than the 99th percentile.
#[track_caller]
fn assert_latency_measured(json: &serde_json::Value) {
    let (p50, p99) = (
        json["latency_p50_ms"].as_f64(),
        json["latency_p99_ms"].as_f64(),
    );
    assert!(p50.unwrap() > 0.0 && p50 <= p99, "{json}");
}

/// A command line's flags written as one string, split at spaces (no flag or value in
/// these tests has a space in it).
fn flags(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

fn closed_by_reset(stats: &switchboard::Stats) -> u64 {
    stats.closed[switchboard::CloseReason::Reset.index()]
}

#[test]
fn two_runs_share_a_room_and_every_member_checks_every_sender() {
    let server = chat_server();
    let addr = server.tcp().to_string();
    // Each run: 10 members, 2 of them sending, 100 messages between them; the runs
    // wait for each other (--runs 2) before sending, and for every sender's last word
    // before leaving.
    let args = flags(&format!(
        "--addr {addr} --mode chat --room shared --runs 2 --conns 10 --senders 2 --depth 4 \
         --messages 100 --json --quiet"
    ));
    let first = std::thread::spawn({
        let args = args.clone();
        move || bench_to_end(&args, Duration::from_secs(30))
    });
    let second = bench_to_end(&args, Duration::from_secs(30));
    let first = first.join().unwrap();
    let runs = [json_of_success(first), json_of_success(second)];
    let published: u64 = runs.iter().map(|j| j["published"].as_u64().unwrap()).sum();
    assert_eq!(published, 200, "{runs:?}");
    for json in &runs {
        assert_eq!(json["room"], "shared", "{json}");
        assert_eq!(json["members_joined"], 10, "{json}");
        assert_eq!(json["runs_ready"], 2, "{json}");
        // Both runs' senders, told apart by their ids.
        assert_eq!(json["senders_heard"], 4, "{json}");
        assert_eq!(json["gaps"], 0, "{json}");
        assert_eq!(json["reorders"], 0, "{json}");
        assert_eq!(json["errors"], 0, "{json}");
        // Every member got every message of every sender of both runs.
        assert_eq!(json["deliveries"], 10 * published, "{json}");
        assert_latency_measured(json);
        let join = json["join_seconds"].as_f64().unwrap();
        assert!(join > 0.0 && join < 10.0, "{json}");
        assert_eq!(json["connect_failures"], 0, "{json}");
        assert_eq!(
            json["first_connect_error"],
            serde_json::Value::Null,
            "{json}"
        );
    }
    assert_ne!(runs[0]["run_id"], runs[1]["run_id"]);
    let stats = server.stop();
    assert_eq!(closed_by_reset(&stats), 0, "{stats}");
}

#[test]
fn listeners_of_a_shared_room_check_another_runs_senders() {
    let server = chat_server();
    let addr = server.tcp().to_string();
    let hall = format!("--addr {addr} --mode chat --room hall --runs 2 --json --quiet");
    let listen = flags(&format!(
        "{hall} --conns 5 --senders 0 --duration 0.5 --warmup 0"
    ));
    let talk = flags(&format!("{hall} --conns 3 --senders 3 --messages 60"));
    let listeners = std::thread::spawn(move || bench_to_end(&listen, Duration::from_secs(30)));
    let (code, stdout, stderr) = bench_to_end(&talk, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let heard = json_of_success(listeners.join().unwrap());
    assert_eq!(heard["published"], 0, "{heard}");
    assert_eq!(heard["senders_heard"], 3, "{heard}");
    // The listeners stayed for the talkers' last words: all 60 messages, 5 members.
    assert_eq!(heard["deliveries"], 5 * 60, "{heard}");
    assert_eq!(heard["gaps"], 0, "{heard}");
    assert_eq!(heard["errors"], 0, "{heard}");
}

#[test]
fn the_end_of_a_run_leaves_no_reset_and_nothing_queued() {
    // 1,000 members: as they leave, the room announces each departure to all who
    // remain, a flood a run must read to the end before it closes.
    let server = chat_server();
    let addr = server.tcp().to_string();
    let args = flags(&format!(
        "--addr {addr} --mode chat --conns 1000 --senders 10 --depth 4 --duration 1 \
         --warmup 0.2 --quiet"
    ));
    let (code, stdout, stderr) = bench_to_end(&args, Duration::from_secs(40));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(!stderr.contains("still had output queued"), "{stderr}");
    assert!(stdout.contains("errors: 0"), "{stdout}");
    let stats = server.stop();
    assert_eq!(closed_by_reset(&stats), 0, "{stats}");
    // The probe, then every member, closed in order.
    assert_eq!(stats.accepted, 1001, "{stats}");
}

/// Echo, counting the connections it accepted.
struct Counting {
    accepted: Arc<Mutex<u64>>,
}

impl Service for Counting {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_connect(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut (), _: Origin) {
        *self.accepted.lock().unwrap() += 1;
    }
    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
        let _ = ctx.send(conn, payload);
    }
}

#[test]
fn addrs_deal_connections_round_robin_over_the_servers() {
    let counts = [Arc::new(Mutex::new(0)), Arc::new(Mutex::new(0))];
    let servers: Vec<_> = counts
        .iter()
        .map(|count| {
            let accepted = Arc::clone(count);
            TestServer::start(local_config(), move || {
                (Counting { accepted }, LengthCodec::new(MAX_FRAME))
            })
        })
        .collect();
    let options = Options {
        conns: 6,
        idle: 4,
        more_addrs: vec![servers[1].tcp()],
        ..quick(servers[0].tcp(), Mode::Framed)
    };
    let summary = loadgen::run(&options).expect("run");
    assert_eq!(summary.errors, 0, "{summary}");
    assert_eq!(summary.connected, 6);
    assert_eq!(
        summary.addr,
        format!("{},{}", servers[0].tcp(), servers[1].tcp())
    );
    // Each: its probe, then half of the 4 idle and 6 active connections.
    for count in &counts {
        assert_eq!(*count.lock().unwrap(), 1 + 5);
    }
    for server in servers {
        assert_eq!(closed_by_reset(&server.stop()), 0);
    }
    // The binary's flag: a comma-separated list.
    let echo = echo_server();
    let list = format!("{},{}", echo.tcp(), echo.tcp());
    let output = bench_output(&flags(&format!(
        "--addrs {list} --conns 2 --duration 0.3 --warmup 0 --quiet --json"
    )));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["addr"], list);
}

#[test]
fn connect_failures_keep_their_first_reason() {
    // A listener that accepts nothing, with room for two connections in its queue:
    // the probe's and one of the run's. The others time out.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(1).unwrap();
    let listener: std::net::TcpListener = socket.into();
    let addr = listener.local_addr().unwrap();
    let options = Options {
        conns: 0,
        idle: 6,
        connect_timeout: Duration::from_millis(300),
        ..quick(addr, Mode::Framed)
    };
    let summary = loadgen::run(&options).expect("one connection fits in the queue");
    assert_eq!(summary.connect_failures, 5, "{summary}");
    let first = summary.first_connect_error.as_deref().expect("its reason");
    assert_eq!(first, format!("{addr}: connect did not finish in time"));
    assert_eq!(summary.connect_errors.len(), 1, "{summary}");
    assert_eq!(summary.connect_errors[0].count, 5);
    assert!(
        summary.to_string().contains("connect failed 5 times: "),
        "{summary}"
    );
    drop(listener);
}

#[test]
fn procs_spread_one_run_over_workers_and_merge_their_summaries() {
    let server = chat_server();
    let addr = server.tcp().to_string();
    let args = flags(&format!(
        "--addr {addr} --mode chat --procs 2 --conns 9 --senders 3 --depth 2 --messages 90 \
         --json --quiet"
    ));
    let json = json_of_success(bench_to_end(&args, Duration::from_secs(30)));
    // Two workers, one room: 5 + 4 members, 2 + 1 senders, 45 + 45 messages.
    assert_eq!(json["conns"], 9, "{json}");
    assert_eq!(json["members_joined"], 9, "{json}");
    assert_eq!(json["runs_ready"], 2, "{json}");
    assert_eq!(json["senders_heard"], 3, "{json}");
    assert_eq!(json["published"], 90, "{json}");
    assert_eq!(json["deliveries"], 9 * 90, "{json}");
    assert_eq!(json["gaps"], 0, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert_latency_measured(&json);
    assert!(json.get("latency_buckets").is_none(), "{json}");
    let stats = server.stop();
    // Each worker's probe, then its members.
    assert_eq!(stats.accepted, 2 + 9, "{stats}");
    assert_eq!(closed_by_reset(&stats), 0, "{stats}");
}

/// A certificate and its key, made for the test and written as PEM files to a
/// directory of its own (removed when dropped).
struct TestCert {
    dir: std::path::PathBuf,
}

impl TestCert {
    /// A certificate for `names` (IP addresses or DNS names), self-signed, so that it
    /// is its own CA: `--tls-ca` trusts it.
    fn new(label: &str, names: &[&str]) -> TestCert {
        let made = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .expect("a certificate");
        let dir = std::env::temp_dir().join(format!("sb-loadgen-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        TestCert { dir }
    }

    fn cert(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }

    fn key(&self) -> String {
        self.dir.join("key.pem").display().to_string()
    }

    /// `switchboard echo` serving TLS with this certificate on a free port of
    /// 127.0.0.1 (and plain UDP on the same port, which the runs leave alone).
    fn echo_server(&self) -> (ChildServer, SocketAddr) {
        let port = free_port();
        let tcp = format!("tls://127.0.0.1:{port}");
        let udp = format!("127.0.0.1:{port}");
        let (cert, key) = (self.cert(), self.key());
        let args = [
            "echo",
            "--tcp",
            &tcp,
            "--udp",
            &udp,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ];
        let server = ChildServer::start(&args, Some(port));
        (server, SocketAddr::from(([127, 0, 0, 1], port)))
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn tls_runs_echo_over_tls_and_time_every_handshake() {
    let cert = TestCert::new("echo", &["127.0.0.1"]);
    let (_server, addr) = cert.echo_server();
    let args = flags(&format!(
        "--addr {addr} --tls --tls-ca {} --conns 4 --idle 2 --depth 4 --duration 0.5 \
         --warmup 0.1 --json --quiet",
        cert.cert()
    ));
    let json = json_of_success(bench_to_end(&args, Duration::from_secs(30)));
    assert_eq!(json["connected"], 4, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert!(json["messages"].as_u64().unwrap() > 0, "{json}");
    assert_latency_measured(&json);
    let tls = &json["tls"];
    // One handshake per connection, the idle ones too; every echo rode on them (the
    // server speaks nothing but TLS on that port).
    assert_eq!(tls["handshakes"], 6, "{json}");
    assert_eq!(tls["handshake_failures"], 0, "{json}");
    assert_eq!(tls["protocol"], "TLSv1_3", "{json}");
    assert!(
        tls["cipher_suite"].as_str().unwrap().starts_with("TLS13_"),
        "{json}"
    );
    let (p50, max) = (
        tls["handshake"]["p50_us"].as_f64().unwrap(),
        tls["handshake"]["max_us"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= max, "{json}");
    assert!(tls["handshakes_per_sec"].is_null(), "{json}");

    // Spread over two workers: each dials over TLS, and their handshakes add up.
    let args = flags(&format!(
        "--addr {addr} --tls --tls-ca {} --procs 2 --conns 4 --duration 0.3 --warmup 0 \
         --json --quiet",
        cert.cert()
    ));
    let json = json_of_success(bench_to_end(&args, Duration::from_secs(30)));
    assert_eq!(json["tls"]["handshakes"], 4, "{json}");
    assert!(
        json["tls"]["handshake"]["p99_us"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    assert!(json["tls"].get("handshake_buckets").is_none(), "{json}");

    // Without --tls, the summary has no TLS part.
    let plain = echo_server();
    let output = bench(&plain.tcp().to_string(), "--json");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(json["tls"].is_null(), "{json}");
}

#[test]
fn a_certificate_for_another_name_fails_its_handshakes_and_says_so() {
    // Two servers: one with a certificate for 127.0.0.1, the other for another name.
    // Both are trusted; the second's handshakes must fail on the name.
    let right = TestCert::new("right", &["127.0.0.1"]);
    let wrong = TestCert::new("wrong", &["other.example"]);
    let (_good, good_addr) = right.echo_server();
    let (_bad, bad_addr) = wrong.echo_server();
    let both = right.dir.join("both.pem");
    let pems = [right.cert(), wrong.cert()].map(|p| std::fs::read_to_string(p).unwrap());
    std::fs::write(&both, pems.concat()).unwrap();
    let args = flags(&format!(
        "--addrs {good_addr},{bad_addr} --tls --tls-ca {} --conns 4 --duration 0.3 \
         --warmup 0 --json --quiet",
        both.display()
    ));
    let started = Instant::now();
    let (code, stdout, stderr) = bench_to_end(&args, Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(15), "it waited");
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(json["connected"], 2, "{json}");
    assert_eq!(json["tls"]["handshakes"], 2, "{json}");
    assert_eq!(json["tls"]["handshake_failures"], 2, "{json}");
    assert_eq!(json["connect_failures"], 2, "{json}");
    let first = json["first_connect_error"].as_str().unwrap();
    assert!(
        first.starts_with(&format!(
            "{bad_addr}: TLS handshake failed: invalid peer certificate: certificate not \
             valid for name"
        )),
        "{json}"
    );
    // The echoes on the good server's connections went on.
    assert!(json["messages"].as_u64().unwrap() > 0, "{json}");

    // Every server naming the wrong name: no connection at all, one clear error.
    let args = flags(&format!(
        "--addr {good_addr} --tls --tls-ca {} --tls-name elsewhere.example --conns 3 \
         --quiet",
        right.cert()
    ));
    let (code, _, stderr) = bench_to_end(&args, Duration::from_secs(30));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "none of 3 connections could be opened: TLS handshake failed: invalid peer \
             certificate: certificate not valid for name \"elsewhere.example\""
        ),
        "{stderr}"
    );
}

#[test]
fn handshakes_mode_counts_handshakes_per_second() {
    let cert = TestCert::new("handshakes", &["127.0.0.1"]);
    let (_server, addr) = cert.echo_server();
    let args = flags(&format!(
        "--addr {addr} --mode handshakes --tls --tls-ca {} --conns 4 --src-ips 2 \
         --duration 0.5 --warmup 0.1 --json --quiet",
        cert.cert()
    ));
    let json = json_of_success(bench_to_end(&args, Duration::from_secs(30)));
    assert_eq!(json["mode"], "handshakes", "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(json["connect_failures"], 0, "{json}");
    let in_window = json["messages"].as_u64().unwrap();
    // Each connection one handshake: far more than the 4 at a time.
    assert!(in_window > 4, "{json}");
    let tls = &json["tls"];
    assert!(tls["handshakes"].as_u64().unwrap() >= in_window, "{json}");
    let per_sec = tls["handshakes_per_sec"].as_f64().unwrap();
    assert!((per_sec - json["msgs_per_sec"].as_f64().unwrap()).abs() < 1e-9);
    assert!(per_sec > 0.0, "{json}");
    assert_latency_measured(&json);

    // It needs --tls.
    let (code, _, stderr) = bench_to_end(
        &flags(&format!("--addr {addr} --mode handshakes --quiet")),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--mode handshakes needs --tls"), "{stderr}");
}

#[test]
fn a_server_that_never_answers_the_handshake_fails_it_in_time() {
    // A listener that never accepts: the kernel completes the TCP connects (the
    // backlog has room), and nothing ever answers the ClientHello.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cert = TestCert::new("silent", &["127.0.0.1"]);
    let args = flags(&format!(
        "--addr {addr} --tls --tls-ca {} --conns 2 --connect-timeout 0.5 --quiet",
        cert.cert()
    ));
    let started = Instant::now();
    let (code, _, stderr) = bench_to_end(&args, Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(10), "it waited");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "none of 2 connections could be opened: TLS handshake did not finish in time"
        ),
        "{stderr}"
    );
    drop(listener);
}
