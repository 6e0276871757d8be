//! One stream connection (TCP or Unix), accepted or dialled: its identity
//! ([`ConnId`]), its socket, its buffers, the state it is in ([`ConnState`]), and the
//! slab entry that keeps it together with its codec state and the service's state.
//!
//! This file holds the data; `reactor/lifecycle.rs` holds every transition between
//! states, and draws them.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::buffer::LazyBuffer;
use crate::frame::Codec;
use crate::idle::{Linked, Links};
use crate::outqueue::OutQueue;
use crate::service::Service;
use crate::stats::CloseReason;

#[cfg(not(target_pointer_width = "64"))]
compile_error!("switchboard packs a slab key and a generation into a 64-bit mio Token");

/// Identifies one connection for its whole life, and never another one.
///
/// It is the connection's slab key plus a generation number. Slab keys are reused as
/// soon as a connection closes; the generation is not (it advances with every new
/// connection), so an event or a [`crate::Context::send`] aimed at a connection that has
/// closed finds nothing instead of reaching a newcomer that got the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    key: u32,
    generation: u32,
}

impl ConnId {
    pub(crate) fn new(key: usize, generation: u32) -> Self {
        debug_assert!(
            generation != 0,
            "generation 0 is reserved for non-connection tokens"
        );
        ConnId {
            key: key as u32,
            generation,
        }
    }

    /// The slab slot, dense from 0: a service can index its own per-connection table
    /// with it (and check the generation with [`ConnId::generation`]).
    pub fn index(&self) -> usize {
        self.key as usize
    }

    /// The generation: differs between two connections that used the same slot.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The mio token: generation in the high 32 bits, key in the low 32. Generations
    /// start at 1, so every connection token is at least 2^32 and never collides with
    /// the small reserved tokens of listeners, UDP sockets and the waker.
    pub(crate) fn token(&self) -> Token {
        Token(((self.generation as usize) << 32) | self.key as usize)
    }

    /// The connection a token names, if it names one.
    pub(crate) fn from_token(token: Token) -> Option<ConnId> {
        let generation = (token.0 >> 32) as u32;
        (generation != 0).then_some(ConnId {
            key: token.0 as u32,
            generation,
        })
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn {}.{}", self.key, self.generation)
    }
}

/// Where a connection comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A Unix-domain peer (usually unnamed).
    Unix,
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => write!(f, "{addr}"),
            PeerAddr::Unix => f.write_str("unix peer"),
        }
    }
}

/// A connected stream socket of either family.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    #[inline]
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    #[inline]
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    pub(crate) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    pub(crate) fn shutdown_write(&self) {
        // Best effort: the socket is being closed anyway; a failure only means the
        // peer is already gone.
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }

    /// Makes the coming close a reset: with `SO_LINGER` at zero, `close` sends a RST and
    /// the kernel drops at once whatever it still holds to send, instead of trickling
    /// it out to a peer that is being cut off. (A Unix-domain socket's buffers go
    /// with its close anyway.)
    pub(crate) fn reset_on_close(&self) {
        if let Stream::Tcp(s) = self {
            if let Err(e) = socket2::SockRef::from(s).set_linger(Some(std::time::Duration::ZERO)) {
                log::debug!("SO_LINGER 0: {e}");
            }
        }
    }

    /// The pending socket error, if any (how a failed non-blocking connect reports).
    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// Whether a non-blocking connect has completed: `Ok(true)` once connected,
    /// `Ok(false)` while still in flight.
    pub(crate) fn is_connected(&self) -> io::Result<bool> {
        let result = match self {
            Stream::Tcp(s) => s.peer_addr().map(|_| ()),
            Stream::Unix(s) => s.peer_addr().map(|_| ()),
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn peer_addr(&self) -> Option<PeerAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok().map(PeerAddr::Tcp),
            Stream::Unix(_) => Some(PeerAddr::Unix),
        }
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(registry, token, interests),
            Stream::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(registry, token, interests),
            Stream::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
        }
    }
}

/// Where a connection is in its life. Every change of state happens in
/// `reactor/lifecycle.rs`; its module docs draw the whole diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// Reading and writing.
    Open,
    /// The peer sent its FIN: nothing more will arrive, but the service may still
    /// write (a half-closed connection), until it closes or shuts its own side.
    PeerClosed,
    /// A dialled connection whose `connect` is in flight. Output may be queued; it is
    /// written once the connection is up.
    Connecting,
    /// The service shut our side: the queued output is written, then a FIN is sent
    /// (`fin_sent`); reading goes on until the peer closes too.
    WriteShut {
        /// The FIN has gone out.
        fin_sent: bool,
    },
    /// No more reading; closes with this reason once the output queue is empty.
    Draining(CloseReason),
    /// Everything owed was written and a FIN sent; input is read and discarded until
    /// the peer closes, or until a quiet window passes with no input (extended while
    /// input keeps coming, up to a limit); then the socket closes with this reason.
    /// Closing with unread input would make the kernel answer with a RST, which may
    /// destroy output the peer has not read yet.
    Lingering(CloseReason),
    /// A connection of the admin endpoint (`Config::admin`) waiting for its request:
    /// the reactor answers it itself (`reactor/admin.rs`), then it closes as any
    /// connection does. The service never hears of it, and it counts in none of the
    /// service's connection counters.
    AdminRequest,
}

impl ConnState {
    /// Whether the service may queue output: open, half-closed by the peer, or still
    /// connecting.
    #[inline(always)]
    pub(crate) fn may_send(&self) -> bool {
        matches!(
            self,
            ConnState::Open | ConnState::PeerClosed | ConnState::Connecting
        )
    }

    /// Whether output may be written to the socket now (it is connected and our side
    /// is not shut).
    #[inline(always)]
    pub(crate) fn may_write_now(&self) -> bool {
        matches!(self, ConnState::Open | ConnState::PeerClosed)
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnState::Open => f.write_str("open"),
            ConnState::PeerClosed => f.write_str("half-closed by the peer"),
            ConnState::Connecting => f.write_str("connecting"),
            ConnState::AdminRequest => f.write_str("waiting for an admin request"),
            ConnState::WriteShut { fin_sent: false } => f.write_str("shutting our side"),
            ConnState::WriteShut { fin_sent: true } => f.write_str("our side shut"),
            ConnState::Draining(reason) => write!(f, "draining ({reason})"),
            ConnState::Lingering(reason) => write!(f, "lingering ({reason})"),
        }
    }
}

/// A time as milliseconds since the reactor started, plus one (so 0 can mean "none"):
/// 8 bytes per timestamp instead of an `Instant`'s 16, which matters per connection.
pub(crate) type Millis = u64;

/// [`Connection::frame_started`] when no frame is partially received.
pub(crate) const NO_FRAME: Millis = 0;

/// Which idle timeout applies to a connection, in 4 bytes: the reactor's (the shared
/// idle list), its own (a service set one with [`crate::Context::set_idle_timeout`],
/// checked by a timer of the connection's own), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdleRule(u32);

impl IdleRule {
    /// The reactor's idle timeout.
    pub(crate) const REACTOR: IdleRule = IdleRule(0);
    /// Never idle.
    pub(crate) const NEVER: IdleRule = IdleRule(u32::MAX);

    /// A timeout of its own, in milliseconds (at least 1, at most `u32::MAX - 1`).
    pub(crate) fn own(millis: u128) -> IdleRule {
        IdleRule(millis.clamp(1, u128::from(u32::MAX - 1)) as u32)
    }

    /// The connection's own timeout in milliseconds, if it has one.
    pub(crate) fn own_millis(self) -> Option<u32> {
        (self != IdleRule::REACTOR && self != IdleRule::NEVER).then_some(self.0)
    }
}

/// A connection's buffer memory as the memory budget counts it, in two bytes (every
/// idle connection carries one): KiB, rounded up, below 32 MiB; whole MiB, rounded up,
/// from there to 32 GiB; saturated above. One connection may hold far more than the
/// write limit (a service that queues without looking, a link to a server that stopped
/// reading), and the budget must see all of it to act on it; rounding a large holding
/// up to the MiB errs on the safe side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Accounted(u16);

impl Accounted {
    /// Nothing held.
    pub(crate) const ZERO: Accounted = Accounted(0);
    /// Set when the count is in MiB.
    const IN_MIB: u16 = 1 << 15;

    /// `bytes`, rounded up to the unit its size takes.
    pub(crate) fn of_bytes(bytes: usize) -> Accounted {
        let kib = bytes.div_ceil(1 << 10);
        match u16::try_from(kib) {
            Ok(kib) if kib < Self::IN_MIB => Accounted(kib),
            _ => {
                let mib = bytes.div_ceil(1 << 20).min(usize::from(Self::IN_MIB - 1));
                Accounted(Self::IN_MIB | mib as u16)
            }
        }
    }

    /// The count in KiB.
    pub(crate) fn kib(self) -> u64 {
        match self.0 & Self::IN_MIB {
            0 => u64::from(self.0),
            _ => u64::from(self.0 & !Self::IN_MIB) << 10,
        }
    }
}

/// One connection's socket, buffers and bookkeeping, stored in the reactor's slab.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The socket.
    pub stream: Stream,
    /// This connection's generation (see [`ConnId`]).
    pub generation: u32,
    /// The endpoint it was accepted on or dialled through: which codec frames it.
    pub endpoint: u16,
    /// Where it is in its life.
    pub state: ConnState,
    /// The tail of the input that did not make a whole frame yet. Empty, and owning no
    /// memory (one pointer), whenever the input ended on a frame boundary.
    pub input: LazyBuffer,
    /// Output the socket has not taken yet.
    pub output: OutQueue,
    /// When the peer last sent bytes (for the idle timeout: idle means the peer is
    /// quiet).
    pub last_active: Millis,
    /// When queued output last made progress, or began to wait for the socket (for
    /// the send timeout): the low 32 bits of the time in milliseconds, compared by
    /// wrapping difference (4 bytes instead of 8; a send timeout is far below 49 days).
    pub write_progress: u32,
    /// The buffer memory this connection holds, as last counted in the reactor's
    /// total for the memory budget (see [`Accounted`]).
    pub accounted: Accounted,
    /// When the frame now in `input` started arriving (for the frame deadline), or
    /// [`NO_FRAME`] when `input` holds no partial frame.
    pub frame_started: Millis,
    /// Place in the hub's list of connections ordered by last activity.
    pub idle: Links,
    /// Which idle timeout applies.
    pub idle_rule: IdleRule,
    /// Advanced whenever `idle_rule` changes, so a timer armed for an earlier rule
    /// knows it is stale.
    pub idle_epoch: u8,
    /// The yes-or-no facts about it, one bit each (see [`Flag`]).
    pub flags: Flags,
    /// While lingering: how many quiet windows have been extended by arriving input.
    pub linger_rounds: u8,
}

/// One yes-or-no fact about a connection: a bit of its [`Flags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum Flag {
    /// Dialled by the service (rather than accepted).
    Dialled = 1 << 0,
    /// Reading stopped because `output` passed the write limit (backpressure).
    ReadPaused = 1 << 1,
    /// Reading stopped because the service asked ([`crate::Context::pause_reading`]).
    PausedByService = 1 << 2,
    /// Output over the write limit does not pause reading this connection: the service
    /// paces what feeds it ([`crate::Context::keep_reading_when_congested`]).
    ReadsIgnoreCongestion = 1 << 3,
    /// A readable event came while paused, so there may be input to read on resuming.
    ReadPending = 1 << 4,
    /// An event reported the peer's FIN. Reads resumed later (after a pause, or when
    /// the read budget ran out) read on to EOF though no new event will say so: the
    /// FIN's edge has come and gone.
    FinReported = 1 << 5,
    /// `output` passed the write limit: the service hears `on_drained` once it is
    /// back under the low-water mark.
    Congested = 1 << 6,
    /// WRITABLE interest is registered (while output waits for room, or a connect is
    /// in flight).
    WritableArmed = 1 << 7,
    /// Listed in the reactor's ready-again list (work left over from a previous turn).
    QueuedAgain = 1 << 8,
    /// Listed in the hub's list of connections with output to flush this turn.
    QueuedFlush = 1 << 9,
    /// A frame-deadline timer entry exists for this connection.
    FrameTimerArmed = 1 << 10,
    /// While lingering: input arrived during the current quiet window.
    PeerStillSending = 1 << 11,
    /// The service shut our side while the connect was in flight: sending is refused,
    /// and the FIN follows the connect and whatever was queued before it.
    ShutOnceConnected = 1 << 12,
    /// A send-deadline timer entry exists for this connection.
    SendTimerArmed = 1 << 13,
    /// Closed for cause (a protocol error, a stalled writer, the memory budget, the
    /// service's [`crate::CloseMode::Abort`]): the close resets the connection, so the
    /// kernel drops what it still holds for the peer at once.
    ResetOnClose = 1 << 14,
    /// Complete frames wait in `input` because handling them pushed the output past
    /// the write limit: they are handled, before anything more is read, once the
    /// output drains.
    FramesHeld = 1 << 15,
}

/// A connection's [`Flag`]s in two bytes (sixteen `bool`s would take sixteen, and every
/// idle connection pays for each byte).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flags(u16);

impl Flags {
    /// Whether `flag` is set.
    #[inline(always)]
    pub(crate) fn get(self, flag: Flag) -> bool {
        self.0 & flag as u16 != 0
    }

    /// Sets `flag` to `on`.
    #[inline(always)]
    pub(crate) fn set(&mut self, flag: Flag, on: bool) {
        if on {
            self.0 |= flag as u16;
        } else {
            self.0 &= !(flag as u16);
        }
    }

    /// Clears `flag`, saying whether it was set.
    #[inline(always)]
    pub(crate) fn take(&mut self, flag: Flag) -> bool {
        let was = self.get(flag);
        self.set(flag, false);
        was
    }
}

impl Connection {
    pub(crate) fn new(stream: Stream, generation: u32, endpoint: u16, now: Millis) -> Self {
        Connection {
            stream,
            generation,
            endpoint,
            state: ConnState::Open,
            input: LazyBuffer::default(),
            output: OutQueue::default(),
            last_active: now,
            write_progress: now as u32,
            accounted: Accounted::ZERO,
            frame_started: NO_FRAME,
            idle: Links::default(),
            idle_rule: IdleRule::REACTOR,
            idle_epoch: 0,
            flags: Flags::default(),
            linger_rounds: 0,
        }
    }

    /// Whether the service may queue output on it now: its state allows it, and it did
    /// not shut its side while connecting.
    #[inline(always)]
    pub(crate) fn may_send(&self) -> bool {
        self.state.may_send() && !self.flags.get(Flag::ShutOnceConnected)
    }

    /// Open for the service: not closing, not closed (it may be connecting, or
    /// half-closed).
    pub(crate) fn is_open(&self) -> bool {
        !matches!(self.state, ConnState::Draining(_) | ConnState::Lingering(_))
    }

    /// True when its queued output is over `write_limit` and it is not exempt from
    /// backpressure: reading it stops, and the frames it sent and not yet handled wait.
    #[inline(always)]
    pub(crate) fn over_write_limit(&self, write_limit: usize) -> bool {
        self.output.len() > write_limit && !self.flags.get(Flag::ReadsIgnoreCongestion)
    }

    /// True while the reactor does not read the connection, paused by backpressure or
    /// by its service. Its peer may be sending all along: its silence cannot be seen
    /// (so it is not idle), and it cannot finish a frame (so the frame's clock stops).
    #[inline(always)]
    pub(crate) fn reading_paused(&self) -> bool {
        self.flags.get(Flag::ReadPaused) || self.flags.get(Flag::PausedByService)
    }

    /// The bytes of buffer it holds now: its input buffer's whole storage and its
    /// queued output (shared frames at their full size, as if each were its own).
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.input.capacity() + self.output.memory()
    }

    /// [`Connection::buffered_bytes`] as the budget counts it.
    pub(crate) fn buffered(&self) -> Accounted {
        Accounted::of_bytes(self.buffered_bytes())
    }

    /// Reading resumes after a pause (the service's, or backpressure's) at `now`: the
    /// partial frame held, if any, gets its whole deadline again, since its peer could
    /// not send the rest while the connection was not read.
    pub(crate) fn restart_frame_clock(&mut self, now: Millis) {
        if self.frame_started != NO_FRAME {
            self.frame_started = now;
        }
    }

    /// Records activity at `now`. True when the connection must also move to the back
    /// of the idle list: the first activity in a millisecond (the caller moves it,
    /// since that needs the slab the connection lives in).
    #[inline(always)]
    pub(crate) fn mark_active(&mut self, now: Millis) -> bool {
        if self.last_active == now {
            return false;
        }
        self.last_active = now;
        true
    }
}

/// One slab entry: the connection, its codec's decode state and the service's own
/// state for it, created when the connection is and handed back when it closes.
pub(crate) struct Slot<S: Service> {
    /// The socket, buffers and bookkeeping.
    pub conn: Connection,
    /// What the endpoint's codec remembers between reads (`()` for length framing).
    pub decode: <S::Codec as Codec>::State,
    /// The service's per-connection state ([`Service::Conn`]). Handed to the service
    /// for each callback about this connection: taken out for the call, put back after.
    pub state: S::Conn,
}

impl<S: Service> fmt::Debug for Slot<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.conn.fmt(f)
    }
}

impl<S: Service> Linked for Slot<S> {
    fn links(&mut self) -> &mut Links {
        &mut self.conn.idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting_counts_kib_then_mib_and_never_less_than_held() {
        assert_eq!(Accounted::of_bytes(0).kib(), 0);
        assert_eq!(Accounted::of_bytes(1).kib(), 1);
        assert_eq!(Accounted::of_bytes(1024).kib(), 1);
        assert_eq!(Accounted::of_bytes(1025).kib(), 2);
        let just_below = (32 << 20) - 1024;
        assert_eq!(Accounted::of_bytes(just_below).kib(), (32 << 10) - 1);
        // Past 64 MiB (where a KiB count in two bytes used to stop), in full.
        assert_eq!(Accounted::of_bytes(512 << 20).kib(), 512 << 10);
        assert_eq!(Accounted::of_bytes((100 << 20) + 1).kib(), 101 << 10);
        for bytes in [1usize, 999, 40 << 20, (3 << 30) + 7] {
            assert!(Accounted::of_bytes(bytes).kib() * 1024 >= bytes as u64);
        }
        assert_eq!(
            Accounted::of_bytes(usize::MAX).kib(),
            ((32 << 10) - 1) << 10
        );
    }

    #[test]
    fn an_idle_connection_is_small() {
        // Every idle connection costs this much user-space memory (plus its slab slot).
        assert!(
            std::mem::size_of::<Connection>() <= 80,
            "{}",
            std::mem::size_of::<Connection>()
        );
    }

    #[test]
    fn each_flag_is_its_own_bit() {
        let mut flags = Flags::default();
        flags.set(Flag::ReadPaused, true);
        flags.set(Flag::ShutOnceConnected, true);
        assert!(flags.get(Flag::ReadPaused) && flags.get(Flag::ShutOnceConnected));
        assert!(!flags.get(Flag::Congested) && !flags.get(Flag::Dialled));
        assert!(flags.take(Flag::ReadPaused));
        assert!(!flags.take(Flag::ReadPaused), "taken");
        assert!(flags.get(Flag::ShutOnceConnected));
    }

    #[test]
    fn token_round_trip_keeps_key_and_generation() {
        let id = ConnId::new(7, 42);
        assert_eq!(ConnId::from_token(id.token()), Some(id));
        assert!(id.token().0 >= 1 << 32);
    }

    #[test]
    fn reserved_tokens_are_not_connections() {
        assert_eq!(ConnId::from_token(Token(0)), None);
        assert_eq!(ConnId::from_token(Token(65_536 + 3)), None);
    }

    #[test]
    fn same_slot_different_generation_is_a_different_connection() {
        let old = ConnId::new(3, 1);
        let new = ConnId::new(3, 2);
        assert_eq!(old.index(), new.index());
        assert_ne!(old, new);
        assert_ne!(old.token(), new.token());
    }
}
