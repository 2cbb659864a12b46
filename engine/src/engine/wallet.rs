//! Wallet commands (issue 14): checked here, then sent to the user's (or the order's) shard.

use std::sync::Arc;

use rust_decimal::Decimal;

use super::{check_text, Engine, ID_BYTES_MAX};
use crate::domain::Order;
use crate::error::{EngineError, EngineResult};
use crate::pending::Pending;
use crate::routing::shard_for_key;
use crate::shard::{EntriesQuery, OrderMsg, ShardMsg, WalletMsg};
use crate::snowflake::shard_of;
use crate::wallet::request::{check_movement, check_payment};
use crate::wallet::{EntryPage, ListWalletEntries, TransferReceipt, WalletPayment, WalletView};

impl Engine {
    /// Credit `amount` of `asset` to `user_id`'s wallet: a top-up the payment provider
    /// confirmed, or a grant of points. Idempotent by (`user_id`, `transfer_id`): the same
    /// parameters get the original receipt, others `idempotency_conflict`.
    ///
    /// # Errors
    /// `invalid_request` (empty ids, an amount that is not positive or has more decimal places
    /// than the asset's scale, an account past [`crate::wallet::BALANCE_MINOR_MAX`]),
    /// `unknown_asset`, `idempotency_conflict`, and the engine's `overloaded`,
    /// `storage_unavailable`, `shutting_down`.
    ///
    /// ```
    /// use surge_engine::{Engine, EngineConfig};
    /// let engine = Engine::builder(EngineConfig::default()).start().unwrap();
    /// let receipt = engine.wallet_credit("alice", "CNY", "40.10".parse().unwrap(), "topup-1").wait().unwrap();
    /// assert_eq!(receipt.account.balance.to_string(), "40.10");
    /// ```
    pub fn wallet_credit(
        &self,
        user_id: &str,
        asset: &str,
        amount: Decimal,
        transfer_id: &str,
    ) -> Pending<TransferReceipt> {
        self.movement(user_id, asset, amount, transfer_id, true)
    }

    /// Debit `amount` of `asset` from `user_id`'s wallet (a withdrawal). Idempotent as
    /// [`Engine::wallet_credit`]; a refusal is remembered under its `transfer_id`.
    ///
    /// # Errors
    /// As [`Engine::wallet_credit`], and `insufficient_funds` when the balance is short.
    pub fn wallet_debit(
        &self,
        user_id: &str,
        asset: &str,
        amount: Decimal,
        transfer_id: &str,
    ) -> Pending<TransferReceipt> {
        self.movement(user_id, asset, amount, transfer_id, false)
    }

    fn movement(
        &self,
        user_id: &str,
        asset: &str,
        amount: Decimal,
        transfer_id: &str,
        credit: bool,
    ) -> Pending<TransferReceipt> {
        let checked = check_movement(&self.inner.assets, user_id, asset, amount, transfer_id, credit);
        match checked {
            Err(e) => Pending::ready(Err(e)),
            Ok(m) => {
                let (shard, user) = (shard_for_key(user_id, self.inner.shard_count), m.user_id.clone());
                self.submit(shard, |r| ShardMsg::Wallet(user, WalletMsg::Move(Box::new(m), r)))
            }
        }
    }

    /// A user's wallet: every listed asset's balance, frozen amount and version (zero for
    /// assets never touched). Answered by the user's shard once what it saw is durable.
    ///
    /// # Errors
    /// `invalid_request` for an empty or long user id; `overloaded`, `storage_unavailable`,
    /// `shutting_down`.
    pub fn get_wallet(&self, user_id: &str) -> Pending<WalletView> {
        if let Err(e) = check_text("user_id", user_id, ID_BYTES_MAX) {
            return Pending::ready(Err(e));
        }
        let user: crate::domain::UserId = Arc::from(user_id);
        self.submit(shard_for_key(user_id, self.inner.shard_count), |r| ShardMsg::Wallet(user, WalletMsg::Get(r)))
    }

    /// One page of a user's ledger entries, newest first (keyset paging by `seq`: pass the
    /// page's `next_before` as `before`). Only the newest
    /// [`crate::wallet::ENTRIES_KEPT_MAX`] entries per user are kept.
    ///
    /// # Errors
    /// `invalid_request` (ids, `limit` outside 1..=`list_limit_max`), `unknown_asset`.
    pub fn list_wallet_entries(&self, q: &ListWalletEntries) -> Pending<EntryPage> {
        let checked = (|| -> EngineResult<EntriesQuery> {
            check_text("user_id", &q.user_id, ID_BYTES_MAX)?;
            let max = self.inner.config.list_limit_max;
            if q.limit == 0 || q.limit > max {
                return Err(EngineError::invalid(format!("limit must be 1..={max}")));
            }
            let asset = q.asset.as_deref().map(|a| self.inner.assets.get(a).map(|x| x.code.clone())).transpose()?;
            Ok(EntriesQuery { asset, before: q.before, limit: q.limit })
        })();
        match checked {
            Err(e) => Pending::ready(Err(e)),
            Ok(query) => {
                let user: crate::domain::UserId = Arc::from(q.user_id.as_str());
                let shard = shard_for_key(&q.user_id, self.inner.shard_count);
                self.submit(shard, |r| ShardMsg::Wallet(user, WalletMsg::Entries(Box::new(query), r)))
            }
        }
    }

    /// Pay an order from its user's wallet by TCC: freeze every leg (try), move the order to
    /// `paid` (its reservations confirmed) and settle the legs (confirm), all in one batch on
    /// the user's shard, so no state with money taken and the order unpaid (or the reverse) is
    /// ever durable or visible. Any failed check freezes nothing and is remembered under the
    /// `transfer_id` (a retry gets the same error). Legs convert to the shop currency at each
    /// asset's rate and must sum exactly to the order total.
    ///
    /// # Errors
    /// `invalid_request` (ids, no legs or more than [`crate::wallet::LEGS_MAX`], an asset
    /// twice, a bad amount), `unknown_asset` (not listed, or has no rate), `unknown_order` (also
    /// for an order of another user when `owner` is set), `order_not_payable`, `already_paid`,
    /// `amount_mismatch`, `insufficient_funds`, `version_conflict`, `idempotency_conflict`.
    pub fn pay_with_wallet(&self, p: &WalletPayment) -> Pending<Arc<Order>> {
        match check_payment(&self.inner.assets, p) {
            Err(e) => Pending::ready(Err(e)),
            Ok(pay) => {
                let order_id = p.order_id;
                let shard = shard_of(order_id.0, self.inner.shard_count);
                self.submit(shard, |r| ShardMsg::Order(order_id, OrderMsg::WalletPay(Box::new(pay), r)))
            }
        }
    }
}
