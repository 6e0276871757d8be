//! End-to-end tests of the protocol examples, run as the programs they are
//! (`cargo test` builds them): uppercase over each framing and UDP, file transfer in
//! the tutorials' wire format, and the line protocol.

mod common;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    ask, connect, example_path, frame, is_closed, read_frame, read_line, udp_client, wait_until,
    ChildServer, IO_TIMEOUT,
};
use md5::{Digest, Md5};
use serde_json::{json, Value};

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("switchboard-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn log(&self) -> PathBuf {
        self.0.join("server.log")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Starts example `name` with `args`, its log in `log`, and waits until `port` accepts.
#[track_caller]
fn start_example(name: &str, args: &[&str], port: u16, log: &Path) -> ChildServer {
    let child = Command::new(example_path(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .expect("spawn the example");
    let server = ChildServer { child };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_until(IO_TIMEOUT, || TcpStream::connect(addr).is_ok()),
        "{name} did not listen on {addr}"
    );
    server
}

/// A running example and the directory holding its log (and uploads).
struct Running {
    server: ChildServer,
    port: u16,
    /// Removed once the server (dropped first) has stopped.
    _scratch: Scratch,
}

/// An uppercase server with `framing` on TCP and UDP.
fn start_uppercase(test: &str, framing: &str) -> Running {
    let scratch = Scratch::new(test);
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let args = ["--framing", framing, "--tcp", &addr, "--udp", &addr];
    let server = start_example("uppercase", &args, port, &scratch.log());
    Running {
        server,
        port,
        _scratch: scratch,
    }
}

fn local(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    stream.read_exact(&mut bytes).unwrap();
    bytes
}

#[test]
fn uppercase_raw_answers_the_tutorial_client() {
    let server = start_uppercase("upper-raw", "raw");
    let mut stream = connect(local(server.port));
    stream.write_all(b"linhaifeng nb").unwrap();
    assert_eq!(read_exactly(&mut stream, 13), b"LINHAIFENG NB");
}

#[test]
fn uppercase_lines_answers_each_line_however_it_arrives() {
    let server = start_uppercase("upper-lines", "lines");
    let mut stream = connect(local(server.port));
    // Two lines in one write, then one line split across two writes.
    stream.write_all("hello\nstraße\nwor".as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    stream.write_all(b"ld\n").unwrap();
    let expected = "HELLO\nSTRASSE\nWORLD\n".as_bytes();
    assert_eq!(read_exactly(&mut stream, expected.len()), expected);
}

#[test]
fn uppercase_length_answers_frame_by_frame() {
    let server = start_uppercase("upper-length", "length");
    let mut stream = connect(local(server.port));
    let wire = [frame(b"abc"), frame(b""), frame(b"linhaifeng nb")].concat();
    stream.write_all(&wire).unwrap();
    assert_eq!(read_frame(&mut stream).unwrap(), b"ABC");
    assert_eq!(read_frame(&mut stream).unwrap(), b"");
    assert_eq!(read_frame(&mut stream).unwrap(), b"LINHAIFENG NB");
}

#[test]
fn uppercase_udp_answers_each_datagram() {
    let server = start_uppercase("upper-udp", "raw");
    let socket = udp_client();
    socket.connect(local(server.port)).unwrap();
    let mut reply = [0u8; 1024];
    for message in ["linhaifeng nb", "hello"] {
        socket.send(message.as_bytes()).unwrap();
        let n = socket.recv(&mut reply).unwrap();
        assert_eq!(&reply[..n], message.to_uppercase().as_bytes());
    }
}

// ---- file transfer ----

/// What Python's `struct.pack("i", n)` writes: a native-order signed 32-bit number
/// (little-endian on x86, as the article's header is).
fn struct_pack_i(n: i32) -> [u8; 4] {
    n.to_ne_bytes()
}

/// An upload exactly as the article's client sends it: header length, JSON header,
/// body.
fn article_upload(file_name: &str, body: &[u8], md5: &str) -> Vec<u8> {
    let header = json!({"file_size": body.len(), "file_name": file_name, "md5": md5});
    let header = header.to_string().into_bytes();
    [&struct_pack_i(header.len() as i32)[..], &header, body].concat()
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads one reply dict framed like the header.
fn read_reply(stream: &mut TcpStream) -> Value {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let json = read_exactly(stream, i32::from_ne_bytes(len) as usize);
    serde_json::from_slice(&json).unwrap()
}

/// Bytes that look random, the same every run.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A file-transfer server storing into `dir`.
struct Uploads {
    running: Running,
    dir: PathBuf,
    addr: SocketAddr,
}

fn start_file_server(test: &str) -> Uploads {
    let scratch = Scratch::new(test);
    let dir = scratch.0.join("uploads");
    let port = common::free_port();
    let addr = local(port);
    let args = [
        "serve",
        "--dir",
        dir.to_str().unwrap(),
        "--addr",
        &addr.to_string(),
    ];
    let server = start_example("file_transfer", &args, port, &scratch.log());
    Uploads {
        running: Running {
            server,
            port,
            _scratch: scratch,
        },
        dir,
        addr,
    }
}

/// File names in the upload directory.
fn stored_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_articles_upload_is_stored_intact_and_the_connection_serves_more() {
    assert!(cfg!(target_endian = "big") || struct_pack_i(16) == [16, 0, 0, 0]);
    let uploads = start_file_server("upload");
    let body = pseudo_random(3 * 1024 * 1024 + 7);
    let md5 = md5_hex(&body);
    let wire = article_upload("photo.jpg", &body, &md5);
    let mut stream = connect(uploads.addr);
    // In odd pieces: the header length, the header and the body split anywhere.
    for piece in wire.chunks(65_521) {
        stream.write_all(piece).unwrap();
    }
    assert_eq!(read_reply(&mut stream), json!({"status": "ok", "md5": md5}));
    assert_eq!(fs::read(uploads.dir.join("photo.jpg")).unwrap(), body);

    // A second upload on the same connection, all in one write.
    let second = b"second file\n";
    stream
        .write_all(&article_upload("notes.txt", second, &md5_hex(second)))
        .unwrap();
    assert_eq!(read_reply(&mut stream)["status"], "ok");
    assert_eq!(fs::read(uploads.dir.join("notes.txt")).unwrap(), second);
    // An empty file too.
    stream
        .write_all(&article_upload("empty", b"", &md5_hex(b"")))
        .unwrap();
    assert_eq!(read_reply(&mut stream)["status"], "ok");
    assert_eq!(
        stored_files(&uploads.dir),
        ["empty", "notes.txt", "photo.jpg"]
    );
}

#[test]
fn names_that_would_leave_the_directory_are_refused() {
    let uploads = start_file_server("traversal");
    let body = b"not for you";
    let md5 = md5_hex(body);
    let mut stream = connect(uploads.addr);
    for name in [
        "../escaped.txt",
        "/tmp/absolute.txt",
        "sub/dir.txt",
        "a\0b",
        "",
        "..",
        ".",
    ] {
        stream.write_all(&article_upload(name, body, &md5)).unwrap();
        let reply = read_reply(&mut stream);
        assert_eq!(reply["status"], "error", "{name:?}: {reply}");
        assert!(
            reply["reason"].as_str().unwrap().contains("file name"),
            "{reply}"
        );
    }
    // The refused bodies were skipped: the stream is still in step.
    stream
        .write_all(&article_upload("fine.txt", body, &md5))
        .unwrap();
    assert_eq!(read_reply(&mut stream)["status"], "ok");
    assert_eq!(stored_files(&uploads.dir), ["fine.txt"]);
    assert!(!uploads.dir.parent().unwrap().join("escaped.txt").exists());
}

#[test]
fn a_wrong_md5_is_refused_and_nothing_is_stored() {
    let uploads = start_file_server("md5");
    let mut stream = connect(uploads.addr);
    stream
        .write_all(&article_upload("bad.bin", b"abc", &md5_hex(b"abd")))
        .unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!(reply["status"], "error");
    assert!(
        reply["reason"].as_str().unwrap().contains("md5 mismatch"),
        "{reply}"
    );
    assert!(
        stored_files(&uploads.dir).is_empty(),
        "no partial file is left behind"
    );
}

#[test]
fn a_negative_header_length_is_a_protocol_error() {
    let uploads = start_file_server("negative");
    let mut stream = connect(uploads.addr);
    stream.write_all(&struct_pack_i(-1)).unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!(reply["status"], "error");
    assert!(
        reply["reason"].as_str().unwrap().contains("negative"),
        "{reply}"
    );
    assert!(is_closed(&mut stream));
}

#[test]
fn the_example_client_uploads_a_file() {
    let uploads = start_file_server("client");
    let source = uploads.dir.parent().unwrap().join("source.bin");
    let body = pseudo_random(200_000);
    fs::write(&source, &body).unwrap();
    let output = Command::new(example_path("file_transfer"))
        .args([
            "send",
            "--addr",
            &uploads.addr.to_string(),
            source.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let reply: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reply, json!({"status": "ok", "md5": md5_hex(&body)}));
    assert_eq!(fs::read(uploads.dir.join("source.bin")).unwrap(), body);
}

/// The server's peak resident memory, from /proc.
#[cfg(target_os = "linux")]
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn a_large_upload_is_streamed_not_held_in_memory() {
    const SIZE: usize = 32 * 1024 * 1024;
    let uploads = start_file_server("large");
    let pid = uploads.running.server.child.id();
    let before = peak_rss_kib(pid);
    let chunk = pseudo_random(1024 * 1024);
    let mut digest = Md5::new();
    (0..SIZE / chunk.len()).for_each(|_| digest.update(&chunk));
    let md5: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut stream = connect(uploads.addr);
    let header = json!({"file_size": SIZE, "file_name": "large.bin", "md5": md5}).to_string();
    stream
        .write_all(&struct_pack_i(header.len() as i32))
        .unwrap();
    stream.write_all(header.as_bytes()).unwrap();
    for _ in 0..SIZE / chunk.len() {
        stream.write_all(&chunk).unwrap();
    }
    assert_eq!(read_reply(&mut stream)["status"], "ok");
    let grown = peak_rss_kib(pid) - before;
    assert!(
        grown < 8 * 1024,
        "the server grew by {grown} KiB for a 32 MiB upload"
    );
    assert_eq!(
        fs::metadata(uploads.dir.join("large.bin")).unwrap().len(),
        SIZE as u64
    );
}

// ---- line protocol ----

#[test]
fn the_line_protocol_speaks_text() -> io::Result<()> {
    let scratch = Scratch::new("lines");
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let _server = start_example("line_protocol", &["--addr", &addr], port, &scratch.log());
    let mut stream = connect(local(port));
    let mut other = connect(local(port));

    assert_eq!(ask(&mut stream, "SET greeting hello  world"), "OK");
    // Every connection shares the store.
    assert_eq!(ask(&mut other, "GET greeting"), "VALUE hello  world");
    assert_eq!(ask(&mut stream, "COUNT"), "1");
    assert_eq!(ask(&mut stream, "DEL greeting"), "DELETED");
    assert_eq!(ask(&mut stream, "GET greeting"), "NOT_FOUND");
    assert!(ask(&mut stream, "FLY me").starts_with("ERROR"));

    // A command split across writes and ended by CRLF; an empty line gets no answer.
    stream.write_all(b"SET k v\r")?;
    std::thread::sleep(Duration::from_millis(20));
    stream.write_all(b"\n\nGET k\n")?;
    assert_eq!(read_line(&mut stream), "OK");
    assert_eq!(read_line(&mut stream), "VALUE v");

    assert_eq!(ask(&mut stream, "EXPIRE k 0.2"), "OK");
    assert!(wait_until(IO_TIMEOUT, || ask(&mut other, "GET k") == "NOT_FOUND"));

    assert_eq!(ask(&mut stream, "QUIT"), "BYE");
    assert!(is_closed(&mut stream));
    Ok(())
}
