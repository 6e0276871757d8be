//! Chat nodes logging in to a real `redis-server` that asks for a password (`.ci/run`
//! installs it): `--requirepass` and two ACL users. Nodes log in with the password in
//! the `--redis` URL (the default user, an ACL user, a password percent-escaped), from
//! `--redis-password-file` and from `SWITCHBOARD_REDIS_PASSWORD` (which wins over
//! which), and with a database in the URL (the node's keys land there); each time two
//! nodes share a room and a message crosses them.
//!
//! Then what Redis refuses: a wrong password or database is logged with its cause, the
//! link is down (`/healthz` 503, members told), and the node redials on its backoff,
//! not in a loop (the dials counted by Redis itself), until the password is right.
//! Bad flags end the process with an error naming the flag, never the password.
#![cfg(feature = "redis")]

#[allow(dead_code)]
mod chat_support;
mod common;
mod redis_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chat_support::cluster::{
    a_message_crosses, assert_refused_at_start, next_such, ChatNode as Node, PASSWORD_ENV,
};
use chat_support::members::Member;
use common::{wait_until, IO_TIMEOUT};
use redis_support::RedisServer;
use switchboard::services::chat::redis::link::{MAX_BACKOFF, MIN_BACKOFF};

/// The default user's password (`--requirepass`).
const PASSWORD: &str = "SECRET";
/// An ACL user and its password.
const ALICE: (&str, &str) = ("alice", "apass");
/// An ACL user whose password needs percent-escapes in a URL, and the escaped form.
const CAROL: (&str, &str, &str) = ("carol", "c@r:o/l%", "c%40r%3Ao%2Fl%25");

/// A `redis-server` with a password for the default user and the ACL users alice and
/// carol.
fn secured_redis() -> RedisServer {
    let alice = format!(">{}", ALICE.1);
    let carol = format!(">{}", CAROL.1);
    RedisServer::start_with(&[
        "--requirepass",
        PASSWORD,
        "--user",
        ALICE.0,
        "on",
        &alice,
        "~*",
        "&*",
        "+@all",
        "--user",
        CAROL.0,
        "on",
        &carol,
        "~*",
        "&*",
        "+@all",
    ])
}

/// A chat node logging in to a test's Redis.
impl Node {
    /// A node on `url` with flags `extra` and `SWITCHBOARD_REDIS_PASSWORD` set to `env`
    /// (unset when `None`), once its link is up.
    #[track_caller]
    fn start(url: &str, extra: &[&str], env: Option<&str>) -> Node {
        Node::spawn_linked(url, extra, env)
    }

    /// Like `start`, once the node listens (its link may never come up).
    #[track_caller]
    fn launch(url: &str, extra: &[&str], env: Option<&str>) -> Node {
        Node::spawn(url, extra, env)
    }
}

/// `redis-cli ARGS` on `redis`, logged in as the default user: its output.
#[track_caller]
fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let port = redis.addr().port().to_string();
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port])
        .args(args)
        .env("REDISCLI_AUTH", PASSWORD)
        .output()
        .expect("redis-cli (.ci/run installs redis-tools)");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The keys of database `db` that match `pattern`, sorted.
fn keys(redis: &RedisServer, db: u32, pattern: &str) -> Vec<String> {
    let db = db.to_string();
    let out = redis_cli(redis, &["-n", &db, "--scan", "--pattern", pattern]);
    let mut keys: Vec<String> = out.lines().map(str::to_owned).collect();
    keys.sort();
    keys
}

/// A file of the test's holding `content`, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, content: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::write(&path, content).expect("write a temporary file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn nodes_log_in_with_the_password_in_the_url_as_the_default_user() {
    let redis = secured_redis();
    let url = format!("redis://:{PASSWORD}@{}", redis.addr());
    let (a, b) = (Node::start(&url, &[], None), Node::start(&url, &[], None));
    a_message_crosses(&a, &b);
    assert_eq!(a.get("/healthz"), (200, "ok\n".to_string()));
    for node in [a, b] {
        let log = node.stop(&[PASSWORD]);
        let shown = format!("connected to Redis at redis://:***@{}", redis.addr());
        assert!(log.contains(&shown), "{log}");
    }
}

#[test]
fn nodes_log_in_as_acl_users_with_escaped_passwords() {
    let redis = secured_redis();
    let addr = redis.addr();
    let alice = format!("redis://{}:{}@{addr}", ALICE.0, ALICE.1);
    let carol = format!("redis://{}:{}@{addr}", CAROL.0, CAROL.2);
    let (a, b) = (
        Node::start(&alice, &[], None),
        Node::start(&carol, &[], None),
    );
    a_message_crosses(&a, &b);
    // Redis says who each connection logged in as.
    let clients = redis_cli(&redis, &["CLIENT", "LIST"]);
    for user in [ALICE.0, CAROL.0] {
        let logged_in = clients
            .lines()
            .any(|c| c.contains(&format!(" user={user} ")));
        assert!(logged_in, "no connection of {user}:\n{clients}");
    }
    a.stop(&[ALICE.1]);
    b.stop(&[CAROL.1, CAROL.2]);
}

#[test]
fn the_password_file_wins_over_the_environment_which_wins_over_the_url() {
    let redis = secured_redis();
    let addr = redis.addr();
    // The user from the URL, the password from the file (CRLF ended); the URL's and
    // the environment's are wrong.
    let file = TempFile::new("sb-redis-password", format!("{}\r\n", ALICE.1).as_bytes());
    let from_file = Node::start(
        &format!("redis://{}:url-password@{addr}", ALICE.0),
        &["--redis-password-file", file.path()],
        Some("env-password"),
    );
    // The environment's password over the URL's.
    let from_env = Node::start(
        &format!("redis://:url-password@{addr}"),
        &[],
        Some(PASSWORD),
    );
    a_message_crosses(&from_file, &from_env);
    let log = from_file.stop(&[ALICE.1]);
    assert!(
        log.contains("password comes from --redis-password-file"),
        "{log}"
    );
    let log = from_env.stop(&[PASSWORD]);
    assert!(
        log.contains(&format!("password comes from {PASSWORD_ENV}")),
        "{log}"
    );
}

#[test]
fn a_database_in_the_url_holds_the_nodes_names() {
    let redis = secured_redis();
    let url = format!("redis://:{PASSWORD}@{}/3", redis.addr());
    let (a, b) = (Node::start(&url, &[], None), Node::start(&url, &[], None));
    let _members = a_message_crosses(&a, &b);
    let names = redis_cli(&redis, &["-n", "3", "HKEYS", "sb:names"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["ann", "ben"]);
    assert_eq!(keys(&redis, 0, "*"), Vec::<String>::new());
    let log = a.stop(&[PASSWORD]);
    assert!(
        log.contains(&format!("redis://:***@{}/3", redis.addr())),
        "{log}"
    );
}

/// A connection of the test's own to Redis, logged in, that reads `INFO stats` without
/// adding to the connections Redis counts.
struct Observer {
    stream: BufReader<TcpStream>,
}

impl Observer {
    #[track_caller]
    fn connect(redis: &RedisServer) -> Observer {
        let stream = TcpStream::connect(redis.addr()).expect("connect to redis-server");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut observer = Observer {
            stream: BufReader::new(stream),
        };
        let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{PASSWORD}\r\n", PASSWORD.len());
        assert_eq!(observer.ask(&auth), "+OK");
        observer
    }

    /// Sends `command` and reads the first line of the reply.
    fn ask(&mut self, command: &str) -> String {
        self.stream.get_mut().write_all(command.as_bytes()).unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    /// `total_connections_received` in `INFO stats`: every connection Redis accepted.
    #[track_caller]
    fn connections_received(&mut self) -> u64 {
        let head = self.ask("*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n");
        let len: usize = head
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .expect("a bulk reply");
        let mut body = vec![0; len + 2];
        self.stream.read_exact(&mut body).unwrap();
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|line| line.strip_prefix("total_connections_received:"))
            .and_then(|n| n.parse().ok())
            .expect("total_connections_received in INFO stats")
    }
}

/// The times at which Redis accepts the next `dials` connections (none of them the
/// observer's), each found by asking every 5 ms; panics on a burst.
#[track_caller]
fn next_dials(observer: &mut Observer, dials: usize) -> Vec<Instant> {
    let mut seen = observer.connections_received();
    let mut times = Vec::new();
    let deadline = Instant::now() + 4 * MAX_BACKOFF;
    while times.len() < dials {
        assert!(Instant::now() < deadline, "only {} dials", times.len());
        let now = observer.connections_received();
        assert!(now <= seen + 1, "{} dials at once", now - seen);
        if now > seen {
            times.push(Instant::now());
            seen = now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    times
}

#[test]
fn a_refused_password_takes_the_link_down_and_the_node_redials_on_its_backoff() {
    let redis = secured_redis();
    let mut observer = Observer::connect(&redis);
    let wrong = "NOT-THE-PASSWORD";
    let node = Node::launch(
        &format!("redis://{}:{wrong}@{}", ALICE.0, redis.addr()),
        &[],
        None,
    );
    node.log.wait_for("the refusal", IO_TIMEOUT, |log| {
        log.contains("WARN") && log.contains("Redis refused the password for user alice: WRONGPASS")
    });

    // The dials after the first failed ones, spaced by a backoff that doubles: the
    // dial after failure n waits at least MIN_BACKOFF * 2^(n-1), and at least one
    // has failed before the first seen here.
    let times = next_dials(&mut observer, 4);
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("the node redialled a refused password after gaps of {gaps:?}");
    let slack = Duration::from_millis(50);
    for (i, gap) in gaps.iter().enumerate() {
        let least = (MIN_BACKOFF * 2u32.pow(i as u32 + 1)).min(MAX_BACKOFF);
        assert!(*gap + slack >= least, "gap {i} of {gaps:?} under {least:?}");
    }

    // Down as when Redis is unreachable: unhealthy, with the cause, and members told.
    let (status, body) = node.get("/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("refused the password for user alice"),
        "{body}"
    );
    let mut member = Member::anonymous(node.tcp);
    member.hello("mia");
    let notice = next_such(&mut member, |e| e["type"] == "notice");
    assert!(
        notice["text"].as_str().unwrap().contains("down"),
        "{notice}"
    );

    // The password made right in Redis: the next redial logs in.
    redis_cli(&redis, &["ACL", "SETUSER", ALICE.0, &format!(">{wrong}")]);
    let up = wait_until(IO_TIMEOUT, || node.get("/healthz").0 == 200);
    assert!(up, "/healthz: {:?}", node.get("/healthz"));
    let notice = next_such(&mut member, |e| e["type"] == "notice");
    assert!(notice["text"].as_str().unwrap().contains("up"), "{notice}");
    node.stop(&[wrong]);
}

#[test]
fn a_refused_database_takes_the_link_down_with_its_cause() {
    let redis = secured_redis();
    let node = Node::launch(
        &format!("redis://:{PASSWORD}@{}/99", redis.addr()),
        &[],
        None,
    );
    node.log.wait_for("the refusal", IO_TIMEOUT, |log| {
        log.contains("Redis refused to select database 99: ERR DB index is out of range")
    });
    let (status, body) = node.get("/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("refused to select database 99"), "{body}");
    node.stop(&[PASSWORD]);
}

#[test]
fn no_password_where_redis_asks_for_one_is_named_in_the_log_and_healthz() {
    let redis = secured_redis();
    let node = Node::launch(&format!("redis://{}", redis.addr()), &[], None);
    node.log
        .wait_for("the missing password", IO_TIMEOUT, |log| {
            log.contains("Redis asks for a password")
        });
    let told = wait_until(IO_TIMEOUT, || {
        let (status, body) = node.get("/healthz");
        status == 503 && body.contains("asks for a password")
    });
    assert!(told, "/healthz: {:?}", node.get("/healthz"));
    node.stop(&[]);
}

#[test]
fn bad_flags_are_refused_naming_the_flag_and_never_the_password() {
    let empty = TempFile::new("sb-redis-password-empty", b"\n");
    let dir = std::env::temp_dir();
    let file = |path| {
        vec![
            "--redis",
            "redis://127.0.0.1",
            "--redis-password-file",
            path,
        ]
    };
    let cases = [
        (vec!["--redis", "redis://u:SECRET@h:0"], "--redis: port '0'"),
        (
            vec!["--redis", "redis://u:SECRET@h/x"],
            "--redis: database 'x'",
        ),
        (
            vec!["--redis", "redis://u:SECRET%zz@h"],
            "--redis: the password has a '%'",
        ),
        (
            vec!["--redis", "redis://alice@127.0.0.1"],
            "--redis: user alice has no password",
        ),
        (
            file("/nonexistent/pw"),
            "--redis-password-file /nonexistent/pw: cannot read it",
        ),
        (file(dir.to_str().unwrap()), "cannot read it"),
        (file(empty.path()), "the file is empty"),
    ];
    for (flags, words) in cases {
        assert_refused_at_start(&flags, words);
    }
}
