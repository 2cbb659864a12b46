//! The SKU actors' side of a shard: create, update, adjust, and the saga steps (reserve,
//! confirm, release, restock, forget, remember) that order actors ask for.

use std::sync::Arc;

use super::{Deferred, OrderMsg, ShardCore, ShardMsg, SkuMsg};
use crate::domain::{OrderId, SkuId, SkuSpec, SkuView};
use crate::error::{EngineError, EngineResult};
use crate::event::{sku_id_of, Event, SkuEvent};
use crate::sku::{SkuActor, SkuState};

impl ShardCore {
    /// Handle one message to the SKU actor `sku_id`.
    pub(super) fn handle_sku(&mut self, sku_id: SkuId, msg: SkuMsg) {
        let unknown = || EngineError::UnknownSku { sku_id: sku_id.to_string() };
        match msg {
            SkuMsg::Create(spec, reply) => {
                let result = self.create_sku(&sku_id, *spec);
                self.replies.push(Deferred::Sku(reply, Box::new(result)));
            }
            SkuMsg::Update(update, reply) => {
                let result = match self.skus.get(&sku_id).map(|a| a.decide_update(*update)) {
                    None => Err(unknown()),
                    Some(event) => {
                        self.apply_sku(event);
                        self.skus.get(&sku_id).map(|a| a.view()).ok_or_else(unknown)
                    }
                };
                self.replies.push(Deferred::Sku(reply, Box::new(result)));
            }
            SkuMsg::Adjust { adjustment_id, delta, reason, reply } => {
                let result = match self.skus.get(&sku_id).map(|a| a.decide_adjust(&adjustment_id, delta, &reason)) {
                    None => Err(unknown()),
                    Some(Err(e)) => Err(e),
                    Some(Ok(event)) => {
                        // `None`: a retry of an adjustment already applied; answer the SKU as is.
                        if let Some(event) = event {
                            self.apply_sku(event);
                        }
                        self.skus.get(&sku_id).map(|a| a.view()).ok_or_else(unknown)
                    }
                };
                self.replies.push(Deferred::Sku(reply, Box::new(result)));
            }
            SkuMsg::Reserve { order_id, user_id, qty, item, reply_shard } => {
                let result = self.reserve_here(&sku_id, order_id, &user_id, qty);
                if result.is_ok() {
                    self.watch_reservation(order_id, &sku_id);
                }
                self.send(reply_shard, ShardMsg::Order(order_id, OrderMsg::Reserved { item, result }));
            }
            SkuMsg::Confirm { order_id, item, step, reply_shard } => {
                let event = self.skus.get(&sku_id).and_then(|a| a.decide_confirm(order_id));
                self.stock_done(event, order_id, (item, step), reply_shard);
            }
            SkuMsg::Release { order_id, item, step, reply_shard } => {
                let event = self.skus.get(&sku_id).and_then(|a| a.decide_release(order_id));
                self.stock_done(event, order_id, (item, step), reply_shard);
            }
            SkuMsg::Forget { order_id } => {
                if let Some(e) = self.skus.get(&sku_id).and_then(|a| a.decide_forget(order_id)) {
                    self.apply_sku(e);
                }
            }
            SkuMsg::Remember { order_id, user_id, qty } => {
                if let Some(e) = self.skus.get(&sku_id).and_then(|a| a.decide_remember(order_id, &user_id, qty)) {
                    self.apply_sku(e);
                }
            }
            SkuMsg::Verdict { order_id, claim } => self.settle_claim(&sku_id, order_id, claim),
            SkuMsg::Restock { order_id, item, step, reply_shard } => {
                let event = self.skus.get(&sku_id).and_then(|a| a.decide_restock(order_id));
                self.stock_done(event, order_id, (item, step), reply_shard);
            }
        }
    }

    /// Reserve `qty` units of the SKU actor `sku_id` (on this shard) for `order_id`, and apply
    /// and journal the reservation; a retry for an order that already holds them is granted
    /// again without a new event.
    ///
    /// # Errors
    /// `unknown_sku` and the rejections of [`SkuState::decide_reserve`].
    pub(super) fn reserve_here(
        &mut self,
        sku_id: &SkuId,
        order_id: OrderId,
        user_id: &crate::domain::UserId,
        qty: u32,
    ) -> EngineResult<crate::sku::Grant> {
        let Some(actor) = self.skus.get(sku_id) else {
            return Err(EngineError::UnknownSku { sku_id: sku_id.to_string() });
        };
        let (grant, event) = actor.state().decide_reserve(order_id, user_id, qty, self.now_ms)?;
        if let Some(e) = event {
            self.apply_sku(e);
        }
        Ok(grant)
    }

    /// Release `order_id`'s reservation on the SKU actor `sku_id` (on this shard); nothing if
    /// it holds none (idempotent).
    pub(super) fn release_here(&mut self, sku_id: &SkuId, order_id: OrderId) {
        if let Some(event) = self.skus.get(sku_id).and_then(|a| a.decide_release(order_id)) {
            self.apply_sku(event);
        }
    }

    /// `create_sku`: a new SKU actor, unless the id is taken.
    fn create_sku(&mut self, sku_id: &SkuId, spec: SkuSpec) -> EngineResult<SkuView> {
        if self.skus.contains_key(sku_id) {
            return Err(EngineError::SkuAlreadyExists { sku_id: sku_id.to_string() });
        }
        let event = SkuEvent::Created {
            sku_id: sku_id.clone(),
            name: Arc::from(spec.name),
            price: spec.price,
            initial_stock: spec.initial_stock,
            rules: spec.rules,
        };
        self.apply_sku(event);
        self.skus.get(sku_id).map(|a| a.view()).ok_or_else(|| EngineError::UnknownSku { sku_id: sku_id.to_string() })
    }

    /// Apply a confirm/release/restock (none if it was already done: idempotent) and tell the
    /// order actor.
    fn stock_done(&mut self, event: Option<SkuEvent>, order_id: OrderId, (item, step): (u8, u32), reply_shard: usize) {
        if let Some(e) = event {
            self.apply_sku(e);
        }
        self.send(reply_shard, ShardMsg::Order(order_id, OrderMsg::StockDone { item, step }));
    }

    /// Apply a SKU event to its actor (creating it for `Created`), mark it for publication at
    /// the end of the batch, and journal it.
    pub(super) fn apply_sku(&mut self, event: SkuEvent) {
        if self.config.outbox && !matches!(event, SkuEvent::Reserved { .. } | SkuEvent::Confirmed { .. }) {
            let sku_id = sku_id_of(&event);
            if !self.outbox_skus.contains(sku_id) {
                self.outbox_skus.push(sku_id.clone());
            }
        }
        if let SkuEvent::Created { sku_id, .. } = &event {
            if let Some(mut actor) = SkuState::from_created(&event).map(|st| SkuActor::new(st, self.id, false)) {
                // A SKU holds at most one holding per unit: room for the expected orders.
                let stock = actor.state().view().stocked_total;
                actor.reserve_holdings(stock.min(self.config.live_orders_expected) as usize);
                self.skus.insert(sku_id.clone(), actor);
                self.dirty_skus.push(sku_id.clone());
            }
        } else if let Some(actor) = self.skus.get_mut(sku_id_of(&event)) {
            if actor.apply(&event) {
                self.dirty_skus.push(sku_id_of(&event).clone());
            }
        }
        self.events.push(Event::Sku(event));
    }
}
