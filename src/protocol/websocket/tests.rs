//! The codec driven the way the reactor drives it (append what arrived, process every
//! complete unit from the start, keep the rest), with golden bytes from RFC 6455.

use super::*;

/// What the codec did with a stream: the units handed over (kind, payload), the
/// replies, and how it ended.
#[derive(Debug, Default)]
struct Run {
    units: Vec<(u32, Vec<u8>)>,
    replies: Vec<u8>,
    closed: bool,
    error: Option<FrameError>,
}

/// Feeds `wire` in chunks of `chunk` bytes to a fresh connection of `codec`, with
/// `room` for replies.
fn run(codec: &WebSocketCodec, wire: &[u8], chunk: usize, room: usize) -> Run {
    let mut run = Run::default();
    let mut state = WsState::default();
    let mut input = Buffer::new();
    let mut replies = Buffer::new();
    let mut parts = Vec::new();
    for piece in wire.chunks(chunk.max(1)) {
        input.extend_from_slice(piece);
        loop {
            if input.is_empty() || run.closed || run.error.is_some() {
                break;
            }
            let mut io = ProtocolIo::new(&mut replies, &mut parts).with_room(room);
            match codec.process(&mut state, input.readable_mut(), &mut io) {
                Ok(Decode::Frame { payload, consumed }) => {
                    run.closed = io.closing();
                    if let Some((kind, _)) = io.finish(0) {
                        run.units.push((kind, input.readable()[payload].to_vec()));
                    }
                    input.consume(consumed);
                }
                Ok(Decode::Incomplete { .. }) => break,
                Err(e) => run.error = Some(e),
            }
        }
    }
    run.replies = replies.readable().to_vec();
    run
}

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

fn codec() -> WebSocketCodec {
    WebSocketCodec::new("/ws", 1024)
        .with_page("<p>page</p>")
        .text_only()
}

fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1, 2, 3, 4];
    let mut out = vec![
        opcode | if fin { 0x80 } else { 0 },
        0x80 | payload.len() as u8,
    ];
    out.extend_from_slice(&mask);
    let mut masked = payload.to_vec();
    unmask(&mut masked, mask);
    out.extend(masked);
    out
}

/// The replies after the 101.
fn after_upgrade(run: &Run) -> &[u8] {
    let text = String::from_utf8_lossy(&run.replies);
    let end = text.find("\r\n\r\n").expect("a 101") + 4;
    &run.replies[end..]
}

/// The close code of the close frame at the start of `frame`, `None` for an empty
/// close.
fn close_code(frame: &[u8]) -> Option<u16> {
    assert_eq!(frame[0], 0x88, "a close frame: {frame:?}");
    (frame[1] >= 2).then(|| u16::from_be_bytes([frame[2], frame[3]]))
}

#[test]
fn the_upgrade_answers_the_rfc_example_key_and_opens() {
    let run = run(&codec(), UPGRADE, usize::MAX, usize::MAX);
    let answer = String::from_utf8_lossy(&run.replies);
    // The RFC's own example key and accept value.
    assert!(
        answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert_eq!(run.units, vec![(OPEN, vec![])]);
}

#[test]
fn fragments_make_one_message_however_the_bytes_are_split() {
    let mut wire = UPGRADE.to_vec();
    wire.extend(client_frame(false, 0x1, br#"{"type":"#));
    wire.extend(client_frame(true, 0x9, b"hi")); // a ping between fragments
    wire.extend(client_frame(true, 0x0, br#""ping"}"#));
    wire.extend(client_frame(true, 0x1, b"next"));
    for chunk in 1..=wire.len() {
        let run = run(&codec(), &wire, chunk, usize::MAX);
        assert_eq!(
            run.units,
            vec![
                (OPEN, vec![]),
                (TEXT, br#"{"type":"ping"}"#.to_vec()),
                (TEXT, b"next".to_vec()),
            ],
            "chunks of {chunk}"
        );
        assert_eq!(after_upgrade(&run), [0x8a, 2, b'h', b'i'], "one pong");
    }
}

#[test]
fn violations_close_with_their_codes() {
    let long = [b'x'; 100];
    let mut too_large = Vec::new();
    for _ in 0..11 {
        too_large.extend(client_frame(
            false,
            if too_large.is_empty() { 0x1 } else { 0x0 },
            &long,
        ));
    }
    for (frames, code) in [
        (client_frame(true, 0x2, b"bin"), 1003u16),
        (client_frame(true, 0x0, b"cont"), 1002),
        (client_frame(true, 0x3, b"resv"), 1002),
        (client_frame(true, 0x1, &[0xff, 0xfe]), 1007),
        (vec![0x81, 0x02, b'h', b'i'], 1002), // unmasked
        (client_frame(false, 0x9, b"frag ping"), 1002),
        (too_large, 1009),
    ] {
        let mut wire = UPGRADE.to_vec();
        wire.extend(frames);
        let run = run(&codec(), &wire, usize::MAX, usize::MAX);
        assert!(run.error.is_some(), "{code}");
        assert_eq!(close_code(after_upgrade(&run)), Some(code));
    }
}

#[test]
fn lengths_from_the_wire_cannot_overflow() {
    for length in [u64::MAX, 1 << 63, (1 << 32) + 1] {
        let mut wire = UPGRADE.to_vec();
        // A fragment first, so the announced length adds to what was assembled.
        wire.extend(client_frame(false, 0x1, b"part"));
        wire.extend_from_slice(&[0x80, 0x80 | 127]);
        wire.extend_from_slice(&length.to_be_bytes());
        wire.extend_from_slice(&[1, 2, 3, 4]);
        let run = run(&codec(), &wire, usize::MAX, usize::MAX);
        assert!(run.error.is_some(), "{length}");
        assert!(matches!(close_code(after_upgrade(&run)), Some(1009 | 1002)));
    }
}

#[test]
fn close_codes_are_checked_as_rfc_6455_section_7_4_says() {
    let close = |payload: &[u8]| {
        let mut wire = UPGRADE.to_vec();
        wire.extend(client_frame(true, 0x8, payload));
        wire.extend(client_frame(true, 0x1, b"after the close: ignored"));
        let run = run(&codec(), &wire, usize::MAX, usize::MAX);
        assert_eq!(run.units.len(), 1, "nothing after the close");
        close_code(after_upgrade(&run))
    };
    // Codes that may be sent are echoed; an empty close gets an empty close.
    for code in [1000u16, 1001, 1003, 1007, 1011, 1012, 1013, 3000, 4999] {
        assert_eq!(close(&code.to_be_bytes()), Some(code), "{code}");
    }
    assert_eq!(close(b""), None);
    let mut with_reason = 1000u16.to_be_bytes().to_vec();
    with_reason.extend_from_slice("au revoir, ça va".as_bytes());
    assert_eq!(close(&with_reason), Some(1000));
    // Codes that must never be sent, reserved or undefined ones: 1002.
    for code in [
        0u16, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, 65535,
    ] {
        assert_eq!(close(&code.to_be_bytes()), Some(1002), "{code}");
    }
    // A code of one byte: 1002. A reason that is not UTF-8: 1007.
    assert_eq!(close(&[0x03]), Some(1002));
    assert_eq!(close(&[0x03, 0xe8, 0xff, 0xfe]), Some(1007));
}

#[test]
fn a_head_over_the_limit_is_refused_however_it_arrives() {
    let padding = "x".repeat(64 * 1024);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         X-Padding: {padding}\r\n\r\n"
    );
    for chunk in [request.len(), 1000, 7] {
        let run = run(&codec(), request.as_bytes(), chunk, usize::MAX);
        assert!(
            run.replies.starts_with(b"HTTP/1.1 431"),
            "chunks of {chunk}"
        );
        assert!(run.units.is_empty());
    }
}

#[test]
fn requests_other_than_the_upgrade_are_answered_and_closed() {
    for (request, status) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "200 OK"),
        (b"GET /nope HTTP/1.1\r\n\r\n", "404"),
        (b"POST /ws HTTP/1.1\r\n\r\n", "405"),
        (
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "426",
        ),
        (b"NOT HTTP\r\n\r\n", "400"),
    ] {
        let run = run(&codec(), request, usize::MAX, usize::MAX);
        let answer = String::from_utf8_lossy(&run.replies);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(run.closed || run.error.is_some());
        assert!(run.units.is_empty());
    }
}

#[test]
fn pings_are_answered_only_while_the_output_has_room() {
    let mut wire = UPGRADE.to_vec();
    for _ in 0..100 {
        wire.extend(client_frame(true, 0x9, &[b'p'; 100]));
    }
    let room = 129 + 5 * 102;
    let run = run(&codec(), &wire, usize::MAX, room);
    // The 101 (129 bytes), then as many pongs as fit.
    assert_eq!(run.replies.len(), room);
    assert!(run.units.len() == 1 && run.error.is_none());
}
