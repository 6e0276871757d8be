//! Names in the cluster: a TCP member's `hello` waits for Redis's `SET NX` (and its
//! next requests with it), a node's names are taken again after Redis comes back or a
//! key expires, and a name given up is deleted and stops receiving DMs.

use super::node::{Node, Tag};
use crate::services::chat::protocol::Request;
use crate::services::chat::rooms::{Link as MemberLink, MemberId};
use crate::services::chat::Chat;
use crate::Context;

/// Requests a member may send while its `hello` waits for Redis.
const MAX_WAITING_REQUESTS: usize = 64;

/// How a member's `hello` came out in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claimed<'a> {
    /// Redis set the name's key for this node.
    Granted,
    /// Another member holds the name.
    Taken,
    /// The link went down before Redis answered: checked here only, as while down.
    Unchecked,
    /// Redis did not answer in time; the reason the member is given.
    TimedOut(&'a str),
}

impl Chat {
    /// Takes `name` again for its holder here (its key had expired or gone).
    pub(super) fn reclaim(&mut self, ctx: &mut Context<'_, Chat>, name: &str) {
        let Some(id) = self.directory.by_name(name) else {
            return;
        };
        let rooms = self
            .directory
            .member(id)
            .map(|m| m.rooms.clone())
            .unwrap_or_default();
        if let Some(node) = &mut self.redis {
            let tag = Tag::Reclaim {
                name: name.to_owned(),
            };
            node.set_name(ctx, tag, name, &rooms, "NX");
        }
    }

    /// A TCP member asked for `name`: ask Redis first. True if the answer is awaited
    /// (the member's next requests wait for it).
    pub(in crate::services::chat) fn claim_in_cluster(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        id: MemberId,
        name: &str,
    ) -> bool {
        let Some(member) = self.directory.member(id) else {
            return false;
        };
        let tcp = matches!(member.link, MemberLink::Tcp(_) | MemberLink::Ws(_));
        let rooms = member.rooms.clone();
        let Some(node) = self.redis.as_mut().filter(|n| n.is_up() && tcp) else {
            return false;
        };
        if self.directory.by_name(name).is_some() {
            return false; // held here: the directory answers at once
        }
        let tag = Tag::Claim {
            member: id,
            name: name.to_owned(),
        };
        if !node.set_name(ctx, tag, name, &rooms, "NX") {
            return false;
        }
        node.waiting.entry(id).or_default();
        true
    }

    /// A member's `hello` is settled: take the name or refuse it, then carry out the
    /// requests that waited.
    pub(super) fn name_settled(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        id: MemberId,
        name: &str,
        claimed: Claimed<'_>,
    ) {
        let waiting = self
            .redis
            .as_mut()
            .and_then(|node| node.waiting.remove(&id))
            .unwrap_or_default();
        if self.directory.member(id).is_none() {
            // Gone meanwhile: give the name back (a late reply gives back its own).
            if matches!(claimed, Claimed::Granted | Claimed::Unchecked) {
                self.release_in_cluster(ctx, name);
            }
            return;
        }
        match claimed {
            Claimed::Granted | Claimed::Unchecked => {
                self.take_name(ctx, id, name);
            }
            Claimed::Taken => self.refuse(ctx, id, &format!("name {name} is taken")),
            Claimed::TimedOut(reason) => self.refuse(ctx, id, reason),
        }
        for request in waiting {
            if self.directory.member(id).is_none() {
                break;
            }
            self.handle(ctx, id, request);
        }
        self.count_population();
    }

    /// Queues a request of a member whose `hello` waits for Redis. True if it was
    /// queued (or refused for too many), false if the member waits for nothing.
    pub(in crate::services::chat) fn wait_for_name(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        id: MemberId,
        request: Request,
    ) -> Option<Request> {
        let Some(queue) = self.redis.as_mut().and_then(|n| n.waiting.get_mut(&id)) else {
            return Some(request);
        };
        if queue.len() >= MAX_WAITING_REQUESTS {
            let reason = "too many requests while the name is being checked: wait for welcome";
            self.refuse(ctx, id, reason);
        } else {
            queue.push_back(request);
        }
        None
    }

    /// A name of this node was given up: delete its key, stop its DMs.
    pub(in crate::services::chat) fn release_in_cluster(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        name: &str,
    ) {
        let Some(node) = &mut self.redis else {
            return;
        };
        let key = Node::name_key(name);
        node.command(ctx, Tag::Ignore, &[b"DEL", key.as_bytes()]);
        node.unsubscribe(ctx, &format!("sb:dm:{name}"));
    }

    /// A member of this node now holds `name`: its DMs come here; its key says where
    /// it is. (A UDP member's name, checked here only, is claimed too.)
    pub(in crate::services::chat) fn named_in_cluster(
        &mut self,
        ctx: &mut Context<'_, Chat>,
        id: MemberId,
    ) {
        let Some(member) = self.directory.member(id) else {
            return;
        };
        let (Some(name), rooms) = (member.name.clone(), member.rooms.clone()) else {
            return;
        };
        let Some(node) = &mut self.redis else {
            return;
        };
        node.subscribe(ctx, &format!("sb:dm:{name}"));
        node.set_name(ctx, Tag::Ignore, &name, &rooms, "NX");
        node.set_name(ctx, Tag::Ignore, &name, &rooms, "XX");
        self.tell_if_down(ctx, id);
    }
}
