//! `list` across the cluster: every name key (`SCAN MATCH sb:name:*`, as many steps as
//! Redis takes), then their values (`MGET`), each the node and the member's rooms.

use std::collections::BTreeMap;
use std::time::Instant;

use super::node::{Node, Tag};
use super::resp::Reply;
use crate::services::chat::engine::{MemberId, Remote};

impl Node {
    /// One `SCAN` step of `list`. False if it could not be sent.
    pub(super) fn scan(
        &mut self,
        now: Instant,
        member: MemberId,
        keys: Vec<Vec<u8>>,
        cursor: &[u8],
    ) -> bool {
        let tag = Tag::Scan { member, keys };
        let args: [&[u8]; 6] = [b"SCAN", cursor, b"MATCH", b"sb:name:*", b"COUNT", b"1000"];
        self.command(now, tag, &args)
    }

    /// A `SCAN` step answered: the next step, or the values of every key found.
    pub(super) fn list_scanned(
        &mut self,
        now: Instant,
        member: MemberId,
        keys: &mut Vec<Vec<u8>>,
        reply: Reply,
    ) {
        let Reply::Array(parts) = reply else {
            return self.heard.push(Remote::ListLocally { member });
        };
        let mut parts = parts.into_iter();
        let cursor = parts.next().and_then(|c| c.as_bytes().map(<[u8]>::to_vec));
        if let Some(Reply::Array(found)) = parts.next() {
            keys.extend(
                found
                    .iter()
                    .filter_map(|k| k.as_bytes().map(<[u8]>::to_vec)),
            );
        }
        let keys = std::mem::take(keys);
        let sent = match cursor.as_deref() {
            Some(b"0") | None if keys.is_empty() => {
                return self.list_answer(member, &[], Reply::Array(Vec::new()));
            }
            Some(b"0") | None => {
                let mut args: Vec<&[u8]> = vec![b"MGET"];
                args.extend(keys.iter().map(Vec::as_slice));
                let tag = Tag::Values {
                    member,
                    keys: keys.clone(),
                };
                self.command(now, tag, &args)
            }
            Some(cursor) => {
                let cursor = cursor.to_vec();
                self.scan(now, member, keys, &cursor)
            }
        };
        if !sent {
            self.heard.push(Remote::ListLocally { member });
        }
    }

    /// The values of every name key: each the node, then the member's rooms.
    pub(super) fn list_answer(&mut self, member: MemberId, keys: &[Vec<u8>], reply: Reply) {
        let values = match reply {
            Reply::Array(values) => values,
            _ => Vec::new(),
        };
        let mut rooms: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, value) in keys.iter().zip(values) {
            let (Some(name), Some(value)) = (
                key.strip_prefix(b"sb:name:").map(String::from_utf8_lossy),
                value.as_bytes().map(String::from_utf8_lossy),
            ) else {
                continue; // given up between the scan and the read
            };
            for room in value.lines().skip(1) {
                rooms
                    .entry(room.to_owned())
                    .or_default()
                    .push(name.to_string());
            }
        }
        for members in rooms.values_mut() {
            members.sort();
        }
        self.heard.push(Remote::Listed {
            member,
            rooms: rooms.into_iter().collect(),
        });
    }
}
