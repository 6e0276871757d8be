//! Names in the cluster: a name is unique because its key (`sb:name:NAME`, holding the
//! node, then the member's rooms) is taken only while free; a stream member's `hello`
//! waits for that answer (`Claim::Pending` in `node`), a datagram member's name is
//! checked here only. Name keys have no TTL: a node lists its names in its own set
//! (`sb:names:NODE`), and when the node dies the survivors free them (`liveness`), so
//! Redis does no work per name while nothing changes.
//!
//! Each change is one Lua script, so the key and the node's set never disagree and a
//! name is never taken from, or deleted for, another node:
//!
//! - `TAKE`: take names that are free (a `hello`), or free or already this node's
//!   (a name held here, written again with its rooms).
//! - `GIVE`: delete a name's key if it is still this node's, and drop it from the set.
//! - `ROUTE`: a DM to the node whose name key holds the name, on that node's channel
//!   (`sb:node:NODE`): one round trip, and channels that grow with nodes, not members.

use std::time::Instant;

use super::node::{Node, Script, Tag, LINK_DOWN};
use crate::services::chat::engine::Remote;

/// Takes names for this node. `KEYS[1]`: the node's set of names. `ARGV[1]`: `new`
/// (a name must be free) or `again` (free, or already this node's); `ARGV[2]`: the
/// node; then each name and its key's value. Answers the names not taken.
const TAKE: Script = Script {
    keys: b"1",
    body: r"local refused = {}
for i = 3, #ARGV, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  local key = 'sb:name:' .. name
  local held = redis.call('GET', key)
  if held and (ARGV[1] == 'new' or string.match(held, '^[^\n]*') ~= ARGV[2]) then
    refused[#refused + 1] = name
  else
    redis.call('SET', key, value)
    redis.call('SADD', KEYS[1], name)
  end
end
return refused",
};

/// Gives a name up. `KEYS[1]`: its key, `KEYS[2]`: the node's set of names;
/// `ARGV[1]`: the node, `ARGV[2]`: the name. A key another node holds stays.
const GIVE: Script = Script {
    keys: b"2",
    body: r"local held = redis.call('GET', KEYS[1])
if held and string.match(held, '^[^\n]*') == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('SREM', KEYS[2], ARGV[2])
return 0",
};

/// A DM to the node holding a name. `KEYS[1]`: the name's key; `ARGV[1]`: the sending
/// node, `ARGV[2]`: the message. Answers how many received it: 0 when nobody holds
/// the name, or only the sender does (no member of its holds it, or it would not ask).
const ROUTE: Script = Script {
    keys: b"1",
    body: r"local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local owner = string.match(held, '^[^\n]*')
if owner == ARGV[1] then return 0 end
return redis.call('PUBLISH', 'sb:node:' .. owner, ARGV[2])",
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
    /// The key of this node's set of names.
    pub(super) fn names_key(&self) -> String {
        format!("sb:names:{}", self.id)
    }

    /// A member here now holds `name`, in `rooms`: its key says where it is. A member
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
        let (set, id) = (self.names_key(), self.id.clone());
        let values: Vec<String> = names.iter().map(|(_, r)| self.name_value(r)).collect();
        let mode: &[u8] = match take {
            Take::New => b"new",
            Take::Again | Take::Join => b"again",
        };
        let mut args: Vec<&[u8]> = vec![set.as_bytes(), mode, id.as_bytes()];
        for ((name, _), value) in names.iter().zip(&values) {
            args.extend([name.as_bytes(), value.as_bytes()]);
        }
        let args = TAKE.eval(&args);
        match take {
            Take::New | Take::Join => self.command(now, tag, &args),
            Take::Again => self.keep(now, tag, &args),
        }
    }

    /// Runs `GIVE` for `name`; like a name taken, not dropped at the bound.
    pub(super) fn give_name(&mut self, now: Instant, name: &str) {
        let (key, set, id) = (Node::name_key(name), self.names_key(), self.id.clone());
        let args = [
            key.as_bytes(),
            set.as_bytes(),
            id.as_bytes(),
            name.as_bytes(),
        ];
        let args = GIVE.eval(&args);
        self.keep(now, Tag::Ignore, &args);
    }

    /// Runs `ROUTE`: `payload` to whichever node holds `to`. False if not sent.
    pub(super) fn route(&mut self, now: Instant, tag: Tag, to: &str, payload: &[u8]) -> bool {
        let (key, id) = (Node::name_key(to), self.id.clone());
        let args = [key.as_bytes(), id.as_bytes(), payload];
        let args = ROUTE.eval(&args);
        self.command(now, tag, &args)
    }
}
