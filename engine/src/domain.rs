//! Domain types: SKUs, orders, line items, payments, history, and the requests that name them.
//!
//! Standard terms (DESIGN.md glossary): a SKU has stock counters `available`, `reserved`, `sold`
//! with the invariant `available + reserved + sold == stocked_total`; an order holds one
//! *reservation* per line item until it is paid (*confirm*: reserved → sold) or canceled
//! (*release*: reserved → available).
//!
//! Money is [`rust_decimal::Decimal`] and is serialized as a string (`"59.90"`), never a float.
//! Times are milliseconds since the Unix epoch on the engine clock (`*_ms`).

use std::fmt;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// A SKU id: short, immutable and cheap to clone (shared between actors, read models and orders).
pub type SkuId = Arc<str>;
/// A user id as given by the shop; cheap to clone.
pub type UserId = Arc<str>;

/// A 64-bit snowflake order id (see [`crate::snowflake`]): 41 bits of milliseconds, 10 bits of
/// node id, 12 bits of sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub u64);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where an order is in its life (DESIGN.md, "Order state machine").
///
/// `Completed`, `Canceled` and `Refunded` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created, every reservation granted, waiting for payment until the payment deadline.
    PendingPayment,
    /// Payment accepted; reservations confirmed (reserved → sold).
    Paid,
    /// The shop is packing the goods.
    Packing,
    /// Handed to the carrier (a tracking number is recorded).
    Shipped,
    /// The carrier delivered.
    Delivered,
    /// Closed successfully (terminal).
    Completed,
    /// Canceled before payment; reservations released (terminal).
    Canceled,
    /// A refund was requested and awaits a decision.
    Refunding,
    /// Refunded (terminal); stock returned if the goods never shipped.
    Refunded,
    /// The buyer disputes a delivered or completed order.
    Disputed,
}

impl OrderStatus {
    /// Every status, in declaration order (for exhaustive tests and metrics).
    pub const ALL: [OrderStatus; 10] = [
        Self::PendingPayment,
        Self::Paid,
        Self::Packing,
        Self::Shipped,
        Self::Delivered,
        Self::Completed,
        Self::Canceled,
        Self::Refunding,
        Self::Refunded,
        Self::Disputed,
    ];

    /// The `snake_case` name used on the wire, e.g. `"pending_payment"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::Packing => "packing",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Completed => "completed",
            Self::Canceled => "canceled",
            Self::Refunding => "refunding",
            Self::Refunded => "refunded",
            Self::Disputed => "disputed",
        }
    }

    /// True for `completed`, `canceled` and `refunded`: no event leaves them.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Canceled | Self::Refunded)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who caused a transition (the `by` of a history entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Initiator {
    /// The buyer (through a `service` token or the buyer's own `user` JWT).
    User,
    /// Shop staff (through an `admin` token).
    Admin,
    /// The payment service provider's callback.
    Psp,
    /// The engine itself: payment deadline, auto-complete.
    System,
}

/// One line of an order: SKU, quantity, and the name and unit price *snapshotted* when the order
/// was created (later price changes never alter an existing order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    /// The SKU.
    pub sku_id: SkuId,
    /// The SKU's name at order time.
    pub name: Arc<str>,
    /// Units, 1..=`item_qty_max`.
    pub qty: u32,
    /// Unit price at order time.
    pub unit_price: Decimal,
    /// `unit_price × qty`, computed by the engine.
    pub subtotal: Decimal,
}

/// The payment that moved an order to `paid` (idempotent by `payment_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The payment service provider's id for this payment.
    pub payment_id: Box<str>,
    /// The amount paid; always equals the order total.
    pub amount: Decimal,
    /// When the engine accepted it (engine clock, ms).
    pub paid_at_ms: i64,
}

/// One transition in an order's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Status before; `None` for the creation entry.
    pub from: Option<OrderStatus>,
    /// Status after.
    pub to: OrderStatus,
    /// Engine clock, ms.
    pub at_ms: i64,
    /// Who caused it.
    pub by: Initiator,
    /// Free-form reason (`"payment_deadline"`, a refund reason, …), if any.
    pub reason: Option<Box<str>>,
}

/// An order as the engine stores and returns it. Immutable once shared: every transition
/// produces a new `Arc<Order>` (the actor and the read model share one copy, so a live order
/// costs memory once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Snowflake id.
    pub order_id: OrderId,
    /// The buyer.
    pub user_id: UserId,
    /// Line items, in request order. The first is kept inline in the order (most flash-sale
    /// orders have one line: one allocation less per order, issue 12).
    pub items: SmallVec<[LineItem; 1]>,
    /// Sum of the subtotals, computed by the engine.
    pub total: Decimal,
    /// Current status.
    pub status: OrderStatus,
    /// Starts at 1; every transition adds 1 (use it as `expected_version`).
    pub version: u32,
    /// Creation time (engine clock, ms).
    pub created_at_ms: i64,
    /// Time of the last transition (engine clock, ms).
    pub updated_at_ms: i64,
    /// When an unpaid order is canceled by the engine (engine clock, ms).
    pub payment_deadline_ms: i64,
    /// The accepted payment, once paid (boxed: most live orders in a sale are unpaid, and an
    /// inline payment would cost every order 32 bytes).
    pub payment: Option<Box<Payment>>,
    /// Carrier tracking number, once shipped.
    pub tracking_number: Option<Box<str>>,
    /// Whether the goods ever left the warehouse (decides restock on refund).
    pub shipped: bool,
    /// The status a pending refund returns to if rejected.
    pub refund_return_to: Option<OrderStatus>,
    /// Every transition, oldest first. The creation entry is kept inline.
    pub history: SmallVec<[HistoryEntry; 1]>,
    /// The client's idempotency key for `create_order` (unique per user).
    pub idempotency_key: Box<str>,
}

impl Order {
    /// True when a line item list `(sku_id, qty)` equals this order's (the idempotency payload).
    pub fn same_items(&self, items: &[(SkuId, u32)]) -> bool {
        self.items.len() == items.len() && self.items.iter().zip(items).all(|(a, (s, q))| a.sku_id == *s && a.qty == *q)
    }
}

/// Everything needed to create a SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuSpec {
    /// Non-empty id, at most 64 bytes.
    pub sku_id: String,
    /// Display name, at most 256 bytes.
    pub name: String,
    /// Unit price, ≥ 0.
    pub price: Decimal,
    /// Units available at creation.
    pub initial_stock: u64,
    /// Rules of sale.
    #[serde(flatten)]
    pub rules: SaleRules,
}

/// The rules of sale of a SKU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleRules {
    /// Maximum units one user may hold (reserved + sold); `None` = unlimited.
    pub per_user_limit: Option<u32>,
    /// Reservations before this instant (engine clock, ms) get `sale_not_started`.
    pub sale_starts_at_ms: Option<i64>,
    /// Reservations at or after this instant get `sale_ended`.
    pub sale_ends_at_ms: Option<i64>,
    /// A paused SKU refuses reservations with `sku_paused`.
    pub paused: bool,
}

/// A partial update of a SKU's name, price and rules; `None` leaves a field unchanged
/// (`Some(None)` clears an optional rule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuUpdate {
    /// New name.
    pub name: Option<String>,
    /// New unit price (existing orders keep their snapshot).
    pub price: Option<Decimal>,
    /// New per-user limit.
    pub per_user_limit: Option<Option<u32>>,
    /// New sale start.
    pub sale_starts_at_ms: Option<Option<i64>>,
    /// New sale end.
    pub sale_ends_at_ms: Option<Option<i64>>,
    /// Pause or resume.
    pub paused: Option<bool>,
}

/// A consistent view of one SKU: counters and rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuView {
    /// Id.
    pub sku_id: SkuId,
    /// Name.
    pub name: Arc<str>,
    /// Current unit price.
    pub price: Decimal,
    /// Units that can be reserved now.
    pub available: u64,
    /// Units held by pending orders.
    pub reserved: u64,
    /// Units confirmed by payment.
    pub sold: u64,
    /// Sum of all stock adjustments (initial stock included);
    /// `available + reserved + sold == stocked_total`.
    pub stocked_total: u64,
    /// Rules of sale.
    pub rules: SaleRules,
}

/// A `create_order` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOrder {
    /// The buyer; non-empty, at most 64 bytes.
    pub user_id: UserId,
    /// `(sku_id, qty)` pairs: 1..=`order_items_max` items, qty 1..=`item_qty_max`, no duplicate
    /// SKU.
    pub items: Vec<(SkuId, u32)>,
    /// Client idempotency key, unique per user; non-empty, at most 128 bytes.
    pub idempotency_key: String,
}

impl CreateOrder {
    /// Convenience constructor from string slices.
    ///
    /// ```
    /// use surge_engine::CreateOrder;
    /// let req = CreateOrder::new("user-1", &[("A", 1), ("B", 2)], "key-1");
    /// assert_eq!(req.items.len(), 2);
    /// ```
    pub fn new(user_id: &str, items: &[(&str, u32)], idempotency_key: &str) -> Self {
        Self {
            user_id: Arc::from(user_id),
            items: items.iter().map(|(s, q)| (Arc::from(*s), *q)).collect(),
            idempotency_key: idempotency_key.to_owned(),
        }
    }
}

/// How a dispute is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeResolution {
    /// In the shop's favour: the order completes.
    Completed,
    /// In the buyer's favour: the order goes to `refunding`.
    Refunding,
}

/// Options every order transition accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransitionOptions {
    /// Compare-and-set: refuse with `version_conflict` unless the order is at this version.
    pub expected_version: Option<u32>,
    /// Free-form reason recorded in the history (at most 256 bytes).
    pub reason: Option<String>,
}

/// A `list_orders` query: one page of a user's orders, newest first.
///
/// Paging is by cursor (keyset paging, as Stripe's `starting_after` / `ending_before`): pass the
/// previous page's [`OrderPage::next_before`] as `before` to get the next page. Pages stay exact
/// while orders are created or archived, and a page costs O(`limit`), not O(all of the user's
/// orders) (issue 10, item 13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOrders {
    /// Whose orders.
    pub user_id: String,
    /// Only orders in this status, if set. A filtered page examines at most
    /// `limit` × [`crate::LIST_SCAN_FACTOR`] orders, so it may hold fewer than `limit` orders (even
    /// none) and still have a `next_before`.
    pub status: Option<OrderStatus>,
    /// Page size, 1..=`list_limit_max`.
    pub limit: usize,
    /// Only orders with an id below this one (the previous page's `next_before`); `None` for the
    /// first page.
    pub before: Option<OrderId>,
}

/// One page of a user's orders (the answer to [`ListOrders`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderPage {
    /// Orders, newest (highest id) first.
    pub orders: Vec<Arc<Order>>,
    /// The `before` of the next page; `None` on the last page.
    pub next_before: Option<OrderId>,
}
