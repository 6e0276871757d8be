//! One event, serialized once for every recipient: the engine makes an [`EventBytes`]
//! per event and hands the same one to every member's transport.
//!
//! ```text
//!   Event --serialize once--> json ------------------------> typed UDP members
//!                              |--frame once per framing--> stream members (shared)
//!   (msg, dm only) ---------> {"name","msg"} -------------> name/msg UDP members
//! ```
//!
//! The frames are made by the transport the first time it needs them (a length frame
//! for TCP and Unix members, a text message for WebSocket members) and kept here, so
//! a room of N stream members costs one framing, not N.

use std::cell::OnceCell;

use super::protocol::{mark_as_history, to_json, Event, NameMsgReply};
use crate::SharedFrame;

/// An event's bytes as they cross loops and nodes: the typed JSON and the name/msg
/// form, serialized once by the sender. Plain bytes, so it can go to another thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serialized {
    /// The typed JSON: a stream member's payload, a typed UDP member's datagram.
    pub json: Vec<u8>,
    /// The `{"name","msg"}` form for name/msg members; `None` for events they never get.
    pub name_msg: Option<Vec<u8>>,
}

/// How a stream member's transport frames an event; each framing is made once per
/// event and shared by every member that uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A length-prefixed frame (TCP and Unix members).
    Length,
    /// A WebSocket text message.
    WebSocket,
}

/// One event, serialized for every kind of recipient. See the module docs.
#[derive(Debug)]
pub struct EventBytes {
    bytes: Serialized,
    /// The JSON framed for stream members, per framing: made on first use; `None`
    /// inside if the framing refused it (too large).
    frames: [OnceCell<Option<SharedFrame>>; 2],
}

impl EventBytes {
    /// Encodes `event`, and its name/msg form when `name_msg` is given.
    pub fn new(event: &Event<'_>, name_msg: Option<NameMsgReply<'_>>) -> Self {
        EventBytes::from_serialized(Serialized {
            json: to_json(event),
            name_msg: name_msg.map(|reply| to_json(&reply)),
        })
    }

    /// An event another loop or node serialized.
    pub fn from_serialized(bytes: Serialized) -> Self {
        EventBytes {
            bytes,
            frames: [OnceCell::new(), OnceCell::new()],
        }
    }

    /// A copy of this `msg` event marked as history, for replay to a newcomer. The
    /// name/msg form has no field for it and stays as it is.
    pub fn as_history(&self) -> Self {
        EventBytes::from_serialized(Serialized {
            json: mark_as_history(&self.bytes.json),
            name_msg: self.bytes.name_msg.clone(),
        })
    }

    /// The event's bytes, to hand to another loop or node.
    pub fn serialized(&self) -> &Serialized {
        &self.bytes
    }

    /// The typed JSON bytes.
    pub fn json(&self) -> &[u8] {
        &self.bytes.json
    }

    /// The bytes name/msg members are sent, if they are sent this event.
    pub fn name_msg(&self) -> Option<&[u8]> {
        self.bytes.name_msg.as_deref()
    }

    /// The event framed as `framing` says, made by `frame` the first time it is asked
    /// for and shared after that.
    pub fn framed(
        &self,
        framing: Framing,
        frame: impl FnOnce(&[u8]) -> Option<SharedFrame>,
    ) -> Option<&SharedFrame> {
        self.frames[framing as usize]
            .get_or_init(|| frame(&self.bytes.json))
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framing_is_made_once_and_shared() {
        let event = EventBytes::new(&Event::Pong, None);
        let mut made = 0;
        for _ in 0..3 {
            let frame = event.framed(Framing::Length, |json| {
                made += 1;
                Some(SharedFrame::from_wire_bytes(json))
            });
            assert!(frame.is_some());
        }
        assert_eq!(made, 1);
        assert!(event.framed(Framing::WebSocket, |_| None).is_none());
        assert_eq!(event.name_msg(), None);
    }

    #[test]
    fn history_marks_the_typed_form_only() {
        let said = Event::Msg {
            room: "r",
            from: "a",
            text: "hi",
            ts: 1,
            history: false,
        };
        let reply = NameMsgReply {
            name: "a",
            msg: "hi",
        };
        let event = EventBytes::new(&said, Some(reply));
        let replay = event.as_history();
        assert!(replay.json().ends_with(br#","history":true}"#));
        assert_eq!(replay.name_msg(), event.name_msg());
    }
}
