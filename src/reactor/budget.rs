//! The memory budget: a ceiling on the buffer memory of all connections together.
//!
//! Every connection's buffers (its partial input and its queued output) are counted
//! whenever they change ([`crate::hub::Hub::account`]), so the total is always known
//! without walking the connections. Each connection is already bounded on its own (a
//! frame's size, the write limit), but thousands of peers that each announce a large
//! frame and stall, or each stop reading, could still add up to more memory than the
//! machine has. When the total passes the budget, the connections holding the most
//! are reset until it is back under seven eighths of the budget: the peers costing the
//! most go first, and well-behaved ones, holding little, stay.

use std::time::Duration;

use super::Reactor;
use crate::connection::{ConnId, Flag};
use crate::service::Service;
use crate::stats::CloseReason;

/// At most one warning per this long about evictions (each eviction is counted, and
/// logged at debug level).
pub(super) const WARN_EVERY: Duration = Duration::from_secs(1);

impl<S: Service> Reactor<S> {
    /// Resets the connections holding the most buffer memory until the total is back
    /// under seven eighths of the budget.
    #[cold]
    #[inline(never)]
    pub(super) fn enforce_memory_budget(&mut self) {
        self.hub.over_budget = false;
        let Some(budget) = self.hub.limits.memory_budget_kib else {
            return;
        };
        if self.hub.buffered_kib <= budget {
            return;
        }
        let before = self.hub.buffered_kib;
        let target = budget - budget / 8;
        let tls = &self.hub.tls;
        let mut holders: Vec<(u64, ConnId)> = self
            .hub
            .conns
            .iter()
            .filter(|(_, slot)| !slot.conn.flags.get(Flag::ResetOnClose))
            .map(|(key, slot)| {
                let id = ConnId::new(key, slot.conn.generation);
                // A TLS connection also holds its layer's state and buffers.
                let layer = tls.get(id).map_or(0, |layer| layer.charge_kib());
                (slot.conn.accounted.kib() + layer, id)
            })
            .filter(|&(kib, _)| kib > 0)
            .collect();
        holders.sort_unstable_by_key(|&(kib, _)| std::cmp::Reverse(kib));
        let mut left = before;
        let mut reset = 0;
        for &(kib, id) in &holders {
            if left <= target {
                break;
            }
            log::debug!(
                "{}: holds {kib} KiB of buffers, the most: resetting (memory budget)",
                self.hub.who(id)
            );
            self.hub.reset(id, CloseReason::OverBudget);
            left -= kib;
            reset += 1;
        }
        if let Some(resets) = self.budget_warning.note_many(self.hub.now, reset) {
            log::warn!(
                "memory budget: connections hold {before} KiB of buffers, over the budget of \
                 {budget} KiB: resetting those holding the most ({resets} since the last \
                 warning, the largest holding {} KiB)",
                holders.first().map_or(0, |h| h.0)
            );
        }
    }
}
