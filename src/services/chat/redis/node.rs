//! A chat node in a cluster through Redis (`switchboard chat --redis redis://HOST:PORT`):
//! what the chat service does with its one connection to Redis.
//!
//! On every connection, the node first logs in when the URL says so (`url`): `AUTH
//! [USER] PASSWORD`, then `SELECT DB`, each reply checked; refused, the link is down as
//! when Redis is unreachable, and redials with the same backoff.
//!
//! ```text
//!   member says in "r" -> this node's members of "r"
//!                      -> PUBLISH sb:room:r  <node id> 0 m 0 <json> 0 <legacy>
//!   every node subscribed to sb:room:r (those with members in "r") -> its members,
//!   but the message's own node, which drops its echo by the node id
//! ```
//!
//! - Room events: each node publishes its members' room events to `sb:room:ROOM` and
//!   subscribes to the rooms its members are in (from the first member's join to the
//!   last one's leave). Every event carries the node id; a node drops its own.
//! - Names and presence: `sb:name:NAME` holds the node and the member's rooms, with a
//!   TTL (`--redis-ttl`) that the node refreshes a third of the way through: a name is
//!   taken with `SET NX`, so it is unique across the cluster, and a dead node's members
//!   vanish when their keys expire. `list` reads every such key (`SCAN` then `MGET`).
//! - Direct messages: each node subscribes to `sb:dm:NAME` for each of its named
//!   members; a DM to a member of another node is a `PUBLISH` there, whose receiver
//!   count says whether anyone holds the name.
//! - Redis down or restarting: the node logs it and tells its members; rooms go on
//!   among its own members, names are checked among them only; the link redials with
//!   backoff (`link`), resubscribes, and takes its members' names again (a name taken
//!   elsewhere meanwhile is reported to its holder here). No member is disconnected.
//! - Redis stopped or swamped (`limits`): what is queued for it stops at
//!   `--redis-max-queued`, a member waits for a reply at most `--redis-reply-timeout`,
//!   and `/healthz` and `/metrics` say how the link is.
//!
//! A TCP member's `hello` waits for Redis's answer: its requests after it wait too
//! (queued, in order) and are carried out once the name is settled.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::limits::{Backlog, DEFAULT_MAX_QUEUED};
use super::link::{Link, LinkEvent, LinkState, DEFAULT_REPLY_TIMEOUT};
use super::names::Claimed;
use super::resp::{Reply, RespError};
use super::url::{Password, RedisUrl};
use crate::services::chat::fanout::Encoded;
use crate::services::chat::loops::Wire;
use crate::services::chat::protocol::Request;
use crate::services::chat::rooms::MemberId;
use crate::services::chat::ChatCodec;
use crate::services::chat::{Chat, ChatTimer, Seat, LOG_INTERVAL};
use crate::throttle::Throttle;
use crate::{CloseMode, ConnId, Context, Dial, EndpointId, RawCodec, Reactor};

/// Largest reply accepted from Redis (a `list` of a large cluster is the largest).
const MAX_REPLY: usize = 16 << 20;
/// How often the node looks at its link: to redial when the backoff says, to refresh
/// its keys when a third of their TTL has passed.
const TICK: Duration = Duration::from_millis(250);

/// Where the cluster is, how long a node's keys live, and how much a node lets wait
/// for Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// The Redis server.
    pub addr: SocketAddr,
    /// How long names and presence keys live without a refresh: a dead node's members
    /// vanish after it.
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
}

impl RedisSettings {
    /// Parses `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` (see [`RedisUrl`]),
    /// resolving HOST; the limits take their defaults. No error shows the password.
    pub fn parse(url: &str, ttl: Duration) -> Result<RedisSettings, String> {
        use std::net::ToSocketAddrs;
        let url = RedisUrl::parse(url).map_err(|e| e.to_string())?;
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", url.host))?;
        Ok(RedisSettings {
            addr,
            ttl,
            max_queued: DEFAULT_MAX_QUEUED,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            user: url.user,
            password: url.password,
            db: url.db,
        })
    }

    /// The server's URL as the node logs it, the password masked:
    /// `redis://alice:***@127.0.0.1:6379/2`.
    pub fn masked_url(&self) -> String {
        let url = RedisUrl {
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
    reactor.service_mut().use_redis_endpoint(endpoint);
    Ok(())
}

/// What a reply from Redis answers.
#[derive(Debug, Clone)]
pub(in crate::services::chat) enum Tag {
    /// A TCP member's `hello`: `SET NX` of its new name.
    Claim { member: MemberId, name: String },
    /// A name this node holds, taken again after a reconnect or an expiry.
    Reclaim { name: String },
    /// The TTL refresh of a name (0: the key had gone).
    Refresh { name: String },
    /// A DM to a member of another node: how many nodes received it.
    Direct {
        member: MemberId,
        to: String,
        event: Wire,
    },
    /// A step of `list`: the keys found so far.
    Scan {
        member: MemberId,
        keys: Vec<Vec<u8>>,
    },
    /// The last step of `list`: the values of these keys.
    Values {
        member: MemberId,
        keys: Vec<Vec<u8>>,
    },
    /// Logging in on a new connection, before `HELLO`: `AUTH [user] password`.
    Auth { user: Option<String> },
    /// Then `SELECT db`.
    Select { db: u32 },
    /// Nothing waits for the answer.
    Ignore,
}

/// One node's link to the cluster.
#[derive(Debug)]
pub(in crate::services::chat) struct Node {
    /// This node, in every event it publishes.
    pub id: String,
    pub(super) settings: RedisSettings,
    endpoint: Option<EndpointId>,
    pub(super) conn: Option<ConnId>,
    pub(super) link: Link<Tag>,
    /// When the names were last refreshed.
    refreshed: Instant,
    /// The link has been up since it last went down (for the notices).
    was_up: bool,
    /// The link failed since it was last up: Redis is unreachable or gone.
    pub(super) down: bool,
    /// Why the link last failed, for `/healthz`.
    pub(super) last_failure: Option<String>,
    /// Requests of TCP members whose `hello` waits for Redis.
    pub waiting: BTreeMap<MemberId, VecDeque<Request>>,
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
    /// Redis accepted the login (`AUTH`, `SELECT`) on this connection: `HELLO` and the
    /// rest may go. Set by the last login reply, consumed by `cluster_connected`.
    logged_in: bool,
    /// Why Redis refused the login on this connection, for the close that follows.
    refused: Option<String>,
    /// Replies overdue, for the log.
    pub(super) overdue_log: Throttle,
}

impl Node {
    pub fn new(settings: RedisSettings, loop_index: usize) -> Node {
        let now = Instant::now();
        let nonce = std::collections::hash_map::RandomState::new();
        let nonce = std::hash::BuildHasher::hash_one(&nonce, now) as u32;
        Node {
            id: format!("{}-{loop_index}-{nonce:08x}", std::process::id()),
            endpoint: None,
            conn: None,
            link: Link::new(now, MAX_REPLY).with_reply_timeout(settings.reply_timeout),
            settings,
            refreshed: now,
            was_up: false,
            down: false,
            last_failure: None,
            waiting: BTreeMap::new(),
            backlog: Backlog::default(),
            dropped: 0,
            reconnects: 0,
            dialled: false,
            stopped: false,
            unreachable_log: Throttle::new(LOG_INTERVAL),
            overdue_log: Throttle::new(LOG_INTERVAL),
            logged_in: false,
            refused: None,
        }
    }

    pub fn set_endpoint(&mut self, endpoint: EndpointId) {
        self.endpoint = Some(endpoint);
    }

    pub fn is_up(&self) -> bool {
        self.link.state() == LinkState::Up
    }

    /// Sends `bytes` (from the link) on the connection.
    fn send(&self, ctx: &mut Context<'_, Chat>, bytes: Option<Vec<u8>>) {
        if let (Some(conn), Some(bytes)) = (self.conn, bytes) {
            if let Err(e) = ctx.send(conn, &bytes) {
                log::debug!("chat: cannot write to Redis: {e}");
            }
        }
    }

    /// Runs a command, if the link is up and what is queued for Redis is within its
    /// bound; false if not (a command refused at the bound is counted as dropped).
    pub fn command(&mut self, ctx: &mut Context<'_, Chat>, tag: Tag, args: &[&[u8]]) -> bool {
        if !self.is_up() || !self.within_bound(ctx) {
            return false;
        }
        let bytes = self.link.command(ctx.now(), tag, args);
        let sent = bytes.is_some();
        self.send(ctx, bytes);
        sent
    }

    pub fn subscribe(&mut self, ctx: &mut Context<'_, Chat>, channel: &str) {
        let bytes = self.link.subscribe(channel.as_bytes());
        self.send_state(ctx, bytes);
    }

    pub fn unsubscribe(&mut self, ctx: &mut Context<'_, Chat>, channel: &str) {
        let bytes = self.link.unsubscribe(channel.as_bytes());
        self.send_state(ctx, bytes);
    }

    /// Dials Redis if the link is down and its backoff is over.
    fn dial_if_due(&mut self, ctx: &mut Context<'_, Chat>) {
        if self.stopped || !self.link.due(ctx.now()) {
            return;
        }
        let mut dial = Dial::tcp(self.settings.addr).timeout(Duration::from_secs(2));
        if let Some(endpoint) = self.endpoint {
            dial = dial.endpoint(endpoint);
        }
        if std::mem::replace(&mut self.dialled, true) {
            self.reconnects += 1;
        }
        match ctx.connect(dial, Seat::redis()) {
            Ok(conn) => {
                self.conn = Some(conn);
                self.link.connecting();
            }
            Err(e) => {
                if let Some(times) = self.unreachable_log.note(ctx.now()) {
                    log::warn!(
                        "chat: cannot dial Redis at {}{}: {e}",
                        self.settings.addr,
                        attempts(times)
                    );
                }
                self.down = true;
                self.last_failure = Some(format!("cannot dial: {e}"));
                self.link.closed(ctx.now());
            }
        }
    }

    /// On a new connection, the first step of the login that goes before `HELLO` (a
    /// server with a password refuses `HELLO` until it has it): `AUTH` when there is a
    /// password, else `SELECT` when the database is not 0. False when there is nothing
    /// to log in with, or the login is done: then `HELLO` and the rest may go.
    fn log_in_first(&mut self, ctx: &mut Context<'_, Chat>) -> bool {
        if std::mem::take(&mut self.logged_in) {
            return false;
        }
        let Some(password) = &self.settings.password else {
            return self.select_db(ctx);
        };
        let user = self.settings.user.as_deref();
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        args.extend(user.map(str::as_bytes));
        args.push(password.expose());
        let tag = Tag::Auth {
            user: user.map(str::to_owned),
        };
        let bytes = self.link.login(ctx.now(), tag, &args);
        self.send(ctx, bytes);
        true
    }

    /// `SELECT db` when the database is not 0; false when it is.
    fn select_db(&mut self, ctx: &mut Context<'_, Chat>) -> bool {
        let db = self.settings.db;
        if db == 0 {
            return false;
        }
        let index = db.to_string();
        let bytes = self.link.login(
            ctx.now(),
            Tag::Select { db },
            &[b"SELECT", index.as_bytes()],
        );
        self.send(ctx, bytes);
        true
    }

    /// The key of a name.
    pub fn name_key(name: &str) -> String {
        format!("sb:name:{name}")
    }

    /// What a name's key holds: the node, then the member's rooms, a line each.
    pub fn name_value(&self, rooms: &[String]) -> String {
        let mut value = self.id.clone();
        for room in rooms {
            value.push('\n');
            value.push_str(room);
        }
        value
    }

    fn ttl_secs(&self) -> String {
        self.settings.ttl.as_secs().max(1).to_string()
    }

    /// `SET key value NX|XX EX ttl`.
    pub fn set_name(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        tag: Tag,
        name: &str,
        rooms: &[String],
        condition: &str,
    ) -> bool {
        let (key, value, ttl) = (
            Node::name_key(name),
            self.name_value(rooms),
            self.ttl_secs(),
        );
        let args: [&[u8]; 6] = [
            b"SET",
            key.as_bytes(),
            value.as_bytes(),
            condition.as_bytes(),
            b"EX",
            ttl.as_bytes(),
        ];
        self.command(ctx, tag, &args)
    }
}

/// What members are told when the link goes down, or is down when they arrive.
pub(super) const LINK_DOWN: &str = "the link to the other chat nodes is down: rooms reach this \
     server's members only until it is back";

/// How many failed attempts a throttled log line stands for, when more than one.
fn attempts(times: u64) -> String {
    match times {
        0 | 1 => String::new(),
        _ => format!(" ({times} failed attempts since the last line)"),
    }
}

/// A room event or a DM as it travels through Redis: the node, the kind, the typed
/// JSON and the legacy form, joined by NUL bytes (which JSON text never contains).
fn envelope(node: &str, remember: bool, json: &[u8], legacy: Option<&[u8]>) -> Vec<u8> {
    let legacy = legacy.unwrap_or_default();
    let mut out = Vec::with_capacity(node.len() + json.len() + legacy.len() + 4);
    out.extend_from_slice(node.as_bytes());
    out.push(0);
    out.push(if remember { b'm' } else { b'p' });
    out.push(0);
    out.extend_from_slice(json);
    out.push(0);
    out.extend_from_slice(legacy);
    out
}

/// The parts of an [`envelope`]: node, remember, the event.
fn open_envelope(payload: &[u8]) -> Option<(&[u8], bool, Wire)> {
    let mut parts = payload.splitn(4, |&b| b == 0);
    let node = parts.next()?;
    let remember = parts.next()? == b"m";
    let json = parts.next()?.to_vec();
    let legacy = parts.next().filter(|l| !l.is_empty()).map(<[u8]>::to_vec);
    Some((node, remember, Wire { json, legacy }))
}

impl Chat {
    /// The outbound endpoint the Redis connection goes through (see [`prepare`]).
    pub fn use_redis_endpoint(&mut self, endpoint: EndpointId) {
        if let Some(node) = &mut self.redis {
            node.set_endpoint(endpoint);
        }
    }

    /// On start: dial Redis and start the link's tick.
    pub(in crate::services::chat) fn start_cluster(&mut self, ctx: &mut Context<'_, Chat>) {
        if let Some(node) = &mut self.redis {
            log::info!(
                "chat: node {} joining the cluster through Redis at {}",
                node.id,
                node.settings.masked_url()
            );
            node.dial_if_due(ctx);
            ctx.set_repeating(TICK, ChatTimer::Cluster);
        }
    }

    /// The link's tick: redial when due; refresh this node's names a third of the way
    /// through their TTL.
    pub(in crate::services::chat) fn cluster_tick(&mut self, ctx: &mut Context<'_, Chat>) {
        let Some(node) = &mut self.redis else {
            return;
        };
        node.dial_if_due(ctx);
        self.expire_replies(ctx);
        self.watch_backlog(ctx);
        let Some(node) = &mut self.redis else {
            return;
        };
        if !node.is_up() || ctx.now() < node.refreshed + node.settings.ttl / 3 {
            return;
        }
        node.refreshed = ctx.now();
        let ttl = node.ttl_secs();
        let names: Vec<String> = self.directory.names().map(str::to_owned).collect();
        for name in names {
            let key = Node::name_key(&name);
            let args: [&[u8]; 3] = [b"EXPIRE", key.as_bytes(), ttl.as_bytes()];
            node.command(ctx, Tag::Refresh { name }, &args);
        }
    }

    /// The Redis connection came up: say so, and take this node's names (again).
    pub(in crate::services::chat) fn cluster_connected(&mut self, ctx: &mut Context<'_, Chat>) {
        let Some(node) = &mut self.redis else {
            return;
        };
        if node.log_in_first(ctx) {
            return; // called again once Redis has accepted the login
        }
        let hello = node.link.connected(ctx.now());
        node.send(ctx, Some(hello));
        node.refreshed = ctx.now();
        node.down = false;
        node.backlog = Backlog::default();
        log::info!(
            "chat: node {}: connected to Redis at {}",
            node.id,
            node.settings.masked_url()
        );
        if !node.was_up {
            node.was_up = true;
            self.notify_all(ctx, "the link to the other chat nodes is up");
        }
        let held: Vec<(String, Vec<String>)> = self
            .directory
            .named_with_rooms()
            .map(|(name, rooms)| (name.to_owned(), rooms.to_vec()))
            .collect();
        if let Some(node) = &mut self.redis {
            for (name, rooms) in held {
                let tag = Tag::Reclaim { name: name.clone() };
                node.set_name(ctx, tag, &name, &rooms, "NX");
            }
        }
    }

    /// Bytes from Redis.
    pub(in crate::services::chat) fn cluster_input(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        conn: ConnId,
        bytes: &[u8],
    ) {
        let Some(node) = &mut self.redis else {
            return;
        };
        match node.link.input(bytes) {
            Ok(events) => {
                for event in events {
                    match event {
                        LinkEvent::Reply { tag, reply } => self.cluster_reply(ctx, tag, reply),
                        LinkEvent::Late { tag, reply } => self.late_reply(ctx, tag, reply),
                        LinkEvent::Message { channel, payload } => {
                            self.cluster_message(ctx, &channel, &payload)
                        }
                    }
                }
            }
            Err(RespError::Handshake(why)) if why.starts_with("NOAUTH") => {
                node.refused = Some(format!(
                    "Redis asks for a password ({why}): give it in the --redis URL, \
                     --redis-password-file or SWITCHBOARD_REDIS_PASSWORD"
                ));
                ctx.close(conn, CloseMode::Abort);
            }
            Err(e) => {
                log::warn!("chat: Redis sent what cannot be read ({e}): reconnecting");
                ctx.close(conn, CloseMode::Abort);
            }
        }
    }

    /// The Redis connection closed or never came up: say so once, and settle what
    /// waited for it as a node on its own would.
    pub(in crate::services::chat) fn cluster_closed(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        reason: crate::CloseReason,
    ) {
        let Some(node) = &mut self.redis else {
            return;
        };
        node.conn = None;
        let (retry_at, tags) = node.link.closed(ctx.now());
        let wait = retry_at.saturating_duration_since(ctx.now());
        let was_up = std::mem::replace(&mut node.was_up, false);
        node.down = reason != crate::CloseReason::Shutdown;
        // A refused login closed the connection: its cause says more than the close.
        let why = node.refused.take().unwrap_or_else(|| reason.to_string());
        node.last_failure = Some(why.clone());
        // The queue went with the connection; the notice below says more than a
        // backlog's would.
        node.backlog = Backlog::default();
        if reason == crate::CloseReason::Shutdown {
            node.stopped = true;
            log::info!(
                "chat: node {}: link to Redis closed for the shutdown",
                node.id
            );
        } else if was_up {
            log::warn!(
                "chat: node {}: lost Redis at {} ({why}); rooms reach this node's \
                 members only until it is back (retrying in {wait:?})",
                node.id,
                node.settings.addr
            );
            self.notify_all(ctx, LINK_DOWN);
        } else if let Some(times) = node.unreachable_log.note(ctx.now()) {
            log::warn!(
                "chat: node {}: cannot reach Redis at {} ({why}){}; rooms reach this \
                 node's members only until it can (retrying in {wait:?})",
                node.id,
                node.settings.addr,
                attempts(times)
            );
        }
        for tag in tags {
            self.unanswered(ctx, tag);
        }
    }

    /// A command whose answer will not come: settle it locally.
    fn unanswered(&mut self, ctx: &mut Context<'_, Chat>, tag: Tag) {
        match tag {
            Tag::Claim { member, name } => {
                self.name_settled(ctx, member, &name, Claimed::Unchecked)
            }
            Tag::Direct { member, to, .. } => {
                let reason =
                    format!("no member named {to} on this server (the cluster is unreachable)");
                self.refuse(ctx, member, &reason);
            }
            Tag::Scan { member, .. } | Tag::Values { member, .. } => self.list_local(ctx, member),
            Tag::Reclaim { .. } | Tag::Refresh { .. } | Tag::Ignore => {}
            Tag::Auth { .. } | Tag::Select { .. } => {}
        }
    }

    /// Redis answered a step of the login: on to the next step, or to what follows
    /// the login. Refused, the connection is closed, and the link is down (its cause
    /// logged and in `/healthz`) until a redial, after the backoff, is accepted.
    fn login_reply(&mut self, ctx: &mut Context<'_, Chat>, tag: &Tag, reply: Reply) {
        let Some(node) = &mut self.redis else {
            return;
        };
        if let Reply::Error(e) = &reply {
            let e = String::from_utf8_lossy(e);
            node.refused = Some(match tag {
                Tag::Auth { user } => format!(
                    "Redis refused the password for user {}: {e}",
                    user.as_deref().unwrap_or("default")
                ),
                Tag::Select { db } => format!("Redis refused to select database {db}: {e}"),
                _ => format!("Redis refused the login: {e}"),
            });
            if let Some(conn) = node.conn {
                ctx.close(conn, CloseMode::Abort);
            }
            return;
        }
        if matches!(tag, Tag::Auth { .. }) && node.select_db(ctx) {
            return;
        }
        node.logged_in = true;
        self.cluster_connected(ctx);
    }

    pub(super) fn cluster_reply(&mut self, ctx: &mut Context<'_, Chat>, tag: Tag, reply: Reply) {
        if let Tag::Auth { .. } | Tag::Select { .. } = tag {
            return self.login_reply(ctx, &tag, reply);
        }
        if let Reply::Error(e) = &reply {
            log::warn!(
                "chat: Redis refused a command: {}",
                String::from_utf8_lossy(e)
            );
            return self.unanswered(ctx, tag);
        }
        match tag {
            Tag::Claim { member, name } => {
                let claimed = match reply {
                    Reply::Null => Claimed::Taken,
                    _ => Claimed::Granted,
                };
                self.name_settled(ctx, member, &name, claimed);
            }
            Tag::Reclaim { name } => {
                if reply == Reply::Null {
                    if let Some(id) = self.directory.by_name(&name) {
                        let text = format!(
                            "your name {name} is also held by a member of another chat \
                             server: choose another with hello"
                        );
                        self.notify(ctx, id, &text);
                    }
                }
            }
            Tag::Refresh { name } => {
                if reply == Reply::Number(0) {
                    self.reclaim(ctx, &name);
                }
            }
            Tag::Direct { member, to, event } => match reply {
                Reply::Number(n) if n > 0 => {
                    let encoded = Encoded::from_wire(ctx, event);
                    let sent = self.send_event(ctx, member, &encoded);
                    self.stats.delivered(sent);
                }
                _ => self.refuse(ctx, member, &format!("no member named {to}")),
            },
            Tag::Scan { member, mut keys } => self.list_scanned(ctx, member, &mut keys, reply),
            Tag::Values { member, keys } => self.list_answer(ctx, member, &keys, reply),
            Tag::Auth { .. } | Tag::Select { .. } | Tag::Ignore => {}
        }
    }

    /// A published event from another node.
    fn cluster_message(&mut self, ctx: &mut Context<'_, Chat>, channel: &[u8], payload: &[u8]) {
        let Some(node) = &self.redis else {
            return;
        };
        let Some((from, remember, wire)) = open_envelope(payload) else {
            return log::debug!("chat: a message from Redis that is not an event: dropped");
        };
        if from == node.id.as_bytes() {
            return; // our own, echoed by Redis
        }
        // (Our own channels: their names are UTF-8, as room and member names are.)
        let named = |prefix: &[u8]| {
            channel
                .strip_prefix(prefix)
                .and_then(|n| std::str::from_utf8(n).ok())
        };
        if let Some(room) = named(b"sb:room:") {
            self.deliver_remote(ctx, room, wire, remember);
        } else if let Some(to) = named(b"sb:dm:") {
            self.direct_remote(ctx, to, wire);
        }
        self.count_population();
    }

    /// Publishes a room event of this node's members to the other nodes.
    pub(in crate::services::chat) fn publish_to_cluster(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        room: &str,
        event: &Encoded,
        remember: bool,
    ) {
        let Some(node) = &mut self.redis else {
            return;
        };
        let payload = envelope(&node.id, remember, event.json(), event.legacy_bytes());
        let channel = format!("sb:room:{room}");
        node.command(
            ctx,
            Tag::Ignore,
            &[b"PUBLISH", channel.as_bytes(), &payload],
        );
        self.tell_backlog(ctx);
    }

    /// True while the link to the cluster is up.
    pub(in crate::services::chat) fn cluster_is_up(&self) -> bool {
        self.redis.as_ref().is_some_and(Node::is_up)
    }

    /// A DM to a name no member of this node holds: published to whichever node holds
    /// it. Returns false when there is no cluster to ask (the caller refuses it).
    pub(in crate::services::chat) fn direct_to_cluster(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        member: MemberId,
        to: &str,
        event: &Encoded,
    ) -> bool {
        let Some(node) = &mut self.redis else {
            return false;
        };
        let wire = event.to_wire();
        let payload = envelope(&node.id, false, &wire.json, wire.legacy.as_deref());
        let channel = format!("sb:dm:{to}");
        let tag = Tag::Direct {
            member,
            to: to.to_owned(),
            event: wire,
        };
        node.command(ctx, tag, &[b"PUBLISH", channel.as_bytes(), &payload])
    }

    /// A member of this node entered or left a room: its key lists its rooms; the node
    /// listens to a room while it has members in it.
    pub(in crate::services::chat) fn rooms_changed_in_cluster(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        id: Option<MemberId>,
        room: &str,
    ) {
        let open = self.directory.room(room).is_some();
        let member = id.and_then(|id| self.directory.member(id));
        let named = member.and_then(|m| Some((m.name.clone()?, m.rooms.clone())));
        let Some(node) = &mut self.redis else {
            return;
        };
        let channel = format!("sb:room:{room}");
        if open {
            node.subscribe(ctx, &channel);
        } else {
            node.unsubscribe(ctx, &channel);
        }
        if let Some((name, rooms)) = named {
            node.set_name(ctx, Tag::Ignore, &name, &rooms, "XX");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_opens_to_what_was_put_in() {
        let wire = Wire {
            json: br#"{"type":"msg"}"#.to_vec(),
            legacy: Some(br#"{"name":"a","msg":"b"}"#.to_vec()),
        };
        let payload = envelope("node-1", true, &wire.json, wire.legacy.as_deref());
        let (node, remember, back) = open_envelope(&payload).unwrap();
        assert_eq!((node, remember), (&b"node-1"[..], true));
        assert_eq!((back.json, back.legacy), (wire.json, wire.legacy));
        let plain = envelope("n", false, b"{}", None);
        let (_, remember, back) = open_envelope(&plain).unwrap();
        assert!(!remember && back.legacy.is_none());
        assert!(open_envelope(b"no separators").is_none());
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
