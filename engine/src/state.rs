//! [`EngineState`]: every actor's state as plain data, for snapshots and recovery.
//!
//! Recovery is event sourcing: start from a snapshot's `EngineState` (or an empty one), apply the
//! log's events in LSN order with [`EngineState::apply`], then [`EngineState::reconcile`] to
//! finish what a crash interrupted (release orphan reservations, redo a confirm or release that
//! an order's transition caused but whose SKU event never reached the log). The engine then
//! starts from the result ([`crate::EngineBuilder::state`]). Shard placement is recomputed from
//! ids, so the shard count may change between runs.
//!
//! ```
//! use surge_engine::{EngineState, Event, SkuEvent, SaleRules, Decimal};
//! let mut s = EngineState::default();
//! s.apply(&Event::Sku(SkuEvent::Created {
//!     sku_id: "A".into(), name: "A".into(), price: Decimal::ONE, initial_stock: 5,
//!     rules: SaleRules::default(),
//! }));
//! assert_eq!(s.skus["A"].view().available, 5);
//! assert!(s.reconcile().is_empty());
//! ```

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::{Order, OrderId, OrderStatus, SkuId};
use crate::event::{Event, OrderEvent, SkuEvent};
use crate::order;
pub use crate::sku::{SkuState, SkuStateV1};

/// All SKUs and live orders. Ordered maps, so iteration (and [`EngineState::digest`]) is
/// deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineState {
    /// Every SKU by id.
    pub skus: BTreeMap<SkuId, SkuState>,
    /// Every live order by id.
    pub orders: BTreeMap<OrderId, Arc<Order>>,
    /// Every user's wallet (issue 14; empty in snapshots written before wallets existed).
    #[serde(default)]
    pub wallets: crate::wallet::WalletBook,
}

/// An [`EngineState`] as format version 1 stored it (its SKUs before adjustment ids): the
/// persistence codec decodes v1 snapshots into it and converts with `EngineState::from`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineStateV1 {
    /// Every SKU by id, v1 layout.
    pub skus: BTreeMap<SkuId, SkuStateV1>,
    /// Every live order by id (unchanged since v1).
    pub orders: BTreeMap<OrderId, Arc<Order>>,
}

impl From<EngineStateV1> for EngineState {
    fn from(v: EngineStateV1) -> Self {
        Self {
            skus: v.skus.into_iter().map(|(k, st)| (k, st.into())).collect(),
            orders: v.orders,
            wallets: crate::wallet::WalletBook::default(),
        }
    }
}

/// The repair, if any, of `sku_id`'s holding (`sold` or reserved) for `order_id`, whose order is
/// `order` (live, or from the archive when `order_is_archived`; `None`: neither).
fn judge_holding(
    fixes: &mut Vec<SkuEvent>,
    sku_id: &SkuId,
    order_id: OrderId,
    sold: bool,
    order: Option<&Order>,
    order_is_archived: bool,
) {
    let want = order.and_then(|o| o.items.iter().any(|i| i.sku_id == *sku_id).then(|| expected_holding(o)).flatten());
    let is_archived = order.is_some() && order_is_archived;
    let sku_id = sku_id.clone();
    match (sold, want) {
        (false, None) => fixes.push(SkuEvent::Released { sku_id, order_id }),
        (true, None) => fixes.push(SkuEvent::Restocked { sku_id, order_id }),
        (false, Some(true)) => {
            fixes.push(SkuEvent::Confirmed { sku_id: sku_id.clone(), order_id });
            if is_archived {
                fixes.push(SkuEvent::Forgotten { sku_id, order_id });
            }
        }
        (true, Some(true)) if is_archived => fixes.push(SkuEvent::Forgotten { sku_id, order_id }),
        _ => {}
    }
}

/// What an order's line item must hold at its SKU: `None` nothing, `Some(false)` a reservation,
/// `Some(true)` sold units.
pub(crate) fn expected_holding(order: &Order) -> Option<bool> {
    use OrderStatus::*;
    match order.status {
        PendingPayment => Some(false),
        Canceled => None,
        Refunded if !order.shipped => None,
        Paid | Packing | Shipped | Delivered | Completed | Refunding | Disputed | Refunded => Some(true),
    }
}

impl EngineState {
    /// Apply one logged event. Events for unknown actors are ignored (they cannot occur in a log
    /// the engine wrote, whose `Created` events come first).
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Sku(e @ SkuEvent::Created { sku_id, .. }) => {
                if let Some(st) = SkuState::from_created(e) {
                    self.skus.insert(sku_id.clone(), st);
                }
            }
            Event::Sku(e) => {
                if let Some(st) = self.skus.get_mut(crate::event::sku_id_of(e)) {
                    st.apply(e);
                }
            }
            Event::Order(OrderEvent::Created(o)) => {
                self.orders.insert(o.order_id, o.clone());
            }
            Event::Order(OrderEvent::Archived(o)) => {
                self.orders.remove(&o.order_id);
            }
            Event::Order(OrderEvent::Restored(o)) => {
                self.orders.insert(o.order_id, o.clone());
            }
            Event::Order(e @ OrderEvent::Transitioned { order_id, .. }) => {
                if let Some(o) = self.orders.get_mut(order_id) {
                    *o = order::apply(o, e);
                }
            }
            // The outbox's copy of a change: the change itself is in the log beside it.
            Event::Outbox(_) => {}
            Event::Wallet(e) => {
                // The shard journals only events it applied itself, so this cannot fail on a
                // log the engine wrote; a log that disagrees with itself is reported, and the
                // audit then names the account.
                if let Err(err) = self.wallets.apply(e) {
                    tracing::error!(error = %err, "replay: a wallet event does not apply; the event is skipped");
                }
            }
        }
    }

    /// Finish every wallet payment a crash left between its try and its confirm or cancel:
    /// settle it if its order took the payment (`wallet:<transfer_id>`), else cancel it (issue
    /// 14). The shard journals a payment's try and confirm in one batch, so a log the engine
    /// wrote holds none; this is the rule for any that does.
    fn close_open_tries(&mut self, archived: &dyn Fn(OrderId) -> Option<Arc<Order>>) -> Vec<Event> {
        let open: Vec<_> =
            self.wallets.open_tries().map(|(u, id, t)| (u.clone(), id.clone(), t.order_id, t.at_ms)).collect();
        let mut out = Vec::with_capacity(open.len());
        for (user_id, transfer_id, order_id, at_ms) in open {
            let order = self.orders.get(&order_id).cloned().or_else(|| archived(order_id));
            let e = crate::wallet::tcc::close_try(user_id, transfer_id, order.as_deref(), at_ms);
            if self.wallets.apply(&e).is_ok() {
                out.push(Event::Wallet(e));
            }
        }
        out
    }

    /// Add another partial state (one shard's) to this one.
    pub fn merge(&mut self, other: EngineState) {
        self.skus.extend(other.skus);
        self.orders.extend(other.orders);
        self.wallets.users.extend(other.wallets.users);
    }

    /// Make every reservation match its order, as the saga would have finished it: release
    /// holdings of orders that never became durable (or were canceled), confirm those of paid
    /// orders, restock refunded goods that never shipped. Returns the events it applied, which
    /// the caller must log before serving. Knows no archive: see [`EngineState::reconcile_with`].
    pub fn reconcile(&mut self) -> Vec<Event> {
        self.reconcile_with(&|_| None)
    }

    /// [`EngineState::reconcile`], consulting `archived` (an order id → the archived order) for
    /// holdings whose order is not live.
    ///
    /// Archiving is two records: the order's shard logs `order_archived`, the SKU's shard logs
    /// `holding_forgotten` in a later group commit. A crash between them leaves a sold holding
    /// without a live order; without the archive it would look like an order that never
    /// existed and be restocked (oversell: issue 10, item 1). With it, the archived order's own
    /// status decides, exactly as for a live order: units that stay sold are forgotten
    /// (`Forgotten`, finishing the archiving), and only a canceled or refunded-before-shipping
    /// order gives its units back. `archived` is called only for holdings without a live order.
    ///
    /// ```
    /// use surge_engine::EngineState;
    /// let mut s = EngineState::default();
    /// assert!(s.reconcile_with(&|_| None).is_empty());
    /// ```
    pub fn reconcile_with(&mut self, archived: &dyn Fn(OrderId) -> Option<Arc<Order>>) -> Vec<Event> {
        self.reconcile_filtered(archived, &|_| true)
    }

    /// [`EngineState::reconcile`] for one partition of a cluster (issue 16): `self` holds only
    /// partition `partition` of `partitions` (as replayed from its own log). Holdings of orders
    /// on other partitions are left alone: this state cannot tell whether such an order exists;
    /// the running SKU asks the order's partition instead (see [`crate::cluster`]).
    ///
    /// ```
    /// use surge_engine::EngineState;
    /// let mut s = EngineState::default();
    /// assert!(s.reconcile_partition(3, 8).is_empty());
    /// ```
    pub fn reconcile_partition(&mut self, partition: usize, partitions: usize) -> Vec<Event> {
        self.reconcile_filtered(&|_| None, &|o: OrderId| crate::snowflake::shard_of(o.0, partitions) == partition)
    }

    fn reconcile_filtered(
        &mut self,
        archived: &dyn Fn(OrderId) -> Option<Arc<Order>>,
        owned: &dyn Fn(OrderId) -> bool,
    ) -> Vec<Event> {
        let sku_ids: Vec<&SkuId> = self.skus.keys().collect();
        // Every holding as (order, SKU index << 1 | sold), sorted: the live orders are then
        // walked once in key order beside them instead of looked up at random (recovery of
        // millions of orders), and the repairs come out in a deterministic order (by order).
        let mut holdings = Vec::with_capacity(self.skus.values().map(|st| st.holdings().size_hint().0).sum());
        for (k, st) in self.skus.values().enumerate() {
            holdings.extend(st.holdings().map(|(order_id, _, _, sold)| (order_id, k << 1 | usize::from(sold))));
        }
        holdings.retain(|(order_id, _)| owned(*order_id));
        holdings.sort_unstable();
        let mut held = holdings.into_iter().peekable();
        let mut fixes = Vec::new();
        for (id, o) in &self.orders {
            // Holdings of orders that are not live (archived or never durable), then this one's.
            while let Some((order_id, ks)) = held.next_if(|(h, _)| h < id) {
                let a = archived(order_id);
                judge_holding(&mut fixes, sku_ids[ks >> 1], order_id, ks & 1 == 1, a.as_deref(), true);
            }
            while let Some((order_id, ks)) = held.next_if(|(h, _)| h == id) {
                judge_holding(&mut fixes, sku_ids[ks >> 1], order_id, ks & 1 == 1, Some(o), false);
            }
            // `Remembered` if it should hold sold units where its SKU has only archived ones: a
            // crash between `order_restored` and the SKU's `holding_remembered`.
            if expected_holding(o) == Some(true) {
                for item in &o.items {
                    let Some(st) = self.skus.get(&item.sku_id) else { continue };
                    fixes.extend(st.decide_remember(o.order_id, &o.user_id, item.qty));
                }
            }
        }
        for (order_id, ks) in held {
            let a = archived(order_id);
            judge_holding(&mut fixes, sku_ids[ks >> 1], order_id, ks & 1 == 1, a.as_deref(), true);
        }
        for e in &fixes {
            if let Some(st) = self.skus.get_mut(crate::event::sku_id_of(e)) {
                st.apply(e);
            }
        }
        let mut out: Vec<Event> = fixes.into_iter().map(Event::Sku).collect();
        out.extend(self.close_open_tries(archived));
        out
    }

    /// A deterministic 64-bit digest of every actor's state (replay-equivalence checks).
    pub fn digest(&self) -> u64 {
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new();
        for (id, st) in &self.skus {
            id.hash(&mut h);
            format!("{:?}", st.view()).hash(&mut h);
            let mut holdings: Vec<_> = st.holdings().map(|(o, u, q, s)| (o, u.clone(), q, s)).collect();
            holdings.sort();
            holdings.hash(&mut h);
            let mut units: Vec<_> = st.user_units().map(|(u, n)| (u.clone(), n)).collect();
            units.sort();
            units.hash(&mut h);
        }
        for (id, o) in &self.orders {
            id.hash(&mut h);
            format!("{o:?}").hash(&mut h);
        }
        // Wallets: sorted maps, so their debug form is deterministic.
        format!("{:?}", self.wallets).hash(&mut h);
        h.finish()
    }
}
