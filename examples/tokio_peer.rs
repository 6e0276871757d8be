//! The comparison peer for the benchmarks: the same echo protocol as `switchboard echo`
//! (4-byte big-endian length, then the payload; UDP datagrams echoed), written the way
//! a Rust user would with tokio: a current-thread runtime, one task per connection,
//! tokio-util's `LengthDelimitedCodec`, and a `UdpSocket` loop.
//!
//! ```text
//! cargo run --release --features tokio-peer --example tokio_peer -- \
//!     --tcp 127.0.0.1:9100 --udp 127.0.0.1:9100 [--max-frame BYTES] [--flush-each] \
//!     [--tls-cert cert.pem --tls-key key.pem]
//! ```
//!
//! Replies decoded from one read are fed to the sink and flushed together (one write for
//! a pipelined batch, as switchboard does); `--flush-each` flushes after every frame
//! instead, the shape of the plainest `framed.send(frame).await` loop. SIGTERM or
//! SIGINT stops it cleanly (so `valgrind --tool=callgrind` writes its totals).
//!
//! With `--tls-cert` and `--tls-key`, every TCP connection speaks TLS through
//! tokio-rustls: rustls with the ring provider and its default configuration, as
//! `switchboard echo --tcp tls://ADDR` has it (so both agree on the same protocol
//! version, key exchange and cipher suite with the same client), and the same codec
//! path over the TLS stream. When the client ends, the peer answers its `close_notify`
//! with its own, as switchboard does.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::signal::unix::{signal, SignalKind};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Largest datagram: a UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

/// Command-line flags.
#[derive(Debug)]
struct Args {
    tcp: Vec<SocketAddr>,
    udp: Vec<SocketAddr>,
    /// Largest frame payload accepted (switchboard's default: 1 MiB).
    max_frame: usize,
    /// Flush after every frame rather than after each batch.
    flush_each: bool,
    /// Serve TLS on every TCP address with this certificate chain (PEM) ...
    tls_cert: Option<PathBuf>,
    /// ... and this key (PEM).
    tls_key: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        tcp: Vec::new(),
        udp: Vec::new(),
        max_frame: 1 << 20,
        flush_each: false,
        tls_cert: None,
        tls_key: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--tcp" => args
                .tcp
                .push(value()?.parse().map_err(|e| format!("--tcp: {e}"))?),
            "--udp" => args
                .udp
                .push(value()?.parse().map_err(|e| format!("--udp: {e}"))?),
            "--max-frame" => {
                args.max_frame = value()?.parse().map_err(|e| format!("--max-frame: {e}"))?
            }
            "--flush-each" => args.flush_each = true,
            "--tls-cert" => args.tls_cert = Some(value()?.into()),
            "--tls-key" => args.tls_key = Some(value()?.into()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.tcp.is_empty() && args.udp.is_empty() {
        return Err("give --tcp ADDR and/or --udp ADDR".into());
    }
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".into());
    }
    Ok(args)
}

/// The TLS acceptor of `--tls-cert` and `--tls-key`: rustls's defaults, as switchboard
/// builds its own (`ServerConfig::builder()`, no client certificates, one chain).
fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<TlsAcceptor, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("tokio_peer: {e}");
            return ExitCode::from(2);
        }
    };
    // Every connection is a descriptor: use the hard limit, as switchboard does.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("tokio_peer: cannot raise the open-file limit: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tokio_peer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match tls_acceptor(cert, key) {
            Ok(acceptor) => Some(acceptor),
            Err(e) => {
                eprintln!("tokio_peer: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    match runtime.block_on(serve(args, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio_peer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds every endpoint, serves until a signal, then returns (dropping the runtime
/// cancels the connection tasks).
async fn serve(args: Args, tls: Option<TlsAcceptor>) -> std::io::Result<()> {
    // UDP first: once TCP accepts, everything is ready (scripts wait for TCP).
    for addr in &args.udp {
        let socket = UdpSocket::bind(addr).await?;
        eprintln!("tokio_peer: listening on udp {}", socket.local_addr()?);
        tokio::spawn(udp_echo(socket));
    }
    for addr in &args.tcp {
        let listener = TcpListener::bind(addr).await?;
        let kind = if tls.is_some() { "tcp (TLS)" } else { "tcp" };
        eprintln!("tokio_peer: listening on {kind} {}", listener.local_addr()?);
        let (max_frame, flush_each) = (args.max_frame, args.flush_each);
        tokio::spawn(accept_loop(listener, tls.clone(), max_frame, flush_each));
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("tokio_peer: signal received, exiting");
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    max_frame: usize,
    flush_each: bool,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match &tls {
                None => {
                    tokio::spawn(echo_connection(stream, max_frame, flush_each));
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    tokio::spawn(tls_connection(acceptor, stream, max_frame, flush_each));
                }
            },
            Err(e) => {
                // Out of descriptors, most likely: wait for some to be closed.
                eprintln!("tokio_peer: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A plain TCP connection: echoes its frames.
async fn echo_connection(stream: TcpStream, max_frame: usize, flush_each: bool) {
    let _ = stream.set_nodelay(true);
    echo_frames(stream, max_frame, flush_each).await;
}

/// A TLS connection: its handshake, then its frames echoed over it, then (when the
/// client ended) a `close_notify` of its own.
async fn tls_connection(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    max_frame: usize,
    flush_each: bool,
) {
    let _ = stream.set_nodelay(true);
    let Ok(stream) = acceptor.accept(stream).await else {
        return;
    };
    if let Some(mut stream) = echo_frames(stream, max_frame, flush_each).await {
        let _ = stream.shutdown().await;
    }
}

/// Echoes frames until the peer closes (then gives the stream back) or until an error
/// or a frame over the limit.
async fn echo_frames<S>(stream: S, max_frame: usize, flush_each: bool) -> Option<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec();
    let mut framed = Framed::new(stream, codec);
    while let Some(frame) = framed.next().await {
        let frame = frame.ok()?;
        if flush_each {
            framed.send(frame.freeze()).await.ok()?;
            continue;
        }
        framed.feed(frame.freeze()).await.ok()?;
        // Echo every frame already decoded from the same read before flushing, so a
        // pipelined batch goes back in one write.
        while let Some(Some(Ok(frame))) = framed.next().now_or_never() {
            framed.feed(frame.freeze()).await.ok()?;
        }
        SinkExt::<Bytes>::flush(&mut framed).await.ok()?;
    }
    Some(framed.into_inner())
}

async fn udp_echo(socket: UdpSocket) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                let _ = socket.send_to(&buf[..n], peer).await;
            }
            // An ICMP error left by an earlier send: it concerns one peer only.
            Err(_) => continue,
        }
    }
}
