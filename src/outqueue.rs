//! A connection's queued output: bytes owned by the connection, interleaved in order
//! with frames shared between many connections.
//!
//! Most output (an echo, a reply) is written at once and never queued; what the socket
//! does not take is copied once into the connection's own buffer (a [`LazyBuffer`]: one
//! pointer while nothing waits), where consecutive frames coalesce so that one `write`
//! sends them all. A broadcast to
//! a chat room of 10,000 members is encoded once into a [`SharedFrame`]; each member's
//! queue holds a reference to the same bytes, not a copy.
//!
//! To keep the two kinds in order without a list node per frame, each shared frame
//! records the position in the owned byte stream at which it was queued (`mark`). The
//! shared part lives behind an `Option<Box<_>>`, so a queue that never sees a shared
//! frame (echo, and every idle connection) costs one pointer for it, and the whole
//! empty queue two:
//!
//! ```text
//!   owned stream:  [ a a a a | b b b ]        shared: [ S1 @4, S2 @7 ]
//!   wire order:      a a a a  S1  b b b  S2
//! ```
//!
//! A flush gathers up to [`MAX_IOVECS`] slices in wire order and hands them to one
//! `writev`; [`OutQueue::advance`] then consumes what the kernel took.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;

use crate::buffer::{Buffer, BufferPool, LazyBuffer};

/// Bytes already framed, shared by every connection they are queued on. Cloning is a
/// reference-count increment.
#[derive(Debug, Clone)]
pub struct SharedFrame(Rc<[u8]>);

impl SharedFrame {
    /// Wraps bytes that are already framed for the wire.
    pub fn from_wire_bytes(bytes: &[u8]) -> Self {
        SharedFrame(Rc::from(bytes))
    }

    /// The framed bytes, as they go on the wire.
    pub fn wire_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Most slices one flush hands to `writev`.
pub const MAX_IOVECS: usize = 32;

/// One shared frame waiting in a queue.
#[derive(Debug)]
struct QueuedShared {
    frame: SharedFrame,
    /// Owned-stream position (see [`SharedQueue::owned_written`]) before which all
    /// owned bytes must be written first.
    mark: u64,
}

/// The shared frames of a queue, boxed so that the common case (no shared frames, and
/// every idle connection) pays one pointer for them.
#[derive(Debug, Default)]
struct SharedQueue {
    /// Shared frames, in order of their marks.
    frames: VecDeque<QueuedShared>,
    /// Bytes of the front frame already written.
    front_written: usize,
    /// Owned bytes written since this shared queue was created: the owned stream
    /// position of the owned buffer's first byte.
    owned_written: u64,
    /// Unwritten bytes of all shared frames.
    bytes: usize,
}

/// Output waiting for a connection's socket to accept it.
#[derive(Debug, Default)]
pub struct OutQueue {
    /// Owned bytes not yet written, in order (no buffer at all while none wait).
    owned: LazyBuffer,
    /// Shared frames interleaved with the owned bytes; `None` when there are none.
    shared: Option<Box<SharedQueue>>,
}

impl OutQueue {
    /// Bytes waiting to be written.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.owned.len() + self.shared.as_ref().map_or(0, |s| s.bytes)
    }

    /// The memory the queue holds: its owned buffer's storage and the bytes of its
    /// shared frames still to write.
    pub fn memory(&self) -> usize {
        self.owned.capacity() + self.shared.as_ref().map_or(0, |s| s.bytes)
    }

    /// True when nothing waits.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        // (Both parts own nothing whenever nothing waits.)
        !self.owned.has_storage() && self.shared.is_none()
    }

    /// The owned buffer, for a codec to append a frame to. Takes a buffer from `pool`
    /// when it holds none.
    pub fn owned_for_append(&mut self, pool: &mut BufferPool) -> &mut Buffer {
        self.owned.get_mut(pool)
    }

    /// Queues a shared frame after everything queued so far.
    pub fn push_shared(&mut self, frame: SharedFrame) {
        if frame.wire_bytes().is_empty() {
            return;
        }
        let shared = self.shared.get_or_insert_with(Box::default);
        let mark = shared.owned_written + self.owned.len() as u64;
        shared.bytes += frame.wire_bytes().len();
        shared.frames.push_back(QueuedShared { frame, mark });
    }

    /// True when only owned bytes are queued, so a plain `write` of
    /// [`OutQueue::owned_bytes`] sends them all.
    pub fn is_owned_only(&self) -> bool {
        self.shared.is_none()
    }

    /// The owned bytes (all of the queue when [`OutQueue::is_owned_only`]).
    pub fn owned_bytes(&self) -> &[u8] {
        self.owned.readable()
    }

    /// Fills `slices` with the queue's bytes in wire order; returns how many were used
    /// and how many bytes they hold.
    pub fn gather<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_IOVECS]) -> (usize, usize) {
        let owned = self.owned.readable();
        let mut used = 0;
        let mut bytes = 0;
        let mut owned_pos = 0;
        let mut push = |slice: &'a [u8], used: &mut usize| {
            slices[*used] = IoSlice::new(slice);
            *used += 1;
            bytes += slice.len();
        };
        if let Some(shared) = &self.shared {
            for (i, queued) in shared.frames.iter().enumerate() {
                let mark = (queued.mark - shared.owned_written) as usize;
                if mark > owned_pos {
                    push(&owned[owned_pos..mark], &mut used);
                    owned_pos = mark;
                    if used == MAX_IOVECS {
                        return (used, bytes);
                    }
                }
                let skip = if i == 0 { shared.front_written } else { 0 };
                push(&queued.frame.wire_bytes()[skip..], &mut used);
                if used == MAX_IOVECS {
                    return (used, bytes);
                }
            }
        }
        if owned.len() > owned_pos {
            push(&owned[owned_pos..], &mut used);
        }
        (used, bytes)
    }

    /// Drops the first `n` bytes in wire order (what a write accepted). Storage of an
    /// emptied owned buffer goes back to `pool`.
    pub fn advance(&mut self, n: usize, pool: &mut BufferPool) {
        debug_assert!(n <= self.len());
        match (&mut self.shared, self.owned.as_mut()) {
            (None, Some(owned)) => owned.consume(n),
            (None, None) => {}
            (Some(shared), owned) => advance_interleaved(owned, shared, n),
        }
        self.release_if_empty(pool);
    }

    /// Gives memory back once nothing is queued, so idle connections hold none.
    pub(crate) fn release_if_empty(&mut self, pool: &mut BufferPool) {
        self.owned.release_if_empty(pool);
        if self.shared.as_ref().is_some_and(|s| s.frames.is_empty()) {
            self.shared = None;
        }
    }
}

/// Consumes `n` bytes of owned bytes and shared frames, in wire order.
fn advance_interleaved(mut owned: Option<&mut Buffer>, shared: &mut SharedQueue, mut n: usize) {
    while n > 0 {
        let owned_before_next = match shared.frames.front() {
            Some(queued) => (queued.mark - shared.owned_written) as usize,
            None => owned.as_ref().map_or(0, |o| o.len()),
        };
        if let (true, Some(owned)) = (owned_before_next > 0, owned.as_deref_mut()) {
            let taken = n.min(owned_before_next);
            owned.consume(taken);
            shared.owned_written += taken as u64;
            n -= taken;
            continue;
        }
        let Some(front) = shared.frames.front() else {
            break;
        };
        let remaining = front.frame.wire_bytes().len() - shared.front_written;
        let taken = n.min(remaining);
        shared.front_written += taken;
        shared.bytes -= taken;
        n -= taken;
        if taken == remaining {
            shared.frames.pop_front();
            shared.front_written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(queue: &mut OutQueue, pool: &mut BufferPool, bytes: &[u8]) {
        queue.owned_for_append(pool).extend_from_slice(bytes);
    }

    fn wire(queue: &OutQueue) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let (used, bytes) = queue.gather(&mut slices);
        let out: Vec<u8> = slices[..used]
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(out.len(), bytes);
        out
    }

    #[test]
    fn owned_and_shared_keep_their_order() {
        let mut pool = BufferPool::default();
        let mut q = OutQueue::default();
        append(&mut q, &mut pool, b"aaaa");
        q.push_shared(SharedFrame::from_wire_bytes(b"S1"));
        append(&mut q, &mut pool, b"bbb");
        q.push_shared(SharedFrame::from_wire_bytes(b"S2"));
        q.push_shared(SharedFrame::from_wire_bytes(b"S3"));
        assert_eq!(wire(&q), b"aaaaS1bbbS2S3");
        assert_eq!(q.len(), 13);
    }

    #[test]
    fn advancing_in_odd_steps_consumes_in_wire_order() {
        let mut pool = BufferPool::default();
        let mut q = OutQueue::default();
        append(&mut q, &mut pool, b"aaaa");
        q.push_shared(SharedFrame::from_wire_bytes(b"S1"));
        append(&mut q, &mut pool, b"bbb");
        q.push_shared(SharedFrame::from_wire_bytes(b"S2"));
        let full = wire(&q);
        let mut written = Vec::new();
        for step in [3, 2, 1, 4, 1] {
            let now = wire(&q);
            written.extend_from_slice(&now[..step]);
            q.advance(step, &mut pool);
        }
        assert_eq!(written, full);
        assert!(q.is_empty());
        assert_eq!(wire(&q), b"");
    }

    #[test]
    fn an_emptied_queue_holds_no_memory() {
        let mut pool = BufferPool::default();
        let mut q = OutQueue::default();
        append(&mut q, &mut pool, b"hello");
        q.push_shared(SharedFrame::from_wire_bytes(b"S"));
        q.advance(6, &mut pool);
        assert!(q.is_empty());
        assert!(!q.owned.has_storage());
        assert!(q.shared.is_none());
        assert_eq!(pool.cached(), 1, "the owned storage is recycled");
    }

    #[test]
    fn gather_stops_at_the_iovec_limit_and_resumes() {
        let mut pool = BufferPool::default();
        let mut q = OutQueue::default();
        for i in 0..40u8 {
            append(&mut q, &mut pool, &[i]);
            q.push_shared(SharedFrame::from_wire_bytes(&[100 + i]));
        }
        let mut expected = Vec::new();
        for i in 0..40u8 {
            expected.extend_from_slice(&[i, 100 + i]);
        }
        let mut written = Vec::new();
        while !q.is_empty() {
            let chunk = wire(&q);
            assert!(chunk.len() <= MAX_IOVECS);
            written.extend_from_slice(&chunk);
            q.advance(chunk.len(), &mut pool);
        }
        assert_eq!(written, expected);
    }

    #[test]
    fn empty_shared_frames_are_ignored() {
        let mut q = OutQueue::default();
        q.push_shared(SharedFrame::from_wire_bytes(b""));
        assert!(q.is_empty());
    }
}
