//! `list` across the cluster: every name and its rooms, read from `sb:names` with
//! `HSCAN` (as many steps as Redis takes, `COUNT 1000` each), so Redis is never held
//! for the whole hash at once.

use std::collections::BTreeMap;
use std::time::Instant;

use super::names::{rooms_of, NAMES};
use super::node::{Node, Tag};
use super::resp::Reply;
use crate::services::chat::engine::{MemberId, Remote};

impl Node {
    /// One `HSCAN` step of `list`, `found` the names and values read so far. False if
    /// it could not be sent.
    pub(super) fn scan(
        &mut self,
        now: Instant,
        member: MemberId,
        found: BTreeMap<String, String>,
        cursor: &[u8],
    ) -> bool {
        let tag = Tag::Scan { member, found };
        let args: [&[u8]; 5] = [b"HSCAN", NAMES.as_bytes(), cursor, b"COUNT", b"1000"];
        self.command(now, tag, &args)
    }

    /// An `HSCAN` step answered: the next step, or the answer once the cursor is back
    /// at 0. A name the scan returns twice (Redis may) is kept once.
    pub(super) fn list_scanned(
        &mut self,
        now: Instant,
        member: MemberId,
        mut found: BTreeMap<String, String>,
        reply: Reply,
    ) {
        let Reply::Array(parts) = reply else {
            return self.heard.push(Remote::ListLocally { member });
        };
        let mut parts = parts.into_iter();
        let cursor = parts.next().and_then(|c| c.as_bytes().map(<[u8]>::to_vec));
        if let Some(Reply::Array(pairs)) = parts.next() {
            for pair in pairs.chunks_exact(2) {
                if let (Some(name), Some(value)) = (pair[0].as_bytes(), pair[1].as_bytes()) {
                    let name = String::from_utf8_lossy(name).into_owned();
                    found.insert(name, String::from_utf8_lossy(value).into_owned());
                }
            }
        }
        match cursor.as_deref() {
            Some(b"0") | None => self.list_answer(member, &found),
            Some(cursor) => {
                let cursor = cursor.to_vec();
                if !self.scan(now, member, found, &cursor) {
                    self.heard.push(Remote::ListLocally { member });
                }
            }
        }
    }

    /// Every name's rooms, as each room's members.
    fn list_answer(&mut self, member: MemberId, found: &BTreeMap<String, String>) {
        let mut rooms: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // By name, so each room's members come sorted.
        for (name, value) in found {
            for room in rooms_of(value) {
                rooms.entry(room.to_owned()).or_default().push(name.clone());
            }
        }
        self.heard.push(Remote::Listed {
            member,
            rooms: rooms.into_iter().collect(),
        });
    }
}
