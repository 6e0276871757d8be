//! One connection's TLS: its rustls state, the reads that turn the socket's
//! ciphertext into plaintext for the codec, and the writes that encrypt the service's
//! bytes on their way to the socket; and the table that holds the layers beside the
//! connections.
//!
//! rustls is driven through its unbuffered API (`UnbufferedServerConnection`,
//! `UnbufferedClientConnection`): it holds no buffers of its own; the layer hands it
//! ciphertext and takes plaintext and ciphertext out. The layer reads the socket into
//! one buffer shared by the loop's connections and encrypts into another, so only
//! what must outlive a call is kept per connection (the start of a record not yet
//! complete, plaintext a full read buffer had no room for, ciphertext the socket did
//! not take), and that only while it waits: an idle TLS connection holds no buffer at
//! all, just rustls's keys and state.
//!
//! The layer keeps the promises the read and write paths rely on for plain sockets:
//! - a read shorter than the buffer means the socket is drained (or at its end): the
//!   layer reads the socket until the buffer is full of plaintext or a read of the
//!   socket comes back short, so an edge-triggered poller never leaves decrypted
//!   bytes behind;
//! - a write that takes fewer bytes than offered means the socket is full: the layer
//!   takes new plaintext only once the ciphertext it owes is written, and says
//!   `WouldBlock` otherwise. Ciphertext still owed after a write (a whole write is
//!   encrypted at once) is the one thing a plain socket does not have: the write path
//!   asks [`TlsLayer::has_pending`] and keeps WRITABLE armed while it is true.
//!
//! The layers live in a table of their own, indexed like the connections' slab
//! ([`TlsTable`]), so a plain connection carries nothing for TLS and stays as small
//! as it was. The layer's reads and writes are out of line (`#[inline(never)]`), and
//! the read and write paths call them from branches of their own, so the code of the
//! plain paths stays what it was (`docs/benchmarks.md`: instructions per echo).

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice};
use std::sync::Arc;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerConnectionData, UnbufferedServerConnection,
};
use rustls::sign::CertifiedKey;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, ReadEarlyData,
    UnbufferedConnectionCommon, UnbufferedStatus, WriteTraffic,
};
use rustls::{ClientConfig, CommonState, ServerConfig};

use super::config::TlsInfo;
use crate::buffer::Buffer;
use crate::connection::{ConnId, Stream};

/// The memory budget's charge for a connection whose handshake is under way, in KiB:
/// rustls's handshake state, as measured at its largest (2,000 connections that each
/// sent a whole ClientHello and never answered the server's flight: 4,690 B of RSS
/// each; half a ClientHello: 2,685 B; `docs/benchmarks.md`, TLS). What the layer holds
/// in buffers is counted on top, byte for byte ([`TlsLayer::recount`]).
pub(crate) const HANDSHAKE_KIB: u64 = 5;
/// The charge once the handshake is done (measured the same way, connections that
/// each echoed one frame and went idle: 3,934 B each).
pub(crate) const ESTABLISHED_KIB: u64 = 4;

/// Plaintext encrypted in one go: what the write path gathers for one write. Its
/// ciphertext (this plus each record's overhead) is the most the layer holds for a
/// socket that takes nothing.
const SEND_CHUNK: usize = 64 * 1024;
/// The largest TLS record on the wire: 16 KiB of plaintext plus the header, the
/// content type, padding and the tag rustls allows for. A read asks for at least this
/// much, so one read can always complete a record.
const MAX_RECORD: usize = 16 * 1024 + 256;
/// What a read asks for beyond the plaintext room it fills: the overhead of the
/// records that fill it.
const READ_SLACK: usize = 512;
/// The most one read asks for (a caller completing a large frame may offer megabytes
/// of room): the shared ciphertext buffer stays this size, as the plain read path's
/// shared buffer does.
const MAX_READ: usize = 256 * 1024;

/// Buffers a loop's TLS connections share: one call's ciphertext in and out, and a
/// write's plaintext gathered from several slices.
#[derive(Default)]
struct Scratch {
    incoming: Buffer,
    outgoing: Buffer,
    gathered: Buffer,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// The name the client asked for, as the certificate resolver last saw it on this
    /// thread (see [`record_server_name`]).
    static SERVER_NAME_SEEN: Cell<Option<Box<str>>> = const { Cell::new(None) };
}

/// Runs `f` with the thread's shared buffers (fresh ones, should they be in use).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// A server configuration whose certificate resolver also notes the name the client
/// asked for. rustls's unbuffered server connection does not report it (its
/// buffered one has `server_name()`), and the resolver is the one place rustls shows
/// it. The resolver runs inside the layer's own call into rustls, on the loop's
/// thread, so the layer takes the name from there right after the call.
pub(crate) fn record_server_name(config: Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut config = Arc::unwrap_or_clone(config);
    let inner = config.cert_resolver.clone();
    config.cert_resolver = Arc::new(NameRecorder { inner });
    Arc::new(config)
}

/// The resolver of [`record_server_name`].
#[derive(Debug)]
struct NameRecorder {
    inner: Arc<dyn ResolvesServerCert>,
}

impl ResolvesServerCert for NameRecorder {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = client_hello.server_name().map(Box::from);
        SERVER_NAME_SEEN.with(|seen| seen.set(name));
        self.inner.resolve(client_hello)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }
}

/// A connection of either side, as rustls's unbuffered API has them.
enum Session {
    Server(UnbufferedServerConnection),
    Client(UnbufferedClientConnection),
}

impl Session {
    fn common(&self) -> &CommonState {
        match self {
            Session::Server(session) => session,
            Session::Client(session) => session,
        }
    }
}

/// `process_tls_records` of either side, so the layer's steps are written once.
trait Records {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// Hands early (0-RTT) data to `sink`: it comes only to a server whose
    /// configuration (the caller's own) accepts it.
    fn take_early_data(
        early: ReadEarlyData<'_, '_, Self::Data>,
        sink: &mut Sink<'_>,
    ) -> io::Result<()>;
}

impl Records for UnbufferedConnectionCommon<ServerConnectionData> {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }

    fn take_early_data(
        mut early: ReadEarlyData<'_, '_, Self::Data>,
        sink: &mut Sink<'_>,
    ) -> io::Result<()> {
        while let Some(record) = early.next_record() {
            sink.take(record.map_err(tls_error)?.payload);
        }
        Ok(())
    }
}

impl Records for UnbufferedConnectionCommon<ClientConnectionData> {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }

    fn take_early_data(_: ReadEarlyData<'_, '_, Self::Data>, _: &mut Sink<'_>) -> io::Result<()> {
        Err(tls_error("early data sent to a client"))
    }
}

/// Runs `$body` with `$conn` bound to the session's connection, whichever its side.
macro_rules! with_session {
    ($session:expr, $conn:ident => $body:expr) => {
        match $session {
            Session::Server(session) => {
                let $conn = &mut **session;
                $body
            }
            Session::Client(session) => {
                let $conn = &mut **session;
                $body
            }
        }
    };
}

/// Where decrypted plaintext goes: the caller's buffer, then (what does not fit) the
/// layer's leftover, handed out first by the next read.
struct Sink<'a> {
    buf: &'a mut [u8],
    filled: usize,
    leftover: &'a mut Buffer,
}

impl Sink<'_> {
    fn take(&mut self, plaintext: &[u8]) {
        let fits = plaintext.len().min(self.buf.len() - self.filled);
        self.buf[self.filled..self.filled + fits].copy_from_slice(&plaintext[..fits]);
        self.filled += fits;
        if fits < plaintext.len() {
            self.leftover.extend_from_slice(&plaintext[fits..]);
        }
    }

    fn is_full(&self) -> bool {
        self.filled == self.buf.len()
    }
}

/// What one step of rustls's state machine came to.
enum Step<'c, D> {
    /// Something was done (records decrypted, a handshake message encoded): step on.
    Again,
    /// It needs more ciphertext (the handshake is waiting for the peer, or all that
    /// arrived is processed).
    NeedInput,
    /// The peer's `close_notify` arrived: nothing more will.
    PeerClosed,
    /// Both sides sent `close_notify`: nothing more will come or go.
    Closed,
    /// Application data may be encrypted.
    Writable(WriteTraffic<'c, D>),
}

/// Takes one step with the ciphertext in `incoming` (whose processed records it
/// drops): decrypted records go to `sink`, handshake messages and alerts are encoded
/// into `outgoing` for the caller to write.
fn step<'c, C: Records>(
    conn: &'c mut C,
    incoming: &mut Buffer,
    outgoing: &mut Buffer,
    sink: &mut Sink<'_>,
) -> io::Result<Step<'c, C::Data>> {
    let UnbufferedStatus { discard, state } = conn.process(incoming.readable_mut());
    let state = match state {
        Ok(state) => state,
        Err(error) => {
            incoming.consume(discard);
            return Err(tls_error(error));
        }
    };
    let step = match state {
        ConnectionState::ReadTraffic(mut traffic) => {
            while let Some(record) = traffic.next_record() {
                sink.take(record.map_err(tls_error)?.payload);
            }
            Step::Again
        }
        ConnectionState::ReadEarlyData(early) => {
            C::take_early_data(early, sink)?;
            Step::Again
        }
        ConnectionState::EncodeTlsData(mut encode) => {
            encode_into(outgoing, |spare| encode.encode(spare))?;
            Step::Again
        }
        ConnectionState::TransmitTlsData(transmit) => {
            // What was encoded is in `outgoing`, and the caller writes it next.
            transmit.done();
            Step::Again
        }
        ConnectionState::PeerClosed => Step::PeerClosed,
        ConnectionState::Closed => Step::Closed,
        ConnectionState::WriteTraffic(traffic) => Step::Writable(traffic),
        _ => Step::NeedInput,
    };
    incoming.consume(discard);
    Ok(step)
}

/// Encodes a handshake message into `outgoing`.
fn encode_into(
    outgoing: &mut Buffer,
    encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> io::Result<()> {
    write_growing(outgoing, 1024, encode, |e| match e {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    })
}

/// Encrypts into `outgoing` (application data, or the `close_notify` alert).
fn encrypt_into(
    outgoing: &mut Buffer,
    plaintext_len: usize,
    encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<()> {
    // Each record adds a header, the content type and the tag: 22 bytes with AES-GCM.
    let room = plaintext_len + (plaintext_len / (16 * 1024) + 1) * 64;
    write_growing(outgoing, room, encrypt, |e| match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    })
}

/// Has rustls write into `outgoing`'s spare room, `room` bytes of it at first, and more
/// when it says how much it needs (`needs`).
fn write_growing<E: std::fmt::Display>(
    outgoing: &mut Buffer,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
) -> io::Result<()> {
    loop {
        match write(outgoing.spare_mut(room)) {
            Ok(n) => {
                outgoing.commit(n);
                return Ok(());
            }
            Err(e) => match needs(&e) {
                Some(required) if required > room => room = required,
                _ => return Err(tls_error(e)),
            },
        }
    }
}

/// A TLS failure as the read and write paths speak of it.
fn tls_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {error}"))
}

/// One connection's TLS state.
pub(crate) struct TlsLayer {
    session: Session,
    /// Ciphertext read and not yet processed: a record's beginning, or records behind
    /// a read buffer that filled up. Owns no storage while empty.
    incoming: Buffer,
    /// Plaintext decrypted that the last read's buffer had no room for.
    leftover: Buffer,
    /// Ciphertext the socket has not taken yet.
    pending: Buffer,
    /// The name the client asked for (SNI), on an accepted connection.
    server_name: Option<Box<str>>,
    /// Why TLS failed, in rustls's words, once it has.
    failure: Option<Box<str>>,
    /// The socket reached its end (the peer's FIN): nothing more will be read.
    eof: bool,
    /// The peer's `close_notify` arrived: nothing more will be read.
    peer_closed: bool,
    /// A `close_notify` alert was queued for the peer.
    notify_queued: bool,
    /// The handshake was still under way at the last look (to tell its end once).
    handshaking: bool,
    /// What the memory budget counts for this layer now, in KiB ([`TlsLayer::recount`]).
    charged: u64,
}

impl TlsLayer {
    /// The layer of an accepted connection. (`config` comes through
    /// [`record_server_name`], so the layer learns the name the client asks for.)
    pub(crate) fn server(config: Arc<ServerConfig>) -> io::Result<TlsLayer> {
        let session = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        Ok(TlsLayer::with(Session::Server(session)))
    }

    /// The layer of a dialled connection; its first flight (the ClientHello) waits
    /// in it for the connect to complete.
    pub(crate) fn client(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsLayer> {
        let session = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
        let mut layer = TlsLayer::with(Session::Client(session));
        let mut outgoing = Buffer::new();
        let mut no_plaintext = Sink {
            buf: &mut [],
            filled: 0,
            leftover: &mut layer.leftover,
        };
        let incoming = &mut layer.incoming;
        with_session!(&mut layer.session, conn => {
            while let Step::Again = step(conn, incoming, &mut outgoing, &mut no_plaintext)? {}
        });
        layer.pending = outgoing;
        Ok(layer)
    }

    fn with(session: Session) -> TlsLayer {
        TlsLayer {
            session,
            incoming: Buffer::new(),
            leftover: Buffer::new(),
            pending: Buffer::new(),
            server_name: None,
            failure: None,
            eof: false,
            peer_closed: false,
            notify_queued: false,
            handshaking: true,
            charged: HANDSHAKE_KIB,
        }
    }

    /// Fills `buf` with plaintext: what the layer holds decrypted, then what the
    /// socket brings, until `buf` is full, a read of the socket comes back short
    /// (`WouldBlock` when nothing came at all), or its end. `Ok(0)` is the end of the
    /// stream (the peer's `close_notify`, or its FIN without one: logged, then treated
    /// as the end). Handshake messages and alerts owed to the peer are written on the
    /// way; a TLS error is an `InvalidData` error, after the alert that tells the peer
    /// why.
    #[inline(never)]
    pub(crate) fn read(&mut self, stream: &mut Stream, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.read_plaintext(stream, buf);
        self.note_failure(&result);
        result
    }

    /// Keeps the words of the first TLS failure (`InvalidData`: only rustls's errors
    /// are of that kind here), for [`TlsLayer::info`].
    fn note_failure<T>(&mut self, result: &io::Result<T>) {
        match result {
            Err(e) if e.kind() == io::ErrorKind::InvalidData && self.failure.is_none() => {
                let words = e.to_string();
                let words = words.strip_prefix("TLS: ").unwrap_or(&words);
                self.failure = Some(words.into());
            }
            _ => {}
        }
    }

    /// [`TlsLayer::read`], before a failure is noted.
    fn read_plaintext(&mut self, stream: &mut Stream, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        if !self.leftover.is_empty() {
            filled = self.leftover.len().min(buf.len());
            buf[..filled].copy_from_slice(&self.leftover.readable()[..filled]);
            self.leftover.consume(filled);
            release_if_empty(&mut self.leftover);
            if filled == buf.len() {
                return Ok(filled);
            }
        }
        if self.peer_closed || (self.eof && self.incoming.is_empty()) {
            return Ok(filled);
        }
        with_scratch(|scratch| {
            // The ciphertext held from before goes in front of what is read now.
            let incoming = &mut scratch.incoming;
            incoming.clear();
            if !self.incoming.is_empty() {
                incoming.extend_from_slice(self.incoming.readable());
                self.incoming = Buffer::new();
            }
            let mut leftover = std::mem::take(&mut self.leftover);
            let mut sink = Sink {
                buf,
                filled,
                leftover: &mut leftover,
            };
            let result = self.read_records(stream, incoming, &mut scratch.outgoing, &mut sink);
            let filled = sink.filled;
            self.leftover = leftover;
            // What is not processed yet stays with the connection, in a buffer of
            // its own size.
            if !incoming.is_empty() {
                self.incoming.reserve_exact(incoming.len());
                self.incoming.extend_from_slice(incoming.readable());
            }
            match result {
                Ok(()) if filled == 0 && !self.eof && !self.peer_closed => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Ok(()) => Ok(filled),
                Err(e) => Err(e),
            }
        })
    }

    /// [`TlsLayer::read`]'s loop: process what is held, write what rustls owes the
    /// peer, read more; until the sink is full, the socket is drained, or its end.
    fn read_records(
        &mut self,
        stream: &mut Stream,
        incoming: &mut Buffer,
        outgoing: &mut Buffer,
        sink: &mut Sink<'_>,
    ) -> io::Result<()> {
        loop {
            let processed = self.process_incoming(incoming, outgoing, sink);
            // The handshake's next flight, an alert saying why it failed: sent now;
            // what the socket does not take waits (`has_pending`).
            let sent = self.send(stream, outgoing);
            let closed = processed?;
            sent?;
            if closed || sink.is_full() {
                return Ok(());
            }
            if self.eof {
                log::debug!("TLS: the peer closed without close_notify");
                return Ok(());
            }
            let room = sink.buf.len() - sink.filled;
            let want = (room + READ_SLACK).clamp(MAX_RECORD, MAX_READ);
            let spare = &mut incoming.spare_mut(want)[..want];
            match stream.read(spare) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    incoming.commit(n);
                    if n < want {
                        // The socket is drained: process what came, and stop there.
                        let processed = self.process_incoming(incoming, outgoing, sink);
                        let sent = self.send(stream, outgoing);
                        processed?;
                        return sent.map(|_| ());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Steps through the ciphertext held until rustls needs more, the sink is full,
    /// or the peer closed (then true).
    fn process_incoming(
        &mut self,
        incoming: &mut Buffer,
        outgoing: &mut Buffer,
        sink: &mut Sink<'_>,
    ) -> io::Result<bool> {
        let outcome = with_session!(&mut self.session, conn => loop {
            if sink.is_full() {
                break Ok(false);
            }
            match step(conn, incoming, outgoing, sink) {
                Ok(Step::Again) => {}
                Ok(Step::NeedInput | Step::Writable(_)) => break Ok(false),
                Ok(Step::PeerClosed | Step::Closed) => break Ok(true),
                Err(e) => break Err(e),
            }
        });
        if self.handshaking {
            // Taken whatever the outcome, so no other connection finds it.
            if let Some(name) = SERVER_NAME_SEEN.with(Cell::take) {
                self.server_name = Some(name);
            }
        }
        if outcome.is_err() {
            // rustls queued an alert saying why: encoded for the one attempt to send it.
            self.encode_alert(incoming, outgoing);
        }
        self.peer_closed |= matches!(outcome, Ok(true));
        outcome
    }

    /// Encodes what rustls queued after a failure (the alert that tells the peer).
    fn encode_alert(&mut self, incoming: &mut Buffer, outgoing: &mut Buffer) {
        let mut sink = Sink {
            buf: &mut [],
            filled: 0,
            leftover: &mut self.leftover,
        };
        with_session!(&mut self.session, conn => {
            for _ in 0..4 {
                if !matches!(step(conn, incoming, outgoing, &mut sink), Ok(Step::Again)) {
                    break;
                }
            }
        });
    }

    /// Encrypts as much of `buf` as the socket takes: see [`TlsLayer::write_vectored`].
    #[inline(never)]
    pub(crate) fn write(&mut self, stream: &mut Stream, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(stream, &[IoSlice::new(buf)])
    }

    /// Encrypts `bufs` and writes the records, a chunk at a time (one `write` each,
    /// several slices gathered into one), until all of `bufs` is taken or the socket is
    /// full: `Ok(n)` is the plaintext taken, and a count short of the whole means the
    /// socket said `WouldBlock` (the caller waits for WRITABLE). Ciphertext owed from
    /// before is written first; if the socket does not take all of it, nothing new is
    /// taken (`WouldBlock`), nor before the handshake is done: the output waits in the
    /// connection's queue, counted there, and goes out when the handshake completes.
    #[inline(never)]
    pub(crate) fn write_vectored(
        &mut self,
        stream: &mut Stream,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        if !self.flush(stream)? || self.session.common().is_handshaking() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let result = with_scratch(|scratch| {
            let mut taken = 0;
            while taken < total {
                let chunk = match bufs {
                    [one] => &one[taken..(taken + SEND_CHUNK).min(one.len())],
                    _ => gather(&mut scratch.gathered, bufs, taken, SEND_CHUNK),
                };
                let len = chunk.len();
                let outgoing = &mut scratch.outgoing;
                if !self.encrypt(outgoing, |traffic, outgoing| {
                    encrypt_into(outgoing, len, |spare| traffic.encrypt(chunk, spare))
                })? {
                    break;
                }
                taken += len;
                if !self.send(stream, outgoing)? {
                    break;
                }
            }
            match taken {
                0 => Err(io::ErrorKind::WouldBlock.into()),
                _ => Ok(taken),
            }
        });
        self.note_failure(&result);
        result
    }

    /// Brings rustls to the state where it encrypts and runs `f` there: false (and
    /// nothing done) while the handshake is still under way.
    fn encrypt(
        &mut self,
        outgoing: &mut Buffer,
        f: impl FnOnce(&mut dyn EncryptTo, &mut Buffer) -> io::Result<()>,
    ) -> io::Result<bool> {
        let mut sink = Sink {
            buf: &mut [],
            filled: 0,
            leftover: &mut self.leftover,
        };
        let incoming = &mut self.incoming;
        let mut closed = false;
        let mut f = Some(f);
        let done = with_session!(&mut self.session, conn => loop {
            match step(conn, incoming, outgoing, &mut sink)? {
                Step::Again => {}
                Step::PeerClosed => closed = true,
                Step::NeedInput | Step::Closed => break false,
                Step::Writable(mut traffic) => {
                    if let Some(f) = f.take() {
                        f(&mut traffic, outgoing)?;
                    }
                    break true;
                }
            }
        });
        self.peer_closed |= closed;
        Ok(done)
    }

    /// Writes `outgoing` (behind what is owed from before), keeping what the socket
    /// does not take: true when all of it is written.
    fn send(&mut self, stream: &mut Stream, outgoing: &mut Buffer) -> io::Result<bool> {
        if outgoing.is_empty() {
            return self.flush(stream);
        }
        if !self.pending.is_empty() {
            self.pending.extend_from_slice(outgoing.readable());
            outgoing.clear();
            return self.flush(stream);
        }
        let written = write_out(stream, outgoing);
        if !outgoing.is_empty() {
            self.pending.reserve_exact(outgoing.len());
            self.pending.extend_from_slice(outgoing.readable());
        }
        outgoing.clear();
        written
    }

    /// Writes the ciphertext owed to the peer: `Ok(true)` once all of it is written,
    /// `Ok(false)` when the socket is full.
    #[inline(never)]
    pub(crate) fn flush(&mut self, stream: &mut Stream) -> io::Result<bool> {
        if self.pending.is_empty() {
            return Ok(true);
        }
        let written = write_out(stream, &mut self.pending);
        release_if_empty(&mut self.pending);
        written
    }

    /// Ciphertext waits for room in the socket.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
    /// Queues the `close_notify` alert (once, and only once the handshake is done:
    /// before, there is no session to close) and writes what is owed: `Ok(true)` when
    /// all of it went out, so the FIN may follow.
    #[inline(never)]
    pub(crate) fn close_notify(&mut self, stream: &mut Stream) -> io::Result<bool> {
        if !self.notify_queued && !self.session.common().is_handshaking() {
            self.notify_queued = true;
            let mut outgoing = Buffer::new();
            self.encrypt(&mut outgoing, |traffic, outgoing| {
                encrypt_into(outgoing, 0, |spare| traffic.close_notify(spare))
            })?;
            self.send(stream, &mut outgoing)?;
        }
        self.flush(stream)
    }

    /// True once, at the first look after the handshake completed.
    pub(crate) fn take_handshake_finished(&mut self) -> bool {
        let finished = self.handshaking && !self.session.common().is_handshaking();
        if finished {
            self.handshaking = false;
        }
        finished
    }

    /// The handshake is done (as last looked at by the reactor): records may flow.
    pub(crate) fn is_established(&self) -> bool {
        !self.handshaking
    }

    /// What the memory budget counts for this layer, in KiB, as last recounted.
    pub(crate) fn charge_kib(&self) -> u64 {
        self.charged
    }

    /// Counts the layer again (its state, and the buffers it holds: ciphertext waiting
    /// for the socket, a record's beginning, plaintext waiting for the next read):
    /// what was counted before and what is counted now, in KiB.
    pub(crate) fn recount(&mut self) -> (u64, u64) {
        let state = match self.handshaking {
            true => HANDSHAKE_KIB,
            false => ESTABLISHED_KIB,
        };
        let held = self.pending.capacity() + self.incoming.capacity() + self.leftover.capacity();
        let now = state + held.div_ceil(1024) as u64;
        let before = std::mem::replace(&mut self.charged, now);
        (before, now)
    }

    /// What the service may learn of it.
    pub(crate) fn info(&self) -> TlsInfo {
        let common = self.session.common();
        TlsInfo {
            handshaking: common.is_handshaking(),
            server_name: self.server_name.as_deref().map(str::to_string),
            failure: self.failure.as_deref().map(str::to_string),
            peer_certificates: common
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.to_vec()).collect())
                .unwrap_or_default(),
            protocol: common.protocol_version().map(|v| format!("{v:?}")),
            cipher_suite: common
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite())),
        }
    }
}

/// What the layer asks of rustls's `WriteTraffic`, whichever the side.
trait EncryptTo {
    fn encrypt(&mut self, plaintext: &[u8], outgoing: &mut [u8]) -> Result<usize, EncryptError>;
    fn close_notify(&mut self, outgoing: &mut [u8]) -> Result<usize, EncryptError>;
}

impl<D> EncryptTo for WriteTraffic<'_, D> {
    fn encrypt(&mut self, plaintext: &[u8], outgoing: &mut [u8]) -> Result<usize, EncryptError> {
        WriteTraffic::encrypt(self, plaintext, outgoing)
    }

    fn close_notify(&mut self, outgoing: &mut [u8]) -> Result<usize, EncryptError> {
        self.queue_close_notify(outgoing)
    }
}

/// Writes `buf` to the socket until it is empty (`Ok(true)`) or the socket says
/// `WouldBlock` (`Ok(false)`).
fn write_out(stream: &mut Stream, buf: &mut Buffer) -> io::Result<bool> {
    while !buf.is_empty() {
        match stream.write(buf.readable()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf.consume(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Lets an emptied buffer's storage go, so an idle connection holds none.
fn release_if_empty(buf: &mut Buffer) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = Buffer::new();
    }
}

/// Copies up to `limit` bytes of `bufs`, from `skip` bytes in, into `gathered`.
fn gather<'g>(
    gathered: &'g mut Buffer,
    bufs: &[IoSlice<'_>],
    mut skip: usize,
    limit: usize,
) -> &'g [u8] {
    gathered.clear();
    for buf in bufs {
        let bytes: &[u8] = buf;
        if skip >= bytes.len() {
            skip -= bytes.len();
            continue;
        }
        let room = limit - gathered.len();
        let part = &bytes[skip..(skip + room).min(bytes.len())];
        gathered.extend_from_slice(part);
        skip = 0;
        if gathered.len() == limit {
            break;
        }
    }
    gathered.readable()
}

/// The TLS layers of the connections that have one, indexed by slab key and checked
/// by generation. Empty (and never touched but for one comparison per I/O) in a
/// reactor without TLS endpoints.
#[derive(Default)]
pub(crate) struct TlsTable {
    slots: Vec<Option<(u32, Box<TlsLayer>)>>,
    /// The layer of the connection whose close the service is hearing of, so that
    /// `Context::tls` still answers in `on_close` (what was agreed, or why TLS failed).
    closing: Option<(ConnId, Box<TlsLayer>)>,
}

impl TlsTable {
    /// The layer of `id`, if it has one.
    #[inline(always)]
    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut TlsLayer> {
        match self.slots.get_mut(id.index()) {
            Some(Some((generation, layer))) if *generation == id.generation() => Some(layer),
            _ => None,
        }
    }

    /// [`TlsTable::get_mut`], to look.
    #[inline(always)]
    pub(crate) fn get(&self, id: ConnId) -> Option<&TlsLayer> {
        match self.slots.get(id.index()) {
            Some(Some((generation, layer))) if *generation == id.generation() => Some(layer),
            _ => None,
        }
    }

    /// Gives `id` its layer.
    pub(crate) fn insert(&mut self, id: ConnId, layer: TlsLayer) {
        if self.slots.len() <= id.index() {
            self.slots.resize_with(id.index() + 1, || None);
        }
        self.slots[id.index()] = Some((id.generation(), Box::new(layer)));
    }

    /// Keeps `layer`, taken from `id` as it closed, until the next call (`None` once
    /// the service has heard of the close).
    pub(crate) fn keep_while_closing(&mut self, id: ConnId, layer: Option<Box<TlsLayer>>) {
        self.closing = layer.map(|layer| (id, layer));
    }

    /// The layer of `id`, open or closing (off the I/O paths: for what a service asks).
    pub(crate) fn get_or_closing(&self, id: ConnId) -> Option<&TlsLayer> {
        match &self.closing {
            Some((closing, layer)) if *closing == id => Some(layer),
            _ => self.get(id),
        }
    }

    /// Takes `id`'s layer away (its connection closes).
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Box<TlsLayer>> {
        match self.slots.get_mut(id.index()) {
            Some(slot) if slot.as_ref().is_some_and(|(g, _)| *g == id.generation()) => {
                slot.take().map(|(_, layer)| layer)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::RootCertStore;

    /// A server and a client layer, the client trusting the server's self-signed
    /// certificate for `localhost`.
    fn layers() -> (TlsLayer, TlsLayer) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let server_config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client_config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server = TlsLayer::server(record_server_name(Arc::new(server_config))).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let client = TlsLayer::client(Arc::new(client_config), name).unwrap();
        (server, client)
    }

    /// A server and a client layer over the two ends of a Unix socket pair.
    fn pair() -> ((TlsLayer, Stream), (TlsLayer, Stream)) {
        let (server, client) = layers();
        let (a, b) = mio::net::UnixStream::pair().unwrap();
        ((server, Stream::Unix(a)), (client, Stream::Unix(b)))
    }

    /// Moves what `from` holds to `to`, in pieces of the sizes `pieces` gives, calling
    /// `after` after each piece: a network that cuts records anywhere.
    fn relay(
        from: &mut Stream,
        to: &mut Stream,
        pieces: &mut impl FnMut() -> usize,
        mut after: impl FnMut(),
    ) {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            bytes.extend_from_slice(&buf[..n]);
        }
        let mut at = 0;
        while at < bytes.len() {
            let piece = pieces().min(bytes.len() - at);
            let mut written = 0;
            while written < piece {
                written += to.write(&bytes[at + written..at + piece]).unwrap();
            }
            at += piece;
            after();
        }
    }

    #[test]
    fn records_cut_anywhere_on_the_way_come_out_whole() {
        let (server, client) = layers();
        let (c, relay_c) = mio::net::UnixStream::pair().unwrap();
        let (relay_s, s) = mio::net::UnixStream::pair().unwrap();
        let (mut client, mut server) = ((client, Stream::Unix(c)), (server, Stream::Unix(s)));
        let (mut relay_c, mut relay_s) = (Stream::Unix(relay_c), Stream::Unix(relay_s));
        // Pieces of 1 to 700 bytes, from a fixed sequence.
        let mut seed = 12345u32;
        let mut pieces = move || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            1 + (seed >> 16) as usize % 700
        };
        let mut buf = vec![0u8; 4096];
        for _ in 0..10 {
            client.0.flush(&mut client.1).unwrap();
            relay(&mut relay_c, &mut relay_s, &mut pieces, || {
                let _ = server.0.read(&mut server.1, &mut buf);
            });
            relay(&mut relay_s, &mut relay_c, &mut pieces, || {
                let _ = client.0.read(&mut client.1, &mut buf);
            });
        }
        assert!(server.0.take_handshake_finished() && client.0.take_handshake_finished());
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let (mut taken, mut got) = (0, Vec::new());
        while got.len() < sent.len() {
            if taken < sent.len() {
                if let Ok(n) = client.0.write(&mut client.1, &sent[taken..]) {
                    taken += n;
                }
            }
            client.0.flush(&mut client.1).unwrap();
            relay(&mut relay_c, &mut relay_s, &mut pieces, || {
                got.extend(read_all(&mut server, 4096));
            });
        }
        assert!(got == sent, "the plaintext came out changed");
        assert!(holds_no_buffer(&server.0) && holds_no_buffer(&client.0));
    }

    /// Steps both layers until their handshakes are done.
    fn handshake(server: &mut (TlsLayer, Stream), client: &mut (TlsLayer, Stream)) {
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..10 {
            client.0.flush(&mut client.1).unwrap();
            let _ = server.0.read(&mut server.1, &mut buf);
            let _ = client.0.read(&mut client.1, &mut buf);
        }
        assert!(server.0.take_handshake_finished() && client.0.take_handshake_finished());
    }

    /// Reads until the socket is drained, into buffers of `size` bytes.
    fn read_all(layer: &mut (TlsLayer, Stream), size: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; size];
        loop {
            match layer.0.read(&mut layer.1, &mut buf) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return got,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn holds_no_buffer(layer: &TlsLayer) -> bool {
        layer.incoming.capacity() + layer.leftover.capacity() + layer.pending.capacity() == 0
    }

    #[test]
    fn the_budget_counts_the_handshake_the_established_state_and_ciphertext_waiting() {
        let (mut server, mut client) = pair();
        // The ClientHello waits in the client's layer, and is counted.
        let (before, now) = client.0.recount();
        assert_eq!(before, HANDSHAKE_KIB);
        assert!(now > HANDSHAKE_KIB, "the ClientHello waiting is counted");
        handshake(&mut server, &mut client);
        assert_eq!(client.0.recount().1, ESTABLISHED_KIB);
        assert_eq!(server.0.recount().1, ESTABLISHED_KIB);
        assert_eq!(server.0.info().server_name.as_deref(), Some("localhost"));
        // The client stops reading: once the socket is full, the ciphertext it did not
        // take is counted until it is written.
        let chunk = vec![7u8; 64 * 1024];
        while server.0.write(&mut server.1, &chunk).is_ok() {}
        assert!(server.0.has_pending());
        let (_, waiting) = server.0.recount();
        assert!(waiting > ESTABLISHED_KIB, "ciphertext waiting is counted");
        while !server.0.flush(&mut server.1).unwrap() {
            read_all(&mut client, 64 * 1024);
        }
        read_all(&mut client, 64 * 1024);
        assert!(!server.0.has_pending());
        assert_eq!(server.0.recount().1, ESTABLISHED_KIB);
        assert!(holds_no_buffer(&server.0) && holds_no_buffer(&client.0));
    }

    #[test]
    fn records_larger_than_the_read_buffer_come_out_whole_and_in_order() {
        let (mut server, mut client) = pair();
        handshake(&mut server, &mut client);
        // 100 KB in one write: records of 16 KiB, read through a 1,000-byte buffer
        // (what does not fit waits in the layer) and through a 3-byte one.
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for size in [1000, 3] {
            let mut taken = 0;
            while taken < sent.len() {
                taken += server.0.write(&mut server.1, &sent[taken..]).unwrap();
            }
            let mut got = Vec::new();
            while got.len() < sent.len() {
                got.extend(read_all(&mut client, size));
            }
            assert!(got == sent, "what came out through a {size}-byte buffer");
            assert!(holds_no_buffer(&client.0));
        }
        // Both ways, and the end: close_notify reads as the end of the stream.
        client.0.write(&mut client.1, b"bye").unwrap();
        assert_eq!(read_all(&mut server, 64), b"bye");
        assert!(client.0.close_notify(&mut client.1).unwrap());
        let mut buf = [0u8; 16];
        assert_eq!(server.0.read(&mut server.1, &mut buf).unwrap(), 0);
    }

    /// The client asks for a TLS 1.3 key update (its own keys change, and the server
    /// must change its own before its next application data) and sends it.
    fn request_key_update(client: &mut (TlsLayer, Stream)) {
        let Session::Client(conn) = &mut client.0.session else {
            panic!("not a client")
        };
        match conn.process_tls_records(&mut []).state {
            Ok(ConnectionState::WriteTraffic(traffic)) => traffic.refresh_traffic_keys().unwrap(),
            other => panic!("not ready to write: {other:?}"),
        }
        // The next step encodes the request; a read takes it and writes it.
        let mut buf = [0u8; 64];
        assert!(client
            .0
            .read(&mut client.1, &mut buf)
            .is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock));
    }

    #[test]
    fn after_a_key_update_both_sides_go_on_pushing_and_answering() {
        let (mut server, mut client) = pair();
        handshake(&mut server, &mut client);
        // A key update with nothing after it; then the server pushes (no read of its
        // own in between): its key update must go out before the pushed records.
        request_key_update(&mut client);
        let mut buf = [0u8; 64];
        assert!(server.0.read(&mut server.1, &mut buf).is_err());
        server.0.write(&mut server.1, b"pushed").unwrap();
        assert_eq!(read_all(&mut client, 64), b"pushed");
        // And with data behind the request, answered.
        request_key_update(&mut client);
        client.0.write(&mut client.1, b"ping").unwrap();
        assert_eq!(read_all(&mut server, 64), b"ping");
        server.0.write(&mut server.1, b"pong").unwrap();
        assert_eq!(read_all(&mut client, 64), b"pong");
        client.0.write(&mut client.1, b"again").unwrap();
        assert_eq!(read_all(&mut server, 64), b"again");
    }

    #[test]
    fn a_peer_that_is_not_speaking_tls_fails_the_read_with_an_alert() {
        let (mut server, mut client) = pair();
        client.1.write(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = [0u8; 1024];
        let error = server.0.read(&mut server.1, &mut buf).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        // The alert that says why reached the peer.
        let mut alert = [0u8; 64];
        let n = client.1.read(&mut alert).unwrap();
        assert_eq!(alert[0], 0x15, "an alert record: {:?}", &alert[..n]);
    }
}
