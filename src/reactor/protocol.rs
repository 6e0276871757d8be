//! The read path of a protocol connection (see `crate::protocol`): a readable event
//! to units processed in place and handed to the service.
//!
//! Simpler than the framing path (`read.rs`) on purpose: every read lands in the
//! connection's own input buffer, behind the partial unit it holds, and the protocol
//! processes the units there, each once. What is left, a partial unit, stays in that
//! buffer: counted in the memory budget and watched by the frame deadline like a
//! partial frame. The protocol's own replies go to the output queue first, then the
//! service gets the units; everything it sends the connection meanwhile is written
//! together when the event's work is done.

use std::io;

use super::lifecycle::peer_closed;
use super::read::{
    after_tls_read, give_back, held_input_changed, slot_mut, trace_read, ReadOutcome, TakenStates,
    MIN_READ,
};
use super::Reactor;
use crate::buffer::Buffer;
use crate::connection::ConnId;
use crate::context::Context;
use crate::endpoint::Endpoints;
use crate::frame::{Codec, Decode, FrameError};
use crate::hub::{Hub, ProtocolScratch};
use crate::protocol::{ProtocolIo, UnitRecord, Units};
use crate::service::{Frames, Service};
use crate::stats::CloseReason;

impl<S: Service> Reactor<S> {
    /// One `read` into the connection's own buffer, then its units (the read path's
    /// `read_once` hands a protocol connection here, within its read budget).
    pub(super) fn read_protocol_once(&mut self, id: ConnId, read_to_eof: bool) -> ReadOutcome {
        let now = self.hub.now_millis();
        if let Some(outcome) = self.before_reading(id) {
            return outcome;
        }
        let Some(slot) = slot_mut(&mut self.hub.conns, id) else {
            return ReadOutcome::Stopped;
        };
        let conn = &mut slot.conn;
        let mut input = conn.input.take().unwrap_or_else(|| self.hub.pool.take());
        let spare = input.spare_mut(MIN_READ);
        let requested = spare.len().min(self.config.read_buffer_size);
        let tls = self.hub.tls.get_mut(id);
        let tls_layered = tls.is_some();
        let result = crate::tls::read(&mut conn.stream, tls, &mut spare[..requested]);
        if tls_layered {
            after_tls_read((&mut self.hub, &self.endpoints, &mut self.service), id);
        }
        let Some(slot) = slot_mut(&mut self.hub.conns, id) else {
            self.hub.pool.give_back(input);
            return ReadOutcome::Stopped;
        };
        let conn = &mut slot.conn;
        let n = match result {
            Ok(n) if n > 0 => n,
            other => {
                conn.input.put(input);
                conn.input.release_if_empty(&mut self.hub.pool);
                return self.read_protocol_failed(id, other);
            }
        };
        input.commit(n);
        if conn.mark_active(now) {
            self.hub.idle.touch(&mut self.hub.conns, id.index());
        }
        self.hub.stats.bytes_in += n as u64;
        let drained = n < requested && !read_to_eof;
        trace_read(id, n, requested, drained);
        let Some(slot) = slot_mut(&mut self.hub.conns, id) else {
            self.hub.pool.give_back(input);
            return ReadOutcome::Stopped;
        };
        let codec = self.endpoints.codec(slot.conn.endpoint);
        let room = self
            .config
            .write_limit
            .saturating_sub(slot.conn.output.len());
        let mut taken = TakenStates::take_from(slot);
        let scratch = &mut self.hub.protocol;
        let done = process_units(codec, &mut taken.decode, &mut input, scratch, room);
        hand_over(
            (&mut self.hub, &self.endpoints, &mut self.service),
            (id, codec, &mut taken),
            &input.readable()[..done.processed],
        );
        input.consume(done.processed);
        keep_input(&mut self.hub, id, input, done.processed > 0);
        give_back(&mut self.hub, id, taken);
        match done.end {
            End::Error(error) => {
                let answered = !self.hub.protocol.replies.is_empty();
                self.hub.protocol_error(id, &error, codec, answered);
                ReadOutcome::Stopped
            }
            End::Close => {
                self.hub.close_after_flush(id, CloseReason::Service);
                ReadOutcome::Stopped
            }
            End::Incomplete if drained => ReadOutcome::Drained,
            End::Incomplete => ReadOutcome::More,
        }
    }

    /// A read that brought no bytes: EOF, `WouldBlock`, an error.
    #[cold]
    fn read_protocol_failed(&mut self, id: ConnId, result: io::Result<usize>) -> ReadOutcome {
        match result {
            Ok(_) => {
                log::trace!("{id}: read EOF: the peer closed its side");
                let Some(slot) = slot_mut(&mut self.hub.conns, id) else {
                    return ReadOutcome::Stopped;
                };
                let mut taken = TakenStates::take_from(slot);
                peer_closed(
                    &mut self.hub,
                    &self.endpoints,
                    &mut self.service,
                    id,
                    &mut taken.service,
                );
                give_back(&mut self.hub, id, taken);
                ReadOutcome::Stopped
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadOutcome::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => ReadOutcome::More,
            Err(e) => {
                self.hub.read_failed(id, &e);
                ReadOutcome::Stopped
            }
        }
    }
}

/// Queues the protocol's replies, then hands the units (`wire`: the bytes they were
/// processed from) to the service.
fn hand_over<S: Service>(
    (hub, endpoints, service): (&mut Hub<S>, &Endpoints<S::Codec>, &mut S),
    (id, codec, taken): (ConnId, &S::Codec, &mut TakenStates<S>),
    wire: &[u8],
) {
    let scratch = &mut hub.protocol;
    let replies = std::mem::take(&mut scratch.replies);
    let (units, parts) = (
        std::mem::take(&mut scratch.units),
        std::mem::take(&mut scratch.parts),
    );
    if !replies.is_empty() {
        hub.gather(id, replies.readable(), 0);
    }
    if !units.is_empty() {
        hub.stats.frames_in += units.len() as u64;
        let recorded = Units {
            records: &units,
            parts: &parts,
        };
        let frames = Frames::from_units(wire, &recorded, codec);
        let ctx = &mut Context::new(hub, endpoints).lending(id);
        service.on_frames(ctx, id, &mut taken.service, frames);
    }
    // The scratch goes back for the next read (the replies still there to say, after
    // an error, whether last words were written).
    let scratch = &mut hub.protocol;
    scratch.replies = replies;
    scratch.units = units;
    scratch.parts = parts;
}

/// What processing one read's bytes came to.
#[derive(Debug)]
struct Processed {
    /// Bytes of whole units, from the start.
    processed: usize,
    /// Why processing stopped.
    end: End,
}

#[derive(Debug)]
enum End {
    /// At a partial unit (or the end of the bytes).
    Incomplete,
    /// The protocol asked to close once its replies are written.
    Close,
    /// The peer broke the protocol.
    Error(FrameError),
}

/// Processes every complete unit at the start of `input`, in place, recording what
/// the service is to be handed in `scratch`; the replies may take `room` bytes.
fn process_units<C: Codec>(
    codec: &C,
    state: &mut C::State,
    input: &mut Buffer,
    scratch: &mut ProtocolScratch,
    room: usize,
) -> Processed {
    scratch.units.clear();
    scratch.parts.clear();
    scratch.replies.clear();
    let bytes = input.readable_mut();
    let mut pos = 0;
    let end = loop {
        if pos == bytes.len() {
            break End::Incomplete;
        }
        let rest = &mut bytes[pos..];
        let available = rest.len();
        let mut io = ProtocolIo::new(&mut scratch.replies, &mut scratch.parts).with_room(room);
        match codec.process(state, rest, &mut io) {
            Ok(Decode::Frame { payload, consumed })
                if consumed > 0
                    && consumed <= available
                    && payload.start <= payload.end
                    && payload.end <= consumed
                    && io.parts_within(consumed) =>
            {
                let closing = io.closing();
                if let Some((kind, parts)) = io.finish(pos) {
                    scratch.units.push(UnitRecord {
                        payload: pos + payload.start..pos + payload.end,
                        kind,
                        parts,
                    });
                }
                pos += consumed;
                if closing {
                    break End::Close;
                }
            }
            Ok(Decode::Frame { .. }) => {
                io.abandon();
                break End::Error(FrameError::Malformed(
                    "a protocol unit outside the bytes it was given",
                ));
            }
            Ok(Decode::Incomplete { .. }) => {
                let closing = io.closing();
                io.abandon();
                break if closing { End::Close } else { End::Incomplete };
            }
            Err(error) => {
                io.abandon();
                break End::Error(error);
            }
        }
    };
    Processed {
        processed: pos,
        end,
    }
}

/// Puts the input buffer back in the connection (or gives it back when the connection
/// is gone), and counts it: an emptied one is released, a partial unit is timed.
fn keep_input<S: Service>(hub: &mut Hub<S>, id: ConnId, input: Box<Buffer>, completed: bool) {
    match hub.conn_mut(id) {
        Some(conn) => conn.input.put(input),
        None => return hub.pool.give_back(input),
    }
    held_input_changed(hub, id, completed);
}
