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

use super::node::{Node, Tag, LINK_DOWN};
use super::resp::Reply;
use crate::services::chat::rooms::MemberId;
use crate::services::chat::Chat;
use crate::{CloseMode, Context};

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
    /// Bytes queued on the connection to Redis.
    fn queued(&self, ctx: &Context<'_, Chat>) -> usize {
        self.conn
            .and_then(|conn| ctx.queued_output(conn))
            .unwrap_or(0)
    }

    /// Whether one more command may be queued. At the bound it is counted as dropped;
    /// below half of it, a backlog is over (so a queue hovering at the bound does not
    /// tell the members again and again).
    pub(super) fn within_bound(&mut self, ctx: &Context<'_, Chat>) -> bool {
        let queued = self.queued(ctx);
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

    /// Sends a subscription change; at the bound, closes the connection instead: the
    /// link keeps the set, and the reconnect subscribes to all of it.
    pub(super) fn send_state(&mut self, ctx: &mut Context<'_, Chat>, bytes: Option<Vec<u8>>) {
        let (Some(conn), Some(bytes)) = (self.conn, bytes) else {
            return;
        };
        let queued = self.queued(ctx);
        if queued >= self.settings.max_queued {
            log::warn!(
                "chat: node {}: {queued} bytes wait for Redis at {}, more than \
                 --redis-max-queued: reconnecting to subscribe afresh",
                self.id,
                self.settings.addr
            );
            return ctx.close(conn, CloseMode::Abort);
        }
        if let Err(e) = ctx.send(conn, &bytes) {
            log::debug!("chat: cannot write to Redis: {e}");
        }
    }

    /// The link is up and Redis answers: `/healthz`'s 200. Otherwise why not.
    pub fn health(&self) -> Result<(), String> {
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
    pub fn write_metrics(&self, out: &mut String) {
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
    }
}

impl Chat {
    /// Answers whoever waits for a reply now overdue.
    pub(super) fn expire_replies(&mut self, ctx: &mut Context<'_, Chat>) {
        let Some(node) = &mut self.redis else {
            return;
        };
        let tags = node.link.expire(ctx.now());
        if tags.is_empty() {
            return;
        }
        let timeout = node.settings.reply_timeout;
        if let Some(times) = node.overdue_log.note_many(ctx.now(), tags.len() as u64) {
            log::warn!(
                "chat: node {}: Redis at {} did not answer within {timeout:?}: {times} \
                 requests answered without it since the last line",
                node.id,
                node.settings.addr
            );
        }
        for tag in tags {
            self.timed_out(ctx, tag, timeout);
        }
    }

    /// A member's request went unanswered by Redis for `timeout`: tell it so.
    fn timed_out(&mut self, ctx: &mut Context<'_, Chat>, tag: Tag, timeout: std::time::Duration) {
        let secs = timeout.as_secs_f64();
        let reason = |what: &str| format!("the cluster did not answer within {secs}s: {what}");
        match tag {
            Tag::Claim { member, name } => {
                let why = reason(&format!("name {name} not taken, try again later"));
                self.name_settled(ctx, member, &name, super::names::Claimed::TimedOut(&why));
            }
            Tag::Direct { member, to, .. } => {
                let why = reason(&format!("the message to {to} may not have arrived"));
                self.refuse(ctx, member, &why);
            }
            Tag::Scan { member, .. } | Tag::Values { member, .. } => {
                self.refuse(ctx, member, &reason("list again later"));
            }
            Tag::Reclaim { .. } | Tag::Refresh { .. } | Tag::Ignore => {}
            Tag::Auth { .. } | Tag::Select { .. } => {}
        }
    }

    /// The reply to a command whose waiter was answered without it.
    pub(super) fn late_reply(&mut self, ctx: &mut Context<'_, Chat>, tag: Tag, reply: Reply) {
        match tag {
            // Granted to a member who was told it was not: give it back, unless a
            // member here holds it by now.
            Tag::Claim { name, .. } => {
                let granted = !matches!(reply, Reply::Null | Reply::Error(_));
                if granted && self.directory.by_name(&name).is_none() {
                    if let Some(node) = &mut self.redis {
                        let key = Node::name_key(&name);
                        node.command(ctx, Tag::Ignore, &[b"DEL", key.as_bytes()]);
                    }
                }
            }
            Tag::Direct { .. } | Tag::Scan { .. } | Tag::Values { .. } => {}
            // Nobody waited for these: late is as good as on time.
            tag @ (Tag::Reclaim { .. }
            | Tag::Refresh { .. }
            | Tag::Ignore
            | Tag::Auth { .. }
            | Tag::Select { .. }) => self.cluster_reply(ctx, tag, reply),
        }
    }

    /// Ends a backlog whose queue drained while nothing was sent, then tells the
    /// members whatever changed.
    pub(super) fn watch_backlog(&mut self, ctx: &mut Context<'_, Chat>) {
        if let Some(node) = self.redis.as_mut().filter(|n| n.backlog.dropping) {
            let queued = node.queued(ctx);
            node.backlog.dropping = queued > node.settings.max_queued / 2;
        }
        self.tell_backlog(ctx);
    }

    /// Tells the members, once, that commands are being dropped, or that they no
    /// longer are.
    pub(super) fn tell_backlog(&mut self, ctx: &mut Context<'_, Chat>) {
        let Some(node) = &mut self.redis else {
            return;
        };
        let backlog = node.backlog;
        if backlog.dropping == backlog.told {
            return;
        }
        node.backlog.told = backlog.dropping;
        if backlog.dropping {
            log::warn!(
                "chat: node {}: Redis at {} is not taking what is sent: --redis-max-queued \
                 ({} bytes) reached; room events are dropped until it drains",
                node.id,
                node.settings.addr,
                node.settings.max_queued
            );
            self.notify_all(ctx, BACKED_UP);
        } else {
            log::info!(
                "chat: node {}: the queue to Redis has drained ({} commands dropped so far)",
                node.id,
                node.dropped
            );
            self.notify_all(ctx, DRAINED);
        }
    }

    /// A member took a name while Redis cannot be reached: tell it its rooms are this
    /// server's only.
    pub(super) fn tell_if_down(&mut self, ctx: &mut Context<'_, Chat>, id: MemberId) {
        if self.redis.as_ref().is_some_and(|node| node.down) {
            self.notify(ctx, id, LINK_DOWN);
        }
    }
}
