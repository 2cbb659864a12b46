//! Actor events and the journal they are appended to.
//!
//! Every state change of an actor is an [`Event`]; applying an actor's events in order rebuilds
//! its state (event sourcing). A shard decides a whole batch of messages, hands the batch's events
//! to its [`Journal`], and only then releases the batch's replies and cross-shard messages, so a
//! write-ahead log slots in behind this trait without touching the actors.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::{Initiator, Order, OrderId, OrderStatus, Payment, SaleRules, SkuId, SkuView, UserId};
use crate::error::EngineError;
use crate::state_machine::OrderEventKind;

/// A state change of one SKU actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkuEvent {
    /// The SKU came into existence with its initial stock.
    Created {
        /// Id.
        sku_id: SkuId,
        /// Name.
        name: Arc<str>,
        /// Unit price.
        price: Decimal,
        /// Units stocked at creation.
        initial_stock: u64,
        /// Rules of sale.
        rules: SaleRules,
    },
    /// Name, price or rules changed (the full new values).
    Updated {
        /// Id.
        sku_id: SkuId,
        /// Name.
        name: Arc<str>,
        /// Unit price.
        price: Decimal,
        /// Rules of sale.
        rules: SaleRules,
    },
    /// Stock added (positive) or removed (negative) by an admin.
    Adjusted {
        /// Id.
        sku_id: SkuId,
        /// Units.
        delta: i64,
        /// Why (audit trail).
        reason: Box<str>,
    },
    /// `qty` units moved available → reserved for `order_id`.
    Reserved {
        /// Id.
        sku_id: SkuId,
        /// The order holding them.
        order_id: OrderId,
        /// The buyer (per-user limit).
        user_id: UserId,
        /// Units.
        qty: u32,
    },
    /// The order's reservation moved reserved → sold.
    Confirmed {
        /// Id.
        sku_id: SkuId,
        /// The order.
        order_id: OrderId,
    },
    /// The order's reservation moved reserved → available.
    Released {
        /// Id.
        sku_id: SkuId,
        /// The order.
        order_id: OrderId,
    },
    /// The order's sold units moved sold → available (refund of goods that never shipped).
    Restocked {
        /// Id.
        sku_id: SkuId,
        /// The order.
        order_id: OrderId,
    },
    /// The order was archived: its sold holding is dropped from memory (its units stay sold and
    /// keep counting toward the per-user limit).
    Forgotten {
        /// Id.
        sku_id: SkuId,
        /// The order.
        order_id: OrderId,
    },
    // Variants below were added in format v2. bincode encodes a variant by its index, so new
    // ones go at the end and v1 records keep decoding.
    /// Stock added (positive) or removed (negative) by an admin, idempotent by `adjustment_id`
    /// (format v2; v1's [`SkuEvent::Adjusted`] had no id).
    AdjustedOnce {
        /// Id.
        sku_id: SkuId,
        /// The caller's id for this adjustment (1..=64 bytes): a retry with it has no second
        /// effect.
        adjustment_id: Box<str>,
        /// Units.
        delta: i64,
        /// Why (audit trail).
        reason: Box<str>,
    },
    /// A restored order's sold units, counted as archived since `Forgotten`, are a live
    /// holding again (format v2; the inverse of [`SkuEvent::Forgotten`]).
    Remembered {
        /// Id.
        sku_id: SkuId,
        /// The restored order.
        order_id: OrderId,
        /// The buyer (already counted toward the per-user limit).
        user_id: UserId,
        /// Units.
        qty: u32,
    },
}

/// A state change of one order actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// The saga granted every reservation: the order exists in `pending_payment`.
    Created(Arc<Order>),
    /// One row of the state machine was taken.
    Transitioned {
        /// The order.
        order_id: OrderId,
        /// The event.
        event: OrderEventKind,
        /// Status before.
        from: OrderStatus,
        /// Status after.
        to: OrderStatus,
        /// Engine clock, ms.
        at_ms: i64,
        /// Who caused it.
        by: Initiator,
        /// Recorded reason.
        reason: Option<Box<str>>,
        /// The payment accepted by a `pay`.
        payment: Option<Payment>,
        /// The tracking number given by a `ship`.
        tracking_number: Option<Box<str>>,
    },
    /// The order had been terminal for `archive_after_ms`: it leaves memory and is served from
    /// the archive (the full final order, so the archive can be written from the log).
    Archived(Arc<Order>),
    // Added in format v2 (appended: v1 records keep their variant indices).
    /// An archived order came back into memory, as the archive held it, because a command may
    /// still move it (`open_dispute` within `dispute_window_ms`; issue 10, item 9). Its SKUs
    /// take back its sold holdings ([`SkuEvent::Remembered`]).
    Restored(Arc<Order>),
}

/// Any actor's event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A SKU actor's.
    Sku(SkuEvent),
    /// An order actor's.
    Order(OrderEvent),
    /// A user's wallet's (issue 14).
    Wallet(crate::wallet::WalletEvent),
    /// What the transactional outbox publishes about a change in the same batch (issue 15):
    /// journaled only while [`crate::EngineConfig::outbox`] is on, ignored by replay.
    Outbox(OutboxEvent),
}

/// A change as other systems hear of it (issue 15): journaled with the change itself (a
/// transactional outbox in the log), so a publisher reading the durable log after its cursor
/// publishes each exactly once, in log order, even across crashes. Reservations, confirms and
/// rejections are not published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutboxEvent {
    /// An order moved to a new status: its state right after. (A creation needs no copy: the
    /// log's `OrderEvent::Created` holds the whole order.)
    Order(Arc<Order>),
    /// A SKU was created, updated, adjusted, or got units back (release, restock): its counters
    /// and rules at the end of the batch that changed it, and the engine clock then (ms).
    Stock(Box<SkuView>, i64),
    /// A wallet account changed: the account after it.
    Wallet(Box<OutboxWallet>),
}

/// A wallet account as the outbox publishes it ([`OutboxEvent::Wallet`]; boxed so an
/// [`Event`] stays small).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxWallet {
    /// The user.
    pub user_id: UserId,
    /// The account right after the batch's change.
    pub account: crate::wallet::AccountView,
    /// When (engine clock, ms).
    pub at_ms: i64,
}

/// Called once a submitted batch is durable (`Ok`) or can never be (`Err`).
pub type OnDurable = Box<dyn FnOnce(Result<(), EngineError>) + Send>;

/// Where a shard hands the events of each batch before any of the batch's replies are released.
///
/// A shard calls [`Journal::submit`] once per batch (with no events when the batch only has
/// replies, so replies never overtake earlier batches) and goes on with the next batch; the
/// journal calls `on_durable` when the batch is as durable as the durability mode promises, and
/// the shard's replies are released from there. Batches must become durable in submission order
/// across all shards of an engine (one log), which keeps the log causally ordered: a shard
/// submits a batch *before* it sends the messages that batch caused.
pub trait Journal: Send + 'static {
    /// Hand over one batch of events from `shard`, in order. Must not block on I/O.
    fn submit(&mut self, shard: usize, events: Vec<Event>, on_durable: OnDurable);

    /// Batches with events this journal has accepted so far: the shard's cut for a snapshot.
    fn position(&self) -> u64;
}

/// The in-memory journal: keeps nothing and acknowledges at once (durability mode `none`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullJournal {
    position: u64,
}

impl Journal for NullJournal {
    fn submit(&mut self, _shard: usize, events: Vec<Event>, on_durable: OnDurable) {
        if !events.is_empty() {
            self.position += 1;
        }
        on_durable(Ok(()));
    }

    fn position(&self) -> u64 {
        self.position
    }
}

/// Where archived orders are read from (the persistence crate's sled tree). Reads only; the
/// writer fills it from `OrderEvent::Archived` in the log.
pub trait OrderArchive: Send + Sync + 'static {
    /// An archived order.
    fn get(&self, order_id: OrderId) -> Option<Arc<Order>>;
    /// Ids of a user's archived orders (any order).
    fn list_user(&self, user_id: &str) -> Vec<OrderId>;

    /// The highest archived order id, if any. Recovery's id floor: archived orders are not in
    /// the recovered state, yet new ids must stay above theirs even when they were minted while
    /// the clock was ahead (issue 10, item 8). The default (`None`) suits archives that cannot
    /// hold ids above the live orders'.
    fn highest_id(&self) -> Option<OrderId> {
        None
    }

    /// Up to `limit` ids of a user's archived orders below `before` (all if `None`), highest
    /// first: one page of `list_orders`, which must cost O(`limit`) (a reverse range scan of an
    /// index keyed by user and id). The default filters [`OrderArchive::list_user`], which costs
    /// O(all of the user's archived orders): archives that can hold many override it.
    fn list_user_before(&self, user_id: &str, before: Option<OrderId>, limit: usize) -> Vec<OrderId> {
        let mut ids: Vec<OrderId> =
            self.list_user(user_id).into_iter().filter(|id| before.is_none_or(|b| *id < b)).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(limit);
        ids
    }
}

/// Told about every change once it is durable (for subscriptions: the gateway's push hub).
///
/// Called from shard or journal threads after the batch holding the change is durable, in each
/// shard's order. Implementations must not block (hand off to a bounded queue and drop or
/// disconnect on overflow): a slow observer would stall the engine.
pub trait ChangeObserver: Send + Sync + 'static {
    /// An order was created or moved; `order` is its new state.
    fn order_changed(&self, order: &Arc<Order>);
    /// A SKU's counters or rules changed (at most once per SKU per shard batch); read the new
    /// state with `Engine::get_sku`.
    fn stock_changed(&self, sku_id: &SkuId);
    /// A user's wallet changed (at most once per user per shard batch); `wallet` is every
    /// listed asset's account as the batch left it (issue 14). Default: ignored.
    fn wallet_changed(&self, wallet: &crate::wallet::WalletView) {
        let _ = wallet;
    }
}

/// A journal factory: the engine asks it for one journal per shard.
pub type JournalFactory = Box<dyn FnMut(usize) -> Box<dyn Journal> + Send>;

/// Shared flag a journal raises when storage fails; while it is up, the engine refuses writes
/// with `storage_unavailable` without executing them, and reads keep working.
#[derive(Debug, Default)]
pub struct StorageGate {
    failed: std::sync::atomic::AtomicBool,
}

impl StorageGate {
    /// Mark storage as failed (true) or healthy again (false).
    pub fn set_failed(&self, failed: bool) {
        self.failed.store(failed, std::sync::atomic::Ordering::SeqCst);
    }

    /// True while storage is failed.
    pub fn is_failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The SKU an event belongs to (every SKU event names one).
pub(crate) fn sku_id_of(event: &SkuEvent) -> &SkuId {
    match event {
        SkuEvent::Created { sku_id, .. }
        | SkuEvent::Updated { sku_id, .. }
        | SkuEvent::Adjusted { sku_id, .. }
        | SkuEvent::AdjustedOnce { sku_id, .. }
        | SkuEvent::Reserved { sku_id, .. }
        | SkuEvent::Confirmed { sku_id, .. }
        | SkuEvent::Released { sku_id, .. }
        | SkuEvent::Restocked { sku_id, .. }
        | SkuEvent::Forgotten { sku_id, .. }
        | SkuEvent::Remembered { sku_id, .. } => sku_id,
    }
}
