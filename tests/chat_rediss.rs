//! Chat nodes joined through a real `redis-server` over TLS (`--redis rediss://...`),
//! with certificates made by the test (a CA, and Redis's certificate signed by it).
//!
//! Two nodes trusting the CA (`--tls-ca`) share a room through Redis's TLS port, with
//! and without a password (which no log line shows). Then what TLS refuses: a
//! certificate the node does not trust, one for another name, a plain-text Redis
//! behind `rediss://` (which answers nothing), a server that answers in plain text,
//! a Redis that asks for a client certificate.
//! Each is logged in TLS's words and in `/healthz` (503), the link
//! redials on its backoff, not in a loop, and the node serves its own members all the
//! while. Bad TLS flags end the process with an error naming the flag.
#![cfg(all(feature = "redis", feature = "cli"))]

#[allow(dead_code)]
mod chat_support;
mod common;
mod redis_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use chat_support::cluster::{
    a_message_crosses, assert_refused_at_start, next_such, ChatNode as Node,
};
use common::{wait_until, IO_TIMEOUT};
use redis_support::tls::{Certificates, TlsRedis};
use switchboard::services::chat::redis::link::MIN_BACKOFF;
use switchboard::services::chat::redis::node::DIAL_TIMEOUT;

/// The names Redis's certificate is for, unless a test says otherwise.
const NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// The default user's password, in the test with one.
const PASSWORD: &str = "SECRET";

/// `--tls-ca` with the CA of `certs`.
fn trusting(certs: &Certificates) -> [String; 2] {
    ["--tls-ca".into(), certs.ca().to_str().unwrap().into()]
}

fn strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

#[test]
fn two_nodes_share_a_room_through_redis_over_tls() {
    let certs = Certificates::issue(&NAMES);
    let redis = TlsRedis::start(&certs, &[]);
    let url = format!("rediss://{}", redis.tls_addr());
    let flags = trusting(&certs);
    let a = Node::spawn_linked(&url, &strs(&flags), None);
    let b = Node::spawn_linked(&url, &strs(&flags), None);
    a_message_crosses(&a, &b);
    assert_eq!(a.get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(b.metric("switchboard_redis_link_up"), 1.0);
    // Redis's own count: the nodes' connections came in on its TLS port (the plain
    // one has had only the test's PINGs and this).
    let clients = redis.server.cli(&["CLIENT", "LIST"]);
    let on_tls = format!("laddr={}", redis.tls_addr());
    assert_eq!(
        clients.lines().filter(|c| c.contains(&on_tls)).count(),
        2,
        "{clients}"
    );
    for node in [a, b] {
        let log = node.stop(&[]);
        let shown = format!("connected to Redis at rediss://{}", redis.tls_addr());
        assert!(log.contains(&shown), "{log}");
    }
}

#[test]
fn nodes_log_in_over_tls_with_a_password_never_shown() {
    let certs = Certificates::issue(&NAMES);
    let redis = TlsRedis::start(&certs, &["--requirepass", PASSWORD]);
    let url = format!("rediss://:{PASSWORD}@{}/2", redis.tls_addr());
    let flags = trusting(&certs);
    let a = Node::spawn_linked(&url, &strs(&flags), None);
    let b = Node::spawn_linked(&url, &strs(&flags), None);
    a_message_crosses(&a, &b);
    for node in [a, b] {
        let log = node.stop(&[PASSWORD]);
        let shown = format!("connected to Redis at rediss://:***@{}/2", redis.tls_addr());
        assert!(log.contains(&shown), "{log}");
    }
}

/// A node on `url` (flags `extra`) that cannot make its link: it logs `words` (a TLS
/// failure), `/healthz` says the link is down with them, it redials on its backoff
/// (`redials` redials take at least 100 ms, then 200, 400..., beside the `attempt`
/// each failure takes), and its own members, told the link is down, share a room all
/// the while. Its log, once stopped.
#[track_caller]
fn refused_over_tls(
    url: &str,
    extra: &[&str],
    words: &str,
    (redials, attempt): (u32, Duration),
) -> String {
    let started = Instant::now();
    let node = Node::spawn(url, extra, None);
    node.log.wait_for("the TLS failure", IO_TIMEOUT, |log| {
        log.contains("WARN") && log.contains(words)
    });
    let (status, body) = node.get("/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("link down (TLS: ") && body.contains(words),
        "{body}"
    );
    assert_eq!(node.metric("switchboard_redis_link_up"), 0.0);

    let redialled = wait_until(IO_TIMEOUT, || {
        node.metric("switchboard_redis_reconnects_total") >= f64::from(redials)
    });
    let waited = started.elapsed();
    assert!(redialled, "{}", node.log.text());
    eprintln!("{redials} redials after a TLS failure took {waited:?}");
    let least = MIN_BACKOFF * (2u32.pow(redials) - 1) + attempt * redials;
    assert!(waited >= least, "{redials} redials in {waited:?}");

    let (mut ann, mut ben) = (node.member("ann"), node.member("ben"));
    for member in [&mut ann, &mut ben] {
        let notice = next_such(member, |e| e["type"] == "notice");
        assert!(
            notice["text"].as_str().unwrap().contains("down"),
            "{notice}"
        );
        member.send(json!({"type": "join", "room": "r"}));
        let name = member.name.clone();
        next_such(member, |e| e["type"] == "joined" && e["name"] == name);
    }
    ann.say("r", "still here");
    let said = next_such(&mut ben, |e| e["type"] == "msg");
    assert_eq!(said["text"], "still here");
    assert_eq!(node.get("/healthz").0, 503);
    let log = node.stop(&[]);
    // Never said to be connected: over TLS, that waits for Redis's first answer.
    assert!(!log.contains("connected to Redis"), "{log}");
    log
}

#[test]
fn a_certificate_the_node_does_not_trust_is_a_tls_failure_and_the_node_serves_on() {
    let certs = Certificates::issue(&NAMES);
    let redis = TlsRedis::start(&certs, &[]);
    // Without --tls-ca: only the system's roots, which do not hold the test's CA.
    let url = format!("rediss://{}", redis.tls_addr());
    let log = refused_over_tls(&url, &[], "UnknownIssuer", (3, Duration::ZERO));
    assert!(
        log.contains("cannot reach Redis")
            && log.contains("TLS: Redis's certificate was refused: invalid peer certificate"),
        "{log}"
    );
}

#[test]
fn a_certificate_for_another_name_is_a_tls_failure() {
    let certs = Certificates::issue(&["redis.example"]);
    let redis = TlsRedis::start(&certs, &[]);
    let url = format!("rediss://{}", redis.tls_addr());
    let flags = trusting(&certs);
    let words = "certificate not valid for name";
    let log = refused_over_tls(&url, &strs(&flags), words, (3, Duration::ZERO));
    assert!(log.contains("127.0.0.1"), "{log}");
}

#[test]
fn a_plain_text_redis_behind_rediss_is_a_tls_failure() {
    let certs = Certificates::issue(&NAMES);
    let redis = TlsRedis::start(&certs, &[]);
    // The plain port: Redis reads the ClientHello as the start of an inline command
    // and waits for the rest of its line, answering nothing.
    let url = format!("rediss://{}", redis.server.addr());
    let flags = trusting(&certs);
    let words = "TLS: Redis did not answer within 2s of the connect";
    refused_over_tls(&url, &strs(&flags), words, (2, DIAL_TIMEOUT));
}

#[test]
fn a_redis_asking_for_a_client_certificate_is_a_tls_failure() {
    let certs = Certificates::issue(&NAMES);
    // Redis's default: the node presents no certificate, and Redis ends the handshake
    // with an alert.
    let redis = TlsRedis::start(&certs, &["--tls-auth-clients", "yes"]);
    let url = format!("rediss://{}", redis.tls_addr());
    let flags = trusting(&certs);
    // The node's line says it in rustls's words, with the likely causes.
    let words = "TLS: the handshake or a record failed: received fatal alert: \
                 CertificateRequired (a port that does not speak TLS, or a Redis that asks \
                 for a client certificate";
    refused_over_tls(&url, &strs(&flags), words, (3, Duration::ZERO));
}

#[test]
fn nodes_with_a_client_certificate_share_a_room_through_a_redis_that_asks_for_one() {
    let certs = Certificates::issue(&NAMES);
    let redis = TlsRedis::start(&certs, &["--tls-auth-clients", "yes"]);
    let url = format!("rediss://{}", redis.tls_addr());
    // Redis checks a client's certificate against the same CA as its own: the test's
    // server certificate serves as the nodes' too.
    let (cert, key) = (certs.cert(), certs.key());
    let mut flags = trusting(&certs).to_vec();
    flags.extend([
        "--redis-tls-cert".into(),
        cert.to_str().unwrap().into(),
        "--redis-tls-key".into(),
        key.to_str().unwrap().into(),
    ]);
    let a = Node::spawn_linked(&url, &strs(&flags), None);
    let b = Node::spawn_linked(&url, &strs(&flags), None);
    a_message_crosses(&a, &b);
    assert_eq!(a.get("/healthz"), (200, "ok\n".to_string()));
    for node in [a, b] {
        node.stop(&[]);
    }
}

#[test]
fn a_server_answering_a_client_hello_in_plain_text_is_a_tls_failure() {
    // Not Redis: a server that greets every connection with a RESP error, as a
    // plain-text service would answer a line it cannot read.
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = plain.local_addr().unwrap();
    thread::spawn(move || {
        for stream in plain.incoming().take(8) {
            let Ok(mut stream) = stream else { return };
            let _ = stream.write_all(b"-ERR unknown command\r\n");
            // Held open: the node hangs up on its own.
            let _ = stream.read_to_end(&mut Vec::new());
        }
    });
    let url = format!("rediss://{addr}");
    let words = "TLS: the handshake or a record failed";
    refused_over_tls(&url, &[], words, (3, Duration::ZERO));
}

#[test]
fn tls_flags_that_cannot_work_are_refused_naming_the_flag() {
    let dir = std::env::temp_dir();
    let empty = dir.join(format!("sb-rediss-empty-{}", std::process::id()));
    std::fs::write(&empty, b"").unwrap();
    let (dir, empty_path) = (dir.to_str().unwrap(), empty.to_str().unwrap());
    let cases = [
        (
            vec![
                "rediss://:SECRET@127.0.0.1",
                "--tls-ca",
                "/nonexistent/ca.pem",
            ],
            "--tls-ca /nonexistent/ca.pem: cannot read it",
        ),
        (
            vec!["rediss://:SECRET@127.0.0.1", "--tls-ca", dir],
            "cannot read it",
        ),
        (
            vec!["rediss://:SECRET@127.0.0.1", "--tls-ca", empty_path],
            "no PEM certificate in it",
        ),
        (
            vec!["redis://:SECRET@127.0.0.1", "--tls-ca", empty_path],
            "only a rediss:// --redis URL speaks TLS",
        ),
        (
            vec![
                "rediss://:SECRET@127.0.0.1",
                "--redis-tls-cert",
                empty_path,
                "--redis-tls-key",
                empty_path,
            ],
            "no PEM certificate in it",
        ),
        (
            vec![
                "redis://:SECRET@127.0.0.1",
                "--redis-tls-cert",
                empty_path,
                "--redis-tls-key",
                empty_path,
            ],
            "only a rediss:// --redis URL speaks TLS",
        ),
    ];
    for (flags, words) in cases {
        let mut args = vec!["--redis"];
        args.extend_from_slice(&flags);
        assert_refused_at_start(&args, words);
    }
    let _ = std::fs::remove_file(&empty);
}
