//! The reference model the clients judge answers by, wherever concurrency leaves the outcome
//! determined (the serial model of `tests/engine_simulation.rs` predicts every outcome, but
//! only when each request settles before the next; here requests interleave, crash and
//! retry). What it knows of an order is the newest answer about it: answers about one order
//! arrive in the order its shard decided them (replies leave in log order).
//!
//! Determined, and checked:
//! * a create answers an order of the asking user, with its key and exactly its items, and
//!   never one with a line above the SKU's per-user limit (limits are fixed for a run);
//! * a pay answers the payment it carried: a second payment id never replaces the first;
//! * an order's version never goes back (but for a retried create, which may read the order
//!   ahead of commands queued behind its stock effects), and at one version its status is one;
//! * a command answered one version after the last known answer took exactly the state
//!   machine's transition from the known status (`state_machine::rule`), and a cancel answers
//!   a canceled order;
//! * a key answered with a second order: the world checks the first left memory (archived);
//! * a wallet payment answers an order that took `wallet:<transfer_id>`, never a second
//!   payment, and never an order known canceled (the wallet side is `wallet_model`'s).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::domain::{Order, OrderId, OrderStatus, SkuId, UserId};
use crate::error::EngineResult;
use crate::state_machine::{rule, OrderEventKind, Target};

/// What a client asked, to judge the answer.
pub(in crate::sim) enum Asked {
    Create { user_id: UserId, key: Arc<str>, items: Vec<(SkuId, u32)> },
    Pay { order_id: OrderId, payment_id: Arc<str> },
    WalletPay { order_id: OrderId, transfer_id: Arc<str> },
    Command { order_id: OrderId, kind: OrderEventKind },
}

impl Asked {
    /// The request's name in the outcome counts.
    pub fn kind(&self) -> &'static str {
        use OrderEventKind as E;
        match self {
            Asked::Create { .. } => "create",
            Asked::Pay { .. } => "pay",
            Asked::WalletPay { .. } => "wallet_pay",
            Asked::Command { kind, .. } => match kind {
                E::Cancel => "cancel",
                E::StartPacking => "start_packing",
                E::Ship => "ship",
                E::Deliver => "deliver",
                E::Complete => "complete",
                E::RequestRefund => "request_refund",
                E::ConfirmRefund => "confirm_refund",
                E::RejectRefund => "reject_refund",
                E::OpenDispute => "open_dispute",
                E::ResolveDispute => "resolve_dispute",
                E::Pay | E::PaymentDeadline | E::AutoComplete => "other",
            },
        }
    }
}

/// A create answered with another order than the one its (user, key) had.
pub(in crate::sim) struct KeyReuse {
    pub user_id: UserId,
    pub key: Arc<str>,
    pub first: OrderId,
    pub second: OrderId,
}

pub(super) struct Model {
    limits: HashMap<SkuId, u32>,
    /// The newest answer about each order: (status, version).
    seen: BTreeMap<OrderId, (OrderStatus, u32)>,
    /// The payment id each paid order was answered with.
    payments: HashMap<OrderId, Box<str>>,
    by_key: HashMap<(UserId, Arc<str>), OrderId>,
    key_reuses: Vec<KeyReuse>,
}

impl Model {
    pub fn new(limits: HashMap<SkuId, u32>) -> Self {
        Self { limits, seen: BTreeMap::new(), payments: HashMap::new(), by_key: HashMap::new(), key_reuses: Vec::new() }
    }

    pub fn knows(&self, order_id: OrderId) -> bool {
        self.seen.contains_key(&order_id)
    }

    /// The status of the newest answer about `order_id`.
    pub fn status_of(&self, order_id: OrderId) -> Option<OrderStatus> {
        self.seen.get(&order_id).map(|s| s.0)
    }

    pub fn acked(&self) -> impl Iterator<Item = (&OrderId, &(OrderStatus, u32))> + '_ {
        self.seen.iter()
    }

    pub fn take_key_reuses(&mut self) -> Vec<KeyReuse> {
        std::mem::take(&mut self.key_reuses)
    }

    /// Judge an answer (errors are never ruled out: each has a cause the model cannot see, or
    /// an unknown outcome), then remember it.
    ///
    /// # Errors
    /// The answer contradicts the model.
    pub fn judge(&mut self, asked: Asked, result: EngineResult<Arc<Order>>) -> Result<(), String> {
        let Ok(order) = result else { return Ok(()) };
        let id = order.order_id;
        match &asked {
            Asked::Create { user_id, key, items } => self.judge_create(user_id, key, items, &order)?,
            Asked::Pay { order_id, payment_id } => self.judge_pay(*order_id, payment_id, &order)?,
            Asked::WalletPay { order_id, transfer_id } => {
                if self.status_of(id) == Some(OrderStatus::Canceled) {
                    return Err(format!("wallet payment {transfer_id} answered order {id} paid after it was canceled"));
                }
                self.judge_pay(*order_id, &format!("wallet:{transfer_id}"), &order)?;
            }
            Asked::Command { order_id, kind } => self.judge_command(*order_id, *kind, &order)?,
        }
        if let Some(&(status, version)) = self.seen.get(&id) {
            if order.version == version && order.status != status {
                return Err(format!("order {id} answered {} and {status}, both at version {version}", order.status));
            }
            if order.version < version {
                // A retried create answers the order as it is when the shard reads it, ahead of
                // commands queued behind the order's stock effects; answers released by one sync
                // are judged in request order, so that earlier state may come after a later one.
                if matches!(asked, Asked::Create { .. }) {
                    return Ok(());
                }
                return Err(format!(
                    "order {id} answered {} at version {} after {status} at version {version}",
                    order.status, order.version
                ));
            }
        }
        self.seen.insert(id, (order.status, order.version));
        if let Some(p) = &order.payment {
            self.payments.entry(id).or_insert_with(|| p.payment_id.clone());
        }
        Ok(())
    }

    fn judge_create(
        &mut self,
        user_id: &UserId,
        key: &Arc<str>,
        items: &[(SkuId, u32)],
        order: &Order,
    ) -> Result<(), String> {
        let id = order.order_id;
        if order.user_id != *user_id || *order.idempotency_key != **key || !order.same_items(items) {
            return Err(format!("create for ({user_id}, {key}, {items:?}) answered order {id} of {:?}", order.items));
        }
        if let Some((sku, qty)) = items.iter().find(|(sku, qty)| self.limits.get(sku).is_some_and(|l| qty > l)) {
            return Err(format!("order {id} holds {qty} of {sku}, above its per-user limit"));
        }
        let k = (user_id.clone(), key.clone());
        match self.by_key.insert(k, id) {
            Some(first) if first != id => {
                self.key_reuses.push(KeyReuse { user_id: user_id.clone(), key: key.clone(), first, second: id });
            }
            _ => {}
        }
        Ok(())
    }

    fn judge_pay(&self, asked: OrderId, payment_id: &str, order: &Order) -> Result<(), String> {
        let id = order.order_id;
        let Some(p) = &order.payment else {
            return Err(format!("pay answered order {id} without a payment"));
        };
        if id != asked || *p.payment_id != *payment_id {
            return Err(format!("pay {payment_id} of order {asked} answered payment {} of {id}", p.payment_id));
        }
        if let Some(first) = self.payments.get(&id).filter(|f| ***f != *payment_id) {
            return Err(format!("order {id} paid by {first} accepted a second payment {payment_id}"));
        }
        Ok(())
    }

    fn judge_command(&self, asked: OrderId, kind: OrderEventKind, order: &Order) -> Result<(), String> {
        let id = order.order_id;
        if id != asked {
            return Err(format!("{kind:?} of order {asked} answered order {id}"));
        }
        if kind == OrderEventKind::Cancel && order.status != OrderStatus::Canceled {
            return Err(format!("cancel answered order {id} in {}", order.status));
        }
        let Some(&(from, version)) = self.seen.get(&id) else { return Ok(()) };
        if order.version != version + 1 {
            return Ok(());
        }
        match rule(from, kind).map(|r| r.target) {
            None => Err(format!("order {id} took {kind:?} from {from}, which the state machine refuses")),
            Some(Target::To(to)) if to != order.status => {
                Err(format!("order {id} took {kind:?} from {from} to {}, not {to}", order.status))
            }
            Some(_) => Ok(()),
        }
    }
}
