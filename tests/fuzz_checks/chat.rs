//! The chat request parser, `services::chat::parse`, in both `NameMsgForm` modes.
//!
//! For any bytes: no panic; bytes that are not UTF-8 are refused as such in both
//! modes, at the first bad byte; a typed request parses the same in both modes, and
//! only the name/msg mode ever yields a name/msg message, where the typed parse refused the
//! text as a request. What parses agrees with the JSON itself (read as a
//! `serde_json::Value`): a typed request names its kind in `type` and carries the
//! fields the JSON holds; a name/msg message has `name` and `msg` and no `type`. Valid
//! JSON is never refused as invalid JSON, and a refusal as invalid JSON is invalid
//! JSON. Then what parsed is serialized again (a typed request in its canonical form,
//! a name/msg message as the server's `NameMsgReply` writes it) and parses to the same.

use serde_json::{json, Value};
use switchboard::services::chat::protocol::{to_json, NameMsgReply};
use switchboard::services::chat::{parse, BadInput, Incoming, NameMsg, NameMsgForm, Request};

/// A typed request in its canonical JSON form: `type` first, then its fields.
pub fn canonical(request: &Request) -> Value {
    match request {
        Request::Hello { name } => json!({"type": "hello", "name": name}),
        Request::Join { room } => json!({"type": "join", "room": room}),
        Request::Leave { room } => json!({"type": "leave", "room": room}),
        Request::Say { room, text } => json!({"type": "say", "room": room, "text": text}),
        Request::Dm { to, text } => json!({"type": "dm", "to": to, "text": text}),
        Request::List => json!({"type": "list"}),
        Request::Count { room } => json!({"type": "count", "room": room}),
        Request::Ping => json!({"type": "ping"}),
        Request::Bye => json!({"type": "bye"}),
    }
}

/// The `chat_parse` fuzz target's check.
pub fn check(data: &[u8]) {
    let typed = parse(data, NameMsgForm::Refused);
    let either = parse(data, NameMsgForm::Accepted);
    let text = match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(e) => {
            let expected = Err(BadInput::Utf8 {
                at: e.valid_up_to(),
            });
            assert_eq!(typed, expected, "not UTF-8, typed");
            assert_eq!(either, expected, "not UTF-8, name/msg accepted");
            return;
        }
    };
    let value = serde_json::from_str::<Value>(text).ok();
    match (&typed, &either) {
        (Ok(Incoming::Typed(request)), _) => {
            assert_eq!(
                &either, &typed,
                "{text:?}: a typed request depends on the mode"
            );
            check_typed(text, value.as_ref(), request);
        }
        (Ok(Incoming::NameMsg(_)), _) => panic!("{text:?}: a name/msg message where refused"),
        (Err(error), Ok(Incoming::NameMsg(message))) => {
            assert!(
                matches!(error, BadInput::Request(_)),
                "{text:?}: name/msg JSON refused as {error:?} when typed"
            );
            check_name_msg(text, value.as_ref(), message);
        }
        (Err(_), Ok(Incoming::Typed(_))) => panic!("{text:?}: typed only with name/msg accepted"),
        (Err(error), Err(also)) => {
            assert_eq!(
                error, also,
                "{text:?}: refused differently in the two modes"
            );
            match (error, &value) {
                (BadInput::Json(e), Some(_)) => panic!("{text:?}: valid JSON refused: {e}"),
                (BadInput::Utf8 { .. }, _) => panic!("{text:?}: UTF-8 refused as not UTF-8"),
                _ => {}
            }
        }
    }
}

/// A typed request agrees with its JSON, and its canonical form parses back to it.
fn check_typed(text: &str, value: Option<&Value>, request: &Request) {
    let canonical = canonical(request);
    let Some(Value::Object(fields)) = value else {
        panic!("{text:?}: parsed as {request:?} but is not a JSON object");
    };
    for (key, expected) in canonical.as_object().unwrap() {
        assert_eq!(
            fields.get(key),
            Some(expected),
            "{text:?}: parsed as {request:?}, but its `{key}` says otherwise"
        );
    }
    let again = canonical.to_string();
    for legacy in [NameMsgForm::Refused, NameMsgForm::Accepted] {
        assert_eq!(
            parse(again.as_bytes(), legacy),
            Ok(Incoming::Typed(request.clone())),
            "{text:?} serialized again as {again:?}"
        );
    }
}

/// A legacy message agrees with its JSON, and the server's own form of it parses back
/// to the same name and text.
fn check_name_msg(text: &str, value: Option<&Value>, message: &NameMsg) {
    let Some(Value::Object(fields)) = value else {
        panic!("{text:?}: parsed as a name/msg message but is not a JSON object");
    };
    assert_eq!(fields.get("name"), Some(&json!(message.name)), "{text:?}");
    assert_eq!(fields.get("msg"), Some(&json!(message.msg)), "{text:?}");
    assert!(
        !fields.contains_key("type"),
        "{text:?}: has a `type` and is taken for a name/msg message"
    );
    let again = to_json(&NameMsgReply {
        name: &message.name,
        msg: &message.msg,
    });
    match parse(&again, NameMsgForm::Accepted) {
        Ok(Incoming::NameMsg(parsed)) => {
            assert_eq!(
                (&parsed.name, &parsed.msg),
                (&message.name, &message.msg),
                "{text:?}"
            );
        }
        other => panic!("{text:?}: the server's own form of it parses as {other:?}"),
    }
    assert!(
        matches!(
            parse(&again, NameMsgForm::Refused),
            Err(BadInput::Request(_))
        ),
        "{text:?}: a name/msg message accepted where refused"
    );
}
