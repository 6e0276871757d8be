//! TLS as a layer of the reactor, end to end over real sockets: echo over TLS in
//! every shape a stream takes (split, pipelined, empty and large frames under
//! backpressure), `close_notify` both ways, what a service may ask, dials over TLS,
//! client certificates, and the defences: a plain-text client on a TLS port, a
//! handshake trickled past the frame deadline, a thousand half-finished handshakes
//! against the memory budget. The clients are rustls's own, blocking.

#[allow(dead_code)]
mod chat_support;
mod common;
mod tls_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, TestServer, IO_TIMEOUT};
use switchboard::services::Echo;
use switchboard::tls::{TlsClient, TlsServer};
use switchboard::{
    CloseMode, CloseReason, Config, ConnId, Context, Dial, LengthCodec, Origin, Service,
};
use tls_support::{echo, frame, handshake, read_frame, tls_connect, Certs};

/// A config with one TLS listener on 127.0.0.1, serving `certs`.
fn tls_config(certs: &Certs, client_ca: bool) -> Config {
    let mut config = Config::default();
    config.tls_tcp.push("127.0.0.1:0".parse().unwrap());
    let ca = client_ca.then_some(certs.ca.as_path());
    config.tls = Some(TlsServer::from_pem_files(&certs.cert, &certs.key, ca).unwrap());
    config
}

fn echo_server(config: Config) -> TestServer<Echo> {
    TestServer::start(config, || (Echo::default(), LengthCodec::new(4 << 20)))
}

#[test]
fn frames_in_every_shape_echo_over_tls_and_the_close_says_close_notify() {
    let certs = Certs::make("shapes");
    let mut config = tls_config(&certs, false);
    // Small enough that the large frames below put the output over it: reading
    // pauses and resumes while TLS holds ciphertext for the socket.
    config.write_limit = 64 * 1024;
    let server = echo_server(config);
    let mut client = tls_connect(server.tcp(), certs.client_config(false), "localhost");

    assert_eq!(echo(&mut client, b"hello over tls"), b"hello over tls");
    assert_eq!(echo(&mut client, b""), b"", "a zero-length frame");
    // A hundred frames in one write: one TLS record, many frames.
    let pipelined: Vec<u8> = (0..100u32).flat_map(|i| frame(&i.to_be_bytes())).collect();
    client.write_all(&pipelined).unwrap();
    for i in 0..100u32 {
        assert_eq!(read_frame(&mut client).unwrap(), i.to_be_bytes());
    }
    // A frame split across many records and reads, then large frames back to back
    // (the server's output passes the write limit while they come).
    let large: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let framed = frame(&large);
    for chunk in framed.chunks(1000).take(50) {
        client.write_all(chunk).unwrap();
        client.flush().unwrap();
    }
    let sender = {
        let rest = framed[50_000..].to_vec();
        let mut writer = client.sock.try_clone().unwrap();
        // The rest goes through the same TLS session, so it is written here; the
        // reading side runs meanwhile on this thread below. (rustls's state is not
        // shared: encrypt first, then send the ciphertext from another thread.)
        client.conn.set_buffer_limit(None);
        client.conn.writer().write_all(&rest).unwrap();
        for _ in 0..2 {
            client.conn.writer().write_all(&framed).unwrap();
        }
        let mut ciphertext = Vec::new();
        while client.conn.wants_write() {
            client.conn.write_tls(&mut ciphertext).unwrap();
        }
        std::thread::spawn(move || writer.write_all(&ciphertext))
    };
    for _ in 0..3 {
        assert!(
            read_frame(&mut client).unwrap() == large,
            "large frame echoed"
        );
    }
    sender.join().unwrap().unwrap();

    // The client says it is done (close_notify, then FIN); echo closes after its last
    // answer, and its close begins with a close_notify: a clean end for rustls, which
    // reports a FIN without one as an error.
    client.conn.send_close_notify();
    client.flush().unwrap();
    client.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => panic!("the server's close was not a clean TLS close: {e}"),
    }
    let stats = server.stop();
    assert_eq!(stats.accepted, 1);
}

#[test]
fn a_tls_peer_that_stops_reading_is_reset_by_the_send_timeout() {
    let certs = Certs::make("stalled");
    let mut config = tls_config(&certs, false);
    config.write_limit = 64 * 1024;
    config.send_timeout = Some(Duration::from_secs(1));
    let server = echo_server(config);
    let mut client = tls_connect(server.tcp(), certs.client_config(false), "localhost");
    handshake(&mut client).unwrap();
    // Frames to echo, encrypted up front, sent by another thread; nobody reads the
    // echoes, so the server's output (and the ciphertext it owes) stops moving.
    client.conn.set_buffer_limit(None);
    // 32 MiB: more than the kernel's socket buffers on both sides can take.
    let payload = vec![7u8; 64 * 1024];
    for _ in 0..512 {
        client.conn.writer().write_all(&frame(&payload)).unwrap();
    }
    let mut ciphertext = Vec::new();
    while client.conn.wants_write() {
        client.conn.write_tls(&mut ciphertext).unwrap();
    }
    let mut writer = client.sock.try_clone().unwrap();
    // (Longer than the wait below: only the reset may end the write.)
    writer
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    // The server stops reading once its output is over the limit, so this write blocks
    // until the reset cuts it off.
    let sender = std::thread::spawn(move || (writer.write_all(&ciphertext), started.elapsed()));
    assert!(
        wait_until(Duration::from_secs(10), || sender.is_finished()),
        "a TLS peer that stopped reading was never reset"
    );
    let (written, after) = sender.join().unwrap();
    assert!(
        written.is_err(),
        "the server read everything: nothing stalled"
    );
    assert!(
        after >= Duration::from_secs(1),
        "reset after {after:?}, before the send timeout"
    );
    drop(client);
    let stats = server.stop();
    assert_eq!(stats.closed[CloseReason::WriteStalled.index()], 1);
}

/// Answers every frame with what [`Context::tls`] says of its connection and how many
/// handshakes it had heard of by then (the first frame comes after `on_tls_ready`,
/// even when the client's first record arrives with its last handshake message).
#[derive(Default)]
struct Asker {
    ready: Arc<AtomicUsize>,
}

impl Service for Asker {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_tls_ready(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut ()) {
        self.ready.fetch_add(1, Ordering::SeqCst);
    }

    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), _: &[u8]) {
        let answer = match ctx.tls(conn) {
            None => "plain".to_string(),
            Some(info) => format!(
                "sni={} version={} peer_certs={} handshaking={} told_ready={}",
                info.server_name.unwrap_or_default(),
                info.protocol.unwrap_or_default(),
                info.peer_certificates.len(),
                info.handshaking,
                self.ready.load(Ordering::SeqCst)
            ),
        };
        let _ = ctx.send(conn, answer.as_bytes());
    }
}

#[test]
fn a_service_can_ask_what_tls_was_agreed_and_plain_and_tls_endpoints_mix() {
    let certs = Certs::make("ask");
    let mut config = tls_config(&certs, true);
    config.tcp.push("127.0.0.1:0".parse().unwrap());
    let ready = Arc::new(AtomicUsize::new(0));
    let counter = ready.clone();
    let server = TestServer::start(config, move || {
        (Asker { ready: counter }, LengthCodec::new(1 << 16))
    });
    // Plain listeners are bound first, then the TLS ones.
    let (plain, secure) = (server.tcp_all()[0], server.tcp_all()[1]);

    let mut tcp = common::connect(plain);
    tcp.write_all(&frame(b"?")).unwrap();
    assert_eq!(read_frame(&mut tcp).unwrap(), b"plain");

    let config = certs.client_config(true);
    let mut client = tls_connect(secure, config.clone(), "localhost");
    let answer = String::from_utf8(echo(&mut client, b"?")).unwrap();
    assert_eq!(
        answer, "sni=localhost version=TLSv1_3 peer_certs=1 handshaking=false told_ready=1",
        "what the service learnt"
    );
    assert_eq!(ready.load(Ordering::SeqCst), 1, "on_tls_ready once");
    // A second connection resumes the first's session (its ticket): the name asked
    // for is known all the same.
    let mut again = tls_connect(secure, config, "localhost");
    let answer = String::from_utf8(echo(&mut again, b"?")).unwrap();
    assert_eq!(
        again.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    assert!(
        answer.starts_with("sni=localhost version=TLSv1_3 ") && answer.ends_with(" told_ready=2"),
        "what the service learnt of a resumed session: {answer}"
    );
    server.stop();
}

#[test]
fn with_a_client_ca_a_client_without_a_certificate_is_refused() {
    let certs = Certs::make("client-ca");
    let server = echo_server(tls_config(&certs, true));
    let mut anonymous = tls_connect(server.tcp(), certs.client_config(false), "localhost");
    let refused = handshake(&mut anonymous).and_then(|()| {
        anonymous.write_all(&frame(b"let me in"))?;
        anonymous.flush()?;
        read_frame(&mut anonymous)
    });
    assert!(refused.is_err(), "served without a client certificate");

    let mut member = tls_connect(server.tcp(), certs.client_config(true), "localhost");
    assert_eq!(
        echo(&mut member, b"with a certificate"),
        b"with a certificate"
    );
    server.stop();
}

#[test]
fn a_plain_text_client_on_a_tls_port_is_closed_at_once() {
    let certs = Certs::make("plain-client");
    let server = echo_server(tls_config(&certs, false));
    for request in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &frame(b"hello")[..],
    ] {
        let mut stream = common::connect(server.tcp());
        let started = Instant::now();
        stream.write_all(request).unwrap();
        // Whatever comes back (a TLS alert), then the end.
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "closed after {:?}",
            started.elapsed()
        );
        assert!(sink.len() < 64, "only an alert: {} bytes", sink.len());
    }
    server.stop();
}

/// The first bytes a rustls client sends: its ClientHello.
fn client_hello(certs: &Certs) -> Vec<u8> {
    let name = "localhost".try_into().unwrap();
    let mut conn = rustls::ClientConnection::new(certs.client_config(false), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

#[test]
fn a_trickled_handshake_is_cut_at_the_frame_deadline() {
    let certs = Certs::make("trickle");
    let mut config = tls_config(&certs, false);
    config.frame_timeout = Some(Duration::from_secs(1));
    let server = echo_server(config);
    let hello = client_hello(&certs);
    let mut stream = common::connect(server.tcp());
    let started = Instant::now();
    // A byte every 100 ms: the ClientHello (hundreds of bytes) would take a minute.
    let mut cut_at = None;
    for byte in &hello {
        if stream.write_all(std::slice::from_ref(byte)).is_err() || common::is_closed_now(&stream) {
            cut_at = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cut_at = cut_at.expect("the handshake was never cut");
    assert!(
        cut_at >= Duration::from_millis(900) && cut_at < Duration::from_secs(3),
        "cut after {cut_at:?}, with a frame deadline of 1 s"
    );
    let stats = server.stop();
    assert_eq!(stats.closed[CloseReason::FrameTimeout.index()], 1);
}

#[test]
fn a_finished_handshake_stops_the_deadline_for_an_idle_connection() {
    let certs = Certs::make("idle-after");
    let mut config = tls_config(&certs, false);
    config.frame_timeout = Some(Duration::from_millis(500));
    let server = echo_server(config);
    let mut client = tls_connect(server.tcp(), certs.client_config(false), "localhost");
    handshake(&mut client).unwrap();
    // Idle well past the frame deadline: not a frame in progress, so not cut.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(echo(&mut client, b"still here"), b"still here");
    server.stop();
}

#[test]
fn a_thousand_half_finished_handshakes_stay_inside_the_memory_budget() {
    let certs = Certs::make("half");
    let port = common::free_port();
    let budget_mib = 4;
    let admin = common::free_port();
    let args = [
        "echo",
        "--tcp",
        &format!("tls://127.0.0.1:{port}"),
        "--udp",
        "off",
        "--admin",
        &format!("127.0.0.1:{admin}"),
        "--memory-budget",
        &format!("{budget_mib}MiB"),
        "--tls-cert",
        certs.cert.to_str().unwrap(),
        "--tls-key",
        certs.key.to_str().unwrap(),
    ];
    let server = common::ChildServer::start(&args, Some(port));
    let pid = server.child.id();
    let before = common::rss_kib(pid);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let hello = client_hello(&certs);
    let half = &hello[..hello.len() / 2];
    let mut held = Vec::new();
    for _ in 0..1000 {
        let mut stream = TcpStream::connect(addr).unwrap();
        // (The budget may have reset it already.)
        let _ = stream.write_all(half);
        held.push(stream);
    }
    // The budget resets the newest holders once the total passes it; the others wait
    // for the rest of their ClientHello.
    let buffered = || metric(admin, "switchboard_buffered_bytes");
    assert!(
        wait_until(IO_TIMEOUT, || metric(admin, "switchboard_connections")
            < 1000.0),
        "the budget never acted: {} connections",
        metric(admin, "switchboard_connections")
    );
    let grown_kib = common::rss_kib(pid).saturating_sub(before);
    let open = metric(admin, "switchboard_connections");
    eprintln!("{open} half-finished handshakes kept, the server grew by {grown_kib} KiB");
    assert!(
        buffered() <= (budget_mib << 20) as f64,
        "buffered {} bytes over the budget",
        buffered()
    );
    assert!(
        grown_kib < 2 * budget_mib * 1024,
        "the server grew by {grown_kib} KiB for {open} half-finished handshakes"
    );
    assert!(
        open > 100.0,
        "only {open} connections kept: the budget reset too many"
    );
    // A client that finishes its handshake is still served.
    let mut client = tls_connect(addr, certs.client_config(false), "localhost");
    assert_eq!(echo(&mut client, b"served"), b"served");
    drop(held);
}

/// One sample of the admin endpoint's `/metrics` (0 when absent).
fn metric(admin_port: u16, name: &str) -> f64 {
    let mut stream = TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A client that dials over TLS, sends one frame and remembers the echo.
struct Dialler {
    target: SocketAddr,
    client: TlsClient,
    name: &'static str,
    answers: Arc<std::sync::Mutex<Vec<String>>>,
    /// How long `on_start` holds the loop after dialling (before its first poll).
    pause_after_dialling: Duration,
}

impl Service for Dialler {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        let dial = Dial::tcp(self.target).tls(&self.client, self.name).unwrap();
        ctx.connect(dial, ()).unwrap();
        std::thread::sleep(self.pause_after_dialling);
    }

    fn on_connect(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), _: Origin) {
        // Sent before the handshake: held until it completes.
        ctx.send(conn, b"over a dialled tls connection").unwrap();
    }

    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
        let text = String::from_utf8_lossy(payload).into_owned();
        self.answers.lock().unwrap().push(text);
        ctx.close(conn, CloseMode::Flush);
    }

    fn on_close(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: (), reason: CloseReason) {
        // Why TLS failed, if it did: the reactor keeps rustls's words for `on_close`.
        let failure = ctx.tls(conn).and_then(|info| info.failure);
        let why = failure
            .map(|words| format!(" ({words})"))
            .unwrap_or_default();
        self.answers
            .lock()
            .unwrap()
            .push(format!("closed: {reason}{why}"));
    }
}

#[test]
fn a_dial_speaks_tls_and_checks_the_server_name() {
    let certs = Certs::make("dial");
    let server = echo_server(tls_config(&certs, false));
    let client = TlsClient::new(false, Some(&certs.ca)).unwrap();
    for (name, expected) in [
        ("localhost", "over a dialled tls connection"),
        ("127.0.0.1", "over a dialled tls connection"),
        (
            "wrong.example",
            "closed: error (invalid data) (invalid peer certificate: certificate not valid \
             for name \"wrong.example\"",
        ),
    ] {
        let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let dialler = Dialler {
            target: server.tcp(),
            client: client.clone(),
            name,
            answers: answers.clone(),
            pause_after_dialling: Duration::ZERO,
        };
        let config = Config {
            connect_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        let client_loop = TestServer::start(config, move || (dialler, LengthCodec::new(1 << 16)));
        assert!(
            wait_until(IO_TIMEOUT, || answers
                .lock()
                .unwrap()
                .iter()
                .any(|a| a.starts_with("closed"))),
            "{name}: the dialled connection never closed"
        );
        let first = answers.lock().unwrap()[0].clone();
        assert!(first.starts_with(expected), "{name}: {first}");
        client_loop.stop();
    }
    server.stop();
}

/// A TLS dial to a server that is not speaking TLS and answers first: its answer is
/// there when the loop first hears of the connect (the same event says both, and
/// edge-triggered readiness will not say the second again). The dial fails at once on
/// it, not at the handshake's deadline.
#[test]
fn a_tls_dial_to_a_plain_text_server_that_speaks_first_fails_at_once() {
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = plain.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = plain.accept().unwrap();
        let _ = stream.write_all(b"-ERR unknown command\r\n");
        let _ = stream.read_to_end(&mut Vec::new());
    });
    let certs = Certs::make("dial-plain");
    let config = Config {
        frame_timeout: Some(Duration::from_secs(30)),
        ..Config::default()
    };
    let started = Instant::now();
    // (The pause: long enough for the answer to arrive before the loop first polls.)
    let answer = first_answer_of_a_tls_dial(target, &certs, config, Duration::from_millis(200));
    assert!(answer.starts_with("closed: "), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed only after {:?}: {answer}",
        started.elapsed()
    );
}

/// Dials `target` over TLS (trusting `certs`' CA, for `localhost`) from a loop of its
/// own with `config`, the loop held `pause` after dialling; the dial sends a frame once
/// connected. What came back first: the echo, or `closed: REASON`.
fn first_answer_of_a_tls_dial(
    target: SocketAddr,
    certs: &Certs,
    config: Config,
    pause: Duration,
) -> String {
    let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let dialler = Dialler {
        target,
        client: TlsClient::new(false, Some(&certs.ca)).unwrap(),
        name: "localhost",
        answers: answers.clone(),
        pause_after_dialling: pause,
    };
    let client_loop = TestServer::start(config, move || (dialler, LengthCodec::new(1 << 16)));
    assert!(
        wait_until(Duration::from_secs(10), || !answers
            .lock()
            .unwrap()
            .is_empty()),
        "the dial never heard back"
    );
    client_loop.stop();
    let first = answers.lock().unwrap()[0].clone();
    first
}

/// What a dial sends before its handshake waits for the handshake, however slow: the
/// send timeout is for a peer that stops reading, and the handshake has a deadline of
/// its own. (Here a relay holds the connection for 1.5 s before it carries anything,
/// against a send timeout of 1 s.)
#[test]
fn output_sent_before_a_slow_handshake_waits_for_it_past_the_send_timeout() {
    let certs = Certs::make("slow-handshake");
    let server = echo_server(tls_config(&certs, false));
    let real = server.tcp();
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = relay.local_addr().unwrap();
    std::thread::spawn(move || {
        let (near, _) = relay.accept().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let far = TcpStream::connect(real).unwrap();
        let (mut near_in, mut far_out) = (near.try_clone().unwrap(), far.try_clone().unwrap());
        std::thread::spawn(move || std::io::copy(&mut near_in, &mut far_out));
        let (mut far_in, mut near_out) = (far, near);
        let _ = std::io::copy(&mut far_in, &mut near_out);
    });
    let config = Config {
        send_timeout: Some(Duration::from_secs(1)),
        ..Config::default()
    };
    let answer = first_answer_of_a_tls_dial(target, &certs, config, Duration::ZERO);
    assert_eq!(answer, "over a dialled tls connection");
    server.stop();
}

// The binary's TLS, with clients nobody here wrote: openssl s_client, Python's ssl,
// curl; and the certificate reloaded on SIGHUP.

/// `switchboard ARGS... --tls-cert --tls-key` of `certs`, started, with its stderr
/// collected.
fn tls_child(args: &[&str], certs: &Certs, ready: u16) -> (common::ChildServer, common::StderrLog) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend([
        "--tls-cert",
        certs.cert.to_str().unwrap(),
        "--tls-key",
        certs.key.to_str().unwrap(),
    ]);
    let mut server = common::ChildServer::start(&all, Some(ready));
    let log = common::StderrLog::capture(&mut server);
    (server, log)
}

/// Runs `program ARGS` with `input` on stdin; its stdout and stderr, once it exits or
/// is killed after `limit`.
fn run_with_input(program: &str, args: &[&str], input: &[u8], limit: Duration) -> (String, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs (.ci/run installs it): {e}"));
    child.stdin.as_mut().unwrap().write_all(input).unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `switchboard echo --framing lines` over TLS, for s_client: the server and its
/// address. Idle for `idle_secs`, a connection is closed by the server: with a
/// close_notify, which s_client takes as the end (without one it reports an unexpected
/// EOF).
fn line_echo_for_s_client(certs: &Certs, idle_secs: u32) -> (common::ChildServer, String) {
    let port = common::free_port();
    let tls = format!("tls://127.0.0.1:{port}");
    let idle = idle_secs.to_string();
    let args = [
        "echo",
        "--framing",
        "lines",
        "--tcp",
        &tls,
        "--udp",
        "off",
        "--idle-timeout",
        &idle,
    ];
    let (server, _log) = tls_child(&args, certs, port);
    (server, format!("127.0.0.1:{port}"))
}

#[test]
fn openssl_s_client_handshakes_and_echoes_lines() {
    let certs = Certs::make("s-client");
    let (_server, connect) = line_echo_for_s_client(&certs, 1);
    let ca = certs.ca.to_str().unwrap();
    let s_client = [
        "s_client",
        "-connect",
        &connect,
        "-servername",
        "localhost",
        "-CAfile",
        ca,
        "-verify_return_error",
        "-brief",
    ];
    let started = Instant::now();
    let (out, err) = run_with_input(
        "openssl",
        &s_client,
        b"hello from s_client\nand a second line\n",
        Duration::from_secs(8),
    );
    assert!(err.contains("Verification: OK"), "s_client: {err}");
    assert!(err.contains("TLSv1.3"), "s_client: {err}");
    assert_eq!(
        out, "hello from s_client\nand a second line\n",
        "s_client: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "s_client did not see the server's close: {err}"
    );
    assert!(
        !err.contains("unexpected eof"),
        "closed without close_notify: {err}"
    );
}

/// TLS 1.3 key updates, asked for by `openssl s_client` (a line `K` on its own: the
/// peer must answer with a key update of its own before its next application data),
/// and the echo going on under the new keys both ways.
#[test]
fn a_key_update_from_s_client_is_answered_and_the_echo_goes_on() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let certs = Certs::make("key-update");
    // (Time enough for the exchange on a busy machine: a key update alone does not
    // count as activity, and this test ends by itself.)
    let (_server, connect) = line_echo_for_s_client(&certs, 10);
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-servername", "localhost"])
        .args(["-CAfile", certs.ca.to_str().unwrap(), "-brief", "-msg"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl runs (.ci/run installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // What s_client says, up to the first line that holds `needle`.
    let mut said = Vec::new();
    let mut wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return said.push(line),
                Ok(line) => said.push(line),
                Err(_) => panic!("s_client never said {needle:?}; it said {said:#?}"),
            }
        }
    };
    // s_client takes a command only from a line that arrives on its own, so each line
    // goes once the answer to the one before has come.
    wait_for("NewSessionTicket");
    stdin.write_all(b"before\n").unwrap();
    wait_for("before");
    stdin.write_all(b"K\n").unwrap();
    wait_for(">>> TLS 1.3, Handshake [length 0005], KeyUpdate");
    stdin.write_all(b"after\n").unwrap();
    // The server's key update answers the request before its next application data
    // (RFC 8446, 4.6.3: rustls sends it with that data), so before the echo.
    wait_for("<<< TLS 1.3, Handshake [length 0005], KeyUpdate");
    wait_for("after");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn python_ssl_echoes_frames_and_closes_with_close_notify_both_ways() {
    let certs = Certs::make("python");
    let port = common::free_port();
    let tls = format!("tls://127.0.0.1:{port}");
    let (_server, _log) = tls_child(&["echo", "--tcp", &tls, "--udp", "off"], &certs, port);
    // unwrap() sends Python's close_notify and returns only once the server's comes
    // back: it raises if the server just closes the socket.
    let script = r#"
import socket, ssl, struct, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    for payload in [b"from python", b"", b"x" * 100000]:
        tls.sendall(struct.pack(">I", len(payload)) + payload)
        header = b""
        while len(header) < 4:
            header += tls.recv(4 - len(header))
        size, body = struct.unpack(">I", header)[0], b""
        while len(body) < size:
            body += tls.recv(size - len(body))
        assert body == payload, (len(body), len(payload))
    print(tls.version(), tls.cipher()[0])
    tls.unwrap()
    print("clean close")
# TLS 1.2 is served too, for clients that offer nothing newer.
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(struct.pack(">I", 3) + b"old")
    echoed = b""
    while len(echoed) < 7:
        echoed += tls.recv(7 - len(echoed))
    assert echoed[4:] == b"old", echoed
    print(tls.version())
"#;
    let port_arg = port.to_string();
    let args = ["-c", script, &port_arg, certs.ca.to_str().unwrap()];
    let (out, err) = run_with_input("python3", &args, b"", Duration::from_secs(10));
    assert!(out.starts_with("TLSv1.3 TLS_"), "python: {out}{err}");
    assert!(out.contains("clean close\n"), "python: {out}{err}");
    assert!(out.ends_with("TLSv1.2\n"), "python: {out}{err}");
}

#[test]
fn curl_fetches_metrics_over_https_and_the_chat_page_over_https() {
    let certs = Certs::make("curl");
    let (tcp, admin, ws) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let (tcp_flag, admin_flag) = (tcp.to_string(), format!("tls://127.0.0.1:{admin}"));
    let ws_flag = format!("tls://127.0.0.1:{ws}");
    let args = [
        "chat",
        "--tcp",
        &tcp_flag,
        "--udp",
        "off",
        "--admin",
        &admin_flag,
        "--ws",
        &ws_flag,
    ];
    let (_server, _log) = tls_child(&args, &certs, tcp);
    let ca = certs.ca.to_str().unwrap();
    let curl = |url: String| {
        run_with_input(
            "curl",
            &["-sS", "--fail", "--cacert", ca, &url],
            b"",
            Duration::from_secs(10),
        )
    };
    let (metrics, err) = curl(format!("https://127.0.0.1:{admin}/metrics"));
    assert!(metrics.contains("switchboard_connections"), "curl: {err}");
    let (health, err) = curl(format!("https://localhost:{admin}/healthz"));
    assert_eq!(health, "ok\n", "curl: {err}");
    let (page, err) = curl(format!("https://127.0.0.1:{ws}/"));
    assert!(
        page.contains("new WebSocket(") && page.contains("'wss'"),
        "curl: {err}"
    );
    // And plain HTTP to the TLS admin port is not answered as HTTP.
    let (plain, _) = curl(format!("http://127.0.0.1:{admin}/metrics"));
    assert!(!plain.contains("switchboard_connections"));
}

#[test]
fn sighup_reloads_the_certificate_for_new_handshakes_and_keeps_connections() {
    let first = Certs::make("reload-first");
    let second = Certs::make("reload-second");
    // The server reads its files from a directory of its own, replaced underneath it.
    let dir = first.dir.join("served");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let port = common::free_port();
    let tls = format!("tls://127.0.0.1:{port}");
    let args = [
        "echo",
        "--tcp",
        &tls,
        "--udp",
        "off",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let mut server = common::ChildServer::start(&args, Some(port));
    let log = common::StderrLog::capture(&mut server);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut before = tls_connect(addr, first.client_config(false), "localhost");
    assert_eq!(echo(&mut before, b"before"), b"before");

    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    server.signal("HUP");
    log.wait_for("the reload", IO_TIMEOUT, |text| {
        text.contains("TLS certificate and key reloaded")
    });
    let mut after = tls_connect(addr, second.client_config(false), "localhost");
    assert_eq!(echo(&mut after, b"after"), b"after");
    let mut stale = tls_connect(addr, first.client_config(false), "localhost");
    assert!(
        handshake(&mut stale).is_err(),
        "the old certificate is still served"
    );
    assert_eq!(
        echo(&mut before, b"kept"),
        b"kept",
        "a connection made before the reload"
    );

    // A key that cannot be read: said, and the certificate in use stays.
    std::fs::write(&key, "not a key").unwrap();
    server.signal("HUP");
    log.wait_for("the refusal", IO_TIMEOUT, |text| {
        text.contains("TLS certificate not reloaded")
    });
    let mut still = tls_connect(addr, second.client_config(false), "localhost");
    assert_eq!(echo(&mut still, b"still"), b"still");
    server.signal("TERM");
    let (code, _) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0));
}

#[test]
fn tls_flags_that_cannot_work_are_refused_with_a_clear_error() {
    let certs = Certs::make("flags");
    let port = common::free_port().to_string();
    let tls = format!("tls://127.0.0.1:{port}");
    let missing = certs.dir.join("missing.pem");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    // (--tls-cert, --tls-key) and what the refusal says.
    let cases = [
        (path(&missing), path(&certs.key), "missing.pem"),
        (
            path(&certs.key),
            path(&certs.key),
            "no PEM certificate in it",
        ),
        // A key that is not the certificate's.
        (path(&certs.cert), path(&certs.client_key), "KeyMismatch"),
    ];
    let unkeyed = common::ChildServer::start(&["echo", "--tcp", &tls], None);
    let (code, stderr) = unkeyed.wait(IO_TIMEOUT);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("needs a certificate and key"), "{stderr}");
    for (cert, key, expected) in cases {
        let args = [
            "echo",
            "--tcp",
            &tls,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ];
        let server = common::ChildServer::start(&args, None);
        let (code, stderr) = server.wait(IO_TIMEOUT);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_plain_client_and_a_stalled_handshake_are_logged_in_plain_words() {
    let certs = Certs::make("logged");
    let port = common::free_port();
    let tls = format!("tls://127.0.0.1:{port}");
    let args = [
        "echo",
        "--tcp",
        &tls,
        "--udp",
        "off",
        "--frame-timeout",
        "1",
    ];
    let (_server, log) = tls_child(&args, &certs, port);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    log.wait_for("the plain client", IO_TIMEOUT, |text| {
        text.contains("TLS: received corrupt message") && text.contains("closing (1 TLS failure")
    });
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(&client_hello(&certs)[..10]).unwrap();
    log.wait_for("the stalled handshake", IO_TIMEOUT, |text| {
        text.contains("TLS handshake not completed within 1s; closing")
    });
}

/// The next chat event on a TLS member's connection whose `type` is `kind`.
fn next_event(member: &mut tls_support::TlsStream, kind: &str) -> serde_json::Value {
    loop {
        let payload = read_frame(member).expect("an event within the timeout");
        let event: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        if event["type"] == kind {
            return event;
        }
    }
}

#[test]
fn chat_members_over_tls_and_over_plain_tcp_share_a_room() {
    let certs = Certs::make("chat");
    let (plain, secure) = (common::free_port(), common::free_port());
    let (plain_flag, secure_flag) = (plain.to_string(), format!("tls://127.0.0.1:{secure}"));
    let args = [
        "chat",
        "--tcp",
        &plain_flag,
        "--tcp",
        &secure_flag,
        "--udp",
        "off",
    ];
    let (_server, _log) = tls_child(&args, &certs, plain);
    let mut ann = tls_connect(
        SocketAddr::from(([127, 0, 0, 1], secure)),
        certs.client_config(false),
        "localhost",
    );
    let say = |member: &mut tls_support::TlsStream, request: serde_json::Value| {
        member
            .write_all(&frame(request.to_string().as_bytes()))
            .unwrap();
        member.flush().unwrap();
    };
    say(
        &mut ann,
        serde_json::json!({"type": "hello", "name": "tlsann"}),
    );
    assert_eq!(next_event(&mut ann, "welcome")["name"], "tlsann");
    say(&mut ann, serde_json::json!({"type": "join", "room": "r"}));
    next_event(&mut ann, "joined");
    let mut bob =
        chat_support::members::Member::named(SocketAddr::from(([127, 0, 0, 1], plain)), "tcpbob");
    bob.join("r");
    bob.say("r", "to a member over TLS");
    let heard = next_event(&mut ann, "msg");
    assert_eq!(
        (&heard["from"], &heard["text"]),
        (&"tcpbob".into(), &"to a member over TLS".into())
    );
    say(
        &mut ann,
        serde_json::json!({"type": "say", "room": "r", "text": "and back"}),
    );
    loop {
        let event = bob.next();
        if event["type"] == "msg" && event["from"] == "tlsann" {
            assert_eq!(event["text"], "and back");
            break;
        }
    }
}

/// Dials over TLS and sends `frames` frames of `size` bytes at once, before the
/// handshake is done; counts the answers.
struct EagerDialler {
    target: SocketAddr,
    client: TlsClient,
    frames: usize,
    size: usize,
    echoed: Arc<AtomicUsize>,
}

impl Service for EagerDialler {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        let dial = Dial::tcp(self.target)
            .tls(&self.client, "localhost")
            .unwrap();
        ctx.connect(dial, ()).unwrap();
    }

    fn on_connect(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), _: Origin) {
        let payload = vec![9u8; self.size];
        for _ in 0..self.frames {
            ctx.send(conn, &payload).unwrap();
        }
    }

    fn on_frame(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut (), payload: &[u8]) {
        assert_eq!(payload.len(), self.size);
        self.echoed.fetch_add(1, Ordering::SeqCst);
    }
}

/// A server configuration for `certs` that sends no TLS 1.3 session tickets.
fn without_tickets(certs: &Certs) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&certs.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&certs.key).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.send_tls13_tickets = 0;
    config
}

/// Answers once, with the count, after `expected` frames: nothing comes back before,
/// so nothing but the reactor's own bookkeeping moves a sender's queue.
struct CountThenAnswer {
    expected: usize,
    seen: usize,
}

impl Service for CountThenAnswer {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_frame(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &mut (), payload: &[u8]) {
        self.seen += 1;
        if self.seen == self.expected {
            let _ = ctx.send(conn, &vec![9u8; payload.len()]);
        }
    }
}

#[test]
fn more_than_rustls_holds_sent_before_the_handshake_all_goes_out_after_it() {
    let certs = Certs::make("eager");
    let counter = CountThenAnswer {
        expected: 16,
        seen: 0,
    };
    // No session tickets after the handshake: the client then hears nothing at all
    // until the server has every frame.
    let mut config = Config::default();
    config.tls_tcp.push("127.0.0.1:0".parse().unwrap());
    config.tls = Some(TlsServer::from_config(Arc::new(without_tickets(&certs))));
    let server = TestServer::start(config, move || (counter, LengthCodec::new(1 << 20)));
    let echoed = Arc::new(AtomicUsize::new(0));
    let dialler = EagerDialler {
        target: server.tcp(),
        client: TlsClient::new(false, Some(&certs.ca)).unwrap(),
        // 1 MiB queued before the handshake: more than rustls takes before it (its
        // send limit), so the rest waits in the connection's queue.
        frames: 16,
        size: 64 * 1024,
        echoed: echoed.clone(),
    };
    let client = TestServer::start(Config::default(), move || {
        (dialler, LengthCodec::new(1 << 20))
    });
    assert!(
        wait_until(IO_TIMEOUT, || echoed.load(Ordering::SeqCst) == 1),
        "the server never had all 16 frames"
    );
    client.stop();
    server.stop();
}
