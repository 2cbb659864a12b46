//! Wallets as the protocol shows them (issue 14): amounts as decimal strings in each asset's
//! scale (`"40.10"`), ids as strings, the shapes fixed by `docs/protocol.md`.

use serde::Serialize;
use surge_engine::wallet::{AccountView, EntryKind, EntryPage, TransferReceipt, WalletView};

use super::WireId;

/// One account: `{"asset":"CNY","balance":"40.10","frozen":"0.00","version":3}`.
#[derive(Debug, Serialize)]
pub struct WireAccount<'a> {
    asset: &'a str,
    balance: &'a rust_decimal::Decimal,
    frozen: &'a rust_decimal::Decimal,
    version: u64,
}

impl<'a> From<&'a AccountView> for WireAccount<'a> {
    fn from(a: &'a AccountView) -> Self {
        Self { asset: a.asset.as_str(), balance: &a.balance, frozen: &a.frozen, version: a.version }
    }
}

/// `get_wallet`: `{"user_id":"alice","accounts":[…]}`, every listed asset.
#[derive(Debug, Serialize)]
pub struct WireWallet<'a> {
    user_id: &'a str,
    accounts: Vec<WireAccount<'a>>,
}

impl<'a> From<&'a WalletView> for WireWallet<'a> {
    fn from(w: &'a WalletView) -> Self {
        Self { user_id: &w.user_id, accounts: w.accounts.iter().map(WireAccount::from).collect() }
    }
}

/// `wallet_credit` / `wallet_debit`: `{"user_id","transfer_id","account":{…}}`, the account
/// right after the transfer.
#[derive(Debug, Serialize)]
pub struct WireReceipt<'a> {
    user_id: &'a str,
    transfer_id: &'a str,
    account: WireAccount<'a>,
}

impl<'a> From<&'a TransferReceipt> for WireReceipt<'a> {
    fn from(r: &'a TransferReceipt) -> Self {
        Self { user_id: &r.user_id, transfer_id: &r.transfer_id, account: WireAccount::from(&r.account) }
    }
}

/// One ledger entry: `{"seq":7,"transfer_id":"…","asset":"CNY","amount":"-7.50","kind":"settle",
/// "order_id":"…","at_ms":…}` (`order_id` `null` for credits and debits).
#[derive(Debug, Serialize)]
pub struct WireEntry<'a> {
    seq: u64,
    transfer_id: &'a str,
    asset: &'a str,
    amount: &'a rust_decimal::Decimal,
    kind: EntryKind,
    order_id: Option<WireId>,
    at_ms: i64,
}

/// `list_wallet_entries`: `{"entries":[…],"next_cursor":"w1.5"}` (`null` on the last page).
#[derive(Debug, Serialize)]
pub struct WireEntryPage<'a> {
    entries: Vec<WireEntry<'a>>,
    next_cursor: Option<String>,
}

impl<'a> From<&'a EntryPage> for WireEntryPage<'a> {
    fn from(p: &'a EntryPage) -> Self {
        let entries = p
            .entries
            .iter()
            .map(|e| WireEntry {
                seq: e.seq,
                transfer_id: &e.transfer_id,
                asset: e.asset.as_str(),
                amount: &e.amount,
                kind: e.kind,
                order_id: e.order_id.map(|o| WireId(o.0)),
                at_ms: e.at_ms,
            })
            .collect();
        Self { entries, next_cursor: p.next_before.map(crate::protocol::encode_entry_cursor) }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use surge_engine::wallet::{AssetCode, EntryView};
    use surge_engine::{Decimal, OrderId};

    use super::*;

    fn account() -> AccountView {
        let asset = AssetCode::parse("CNY").unwrap();
        AccountView { asset, balance: Decimal::new(4010, 2), frozen: Decimal::new(0, 2), version: 3 }
    }

    /// The shapes `docs/protocol.md` promises: a change here is a change of the protocol.
    #[test]
    fn wallet_json_shapes_are_pinned() {
        let w = WalletView { user_id: Arc::from("alice"), accounts: vec![account()] };
        assert_eq!(
            serde_json::to_string(&WireWallet::from(&w)).unwrap(),
            r#"{"user_id":"alice","accounts":[{"asset":"CNY","balance":"40.10","frozen":"0.00","version":3}]}"#
        );
        let r = TransferReceipt { user_id: Arc::from("alice"), transfer_id: "t1".into(), account: account() };
        assert_eq!(
            serde_json::to_string(&WireReceipt::from(&r)).unwrap(),
            r#"{"user_id":"alice","transfer_id":"t1","account":{"asset":"CNY","balance":"40.10","frozen":"0.00","version":3}}"#
        );
        let e = EntryView {
            seq: 7,
            transfer_id: "pay-1".into(),
            asset: AssetCode::parse("CNY").unwrap(),
            amount: Decimal::new(-750, 2),
            kind: EntryKind::Settle,
            order_id: Some(OrderId(9_007_199_254_740_993)),
            at_ms: 5,
        };
        let page = EntryPage { entries: vec![e], next_before: Some(7) };
        assert_eq!(
            serde_json::to_string(&WireEntryPage::from(&page)).unwrap(),
            r#"{"entries":[{"seq":7,"transfer_id":"pay-1","asset":"CNY","amount":"-7.50","kind":"settle","order_id":"9007199254740993","at_ms":5}],"next_cursor":"w1.7"}"#
        );
    }
}
