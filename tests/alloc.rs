//! The echo path allocates nothing per frame once warmed up.
//!
//! A counting global allocator counts the allocations made on the reactor's thread
//! only (the thread marks itself from the service's first callback): the test's own
//! clients allocate freely. After a warm-up that lets buffers, pools and queues reach
//! their working sizes, thousands more frames are echoed and the count must not move
//! by more than a small constant.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use switchboard::{ConnId, Context, Frames, LengthCodec, Origin, Service};

/// Allocations (alloc, alloc_zeroed, realloc) made on the reactor threads, one counter
/// per test (tests run in parallel, each with its own server).
static ALLOCATIONS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

thread_local! {
    /// Which counter this thread's allocations go to, plus one; 0 for none. Set by a
    /// reactor's thread. `const` initialisation: reading it never allocates, so the
    /// allocator can consult it without recursing into itself.
    static COUNTER: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let counter = COUNTER.try_with(Cell::get).unwrap_or(0);
    if let Some(slot) = counter.checked_sub(1).and_then(|i| ALLOCATIONS.get(i)) {
        slot.fetch_add(1, Ordering::Relaxed);
    }
}

/// The system allocator, counting.
struct Counting;

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only extra work is `count`, which reads a const-initialised
// thread-local and bumps an atomic: it neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` was allocated by `System` (every allocation goes through here).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The echo service exactly, marking the reactor's thread as the one whose allocations go to counter
/// `.0`.
struct MarkedEcho(usize);

impl Service for MarkedEcho {
    type Conn = ();
    type Timer = ();
    type Codec = LengthCodec;

    fn on_connect(&mut self, _ctx: &mut Context<'_, Self>, _conn: ConnId, _: &mut (), _: Origin) {
        COUNTER.with(|c| c.set(self.0 + 1));
    }

    fn on_frames(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        _: &mut (),
        frames: Frames<'_, LengthCodec>,
    ) {
        // What `Echo` does.
        let _ = ctx.forward(conn, &frames);
    }
}

/// `rounds` times: every connection writes `depth` frames of `size` bytes in one write,
/// then reads all the echoes back.
fn echo_rounds(clients: &mut [TcpStream], depth: usize, size: usize, rounds: usize) {
    let payload = vec![0xA5u8; size];
    let batch: Vec<u8> = (0..depth).flat_map(|_| frame(&payload)).collect();
    for _ in 0..rounds {
        for client in clients.iter_mut() {
            client.write_all(&batch).unwrap();
        }
        for client in clients.iter_mut() {
            for _ in 0..depth {
                assert_eq!(read_frame(client).unwrap().len(), size);
            }
        }
    }
}

/// Allocations on the reactor's thread while `conns x depth x rounds` frames of `size`
/// bytes are echoed, after a warm-up of a quarter as many. Each test passes its own
/// `counter`.
fn allocations_while_echoing(
    counter: usize,
    conns: usize,
    depth: usize,
    size: usize,
    rounds: usize,
) -> u64 {
    let server = TestServer::start(local_config(), move || {
        (MarkedEcho(counter), LengthCodec::new(1 << 20))
    });
    let mut clients: Vec<TcpStream> = (0..conns).map(|_| connect(server.tcp())).collect();
    echo_rounds(&mut clients, depth, size, rounds / 4 + 1);
    let before = ALLOCATIONS[counter].load(Ordering::Relaxed);
    echo_rounds(&mut clients, depth, size, rounds);
    ALLOCATIONS[counter].load(Ordering::Relaxed) - before
}

/// "A small constant": independent of the number of frames echoed.
const ALLOWED: u64 = 16;

#[test]
fn pipelined_small_frames_allocate_nothing_per_frame() {
    // 10 connections x 16 in flight x 125 rounds = 20,000 frames of 64 bytes.
    let allocations = allocations_while_echoing(0, 10, 16, 64, 125);
    assert!(
        allocations <= ALLOWED,
        "{allocations} allocations for 20,000 echoed frames"
    );
}

#[test]
fn one_frame_at_a_time_allocates_nothing_per_frame() {
    // 1 connection, one frame in flight: 5,000 round trips.
    let allocations = allocations_while_echoing(1, 1, 1, 64, 5_000);
    assert!(
        allocations <= ALLOWED,
        "{allocations} allocations for 5,000 echoed frames"
    );
}

#[test]
fn large_frames_allocate_nothing_per_frame() {
    // 64 KiB frames take the reactor's large-frame read path: 4 x 4 x 50 = 800 frames.
    let allocations = allocations_while_echoing(2, 4, 4, 64 * 1024, 50);
    assert!(
        allocations <= ALLOWED,
        "{allocations} allocations for 800 echoed 64 KiB frames"
    );
}
