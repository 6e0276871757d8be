//! The chat wire format: what members send ([`Request`], or the two-field
//! [`NameMsg`]), what the server sends back ([`Event`]), and the rules for names.
//!
//! Every TCP frame and every UDP datagram carries one UTF-8 JSON object. Typed objects
//! name their kind in a `type` field:
//!
//! ```text
//!   client -> server   {"type":"say","room":"lobby","text":"hi"}
//!   server -> client   {"type":"msg","room":"lobby","from":"alice","text":"hi","ts":1700000000000}
//! ```
//!
//! A UDP datagram without `type` but with `name` and `msg` is the seed programs'
//! form, `{"name":"clinet1","msg":"hi"}`; its sender becomes a name/msg member and is
//! answered in the same form ([`NameMsg`]). `docs/chat.md` lists every message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest name or room name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// The sender name the server uses when it answers a name/msg member with an error: such
/// members understand only `{"name", "msg"}`, so errors take that form too. Reserved,
/// so that no member can pose as the server.
pub const SERVER_NAME: &str = "switchboard";

/// A typed request from a member.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Request {
    /// Set or change the member's name.
    Hello {
        /// The name wanted.
        name: String,
    },
    /// Enter a room (created when the first member joins).
    Join {
        /// The room.
        room: String,
    },
    /// Leave a room (removed, with its history, when the last member leaves).
    Leave {
        /// The room.
        room: String,
    },
    /// Send `text` to every member of `room`, the sender included.
    Say {
        /// The room, which the sender must have joined.
        room: String,
        /// The message.
        text: String,
    },
    /// Send `text` to one member.
    Dm {
        /// The recipient's name.
        to: String,
        /// The message.
        text: String,
    },
    /// Ask for the rooms and their members.
    List,
    /// Ask how many members `room` has, across loops and nodes: how a member of a
    /// room too large for presence events learns its size.
    Count {
        /// The room.
        room: String,
    },
    /// Ask for a `pong` (a liveness check; it also keeps a UDP member from expiring).
    Ping,
    /// Leave the chat: every room, and the name. A TCP connection is then closed; a
    /// UDP member need not wait for its expiry to free its name.
    Bye,
}

/// The seed programs' message: `{"name": N, "msg": M}`, meaning `hello N` followed by
/// `say lobby M`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NameMsg {
    /// The sender's name.
    pub name: String,
    /// The text, said in the lobby.
    pub msg: String,
    /// Whether the object has a `type` field at all (even `null`): such an object is a
    /// malformed typed request, not a name/msg message.
    #[serde(rename = "type", default, deserialize_with = "field_present")]
    has_type: bool,
}

#[cfg(test)]
impl NameMsg {
    /// A name/msg message as a datagram would carry it.
    pub fn for_test(name: &str, msg: &str) -> NameMsg {
        NameMsg {
            name: name.into(),
            msg: msg.into(),
            has_type: false,
        }
    }
}

/// Deserializes any value, `null` included, as "the field is there" (serde would take
/// a `null` for a missing `Option`).
fn field_present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// The room name/msg members live in.
pub const LOBBY: &str = "lobby";

/// One decoded message from a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A typed request.
    Typed(Request),
    /// A seed-style `{"name", "msg"}` datagram.
    NameMsg(NameMsg),
}

/// Why a frame or datagram is not a request. Answered with an `error` event; the
/// connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadInput {
    /// The bytes are not UTF-8.
    Utf8 {
        /// Offset of the first invalid byte.
        at: usize,
    },
    /// The bytes are not JSON.
    Json(String),
    /// JSON, but not a request: unknown `type`, missing or mistyped field.
    Request(String),
}

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadInput::Utf8 { at } => write!(f, "invalid UTF-8 at byte {at}"),
            BadInput::Json(e) => write!(f, "invalid JSON: {e}"),
            BadInput::Request(e) => write!(f, "invalid request: {e}"),
        }
    }
}

impl std::error::Error for BadInput {}

/// Whether a transport accepts the two-field `{"name","msg"}` form (UDP does, TCP does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMsgForm {
    /// `{"name", "msg"}` without `type` is a [`NameMsg`].
    Accepted,
    /// Only typed requests.
    Refused,
}

/// Decodes one frame or datagram.
///
/// ```
/// use switchboard::services::chat::{parse, Incoming, NameMsgForm, Request};
/// let request = parse(br#"{"type":"join","room":"lobby"}"#, NameMsgForm::Refused).unwrap();
/// assert_eq!(request, Incoming::Typed(Request::Join { room: "lobby".into() }));
/// ```
pub fn parse(bytes: &[u8], form: NameMsgForm) -> Result<Incoming, BadInput> {
    // Checked first so that invalid UTF-8 is reported as such, not as a JSON error.
    let text = std::str::from_utf8(bytes).map_err(|e| BadInput::Utf8 {
        at: e.valid_up_to(),
    })?;
    let typed_error = match serde_json::from_str::<Request>(text) {
        Ok(request) => return Ok(Incoming::Typed(request)),
        Err(e) => e,
    };
    if form == NameMsgForm::Accepted {
        if let Ok(message) = serde_json::from_str::<NameMsg>(text) {
            if !message.has_type {
                return Ok(Incoming::NameMsg(message));
            }
        }
    }
    Err(match typed_error.classify() {
        serde_json::error::Category::Data => BadInput::Request(typed_error.to_string()),
        _ => BadInput::Json(typed_error.to_string()),
    })
}

/// Checks a name or room name: 1 to [`MAX_NAME_CHARS`] characters, none of them
/// whitespace or control characters (so that `/msg NAME TEXT` can be split on spaces).
/// `what` names the thing in the error ("name", "room").
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err(format!("{what} is empty"));
    }
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "{what} is {chars} characters long, over the {MAX_NAME_CHARS}-character limit"
        ));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what} {name:?} contains spaces or control characters"
        ));
    }
    Ok(())
}

/// One room in a `rooms` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomInfo<'a> {
    /// The room's name.
    pub room: &'a str,
    /// Its members' names, in the order they joined (as far as leaves allow).
    pub members: Vec<&'a str>,
}

/// What the server sends to typed members. Serialized once per event, whatever the
/// number of recipients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event<'a> {
    /// The member's name is set (answer to `hello`).
    Welcome {
        /// The name now held.
        name: &'a str,
    },
    /// A message said in a room.
    Msg {
        /// The room.
        room: &'a str,
        /// The sender's name.
        from: &'a str,
        /// The message.
        text: &'a str,
        /// When the server received it: milliseconds since the Unix epoch.
        ts: u64,
        /// `true` when this is a replay of the room's history to a member who just
        /// joined, absent for a message said now.
        #[serde(skip_serializing_if = "is_false")]
        history: bool,
    },
    /// A direct message, sent to its recipient and echoed to its sender.
    Dm {
        /// The sender's name.
        from: &'a str,
        /// The recipient's name.
        to: &'a str,
        /// The message.
        text: &'a str,
        /// When the server received it: milliseconds since the Unix epoch.
        ts: u64,
    },
    /// `name` entered `room`.
    Joined {
        /// The room.
        room: &'a str,
        /// Who joined.
        name: &'a str,
    },
    /// `name` left `room` (by `leave`, disconnect, expiry, or being cut off).
    Left {
        /// The room.
        room: &'a str,
        /// Who left.
        name: &'a str,
    },
    /// A member of `room` changed its name from `old` to `name`.
    Renamed {
        /// The room.
        room: &'a str,
        /// The previous name.
        old: &'a str,
        /// The new name.
        name: &'a str,
    },
    /// The rooms and their members (answer to `list`).
    Rooms {
        /// Every room, by name.
        rooms: Vec<RoomInfo<'a>>,
    },
    /// Answer to `ping`.
    Pong,
    /// The answer to `count`: how many members `room` has, across loops and nodes (an
    /// estimate while the room's size changes elsewhere).
    Members {
        /// The room.
        room: &'a str,
        /// Its members.
        count: usize,
    },
    /// Something the member should know that is not about a room: the link to the
    /// other chat servers went down or came back, say.
    Notice {
        /// For a person to read.
        text: &'a str,
    },
    /// A request was refused; the connection stays usable.
    Error {
        /// Why, for a person to read.
        reason: &'a str,
    },
}

/// The seeds' form, as sent to name/msg members: `{"name": sender, "msg": text}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameMsgReply<'a> {
    /// The sender's name.
    pub name: &'a str,
    /// The text.
    pub msg: &'a str,
}

/// JSON bytes of a value whose serialization cannot fail: the types here hold only
/// strings, integers and lists of them.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| {
        log::error!("chat: cannot serialize a message: {e}");
        Vec::new()
    })
}

/// How each [`Event`] the server encodes begins: serde writes the tag first, compact.
/// `dm` is also a request, so its event is told by the `from` that only the server
/// writes; the name/msg errors are the ones signed [`SERVER_NAME`].
const OWN_OUTPUT_PREFIXES: [&[u8]; 12] = [
    br#"{"type":"welcome""#,
    br#"{"type":"msg""#,
    br#"{"type":"dm","from":"#,
    br#"{"type":"joined""#,
    br#"{"type":"left""#,
    br#"{"type":"renamed""#,
    br#"{"type":"rooms""#,
    br#"{"type":"pong""#,
    br#"{"type":"error""#,
    br#"{"type":"members""#,
    br#"{"type":"notice""#,
    br#"{"name":"switchboard","#,
];

/// True if `datagram` is something this server sends, not something a member would:
/// an event, or a name/msg error. Such a datagram arriving is the server's own output
/// sent back, by an echo service or another chat server that was given a forged
/// source; answering it would start a loop (its answer would come back too). A
/// name/msg member's echo of its own message cannot be told this way (it is a name/msg
/// message); the service recognises that one by its bytes.
///
/// ```
/// use switchboard::services::chat::protocol::is_own_output;
/// assert!(is_own_output(br#"{"type":"pong"}"#));
/// assert!(!is_own_output(br#"{"type":"ping"}"#));
/// ```
pub fn is_own_output(datagram: &[u8]) -> bool {
    OWN_OUTPUT_PREFIXES
        .iter()
        .any(|prefix| datagram.starts_with(prefix))
}

/// For `skip_serializing_if`: a flag that is off is left out of the JSON.
fn is_false(flag: &bool) -> bool {
    !*flag
}

/// The `msg` event `json` as replayed history: the same bytes with `"history":true`
/// added as its last field, exactly as serializing it with `history: true` would
/// give. A room keeps its messages encoded once, as they were said; this marks a copy
/// only when a member joins, so saying a message costs nothing more.
pub fn mark_as_history(json: &[u8]) -> Vec<u8> {
    const MARK: &[u8] = br#","history":true}"#;
    let Some(body) = json.strip_suffix(b"}") else {
        return json.to_vec();
    };
    let mut marked = Vec::with_capacity(body.len() + MARK.len());
    marked.extend_from_slice(body);
    marked.extend_from_slice(MARK);
    marked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(json: &str) -> Result<Incoming, BadInput> {
        parse(json.as_bytes(), NameMsgForm::Refused)
    }

    #[test]
    fn every_request_kind_decodes() {
        let cases = [
            (
                r#"{"type":"hello","name":"a"}"#,
                Request::Hello { name: "a".into() },
            ),
            (
                r#"{"type":"join","room":"r"}"#,
                Request::Join { room: "r".into() },
            ),
            (
                r#"{"type":"leave","room":"r"}"#,
                Request::Leave { room: "r".into() },
            ),
            (
                r#"{"type":"say","room":"r","text":"t"}"#,
                Request::Say {
                    room: "r".into(),
                    text: "t".into(),
                },
            ),
            (
                r#"{"type":"dm","to":"b","text":"t"}"#,
                Request::Dm {
                    to: "b".into(),
                    text: "t".into(),
                },
            ),
            (r#"{"type":"list"}"#, Request::List),
            (r#"{"type":"ping","extra":1}"#, Request::Ping),
            (r#"{"type":"bye"}"#, Request::Bye),
        ];
        for (json, request) in cases {
            assert_eq!(typed(json), Ok(Incoming::Typed(request)), "{json}");
        }
    }

    #[test]
    fn bad_input_is_classified() {
        assert_eq!(
            parse(b"{\"type\":\"ping\xff", NameMsgForm::Refused),
            Err(BadInput::Utf8 { at: 13 })
        );
        assert!(matches!(typed("{not json"), Err(BadInput::Json(_))));
        let unknown = typed(r#"{"type":"shout"}"#).unwrap_err().to_string();
        assert!(unknown.contains("unknown variant `shout`"), "{unknown}");
        let missing = typed(r#"{"type":"say","room":"r"}"#)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `text`"), "{missing}");
    }

    #[test]
    fn the_name_msg_form_only_where_accepted_and_only_without_type() {
        let seed = br#"{"name": "clinet1", "msg": "hi"}"#;
        assert!(matches!(
            parse(seed, NameMsgForm::Accepted),
            Ok(Incoming::NameMsg(NameMsg { ref name, ref msg, .. })) if name == "clinet1" && msg == "hi"
        ));
        assert!(matches!(
            parse(seed, NameMsgForm::Refused),
            Err(BadInput::Request(_))
        ));
        let typed_but_broken = br#"{"type":"say","name":"a","msg":"hi"}"#;
        assert!(matches!(
            parse(typed_but_broken, NameMsgForm::Accepted),
            Err(BadInput::Request(_))
        ));
        // Found by the chat_parse fuzz target: serde reads a `null` as a missing field.
        let null_type = br#"{"name":"a","msg":"b","type":null}"#;
        assert!(matches!(
            parse(null_type, NameMsgForm::Accepted),
            Err(BadInput::Request(_))
        ));
    }

    #[test]
    fn every_event_and_name_msg_error_is_own_output_and_no_request_is() {
        let rooms = vec![RoomInfo {
            room: "r",
            members: vec!["a"],
        }];
        let events = [
            Event::Welcome { name: "a" },
            Event::Msg {
                room: "r",
                from: "a",
                text: "t",
                ts: 1,
                history: true,
            },
            Event::Dm {
                from: "a",
                to: "b",
                text: "t",
                ts: 1,
            },
            Event::Joined {
                room: "r",
                name: "a",
            },
            Event::Left {
                room: "r",
                name: "a",
            },
            Event::Renamed {
                room: "r",
                old: "a",
                name: "b",
            },
            Event::Rooms { rooms },
            Event::Pong,
            Event::Error { reason: "no" },
            Event::Members {
                room: "r",
                count: 2,
            },
            Event::Notice { text: "up" },
        ];
        for event in &events {
            let json = to_json(event);
            assert!(is_own_output(&json), "{}", String::from_utf8_lossy(&json));
        }
        let name_msg_error = NameMsgReply {
            name: SERVER_NAME,
            msg: "error: no",
        };
        assert!(is_own_output(&to_json(&name_msg_error)));
        let requests: [&[u8]; 11] = [
            br#"{"type":"count","room":"r"}"#,
            br#"{"type":"hello","name":"a"}"#,
            br#"{"type":"join","room":"r"}"#,
            br#"{"type":"leave","room":"r"}"#,
            br#"{"type":"say","room":"r","text":"t"}"#,
            br#"{"type":"dm","to":"b","text":"t"}"#,
            br#"{"type":"list"}"#,
            br#"{"type":"ping"}"#,
            br#"{"type":"bye"}"#,
            br#"{"name": "clinet1", "msg": "hello"}"#,
            br#"{"name":"alice","msg":"a name/msg message, compact"}"#,
        ];
        for request in requests {
            assert!(
                !is_own_output(request),
                "{}",
                String::from_utf8_lossy(request)
            );
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("name", "alice").is_ok());
        assert!(check_name("name", "李雷").is_ok());
        assert!(check_name("name", &"x".repeat(32)).is_ok());
        assert!(check_name("name", &"x".repeat(33)).is_err());
        assert!(check_name("name", "").is_err());
        assert!(check_name("name", "a b").is_err());
        assert!(check_name("room", "a\u{7}").is_err());
    }

    #[test]
    fn events_serialize_to_golden_bytes() {
        let msg = Event::Msg {
            room: "lobby",
            from: "alice",
            text: "hi \"you\"",
            ts: 7,
            history: false,
        };
        assert_eq!(
            to_json(&msg),
            br#"{"type":"msg","room":"lobby","from":"alice","text":"hi \"you\"","ts":7}"#
        );
        assert_eq!(to_json(&Event::Pong), br#"{"type":"pong"}"#);
        let replayed = Event::Msg {
            room: "lobby",
            from: "alice",
            text: "hi \"you\"",
            ts: 7,
            history: true,
        };
        assert_eq!(
            to_json(&replayed),
            br#"{"type":"msg","room":"lobby","from":"alice","text":"hi \"you\"","ts":7,"history":true}"#
        );
        assert_eq!(mark_as_history(&to_json(&msg)), to_json(&replayed));
        let rooms = Event::Rooms {
            rooms: vec![RoomInfo {
                room: "r",
                members: vec!["a", "b"],
            }],
        };
        assert_eq!(
            to_json(&rooms),
            br#"{"type":"rooms","rooms":[{"room":"r","members":["a","b"]}]}"#
        );
        let name_msg = NameMsgReply {
            name: "clinet1",
            msg: "你好",
        };
        assert_eq!(
            to_json(&name_msg),
            r#"{"name":"clinet1","msg":"你好"}"#.as_bytes()
        );
    }
}
