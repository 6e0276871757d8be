//! Handing accepted connections from one loop to another: the alternative to one
//! `SO_REUSEPORT` listener per loop (see [`crate::reactor::Spread`] and
//! docs/scaling.md).
//!
//! With [`Spread::Handoff`](crate::reactor::Spread::Handoff) only the first loop
//! listens. It accepts as usual and deals the new sockets round robin over every loop,
//! itself included: a socket for another loop goes into that loop's bounded handover
//! queue, and its waker wakes it; that loop registers the socket with its own `Poll`
//! exactly as if it had accepted it. A full queue is never waited on: the connection is
//! served by the accepting loop instead, and counted (`Stats::handover_full`).

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use super::handle::Shared;
use crate::connection::Stream;
use crate::endpoint::EndpointId;

/// An accepted connection on its way to another loop.
pub(crate) struct Arrival {
    pub stream: Stream,
    /// The listener it came in on, by the accepting loop's endpoint id (every loop of a
    /// pool numbers its listener endpoints alike).
    pub endpoint: EndpointId,
}

/// Another loop that accepted connections may be handed to.
pub(crate) struct Recipient {
    pub queue: SyncSender<Arrival>,
    pub shared: Arc<Shared>,
}

/// A loop's end of the handover: the queue others fill, and, on the accepting loop,
/// the loops it deals to.
pub(crate) struct Handover {
    pub receiver: Receiver<Arrival>,
    pub sender: SyncSender<Arrival>,
    /// The loops to deal to, this one as `None`, in pool order; empty: keep every
    /// connection.
    recipients: Vec<Option<Recipient>>,
    /// Whose turn it is.
    next: usize,
}

/// What became of a connection offered to [`Handover::deal`].
pub(crate) enum Dealt {
    /// Another loop has it.
    Passed,
    /// This loop serves it: its turn, or the recipient's queue was full.
    Kept(Stream, KeptBecause),
}

/// Why a dealt connection stayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeptBecause {
    /// It was this loop's turn (or it deals to nobody).
    Turn,
    /// The recipient's queue was full (or it has stopped).
    Full,
}

impl Handover {
    /// A handover queue of `capacity` connections; 0 for a loop that is never dealt
    /// any (a lone reactor, loop 0, or a loop with a listener of its own).
    pub fn new(capacity: usize) -> Self {
        let (sender, receiver) = std::sync::mpsc::sync_channel(capacity);
        Handover {
            receiver,
            sender,
            recipients: Vec::new(),
            next: 0,
        }
    }

    /// Makes this loop deal accepted connections over `recipients` (`None` for itself).
    pub fn deal_to(&mut self, recipients: Vec<Option<Recipient>>) {
        self.recipients = recipients;
    }

    /// Offers one accepted connection to the loop whose turn it is.
    pub fn deal(&mut self, stream: Stream, endpoint: EndpointId) -> Dealt {
        if self.recipients.is_empty() {
            return Dealt::Kept(stream, KeptBecause::Turn);
        }
        let turn = self.next;
        self.next = (self.next + 1) % self.recipients.len();
        let Some(recipient) = &self.recipients[turn] else {
            return Dealt::Kept(stream, KeptBecause::Turn);
        };
        match recipient.queue.try_send(Arrival { stream, endpoint }) {
            Ok(()) => {
                if let Err(e) = recipient.shared.waker.wake() {
                    log::error!("cannot wake the loop a connection was handed to: {e}");
                }
                Dealt::Passed
            }
            Err(TrySendError::Full(arrival) | TrySendError::Disconnected(arrival)) => {
                Dealt::Kept(arrival.stream, KeptBecause::Full)
            }
        }
    }
}
