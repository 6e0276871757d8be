//! An interactive client for `switchboard echo`: every line typed becomes one frame
//! (4-byte big-endian length + the line), and each echo is printed as it comes back;
//! a server that closes the connection is reported at once, even while nothing is
//! being typed. Empty lines are skipped. `--udp` sends each line as one datagram instead.
//! `--repeat N` instead sends N frames of `--size` bytes, pipelined, checks every echo
//! and prints the throughput.
//!
//! ```text
//! cargo run --release -- echo                       # in one terminal
//! cargo run --release --example echo_client         # in another: type lines
//! cargo run --release --example echo_client -- --udp
//! cargo run --release --example echo_client -- --repeat 100000 --size 64
//! ```

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use switchboard::frame::wire;

/// How long an echo may take before the client gives up on it.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// Talk to a switchboard echo server.
#[derive(Debug, Parser)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: SocketAddr,
    /// Use UDP datagrams instead of TCP frames.
    #[arg(long)]
    udp: bool,
    /// Send this many frames (pipelined) instead of reading stdin, and report throughput.
    #[arg(long, value_name = "N")]
    repeat: Option<u64>,
    /// Payload size for --repeat.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match (args.udp, args.repeat) {
        (true, _) => udp_session(args.addr),
        (false, Some(count)) => repeat(args.addr, count, args.size),
        (false, None) => tcp_session(args.addr),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot connect to {addr}: {e} (is the server running?)"),
        )
    })?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(ECHO_TIMEOUT))?;
    Ok(stream)
}

fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "payload over 4 GiB"))?;
    stream.write_all(&[&wire::header(len)[..], payload].concat())
}

fn read_frame(stream: &mut TcpStream, payload: &mut Vec<u8>) -> io::Result<()> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            io::Error::new(e.kind(), "the server closed the connection")
        }
        _ => e,
    })?;
    payload.resize(wire::announced(header) as usize, 0);
    stream.read_exact(payload)
}

/// Typed lines become frames on this thread, while a second thread prints each echo as
/// it arrives: so a server that closes the connection is reported at once, not when
/// the next line is typed.
fn tcp_session(addr: SocketAddr) -> io::Result<()> {
    let mut stream = connect(addr)?;
    // The reader waits for the server for as long as the user takes to type.
    stream.set_read_timeout(None)?;
    let mut reader = stream.try_clone()?;
    let (echoed, echoes) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut echo = Vec::new();
        let reason = loop {
            if let Err(e) = read_frame(&mut reader, &mut echo) {
                break e;
            }
            println!("{}", String::from_utf8_lossy(&echo));
            // The main thread is gone only once every echo it waited for is in.
            let _ = echoed.send(());
        };
        eprintln!("echo_client: {addr}: {reason}");
        std::process::exit(1);
    });
    eprintln!("connected to {addr}; type lines, end with Ctrl-D");
    let mut sent = 0u64;
    for line in io::stdin().lock().lines() {
        let line = line?;
        if line.is_empty() {
            continue; // nothing to send; an empty frame is valid, but not useful here
        }
        write_frame(&mut stream, line.as_bytes())?;
        sent += 1;
    }
    // The end of input: wait for the echoes still on their way.
    for _ in 0..sent {
        echoes
            .recv_timeout(ECHO_TIMEOUT)
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "an echo is missing"))?;
    }
    Ok(())
}

fn udp_session(addr: SocketAddr) -> io::Result<()> {
    let socket = UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    eprintln!("sending datagrams to {addr}; type lines, end with Ctrl-D");
    let mut reply = vec![0u8; 65_536];
    for line in io::stdin().lock().lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        socket.send(line.as_bytes())?;
        match socket.recv(&mut reply) {
            Ok(n) => println!("{}", String::from_utf8_lossy(&reply[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                eprintln!("no reply within 2 s (UDP may drop datagrams; is the server running?)")
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{addr}: {e}"))),
        }
    }
    Ok(())
}

/// Sends `count` frames from one thread while another reads and checks each echo:
/// the socket buffers keep many frames in flight.
fn repeat(addr: SocketAddr, count: u64, size: usize) -> io::Result<()> {
    let mut stream = connect(addr)?;
    let mut reader = stream.try_clone()?;
    let writer = std::thread::spawn(move || -> io::Result<()> {
        let mut payload = vec![0u8; size.max(8)];
        for seq in 0..count {
            payload[..8].copy_from_slice(&seq.to_be_bytes());
            write_frame(&mut stream, &payload)?;
        }
        Ok(())
    });
    let start = Instant::now();
    let mut echo = Vec::new();
    for seq in 0..count {
        read_frame(&mut reader, &mut echo)?;
        if echo.len() != size.max(8) || echo[..8] != seq.to_be_bytes() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("echo {seq} wrong"),
            ));
        }
    }
    let elapsed = start.elapsed();
    writer
        .join()
        .map_err(|_| io::Error::other("writer thread panicked"))??;
    let rate = count as f64 / elapsed.as_secs_f64();
    println!(
        "{count} frames of {} bytes in {:.3} s: {:.0} frames/s, {:.1} MB/s each way",
        size.max(8),
        elapsed.as_secs_f64(),
        rate,
        rate * (size.max(8) + 4) as f64 / 1e6
    );
    Ok(())
}
