//! Whether a node is alive, at a cost per node, not per member: each node keeps one
//! heartbeat key (`sb:node:NODE`, TTL `--redis-ttl`) that it renews a third of the
//! way through. Each time it joins, a node takes a new number (`INCR
//! sb:next-number`), maps it to its id in `sb:numbers`, and keeps it in its heartbeat;
//! its names are fields of `sb:names` holding that number (`names`), with no TTL.
//!
//! ```text
//!   join (on connect, or when the heartbeat was gone):
//!     EVAL JOIN: INCR sb:next-number -> n ; SET sb:node:N n EX ttl ; HSET sb:numbers n N
//!     EVAL TAKE ... (its members' names again, under n)
//!   every ttl/3:  EXPIRE sb:node:N ttl       (0: it had expired: join again)
//!                 EVAL REAP                  (free the names of numbers no longer alive)
//! ```
//!
//! A number is alive while its node's heartbeat holds it: a dead node's heartbeat
//! expires, and a node that joins again leaves its old number behind. On their next
//! beat the survivors' `REAP` finds such numbers and frees their names: one pass over
//! `sb:names` (`HSCAN`), a bounded step per call, again at once while the pass goes
//! on. The pass (its cursor and the numbers it frees) is kept in Redis, so the nodes
//! share it: each call is atomic and goes on from the last, so two survivors reaping
//! at once free each name once; a name another number has taken since is left alone.
//! A node that was silent too long (frozen, partitioned), or whose keys went with a
//! Redis restart, finds its heartbeat gone or its connection new, and joins again: a
//! new number, then its members' names taken again (`TAKE` takes a name held by a
//! number that is not alive; one taken elsewhere meanwhile is reported to its holder
//! here); what it gave up while the link was down stays under its old number, which
//! the next pass frees.

use std::sync::OnceLock;
use std::time::Instant;

use super::names::{Take, NAMES, NUMBERS};
use super::node::{Node, Script, Tag};
use super::resp::Reply;

/// The counter that gives each join its number.
const NEXT_NUMBER: &str = "sb:next-number";

/// The `REAP` pass under way: its cursor, then the numbers it frees.
const REAPING: &str = "sb:reaping";

/// How many names one `REAP` call looks at (`HSCAN`'s `COUNT`), so that a pass over
/// many names does not hold Redis in one script.
const REAP_BATCH: &str = "1000";

/// How many names one `TAKE` call takes when a node joins.
const JOIN_BATCH: usize = 500;

/// Registers this node under a new number. `KEYS`: the counter, the numbers, this
/// node's heartbeat; `ARGV`: the node, the heartbeat's TTL. Answers the number.
pub(super) static JOIN: Script = Script {
    keys: b"3",
    body: r"local number = tostring(redis.call('INCR', KEYS[1]))
redis.call('SET', KEYS[3], number, 'EX', ARGV[2])
redis.call('HSET', KEYS[2], number, ARGV[1])
return number",
    sha: OnceLock::new(),
};

/// One step of a pass freeing the names of the numbers not alive. `KEYS`: the names,
/// the numbers, the pass (`CURSOR NUMBER NUMBER...`); `ARGV[1]`: how many names to look
/// at. Answers `{names freed, 1 if the pass goes on}`.
pub(super) static REAP: Script = Script {
    keys: b"3",
    body: r"local pass = redis.call('GET', KEYS[3])
if not pass then
  -- A new pass, for the numbers whose node's heartbeat does not hold them.
  local dead, numbers = {}, redis.call('HGETALL', KEYS[2])
  for i = 1, #numbers, 2 do
    if redis.call('GET', 'sb:node:' .. numbers[i + 1]) ~= numbers[i] then
      dead[#dead + 1] = numbers[i]
    end
  end
  if #dead == 0 then return {0, 0} end
  pass = '0 ' .. table.concat(dead, ' ')
end
local cursor, numbers = string.match(pass, '^(%d+) (.+)$')
if not cursor then -- not ours: start again
  redis.call('DEL', KEYS[3])
  return {0, 1}
end
local dead = {}
for number in string.gmatch(numbers, '%S+') do dead[number] = true end
local step, freed = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', ARGV[1]), 0
for i = 1, #step[2], 2 do
  if dead[string.match(step[2][i + 1], '^[^\n]*')] then
    freed = freed + redis.call('HDEL', KEYS[1], step[2][i])
  end
end
if step[1] ~= '0' then
  redis.call('SET', KEYS[3], step[1] .. ' ' .. numbers)
  return {freed, 1}
end
-- Every name was looked at: the numbers are done with.
for number in pairs(dead) do redis.call('HDEL', KEYS[2], number) end
redis.call('DEL', KEYS[3])
return {freed, 0}",
    sha: OnceLock::new(),
};

impl Node {
    /// The key of this node's heartbeat (also the name of its channel).
    pub(super) fn heartbeat_key(&self) -> String {
        format!("sb:node:{}", self.id)
    }

    /// Registers this node under a new number and takes the names `held` here (with
    /// their rooms) again under it.
    pub(super) fn join(&mut self, now: Instant, held: Vec<(String, Vec<String>)>) {
        self.rejoin = false;
        let (heartbeat, ttl, id) = (self.heartbeat_key(), self.ttl_secs(), self.id.clone());
        let keys = [NEXT_NUMBER, NUMBERS, &heartbeat].map(str::as_bytes);
        let args = JOIN.eval(&[keys[0], keys[1], keys[2], id.as_bytes(), ttl.as_bytes()]);
        self.command(now, Tag::Ignore, &args);
        for batch in held.chunks(JOIN_BATCH) {
            let names: Vec<(&str, &[String])> = batch
                .iter()
                .map(|(name, rooms)| (name.as_str(), rooms.as_slice()))
                .collect();
            self.take_names(now, Tag::Reclaim, Take::Join, &names);
        }
    }

    /// A third of the way through the heartbeat's TTL: renew it, and free the names
    /// of numbers no longer alive. After a heartbeat found gone, join
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
        let args: [&[u8]; 3] = [b"EXPIRE", key.as_bytes(), ttl.as_bytes()];
        self.command(now, Tag::Heartbeat, &args);
        self.reap(now);
    }

    /// One `REAP` call.
    fn reap(&mut self, now: Instant) {
        let keys = [NAMES, NUMBERS, REAPING].map(str::as_bytes);
        let args = REAP.eval(&[keys[0], keys[1], keys[2], REAP_BATCH.as_bytes()]);
        self.command(now, Tag::Reap, &args);
    }

    /// The heartbeat was renewed (1), or had expired (0): then this node's number is
    /// not alive, its names may have been freed by the others, and it joins again on
    /// its next tick.
    pub(super) fn heartbeat_answered(&mut self, reply: &Reply) {
        if *reply == Reply::Number(0) {
            log::warn!(
                "chat: node {}: its heartbeat had expired in Redis (the node was silent \
                 longer than --redis-ttl, or Redis lost its keys): taking its names again",
                self.id
            );
            self.rejoin = true;
        }
    }

    /// A `REAP` call answered: say what it freed, and call again while the pass goes on.
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
                "chat: node {}: freed {freed} names of nodes whose heartbeat stopped \
                 (or that joined again)",
                self.id
            );
        }
        if more > 0 {
            self.reap(now);
        }
    }
}
