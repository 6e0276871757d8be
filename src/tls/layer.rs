//! One connection's TLS: its rustls state, the reads that turn the socket's
//! ciphertext into plaintext for the codec, and the writes that encrypt the service's
//! bytes on their way to the socket; and the table that holds the layers beside the
//! connections.
//!
//! The layer keeps the promises the read and write paths rely on for plain sockets:
//! - a read shorter than the buffer means the socket is drained (or at its end): the
//!   layer reads the socket until the buffer is full of plaintext or the socket says
//!   `WouldBlock`, so an edge-triggered poller never leaves decrypted bytes behind;
//! - a write that takes fewer bytes than offered means the socket is full: the layer
//!   takes new plaintext only once the ciphertext it owes is written, and says
//!   `WouldBlock` otherwise. Ciphertext still owed after a write (rustls encrypts a
//!   whole write at once) is the one thing a plain socket does not have: the write
//!   path asks [`TlsLayer::has_pending`] and keeps WRITABLE armed while it is true.
//!
//! The layers live in a table of their own, indexed like the connections' slab
//! ([`TlsTable`]), so a plain connection carries nothing for TLS and stays as small
//! as it was. The layer's reads and writes are out of line (`#[inline(never)]`), and
//! the read and write paths call them from branches of their own, so the code of the
//! plain paths stays what it was (`docs/benchmarks.md`: instructions per echo).

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use super::config::TlsInfo;
use crate::connection::{ConnId, Stream};

/// The memory budget's charge for a connection whose handshake is under way, in KiB:
/// rustls's state and buffers, as measured (2,000 connections that each sent the first
/// 100 bytes of a ClientHello: 10.2 KiB of RSS each; `docs/benchmarks.md`, TLS).
pub(crate) const HANDSHAKE_KIB: u64 = 11;
/// The charge once the handshake is done (measured the same way, connections that
/// each echoed one frame and went idle: 7.8 KiB each beyond a plain connection's).
pub(crate) const ESTABLISHED_KIB: u64 = 8;

/// Ciphertext rustls may hold for the socket before a write is refused (`WouldBlock`):
/// one write's worth (the write path's gathering limit) plus its records' overhead.
const SEND_LIMIT: usize = 80 * 1024;
/// What the budget adds while ciphertext waits for the socket: rustls does not say how
/// much it holds, so the most it may.
const PENDING_KIB: u64 = (SEND_LIMIT / 1024) as u64;

/// One connection's TLS state.
pub(crate) struct TlsLayer {
    session: Connection,
    /// The socket reached its end (the peer's FIN): nothing more will be read.
    eof: bool,
    /// A `close_notify` alert was queued for the peer.
    notify_queued: bool,
    /// The handshake was still under way at the last look (to tell its end once).
    handshaking: bool,
    /// What the memory budget counts for this layer now, in KiB ([`TlsLayer::recount`]).
    charged: u64,
}

impl TlsLayer {
    /// The layer of an accepted connection.
    pub(crate) fn server(config: Arc<ServerConfig>) -> io::Result<TlsLayer> {
        let session = ServerConnection::new(config).map_err(super::config::invalid_data)?;
        Ok(TlsLayer::with(Connection::Server(session)))
    }

    /// The layer of a dialled connection; its first flight (the ClientHello) waits
    /// in it for the connect to complete.
    pub(crate) fn client(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsLayer> {
        let session = ClientConnection::new(config, name).map_err(super::config::invalid_data)?;
        Ok(TlsLayer::with(Connection::Client(session)))
    }

    fn with(mut session: Connection) -> TlsLayer {
        session.set_buffer_limit(Some(SEND_LIMIT));
        TlsLayer {
            session,
            eof: false,
            notify_queued: false,
            handshaking: true,
            charged: HANDSHAKE_KIB,
        }
    }

    /// Fills `buf` with plaintext: what rustls holds decrypted, then what the socket
    /// brings, until `buf` is full, the socket would block, or its end. `Ok(0)` is the
    /// end of the stream (the peer's `close_notify`, or its FIN without one: logged,
    /// then treated as the end). Handshake messages and alerts rustls owes the peer
    /// are written on the way; a TLS error is an `InvalidData` error, after the alert
    /// that tells the peer why.
    #[inline(never)]
    pub(crate) fn read(&mut self, stream: &mut Stream, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            match self.session.reader().read(&mut buf[filled..]) {
                Ok(0) if filled < buf.len() => return Ok(filled), // close_notify: the end
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    log::debug!("TLS: the peer closed without close_notify");
                    return Ok(filled);
                }
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(filled);
            }
            match self.session.read_tls(&mut SocketIo(stream)) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
            if let Err(error) = self.session.process_new_packets() {
                // rustls queued an alert saying why: worth one attempt.
                let _ = self.session.write_tls(&mut SocketIo(stream));
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TLS: {error}"),
                ));
            }
            // The handshake's next flight, a key update, an alert: sent now; what the
            // socket does not take waits (`has_pending`).
            self.flush(stream)?;
        }
    }

    /// Encrypts as much of `buf` as the send limit allows and writes it: `Ok(n)` is
    /// the plaintext taken. Ciphertext owed from before is written first; if the
    /// socket does not take all of it, nothing new is taken (`WouldBlock`).
    #[inline(never)]
    pub(crate) fn write(&mut self, stream: &mut Stream, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(stream, &[IoSlice::new(buf)])
    }

    /// [`TlsLayer::write`] of several slices: rustls fills its records across them,
    /// and the records go to the socket together (one `writev`).
    ///
    /// Goes on, a send limit's worth at a time, until all of `bufs` is taken or the
    /// socket is full: a short count must mean the socket said `WouldBlock`, because
    /// that is what makes the kernel report WRITABLE again when it has room (the
    /// caller waits for that event, and would wait for ever after a short count that
    /// only meant "rustls's limit").
    #[inline(never)]
    pub(crate) fn write_vectored(
        &mut self,
        stream: &mut Stream,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut taken = 0;
        while self.flush(stream)? && taken < total {
            let step = match taken {
                0 => self.session.writer().write_vectored(bufs)?,
                _ => self
                    .session
                    .writer()
                    .write_vectored(&remaining(bufs, taken))?,
            };
            if step == 0 {
                break;
            }
            taken += step;
        }
        if taken == 0 && total > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    /// Writes the ciphertext owed to the peer: `Ok(true)` once all of it is written,
    /// `Ok(false)` when the socket is full.
    #[inline(never)]
    pub(crate) fn flush(&mut self, stream: &mut Stream) -> io::Result<bool> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut SocketIo(stream)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Ciphertext waits for room in the socket.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.session.wants_write()
    }

    /// Queues the `close_notify` alert (once) and writes what is owed: `Ok(true)`
    /// when all of it went out, so the FIN may follow.
    #[inline(never)]
    pub(crate) fn close_notify(&mut self, stream: &mut Stream) -> io::Result<bool> {
        if !self.notify_queued {
            self.notify_queued = true;
            self.session.send_close_notify();
        }
        self.flush(stream)
    }

    /// True once, at the first look after the handshake completed.
    pub(crate) fn take_handshake_finished(&mut self) -> bool {
        let finished = self.handshaking && !self.session.is_handshaking();
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

    /// Counts the layer again (its state, and ciphertext waiting for the socket):
    /// what was counted before and what is counted now, in KiB.
    pub(crate) fn recount(&mut self) -> (u64, u64) {
        let state = match self.handshaking {
            true => HANDSHAKE_KIB,
            false => ESTABLISHED_KIB,
        };
        let pending = match self.session.wants_write() {
            true => PENDING_KIB,
            false => 0,
        };
        let before = std::mem::replace(&mut self.charged, state + pending);
        (before, self.charged)
    }

    /// What the service may learn of it.
    pub(crate) fn info(&self) -> TlsInfo {
        let server_name = match &self.session {
            Connection::Server(s) => s.server_name().map(str::to_string),
            Connection::Client(_) => None,
        };
        TlsInfo {
            handshaking: self.session.is_handshaking(),
            server_name,
            peer_certificates: self
                .session
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.to_vec()).collect())
                .unwrap_or_default(),
            protocol: self.session.protocol_version().map(|v| format!("{v:?}")),
            cipher_suite: self
                .session
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite())),
        }
    }
}

/// What of `bufs` is left after the first `skip` bytes (a write that went past
/// rustls's send limit: rare, a write of more than the limit).
fn remaining<'b>(bufs: &'b [IoSlice<'_>], mut skip: usize) -> Vec<IoSlice<'b>> {
    let mut rest = Vec::with_capacity(bufs.len());
    for buf in bufs {
        let bytes: &'b [u8] = buf;
        if skip >= bytes.len() {
            skip -= bytes.len();
            continue;
        }
        rest.push(IoSlice::new(&bytes[skip..]));
        skip = 0;
    }
    rest
}

/// The socket as rustls reads and writes it.
struct SocketIo<'a>(&'a mut Stream);

impl Read for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The TLS layers of the connections that have one, indexed by slab key and checked
/// by generation. Empty (and never touched but for one comparison per I/O) in a
/// reactor without TLS endpoints.
#[derive(Default)]
pub(crate) struct TlsTable {
    slots: Vec<Option<(u32, Box<TlsLayer>)>>,
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

    /// A server and a client layer over the two ends of a Unix socket pair, the
    /// client trusting the server's self-signed certificate for `localhost`.
    fn pair() -> ((TlsLayer, Stream), (TlsLayer, Stream)) {
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
        let (a, b) = mio::net::UnixStream::pair().unwrap();
        let server = TlsLayer::server(Arc::new(server_config)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let client = TlsLayer::client(Arc::new(client_config), name).unwrap();
        ((server, Stream::Unix(a)), (client, Stream::Unix(b)))
    }

    #[test]
    fn the_budget_counts_the_handshake_the_established_state_and_ciphertext_waiting() {
        let ((mut server, mut server_end), (mut client, mut client_end)) = pair();
        // The ClientHello waits in the client's layer: the send limit is counted too.
        assert_eq!(
            client.recount(),
            (HANDSHAKE_KIB, HANDSHAKE_KIB + PENDING_KIB)
        );
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..10 {
            client.flush(&mut client_end).unwrap();
            let _ = server.read(&mut server_end, &mut buf);
            let _ = client.read(&mut client_end, &mut buf);
        }
        assert!(server.take_handshake_finished() && client.take_handshake_finished());
        assert_eq!(
            client.recount(),
            (HANDSHAKE_KIB + PENDING_KIB, ESTABLISHED_KIB)
        );
        assert_eq!(server.recount().1, ESTABLISHED_KIB);
        // The client stops reading: once the socket is full, what rustls encrypted and
        // the socket did not take is counted until it is written.
        let chunk = vec![7u8; 64 * 1024];
        while server.write(&mut server_end, &chunk).is_ok() {}
        assert!(server.has_pending());
        assert_eq!(
            server.recount(),
            (ESTABLISHED_KIB, ESTABLISHED_KIB + PENDING_KIB)
        );
        while client.read(&mut client_end, &mut buf).is_ok_and(|n| n > 0) {
            if server.flush(&mut server_end).unwrap() {
                break;
            }
        }
        assert!(!server.has_pending());
        assert_eq!(server.recount().1, ESTABLISHED_KIB);
    }
}
