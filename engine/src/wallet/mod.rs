//! Wallets: balances and points per user and asset, moved by transfers with TigerBeetle-grade
//! idempotency, and paid into orders by TCC (try–confirm–cancel). Issue 14.
//!
//! # Shape
//! An account is keyed by (user, asset) and lives on its user's shard, beside the user's orders,
//! so a payment for one's own order needs no other shard. A shard's wallets are a
//! [`WalletBook`]: plain data, changed only by [`WalletBook::apply`] of a [`WalletEvent`] (live
//! and in replay alike). Amounts are integers in each asset's minor units (fen for CNY at scale
//! 2), never floats; the wire shows them as decimal strings.
//!
//! # Transfers
//! Every movement has a caller-chosen `transfer_id` (scoped to the user, like an idempotency
//! key). The same id with the same parameters returns the original result; with others,
//! `idempotency_conflict`; and a refusal is remembered ([`WalletEvent::Rejected`]), so a retry of
//! a refused transfer is refused again even if it would now succeed (TigerBeetle 0.16,
//! `id_already_failed`).
//!
//! # Payments (TCC)
//! `pay_with_wallet` freezes every leg ([`WalletEvent::Frozen`], the try), then moves the order to
//! `paid` through the order state machine and settles the legs ([`WalletEvent::Settled`], the
//! confirm), or unfreezes them ([`WalletEvent::Unfrozen`], the cancel). A refund of a wallet-paid
//! order credits each leg back once ([`WalletEvent::Refunded`]).
//!
//! # Invariants (checked by [`WalletBook::check`])
//! * Per account: `balance + frozen = credited − debited − settled + refunded`, neither
//!   `balance` nor `frozen` negative (unsigned, with checked arithmetic).
//! * Per account: `frozen` equals the sum of its open tries' legs.
//!
//! ```
//! use std::sync::Arc;
//! use surge_engine::wallet::{AssetCode, WalletBook, WalletEvent};
//! let mut book = WalletBook::default();
//! let cny = AssetCode::parse("CNY").unwrap();
//! book.apply(&WalletEvent::Credited {
//!     user_id: Arc::from("alice"),
//!     transfer_id: "topup-1".into(),
//!     asset: cny.clone(),
//!     amount_minor: 4_010,
//!     at_ms: 0,
//! })
//! .unwrap();
//! assert_eq!(book.get("alice").unwrap().accounts[&cny].balance_minor, 4_010);
//! book.check().unwrap();
//! ```

mod asset;
mod book;
pub(crate) mod decide;
mod event;
pub(crate) mod request;
pub(crate) mod tcc;
pub(crate) mod view;

pub use asset::{
    Asset, AssetCode, AssetSpec, Assets, AMOUNT_MINOR_MAX, ASSETS_MAX, ASSET_CODE_BYTES_MAX, ASSET_SCALE_MAX,
    BALANCE_MINOR_MAX,
};
pub use book::{
    Account, ApplyError, EntryKind, LedgerEntry, Outcome, TransferRecord, Try, UserWallet, WalletBook, ENTRIES_KEPT_MAX,
};
pub use event::{Leg, TransferFailure, TransferParams, WalletEvent, LEGS_MAX, TRANSFER_ID_BYTES_MAX};
pub use view::{AccountView, EntryPage, EntryView, ListWalletEntries, TransferReceipt, WalletPayment, WalletView};

#[cfg(test)]
mod tests;
