//! A clustered shard's safety nets for messages lost with a node (issue 16; see
//! [`crate::cluster`]). Messages between partitions on different nodes travel over the network
//! and can be lost when a node dies or a partition moves. Two rules keep that from stranding
//! stock or a caller:
//!
//! * **An order's step waits at most `saga_timeout_ms` for its callers.** A create-order saga
//!   still waiting then is given up: its callers get `unavailable` (outcome unknown: retry with
//!   the same key), its idempotency record is dropped and every item it asked for is released
//!   (fire and forget; duplicates and late answers change nothing). A stock step (confirm,
//!   release, restock of a transition already journaled) answers its callers `unavailable`
//!   too, but is not given up: its messages go again to the items not yet answered, every
//!   `saga_timeout_ms`, until each is (the SKU's handlers are idempotent).
//! * **A partition taken over re-sends its refunds' restocks.** A restock lost with the old
//!   owner would leave sold units of a refunded order that nothing else revisits (the checks
//!   below look at reservations only), so the new owner sends the restock of every refunded,
//!   unshipped order once (a SKU without the sold holding does nothing).
//! * **A reservation for another partition's order is checked after `saga_timeout_ms`.** The
//!   SKU asks the order's partition ([`Claim`]): an order that does not exist (its saga was
//!   given up, or never durable) or holds nothing gets the units released; a paid one gets
//!   them confirmed; a pending one is asked again after its payment deadline; a step under way
//!   is asked again later. So a failover in the middle of a saga never strands stock for long,
//!   and never oversells: the order's partition answers from its replayed state, and an order
//!   it does not know can no longer be created (its saga is gone with its old owner, whose
//!   appends are fenced).
//!
//! Reservations of the SKU's own partition need neither: their saga and order are journaled in
//! the same partition log, and recovery reconciles them
//! ([`crate::EngineState::reconcile_partition`]).

use std::sync::Arc;

use smallvec::SmallVec;

use super::saga::{FlightState, InFlight};
use super::{Claim, Deferred, OrderMsg, ShardCore, ShardMsg, SkuMsg};
use crate::config::ms_i64;
use crate::domain::{Order, OrderId, OrderStatus, SkuId};
use crate::error::EngineError;
use crate::routing::shard_for_key;
use crate::snowflake::shard_of;

/// After asking, ask again this many timeouts later if no verdict came (it may be lost too).
const VERIFY_FALLBACK_TIMEOUTS: i64 = 6;

impl ShardCore {
    fn saga_timeout(&self) -> i64 {
        ms_i64(self.config.saga_timeout_ms).max(1)
    }

    /// A tick's cluster work: arm checks of recovered reservations (once), give up stale steps,
    /// ask about due reservations.
    pub(super) fn cluster_tick(&mut self) {
        if !self.config.clustered {
            return;
        }
        if !self.verify_armed {
            self.verify_armed = true;
            self.watch_recovered_reservations();
            self.resend_recovered_restocks();
        }
        if self.now_ms >= self.next_sweep_ms {
            self.next_sweep_ms = self.now_ms.saturating_add(self.saga_timeout() / 4);
            self.give_up_stale_steps();
        }
        self.ask_due_verifications();
    }

    /// Each step in flight, described (the simulator names what still waits).
    #[cfg(any(test, feature = "sim"))]
    pub fn flights(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .in_flight
            .iter()
            .map(|(id, f)| {
                let kind = match &f.state {
                    FlightState::Creating(_) => "saga".to_owned(),
                    FlightState::Effect(o) => format!("{} step", o.status),
                };
                format!("order {id} {kind} {} since {} awaiting {:?}", f.step, f.since_ms, f.awaiting)
            })
            .collect();
        out.sort();
        out
    }

    /// Whether a reservation check is due at `now_ms` (the simulator settles until none is).
    #[cfg(any(test, feature = "sim"))]
    pub fn verification_due(&self, now_ms: i64) -> bool {
        self.verify.first().is_some_and(|(at, _, _)| *at <= now_ms)
    }

    /// Check a reservation this SKU granted to another partition's order, `saga_timeout_ms`
    /// from now.
    pub(super) fn watch_reservation(&mut self, order_id: OrderId, sku_id: &SkuId) {
        if self.config.clustered && shard_of(order_id.0, self.shard_count) != self.id {
            let at = self.now_ms.saturating_add(self.saga_timeout());
            self.verify.insert((at, order_id, sku_id.clone()));
        }
    }

    /// Every reservation of another partition's order in recovered state: checked after one
    /// timeout (their sagas may have died with the old owner).
    fn watch_recovered_reservations(&mut self) {
        let at = self.now_ms.saturating_add(self.saga_timeout());
        for (sku_id, actor) in &self.skus {
            for (order_id, _, _, sold) in actor.state().holdings() {
                if !sold && shard_of(order_id.0, self.shard_count) != self.id {
                    self.verify.insert((at, order_id, sku_id.clone()));
                }
            }
        }
    }

    /// Restock again every refunded order that was not shipped (see the module docs), as a
    /// stock step in flight: sent again every `saga_timeout_ms` until every item answered.
    fn resend_recovered_restocks(&mut self) {
        let mut refunded: Vec<Arc<Order>> = self
            .orders
            .values()
            .filter(|o| o.status == OrderStatus::Refunded && !o.shipped && !self.in_flight.contains_key(&o.order_id))
            .cloned()
            .collect();
        refunded.sort_unstable_by_key(|o| o.order_id);
        for o in refunded {
            let all: SmallVec<[u8; 2]> = (0..o.items.len()).map(|i| i as u8).collect();
            self.send_stock_step(&o, &all);
            let flight = InFlight {
                waiters: SmallVec::new(),
                awaiting: all,
                step: o.version,
                since_ms: self.now_ms,
                state: FlightState::Effect(o.clone()),
                queued: std::collections::VecDeque::new(),
            };
            self.in_flight.insert(o.order_id, flight);
        }
    }

    fn give_up_stale_steps(&mut self) {
        let deadline = self.now_ms.saturating_sub(self.saga_timeout());
        let mut stale: Vec<OrderId> =
            self.in_flight.iter().filter(|(_, f)| f.since_ms <= deadline).map(|(id, _)| *id).collect();
        // In id order: the same run gives up the same steps in the same order (the simulator).
        stale.sort_unstable();
        for order_id in stale {
            self.give_up(order_id);
        }
    }

    /// Give up `order_id`'s saga, or answer its stock step's callers and send the step's
    /// messages again (see the module docs).
    fn give_up(&mut self, order_id: OrderId) {
        let err = EngineError::Unavailable { retry_after_ms: 100 };
        if let Some(f) = self.in_flight.get_mut(&order_id) {
            if let FlightState::Effect(order) = &f.state {
                let (order, awaiting) = (order.clone(), f.awaiting.clone());
                f.since_ms = self.now_ms;
                for w in std::mem::take(&mut f.waiters) {
                    self.replies.push(Deferred::Order(w, Err(err.clone())));
                }
                self.send_stock_step(&order, &awaiting);
                return;
            }
        }
        let Some(f) = self.in_flight.remove(&order_id) else { return };
        tracing::warn!(order_id = order_id.0, "a saga waited past saga_timeout_ms; given up");
        for w in f.waiters {
            self.replies.push(Deferred::Order(w, Err(err.clone())));
        }
        if let FlightState::Creating(saga) = f.state {
            self.idempotency.remove(&saga.user_id, &saga.idempotency_key, order_id);
            for (i, (sku_id, _)) in saga.items.iter().enumerate() {
                let msg = SkuMsg::Release { order_id, item: i as u8, step: 0, reply_shard: self.id };
                self.send(shard_for_key(sku_id, self.shard_count), ShardMsg::Sku(sku_id.clone(), msg));
            }
        }
        for m in f.queued {
            self.handle_order(order_id, m);
        }
    }

    fn ask_due_verifications(&mut self) {
        for _ in 0..self.config.timers_per_tick_max {
            let due = self.verify.first().is_some_and(|(at, _, _)| *at <= self.now_ms);
            let Some((_, order_id, sku_id)) = due.then(|| self.verify.pop_first()).flatten() else {
                break;
            };
            let reserved = self.skus.get(&sku_id).and_then(|a| a.state().holding_sold(order_id)) == Some(false);
            if !reserved {
                continue;
            }
            let again = self.now_ms.saturating_add(VERIFY_FALLBACK_TIMEOUTS * self.saga_timeout());
            self.verify.insert((again, order_id, sku_id.clone()));
            let msg = OrderMsg::Verify { sku_id, reply_shard: self.id };
            self.send(shard_of(order_id.0, self.shard_count), ShardMsg::Order(order_id, msg));
        }
    }

    /// The order's side: does `order_id` claim a holding at `sku_id`?
    pub(super) fn claim_of(&self, order_id: OrderId, sku_id: &SkuId) -> Claim {
        if self.in_flight.contains_key(&order_id) {
            return Claim::Waiting;
        }
        let Some(o) = self.orders.get(&order_id) else { return Claim::Nothing };
        let expected = o.items.iter().any(|i| i.sku_id == *sku_id).then(|| crate::state::expected_holding(o)).flatten();
        match expected {
            None => Claim::Nothing,
            Some(sold) => {
                Claim::Holds { sold, recheck_at_ms: o.payment_deadline_ms.saturating_add(self.saga_timeout()) }
            }
        }
    }

    /// The SKU's side: act on the order partition's verdict about `order_id`'s holding.
    pub(super) fn settle_claim(&mut self, sku_id: &SkuId, order_id: OrderId, claim: Claim) {
        let Some(actor) = self.skus.get(sku_id) else { return };
        let Some(sold) = actor.state().holding_sold(order_id) else { return };
        let event = match claim {
            Claim::Waiting => {
                let at = self.now_ms.saturating_add(self.saga_timeout());
                self.verify.insert((at, order_id, sku_id.clone()));
                None
            }
            Claim::Holds { sold: false, recheck_at_ms } => {
                let at = recheck_at_ms.max(self.now_ms.saturating_add(self.saga_timeout()));
                self.verify.insert((at, order_id, sku_id.clone()));
                None
            }
            Claim::Holds { sold: true, .. } if !sold => actor.decide_confirm(order_id),
            Claim::Nothing if !sold => {
                tracing::warn!(order_id = order_id.0, sku_id = %sku_id, "a reservation no order claims; released");
                actor.decide_release(order_id)
            }
            Claim::Holds { .. } | Claim::Nothing => None,
        };
        if let Some(e) = event {
            self.apply_sku(e);
        }
    }
}
