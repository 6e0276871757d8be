//! [`Link`]: the life of the one connection a chat node keeps to Redis, as a state
//! machine with no socket in it. The caller owns the connection; it tells the link what
//! happened (dialled, connected, bytes arrived, closed) and sends the bytes the link
//! hands back.
//!
//! ```text
//!             connecting()          connected(now): HELLO 3, SUBSCRIBE <every channel>
//!   Down ------------------> Connecting ------------------> Up
//!    ^  due(now) says when       |                           |
//!    |                           | closed(now)               | closed(now)
//!    +---------------------------+---------------------------+
//!       retry at now + backoff; the backoff doubles (100 ms .. 5 s) and is reset
//!       once the server answers HELLO
//! ```
//!
//! A server that asks for a password refuses `HELLO` until it has one: while
//! connecting, [`Link::login`] sends `AUTH` (and `SELECT`) first, and the caller calls
//! `connected` once Redis has accepted them.
//!
//! Every command carries a tag `T` that comes back with its reply, so the caller knows
//! what the reply answers (a member waiting for history, say). Redis answers commands
//! in the order it receives them, so the tags wait in a FIFO queue. Pushes (pub/sub
//! messages, subscription confirmations) answer no command: they never take a tag.
//!
//! A command whose reply has not come within the reply timeout is given back by
//! [`Link::expire`], so whoever waits for it can be answered; its tag stays in the
//! queue all the same, because Redis will still answer it, in order, when it can. That
//! reply then comes out as [`LinkEvent::Late`], and the replies after it keep matching
//! their own commands. A link with a reply overdue is up but not answering
//! ([`Link::is_answering`]).
//!
//! Commands are not queued while the link is down: [`Link::command`] answers `None`
//! and the caller decides (tell the member, or drop a best-effort publish). The
//! subscriptions are the exception: they are state, not requests, and the link keeps
//! the set so that every reconnect subscribes again.
//!
//! ```
//! use std::time::Instant;
//! use switchboard::services::chat::redis::link::{Link, LinkEvent};
//! use switchboard::services::chat::redis::resp::Reply;
//!
//! let now = Instant::now();
//! let mut link: Link<u32> = Link::new(now, 1 << 20);
//! assert!(link.due(now));
//! link.connecting();
//! let hello = link.connected(now); // write these first
//! assert_eq!(hello, b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
//! let get = link.command(now, 7, &[b"GET", b"topic"]).unwrap(); // and then these
//! assert_eq!(get, b"*2\r\n$3\r\nGET\r\n$5\r\ntopic\r\n");
//!
//! // The server answers HELLO (consumed by the link), then the GET.
//! let events = link.input(b"%0\r\n$3\r\nfun\r\n").unwrap();
//! assert_eq!(events, vec![LinkEvent::Reply { tag: 7, reply: Reply::Blob(b"fun".to_vec()) }]);
//! assert!(link.is_answering());
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use super::resp::{command, Push, Reply, ReplyReader, RespError};

/// The wait before the first reconnect after a failure.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two reconnects: Redis back after an outage is noticed
/// within this, while a node does not hammer a server that stays away.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long a reply may take before [`Link::expire`] gives its tag back, unless
/// [`Link::with_reply_timeout`] says otherwise. Redis answers our commands in well under
/// a millisecond; one that has not answered in seconds is stopped or swamped.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// No connection; the next attempt is due at `retry_at`.
    Down {
        /// When to dial again (see [`Link::due`]).
        retry_at: Instant,
    },
    /// Dialled, not yet connected.
    Connecting,
    /// Connected: `HELLO 3` and the subscriptions are sent, commands may be.
    Up,
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkState::Down { .. } => f.write_str("down"),
            LinkState::Connecting => f.write_str("connecting"),
            LinkState::Up => f.write_str("up"),
        }
    }
}

/// What the link makes of the bytes that arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent<T> {
    /// The reply to the command sent with `tag`.
    Reply {
        /// The tag given to [`Link::command`].
        tag: T,
        /// What Redis answered (an error reply is a [`Reply::Error`] here, not a
        /// failure of the link).
        reply: Reply,
    },
    /// The reply to a command that [`Link::expire`] already gave back: whoever waited
    /// was answered without it, but what the command did (a key set, say) may need
    /// undoing.
    Late {
        /// The tag given to [`Link::command`].
        tag: T,
        /// What Redis answered.
        reply: Reply,
    },
    /// A message published on a subscribed channel.
    Message {
        /// The channel it was published on.
        channel: Vec<u8>,
        /// What was published.
        payload: Vec<u8>,
    },
}

/// A reply still to come: who waits for it, and until when.
#[derive(Debug)]
struct Waiting<T> {
    /// Who the reply answers.
    answers: Answers<T>,
    /// When the reply is overdue (see [`Link::expire`]).
    deadline: Instant,
}

/// Who is waiting for a reply.
#[derive(Debug)]
enum Answers<T> {
    /// The link itself: the reply to `HELLO 3`.
    Hello,
    /// The caller, with the tag of its command.
    Command(T),
}

/// The connection to Redis, without the connection: its state, the reconnect backoff,
/// the subscriptions, and the tags of the commands waiting for replies.
#[derive(Debug)]
pub struct Link<T> {
    /// Where the connection is in its life.
    state: LinkState,
    /// How long the next failure waits before the retry: doubles with every failure up
    /// to [`MAX_BACKOFF`], back to [`MIN_BACKOFF`] when a server answers `HELLO`. Reset
    /// on the answer rather than on the TCP connect, so a server that accepts and then
    /// hangs up at once (out of clients, say) is not dialled again ten times a second.
    backoff: Duration,
    /// The channels to be subscribed to, kept across reconnects. Ordered, so the
    /// `SUBSCRIBE` after a reconnect is the same bytes every time.
    channels: BTreeSet<Vec<u8>>,
    /// Who each reply still to come answers, oldest first. Emptied when the link goes
    /// down.
    ///
    /// ```text
    ///   waiting: | overdue, given back by expire | within their deadline |
    ///            0                               late                   len
    /// ```
    ///
    /// Deadlines grow along the queue (one timeout, later commands), so the overdue
    /// ones are always its front.
    waiting: VecDeque<Waiting<T>>,
    /// How many replies at the front of `waiting` are overdue.
    late: usize,
    /// How long a reply may take.
    reply_timeout: Duration,
    /// The server answered `HELLO` on this connection: it is there and speaks RESP3.
    greeted: bool,
    /// The bytes read, turned into replies; holds a partial reply between reads.
    reader: ReplyReader,
}

impl<T> Link<T> {
    /// A link that is down and due to dial at `now`, refusing any reply larger than
    /// `max_reply` bytes.
    pub fn new(now: Instant, max_reply: usize) -> Link<T> {
        Link {
            state: LinkState::Down { retry_at: now },
            backoff: MIN_BACKOFF,
            channels: BTreeSet::new(),
            waiting: VecDeque::new(),
            late: 0,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            greeted: false,
            reader: ReplyReader::new(max_reply),
        }
    }

    /// The same link, giving back the tags of replies that take longer than `timeout`
    /// (see [`Link::expire`]).
    pub fn with_reply_timeout(mut self, timeout: Duration) -> Link<T> {
        self.reply_timeout = timeout;
        self
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Whether a down link should dial again at `now`.
    pub fn due(&self, now: Instant) -> bool {
        matches!(self.state, LinkState::Down { retry_at } if now >= retry_at)
    }

    /// Up, `HELLO` answered, and no reply overdue: the server is there and keeping up.
    pub fn is_answering(&self) -> bool {
        self.state == LinkState::Up && self.greeted && self.late == 0
    }

    /// When the link next needs the caller, for the loop's deadline: the time to dial
    /// again while down, the deadline of the oldest reply not yet overdue while up
    /// ([`Link::expire`]); `None` when nothing is due.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            LinkState::Down { retry_at } => Some(retry_at),
            LinkState::Connecting => None,
            LinkState::Up => self.waiting.get(self.late).map(|w| w.deadline),
        }
    }

    /// The caller dialled Redis.
    pub fn connecting(&mut self) {
        self.state = LinkState::Connecting;
    }

    /// The connection is established at `now`: the bytes to send before anything else,
    /// `HELLO 3` and then one `SUBSCRIBE` for every channel in the set. The reply to
    /// `HELLO` is the link's own; it is not given to the caller.
    pub fn connected(&mut self, now: Instant) -> Vec<u8> {
        self.state = LinkState::Up;
        self.waiting.clear();
        self.late = 0;
        self.greeted = false;
        self.reader.clear();
        let mut out = Vec::new();
        command(&mut out, &[b"HELLO", b"3"]);
        self.wait_for(now, Answers::Hello);
        if !self.channels.is_empty() {
            let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
            args.extend(self.channels.iter().map(Vec::as_slice));
            command(&mut out, &args);
        }
        out
    }

    /// The connection failed or ended (refused, reset, end of stream, or the caller
    /// closed it after an error from [`Link::input`]). Answers when to dial again and
    /// the tags of the commands that will now get no reply, oldest first, so the caller
    /// can answer whoever waits for them (those [`Link::expire`] gave back already are
    /// not given again). Whether those commands ran is unknown.
    pub fn closed(&mut self, now: Instant) -> (Instant, Vec<T>) {
        let retry_at = now + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.state = LinkState::Down { retry_at };
        self.greeted = false;
        self.reader.clear();
        let late = std::mem::take(&mut self.late);
        let tags = self
            .waiting
            .drain(..)
            .skip(late)
            .filter_map(|waiting| match waiting.answers {
                Answers::Hello => None,
                Answers::Command(tag) => Some(tag),
            })
            .collect();
        (retry_at, tags)
    }

    /// The bytes of a command sent at `now`, its tag queued for the reply; `None` when
    /// the link is not up (the command is not kept for later).
    pub fn command(&mut self, now: Instant, tag: T, args: &[&[u8]]) -> Option<Vec<u8>> {
        if self.state != LinkState::Up {
            return None;
        }
        let mut out = Vec::new();
        command(&mut out, args);
        self.wait_for(now, Answers::Command(tag));
        Some(out)
    }

    /// The bytes of a login command (`AUTH`, `SELECT`) sent at `now` while the link is
    /// connecting, before [`Link::connected`]; its reply comes back with its tag, as a
    /// command's does. The caller calls `connected` once the last login reply is in
    /// (`connected` forgets the replies still to come). `None` unless connecting.
    pub fn login(&mut self, now: Instant, tag: T, args: &[&[u8]]) -> Option<Vec<u8>> {
        if self.state != LinkState::Connecting {
            return None;
        }
        let mut out = Vec::new();
        command(&mut out, args);
        self.wait_for(now, Answers::Command(tag));
        Some(out)
    }

    fn wait_for(&mut self, now: Instant, answers: Answers<T>) {
        let deadline = now.checked_add(self.reply_timeout).unwrap_or(now);
        self.waiting.push_back(Waiting { answers, deadline });
    }

    /// Adds `channel` to the subscriptions. The bytes of its `SUBSCRIBE` when the link
    /// is up and the channel is new; `None` otherwise (nothing to send: a down link
    /// subscribes when it connects). Redis confirms with a push, which takes no tag.
    pub fn subscribe(&mut self, channel: &[u8]) -> Option<Vec<u8>> {
        let new = self.channels.insert(channel.to_vec());
        self.channel_command(new, b"SUBSCRIBE", channel)
    }

    /// Removes `channel` from the subscriptions. The bytes of its `UNSUBSCRIBE` when the
    /// link is up and the channel was subscribed; `None` otherwise.
    pub fn unsubscribe(&mut self, channel: &[u8]) -> Option<Vec<u8>> {
        let known = self.channels.remove(channel);
        self.channel_command(known, b"UNSUBSCRIBE", channel)
    }

    /// The channels subscribed to (or to be, once connected), in order.
    pub fn channels(&self) -> impl Iterator<Item = &[u8]> {
        self.channels.iter().map(Vec::as_slice)
    }

    /// How many commands wait for a reply (overdue ones included: their replies are
    /// still to come).
    pub fn pending(&self) -> usize {
        self.waiting
            .iter()
            .filter(|waiting| matches!(waiting.answers, Answers::Command(_)))
            .count()
    }

    /// How many replies are overdue: given back by [`Link::expire`], not yet arrived.
    pub fn overdue(&self) -> usize {
        self.late
    }

    /// Bytes read from the connection: the replies and messages they complete. An error
    /// means the stream can no longer be trusted; the caller closes the connection and
    /// calls [`Link::closed`].
    pub fn input(&mut self, bytes: &[u8]) -> Result<Vec<LinkEvent<T>>, RespError> {
        self.reader.push(bytes);
        let mut events = Vec::new();
        while let Some(reply) = self.reader.next()? {
            match reply {
                Reply::Push(items) => match Push::classify(items) {
                    Push::Message { channel, payload } => {
                        events.push(LinkEvent::Message { channel, payload });
                    }
                    Push::Subscribed { .. } | Push::Unsubscribed { .. } | Push::Other => {}
                },
                reply => {
                    let Some(waiting) = self.waiting.pop_front() else {
                        return Err(RespError::Unsolicited);
                    };
                    let late = self.late > 0;
                    self.late = self.late.saturating_sub(1);
                    match (waiting.answers, late) {
                        (Answers::Hello, _) => self.hello(reply)?,
                        (Answers::Command(tag), false) => {
                            events.push(LinkEvent::Reply { tag, reply })
                        }
                        (Answers::Command(tag), true) => {
                            events.push(LinkEvent::Late { tag, reply })
                        }
                    }
                }
            }
        }
        Ok(events)
    }

    /// The server answered `HELLO 3`: with its description (a map) when it speaks
    /// RESP3, with an error when it does not.
    fn hello(&mut self, reply: Reply) -> Result<(), RespError> {
        match reply {
            Reply::Error(message) => Err(RespError::Handshake(
                String::from_utf8_lossy(&message).into_owned(),
            )),
            _ => {
                self.backoff = MIN_BACKOFF;
                self.greeted = true;
                Ok(())
            }
        }
    }

    fn channel_command(&self, changed: bool, verb: &[u8], channel: &[u8]) -> Option<Vec<u8>> {
        if !changed || self.state != LinkState::Up {
            return None;
        }
        let mut out = Vec::new();
        command(&mut out, &[verb, channel]);
        Some(out)
    }
}

impl<T: Clone> Link<T> {
    /// The tags of the commands whose replies are overdue at `now` (oldest first), each
    /// given once, so the caller can answer whoever waits for them. Their replies, when
    /// they come, are [`LinkEvent::Late`]. A `HELLO` overdue is counted
    /// ([`Link::overdue`]) but gives no tag.
    pub fn expire(&mut self, now: Instant) -> Vec<T> {
        let mut tags = Vec::new();
        for waiting in self.waiting.iter().skip(self.late) {
            if waiting.deadline > now {
                break;
            }
            self.late += 1;
            if let Answers::Command(tag) = &waiting.answers {
                tags.push(tag.clone());
            }
        }
        tags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";
    /// A short stand-in for the map Redis answers `HELLO 3` with.
    const HELLO_REPLY: &[u8] = b"%1\r\n$5\r\nproto\r\n:3\r\n";

    fn encoded(args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        command(&mut out, args);
        out
    }

    fn up(now: Instant) -> Link<u32> {
        let mut link = Link::new(now, 1024);
        link.connecting();
        assert_eq!(link.connected(Instant::now()), HELLO);
        assert_eq!(link.input(HELLO_REPLY).unwrap(), vec![]);
        link
    }

    fn reply(tag: u32, reply: Reply) -> LinkEvent<u32> {
        LinkEvent::Reply { tag, reply }
    }

    #[test]
    fn starts_down_and_due() {
        let now = Instant::now();
        let mut link: Link<u32> = Link::new(now, 1024);
        assert_eq!(link.state(), LinkState::Down { retry_at: now });
        assert!(link.due(now));
        assert_eq!(link.deadline(), Some(now));
        assert_eq!(link.command(Instant::now(), 1, &[b"PING"]), None);
        link.connecting();
        assert_eq!(link.state(), LinkState::Connecting);
        assert!(!link.due(now));
        assert_eq!(link.deadline(), None);
        assert_eq!(link.command(Instant::now(), 1, &[b"PING"]), None);
        assert_eq!(link.state().to_string(), "connecting");
    }

    #[test]
    fn tags_are_matched_in_order() {
        let mut link = up(Instant::now());
        assert_eq!(
            link.command(Instant::now(), 1, &[b"SET", b"k", b"v"]),
            Some(encoded(&[b"SET", b"k", b"v"]))
        );
        assert!(link.command(Instant::now(), 2, &[b"GET", b"k"]).is_some());
        assert!(link
            .command(Instant::now(), 3, &[b"GET", b"nothing"])
            .is_some());
        assert_eq!(link.pending(), 3);
        let events = link.input(b"+OK\r\n$1\r\nv\r\n_\r\n").unwrap();
        assert_eq!(
            events,
            vec![
                reply(1, Reply::Simple(b"OK".to_vec())),
                reply(2, Reply::Blob(b"v".to_vec())),
                reply(3, Reply::Null),
            ]
        );
        assert_eq!(link.pending(), 0);
    }

    #[test]
    fn an_error_reply_is_a_reply() {
        let mut link = up(Instant::now());
        link.command(Instant::now(), 1, &[b"NOPE"]);
        let events = link.input(b"-ERR unknown command 'NOPE'\r\n").unwrap();
        assert_eq!(
            events,
            vec![reply(
                1,
                Reply::Error(b"ERR unknown command 'NOPE'".to_vec())
            )]
        );
    }

    #[test]
    fn the_hello_reply_is_not_given_to_the_caller() {
        let mut link: Link<u32> = Link::new(Instant::now(), 1024);
        link.connected(Instant::now());
        // A command sent before the HELLO reply arrives: the first reply is HELLO's.
        link.command(Instant::now(), 9, &[b"PING"]);
        let events = link.input(b"%1\r\n$5\r\nproto\r\n:3\r\n+PONG\r\n").unwrap();
        assert_eq!(events, vec![reply(9, Reply::Simple(b"PONG".to_vec()))]);
    }

    #[test]
    fn a_refused_hello_is_an_error() {
        let mut link: Link<u32> = Link::new(Instant::now(), 1024);
        link.connected(Instant::now());
        let err = link.input(b"-ERR unknown command 'HELLO'\r\n").unwrap_err();
        assert_eq!(
            err,
            RespError::Handshake("ERR unknown command 'HELLO'".into())
        );
    }

    #[test]
    fn a_login_goes_before_hello_and_its_replies_keep_their_tags() {
        let now = Instant::now();
        let mut link: Link<u32> = Link::new(now, 1024);
        link.subscribe(b"room");
        assert_eq!(link.login(now, 1, &[b"AUTH", b"pw"]), None, "not dialled");
        link.connecting();
        let auth = link.login(now, 1, &[b"AUTH", b"alice", b"pw"]);
        assert_eq!(auth, Some(encoded(&[b"AUTH", b"alice", b"pw"])));
        // Still connecting: nothing else goes before the login is accepted.
        assert_eq!(link.command(now, 9, &[b"PING"]), None);
        assert_eq!(link.subscribe(b"lobby"), None);
        let events = link.input(b"+OK\r\n").unwrap();
        assert_eq!(events, vec![reply(1, Reply::Simple(b"OK".to_vec()))]);
        let select = link.login(now, 2, &[b"SELECT", b"3"]).unwrap();
        assert_eq!(select, encoded(&[b"SELECT", b"3"]));
        let events = link.input(b"-ERR DB index is out of range\r\n").unwrap();
        assert_eq!(
            events,
            vec![reply(
                2,
                Reply::Error(b"ERR DB index is out of range".to_vec())
            )]
        );
        // Accepted: HELLO and the subscriptions, then commands.
        let mut expected = HELLO.to_vec();
        expected.extend(encoded(&[b"SUBSCRIBE", b"lobby", b"room"]));
        assert_eq!(link.connected(now), expected);
        assert_eq!(link.login(now, 3, &[b"AUTH", b"pw"]), None, "up");
        assert_eq!(link.input(HELLO_REPLY).unwrap(), vec![]);
        assert!(link.is_answering());
    }

    #[test]
    fn a_login_unanswered_at_a_close_is_given_back() {
        let now = Instant::now();
        let mut link: Link<u32> = Link::new(now, 1024);
        link.connecting();
        link.login(now, 1, &[b"AUTH", b"pw"]);
        assert_eq!(link.pending(), 1);
        let (retry_at, tags) = link.closed(now);
        assert_eq!((retry_at, tags), (now + MIN_BACKOFF, vec![1]));
        // Refused logins never reach HELLO, so the backoff keeps growing.
        link.connecting();
        link.login(now, 2, &[b"AUTH", b"pw"]);
        link.input(b"-WRONGPASS invalid username-password pair\r\n")
            .unwrap();
        assert_eq!(link.closed(now).0, now + 2 * MIN_BACKOFF);
    }

    #[test]
    fn a_reply_nobody_asked_for_is_an_error() {
        let mut link = up(Instant::now());
        assert_eq!(link.input(b"+OK\r\n"), Err(RespError::Unsolicited));
    }

    #[test]
    fn pushes_do_not_consume_tags() {
        let mut link = up(Instant::now());
        assert_eq!(
            link.subscribe(b"room"),
            Some(encoded(&[b"SUBSCRIBE", b"room"]))
        );
        link.command(Instant::now(), 1, &[b"PING"]);
        let bytes = b">3\r\n$9\r\nsubscribe\r\n$4\r\nroom\r\n:1\r\n\
            >3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$2\r\nhi\r\n\
            +PONG\r\n\
            >3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$3\r\nbye\r\n";
        let events = link.input(bytes).unwrap();
        assert_eq!(
            events,
            vec![
                LinkEvent::Message {
                    channel: b"room".to_vec(),
                    payload: b"hi".to_vec()
                },
                reply(1, Reply::Simple(b"PONG".to_vec())),
                LinkEvent::Message {
                    channel: b"room".to_vec(),
                    payload: b"bye".to_vec()
                },
            ]
        );
        assert_eq!(
            link.unsubscribe(b"room"),
            Some(encoded(&[b"UNSUBSCRIBE", b"room"]))
        );
        let events = link
            .input(b">3\r\n$11\r\nunsubscribe\r\n$4\r\nroom\r\n:0\r\n")
            .unwrap();
        assert_eq!(events, vec![]);
    }

    #[test]
    fn input_split_across_reads() {
        let bytes = b">3\r\n$7\r\nmessage\r\n$1\r\nr\r\n$1\r\nx\r\n$5\r\nvalue\r\n";
        for cut in 0..=bytes.len() {
            let mut link = up(Instant::now());
            link.command(Instant::now(), 1, &[b"GET", b"k"]);
            let mut events = link.input(&bytes[..cut]).unwrap();
            events.extend(link.input(&bytes[cut..]).unwrap());
            assert_eq!(events.len(), 2, "split at {cut}");
            assert_eq!(events[1], reply(1, Reply::Blob(b"value".to_vec())));
        }
    }

    #[test]
    fn subscriptions_are_kept_while_down_and_sent_on_connect() {
        let now = Instant::now();
        let mut link: Link<u32> = Link::new(now, 1024);
        assert_eq!(link.subscribe(b"b"), None, "down: nothing to send");
        assert_eq!(link.subscribe(b"a"), None);
        assert_eq!(link.subscribe(b"c"), None);
        assert_eq!(link.unsubscribe(b"c"), None);
        assert_eq!(link.channels().collect::<Vec<_>>(), vec![b"a", b"b"]);
        let mut expected = HELLO.to_vec();
        expected.extend(encoded(&[b"SUBSCRIBE", b"a", b"b"]));
        assert_eq!(link.connected(Instant::now()), expected);
        // Up: a channel already subscribed sends nothing, nor does an unknown one.
        assert_eq!(link.subscribe(b"a"), None);
        assert_eq!(link.unsubscribe(b"zzz"), None);
    }

    #[test]
    fn resubscribes_after_a_reconnect() {
        let now = Instant::now();
        let mut link = up(now);
        assert!(link.subscribe(b"room").is_some());
        assert!(link.subscribe(b"lobby").is_some());
        let (retry_at, _) = link.closed(now);
        assert!(link.due(retry_at));
        link.connecting();
        let mut expected = HELLO.to_vec();
        expected.extend(encoded(&[b"SUBSCRIBE", b"lobby", b"room"]));
        assert_eq!(link.connected(Instant::now()), expected);
    }

    #[test]
    fn closed_gives_back_the_waiting_tags() {
        let now = Instant::now();
        let mut link = up(now);
        link.command(Instant::now(), 1, &[b"GET", b"a"]);
        link.command(Instant::now(), 2, &[b"GET", b"b"]);
        link.command(Instant::now(), 3, &[b"GET", b"c"]);
        // One reply, and half of the next, arrive before the connection breaks.
        assert_eq!(
            link.input(b"$1\r\nA\r\n$1\r\n").unwrap(),
            vec![reply(1, Reply::Blob(b"A".to_vec()))]
        );
        let (retry_at, tags) = link.closed(now);
        assert_eq!(tags, vec![2, 3]);
        assert_eq!(retry_at, now + MIN_BACKOFF);
        assert_eq!(link.state(), LinkState::Down { retry_at });
        assert_eq!(link.pending(), 0);
        assert_eq!(link.command(Instant::now(), 4, &[b"PING"]), None);

        // The half reply is gone with its connection: the next one starts clean.
        link.connected(Instant::now());
        link.command(Instant::now(), 5, &[b"PING"]);
        let events = link.input(b"%0\r\n+PONG\r\n").unwrap();
        assert_eq!(events, vec![reply(5, Reply::Simple(b"PONG".to_vec()))]);
    }

    #[test]
    fn closed_before_the_hello_reply_gives_back_only_tags() {
        let now = Instant::now();
        let mut link: Link<u32> = Link::new(now, 1024);
        link.connected(Instant::now());
        link.command(Instant::now(), 1, &[b"PING"]);
        assert_eq!(link.closed(now).1, vec![1]);
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let t0 = Instant::now();
        let mut link: Link<u32> = Link::new(t0, 1024);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            link.connecting();
            let (retry_at, tags) = link.closed(now);
            assert!(tags.is_empty());
            assert!(!link.due(retry_at - Duration::from_millis(1)));
            assert!(link.due(retry_at));
            waits.push(retry_at - now);
            now = retry_at;
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            waits,
            vec![
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(5000),
                ms(5000)
            ]
        );
    }

    #[test]
    fn backoff_is_reset_once_hello_is_answered() {
        let now = Instant::now();
        let mut link: Link<u32> = Link::new(now, 1024);
        for _ in 0..4 {
            link.closed(now);
        }
        // Connected, but the server hangs up before answering: still backing off.
        link.connected(Instant::now());
        assert_eq!(link.closed(now).0, now + Duration::from_millis(1600));
        // Connected and answered: the next failure waits the least again.
        link.connected(Instant::now());
        link.input(HELLO_REPLY).unwrap();
        assert_eq!(link.state(), LinkState::Up);
        assert_eq!(link.closed(now).0, now + MIN_BACKOFF);
    }

    #[test]
    fn an_overdue_reply_gives_its_tag_back_once_and_comes_late() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(3);
        let mut link: Link<u32> = Link::new(t0, 1024).with_reply_timeout(timeout);
        link.connected(t0);
        link.input(HELLO_REPLY).unwrap();
        let second = Duration::from_secs(1);
        link.command(t0, 1, &[b"SET", b"name", b"me", b"NX"]);
        link.command(t0 + second, 2, &[b"GET", b"k"]);
        assert_eq!(link.deadline(), Some(t0 + timeout));
        assert!(link.is_answering());

        assert_eq!(
            link.expire(t0 + timeout - Duration::from_millis(1)),
            Vec::<u32>::new()
        );
        assert_eq!(link.expire(t0 + timeout), vec![1]);
        assert_eq!(link.expire(t0 + timeout), Vec::<u32>::new(), "given once");
        assert_eq!(link.overdue(), 1);
        assert!(!link.is_answering());
        assert_eq!(link.deadline(), Some(t0 + second + timeout));
        assert_eq!(link.pending(), 2, "its reply is still to come");

        // Redis answers at last, in order: the first reply is late, the second on time.
        link.command(t0 + timeout, 3, &[b"PING"]);
        let events = link.input(b"+OK\r\n$1\r\nv\r\n+PONG\r\n").unwrap();
        assert_eq!(
            events,
            vec![
                LinkEvent::Late {
                    tag: 1,
                    reply: Reply::Simple(b"OK".to_vec())
                },
                reply(2, Reply::Blob(b"v".to_vec())),
                reply(3, Reply::Simple(b"PONG".to_vec())),
            ]
        );
        assert_eq!((link.overdue(), link.pending()), (0, 0));
        assert!(link.is_answering());
    }

    #[test]
    fn a_closed_link_does_not_give_back_tags_expire_gave() {
        let t0 = Instant::now();
        let mut link = up(t0);
        link.command(t0, 1, &[b"GET", b"a"]);
        link.command(t0 + Duration::from_secs(10), 2, &[b"GET", b"b"]);
        assert_eq!(link.expire(t0 + DEFAULT_REPLY_TIMEOUT), vec![1]);
        assert_eq!(link.closed(t0).1, vec![2]);
        assert_eq!(link.overdue(), 0);
    }

    #[test]
    fn an_unanswered_hello_leaves_the_link_up_but_not_answering() {
        let t0 = Instant::now();
        let mut link: Link<u32> = Link::new(t0, 1024);
        link.connected(t0);
        assert_eq!(link.state(), LinkState::Up);
        assert!(!link.is_answering(), "HELLO not answered yet");
        assert_eq!(link.expire(t0 + DEFAULT_REPLY_TIMEOUT), Vec::<u32>::new());
        assert_eq!(link.overdue(), 1);
        link.input(HELLO_REPLY).unwrap();
        assert!(link.is_answering());
        link.closed(t0);
        assert!(!link.is_answering());
    }

    #[test]
    fn an_oversized_reply_is_an_error() {
        let mut link: Link<u32> = Link::new(Instant::now(), 16);
        link.connected(Instant::now());
        link.input(b"%0\r\n").unwrap();
        link.command(Instant::now(), 1, &[b"GET", b"big"]);
        let err = link.input(b"$100\r\n0123456789012345").unwrap_err();
        assert_eq!(err, RespError::TooLarge { limit: 16 });
    }
}
