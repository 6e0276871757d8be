//! Chat nodes as their own processes, for the tests that join them through a real
//! Redis (`tests/chat_redis.rs`, `tests/chat_redis_auth.rs`): `switchboard chat --redis
//! URL` on free ports with an admin endpoint, its log captured, and the members' way of
//! waiting past presence events.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::members::Member;
use crate::common::{free_port, wait_until, ChildServer, StderrLog, IO_TIMEOUT};

/// Where a node may take its Redis password from, beside the URL and a file.
pub const PASSWORD_ENV: &str = "SWITCHBOARD_REDIS_PASSWORD";

/// One chat node: a `switchboard chat --redis URL` process.
pub struct ChatNode {
    pub server: ChildServer,
    pub log: StderrLog,
    pub tcp: SocketAddr,
    /// Its admin endpoint (`/metrics`, `/healthz`).
    pub admin: SocketAddr,
}

impl ChatNode {
    /// A node on `url` with flags `extra` and `SWITCHBOARD_REDIS_PASSWORD` set to
    /// `password` (unset when `None`: never taken from the tests' environment), once it
    /// listens (its link may never come up).
    #[track_caller]
    pub fn spawn(url: &str, extra: &[&str], password: Option<&str>) -> ChatNode {
        let (tcp, admin) = (free_port(), free_port());
        let tcp: SocketAddr = format!("127.0.0.1:{tcp}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        let (tcp_arg, admin_arg) = (tcp.to_string(), admin.to_string());
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command
            .args([
                "chat", "--tcp", &tcp_arg, "--udp", "off", "--admin", &admin_arg,
            ])
            .args(["--redis", url])
            .args(extra)
            .env_remove(PASSWORD_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(password) = password {
            command.env(PASSWORD_ENV, password);
        }
        let child = command.stderr(Stdio::piped()).spawn().expect("spawn");
        let mut server = ChildServer { child };
        let log = StderrLog::capture(&mut server);
        let listening = wait_until(IO_TIMEOUT, || TcpStream::connect(tcp).is_ok());
        assert!(listening, "the node does not listen:\n{}", log.text());
        ChatNode {
            server,
            log,
            tcp,
            admin,
        }
    }

    /// The same, once its link to Redis is up.
    #[track_caller]
    pub fn spawn_linked(url: &str, extra: &[&str], password: Option<&str>) -> ChatNode {
        let node = ChatNode::spawn(url, extra, password);
        node.log.wait_for("the link to Redis", IO_TIMEOUT, |log| {
            log.contains("connected to Redis")
        });
        node
    }

    /// A member of this node, named.
    /// Stops the node with SIGTERM and returns its whole log, checking that it exited
    /// cleanly and that no password in `secrets` is in it.
    #[track_caller]
    pub fn stop(self, secrets: &[&str]) -> String {
        self.server.signal("TERM");
        let (code, _) = self.server.wait(IO_TIMEOUT);
        let log = self.log.finish();
        assert_eq!(code, Some(0), "{log}");
        for secret in secrets {
            assert!(!log.contains(secret), "the log shows a password:\n{log}");
        }
        log
    }

    pub fn member(&self, name: &str) -> Member {
        Member::named(self.tcp, name)
    }

    /// `GET path` on the admin endpoint: the status and the body.
    #[track_caller]
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.admin).expect("connect to the admin endpoint");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("a blank line");
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
        (status.expect("a status code"), body.to_string())
    }

    /// The value of the unlabelled metric `name` in `/metrics`.
    #[track_caller]
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
    }
}

/// Reads events until one satisfies `wanted`, skipping presence events on the way.
#[track_caller]
pub fn next_such(member: &mut Member, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let event = member.next();
        if wanted(&event) {
            return event;
        }
        let kind = event["type"].as_str().unwrap_or_default();
        assert!(
            matches!(kind, "joined" | "left" | "renamed" | "notice"),
            "{} got {event} while waiting",
            member.name
        );
    }
}

/// Joins `room`, then waits for a `list` round trip, which comes after the node's
/// subscription to the room.
#[track_caller]
pub fn join_settled(member: &mut Member, room: &str) {
    member.join(room);
    member.send(serde_json::json!({"type": "list"}));
    next_such(member, |e| e["type"] == "rooms");
}

/// A member of `a` and one of `b` share a room, and a message crosses from one to the
/// other through Redis. The members are given back: their names are held while they
/// stay.
#[track_caller]
pub fn a_message_crosses(a: &ChatNode, b: &ChatNode) -> (Member, Member) {
    let (mut ann, mut ben) = (a.member("ann"), b.member("ben"));
    join_settled(&mut ann, "r");
    join_settled(&mut ben, "r");
    ann.say("r", "across");
    let said = next_such(&mut ben, |e| e["type"] == "msg");
    assert_eq!(
        (&said["from"], &said["text"]),
        (&serde_json::json!("ann"), &serde_json::json!("across"))
    );
    (ann, ben)
}

/// `switchboard chat --tcp 127.0.0.1:0 --udp off FLAGS`, which must be refused at start:
/// exit code 2, `words` on stderr, and no password (`SECRET` in these tests) shown.
#[track_caller]
pub fn assert_refused_at_start(flags: &[&str], words: &str) {
    let mut args = vec!["chat", "--tcp", "127.0.0.1:0", "--udp", "off"];
    args.extend_from_slice(flags);
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(&args)
        .env_remove(PASSWORD_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (code, stderr) = ChildServer { child }.wait(IO_TIMEOUT);
    assert_eq!(code, Some(2), "{flags:?}: {stderr}");
    assert!(stderr.contains(words), "{flags:?}: {stderr}");
    assert!(!stderr.contains("SECRET"), "{flags:?}: {stderr}");
}
