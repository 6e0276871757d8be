//! The `handshakes` workload (`--mode handshakes --tls`): `conns` connections at a
//! time, each dialled, taken through its TLS handshake and closed, and replaced by a
//! new one as soon as it has closed. What a run counts is handshakes: one per
//! connection, timed from its TCP connect to the end of its handshake.
//!
//! ```text
//!   dial ──> TCP up ──> handshake done (counted) ──> close_notify + FIN
//!        ──> the server's close ──> dial the next
//! ```
//!
//! A connection closes as a client ends a short session: it shuts its side once the
//! handshake is done and reads until the server closes, so the server finishes its
//! part of the handshake (it reads the client's Finished, sends its session tickets)
//! and sees an orderly close. The client closed first, so it is the client's port that
//! stays in TIME_WAIT for a minute: Linux reuses such ports for new connections on
//! loopback (`net.ipv4.tcp_tw_reuse` = 2, its default), and `--src-ips` spreads the
//! connections over more addresses, each with its own ~28,000 ports.

/// The handshakes workload's count of its connections.
#[derive(Debug)]
pub struct HandshakeWork {
    /// Connections to keep going at once.
    slots: usize,
    /// Connections dialled and not yet closed.
    open: usize,
    /// Of those, the ones still connecting or handshaking.
    handshaking: u64,
    /// The number of the next connection (it picks the server and source address).
    next: usize,
    /// No new connection from now on.
    stopped: bool,
}

impl HandshakeWork {
    /// `slots` connections at a time.
    pub fn new(slots: usize) -> Self {
        HandshakeWork {
            slots,
            open: 0,
            handshaking: 0,
            next: 0,
            stopped: true,
        }
    }

    /// From now on, keeps `slots` connections going.
    pub fn begin(&mut self) {
        self.stopped = false;
    }

    /// The number of the next connection to dial, while one more is wanted.
    pub fn want(&mut self) -> Option<usize> {
        if self.stopped || self.open >= self.slots {
            return None;
        }
        let number = self.next;
        self.next += 1;
        Some(number)
    }

    /// A connection was dialled.
    pub fn dialled(&mut self) {
        self.open += 1;
        self.handshaking += 1;
    }

    /// A connection's handshake is done (it closes next).
    pub fn shaken(&mut self) {
        self.handshaking -= 1;
    }

    /// A connection closed; `handshaking`: before its handshake was done (it failed).
    pub fn closed(&mut self, handshaking: bool) {
        self.open -= 1;
        if handshaking {
            self.handshaking -= 1;
        }
    }

    /// Dials nothing new from now on.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Handshakes under way.
    pub fn outstanding(&self) -> u64 {
        self.handshaking
    }

    /// Connections dialled and not closed.
    pub fn open(&self) -> usize {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_its_slots_full_until_stopped() {
        let mut work = HandshakeWork::new(2);
        assert_eq!(work.want(), None, "nothing before the load begins");
        work.begin();
        let mut dialled = Vec::new();
        while let Some(number) = work.want() {
            work.dialled();
            dialled.push(number);
        }
        assert_eq!(dialled, [0, 1]);
        work.shaken();
        assert_eq!((work.outstanding(), work.open()), (1, 2));
        work.closed(false);
        assert_eq!(work.want(), Some(2), "a closed one is replaced");
        work.dialled();
        work.stop();
        work.closed(true);
        assert_eq!(work.want(), None);
        assert_eq!((work.outstanding(), work.open()), (1, 1));
    }
}
