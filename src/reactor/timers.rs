//! What happens when time passes: idle connections close, frame deadlines and
//! lingering windows end, service timers fire, the counters are logged.

use std::time::Duration;

use super::Reactor;
use crate::connection::{ConnId, ConnState, Millis, NO_FRAME};
use crate::frame::Codec;
use crate::hub::{TimerEvent, LINGER_QUIET, LINGER_ROUNDS};
use crate::service::{Context, Service};
use crate::stats::CloseReason;

impl<S: Service, C: Codec> Reactor<S, C> {
    pub(super) fn fire_timers(&mut self) {
        self.close_idle_connections();
        self.carry_out_requests();
        while let Some((timer, event)) = self.hub.timers.pop_due(self.hub.now) {
            match event {
                TimerEvent::FrameDeadline(id) => self.check_frame_deadline(id),
                TimerEvent::Service(value) => {
                    log::trace!("timer fired: service timer {value}");
                    let mut ctx = Context::new(&mut self.hub, &self.codec);
                    self.service.on_timer(&mut ctx, timer, value);
                }
                TimerEvent::AcceptRetry(index) => {
                    if let Some(slot) = self.listeners.get_mut(index) {
                        slot.paused = false;
                        self.accept(index);
                    }
                }
                TimerEvent::StatsReport => {
                    log::info!("stats: {}", self.hub.stats);
                    if let Some(interval) = self.config.stats_interval {
                        self.hub
                            .timers
                            .insert(self.hub.now + interval, TimerEvent::StatsReport);
                    }
                }
                // Its only job was to end the wait in `poll`; `run` sees the deadline.
                TimerEvent::ShutdownDeadline => {}
                TimerEvent::LingerDeadline(id) => self.end_linger_window(id),
            }
            self.carry_out_requests();
        }
    }

    /// Closes every connection that has been quiet for the idle timeout: they are at
    /// the front of the idle list, so this looks at no connection that is not due.
    fn close_idle_connections(&mut self) {
        let Some(timeout) = self.hub.limits.idle_timeout_millis else {
            return;
        };
        if self.hub.now_millis() < self.hub.idle_not_before {
            return;
        }
        while let Some(key) = self.hub.idle.front() {
            let conn = &self.hub.conns[key];
            if conn.last_active + timeout > self.hub.now_millis() {
                self.hub.idle_not_before = conn.last_active + timeout;
                return;
            }
            let id = ConnId::new(key, conn.generation);
            log_idle_close(id, timeout);
            // Out of the list now, so the loop moves on while the close is pending.
            self.hub.idle.unlink(&mut self.hub.conns, key);
            self.hub.request_close(id, CloseReason::IdleTimeout);
        }
    }

    /// A lingering connection's quiet window is over: if the peer sent nothing during
    /// it, close; if it is still sending, give it another window, up to the limit.
    fn end_linger_window(&mut self, id: ConnId) {
        let now = self.hub.now;
        let Some(conn) = self.hub.conn_mut(id) else {
            return;
        };
        let ConnState::Lingering(reason) = conn.state else {
            return;
        };
        if conn.peer_still_sending && conn.linger_rounds < LINGER_ROUNDS {
            conn.peer_still_sending = false;
            conn.linger_rounds += 1;
            let at = now + LINGER_QUIET;
            self.hub.timers.insert(at, TimerEvent::LingerDeadline(id));
        } else {
            log::trace!("{id}: lingering over");
            self.hub.request_close(id, reason);
        }
    }

    /// Closes a connection whose partial frame has been arriving for too long.
    fn check_frame_deadline(&mut self, id: ConnId) {
        let now = self.hub.now;
        let Some(timeout) = self.hub.limits.frame_timeout else {
            return;
        };
        let Some(started) = self.hub.conn(id).map(|c| self.hub.instant(c.frame_started)) else {
            return;
        };
        let Some(conn) = self.hub.conn_mut(id) else {
            return;
        };
        conn.frame_timer_armed = false;
        if conn.frame_started == NO_FRAME {
            return;
        }
        if started + timeout <= now {
            log::warn!(
                "{id}: frame not completed within {timeout:?} ({} bytes received); closing",
                conn.input.len()
            );
            self.hub.request_close(id, CloseReason::FrameTimeout);
        } else {
            conn.frame_timer_armed = true;
            self.hub
                .timers
                .insert(started + timeout, TimerEvent::FrameDeadline(id));
        }
    }
}

/// Logs an idle close. Out of line and cold: the loop checks for idle connections
/// every turn, and this keeps even the time formatting off that path.
#[cold]
fn log_idle_close(id: ConnId, timeout: Millis) {
    log::info!(
        "{id}: idle for {:?}, closing",
        Duration::from_millis(timeout)
    );
}
