//! The read path: from a readable event to frames handed to the service.
//!
//! Reads land in the loop's shared buffer; every complete frame of a read goes to the
//! service as one batch, borrowed from there, with the connection's own state taken
//! beside it; only an incomplete tail is kept per connection. A short read proves the
//! socket drained (no extra `read` just to hear `WouldBlock`). A lingering
//! connection's input is read and thrown away. Why each read loop stopped is in the
//! trace log: `WouldBlock`, a short read, EOF, or the per-turn budget.
//!
//! Large frames (over 16 KiB, length known from the header) are never copied after they
//! arrive: a read that fills the shared buffer inside one reads exactly the rest behind
//! it (`finish_frame_in_place`), and one left partial at the end of a turn is completed
//! in the connection's own buffer by reads of exactly its missing bytes
//! (`own_buffer_read`).

use std::io;

use super::lifecycle::{may_read, peer_closed, Reading};
use super::Reactor;
use crate::buffer::Buffer;
use crate::connection::{ConnId, ConnState, Flag, Slot, NO_FRAME};
use crate::context::Context;
use crate::endpoint::Endpoints;
use crate::frame::{Codec, Decode, FrameError, Scan};
use crate::hub::{connection_mut, start_frame_clock, Hub};
use crate::service::{Frames, HeldBack, Service};
use crate::stats::CloseReason;
use crate::tls;

/// What the read path borrows from a connection's slot while it lends the hub to the
/// service: the codec's state and the service's state (put back once the read is done).
pub(super) struct TakenStates<S: Service> {
    pub(super) decode: <S::Codec as Codec>::State,
    pub(super) service: S::Conn,
}

impl<S: Service> TakenStates<S> {
    /// Takes both states out of `slot` (defaults stay behind; for `()`, nothing moves).
    #[inline(always)]
    pub(super) fn take_from(slot: &mut Slot<S>) -> Self {
        TakenStates {
            decode: std::mem::take(&mut slot.decode),
            service: std::mem::take(&mut slot.state),
        }
    }
}

impl<S: Service> Reactor<S> {
    /// Reads and decodes until the socket is drained, the read budget is spent, or the
    /// connection stops reading (closing, or paused).
    pub(super) fn read_connection(&mut self, id: ConnId, read_to_eof: bool) {
        for _ in 0..self.config.read_budget {
            match self.read_once(id, read_to_eof) {
                ReadOutcome::Drained | ReadOutcome::Stopped | ReadOutcome::Held => return,
                ReadOutcome::More => {}
            }
        }
        // Budget spent and the socket may hold more: come back once the other sockets
        // with events have been served.
        log::trace!(
            "{id}: read budget of {} reads spent: the rest waits until the other ready \
             sockets have had their turn",
            self.config.read_budget
        );
        self.hub.list_ready_again(id);
    }

    /// Reads and throws away what a lingering connection's peer still sends, until the
    /// peer closes (EOF or an error: then the socket closes), the socket is drained, or
    /// the read budget is spent (then again from the ready-again list, until the linger
    /// deadline).
    pub(super) fn discard_input(&mut self, id: ConnId, reason: CloseReason) {
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
                    conn.flags.set(Flag::PeerStillSending, true);
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

    /// One `read` and its frames, for the common case: an open connection, reading,
    /// holding no partial frame and no queued output. The read lands in the shared
    /// buffer, the frames go to the service from there, and unless a partial frame is
    /// left over nothing else is done. Anything else takes [`Reactor::read_general`].
    ///
    /// This is the hot path of every server built on the reactor, so the connection is
    /// looked up once, here, and everything up to the `read` works on that one borrow.
    /// (Out of line: inlined into the budget loop, its setup would be hoisted in front
    /// of the loop and paid on every event, though most events need one read.)
    #[inline(never)]
    fn read_once(&mut self, id: ConnId, read_to_eof: bool) -> ReadOutcome {
        let now = self.hub.now_millis();
        let Some(slot) = slot_mut(&mut self.hub.conns, id) else {
            log::trace!("{id}: gone (a stale event, or closed during this read)");
            return ReadOutcome::Stopped;
        };
        let conn = &mut slot.conn;
        // (A test the compiler removes for a codec type that is never a protocol.)
        if S::Codec::PROTOCOL && self.endpoints.codec(conn.endpoint).is_protocol() {
            return self.read_protocol_once(id, read_to_eof);
        }
        // (A TLS connection reads through its layer: the general path.)
        let plain = conn.state == ConnState::Open
            && self.hub.tls.get(id).is_none()
            && !conn.flags.get(Flag::ReadPaused)
            && !conn.flags.get(Flag::PausedByService)
            && !conn.input.has_storage()
            && conn.output.is_empty();
        if !plain {
            return self.read_general(id, read_to_eof);
        }
        // (Field by field: `conn` borrows the slot's connection meanwhile.)
        let mut taken = TakenStates::<S> {
            decode: std::mem::take(&mut slot.decode),
            service: std::mem::take(&mut slot.state),
        };
        let codec = self.endpoints.codec(conn.endpoint);
        self.scratch.clear();
        let spare = self.scratch.spare_mut(MIN_READ);
        let requested = spare.len().min(self.config.read_buffer_size);
        let result = conn.stream.read(&mut spare[..requested]);
        let n = match result {
            Ok(n) if n > 0 => n,
            unusual => {
                // EOF, WouldBlock, an error: the general handling, with the state put
                // back first.
                give_back(&mut self.hub, id, taken);
                return self.read_result(id, unusual, requested, read_to_eof);
            }
        };
        if conn.mark_active(now) {
            self.hub.idle.touch(&mut self.hub.conns, id.index());
        }
        self.scratch.commit(n);
        self.hub.stats.bytes_in += n as u64;
        let drained = n < requested && !read_to_eof;
        trace_read(id, n, requested, drained);
        let mut reader = Reader {
            hub: &mut self.hub,
            endpoints: &self.endpoints,
            service: &mut self.service,
            codec,
            id,
            taken: &mut taken,
        };
        let (outcome, frames_completed) = match (reader.dispatch_frames(&mut self.scratch), drained)
        {
            (Ok(done), _) if done.held() => (ReadOutcome::Held, done.frames() > 0),
            (Ok(done), true) => (ReadOutcome::Drained, done.frames() > 0),
            (Ok(done), false) => (ReadOutcome::More, done.frames() > 0),
            (Err(e), _) => {
                self.hub.protocol_error(id, &e, codec, false);
                (ReadOutcome::Stopped, false)
            }
        };
        if self.scratch.is_empty() || outcome == ReadOutcome::Stopped {
            give_back(&mut self.hub, id, taken);
            return outcome;
        }
        // A partial frame is left: finish a large one in place, or keep the tail.
        self.read_tail(id, taken, (outcome, frames_completed), read_to_eof)
    }

    /// What to do after a read that brought no bytes (EOF, `WouldBlock`, an error),
    /// on the general path with the state in its slot.
    #[inline(never)]
    fn read_result(
        &mut self,
        id: ConnId,
        result: io::Result<usize>,
        requested: usize,
        read_to_eof: bool,
    ) -> ReadOutcome {
        let Some(slot) = slot_mut(&mut self.hub.conns, id) else {
            return ReadOutcome::Stopped;
        };
        let mut taken = TakenStates::take_from(slot);
        let codec = self.endpoints.codec(slot.conn.endpoint);
        let mut reader = Reader {
            hub: &mut self.hub,
            endpoints: &self.endpoints,
            service: &mut self.service,
            codec,
            id,
            taken: &mut taken,
        };
        let mut ignored = false;
        let outcome = reader.handle_read(
            &mut self.scratch,
            (result, requested, read_to_eof),
            &mut ignored,
        );
        give_back(&mut self.hub, id, taken);
        outcome
    }

    /// The plain path's read ended inside a frame: finish a large one in place when the
    /// socket has its rest, and keep what is still partial in the connection.
    #[inline(never)]
    fn read_tail(
        &mut self,
        id: ConnId,
        mut taken: TakenStates<S>,
        (mut outcome, mut frames_completed): (ReadOutcome, bool),
        read_to_eof: bool,
    ) -> ReadOutcome {
        let Some(conn) = self.hub.conn(id) else {
            self.scratch.clear();
            return ReadOutcome::Stopped;
        };
        let codec = self.endpoints.codec(conn.endpoint);
        if outcome == ReadOutcome::More {
            if let Some(missing) = missing_in_place(codec, &taken.decode, &self.scratch) {
                let mut reader = Reader {
                    hub: &mut self.hub,
                    endpoints: &self.endpoints,
                    service: &mut self.service,
                    codec,
                    id,
                    taken: &mut taken,
                };
                outcome = reader.finish_frame_in_place(
                    &mut self.scratch,
                    missing,
                    read_to_eof,
                    &mut frames_completed,
                );
            }
        }
        keep_tail(&mut self.hub, id, &mut self.scratch, frames_completed);
        give_back(&mut self.hub, id, taken);
        outcome
    }

    /// The general read: a partial frame held, output queued, paused, lingering,
    /// half-closed by our side. One `read` into the shared buffer (or into the
    /// connection's own buffer when the rest of a large frame is arriving), then
    /// decode and dispatch.
    #[inline(never)]
    fn read_general(&mut self, id: ConnId, read_to_eof: bool) -> ReadOutcome {
        let now = self.hub.now_millis();
        if let Some(outcome) = self.before_reading(id) {
            return outcome;
        }
        let Some(slot) = slot_mut(&mut self.hub.conns, id) else {
            return ReadOutcome::Stopped;
        };
        let conn = &mut slot.conn;
        if conn.flags.take(Flag::FramesHeld) {
            return self.dispatch_held(id);
        }
        let codec = self.endpoints.codec(conn.endpoint);
        let held_nothing = !conn.input.has_storage();
        let own_read = match conn.input.get() {
            Some(input) if !input.is_empty() => own_buffer_read(codec, &slot.decode, input),
            _ => None,
        };
        let mut own_input = None;
        let (buf, read) = match (own_read, conn.input.take()) {
            (Some(read), Some(mut input)) => {
                input.reserve_exact(read.min);
                (&mut **own_input.insert(input), read)
            }
            (_, input) => {
                // Small tail (usually none): copy it in front of the new bytes so
                // frames decode in one place.
                self.scratch.clear();
                if let Some(input) = input {
                    self.scratch.extend_from_slice(input.readable());
                    conn.input.put(input);
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
        let layer = self.hub.tls.get_mut(id);
        let tls_layered = layer.is_some();
        let result = tls::read(&mut conn.stream, layer, &mut spare[..requested]);
        if matches!(result, Ok(n) if n > 0) && conn.mark_active(now) {
            self.hub.idle.touch(&mut self.hub.conns, id.index());
        }
        if tls_layered {
            after_tls_read((&mut self.hub, &self.endpoints, &mut self.service), id);
        }
        let Some(slot) = slot_mut(&mut self.hub.conns, id) else {
            return ReadOutcome::Stopped;
        };
        let mut taken = TakenStates::take_from(slot);
        let mut frames_completed = false;
        let mut reader = Reader {
            hub: &mut self.hub,
            endpoints: &self.endpoints,
            service: &mut self.service,
            codec,
            id,
            taken: &mut taken,
        };
        let mut outcome =
            reader.handle_read(buf, (result, requested, read_to_eof), &mut frames_completed);
        if own_input.is_none() && outcome == ReadOutcome::More {
            if let Some(missing) = missing_in_place(codec, &reader.taken.decode, &self.scratch) {
                outcome = reader.finish_frame_in_place(
                    &mut self.scratch,
                    missing,
                    read_to_eof,
                    &mut frames_completed,
                );
            }
        }
        if let Some(own_input) = own_input {
            keep_own_tail(&mut self.hub, id, own_input, frames_completed);
        } else if !(self.scratch.is_empty() && held_nothing) {
            // (The usual case skips this: the read ended on a frame boundary and the
            // connection held no partial frame before it.)
            keep_tail(&mut self.hub, id, &mut self.scratch, frames_completed);
        }
        give_back(&mut self.hub, id, taken);
        outcome
    }
}

impl<S: Service> Reactor<S> {
    /// What comes before a read off the plain path: readiness on a dial still in
    /// flight says how the connect went; a lingering connection's input is read and
    /// thrown away; a closing or paused one is not read. `None`: read on.
    pub(super) fn before_reading(&mut self, id: ConnId) -> Option<ReadOutcome> {
        let Some(slot) = slot_mut(&mut self.hub.conns, id) else {
            return Some(ReadOutcome::Stopped);
        };
        if slot.conn.state == ConnState::Connecting {
            self.complete_connect(id);
            return Some(ReadOutcome::Stopped);
        }
        let write_pauses = &mut self.hub.stats.write_pauses;
        match may_read(&mut slot.conn, id, self.config.write_limit, write_pauses) {
            Reading::Allowed => None,
            Reading::Discard(reason) => {
                self.discard_input(id, reason);
                Some(ReadOutcome::Stopped)
            }
            Reading::Stopped => Some(ReadOutcome::Stopped),
            Reading::Admin => {
                self.read_admin(id);
                Some(ReadOutcome::Stopped)
            }
        }
    }

    /// The connection's output drained after its service left frames for later: hand
    /// them over again, before anything more is read. More means reading may go on.
    #[cold]
    #[inline(never)]
    fn dispatch_held(&mut self, id: ConnId) -> ReadOutcome {
        let Some(slot) = slot_mut(&mut self.hub.conns, id) else {
            return ReadOutcome::Stopped;
        };
        let Some(mut input) = slot.conn.input.take() else {
            return ReadOutcome::More;
        };
        log::trace!("{id}: its output drained: handling the frames that waited");
        let codec = self.endpoints.codec(slot.conn.endpoint);
        let mut taken = TakenStates::take_from(slot);
        let mut reader = Reader {
            hub: &mut self.hub,
            endpoints: &self.endpoints,
            service: &mut self.service,
            codec,
            id,
            taken: &mut taken,
        };
        let (outcome, frames_completed) = match reader.dispatch_frames(&mut input) {
            Err(e) => {
                self.hub.protocol_error(id, &e, codec, false);
                (ReadOutcome::Stopped, false)
            }
            Ok(done) if done.held() => (ReadOutcome::Held, done.frames() > 0),
            Ok(done) => (ReadOutcome::More, done.frames() > 0),
        };
        keep_own_tail(&mut self.hub, id, input, frames_completed);
        give_back(&mut self.hub, id, taken);
        outcome
    }
}

/// After a read of a TLS connection, before its bytes are decoded: what the read left
/// owed to the peer is watched ([`Hub::after_tls_io`]), and if the handshake ended in
/// it, the service hears so (`on_tls_ready`) before the frames of the records that
/// came with it. Out of line: plain connections never come here.
#[inline(never)]
pub(super) fn after_tls_read<S: Service>(
    (hub, endpoints, service): (&mut Hub<S>, &Endpoints<S::Codec>, &mut S),
    id: ConnId,
) {
    if !hub.after_tls_io(id) {
        return;
    }
    let Some(slot) = slot_mut(&mut hub.conns, id) else {
        return;
    };
    let mut state = std::mem::take(&mut slot.state);
    let ctx = &mut Context::new(hub, endpoints).lending(id);
    service.on_tls_ready(ctx, id, &mut state);
    if let Some(slot) = slot_mut(&mut hub.conns, id) {
        slot.state = state;
    }
}

/// Puts the states a read borrowed back into `id`'s slot (for `()` states, nothing).
#[inline(always)]
pub(super) fn give_back<S: Service>(hub: &mut Hub<S>, id: ConnId, taken: TakenStates<S>) {
    if let Some(slot) = slot_mut(&mut hub.conns, id) {
        slot.decode = taken.decode;
        slot.state = taken.service;
    }
}

/// The slot `id` names in the slab, if it is still there (same generation).
#[inline(always)]
pub(super) fn slot_mut<S: Service>(
    conns: &mut slab::Slab<Slot<S>>,
    id: ConnId,
) -> Option<&mut Slot<S>> {
    conns
        .get_mut(id.index())
        .filter(|slot| slot.conn.generation == id.generation())
}

/// One read's worth of work on one connection: everything the decode and dispatch
/// steps need, borrowed side by side.
struct Reader<'a, S: Service> {
    hub: &'a mut Hub<S>,
    endpoints: &'a Endpoints<S::Codec>,
    service: &'a mut S,
    codec: &'a S::Codec,
    id: ConnId,
    taken: &'a mut TakenStates<S>,
}

impl<S: Service> Reader<'_, S> {
    /// Takes in what one read brought: EOF, bytes (decoded and dispatched), or an
    /// error. `requested` is how much the read asked for: fewer bytes mean the socket
    /// is drained. Sets `frames_completed` when frames were dispatched.
    #[inline(always)]
    fn handle_read(
        &mut self,
        buf: &mut Buffer,
        (result, requested, read_to_eof): (io::Result<usize>, usize, bool),
        frames_completed: &mut bool,
    ) -> ReadOutcome {
        let id = self.id;
        match result {
            Ok(0) => {
                log::trace!("{id}: read EOF: the peer closed its side");
                let hub = &mut *self.hub;
                peer_closed(
                    hub,
                    self.endpoints,
                    self.service,
                    id,
                    &mut self.taken.service,
                );
                ReadOutcome::Stopped
            }
            Ok(n) => {
                buf.commit(n);
                self.hub.stats.bytes_in += n as u64;
                let drained = n < requested && !read_to_eof;
                trace_read(id, n, requested, drained);
                match self.dispatch_frames(buf) {
                    Err(e) => {
                        self.hub.protocol_error(id, &e, self.codec, false);
                        ReadOutcome::Stopped
                    }
                    Ok(done) => {
                        *frames_completed |= done.frames() > 0;
                        match (done.held(), drained) {
                            (true, _) => ReadOutcome::Held,
                            (false, true) => ReadOutcome::Drained,
                            (false, false) => ReadOutcome::More,
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                log::trace!("{id}: read WouldBlock: the socket is drained");
                ReadOutcome::Drained
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => ReadOutcome::More,
            Err(e) => {
                self.hub.read_failed(id, &e);
                ReadOutcome::Stopped
            }
        }
    }

    /// A read into the shared buffer filled it and ended inside a large frame: the
    /// socket likely holds the rest. Read exactly the `missing` bytes into the shared
    /// buffer, behind the frame's start (they fit there). The frame is then dispatched
    /// from where it landed, instead of being copied into a buffer of its own and
    /// completed there (for 64 KiB frames that copy was a tenth of the server's user
    /// time). Out of line: the small-frame path stays short.
    #[inline(never)]
    fn finish_frame_in_place(
        &mut self,
        scratch: &mut Buffer,
        missing: usize,
        read_to_eof: bool,
        frames_completed: &mut bool,
    ) -> ReadOutcome {
        let id = self.id;
        let Some(conn) = connection_mut(&mut self.hub.conns, id) else {
            return ReadOutcome::Stopped;
        };
        // Fits, so this neither moves nor grows the buffer.
        let spare = &mut scratch.spare_mut(missing)[..missing];
        let layer = self.hub.tls.get_mut(id);
        let tls_layered = layer.is_some();
        let result = tls::read(&mut conn.stream, layer, spare);
        if tls_layered {
            // (Inside a frame, so past the handshake: only what the read left owed.)
            self.hub.after_tls_io(id);
        }
        log::trace!("{id}: finishing a {missing}-byte remainder in place");
        self.handle_read(scratch, (result, missing, read_to_eof), frames_completed)
    }

    /// Finds every complete frame in `buf`, hands them to the service as one batch
    /// ([`Service::on_frames`]) and consumes them, leaving only the incomplete tail.
    /// Frames before a framing error are still delivered; the error is returned after.
    ///
    /// The service may leave some of the frames for later ([`Payloads::hold_rest`]:
    /// its output passed the write limit). Those stay in `buf`, in front of the tail,
    /// the codec's state goes back to where they begin, and the connection stops
    /// reading until its output drains; then [`Reactor::dispatch_held`] hands them
    /// over again. A framing error behind them is found again then.
    #[inline(always)]
    fn dispatch_frames(&mut self, buf: &mut Buffer) -> Result<Dispatched, FrameError> {
        let bytes = buf.readable();
        let before = self.taken.decode.clone();
        let Scan {
            complete,
            count,
            error,
        } = self.codec.scan(&mut self.taken.decode, bytes);
        if count == 0 {
            buf.consume(complete);
            return error.map_or(Ok(Dispatched::NONE), Err);
        }
        self.hub.stats.frames_in += count as u64;
        let held_back = HeldBack::default();
        let frames = Frames::holdable(&bytes[..complete], count, self.codec, before, &held_back);
        let ctx = &mut Context::new(self.hub, self.endpoints).lending(self.id);
        self.service
            .on_frames(ctx, self.id, &mut self.taken.service, frames);
        let held = held_back.bytes.get();
        if held == 0 {
            buf.consume(complete);
            return error.map_or(Ok(Dispatched::handled(count)), Err);
        }
        let taken = held_back.taken.get();
        if let Some(state) = held_back.state.take() {
            self.taken.decode = state;
        }
        buf.consume(complete - held);
        self.hub.stats.frames_in -= (count - taken) as u64;
        self.hold_frames(count - taken, held);
        Ok(Dispatched::held_after(taken))
    }

    /// The service left frames for later: stop reading until the output drains.
    #[cold]
    fn hold_frames(&mut self, frames: usize, bytes: usize) {
        let id = self.id;
        self.hub.stats.frames_held += 1;
        self.hub.stats.write_pauses += 1;
        log::debug!(
            "{id}: its answers put its output over the write limit: {frames} frames \
             ({bytes} bytes) wait, unread, until it drains"
        );
        if let Some(conn) = self.hub.conn_mut(id) {
            conn.flags.set(Flag::FramesHeld, true);
            conn.flags.set(Flag::ReadPaused, true);
            conn.flags.set(Flag::Congested, true);
            conn.flags.set(Flag::ReadPending, true);
        }
    }
}

/// What handing a read's frames to the service did: how many frames it handled, and
/// whether it left the rest for later ([`Payloads::hold_rest`]). One word (the flag in
/// the top bit), so that the read path's result stays as small as a plain count.
#[derive(Debug, Clone, Copy)]
struct Dispatched(usize);

impl Dispatched {
    const HELD: usize = 1 << (usize::BITS - 1);
    const NONE: Dispatched = Dispatched(0);

    #[inline(always)]
    fn handled(frames: usize) -> Dispatched {
        Dispatched(frames)
    }

    #[inline(always)]
    fn held_after(frames: usize) -> Dispatched {
        Dispatched(frames | Self::HELD)
    }

    /// Frames the service handled.
    #[inline(always)]
    fn frames(self) -> usize {
        self.0 & !Self::HELD
    }

    /// The service left frames for later.
    #[inline(always)]
    fn held(self) -> bool {
        self.0 & Self::HELD != 0
    }
}

/// Says in the trace why a read did or did not drain the socket.
#[inline(always)]
pub(super) fn trace_read(id: ConnId, n: usize, requested: usize, drained: bool) {
    if drained {
        log::trace!(
            "{id}: read {n} of {requested} bytes: a short read, so the socket is drained \
             (the kernel hands over all it has), no read to WouldBlock needed"
        );
    } else {
        log::trace!("{id}: read {n} of {requested} bytes: the buffer filled, read again");
    }
}

/// The least room a read into the shared buffer offers.
pub(super) const MIN_READ: usize = 16 * 1024;

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

/// What the partial frame at the start of a buffer still needs.
enum Partial {
    /// A large frame of known length, short of this many bytes.
    Large { missing: usize },
    /// A frame of unknown length (a long line, say) already longer than a large frame.
    LongUnknown,
    /// A small frame, or nothing the codec can size.
    Small,
}

/// Classifies the partial frame held in `buf` (one `decode` of its header, on a copy
/// of the codec's state).
fn partial_frame<C: Codec>(codec: &C, state: &C::State, buf: &Buffer) -> Partial {
    match codec.decode(&mut state.clone(), buf.readable()) {
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
/// A large frame of known length reads at most its missing bytes, into room that
/// grows with what has arrived ([`growth_step`]): the buffer then ends on the frame's
/// boundary and is empty once the frame is dispatched, so its storage
/// is never compacted and goes straight back to the pool. A partial frame of unknown
/// length that is already large keeps growing in place.
fn own_buffer_read<C: Codec>(codec: &C, state: &C::State, input: &Buffer) -> Option<ReadSize> {
    match partial_frame(codec, state, input) {
        Partial::Large { missing } => {
            // Room enough for a good read already: use it. Otherwise grow, by what
            // [`growth_step`] allows (the caller grows the buffer to exactly that).
            let room = match input.spare_len() >= missing.min(MIN_READ) {
                true => input.spare_len().min(missing),
                false => missing.min(growth_step(input.len())),
            };
            Some(ReadSize {
                min: room,
                max: missing,
            })
        }
        // (At least doubling the buffer as the line grows: growing it by a read's
        // worth each time would copy the line over and over.)
        Partial::LongUnknown => Some(ReadSize {
            min: MIN_READ.max(input.len()),
            max: usize::MAX,
        }),
        Partial::Small => None,
    }
}

/// The most room a connection's own buffer gains for one read when it already holds
/// `held` bytes of a large frame: as much again as has arrived, at least
/// [`GROWTH_STEP`]. Memory follows the bytes that came, not the length the header
/// announced: a peer that announces a 1 MiB frame and sends a few bytes costs
/// [`GROWTH_STEP`], not 1 MiB. A frame whose bytes keep coming is still completed in
/// a handful of reads, each growth at most doubling the buffer.
fn growth_step(held: usize) -> usize {
    held.max(GROWTH_STEP)
}

/// See [`growth_step`]: a 64 KiB frame, this server's large-frame benchmark, still
/// completes with one read of its rest.
const GROWTH_STEP: usize = 64 * 1024;

/// When `scratch` ends inside a large frame of known length whose missing bytes fit
/// in its spare room (without moving anything), how many bytes are missing.
fn missing_in_place<C: Codec>(codec: &C, state: &C::State, scratch: &Buffer) -> Option<usize> {
    if scratch.is_empty() {
        return None;
    }
    match partial_frame(codec, state, scratch) {
        Partial::Large { missing } => (missing <= scratch.spare_len()).then_some(missing),
        Partial::LongUnknown | Partial::Small => None,
    }
}

/// What one read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadOutcome {
    /// The socket has nothing more for now (WouldBlock, or a short read).
    Drained,
    /// The read filled the buffer: there may be more.
    More,
    /// The connection stopped reading (EOF, error, protocol error, service closed it).
    Stopped,
    /// The service left complete frames for later (its output is over the write
    /// limit): they stay in the connection's input, and reading stops until the
    /// output drains.
    Held,
}

/// Stores what is left of the input (`tail`, the loop's shared buffer, which is left
/// empty) in the connection, or releases the connection's buffer when nothing is
/// left, and arms the frame deadline when a new partial frame begins. After
/// `frames_completed`, any tail is the start of a new frame, with a deadline of its own.
fn keep_tail<S: Service>(hub: &mut Hub<S>, id: ConnId, tail: &mut Buffer, frames_completed: bool) {
    let Some(conn) = connection_mut(&mut hub.conns, id) else {
        tail.clear();
        return;
    };
    if let Some(held) = conn.input.as_mut() {
        held.clear();
    }
    if !tail.is_empty() {
        conn.input
            .get_mut(&mut hub.pool)
            .extend_from_slice(tail.readable());
    }
    tail.clear();
    held_input_changed(hub, id, frames_completed);
}

/// Puts the connection's own buffer, read into directly, back into it (see
/// [`keep_tail`]).
fn keep_own_tail<S: Service>(
    hub: &mut Hub<S>,
    id: ConnId,
    own: Box<Buffer>,
    frames_completed: bool,
) {
    let Some(conn) = connection_mut(&mut hub.conns, id) else {
        hub.pool.give_back(own);
        return;
    };
    conn.input.put(own);
    held_input_changed(hub, id, frames_completed);
}

/// After the held input changed: release an emptied buffer, or time a new partial
/// frame; count the buffer for the memory budget either way.
pub(super) fn held_input_changed<S: Service>(hub: &mut Hub<S>, id: ConnId, frames_completed: bool) {
    let (now, now_millis) = (hub.now, hub.now_millis());
    let frame_timeout = hub.limits.frame_timeout;
    let Some(conn) = connection_mut(&mut hub.conns, id) else {
        return;
    };
    if frames_completed {
        conn.frame_started = NO_FRAME;
    }
    if conn.input.is_empty() {
        conn.frame_started = NO_FRAME;
        conn.input.release_if_empty(&mut hub.pool);
        hub.account(id);
        return;
    }
    if conn.frame_started == NO_FRAME {
        start_frame_clock(conn, id, &mut hub.timers, (now, now_millis), frame_timeout);
    }
    hub.account(id);
}
