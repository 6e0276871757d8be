//! The admin endpoint end to end: a real echo server with `Config::admin` on
//! 127.0.0.1:0, some traffic (frames, a protocol error, a datagram), then plain HTTP
//! requests. `/metrics` must parse with Python's `prometheus_client` (the reference
//! parser; `.ci/run` installs it) and its values must match the traffic; `/healthz`,
//! a 404, a 405 and a malformed request get their answers; backpressure shows as write
//! pauses; a slow admin client holds nothing up and is cut off at its deadline.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect, header, local_config, read_frame, udp_client, write_frame, TestServer};
use switchboard::{services::Echo, LengthCodec};

/// The read deadline of admin requests in these tests (`Config::admin_timeout`).
const DEADLINE: Duration = Duration::from_millis(500);

/// An echo server with the admin endpoint on; returns it and the admin address.
fn start() -> (TestServer<Echo>, SocketAddr) {
    start_with_deadline(DEADLINE)
}

/// [`start`], with admin requests given `deadline` to arrive.
fn start_with_deadline(deadline: Duration) -> (TestServer<Echo>, SocketAddr) {
    let mut config = local_config();
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    config.admin_timeout = deadline;
    TestServer::start_with(
        config,
        || (Echo::default(), LengthCodec::new(1 << 16)),
        |reactor| reactor.admin_addr().expect("admin endpoint on"),
    )
}

/// Sends `request` as is and reads the whole response (the server closes after it).
#[track_caller]
fn http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = connect(addr);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a blank line");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, head.to_string(), body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
}

/// Parses `text` with `prometheus_client` and returns every sample, keyed as
/// `name{label="value",...}` (labels sorted) or `name`.
#[track_caller]
fn parse_with_prometheus_client(text: &str) -> HashMap<String, f64> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families as parse
for family in parse(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        key = f"{s.name}{{{labels}}}" if labels else s.name
        print(key, repr(float(s.value)))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (key, value) = line.rsplit_once(' ').unwrap();
            (key.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[test]
fn metrics_parse_and_count_the_traffic() {
    let (server, admin) = start();
    let mut client = connect(server.tcp());
    for i in 0..5u8 {
        write_frame(&mut client, &[i; 10]).unwrap();
        assert_eq!(read_frame(&mut client).unwrap(), [i; 10]);
    }
    // A frame over the limit: a protocol error.
    let mut bad = connect(server.tcp());
    bad.write_all(&header(1 << 20)).unwrap();
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::is_closed(&mut bad)
    }));
    let udp = udp_client();
    udp.send_to(b"ping", server.udp()).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");

    let (status, head, body) = get(admin, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let samples = parse_with_prometheus_client(&body);
    let value = |key: &str| {
        *samples
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in\n{body}"))
    };
    assert_eq!(value("switchboard_frames_in_total"), 5.0);
    assert_eq!(value("switchboard_frames_out_total"), 5.0);
    assert_eq!(value("switchboard_connections_accepted_total"), 2.0);
    assert_eq!(
        value("switchboard_connections"),
        1.0,
        "admin conns count apart"
    );
    assert_eq!(value("switchboard_decode_errors_total"), 1.0);
    assert_eq!(
        value("switchboard_connections_closed_total{reason=\"protocol\"}"),
        1.0
    );
    assert_eq!(
        value("switchboard_connections_closed_total{reason=\"peer_closed\"}"),
        0.0
    );
    assert_eq!(value("switchboard_datagrams_in_total"), 1.0);
    assert_eq!(value("switchboard_datagrams_out_total"), 1.0);
    assert_eq!(value("switchboard_bytes_in_total"), 5.0 * 14.0 + 4.0);
    assert_eq!(value("switchboard_write_pauses_total"), 0.0);
    assert!(value("switchboard_loop_turn_seconds_count") > 0.0);
    assert!(value("switchboard_loop_turn_seconds_bucket{le=\"+Inf\"}") > 0.0);
    assert!(value("switchboard_loop_events_count") > 0.0);
    assert!(value("switchboard_loop_events_sum") > 0.0);
    assert_eq!(value("switchboard_admin_connections"), 1.0);

    // The scrape itself is no service connection: still one open, two accepted.
    let (_, _, body) = get(admin, "/metrics");
    let again = parse_with_prometheus_client(&body);
    assert_eq!(again["switchboard_connections_accepted_total"], 2.0);
    assert_eq!(again["switchboard_admin_requests_total{code=\"200\"}"], 1.0);
    drop(client);
    server.stop();
}

#[test]
fn process_figures_and_build_info() {
    let (server, admin) = start();
    let _client = connect(server.tcp());
    let (status, _, body) = get(admin, "/metrics");
    assert_eq!(status, 200);
    let samples = parse_with_prometheus_client(&body);
    let value = |key: &str| {
        *samples
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in\n{body}"))
    };
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&format!("switchboard_build_info{{version=\"{version}\"}}")),
        1.0
    );
    // The gauge's help says one unit: bytes.
    let help = body
        .lines()
        .find(|l| l.starts_with("# HELP switchboard_buffered_bytes "))
        .expect("a HELP line");
    assert!(!help.contains("KiB"), "{help}");

    if cfg!(target_os = "linux") {
        // The server runs in this process: these are the test's own figures.
        let open = value("process_open_fds");
        assert!(open >= 4.0, "stdio, the listeners, the client: {open}");
        let max = value("process_max_fds");
        assert!(max >= open, "{max} < {open}");
        let rss = value("process_resident_memory_bytes");
        assert!((1e6..1e10).contains(&rss), "{rss}");
        let cpu = value("process_cpu_seconds_total");
        assert!((0.0..3600.0).contains(&cpu), "{cpu}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            (now - 600.0..=now + 1.0).contains(&started),
            "started {started}, now {now}"
        );
    }
    server.stop();
}

#[test]
fn buffered_bytes_are_the_bytes_held() {
    let (server, admin) = start();
    // A partial frame: the connection keeps a buffer for it until the rest comes.
    let mut partial = connect(server.tcp());
    partial.write_all(&header(1000)).unwrap();
    partial.write_all(&[7; 10]).unwrap();
    let buffered = || {
        let (_, _, body) = get(admin, "/metrics");
        parse_with_prometheus_client(&body)["switchboard_buffered_bytes"]
    };
    let mut held = 0.0;
    assert!(common::wait_until(Duration::from_secs(5), || {
        held = buffered();
        held > 0.0
    }));
    // A buffer of a few KiB (the pool's size), not a thousand times that.
    assert!((14.0..=256.0 * 1024.0).contains(&held), "{held}");
    let stats = server.stop();
    assert_eq!(stats.buffered_bytes, 0);
}

#[test]
fn health_not_found_bad_request_and_other_methods() {
    let (server, admin) = start();
    let (status, _, body) = get(admin, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(get(admin, "/nothing-here").0, 404);
    let (status, head, _) = http(admin, "POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET"), "{head}");
    assert_eq!(http(admin, "\x01\x02 what\r\n\r\n").0, 400);
    // Longer than any request accepted, and never finished: 431.
    let endless = format!("GET /{} HTTP/1.1\r\n", "x".repeat(9000));
    assert_eq!(http(admin, &endless).0, 431);
    server.stop();
}

/// A service that cannot work: its backend is away.
struct Unwell;

impl switchboard::Service for Unwell {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn health(&self) -> Result<(), String> {
        Err("the backend is away".to_string())
    }
}

#[test]
fn healthz_says_503_and_why_when_the_service_is_unwell() {
    let mut config = local_config();
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    let (server, admin) = TestServer::start_with(
        config,
        || (Unwell, LengthCodec::new(1024)),
        |reactor| reactor.admin_addr().expect("admin endpoint on"),
    );
    let (status, head, body) = get(admin, "/healthz");
    assert_eq!((status, body.as_str()), (503, "the backend is away\n"));
    assert!(
        head.starts_with("HTTP/1.1 503 Service Unavailable"),
        "{head}"
    );
    let (_, _, metrics) = get(admin, "/metrics");
    let samples = parse_with_prometheus_client(&metrics);
    assert_eq!(
        samples["switchboard_admin_requests_total{code=\"503\"}"],
        1.0
    );
    server.stop();
}

#[test]
fn a_slow_admin_client_blocks_no_one_and_is_cut_off() {
    let (server, admin) = start();
    let mut slow = connect(admin);
    slow.write_all(b"GET /metr").unwrap();
    // Echo traffic goes on while the request hangs.
    let mut client = connect(server.tcp());
    for i in 0..20u8 {
        write_frame(&mut client, &[i; 100]).unwrap();
        assert_eq!(read_frame(&mut client).unwrap(), [i; 100]);
    }
    // So does another admin request.
    assert_eq!(get(admin, "/healthz").0, 200);
    // At the deadline the slow one is closed without an answer.
    let started = Instant::now();
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(started.elapsed() < DEADLINE * 4, "{:?}", started.elapsed());
    server.stop();
}

#[test]
fn an_admin_request_in_progress_is_held_in_the_reactors_counted_buffers() {
    // A deadline that outlasts the scrapes below, however slow the machine.
    let (server, admin) = start_with_deadline(Duration::from_secs(60));
    // Half a request: the admin connection holds it in a buffer of the reactor's,
    // which the memory budget counts (no service connection holds anything here).
    let mut partial = connect(admin);
    partial.write_all(b"GET /metr").unwrap();
    let mut held = 0.0;
    assert!(common::wait_until(Duration::from_secs(5), || {
        let (_, _, body) = get(admin, "/metrics");
        held = parse_with_prometheus_client(&body)["switchboard_buffered_bytes"];
        held > 0.0
    }));
    // Still none of the service's connections.
    let (_, _, body) = get(admin, "/metrics");
    let samples = parse_with_prometheus_client(&body);
    assert_eq!(samples["switchboard_connections"], 0.0);
    assert_eq!(samples["switchboard_connections_accepted_total"], 0.0);
    // The rest of it is answered as any request.
    partial
        .write_all(b"ics HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    partial.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    let stats = server.stop();
    assert_eq!(
        stats.closed_total(),
        0,
        "admin closes count in no service counter"
    );
}

#[test]
fn silent_sockets_cannot_shut_out_a_scrape() {
    // A long deadline, so that only making room can let the scrapes in.
    let (server, admin) = start_with_deadline(Duration::from_secs(60));
    // Every admin connection taken by a socket that says nothing (half a request).
    let mut silent: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut stream = connect(admin);
            stream.write_all(b"GET /me").unwrap();
            stream
        })
        .collect();
    assert!(common::wait_until(Duration::from_secs(5), || {
        let (_, _, body) = get(admin, "/metrics");
        // The scrape itself took the place of the oldest silent socket.
        parse_with_prometheus_client(&body)["switchboard_admin_connections"] == 16.0
    }));
    // The oldest silent socket was closed without an answer, for that one scrape; the
    // slot it freed serves the next ones.
    let (_, _, body) = get(admin, "/metrics");
    assert_eq!(
        parse_with_prometheus_client(&body)["switchboard_admin_evicted_total"],
        1.0
    );
    // (A reset when the server had not read its bytes yet: closed either way.)
    let mut rest = Vec::new();
    match silent[0].read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    // The silent ones fill every slot again: the next scrape still gets in.
    silent.push(connect(admin));
    silent[16].write_all(b"GET /me").unwrap();
    assert_eq!(get(admin, "/healthz").0, 200);
    drop(silent);
    server.stop();
}

#[test]
fn backpressure_counts_as_write_pauses() {
    let mut config = local_config();
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    config.write_limit = 64 * 1024;
    let (server, admin) = TestServer::start_with(
        config,
        || (Echo::default(), LengthCodec::new(1 << 16)),
        |reactor| reactor.admin_addr().expect("admin endpoint on"),
    );
    let client = connect(server.tcp());
    let mut writer = client.try_clone().unwrap();
    const FRAMES: usize = 1024;
    // Pipelined frames the client does not read yet: the echoes pile up past the limit.
    let sender = std::thread::spawn(move || {
        for _ in 0..FRAMES {
            write_frame(&mut writer, &[7u8; 32 * 1024]).unwrap();
        }
    });
    let pauses = || {
        parse_with_prometheus_client(&get(admin, "/metrics").2)["switchboard_write_pauses_total"]
    };
    assert!(common::wait_until(Duration::from_secs(5), || pauses() > 0.0));
    let mut reader = client;
    for _ in 0..FRAMES {
        assert_eq!(read_frame(&mut reader).unwrap().len(), 32 * 1024);
    }
    sender.join().unwrap();
    server.stop();
}

/// The binary's flag: `--admin PORT` serves the chat service's own metrics too.
#[test]
fn the_binary_serves_chat_metrics() {
    let (tcp, admin) = (common::free_port(), common::free_port());
    let server = common::ChildServer::start(
        &[
            "chat",
            "--tcp",
            &tcp.to_string(),
            "--udp",
            "off",
            "--admin",
            &admin.to_string(),
        ],
        Some(admin),
    );
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    let (status, _, body) = get(admin, "/metrics");
    assert_eq!(status, 200);
    let samples = parse_with_prometheus_client(&body);
    for key in [
        "switchboard_chat_members",
        "switchboard_chat_rooms",
        "switchboard_chat_messages_in_total",
        "switchboard_chat_deliveries_out_total",
        "switchboard_chat_slow_consumers_total",
    ] {
        assert!(samples.contains_key(key), "no {key} in\n{body}");
    }
    let _ = TcpStream::connect(("127.0.0.1", tcp));
    server.signal("TERM");
    let (code, log) = server.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("admin on http://127.0.0.1:"), "{log}");
}

#[test]
fn with_several_loops_metrics_add_up_every_loop() {
    let (tcp, admin) = (common::free_port(), common::free_port());
    let (tcp_flag, admin_flag) = (tcp.to_string(), admin.to_string());
    let args = [
        "echo",
        "--tcp",
        &tcp_flag,
        "--udp",
        "off",
        "--threads",
        "2",
        "--spread",
        "handoff",
        "--admin",
        &admin_flag,
    ];
    let server = common::ChildServer::start(&args, Some(admin));
    let tcp = SocketAddr::from(([127, 0, 0, 1], tcp));
    // Dealt round robin: two connections on each loop, a frame echoed on each.
    let mut clients: Vec<TcpStream> = (0..4).map(|_| common::connect(tcp)).collect();
    for client in &mut clients {
        common::write_frame(client, b"count me").unwrap();
        assert_eq!(common::read_frame(client).unwrap(), b"count me");
    }
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    // The other loop publishes its counters after its turns: they show at once.
    let mut samples = HashMap::new();
    let added_up = common::wait_until(Duration::from_secs(5), || {
        samples = parse_with_prometheus_client(&get(admin, "/metrics").2);
        samples.get("switchboard_frames_in_total") == Some(&4.0)
    });
    assert!(added_up, "{samples:?}");
    assert_eq!(samples["switchboard_connections_accepted_total"], 4.0);
    assert_eq!(samples["switchboard_connections"], 4.0);
    drop(clients);
    server.signal("TERM");
    let (code, log) = server.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
}
