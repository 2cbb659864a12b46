//! What wallet calls take and answer: amounts as exact decimals in each asset's scale.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::asset::{AssetCode, Assets};
use super::book::{Account, EntryKind, LedgerEntry, UserWallet};
use crate::domain::{OrderId, UserId};

/// One account as a caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// The asset.
    pub asset: AssetCode,
    /// Spendable, in the asset's scale (`"40.10"`).
    pub balance: Decimal,
    /// Held by open payment tries.
    pub frozen: Decimal,
    /// Starts at 0; every change adds 1.
    pub version: u64,
}

/// A user's wallet: every listed asset, in config order (zero for assets never touched).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletView {
    /// The user.
    pub user_id: UserId,
    /// One per asset.
    pub accounts: Vec<AccountView>,
}

/// The answer to `wallet_credit` and `wallet_debit`: the account right after the transfer (a
/// retry with the same id and parameters gets this same receipt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReceipt {
    /// The user.
    pub user_id: UserId,
    /// The transfer.
    pub transfer_id: Box<str>,
    /// The account after it.
    pub account: AccountView,
}

/// One ledger entry as a caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryView {
    /// Per user, increasing: pass it as `before` to page.
    pub seq: u64,
    /// The transfer.
    pub transfer_id: Box<str>,
    /// The asset.
    pub asset: AssetCode,
    /// Signed amount (see [`LedgerEntry`]).
    pub amount: Decimal,
    /// Kind.
    pub kind: EntryKind,
    /// The order, for payment entries.
    pub order_id: Option<OrderId>,
    /// Engine clock, ms.
    pub at_ms: i64,
}

/// One page of ledger entries, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryPage {
    /// Entries.
    pub entries: Vec<EntryView>,
    /// Pass as `before` for the next (older) page; `None` on the last page.
    pub next_before: Option<u64>,
}

/// A `list_wallet_entries` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListWalletEntries {
    /// Whose wallet.
    pub user_id: String,
    /// Only this asset's entries, if set.
    pub asset: Option<String>,
    /// Only entries with a smaller `seq` (the previous page's `next_before`).
    pub before: Option<u64>,
    /// Page size, 1..=`list_limit_max`.
    pub limit: usize,
}

/// A `pay_with_wallet` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletPayment {
    /// The order to pay (from its user's wallet).
    pub order_id: OrderId,
    /// (asset code, amount) per leg; each asset at most once, at most [`super::LEGS_MAX`].
    pub legs: Vec<(String, Decimal)>,
    /// The caller's id for this payment (1..=64 bytes), unique per user.
    pub transfer_id: String,
    /// Compare-and-set on the order's version.
    pub expected_version: Option<u32>,
    /// When set, the order must belong to this user (a `user` connection), or the answer is
    /// `unknown_order`.
    pub owner: Option<String>,
}

/// An account's amounts in its asset's scale.
pub(crate) fn account_view(assets: &Assets, asset: &AssetCode, a: &Account) -> AccountView {
    let scale = assets.get(asset.as_str()).map_or(0, |x| x.scale);
    let dec = |m: u64| Decimal::from_i128_with_scale(i128::from(m), scale);
    AccountView { asset: asset.clone(), balance: dec(a.balance_minor), frozen: dec(a.frozen_minor), version: a.version }
}

/// A user's wallet over every listed asset.
pub(crate) fn wallet_view(assets: &Assets, user_id: &UserId, w: Option<&UserWallet>) -> WalletView {
    let empty = Account::default();
    let accounts = assets
        .iter()
        .map(|a| account_view(assets, &a.code, w.and_then(|w| w.accounts.get(&a.code)).unwrap_or(&empty)))
        .collect();
    WalletView { user_id: user_id.clone(), accounts }
}

/// One page of a user's entries, newest first.
pub(crate) fn entry_page(
    assets: &Assets,
    w: Option<&UserWallet>,
    asset: Option<&AssetCode>,
    before: Option<u64>,
    limit: usize,
) -> EntryPage {
    let Some(w) = w else {
        return EntryPage { entries: Vec::new(), next_before: None };
    };
    let below = |e: &&LedgerEntry| before.is_none_or(|b| e.seq < b) && asset.is_none_or(|a| e.asset == *a);
    let mut picked = w.entries.iter().rev().filter(below);
    let entries: Vec<EntryView> = picked.by_ref().take(limit).map(|e| entry_view(assets, e)).collect();
    let more = picked.next().is_some();
    let next_before = if more { entries.last().map(|e| e.seq) } else { None };
    EntryPage { entries, next_before }
}

fn entry_view(assets: &Assets, e: &LedgerEntry) -> EntryView {
    let scale = assets.get(e.asset.as_str()).map_or(0, |x| x.scale);
    EntryView {
        seq: e.seq,
        transfer_id: e.transfer_id.clone(),
        asset: e.asset.clone(),
        amount: Decimal::from_i128_with_scale(i128::from(e.amount_minor), scale),
        kind: e.kind,
        order_id: e.order_id,
        at_ms: e.at_ms,
    }
}
