//! A real `redis-server` for the tests that speak to Redis: started on a free loopback
//! port, ready once it answers `PING`, killed when dropped. `stop` and `restart` (on the
//! same port) let a test take Redis away in the middle of a run, `pause` and `resume`
//! freeze it (SIGSTOP, SIGCONT) with its connections open, and `not_started` gives a
//! port where Redis will be. `start_with` gives it flags of its own (a password, users).
//! `cli` runs `redis-cli` against it, `commands_processed` reads its command count.
//! `tls` makes certificates and starts a Redis that serves TLS.
#![allow(dead_code)]

pub mod tls;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a starting server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause between two `PING` attempts while a server starts.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A `redis-server` child process on 127.0.0.1, with nothing saved to disk.
pub struct RedisServer {
    /// Where it listens; the same across `restart`.
    addr: SocketAddr,
    /// The running process, `None` while stopped.
    child: Option<Child>,
    /// Flags given at every start beside the port and persistence ones.
    flags: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a port no one else is using, and waits until it answers.
    #[track_caller]
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Like `start`, with `redis-server` flags of the test's (`--requirepass PW`, say).
    #[track_caller]
    pub fn start_with(flags: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            addr: free_port(),
            child: None,
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        server.restart();
        server
    }

    /// A port for a server not started yet: nothing listens there until `restart`.
    pub fn not_started() -> RedisServer {
        RedisServer {
            addr: free_port(),
            child: None,
            flags: Vec::new(),
        }
    }

    /// Freezes the server (SIGSTOP): its connections stay open, and nothing is read
    /// or answered on them until `resume`.
    #[track_caller]
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    #[track_caller]
    pub fn resume(&self) {
        self.signal("CONT");
    }

    #[track_caller]
    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} redis-server");
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs `redis-cli ARGS` against the server (no password): its output.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> String {
        let port = self.addr.port().to_string();
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .expect("redis-cli (.ci/run installs redis-tools)");
        assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
        String::from_utf8(output.stdout).expect("UTF-8")
    }

    /// The commands Redis has run since it started (`total_commands_processed`,
    /// commands run by scripts included), this one's `INFO` among them.
    #[track_caller]
    pub fn commands_processed(&self) -> u64 {
        let info = self.cli(&["INFO", "stats"]);
        info.lines()
            .find_map(|line| line.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no total_commands_processed in\n{info}"))
    }

    /// Kills the server (as a crash would: no clean shutdown) and waits for it to exit,
    /// so its port is closed when this returns.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (stopping it first if it runs), and
    /// waits until it answers.
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        let port = self.addr.port().to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "redis-server is not installed: the Redis tests need it on the PATH \
                 (.ci/run installs it: apt-get install -y redis-server)"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls with `PING` until the server answers, failing the test if it exits or
    /// does not answer within `START_TIMEOUT`.
    #[track_caller]
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(self.addr) {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("redis-server on {} exited at start: {status}", self.addr);
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not answer PING within {START_TIMEOUT:?}",
                self.addr
            );
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port free a moment ago: bound, read, and let go for the server to take.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

/// Whether a server on `addr` answers `PING` with `+PONG`, or with `-NOAUTH` when it
/// asks for a password.
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
}
