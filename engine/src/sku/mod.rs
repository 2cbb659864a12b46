//! The SKU actor: stock counters, reservations and the per-user limit of one SKU.
//!
//! State ([`SkuActor`]) is separate from behaviour: `decide_*` functions read the state and return
//! an event or a rejection; [`SkuActor::apply`] is the only code that mutates it. Because one
//! shard thread owns the actor and handles one message at a time, every stock decision for a SKU
//! is serialized without a lock.
//!
//! Applied events only mark the actor *dirty*; at the end of its batch the shard takes one
//! [`SkuPublication`] per dirty SKU (the counters and, if they changed, the rules) and the
//! batch's `on_durable` callback writes it to [`SkuShared`] (a seqlock of atomics read by
//! `get_sku` and by the sold-out fast path), so readers never see what is not durable (issue 10,
//! item 2). The actor stays the authority: the published counters are a hint and a read model,
//! never an input to a decision (the fast path may reject from a stale hint, never grant).

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::chunked::ChunkedMap;
use crate::domain::{OrderId, SaleRules, SkuId, SkuUpdate, SkuView, UserId};
use crate::error::EngineError;
use crate::event::SkuEvent;

mod decode;
mod shared;
mod v1;
pub(crate) use shared::{SkuMeta, SkuPublication, SkuShared};
pub use v1::SkuStateV1;

/// A granted reservation: what the order snapshots.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub name: Arc<str>,
    pub unit_price: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum HoldState {
    Reserved,
    Sold,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Holding {
    user_id: UserId,
    qty: u32,
    state: HoldState,
}

/// Adjustment ids a SKU remembers (the newest ones; older ids are forgotten, and a retry of one
/// that old runs again). A retry normally follows its first attempt within seconds, with few if
/// any other adjustments of the same SKU between them. A constant, not a setting, because
/// replay must forget exactly what the live actor forgot. At most about 330 bytes per record
/// (id ≤ 64 bytes, reason ≤ 256), so ≤ ~85 KB for a SKU that was adjusted this often.
pub const ADJUSTMENT_IDS_PER_SKU_MAX: usize = 256;

/// One remembered stock adjustment: what a retry with its id must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Adjustment {
    adjustment_id: Box<str>,
    delta: i64,
    reason: Box<str>,
}

/// One SKU's state: pure data, serializable (snapshots), rebuilt by applying its events.
/// Decoded through `decode::StoredSkuState` (the same layout), which normalizes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "decode::StoredSkuState")]
pub struct SkuState {
    id: SkuId,
    name: Arc<str>,
    price: Decimal,
    rules: SaleRules,
    available: u64,
    reserved: u64,
    sold: u64,
    stocked_total: u64,
    /// Live holdings (reserved or sold) by order; released ones are removed.
    /// In copy-on-write chunks: a snapshot's cut shares them ([`crate::chunked`]).
    holdings: ChunkedMap<OrderId, Holding>,
    /// Units each user holds (reserved + sold): the per-user limit's count. Kept only while
    /// the SKU has a `per_user_limit`: an unlimited SKU needs no count, and skipping it saves a
    /// string hash, a map insert and ~50 bytes per order (issue 12). Setting a limit rebuilds
    /// the count from the live holdings ([`SkuState::count_users`]).
    user_units: ChunkedMap<UserId, u32>,
    /// Sold units of archived orders (their holdings left memory).
    sold_archived: u64,
    /// The newest adjustment ids, oldest first, at most [`ADJUSTMENT_IDS_PER_SKU_MAX`]
    /// (format v2: v1 snapshots decode through [`SkuStateV1`]).
    adjustments: VecDeque<Adjustment>,
}

/// A SKU actor: its state plus the read model it publishes to. Owned by exactly one shard
/// thread.
#[derive(Debug)]
pub(crate) struct SkuActor {
    state: SkuState,
    shared: Arc<SkuShared>,
    /// Changed since the last [`SkuActor::take_publication`].
    dirty: bool,
    /// Name, price or rules changed since the last publication.
    meta_dirty: bool,
    /// `shared` is in the read models (false for a SKU created in a batch not yet durable).
    listed: bool,
}

impl SkuState {
    /// The state a `Created` event describes; `None` for any other event.
    pub fn from_created(event: &SkuEvent) -> Option<Self> {
        let SkuEvent::Created { sku_id, name, price, initial_stock, rules } = event else {
            return None;
        };
        Some(Self {
            id: sku_id.clone(),
            name: name.clone(),
            price: *price,
            rules: rules.clone(),
            available: *initial_stock,
            reserved: 0,
            sold: 0,
            stocked_total: *initial_stock,
            holdings: ChunkedMap::default(),
            user_units: ChunkedMap::default(),
            sold_archived: 0,
            adjustments: VecDeque::new(),
        })
    }

    /// Sold units of archived orders.
    pub fn sold_archived(&self) -> u64 {
        self.sold_archived
    }

    /// The SKU id.
    pub fn sku_id(&self) -> &SkuId {
        &self.id
    }

    /// Counters and rules.
    pub fn view(&self) -> SkuView {
        SkuView {
            sku_id: self.id.clone(),
            name: self.name.clone(),
            price: self.price,
            available: self.available,
            reserved: self.reserved,
            sold: self.sold,
            stocked_total: self.stocked_total,
            rules: self.rules.clone(),
        }
    }

    /// Every live holding: (order, user, units, sold?).
    pub fn holdings(&self) -> impl Iterator<Item = (OrderId, &UserId, u32, bool)> + '_ {
        self.holdings.iter().map(|(id, h)| (*id, &h.user_id, h.qty, h.state == HoldState::Sold))
    }

    /// Units each user holds here (reserved + sold).
    pub fn user_units(&self) -> impl Iterator<Item = (&UserId, u32)> + '_ {
        self.user_units.iter().map(|(u, n)| (u, *n))
    }

    fn sku(&self) -> String {
        self.id.to_string()
    }

    /// Decide a reservation. `Ok((grant, None))` means the order already holds it (idempotent).
    pub(crate) fn decide_reserve(
        &self,
        order_id: OrderId,
        user_id: &UserId,
        qty: u32,
        now_ms: i64,
    ) -> Result<(Grant, Option<SkuEvent>), EngineError> {
        let grant = Grant { name: self.name.clone(), unit_price: self.price };
        if self.holdings.contains_key(&order_id) {
            return Ok((grant, None));
        }
        let rules = &self.rules;
        if rules.paused {
            return Err(EngineError::SkuPaused { sku_id: self.sku() });
        }
        if rules.sale_starts_at_ms.is_some_and(|t| now_ms < t) {
            return Err(EngineError::SaleNotStarted { sku_id: self.sku() });
        }
        if rules.sale_ends_at_ms.is_some_and(|t| now_ms >= t) {
            return Err(EngineError::SaleEnded { sku_id: self.sku() });
        }
        if self.available == 0 {
            return Err(EngineError::SoldOut { sku_id: self.sku() });
        }
        if self.available < u64::from(qty) {
            return Err(EngineError::InsufficientStock { sku_id: self.sku(), available: self.available });
        }
        if let Some(limit) = rules.per_user_limit {
            let held = self.user_units.get(user_id).copied().unwrap_or(0);
            if u64::from(held) + u64::from(qty) > u64::from(limit) {
                return Err(EngineError::PurchaseLimitExceeded { sku_id: self.sku(), limit });
            }
        }
        let event = SkuEvent::Reserved { sku_id: self.id.clone(), order_id, user_id: user_id.clone(), qty };
        Ok((grant, Some(event)))
    }

    /// `order_id`'s holding here: `Some(false)` reserved, `Some(true)` sold, `None` none.
    pub fn holding_sold(&self, order_id: OrderId) -> Option<bool> {
        self.holdings.get(&order_id).map(|h| h.state == HoldState::Sold)
    }

    /// Decide confirm (reserved → sold); `None` if already sold or never held (idempotent).
    pub fn decide_confirm(&self, order_id: OrderId) -> Option<SkuEvent> {
        match self.holdings.get(&order_id) {
            Some(h) if h.state == HoldState::Reserved => {
                Some(SkuEvent::Confirmed { sku_id: self.id.clone(), order_id })
            }
            _ => None,
        }
    }

    /// Decide release (reserved → available); `None` if not reserved (idempotent).
    pub fn decide_release(&self, order_id: OrderId) -> Option<SkuEvent> {
        match self.holdings.get(&order_id) {
            Some(h) if h.state == HoldState::Reserved => Some(SkuEvent::Released { sku_id: self.id.clone(), order_id }),
            _ => None,
        }
    }

    /// Decide restock (sold → available); `None` if not sold (idempotent).
    pub fn decide_restock(&self, order_id: OrderId) -> Option<SkuEvent> {
        match self.holdings.get(&order_id) {
            Some(h) if h.state == HoldState::Sold => Some(SkuEvent::Restocked { sku_id: self.id.clone(), order_id }),
            _ => None,
        }
    }

    /// Decide dropping an archived order's sold holding; `None` if there is none.
    pub fn decide_forget(&self, order_id: OrderId) -> Option<SkuEvent> {
        match self.holdings.get(&order_id) {
            Some(h) if h.state == HoldState::Sold => Some(SkuEvent::Forgotten { sku_id: self.id.clone(), order_id }),
            _ => None,
        }
    }

    /// Decide taking back a restored order's sold holding; `None` if it is already held (the
    /// archiving's `Forgotten` never happened) or no archived units could be its.
    pub fn decide_remember(&self, order_id: OrderId, user_id: &UserId, qty: u32) -> Option<SkuEvent> {
        if self.holdings.contains_key(&order_id) || self.sold_archived < u64::from(qty) {
            return None;
        }
        Some(SkuEvent::Remembered { sku_id: self.id.clone(), order_id, user_id: user_id.clone(), qty })
    }

    /// Decide a partial update of name, price and rules: the `Updated` event carrying the whole
    /// result (fields `update` leaves `None` keep their current value; `Some(None)` clears an
    /// optional rule). Validated by the engine handle before it gets here.
    pub(crate) fn decide_update(&self, update: SkuUpdate) -> SkuEvent {
        let cur = self.view();
        let mut rules = cur.rules;
        if let Some(v) = update.per_user_limit {
            rules.per_user_limit = v;
        }
        if let Some(v) = update.sale_starts_at_ms {
            rules.sale_starts_at_ms = v;
        }
        if let Some(v) = update.sale_ends_at_ms {
            rules.sale_ends_at_ms = v;
        }
        if let Some(v) = update.paused {
            rules.paused = v;
        }
        SkuEvent::Updated {
            sku_id: self.id.clone(),
            name: update.name.map(Arc::from).unwrap_or(cur.name),
            price: update.price.unwrap_or(cur.price),
            rules,
        }
    }

    /// Decide an admin stock adjustment, idempotent by `adjustment_id`: `Ok(None)` when this id
    /// was already applied with the same delta and reason (a retry: no second effect).
    ///
    /// # Errors
    /// `idempotency_conflict` (the id was used with another delta or reason),
    /// `invalid_adjustment`.
    pub(crate) fn decide_adjust(
        &self,
        adjustment_id: &str,
        delta: i64,
        reason: &str,
    ) -> Result<Option<SkuEvent>, EngineError> {
        // Linear: at most ADJUSTMENT_IDS_PER_SKU_MAX records, and adjustments are rare admin ops.
        if let Some(a) = self.adjustments.iter().find(|a| &*a.adjustment_id == adjustment_id) {
            if a.delta == delta && &*a.reason == reason {
                return Ok(None);
            }
            return Err(EngineError::AdjustmentConflict { sku_id: self.sku(), adjustment_id: adjustment_id.into() });
        }
        self.check_adjust(delta)?;
        Ok(Some(SkuEvent::AdjustedOnce {
            sku_id: self.id.clone(),
            adjustment_id: adjustment_id.into(),
            delta,
            reason: reason.into(),
        }))
    }

    /// Removal is bounded by `available`, addition by [`crate::STOCK_MAX`] (so no counter can
    /// overflow); otherwise `invalid_adjustment`.
    fn check_adjust(&self, delta: i64) -> Result<(), EngineError> {
        let ok = if delta < 0 {
            delta.unsigned_abs() <= self.available
        } else {
            self.stocked_total.checked_add(delta.unsigned_abs()).is_some_and(|t| t <= crate::STOCK_MAX)
        };
        if !ok {
            return Err(EngineError::InvalidAdjustment { sku_id: self.sku(), delta, available: self.available });
        }
        Ok(())
    }

    /// Rebuild the per-user count from the live holdings, when a limit is set on a SKU that had
    /// none. Units of orders archived before that (sold, out of memory) are not counted: a limit
    /// set in the middle of a sale counts what users hold in live orders.
    fn count_users(&mut self) {
        let mut units: ChunkedMap<UserId, u32> = ChunkedMap::default();
        for h in self.holdings.values() {
            let n = units.get_or_insert(h.user_id.clone(), 0);
            *n = n.saturating_add(h.qty);
        }
        self.user_units = units;
    }

    /// Add or remove units (bounded by `available`, as decided).
    fn adjust(&mut self, delta: i64) {
        if delta >= 0 {
            self.available += delta.unsigned_abs();
            self.stocked_total += delta.unsigned_abs();
        } else {
            let d = delta.unsigned_abs().min(self.available);
            self.available -= d;
            self.stocked_total -= d;
        }
    }

    /// Apply one event: the only place the state changes. Events come from `decide_*` (or a
    /// log written by them), so every subtraction is bounded by the holding that produced it and
    /// the counters can never go negative.
    ///
    /// # Panics
    /// If conservation (`available + reserved + sold == stocked_total`) breaks: that is a bug in
    /// the engine, never a consequence of input (TigerBeetle: assert invariants at boundaries).
    pub fn apply(&mut self, event: &SkuEvent) {
        match event {
            SkuEvent::Created { .. } => {}
            SkuEvent::Updated { name, price, rules, .. } => {
                let counted = self.rules.per_user_limit.is_some();
                self.name = name.clone();
                self.price = *price;
                self.rules = rules.clone();
                match (counted, rules.per_user_limit.is_some()) {
                    (false, true) => self.count_users(),
                    (true, false) => self.user_units = ChunkedMap::default(),
                    _ => {}
                }
            }
            SkuEvent::Adjusted { delta, .. } => self.adjust(*delta),
            SkuEvent::AdjustedOnce { adjustment_id, delta, reason, .. } => {
                self.adjust(*delta);
                let record = Adjustment { adjustment_id: adjustment_id.clone(), delta: *delta, reason: reason.clone() };
                self.adjustments.push_back(record);
                if self.adjustments.len() > ADJUSTMENT_IDS_PER_SKU_MAX {
                    self.adjustments.pop_front();
                }
            }
            SkuEvent::Reserved { order_id, user_id, qty, .. } => {
                if self.holdings.contains_key(order_id) {
                    return;
                }
                let q = u64::from(*qty).min(self.available);
                debug_assert_eq!(q, u64::from(*qty), "reserve beyond available");
                self.available -= q;
                self.reserved += q;
                if self.rules.per_user_limit.is_some() {
                    // Saturating: a count this high is far past any limit (a u32 limit).
                    let units = self.user_units.get_or_insert(user_id.clone(), 0);
                    *units = units.saturating_add(q as u32);
                }
                self.holdings
                    .insert(*order_id, Holding { user_id: user_id.clone(), qty: q as u32, state: HoldState::Reserved });
            }
            SkuEvent::Confirmed { order_id, .. } => {
                if let Some(h) = self.holdings.get_mut(order_id) {
                    if h.state == HoldState::Reserved {
                        let q = u64::from(h.qty).min(self.reserved);
                        self.reserved -= q;
                        self.sold += q;
                        h.state = HoldState::Sold;
                    }
                }
            }
            SkuEvent::Forgotten { order_id, .. } => {
                if self.holdings.get(order_id).is_some_and(|h| h.state == HoldState::Sold) {
                    if let Some(h) = self.holdings.remove(order_id) {
                        self.sold_archived += u64::from(h.qty);
                    }
                }
            }
            SkuEvent::Remembered { order_id, user_id, qty, .. } => {
                if !self.holdings.contains_key(order_id) && self.sold_archived >= u64::from(*qty) {
                    // The units never left `sold` nor the user's count: only where they are kept.
                    self.sold_archived -= u64::from(*qty);
                    let h = Holding { user_id: user_id.clone(), qty: *qty, state: HoldState::Sold };
                    self.holdings.insert(*order_id, h);
                }
            }
            SkuEvent::Released { order_id, .. } | SkuEvent::Restocked { order_id, .. } => {
                if let Some(h) = self.holdings.remove(order_id) {
                    let q = u64::from(h.qty);
                    match h.state {
                        HoldState::Reserved => self.reserved -= q.min(self.reserved),
                        HoldState::Sold => self.sold -= q.min(self.sold),
                    }
                    self.available += q;
                    if let Some(u) = self.user_units.get_mut(&h.user_id) {
                        *u = u.saturating_sub(h.qty);
                        if *u == 0 {
                            self.user_units.remove(&h.user_id);
                        }
                    }
                }
            }
        }
        assert_eq!(
            self.available + self.reserved + self.sold,
            self.stocked_total,
            "conservation broken on sku {}",
            self.id
        );
    }
}

impl SkuActor {
    /// Host `state` on `shard`, with a fresh read model. `listed` says whether the read model is
    /// already in the read models (recovered SKUs: durable by definition) or must be listed by
    /// the first publication (a SKU created in the current batch).
    pub fn new(state: SkuState, shard: usize, listed: bool) -> Self {
        let meta = Arc::new(SkuMeta { name: state.name.clone(), price: state.price, rules: state.rules.clone() });
        let shared = Arc::new(SkuShared {
            sku_id: state.id.clone(),
            shard,
            seq: AtomicU64::new(0),
            available: AtomicU64::new(state.available),
            reserved: AtomicU64::new(state.reserved),
            sold: AtomicU64::new(state.sold),
            stocked_total: AtomicU64::new(state.stocked_total),
            meta: ArcSwap::new(meta),
        });
        Self { state, shared, dirty: !listed, meta_dirty: false, listed }
    }

    /// Room for `n` holdings (`EngineConfig::live_orders_expected`: no rehash stall).
    pub fn reserve_holdings(&mut self, n: usize) {
        self.state.holdings.reserve(n);
    }

    pub fn shared(&self) -> &Arc<SkuShared> {
        &self.shared
    }

    pub fn state(&self) -> &SkuState {
        &self.state
    }

    /// Apply an event. Returns true if the actor just became dirty (the shard lists it once per
    /// batch for [`SkuActor::take_publication`]).
    pub fn apply(&mut self, event: &SkuEvent) -> bool {
        self.state.apply(event);
        if let SkuEvent::Updated { .. } = event {
            self.meta_dirty = true;
        }
        !std::mem::replace(&mut self.dirty, true)
    }

    /// The read-model update for everything applied since the last one; clears the dirty marks.
    pub fn take_publication(&mut self) -> SkuPublication {
        let st = &self.state;
        let meta = std::mem::take(&mut self.meta_dirty)
            .then(|| Arc::new(SkuMeta { name: st.name.clone(), price: st.price, rules: st.rules.clone() }));
        let publication = SkuPublication {
            shared: self.shared.clone(),
            counters: [st.available, st.reserved, st.sold, st.stocked_total],
            meta,
            created: !self.listed,
        };
        self.dirty = false;
        self.listed = true;
        publication
    }
}

/// Read access to the state; mutation goes through [`SkuActor::apply`] only.
impl std::ops::Deref for SkuActor {
    type Target = SkuState;

    fn deref(&self) -> &SkuState {
        &self.state
    }
}
