//! What a counting listener (`--listeners count`) reads from a frame's bytes alone,
//! without parsing it as JSON: is it a `msg` event, and is its text a sender's last
//! word (`RUN.S:COUNT:end`, see [`super::sequence`]) or a message?
//!
//! The server writes a `msg` event with its tag first and the text just before the
//! timestamp:
//!
//! ```text
//!   {"type":"msg","room":"R","from":"F","text":"RUN.S:SEQ:MICROS:xxxx","ts":1700000000000}
//!   {"type":"msg","room":"R","from":"F","text":"RUN.S:COUNT:end","ts":1700000000000}
//! ```
//!
//! So the prefix says `msg`, and the end of the text is found from the end of the
//! frame: `}`, the timestamp's digits, `","ts":`; its start is the quote before that
//! (a bench run's texts hold no quote). A message's text ends in its padding (`x`) or
//! its stamp's `:`, never in `:end`. Nothing else is read: not the room, not the
//! sender, not the numbers. A `msg` frame of another shape (a history replay, which
//! a member of a new room never gets once it has joined) is [`Glance::Unreadable`],
//! which the run counts as an error rather than guess.

/// How every `msg` event begins (serde writes the tag first, compact).
const MSG_PREFIX: &[u8] = br#"{"type":"msg""#;
/// What follows a `msg` event's text.
const BEFORE_TS: &[u8] = br#"","ts":"#;
/// How a sender's last word ends.
const END_MARK: &[u8] = b":end";

/// What one look at a frame found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Glance {
    /// A `msg` event carrying a message of `text_len` bytes.
    Data {
        /// The length of its text.
        text_len: usize,
    },
    /// A `msg` event carrying a sender's last word.
    End,
    /// A `msg` event whose text's end cannot be found.
    Unreadable,
    /// Any other event (`joined`, `left`, `error`, ...): for the parser.
    NotMsg,
}

/// Looks at `payload`, one frame from the server.
pub fn glance(payload: &[u8]) -> Glance {
    if !payload.starts_with(MSG_PREFIX) {
        return Glance::NotMsg;
    }
    let Some(upto_text_end) = text_end(payload) else {
        return Glance::Unreadable;
    };
    if upto_text_end.ends_with(END_MARK) {
        return Glance::End;
    }
    match upto_text_end.iter().rposition(|b| *b == b'"') {
        Some(quote) => Glance::Data {
            text_len: upto_text_end.len() - quote - 1,
        },
        None => Glance::Unreadable,
    }
}

/// The event up to the end of its text (the closing quote excluded), if it ends
/// `","ts":DIGITS}`.
fn text_end(payload: &[u8]) -> Option<&[u8]> {
    let body = payload.strip_suffix(b"}")?;
    let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    body[..body.len() - digits].strip_suffix(BEFORE_TS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_last_words_are_told_apart_by_their_bytes() {
        let data = br#"{"type":"msg","room":"bench-1","from":"b1-0","text":"1.0:7:1700000000000000:xxxx","ts":1700000000000}"#;
        assert_eq!(glance(data), Glance::Data { text_len: 27 });
        let unpadded =
            br#"{"type":"msg","room":"r","from":"b1-0","text":"1.0:7:1700000000000000:","ts":5}"#;
        assert_eq!(glance(unpadded), Glance::Data { text_len: 23 });
        let end =
            br#"{"type":"msg","room":"r","from":"b1-0","text":"1.0:5000:end","ts":1700000000000}"#;
        assert_eq!(glance(end), Glance::End);
        let history =
            br#"{"type":"msg","room":"r","from":"a","text":"1.0:5000:end","ts":7,"history":true}"#;
        assert_eq!(glance(history), Glance::Unreadable);
        assert_eq!(
            glance(br#"{"type":"msg","text":"x","ts":}"#),
            Glance::Unreadable
        );
        assert_eq!(glance(br#"{"type":"msg""#), Glance::Unreadable);
        assert_eq!(
            glance(br#"{"type":"joined","room":"r","name":"b1-3"}"#),
            Glance::NotMsg
        );
        assert_eq!(glance(br#"{"type":"msgs"}"#), Glance::NotMsg);
        assert_eq!(glance(b""), Glance::NotMsg);
    }

    /// The look holds for the bytes the chat server itself writes.
    #[cfg(feature = "chat")]
    #[test]
    fn the_servers_own_msg_events_are_read() {
        use crate::services::chat::protocol::{to_json, Event};
        let event = |text: &str| {
            to_json(&Event::Msg {
                room: "bench-1",
                from: "b1-0",
                text,
                ts: 1_700_000_000_000,
                history: false,
            })
        };
        let mut text = Vec::new();
        super::super::sequence::write_data(&mut text, "1", 0, 7, 1_700_000_000_000_000, 64)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(glance(&event(&text)), Glance::Data { text_len: 64 });
        let mut end = Vec::new();
        super::super::sequence::write_end(&mut end, "1", 0, 5000).unwrap();
        assert_eq!(
            glance(&event(std::str::from_utf8(&end).unwrap())),
            Glance::End
        );
    }
}
