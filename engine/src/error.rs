//! The engine's typed errors.
//!
//! Business rejections (`sold_out`, `invalid_transition`, …) are ordinary return values, never
//! panics (TigerBeetle style: a rejection is data). Every variant has a stable `snake_case`
//! [`code`](EngineError::code): that string is the API the gateway puts on the wire, so codes are
//! never renamed.

use rust_decimal::Decimal;

use crate::domain::{OrderId, OrderStatus};
use crate::state_machine::OrderEventKind;

/// Why the engine refused or could not run a request.
///
/// Match on the variant in Rust; put [`EngineError::code`] on the wire. Source of the codes:
/// `../shared/DESIGN.md` (domain and idempotency sections) and the engine-core issue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum EngineError {
    /// The request is malformed (empty or too many items, a quantity out of range, a duplicate
    /// SKU, a negative price, an empty id, …). Nothing was executed.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// Human-readable reason, safe to show to the caller.
        message: String,
    },
    /// No SKU with this id exists.
    #[error("unknown sku {sku_id}")]
    UnknownSku {
        /// The SKU named by the request.
        sku_id: String,
    },
    /// `create_sku` named an id that already exists.
    #[error("sku {sku_id} already exists")]
    SkuAlreadyExists {
        /// The duplicate id.
        sku_id: String,
    },
    /// The SKU's available stock is 0.
    #[error("sku {sku_id} is sold out")]
    SoldOut {
        /// The sold-out SKU.
        sku_id: String,
    },
    /// `0 < available < qty`.
    #[error("sku {sku_id}: only {available} available")]
    InsufficientStock {
        /// The SKU that is short.
        sku_id: String,
        /// Units available when the request was decided.
        available: u64,
    },
    /// The user's reserved + sold units of this SKU plus this request exceed `per_user_limit`.
    #[error("sku {sku_id}: per-user limit of {limit} units exceeded")]
    PurchaseLimitExceeded {
        /// The limited SKU.
        sku_id: String,
        /// The SKU's `per_user_limit` in units.
        limit: u32,
    },
    /// The engine clock is before the SKU's `sale_starts_at_ms`.
    #[error("sku {sku_id}: sale has not started")]
    SaleNotStarted {
        /// The SKU.
        sku_id: String,
    },
    /// The engine clock is at or after the SKU's `sale_ends_at_ms`.
    #[error("sku {sku_id}: sale has ended")]
    SaleEnded {
        /// The SKU.
        sku_id: String,
    },
    /// The SKU is paused by an admin.
    #[error("sku {sku_id} is paused")]
    SkuPaused {
        /// The SKU.
        sku_id: String,
    },
    /// A stock adjustment would take `available` below zero.
    #[error("sku {sku_id}: adjustment of {delta} would make available negative ({available} available)")]
    InvalidAdjustment {
        /// The SKU.
        sku_id: String,
        /// The requested change in units.
        delta: i64,
        /// Units available when the request was decided.
        available: u64,
    },
    /// No order with this id exists.
    #[error("unknown order {order_id}")]
    UnknownOrder {
        /// The order named by the request.
        order_id: OrderId,
    },
    /// The state machine has no row for (status, event).
    #[error("invalid transition: {event} is not allowed from {from}")]
    InvalidTransition {
        /// The order's status when the event arrived.
        from: OrderStatus,
        /// The event that was refused.
        event: OrderEventKind,
        /// Where the event would have led, when it has a single nominal target.
        to: Option<OrderStatus>,
    },
    /// `open_dispute` on a completed order after its dispute window (`dispute_window_ms` from
    /// completion) closed (issue 10, item 9).
    #[error("order {order_id}: the dispute window closed at {closed_at_ms} ms")]
    DisputeWindowClosed {
        /// The order.
        order_id: OrderId,
        /// When the window closed (engine clock, ms since the Unix epoch).
        closed_at_ms: i64,
    },
    /// The order has taken so many transitions that it may no longer enter `refunding` or
    /// `disputed`: its history is bounded by [`crate::ORDER_TRANSITIONS_MAX`], so an archived
    /// order always fits one WAL record. Moves towards a terminal status stay allowed.
    #[error(
        "order {order_id}: history full ({transitions} transitions of at most {transitions_max}): \
         no further refund request or dispute"
    )]
    OrderHistoryFull {
        /// The order.
        order_id: OrderId,
        /// Transitions the order has taken.
        transitions: usize,
        /// [`crate::ORDER_TRANSITIONS_MAX`].
        transitions_max: usize,
    },
    /// `expected_version` did not match the order's `version` (compare-and-set failed).
    #[error("version conflict: expected {expected}, order is at {actual}")]
    VersionConflict {
        /// The version the caller expected.
        expected: u32,
        /// The order's current version.
        actual: u32,
    },
    /// The (user_id, idempotency_key) pair was used before with a different payload.
    #[error("idempotency key reused with a different payload (order {order_id})")]
    IdempotencyConflict {
        /// The order the key already belongs to.
        order_id: OrderId,
    },
    /// An `adjustment_id` was used before on this SKU with a different delta or reason. Same
    /// code as [`EngineError::IdempotencyConflict`]: it is the same rule, for `adjust_stock`.
    #[error("adjustment id {adjustment_id} reused on sku {sku_id} with a different delta or reason")]
    AdjustmentConflict {
        /// The SKU.
        sku_id: String,
        /// The reused id.
        adjustment_id: String,
    },
    /// `pay` amount differs from the order total (which the engine computed).
    #[error("amount mismatch: order total is {expected}, payment is {got}")]
    AmountMismatch {
        /// The order total.
        expected: Decimal,
        /// The amount the payment callback carried.
        got: Decimal,
    },
    /// A *different* payment arrived for an order that is already paid: refund it.
    #[error("order {order_id} is already paid")]
    AlreadyPaid {
        /// The order.
        order_id: OrderId,
    },
    /// A payment arrived for an order that can no longer be paid (canceled, refunded, …): refund
    /// it.
    #[error("order {order_id} is not payable in status {status}")]
    OrderNotPayable {
        /// The order.
        order_id: OrderId,
        /// Its status.
        status: OrderStatus,
    },
    /// A wallet account holds less than a debit or a payment leg needs (issue 14). Nothing moved.
    #[error("insufficient funds in {asset}: needed {needed_minor}, available {available_minor} (minor units)")]
    InsufficientFunds {
        /// The asset.
        asset: String,
        /// Minor units asked.
        needed_minor: u64,
        /// Minor units spendable.
        available_minor: u64,
    },
    /// The asset is not listed in `engine.assets`, or cannot pay orders (no rate).
    #[error("unknown asset {asset}")]
    UnknownAsset {
        /// The code given.
        asset: String,
    },
    /// A wallet `transfer_id` was used before with other parameters. Same code as
    /// [`EngineError::IdempotencyConflict`]: the same rule, for transfers.
    #[error("transfer id {transfer_id} reused with other parameters")]
    TransferConflict {
        /// The reused id.
        transfer_id: String,
    },
    /// The target shard's bounded mailbox is full; the request was not executed. Retry later.
    #[error("engine overloaded: shard mailbox full")]
    Overloaded,
    /// The engine is shutting down; the request was not executed.
    #[error("engine is shutting down")]
    ShuttingDown,
    /// The partition this request belongs to is not served here right now (a cluster node that
    /// does not host it, or a partition moving between nodes, issue 16). The outcome of a
    /// request that was under way is unknown: retry after `retry_after_ms` with the same
    /// idempotency key (or transfer or payment id), which gives the original outcome if there
    /// was one.
    #[error("partition unavailable here; retry in {retry_after_ms} ms")]
    Unavailable {
        /// When to retry (ms).
        retry_after_ms: u64,
    },
    /// Storage refused a write (disk full, I/O error). Nothing unacknowledged is claimed done;
    /// reads keep working. `message` says what the operator must do.
    #[error("storage unavailable: {message}")]
    StorageUnavailable {
        /// What failed and what to do.
        message: String,
    },
    /// The configuration is unusable.
    #[error("invalid config: {message}")]
    InvalidConfig {
        /// What is wrong.
        message: String,
    },
}

impl EngineError {
    /// The stable `snake_case` code of this error, e.g. `"sold_out"`.
    ///
    /// # Example
    /// ```
    /// use surge_engine::EngineError;
    /// let e = EngineError::SoldOut { sku_id: "A".into() };
    /// assert_eq!(e.code(), "sold_out");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::UnknownSku { .. } => "unknown_sku",
            Self::SkuAlreadyExists { .. } => "sku_already_exists",
            Self::SoldOut { .. } => "sold_out",
            Self::InsufficientStock { .. } => "insufficient_stock",
            Self::PurchaseLimitExceeded { .. } => "purchase_limit_exceeded",
            Self::SaleNotStarted { .. } => "sale_not_started",
            Self::SaleEnded { .. } => "sale_ended",
            Self::SkuPaused { .. } => "sku_paused",
            Self::InvalidAdjustment { .. } => "invalid_adjustment",
            Self::UnknownOrder { .. } => "unknown_order",
            Self::InvalidTransition { .. } => "invalid_transition",
            Self::DisputeWindowClosed { .. } => "dispute_window_closed",
            Self::OrderHistoryFull { .. } => "order_history_full",
            Self::VersionConflict { .. } => "version_conflict",
            Self::IdempotencyConflict { .. } | Self::AdjustmentConflict { .. } | Self::TransferConflict { .. } => {
                "idempotency_conflict"
            }
            Self::InsufficientFunds { .. } => "insufficient_funds",
            Self::UnknownAsset { .. } => "unknown_asset",
            Self::AmountMismatch { .. } => "amount_mismatch",
            Self::AlreadyPaid { .. } => "already_paid",
            Self::OrderNotPayable { .. } => "order_not_payable",
            Self::Overloaded => "overloaded",
            Self::ShuttingDown => "shutting_down",
            Self::Unavailable { .. } => "unavailable",
            Self::StorageUnavailable { .. } => "storage_unavailable",
            Self::InvalidConfig { .. } => "invalid_config",
        }
    }

    /// The SKU a stock rejection names, if any (the saga returns the first rejection *with its
    /// sku_id*).
    pub fn sku_id(&self) -> Option<&str> {
        match self {
            Self::UnknownSku { sku_id }
            | Self::SkuAlreadyExists { sku_id }
            | Self::SoldOut { sku_id }
            | Self::InsufficientStock { sku_id, .. }
            | Self::PurchaseLimitExceeded { sku_id, .. }
            | Self::SaleNotStarted { sku_id }
            | Self::SaleEnded { sku_id }
            | Self::SkuPaused { sku_id }
            | Self::InvalidAdjustment { sku_id, .. }
            | Self::AdjustmentConflict { sku_id, .. } => Some(sku_id),
            _ => None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest { message: message.into() }
    }
}

/// Shorthand for results of engine calls.
pub type EngineResult<T> = Result<T, EngineError>;
