//! The chat test servers and their counters, shared by `tests/chat.rs` and
//! `tests/chat_hostile.rs` (each includes this with `mod chat_support;`, after
//! `mod common;`).

#[allow(dead_code)]
pub mod cluster;
pub mod members;

use switchboard::services::chat::{Chat, ChatCodec, ChatSettings, ChatStats, ChatStatsHandle};
use switchboard::Config;

use crate::common::{local_config, wait_until, ClockedServer, TestServer, IO_TIMEOUT};

/// Largest frame the test servers accept.
pub const MAX_FRAME: usize = 64 * 1024;

/// A chat server with `settings` on a thread of this process, and a handle on its
/// counters.
pub fn start(config: Config, settings: ChatSettings) -> (TestServer<Chat>, ChatStatsHandle) {
    let stats = ChatStatsHandle::default();
    let counters = stats.clone();
    let server = TestServer::start(config, move || {
        (
            Chat::with_stats(settings, counters),
            ChatCodec::length(MAX_FRAME),
        )
    });
    (server, stats)
}

/// The same on 127.0.0.1 and a clock that only the test moves, so timed rules (UDP
/// expiry, reply and join rates) are measured exactly, without sleeping.
pub fn start_clocked(settings: ChatSettings) -> (ClockedServer<Chat>, ChatStatsHandle) {
    let stats = ChatStatsHandle::default();
    let counters = stats.clone();
    let server = ClockedServer::start(local_config(), move || {
        (
            Chat::with_stats(settings, counters),
            ChatCodec::length(MAX_FRAME),
        )
    });
    (server, stats)
}

/// The service updates its counters after it has sent what it counts, so a member can
/// hold a message a moment before the count includes it: waits (at most
/// `IO_TIMEOUT`) for the counters to satisfy `condition`, fails the test if they
/// never do, and returns them as last read.
#[track_caller]
pub fn stats_when(stats: &ChatStatsHandle, condition: impl Fn(&ChatStats) -> bool) -> ChatStats {
    let met = wait_until(IO_TIMEOUT, || condition(&stats.get()));
    assert!(met, "the chat counters never got there: {:?}", stats.get());
    stats.get()
}
