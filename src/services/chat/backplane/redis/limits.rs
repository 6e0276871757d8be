//! The link within the reactor's limits, and what the node says about it.
//!
//! - A bound on what is queued for Redis (`--redis-max-queued`): a stopped Redis reads
//!   nothing, and every room event of every member would otherwise wait in the
//!   connection's output for as long as the connection lasts. At the bound, commands
//!   are dropped and counted (`switchboard_redis_dropped_total`), and the members told
//!   once; told again only after the queue drained to half the bound and filled up
//!   again. A subscription change cannot be dropped (Redis would miss a room): at the
//!   bound it closes the connection instead, and the reconnect subscribes afresh. The
//!   queued bytes stay in the connection's output, so the memory budget counts them.
//! - A deadline on every reply a member waits for (`--redis-reply-timeout`): the
//!   member is answered with an error when it passes; the reply, when it comes, is
//!   [`LinkEvent::Late`](super::link::LinkEvent::Late) and undoes what it must (a name
//!   granted to no one is deleted).
//! - A warning at the default level while Redis cannot be reached (one line per
//!   `LOG_INTERVAL`), a notice to members who take a name meanwhile, and the health
//!   answer and metrics of the admin endpoint.

use std::time::Instant;

use super::node::{all_taken, Node, Tag, Unanswered};
use super::resp::Reply;
use crate::services::chat::engine::Remote;

/// The bound on what is queued for Redis unless `--redis-max-queued` says otherwise:
/// thousands of room events, seconds of a busy node's traffic.
pub const DEFAULT_MAX_QUEUED: usize = 4 << 20;

/// What members are told when commands start being dropped at the bound.
const BACKED_UP: &str = "the link to the other chat nodes is backed up: messages reach \
     this server's members only until it drains";
/// What members are told when it has drained.
const DRAINED: &str = "the link to the other chat nodes has drained: messages reach the \
     other servers again";

/// Whether commands are being dropped at the bound, and whether the members know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Backlog {
    /// What is queued reached the bound and has not drained to half of it since.
    pub dropping: bool,
    /// The members were told of it (and are told again once it drains).
    pub told: bool,
}

impl Node {
    /// Bytes queued for Redis: on the connection when the service last looked, and
    /// handed over since.
    fn queued(&self) -> usize {
        self.queued_on_conn + self.transmit.bytes.len()
    }

    /// Whether one more command may be queued. At the bound it is counted as dropped;
    /// below half of it, a backlog is over (so a queue hovering at the bound does not
    /// tell the members again and again).
    pub(super) fn within_bound(&mut self) -> bool {
        let queued = self.queued();
        if queued >= self.settings.max_queued {
            self.backlog.dropping = true;
            self.dropped += 1;
            return false;
        }
        if queued <= self.settings.max_queued / 2 {
            self.backlog.dropping = false;
        }
        true
    }

    /// Queues a subscription change (or a change to the node's names); at the bound,
    /// asks for the connection to close instead: the link keeps the set, and the
    /// reconnect subscribes to all of it (and takes the names again). True if queued.
    pub(super) fn send_state(&mut self, bytes: Option<Vec<u8>>) -> bool {
        let (Some(_), Some(bytes)) = (self.conn, bytes) else {
            return false;
        };
        let queued = self.queued();
        if self.transmit.close {
            return false; // closing already: said once
        }
        if queued >= self.settings.max_queued {
            log::warn!(
                "chat: node {}: {queued} bytes wait for Redis at {}, more than \
                 --redis-max-queued: reconnecting to subscribe afresh",
                self.id,
                self.settings.addr
            );
            self.transmit.close = true;
            return false;
        }
        self.transmit.bytes.extend_from_slice(&bytes);
        true
    }

    /// The link is up and Redis answers: `/healthz`'s 200. Otherwise why not.
    pub(super) fn link_health(&self) -> Result<(), String> {
        if self.link.is_answering() {
            return Ok(());
        }
        let addr = self.settings.addr;
        let why = self.last_failure.as_deref().unwrap_or("not connected yet");
        Err(match self.link.state() {
            super::link::LinkState::Up if self.link.overdue() > 0 => format!(
                "redis {addr}: not answering ({} replies overdue)",
                self.link.overdue()
            ),
            super::link::LinkState::Up => format!("redis {addr}: HELLO not answered yet"),
            _ if self.down => format!("redis {addr}: link down ({why})"),
            _ => format!("redis {addr}: connecting"),
        })
    }

    /// The link's metrics, for `GET /metrics`.
    pub(super) fn write_link_metrics(&self, out: &mut String) {
        use crate::metrics::sample;
        sample(
            out,
            "switchboard_redis_link_up",
            "gauge",
            "1 while the link to Redis is up and Redis answers in time, else 0.",
            u64::from(self.link.is_answering()),
        );
        sample(
            out,
            "switchboard_redis_reconnects_total",
            "counter",
            "Times the link to Redis was dialled again after the first dial.",
            self.reconnects,
        );
        sample(
            out,
            "switchboard_redis_dropped_total",
            "counter",
            "Commands to Redis (room events, mostly) dropped at --redis-max-queued.",
            self.dropped,
        );
        sample(
            out,
            "switchboard_redis_pending",
            "gauge",
            "Commands sent to Redis whose replies have not come yet.",
            self.link.pending() as u64,
        );
        sample(
            out,
            "switchboard_redis_published_total",
            "counter",
            "Messages published to Redis: room events, and DMs to other nodes.",
            self.published,
        );
        sample(
            out,
            "switchboard_redis_events_in_total",
            "counter",
            "Messages received from Redis on the node's channels (rooms and its own).",
            self.events_in,
        );
    }

    /// Answers whoever waits for a reply now overdue.
    pub(super) fn expire_replies(&mut self, now: Instant) {
        let tags = self.link.expire(now);
        if tags.is_empty() {
            return;
        }
        let timeout = self.settings.reply_timeout;
        if let Some(times) = self.overdue_log.note_many(now, tags.len() as u64) {
            log::warn!(
                "chat: node {}: Redis at {} did not answer within {timeout:?}: {times} \
                 requests answered without it since the last line",
                self.id,
                self.settings.addr
            );
        }
        for tag in tags {
            self.unanswered(tag, Unanswered::Overdue(timeout));
        }
    }

    /// The reply to a command whose waiter was answered without it.
    pub(super) fn late_reply(&mut self, now: Instant, tag: Tag, reply: Reply) {
        match tag {
            // Granted to a member who was told it was not: given back, unless a
            // member here holds it by now (the engine knows).
            Tag::Claim { name, .. } => {
                if all_taken(&reply) {
                    self.heard.push(Remote::Unclaim { name });
                }
            }
            Tag::Direct { .. } | Tag::Scan { .. } => {}
            // Nobody waited for these: late is as good as on time.
            tag @ (Tag::Reclaim
            | Tag::Heartbeat
            | Tag::Reap
            | Tag::Ignore
            | Tag::Auth { .. }
            | Tag::Select { .. }) => self.reply(now, tag, reply),
        }
    }

    /// Ends a backlog whose queue drained while nothing was sent, then tells the
    /// members whatever changed.
    pub(super) fn watch_backlog(&mut self) {
        if self.backlog.dropping {
            self.backlog.dropping = self.queued() > self.settings.max_queued / 2;
        }
        self.tell_backlog();
    }

    /// Tells the members, once, that commands are being dropped, or that they no
    /// longer are.
    pub(super) fn tell_backlog(&mut self) {
        let backlog = self.backlog;
        if backlog.dropping == backlog.told {
            return;
        }
        self.backlog.told = backlog.dropping;
        let text = if backlog.dropping {
            log::warn!(
                "chat: node {}: Redis at {} is not taking what is sent: --redis-max-queued \
                 ({} bytes) reached; room events are dropped until it drains",
                self.id,
                self.settings.addr,
                self.settings.max_queued
            );
            BACKED_UP
        } else {
            log::info!(
                "chat: node {}: the queue to Redis has drained ({} commands dropped so far)",
                self.id,
                self.dropped
            );
            DRAINED
        };
        self.heard.push(Remote::NoticeAll { text: text.into() });
    }
}
