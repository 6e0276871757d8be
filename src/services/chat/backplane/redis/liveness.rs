//! Whether a node is alive, at a cost per node, not per member: each node keeps one
//! heartbeat key (`sb:node:NODE`, TTL `--redis-ttl`) that it sets again a third of the
//! way through, and is registered in `sb:nodes`. Its names' keys have no TTL; it lists
//! them in `sb:names:NODE` (`names`).
//!
//! ```text
//!   join (on connect, or when the heartbeat was gone):
//!     SET sb:node:N up EX ttl ; SADD sb:nodes N ; forget N's old names ; take them again
//!   every ttl/3:  SET sb:node:N up XX EX ttl      (nil: it had expired: join again)
//!                 EVAL REAP                        (free the names of nodes gone silent)
//! ```
//!
//! A dead node's heartbeat expires; on their next beat the survivors' `REAP` finds it
//! and frees its names: a bounded batch per call, again at once while some remain.
//! Each call is atomic and pops the names it frees, so two survivors reaping at once
//! free each name once; a key that another node has taken since is left alone. A node
//! that was silent too long (frozen, partitioned), or whose keys went with a Redis
//! restart, finds its heartbeat gone or its connection new, and joins again: it forgets
//! what it had and takes its members' names again (one taken elsewhere meanwhile is
//! reported to its holder here). It sets its heartbeat first, so no survivor reaps the
//! names it is taking.

use std::time::Instant;

use super::names::Take;
use super::node::{Node, Script, Tag};
use super::resp::Reply;

/// The set of registered nodes.
const NODES: &str = "sb:nodes";

/// How many names one `REAP` call frees at most, so that a dead node with many
/// members does not hold Redis in one script.
const REAP_BATCH: &str = "1000";

/// How many names one `TAKE` call takes when a node joins.
const JOIN_BATCH: usize = 500;

/// Frees the names of the nodes whose heartbeat has expired. `ARGV[1]`: how many names
/// at most. Answers `{names freed, 1 if some remain}`.
const REAP: Script = Script {
    keys: b"0",
    body: r"local budget = tonumber(ARGV[1])
local freed = 0
for _, node in ipairs(redis.call('SMEMBERS', 'sb:nodes')) do
  if redis.call('EXISTS', 'sb:node:' .. node) == 0 then
    local set = 'sb:names:' .. node
    for _, name in ipairs(redis.call('SPOP', set, budget - freed)) do
      local key = 'sb:name:' .. name
      local held = redis.call('GET', key)
      if held and string.match(held, '^[^\n]*') == node then
        redis.call('DEL', key)
      end
      freed = freed + 1
    end
    if redis.call('SCARD', set) > 0 then return {freed, 1} end
    redis.call('SREM', 'sb:nodes', node)
  end
end
return {freed, 0}",
};

/// Forgets a node's names before it takes its members' names again (a name given up
/// while the link was down is freed here). `KEYS[1]`: the node's set; `ARGV[1]`: the
/// node.
const FORGET: Script = Script {
    keys: b"1",
    body: r"for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = 'sb:name:' .. name
  local held = redis.call('GET', key)
  if held and string.match(held, '^[^\n]*') == ARGV[1] then
    redis.call('DEL', key)
  end
end
redis.call('DEL', KEYS[1])
return 0",
};

impl Node {
    /// The key of this node's heartbeat (also the name of its channel).
    pub(super) fn heartbeat_key(&self) -> String {
        format!("sb:node:{}", self.id)
    }

    /// Registers this node and takes the names `held` here (with their rooms) again.
    pub(super) fn join(&mut self, now: Instant, held: Vec<(String, Vec<String>)>) {
        self.rejoin = false;
        let (key, ttl, set) = (self.heartbeat_key(), self.ttl_secs(), self.names_key());
        self.command(
            now,
            Tag::Ignore,
            &[b"SET", key.as_bytes(), b"up", b"EX", ttl.as_bytes()],
        );
        let id = self.id.clone();
        self.command(
            now,
            Tag::Ignore,
            &[b"SADD", NODES.as_bytes(), id.as_bytes()],
        );
        self.command(
            now,
            Tag::Ignore,
            &FORGET.eval(&[set.as_bytes(), id.as_bytes()]),
        );
        for batch in held.chunks(JOIN_BATCH) {
            let names: Vec<(&str, &[String])> = batch
                .iter()
                .map(|(name, rooms)| (name.as_str(), rooms.as_slice()))
                .collect();
            self.take_names(now, Tag::Reclaim, Take::Join, &names);
        }
    }

    /// A third of the way through the heartbeat's TTL: set it again, and free the
    /// names of nodes whose heartbeat has expired. After a heartbeat found gone, join
    /// again first (`held` gives the names held here).
    pub(super) fn beat(&mut self, now: Instant, held: &dyn Fn() -> Vec<(String, Vec<String>)>) {
        if self.rejoin {
            self.join(now, held());
        }
        if now < self.refreshed + self.settings.ttl / 3 {
            return;
        }
        self.refreshed = now;
        let (key, ttl) = (self.heartbeat_key(), self.ttl_secs());
        let args: [&[u8]; 6] = [b"SET", key.as_bytes(), b"up", b"XX", b"EX", ttl.as_bytes()];
        self.command(now, Tag::Heartbeat, &args);
        self.reap(now);
    }

    /// One `REAP` call.
    fn reap(&mut self, now: Instant) {
        self.command(now, Tag::Reap, &REAP.eval(&[REAP_BATCH.as_bytes()]));
    }

    /// The heartbeat was set again (`OK`), or had expired (nil): then this node's
    /// names may have been freed by the others, and it joins again on its next tick.
    pub(super) fn heartbeat_answered(&mut self, reply: &Reply) {
        if *reply == Reply::Null {
            log::warn!(
                "chat: node {}: its heartbeat had expired in Redis (the node was silent \
                 longer than --redis-ttl, or Redis lost its keys): taking its names again",
                self.id
            );
            self.rejoin = true;
        }
    }

    /// A `REAP` call answered: say what it freed, and call again while names remain.
    pub(super) fn reaped(&mut self, now: Instant, reply: Reply) {
        let Reply::Array(parts) = reply else {
            return log::warn!("chat: node {}: Redis answered REAP with {reply:?}", self.id);
        };
        let number = |i: usize| match parts.get(i) {
            Some(Reply::Number(n)) => *n,
            _ => 0,
        };
        let (freed, more) = (number(0), number(1));
        if freed > 0 {
            log::info!(
                "chat: node {}: freed {freed} names of nodes whose heartbeat stopped",
                self.id
            );
        }
        if more > 0 {
            self.reap(now);
        }
    }
}
