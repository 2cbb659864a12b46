//! The order actors' side of a shard: commands through the state machine, the stock effects a
//! transition sends to SKU actors, and archived orders read back (and restored) for commands.

use std::collections::VecDeque;
use std::sync::Arc;

use smallvec::SmallVec;

use super::saga::{FlightState, InFlight};
use super::{OrderMsg, Reply, ShardCore, ShardMsg, SkuMsg};
use crate::domain::{Initiator, Order, OrderId, OrderStatus};
use crate::error::EngineError;
use crate::event::{Event, OrderEvent};
use crate::order::{self, Decision, OrderCommand};
use crate::routing::shard_for_key;
use crate::state_machine::{OrderEventKind, StockEffect};

impl ShardCore {
    pub(super) fn handle_order(&mut self, order_id: OrderId, msg: OrderMsg) {
        match msg {
            OrderMsg::Reserved { item, result } => {
                // A duplicate answer (or one for a saga that ended) changes nothing.
                let Some(f) = self.in_flight.get_mut(&order_id).filter(|f| f.step == 0 && f.awaits(item)) else {
                    return;
                };
                if let FlightState::Creating(saga) = &mut f.state {
                    if let Some(slot) = saga.grants.get_mut(usize::from(item)) {
                        *slot = Some(result);
                    }
                }
                if f.answered(item) {
                    self.land(order_id);
                }
            }
            OrderMsg::StockDone { item, step } => {
                let Some(f) = self.in_flight.get_mut(&order_id).filter(|f| f.step == step && f.awaits(item)) else {
                    return;
                };
                if f.answered(item) {
                    self.land(order_id);
                }
            }
            OrderMsg::Command(cmd, reply) => {
                if cmd.kind != OrderEventKind::PaymentDeadline {
                    self.expire_if_due(order_id);
                }
                if let Some(f) = self.in_flight.get_mut(&order_id) {
                    f.queued.push_back(OrderMsg::Command(cmd, reply));
                    return;
                }
                self.run_command(order_id, *cmd, reply);
            }
            OrderMsg::Verify { sku_id, reply_shard } => {
                let claim = self.claim_of(order_id, &sku_id);
                self.send(reply_shard, ShardMsg::Sku(sku_id, SkuMsg::Verdict { order_id, claim }));
            }
            OrderMsg::WalletPay(pay, reply) => {
                self.expire_if_due(order_id);
                if let Some(f) = self.in_flight.get_mut(&order_id) {
                    f.queued.push_back(OrderMsg::WalletPay(pay, reply));
                    return;
                }
                self.run_wallet_pay(order_id, *pay, reply);
            }
        }
    }

    /// A deadline that has passed takes effect before anything else the order hears, whether
    /// or not its timer has fired yet: the outcome never depends on timing.
    fn expire_if_due(&mut self, order_id: OrderId) {
        if self.in_flight.contains_key(&order_id) {
            return;
        }
        let now = self.now_ms;
        let expired = self
            .orders
            .get(&order_id)
            .is_some_and(|o| o.status == OrderStatus::PendingPayment && now >= o.payment_deadline_ms);
        if expired {
            let deadline = OrderCommand::new(OrderEventKind::PaymentDeadline, Initiator::System);
            self.run_command(order_id, deadline, None);
        }
    }

    pub(super) fn run_command(&mut self, order_id: OrderId, cmd: OrderCommand, reply: Option<Reply<Arc<Order>>>) {
        let now = self.now_ms;
        // Timers (by `System`) never need an archived order: they skip the archive read.
        let Some((order, archived)) = self.find_order(order_id, cmd.by != Initiator::System) else {
            self.reply_order(reply, Err(EngineError::UnknownOrder { order_id }));
            return;
        };
        // An archived order is judged like a live one in its terminal status: a late `pay`
        // answers `order_not_payable` (or as a duplicate), other moves `invalid_transition`.
        let (event, rule) = match order::decide(&order, &cmd, now, self.config.dispute_window_ms) {
            Err(e) => return self.reply_order(reply, Err(e)),
            Ok(Decision::Duplicate) => return self.reply_order(reply, Ok(order)),
            Ok(Decision::Transition(event, rule)) => (event, rule),
        };
        if archived {
            // Only `open_dispute` within the window gets here: bring the order back first.
            self.restore_order(order.clone());
        }
        let next = order::apply(&order, &event);
        self.counters.transition(order.status, next.status);
        self.rearm_timers(&order, &next, rule, now);
        self.orders.insert(order_id, next.clone());
        self.changed_orders.push((next.clone(), false));
        let kind = cmd.kind;
        self.events.push(Event::Order(event));
        self.outbox_order(&next);
        self.refund_wallet_payment(&next, kind);
        let has_effect = match rule.stock {
            StockEffect::None => false,
            StockEffect::Confirm | StockEffect::Release => true,
            StockEffect::RestockIfNotShipped => !next.shipped,
        };
        if !has_effect {
            return self.reply_order(reply, Ok(next));
        }
        let step = next.version;
        let all: SmallVec<[u8; 2]> = (0..next.items.len()).map(|i| i as u8).collect();
        self.send_stock_step(&next, &all);
        let flight = InFlight {
            waiters: reply.into_iter().collect(),
            awaiting: all,
            step,
            since_ms: self.now_ms,
            state: FlightState::Effect(next),
            queued: VecDeque::new(),
        };
        self.in_flight.insert(order_id, flight);
    }

    /// The stock step of `order`'s latest transition (confirm after a payment, release after a
    /// cancel, restock after a refund), to the line items in `items`; step = its version.
    pub(super) fn send_stock_step(&mut self, order: &Order, items: &[u8]) {
        let step = order.version;
        let make = |order_id, item, reply_shard| match order.status {
            OrderStatus::Canceled => SkuMsg::Release { order_id, item, step, reply_shard },
            OrderStatus::Refunded => SkuMsg::Restock { order_id, item, step, reply_shard },
            _ => SkuMsg::Confirm { order_id, item, step, reply_shard },
        };
        for &i in items {
            let Some(item) = order.items.get(usize::from(i)) else { continue };
            let msg = make(order.order_id, i, self.id);
            self.send(shard_for_key(&item.sku_id, self.shard_count), ShardMsg::Sku(item.sku_id.clone(), msg));
        }
    }

    /// The order a command is for, and whether it is archived: live in memory; or archived in
    /// a batch of this shard's that is not durable yet (`ReadModels::archiving`); or read from
    /// the archive. The archive read is sled on this shard thread: off the hot path, because
    /// only ids that are not in memory (archived or unknown) get there.
    pub(super) fn find_order(&self, order_id: OrderId, archived_too: bool) -> Option<(Arc<Order>, bool)> {
        if let Some(o) = self.orders.get(&order_id) {
            return Some((o.clone(), false));
        }
        if !self.archive_enabled || !archived_too {
            return None;
        }
        let archiving = self.read.archiving.get(&order_id).map(|o| o.clone());
        // After a failed batch the order stays in `orders` (the log still has it live).
        let failed = || self.read.orders.get(&order_id).map(|o| o.clone()).filter(|o| o.status.is_terminal());
        archiving.or_else(failed).or_else(|| self.archive.as_ref()?.get(order_id)).map(|o| (o, true))
    }

    /// Bring an archived order back into memory (logged as `Restored`, so replay rebuilds it):
    /// actor, idempotency record, read models; its SKUs take back its sold holdings.
    pub(super) fn restore_order(&mut self, order: Arc<Order>) {
        let id = order.order_id;
        self.orders.insert(id, order.clone());
        self.read.users.insert(&order.user_id);
        self.record_idempotency(id, &order.user_id, &order.idempotency_key);
        // Back in the read models (and the user's index) once this batch is durable.
        self.changed_orders.push((order.clone(), true));
        for item in &order.items {
            let shard = shard_for_key(&item.sku_id, self.shard_count);
            let msg = SkuMsg::Remember { order_id: id, user_id: order.user_id.clone(), qty: item.qty };
            self.send(shard, ShardMsg::Sku(item.sku_id.clone(), msg));
        }
        self.events.push(Event::Order(OrderEvent::Restored(order)));
    }
}
