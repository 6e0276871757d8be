//! File upload, server and client: the tutorials' fix for "sticky packets" made real.
//!
//! It shows a protocol that parses the byte stream itself (the server runs on
//! [`RawCodec`] and keeps a small state machine per connection), a [`LengthCodec`]
//! reused as a plain parser for one part of that stream, and a body far larger than
//! memory streamed to disk chunk by chunk as it arrives.
//!
//! The wire format is the article's, byte for byte, so its client
//! (`struct_header_client.py`) works unchanged:
//!
//! ```text
//!   +----------------+-----------------------------+---------------------------+
//!   | header length  | header: UTF-8 JSON          | body: exactly file_size   |
//!   | 4 bytes, i32,  | {"file_name": "a.jpg",      | raw bytes                 |
//!   | native order   |  "file_size": 1024,         |                           |
//!   | (struct "i")   |  "md5": "<32 hex digits>"}  |                           |
//!   +----------------+-----------------------------+---------------------------+
//!   reply, framed the same way: {"status": "ok", "md5": ...}
//!                            or {"status": "error", "reason": ...}
//! ```
//!
//! The server writes each upload to a temporary file in its directory, checks the md5,
//! and only then renames it to `file_name`; a file name that would leave the directory
//! (`../x`, `/etc/x`, NUL, empty) is refused. One connection may carry several uploads
//! in a row; a refused upload's body is read and discarded so the next one can follow.
//!
//! ```text
//! cargo run --release --example file_transfer -- serve --dir /tmp/uploads   # on 127.0.0.1:9300
//! cargo run --release --example file_transfer -- send ./photo.jpg
//! python3 struct_header_client.py 127.0.0.1 9300 ./photo.jpg
//! ```

use std::error::Error;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::json;
use switchboard::cli::{serve, LogArgs};
use switchboard::frame::{Endian, LengthCodecError, Signedness};
use switchboard::{
    Buffer, CloseMode, CloseReason, Codec, Config, ConnId, Context, Decode, LengthCodec, RawCodec,
    Service,
};

/// Where the server listens and the client connects unless told otherwise.
const DEFAULT_ADDR: &str = "127.0.0.1:9300";
/// The largest JSON header accepted: a file name and two numbers need far less.
const MAX_HEADER: usize = 64 * 1024;
/// Ending of the temporary files uploads are written to; refused in file names so an
/// upload can never be written over another one in progress.
const PARTIAL_SUFFIX: &str = ".partial";

/// Upload files, or receive them.
#[derive(Debug, Parser)]
#[command(name = "file_transfer")]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// Logging (--log-level, --trace).
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive uploads into a directory.
    Serve {
        /// Directory uploads are stored in (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// TCP address to listen on.
        #[arg(long, default_value = DEFAULT_ADDR)]
        addr: SocketAddr,
    },
    /// Upload one file and print the server's reply.
    Send {
        /// The server's address.
        #[arg(long, default_value = DEFAULT_ADDR)]
        addr: SocketAddr,
        /// The file to upload.
        file: PathBuf,
        /// The name to store it under [default: the file's own name].
        #[arg(long)]
        name: Option<String>,
    },
}

/// The header-length field: what `struct.pack("i", n)` writes on this machine (the
/// article's client and this server are expected to share a byte order, as in the
/// article; little-endian on x86 and ARM).
fn header_codec() -> Result<LengthCodec, LengthCodecError> {
    let native = if cfg!(target_endian = "little") {
        Endian::Little
    } else {
        Endian::Big
    };
    LengthCodec::builder()
        .endian(native)
        .signedness(Signedness::Signed)
        .max_payload(MAX_HEADER)
        .build()
}

/// The JSON header an upload starts with. Other fields are ignored.
#[derive(Debug, Deserialize)]
struct UploadHeader {
    file_name: String,
    file_size: u64,
    md5: String,
}

/// Where one connection is in the stream of uploads it sends.
enum Upload {
    /// Collecting the header-length field and the JSON header (nothing else).
    Header(Vec<u8>),
    /// Writing the body to a temporary file.
    Body(Receiving),
    /// Reading and discarding the body of a refused upload: this many bytes are left.
    Skip(u64),
}

/// An upload whose body is being written to disk.
struct Receiving {
    /// The temporary file, renamed to `target` once complete and verified.
    file: File,
    temp: PathBuf,
    target: PathBuf,
    /// Body bytes still to come.
    remaining: u64,
    /// md5 of the body so far, and what the header said it would be.
    digest: Md5,
    expected_md5: String,
}

impl Receiving {
    /// Gives up on the upload: the partial file is removed.
    fn abandon(self) {
        drop(self.file);
        if let Err(e) = fs::remove_file(&self.temp) {
            log::warn!("cannot remove {}: {e}", self.temp.display());
        }
    }
}

impl Default for Upload {
    /// A connection starts by sending a header.
    fn default() -> Self {
        Upload::Header(Vec::new())
    }
}

/// The upload server.
struct FileServer {
    dir: PathBuf,
    /// Frames the header on the way in and the reply on the way out.
    codec: LengthCodec,
    /// Numbers the temporary files.
    next_temp: u64,
}

impl Service for FileServer {
    /// Where each connection's upload stands, kept by the reactor beside it.
    type Conn = Upload;
    type Timer = ();
    type Codec = RawCodec;

    /// With [`RawCodec`], a "frame" is whatever one read returned: part of a header,
    /// part of a body, or the end of one upload and the start of the next.
    fn on_frame(
        &mut self,
        ctx: &mut Context<'_, FileServer>,
        conn: ConnId,
        state: &mut Upload,
        bytes: &[u8],
    ) {
        let mut upload = std::mem::take(state);
        let mut rest = bytes;
        while !rest.is_empty() {
            let (used, next) = match upload {
                Upload::Header(header) => self.take_header(ctx, conn, header, rest),
                Upload::Body(receiving) => self.take_body(ctx, conn, receiving, rest),
                Upload::Skip(remaining) => skip_body(remaining, rest),
            };
            rest = &rest[used..];
            match next {
                Some(next) => upload = next,
                None => return, // a protocol error: the connection is closing
            }
        }
        *state = upload;
    }

    fn on_close(
        &mut self,
        _ctx: &mut Context<'_, FileServer>,
        conn: ConnId,
        upload: Upload,
        reason: CloseReason,
    ) {
        if let Upload::Body(receiving) = upload {
            log::warn!(
                "{conn} closed ({reason}) with {} bytes of {} still to come",
                receiving.remaining,
                receiving.target.display()
            );
            receiving.abandon();
        }
    }
}

impl FileServer {
    /// Takes from `input` only the bytes the header still needs (what follows belongs
    /// to the body) and starts the upload once the header is complete. Returns the
    /// bytes used and the next state, or `None` if the connection must close.
    fn take_header(
        &mut self,
        ctx: &mut Context<'_, FileServer>,
        conn: ConnId,
        mut header: Vec<u8>,
        input: &[u8],
    ) -> (usize, Option<Upload>) {
        // The codec tells how long the header is as soon as its length field is in.
        let wanted = match self.codec.decode(&mut (), &header) {
            Ok(Decode::Incomplete { frame_len }) => {
                frame_len.unwrap_or(self.codec.header_len()) - header.len()
            }
            _ => 0,
        };
        let used = wanted.min(input.len());
        header.extend_from_slice(&input[..used]);
        match self.codec.decode(&mut (), &header) {
            Ok(Decode::Incomplete { .. }) => (used, Some(Upload::Header(header))),
            Ok(Decode::Frame { payload, .. }) => {
                (used, self.begin_upload(ctx, conn, &header[payload]))
            }
            Err(e) => {
                self.refuse_and_close(ctx, conn, &format!("bad header length: {e}"));
                (used, None)
            }
        }
    }

    /// Acts on a complete JSON header: refuses it (skipping its body) or opens the
    /// temporary file the body goes to.
    fn begin_upload(
        &mut self,
        ctx: &mut Context<'_, FileServer>,
        conn: ConnId,
        json: &[u8],
    ) -> Option<Upload> {
        let header: UploadHeader = match serde_json::from_slice(json) {
            Ok(header) => header,
            Err(e) => {
                // Without a file size the body cannot be skipped: nothing can follow.
                self.refuse_and_close(ctx, conn, &format!("bad header: {e}"));
                return None;
            }
        };
        let size = header.file_size;
        if let Err(reason) = check_file_name(&header.file_name) {
            log::warn!("{conn}: refused {:?}: {reason}", header.file_name);
            self.reply_error(ctx, conn, reason);
            return Some(skip(size));
        }
        let target = self.dir.join(&header.file_name);
        let temp = self
            .dir
            .join(format!(".upload-{}{PARTIAL_SUFFIX}", self.next_temp));
        self.next_temp += 1;
        let file = match File::create(&temp) {
            Ok(file) => file,
            Err(e) => {
                log::error!("cannot create {}: {e}", temp.display());
                self.reply_error(ctx, conn, &format!("cannot store the file: {e}"));
                return Some(skip(size));
            }
        };
        log::info!("{conn}: receiving {} ({size} bytes)", header.file_name);
        let receiving = Receiving {
            file,
            temp,
            target,
            remaining: size,
            digest: Md5::new(),
            expected_md5: header.md5,
        };
        Some(self.continue_or_finish(ctx, conn, receiving))
    }

    /// Writes the part of `input` that belongs to the body straight to the file.
    fn take_body(
        &mut self,
        ctx: &mut Context<'_, FileServer>,
        conn: ConnId,
        mut receiving: Receiving,
        input: &[u8],
    ) -> (usize, Option<Upload>) {
        let used = receiving.remaining.min(input.len() as u64) as usize;
        let chunk = &input[..used];
        if let Err(e) = receiving.file.write_all(chunk) {
            log::error!("cannot write {}: {e}", receiving.temp.display());
            let left = receiving.remaining - used as u64;
            receiving.abandon();
            self.reply_error(ctx, conn, &format!("cannot store the file: {e}"));
            return (used, Some(skip(left)));
        }
        receiving.digest.update(chunk);
        receiving.remaining -= used as u64;
        (used, Some(self.continue_or_finish(ctx, conn, receiving)))
    }

    /// Keeps receiving while body bytes are due; otherwise verifies and stores the file
    /// and answers, ready for the next upload.
    fn continue_or_finish(
        &mut self,
        ctx: &mut Context<'_, FileServer>,
        conn: ConnId,
        mut receiving: Receiving,
    ) -> Upload {
        if receiving.remaining > 0 {
            return Upload::Body(receiving);
        }
        let received = hex(&receiving.digest.finalize_reset());
        if !receiving.expected_md5.eq_ignore_ascii_case(&received) {
            let reason = format!(
                "md5 mismatch: header says {}, received {received}",
                receiving.expected_md5
            );
            log::warn!("{conn}: {}: {reason}", receiving.target.display());
            receiving.abandon();
            self.reply_error(ctx, conn, &reason);
            return Upload::Header(Vec::new());
        }
        drop(receiving.file);
        match fs::rename(&receiving.temp, &receiving.target) {
            Ok(()) => {
                log::info!(
                    "{conn}: stored {} (md5 {received})",
                    receiving.target.display()
                );
                self.reply(ctx, conn, &json!({"status": "ok", "md5": received}));
            }
            Err(e) => {
                log::error!("cannot rename to {}: {e}", receiving.target.display());
                let _ = fs::remove_file(&receiving.temp);
                self.reply_error(ctx, conn, &format!("cannot store the file: {e}"));
            }
        }
        Upload::Header(Vec::new())
    }

    fn reply_error(&self, ctx: &mut Context<'_, FileServer>, conn: ConnId, reason: &str) {
        self.reply(ctx, conn, &json!({"status": "error", "reason": reason}));
    }

    /// Answers with an error, then closes once the answer is written: after a broken
    /// header the stream cannot be followed any further.
    fn refuse_and_close(&self, ctx: &mut Context<'_, FileServer>, conn: ConnId, reason: &str) {
        log::warn!("{conn}: {reason}; closing");
        self.reply_error(ctx, conn, reason);
        ctx.close(conn, CloseMode::Flush);
    }

    /// Sends one reply dict, framed as the header was.
    fn reply(&self, ctx: &mut Context<'_, FileServer>, conn: ConnId, reply: &serde_json::Value) {
        let mut wire = Buffer::new();
        let sent = self
            .codec
            .encode(reply.to_string().as_bytes(), &mut wire)
            .map_err(|e| e.to_string())
            .and_then(|()| ctx.send(conn, wire.readable()).map_err(|e| e.to_string()));
        if let Err(e) = sent {
            log::debug!("{conn}: no reply sent: {e}");
        }
    }
}

/// The state after a refused upload: its body, if any, is discarded.
fn skip(size: u64) -> Upload {
    match size {
        0 => Upload::Header(Vec::new()),
        _ => Upload::Skip(size),
    }
}

/// Discards the part of `input` that belongs to a refused upload's body.
fn skip_body(remaining: u64, input: &[u8]) -> (usize, Option<Upload>) {
    let used = remaining.min(input.len() as u64) as usize;
    (used, Some(skip(remaining - used as u64)))
}

/// Accepts only a plain file name: one path component that stays in the directory.
fn check_file_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("empty file name")
    } else if name.contains('\0') {
        Err("file name contains NUL")
    } else if name.contains('/') || name.contains('\\') {
        // Covers absolute paths and every "../" as well.
        Err("file name must not contain a path separator")
    } else if name == "." || name == ".." {
        Err("file name must name a file")
    } else if name.ends_with(PARTIAL_SUFFIX) {
        Err("file names ending in .partial are reserved")
    } else {
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The md5 of a file, read in chunks (the file may be larger than memory).
fn md5_of(file: &mut File) -> io::Result<String> {
    let mut digest = Md5::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut chunk)? {
            0 => return Ok(hex(&digest.finalize())),
            n => digest.update(&chunk[..n]),
        }
    }
}

/// The client: sends the header, streams the file, reads the reply.
fn send(
    addr: SocketAddr,
    path: &Path,
    name: Option<String>,
) -> Result<serde_json::Value, Box<dyn Error>> {
    let codec = header_codec()?;
    let mut file = File::open(path)?;
    let file_size = file.metadata()?.len();
    let md5 = md5_of(&mut file)?;
    file.rewind()?;
    let file_name = match name {
        Some(name) => name,
        None => path
            .file_name()
            .ok_or("the path names no file")?
            .to_string_lossy()
            .into_owned(),
    };
    let header = json!({"file_name": file_name, "file_size": file_size, "md5": md5});
    let mut wire = Buffer::new();
    codec.encode(header.to_string().as_bytes(), &mut wire)?;
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(wire.readable())?;
    io::copy(&mut file, &mut stream)?;
    read_reply(&mut stream, &codec)
}

/// Reads one reply dict framed by `codec`.
fn read_reply(
    stream: &mut TcpStream,
    codec: &LengthCodec,
) -> Result<serde_json::Value, Box<dyn Error>> {
    let mut wire = vec![0u8; codec.header_len()];
    stream.read_exact(&mut wire)?;
    if let Decode::Incomplete {
        frame_len: Some(len),
    } = codec.decode(&mut (), &wire)?
    {
        let have = wire.len();
        wire.resize(len, 0);
        stream.read_exact(&mut wire[have..])?;
    }
    match codec.decode(&mut (), &wire)? {
        Decode::Frame { payload, .. } => Ok(serde_json::from_slice(&wire[payload])?),
        Decode::Incomplete { .. } => Err("reply cut short".into()),
    }
}

fn serve_uploads(dir: PathBuf, addr: SocketAddr) -> ExitCode {
    if let Err(e) = fs::create_dir_all(&dir) {
        eprintln!("file_transfer: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let codec = match header_codec() {
        Ok(codec) => codec,
        Err(e) => {
            eprintln!("file_transfer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = Config::default();
    config.tcp.push(addr);
    let server = FileServer {
        dir,
        codec,
        next_temp: 0,
    };
    serve(config, server, RawCodec)
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    match args.command {
        Command::Serve { dir, addr } => serve_uploads(dir, addr),
        Command::Send { addr, file, name } => match send(addr, &file, name) {
            Ok(reply) => {
                println!("{reply}");
                if reply["status"] == "ok" {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("file_transfer: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
