//! End-to-end tests of the load generator (`switchboard bench`) against servers running
//! in this process on 127.0.0.1: a correct echo server must give zero errors and a
//! plausible count; servers that corrupt, drop or close must be caught; an address
//! where nothing listens must give one clear error. Each run lasts about a second.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use switchboard::loadgen::{self, LoadError, Mode, Options};
use switchboard::services::chat::{Chat, ChatSettings};
use switchboard::services::Echo;
use switchboard::{Config, ConnId, Context, LengthCodec, Origin, PeerAddr, RawCodec, Service};

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
    assert!(summary.latency.p50_us > 0.0 && summary.latency.p50_us <= summary.latency.p99_us);
    assert!(summary.latency.p99_us <= summary.latency.max_us);
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
    let output = bench(&server.tcp().to_string(), &["--json"]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert!(json["mismatches"].as_u64().unwrap() > 0, "{json}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("FAILED"));
}

#[test]
fn the_binary_exits_zero_and_prints_json_for_a_correct_server() {
    let server = echo_server();
    let output = bench(&server.tcp().to_string(), &["--json"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is one JSON object");
    assert_eq!(json["errors"], 0);
    assert!(json["msgs_per_sec"].as_f64().unwrap() > 0.0);
    assert!(json["latency"]["p99_us"].as_f64().unwrap() > 0.0);
}

/// Runs `switchboard bench --addr ADDR` for a short while with extra flags.
fn bench(addr: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["bench", "--addr", addr, "--conns", "2", "--depth", "4"])
        .args(["--duration", "0.5", "--warmup", "0.1", "--quiet"])
        .args(extra)
        .output()
        .expect("run switchboard bench")
}

#[test]
fn nothing_listening_is_one_clear_error() {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let err = loadgen::run(&quick(addr, Mode::Framed)).unwrap_err();
    assert!(matches!(err, LoadError::Unreachable { .. }), "{err:?}");
    let output = bench(&addr.to_string(), &[]);
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
            LengthCodec::new(MAX_FRAME),
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
