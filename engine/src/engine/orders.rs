//! Order commands: validated here, then sent to the user's shard (`create_order`, a saga) or
//! the order's shard (transitions through the state machine).

use std::sync::Arc;

use rust_decimal::Decimal;

use crate::domain::{CreateOrder, DisputeResolution, Initiator, Order, OrderId, TransitionOptions};
use crate::error::{EngineError, EngineResult};
use crate::order::OrderCommand;
use crate::pending::Pending;
use crate::reply::{BatchReply, Reply};
use crate::routing::shard_for_key;
use crate::shard::{OrderMsg, ShardMsg};
use crate::sku::SkuShared;
use crate::snowflake::shard_of;
use crate::state_machine::OrderEventKind;

use super::{check_text, Engine, IDEMPOTENCY_KEY_BYTES_MAX, ID_BYTES_MAX, TEXT_BYTES_MAX};

/// Most create requests in one mailbox message of [`Engine::create_orders`] (TigerBeetle's
/// 8,189 events per request, rounded to a power of two).
pub const CREATE_BATCH_MAX: usize = 8_192;

impl Engine {
    /// Validate a create request without running it.
    fn check_create(&self, req: &CreateOrder) -> EngineResult<()> {
        let cfg = &self.inner.config;
        check_text("user_id", &req.user_id, ID_BYTES_MAX)?;
        check_text("idempotency_key", &req.idempotency_key, IDEMPOTENCY_KEY_BYTES_MAX)?;
        if req.items.is_empty() || req.items.len() > cfg.order_items_max {
            return Err(EngineError::invalid(format!("an order has 1..={} items", cfg.order_items_max)));
        }
        for (i, (sku_id, qty)) in req.items.iter().enumerate() {
            check_text("sku_id", sku_id, ID_BYTES_MAX)?;
            if *qty == 0 || *qty > cfg.item_qty_max {
                return Err(EngineError::invalid(format!("qty must be 1..={}", cfg.item_qty_max)));
            }
            if req.items[..i].iter().any(|(s, _)| s == sku_id) {
                return Err(EngineError::invalid(format!("sku {sku_id} appears twice")));
            }
        }
        Ok(())
    }

    /// Create an order: reserve every line item (a saga), snapshot prices, compute the total.
    ///
    /// Idempotent by `(user_id, idempotency_key)`: a retry with the same items returns the same
    /// order. Business rejections are not recorded, so a retry after `sold_out` runs again.
    ///
    /// # Errors
    /// `invalid_request`; `unknown_sku`, `sold_out`, `insufficient_stock`,
    /// `purchase_limit_exceeded`, `sale_not_started`, `sale_ended`, `sku_paused` (the first
    /// rejection in item order, with its sku_id; nothing stays reserved); `idempotency_conflict`;
    /// `overloaded`.
    pub fn create_order(&self, req: CreateOrder) -> Pending<Arc<Order>> {
        if let Err(e) = self.check_create(&req) {
            return Pending::ready(Err(e));
        }
        let fast_reject = match self.fast_path(&req, self.inner.clock.now_ms()) {
            Ok(fast_reject) => fast_reject,
            Err(e) => return Pending::ready(Err(e)),
        };
        let shard = shard_for_key(&req.user_id, self.inner.shard_count);
        self.submit(shard, |r| ShardMsg::CreateOrder(req, r, fast_reject.map(Box::new)))
    }

    /// The sold-out fast path: the first item's published counters and rules decide a rejection
    /// without a round trip to its SKU actor (which stays the authority). Only the first item,
    /// so the answer is still the first rejection in item order.
    ///
    /// `Err`: answer it now, on the caller's thread: the user has no idempotency record (the
    /// [`crate::user_filter::UserFilter`] says so), so no earlier request of theirs can be the
    /// answer. `Ok(Some)`: a rejection the user's shard gives unless the request is a retry of
    /// an order it knows (a retry of the order that took the last unit gets its order, not
    /// `sold_out`). `Ok(None)`: run the saga. Either `Ok` marks the user first.
    fn fast_path(&self, req: &CreateOrder, now_ms: i64) -> Result<Option<EngineError>, EngineError> {
        // Borrowed, not cloned: an `Arc` clone is a locked add on a line every caller shares.
        self.inner.read.skus.with(&req.items[0].0, |sku| self.fast_path_with(req, sku, now_ms))
    }

    /// [`Engine::fast_path`] with the first item's published SKU already looked up (`None`:
    /// unknown).
    fn fast_path_with(
        &self,
        req: &CreateOrder,
        sku: Option<&SkuShared>,
        now_ms: i64,
    ) -> Result<Option<EngineError>, EngineError> {
        let fast_reject = match sku {
            // A SKU hosted by another cluster node is not published here: its actor decides.
            None if !self.hosts(self.sku_shard(&req.items[0].0)) => None,
            None => Some(EngineError::UnknownSku { sku_id: req.items[0].0.to_string() }),
            Some(s) => s.fast_reject(now_ms),
        };
        let users = &self.inner.read.users;
        match fast_reject {
            Some(e) if !users.may_contain(&req.user_id) => Err(e),
            Some(e) => Ok(Some(e)),
            None => {
                users.insert(&req.user_id);
                Ok(None)
            }
        }
    }

    /// Create many orders with one mailbox message (and one wake-up) per shard instead of one
    /// per order: batched submission (TigerBeetle batches up to 8,189 events per request).
    /// Returns one answer per request, in request order; each request is handled exactly as
    /// [`Engine::create_order`] handles it (validation, the sold-out fast path, idempotency),
    /// and requests for one shard are handled in the order given. Batches larger than
    /// [`CREATE_BATCH_MAX`] go as several messages.
    ///
    /// ```
    /// use surge_engine::{CreateOrder, Engine, EngineConfig, SaleRules, SkuSpec};
    /// use rust_decimal::Decimal;
    /// let engine = Engine::in_memory(EngineConfig::default()).unwrap();
    /// let spec = SkuSpec {
    ///     sku_id: "tea".into(), name: "Tea".into(), price: Decimal::ONE,
    ///     initial_stock: 1, rules: SaleRules::default(),
    /// };
    /// engine.create_sku(spec).wait().unwrap();
    /// let answers = engine.create_orders(vec![
    ///     CreateOrder::new("ann", &[("tea", 1)], "k1"),
    ///     CreateOrder::new("bob", &[("tea", 1)], "k1"),
    /// ]);
    /// let codes: Vec<_> = answers.into_iter().map(|p| p.wait().map(|_| "ok").unwrap_or_else(|e| e.code())).collect();
    /// assert_eq!(codes.iter().filter(|c| **c == "ok").count(), 1); // one unit, one order
    /// ```
    ///
    /// The answers a shard gives arrive together, when the last of that shard's requests in
    /// the batch is answered: one wake-up per shard, not one per request.
    ///
    /// # Errors
    /// Each answer as [`Engine::create_order`]'s; `overloaded` for every request of a shard
    /// whose mailbox is full.
    pub fn create_orders(&self, reqs: Vec<CreateOrder>) -> Vec<Pending<Arc<Order>>> {
        let n = self.inner.shard_count;
        // First pass: answer what the caller's thread can, route the rest. `Err(shard)` marks a
        // request routed to `shard`, to be answered through that shard's batch.
        let mut answers: Vec<Result<Pending<Arc<Order>>, usize>> = Vec::with_capacity(reqs.len());
        let mut routed: Vec<Vec<(CreateOrder, Option<EngineError>)>> = (0..n).map(|_| Vec::new()).collect();
        let now = self.inner.clock.now_ms();
        // The first item's published SKU, kept while consecutive requests name the same one: a
        // flash sale's batch is one SKU, and each lookup is a lock and a string hash.
        let mut last_sku: Option<Arc<SkuShared>> = None;
        for req in &reqs {
            self.inner.read.users.prefetch(&req.user_id);
        }
        for req in reqs {
            let checked = self.check_create(&req).and_then(|()| {
                let first = &*req.items[0].0;
                if last_sku.as_ref().is_none_or(|s| &*s.sku_id != first) {
                    last_sku = self.inner.read.skus.get(first);
                }
                self.fast_path_with(&req, last_sku.as_deref(), now)
            });
            let fast_reject = match checked {
                Ok(fast_reject) => fast_reject,
                Err(e) => {
                    answers.push(Ok(Pending::ready(Err(e))));
                    continue;
                }
            };
            let shard = shard_for_key(&req.user_id, n);
            routed[shard].push((req, fast_reject));
            answers.push(Err(shard));
        }
        // Second pass: one reply batch and one mailbox message per shard (several past
        // `CREATE_BATCH_MAX`).
        let batches: Vec<Option<Arc<BatchReply<Arc<Order>>>>> =
            routed.iter().map(|r| (!r.is_empty()).then(|| BatchReply::new(r.len()))).collect();
        for (shard, reqs) in routed.into_iter().enumerate() {
            let Some(batch) = &batches[shard] else { continue };
            let mut msgs = Vec::with_capacity(reqs.len().min(CREATE_BATCH_MAX));
            for (i, (req, fast_reject)) in reqs.into_iter().enumerate() {
                msgs.push(ShardMsg::CreateOrder(req, Reply::Slot(batch.slot(i as u32)), fast_reject.map(Box::new)));
                if msgs.len() == CREATE_BATCH_MAX {
                    self.submit_batch(shard, std::mem::take(&mut msgs));
                }
            }
            if !msgs.is_empty() {
                self.submit_batch(shard, msgs);
            }
        }
        let mut next_slot = vec![0u32; n];
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|shard| {
                    let index = next_slot[shard];
                    next_slot[shard] += 1;
                    match &batches[shard] {
                        Some(batch) => Pending::slot(batch.clone(), index),
                        None => Pending::ready(Err(EngineError::ShuttingDown)),
                    }
                })
            })
            .collect()
    }

    fn command(&self, order_id: OrderId, cmd: OrderCommand) -> Pending<Arc<Order>> {
        if let Some(reason) = &cmd.opts.reason {
            if reason.len() > TEXT_BYTES_MAX {
                return Pending::ready(Err(EngineError::invalid("reason must be at most 256 bytes")));
            }
        }
        let shard = shard_of(order_id.0, self.inner.shard_count);
        self.submit(shard, |r| ShardMsg::Order(order_id, OrderMsg::Command(Box::new(cmd), Some(r))))
    }

    /// Move an order by an event that takes no parameters (`cancel`, `start_packing`,
    /// `deliver`, `complete`, `request_refund`, `confirm_refund`, `reject_refund`,
    /// `open_dispute`), as `by`.
    ///
    /// # Errors
    /// `unknown_order`, `invalid_transition` (with from and event), `version_conflict`,
    /// `invalid_request` for events that need parameters (use [`Engine::pay`],
    /// [`Engine::ship`], [`Engine::resolve_dispute`]) or are the engine's own
    /// (`payment_deadline`, `auto_complete`).
    pub fn transition(
        &self,
        order_id: OrderId,
        event: OrderEventKind,
        by: Initiator,
        opts: TransitionOptions,
    ) -> Pending<Arc<Order>> {
        use OrderEventKind as E;
        if matches!(event, E::Pay | E::Ship | E::ResolveDispute | E::PaymentDeadline | E::AutoComplete) {
            return Pending::ready(Err(EngineError::invalid(format!("{event} cannot be sent through transition()"))));
        }
        self.command(order_id, OrderCommand { opts, ..OrderCommand::new(event, by) })
    }

    /// Payment callback from the PSP. Idempotent by `payment_id`: the same payment twice is
    /// acknowledged once.
    ///
    /// # Errors
    /// `amount_mismatch` (amount ≠ total), `already_paid` (a *different* payment for a paid
    /// order: refund it), `order_not_payable` (canceled or otherwise closed: refund it),
    /// `unknown_order`, `version_conflict`, `invalid_request`.
    pub fn pay(
        &self,
        order_id: OrderId,
        payment_id: &str,
        amount: Decimal,
        opts: TransitionOptions,
    ) -> Pending<Arc<Order>> {
        if let Err(e) = check_text("payment_id", payment_id, ID_BYTES_MAX) {
            return Pending::ready(Err(e));
        }
        let cmd = OrderCommand {
            opts,
            payment: Some((Box::from(payment_id), amount)),
            ..OrderCommand::new(OrderEventKind::Pay, Initiator::Psp)
        };
        self.command(order_id, cmd)
    }

    /// Cancel an unpaid order (user or admin); its reservations are released before the reply.
    ///
    /// # Errors
    /// As [`Engine::transition`].
    pub fn cancel_order(&self, order_id: OrderId, by: Initiator, opts: TransitionOptions) -> Pending<Arc<Order>> {
        self.transition(order_id, OrderEventKind::Cancel, by, opts)
    }

    /// Hand a paid or packing order to the carrier.
    ///
    /// # Errors
    /// As [`Engine::transition`]; `invalid_request` for an empty or long tracking number.
    pub fn ship(&self, order_id: OrderId, tracking_number: &str, opts: TransitionOptions) -> Pending<Arc<Order>> {
        if let Err(e) = check_text("tracking_number", tracking_number, TEXT_BYTES_MAX) {
            return Pending::ready(Err(e));
        }
        let cmd = OrderCommand {
            opts,
            tracking_number: Some(Box::from(tracking_number)),
            ..OrderCommand::new(OrderEventKind::Ship, Initiator::Admin)
        };
        self.command(order_id, cmd)
    }

    /// Resolve a dispute: to `completed` or to `refunding`.
    ///
    /// # Errors
    /// As [`Engine::transition`].
    pub fn resolve_dispute(
        &self,
        order_id: OrderId,
        resolution: DisputeResolution,
        opts: TransitionOptions,
    ) -> Pending<Arc<Order>> {
        let cmd = OrderCommand {
            opts,
            resolution: Some(resolution),
            ..OrderCommand::new(OrderEventKind::ResolveDispute, Initiator::Admin)
        };
        self.command(order_id, cmd)
    }
}
