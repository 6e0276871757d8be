//! The chat page in a real browser: Debian's Chromium, headless, driven through
//! Playwright (`tests/browser/chat_page.mjs`; `.ci/run` installs Chromium and
//! `playwright-core` when missing). Two browser pages and a TCP member share the lobby,
//! and each sees the others' messages; then one page joins, talks in, and leaves a room
//! by typed commands, the other leaves with the Leave button, and the TCP member sees
//! each step, and no unknown command said in a room. The test saves a screenshot of the
//! page (`target/browser/chat.png`). Then the page again, served over TLS: loaded from
//! `https://`, chatting over `wss://` with a TCP member (`chat_page_tls.mjs`).
#![cfg(feature = "ws")]

#[allow(dead_code)]
mod chat_support;
mod common;
mod tls_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chat_support::members::{without_ts, Member};
use common::{free_port, ChildServer, IO_TIMEOUT};
use serde_json::{json, Value};

#[test]
fn two_browser_pages_and_a_tcp_member_chat_and_join_and_leave_rooms() {
    let driver = browser_driver();
    let (tcp, ws) = (free_port(), free_port());
    let (tcp_flag, ws_flag) = (tcp.to_string(), ws.to_string());
    let args = ["chat", "--tcp", &tcp_flag, "--udp", "off", "--ws", &ws_flag];
    let _server = ChildServer::start(&args, Some(tcp));
    assert!(common::wait_until(IO_TIMEOUT, || {
        std::net::TcpStream::connect(("127.0.0.1", ws)).is_ok()
    }));
    let mut bob = Member::named(SocketAddr::from(([127, 0, 0, 1], tcp)), "tcpbob");
    bob.join("lobby");
    bob.join("dev");

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../browser");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("chat.png");
    let page = format!("http://127.0.0.1:{ws}/");
    let screenshot_arg = screenshot.to_string_lossy();
    let mut browser = start_browser(
        &driver,
        "chat_page.mjs",
        &[&page, &screenshot_arg],
        "both pages joined the lobby",
    );
    bob.say("lobby", "hello from tcpbob");
    // The TCP member sees both pages' messages (and its own), whatever the order.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = bob.next();
        if event["type"] == "msg" {
            seen.push(event["from"].as_str().unwrap().to_string());
        }
    }
    seen.sort();
    assert_eq!(seen, ["alice", "carol", "tcpbob"]);

    // The page's run ends with its own verdict, which says which step failed; what
    // tcpbob was sent meanwhile waits in its socket.
    let status = wait_for_exit(&mut browser, Duration::from_secs(60));
    assert!(status.success(), "the pages did not see every step");

    // The commands typed in alice's page and carol's Leave button, as tcpbob saw them:
    // everything up to carol leaving the lobby, which she does last.
    let mut events = Vec::new();
    while !events.contains(&json!({"type": "left", "room": "lobby", "name": "carol"})) {
        events.push(without_ts(bob.next()));
    }
    let steps = [
        json!({"type": "joined", "room": "dev", "name": "alice"}),
        said_by_alice("dev", "hello dev"),
        said_by_alice("lobby", "back in the lobby"),
        json!({"type": "dm", "from": "alice", "to": "tcpbob", "text": "psst"}),
        json!({"type": "left", "room": "dev", "name": "alice"}),
    ];
    let mut rest = events.iter();
    for step in &steps {
        assert!(
            rest.any(|event| event == step),
            "{step} in order, in {events:?}"
        );
    }
    let commands: Vec<&Value> = events.iter().filter(|event| is_command(event)).collect();
    assert!(commands.is_empty(), "commands were said: {commands:?}");
    assert!(screenshot.exists(), "the screenshot was saved");
}

fn said_by_alice(room: &str, text: &str) -> Value {
    json!({"type": "msg", "room": room, "from": "alice", "text": text})
}

/// A message or DM whose text is a `/command`: the page should have understood it or
/// refused it, not sent it.
fn is_command(event: &Value) -> bool {
    event["text"]
        .as_str()
        .is_some_and(|text| text.starts_with('/'))
}

#[test]
fn the_page_over_https_chats_over_wss_with_a_tcp_member() {
    let driver = browser_driver();
    let certs = tls_support::Certs::make("browser");
    let (tcp, ws) = (free_port(), free_port());
    let (tcp_flag, ws_flag) = (tcp.to_string(), format!("tls://127.0.0.1:{ws}"));
    let args = [
        "chat",
        "--tcp",
        &tcp_flag,
        "--udp",
        "off",
        "--ws",
        &ws_flag,
        "--tls-cert",
        certs.cert.to_str().unwrap(),
        "--tls-key",
        certs.key.to_str().unwrap(),
    ];
    let _server = ChildServer::start(&args, Some(tcp));
    assert!(common::wait_until(IO_TIMEOUT, || {
        std::net::TcpStream::connect(("127.0.0.1", ws)).is_ok()
    }));
    let mut bob = Member::named(SocketAddr::from(([127, 0, 0, 1], tcp)), "tcpbob");
    bob.join("lobby");

    let page = format!("https://127.0.0.1:{ws}/");
    let mut browser = start_browser(
        &driver,
        "chat_page_tls.mjs",
        &[&page, &spki_hash(&certs.cert)],
        "the page joined the lobby over wss",
    );
    // The page's message reaches the TCP member; the member's reaches the page.
    loop {
        let event = without_ts(bob.next());
        if event["type"] == "msg" {
            assert_eq!(
                event,
                json!({"type": "msg", "room": "lobby", "from": "tlsalice", "text": "hello over wss"})
            );
            break;
        }
    }
    bob.say("lobby", "hello over tcp");
    let status = wait_for_exit(&mut browser, Duration::from_secs(30));
    assert!(status.success(), "the page over TLS did not see every step");
}

/// The base64 SHA-256 of a certificate's public key (its SPKI), as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it: trust this key, and no other.
fn spki_hash(cert: &Path) -> String {
    let script = format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | base64",
        cert.display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The directory of the browser scripts, once Chromium and playwright-core are there.
fn browser_driver() -> std::path::PathBuf {
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        driver.join("node_modules/playwright-core").exists()
            && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Chromium and playwright-core: .ci/run installs them \
         (apt-get install -y chromium chromium-driver; npm install --prefix tests/browser)"
    );
    driver
}

/// Runs the browser script `script` of `driver` with `args`, and waits until it says
/// `ready` (`what`: what that means, for the failure).
fn start_browser(driver: &Path, script: &str, args: &[&str], what: &str) -> std::process::Child {
    let mut browser = Command::new("node")
        .arg(driver.join(script))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stdout = BufReader::new(browser.stdout.take().unwrap());
    let mut ready = String::new();
    let _ = stdout.read_line(&mut ready);
    assert_eq!(ready.trim_end(), "ready", "{what}");
    // (Its stdout stays open, for whatever the script says after.)
    browser.stdout = Some(stdout.into_inner());
    browser
}

/// Waits (at most `limit`) for a browser script's verdict; what its member was sent
/// meanwhile waits in the member's socket.
fn wait_for_exit(browser: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = browser.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the browser run did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
}
