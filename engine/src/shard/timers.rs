//! A shard's timers: payment deadlines, auto-complete and archiving, kept in one ordered set
//! per shard and fired in bounded batches (`timers_per_tick_max`) when the runtime feeds the
//! core a tick at time t (the core reads no clock).

use super::{OrderMsg, ShardCore, ShardMsg, SkuMsg};
use crate::config::ms_i64;
use crate::domain::{Initiator, Order, OrderId, OrderStatus};
use crate::event::{Event, OrderEvent};
use crate::order::OrderCommand;
use crate::routing::shard_for_key;
use crate::state_machine::{OrderEventKind, Rule, TimerEffect};

/// What a timer does when it fires (ordered after its due time and order id in the set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    PaymentDeadline,
    AutoComplete,
    Archive,
}

impl ShardCore {
    /// The timer a recovered order needs: its payment deadline, its auto-complete, or (terminal,
    /// with archiving on) its archiving.
    pub(super) fn arm_recovered_timer(&mut self, order: &Order) {
        let id = order.order_id;
        match order.status {
            OrderStatus::PendingPayment => {
                self.timers.insert((order.payment_deadline_ms, id, TimerKind::PaymentDeadline));
            }
            s if s.is_terminal() && self.archive_enabled => {
                let at = order.updated_at_ms.saturating_add(ms_i64(self.config.archive_after_ms));
                self.timers.insert((at, id, TimerKind::Archive));
            }
            OrderStatus::Delivered => {
                self.timers.insert((
                    auto_complete_at(order, self.config.auto_complete_ms),
                    id,
                    TimerKind::AutoComplete,
                ));
            }
            _ => {}
        }
    }

    /// Timers after `order` moved to `next` by `rule` at `now`: the payment deadline is done
    /// with, auto-complete armed on delivery, archiving on a terminal status.
    pub(super) fn rearm_timers(&mut self, order: &Order, next: &Order, rule: &Rule, now: i64) {
        let order_id = order.order_id;
        if order.status == OrderStatus::PendingPayment {
            self.timers.remove(&(order.payment_deadline_ms, order_id, TimerKind::PaymentDeadline));
        }
        // Delivered (by `deliver`, or back after a rejected refund): auto-complete is due
        // `auto_complete_ms` after the delivery, however the order got back here.
        if rule.timer == TimerEffect::AutoComplete || next.status == OrderStatus::Delivered {
            self.timers.insert((
                auto_complete_at(next, self.config.auto_complete_ms),
                order_id,
                TimerKind::AutoComplete,
            ));
        }
        if next.status.is_terminal() && self.archive_enabled {
            let at = now.saturating_add(ms_i64(self.config.archive_after_ms));
            self.timers.insert((at, order_id, TimerKind::Archive));
        }
    }

    /// Move a terminal order out of memory: log it whole (the archive is written from the log),
    /// drop its actor and idempotency record, and tell its SKUs to drop their sold holdings.
    pub(super) fn archive_order(&mut self, order_id: OrderId, now: i64) {
        if self.in_flight.contains_key(&order_id) {
            self.timers.insert((now.saturating_add(1_000), order_id, TimerKind::Archive));
            return;
        }
        let Some(order) = self.orders.get(&order_id) else { return };
        if !order.status.is_terminal() {
            return;
        }
        let Some(order) = self.orders.remove(&order_id) else { return };
        self.idempotency.remove(&order.user_id, &order.idempotency_key, order_id);
        for item in &order.items {
            let shard = shard_for_key(&item.sku_id, self.shard_count);
            self.send(shard, ShardMsg::Sku(item.sku_id.clone(), SkuMsg::Forget { order_id }));
        }
        self.read.archiving.insert(order_id, order.clone());
        self.archived.push(order.clone());
        self.events.push(Event::Order(OrderEvent::Archived(order)));
    }

    /// Input: a timer tick at `now_ms` (engine clock). Fires at most `timers_per_tick_max` due
    /// timers, oldest first.
    pub(crate) fn fire_timers(&mut self, now_ms: i64) {
        self.now_ms = now_ms;
        let now = now_ms;
        if self.open_tries > 0 {
            self.close_stale_tries();
        }
        self.cluster_tick();
        for _ in 0..self.config.timers_per_tick_max {
            let Some((at, order_id, kind)) = self.timers.pop_due(now) else {
                break;
            };
            // A deadline left in the queue's FIFO after its order moved on (see `TimerQueue`).
            let stale = kind == TimerKind::PaymentDeadline
                && !self
                    .orders
                    .get(&order_id)
                    .is_some_and(|o| o.status == OrderStatus::PendingPayment && o.payment_deadline_ms == at);
            if stale {
                continue;
            }
            let event = match kind {
                TimerKind::PaymentDeadline => OrderEventKind::PaymentDeadline,
                TimerKind::AutoComplete => OrderEventKind::AutoComplete,
                TimerKind::Archive => {
                    self.archive_order(order_id, now);
                    continue;
                }
            };
            // Goes through the state machine like any command; if the order moved on, the
            // transition is invalid and nothing happens.
            self.handle_order(order_id, OrderMsg::Command(Box::new(OrderCommand::new(event, Initiator::System)), None));
        }
    }
}

/// When a delivered order completes by itself: `auto_complete_ms` after its delivery.
pub(super) fn auto_complete_at(order: &Order, auto_complete_ms: u64) -> i64 {
    let delivered_at = order
        .history
        .iter()
        .rev()
        .find(|h| h.to == OrderStatus::Delivered && h.from == Some(OrderStatus::Shipped))
        .map_or(order.updated_at_ms, |h| h.at_ms);
    delivered_at.saturating_add(ms_i64(auto_complete_ms))
}
