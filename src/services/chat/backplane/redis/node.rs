//! A chat node in a cluster through Redis (`switchboard chat --redis redis://HOST:PORT`):
//! what the chat service does with its one connection to Redis.
//!
//! ```text
//!   member says in "r" -> this node's members of "r"
//!                      -> PUBLISH sb:room:r  <node id> 0 m 0 <json> 0 <name/msg>
//!   every node subscribed to sb:room:r (those with members in "r") -> its members,
//!   but the message's own node, which drops its echo by the node id
//! ```
//!
//! - Room events: each node publishes its members' room events to `sb:room:ROOM` and
//!   subscribes to the rooms its members are in (from the first member's join to the
//!   last one's leave). Every event carries the node id; a node drops its own.
//! - Names: one hash, `sb:names`, holds each name with its holder (the node's number
//!   for this join) and the member's rooms; a name is written only while free
//!   (`names`), so it is unique across the cluster. `list` reads the hash (`HSCAN`).
//! - Liveness, per node (`liveness`): one heartbeat key `sb:node:NODE` with a TTL
//!   (`--redis-ttl`), holding the node's number, that the node renews a third of the
//!   way through; when a node dies, the others free its names. At rest, Redis does
//!   the same work for a node of ten members as for one of a hundred thousand.
//! - Direct messages: each node subscribes to one channel of its own, `sb:node:NODE`;
//!   a DM to a member of another node goes there, to the node whose number holds the
//!   name (one script: the name and the number read, the message published), and the
//!   receiver count says whether anyone holds the name.
//! - Redis down or restarting: the node logs it and tells its members; rooms go on
//!   among its own members, names are checked among them only; the link redials with
//!   backoff (`link`), resubscribes, and joins again: takes its members' names again (a
//!   name taken elsewhere meanwhile is reported to its holder here). No member is disconnected.
//! - Redis stopped or swamped (`limits`): what is queued for it stops at
//!   `--redis-max-queued`, a member waits for a reply at most `--redis-reply-timeout`,
//!   and `/healthz` and `/metrics` say how the link is.
//!
//! A stream member's `hello` waits for Redis's answer (`Claim::Pending`): the engine
//! holds its requests after it, in order, until the name is settled.
//!
//! On every connection, the node first logs in when the URL says so (`url`): `AUTH
//! [USER] PASSWORD`, then `SELECT DB`, each reply checked; refused, the link is down as
//! when Redis is unreachable, and redials with the same backoff.
//!
//! With a `rediss://` URL the connection speaks TLS (`tls`): the node writes and reads
//! plaintext as on any connection, and the reactor holds what it writes until the
//! handshake is done. A handshake that fails (a certificate not trusted or for another
//! name, a plain-text Redis) is a failure of the link like any other, logged and in
//! `/healthz` in TLS's words, and the link redials on the same backoff.
//!
//! The node does no I/O: it queues what it would write to Redis, asks for a dial or a
//! close, and turns what Redis says into the engine's `Remote` events; the chat service carries
//! those out on the connection it dialled (see `service.rs`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::limits::{Backlog, DEFAULT_MAX_QUEUED};
use super::link::{Link, LinkEvent, LinkState, DEFAULT_REPLY_TIMEOUT};
use super::names::Take;
use super::resp::{Reply, RespError};
use super::tls::{NodeTls, RedisTls};
use super::url::{Password, RedisUrl};
use crate::services::chat::engine::{
    Backplane, Claim, EventBytes, Listing, MemberId, Remote, RoomChange, Route, Serialized,
    Settled, Transmit, LOG_INTERVAL,
};
use crate::services::chat::{Chat, ChatCodec};
use crate::throttle::Throttle;
use crate::{CloseReason, ConnId, Dial, EndpointId, RawCodec, Reactor};

/// Largest reply accepted from Redis (a `list` of a large cluster is the largest).
const MAX_REPLY: usize = 16 << 20;
/// How often the node looks at its link: to redial when the backoff says, to set its
/// heartbeat again when a third of its TTL has passed.
pub const TICK: Duration = Duration::from_millis(250);
/// How long a dial to Redis may take; over TLS, also how long Redis may take to
/// answer after the connect (the handshake is part of the dial).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the cluster is, how long a node's keys live, and how much a node lets wait
/// for Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// The Redis server.
    pub addr: SocketAddr,
    /// How long a node's heartbeat lives without being set again: a dead node's
    /// members vanish from the cluster after it (and at most a third of it more).
    pub ttl: Duration,
    /// The most bytes queued for Redis: past it, commands (room events, mostly) are
    /// dropped and counted, and the members told, until the queue drains.
    pub max_queued: usize,
    /// How long a member waits for an answer that needs Redis (`hello`, a DM to
    /// another node, `list`) before it is told the cluster did not answer.
    pub reply_timeout: Duration,
    /// The ACL user the node logs in as (`AUTH USER PASSWORD`); `None` is Redis's
    /// `default` user.
    pub user: Option<String>,
    /// The password the node logs in with (`AUTH`); `None`: no `AUTH` is sent.
    pub password: Option<Password>,
    /// The database the node's names go to (`SELECT`, sent when not 0). Pub/sub spans
    /// the server's databases: the nodes of one cluster use the same one.
    pub db: u32,
    /// Speak TLS to Redis (`rediss://`), checking its certificate with this; `None`:
    /// plain TCP (`redis://`).
    pub tls: Option<RedisTls>,
}

impl RedisSettings {
    /// Parses `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` (see [`RedisUrl`]),
    /// resolving HOST; the limits take their defaults. No error shows the password.
    /// `rediss://` is the same over TLS, trusting the system's root certificates (and
    /// more with [`RedisTls::trust`]).
    pub fn parse(url: &str, ttl: Duration) -> Result<RedisSettings, String> {
        use std::net::ToSocketAddrs;
        let url = RedisUrl::parse(url).map_err(|e| e.to_string())?;
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", url.host))?;
        let tls = match url.tls {
            true => Some(RedisTls::new(&url.host)?),
            false => None,
        };
        Ok(RedisSettings {
            addr,
            ttl,
            max_queued: DEFAULT_MAX_QUEUED,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            user: url.user,
            password: url.password,
            db: url.db,
            tls,
        })
    }

    /// The server's URL as the node logs it, the password masked:
    /// `redis://alice:***@127.0.0.1:6379/2` (`rediss://` over TLS).
    pub fn masked_url(&self) -> String {
        let url = RedisUrl {
            tls: self.tls.is_some(),
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
            user: self.user.clone(),
            password: self.password.clone(),
            db: self.db,
        };
        url.to_string()
    }
}

/// Opens the unframed outbound endpoint the node's Redis connection goes through: the
/// setup step of a chat reactor with Redis ([`crate::Pool::start_with`]).
pub fn prepare(reactor: &mut Reactor<Chat>) -> Result<(), crate::Error> {
    let endpoint = reactor.outbound(ChatCodec::Raw(RawCodec));
    reactor.service_mut().use_backplane_endpoint(endpoint);
    Ok(())
}

/// What a reply from Redis answers.
#[derive(Debug, Clone)]
pub(super) enum Tag {
    /// A stream member's `hello`: `TAKE` of its new name (answered: the names refused).
    Claim { member: MemberId, name: String },
    /// Names this node holds, taken again: the reply lists those held elsewhere.
    Reclaim,
    /// The heartbeat set again (nil: it had expired).
    Heartbeat,
    /// A call freeing the names of nodes whose heartbeat stopped.
    Reap,
    /// A DM to a member of another node: how many nodes received it.
    Direct {
        member: MemberId,
        to: String,
        event: Serialized,
    },
    /// A step of `list`: the names found so far, each with its value.
    Scan {
        member: MemberId,
        found: BTreeMap<String, String>,
    },
    /// Logging in on a new connection, before `HELLO`: `AUTH [user] password`.
    Auth { user: Option<String> },
    /// Then `SELECT db`.
    Select { db: u32 },
    /// Nothing waits for the answer.
    Ignore,
}

/// Why a command's answer will not come.
#[derive(Debug, Clone, Copy)]
pub(super) enum Unanswered {
    /// The connection closed, or Redis refused the command.
    LinkLost,
    /// Not within the reply timeout (the answer may still come, late).
    Overdue(Duration),
}

/// One node's link to the cluster: the chat engine's `Backplane` through Redis.
#[derive(Debug)]
pub struct Node {
    /// This node, in every event it publishes.
    pub id: String,
    pub(super) settings: RedisSettings,
    endpoint: Option<EndpointId>,
    /// The connection to Redis, once dialled.
    pub conn: Option<ConnId>,
    pub(super) link: Link<Tag>,
    /// What to write and whether to close, until the service takes it.
    pub(super) transmit: Transmit,
    /// Bytes queued on the connection when the service last looked.
    pub(super) queued_on_conn: usize,
    /// What Redis said, for the engine.
    pub(super) heard: Vec<Remote>,
    /// When the heartbeat was last set.
    pub(super) refreshed: Instant,
    /// The heartbeat was found expired: join again on the next tick.
    pub(super) rejoin: bool,
    /// Messages published (room events and DMs), since the start.
    pub(super) published: u64,
    /// Messages received on the channels, since the start.
    pub(super) events_in: u64,
    /// The link has been up since it last went down (for the notices).
    was_up: bool,
    /// The link failed since it was last up: Redis is unreachable or gone.
    pub(super) down: bool,
    /// Why the link last failed, for `/healthz`.
    pub(super) last_failure: Option<String>,
    /// Whether commands are dropped at `max_queued`, and whether the members know.
    pub(super) backlog: Backlog,
    /// Commands dropped at `max_queued`, since the start.
    pub(super) dropped: u64,
    /// Dials after the first, since the start.
    pub(super) reconnects: u64,
    /// The link has been dialled once (the next dials are reconnects).
    dialled: bool,
    /// The loop is shutting down: no more dials.
    stopped: bool,
    /// Failures to reach Redis, for the log.
    unreachable_log: Throttle,
    /// Why the node closes this connection (Redis refused the login; over TLS, Redis
    /// did not answer in time), for the close that follows.
    close_cause: Option<String>,
    /// The TLS of a `rediss://` link (or why it could not be made: every dial then
    /// fails with it); `None` for `redis://`.
    tls: Option<Result<NodeTls, String>>,
    /// A TLS link logged in at the TCP connect: "connected" is said once Redis
    /// answers, the handshake done.
    connected_unsaid: bool,
    /// Over TLS, when Redis must have answered (the handshake done) after the TCP
    /// connect. A server that never answers a ClientHello (a plain-text Redis waits
    /// for the end of a line that does not come) would otherwise hold the link for
    /// good, never redialled.
    answer_due: Option<Instant>,
    /// The names held here, kept from `connected` while the login goes on.
    held: Vec<(String, Vec<String>)>,
    /// The members each other node last said it has in each room this node listens
    /// to (every room event carries its sender's count): the room's size across the
    /// cluster, for the presence limit.
    sizes: HashMap<String, HashMap<Vec<u8>, usize>>,
    /// Replies overdue, for the log.
    pub(super) overdue_log: Throttle,
}

impl Node {
    /// Loop `loop_index`'s node, not yet connected.
    pub fn new(settings: RedisSettings, loop_index: usize) -> Node {
        let now = Instant::now();
        let nonce = std::collections::hash_map::RandomState::new();
        let nonce = std::hash::BuildHasher::hash_one(&nonce, now) as u32;
        let id = format!("{}-{loop_index}-{nonce:08x}", std::process::id());
        // This node's DMs: its one channel, kept across reconnects by the link.
        let mut link = Link::new(now, MAX_REPLY).with_reply_timeout(settings.reply_timeout);
        let _ = link.subscribe(format!("sb:node:{id}").as_bytes());
        let tls = settings.tls.as_ref().map(RedisTls::for_node);
        Node {
            id,
            endpoint: None,
            conn: None,
            link,
            transmit: Transmit::default(),
            queued_on_conn: 0,
            heard: Vec::new(),
            settings,
            refreshed: now,
            rejoin: false,
            published: 0,
            events_in: 0,
            was_up: false,
            down: false,
            last_failure: None,
            backlog: Backlog::default(),
            dropped: 0,
            reconnects: 0,
            dialled: false,
            stopped: false,
            unreachable_log: Throttle::new(LOG_INTERVAL),
            close_cause: None,
            tls,
            connected_unsaid: false,
            answer_due: None,
            held: Vec::new(),
            sizes: HashMap::new(),
            overdue_log: Throttle::new(LOG_INTERVAL),
        }
    }

    /// True while the link is up.
    pub fn is_up(&self) -> bool {
        self.link.state() == LinkState::Up
    }

    /// Queues `bytes` (from the link) for the connection.
    fn send(&mut self, bytes: Option<Vec<u8>>) {
        if let (Some(_), Some(bytes)) = (self.conn, bytes) {
            self.transmit.bytes.extend_from_slice(&bytes);
        }
    }

    /// Runs a command, if the link is up and what is queued for Redis is within its
    /// bound; false if not (a command refused at the bound is counted as dropped).
    pub(super) fn command(&mut self, now: Instant, tag: Tag, args: &[&[u8]]) -> bool {
        if !self.is_up() || !self.within_bound() {
            return false;
        }
        let bytes = self.link.command(now, tag, args);
        let sent = bytes.is_some();
        self.send(bytes);
        sent
    }

    /// Runs a command that changes what the cluster knows of this node's names: not
    /// dropped at the bound (a name would stay held, or unlisted, for good) but the
    /// link closed instead; the reconnect joins again (`liveness`). False if not sent.
    pub(super) fn keep(&mut self, now: Instant, tag: Tag, args: &[&[u8]]) -> bool {
        if !self.is_up() {
            return false;
        }
        let bytes = self.link.command(now, tag, args);
        self.send_state(bytes)
    }

    pub(super) fn subscribe(&mut self, channel: &str) {
        let bytes = self.link.subscribe(channel.as_bytes());
        self.send_state(bytes);
    }

    pub(super) fn unsubscribe(&mut self, channel: &str) {
        let bytes = self.link.unsubscribe(channel.as_bytes());
        self.send_state(bytes);
    }

    /// A member waits for a command whose answer will not come (the link was lost:
    /// settled as a node on its own would) or not in time (it is told so).
    pub(super) fn unanswered(&mut self, tag: Tag, why: Unanswered) {
        let overdue = |what: &str| match why {
            Unanswered::LinkLost => None,
            Unanswered::Overdue(timeout) => Some(format!(
                "the cluster did not answer within {}s: {what}",
                timeout.as_secs_f64()
            )),
        };
        let remote = match tag {
            Tag::Claim { member, name } => Remote::NameSettled {
                member,
                outcome: match overdue(&format!("name {name} not taken, try again later")) {
                    Some(reason) => Settled::Refused(reason),
                    None => Settled::Unchecked,
                },
                name,
            },
            Tag::Direct { member, to, .. } => Remote::Refuse {
                member,
                reason: overdue(&format!("the message to {to} may not have arrived"))
                    .unwrap_or_else(|| {
                        format!("no member named {to} on this server (the cluster is unreachable)")
                    }),
            },
            Tag::Scan { member, .. } => match overdue("list again later") {
                Some(reason) => Remote::Refuse { member, reason },
                None => Remote::ListLocally { member },
            },
            Tag::Reclaim
            | Tag::Heartbeat
            | Tag::Reap
            | Tag::Ignore
            | Tag::Auth { .. }
            | Tag::Select { .. } => return,
        };
        self.heard.push(remote);
    }

    /// On a new connection, the first step of the login that goes before `HELLO` (a
    /// server with a password refuses `HELLO` until it has it): `AUTH` when there is a
    /// password, else `SELECT` when the database is not 0. False when there is nothing
    /// to log in with: then `HELLO` and the rest may go.
    fn log_in(&mut self, now: Instant) -> bool {
        let Some(password) = &self.settings.password else {
            return self.select_db(now);
        };
        let user = self.settings.user.as_deref();
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        args.extend(user.map(str::as_bytes));
        args.push(password.expose());
        let tag = Tag::Auth {
            user: user.map(str::to_owned),
        };
        let bytes = self.link.login(now, tag, &args);
        self.send(bytes);
        true
    }

    /// `SELECT db` when the database is not 0; false when it is.
    fn select_db(&mut self, now: Instant) -> bool {
        let db = self.settings.db;
        if db == 0 {
            return false;
        }
        let index = db.to_string();
        let bytes = self
            .link
            .login(now, Tag::Select { db }, &[b"SELECT", index.as_bytes()]);
        self.send(bytes);
        true
    }

    /// Redis answered a step of the login: on to the next step, or to what follows
    /// the login. Refused, the connection is closed, and the link is down (its cause
    /// logged and in `/healthz`) until a redial, after the backoff, is accepted.
    fn login_reply(&mut self, now: Instant, tag: &Tag, reply: Reply) {
        if let Reply::Error(e) = &reply {
            let e = String::from_utf8_lossy(e);
            self.close_cause = Some(match tag {
                Tag::Auth { user } => format!(
                    "Redis refused the password for user {}: {e}",
                    user.as_deref().unwrap_or("default")
                ),
                Tag::Select { db } => format!("Redis refused to select database {db}: {e}"),
                _ => format!("Redis refused the login: {e}"),
            });
            self.transmit.close = true;
            return;
        }
        if matches!(tag, Tag::Auth { .. }) && self.select_db(now) {
            return;
        }
        self.logged_in(now);
    }

    /// The login is done (or there was none): `HELLO`, the subscriptions, and this
    /// node joins the cluster again, taking its names again.
    fn logged_in(&mut self, now: Instant) {
        let hello = self.link.connected(now);
        self.send(Some(hello));
        self.load_scripts(now);
        self.refreshed = now;
        self.down = false;
        self.backlog = Backlog::default();
        self.connected_unsaid = true;
        if self.tls.is_none() {
            self.say_connected();
        }
        let held = std::mem::take(&mut self.held);
        self.join(now, held);
    }

    /// Logs that the link is connected, once per connection.
    fn say_connected(&mut self) {
        if std::mem::take(&mut self.connected_unsaid) {
            log::info!(
                "chat: node {}: connected to Redis at {}",
                self.id,
                self.settings.masked_url()
            );
        }
    }

    /// `SCRIPT LOAD` of every script, first on a new connection: Redis answers in
    /// order, so every `EVALSHA` after them finds its script.
    fn load_scripts(&mut self, now: Instant) {
        for script in scripts() {
            let args: [&[u8]; 3] = [b"SCRIPT", b"LOAD", script.body.as_bytes()];
            let bytes = self.link.command(now, Tag::Ignore, &args);
            self.send(bytes);
        }
    }

    pub(super) fn reply(&mut self, now: Instant, tag: Tag, reply: Reply) {
        if let Tag::Auth { .. } | Tag::Select { .. } = tag {
            return self.login_reply(now, &tag, reply);
        }
        if let Reply::Error(e) = &reply {
            if e.starts_with(b"NOSCRIPT") {
                // Redis forgot the scripts (a SCRIPT FLUSH): the reconnect loads them.
                self.transmit.close = true;
            }
            log::warn!(
                "chat: Redis refused a command: {}",
                String::from_utf8_lossy(e)
            );
            return self.unanswered(tag, Unanswered::LinkLost);
        }
        let remote = match tag {
            Tag::Claim { member, name } => Remote::NameSettled {
                member,
                name,
                outcome: match all_taken(&reply) {
                    true => Settled::Granted,
                    false => Settled::Taken,
                },
            },
            Tag::Reclaim => return self.held_elsewhere(reply),
            Tag::Heartbeat => return self.heartbeat_answered(&reply),
            Tag::Reap => return self.reaped(now, reply),
            Tag::Direct { member, to, event } => Remote::DirectSettled {
                member,
                to,
                event: matches!(reply, Reply::Number(n) if n > 0).then_some(event),
            },
            Tag::Scan { member, found } => return self.list_scanned(now, member, found, reply),
            Tag::Ignore | Tag::Auth { .. } | Tag::Select { .. } => return,
        };
        self.heard.push(remote);
    }

    /// Names held here that `TAKE` found held by another node: their holders here hear.
    fn held_elsewhere(&mut self, reply: Reply) {
        let Reply::Array(names) = reply else { return };
        for name in names.iter().filter_map(Reply::as_bytes) {
            let name = String::from_utf8_lossy(name).into_owned();
            self.heard.push(Remote::NoticeTo {
                text: format!(
                    "your name {name} is also held by a member of another chat \
                     server: choose another with hello"
                ),
                name,
            });
        }
    }

    /// A published event from another node.
    fn message(&mut self, channel: &[u8], payload: &[u8]) {
        self.events_in += 1;
        if channel.strip_prefix(b"sb:node:") == Some(self.id.as_bytes()) {
            return self.direct_in(payload);
        }
        let Some((from, (remember, size), event)) = open_envelope(payload) else {
            return log::debug!("chat: a message from Redis that is not an event: dropped");
        };
        if from == self.id.as_bytes() {
            return; // our own, echoed by Redis
        }
        // (Our own channels: their names are UTF-8, as room and member names are.)
        let named = |prefix: &[u8]| {
            channel
                .strip_prefix(prefix)
                .and_then(|n| std::str::from_utf8(n).ok())
        };
        if let Some(room) = named(b"sb:room:") {
            let sizes = self.sizes.entry(room.to_owned()).or_default();
            match sizes.get_mut(from) {
                Some(known) => *known = size,
                None => {
                    sizes.insert(from.to_vec(), size);
                }
            }
            self.heard.push(Remote::Room {
                room: room.to_owned(),
                event,
                remember,
            });
        }
    }

    /// A DM on this node's channel: the name it is for, a NUL, then the envelope.
    fn direct_in(&mut self, payload: &[u8]) {
        let mut parts = payload.splitn(2, |&b| b == 0);
        let (Some(to), Some(envelope)) = (parts.next(), parts.next()) else {
            return log::debug!("chat: a DM from Redis without its recipient: dropped");
        };
        let (Ok(to), Some((_, _, event))) = (std::str::from_utf8(to), open_envelope(envelope))
        else {
            return log::debug!("chat: a DM from Redis that is not an event: dropped");
        };
        self.heard.push(Remote::Direct {
            to: to.to_owned(),
            event,
        });
    }

    /// The heartbeat's TTL, in whole seconds (at least 1).
    pub(super) fn ttl_secs(&self) -> String {
        self.settings.ttl.as_secs().max(1).to_string()
    }
}

impl Backplane for Node {
    /// A stream member's name waits for Redis's `TAKE`; a datagram member's, or any
    /// while the link is down, is checked here only.
    fn claim(
        &mut self,
        now: Instant,
        member: MemberId,
        name: &str,
        _old: Option<&str>,
        rooms: &[String],
        can_wait: bool,
    ) -> Claim {
        if !self.is_up() || !can_wait {
            return Claim::Free;
        }
        let tag = Tag::Claim {
            member,
            name: name.to_owned(),
        };
        match self.take_names(now, tag, Take::New, &[(name, rooms)]) {
            true => Claim::Pending,
            false => Claim::Free,
        }
    }

    fn named(&mut self, now: Instant, name: &str, old: Option<&str>, rooms: &[String]) {
        if let Some(old) = old {
            self.unclaim(now, old);
        }
        self.hold_name(now, name, rooms);
    }

    /// Its name's value lists its rooms; the node listens to a room while it has members in it.
    fn moved(&mut self, now: Instant, change: RoomChange<'_>) {
        let channel = format!("sb:room:{}", change.room);
        match change.entered || !change.first_or_last {
            true => self.subscribe(&channel),
            false => {
                self.unsubscribe(&channel);
                self.sizes.remove(change.room);
            }
        }
        if let Some(name) = change.name {
            self.take_names(now, Tag::Ignore, Take::Again, &[(name, change.rooms)]);
        }
    }

    fn gone(&mut self, now: Instant, name: Option<&str>, _rooms: &[String], emptied: &[&str]) {
        for room in emptied {
            self.unsubscribe(&format!("sb:room:{room}"));
            self.sizes.remove(*room);
        }
        if let Some(name) = name {
            self.unclaim(now, name);
        }
    }

    fn publish(
        &mut self,
        now: Instant,
        room: &str,
        event: &EventBytes,
        here: usize,
        remember: bool,
    ) {
        let payload = envelope(&self.id, (remember, here), event.serialized());
        let channel = format!("sb:room:{room}");
        let sent = self.command(
            now,
            Tag::Ignore,
            &[b"PUBLISH", channel.as_bytes(), &payload],
        );
        self.published += u64::from(sent);
        self.tell_backlog();
    }

    /// Published to the node holding the name (`ROUTE`), the name before the
    /// envelope; the receiver count says whether one did.
    fn direct(&mut self, now: Instant, member: MemberId, to: &str, event: &EventBytes) -> Route {
        if !self.is_up() {
            return Route::Unknown;
        }
        let mut payload = to.as_bytes().to_vec();
        payload.push(0);
        payload.extend(envelope(&self.id, (false, 0), event.serialized()));
        let tag = Tag::Direct {
            member,
            to: to.to_owned(),
            event: event.serialized().clone(),
        };
        match self.route(now, tag, to, &payload) {
            true => {
                self.published += 1;
                Route::Pending
            }
            false => Route::Unknown,
        }
    }

    fn list(&mut self, now: Instant, member: MemberId) -> Listing {
        match self.is_up() && self.scan(now, member, BTreeMap::new(), b"0") {
            true => Listing::Pending,
            false => Listing::Local,
        }
    }

    /// Deletes the name, if it is still this node's.
    fn unclaim(&mut self, now: Instant, name: &str) {
        self.give_name(now, name);
    }

    fn take_remote(&mut self) -> Vec<Remote> {
        std::mem::take(&mut self.heard)
    }

    /// This node's members and what the other nodes last said they have.
    fn room_size(&mut self, room: &str, here: usize) -> usize {
        let elsewhere: usize = self.sizes.get(room).map_or(0, |s| s.values().sum());
        here.saturating_add(elsewhere)
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn every(&self) -> Option<Duration> {
        Some(TICK)
    }

    fn set_endpoint(&mut self, endpoint: EndpointId) {
        self.endpoint = Some(endpoint);
    }

    fn transmit(&mut self) -> Option<(ConnId, Transmit)> {
        Some((self.conn?, std::mem::take(&mut self.transmit)))
    }

    fn note_queued(&mut self, bytes: usize) {
        self.queued_on_conn = bytes;
    }

    fn health(&self) -> Result<(), String> {
        self.link_health()
    }

    fn write_metrics(&self, out: &mut String) {
        self.write_link_metrics(out)
    }

    /// On start: say where the cluster is.
    fn start(&mut self) {
        log::info!(
            "chat: node {} joining the cluster through Redis at {}",
            self.id,
            self.settings.masked_url()
        );
    }

    /// Redis, when the link is down and its backoff is over.
    fn dial_due(&mut self, now: Instant) -> Option<Dial> {
        if self.stopped || !self.link.due(now) {
            return None;
        }
        if std::mem::replace(&mut self.dialled, true) {
            self.reconnects += 1;
        }
        let dial = Dial::tcp(self.settings.addr).timeout(DIAL_TIMEOUT);
        let dial = match &self.tls {
            None => dial,
            Some(Ok(tls)) => match tls.dial(dial) {
                Ok(dial) => dial,
                Err(e) => return self.tls_unusable(now, e),
            },
            Some(Err(e)) => return self.tls_unusable(now, e.clone()),
        };
        Some(match self.endpoint {
            Some(endpoint) => dial.endpoint(endpoint),
            None => dial,
        })
    }

    /// The dial is under way on `conn`.
    fn dialling(&mut self, conn: ConnId) {
        self.conn = Some(conn);
        self.link.connecting();
    }

    /// The dial could not even start.
    fn dial_failed(&mut self, now: Instant, e: &dyn std::fmt::Display) {
        if let Some(times) = self.unreachable_log.note(now) {
            log::warn!(
                "chat: cannot dial Redis at {}{}: {e}",
                self.settings.addr,
                attempts(times)
            );
        }
        self.down = true;
        self.last_failure = Some(format!("cannot dial: {e}"));
        self.link.closed(now);
    }

    /// The link's tick: answer whoever waits for an overdue reply, end a drained
    /// backlog, and keep the node alive in the cluster (`liveness`; `held` gives the
    /// names held here, for a node that must join again).
    fn tick(&mut self, now: Instant, held: &dyn Fn() -> Vec<(String, Vec<String>)>) {
        self.check_answer_due(now);
        self.expire_replies(now);
        self.watch_backlog();
        if self.is_up() {
            self.beat(now, held);
        }
    }

    /// The connection came up: say so, and take this node's names (`held`) again.
    fn connected(&mut self, now: Instant, held: Vec<(String, Vec<String>)>) {
        self.held = held;
        if self.tls.is_some() {
            self.answer_due = now.checked_add(DIAL_TIMEOUT);
        }
        if !self.log_in(now) {
            self.logged_in(now);
        }
    }

    /// Bytes from Redis.
    fn input(&mut self, now: Instant, bytes: &[u8]) {
        self.take_input(now, bytes);
        // Over TLS, the first bytes from Redis say the handshake is done.
        self.answer_due = None;
        self.say_connected();
        // Up once Redis has answered HELLO, not when the socket connects: a server
        // that refuses the node (a password it lacks) is never "up", only unreachable.
        if !self.was_up && self.link.is_answering() {
            self.was_up = true;
            self.heard.push(Remote::NoticeAll {
                text: "the link to the other chat nodes is up".into(),
            });
        }
    }

    /// The connection closed or never came up: say so once, and settle what waited
    /// for it as a node on its own would.
    fn closed(&mut self, now: Instant, reason: CloseReason, tls_failure: Option<String>) {
        self.conn = None;
        self.transmit = Transmit::default();
        self.queued_on_conn = 0;
        let (retry_at, tags) = self.link.closed(now);
        let wait = retry_at.saturating_duration_since(now);
        let was_up = std::mem::replace(&mut self.was_up, false);
        self.down = reason != CloseReason::Shutdown;
        self.connected_unsaid = false;
        self.answer_due = None;
        // A refused login or TLS closed the connection: its cause says more than the
        // close.
        let tls_failure = tls_failure.map(|words| super::tls::failure_words(&words));
        let why = (self.close_cause.take().or(tls_failure)).unwrap_or_else(|| reason.to_string());
        self.last_failure = Some(why.clone());
        self.held.clear();
        // The queue went with the connection; the notice below says more than a
        // backlog's would.
        self.backlog = Backlog::default();
        // Nothing is heard from the other nodes until it is back: their counts would
        // only go stale.
        self.sizes.clear();
        if reason == CloseReason::Shutdown {
            self.stopped = true;
            log::info!(
                "chat: node {}: link to Redis closed for the shutdown",
                self.id
            );
        } else if was_up {
            log::warn!(
                "chat: node {}: lost Redis at {} ({why}); rooms reach this node's \
                 members only until it is back (retrying in {wait:?})",
                self.id,
                self.settings.addr
            );
            self.heard.push(Remote::NoticeAll {
                text: LINK_DOWN.into(),
            });
        } else if let Some(times) = self.unreachable_log.note(now) {
            log::warn!(
                "chat: node {}: cannot reach Redis at {} ({why}){}; rooms reach this \
                 node's members only until it can (retrying in {wait:?})",
                self.id,
                self.settings.addr,
                attempts(times)
            );
        }
        for tag in tags {
            self.unanswered(tag, Unanswered::LinkLost);
        }
    }
}

impl Node {
    /// The link's TLS cannot be had (`why`): the dial fails as an unreachable Redis
    /// does, and is tried again on the backoff.
    fn tls_unusable(&mut self, now: Instant, why: String) -> Option<Dial> {
        self.dial_failed(now, &format!("TLS: {why}"));
        None
    }

    /// Over TLS, closes a connection Redis has not answered within [`DIAL_TIMEOUT`] of
    /// the TCP connect: the dial has failed, as a connect that times out has.
    fn check_answer_due(&mut self, now: Instant) {
        if self.answer_due.is_some_and(|due| now >= due) {
            self.answer_due = None;
            self.close_cause = Some(format!(
                "TLS: Redis did not answer within {DIAL_TIMEOUT:?} of the connect (no \
                 handshake: is the port Redis's TLS port?)"
            ));
            self.transmit.close = true;
        }
    }

    /// What Redis sent: replies, late replies, and messages on the channels.
    fn take_input(&mut self, now: Instant, bytes: &[u8]) {
        match self.link.input(bytes) {
            Ok(events) => {
                for event in events {
                    match event {
                        LinkEvent::Reply { tag, reply } => self.reply(now, tag, reply),
                        LinkEvent::Late { tag, reply } => self.late_reply(now, tag, reply),
                        LinkEvent::Message { channel, payload } => self.message(&channel, &payload),
                    }
                }
            }
            Err(RespError::Handshake(why)) if why.starts_with("NOAUTH") => {
                self.close_cause = Some(format!(
                    "Redis asks for a password ({why}): give it in the --redis URL, \
                     --redis-password-file or SWITCHBOARD_REDIS_PASSWORD"
                ));
                self.transmit.close = true;
            }
            Err(e) => {
                log::warn!("chat: Redis sent what cannot be read ({e}): reconnecting");
                self.transmit.close = true;
            }
        }
    }
}

/// What members are told when the link goes down, or is down when they arrive.
pub(super) const LINK_DOWN: &str = "the link to the other chat nodes is down: rooms reach this \
     server's members only until it is back";

/// Whether a `TAKE` reply says every name asked for was taken (none refused).
pub(super) fn all_taken(reply: &Reply) -> bool {
    matches!(reply, Reply::Array(refused) if refused.is_empty())
}

/// A Lua script the node runs, and how many of its arguments are keys. Its source goes
/// to Redis once per connection (`SCRIPT LOAD`, see `Node::load_scripts`); each call names
/// it by its SHA-1 (`EVALSHA`), so a join storm does not send the source with every
/// name.
#[derive(Debug)]
pub(super) struct Script {
    /// The number of keys, as `EVALSHA` takes it.
    pub keys: &'static [u8],
    /// The Lua source.
    pub body: &'static str,
    /// The source's SHA-1 in hex, as Redis names the script; made on first use.
    pub sha: OnceLock<String>,
}

impl Script {
    /// `EVALSHA sha numkeys args...`: the keys first, then the other arguments.
    pub fn eval<'a>(&'a self, args: &[&'a [u8]]) -> Vec<&'a [u8]> {
        let mut all: Vec<&[u8]> = vec![b"EVALSHA", self.sha().as_bytes(), self.keys];
        all.extend_from_slice(args);
        all
    }

    /// The SHA-1 Redis knows the script by.
    fn sha(&self) -> &str {
        self.sha
            .get_or_init(|| sha1_smol::Sha1::from(self.body).digest().to_string())
    }
}

/// Every script the node runs, loaded on each connection before any is called.
fn scripts() -> [&'static Script; 5] {
    use super::liveness::{JOIN, REAP};
    use super::names::{GIVE, ROUTE, TAKE};
    [&JOIN, &REAP, &TAKE, &GIVE, &ROUTE]
}

/// How many failed attempts a throttled log line stands for, when more than one.
fn attempts(times: u64) -> String {
    match times {
        0 | 1 => String::new(),
        _ => format!(" ({times} failed attempts since the last line)"),
    }
}

/// A room event or a DM as it travels through Redis: the node, the kind (`m` for a
/// message kept in history, `p` for presence) with the sender's members in the room,
/// the typed JSON and the name/msg form, joined by NUL bytes (which JSON text never
/// contains).
fn envelope(node: &str, (remember, here): (bool, usize), event: &Serialized) -> Vec<u8> {
    let name_msg = event.name_msg.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(node.len() + event.json.len() + name_msg.len() + 24);
    out.extend_from_slice(node.as_bytes());
    out.push(0);
    out.push(if remember { b'm' } else { b'p' });
    // (Writing to a Vec cannot fail.)
    let _ = write!(out, "{here}");
    out.push(0);
    out.extend_from_slice(&event.json);
    out.push(0);
    out.extend_from_slice(name_msg);
    out
}

/// The parts of an [`envelope`]: node, (remember, the sender's members in the room),
/// the event.
fn open_envelope(payload: &[u8]) -> Option<(&[u8], (bool, usize), Serialized)> {
    let mut parts = payload.splitn(4, |&b| b == 0);
    let node = parts.next()?;
    let (&kind, size) = parts.next()?.split_first()?;
    let remember = kind == b'm';
    // Saturating: a count from the wire cannot make the sum overflow.
    let size = std::str::from_utf8(size)
        .ok()?
        .parse::<usize>()
        .ok()?
        .min(u32::MAX as usize);
    let json = parts.next()?.to_vec();
    let name_msg = parts.next().filter(|l| !l.is_empty()).map(<[u8]>::to_vec);
    Some((node, (remember, size), Serialized { json, name_msg }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_opens_to_what_was_put_in() {
        let event = Serialized {
            json: br#"{"type":"msg"}"#.to_vec(),
            name_msg: Some(br#"{"name":"a","msg":"b"}"#.to_vec()),
        };
        let payload = envelope("node-1", (true, 1234), &event);
        let (node, kind, back) = open_envelope(&payload).unwrap();
        assert_eq!((node, kind), (&b"node-1"[..], (true, 1234)));
        assert_eq!(back, event);
        let plain = envelope(
            "n",
            (false, 0),
            &Serialized {
                json: b"{}".to_vec(),
                name_msg: None,
            },
        );
        let (_, kind, back) = open_envelope(&plain).unwrap();
        assert!(kind == (false, 0) && back.name_msg.is_none());
        assert!(open_envelope(b"no separators").is_none());
        assert!(open_envelope(b"n\0m\0{}\0").is_none(), "no count");
        let huge = open_envelope(b"n\0p99999999999999999999\0{}\0");
        assert!(huge.is_none(), "a count past usize is refused");
        let (_, (_, big), _) = open_envelope(b"n\0p9999999999999\0{}\0").unwrap();
        assert_eq!(
            big,
            u32::MAX as usize,
            "counts are capped, so sums cannot overflow"
        );
    }

    #[test]
    fn redis_urls_take_a_host_and_an_optional_port() {
        let ttl = Duration::from_secs(30);
        assert_eq!(
            RedisSettings::parse("redis://127.0.0.1:6380", ttl)
                .unwrap()
                .addr,
            "127.0.0.1:6380".parse().unwrap()
        );
        assert_eq!(
            RedisSettings::parse("redis://127.0.0.1", ttl)
                .unwrap()
                .addr
                .port(),
            6379
        );
        assert!(RedisSettings::parse("http://127.0.0.1", ttl).is_err());
    }

    #[test]
    fn redis_urls_take_a_login_and_a_database_shown_without_the_password() {
        let ttl = Duration::from_secs(30);
        let settings =
            RedisSettings::parse("redis://alice:s%3Acret@127.0.0.1:6380/3", ttl).unwrap();
        assert_eq!(settings.user.as_deref(), Some("alice"));
        assert_eq!(settings.password, Some(Password::new("s:cret")));
        assert_eq!(settings.db, 3);
        assert_eq!(settings.masked_url(), "redis://alice:***@127.0.0.1:6380/3");
        assert!(!format!("{settings:?}").contains("cret"));
        let err = RedisSettings::parse("redis://:SECRET@127.0.0.1:99999", ttl).unwrap_err();
        assert!(err.contains("99999") && !err.contains("SECRET"), "{err}");
    }
}
