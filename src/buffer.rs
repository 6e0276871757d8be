//! A byte buffer with a consumed prefix, a readable middle and spare room at the end,
//! plus a small pool that recycles the storage of drained buffers.
//!
//! ```text
//!   +-------------------+--------------------+-----------------+
//!   |  consumed (dead)  |  readable bytes    |  spare (zeroed) |
//!   +-------------------+--------------------+-----------------+
//!   0                 start                 end          data.len()
//! ```
//!
//! Reads land in the spare region (`spare_mut` then `commit`), the decoder looks at the
//! readable region and `consume`s whole frames from its front. The dead prefix is
//! reclaimed by moving the readable bytes to the front (`compact`) only when the spare
//! region is too small, so a steady stream of small frames costs no copies at all.
//!
//! The spare region is always initialised memory (it was zeroed once when the buffer
//! grew), so reading from a socket into it needs no `unsafe`.
//!
//! Idle connections must cost little memory, so a connection holds its buffers as
//! [`LazyBuffer`]s: one pointer while empty, a whole buffer from the [`BufferPool`] while
//! bytes wait, given back as soon as it is empty again. In the steady state no
//! allocation happens at all.

/// A growable byte buffer with read and write positions. See the module docs for its
/// regions.
///
/// ```
/// use switchboard::Buffer;
/// let mut buf = Buffer::new();
/// buf.extend_from_slice(b"hello world");
/// buf.consume(6);
/// assert_eq!(buf.readable(), b"world");
/// ```
#[derive(Debug, Default)]
pub struct Buffer {
    /// Storage; `data.len()` is the initialised size, which is also the capacity in use.
    data: Vec<u8>,
    /// Index of the first readable byte.
    start: usize,
    /// Index one past the last readable byte; `data[end..]` is spare room.
    end: usize,
}

impl Buffer {
    /// An empty buffer that owns no heap memory.
    pub const fn new() -> Self {
        Buffer {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// An empty buffer with room for `capacity` bytes, zeroed by the allocator: a
    /// large one gets fresh pages from the system, which cost memory only once they are
    /// written, so the loop's half-megabyte read buffer costs what reads actually fill.
    pub fn with_zeroed_capacity(capacity: usize) -> Self {
        Buffer {
            data: vec![0; capacity],
            start: 0,
            end: 0,
        }
    }

    /// An empty buffer that reuses `storage` (its contents are ignored).
    pub fn from_storage(mut storage: Vec<u8>) -> Self {
        // Keep the storage fully initialised so the spare region can be handed to read().
        let capacity = storage.capacity();
        storage.resize(capacity, 0);
        Buffer {
            data: storage,
            start: 0,
            end: 0,
        }
    }

    /// Gives the storage away (for a pool) and leaves this buffer empty, owning nothing.
    pub fn take_storage(&mut self) -> Vec<u8> {
        self.start = 0;
        self.end = 0;
        std::mem::take(&mut self.data)
    }

    /// The bytes written and not yet consumed.
    #[inline(always)]
    pub fn readable(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// How many readable bytes there are.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True when nothing is readable.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The readable region, to change in place (a protocol unmasking a payload).
    #[inline(always)]
    pub fn readable_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    /// Bytes of heap storage held (readable, consumed and spare).
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Marks the first `n` readable bytes as consumed.
    ///
    /// # Panics
    /// If `n` is more than [`Buffer::len`]: that is a bug in the caller, never input.
    #[inline(always)]
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consume({n}) past the readable region");
        self.start += n;
        if self.start == self.end {
            // Nothing left: rewind so the whole storage is spare again, for free.
            self.start = 0;
            self.end = 0;
        }
    }

    /// Keeps the first `len` readable bytes and drops the rest (nothing when there are
    /// no more than `len`): undoes an append that turned out unwanted.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.end = self.start + len;
        }
    }

    /// Drops every readable byte, keeping the storage.
    #[inline(always)]
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Spare room of at least `min` bytes after the readable region, to be filled and
    /// then announced with [`Buffer::commit`]. Compacts or grows the storage if needed.
    #[inline(always)]
    pub fn spare_mut(&mut self, min: usize) -> &mut [u8] {
        if self.data.len() - self.end < min {
            self.make_room(min);
        }
        &mut self.data[self.end..]
    }

    /// Makes at least `min` bytes of spare room, growing the storage to exactly that
    /// much if compacting is not enough (where [`Buffer::spare_mut`] at least doubles
    /// it): for a buffer whose growth must follow what arrives, not run ahead of it.
    pub fn reserve_exact(&mut self, min: usize) {
        if self.data.len() - self.end >= min {
            return;
        }
        self.compact();
        let needed = self.end + min;
        if self.data.len() < needed {
            self.data.reserve_exact(needed - self.data.len());
            self.data.resize(needed, 0);
        }
    }

    /// Bytes of spare room after the readable region, as it is (without compacting or
    /// growing).
    #[inline]
    pub fn spare_len(&self) -> usize {
        self.data.len() - self.end
    }

    /// Declares that `n` bytes of the spare region now hold data.
    ///
    /// # Panics
    /// If `n` is larger than the spare region: a bug in the caller.
    #[inline(always)]
    pub fn commit(&mut self, n: usize) {
        assert!(
            self.end + n <= self.data.len(),
            "commit({n}) past the spare region"
        );
        self.end += n;
    }

    /// Appends `bytes` to the readable region.
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let spare = self.spare_mut(bytes.len());
        spare[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }

    /// Moves the readable bytes to the front of the storage, reclaiming the dead prefix.
    pub fn compact(&mut self) {
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Ensures `min` spare bytes: first by compacting, then by growing (at least doubling,
    /// so appends cost amortised O(1)).
    fn make_room(&mut self, min: usize) {
        self.compact();
        let needed = self.end + min;
        if self.data.len() < needed {
            let grown = needed.max(self.data.len() * 2).max(64);
            self.data.resize(grown, 0);
        }
    }
}

/// A buffer that costs one pointer while it holds nothing: what each connection keeps
/// for its partial input and its queued output, which an idle connection never uses.
/// It takes a whole buffer from the [`BufferPool`] when bytes come, and gives it back
/// once it is empty again, so 10,000 idle connections cost 16 bytes each for both.
///
/// ```
/// use switchboard::{BufferPool, LazyBuffer};
/// let mut pool = BufferPool::default();
/// let mut held = LazyBuffer::default();
/// assert!(!held.has_storage());
/// held.get_mut(&mut pool).extend_from_slice(b"abc");
/// assert_eq!(held.readable(), b"abc");
/// held.get_mut(&mut pool).consume(3);
/// held.release_if_empty(&mut pool);
/// assert!(!held.has_storage());
/// assert_eq!(pool.cached(), 1);
/// ```
#[derive(Debug, Default)]
pub struct LazyBuffer(Option<Box<Buffer>>);

impl LazyBuffer {
    /// True when it holds no buffer at all (the idle case).
    #[inline(always)]
    pub fn has_storage(&self) -> bool {
        self.0.is_some()
    }

    /// Bytes held.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |b| b.len())
    }

    /// True when no bytes are held.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage held, in bytes (0 while it holds no buffer).
    #[inline(always)]
    pub fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |b| b.capacity())
    }

    /// The bytes held.
    #[inline(always)]
    pub fn readable(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], Buffer::readable)
    }

    /// The buffer, if it holds one.
    #[inline(always)]
    pub fn get(&self) -> Option<&Buffer> {
        self.0.as_deref()
    }

    /// The buffer, taken from `pool` if it holds none yet.
    #[inline]
    pub fn get_mut(&mut self, pool: &mut BufferPool) -> &mut Buffer {
        self.0.get_or_insert_with(|| pool.take())
    }

    /// The buffer, if it holds one.
    #[inline(always)]
    pub fn as_mut(&mut self) -> Option<&mut Buffer> {
        self.0.as_deref_mut()
    }

    /// Takes the buffer out (to read into it directly), leaving nothing.
    pub fn take(&mut self) -> Option<Box<Buffer>> {
        self.0.take()
    }

    /// Puts a buffer (back) in.
    pub fn put(&mut self, buffer: Box<Buffer>) {
        self.0 = Some(buffer);
    }

    /// Gives the buffer back to `pool` when it holds no bytes.
    #[inline]
    pub fn release_if_empty(&mut self, pool: &mut BufferPool) {
        if self.0.as_ref().is_some_and(|b| b.is_empty()) {
            if let Some(buffer) = self.0.take() {
                pool.give_back(buffer);
            }
        }
    }
}

/// Recycles buffers (their storage, and the box that holds them) so connections can
/// hold no memory while idle and still avoid an allocation each time they become busy.
#[derive(Debug)]
pub struct BufferPool {
    /// Buffers ready for reuse, empty, with their storage. Boxed on purpose: a
    /// [`LazyBuffer`] holds a box, and recycling the box too saves an allocation.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Buffer>>,
    /// How many storages the pool keeps at most.
    max_entries: usize,
    /// Storage larger than this is freed rather than kept, so one burst of huge frames
    /// does not pin memory for ever.
    max_entry_capacity: usize,
    /// Capacity of storage the pool hands out when it has none to recycle.
    fresh_capacity: usize,
}

impl BufferPool {
    /// A pool keeping up to `max_entries` storages of at most `max_entry_capacity` bytes.
    pub fn new(max_entries: usize, max_entry_capacity: usize, fresh_capacity: usize) -> Self {
        BufferPool {
            free: Vec::new(),
            max_entries,
            max_entry_capacity,
            fresh_capacity,
        }
    }

    /// An empty buffer, recycled when the pool has one.
    pub fn take(&mut self) -> Box<Buffer> {
        match self.free.pop() {
            Some(buffer) => buffer,
            None => Box::new(Buffer::from_storage(Vec::with_capacity(
                self.fresh_capacity,
            ))),
        }
    }

    /// Takes back a buffer for reuse (emptied first), unless its storage is oversized
    /// or the pool is full: then it is freed.
    pub fn give_back(&mut self, mut buffer: Box<Buffer>) {
        buffer.clear();
        if buffer.capacity() > 0
            && buffer.capacity() <= self.max_entry_capacity
            && self.free.len() < self.max_entries
        {
            self.free.push(buffer);
        }
    }

    /// How many storages are waiting for reuse.
    pub fn cached(&self) -> usize {
        self.free.len()
    }
}

impl Default for BufferPool {
    fn default() -> Self {
        BufferPool::new(256, 256 * 1024, 4096)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_exact_grows_to_exactly_the_room_asked_for() {
        let mut buf = Buffer::new();
        buf.extend_from_slice(&[7; 300]);
        buf.consume(100);
        buf.reserve_exact(1000);
        assert_eq!(buf.readable(), &[7; 200][..], "kept, moved to the front");
        assert_eq!(buf.spare_len(), 1000);
        assert_eq!(buf.capacity(), 1200, "no doubling");
        buf.reserve_exact(10);
        assert_eq!(buf.capacity(), 1200, "enough room already: unchanged");
    }

    #[test]
    fn a_zeroed_buffer_offers_its_whole_capacity_for_reads() {
        let mut buf = Buffer::with_zeroed_capacity(300 * 1024);
        assert!(buf.is_empty());
        let spare = buf.spare_mut(1);
        assert_eq!(spare.len(), 300 * 1024);
        assert!(spare.iter().all(|&b| b == 0));
        spare[..3].copy_from_slice(b"abc");
        buf.commit(3);
        assert_eq!(buf.readable(), b"abc");
    }

    #[test]
    fn new_buffer_owns_nothing() {
        let buf = Buffer::new();
        assert_eq!(buf.capacity(), 0);
        assert!(buf.is_empty());
    }

    #[test]
    fn append_then_consume_in_parts() {
        let mut buf = Buffer::new();
        buf.extend_from_slice(b"abcdef");
        assert_eq!(buf.readable(), b"abcdef");
        buf.consume(2);
        assert_eq!(buf.readable(), b"cdef");
        buf.extend_from_slice(b"gh");
        assert_eq!(buf.readable(), b"cdefgh");
        buf.consume(6);
        assert!(buf.is_empty());
    }

    #[test]
    fn consuming_everything_rewinds_to_the_front() {
        let mut buf = Buffer::new();
        buf.extend_from_slice(&[1; 100]);
        let cap = buf.capacity();
        buf.consume(100);
        // The whole storage is spare again without any copy or allocation.
        assert!(buf.spare_mut(cap).len() >= cap);
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn spare_then_commit() {
        let mut buf = Buffer::new();
        let spare = buf.spare_mut(4);
        spare[..3].copy_from_slice(b"xyz");
        buf.commit(3);
        assert_eq!(buf.readable(), b"xyz");
    }

    #[test]
    fn grows_at_least_doubling() {
        let mut buf = Buffer::new();
        buf.extend_from_slice(&[7; 64]);
        let before = buf.capacity();
        buf.extend_from_slice(&[8; 1]);
        assert!(buf.capacity() >= 2 * before);
        assert_eq!(buf.len(), 65);
        assert_eq!(buf.readable()[64], 8);
    }

    #[test]
    fn compacts_instead_of_growing_when_the_prefix_is_dead() {
        let mut buf = Buffer::new();
        buf.extend_from_slice(&[1; 64]);
        let cap = buf.capacity();
        buf.consume(60);
        buf.extend_from_slice(&[2; 50]);
        assert_eq!(buf.capacity(), cap, "reclaimed the consumed prefix instead");
        assert_eq!(&buf.readable()[..4], &[1; 4]);
        assert_eq!(&buf.readable()[4..], &[2; 50][..]);
    }

    #[test]
    #[should_panic(expected = "past the readable region")]
    fn consume_past_end_is_a_bug() {
        let mut buf = Buffer::new();
        buf.extend_from_slice(b"ab");
        buf.consume(3);
    }

    #[test]
    fn pool_recycles_buffers_and_a_lazy_buffer_owns_nothing_once_empty() {
        let mut pool = BufferPool::new(2, 1024, 128);
        let mut held = LazyBuffer::default();
        held.get_mut(&mut pool).extend_from_slice(b"hello");
        held.release_if_empty(&mut pool);
        assert!(held.has_storage(), "not empty: kept");
        held.get_mut(&mut pool).consume(5);
        held.release_if_empty(&mut pool);
        assert!(!held.has_storage(), "an idle buffer owns nothing");
        assert_eq!(pool.cached(), 1);
        let again = pool.take();
        assert!(again.capacity() >= 128);
        assert!(again.is_empty());
        assert_eq!(pool.cached(), 0);
    }

    #[test]
    fn pool_drops_oversized_storage() {
        let mut pool = BufferPool::new(2, 1024, 128);
        let mut buf = Box::new(Buffer::new());
        buf.extend_from_slice(&[0; 4096]);
        pool.give_back(buf);
        assert_eq!(pool.cached(), 0);
    }
}
