//! What a chat run's texts carry, and how every member checks every sender's order.
//!
//! Several runs (processes, machines) may share one room, so a text names its sender
//! and carries what a member of any run needs to check and time it:
//!
//! ```text
//!   RUN.S:SEQ:MICROS:xxxx…   message SEQ of sender S of run RUN, sent at MICROS
//!                            (UNIX time, microseconds), padded with x to --size
//!   RUN.S:COUNT:end          sender S's last word: it published COUNT messages
//!   RUN:ready:SENDERS        run RUN has all its members in the room, and SENDERS
//!                            senders (only when runs wait for each other: --runs)
//! ```
//!
//! A room delivers each sender's messages in the order it sent them, so each member
//! expects from every sender SEQ 0, 1, 2, …: a number above the one expected is a gap
//! (the numbers skipped were lost), one below it a reorder (late or duplicated). The
//! end text's COUNT also reveals a loss of the last messages. A member expects this
//! run's own senders from 0 (it joined before they began); a sender of another run is
//! checked from the first number the member sees of it, since the member may have
//! joined after that sender began.
//!
//! The wall-clock stamp makes latency measurable across processes, within the
//! agreement of their clocks (one machine: exact; several: NTP's error).

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// A chat text of a bench run, parsed (borrowing from the frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text<'a> {
    /// A message.
    Data {
        /// Who sent it: `RUN.S`.
        sender: &'a str,
        /// Its number in its sender's sequence, from 0.
        seq: u64,
        /// When it was sent: UNIX time in microseconds.
        sent_us: u64,
    },
    /// A sender's last word.
    End {
        /// Who sent it.
        sender: &'a str,
        /// How many messages it published.
        count: u64,
    },
    /// A run has all its members in the room.
    Ready {
        /// The run.
        run: &'a str,
        /// How many senders it has.
        senders: usize,
    },
}

impl<'a> Text<'a> {
    /// Reads a text; `None` for one no bench run wrote.
    pub fn parse(text: &'a str) -> Option<Text<'a>> {
        let mut parts = text.splitn(4, ':');
        let first = parts.next()?;
        let second = parts.next()?;
        let third = parts.next()?;
        if second == "ready" {
            let senders = third.parse().ok()?;
            return Some(Text::Ready {
                run: first,
                senders,
            });
        }
        let number = second.parse().ok()?;
        if third == "end" {
            return Some(Text::End {
                sender: first,
                count: number,
            });
        }
        parts.next()?;
        Some(Text::Data {
            sender: first,
            seq: number,
            sent_us: third.parse().ok()?,
        })
    }
}

/// Appends message `seq` of sender `s` of `run`, stamped `sent_us` and padded with `x`
/// to `size` bytes of text.
pub fn write_data(
    out: &mut Vec<u8>,
    run: &str,
    s: usize,
    seq: u64,
    sent_us: u64,
    size: usize,
) -> io::Result<()> {
    let start = out.len();
    write!(out, "{run}.{s}:{seq}:{sent_us}:")?;
    let pad = size.saturating_sub(out.len() - start);
    out.resize(out.len() + pad, b'x');
    Ok(())
}

/// Appends sender `s` of `run`'s last word: it published `count` messages.
pub fn write_end(out: &mut Vec<u8>, run: &str, s: usize, count: u64) -> io::Result<()> {
    write!(out, "{run}.{s}:{count}:end")
}

/// Appends `run`'s announcement: all its members are in, and it has `senders` senders.
pub fn write_ready(out: &mut Vec<u8>, run: &str, senders: usize) -> io::Result<()> {
    write!(out, "{run}:ready:{senders}")
}

/// Now, as UNIX time in microseconds (the stamp in every message).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Every sender heard of, numbered: this run's own senders are 0 .. own, the others
/// get the next number when a member first hears of them.
#[derive(Debug)]
pub struct Senders {
    /// This run's id.
    run: String,
    /// How many senders this run has.
    own: usize,
    /// Senders of other runs, by id.
    others: HashMap<Box<str>, usize>,
}

impl Senders {
    /// This run's `own` senders, none other heard of yet.
    pub fn new(run: &str, own: usize) -> Self {
        Senders {
            run: run.to_string(),
            own,
            others: HashMap::new(),
        }
    }

    /// The number of sender `id`, given one if it is new. This run's own senders are
    /// found without a lookup.
    pub fn slot(&mut self, id: &str) -> usize {
        let own = id
            .strip_prefix(self.run.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|index| index.parse::<usize>().ok())
            .filter(|s| *s < self.own);
        if let Some(s) = own {
            return s;
        }
        if let Some(&slot) = self.others.get(id) {
            return slot;
        }
        let slot = self.own + self.others.len();
        self.others.insert(id.into(), slot);
        slot
    }

    /// True for this run's own senders.
    pub fn is_own(&self, slot: usize) -> bool {
        slot < self.own
    }

    /// Senders heard of, this run's included.
    pub fn len(&self) -> usize {
        self.own + self.others.len()
    }
}

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The number expected.
    InOrder,
    /// The first number seen from a sender checked from where the member came in.
    First,
    /// This many numbers were skipped: lost.
    Gap(u64),
    /// A number below the one expected: late, or a duplicate.
    Reorder,
}

/// A member's expectations: the next number due from each sender.
#[derive(Debug, Clone)]
pub struct Expect {
    /// By sender number; [`UNSEEN`] until a sender of another run is first heard.
    next: Vec<u64>,
}

/// A sender this member has not heard from yet.
const UNSEEN: u64 = u64::MAX;

impl Expect {
    /// Expects message 0 from each of a run's `own` senders.
    pub fn new(own: usize) -> Self {
        Expect { next: vec![0; own] }
    }

    /// The number due next from sender `slot`, if it has been heard from.
    pub fn next(&self, slot: usize) -> Option<u64> {
        self.next.get(slot).copied().filter(|n| *n != UNSEEN)
    }

    fn entry(&mut self, slot: usize) -> &mut u64 {
        if slot >= self.next.len() {
            self.next.resize(slot + 1, UNSEEN);
        }
        &mut self.next[slot]
    }

    /// Message `seq` from sender `slot` has arrived. Returns the verdict and how many
    /// numbers it settled (1 in order, more past a gap, 0 for a reorder).
    pub fn check(&mut self, slot: usize, seq: u64) -> (Verdict, u64) {
        self.advance(slot, seq, seq.saturating_add(1))
    }

    /// Sender `slot` says it published `count` messages: any not seen are lost.
    pub fn check_end(&mut self, slot: usize, count: u64) -> (Verdict, u64) {
        match self.next(slot) {
            Some(next) if count < next => (Verdict::Reorder, 0),
            _ => self.advance(slot, count, count),
        }
    }

    /// Number `seq` seen; the next due becomes `then`.
    fn advance(&mut self, slot: usize, seq: u64, then: u64) -> (Verdict, u64) {
        let next = self.entry(slot);
        if *next == UNSEEN {
            *next = then;
            return (Verdict::First, 0);
        }
        if seq < *next {
            return (Verdict::Reorder, 0);
        }
        let settled = then - *next;
        let verdict = match seq - *next {
            0 => Verdict::InOrder,
            skipped => Verdict::Gap(skipped),
        };
        *next = then;
        (verdict, settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_round_trip() {
        let mut out = Vec::new();
        write_data(&mut out, "r1", 2, 17, 1_700_000_000_000_000, 40).unwrap();
        assert_eq!(out.len(), 40);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("r1.2:17:1700000000000000:x"), "{text}");
        assert_eq!(
            Text::parse(text),
            Some(Text::Data {
                sender: "r1.2",
                seq: 17,
                sent_us: 1_700_000_000_000_000
            })
        );
        out.clear();
        write_end(&mut out, "r1", 2, 18).unwrap();
        let end = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            Text::parse(end),
            Some(Text::End {
                sender: "r1.2",
                count: 18
            })
        );
        out.clear();
        write_ready(&mut out, "r1", 3).unwrap();
        let ready = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            Text::parse(ready),
            Some(Text::Ready {
                run: "r1",
                senders: 3
            })
        );
        assert_eq!(Text::parse("hello there"), None);
        assert_eq!(Text::parse("a.1:x:5:"), None);
    }

    #[test]
    fn a_skipped_number_is_a_gap_and_a_lower_one_a_reorder() {
        let mut expect = Expect::new(2);
        assert_eq!(expect.check(0, 0), (Verdict::InOrder, 1));
        assert_eq!(expect.check(0, 1), (Verdict::InOrder, 1));
        // 2 and 3 never came.
        assert_eq!(expect.check(0, 4), (Verdict::Gap(2), 3));
        assert_eq!(expect.check(0, 5), (Verdict::InOrder, 1));
        // 3 comes late: a reorder, and it does not move the expectation back.
        assert_eq!(expect.check(0, 3), (Verdict::Reorder, 0));
        assert_eq!(expect.next(0), Some(6));
        // The other sender is untouched, and checked from 0.
        assert_eq!(expect.check(1, 1), (Verdict::Gap(1), 2));
    }

    #[test]
    fn another_runs_sender_is_checked_from_the_first_number_seen() {
        let mut expect = Expect::new(1);
        assert_eq!(expect.next(5), None);
        assert_eq!(expect.check(5, 40), (Verdict::First, 0));
        assert_eq!(expect.check(5, 41), (Verdict::InOrder, 1));
        assert_eq!(expect.check(5, 43), (Verdict::Gap(1), 2));
    }

    #[test]
    fn the_end_text_reveals_lost_last_messages() {
        let mut expect = Expect::new(1);
        expect.check(0, 0);
        expect.check(0, 1);
        assert_eq!(expect.check_end(0, 2), (Verdict::InOrder, 0));
        let mut short = Expect::new(1);
        short.check(0, 0);
        // The sender published 3: numbers 1 and 2 are lost.
        assert_eq!(short.check_end(0, 3), (Verdict::Gap(2), 2));
        let mut over = Expect::new(1);
        over.check(0, 0);
        over.check(0, 1);
        assert_eq!(over.check_end(0, 1), (Verdict::Reorder, 0));
    }

    #[test]
    fn senders_are_numbered_own_first_then_as_heard() {
        let mut senders = Senders::new("ab", 2);
        assert_eq!(senders.slot("ab.1"), 1);
        assert_eq!(senders.slot("cd.0"), 2);
        assert_eq!(senders.slot("ab.7"), 3, "not one of ours: --senders is 2");
        assert_eq!(senders.slot("cd.0"), 2);
        assert_eq!(senders.slot("abc.0"), 4);
        assert!(senders.is_own(1) && !senders.is_own(2));
        assert_eq!(senders.len(), 5);
    }
}
