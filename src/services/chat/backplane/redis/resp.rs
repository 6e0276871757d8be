//! RESP3, the protocol Redis speaks since 6.0, through the `redis-protocol` crate: one
//! function to encode a command, an owned [`Reply`] to match on, a [`ReplyReader`] that
//! turns a byte stream into replies, and [`Push`] for the out-of-band frames pub/sub
//! delivers.
//!
//! Only the client side is here: commands go out as arrays of blob strings (what every
//! Redis client sends), and what comes back is decoded by `redis-protocol`'s RESP3
//! decoder. That decoder recurses once per level of nesting, so a reply is first
//! scanned for its depth without recursion ([`MAX_DEPTH`]): a server that sends
//! `*1\r\n` a million times gets an error, not the loop's stack. Not supported: streamed strings and aggregates (`$?`, `*?`), which Redis
//! does not send; the decoder reads RESP2's nulls `$-1` and `*-1` as the start of one,
//! so they are refused too (after `HELLO 3` Redis writes a null as `_`).
//!
//! ```
//! use switchboard::services::chat::redis::resp::{command, Reply, ReplyReader};
//! let mut out = Vec::new();
//! command(&mut out, &[b"GET", b"key"]);
//! assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
//!
//! let mut reader = ReplyReader::new(1 << 20);
//! reader.push(b"$5\r\nhel");
//! assert_eq!(reader.next().unwrap(), None); // incomplete: wait for more bytes
//! reader.push(b"lo\r\n");
//! assert_eq!(reader.next().unwrap(), Some(Reply::Blob(b"hello".to_vec())));
//! ```

use std::fmt;

use redis_protocol::resp3::decode::complete::decode;
use redis_protocol::resp3::encode::complete::encode_borrowed;
use redis_protocol::resp3::types::{BorrowedFrame, OwnedFrame};

/// The deepest nesting of aggregates (arrays, maps, sets, pushes, attributes) accepted
/// in a reply. Redis's answers to our commands nest two or three levels (`SCAN`'s
/// cursor and keys, `HELLO`'s map of modules); the limit only has to keep the
/// decoder's recursion, and the drop of what it built, well within a thread's stack.
pub const MAX_DEPTH: usize = 32;

/// Appends one command to `out`: `args` (the command's name first) as a RESP array of
/// blob strings, the form Redis accepts for every command whatever the bytes.
///
/// ```
/// use switchboard::services::chat::redis::resp::command;
/// let mut out = b"*1\r\n$4\r\nPING\r\n".to_vec();
/// command(&mut out, &[b"PUBLISH", b"room", b"hi"]);
/// assert_eq!(&out[14..], b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$2\r\nhi\r\n");
/// ```
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let items: Vec<BorrowedFrame<'_>> = args
        .iter()
        .map(|arg| BorrowedFrame::BlobString {
            data: arg,
            attributes: None,
        })
        .collect();
    let frame = BorrowedFrame::Array {
        data: &items,
        attributes: None,
    };
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    // The encoder's only failure is a buffer too small, and the buffer was just sized by
    // the encoder's own `encode_len`; should it fail anyway, nothing is sent.
    match encode_borrowed(&mut out[start..], &frame, false) {
        Ok(written) => out.truncate(start + written),
        Err(e) => {
            log::error!("chat: a Redis command could not be encoded: {e:?}");
            out.truncate(start);
        }
    }
}

/// One reply (or push) from Redis, owned, in the few shapes our code matches on.
///
/// RESP3 has more frame types than a client needs to tell apart, so some share a
/// variant: a verbatim string is a [`Reply::Blob`] (its format dropped), a set is an
/// [`Reply::Array`], a blob error is an [`Reply::Error`]. Attributes (`|` frames, side
/// information a client may ignore) are dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`: a short status line.
    Simple(Vec<u8>),
    /// `-ERR ...` or `!<len>`: the command failed; the message, code first.
    Error(Vec<u8>),
    /// `:<n>`: an integer.
    Number(i64),
    /// `,<f>`: a floating-point number.
    Double(f64),
    /// `#t` / `#f`.
    Boolean(bool),
    /// `(<digits>`: an integer too large for `i64`, as its decimal digits.
    BigNumber(Vec<u8>),
    /// `$<len>` (or `=<len>`, verbatim): a binary-safe string.
    Blob(Vec<u8>),
    /// `_`: no value (`GET` of a missing key). RESP3 has one null
    /// for every type, so a missing string is this rather than an empty `Blob`.
    Null,
    /// `*<n>` (or `~<n>`, a set): the items in order.
    Array(Vec<Reply>),
    /// `%<n>`: key-value pairs (in no particular order: the decoder hashes them).
    Map(Vec<(Reply, Reply)>),
    /// `><n>`: out-of-band data, not the answer to any command: pub/sub messages and
    /// subscription confirmations. See [`Push::classify`].
    Push(Vec<Reply>),
}

impl Reply {
    /// Converts the decoder's frame. A frame no server sends to a client (a `HELLO`
    /// request, a chunk of a streamed string outside its stream) is refused.
    fn from_frame(frame: OwnedFrame) -> Result<Reply, RespError> {
        let reply = match frame {
            OwnedFrame::SimpleString { data, .. } => Reply::Simple(data),
            OwnedFrame::SimpleError { data, .. } => Reply::Error(data.into_bytes()),
            OwnedFrame::BlobError { data, .. } => Reply::Error(data),
            OwnedFrame::Number { data, .. } => Reply::Number(data),
            OwnedFrame::Double { data, .. } => Reply::Double(data),
            OwnedFrame::Boolean { data, .. } => Reply::Boolean(data),
            OwnedFrame::BigNumber { data, .. } => Reply::BigNumber(data),
            OwnedFrame::BlobString { data, .. } | OwnedFrame::VerbatimString { data, .. } => {
                Reply::Blob(data)
            }
            OwnedFrame::Null => Reply::Null,
            OwnedFrame::Array { data, .. } => Reply::Array(Self::all(data)?),
            OwnedFrame::Set { data, .. } => Reply::Array(Self::all(data)?),
            OwnedFrame::Push { data, .. } => Reply::Push(Self::all(data)?),
            OwnedFrame::Map { data, .. } => Reply::Map(
                data.into_iter()
                    .map(|(k, v)| Ok((Reply::from_frame(k)?, Reply::from_frame(v)?)))
                    .collect::<Result<_, RespError>>()?,
            ),
            OwnedFrame::Hello { .. } | OwnedFrame::ChunkedString(_) => {
                return Err(RespError::Malformed("a frame only a client sends".into()))
            }
        };
        Ok(reply)
    }

    fn all(frames: impl IntoIterator<Item = OwnedFrame>) -> Result<Vec<Reply>, RespError> {
        frames.into_iter().map(Reply::from_frame).collect()
    }

    /// The bytes of a string reply (simple or blob), `None` for any other kind.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Simple(bytes) | Reply::Blob(bytes) => Some(bytes),
            _ => None,
        }
    }
}

/// What went wrong reading from Redis. Each one means the byte stream can no longer be
/// trusted: the connection should be closed (and, for a link, reopened later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespError {
    /// More than `limit` bytes are buffered for a single reply.
    TooLarge {
        /// The most a reply may take, in bytes.
        limit: usize,
    },
    /// A reply nests aggregates more than `limit` levels deep ([`MAX_DEPTH`]): refused
    /// before it is decoded.
    TooDeep {
        /// The deepest nesting accepted.
        limit: usize,
    },
    /// The bytes are not RESP3; the decoder's description.
    Malformed(String),
    /// A reply arrived while no command was waiting for one: the stream is out of step.
    Unsolicited,
    /// The server refused `HELLO 3` (a Redis older than 6, or one asking for a
    /// password); its error message.
    Handshake(String),
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::TooLarge { limit } => write!(f, "a reply larger than {limit} bytes"),
            RespError::TooDeep { limit } => {
                write!(f, "a reply nested deeper than {limit} levels")
            }
            RespError::Malformed(why) => write!(f, "malformed RESP3: {why}"),
            RespError::Unsolicited => f.write_str("a reply to no command"),
            RespError::Handshake(why) => write!(f, "HELLO 3 refused: {why}"),
        }
    }
}

impl std::error::Error for RespError {}

/// Bytes in, complete replies out. Keeps a partial reply between reads, and refuses one
/// that grows past its limit.
///
/// ```text
///   buf: | consumed | unread (one partial reply, or several whole ones) |
///        0          start                                               buf.len()
/// ```
///
/// `next` decodes at `start` and moves `start` past each complete reply; `push`
/// moves the unread bytes to the front before appending, so the consumed region never
/// grows past one read's worth.
///
/// The decoder cannot resume inside a reply, so a partial reply is decoded again from
/// its first byte each time more arrives. Its first pass only measures ranges (nothing
/// is copied until the reply is whole), and the limit bounds how much is scanned again.
/// Before each decode, [`check_depth`] walks the same bytes without recursion, so the
/// decoder never sees a reply nested deeper than [`MAX_DEPTH`].
#[derive(Debug)]
pub struct ReplyReader {
    /// The bytes received and not yet returned as replies, from `start`.
    buf: Vec<u8>,
    /// Where the first unread byte is; everything before it was returned already.
    start: usize,
    /// The most bytes one reply may take (the limit of [`RespError::TooLarge`]).
    limit: usize,
}

impl ReplyReader {
    /// A reader refusing any reply larger than `limit` bytes.
    pub fn new(limit: usize) -> ReplyReader {
        ReplyReader {
            buf: Vec::new(),
            start: 0,
            limit,
        }
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete reply, `Ok(None)` when the bytes so far end inside one (not an
    /// error: the rest is on its way).
    ///
    /// Not `Iterator::next`: `None` here means "not yet", not "never again", and the
    /// same reader yields more once more bytes are pushed.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Reply>, RespError> {
        let unread = &self.buf[self.start..];
        if unread.is_empty() {
            return Ok(None);
        }
        check_depth(unread, MAX_DEPTH)?;
        match decode(unread) {
            Ok(Some((_, used))) if used > self.limit => Err(self.too_large()),
            Ok(Some((frame, used))) => {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                Reply::from_frame(frame).map(Some)
            }
            Ok(None) if unread.len() > self.limit => Err(self.too_large()),
            Ok(None) => Ok(None),
            Err(e) => Err(RespError::Malformed(e.to_string())),
        }
    }

    /// How many bytes wait for the rest of their reply.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Forgets everything buffered: the connection it came from is gone.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    fn too_large(&self) -> RespError {
        RespError::TooLarge { limit: self.limit }
    }
}

/// One aggregate open around the scan's position in [`check_depth`].
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Items still to come in it (twice the pairs of a map or an attribute).
    items: u64,
    /// An attribute: side information before an item, not an item of its parent.
    attribute: bool,
}

/// Refuses the first reply in `bytes` if it nests aggregates more than `limit` levels
/// deep; `Ok` when it does not, when its bytes end before it does (incomplete: the
/// depth so far is within the limit), or when the bytes are not RESP3 (the decoder
/// says what is wrong with them).
///
/// A walk over frame headers with a stack of open aggregates and no recursion: each
/// header is one line (`*3`, `$5`, `:1`, ...), a blob's bytes are skipped by their
/// length, and an aggregate holds as many items as its header says. It allocates
/// nothing past `limit` levels, and stops at the end of the first reply.
///
/// ```
/// use switchboard::services::chat::redis::resp::{check_depth, RespError};
/// assert_eq!(check_depth(b"*1\r\n*1\r\n:7\r\n", 2), Ok(()));
/// assert_eq!(check_depth(b"*1\r\n*1\r\n*1\r\n", 2), Err(RespError::TooDeep { limit: 2 }));
/// ```
pub fn check_depth(bytes: &[u8], limit: usize) -> Result<(), RespError> {
    let mut open: Vec<Open> = Vec::new();
    let mut at = 0;
    loop {
        let Some(kind) = bytes.get(at).copied() else {
            return Ok(()); // incomplete
        };
        let Some(line_end) = find_crlf(bytes, at + 1) else {
            return Ok(()); // incomplete
        };
        let header = &bytes[at + 1..line_end];
        at = line_end + 2;
        let aggregate = match kind {
            b'*' | b'~' | b'>' => Some((1, false)),
            b'%' => Some((2, false)),
            b'|' => Some((2, true)),
            _ => None,
        };
        if let Some((per_entry, attribute)) = aggregate {
            let Some(count) = parse_len(header) else {
                return Ok(()); // streamed or malformed: the decoder's to refuse
            };
            if count > 0 {
                if open.len() >= limit {
                    return Err(RespError::TooDeep { limit });
                }
                let items = count.saturating_mul(per_entry);
                open.push(Open { items, attribute });
                continue;
            }
            if attribute {
                continue; // an empty attribute: the item is still to come
            }
        } else if matches!(kind, b'$' | b'!' | b'=') {
            let Some(len) = parse_len(header) else {
                return Ok(()); // streamed or malformed: the decoder's to refuse
            };
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            at = at.saturating_add(len).saturating_add(2);
        }
        // An item is complete: count it in the aggregates it completes.
        loop {
            let Some(top) = open.last_mut() else {
                return Ok(()); // the first reply is whole
            };
            top.items -= 1;
            if top.items > 0 {
                break;
            }
            let closed = open.pop();
            if closed.is_some_and(|closed| closed.attribute) {
                break; // the item it describes is still to come
            }
        }
    }
}

/// Where the next `\r\n` at or after `from` starts.
fn find_crlf(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    rest.windows(2)
        .position(|pair| pair == b"\r\n")
        .map(|i| from + i)
}

/// The length or count in a header (`3` of `*3`); `None` for `?` (streamed), a
/// negative number (RESP2's null) or anything else.
fn parse_len(header: &[u8]) -> Option<u64> {
    std::str::from_utf8(header).ok()?.parse().ok()
}

/// What a [`Reply::Push`] says. Redis sends pub/sub traffic on a RESP3 connection as
/// push frames, `>3` followed by the kind, the channel, and a payload or a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// `>3 message <channel> <payload>`: something was published on a channel we are
    /// subscribed to.
    Message {
        /// The channel it was published on.
        channel: Vec<u8>,
        /// What was published.
        payload: Vec<u8>,
    },
    /// `>3 subscribe <channel> <count>`: a `SUBSCRIBE` took effect.
    Subscribed {
        /// The channel now subscribed to.
        channel: Vec<u8>,
        /// How many channels this connection is subscribed to now.
        count: i64,
    },
    /// `>3 unsubscribe <channel> <count>`: an `UNSUBSCRIBE` took effect.
    Unsubscribed {
        /// The channel no longer subscribed to.
        channel: Vec<u8>,
        /// How many channels this connection is still subscribed to.
        count: i64,
    },
    /// Any other push (pattern messages, client-side caching invalidations, ...).
    Other,
}

impl Push {
    /// Classifies the items of a [`Reply::Push`].
    ///
    /// ```
    /// use switchboard::services::chat::redis::resp::{Push, Reply};
    /// let items = vec![
    ///     Reply::Blob(b"message".to_vec()),
    ///     Reply::Blob(b"room".to_vec()),
    ///     Reply::Blob(b"hi".to_vec()),
    /// ];
    /// let push = Push::classify(items);
    /// assert_eq!(push, Push::Message { channel: b"room".to_vec(), payload: b"hi".to_vec() });
    /// ```
    pub fn classify(items: Vec<Reply>) -> Push {
        let mut items = items.into_iter();
        let (Some(kind), Some(channel), Some(last), None) =
            (items.next(), items.next(), items.next(), items.next())
        else {
            return Push::Other;
        };
        let (Some(kind), Some(channel)) = (kind.as_bytes(), channel.as_bytes()) else {
            return Push::Other;
        };
        let channel = channel.to_vec();
        match (kind, last) {
            (b"message", Reply::Blob(payload)) => Push::Message { channel, payload },
            (b"subscribe", Reply::Number(count)) => Push::Subscribed { channel, count },
            (b"unsubscribe", Reply::Number(count)) => Push::Unsubscribed { channel, count },
            _ => Push::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three replies and a push, as Redis writes them.
    const STREAM: &[u8] =
        b"+OK\r\n$5\r\nhello\r\n>3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$2\r\nhi\r\n:42\r\n";

    fn expected() -> Vec<Reply> {
        vec![
            Reply::Simple(b"OK".to_vec()),
            Reply::Blob(b"hello".to_vec()),
            Reply::Push(vec![
                Reply::Blob(b"message".to_vec()),
                Reply::Blob(b"room".to_vec()),
                Reply::Blob(b"hi".to_vec()),
            ]),
            Reply::Number(42),
        ]
    }

    fn drain(reader: &mut ReplyReader) -> Vec<Reply> {
        let mut out = Vec::new();
        while let Some(reply) = reader.next().unwrap() {
            out.push(reply);
        }
        out
    }

    fn one(bytes: &[u8]) -> Reply {
        let mut reader = ReplyReader::new(1024);
        reader.push(bytes);
        let reply = reader.next().unwrap().unwrap();
        assert_eq!(reader.buffered(), 0);
        reply
    }

    #[test]
    fn command_is_an_array_of_blob_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"SET", b"k", b"a\r\nb"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
        command(&mut out, &[b"HELLO", b"3"]);
        assert_eq!(&out[30..], b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
        let mut empty = Vec::new();
        command(&mut empty, &[b"GET", b""]);
        assert_eq!(empty, b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n");
    }

    #[test]
    fn several_replies_in_one_push() {
        let mut reader = ReplyReader::new(1024);
        reader.push(STREAM);
        assert_eq!(drain(&mut reader), expected());
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn input_split_at_every_position() {
        for cut in 0..=STREAM.len() {
            let mut reader = ReplyReader::new(1024);
            reader.push(&STREAM[..cut]);
            let mut got = drain(&mut reader);
            reader.push(&STREAM[cut..]);
            got.extend(drain(&mut reader));
            assert_eq!(got, expected(), "split at {cut}");
        }
    }

    #[test]
    fn input_one_byte_at_a_time() {
        let mut reader = ReplyReader::new(1024);
        let mut got = Vec::new();
        for byte in STREAM {
            reader.push(std::slice::from_ref(byte));
            got.extend(drain(&mut reader));
        }
        assert_eq!(got, expected());
    }

    #[test]
    fn consumed_bytes_are_compacted() {
        let mut reader = ReplyReader::new(1024);
        reader.push(b"+OK\r\n$5\r\nhel");
        assert_eq!(reader.next().unwrap(), Some(Reply::Simple(b"OK".to_vec())));
        assert_eq!(reader.next().unwrap(), None);
        assert_eq!(reader.buffered(), 7);
        reader.push(b"lo\r\n");
        assert_eq!(reader.start, 0);
        assert_eq!(reader.buf, b"$5\r\nhello\r\n");
        assert_eq!(reader.next().unwrap(), Some(Reply::Blob(b"hello".to_vec())));
        assert!(reader.buf.is_empty());
    }

    #[test]
    fn every_kind_of_frame() {
        assert_eq!(
            one(b"-ERR unknown\r\n"),
            Reply::Error(b"ERR unknown".to_vec())
        );
        assert_eq!(one(b"!3\r\nBAD\r\n"), Reply::Error(b"BAD".to_vec()));
        assert_eq!(one(b":-7\r\n"), Reply::Number(-7));
        assert_eq!(one(b",1.5\r\n"), Reply::Double(1.5));
        assert_eq!(one(b"#t\r\n"), Reply::Boolean(true));
        assert_eq!(one(b"(123\r\n"), Reply::BigNumber(b"123".to_vec()));
        assert_eq!(one(b"=7\r\ntxt:abc\r\n"), Reply::Blob(b"abc".to_vec()));
        assert_eq!(one(b"_\r\n"), Reply::Null);
        assert_eq!(one(b"*0\r\n"), Reply::Array(vec![]));
        assert_eq!(
            one(b"*2\r\n:1\r\n*1\r\n+x\r\n"),
            Reply::Array(vec![
                Reply::Number(1),
                Reply::Array(vec![Reply::Simple(b"x".to_vec())])
            ])
        );
        assert_eq!(one(b"~1\r\n:5\r\n"), Reply::Array(vec![Reply::Number(5)]));
        assert_eq!(
            one(b"%1\r\n+proto\r\n:3\r\n"),
            Reply::Map(vec![(Reply::Simple(b"proto".to_vec()), Reply::Number(3))])
        );
        // An attribute before a reply is side information: dropped.
        assert_eq!(one(b"|1\r\n+ttl\r\n:9\r\n:1\r\n"), Reply::Number(1));
    }

    #[test]
    fn a_hello_reply() {
        let hello = b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n\
            $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
            $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
        let Reply::Map(pairs) = one(hello) else {
            panic!("not a map");
        };
        assert_eq!(pairs.len(), 7);
        assert!(pairs.contains(&(Reply::Blob(b"proto".to_vec()), Reply::Number(3))));
    }

    #[test]
    fn an_oversized_reply_is_refused() {
        let mut reader = ReplyReader::new(16);
        reader.push(b"$20\r\n0123456789");
        assert_eq!(
            reader.next().unwrap(),
            None,
            "15 bytes, still under the limit"
        );
        reader.push(b"01234");
        assert_eq!(reader.next(), Err(RespError::TooLarge { limit: 16 }));

        // Refused too when it arrives whole in one read.
        let mut reader = ReplyReader::new(16);
        reader.push(b"+OK\r\n$20\r\n01234567890123456789\r\n");
        assert_eq!(reader.next().unwrap(), Some(Reply::Simple(b"OK".to_vec())));
        assert_eq!(reader.next(), Err(RespError::TooLarge { limit: 16 }));

        // Exactly the limit is fine.
        let mut reader = ReplyReader::new(11);
        reader.push(b"$5\r\nhello\r\n");
        assert_eq!(reader.next().unwrap(), Some(Reply::Blob(b"hello".to_vec())));
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut reader = ReplyReader::new(1024);
        reader.push(b"?what\r\n");
        assert!(matches!(reader.next(), Err(RespError::Malformed(_))));
        let mut reader = ReplyReader::new(1024);
        reader.push(b":notanumber\r\n");
        assert!(matches!(reader.next(), Err(RespError::Malformed(_))));
        // Streamed strings, and RESP2's nulls that the decoder takes for them.
        for streamed in [&b"$?\r\n;1\r\na\r\n;0\r\n"[..], b"$-1\r\n", b"*-1\r\n"] {
            let mut reader = ReplyReader::new(1024);
            reader.push(streamed);
            assert!(matches!(reader.next(), Err(RespError::Malformed(_))));
        }
    }

    #[test]
    fn nesting_up_to_the_limit_is_decoded() {
        let mut deepest = b"*1\r\n".repeat(MAX_DEPTH);
        deepest.extend_from_slice(b":1\r\n");
        let mut reader = ReplyReader::new(1024);
        reader.push(&deepest);
        let mut reply = reader.next().unwrap().unwrap();
        for _ in 0..MAX_DEPTH {
            let Reply::Array(mut items) = reply else {
                panic!("not an array");
            };
            reply = items.remove(0);
        }
        assert_eq!(reply, Reply::Number(1));
    }

    #[test]
    fn nesting_past_the_limit_is_refused_before_decoding() {
        // Far deeper than a thread's stack would survive in the decoder: refused from
        // its first bytes, whole or not.
        let hostile = b"*1\r\n".repeat(200_000);
        let mut reader = ReplyReader::new(1 << 20);
        reader.push(&hostile);
        assert_eq!(reader.next(), Err(RespError::TooDeep { limit: MAX_DEPTH }));
        let mut too_deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        too_deep.extend_from_slice(b":1\r\n");
        let mut reader = ReplyReader::new(1024);
        reader.push(&too_deep);
        assert_eq!(reader.next(), Err(RespError::TooDeep { limit: MAX_DEPTH }));
        // Maps, sets, pushes and attributes nest too.
        for open in [&b"%1\r\n+k\r\n"[..], b"~1\r\n", b">1\r\n", b"|1\r\n+k\r\n"] {
            let hostile = open.repeat(MAX_DEPTH + 1);
            assert_eq!(
                check_depth(&hostile, MAX_DEPTH),
                Err(RespError::TooDeep { limit: MAX_DEPTH }),
                "{:?}",
                String::from_utf8_lossy(open)
            );
        }
    }

    #[test]
    fn the_depth_scan_stops_at_the_end_of_the_first_reply() {
        // Wide, shallow, with blobs whose bytes look like headers: within a limit of 2.
        let reply = b"*3\r\n$4\r\n*9\r\n\r\n*2\r\n:1\r\n#t\r\n%1\r\n+k\r\n_\r\n";
        assert_eq!(check_depth(reply, 2), Ok(()));
        assert_eq!(check_depth(reply, 1), Err(RespError::TooDeep { limit: 1 }));
        // What follows the first reply is not scanned yet.
        let mut two = reply.to_vec();
        two.extend_from_slice(&b"*1\r\n".repeat(10));
        assert_eq!(check_depth(&two, 2), Ok(()));
        // An attribute is not an item of its parent: the item after it still counts.
        let attributed = b"*1\r\n|1\r\n+ttl\r\n:9\r\n*1\r\n:1\r\n";
        assert_eq!(check_depth(attributed, 2), Ok(()));
        assert_eq!(
            check_depth(attributed, 1),
            Err(RespError::TooDeep { limit: 1 })
        );
        // Incomplete, streamed or malformed: left to the decoder.
        for bytes in [&b"*2\r\n:1"[..], b"*?\r\n", b"$-1\r\n", b"*x\r\n", b""] {
            assert_eq!(check_depth(bytes, 2), Ok(()));
        }
    }

    #[test]
    fn pushes_are_classified() {
        let blob = |b: &[u8]| Reply::Blob(b.to_vec());
        assert_eq!(
            Push::classify(vec![blob(b"subscribe"), blob(b"room"), Reply::Number(1)]),
            Push::Subscribed {
                channel: b"room".to_vec(),
                count: 1
            }
        );
        assert_eq!(
            Push::classify(vec![blob(b"unsubscribe"), blob(b"room"), Reply::Number(0)]),
            Push::Unsubscribed {
                channel: b"room".to_vec(),
                count: 0
            }
        );
        assert_eq!(
            Push::classify(vec![blob(b"message"), blob(b"room"), blob(b"")]),
            Push::Message {
                channel: b"room".to_vec(),
                payload: Vec::new()
            }
        );
        // UNSUBSCRIBE with nothing subscribed names no channel.
        assert_eq!(
            Push::classify(vec![blob(b"unsubscribe"), Reply::Null, Reply::Number(0)]),
            Push::Other
        );
        let pmessage = vec![blob(b"pmessage"), blob(b"r*"), blob(b"room"), blob(b"hi")];
        assert_eq!(Push::classify(pmessage), Push::Other);
        assert_eq!(Push::classify(vec![blob(b"invalidate")]), Push::Other);
        assert_eq!(Push::classify(Vec::new()), Push::Other);
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            RespError::TooLarge { limit: 16 }.to_string(),
            "a reply larger than 16 bytes"
        );
        assert_eq!(
            RespError::TooDeep { limit: 32 }.to_string(),
            "a reply nested deeper than 32 levels"
        );
        assert_eq!(
            RespError::Handshake("ERR unknown command".into()).to_string(),
            "HELLO 3 refused: ERR unknown command"
        );
    }
}
