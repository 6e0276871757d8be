//! The read path: from a readable event to frames handed to the service.
//!
//! Reads land in the loop's shared buffer (or, for a frame too large for it, in the
//! connection's own buffer); every complete frame of a read goes to the service as one
//! batch; only an incomplete tail is kept per connection. A short read proves the socket
//! drained (no extra `read` just to hear `WouldBlock`). A lingering connection's input
//! is read and thrown away.

use std::io;

use super::Reactor;
use crate::buffer::Buffer;
use crate::connection::{ConnId, ConnState, Connection, NO_FRAME};
use crate::frame::{Codec, Decode, FrameError};
use crate::hub::{connection_mut, Hub, TimerEvent};
use crate::service::{Context, Frames, Service};
use crate::stats::CloseReason;

impl<S: Service, C: Codec> Reactor<S, C> {
    /// Reads and decodes until the socket is drained, the read budget is spent, or the
    /// connection stops reading (closing, or paused by backpressure).
    pub(super) fn read_connection(&mut self, id: ConnId, read_to_eof: bool) {
        for _ in 0..self.config.read_budget {
            match self.read_once(id, read_to_eof) {
                ReadOutcome::Drained | ReadOutcome::Stopped => return,
                ReadOutcome::More => {}
            }
        }
        // Budget spent and the socket may hold more: come back next turn.
        self.hub.list_ready_again(id);
    }

    /// Reads and throws away what a lingering connection's peer still sends, until the
    /// peer closes (EOF or an error: then the socket closes), the socket is drained, or
    /// the read budget is spent (then again next turn, until the linger deadline).
    fn discard_input(&mut self, id: ConnId, reason: CloseReason) {
        let size = self.scratch.capacity();
        for _ in 0..self.config.read_budget {
            let Some(conn) = self.hub.conn_mut(id) else {
                return;
            };
            self.scratch.clear();
            match conn.stream.read(self.scratch.spare_mut(size)) {
                Ok(0) => {}
                Ok(n) => {
                    log::trace!("{id}: lingering: discarded {n} bytes");
                    conn.peer_still_sending = true;
                    continue;
                }
                // Wait for the peer's close, or the end of the quiet window.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {}
            }
            self.hub.request_close(id, reason);
            return;
        }
        self.hub.list_ready_again(id);
    }

    /// One `read` into the shared buffer (or into the connection's own buffer when a
    /// frame too big for the shared one is arriving), then decode and dispatch.
    ///
    /// This is the hot path of every server built on the reactor, so the connection is
    /// looked up once, here, and everything up to the `read` works on that one borrow.
    fn read_once(&mut self, id: ConnId, read_to_eof: bool) -> ReadOutcome {
        let now = self.hub.now_millis();
        let Some(conn) = connection_mut(&mut self.hub.conns, id) else {
            log::trace!("{id}: gone (a stale event, or closed during this read)");
            return ReadOutcome::Stopped;
        };
        match may_read(conn, id, self.config.write_limit) {
            Reading::Allowed => {}
            Reading::Discard(reason) => {
                self.discard_input(id, reason);
                return ReadOutcome::Stopped;
            }
            Reading::Stopped => return ReadOutcome::Stopped,
        }
        let held_nothing = conn.input.capacity() == 0;
        let large_frame = match conn.input.is_empty() {
            true => None,
            false => large_frame_arriving(&self.codec, &conn.input, self.scratch.capacity()),
        };
        let mut own_input = None;
        let (buf, min_read) = match large_frame {
            Some(min_read) => (own_input.insert(std::mem::take(&mut conn.input)), min_read),
            None => {
                // Small tail (usually none): copy it in front of the new bytes so
                // frames decode in one place.
                self.scratch.clear();
                if !conn.input.is_empty() {
                    self.scratch.extend_from_slice(conn.input.readable());
                }
                (&mut self.scratch, MIN_READ)
            }
        };
        let spare = buf.spare_mut(min_read);
        let requested = spare.len();
        let result = conn.stream.read(spare);
        let mut frames_completed = false;
        let outcome = match result {
            Ok(0) => {
                log::trace!("{id}: read EOF");
                self.hub.close_after_flush(id, CloseReason::PeerClosed);
                ReadOutcome::Stopped
            }
            Ok(n) => {
                log::trace!("{id}: read {n} bytes");
                buf.commit(n);
                if conn.mark_active(now) {
                    self.hub.idle.touch(&mut self.hub.conns, id.index());
                }
                self.hub.stats.bytes_in += n as u64;
                let dispatched =
                    dispatch_frames(&mut self.hub, &mut self.service, &self.codec, id, buf);
                match dispatched {
                    Err(e) => {
                        self.hub.protocol_error(id, &e);
                        ReadOutcome::Stopped
                    }
                    Ok(count) => {
                        frames_completed = count > 0;
                        match n < requested && !read_to_eof {
                            true => ReadOutcome::Drained,
                            false => ReadOutcome::More,
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                log::trace!("{id}: read WouldBlock");
                ReadOutcome::Drained
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => ReadOutcome::More,
            Err(e) => {
                log::debug!("{id}: read error: {e}");
                self.hub.request_close(id, CloseReason::Error(e.kind()));
                ReadOutcome::Stopped
            }
        };
        if let Some(mut own_input) = own_input {
            keep_tail(&mut self.hub, id, &mut own_input, true, frames_completed);
        } else if !(self.scratch.is_empty() && held_nothing) {
            // (The usual case skips this: the read ended on a frame boundary and the
            // connection held no partial frame before it.)
            keep_tail(
                &mut self.hub,
                id,
                &mut self.scratch,
                false,
                frames_completed,
            );
        }
        outcome
    }
}

/// The least room a read offers (unless a large frame needs more).
const MIN_READ: usize = 16 * 1024;

/// Whether a connection may read now.
enum Reading {
    Allowed,
    /// Lingering: what arrives is read and thrown away.
    Discard(CloseReason),
    /// Draining, or paused by backpressure.
    Stopped,
}

/// Whether `conn` may read now; pauses it (and notes the missed readiness) when its
/// queued output is over the write limit.
#[inline(always)]
fn may_read(conn: &mut Connection, id: ConnId, write_limit: usize) -> Reading {
    match conn.state {
        ConnState::Open => {}
        ConnState::Lingering(reason) => return Reading::Discard(reason),
        ConnState::Draining(_) => return Reading::Stopped,
    }
    if conn.read_paused {
        conn.read_pending = true;
        return Reading::Stopped;
    }
    if conn.output.len() > write_limit {
        log::debug!(
            "{id}: {} bytes queued, over the write limit: pausing reads",
            conn.output.len()
        );
        conn.read_paused = true;
        conn.read_pending = true;
        return Reading::Stopped;
    }
    Reading::Allowed
}

/// When the partial frame held in `input` is too large for the shared buffer (more
/// than half of it), the read goes straight into `input` instead: returns how much
/// room that read should offer (the rest of the frame and then some). `None` when the
/// shared buffer will do.
fn large_frame_arriving<C: Codec>(codec: &C, input: &Buffer, shared: usize) -> Option<usize> {
    let frame_len = match codec.decode(input.readable()) {
        Ok(Decode::Incomplete { frame_len }) => frame_len,
        _ => None,
    };
    let needed = frame_len.unwrap_or(input.len());
    (needed > shared / 2).then(|| needed.saturating_sub(input.len()) + MIN_READ)
}

/// What one read did.
enum ReadOutcome {
    /// The socket has nothing more for now (WouldBlock, or a short read).
    Drained,
    /// The read filled the buffer: there may be more.
    More,
    /// The connection stopped reading (EOF, error, protocol error, service closed it).
    Stopped,
}

/// Finds every complete frame in `buf`, hands them to the service as one batch
/// ([`Service::on_frames`]) and consumes them, leaving only the incomplete tail.
/// Returns how many frames there were. Frames before a framing error are still
/// delivered; the error is returned after.
#[inline(always)]
fn dispatch_frames<S: Service, C: Codec>(
    hub: &mut Hub,
    service: &mut S,
    codec: &C,
    id: ConnId,
    buf: &mut Buffer,
) -> Result<usize, FrameError> {
    let bytes = buf.readable();
    let (complete, count, error) = find_complete_frames(codec, bytes);
    if count > 0 {
        hub.stats.frames_in += count as u64;
        let frames = Frames::new(&bytes[..complete], count, codec);
        service.on_frames(&mut Context::new(hub, codec), id, frames);
    }
    buf.consume(complete);
    error.map_or(Ok(count), Err)
}

/// Stores what is left of the input (`tail`) in the connection, or releases the
/// connection's buffer when nothing is left, and arms the frame deadline when a new
/// partial frame begins. With `direct` the tail *is* the connection's own buffer, moved
/// back into it; otherwise it is the loop's shared buffer, which is left empty. After
/// `frames_completed`, any tail is the start of a new frame, with a deadline of its own.
fn keep_tail(hub: &mut Hub, id: ConnId, tail: &mut Buffer, direct: bool, frames_completed: bool) {
    let (now, now_millis) = (hub.now, hub.now_millis());
    let frame_timeout = hub.limits.frame_timeout;
    let Some(conn) = connection_mut(&mut hub.conns, id) else {
        tail.clear();
        return;
    };
    if frames_completed {
        conn.frame_started = NO_FRAME;
    }
    if direct {
        conn.input = std::mem::take(tail);
    } else {
        conn.input.clear();
        if !tail.is_empty() {
            if conn.input.capacity() == 0 {
                conn.input = hub.pool.take();
            }
            conn.input.extend_from_slice(tail.readable());
        }
        tail.clear();
    }
    if conn.input.is_empty() {
        conn.frame_started = NO_FRAME;
        if conn.input.capacity() > 0 {
            hub.pool.give_back(&mut conn.input);
        }
    } else if conn.frame_started == NO_FRAME {
        conn.frame_started = now_millis;
        if let (Some(timeout), false) = (frame_timeout, conn.frame_timer_armed) {
            conn.frame_timer_armed = true;
            hub.timers
                .insert(now + timeout, TimerEvent::FrameDeadline(id));
        }
    }
}

/// Walks the frame headers in `bytes`: how many bytes the complete frames use, how many
/// there are, and the framing error that stopped the walk, if any.
#[inline(always)]
fn find_complete_frames<C: Codec>(codec: &C, bytes: &[u8]) -> (usize, usize, Option<FrameError>) {
    let mut complete = 0;
    let mut count = 0;
    loop {
        match codec.decode(&bytes[complete..]) {
            Ok(Decode::Frame { consumed: 0, .. }) => {
                // A codec that consumes nothing would make this loop spin for ever.
                return (
                    complete,
                    count,
                    Some(FrameError::Malformed("codec consumed no bytes")),
                );
            }
            Ok(Decode::Frame { consumed, .. }) => {
                complete += consumed;
                count += 1;
            }
            Ok(Decode::Incomplete { .. }) => return (complete, count, None),
            Err(e) => return (complete, count, Some(e)),
        }
    }
}
