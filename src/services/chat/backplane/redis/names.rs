//! Names in the cluster: one hash, `sb:names`, holds every name taken, each with its
//! holder and the member's rooms (field `NAME`, value `NUMBER\nROOM\nROOM...`). A name
//! is unique because its field is written only while free; a stream member's `hello`
//! waits for that answer (`Claim::Pending` in `node`), a datagram member's name is
//! checked here only.
//!
//! The holder is a number, not the node's id: each time a node joins it takes a new
//! number (`liveness`), which `sb:numbers` maps to the node's id and its heartbeat
//! holds. A number is alive while its node's heartbeat holds it; a name whose holder
//! is not is free to take, and the survivors delete it (`REAP`). Fields of one hash,
//! and a number of a few digits in place of a 20-byte id, keep a name to about 70
//! bytes of Redis's memory (a key per name and a set of each node's names cost
//! about 190).
//!
//! Each change is one Lua script, so a name is never taken from, or deleted for,
//! another node that is alive:
//!
//! - `TAKE`: take names that are free (a `hello`), or free or already this node's
//!   (a name held here, written again with its rooms).
//! - `GIVE`: delete a name if this node holds it.
//! - `ROUTE`: a DM to the node holding a name, on that node's channel
//!   (`sb:node:NODE`): one round trip, and channels that grow with nodes, not members.

use std::sync::OnceLock;
use std::time::Instant;

use super::node::{Node, Script, Tag, LINK_DOWN};
use crate::services::chat::engine::Remote;

/// The hash of every name taken: name -> `NUMBER\nROOM\nROOM...`.
pub(super) const NAMES: &str = "sb:names";

/// The hash of the nodes' numbers: number -> node id.
pub(super) const NUMBERS: &str = "sb:numbers";

/// Takes names for this node. `KEYS`: the names, the numbers, this node's heartbeat
/// (holding its number). `ARGV[1]`: `new` (a name must be free) or `again` (free, or
/// already this node's); then each name and its rooms (`\nROOM` each). Answers the
/// names not taken; an error when the heartbeat is gone (the node joins again).
pub(super) static TAKE: Script = Script {
    keys: b"3",
    body: r"local mine = redis.call('GET', KEYS[3])
if not mine then
  return redis.error_reply('ERR this node has no heartbeat in Redis: it joins again')
end
-- A number is alive while its node's heartbeat holds it.
local function alive(number)
  local node = redis.call('HGET', KEYS[2], number)
  return node and redis.call('GET', 'sb:node:' .. node) == number
end
local refused = {}
for i = 2, #ARGV, 2 do
  local name = ARGV[i]
  local held = redis.call('HGET', KEYS[1], name)
  local holder = held and string.match(held, '^[^\n]*')
  if held and (ARGV[1] == 'new' or holder ~= mine) and alive(holder) then
    refused[#refused + 1] = name
  else
    redis.call('HSET', KEYS[1], name, mine .. ARGV[i + 1])
  end
end
return refused",
    sha: OnceLock::new(),
};

/// Gives a name up. `KEYS`: the names, this node's heartbeat; `ARGV[1]`: the name. A
/// name another number holds stays (an old number of this node's: `REAP` frees it).
pub(super) static GIVE: Script = Script {
    keys: b"2",
    body: r"local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and string.match(held, '^[^\n]*') == redis.call('GET', KEYS[2]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0",
    sha: OnceLock::new(),
};

/// A DM to the node holding a name. `KEYS`: the names, the numbers; `ARGV`: the
/// sending node, the name, the message. Answers how many received it: 0 when nobody
/// holds the name, or only the sender does (no member of its holds it, or it would
/// not ask).
pub(super) static ROUTE: Script = Script {
    keys: b"2",
    body: r"local held = redis.call('HGET', KEYS[1], ARGV[2])
if not held then return 0 end
local node = redis.call('HGET', KEYS[2], string.match(held, '^[^\n]*'))
if not node or node == ARGV[1] then return 0 end
return redis.call('PUBLISH', 'sb:node:' .. node, ARGV[3])",
    sha: OnceLock::new(),
};

/// Whether `TAKE` is to take only free names, or this node's too, and what becomes of
/// it at the queue's bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Take {
    /// Only a free name: a member asks for it. Dropped at the bound (the member is
    /// then checked here only).
    New,
    /// Free or already this node's: a name held here, written again. Not dropped at
    /// the bound: the link is closed instead, and the reconnect joins again.
    Again,
    /// As `Again`, for a node joining with all its names: dropped at the bound (a
    /// reconnect would only join again, with as many).
    Join,
}

impl Node {
    /// A member here now holds `name`, in `rooms`: its field says where it is. A member
    /// told nothing else learns if the link is down.
    pub(super) fn hold_name(&mut self, now: Instant, name: &str, rooms: &[String]) {
        self.take_names(now, Tag::Ignore, Take::Again, &[(name, rooms)]);
        if self.down {
            self.heard.push(Remote::NoticeTo {
                name: name.to_owned(),
                text: LINK_DOWN.into(),
            });
        }
    }

    /// Runs `TAKE` for `names` (each with its rooms), as `take` says. False if nothing
    /// was sent.
    pub(super) fn take_names(
        &mut self,
        now: Instant,
        tag: Tag,
        take: Take,
        names: &[(&str, &[String])],
    ) -> bool {
        let heartbeat = self.heartbeat_key();
        let rooms: Vec<String> = names.iter().map(|(_, r)| rooms_value(r)).collect();
        let mode: &[u8] = match take {
            Take::New => b"new",
            Take::Again | Take::Join => b"again",
        };
        let mut args: Vec<&[u8]> = vec![
            NAMES.as_bytes(),
            NUMBERS.as_bytes(),
            heartbeat.as_bytes(),
            mode,
        ];
        for ((name, _), rooms) in names.iter().zip(&rooms) {
            args.extend([name.as_bytes(), rooms.as_bytes()]);
        }
        let args = TAKE.eval(&args);
        match take {
            Take::New | Take::Join => self.command(now, tag, &args),
            Take::Again => self.keep(now, tag, &args),
        }
    }

    /// Runs `GIVE` for `name`; like a name taken, not dropped at the bound.
    pub(super) fn give_name(&mut self, now: Instant, name: &str) {
        let heartbeat = self.heartbeat_key();
        let args = [NAMES.as_bytes(), heartbeat.as_bytes(), name.as_bytes()];
        let args = GIVE.eval(&args);
        self.keep(now, Tag::Ignore, &args);
    }

    /// Runs `ROUTE`: `payload` to whichever node holds `to`. False if not sent.
    pub(super) fn route(&mut self, now: Instant, tag: Tag, to: &str, payload: &[u8]) -> bool {
        let id = self.id.clone();
        let args = [
            NAMES.as_bytes(),
            NUMBERS.as_bytes(),
            id.as_bytes(),
            to.as_bytes(),
            payload,
        ];
        let args = ROUTE.eval(&args);
        self.command(now, tag, &args)
    }
}

/// A member's rooms as `TAKE` appends them to the holder's number: `\nROOM` each.
fn rooms_value(rooms: &[String]) -> String {
    rooms.iter().map(|room| format!("\n{room}")).collect()
}

/// The rooms in a name's value (`NUMBER\nROOM\nROOM...`).
pub(super) fn rooms_of(value: &str) -> impl Iterator<Item = &str> {
    value.lines().skip(1)
}
