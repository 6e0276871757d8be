//! The way into a running loop from other threads: a [`Handle`] posts jobs into the
//! loop's bounded inbox and wakes it through its `mio::Waker`, or asks it to stop.
//!
//! The inbox is bounded: a full inbox fails the post at once ([`PostError::Full`])
//! instead of blocking the poster or growing without limit, so a flood from outside
//! cannot stall or exhaust the loop. The loop runs at most a budget of jobs per turn,
//! then serves its sockets before taking more.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use mio::Waker;

use crate::context::Context;
use crate::service::Service;

/// A job for the loop: runs on the loop's thread with the service and a context.
pub type Job<S> = Box<dyn FnOnce(&mut S, &mut Context<'_, S>) + Send>;

/// What the loop and its handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// A post has woken the loop and the loop has not read its inbox since: further
    /// posts need not wake it again (one `eventfd` write saved per post in a burst).
    pub wake_pending: AtomicBool,
    /// A graceful shutdown was asked for.
    pub stop: AtomicBool,
    /// Stop at once: close everything without waiting for output to drain.
    pub stop_now: AtomicBool,
    /// Wakes the loop out of `poll`.
    pub waker: Waker,
    /// The loop's counters as of its last turn, for the admin endpoint of a pool's
    /// loop 0 (published only when a pool has one).
    pub counters: std::sync::Mutex<crate::stats::Stats>,
}

/// Reaches a running reactor from any thread: post work into its loop, or stop it.
///
/// ```no_run
/// # use switchboard::{Config, LengthCodec, Reactor, services::Echo};
/// # let mut config = Config::default();
/// # config.tcp.push("127.0.0.1:0".parse().unwrap());
/// let reactor = Reactor::bind(config, Echo::default(), LengthCodec::new(1 << 20)).unwrap();
/// let handle = reactor.handle();
/// std::thread::spawn(move || {
///     // Runs on the loop's thread, between two turns.
///     let _ = handle.post(|_echo, ctx| log::info!("{} open", ctx.stats().active));
///     handle.shutdown();
/// });
/// let stopped = reactor.run().unwrap();
/// ```
pub struct Handle<S: Service> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) inbox: SyncSender<Job<S>>,
    /// Where another loop of a pool hands it accepted connections.
    pub(crate) handover: SyncSender<super::handover::Arrival>,
}

impl<S: Service> Clone for Handle<S> {
    fn clone(&self) -> Self {
        Handle {
            shared: Arc::clone(&self.shared),
            inbox: self.inbox.clone(),
            handover: self.handover.clone(),
        }
    }
}

impl<S: Service> fmt::Debug for Handle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("stopping", &self.shared.stop.load(Ordering::Relaxed))
            .finish()
    }
}

/// Why a job was not posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostError {
    /// The inbox holds [`crate::Config::inbox_capacity`] jobs already: try later, or
    /// drop the work.
    Full,
    /// The reactor has stopped.
    Stopped,
}

impl fmt::Display for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostError::Full => f.write_str("the loop's inbox is full"),
            PostError::Stopped => f.write_str("the loop has stopped"),
        }
    }
}

impl std::error::Error for PostError {}

impl<S: Service> Handle<S> {
    /// Asks the reactor to stop accepting, let the service say goodbye
    /// ([`crate::Service::on_stop`]), flush what is queued (within the grace period)
    /// and return from [`crate::Reactor::run`].
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Stops the reactor at once: every connection is closed without waiting for its
    /// output (a second Ctrl-C).
    pub fn stop_now(&self) {
        self.shared.stop_now.store(true, Ordering::SeqCst);
        self.shutdown();
    }

    /// Runs `job` on the loop's thread, with the service and a context, before the
    /// loop next waits. Jobs from one thread run in the order they were posted.
    pub fn post(
        &self,
        job: impl FnOnce(&mut S, &mut Context<'_, S>) + Send + 'static,
    ) -> Result<(), PostError> {
        match self.inbox.try_send(Box::new(job)) {
            Ok(()) => {
                // The job is in the inbox before the flag is looked at: either the
                // loop has not yet cleared it (and will read the inbox after
                // clearing it), or it has and this post wakes it.
                if !self.shared.wake_pending.swap(true, Ordering::SeqCst) {
                    self.wake();
                }
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(PostError::Full),
            Err(TrySendError::Disconnected(_)) => Err(PostError::Stopped),
        }
    }

    fn wake(&self) {
        if let Err(e) = self.shared.waker.wake() {
            log::error!("cannot wake the event loop: {e}");
        }
    }
}

/// The loop's end of the inbox.
pub(crate) struct Inbox<S: Service> {
    pub receiver: Receiver<Job<S>>,
    /// Kept so [`crate::Reactor::handle`] can hand out senders.
    pub sender: SyncSender<Job<S>>,
}
