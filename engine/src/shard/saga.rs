//! The create-order saga and the end of every order's cross-shard step: reserve on every SKU
//! actor, compensate (release what was granted, newest first) on a rejection, and *land* when
//! every answer is in (create the order, or answer a transition whose stock effects are done).
//!
//! `create_order` runs on the shard of the *user* (which owns the user's idempotency records and
//! orders): it mints the order id, asks every SKU actor to reserve concurrently, and when all
//! have answered either creates the order or releases what was granted (compensation,
//! idempotent) and returns the first rejection in item order.

use std::collections::VecDeque;
use std::sync::Arc;

use smallvec::{smallvec, SmallVec};

use super::timers::TimerKind;
use super::{pair_of, Deferred, OrderMsg, Reply, ShardCore, ShardMsg, SkuMsg};
use crate::config::ms_i64;
use crate::domain::{CreateOrder, Order, OrderId, SkuId, UserId};
use crate::error::EngineError;
use crate::event::{Event, OrderEvent};
use crate::order;
use crate::routing::shard_for_key;
use crate::sku::Grant;

pub(super) struct Saga {
    pub(super) user_id: UserId,
    pub(super) items: Vec<(SkuId, u32)>,
    pub(super) idempotency_key: Box<str>,
    /// One per item, inline for a single-item order (no allocation).
    pub(super) grants: SmallVec<[Option<Result<Grant, EngineError>>; 1]>,
    /// Set once compensation started: the rejection to return when it ends.
    pub(super) compensating: Option<Box<EngineError>>,
}

pub(super) enum FlightState {
    /// Inline, not boxed: the map of orders in flight is small, and a box is an allocation per
    /// order (issue 12).
    Creating(Saga),
    /// A transition waiting for its stock effects; the answer to give when they are done.
    Effect(Arc<Order>),
}

/// An order with messages out to SKU actors. Commands for it wait in `queued` so an order still
/// handles one thing at a time, including its side effects.
pub(super) struct InFlight {
    /// Usually one (a concurrent duplicate adds one): inline.
    pub(super) waiters: SmallVec<[Reply<Arc<Order>>; 1]>,
    /// The line items whose answer (`Reserved`, `StockDone`) is still awaited: an answer for
    /// an item not in it is a duplicate and changes nothing.
    pub(super) awaiting: SmallVec<[u8; 2]>,
    /// Which step answers belong to: 0 for the creation saga (reserves, compensation), else
    /// the order's version after the transition whose stock step this is.
    pub(super) step: u32,
    /// When the step started (`now_ms`): a cluster node gives up a step that waited longer than
    /// `saga_timeout_ms` (its answers may have been lost with a node).
    pub(super) since_ms: i64,
    pub(super) state: FlightState,
    pub(super) queued: VecDeque<OrderMsg>,
}

impl InFlight {
    /// Whether an answer for line item `item` is still awaited.
    pub(super) fn awaits(&self, item: u8) -> bool {
        self.awaiting.contains(&item)
    }

    /// Mark `item` answered; true when no answer is awaited any more.
    pub(super) fn answered(&mut self, item: u8) -> bool {
        self.awaiting.retain(|i| *i != item);
        self.awaiting.is_empty()
    }
}

impl ShardCore {
    pub(super) fn start_saga(
        &mut self,
        req: CreateOrder,
        reply: Reply<Arc<Order>>,
        fast_reject: Option<Box<EngineError>>,
    ) {
        if let Some(existing) = self.find_idempotent(&req.user_id, &req.idempotency_key) {
            if let Some(f) = self.in_flight.get_mut(&existing) {
                if let FlightState::Creating(saga) = &f.state {
                    if saga.items == req.items {
                        f.waiters.push(reply);
                    } else {
                        self.replies
                            .push(Deferred::Order(reply, Err(EngineError::IdempotencyConflict { order_id: existing })));
                    }
                    return;
                }
            }
            if let Some(order) = self.orders.get(&existing) {
                let result = if order.same_items(&req.items) {
                    Ok(order.clone())
                } else {
                    Err(EngineError::IdempotencyConflict { order_id: existing })
                };
                self.replies.push(Deferred::Order(reply, result));
                return;
            }
        }
        if let Some(e) = fast_reject {
            self.replies.push(Deferred::Order(reply, Err(*e)));
            return;
        }
        if req.items.iter().all(|(sku_id, _)| shard_for_key(sku_id, self.shard_count) == self.id) {
            return self.run_local_saga(req, reply);
        }
        // The request's own string, trimmed to its length: no copy (issue 12: a `Box<str>` is a
        // 24-byte allocation for a typical key, an `Arc<str>` copy was 48).
        let key = req.idempotency_key.into_boxed_str();
        let order_id = OrderId(self.ids.next_id_at(self.now_ms));
        let n = req.items.len();
        for (i, (sku_id, qty)) in req.items.iter().enumerate() {
            let shard = shard_for_key(sku_id, self.shard_count);
            let msg = SkuMsg::Reserve {
                order_id,
                user_id: req.user_id.clone(),
                qty: *qty,
                item: i as u8,
                reply_shard: self.id,
            };
            self.send(shard, ShardMsg::Sku(sku_id.clone(), msg));
        }
        let saga = Saga {
            user_id: req.user_id,
            items: req.items,
            idempotency_key: key,
            grants: (0..n).map(|_| None).collect(),
            compensating: None,
        };
        let flight = InFlight {
            waiters: smallvec![reply],
            awaiting: (0..n).map(|i| i as u8).collect(),
            step: 0,
            since_ms: self.now_ms,
            state: FlightState::Creating(saga),
            queued: VecDeque::new(),
        };
        // After the saga is in flight: the index checks a hash hit against it. Borrowed from
        // the saga, not cloned: each clone of an `Arc` is a locked instruction, which also
        // waits for every store still in flight (issue 12: a third of this function's time).
        let (in_flight, orders) = (&mut self.in_flight, &self.orders);
        in_flight.insert(order_id, flight);
        if let Some(FlightState::Creating(saga)) = in_flight.get(&order_id).map(|f| &f.state) {
            let current = |other: OrderId| {
                pair_of(in_flight, orders, other).map(|(u, k)| *u == saga.user_id && k == &*saga.idempotency_key)
            };
            self.idempotency.insert(&saga.user_id, &saga.idempotency_key, order_id, current);
        }
    }

    /// The saga of an order whose SKUs all live on this shard, run to its end at once: reserve
    /// item by item, and on the first rejection release what was granted (newest first) and
    /// answer it; otherwise create the order. The journal gets the same events, in the same
    /// order, as the message path would write for it, and the outcome is the one the message
    /// path gives (the first rejection in item order), but no order enters `in_flight`, no
    /// message is built and no answer is waited for (issue 12; side by side the saving was
    /// within this machine's noise, so this is kept for doing less, not for a measured gain).
    /// Nothing can join a saga that never waits, so its idempotency record is written once the
    /// order exists.
    fn run_local_saga(&mut self, req: CreateOrder, reply: Reply<Arc<Order>>) {
        let order_id = OrderId(self.ids.next_id_at(self.now_ms));
        let mut grants: SmallVec<[Option<Result<Grant, EngineError>>; 1]> = SmallVec::with_capacity(req.items.len());
        let mut rejection = None;
        for (sku_id, qty) in &req.items {
            match self.reserve_here(sku_id, order_id, &req.user_id, *qty) {
                Ok(grant) => grants.push(Some(Ok(grant))),
                Err(e) => {
                    rejection = Some(e);
                    break;
                }
            }
        }
        let saga = Saga {
            user_id: req.user_id,
            items: req.items,
            idempotency_key: req.idempotency_key.into_boxed_str(),
            grants,
            compensating: None,
        };
        let result = match rejection.map_or_else(|| order_total(&saga), Err) {
            Err(e) => {
                // Newest first, as compensation over messages releases.
                for (sku_id, _) in saga.items[..saga.grants.len()].iter().rev() {
                    self.release_here(sku_id, order_id);
                }
                Err(e)
            }
            Ok(total) => {
                let order = self.build_order(order_id, saga, total);
                self.apply_order_created(order.clone());
                self.record_idempotency(order_id, &order.user_id, &order.idempotency_key);
                Ok(order)
            }
        };
        self.replies.push(Deferred::Order(reply, result));
    }

    /// Every answer for an in-flight order is in: finish the saga step or the transition.
    pub(super) fn land(&mut self, order_id: OrderId) {
        let Some(f) = self.in_flight.remove(&order_id) else {
            return;
        };
        let InFlight { waiters, state, queued, .. } = f;
        match state {
            FlightState::Effect(order) => {
                for w in waiters {
                    self.replies.push(Deferred::Order(w, Ok(order.clone())));
                }
            }
            FlightState::Creating(mut saga) => {
                if let Some(err) = saga.compensating.take().map(|e| *e) {
                    self.idempotency.remove(&saga.user_id, &saga.idempotency_key, order_id);
                    for w in waiters {
                        self.replies.push(Deferred::Order(w, Err(err.clone())));
                    }
                } else {
                    // A total that would overflow is a rejection like any other: compensate.
                    match first_rejection(&saga).map_or_else(|| order_total(&saga), Err) {
                        Err(err) => {
                            let awaiting = self.reject_saga(order_id, &mut saga, err.clone());
                            if !awaiting.is_empty() {
                                let state = FlightState::Creating(saga);
                                let since_ms = self.now_ms;
                                let flight = InFlight { waiters, awaiting, step: 0, since_ms, state, queued };
                                self.in_flight.insert(order_id, flight);
                                return;
                            }
                            for w in waiters {
                                self.replies.push(Deferred::Order(w, Err(err.clone())));
                            }
                        }
                        Ok(total) => {
                            let order = self.build_order(order_id, saga, total);
                            for w in waiters {
                                self.replies.push(Deferred::Order(w, Ok(order.clone())));
                            }
                            self.apply_order_created(order);
                        }
                    }
                }
            }
        }
        for m in queued {
            self.handle_order(order_id, m);
        }
    }

    /// The order a fully granted saga creates, with its `total` ([`order_total`]): the saga's
    /// user id, key, SKU ids and names move into it ([`order::build_order`]), no `Arc` cloned.
    fn build_order(&self, order_id: OrderId, saga: Saga, total: rust_decimal::Decimal) -> Arc<Order> {
        let now = self.now_ms;
        let deadline = now.saturating_add(ms_i64(self.config.payment_timeout_ms));
        let Saga { user_id, items, idempotency_key, grants, .. } = saga;
        let lines = items.into_iter().zip(grants).filter_map(|((sku_id, qty), grant)| match grant {
            Some(Ok(g)) => Some((sku_id, qty, g)),
            _ => None,
        });
        order::build_order(order_id, user_id, idempotency_key, lines, total, now, deadline)
    }

    /// A saga failed with `err`. If nothing was granted, forget its key and return no items
    /// (answer at once). Otherwise start compensation (release every grant, newest first; the
    /// answer waits for the releases) and return the items whose release is awaited.
    pub(super) fn reject_saga(&mut self, order_id: OrderId, saga: &mut Saga, err: EngineError) -> SmallVec<[u8; 2]> {
        let granted: SmallVec<[(u8, SkuId); 2]> = saga
            .items
            .iter()
            .zip(&saga.grants)
            .enumerate()
            .filter(|(_, (_, g))| matches!(g, Some(Ok(_))))
            .map(|(i, ((s, _), _))| (i as u8, s.clone()))
            .collect();
        if granted.is_empty() {
            self.idempotency.remove(&saga.user_id, &saga.idempotency_key, order_id);
            return SmallVec::new();
        }
        for (item, sku_id) in granted.iter().rev() {
            let msg = SkuMsg::Release { order_id, item: *item, step: 0, reply_shard: self.id };
            self.send(shard_for_key(sku_id, self.shard_count), ShardMsg::Sku(sku_id.clone(), msg));
        }
        saga.compensating = Some(Box::new(err));
        granted.into_iter().map(|(i, _)| i).collect()
    }

    /// Install a created order: actor, read models, deadline timer, journal (the saga already
    /// recorded its idempotency key).
    pub(super) fn apply_order_created(&mut self, order: Arc<Order>) {
        let id = order.order_id;
        // The saga recorded the idempotency key when it started; the read models get the order
        // when the batch is durable.
        self.timers.insert((order.payment_deadline_ms, id, TimerKind::PaymentDeadline));
        self.orders.insert(id, order.clone());
        self.changed_orders.push((order.clone(), true));
        self.counters.order_created();
        self.events.push(Event::Order(OrderEvent::Created(order)));
    }
}

/// The total of a fully granted saga's order.
///
/// # Errors
/// `invalid_request` if a subtotal or the total overflows `Decimal` ([`order::order_total`]).
fn order_total(saga: &Saga) -> Result<rust_decimal::Decimal, EngineError> {
    let lines = saga.items.iter().zip(&saga.grants).filter_map(|((sku_id, qty), grant)| match grant {
        Some(Ok(g)) => Some((sku_id, *qty, g.unit_price)),
        _ => None,
    });
    order::order_total(lines)
}

fn first_rejection(saga: &Saga) -> Option<EngineError> {
    saga.grants.iter().find_map(|g| match g {
        Some(Err(e)) => Some(e.clone()),
        None => Some(EngineError::ShuttingDown),
        Some(Ok(_)) => None,
    })
}
