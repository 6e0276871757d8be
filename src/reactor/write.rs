//! The write path: from a service's send to bytes in the socket.
//!
//! A send to a connection with nothing queued is written at once, straight from the
//! caller's bytes: the common case costs one `write` and no copy. Except for sends to
//! the connection a callback is about (its frames, its timer): a request/response
//! protocol answers each pipelined request with its own send, and one `write` per
//! answer would cost a system call per request. Those are gathered in the connection's
//! queue and written with one `write` when the callback returns, as the loop carries
//! out what callbacks queued after every event, in the same turn
//! ([`Hub::gather`]; a gathering that reaches [`GATHER`] is written at once).
//! A [`crate::Context::forward`] of frames as they came, echo's way, is written at
//! once: it already is one write for a whole read. Whatever the socket
//! does not take is queued, in order, and WRITABLE interest is registered only while
//! something waits (so an idle connection is never woken for writability). When the
//! socket has room again the queue is written with `write` or, when shared frames are
//! queued, one `writev`.
//!
//! Output past the write limit marks the connection congested and pauses its reading
//! (backpressure: a peer that sends without reading cannot grow our memory without
//! bound). When the queue drains to the low-water mark, reading resumes and the service
//! hears `on_drained`. Output that waits for the socket is watched by the send
//! timeout: a queue that makes no progress for that long means the peer stopped
//! reading, and the connection is reset (`timers.rs`). Every change of a queue is
//! counted for the memory budget (`budget.rs`). A connection that is closing or shutting its side takes the
//! next step of its life cycle (`lifecycle.rs`) once its queue is empty.

use std::io::{self, IoSlice};

use mio::{Interest, Registry};

use crate::buffer::Buffer;
use crate::connection::{ConnId, ConnState, Connection, Flag};
use crate::frame::FrameError;
use crate::hub::{connection_mut, recount, Hub, TimerEvent};
use crate::outqueue::{SharedFrame, MAX_IOVECS};
use crate::service::Service;
use crate::stats::CloseReason;
use crate::tls::{self, TlsLayer};

impl<S: Service> Hub<S> {
    /// Sends `bytes` (already framed) on a connection: straight to the socket when
    /// nothing is queued ahead of them, else queued behind what is. Returns false if
    /// the connection is gone, closing, or its side is shut.
    #[inline(never)]
    pub(crate) fn write_or_queue(&mut self, id: ConnId, bytes: &[u8], frames: u64) -> bool {
        let now = self.now_millis();
        // (The slab alone, not `conn_mut`: the pool and counters are used alongside.)
        let Some(conn) = connection_mut(&mut self.conns, id).filter(|c| c.may_send()) else {
            return false;
        };
        self.stats.frames_out += frames;
        let mut written = 0;
        let write_at_once =
            conn.output.is_empty() && !bytes.is_empty() && conn.state.may_write_now();
        let mut tls = self.tls.get_mut(id);
        let layered = tls.is_some();
        if write_at_once {
            let result = match tls.as_deref_mut() {
                None => write_now(conn, bytes),
                Some(layer) => write_now_tls(conn, layer, bytes),
            };
            match result {
                Ok(n) => written = n,
                Err(e) => {
                    log::debug!("{id}: write error: {e}");
                    self.to_close.push((id, CloseReason::from_io(e.kind())));
                    return true;
                }
            }
            log::trace!("{id}: write {written} of {}", bytes.len());
            self.stats.bytes_out += written as u64;
        }
        if written == bytes.len() && tls.is_some_and(|layer| layer.has_pending()) {
            // All taken, not all written: TLS holds ciphertext for the socket.
            set_writable_interest(&self.registry, conn, id, true);
            self.arm_send_deadline(id);
            self.recount_tls(id);
            return true;
        }
        if written < bytes.len() {
            if conn.output.is_empty() {
                // Output begins to wait: the send timeout counts from here.
                conn.write_progress = now as u32;
            }
            // (Refused for a handshake under way, not for a full socket: the end of
            // the handshake writes it.)
            let socket_full = write_at_once && !waits_for_handshake(self.tls.get(id));
            self.queue_rest(id, &bytes[written..], socket_full);
        }
        if layered {
            self.recount_tls(id);
        }
        true
    }

    /// Sends `bytes` (already framed) on the connection a callback is about: queued
    /// behind what is queued, and written with everything else the callback sends it
    /// when the callback returns (see the module docs). A send of [`GATHER`] bytes or
    /// more is written at once instead. Returns false if the connection is gone,
    /// closing, or its side is shut.
    pub(crate) fn gather(&mut self, id: ConnId, bytes: &[u8], frames: u64) -> bool {
        if bytes.len() >= GATHER {
            return self.write_or_queue(id, bytes, frames);
        }
        let appended = self.gather_with(id, frames, |out| {
            out.extend_from_slice(bytes);
            Ok(())
        });
        appended.is_some()
    }

    /// [`Hub::gather`] for a payload still to be framed: `encode` appends the frame
    /// straight to the connection's queue, so a reply is copied once, not into a
    /// framing buffer and then into the queue. A gathering that reaches [`GATHER`] is
    /// written at once. `None` if the connection is gone, closing, or its side is
    /// shut; the encoder's error (nothing queued) otherwise.
    pub(crate) fn gather_with(
        &mut self,
        id: ConnId,
        frames: u64,
        encode: impl FnOnce(&mut Buffer) -> Result<(), FrameError>,
    ) -> Option<Result<(), FrameError>> {
        let now = self.now_millis();
        let conn = connection_mut(&mut self.conns, id).filter(|c| c.may_send())?;
        let waited = !conn.output.is_empty();
        let out = conn.output.owned_for_append(&mut self.pool);
        let before = out.len();
        let encoded = encode(out);
        let added = out.len() > before;
        if encoded.is_err() || !added {
            // Nothing (or a refused frame's first bytes) to keep.
            out.truncate(before);
            conn.output.release_if_empty(&mut self.pool);
            return Some(encoded);
        }
        self.stats.frames_out += frames;
        if !waited {
            // Output begins to wait: the send timeout counts from here.
            conn.write_progress = now as u32;
        }
        if conn.output.len() > self.limits.write_limit {
            conn.flags.set(Flag::Congested, true);
        }
        let write_now = conn.output.len() >= GATHER && !conn.flags.get(Flag::WritableArmed);
        if conn.state == ConnState::Connecting {
            // Written once the connect completes.
        } else if write_now {
            self.flush(id);
        } else {
            // Written when the callback returns. (With WRITABLE armed the socket is
            // full, and its event writes the queue.)
            self.list_for_flush(id);
        }
        self.account(id);
        Some(Ok(()))
    }

    /// Queues what a send could not write at once. Out of line: the common case
    /// writes everything and never comes here.
    #[inline(never)]
    fn queue_rest(&mut self, id: ConnId, rest: &[u8], socket_full: bool) {
        let write_limit = self.limits.write_limit;
        let Some(conn) = connection_mut(&mut self.conns, id) else {
            return;
        };
        conn.output
            .owned_for_append(&mut self.pool)
            .extend_from_slice(rest);
        if conn.output.len() > write_limit {
            conn.flags.set(Flag::Congested, true);
        }
        if conn.state == ConnState::Connecting {
            // Written once the connect completes.
        } else if socket_full {
            // The write came up short: the socket is full. Wait for WRITABLE rather
            // than list a flush that would only hear WouldBlock.
            set_writable_interest(&self.registry, conn, id, true);
            self.arm_send_deadline(id);
        } else {
            self.list_for_flush(id);
        }
        self.account(id);
    }

    /// Output waits for the peer to read: make sure a send deadline watches it.
    pub(crate) fn arm_send_deadline(&mut self, id: ConnId) {
        let Some(timeout) = self.limits.send_timeout else {
            return;
        };
        let now = self.now;
        let Some(conn) = connection_mut(&mut self.conns, id) else {
            return;
        };
        if !conn.flags.get(Flag::SendTimerArmed) {
            conn.flags.set(Flag::SendTimerArmed, true);
            self.timers.insert(
                crate::timer::deadline_after(now, timeout),
                TimerEvent::SendDeadline(id),
            );
        }
    }

    /// Queues a shared frame on a connection, to be written when the callback returns.
    /// Shared frames are for fan-out: when one read brings several messages for a room,
    /// each member's frames then go out together in one `writev` instead of one `write`
    /// per frame per member. Returns false if the connection is gone or closing.
    pub(crate) fn send_shared(&mut self, id: ConnId, frame: &SharedFrame) -> bool {
        let write_limit = self.limits.write_limit;
        let now = self.now_millis();
        // One lookup for all of it: a room event comes here once per member.
        let Some(conn) = connection_mut(&mut self.conns, id).filter(|c| c.may_send()) else {
            return false;
        };
        if conn.output.is_empty() {
            conn.write_progress = now as u32;
        }
        conn.output.push_shared(frame.clone());
        if conn.output.len() > write_limit {
            conn.flags.set(Flag::Congested, true);
        }
        if !conn.flags.get(Flag::QueuedFlush) {
            conn.flags.set(Flag::QueuedFlush, true);
            self.to_flush.push(id);
        }
        let passed = recount(conn, &mut self.buffered_kib, self.limits.memory_budget_kib);
        self.counted(passed);
        self.stats.frames_out += 1;
        true
    }

    /// Writes as much queued output as the socket takes, then adjusts WRITABLE interest,
    /// backpressure and the life cycle. Errors are turned into close requests.
    pub(crate) fn flush(&mut self, id: ConnId) {
        let now = self.now_millis();
        let Some(conn) = connection_mut(&mut self.conns, id) else {
            return;
        };
        conn.flags.set(Flag::QueuedFlush, false);
        if conn.state == ConnState::Connecting {
            return; // written once the connect completes
        }
        let mut socket_full = false;
        let mut progressed = false;
        let mut tls = self.tls.get_mut(id);
        let layered = tls.is_some();
        while !conn.output.is_empty() {
            let (result, attempted) = write_some(conn, tls.as_deref_mut());
            self.stats.queued_writes += 1;
            match result {
                Ok(0) => {
                    self.to_close
                        .push((id, CloseReason::Error(io::ErrorKind::WriteZero)));
                    return;
                }
                Ok(written) => {
                    log::trace!("{id}: write {written} of {attempted}");
                    self.stats.bytes_out += written as u64;
                    progressed = true;
                    conn.write_progress = now as u32;
                    conn.output.advance(written, &mut self.pool);
                    // A short write means the kernel's send buffer is full: no need to
                    // try again only to be told WouldBlock.
                    if written < attempted {
                        socket_full = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    log::trace!("{id}: write WouldBlock");
                    // A TLS layer takes nothing before its handshake is done, and the
                    // end of the handshake writes what waits (`Hub::after_tls_io`): no
                    // WRITABLE to wait for then, and no send timeout to run.
                    socket_full = !waits_for_handshake(tls.as_deref());
                    break;
                }
                Err(e) => {
                    log::debug!("{id}: write error: {e}");
                    self.to_close.push((id, CloseReason::from_io(e.kind())));
                    return;
                }
            }
        }
        if let (false, Some(layer)) = (socket_full, tls) {
            // What TLS encrypted and the socket did not take yet.
            match layer.flush(&mut conn.stream) {
                Ok(all) => socket_full = !all,
                Err(e) => {
                    log::debug!("{id}: write error: {e}");
                    self.to_close.push((id, CloseReason::from_io(e.kind())));
                    return;
                }
            }
        }
        set_writable_interest(&self.registry, conn, id, socket_full);
        let queued = conn.output.len();
        if progressed {
            self.account(id);
        }
        if layered {
            self.recount_tls(id);
        }
        if socket_full {
            self.arm_send_deadline(id);
        }
        if queued <= self.limits.low_water {
            self.recover_from_backpressure(id);
        }
        if queued == 0 && !socket_full {
            self.output_written(id);
        }
    }

    /// The queue is at the low-water mark: reading resumes if backpressure paused it,
    /// and a congested connection's service hears `on_drained`.
    fn recover_from_backpressure(&mut self, id: ConnId) {
        let now = self.now_millis();
        let Some(conn) = connection_mut(&mut self.conns, id) else {
            return;
        };
        let congested = conn.flags.take(Flag::Congested);
        if conn.flags.get(Flag::ReadPaused) {
            log::debug!("{id}: output drained to the low-water mark, reading again");
            conn.flags.set(Flag::ReadPaused, false);
            if !conn.flags.get(Flag::PausedByService) {
                conn.restart_frame_clock(now);
                if conn.flags.take(Flag::ReadPending) {
                    self.list_ready_again(id);
                }
            }
        }
        if congested {
            self.drained.push(id);
        }
    }
}

/// Gathered output is written as soon as it reaches this much: a larger write gains
/// nothing, and the queue stays small.
pub(crate) const GATHER: usize = 64 * 1024;

/// One `write` of `bytes`, retried if interrupted: how many bytes the socket took
/// (0 when it is full).
#[inline]
fn write_now(conn: &mut Connection, bytes: &[u8]) -> io::Result<usize> {
    loop {
        match conn.stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

/// True when `layer` (a connection's TLS, if it has one) takes no output yet: its
/// handshake is under way.
#[inline]
fn waits_for_handshake(layer: Option<&TlsLayer>) -> bool {
    layer.is_some_and(|layer| !layer.is_established())
}

/// [`write_now`] through a connection's TLS layer (which retries an interrupted write
/// itself). Out of line, so that the plain path stays as it was.
#[inline(never)]
fn write_now_tls(conn: &mut Connection, layer: &mut TlsLayer, bytes: &[u8]) -> io::Result<usize> {
    match layer.write(&mut conn.stream, bytes) {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// One `write` (or `writev` when shared frames are queued) of the connection's output.
/// Returns the outcome and how many bytes were offered.
fn write_some(conn: &mut Connection, tls: Option<&mut TlsLayer>) -> (io::Result<usize>, usize) {
    if conn.output.is_owned_only() {
        let bytes = conn.output.owned_bytes();
        let attempted = bytes.len();
        (tls::write(&mut conn.stream, tls, bytes), attempted)
    } else {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let (used, attempted) = conn.output.gather(&mut slices);
        (
            tls::write_vectored(&mut conn.stream, tls, &slices[..used]),
            attempted,
        )
    }
}

/// Registers WRITABLE only while output waits for room in the socket, so an idle
/// connection is never woken for writability it has no use for.
pub(crate) fn set_writable_interest(
    registry: &Registry,
    conn: &mut Connection,
    id: ConnId,
    wanted: bool,
) {
    if conn.flags.get(Flag::WritableArmed) == wanted {
        return;
    }
    let interest = if wanted {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    match registry.reregister(&mut conn.stream, id.token(), interest) {
        Ok(()) => {
            log::trace!(
                "{id}: interest {}",
                if wanted { "READ|WRITE" } else { "READ" }
            );
            conn.flags.set(Flag::WritableArmed, wanted);
        }
        Err(e) => log::error!("{id}: reregister: {e}"),
    }
}
