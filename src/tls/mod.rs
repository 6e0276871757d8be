//! TLS as a layer between a connection's socket and its codec, with rustls.
//!
//! rustls is a state machine that does no I/O of its own: through its unbuffered API
//! it is handed ciphertext and says, a step at a time, what it came to (plaintext
//! records, a handshake message to send, more input needed, ready to encrypt). That
//! fits a readiness loop exactly: the reactor reads the socket when it is readable,
//! and this layer turns what it read into plaintext for the codec; what the service
//! sends is encrypted on its way to the socket. The codec and the service see
//! plaintext only; a service that wants to know asks ([`crate::Context::tls`]).
//!
//! `config.rs` holds the configuration side: a listener's certificate and key
//! ([`TlsServer`], reloadable while connections stay up), and what a dial trusts
//! ([`TlsClient`]). `layer.rs` holds one connection's TLS state and its reads and
//! writes; this file, the functions the read and write paths call for a connection
//! with or without one. Without the `tls` feature, `off.rs` stands in: the same names,
//! and no connection ever has a layer.

#[cfg(feature = "tls")]
mod layer;
#[cfg(not(feature = "tls"))]
mod off;

#[cfg(feature = "tls")]
pub(crate) use layer::{TlsLayer, TlsTable};
#[cfg(not(feature = "tls"))]
pub(crate) use off::{TlsLayer, TlsTable};

#[cfg(feature = "tls")]
mod config;
#[cfg(feature = "tls")]
pub(crate) use config::DialTls;
// (For the chat's Redis link over TLS.)
#[cfg(all(feature = "tls", feature = "redis"))]
pub(crate) use config::{read_key_pair, system_roots_store, trust_pem_file};
#[cfg(feature = "tls")]
pub use config::{TlsClient, TlsError, TlsInfo, TlsServer};

use std::io::{self, IoSlice};

use crate::connection::{ConnId, Stream};

/// Why TLS ended `conn`, in rustls's words, asked in `on_close` (see
/// [`crate::Context::tls`]); always `None` without the `tls` feature, so callers need
/// no feature gate of their own.
#[cfg_attr(not(any(feature = "chat", feature = "loadgen")), allow(dead_code))]
pub(crate) fn failure<S: crate::Service>(
    ctx: &crate::Context<'_, S>,
    conn: ConnId,
) -> Option<String> {
    #[cfg(feature = "tls")]
    return ctx.tls(conn).and_then(|info| info.failure);
    #[cfg(not(feature = "tls"))]
    return {
        let _ = (ctx, conn);
        None
    };
}

/// Reads from a connection: plaintext through its TLS layer if it has one, else
/// straight from its socket.
#[inline(always)]
pub(crate) fn read(
    stream: &mut Stream,
    tls: Option<&mut TlsLayer>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match tls {
        None => stream.read(buf),
        Some(layer) => layer.read(stream, buf),
    }
}

/// Writes to a connection, through its TLS layer if it has one.
#[inline(always)]
pub(crate) fn write(
    stream: &mut Stream,
    tls: Option<&mut TlsLayer>,
    buf: &[u8],
) -> io::Result<usize> {
    match tls {
        None => stream.write(buf),
        Some(layer) => layer.write(stream, buf),
    }
}

/// [`write`] of several slices.
#[inline(always)]
pub(crate) fn write_vectored(
    stream: &mut Stream,
    tls: Option<&mut TlsLayer>,
    bufs: &[IoSlice<'_>],
) -> io::Result<usize> {
    match tls {
        None => stream.write_vectored(bufs),
        Some(layer) => layer.write_vectored(stream, bufs),
    }
}
