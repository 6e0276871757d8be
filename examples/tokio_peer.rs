//! The comparison peer for the benchmarks: the same echo protocol as `switchboard echo`
//! (4-byte big-endian length, then the payload; UDP datagrams echoed), written the way
//! a Rust user would with tokio: a current-thread runtime, one task per connection,
//! tokio-util's `LengthDelimitedCodec`, and a `UdpSocket` loop.
//!
//! ```text
//! cargo run --release --features tokio-peer --example tokio_peer -- \
//!     --tcp 127.0.0.1:9100 --udp 127.0.0.1:9100 [--max-frame BYTES] [--flush-each]
//! ```
//!
//! Replies decoded from one read are fed to the sink and flushed together (one write for
//! a pipelined batch, as switchboard does); `--flush-each` flushes after every frame
//! instead, the shape of the plainest `framed.send(frame).await` loop. SIGTERM or
//! SIGINT stops it cleanly (so `valgrind --tool=callgrind` writes its totals).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::signal::unix::{signal, SignalKind};
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
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        tcp: Vec::new(),
        udp: Vec::new(),
        max_frame: 1 << 20,
        flush_each: false,
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
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.tcp.is_empty() && args.udp.is_empty() {
        return Err("give --tcp ADDR and/or --udp ADDR".into());
    }
    Ok(args)
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
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio_peer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds every endpoint, serves until a signal, then returns (dropping the runtime
/// cancels the connection tasks).
async fn serve(args: Args) -> std::io::Result<()> {
    // UDP first: once TCP accepts, everything is ready (scripts wait for TCP).
    for addr in &args.udp {
        let socket = UdpSocket::bind(addr).await?;
        eprintln!("tokio_peer: listening on udp {}", socket.local_addr()?);
        tokio::spawn(udp_echo(socket));
    }
    for addr in &args.tcp {
        let listener = TcpListener::bind(addr).await?;
        eprintln!("tokio_peer: listening on tcp {}", listener.local_addr()?);
        let (max_frame, flush_each) = (args.max_frame, args.flush_each);
        tokio::spawn(accept_loop(listener, max_frame, flush_each));
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

async fn accept_loop(listener: TcpListener, max_frame: usize, flush_each: bool) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo_connection(stream, max_frame, flush_each));
            }
            Err(e) => {
                // Out of descriptors, most likely: wait for some to be closed.
                eprintln!("tokio_peer: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Echoes frames until the peer closes or sends a frame over the limit.
async fn echo_connection(stream: TcpStream, max_frame: usize, flush_each: bool) {
    let _ = stream.set_nodelay(true);
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec();
    let mut framed = Framed::new(stream, codec);
    while let Some(Ok(frame)) = framed.next().await {
        if flush_each {
            if framed.send(frame.freeze()).await.is_err() {
                return;
            }
            continue;
        }
        if framed.feed(frame.freeze()).await.is_err() {
            return;
        }
        // Echo every frame already decoded from the same read before flushing, so a
        // pipelined batch goes back in one write.
        while let Some(Some(Ok(frame))) = framed.next().now_or_never() {
            if framed.feed(frame.freeze()).await.is_err() {
                return;
            }
        }
        if SinkExt::<Bytes>::flush(&mut framed).await.is_err() {
            return;
        }
    }
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
