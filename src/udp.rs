//! A UDP endpoint: one socket, many peers, no connections and no framing.
//!
//! Each datagram keeps its boundaries, so it reaches the service whole (up to
//! [`crate::config::MAX_DATAGRAM`] bytes).
//!
//! Sending is batched per burst: the datagrams callbacks send while the loop serves one
//! burst of received datagrams (or one turn) are gathered back to back, and sent when
//! the burst ends, before the loop waits again. On Linux, consecutive datagrams to the
//! same peer of the same size (the last may be shorter) leave in one `sendmsg` with
//! UDP segmentation offload (`UDP_SEGMENT`): the kernel cuts them into the same
//! datagrams, but runs its send path once for the run instead of once per datagram,
//! which is most of what a small datagram costs. Elsewhere, or if the kernel refuses
//! segmentation, each datagram is one `send_to`.
//!
//! Only when the kernel's send buffer is full is a datagram queued (bounded by the
//! write limit, beyond which datagrams are dropped and counted, as UDP allows) and
//! WRITABLE armed.
//!
//! Some destinations are refused whatever the service asks ([`refusal`]): port 0 and
//! the unspecified addresses (`0.0.0.0`, `::`), which no peer can have, and the
//! socket's own address, where a datagram would come straight back to the same socket.
//! A source address on a datagram is only what its sender wrote there, so a service
//! that answers its peers would otherwise answer forged sources like these: its own
//! address makes a loop (each answer answered again), the others are never a real
//! peer. Refused datagrams are counted in [`Stats::datagrams_refused`] and logged at
//! most once a second, with the number refused since the last line.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use crate::stats::Stats;
use crate::throttle::Throttle;

/// Names one of the reactor's UDP sockets, numbered in the order they were bound:
/// those of [`crate::Config::udp`] first, then any added with
/// [`crate::Reactor::bind_udp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpId(pub(crate) usize);

impl UdpId {
    /// Position of this socket among the reactor's UDP sockets.
    pub fn index(&self) -> usize {
        self.0
    }
}

impl fmt::Display for UdpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "udp {}", self.0)
    }
}

/// The most datagrams one segmented send carries (the kernel's `UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;
/// The most bytes a burst gathers before it is sent: one segmented send must fit in
/// one IP packet before the kernel cuts it.
const MAX_BURST_BYTES: usize = 65_000;
/// The least time between two warnings about refused destinations: a flood of forged
/// sources must not become a flood of log lines.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Why a datagram is not sent to an address ([`refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Port 0: no socket can receive there.
    PortZero,
    /// `0.0.0.0` or `::`: "any address" when binding, no one's address as a destination.
    Unspecified,
    /// The sending socket's own address: the datagram would come back to it.
    OwnAddress,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::PortZero => "port 0",
            Refusal::Unspecified => "an unspecified address",
            Refusal::OwnAddress => "this socket's own address",
        })
    }
}

/// Whether a socket bound to `local` must not send to `peer`, and why.
///
/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`, as a dual-stack socket sees
/// IPv4 peers) is judged as the IPv4 address. A socket bound to an unspecified address
/// receives on every local address; of those, only the loopback ones are known here
/// without asking the system, so a loopback peer on the socket's own port counts as
/// its own address (another socket on the same port and a loopback address would be
/// another program bound in its place, which the bind on every address rules out).
pub(crate) fn refusal(peer: SocketAddr, local: Option<SocketAddr>) -> Option<Refusal> {
    let ip = peer.ip().to_canonical();
    if peer.port() == 0 {
        return Some(Refusal::PortZero);
    }
    if ip.is_unspecified() {
        return Some(Refusal::Unspecified);
    }
    let local = local?;
    let local_ip = local.ip().to_canonical();
    let same_host = ip == local_ip || (local_ip.is_unspecified() && ip.is_loopback());
    (peer.port() == local.port() && same_host).then_some(Refusal::OwnAddress)
}

/// One UDP socket, the datagrams of the current burst, and those it could not send yet.
#[derive(Debug)]
pub(crate) struct UdpEndpoint {
    pub socket: UdpSocket,
    pub token: Token,
    /// This burst's datagrams, back to back, not sent yet.
    burst: Vec<u8>,
    /// Each of them: its peer and length.
    burst_datagrams: Vec<(SocketAddr, usize)>,
    /// Segmentation offload may be tried; off once the kernel refuses it.
    segmentation: bool,
    /// Datagrams waiting for the socket to become writable, in order.
    queue: VecDeque<(SocketAddr, Box<[u8]>)>,
    /// Bytes in `queue`.
    queued_bytes: usize,
    /// WRITABLE interest is registered.
    writable_armed: bool,
    /// The address the socket is bound to (`None` if the system would not say), for
    /// refusing datagrams to it.
    local: Option<SocketAddr>,
    /// Warnings about refused destinations, one per [`REFUSAL_LOG_INTERVAL`].
    refusal_log: Throttle,
}

impl UdpEndpoint {
    pub(crate) fn new(socket: UdpSocket, token: Token) -> Self {
        UdpEndpoint {
            token,
            burst: Vec::new(),
            burst_datagrams: Vec::new(),
            segmentation: cfg!(target_os = "linux"),
            queue: VecDeque::new(),
            queued_bytes: 0,
            writable_armed: false,
            local: socket.local_addr().ok(),
            refusal_log: Throttle::new(REFUSAL_LOG_INTERVAL),
            socket,
        }
    }

    /// Adds a datagram to the current burst, which [`UdpEndpoint::send_burst`] sends
    /// before the loop waits again (at once if the burst is full). A datagram to a
    /// refused destination ([`refusal`]) is dropped and counted instead.
    pub(crate) fn send_to(
        &mut self,
        peer: SocketAddr,
        datagram: &[u8],
        limit: usize,
        registry: &Registry,
        stats: &mut Stats,
    ) {
        if let Some(why) = refusal(peer, self.local) {
            stats.datagrams_refused += 1;
            self.log_refusal(peer, why);
            return;
        }
        if self.burst_datagrams.len() == MAX_SEGMENTS
            || self.burst.len() + datagram.len() > MAX_BURST_BYTES
        {
            self.send_burst(limit, registry, stats);
        }
        self.burst.extend_from_slice(datagram);
        self.burst_datagrams.push((peer, datagram.len()));
    }

    /// Warns of a refused destination, at most once per [`REFUSAL_LOG_INTERVAL`]; the
    /// line counts the refusals it stands for. Refusals are rare unless someone forges
    /// sources, so reading the clock here costs the common path nothing.
    fn log_refusal(&mut self, peer: SocketAddr, why: Refusal) {
        let Some(count) = self.refusal_log.note(Instant::now()) else {
            return;
        };
        let local = self.local.map_or("?".to_string(), |a| a.to_string());
        log::warn!(
            "udp {local}: not sending to {peer}, {why} (a forged source address?); \
             {count} datagrams refused since the last warning"
        );
    }

    /// Whether datagrams of the current burst wait to be sent.
    pub(crate) fn has_burst(&self) -> bool {
        !self.burst_datagrams.is_empty()
    }

    /// Sends the current burst: each run of same-peer, same-size datagrams in one
    /// segmented send where possible, the rest one by one. What the socket cannot take
    /// is queued behind the datagrams already waiting for WRITABLE.
    pub(crate) fn send_burst(&mut self, limit: usize, registry: &Registry, stats: &mut Stats) {
        let datagrams = std::mem::take(&mut self.burst_datagrams);
        let bytes = std::mem::take(&mut self.burst);
        let mut start = 0;
        let mut offset = 0;
        while start < datagrams.len() {
            let run = &datagrams[start..start + run_length(&datagrams[start..])];
            let run_bytes: usize = run.iter().map(|&(_, len)| len).sum();
            let sent = match self.queue.is_empty() {
                true => self.send_run(run, &bytes[offset..offset + run_bytes], stats),
                false => 0,
            };
            if sent < run.len() {
                let sent_bytes: usize = run[..sent].iter().map(|&(_, len)| len).sum();
                let (rest, rest_bytes) =
                    (&datagrams[start + sent..], &bytes[offset + sent_bytes..]);
                self.queue_from(rest, rest_bytes, limit, registry, stats);
                break;
            }
            start += run.len();
            offset += run_bytes;
        }
        // Keep both allocations for the next burst.
        self.burst = bytes;
        self.burst.clear();
        self.burst_datagrams = datagrams;
        self.burst_datagrams.clear();
    }

    /// Sends a run of datagrams to one peer (see [`run_length`]): in one segmented send
    /// if it has several and the kernel takes it, else one by one. Returns how many were
    /// sent (or dropped for an error) before the socket was full.
    fn send_run(&mut self, run: &[(SocketAddr, usize)], bytes: &[u8], stats: &mut Stats) -> usize {
        let (peer, size) = run[0];
        if run.len() > 1 && self.segmentation {
            loop {
                match send_segmented(&self.socket, peer, bytes, size) {
                    Ok(_) => {
                        stats.datagrams_out += run.len() as u64;
                        log::trace!(
                            "udp send_to {peer}: {} datagrams of {size} bytes",
                            run.len()
                        );
                        return run.len();
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return 0,
                    Err(e) if segmentation_refused(&e) => {
                        log::debug!(
                            "udp: segmentation offload refused ({e}): one send per datagram"
                        );
                        self.segmentation = false;
                        break;
                    }
                    // Probably about this peer (an ICMP error reported late): the
                    // datagrams sent one by one find out and count it.
                    Err(_) => break,
                }
            }
        }
        let mut offset = 0;
        for (sent, &(peer, len)) in run.iter().enumerate() {
            if !send_one(&self.socket, peer, &bytes[offset..offset + len], stats) {
                return sent;
            }
            offset += len;
        }
        run.len()
    }

    /// Queues the datagrams from `datagrams` on (their bytes from `bytes` on) to wait
    /// for WRITABLE, dropping and counting those beyond `limit`.
    fn queue_from(
        &mut self,
        datagrams: &[(SocketAddr, usize)],
        bytes: &[u8],
        limit: usize,
        registry: &Registry,
        stats: &mut Stats,
    ) {
        let mut offset = 0;
        for &(peer, len) in datagrams {
            let datagram = &bytes[offset..offset + len];
            offset += len;
            if self.queued_bytes + len > limit {
                stats.datagrams_dropped += 1;
                continue;
            }
            self.queued_bytes += len;
            self.queue.push_back((peer, datagram.into()));
        }
        self.arm_writable(registry, true);
    }

    /// Sends queued datagrams until the socket is full or the queue is empty (the
    /// socket became writable).
    pub(crate) fn flush(&mut self, registry: &Registry, stats: &mut Stats) {
        while let Some((peer, datagram)) = self.queue.front() {
            if !send_one(&self.socket, *peer, datagram, stats) {
                return;
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

/// How many datagrams from the start of `datagrams` one segmented send can carry: the
/// same peer, the first one's size, except that the last may be shorter (so a shorter
/// one ends the run); at least one. Empty datagrams always go alone.
fn run_length(datagrams: &[(SocketAddr, usize)]) -> usize {
    let (peer, size) = datagrams[0];
    if size == 0 || size > usize::from(u16::MAX) {
        return 1;
    }
    let mut count = 1;
    for &(next_peer, len) in &datagrams[1..] {
        if next_peer != peer || len > size || len == 0 {
            break;
        }
        count += 1;
        if len < size {
            break;
        }
    }
    count
}

/// One `send_to`. Returns false if the socket is full (nothing sent); an error for the
/// peer drops the datagram and counts it.
fn send_one(socket: &UdpSocket, peer: SocketAddr, datagram: &[u8], stats: &mut Stats) -> bool {
    loop {
        match socket.send_to(datagram, peer) {
            Ok(_) => {
                stats.datagrams_out += 1;
                log::trace!("udp send_to {peer}: {} bytes", datagram.len());
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                // E.g. an ICMP "port unreachable" reported on a later send: that peer
                // is gone, nobody else is affected.
                log::debug!("udp send_to {peer}: {e}");
                stats.datagrams_dropped += 1;
                return true;
            }
        }
    }
}

/// Sends `bytes` to `peer` as datagrams of `size` bytes (the last may be shorter) in
/// one `sendmsg`, with the `UDP_SEGMENT` control message telling the kernel where to
/// cut.
#[cfg(target_os = "linux")]
fn send_segmented(
    socket: &UdpSocket,
    peer: SocketAddr,
    bytes: &[u8],
    size: usize,
) -> io::Result<usize> {
    let size = u16::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let addr = socket2::SockAddr::from(peer);
    let buffers = [io::IoSlice::new(bytes)];
    let mut control = [0u8; SEGMENT_CONTROL_SPACE];
    let msg = socket2::MsgHdr::new()
        .with_addr(&addr)
        .with_buffers(&buffers)
        .with_control(segment_size_control(size, &mut control));
    socket2::SockRef::from(socket).sendmsg(&msg, 0)
}

#[cfg(not(target_os = "linux"))]
fn send_segmented(_: &UdpSocket, _: SocketAddr, _: &[u8], _: usize) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Errors that mean this kernel (or this route) does not do UDP segmentation.
fn segmentation_refused(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    ) || e.raw_os_error() == Some(5) // EIO: the device cannot checksum the segments
}

/// `SOL_UDP` and `UDP_SEGMENT` from Linux's `<linux/udp.h>`.
#[cfg(target_os = "linux")]
const SOL_UDP: i32 = 17;
#[cfg(target_os = "linux")]
const UDP_SEGMENT: i32 = 103;
/// `CMSG_SPACE(sizeof(u16))`: a `cmsghdr` (a `size_t` length, then level and type as
/// `int`s), the `u16`, padded to the alignment of `size_t`.
#[cfg(target_os = "linux")]
const SEGMENT_CONTROL_SPACE: usize = 2 * std::mem::size_of::<usize>() + 8;

/// Writes the control message `UDP_SEGMENT = size` into `buf` in the layout of Linux's
/// `struct cmsghdr` and returns it: socket2 takes control messages as bytes.
#[cfg(target_os = "linux")]
fn segment_size_control(size: u16, buf: &mut [u8; SEGMENT_CONTROL_SPACE]) -> &[u8] {
    let word = std::mem::size_of::<usize>();
    let header = word + 8;
    // cmsg_len is CMSG_LEN(2): the header and the data, without the trailing padding.
    buf[..word].copy_from_slice(&(header + 2).to_ne_bytes());
    buf[word..word + 4].copy_from_slice(&SOL_UDP.to_ne_bytes());
    buf[word + 4..header].copy_from_slice(&UDP_SEGMENT.to_ne_bytes());
    buf[header..header + 2].copy_from_slice(&size.to_ne_bytes());
    &buf[..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_run_is_one_peer_one_size_and_may_end_shorter() {
        let (a, b) = (peer(1), peer(2));
        assert_eq!(run_length(&[(a, 64), (a, 64), (a, 64)]), 3);
        assert_eq!(run_length(&[(a, 64), (a, 64), (a, 10), (a, 64)]), 3);
        assert_eq!(run_length(&[(a, 64), (a, 65)]), 1);
        assert_eq!(run_length(&[(a, 64), (b, 64)]), 1);
        assert_eq!(run_length(&[(a, 0), (a, 0)]), 1);
        assert_eq!(run_length(&[(a, 64), (a, 0)]), 1);
        assert_eq!(run_length(&[(a, 70_000), (a, 70_000)]), 1);
        assert_eq!(run_length(&[(b, 8)]), 1);
    }

    #[test]
    fn port_zero_unspecified_and_own_addresses_are_refused() {
        let v4 = |s: &str| s.parse::<SocketAddr>().unwrap();
        let bound = Some(v4("127.0.0.1:9001"));
        assert_eq!(refusal(v4("127.0.0.1:0"), bound), Some(Refusal::PortZero));
        assert_eq!(refusal(v4("0.0.0.0:53"), bound), Some(Refusal::Unspecified));
        assert_eq!(refusal(v4("[::]:53"), bound), Some(Refusal::Unspecified));
        assert_eq!(
            refusal(v4("127.0.0.1:9001"), bound),
            Some(Refusal::OwnAddress)
        );
        assert_eq!(
            refusal(v4("[::ffff:127.0.0.1]:9001"), bound),
            Some(Refusal::OwnAddress),
            "an IPv4 address written as IPv6 is the same address"
        );
        assert_eq!(refusal(v4("127.0.0.1:9002"), bound), None);
        assert_eq!(refusal(v4("127.0.0.2:9001"), bound), None);
        assert_eq!(refusal(v4("10.0.0.1:9001"), bound), None);
        // Bound to every address: the loopback ones on its port are its own.
        let any = Some(v4("0.0.0.0:9001"));
        assert_eq!(
            refusal(v4("127.0.0.1:9001"), any),
            Some(Refusal::OwnAddress)
        );
        assert_eq!(
            refusal(v4("127.9.9.9:9001"), any),
            Some(Refusal::OwnAddress)
        );
        assert_eq!(refusal(v4("127.0.0.1:9002"), any), None);
        let any6 = Some(v4("[::]:9001"));
        assert_eq!(refusal(v4("[::1]:9001"), any6), Some(Refusal::OwnAddress));
        assert_eq!(
            refusal(v4("[::1]:9001"), Some(v4("[::1]:9001"))),
            Some(Refusal::OwnAddress)
        );
        assert_eq!(refusal(v4("[2001:db8::1]:9001"), any6), None);
        // Without a known local address only the first two rules apply.
        assert_eq!(refusal(v4("127.0.0.1:9001"), None), None);
        assert_eq!(refusal(v4("127.0.0.1:0"), None), Some(Refusal::PortZero));
    }

    #[test]
    fn a_datagram_to_a_refused_destination_is_counted_not_sent() {
        let poll = mio::Poll::new().unwrap();
        let socket = UdpSocket::bind(peer(0)).unwrap();
        let own = socket.local_addr().unwrap();
        let mut endpoint = UdpEndpoint::new(socket, Token(0));
        let mut stats = Stats::default();
        for to in [own, peer(0), SocketAddr::from(([0, 0, 0, 0], 53))] {
            endpoint.send_to(to, b"x", 1 << 20, poll.registry(), &mut stats);
        }
        assert_eq!(stats.datagrams_refused, 3);
        assert!(!endpoint.has_burst(), "nothing was queued to send");
        endpoint.send_to(peer(9), b"x", 1 << 20, poll.registry(), &mut stats);
        assert!(endpoint.has_burst(), "another address is sent to");
        assert_eq!(stats.datagrams_refused, 3);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_segment_control_message_has_the_cmsghdr_layout() {
        let mut buf = [0u8; SEGMENT_CONTROL_SPACE];
        let control = segment_size_control(1200, &mut buf).to_vec();
        let word = std::mem::size_of::<usize>();
        let mut len = [0u8; std::mem::size_of::<usize>()];
        len.copy_from_slice(&control[..word]);
        assert_eq!(usize::from_ne_bytes(len), word + 8 + 2);
        assert_eq!(control[word..word + 4], 17i32.to_ne_bytes());
        assert_eq!(control[word + 4..word + 8], 103i32.to_ne_bytes());
        assert_eq!(control[word + 8..word + 10], 1200u16.to_ne_bytes());
        assert_eq!(control.len() % word, 0);
    }
}
