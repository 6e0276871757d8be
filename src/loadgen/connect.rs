//! Reaching the server before the run: a blocking probe (so "nothing listens" is one
//! clear error, not thousands of failed connections). The run's own connections are
//! then dialled by its reactor (`bench.rs`), a bounded number at a time.

use std::io;
use std::net::{SocketAddr, TcpStream as StdTcpStream, UdpSocket};
use std::time::Duration;

use super::{LoadError, Mode, Options};

/// How long the probe waits for the server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Checks that the server answers (every one of them, with `--addrs`): a TCP connect,
/// or for UDP one datagram echoed.
pub fn probe(options: &Options) -> Result<(), LoadError> {
    if options.mode == Mode::Udp {
        return probe_udp(options).map_err(|source| LoadError::Unreachable {
            addr: options.addr,
            source,
        });
    }
    for addr in options.servers() {
        StdTcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
            .map(drop)
            .map_err(|source| LoadError::Unreachable { addr, source })?;
    }
    Ok(())
}

fn probe_udp(options: &Options) -> io::Result<()> {
    let local: SocketAddr = match options.addr {
        SocketAddr::V4(_) => ([127, 0, 0, 1], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(options.addr)?;
    socket.set_read_timeout(Some(PROBE_TIMEOUT))?;
    socket.send(b"switchboard bench probe")?;
    let mut reply = [0u8; 64];
    match socket.recv(&mut reply) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no UDP echo within {PROBE_TIMEOUT:?}"),
            ))
        }
        Err(e) => Err(e),
    }
}
