//! What happens when time passes: idle connections close, frame deadlines, send
//! deadlines, connect timeouts and lingering windows end, service timers fire (and repeating ones are
//! re-armed), the counters are logged. Everything is measured against the turn's
//! `now`, which the caller of [`Reactor::turn`] supplies.

use std::time::{Duration, Instant};

use super::Reactor;
use crate::connection::{ConnId, ConnState, Flag, Millis, NO_FRAME};
use crate::context::Context;
use crate::hub::TimerEvent;
use crate::service::Service;
use crate::stats::CloseReason;
use crate::timer::{deadline_after, TimerId, MAX_DELAY};

impl<S: Service> Reactor<S> {
    /// Closes idle connections and fires due timers. The common turn has neither, and
    /// pays two comparisons for knowing it.
    #[inline(always)]
    pub(super) fn fire_timers(&mut self) {
        let idle_due = self.hub.limits.idle_timeout_millis.is_some()
            && self.hub.now_millis() >= self.hub.idle_not_before;
        if idle_due {
            self.close_idle_connections();
            self.carry_out_requests();
        }
        if self.hub.timers.maybe_due(self.hub.now) {
            self.fire_due_timers();
        }
    }

    #[inline(never)]
    fn fire_due_timers(&mut self) {
        // What these timers schedule for "now" waits for the next turn (which polls
        // without waiting): a timer re-arming itself at no delay cannot starve sockets.
        let mark = self.hub.timers.mark();
        while let Some((timer, event)) = self.hub.timers.pop_due_before(self.hub.now, mark) {
            match event {
                TimerEvent::FrameDeadline(id) => self.check_frame_deadline(id),
                TimerEvent::Service { value, conn, every } => {
                    self.service_timer(timer, value, conn, every)
                }
                TimerEvent::ConnectDeadline(id) => self.check_connect_deadline(id),
                TimerEvent::IdleCheck(id, epoch) => self.check_own_idle_timeout(id, epoch),
                TimerEvent::AcceptRetry(index) => {
                    if let Some(slot) = self.listeners.get_mut(index) {
                        slot.paused = false;
                        self.accept(index);
                    }
                }
                TimerEvent::StatsReport => {
                    log::info!("{}stats: {}", self.label, self.hub.stats);
                    if let Some(interval) = self.config.stats_interval {
                        self.hub
                            .timers
                            .insert(self.hub.now + interval, TimerEvent::StatsReport);
                    }
                }
                // Its only job was to end the wait in `poll`; `run` sees the deadline.
                TimerEvent::ShutdownDeadline => {}
                TimerEvent::LingerDeadline(id) => self.end_linger_window(id),
                TimerEvent::SendDeadline(id) => self.check_send_deadline(id),
            }
            self.carry_out_requests();
        }
    }

    /// Closes every connection that has been quiet for the idle timeout: they are at
    /// the front of the idle list, so this looks at no connection that is not due.
    #[inline(never)]
    fn close_idle_connections(&mut self) {
        let Some(timeout) = self.hub.limits.idle_timeout_millis else {
            return;
        };
        if self.hub.now_millis() < self.hub.idle_not_before {
            return;
        }
        while let Some(key) = self.hub.idle.front() {
            let conn = &self.hub.conns[key].conn;
            if conn.last_active + timeout > self.hub.now_millis() {
                self.hub.idle_not_before = conn.last_active + timeout;
                return;
            }
            let id = ConnId::new(key, conn.generation);
            if conn.reading_paused() {
                // Its peer may be sending all along: we are the ones not reading. Its
                // quiet time starts over (the send timeout watches a stalled peer).
                self.hub.touch(id);
                continue;
            }
            log_idle_close(self.hub.who(id), timeout);
            // Out of the list now, so the loop moves on while the close is pending.
            self.hub.idle.unlink(&mut self.hub.conns, key);
            self.hub.request_close(id, CloseReason::IdleTimeout);
        }
    }

    /// A service timer is due: the service hears it (with the connection and its
    /// state, for a connection's timer that is still there), and a repeating one is
    /// scheduled for its next round.
    fn service_timer(
        &mut self,
        timer: TimerId,
        value: S::Timer,
        conn: Option<ConnId>,
        every: Option<Duration>,
    ) {
        log::trace!("timer fired: service timer");
        if let Some(interval) = every {
            let next = next_round(timer.deadline(), interval, self.hub.now);
            let event = TimerEvent::Service {
                value: value.clone(),
                conn,
                every,
            };
            self.hub.timers.rearm(timer, next, event);
        }
        let Some(id) = conn else {
            let ctx = &mut Context::new(&mut self.hub, &self.endpoints);
            self.service.on_timer(ctx, timer, value);
            return;
        };
        let Some(slot) = self.hub.slot_mut(id) else {
            // The connection is gone, and its timer with it.
            self.hub.timers.cancel(timer);
            return;
        };
        let mut state = std::mem::take(&mut slot.state);
        let ctx = &mut Context::new(&mut self.hub, &self.endpoints).lending(id);
        self.service
            .on_conn_timer(ctx, id, &mut state, timer, value);
        self.give_back_state(id, state);
    }

    /// A connection's send deadline came: reset it if its queued output has made no
    /// progress for the send timeout (its peer stopped reading), else look again when
    /// it would have.
    fn check_send_deadline(&mut self, id: ConnId) {
        let Some(timeout) = self.hub.limits.send_timeout else {
            return;
        };
        let (now, now_millis) = (self.hub.now, self.hub.now_millis());
        let Some(conn) = self.hub.conn_mut(id) else {
            return;
        };
        conn.flags.set(Flag::SendTimerArmed, false);
        if conn.output.is_empty() || conn.state == crate::connection::ConnState::Connecting {
            return; // nothing waits; the next wait arms a new deadline
        }
        let stalled = Duration::from_millis(u64::from(
            (now_millis as u32).wrapping_sub(conn.write_progress),
        ));
        if stalled >= timeout {
            let queued = conn.output.len();
            log::warn!(
                "{}: {queued} bytes queued and none written for {stalled:?}: the peer \
                 stopped reading; resetting",
                self.hub.who(id)
            );
            self.hub.reset(id, CloseReason::WriteStalled);
        } else {
            conn.flags.set(Flag::SendTimerArmed, true);
            self.hub.timers.insert(
                deadline_after(now, timeout - stalled),
                TimerEvent::SendDeadline(id),
            );
        }
    }

    /// A connection with an idle timeout of its own may be idle now: close it if it
    /// is, else check again when it would be.
    fn check_own_idle_timeout(&mut self, id: ConnId, epoch: u8) {
        let Some(conn) = self.hub.conn(id) else {
            return;
        };
        let Some(timeout) = conn.idle_rule.own_millis() else {
            return;
        };
        if conn.idle_epoch != epoch {
            return; // armed for an earlier rule; the current one has its own check
        }
        let timeout = Millis::from(timeout);
        let due = conn.last_active + timeout;
        if due <= self.hub.now_millis() && conn.reading_paused() {
            // Not idle: not read (see `close_idle_connections`). Look again later.
            self.hub.touch(id);
            let at = self.hub.now + Duration::from_millis(timeout);
            self.hub.timers.insert(at, TimerEvent::IdleCheck(id, epoch));
        } else if due <= self.hub.now_millis() {
            log_idle_close(self.hub.who(id), timeout);
            self.hub.request_close(id, CloseReason::IdleTimeout);
        } else {
            let at = self.hub.instant(due);
            self.hub.timers.insert(at, TimerEvent::IdleCheck(id, epoch));
        }
    }

    /// Closes a connection whose partial frame has been arriving for too long.
    fn check_frame_deadline(&mut self, id: ConnId) {
        let now = self.hub.now;
        let admin = self
            .hub
            .conn(id)
            .is_some_and(|c| c.state == ConnState::AdminRequest);
        if admin {
            return self.check_admin_deadline(id);
        }
        let Some(timeout) = self.hub.limits.frame_timeout else {
            return;
        };
        let Some(started) = self.hub.conn(id).map(|c| self.hub.instant(c.frame_started)) else {
            return;
        };
        let Some(conn) = self.hub.conn_mut(id) else {
            return;
        };
        conn.flags.set(Flag::FrameTimerArmed, false);
        if conn.frame_started == NO_FRAME {
            return;
        }
        if conn.reading_paused() {
            // We are not reading, so the peer cannot finish its frame: look again
            // later. The frame's time starts over when reading resumes.
            conn.flags.set(Flag::FrameTimerArmed, true);
            self.hub
                .timers
                .insert(deadline_after(now, timeout), TimerEvent::FrameDeadline(id));
        } else if deadline_after(started, timeout) <= now {
            let received = conn.input.len();
            if self
                .hub
                .tls
                .get(id)
                .is_some_and(|layer| !layer.is_established())
            {
                log::warn!(
                    "{}: TLS handshake not completed within {timeout:?}; closing",
                    self.hub.who(id)
                );
            } else {
                log::warn!(
                    "{}: frame not completed within {timeout:?} ({received} bytes received); \
                     closing",
                    self.hub.who(id)
                );
            }
            self.hub.request_close(id, CloseReason::FrameTimeout);
        } else {
            conn.flags.set(Flag::FrameTimerArmed, true);
            self.hub.timers.insert(
                deadline_after(started, timeout),
                TimerEvent::FrameDeadline(id),
            );
        }
    }
}

/// The first round of a repeating timer after `now`: counted from its first deadline,
/// so rounds do not drift; rounds already missed are skipped.
fn next_round(first: Instant, interval: Duration, now: Instant) -> Instant {
    let behind = now.saturating_duration_since(first);
    let interval = interval.as_nanos().max(1);
    let rounds = behind.as_nanos() / interval + 1;
    // In nanoseconds, wide enough for any interval a service may give (as long as
    // `Duration::MAX`) times any count of rounds; past `MAX_DELAY` it saturates.
    let delay = match u64::try_from(interval.saturating_mul(rounds)) {
        Ok(nanos) => Duration::from_nanos(nanos),
        Err(_) => MAX_DELAY,
    };
    deadline_after(first, delay)
}

/// Logs an idle close. Out of line and cold: the loop checks for idle connections
/// every turn, and this keeps even the time formatting off that path.
#[cold]
fn log_idle_close(who: crate::hub::Who, timeout: Millis) {
    log::info!(
        "{who}: idle for {:?}, closing",
        Duration::from_millis(timeout)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeating_rounds_follow_the_first_deadline_and_skip_missed_ones() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        // Fired on time: the next round is one interval on.
        assert_eq!(next_round(t0, second, t0), t0 + second);
        // Fired 300 ms late: still due at t0 + 1 s, not at t0 + 1.3 s.
        assert_eq!(next_round(t0, second, t0 + second * 3 / 10), t0 + second);
        // Three and a half rounds late: the next round after now, not three at once.
        assert_eq!(next_round(t0, second, t0 + second * 7 / 2), t0 + 4 * second);
    }

    #[test]
    fn rounds_of_any_interval_saturate_instead_of_overflowing() {
        let t0 = Instant::now();
        assert_eq!(next_round(t0, Duration::MAX, t0), t0 + MAX_DELAY);
        // A millisecond interval a thousand days behind: more rounds than a `u32`
        // holds, still exactly the next round after now.
        let late = t0 + Duration::from_secs(1000 * 24 * 3600);
        let millisecond = Duration::from_millis(1);
        assert_eq!(next_round(t0, millisecond, late), late + millisecond);
    }
}
