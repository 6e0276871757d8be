//! How the chat's connections are framed, per endpoint: members over TCP and Unix
//! sockets send length-prefixed frames, WebSocket members (feature `ws`) speak the
//! WebSocket protocol, and the link to Redis (feature `redis`) is a plain stream the
//! link reads itself. One codec type for the three, as a service with endpoints of
//! several kinds declares its own (the set of codecs is open: see [`crate::Codec`]).

use crate::buffer::Buffer;
use crate::frame::{Codec, Decode, FrameError, Scan};
#[cfg(feature = "ws")]
use crate::protocol::websocket::{WebSocketCodec, WsState};
use crate::protocol::ProtocolIo;
use crate::{LengthCodec, RawCodec};

/// The chat's codec for one endpoint.
#[derive(Debug, Clone)]
pub enum ChatCodec {
    /// Members' length-prefixed frames (switchboard's wire format).
    Length(LengthCodec),
    /// A plain stream (the link to Redis).
    Raw(RawCodec),
    /// WebSocket members and the chat page.
    #[cfg(feature = "ws")]
    WebSocket(WebSocketCodec),
}

impl ChatCodec {
    /// Members' frames of at most `max_frame` bytes.
    pub fn length(max_frame: usize) -> ChatCodec {
        ChatCodec::Length(LengthCodec::new(max_frame))
    }
}

/// What one connection's codec remembers: a WebSocket's phase and partial message
/// (the other codecs keep nothing).
#[derive(Debug, Clone, Default)]
pub struct ChatCodecState {
    #[cfg(feature = "ws")]
    ws: WsState,
}

impl Codec for ChatCodec {
    type State = ChatCodecState;

    #[inline]
    fn decode(&self, _: &mut ChatCodecState, buf: &[u8]) -> Result<Decode, FrameError> {
        match self {
            ChatCodec::Length(codec) => codec.decode(&mut (), buf),
            ChatCodec::Raw(codec) => codec.decode(&mut (), buf),
            #[cfg(feature = "ws")]
            ChatCodec::WebSocket(codec) => codec.decode(&mut WsState::default(), buf),
        }
    }

    fn encode(&self, payload: &[u8], out: &mut Buffer) -> Result<(), FrameError> {
        match self {
            ChatCodec::Length(codec) => codec.encode(payload, out),
            ChatCodec::Raw(codec) => codec.encode(payload, out),
            #[cfg(feature = "ws")]
            ChatCodec::WebSocket(codec) => codec.encode(payload, out),
        }
    }

    #[inline]
    fn scan(&self, _: &mut ChatCodecState, buf: &[u8]) -> Scan {
        match self {
            ChatCodec::Length(codec) => codec.scan(&mut (), buf),
            ChatCodec::Raw(codec) => codec.scan(&mut (), buf),
            #[cfg(feature = "ws")]
            ChatCodec::WebSocket(codec) => codec.scan(&mut WsState::default(), buf),
        }
    }

    fn error_reply(&self, error: &FrameError, out: &mut Buffer) {
        match self {
            ChatCodec::Length(codec) => codec.error_reply(error, out),
            ChatCodec::Raw(codec) => codec.error_reply(error, out),
            #[cfg(feature = "ws")]
            ChatCodec::WebSocket(codec) => codec.error_reply(error, out),
        }
    }

    const PROTOCOL: bool = cfg!(feature = "ws");

    #[inline]
    fn is_protocol(&self) -> bool {
        match self {
            #[cfg(feature = "ws")]
            ChatCodec::WebSocket(_) => true,
            _ => false,
        }
    }

    fn process(
        &self,
        state: &mut ChatCodecState,
        buf: &mut [u8],
        io: &mut ProtocolIo<'_>,
    ) -> Result<Decode, FrameError> {
        match self {
            #[cfg(feature = "ws")]
            ChatCodec::WebSocket(codec) => codec.process(&mut state.ws, buf, io),
            _ => {
                let _ = io;
                self.decode(state, buf)
            }
        }
    }
}
