//! A UDP endpoint: one socket, many peers, no connections and no framing.
//!
//! Each datagram keeps its boundaries, so it reaches the service whole (up to
//! [`crate::config::MAX_DATAGRAM`] bytes). Sending tries the socket at once; only when
//! the kernel's send buffer is full is the datagram queued (bounded by the write limit,
//! beyond which datagrams are dropped and counted, as UDP allows) and WRITABLE armed.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use crate::stats::Stats;

/// Names one of the reactor's UDP sockets, in the order they were configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpId(pub(crate) usize);

impl UdpId {
    /// Position of this socket in [`crate::Config::udp`].
    pub fn index(&self) -> usize {
        self.0
    }
}

impl fmt::Display for UdpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "udp {}", self.0)
    }
}

/// One UDP socket and the datagrams it could not send yet.
#[derive(Debug)]
pub(crate) struct UdpEndpoint {
    pub socket: UdpSocket,
    pub token: Token,
    /// Datagrams waiting for the socket to become writable, in order.
    queue: VecDeque<(SocketAddr, Box<[u8]>)>,
    /// Bytes in `queue`.
    queued_bytes: usize,
    /// WRITABLE interest is registered.
    writable_armed: bool,
}

impl UdpEndpoint {
    pub(crate) fn new(socket: UdpSocket, token: Token) -> Self {
        UdpEndpoint {
            socket,
            token,
            queue: VecDeque::new(),
            queued_bytes: 0,
            writable_armed: false,
        }
    }

    /// Sends now if nothing is queued ahead and the socket takes it; queues otherwise.
    /// A datagram that can be neither (an error for that peer, or the queue over the
    /// limit) is dropped and counted, as UDP allows.
    pub(crate) fn send_to(
        &mut self,
        peer: SocketAddr,
        datagram: &[u8],
        limit: usize,
        registry: &Registry,
        stats: &mut Stats,
    ) {
        if self.queue.is_empty() {
            loop {
                match self.socket.send_to(datagram, peer) {
                    Ok(_) => {
                        stats.datagrams_out += 1;
                        log::trace!("udp send_to {peer}: {} bytes", datagram.len());
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // E.g. an ICMP "port unreachable" reported on a later send:
                        // that peer is gone, nobody else is affected.
                        log::debug!("udp send_to {peer}: {e}");
                        stats.datagrams_dropped += 1;
                        return;
                    }
                }
            }
        }
        if self.queued_bytes + datagram.len() > limit {
            stats.datagrams_dropped += 1;
            return;
        }
        self.queued_bytes += datagram.len();
        self.queue.push_back((peer, datagram.into()));
        self.arm_writable(registry, true);
    }

    /// Sends queued datagrams until the socket is full or the queue is empty.
    pub(crate) fn flush(&mut self, registry: &Registry, stats: &mut Stats) {
        while let Some((peer, datagram)) = self.queue.front() {
            match self.socket.send_to(datagram, *peer) {
                Ok(_) => stats.datagrams_out += 1,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::debug!("udp send_to {peer}: {e}");
                    stats.datagrams_dropped += 1;
                }
            }
            if let Some((_, sent)) = self.queue.pop_front() {
                self.queued_bytes -= sent.len();
            }
        }
        self.arm_writable(registry, false);
    }

    fn arm_writable(&mut self, registry: &Registry, armed: bool) {
        if self.writable_armed == armed {
            return;
        }
        let interest = if armed {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        match registry.reregister(&mut self.socket, self.token, interest) {
            Ok(()) => self.writable_armed = armed,
            Err(e) => log::error!("udp reregister: {e}"),
        }
    }
}
