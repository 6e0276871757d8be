//! The admin endpoint (`Config::admin`): a TCP listener the reactor serves itself, on
//! the same loop, whatever the service. It answers one HTTP/1.1 request per
//! connection and closes it: `GET /metrics` (the Prometheus text format, see
//! `crate::metrics`), `GET /healthz` (`200 ok`, or `503` with the reason when
//! [`Service::health`] says the service cannot work now), anything else 404, another
//! method 405, a malformed or oversized request 400.
//!
//! Its connections live in the reactor's own slab, as any connection does (buffers
//! counted in the memory budget, output through the ordinary queue, the send timeout),
//! but they are the reactor's, not the service's: while one waits for its request it
//! is in `ConnState::AdminRequest`, which the read path hands here, and it never
//! reaches the service's callbacks nor counts in the [`crate::Stats`] connection
//! counters. The per-message path does not look at them: a connection in that state is
//! never on the plain read path. A request must arrive whole within its own deadline
//! (`Config::admin_timeout`, 5 s by default: the frame deadline's timer, with the admin
//! timeout), so a slow client cannot hold a slot for long; at most `MAX_CONNS` are
//! open at once, and when they are all taken a newcomer takes the place of the oldest
//! one still waiting for its request, so no set of silent sockets can shut a scrape
//! out. Once answered, a connection closes as any other: its answer written, a FIN.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Interest, Token};

use super::{Reactor, WATCH_BASE};
use crate::buffer::Buffer;
use crate::connection::{ConnId, ConnState, Flag, Stream, NO_FRAME};
use crate::endpoint::bind_tcp;
use crate::error::Error;
use crate::hub::{connection_mut, Hub, TimerEvent};
use crate::metrics::{self, LoopMetrics};
use crate::service::Service;
use crate::stats::CloseReason;
use crate::timer::deadline_after;

/// The admin listener's token (its connections have connection tokens).
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
    /// Its connections, oldest first (in the reactor's slab).
    open: Vec<ConnId>,
    /// Turn durations and events per turn, recorded only while the endpoint is on.
    pub(super) loop_metrics: LoopMetrics,
    /// Requests answered, by status: 200, 400, 404, 405, 503, 431.
    answered: [u64; 6],
    /// Connections closed, still waiting for their request, to make room for a
    /// newcomer.
    evicted: u64,
}

impl<S: Service> Hub<S> {
    /// Puts an accepted admin connection in the slab, waiting for its request within
    /// `deadline` (the frame deadline's timer), counted in none of the service's
    /// connection counters and on no idle list.
    fn insert_admin_connection(
        &mut self,
        stream: Stream,
        deadline: Duration,
    ) -> io::Result<ConnId> {
        let now = self.now_millis();
        // (Endpoint 0: never looked at while the connection waits for its request.)
        let state = Default::default();
        let id = self
            .insert_slot(stream, 0, state, Interest::READABLE, |conn| {
                conn.state = ConnState::AdminRequest;
                conn.frame_started = now;
                conn.flags.set(Flag::FrameTimerArmed, true);
            })
            .map_err(|(error, _)| error)?;
        self.timers.insert(
            deadline_after(self.now, deadline),
            TimerEvent::FrameDeadline(id),
        );
        Ok(id)
    }
}

/// What the bytes of a request say so far.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "admin"), allow(dead_code))]
enum Request {
    Incomplete,
    Malformed,
    TooLarge,
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
        // Said with the other endpoints once the loop starts.
        self.unannounced.push(format!(
            "{}admin on http://{addr} (/metrics, /healthz)",
            self.label
        ));
        self.observe_turns = true;
        self.admin = Some(Box::new(Admin {
            listener,
            addr,
            open: Vec::new(),
            loop_metrics: LoopMetrics::default(),
            answered: [0; 6],
            evicted: 0,
        }));
        Ok(())
    }

    /// The admin endpoint's address, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|admin| admin.addr)
    }

    /// Serves an admin connection over TLS when the configuration says so (the admin
    /// deadline bounds its handshake as it bounds its request).
    #[cfg(feature = "tls")]
    fn admin_tls(&mut self, id: ConnId) {
        let Some(server) = self.config.tls.as_ref().filter(|_| self.config.admin_tls) else {
            return;
        };
        let made = crate::tls::TlsLayer::server(server.config());
        self.hub.add_tls_layer(id, made);
    }

    /// An event of the admin listener (its connections' events are connection events).
    pub(super) fn admin_event(&mut self, token: usize) {
        if token == ADMIN_BASE {
            self.admin_accept();
        }
    }

    fn admin_accept(&mut self) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(admin) = self.admin.as_deref_mut() else {
                return;
            };
            let stream = match admin.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("admin accept: {e}");
                    return;
                }
            };
            if admin.open.len() >= MAX_CONNS && !self.make_admin_room() {
                continue; // every one is being answered: the newcomer is closed at once
            }
            let deadline = self.hub.limits.admin_timeout;
            match self
                .hub
                .insert_admin_connection(Stream::Tcp(stream), deadline)
            {
                Ok(id) => {
                    if let Some(admin) = self.admin.as_deref_mut() {
                        admin.open.push(id);
                    }
                    #[cfg(feature = "tls")]
                    self.admin_tls(id);
                }
                Err(e) => log::debug!("admin: cannot register a connection: {e}"),
            }
        }
        // Budget spent: an edge-triggered listener would not report the rest, so the
        // next turn polls it again.
        self.hub.ready_again.push(Token(ADMIN_BASE));
    }

    /// Closes the oldest connection still waiting for its request, for a newcomer;
    /// false when every connection is being answered.
    fn make_admin_room(&mut self) -> bool {
        let Some(admin) = self.admin.as_deref() else {
            return false;
        };
        let oldest = admin.open.iter().copied().find(|&id| {
            self.hub
                .conn(id)
                .is_some_and(|c| c.state == ConnState::AdminRequest)
        });
        let Some(id) = oldest else {
            return false;
        };
        log::debug!("admin: all {MAX_CONNS} connections taken: closing the oldest waiting one for a newcomer");
        if let Some(admin) = self.admin.as_deref_mut() {
            admin.evicted += 1;
        }
        self.close_connection(id, CloseReason::Service);
        true
    }

    /// Reads an admin connection's request (the read path hands it here while the
    /// connection is in `ConnState::AdminRequest`) and answers it once it is whole.
    pub(super) fn read_admin(&mut self, id: ConnId) {
        let request = {
            let Some(conn) = connection_mut(&mut self.hub.conns, id) else {
                return;
            };
            let input = conn.input.get_mut(&mut self.hub.pool);
            let read = read_request(&mut conn.stream, self.hub.tls.get_mut(id), input);
            if self.hub.tls.get(id).is_some() {
                self.hub.after_tls_io(id);
            }
            match read {
                Ok(request) => request,
                Err(reason) => return self.hub.request_close(id, reason),
            }
        };
        let (status, content_type, body) = match request {
            Request::Incomplete => return self.hub.account(id),
            Request::Malformed => (400, "text/plain", "bad request\n".to_string()),
            Request::TooLarge => (431, "text/plain", "request too large\n".to_string()),
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
        if let Some(admin) = self.admin.as_deref_mut() {
            admin.answered[status_index(status)] += 1;
        }
        self.answer_admin(id, &response(status, content_type, &body));
    }

    /// Writes the answer, then closes the connection as any other: once the answer is
    /// written, with a FIN.
    fn answer_admin(&mut self, id: ConnId, answer: &[u8]) {
        let Some(conn) = connection_mut(&mut self.hub.conns, id) else {
            return;
        };
        conn.state = ConnState::Open;
        conn.frame_started = NO_FRAME;
        if let Some(input) = conn.input.take() {
            self.hub.pool.give_back(input);
        }
        self.hub.write_or_queue(id, answer, 0);
        self.hub.close_after_flush(id, CloseReason::Service);
    }

    /// The frame deadline of an admin connection (its request's deadline) came: closes
    /// it if it is still waiting.
    pub(super) fn check_admin_deadline(&mut self, id: ConnId) {
        let Some(conn) = self.hub.conn_mut(id) else {
            return;
        };
        conn.flags.set(Flag::FrameTimerArmed, false);
        if conn.state == ConnState::AdminRequest {
            log::debug!("admin: a request was not complete within its deadline");
            self.hub.request_close(id, CloseReason::FrameTimeout);
        }
    }

    /// Forgets `id` if it is an admin connection (it is being closed); true if it was.
    pub(super) fn forget_admin_connection(&mut self, id: ConnId) -> bool {
        let Some(admin) = self.admin.as_deref_mut() else {
            return false;
        };
        match admin.open.iter().position(|&open| open == id) {
            Some(at) => {
                admin.open.remove(at);
                true
            }
            None => false,
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

    /// Closes the admin listener (shutdown); its connections close with the others.
    pub(super) fn close_admin(&mut self) {
        if let Some(admin) = self.admin.as_deref_mut() {
            let _ = self.hub.registry.deregister(&mut admin.listener);
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
    /// admin endpoint's own counts, the service's metrics, then the build and the
    /// process.
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
            let codes = ["200", "400", "404", "405", "503", "431"];
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
                admin.open.len() as u64,
            );
        }
        self.service.metrics(&mut out);
        metrics::write_build_info(&mut out);
        metrics::write_process(&mut out);
        out
    }
}

/// Reads what the peer sent into `input` until `WouldBlock`, and parses it. `Err`, with
/// the reason to close, when the peer closed, or the socket failed, before the request
/// was complete.
fn read_request(
    stream: &mut Stream,
    mut tls: Option<&mut crate::tls::TlsLayer>,
    input: &mut Buffer,
) -> Result<Request, CloseReason> {
    loop {
        // At most one byte past the limit: enough to know the request is too long.
        let wanted = MAX_REQUEST + 1 - input.len().min(MAX_REQUEST);
        let spare = input.spare_mut(2048);
        let room = spare.len().min(wanted);
        match crate::tls::read(stream, tls.as_deref_mut(), &mut spare[..room]) {
            Ok(0) => return Err(CloseReason::PeerClosed),
            Ok(n) => {
                input.commit(n);
                if input.len() > MAX_REQUEST {
                    break; // the codec says so: too large
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(CloseReason::from_io(e.kind())),
        }
    }
    Ok(parse(input.readable_mut()))
}

/// Reads a request's line and headers with the HTTP codec of the protocol layer
/// (`protocol::http`), in the connection's own buffer.
#[cfg(feature = "admin")]
fn parse(input: &mut [u8]) -> Request {
    use crate::frame::{Codec, Decode, FrameError};
    use crate::protocol::http::HttpCodec;
    use crate::protocol::ProtocolIo;
    let (mut replies, mut parts) = (Buffer::new(), Vec::new());
    let mut io = ProtocolIo::new(&mut replies, &mut parts);
    let found = HttpCodec::new(MAX_REQUEST).process(&mut (), input, &mut io);
    let part = |i: usize| parts.get(i).map_or(&[][..], |range| &input[range.clone()]);
    match found {
        Ok(Decode::Incomplete { .. }) => Request::Incomplete,
        Ok(Decode::Frame { .. }) => Request::Complete {
            get: part(0) == b"GET",
            path: String::from_utf8_lossy(part(1)).into_owned(),
        },
        Err(FrameError::TooLarge { .. }) => Request::TooLarge,
        Err(_) => Request::Malformed,
    }
}

/// Without the `admin` feature, `Config::validate` refuses an admin endpoint, so no
/// request ever comes here.
#[cfg(not(feature = "admin"))]
fn parse(_input: &mut [u8]) -> Request {
    Request::Malformed
}

fn status_index(status: u16) -> usize {
    match status {
        200 => 0,
        400 => 1,
        404 => 2,
        405 => 3,
        431 => 5,
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
        431 => "431 Request Header Fields Too Large",
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
            parse(&mut b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec()),
            Request::Incomplete
        );
        assert_eq!(
            parse(&mut b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            Request::Complete {
                get: true,
                path: "/metrics".to_string()
            }
        );
        assert_eq!(
            parse(&mut b"\x01\x02 nonsense\r\n\r\n".to_vec()),
            Request::Malformed
        );
        let endless = format!("GET /{} HTTP/1.1\r\n", "x".repeat(MAX_REQUEST));
        assert_eq!(parse(&mut endless.into_bytes()), Request::TooLarge);
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
