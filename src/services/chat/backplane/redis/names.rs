//! Names in the cluster: a name is unique because its key (`sb:name:NAME`) is taken
//! with `SET NX`; a stream member's `hello` waits for that answer (`Claim::Pending`
//! in `node`), a datagram member's name is checked here only. A name held here is
//! kept alive by the node's refreshes, taken again after Redis comes back or its key
//! expires, and deleted when given up (which also stops its DMs).

use std::time::Instant;

use super::node::{Node, Tag, LINK_DOWN};
use crate::services::chat::engine::Remote;

impl Node {
    /// A member here now holds `name`, in `rooms`: its DMs come here; its key says
    /// where it is. A member told nothing else learns if the link is down.
    pub(super) fn hold_name(&mut self, now: Instant, name: &str, rooms: &[String]) {
        self.subscribe(&format!("sb:dm:{name}"));
        self.set_name(now, Tag::Ignore, name, rooms, "NX");
        self.set_name(now, Tag::Ignore, name, rooms, "XX");
        if self.down {
            self.heard.push(Remote::NoticeTo {
                name: name.to_owned(),
                text: LINK_DOWN.into(),
            });
        }
    }
}
