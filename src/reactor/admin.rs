//! The admin endpoint (`Config::admin`): a TCP listener the reactor serves itself, on
//! the same loop, whatever the service. It answers one HTTP/1.1 request per
//! connection and closes it: `GET /metrics` (the Prometheus text format, see
//! `crate::metrics`), `GET /healthz` (`200 ok`, or `503` with the reason when
//! [`Service::health`] says the service cannot work now), anything else 404, another
//! method 405, a malformed or oversized request 400.
//!
//! Its connections are not the service's: they live in a small slab of their own,
//! with tokens in a range of their own (`ADMIN_BASE ..`), so the dispatch tells them
//! apart by token before any connection lookup, they never reach the service's
//! callbacks, and they count in none of the [`crate::Stats`] connection counters. The
//! per-message path does not look at them at all. A request must arrive whole within
//! its own deadline (`Config::admin_timeout`, 5 s by default), so a slow client
//! cannot hold a slot for long; at most `MAX_CONNS` are open at once, and when they
//! are all taken a newcomer takes the place of the oldest one still waiting for its
//! request, so no set of silent sockets can shut a scrape out.
//!
//! A closed admin connection's key can be reused within one batch of events; the
//! stale event then finds a newcomer, whose read hears `WouldBlock`: harmless, so
//! admin tokens need no generation.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use slab::Slab;

use super::{Reactor, WATCH_BASE};
use crate::endpoint::bind_tcp;
use crate::error::Error;
use crate::hub::TimerEvent;
use crate::metrics::{self, LoopMetrics};
use crate::service::Service;

/// The admin listener's token; admin connection `k` has `ADMIN_BASE + 1 + k`.
pub(super) const ADMIN_BASE: usize = WATCH_BASE + (1 << 14);
/// Admin connections open at once, at most.
const MAX_CONNS: usize = 16;
/// The longest request accepted (request line and headers; a body is not read).
const MAX_REQUEST: usize = 8 * 1024;
/// Connections accepted per readiness event of the listener.
const ACCEPT_BUDGET: usize = 64;

/// The admin listener, its connections, and what the loop measures for it.
#[derive(Debug)]
pub(super) struct Admin {
    listener: TcpListener,
    /// The address bound (port 0 resolved).
    pub(super) addr: SocketAddr,
    conns: Slab<AdminConn>,
    /// Counts up with every admin connection, so a deadline finds only its own.
    serial: u64,
    /// How long a request may take to arrive.
    deadline: Duration,
    /// Turn durations and events per turn, recorded only while the endpoint is on.
    pub(super) loop_metrics: LoopMetrics,
    /// Requests answered, by status: 200, 400, 404, 405, 503.
    answered: [u64; 5],
    /// Connections closed, still waiting for their request, to make room for a
    /// newcomer.
    evicted: u64,
}

/// One admin connection: the request read so far, then the response being written.
#[derive(Debug)]
struct AdminConn {
    stream: TcpStream,
    serial: u64,
    input: Vec<u8>,
    /// The response, once the request is complete; `written` of it already sent.
    output: Vec<u8>,
    written: usize,
}

impl Admin {
    /// Closes the oldest connection still waiting for its request, for a newcomer;
    /// false when every connection is being answered.
    fn make_room(&mut self, registry: &mio::Registry) -> bool {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.output.is_empty())
            .min_by_key(|(_, conn)| conn.serial)
            .map(|(key, _)| key);
        let Some(mut conn) = oldest.and_then(|key| self.conns.try_remove(key)) else {
            return false;
        };
        log::debug!(
            "admin: all {MAX_CONNS} connections taken: closing the oldest waiting one \
             ({} bytes of request) for a newcomer",
            conn.input.len()
        );
        let _ = registry.deregister(&mut conn.stream);
        self.evicted += 1;
        true
    }
}

/// What the bytes of a request say so far.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "admin"), allow(dead_code))]
enum Request {
    Incomplete,
    Malformed,
    Complete { get: bool, path: String },
}

impl<S: Service> Reactor<S> {
    /// Opens the admin listener of the configuration, if it has one.
    pub(super) fn open_admin(&mut self) -> Result<(), Error> {
        let Some(addr) = self.config.admin else {
            return Ok(());
        };
        let bind_error = |source| Error::Bind {
            endpoint: format!("admin {addr}"),
            source,
        };
        let mut listener = bind_tcp(addr, self.config.backlog, false).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        self.poll
            .registry()
            .register(&mut listener, Token(ADMIN_BASE), Interest::READABLE)
            .map_err(Error::Poll)?;
        log::info!("admin on http://{addr} (/metrics, /healthz)");
        self.observe_turns = true;
        self.admin = Some(Box::new(Admin {
            listener,
            addr,
            conns: Slab::new(),
            serial: 0,
            deadline: self.config.admin_timeout,
            loop_metrics: LoopMetrics::default(),
            answered: [0; 5],
            evicted: 0,
        }));
        Ok(())
    }

    /// The admin endpoint's address, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|admin| admin.addr)
    }

    /// An event with a token in the admin range.
    pub(super) fn admin_event(&mut self, token: usize, writable: bool) {
        if token == ADMIN_BASE {
            self.admin_accept();
        } else {
            self.admin_serve(token - ADMIN_BASE - 1, writable);
        }
    }

    fn admin_accept(&mut self) {
        let now = self.hub.now;
        let Some(admin) = self.admin.as_deref_mut() else {
            return;
        };
        for _ in 0..ACCEPT_BUDGET {
            let mut stream = match admin.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("admin accept: {e}");
                    return;
                }
            };
            if admin.conns.len() >= MAX_CONNS && !admin.make_room(&self.hub.registry) {
                continue; // every one is being answered: the newcomer is closed at once
            }
            let entry = admin.conns.vacant_entry();
            let token = Token(ADMIN_BASE + 1 + entry.key());
            if let Err(e) = self
                .hub
                .registry
                .register(&mut stream, token, Interest::READABLE)
            {
                log::debug!("admin: cannot register a connection: {e}");
                continue;
            }
            admin.serial += 1;
            let serial = admin.serial;
            let key = entry.key();
            entry.insert(AdminConn {
                stream,
                serial,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
            });
            self.hub.timers.insert(
                crate::timer::deadline_after(now, admin.deadline),
                TimerEvent::AdminDeadline(key, serial),
            );
        }
        // Budget spent: an edge-triggered listener would not report the rest, so the
        // next turn polls it again.
        self.hub.ready_again.push(Token(ADMIN_BASE));
    }

    /// Reads the request of connection `key`, answers it once complete, and writes the
    /// answer; closes the connection when it is written (or on any error).
    fn admin_serve(&mut self, key: usize, writable: bool) {
        let Some(conn) = self.admin.as_deref_mut().and_then(|a| a.conns.get_mut(key)) else {
            return;
        };
        if conn.output.is_empty() {
            let request = match read_request(conn) {
                Ok(request) => request,
                Err(()) => return self.admin_close(key),
            };
            let (status, content_type, body) = match request {
                Request::Incomplete => return,
                Request::Malformed => (400, "text/plain", "bad request\n".to_string()),
                Request::Complete { get: false, .. } => {
                    (405, "text/plain", "method not allowed\n".to_string())
                }
                Request::Complete { path, .. } => match path.split('?').next() {
                    Some("/metrics") => (200, metrics::CONTENT_TYPE, self.render_metrics()),
                    Some("/healthz") => match self.service.health() {
                        Ok(()) => (200, "text/plain", "ok\n".to_string()),
                        Err(reason) => (503, "text/plain", format!("{reason}\n")),
                    },
                    _ => (404, "text/plain", "not found\n".to_string()),
                },
            };
            let Some(admin) = self.admin.as_deref_mut() else {
                return;
            };
            admin.answered[status_index(status)] += 1;
            let Some(conn) = admin.conns.get_mut(key) else {
                return;
            };
            conn.output = response(status, content_type, &body);
        } else if !writable {
            return;
        }
        self.admin_write(key);
    }

    /// Writes what is left of the response; closes once it is all written.
    fn admin_write(&mut self, key: usize) {
        let Some(conn) = self.admin.as_deref_mut().and_then(|a| a.conns.get_mut(key)) else {
            return;
        };
        while conn.written < conn.output.len() {
            match conn.stream.write(&conn.output[conn.written..]) {
                Ok(0) => break,
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let token = Token(ADMIN_BASE + 1 + key);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .hub
                        .registry
                        .reregister(&mut conn.stream, token, interest)
                        .is_ok()
                    {
                        return;
                    }
                    break;
                }
                Err(_) => break,
            }
        }
        self.admin_close(key);
    }

    fn admin_close(&mut self, key: usize) {
        let Some(admin) = self.admin.as_deref_mut() else {
            return;
        };
        if let Some(mut conn) = admin.conns.try_remove(key) {
            let _ = self.hub.registry.deregister(&mut conn.stream);
        }
    }

    /// The read deadline of an admin connection: closes it if it is still there.
    pub(super) fn admin_deadline(&mut self, key: usize, serial: u64) {
        let due = self
            .admin
            .as_deref()
            .and_then(|admin| admin.conns.get(key))
            .is_some_and(|conn| conn.serial == serial);
        if due {
            log::debug!("admin: a request was not complete within its deadline");
            self.admin_close(key);
        }
    }

    /// Counts this turn in the loop histograms: the work since the poll returned (one
    /// more clock read, only with the endpoint on) and the events it brought.
    #[inline(never)]
    pub(super) fn record_turn(&mut self, events: &mio::Events) {
        let work = Instant::now().saturating_duration_since(self.hub.now);
        if let Some(admin) = self.admin.as_deref_mut() {
            admin.loop_metrics.record_turn(work, events.iter().count());
        }
    }

    /// Closes the admin endpoint and its connections (shutdown).
    pub(super) fn close_admin(&mut self) {
        if let Some(mut admin) = self.admin.take() {
            let _ = self.hub.registry.deregister(&mut admin.listener);
            for (_, mut conn) in admin.conns {
                let _ = self.hub.registry.deregister(&mut conn.stream);
            }
        }
    }

    /// This loop's counters, or in a pool every loop's added up (the others' as of
    /// their last turn).
    fn pool_totals(&self) -> crate::stats::Stats {
        let mut total = self.hub.stats.clone();
        for shared in &self.pool_counters {
            if Arc::ptr_eq(shared, &self.shared) {
                continue;
            }
            if let Ok(counters) = shared.counters.lock() {
                total.add(&counters);
            }
        }
        total
    }

    /// The body of `GET /metrics`: the reactor's counters, the loop histograms, the
    /// admin endpoint's own counts, then the service's metrics.
    fn render_metrics(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        metrics::write_stats(&mut out, &self.pool_totals());
        if let Some(admin) = self.admin.as_deref() {
            metrics::write_loop(&mut out, &admin.loop_metrics);
            let name = "switchboard_admin_requests_total";
            metrics::header(
                &mut out,
                name,
                "counter",
                "Admin requests answered, by status code.",
            );
            let codes = ["200", "400", "404", "405", "503"];
            for (code, count) in codes.iter().zip(admin.answered) {
                out.push_str(&format!("{name}{{code=\"{code}\"}} {count}\n"));
            }
            metrics::sample(
                &mut out,
                "switchboard_admin_evicted_total",
                "counter",
                "Admin connections closed while waiting for their request, to make room \
                 for a newcomer (all were taken).",
                admin.evicted,
            );
            metrics::sample(
                &mut out,
                "switchboard_admin_connections",
                "gauge",
                "Admin connections open now (not counted in switchboard_connections).",
                admin.conns.len() as u64,
            );
        }
        self.service.metrics(&mut out);
        out
    }
}

/// Reads what the peer sent until `WouldBlock`, and parses it. `Err` when the peer
/// closed, or the socket failed, before the request was complete.
fn read_request(conn: &mut AdminConn) -> Result<Request, ()> {
    let mut buf = [0u8; 2048];
    loop {
        match conn.stream.read(&mut buf) {
            Ok(0) => return Err(()),
            Ok(n) => {
                conn.input.extend_from_slice(&buf[..n]);
                if conn.input.len() > MAX_REQUEST {
                    return Ok(Request::Malformed);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return Err(()),
        }
    }
    Ok(parse(&conn.input))
}

/// Parses a request's line and headers.
#[cfg(feature = "admin")]
fn parse(input: &[u8]) -> Request {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(input) {
        Ok(httparse::Status::Partial) => Request::Incomplete,
        Ok(httparse::Status::Complete(_)) => match (request.method, request.path) {
            (Some(method), Some(path)) => Request::Complete {
                get: method == "GET",
                path: path.to_string(),
            },
            _ => Request::Malformed,
        },
        Err(_) => Request::Malformed,
    }
}

/// Without the `admin` feature, `Config::validate` refuses an admin endpoint, so no
/// request ever comes here.
#[cfg(not(feature = "admin"))]
fn parse(_input: &[u8]) -> Request {
    Request::Malformed
}

fn status_index(status: u16) -> usize {
    match status {
        200 => 0,
        400 => 1,
        404 => 2,
        405 => 3,
        _ => 4,
    }
}

/// A whole HTTP/1.1 response; the connection closes after it.
fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let status_line = match status {
        200 => "200 OK",
        400 => "400 Bad Request",
        404 => "404 Not Found",
        405 => "405 Method Not Allowed",
        _ => "503 Service Unavailable",
    };
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    crate::http::response(status_line, content_type, body.as_bytes(), allow)
}

#[cfg(all(test, feature = "admin"))]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_incomplete_until_its_blank_line() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Request::Incomplete
        );
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Complete {
                get: true,
                path: "/metrics".to_string()
            }
        );
        assert_eq!(parse(b"\x01\x02 nonsense\r\n\r\n"), Request::Malformed);
    }

    #[test]
    fn a_response_says_its_length_and_closes() {
        let text = String::from_utf8(response(200, "text/plain", "ok\n")).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\
             Connection: close\r\n\r\nok\n"
        );
    }
}
