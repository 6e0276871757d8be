//! What the chat may send back over UDP, where a datagram's source address is only
//! what its sender wrote on it. Anyone can send the server a datagram that names
//! someone else as its source, so an answer can land on a victim who asked nothing
//! (reflection), and an answer larger than the question multiplies the forger's
//! traffic (amplification). Every datagram the chat sends goes through
//! [`UdpGuard::allow`], which applies the rules below to the answers of the datagram
//! being handled; room traffic to other members is not an answer and passes.
//!
//! - **Non-members get at most 3x.** A source that holds no name has proved nothing,
//!   so everything sent back to it for one datagram is at most [`NON_MEMBER_FACTOR`]
//!   times that datagram's size, as QUIC allows an address it has not validated
//!   (RFC 9000, section 8.1). The room list is for members; errors to non-members are
//!   short, and input that is not a request is not answered at all (two servers
//!   answering each other's errors would never stop).
//! - **Answers per source are rate-limited**: a token bucket of bytes per source
//!   address ([`SourceBuckets`], bounded), for members too, since a forger can take a
//!   name in a victim's name.
//! - **New UDP members are admitted at a rate**, and only while there are fewer than
//!   a maximum: each newcomer speaks in the lobby (a name/msg one does at once), so
//!   a flood of new source ports would otherwise be a flood of room messages.
//! - **The server's own output is not answered** ([`is_own_output`](crate::services::chat::protocol::is_own_output)
//!   and a name/msg member's reflected echo): that is the loop an echo service or a
//!   second chat server makes with a forged source.
//!
//! Each rule counts what it withholds in the chat stats and says so in the log, at
//! most one line per rule every [`LOG_INTERVAL`].

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::bucket::{SourceBuckets, TokenBucket};
use crate::services::chat::engine::LOG_INTERVAL;
use crate::services::chat::{ChatSettings, ChatStatsHandle};
use crate::throttle::Throttle;
use crate::UdpId;

/// A datagram from a non-member gets at most this many times its size back.
pub const NON_MEMBER_FACTOR: usize = 3;
/// A datagram from a name/msg member that repeats, byte for byte, the echo of its own
/// message sent it less than this long ago is that echo coming back (from an echo
/// service or another chat server), not the member speaking again.
pub const REFLECTION_WINDOW: Duration = Duration::from_secs(2);

/// Why a newcomer was not made a UDP member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turned {
    /// More newcomers than `--udp-join-rate` allows came in the last moments.
    Rate,
    /// `--max-udp-members` are members already.
    Full,
}

impl Turned {
    /// The reason given to the newcomer (short: it may be a forged source).
    pub fn reason(self) -> &'static str {
        match self {
            Turned::Rate => "server busy: try again later",
            Turned::Full => "no room for more UDP members: try TCP",
        }
    }
}

impl fmt::Display for Turned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Turned::Rate => "over the join rate",
            Turned::Full => "at the UDP member limit",
        })
    }
}

/// The datagram being handled.
#[derive(Debug, Clone, Copy)]
struct Answering {
    socket: UdpId,
    peer: SocketAddr,
    /// Bytes its source may still be sent; `None` for a member (only the rate applies).
    budget: Option<usize>,
}

/// The UDP rules of the module docs, and their counters and logs.
#[derive(Debug)]
pub struct UdpGuard {
    answering: Option<Answering>,
    /// Bytes of answers per source and second.
    replies: SourceBuckets,
    /// Newcomers per second; `None`: no limit.
    admission: Option<TokenBucket>,
    /// `--udp-join-rate`, for the bucket made on first use.
    join_rate: u32,
    max_members: usize,
    stats: ChatStatsHandle,
    withheld_log: Throttle,
    limited_log: Throttle,
    turned_log: Throttle,
    reflected_log: Throttle,
}

impl UdpGuard {
    /// The rules with the limits of `settings`, counting into `stats`.
    pub fn new(settings: &ChatSettings, stats: ChatStatsHandle) -> Self {
        let rate = settings.udp_reply_rate as f64;
        UdpGuard {
            answering: None,
            replies: SourceBuckets::new(rate, 2.0 * rate, settings.udp_reply_sources),
            admission: None,
            join_rate: settings.udp_join_rate,
            max_members: settings.max_udp_members,
            stats,
            withheld_log: Throttle::new(LOG_INTERVAL),
            limited_log: Throttle::new(LOG_INTERVAL),
            turned_log: Throttle::new(LOG_INTERVAL),
            reflected_log: Throttle::new(LOG_INTERVAL),
        }
    }

    /// Starts handling a datagram of `len` bytes from `peer`; `member` if its source
    /// holds a name. Until [`UdpGuard::end`], what is sent to `peer` is an answer.
    pub fn begin(&mut self, socket: UdpId, peer: SocketAddr, len: usize, member: bool) {
        self.answering = Some(Answering {
            socket,
            peer,
            budget: (!member).then(|| len.saturating_mul(NON_MEMBER_FACTOR)),
        });
    }

    /// The datagram is handled: what follows answers nobody.
    pub fn end(&mut self) {
        self.answering = None;
    }

    /// Whether a datagram of `len` bytes may be sent to `peer` now: false if it is an
    /// answer the rules withhold (counted and logged here).
    pub fn allow(&mut self, now: Instant, socket: UdpId, peer: SocketAddr, len: usize) -> bool {
        if let Some(answering) = self
            .answering
            .as_mut()
            .filter(|a| a.socket == socket && a.peer == peer)
        {
            if let Some(budget) = answering.budget.as_mut() {
                if len > *budget {
                    self.withheld(now, peer, len);
                    return false;
                }
                *budget -= len;
            }
            if !self.replies.take(peer.ip(), len as f64, now) {
                self.stats.count_rate_limited();
                if let Some(count) = self.limited_log.note(now) {
                    log::warn!(
                        "chat: {peer} asked for more than --udp-reply-rate allows: \
                         {count} answers not sent since the last such line"
                    );
                }
                return false;
            }
        }
        true
    }

    /// Counts a datagram from a non-member left unanswered (not a request, or its
    /// answer would be too large), and logs it now and then.
    pub fn unanswered(&mut self, now: Instant, peer: SocketAddr) {
        self.withheld(now, peer, 0);
    }

    fn withheld(&mut self, now: Instant, peer: SocketAddr, bytes: usize) {
        self.stats.count_unanswered();
        if let Some(count) = self.withheld_log.note(now) {
            let what = match bytes {
                0 => "not a request".to_string(),
                n => format!("an answer of {n} bytes, over {NON_MEMBER_FACTOR}x its size"),
            };
            log::warn!(
                "chat: not answering {peer}, not a member ({what}); \
                 {count} datagrams from non-members unanswered since the last such line"
            );
        }
    }

    /// Whether a newcomer may become a UDP member now, `members` being the UDP members
    /// there are. A refusal is counted and logged now and then.
    pub fn admit(&mut self, now: Instant, peer: SocketAddr, members: usize) -> Result<(), Turned> {
        let turned = if members >= self.max_members {
            Some(Turned::Full)
        } else if self.join_rate == 0 {
            None
        } else {
            let rate = f64::from(self.join_rate);
            let bucket = self
                .admission
                .get_or_insert_with(|| TokenBucket::new(rate, rate, now));
            (!bucket.take(1.0, now)).then_some(Turned::Rate)
        };
        let Some(turned) = turned else {
            return Ok(());
        };
        self.stats.count_turned_away();
        if let Some(count) = self.turned_log.note(now) {
            log::warn!(
                "chat: not making {peer} a UDP member, {turned} (a flood of new source \
                 addresses?); {count} newcomers turned away since the last such line"
            );
        }
        Err(turned)
    }

    /// Counts a datagram dropped because it is the server's own output coming back,
    /// and logs it now and then.
    pub fn reflected(&mut self, now: Instant, peer: SocketAddr) {
        self.stats.count_reflection();
        if let Some(count) = self.reflected_log.note(now) {
            log::warn!(
                "chat: {peer} sent back what the server sent it (an echo service, or \
                 another chat server, given a forged source?): not answered; {count} \
                 such datagrams since the last such line"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newcomers_are_admitted_at_the_join_rate_and_up_to_the_limit() {
        let settings = ChatSettings {
            udp_join_rate: 10,
            max_udp_members: 15,
            ..ChatSettings::default()
        };
        let mut guard = UdpGuard::new(&settings, ChatStatsHandle::default());
        let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let t0 = Instant::now();
        let admitted = (0..100)
            .filter(|&n| guard.admit(t0, peer, n).is_ok())
            .count();
        assert_eq!(admitted, 10, "a burst of the rate");
        assert_eq!(guard.admit(t0, peer, 10), Err(Turned::Rate));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(guard.admit(t1, peer, 15), Err(Turned::Full));
        assert_eq!(guard.admit(t1, peer, 14), Ok(()));
        assert_eq!(guard.stats.get().udp_turned_away, 92);
    }
}
