//! The read path: from a readable event to frames handed to the service.
//!
//! Reads land in the loop's shared buffer; every complete frame of a read goes to the
//! service as one batch, borrowed from there; only an incomplete tail is kept per
//! connection. A short read proves the socket drained (no extra `read` just to hear
//! `WouldBlock`). A lingering connection's input is read and thrown away.
//!
//! Large frames (over 16 KiB, length known from the header) are never copied after they
//! arrive: a read that fills the shared buffer inside one reads exactly the rest behind
//! it (`finish_frame_in_place`), and one left partial at the end of a turn is completed
//! in the connection's own buffer by reads of exactly its missing bytes
//! (`own_buffer_read`).

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

    /// One `read` into the shared buffer (or into the connection's own buffer when the
    /// rest of a large frame is arriving), then decode and dispatch.
    ///
    /// This is the hot path of every server built on the reactor, so the connection is
    /// looked up once, here, and everything up to the `read` works on that one borrow.
    /// (Out of line: inlined into the budget loop, its setup would be hoisted in front
    /// of the loop and paid on every event, though most events need one read.)
    #[inline(never)]
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
        let own_read = match conn.input.is_empty() {
            true => None,
            false => own_buffer_read(&self.codec, &conn.input),
        };
        let mut own_input = None;
        let (buf, read) = match own_read {
            Some(read) => (own_input.insert(std::mem::take(&mut conn.input)), read),
            None => {
                // Small tail (usually none): copy it in front of the new bytes so
                // frames decode in one place.
                self.scratch.clear();
                if !conn.input.is_empty() {
                    self.scratch.extend_from_slice(conn.input.readable());
                }
                let read = ReadSize {
                    min: MIN_READ,
                    max: self.config.read_buffer_size,
                };
                (&mut self.scratch, read)
            }
        };
        let spare = buf.spare_mut(read.min);
        let requested = spare.len().min(read.max);
        let result = conn.stream.read(&mut spare[..requested]);
        if matches!(result, Ok(n) if n > 0) && conn.mark_active(now) {
            self.hub.idle.touch(&mut self.hub.conns, id.index());
        }
        let mut frames_completed = false;
        let mut outcome = absorb_read(
            &mut self.hub,
            &mut self.service,
            &self.codec,
            (id, buf),
            (result, requested, read_to_eof),
            &mut frames_completed,
        );
        if own_input.is_none() && outcome == ReadOutcome::More {
            outcome = self.finish_frame_in_place(id, read_to_eof, &mut frames_completed, outcome);
        }
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

    /// A read into the shared buffer filled it and ended inside a large frame: the
    /// socket likely holds the rest. Read exactly the missing bytes into the shared
    /// buffer, behind the frame's start, when they fit there. The frame is then
    /// dispatched from where it landed, instead of being copied into a buffer of its
    /// own and completed there (for 64 KiB frames that copy was a tenth of the
    /// server's user time). Out of line: the small-frame path stays short.
    #[inline(never)]
    fn finish_frame_in_place(
        &mut self,
        id: ConnId,
        read_to_eof: bool,
        frames_completed: &mut bool,
        outcome: ReadOutcome,
    ) -> ReadOutcome {
        let Some(missing) = missing_in_place(&self.codec, &self.scratch) else {
            return outcome;
        };
        let Some(conn) = connection_mut(&mut self.hub.conns, id) else {
            return outcome;
        };
        // Fits, so this neither moves nor grows the buffer.
        let spare = &mut self.scratch.spare_mut(missing)[..missing];
        let result = conn.stream.read(spare);
        log::trace!("{id}: finishing a {missing}-byte remainder in place");
        absorb_read(
            &mut self.hub,
            &mut self.service,
            &self.codec,
            (id, &mut self.scratch),
            (result, missing, read_to_eof),
            frames_completed,
        )
    }
}

/// The least room a read into the shared buffer offers.
const MIN_READ: usize = 16 * 1024;

/// Frames longer than this are large: their remainder is read straight into the
/// buffer that holds their start (see [`own_buffer_read`], [`missing_in_place`]).
const LARGE_FRAME: usize = 16 * 1024;

/// The shared buffer's size for reads of up to `read_size` bytes: a small held tail
/// (at most [`LARGE_FRAME`]) copied in front, the read, and room behind it for the
/// rest of any frame up to `read_size` long that starts in the read, so that frame
/// is always completed in place.
pub(super) fn shared_buffer_size(read_size: usize) -> usize {
    LARGE_FRAME + 2 * read_size
}

/// How much one read asks for: at least `min` bytes of room are made, at most `max`
/// bytes are read.
#[derive(Debug, Clone, Copy)]
struct ReadSize {
    min: usize,
    max: usize,
}

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

/// What the partial frame at the start of a buffer still needs.
enum Partial {
    /// A large frame of known length, short of this many bytes.
    Large { missing: usize },
    /// A frame of unknown length (a long line, say) already longer than a large frame.
    LongUnknown,
    /// A small frame, or nothing the codec can size.
    Small,
}

/// Classifies the partial frame held in `buf` (one `decode` of its header).
fn partial_frame<C: Codec>(codec: &C, buf: &Buffer) -> Partial {
    match codec.decode(buf.readable()) {
        Ok(Decode::Incomplete {
            frame_len: Some(frame_len),
        }) if frame_len > LARGE_FRAME => Partial::Large {
            missing: frame_len - buf.len(),
        },
        Ok(Decode::Incomplete { frame_len: None }) if buf.len() > LARGE_FRAME => {
            Partial::LongUnknown
        }
        _ => Partial::Small,
    }
}

/// Whether the next read of a connection holding the partial frame `input` goes
/// straight into `input` rather than into the shared buffer, and how much it reads.
///
/// A large frame of known length gets exactly its missing bytes: the buffer then ends
/// on the frame's boundary and is empty once the frame is dispatched, so its storage
/// is never compacted and goes straight back to the pool. A partial frame of unknown
/// length that is already large keeps growing in place.
fn own_buffer_read<C: Codec>(codec: &C, input: &Buffer) -> Option<ReadSize> {
    match partial_frame(codec, input) {
        Partial::Large { missing } => Some(ReadSize {
            min: missing,
            max: missing,
        }),
        Partial::LongUnknown => Some(ReadSize {
            min: MIN_READ,
            max: usize::MAX,
        }),
        Partial::Small => None,
    }
}

/// When `scratch` ends inside a large frame of known length whose missing bytes fit
/// in its spare room (without moving anything), how many bytes are missing.
fn missing_in_place<C: Codec>(codec: &C, scratch: &Buffer) -> Option<usize> {
    if scratch.is_empty() {
        return None;
    }
    match partial_frame(codec, scratch) {
        Partial::Large { missing } => (missing <= scratch.spare_len()).then_some(missing),
        Partial::LongUnknown | Partial::Small => None,
    }
}

/// Takes in what one read brought: EOF, bytes (decoded and dispatched), or an error.
/// `requested` is how much the read asked for: fewer bytes mean the socket is drained.
/// Sets `frames_completed` when frames were dispatched.
#[inline(always)]
fn absorb_read<S: Service, C: Codec>(
    hub: &mut Hub,
    service: &mut S,
    codec: &C,
    (id, buf): (ConnId, &mut Buffer),
    (result, requested, read_to_eof): (io::Result<usize>, usize, bool),
    frames_completed: &mut bool,
) -> ReadOutcome {
    match result {
        Ok(0) => {
            log::trace!("{id}: read EOF");
            hub.close_after_flush(id, CloseReason::PeerClosed);
            ReadOutcome::Stopped
        }
        Ok(n) => {
            log::trace!("{id}: read {n} bytes");
            buf.commit(n);
            hub.stats.bytes_in += n as u64;
            match dispatch_frames(hub, service, codec, id, buf) {
                Err(e) => {
                    hub.protocol_error(id, &e);
                    ReadOutcome::Stopped
                }
                Ok(count) => {
                    *frames_completed |= count > 0;
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
            hub.request_close(id, CloseReason::Error(e.kind()));
            ReadOutcome::Stopped
        }
    }
}

/// What one read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
