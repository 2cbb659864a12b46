//! The wallet's events (every movement of money is one) and the failures it remembers.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::asset::AssetCode;
use crate::domain::{OrderId, OrderStatus, UserId};
use crate::error::EngineError;

/// Longest `transfer_id`, in bytes (as an idempotency key).
pub const TRANSFER_ID_BYTES_MAX: usize = 64;
/// Most legs one `pay_with_wallet` may have (one per asset at most).
pub const LEGS_MAX: usize = 4;

/// One leg of a wallet payment: `amount_minor` of `asset` (minor units: fen for CNY).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Leg {
    /// The asset.
    pub asset: AssetCode,
    /// Minor units, 1..=[`super::AMOUNT_MINOR_MAX`].
    pub amount_minor: u64,
}

/// What a transfer asked for: kept with its id, so a retry with other parameters is told
/// `idempotency_conflict` (TigerBeetle's `exists_with_different_*` results, as one code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferParams {
    /// `wallet_credit`.
    Credit {
        /// Asset.
        asset: AssetCode,
        /// Minor units.
        amount_minor: u64,
    },
    /// `wallet_debit`.
    Debit {
        /// Asset.
        asset: AssetCode,
        /// Minor units.
        amount_minor: u64,
    },
    /// `pay_with_wallet`.
    Pay {
        /// The order paid.
        order_id: OrderId,
        /// The legs, in request order.
        legs: Vec<Leg>,
    },
}

/// A refused transfer, remembered with its id: a retry gets the same answer even if it would
/// now succeed (TigerBeetle 0.16's `id_already_failed`: an outcome never changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferFailure {
    /// `insufficient_funds`.
    InsufficientFunds {
        /// The asset short.
        asset: AssetCode,
        /// Minor units asked.
        needed_minor: u64,
        /// Minor units spendable then.
        available_minor: u64,
    },
    /// `amount_mismatch`: the converted legs did not sum to the order total.
    AmountMismatch {
        /// The order total.
        expected: Decimal,
        /// What the legs were worth.
        got: Decimal,
    },
    /// `order_not_payable`.
    OrderNotPayable {
        /// The order.
        order_id: OrderId,
        /// Its status then.
        status: OrderStatus,
    },
    /// `already_paid`.
    AlreadyPaid {
        /// The order.
        order_id: OrderId,
    },
    /// `version_conflict`.
    VersionConflict {
        /// Expected.
        expected: u32,
        /// Actual.
        actual: u32,
    },
    /// `unknown_order`, or an order of another user.
    UnknownOrder {
        /// The order.
        order_id: OrderId,
    },
}

impl TransferFailure {
    /// The typed error this failure answers.
    pub fn to_error(&self) -> EngineError {
        match self.clone() {
            Self::InsufficientFunds { asset, needed_minor, available_minor } => {
                EngineError::InsufficientFunds { asset: asset.to_string(), needed_minor, available_minor }
            }
            Self::AmountMismatch { expected, got } => EngineError::AmountMismatch { expected, got },
            Self::OrderNotPayable { order_id, status } => EngineError::OrderNotPayable { order_id, status },
            Self::AlreadyPaid { order_id } => EngineError::AlreadyPaid { order_id },
            Self::VersionConflict { expected, actual } => EngineError::VersionConflict { expected, actual },
            Self::UnknownOrder { order_id } => EngineError::UnknownOrder { order_id },
        }
    }

    /// The failure an engine error stands for, if it is one a transfer remembers.
    pub fn from_error(e: &EngineError) -> Option<Self> {
        Some(match e.clone() {
            EngineError::AmountMismatch { expected, got } => Self::AmountMismatch { expected, got },
            EngineError::OrderNotPayable { order_id, status } => Self::OrderNotPayable { order_id, status },
            EngineError::AlreadyPaid { order_id } => Self::AlreadyPaid { order_id },
            EngineError::VersionConflict { expected, actual } => Self::VersionConflict { expected, actual },
            EngineError::UnknownOrder { order_id } => Self::UnknownOrder { order_id },
            _ => return None,
        })
    }
}

/// A state change of one user's wallet. Every variant names the user (the wallet lives on the
/// user's shard) and the transfer it belongs to.
///
/// A wallet payment is a TCC (try–confirm–cancel): [`WalletEvent::Frozen`] is the try,
/// [`WalletEvent::Settled`] the confirm (journaled in the same batch as the order's `paid`),
/// [`WalletEvent::Unfrozen`] the cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalletEvent {
    /// Money in: a top-up confirmed by the payment provider, or a grant of points.
    Credited {
        /// The user.
        user_id: UserId,
        /// The transfer.
        transfer_id: Box<str>,
        /// Asset.
        asset: AssetCode,
        /// Minor units.
        amount_minor: u64,
        /// Engine clock, ms.
        at_ms: i64,
    },
    /// Money out: a withdrawal.
    Debited {
        /// The user.
        user_id: UserId,
        /// The transfer.
        transfer_id: Box<str>,
        /// Asset.
        asset: AssetCode,
        /// Minor units.
        amount_minor: u64,
        /// Engine clock, ms.
        at_ms: i64,
    },
    /// Try: every leg moved balance → frozen for `order_id`.
    Frozen {
        /// The user.
        user_id: UserId,
        /// The transfer.
        transfer_id: Box<str>,
        /// The order being paid.
        order_id: OrderId,
        /// The legs.
        legs: Vec<Leg>,
        /// Engine clock, ms.
        at_ms: i64,
    },
    /// Confirm: the try's frozen legs left the wallet; the order is paid.
    Settled {
        /// The user.
        user_id: UserId,
        /// The transfer.
        transfer_id: Box<str>,
        /// Engine clock, ms.
        at_ms: i64,
    },
    /// Cancel: the try's frozen legs went back to the balance; `failure` is the answer the
    /// transfer keeps (`None`: canceled by the engine, e.g. a try past `tcc_try_timeout_ms`).
    Unfrozen {
        /// The user.
        user_id: UserId,
        /// The transfer.
        transfer_id: Box<str>,
        /// Why.
        failure: Option<TransferFailure>,
        /// Engine clock, ms.
        at_ms: i64,
    },
    /// A settled payment's legs came back (the order's refund was confirmed).
    Refunded {
        /// The user.
        user_id: UserId,
        /// The payment's transfer.
        transfer_id: Box<str>,
        /// The refunded order.
        order_id: OrderId,
        /// Engine clock, ms.
        at_ms: i64,
    },
    /// A transfer was refused before it moved anything; its id keeps the refusal.
    Rejected {
        /// The user.
        user_id: UserId,
        /// The transfer.
        transfer_id: Box<str>,
        /// What it asked for (boxed, as `failure`: refusals are rare, and inline they would make
        /// every journaled event of the engine 8 bytes larger).
        params: Box<TransferParams>,
        /// Why it was refused.
        failure: Box<TransferFailure>,
        /// Engine clock, ms.
        at_ms: i64,
    },
}

impl WalletEvent {
    /// The user whose wallet changed.
    pub fn user_id(&self) -> &UserId {
        match self {
            Self::Credited { user_id, .. }
            | Self::Debited { user_id, .. }
            | Self::Frozen { user_id, .. }
            | Self::Settled { user_id, .. }
            | Self::Unfrozen { user_id, .. }
            | Self::Refunded { user_id, .. }
            | Self::Rejected { user_id, .. } => user_id,
        }
    }

    /// The transfer it belongs to.
    pub fn transfer_id(&self) -> &str {
        match self {
            Self::Credited { transfer_id, .. }
            | Self::Debited { transfer_id, .. }
            | Self::Frozen { transfer_id, .. }
            | Self::Settled { transfer_id, .. }
            | Self::Unfrozen { transfer_id, .. }
            | Self::Refunded { transfer_id, .. }
            | Self::Rejected { transfer_id, .. } => transfer_id,
        }
    }
}
